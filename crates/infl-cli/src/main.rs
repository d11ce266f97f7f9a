//! The `infl` binary.
fn main() {}
