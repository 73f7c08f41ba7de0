//! Journal benchmarks (placeholder while the bench harness is written).
fn main() {}
