//! Top-k with and without norm-bound pruning on real features: TracInCPFast over the
//! infl-nn MLP trained on the full MNIST (60,000 train, 10,000 test, 10% label noise,
//! 15 checkpoints), k = 10 and k = 100, printing the fraction of pairs scored.
//! Throughput is the unpruned FLOP count (the formula of `benches/torch_tracin.py`), so
//! criterion's "elem/s" of a pruned run is the *effective* FLOP/s.
//!
//! The input is generated once, not committed (`cargo xtask bench-data` runs
//!
//!     target/release/infl demo --mnist-dir ../shared/data/mnist --noise 0.1 --epochs 15 \
//!         --seed 0 --explain 10000 --no-plots --out target/bench-mnist
//!
//! — `--explain` sets how many test images get features — and the run folder is
//! `target/bench-mnist/run`); `INFL_BENCH_MNIST_RUN` points at
//! another run folder, `INFL_BENCH_MNIST_TEST=T` keeps the first `T` test examples,
//! `INFL_BENCH_PRUNE_BLOCK` sets the pruning block of the printed `Always` fractions.
//! Without the folder the bench says how to make it and measures nothing (CI).

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infl::io::RunLayout;
use infl::{CpuBackend, Engine, Estimator, Examples, Pruning, Run, Splits, TracInCPFast};

fn threads() -> usize {
    std::env::var("INFL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn run_dir() -> PathBuf {
    std::env::var_os("INFL_BENCH_MNIST_RUN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-mnist/run"),
        PathBuf::from,
    )
}

/// The first `t` examples.
fn first(e: &Examples, t: usize) -> Examples {
    e.select(&(0..t.min(e.len())).collect::<Vec<_>>())
}

fn prune_mnist(cr: &mut Criterion) {
    let dir = run_dir();
    if !dir.is_dir() {
        eprintln!(
            "prune_mnist: no run folder at {} (make it with `cargo xtask bench-data`); skipped",
            dir.display()
        );
        return;
    }
    let layout = RunLayout::discover(&dir).expect("run layout");
    let keep: usize = std::env::var("INFL_BENCH_MNIST_TEST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let run: Vec<_> = infl::load_run(&layout, "fc3", Splits::TrainAndTest)
        .expect("load run")
        .into_iter()
        .map(|mut c| {
            c.test = c.test.map(|e| first(&e, keep));
            c
        })
        .collect();
    let backend = CpuBackend::with_threads(threads()).expect("pool");
    let prepared = TracInCPFast::default()
        .prepare(&backend, &Run::from(run), &())
        .expect("prepare");
    let set = &prepared.set;
    let (n, t, c) = (set.n_train(), set.n_test(), set.terms.len());
    let (d, k) = (set.terms[0].train.a.cols(), set.terms[0].train.g.cols());
    let flops = (c * (2 * t * n * d + 2 * t * n * k + 3 * t * n)) as u64;
    let mut g = cr.benchmark_group(format!(
        "mnist_topk_n{n}_t{t}_d{d}_k{k}_c{c}_threads{}",
        threads()
    ));
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    for top in [10, 100] {
        let block = std::env::var("INFL_BENCH_PRUNE_BLOCK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(Engine::<CpuBackend>::DEFAULT_PRUNE_BLOCK);
        let engine = Engine::new(&backend)
            .with_pruning(Pruning::Always)
            .with_prune_block(block);
        let scored = engine.topk_counted(set, top, &()).expect("topk").pairs;
        println!(
            "mnist topk{top} Always: {:.2}% of pairs scored",
            100.0 * scored.fraction()
        );
    }
    for top in [10, 100] {
        for pruning in [Pruning::Auto, Pruning::Off] {
            let engine = Engine::new(&backend).with_pruning(pruning);
            let scored = engine.topk_counted(set, top, &()).expect("topk").pairs;
            println!(
                "mnist topk{top} {pruning:?}: {:.2}% of pairs scored",
                100.0 * scored.fraction()
            );
            g.bench_function(format!("topk{top}_{pruning:?}"), |b| {
                b.iter(|| engine.topk(set, top, &()).expect("topk"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, prune_mnist);
criterion_main!(benches);
