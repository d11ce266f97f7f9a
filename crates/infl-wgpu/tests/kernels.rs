//! The generic kernel tests of infl-core, run on the GPU backend (default limits).
//! Without an adapter they skip with a message, unless `INFL_REQUIRE_GPU=1`.

mod common;

mod default_limits {
    infl_core::backend_tests!(crate::common::gpu());
}
