//! Estimators reach the CLI through the registry alone: the test-only toy estimator
//! `grad-dot-last` (cargo feature `testing` of `infl`, on in test builds) is listed by
//! `--help`, selected by `--method`, named in the output metadata and the summary, and
//! gives the library's numbers.

use std::path::PathBuf;

use assert_cmd::Command;
use infl::io::{RunLayout, TensorFile};
use infl::{CpuBackend, Estimator, Options, Splits, estimators, load_run};

fn run_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

#[test]
fn every_registered_estimator_is_a_method() {
    let out = Command::cargo_bin("infl")
        .unwrap()
        .args(["topk", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(estimators::REGISTRY.len() >= 2, "the toy is registered");
    for r in estimators::REGISTRY {
        assert!(help.contains(r.name), "--help lacks {}: {help}", r.name);
    }
    let bad = Command::cargo_bin("infl")
        .unwrap()
        .args(["scores", "--method", "nope", "--layer", "fc3", "--run"])
        .arg(run_dir())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("grad-dot-last"));
}

#[test]
fn the_toy_estimator_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("infl")
        .unwrap()
        .args(["self-influence", "-q", "--backend", "cpu", "--layer", "fc3"])
        .args(["--method", "grad-dot-last", "--run"])
        .arg(run_dir())
        .arg("--out-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("GradDot(last checkpoint) self-influence of"),
        "{stdout}"
    );

    let file = TensorFile::open(dir.path().join("self_influence.safetensors")).unwrap();
    assert_eq!(file.metadata()["method"], "grad-dot-last");
    let got = file.vector("self_influence").unwrap();

    let run = infl::Run::from(
        load_run(
            &RunLayout::discover(run_dir()).unwrap(),
            "fc3",
            Splits::TrainOnly,
        )
        .unwrap(),
    );
    let toy = estimators::build("grad-dot-last", &Options::default()).unwrap();
    let want = toy.self_influence(&CpuBackend::new(), &run).unwrap().values;
    assert_eq!(got, want);
    // Not TracInCPFast's numbers: only the last checkpoint, learning rates ignored.
    let fast = infl::TracInCPFast::default()
        .self_influence(&CpuBackend::new(), &run)
        .unwrap()
        .values;
    assert_ne!(got, fast);
}
