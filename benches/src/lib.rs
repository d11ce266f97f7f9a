//! Criterion benchmarks of infl (see `benches/`).
