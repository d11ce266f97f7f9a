//! faer SGEMM efficiency at tile shapes (single thread): which `[q × t] · depth` tiles
//! reach the large-GEMM peak. `cargo run --release -p infl-benches --example gemm_shapes`.

use infl_core::testing::rand_matrix;
use infl_core::{Backend, Rhs};
use infl_cpu::CpuBackend;

fn main() {
    let b = CpuBackend::with_threads(1).expect("pool");
    for (m, n, k) in [
        (4096, 4096, 512),
        (256, 256, 128),
        (256, 512, 128),
        (256, 1024, 128),
        (512, 512, 128),
        (256, 2048, 128),
    ] {
        let x = rand_matrix(m, k, 1);
        let y = rand_matrix(n, k, 2);
        let mut out = vec![0.0f32; m * n];
        let reps = (4096 * 4096 * 512 / (m * n * k)).max(1);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                b.gemm(x.view(), y.view(), Rhs::Transposed, &mut out)
                    .expect("gemm");
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{m}x{n}x{k}: {:.1} GFLOP/s",
            (2 * m * n * k) as f64 / best / 1e9
        );
    }
}
