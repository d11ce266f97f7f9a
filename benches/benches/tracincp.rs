//! TracInCP over the 3 linear layers (with biases) of an MNIST-sized MLP, 784-256-128-10,
//! on the CPU backend: full scores, streamed top-k (k = 10) and self-influence. Full size
//! N = 20,000 train, T = 500 test, 3 checkpoints; one engine term per (checkpoint, layer),
//! built directly from random factors (see `common/tracincp.rs`).
//!
//! Throughput is in FLOPs (criterion's "elements/s" = FLOP/s): per checkpoint and layer
//! `2·T·N·D + 2·T·N·K + 3·T·N` for scores and top-k, `2·N·(D + K) + 3·N` for
//! self-influence. The PyTorch peer with the same math and FLOP formulas is
//! `benches/torch_tracin.py --modes tracincp`; `cargo xtask bench-compare` runs both.
//! Threads: `INFL_BENCH_THREADS` (default 2).
//!
//! `cargo bench` measures at full size; under `cargo test` (CI) every benchmark runs once
//! at a tiny size.

#[path = "common/tracincp.rs"]
mod common;

use common::{Size, score_flops, self_flops, term_set};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infl::Engine;
use infl_cpu::CpuBackend;

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size {
            n: 20_000,
            t: 500,
            c: 3,
        }
    } else {
        Size { n: 300, t: 8, c: 2 }
    }
}

fn threads() -> usize {
    std::env::var("INFL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn tracincp(cr: &mut Criterion) {
    let s = size();
    let set = term_set(s);
    let engine = Engine::new(CpuBackend::with_threads(threads()).expect("thread pool"));
    let mut g = cr.benchmark_group(format!(
        "tracincp_3layers_n{}_t{}_c{}_threads{}",
        s.n,
        s.t,
        s.c,
        threads()
    ));
    g.sample_size(10);
    g.throughput(Throughput::Elements(score_flops(s)));
    g.bench_function("scores_full", |b| {
        b.iter(|| engine.scores(&set, &()).expect("scores"))
    });
    g.bench_function("topk10", |b| {
        b.iter(|| engine.topk(&set, 10, &()).expect("topk"))
    });
    g.throughput(Throughput::Elements(self_flops(s)));
    g.bench_function("self_influence", |b| {
        b.iter(|| engine.self_influence(&set).expect("self"))
    });
    g.finish();
}

criterion_group!(benches, tracincp);
criterion_main!(benches);
