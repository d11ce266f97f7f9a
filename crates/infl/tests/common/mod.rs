//! Shared by the golden tests against peers: where the fixtures are, the tolerance of a
//! peer comparison, and the backends to check (the CPU, and the GPU when one is there).

#![allow(dead_code)]

use std::path::PathBuf;

use infl::{Backend, CpuBackend};

/// `fixtures/NAME` at the repository root.
pub fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// `|a − b| ≤ 1e-5 · max(|b|, 1% of the largest |b|) + 1e-7 · the largest |b|`, elementwise:
/// the peers' own f32 arithmetic agrees with an f64 hand computation to ~1e-7 of the
/// largest value, so 1e-5 relative leaves room without hiding a wrong convention.
pub fn assert_close_to_peer(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs().max(scale * 1e-2) + 1e-7 * scale;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, peer {w} (tol {tol})"
        );
    }
}

/// The GPU backend, or `None` when there is no adapter (a failure with INFL_REQUIRE_GPU=1).
pub fn gpu() -> Option<Box<dyn Backend>> {
    match infl::select_backend(infl::BackendChoice::Gpu, None) {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var_os("INFL_REQUIRE_GPU").is_none(),
                "INFL_REQUIRE_GPU is set but no GPU adapter was found: {e}"
            );
            None
        }
    }
}

/// The CPU backend, then the GPU one when present.
pub fn backends() -> Vec<Box<dyn Backend>> {
    let mut b: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    b.extend(gpu());
    b
}

/// `|a − b| ≤ rtol · max |b|`, elementwise: for peers whose inputs differ from infl's by
/// f32 rounding that their preconditioning amplifies (Kronfluence's float64 model against
/// the f32 factor files), where entries far below the largest carry that absolute error.
pub fn assert_close_to_scale(what: &str, got: &[f32], want: &[f32], rtol: f64) {
    let err = max_relative_error(got, want);
    assert!(
        err <= rtol,
        "{what}: max |got − peer| / max |peer| = {err:.2e} > {rtol:e}"
    );
}

/// `max |a − b| / max |b|`: the agreement with a peer that a golden test reports.
pub fn max_relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let scale = want.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    let err = (got.iter().zip(want))
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
        .fold(0f64, f64::max);
    err / scale
}

/// Proptest cases of the file-mutation tests: `PROPTEST_CASES` (`cargo xtask fuzz`), else 64.
pub fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}
