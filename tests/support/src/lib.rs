//! Test and bench support shared by Toka's crates, in one place instead of `#[path]`
//! includes and copies. Not published; a dev-dependency only.
//!
//! - [`child`]: the libtest-like entry of `harness = false` tests and the line protocol
//!   of crash tests that re-run their own binary as a child and SIGKILL it;
//! - [`rng`]: a tiny seeded PRNG, and the seed of a run (`TOKA_SEED` replays one);
//! - [`fs`]: directory helpers;
//! - [`history`]: jepsen-style histories of crash tests (invocation and ack logs,
//!   observations) and the checker that finds lost, duplicate, phantom, misplaced,
//!   reordered and flickering operations;
//! - [`mod@bench`]: the bench harness (watchdog, medians, the tokio runtime of workloads);
//! - [`model_server`]: a scripted OpenAI / Anthropic HTTP server on 127.0.0.1 for tests
//!   of model clients (no paid API is ever called), and recorded wire-format fixtures;
//! - [`llama_server`]: a real model server (llama.cpp's, from the PyPI package xllamacpp)
//!   on 127.0.0.1 serving a tiny generated model with known answers.

pub mod bench;
pub mod child;
pub mod fs;
pub mod history;
pub mod llama_server;
pub mod model_server;
pub mod rng;
