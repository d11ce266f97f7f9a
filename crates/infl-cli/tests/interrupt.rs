//! Interrupts: SIGINT or SIGTERM while results are staged removes every temporary file,
//! publishes nothing, leaves earlier results as they were, and exits with 130.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts `infl topk` (two outputs) held just before publishing, waits until both are
/// staged, sends `signal`, and checks what is left.
fn interrupted_while_staged(signal: &str) {
    let out = tempfile::tempdir().expect("tempdir");
    let old = out.path().join("topk.safetensors");
    std::fs::write(&old, b"an earlier result").expect("seed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_infl"))
        .args(["topk", "--backend", "cpu", "-q", "--layer", "fc3", "--run"])
        .arg(fixture_run())
        .arg("--out")
        .arg(&old)
        .arg("--json")
        .arg(out.path().join("topk.json"))
        .env("INFL_HOLD_BEFORE_PUBLISH_MS", "60000")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn infl");
    let start = Instant::now();
    let staged = |l: &[String]| l.iter().filter(|n| n.starts_with(".infl-tmp-")).count();
    while staged(&listing(out.path())) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never staged: {:?}",
            listing(out.path())
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "infl exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{signal} failed");
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "stderr: {stderr}");
    assert!(
        stderr.contains("removed 2 temporary file(s)"),
        "stderr: {stderr}"
    );
    assert_eq!(listing(out.path()), ["topk.safetensors"]);
    assert_eq!(std::fs::read(&old).expect("old"), b"an earlier result");
}

#[test]
fn sigint_removes_staged_files_and_publishes_nothing() {
    interrupted_while_staged("INT");
}

#[test]
fn sigterm_removes_staged_files_and_publishes_nothing() {
    interrupted_while_staged("TERM");
}
