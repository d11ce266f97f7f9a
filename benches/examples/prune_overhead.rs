//! What `Pruning::Auto` costs where bounds prune nothing: the synthetic input of the
//! `tracin` bench (N = 50,000, T = 1,000, D = 128, K = 10, 6 checkpoints, uniform random
//! factors), top-k with `Auto` and `Off` timed in alternation (each first in every other pair), `--pairs` pairs per k (12),
//! on `INFL_BENCH_THREADS` threads (2). Alternating pairs make the ratio robust to a
//! shared machine's load drifting between criterion's sequential groups; the medians of
//! the per-pair ratios are printed with the median times.
//!
//!     cargo run --release -p infl-benches --example prune_overhead [-- --pairs 12]

use std::time::Instant;

use infl::{Engine, FactorMatrices, FactorTerm, Pruning, TermSet};
use infl_core::Bias;
use infl_core::testing::rand_matrix;
use infl_cpu::CpuBackend;

fn main() {
    let pairs = std::env::args()
        .skip_while(|a| a != "--pairs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(12usize);
    let threads = std::env::var("INFL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let (n, t, d, k, c) = (50_000, 1_000, 128, 10, 6u64);
    // The same factors as benches/benches/tracin.rs.
    let set = TermSet {
        terms: (0..c)
            .map(|c| FactorTerm {
                label: format!("checkpoint {c}"),
                weight: 0.1 / (c + 1) as f32,
                bias: Bias::Excluded,
                positions: 1,
                train: FactorMatrices {
                    a: rand_matrix(n, d, 10 * c + 1),
                    g: rand_matrix(n, k, 10 * c + 2),
                },
                test: Some(FactorMatrices {
                    a: rand_matrix(t, d, 10 * c + 3),
                    g: rand_matrix(t, k, 10 * c + 4),
                }),
            })
            .collect(),
    };
    let engine = Engine::new(CpuBackend::with_threads(threads).expect("thread pool"));
    let time = |p: Pruning, top: usize| {
        let start = Instant::now();
        let out = engine.clone().with_pruning(p).topk_counted(&set, top, &());
        (
            start.elapsed().as_secs_f64(),
            out.expect("topk").pairs.fraction(),
        )
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for top in [10, 100] {
        let (mut auto, mut off, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let mut fraction = 0.0;
        for pair in 0..pairs {
            // Which runs first alternates, so neither gains from going second.
            let ((a, f), (o, _)) = if pair % 2 == 0 {
                let a = time(Pruning::Auto, top);
                (a, time(Pruning::Off, top))
            } else {
                let o = time(Pruning::Off, top);
                (time(Pruning::Auto, top), o)
            };
            fraction = f;
            auto.push(a);
            off.push(o);
            ratio.push(a / o);
        }
        println!(
            "k = {top}: Auto {:.1} ms ({:.2}% of pairs), Off {:.1} ms, median Auto/Off {:.4} \
             over {pairs} pairs ({threads} threads)",
            1e3 * median(auto),
            100.0 * fraction,
            1e3 * median(off),
            median(ratio)
        );
    }
}
