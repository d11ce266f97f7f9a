//! `cargo xtask compare-outputs --old BIN --new BIN`: runs two builds of the `infl` binary
//! on the same inputs and checks that every output file is byte-identical, so that a
//! refactor can show it changed no result.
//!
//! Cases: `scores`, `topk --json` and `self-influence` on the Captum fixture run (with
//! the loss, reduction and bias variants), a reduced `infl demo` on the bundled MNIST
//! subset (every file it writes, plots and factors included; `results.json` compared
//! without its `seconds` timings), then the three subcommands on the run folder the demo
//! wrote. Stdout must match too, except the demo's (it prints timings). `--backend gpu`
//! runs the subcommands on the GPU backend instead of the CPU (default `cpu`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// One invocation: its name (the output folder) and arguments; `OUT` is replaced by the
/// output folder and `RUN` by the demo's run folder.
const CASES: &[(&str, &str)] = &[
    (
        "scores-ce",
        "scores --run CAPTUM --layer fc3 --out OUT/scores.safetensors",
    ),
    (
        "scores-mse-mean",
        "scores --run CAPTUM --layer fc3 --loss mse --reduction mean --out OUT/s.safetensors",
    ),
    (
        "scores-bias",
        "scores --run CAPTUM --layer fc3 --include-bias --learning-rate 0.5 --out OUT/s.safetensors",
    ),
    (
        "topk",
        "topk --run CAPTUM --layer fc3 -k 3 --out OUT/topk.safetensors --json OUT/topk.json",
    ),
    (
        "self",
        "self-influence --run CAPTUM --layer fc3 --top 5 --out-dir OUT",
    ),
    (
        "demo",
        "demo --train 1000 --test 100 --epochs 2 --seed 3 --explain 2 --export-factors --out OUT",
    ),
    (
        "demo-scores",
        "scores --run RUN --layer fc3 --out OUT/scores.safetensors",
    ),
    (
        "demo-topk",
        "topk --run RUN --layer fc3 -k 5 --out OUT/topk.safetensors --json OUT/topk.json",
    ),
    (
        "demo-self",
        "self-influence --run RUN --layer fc3 --out-dir OUT",
    ),
];

pub fn compare(root: &Path, args: &[String]) -> Result<()> {
    let bin = |name: &str| -> Result<PathBuf> {
        let p = crate::flag(args, name).with_context(|| format!("give {name} PATH"))?;
        std::fs::canonicalize(p).with_context(|| format!("{name} {p}"))
    };
    let (old, new) = (bin("--old")?, bin("--new")?);
    let backend = crate::flag(args, "--backend").unwrap_or("cpu");
    let work = root.join("target/compare-outputs");
    let _ = std::fs::remove_dir_all(&work);
    let captum = root.join("fixtures/captum/run");
    let mut failures = Vec::new();
    for (name, line) in CASES {
        let mut outputs = Vec::new();
        for (side, exe) in [("old", &old), ("new", &new)] {
            let out = work.join(side).join(name);
            std::fs::create_dir_all(&out)?;
            let run = work.join(side).join("demo/run");
            let line = line
                .replace("CAPTUM", &captum.display().to_string())
                .replace("RUN", &run.display().to_string())
                .replace("OUT", &out.display().to_string());
            // Stdout names the output folder: compare it with the side's folders masked.
            let stdout = invoke(exe, backend, &line)?
                .replace(&work.join(side).display().to_string(), "WORK");
            outputs.push((out, stdout));
        }
        let (old_out, new_out) = (&outputs[0], &outputs[1]);
        let mut diffs = compare_dirs(&old_out.0, &new_out.0)?;
        if *name != "demo" && old_out.1 != new_out.1 {
            diffs.push(format!(
                "stdout differs:\n--- old\n{}\n--- new\n{}",
                old_out.1, new_out.1
            ));
        }
        eprintln!(
            "{name:>16}: {} files, {}",
            files(&new_out.0)?.len(),
            if diffs.is_empty() {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
        failures.extend(diffs.into_iter().map(|d| format!("{name}: {d}")));
    }
    if !failures.is_empty() {
        bail!("outputs differ:\n{}", failures.join("\n"));
    }
    eprintln!("xtask compare-outputs: every output is byte-identical");
    Ok(())
}

/// Runs `exe` with `line`'s words on `backend` with 2 threads; returns stdout.
fn invoke(exe: &Path, backend: &str, line: &str) -> Result<String> {
    let out = Command::new(exe)
        .args(["--backend", backend, "--threads", "2", "-q"])
        .args(line.split_whitespace())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    ensure!(
        out.status.success(),
        "{} {line} failed:\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every file below `dir`, by path relative to it.
fn files(dir: &Path) -> Result<BTreeMap<PathBuf, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir)?.to_path_buf(), p);
            }
        }
    }
    Ok(out)
}

/// Differences between two output folders (`results.json` without `seconds`).
fn compare_dirs(old: &Path, new: &Path) -> Result<Vec<String>> {
    let (a, b) = (files(old)?, files(new)?);
    if a.keys().ne(b.keys()) {
        return Ok(vec![format!(
            "file sets differ: {:?} vs {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        )]);
    }
    let mut diffs = Vec::new();
    for (rel, pa) in &a {
        let (x, y) = (std::fs::read(pa)?, std::fs::read(&b[rel])?);
        let same = if rel.ends_with("results.json") {
            without_seconds(&x)? == without_seconds(&y)?
        } else {
            x == y
        };
        if !same {
            diffs.push(format!("{} differs", rel.display()));
        }
    }
    Ok(diffs)
}

fn without_seconds(bytes: &[u8]) -> Result<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("seconds");
    }
    Ok(v)
}
