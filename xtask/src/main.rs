//! Project automation: `cargo xtask ci`, `cargo xtask fixtures`, `cargo xtask bench-compare`.
//!
//! - `ci`: fmt --check, clippy -D warnings, all tests (criterion benches in test mode),
//!   docs with -D warnings. The same command runs locally and in `.ci/run`.
//! - `fixtures`: regenerates the golden files from the peers' own code (PyTorch + Captum
//!   from PyPI, in a venv under `target/`). Not run by CI (CI has no torch).
//! - `bench-compare`: runs the CPU criterion benchmarks (`tracin`: TracInCPFast;
//!   `tracincp`: TracInCP over 3 layers) and the PyTorch peer (`benches/torch_tracin.py`,
//!   modes `topk,scores,self,sgemm,tracincp`) back to back, same thread count, for
//!   BENCHMARKS.md.
//! - `bench-data`: writes the MNIST input of the `prune_mnist` bench once (the infl-nn MLP
//!   on the full MNIST of `../shared/data/mnist`, 10% label noise, 15 checkpoints, via
//!   `infl demo`) to `target/bench-mnist/run`; `bench-compare` runs it first.
//! - `compare-outputs --old BIN --new BIN`: checks that two builds of `infl` write
//!   byte-identical outputs (see `compare.rs`), for refactors.
//! - `python`: builds the Python package (`crates/infl-py`, maturin, debug profile) into a
//!   venv under `target/py-venv` with `crates/infl-py/requirements-test.txt` (numpy,
//!   pytest, Ray from PyPI) and runs its pytest tests, the Ray one-machine cluster test
//!   included. `.ci/run` runs it after `ci`; it needs `python3` with `venv` and PyPI.
//! - `fuzz [--cases N]`: infl-io's mutation fuzzing (`crates/infl-io/tests/fuzz.rs`) and
//!   the index files' (`crates/infl/tests/index.rs`) in release mode with N cases per
//!   reader (default 100,000; seven readers), where the ordinary test run does 2,000 each
//!   (64 for the index, whose files are checksummed and read in full).

mod compare;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("fixtures") => fixtures(&root, &args[1..]),
        Some("bench-compare") => bench_compare(&root, &args[1..]),
        Some("bench-data") => bench_data(&root).map(drop),
        Some("compare-outputs") => compare::compare(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("python") => python(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | python | fixtures [--python PY] | bench-compare \
                 [--threads N] | bench-data | compare-outputs --old BIN --new BIN \
                 [--backend cpu|gpu] | fuzz [--cases N]>"
            );
            bail!("unknown or missing task")
        }
    }
}

/// The workspace root (xtask lives in `ROOT/xtask`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent folder")
        .to_path_buf()
}

fn run(root: &Path, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(root, &cargo, &["fmt", "--all", "--", "--check"], &[])?;
    run(
        root,
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run(root, &cargo, &["test", "--workspace", "--all-targets"], &[])?;
    run(root, &cargo, &["test", "--workspace", "--doc"], &[])?;
    run(
        root,
        &cargo,
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// Builds the Python package into `target/py-venv` and runs its tests (see the crate docs).
fn python(root: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    let dir = root.join("target/py-venv");
    let py = dir.join("bin/python");
    if !py.exists() {
        let dir = dir.to_str().unwrap_or_default();
        run(root, "python3", &["-m", "venv", dir], &[])?;
    }
    let py = py.to_str().unwrap_or_default();
    let requirements = "crates/infl-py/requirements-test.txt";
    let quiet = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    run(root, py, &[&quiet[..], &["-r", requirements]].concat(), &[])?;
    // The debug profile: a release build of the whole stack would add minutes to CI for
    // tests that need no speed.
    let dev = [("MATURIN_PEP517_ARGS", "--profile dev")];
    run(
        root,
        py,
        &[
            &quiet[..],
            &["--force-reinstall", "--no-deps", "./crates/infl-py"],
        ]
        .concat(),
        &dev,
    )?;
    // The tests compare with the `infl` binary (built by `cargo test`, else here).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !root.join("target/debug/infl").exists() {
        run(root, &cargo, &["build", "-p", "infl-cli"], &[])?;
    }
    let bin = root.join("target/debug/infl");
    let bin = [("INFL_BIN", bin.to_str().unwrap_or_default())];
    run(
        root,
        py,
        &["-m", "pytest", "-q", "crates/infl-py/tests"],
        &bin,
    )?;
    eprintln!(
        "xtask python: passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Creates (once) a venv with the peers' pinned versions; returns its python.
fn venv(root: &Path, args: &[String]) -> Result<PathBuf> {
    if let Some(py) = flag(args, "--python") {
        return Ok(PathBuf::from(py));
    }
    let dir = root.join("target/peers-venv");
    let py = dir.join("bin/python");
    if !py.exists() {
        run(
            root,
            "python3",
            &["-m", "venv", dir.to_str().unwrap_or_default()],
            &[],
        )?;
        run(
            root,
            py.to_str().unwrap_or_default(),
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                "fixtures/requirements.txt",
            ],
            &[],
        )?;
    }
    Ok(py)
}

fn fixtures(root: &Path, args: &[String]) -> Result<()> {
    let py = venv(root, args)?;
    let py = py.to_str().unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Captum TracInCPFast / TracInCP references.
    run(root, py, &["fixtures/captum/generate.py"], &[])?;
    // Captum TracInCP over chosen layers and TracInCPFastRandProj, from factor files that
    // python/export_factors.py writes (the exporter is tested by the same run).
    run(root, py, &["fixtures/captum_tracincp/generate.py"], &[])?;
    // Captum NaiveInfluenceFunction on the final layer (float64), for --method influence.
    run(root, py, &["fixtures/captum_influence/generate.py"], &[])?;
    // Kronfluence K-FAC / EK-FAC pairwise scores (float64) on captum_tracincp's MLP and CNN.
    run(root, py, &["fixtures/kronfluence/generate.py"], &[])?;
    // InterpretDL forgetting events: re-record an infl-nn history, then run the port.
    run(
        root,
        &cargo,
        &[
            "test",
            "-p",
            "infl-nn",
            "--release",
            "--test",
            "record_history",
            "--",
            "--ignored",
        ],
        &[],
    )?;
    run(root, py, &["fixtures/interpretdl/port.py"], &[])?;
    // infl-nn checkpoints loaded by PyTorch.
    run(
        root,
        &cargo,
        &[
            "test",
            "-p",
            "infl-nn",
            "--test",
            "checkpoints",
            "--",
            "--ignored",
            "write_round_trip_fixture",
        ],
        &[],
    )?;
    run(root, py, &["fixtures/nn_roundtrip/check.py"], &[])?;
    // dattri 0.3.0 side by side with `infl eval` (logistic regression, 1,000 train, 2x2
    // pooled MNIST): infl's ground truth and checkpoints, dattri's attributors and metrics.
    let small = "target/dattri-small";
    for kind in [
        &["lds", "--test", "100", "--subsets", "20"][..],
        &["loo", "--tests", "10"],
    ] {
        let mut a = vec!["run", "--release", "-p", "infl-cli", "--", "-q", "eval"];
        a.extend_from_slice(kind);
        a.extend_from_slice(&[
            "--train",
            "1000",
            "--pool",
            "2",
            "--no-plots",
            "--out",
            small,
        ]);
        run(root, &cargo, &a, &[])?;
    }
    run(
        root,
        py,
        &[
            "fixtures/dattri/compare.py",
            small,
            "--lissa-depth",
            "100",
            "--json",
            "fixtures/dattri/small.json",
        ],
        &[],
    )?;
    // The independent torch reference on the same setting, subsets and removals (both bias
    // conventions; minutes on 2 cores).
    run(
        root,
        py,
        &[
            "fixtures/dattri/lr_reference.py",
            "--train",
            "1000",
            "--pool",
            "2",
            "--test",
            "100",
            "--infl-dir",
            small,
            "--bias",
            "penalised,free",
            "--json",
            "fixtures/dattri/reference-small.json",
        ],
        &[],
    )?;
    eprintln!("xtask fixtures: regenerated; review `git diff --stat fixtures/` and commit");
    Ok(())
}

/// Runs infl-io's fuzz tests in release mode with `--cases` cases per reader.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let cases = flag(args, "--cases").unwrap_or("100000");
    match cases.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => bail!("--cases expects a positive number of cases per reader, found {cases:?}"),
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let start = std::time::Instant::now();
    run(
        root,
        &cargo,
        &["test", "-p", "infl-io", "--release", "--test", "fuzz"],
        &[("PROPTEST_CASES", cases)],
    )?;
    // infl's own files: the index's (byte changes in either file) and saved Hessians
    // (`infl fit`: byte changes and cuts).
    for (test, filter) in [
        ("index", "altered_files"),
        ("influence", "altered_hessian_files"),
    ] {
        run(
            root,
            &cargo,
            &["test", "-p", "infl", "--release", "--test", test, filter],
            &[("PROPTEST_CASES", cases)],
        )?;
    }
    eprintln!(
        "xtask fuzz: {cases} cases per reader passed in {:.0?}",
        start.elapsed()
    );
    Ok(())
}

/// The MNIST run folder of the `prune_mnist` bench, written by `infl demo` unless present.
fn bench_data(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/bench-mnist");
    let dir = out.join("run");
    if dir.is_dir() {
        return Ok(dir);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(root, &cargo, &["build", "--release", "-p", "infl-cli"], &[])?;
    let mnist = root.join("../shared/data/mnist");
    let (mnist, out_s) = (mnist.to_string_lossy(), out.to_string_lossy());
    run(
        root,
        "target/release/infl",
        &[
            "demo",
            "--mnist-dir",
            &mnist,
            "--noise",
            "0.1",
            "--epochs",
            "15",
            "--seed",
            "0",
            "--explain",
            "10000",
            "--no-plots",
            "--out",
            &out_s,
        ],
        &[],
    )?;
    Ok(dir)
}

fn bench_compare(root: &Path, args: &[String]) -> Result<()> {
    let threads = flag(args, "--threads").unwrap_or("2");
    let py = venv(root, args)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    bench_data(root)?;
    run(
        root,
        &cargo,
        &[
            "bench",
            "-p",
            "infl-benches",
            "--bench",
            "tracin",
            "--bench",
            "tracincp",
            "--bench",
            "prune_mnist",
        ],
        &[("INFL_BENCH_THREADS", threads)],
    )?;
    // The peer on the MNIST input's shape (dense top-k: its time does not depend on the
    // values), k = 10 and 100.
    for k in ["10", "100"] {
        run(
            root,
            py.to_str().unwrap_or_default(),
            &[
                "benches/torch_tracin.py",
                "--threads",
                threads,
                "--modes",
                "topk",
                "--n",
                "60000",
                "--t",
                "10000",
                "--d",
                "128",
                "--k",
                "10",
                "--checkpoints",
                "15",
                "--topk",
                k,
                "--json",
                &format!("target/torch_mnist_topk{k}.json"),
            ],
            &[],
        )?;
    }
    run(
        root,
        py.to_str().unwrap_or_default(),
        &[
            "benches/torch_tracin.py",
            "--threads",
            threads,
            "--modes",
            "topk,scores,self,sgemm,tracincp",
            "--json",
            "target/torch_tracin.json",
        ],
        &[],
    )?;
    eprintln!(
        "xtask bench-compare: criterion results in target/criterion, torch in target/torch_tracin.json"
    );
    Ok(())
}
