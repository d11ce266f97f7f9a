//! Tile-size tuning probe: one top-k run at the benchmark size, printing wall time, CPU
//! time-free GFLOP/s and the peak RSS. `cargo run --release -p infl-benches --example tune
//! -- THREADS Q T [N T_TEST]`.

use infl::{Backend, Bias, CpuBackend, Engine, FactorMatrices, FactorTerm, TermSet, Tiles};
use infl_core::Rhs;
use infl_core::testing::rand_matrix;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("number"))
        .collect();
    let (threads, q, t) = (a[0], a[1], a[2]);
    let n = a.get(3).copied().unwrap_or(50_000);
    let tt = a.get(4).copied().unwrap_or(1_000);
    let (d, k, c) = (128, 10, 6);
    let set = problem(n, tt, d, k, c);
    let engine = Engine::new(
        CpuBackend::with_threads(threads)
            .expect("pool")
            .with_tiles(Tiles { query: q, train: t }),
    );
    let flops = (c * (2 * tt * n * d + 2 * tt * n * k + 3 * tt * n)) as f64;
    let input_mib = (c * (n + tt) * (d + k) * 4) as f64 / (1 << 20) as f64;
    let full_mib = (n * tt * 4) as f64 / (1 << 20) as f64;
    println!("inputs {input_mib:.0} MiB; a full [T, N] f32 matrix would be {full_mib:.0} MiB");
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let top = engine.topk(&set, 10, &()).expect("topk");
        std::hint::black_box(top);
        best = best.min(start.elapsed().as_secs_f64());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("peak RSS after top-k: {hwm}");
    if std::env::var_os("TUNE_NO_GEMM").is_none() {
        let peak = sgemm_peak(engine.backend());
        println!(
            "sgemm peak {peak:.1} GFLOP/s; top-k at {:.0}% of it",
            100.0 * flops / best / 1e9 / peak
        );
    }
    println!(
        "threads {threads} tiles {q}x{t} n {n} t {tt}: best {best:.3} s, {:.1} GFLOP/s, {hwm}",
        flops / best / 1e9
    );
}

/// `c` checkpoint terms of `n` training and `tt` test examples.
fn problem(n: usize, tt: usize, d: usize, k: usize, c: usize) -> TermSet {
    TermSet {
        terms: (0..c as u64)
            .map(|i| FactorTerm {
                label: format!("checkpoint {i}"),
                weight: 0.1,
                bias: Bias::Excluded,
                positions: 1,
                train: FactorMatrices {
                    a: rand_matrix(n, d, i),
                    g: rand_matrix(n, k, i + 100),
                },
                test: Some(FactorMatrices {
                    a: rand_matrix(tt, d, i + 200),
                    g: rand_matrix(tt, k, i + 300),
                }),
            })
            .collect(),
    }
}

/// The machine's SGEMM GFLOP/s under the same conditions, for the fraction of peak.
fn sgemm_peak(backend: &CpuBackend) -> f64 {
    let (m, depth, nn) = (4096, 512, 4096);
    let x = rand_matrix(m, depth, 1);
    let y = rand_matrix(nn, depth, 2);
    let mut out = vec![0.0f32; m * nn];
    let mut gemm = f64::INFINITY;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        Backend::gemm(backend, x.view(), y.view(), Rhs::Transposed, &mut out).expect("gemm");
        gemm = gemm.min(start.elapsed().as_secs_f64());
    }
    (2 * m * nn * depth) as f64 / gemm / 1e9
}
