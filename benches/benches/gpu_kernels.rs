//! Criterion benches of the four backend kernels (fused scores, fused top-k,
//! self-influence, GEMM) on the CPU backend and, when an adapter exists, the GPU backend,
//! and the engine's top-k with and without norm-bound pruning on each backend (heavy-tailed
//! row norms, as real gradients have; the fraction of pairs scored is printed and the
//! pruned lists are checked equal to the unpruned ones, so a software adapter checks the
//! GPU path's pruning even where its timing means nothing).
//! Throughput is reported in FLOPs ("elements" in criterion's output are FLOPs):
//! fused = terms·(2·T·N·(Da+Dg) + 3·T·N), self-influence = terms·N·(2·(Da+Dg) + 3),
//! GEMM = 2·m·n·k.
//!
//! Shapes come from the environment (defaults are small enough for a software adapter):
//! `INFL_BENCH_N` train rows (4096), `INFL_BENCH_T` test rows (128), `INFL_BENCH_D` input
//! width Da (512), `INFL_BENCH_K` output width Dg (10), `INFL_BENCH_TERMS` (1),
//! `INFL_BENCH_TOPK` (10). `INFL_BENCH_BACKENDS` = `cpu,gpu` (default) selects backends;
//! the GPU is opened with `--backend gpu` semantics
//! ([`AdapterPolicy::AnyIncludingSoftware`]: any adapter, software included).
//! The full-score bench caps N at 32768 so its output stays in memory; the top-k bench
//! streams all N through the fused kernel.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infl::{Engine, FactorMatrices, FactorTerm, Pruning, TermSet};
use infl_core::testing::{TermData, rand_matrix};
use infl_core::{Backend, Bias, Factors, Matrix, Rhs, SelfTerm, Term, TopK};
use infl_wgpu::{AdapterPolicy, Options, WgpuBackend};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn backends() -> Vec<(String, Box<dyn Backend>)> {
    let wanted = std::env::var("INFL_BENCH_BACKENDS").unwrap_or_else(|_| "cpu,gpu".into());
    let mut v: Vec<(String, Box<dyn Backend>)> = Vec::new();
    if wanted.contains("cpu") {
        v.push(("cpu".into(), Box::new(infl_cpu::CpuBackend::new())));
    }
    if wanted.contains("gpu") {
        match WgpuBackend::new(AdapterPolicy::AnyIncludingSoftware, Options::default()) {
            Ok(b) => {
                eprintln!("gpu_kernels: GPU backend on {}", b.name());
                v.push(("gpu".into(), Box::new(b)));
            }
            Err(e) => eprintln!("gpu_kernels: no GPU backend, CPU only: {e}"),
        }
    }
    v
}

struct Data {
    terms: Vec<TermData>,
}

impl Data {
    fn new(t: usize, n: usize, da: usize, dg: usize, terms: usize) -> Self {
        Self {
            terms: (0..terms as u64)
                .map(|i| TermData {
                    weight: 0.5,
                    query_a: rand_matrix(t, da, 4 * i + 1),
                    query_g: rand_matrix(t, dg, 4 * i + 2),
                    train_a: rand_matrix(n, da, 4 * i + 3),
                    train_g: rand_matrix(n, dg, 4 * i + 4),
                })
                .collect(),
        }
    }

    fn terms(&self, n: usize) -> Vec<Term<'_>> {
        self.terms
            .iter()
            .map(|d| Term {
                weight: d.weight,
                bias: Bias::Included,
                query: Factors::new(d.query_a.view(), d.query_g.view()).expect("rows"),
                train: Factors::new(
                    d.train_a.view().slice_rows(0, n),
                    d.train_g.view().slice_rows(0, n),
                )
                .expect("rows"),
            })
            .collect()
    }

    fn self_terms(&self) -> Vec<SelfTerm<'_>> {
        self.terms
            .iter()
            .map(|d| SelfTerm {
                weight: d.weight,
                bias: Bias::Included,
                factors: Factors::new(d.train_a.view(), d.train_g.view()).expect("rows"),
            })
            .collect()
    }
}

/// Sizes (from the environment), data and backends shared by the four groups.
struct Setup {
    n: usize,
    t: usize,
    da: usize,
    dg: usize,
    nterms: usize,
    k: usize,
    data: Data,
    backends: Vec<(String, Box<dyn Backend>)>,
}

impl Setup {
    fn new() -> Self {
        let (n, t, da, dg) = (
            env("INFL_BENCH_N", 4096),
            env("INFL_BENCH_T", 128),
            env("INFL_BENCH_D", 512),
            env("INFL_BENCH_K", 10),
        );
        let (nterms, k) = (env("INFL_BENCH_TERMS", 1), env("INFL_BENCH_TOPK", 10));
        Self {
            data: Data::new(t, n, da, dg, nterms),
            backends: backends(),
            n,
            t,
            da,
            dg,
            nterms,
            k,
        }
    }

    /// FLOPs of a fused pass over `n` training rows.
    fn fused_flops(&self, n: usize) -> u64 {
        (self.nterms * (2 * self.t * n * (self.da + self.dg) + 3 * self.t * n)) as u64
    }
}

fn fused_topk(c: &mut Criterion, s: &Setup) {
    let (t, n, k) = (s.t, s.n, s.k);
    let mut g = c.benchmark_group(format!(
        "fused_topk/T{t}_N{n}_D{}_K{}_terms{}_k{k}",
        s.da, s.dg, s.nterms
    ));
    g.sample_size(10)
        .throughput(Throughput::Elements(s.fused_flops(n)));
    let terms = s.data.terms(n);
    for (name, b) in &s.backends {
        g.bench_function(name.as_str(), |bench| {
            bench.iter(|| {
                let mut acc = TopK::new(t, k.min(n)).expect("k");
                b.topk(&terms, 0, &mut acc).expect("topk");
                black_box(acc.finish())
            })
        });
    }
    g.finish();
}

/// The engine's top-k, pruned (`Always`) and not (`Off`), on every backend, over the
/// setup's shapes with training rows rescaled by `e^{4u}`, `u` uniform in [−1, 1]
/// (heavy-tailed norms). Pruning blocks of 256 rows at the default N = 4096 (the engine's
/// default block, 1024, at N ≥ 16,384).
fn pruned_topk(c: &mut Criterion, s: &Setup) {
    let (t, n, k) = (s.t, s.n, s.k.min(s.n));
    let scale = rand_matrix(n, 1, 99);
    let heavy = |m: &Matrix| {
        let cols = m.cols();
        let data: Vec<f32> = (m.view().data().chunks_exact(cols).enumerate())
            .flat_map(|(j, row)| {
                let f = (4.0 * scale.view().row(j)[0]).exp();
                row.iter().map(move |x| x * f)
            })
            .collect();
        Matrix::from_vec(m.rows(), cols, data).expect("shape")
    };
    let set = TermSet {
        terms: (s.data.terms.iter().enumerate())
            .map(|(i, d)| FactorTerm {
                label: format!("term {i}"),
                weight: d.weight,
                bias: Bias::Included,
                positions: 1,
                train: FactorMatrices {
                    a: heavy(&d.train_a),
                    g: d.train_g.clone(),
                },
                test: Some(FactorMatrices {
                    a: d.query_a.clone(),
                    g: d.query_g.clone(),
                }),
            })
            .collect(),
    };
    let block = if n >= 16_384 { 1024 } else { 256 };
    let mut g = c.benchmark_group(format!(
        "pruned_topk/T{t}_N{n}_D{}_K{}_terms{}_k{k}_block{block}",
        s.da, s.dg, s.nterms
    ));
    g.sample_size(10)
        .throughput(Throughput::Elements(s.fused_flops(n)));
    for (name, b) in &s.backends {
        let engine = |p| {
            Engine::new(b.as_ref())
                .with_prune_block(block)
                .with_pruning(p)
        };
        let off = engine(Pruning::Off)
            .topk_counted(&set, k, &())
            .expect("topk");
        let on = engine(Pruning::Always)
            .topk_counted(&set, k, &())
            .expect("topk");
        assert_eq!(
            on.rows, off.rows,
            "{name}: pruned top-k differs from unpruned"
        );
        println!(
            "pruned_topk {name}: {:.2}% of pairs scored (lists equal to unpruned)",
            100.0 * on.pairs.fraction()
        );
        for p in [Pruning::Always, Pruning::Off] {
            let e = engine(p);
            g.bench_function(format!("{name}_{p:?}"), |bench| {
                bench.iter(|| black_box(e.topk(&set, k, &()).expect("topk")))
            });
        }
    }
    g.finish();
}

fn fused_scores(c: &mut Criterion, s: &Setup) {
    let (t, ns) = (s.t, s.n.min(32768));
    let mut g = c.benchmark_group(format!(
        "fused_scores/T{t}_N{ns}_D{}_K{}_terms{}",
        s.da, s.dg, s.nterms
    ));
    g.sample_size(10)
        .throughput(Throughput::Elements(s.fused_flops(ns)));
    let terms = s.data.terms(ns);
    let mut out = vec![0.0f32; t * ns];
    for (name, b) in &s.backends {
        g.bench_function(name.as_str(), |bench| {
            bench.iter(|| {
                b.scores(&terms, &mut out).expect("scores");
                black_box(out[0])
            })
        });
    }
    g.finish();
}

fn self_influence(c: &mut Criterion, s: &Setup) {
    let (n, da, dg, nterms) = (s.n, s.da, s.dg, s.nterms);
    let mut g = c.benchmark_group(format!("self_influence/N{n}_D{da}_K{dg}_terms{nterms}"));
    let self_flops = (nterms * n * (2 * (da + dg) + 3)) as u64;
    g.sample_size(10)
        .throughput(Throughput::Elements(self_flops));
    let self_terms = s.data.self_terms();
    let mut out = vec![0.0f32; n];
    for (name, b) in &s.backends {
        g.bench_function(name.as_str(), |bench| {
            bench.iter(|| {
                b.self_influence(&self_terms, &mut out)
                    .expect("self_influence");
                black_box(out[0])
            })
        });
    }
    g.finish();
}

/// GEMM: `[m, D] · [D, D]ᵀ`, e.g. projecting features.
fn gemm(c: &mut Criterion, s: &Setup) {
    let (m, da) = (s.n.min(8192), s.da);
    let a = rand_matrix(m, da, 11);
    let w = rand_matrix(da, da, 12);
    let mut g = c.benchmark_group(format!("gemm_abt/{m}x{da}x{da}"));
    g.sample_size(10)
        .throughput(Throughput::Elements((2 * m * da * da) as u64));
    let mut out = vec![0.0f32; m * da];
    for (name, b) in &s.backends {
        g.bench_function(name.as_str(), |bench| {
            bench.iter(|| {
                b.gemm(a.view(), w.view(), Rhs::Transposed, &mut out)
                    .expect("gemm");
                black_box(out[0])
            })
        });
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let setup = Setup::new();
    fused_topk(c, &setup);
    pruned_topk(c, &setup);
    fused_scores(c, &setup);
    self_influence(c, &setup);
    gemm(c, &setup);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
