//! conduit-bench.
fn main() {}
