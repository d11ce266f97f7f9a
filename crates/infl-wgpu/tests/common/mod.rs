//! Opening the GPU backend in tests: skip with a visible message when there is no
//! adapter, unless `INFL_REQUIRE_GPU=1`, in which case a missing adapter fails the test.

#![allow(dead_code)]

use std::sync::OnceLock;

use infl_wgpu::{AdapterPolicy, Options, WgpuBackend};

/// True when `INFL_REQUIRE_GPU=1`.
pub fn gpu_required() -> bool {
    std::env::var("INFL_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Opens a backend on any adapter (software included) with `options`, or `None` (with a
/// message) when no adapter exists.
pub fn open(options: Options) -> Option<WgpuBackend> {
    match WgpuBackend::new(AdapterPolicy::AnyIncludingSoftware, options) {
        Ok(b) => Some(b),
        Err(e) if gpu_required() => {
            panic!("INFL_REQUIRE_GPU=1 but the GPU backend is unavailable: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: GPU tests need a wgpu adapter (set INFL_REQUIRE_GPU=1 to fail instead): {e}"
            );
            None
        }
    }
}

/// The shared backend with default options (opened once per test binary).
pub fn gpu() -> Option<WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| {
        let b = open(Options::default());
        if let Some(b) = &b {
            eprintln!("GPU tests on {:?}", b.adapter_info().name);
        }
        b
    })
    .clone()
}
