//! Helpers shared by the CLI's end-to-end tests: run `infl` on the CPU, quietly, and check
//! how it ended.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// `fixtures/captum_tracincp/SUB`.
pub fn fixtures(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/captum_tracincp")
        .join(sub)
}

/// `infl -q --backend cpu ARGS...`.
pub fn infl(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("infl")
        .unwrap()
        .args(["-q", "--backend", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

/// Succeeds.
pub fn ok(args: &[&str]) {
    let out = infl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails with every needle in stderr.
pub fn fails(args: &[&str], needles: &[&str]) {
    let out = infl(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}: {err}");
    }
}

/// A path as `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A manifest of the fixture run `run`'s checkpoints 1, 2 and 10 written to `path`, each
/// entry's training file `NAME.{train}.safetensors` and `extra` JSON fields appended.
pub fn manifest(path: &Path, run: &Path, train: &str, extra: &str) {
    let entries: Vec<String> = ["1", "2", "10"]
        .iter()
        .map(|c| {
            format!(
                r#"{{"checkpoint": "{r}/checkpoint-{c}.safetensors", "train": "{r}/checkpoint-{c}.{train}.safetensors", "test": "{r}/checkpoint-{c}.test.safetensors"{extra}}}"#,
                r = s(run)
            )
        })
        .collect();
    std::fs::write(
        path,
        format!(r#"{{"checkpoints": [{}]}}"#, entries.join(",")),
    )
    .unwrap();
}
