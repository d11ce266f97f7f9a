//! `--backend gpu` gives the CPU's TracInCPFast results on the bundled example.
//!
//! Without an adapter the test prints why and passes, unless `INFL_REQUIRE_GPU=1`
//! (set by CI), in which case a missing adapter is a failure.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use infl::io::{Rank, TensorFile};

fn run_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum/run")
}

/// `infl SUB -q --backend B --layer fc3 --run RUN ARGS OUT`.
fn infl(backend: &str, args: &[&str], out: &Path) -> std::process::Output {
    Command::cargo_bin("infl")
        .unwrap()
        .arg(args[0])
        .args(["-q", "--backend", backend, "--layer", "fc3", "--run"])
        .arg(run_dir())
        .args(&args[1..])
        .arg(out)
        .output()
        .unwrap()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs() + 1e-6 * scale,
            "{what}[{i}]: gpu {g}, cpu {w}"
        );
    }
}

#[test]
fn gpu_equals_cpu_on_the_bundled_example() {
    let dir = tempfile::tempdir().unwrap();
    let probe = infl(
        "gpu",
        &["topk", "-k", "5", "--out"],
        &dir.path().join("gpu-topk.safetensors"),
    );
    if !probe.status.success() {
        let err = String::from_utf8_lossy(&probe.stderr);
        let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
        assert!(
            !required && err.contains("no usable GPU adapter"),
            "--backend gpu failed (INFL_REQUIRE_GPU={}): {err}",
            required as u8
        );
        eprintln!("SKIPPED gpu_equals_cpu_on_the_bundled_example: {err}");
        return;
    }
    let p = |n: &str| dir.path().join(n);
    for (sub, extra) in [("scores", &[][..]), ("topk", &["-k", "5"][..])] {
        for backend in ["cpu", "gpu"] {
            let mut args = vec![sub];
            args.extend_from_slice(extra);
            args.push("--out");
            let o = infl(backend, &args, &p(&format!("{backend}-{sub}.safetensors")));
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    for backend in ["cpu", "gpu"] {
        let o = infl(backend, &["self-influence", "--out-dir"], &p(backend));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let open = |n: &str| TensorFile::open(p(n)).unwrap();
    let (c, g) = (
        open("cpu-scores.safetensors"),
        open("gpu-scores.safetensors"),
    );
    close(
        "scores",
        g.matrix("scores", Rank::Matrix).unwrap().data(),
        c.matrix("scores", Rank::Matrix).unwrap().data(),
    );
    let (c, g) = (open("cpu-topk.safetensors"), open("gpu-topk.safetensors"));
    for name in ["proponents", "opponents"] {
        assert_eq!(
            g.integers_flat(name).unwrap(),
            c.integers_flat(name).unwrap(),
            "{name}"
        );
        let s = format!("{}_scores", name.trim_end_matches('s'));
        close(
            &s,
            g.matrix(&s, Rank::Matrix).unwrap().data(),
            c.matrix(&s, Rank::Matrix).unwrap().data(),
        );
    }
    let (c, g) = (
        open("cpu/self_influence.safetensors"),
        open("gpu/self_influence.safetensors"),
    );
    close(
        "self-influence",
        &g.vector("self_influence").unwrap(),
        &c.vector("self_influence").unwrap(),
    );
    let csv = |b: &str| std::fs::read_to_string(p(b).join("suspicious.csv")).unwrap();
    let ids = |s: String| -> Vec<String> {
        s.lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(csv("gpu")), ids(csv("cpu")), "suspect ranking");
}

/// `INFL_GPU_INDEX` opens the N-th physical GPU (0 exists wherever an adapter does) and an
/// index beyond them is refused, naming the variable and what exists, with nothing written.
#[test]
fn gpu_index_picks_an_adapter_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with_index = |index: &str, out: &Path| {
        Command::cargo_bin("infl")
            .unwrap()
            .env("INFL_GPU_INDEX", index)
            .args([
                "topk",
                "-q",
                "--backend",
                "gpu",
                "--layer",
                "fc3",
                "-k",
                "3",
                "--run",
            ])
            .arg(run_dir())
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let first = dir.path().join("index-0.safetensors");
    let probe = with_index("0", &first);
    if !probe.status.success() {
        let err = String::from_utf8_lossy(&probe.stderr);
        let required = std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1");
        assert!(
            !required && err.contains("no usable GPU adapter"),
            "INFL_GPU_INDEX=0 failed (INFL_REQUIRE_GPU={}): {err}",
            required as u8
        );
        eprintln!("SKIPPED gpu_index_picks_an_adapter_or_is_refused: {err}");
        return;
    }
    assert!(first.exists());
    for bad in ["64", "first"] {
        let out = dir.path().join(format!("{bad}.safetensors"));
        let o = with_index(bad, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "INFL_GPU_INDEX={bad} was accepted");
        assert!(
            err.contains(&format!(
                "INFL_GPU_INDEX=\"{bad}\": expected an index below"
            )),
            "{err}"
        );
        assert!(
            !out.exists(),
            "INFL_GPU_INDEX={bad} wrote {}",
            out.display()
        );
    }
}
