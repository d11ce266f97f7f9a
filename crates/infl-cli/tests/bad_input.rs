//! Bad input: every case fails with a clear message naming the file and tensor and what
//! was expected, a non-zero exit code, and no output file.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use infl::io::{OutTensor, Rank, TensorFile, write_safetensors};

fn fixture_run() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

/// A scratch copy of the Captum fixture run.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_run()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// Rewrites `file` in `dir`, replacing tensor `name` (or removing it when `value` is None).
fn replace(dir: &Path, file: &str, name: &str, value: Option<OutTensor>) {
    let path = dir.join(file);
    let f = TensorFile::open(&path).unwrap();
    let mut tensors = Vec::new();
    for n in f.names() {
        if n == name {
            continue;
        }
        let info = f.info(&n).unwrap();
        let (dtype, shape) = (info.dtype, info.shape.to_vec());
        let t = if format!("{dtype:?}").starts_with('I') {
            OutTensor::I64(shape, f.integers_flat(&n).unwrap())
        } else if shape.len() == 1 {
            OutTensor::F32(shape, f.vector(&n).unwrap())
        } else {
            OutTensor::F32(shape, f.matrix(&n, Rank::Matrix).unwrap().to_vec())
        };
        tensors.push((n, t));
    }
    if let Some(v) = value {
        tensors.push((name.to_string(), v));
    }
    let meta = f.metadata().clone();
    drop(f);
    write_safetensors(&path, tensors, meta).unwrap();
}

/// Runs `infl ARGS --out-dir/--out` into a fresh output folder; asserts failure, that
/// stderr mentions every needle, and that the output folder stays empty.
fn fails(dir: &Path, sub: &str, extra: &[&str], needles: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::cargo_bin("infl").unwrap();
    cmd.arg(sub)
        .arg("--run")
        .arg(dir)
        .args(["--layer", "fc3", "-q"]);
    match sub {
        "self-influence" => cmd.arg("--out-dir").arg(out.path()),
        "topk" => cmd
            .arg("--out")
            .arg(out.path().join("topk.safetensors"))
            .arg("--json")
            .arg(out.path().join("topk.json")),
        _ => cmd.arg("--out").arg(out.path().join("scores.safetensors")),
    };
    cmd.args(extra);
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, stderr: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "output folder not empty: {left:?}");
}

#[test]
fn the_fixture_run_succeeds() {
    // The control case: the same harness with good input writes all outputs.
    let dir = scratch();
    let out = tempfile::tempdir().unwrap();
    Command::cargo_bin("infl")
        .unwrap()
        .arg("self-influence")
        .arg("--run")
        .arg(dir.path())
        .args(["--layer", "fc3", "-q", "--out-dir"])
        .arg(out.path())
        .assert()
        .success();
    for f in [
        "self_influence.safetensors",
        "suspicious.csv",
        "suspicious.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
}

#[test]
fn missing_file() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("nowhere");
    Command::cargo_bin("infl")
        .unwrap()
        .arg("topk")
        .arg("--run")
        .arg(&missing)
        .args(["--layer", "fc3"])
        .assert()
        .failure()
        .stderr(predicates_contains("nowhere"));
    // A manifest pointing at a checkpoint that does not exist.
    let dir = scratch();
    let manifest = dir.path().join("m.json");
    std::fs::write(
        &manifest,
        r#"{"checkpoints":[{"checkpoint":"gone.safetensors","train":"checkpoint-1.train.safetensors"}]}"#,
    )
    .unwrap();
    let o = Command::cargo_bin("infl")
        .unwrap()
        .args(["self-influence", "--layer", "fc3", "--out-dir"])
        .arg(out.path().join("o"))
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("gone.safetensors") && e.contains("No such file"),
        "{e}"
    );
    assert!(!out.path().join("o").join("suspicious.csv").exists());
}

fn predicates_contains(s: &'static str) -> impl predicates_core::Predicate<[u8]> {
    struct Contains(&'static str);
    impl predicates_core::reflection::PredicateReflection for Contains {}
    impl std::fmt::Display for Contains {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "contains {:?}", self.0)
        }
    }
    impl predicates_core::Predicate<[u8]> for Contains {
        fn eval(&self, v: &[u8]) -> bool {
            String::from_utf8_lossy(v).contains(self.0)
        }
    }
    Contains(s)
}

#[test]
fn not_safetensors_garbage_and_truncated() {
    let dir = scratch();
    std::fs::write(
        dir.path().join("checkpoint-2.safetensors"),
        b"hello, not a tensor file",
    )
    .unwrap();
    fails(
        dir.path(),
        "scores",
        &[],
        &["checkpoint-2.safetensors", "not a valid safetensors"],
    );

    let dir = scratch();
    let p = dir.path().join("checkpoint-10.train.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    fails(
        dir.path(),
        "topk",
        &[],
        &["checkpoint-10.train.safetensors", "not a valid safetensors"],
    );

    let dir = scratch();
    let p = dir.path().join("checkpoint-1.safetensors");
    std::fs::write(&p, [200u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-1.safetensors", "not a valid safetensors"],
    );
}

#[test]
fn missing_tensor_lists_what_exists() {
    let dir = scratch();
    let out = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("infl")
        .unwrap()
        .args(["self-influence", "--layer", "head", "--run"])
        .arg(dir.path())
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("checkpoint-1.safetensors") && e.contains("head.weight"),
        "{e}"
    );
    assert!(
        e.contains("fc3.weight") && e.contains("fc1.bias"),
        "lists existing: {e}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    let dir = scratch();
    replace(
        dir.path(),
        "checkpoint-2.train.safetensors",
        "features",
        None,
    );
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-2.train.safetensors", "`features`", "labels"],
    );
}

#[test]
fn feature_width_must_match_the_weight() {
    let dir = scratch();
    replace(
        dir.path(),
        "checkpoint-1.train.safetensors",
        "features",
        Some(OutTensor::F32(vec![40, 7], vec![0.5; 280])),
    );
    fails(
        dir.path(),
        "self-influence",
        &[],
        &[
            "checkpoint-1.train.safetensors",
            "features",
            "[N, 8]",
            "[40, 7]",
        ],
    );
}

#[test]
fn labels_outside_the_classes() {
    let dir = scratch();
    let mut labels: Vec<i64> = vec![0; 7];
    labels[3] = 4;
    replace(
        dir.path(),
        "checkpoint-1.test.safetensors",
        "labels",
        Some(OutTensor::I64(vec![7], labels)),
    );
    fails(
        dir.path(),
        "topk",
        &[],
        &[
            "checkpoint-1.test.safetensors",
            "labels",
            "[0, 4)",
            "found 4 at [3]",
        ],
    );

    let dir = scratch();
    let mut labels: Vec<i64> = vec![0; 40];
    labels[0] = -1;
    for c in ["1", "2", "10"] {
        replace(
            dir.path(),
            &format!("checkpoint-{c}.train.safetensors"),
            "labels",
            Some(OutTensor::I64(vec![40], labels.clone())),
        );
    }
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-1.train.safetensors", "found -1 at [0]"],
    );
}

#[test]
fn non_finite_features_and_weights() {
    let dir = scratch();
    let mut f = vec![0.25f32; 7 * 8];
    f[9] = f32::NAN;
    replace(
        dir.path(),
        "checkpoint-2.test.safetensors",
        "features",
        Some(OutTensor::F32(vec![7, 8], f)),
    );
    fails(
        dir.path(),
        "scores",
        &[],
        &[
            "checkpoint-2.test.safetensors",
            "features",
            "finite",
            "NaN at [1, 1]",
        ],
    );

    let dir = scratch();
    let mut w = vec![0.1f32; 32];
    w[5] = f32::INFINITY;
    replace(
        dir.path(),
        "checkpoint-10.safetensors",
        "fc3.weight",
        Some(OutTensor::F32(vec![4, 8], w)),
    );
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-10.safetensors", "fc3.weight", "inf at [0, 5]"],
    );
}

#[test]
fn k_out_of_range() {
    let dir = scratch();
    fails(dir.path(), "topk", &["-k", "0"], &["k = 0", "1 <= k <= 40"]);
    fails(
        dir.path(),
        "topk",
        &["-k", "41"],
        &["k = 41", "1 <= k <= 40"],
    );
}

#[test]
fn empty_split() {
    let dir = scratch();
    for c in ["1", "2", "10"] {
        let f = format!("checkpoint-{c}.test.safetensors");
        replace(
            dir.path(),
            &f,
            "features",
            Some(OutTensor::F32(vec![0, 8], vec![])),
        );
        replace(
            dir.path(),
            &f,
            "labels",
            Some(OutTensor::I64(vec![0], vec![])),
        );
        replace(
            dir.path(),
            &f,
            "targets",
            Some(OutTensor::F32(vec![0, 4], vec![])),
        );
        replace(dir.path(), &f, "ids", Some(OutTensor::I64(vec![0], vec![])));
    }
    fails(
        dir.path(),
        "scores",
        &[],
        &["checkpoint-1.test.safetensors", "features", "empty split"],
    );
}

#[test]
fn checkpoints_and_features_must_pair_up() {
    let dir = scratch();
    std::fs::remove_file(dir.path().join("checkpoint-2.train.safetensors")).unwrap();
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-2.safetensors", "checkpoint-2.train.safetensors"],
    );

    let dir = scratch();
    std::fs::copy(
        dir.path().join("checkpoint-1.train.safetensors"),
        dir.path().join("checkpoint-3.train.safetensors"),
    )
    .unwrap();
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-3", "has no checkpoint"],
    );

    let dir = scratch();
    std::fs::remove_file(dir.path().join("checkpoint-10.test.safetensors")).unwrap();
    fails(dir.path(), "topk", &[], &["checkpoint-10", "test features"]);

    // Feature files of one checkpoint with a different number of examples.
    let dir = scratch();
    replace(
        dir.path(),
        "checkpoint-2.train.safetensors",
        "features",
        Some(OutTensor::F32(vec![39, 8], vec![0.5; 39 * 8])),
    );
    fails(
        dir.path(),
        "self-influence",
        &[],
        &["checkpoint-2.train.safetensors"],
    );
}

/// `infl SUB` on `dir` with `--backend BACKEND`; returns (success, stderr).
fn run_on(dir: &Path, sub: &str, backend: &str) -> (bool, String) {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::cargo_bin("infl").unwrap();
    cmd.arg(sub)
        .arg("--run")
        .arg(dir)
        .args(["--layer", "fc3", "-q", "--backend", backend]);
    match sub {
        "self-influence" => cmd.arg("--out-dir").arg(out.path()),
        _ => cmd.arg("--out").arg(out.path().join("out.safetensors")),
    };
    let output = cmd.output().unwrap();
    let left = std::fs::read_dir(out.path()).unwrap().count();
    assert!(output.status.success() || left == 0, "partial output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Features scaled so that `row 5` of checkpoint-2's training split is huge.
fn with_huge_row(scale: f32) -> tempfile::TempDir {
    let dir = scratch();
    let f = TensorFile::open(dir.path().join("checkpoint-2.train.safetensors")).unwrap();
    let mut x = f.matrix("features", Rank::Matrix).unwrap().to_vec();
    drop(f);
    for v in &mut x[5 * 8..6 * 8] {
        *v = scale;
    }
    replace(
        dir.path(),
        "checkpoint-2.train.safetensors",
        "features",
        Some(OutTensor::F32(vec![40, 8], x)),
    );
    dir
}

/// Finite inputs whose arithmetic overflows f32 are refused by one rule, with the same
/// message on the CPU and the GPU, naming the checkpoint, split and example (or the file,
/// tensor and example when the logits themselves overflow).
#[test]
fn overflowing_inputs_are_refused_alike_on_every_backend() {
    let gpu = run_on(scratch().path(), "self-influence", "gpu").0;
    let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
    assert!(
        gpu || !required,
        "--backend gpu failed with INFL_REQUIRE_GPU=1"
    );
    if !gpu {
        eprintln!("no GPU adapter: checking the CPU backend only");
    }
    let backends: &[&str] = if gpu { &["cpu", "gpu"] } else { &["cpu"] };
    // ‖a‖² = 8e38 does not fit; the logits (~1e19) still do.
    let huge_norm = with_huge_row(1e19);
    // The logits overflow.
    let huge_logits = with_huge_row(f32::MAX);
    for (dir, needles) in [
        (
            &huge_norm,
            &["train example 5 at checkpoint checkpoint-2", "‖a‖²"][..],
        ),
        (
            &huge_logits,
            &[
                "checkpoint-2.train.safetensors",
                "tensor `features`",
                "example 5: the logits overflow f32",
            ][..],
        ),
    ] {
        for sub in ["scores", "topk", "self-influence"] {
            let messages: Vec<String> = backends
                .iter()
                .map(|b| {
                    let (ok, err) = run_on(dir.path(), sub, b);
                    assert!(!ok, "{sub} --backend {b} accepted an overflowing input");
                    for n in needles {
                        assert!(err.contains(n), "{sub} --backend {b}: lacks {n:?}: {err}");
                    }
                    err
                })
                .collect();
            assert!(
                messages.windows(2).all(|w| w[0] == w[1]),
                "{sub}: backends disagree: {messages:?}"
            );
        }
    }
    // The control: the same harness accepts large values that fit.
    assert!(run_on(with_huge_row(1e6).path(), "topk", "cpu").0);
}

/// Resource limits are checked before anything is spawned or allocated, with a message
/// that says what to do instead.
#[test]
fn thread_counts_are_bounded() {
    let dir = scratch();
    for t in ["0", "100000", "18446744073709551615"] {
        let started = std::time::Instant::now();
        fails(
            dir.path(),
            "self-influence",
            &["--threads", t],
            &["--threads", "leave --threads out"],
        );
        assert!(started.elapsed().as_secs() < 30, "--threads {t} was slow");
    }
}

#[test]
fn a_score_matrix_larger_than_memory_is_refused_before_it_is_computed() {
    // 100,000 x 100,000 scores (40 GB, ~160 GB at peak) from 3 MB of features.
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000;
    let feats = |seed: u64| {
        OutTensor::F32(
            vec![n, 8],
            (0..n * 8)
                .map(|i| ((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 1000.0)
                .collect(),
        )
    };
    let labels = || OutTensor::I64(vec![n], (0..n as i64).map(|i| i % 4).collect());
    let ckpt = TensorFile::open(fixture_run().join("checkpoint-1.safetensors")).unwrap();
    let weight = ckpt.matrix("fc3.weight", Rank::Matrix).unwrap().to_vec();
    write_safetensors(
        dir.path().join("c.safetensors"),
        vec![("fc3.weight".into(), OutTensor::F32(vec![4, 8], weight))],
        Default::default(),
    )
    .unwrap();
    for (split, seed) in [("train", 1), ("test", 2)] {
        write_safetensors(
            dir.path().join(format!("c.{split}.safetensors")),
            vec![
                ("features".into(), feats(seed)),
                ("labels".into(), labels()),
            ],
            Default::default(),
        )
        .unwrap();
    }
    fails(
        dir.path(),
        "scores",
        &[],
        &["score matrix", "GiB", "infl topk"],
    );
}

/// Only regular files are read: a directory or a FIFO named like a feature file is
/// refused at once (a FIFO used to block forever).
#[test]
fn special_files_are_refused() {
    for kind in ["directory", "fifo"] {
        let dir = scratch();
        let victim = dir.path().join("checkpoint-2.train.safetensors");
        std::fs::remove_file(&victim).unwrap();
        match kind {
            "directory" => std::fs::create_dir(&victim).unwrap(),
            _ => assert!(
                std::process::Command::new("mkfifo")
                    .arg(&victim)
                    .status()
                    .unwrap()
                    .success()
            ),
        }
        let out = tempfile::tempdir().unwrap();
        let assert = Command::cargo_bin("infl")
            .unwrap()
            .arg("self-influence")
            .arg("--run")
            .arg(dir.path())
            .args(["--layer", "fc3", "-q", "--out-dir"])
            .arg(out.path())
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .failure();
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(
            stderr.contains("checkpoint-2.train.safetensors")
                && stderr.contains("expected a regular file"),
            "{kind}: {stderr}"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }
}

/// A learning rate must be finite and positive, from metadata, a manifest or the flag: a
/// negative one would flip its checkpoint's sign and zero would drop it, silently.
#[test]
fn learning_rates_must_be_positive() {
    for lr in ["-0.2", "0"] {
        // Checkpoint metadata.
        let dir = scratch();
        let path = dir.path().join("checkpoint-2.safetensors");
        let f = TensorFile::open(&path).unwrap();
        let tensors = f
            .names()
            .into_iter()
            .map(|n| {
                let m = f.matrix(&n, Rank::MatrixOrVector).unwrap();
                let shape = f.info(&n).unwrap().shape.to_vec();
                (n, OutTensor::F32(shape, m.to_vec()))
            })
            .collect();
        let mut meta = f.metadata().clone();
        drop(f);
        meta.insert("learning_rate".into(), lr.into());
        write_safetensors(&path, tensors, meta).unwrap();
        fails(
            dir.path(),
            "scores",
            &[],
            &[
                "checkpoint-2.safetensors",
                "learning_rate (metadata)",
                "expected a positive learning rate",
            ],
        );
        // The flag.
        fails(
            scratch().path(),
            "topk",
            &[&format!("--learning-rate={lr}")],
            &["--learning-rate", "expected a positive learning rate"],
        );
    }
    // A manifest.
    let dir = scratch();
    let manifest = dir.path().join("run.json");
    std::fs::write(
        &manifest,
        r#"{"checkpoints": [{"checkpoint": "checkpoint-1.safetensors",
            "train": "checkpoint-1.train.safetensors", "learning_rate": -1.0}]}"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let assert = Command::cargo_bin("infl")
        .unwrap()
        .args(["self-influence", "--layer", "fc3", "-q", "--manifest"])
        .arg(&manifest)
        .arg("--out-dir")
        .arg(out.path())
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("run.json") && stderr.contains("expected a positive learning rate"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn no_display_warnings_without_a_desktop_session() {
    // Mesa's device-select layer would print "XDG_RUNTIME_DIR is invalid or not set" twice
    // when the default backend looks for a GPU outside a desktop session.
    let out = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("infl")
        .unwrap()
        .args(["scores", "-q", "--layer", "fc3", "--run"])
        .arg(fixture_run())
        .arg("--out")
        .arg(out.path().join("s.safetensors"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert!(out.path().join("s.safetensors").is_file());
}

/// `infl topk ... | head -1`: stdout closed before the summary is printed. The results
/// are published first; the process ends quietly (SIGPIPE, as `cat` does), never a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly_after_publishing() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("top.safetensors");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("infl"))
        .args([
            "-q",
            "--backend",
            "cpu",
            "topk",
            "--layer",
            "fc3",
            "-k",
            "2",
            "--run",
        ])
        .arg(fixture_run())
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(!err.contains("panicked"), "{err}");
    let by_pipe = done.status.signal() == Some(libc_sigpipe());
    assert!(done.status.success() || by_pipe, "{:?}: {err}", done.status);
    assert_eq!(
        TensorFile::open(&out)
            .unwrap()
            .integers_flat("proponent_ids")
            .unwrap()
            .len(),
        7 * 2,
        "the results were published before stdout was used"
    );
}

/// SIGPIPE's number on Unix.
#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}
