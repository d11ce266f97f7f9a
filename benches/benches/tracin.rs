//! Placeholder; replaced by the TracInCPFast benchmark.
fn main() {}
