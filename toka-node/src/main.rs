//! The standalone Toka node (placeholder while the CLI is written).
fn main() {}
