//! The generic kernel tests of infl-core, run on the CPU backend (with small tiles too,
//! so that tile edges are exercised on small shapes).

mod default_tiles {
    infl_core::backend_tests!(Some(infl_cpu::CpuBackend::new()));
}

mod small_tiles {
    use infl_cpu::{CpuBackend, Tiles};
    infl_core::backend_tests!(Some(
        CpuBackend::with_threads(3)
            .expect("pool")
            .with_tiles(Tiles { query: 5, train: 7 })
    ));
}
