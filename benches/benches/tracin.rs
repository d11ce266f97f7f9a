//! TracInCPFast on the CPU backend at the size (N = 50,000 train, T = 1,000 test,
//! D = 128, K = 10, 6 checkpoints): top-k (k = 10 and 100, with norm-bound pruning and
//! without, printing the fraction of pairs scored), full scores and self-influence, plus
//! the machine's SGEMM peak (faer, 4096×512 · 512×4096) for the fraction-of-peak figure.
//! Throughput is in FLOPs (criterion's "elements/s" = FLOP/s). The PyTorch peer with the
//! same math and FLOP formula is `benches/torch_tracin.py`; `cargo xtask bench-compare`
//! runs both back to back.
//!
//! `cargo bench` measures at full size; under `cargo test` (CI) every benchmark runs once
//! at a small size.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infl::{Engine, FactorMatrices, FactorTerm, Pruning, TermSet};
use infl_core::testing::rand_matrix;
use infl_core::{Backend, Bias, Matrix, Rhs};
use infl_cpu::{CpuBackend, Tiles};

struct Size {
    n: usize,
    t: usize,
    d: usize,
    k: usize,
    c: usize,
}

fn size() -> Size {
    let bench = std::env::args().any(|a| a == "--bench");
    if bench {
        Size {
            n: 50_000,
            t: 1_000,
            d: 128,
            k: 10,
            c: 6,
        }
    } else {
        Size {
            n: 2_000,
            t: 50,
            d: 32,
            k: 10,
            c: 2,
        }
    }
}

fn threads() -> usize {
    std::env::var("INFL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn term_set(s: &Size) -> TermSet {
    TermSet {
        terms: (0..s.c as u64)
            .map(|c| FactorTerm {
                label: format!("checkpoint {c}"),
                weight: 0.1 / (c + 1) as f32,
                bias: Bias::Excluded,
                positions: 1,
                train: FactorMatrices {
                    a: rand_matrix(s.n, s.d, 10 * c + 1),
                    g: rand_matrix(s.n, s.k, 10 * c + 2),
                },
                test: Some(FactorMatrices {
                    a: rand_matrix(s.t, s.d, 10 * c + 3),
                    g: rand_matrix(s.t, s.k, 10 * c + 4),
                }),
            })
            .collect(),
    }
}

/// Same formula as benches/torch_tracin.py.
fn score_flops(s: &Size) -> u64 {
    (s.c * (2 * s.t * s.n * s.d + 2 * s.t * s.n * s.k + 3 * s.t * s.n)) as u64
}

fn tracin(cr: &mut Criterion) {
    let s = size();
    let set = term_set(&s);
    let engine = Engine::new(backend());
    fused(cr, &s, &set, &engine);
    bandwidth(cr, &s, &set, &engine);
    sgemm(cr, engine.backend());
}

/// The CPU backend on `threads()` threads; `INFL_BENCH_TILES=Q,T` overrides the tile
/// sizes (for tuning).
fn backend() -> CpuBackend {
    let backend = CpuBackend::with_threads(threads()).expect("thread pool");
    match std::env::var("INFL_BENCH_TILES")
        .ok()
        .and_then(|v| v.split_once(',').map(|(a, b)| (a.parse(), b.parse())))
        .and_then(|(a, b)| Some((a.ok()?, b.ok()?)))
    {
        Some((q, t)) => backend.with_tiles(Tiles { query: q, train: t }),
        None => backend,
    }
}

/// Fused top-k and full scores.
fn fused(cr: &mut Criterion, s: &Size, set: &TermSet, engine: &Engine<CpuBackend>) {
    let mut g = cr.benchmark_group(format!(
        "tracin_fast_n{}_t{}_d{}_k{}_c{}_threads{}",
        s.n,
        s.t,
        s.d,
        s.k,
        s.c,
        threads()
    ));
    g.sample_size(10);
    g.throughput(Throughput::Elements(score_flops(s)));
    for k in [10, 100] {
        for pruning in [Pruning::Auto, Pruning::Off] {
            let engine = engine.clone().with_pruning(pruning);
            let scored = engine.topk_counted(set, k, &()).expect("topk").pairs;
            println!(
                "topk{k} {pruning:?}: {:.2}% of pairs scored",
                100.0 * scored.fraction()
            );
            g.bench_function(format!("topk{k}_{pruning:?}"), |b| {
                b.iter(|| engine.topk(set, k, &()).expect("topk"))
            });
        }
    }
    g.bench_function("scores_full", |b| {
        b.iter(|| engine.scores(set, &()).expect("scores"))
    });
    g.finish();
}

/// Self-influence is a single pass over the training factors: compare its bandwidth
/// with a plain parallel sum over the same bytes (the machine's read bandwidth).
fn bandwidth(cr: &mut Criterion, s: &Size, set: &TermSet, engine: &Engine<CpuBackend>) {
    let bytes = (s.c * s.n * (s.d + s.k) * 4) as u64;
    let mut g = cr.benchmark_group(format!("bandwidth_threads{}", threads()));
    g.sample_size(20);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("self_influence", |b| {
        b.iter(|| engine.self_influence(set).expect("self"))
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build()
        .expect("pool");
    g.bench_function("read_sum_reference", |b| {
        b.iter(|| {
            pool.install(|| {
                use rayon::prelude::*;
                set.terms
                    .iter()
                    .map(|t| {
                        let sum = |m: &Matrix| -> f32 {
                            m.data()
                                .par_chunks(1 << 14)
                                .map(|c| c.iter().sum::<f32>())
                                .sum()
                        };
                        sum(&t.train.a) + sum(&t.train.g)
                    })
                    .sum::<f32>()
            })
        })
    });
    g.finish();
}

/// The machine's SGEMM peak through the backend's faer GEMM.
fn sgemm(cr: &mut Criterion, backend: &CpuBackend) {
    let (m, k, n) = if std::env::args().any(|a| a == "--bench") {
        (4096, 512, 4096)
    } else {
        (256, 64, 256)
    };
    let a = rand_matrix(m, k, 1);
    let bt = rand_matrix(n, k, 2);
    let mut out = vec![0.0f32; m * n];
    let mut g = cr.benchmark_group(format!("sgemm_threads{}", threads()));
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    g.bench_function(format!("faer_{m}x{k}x{n}"), |b| {
        b.iter(|| {
            backend
                .gemm(a.view(), bt.view(), Rhs::Transposed, &mut out)
                .expect("gemm")
        })
    });
    g.finish();
}

criterion_group!(benches, tracin);
criterion_main!(benches);
