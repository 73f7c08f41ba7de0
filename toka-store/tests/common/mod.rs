//! Helpers shared by the integration tests; each test binary uses a subset of them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use toka_store::{Durability, JournalConfig};

/// The default journal configuration with `Fsync` durability.
pub(crate) fn fsync_config() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

/// A current-thread tokio runtime with all drivers enabled.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A multi-thread tokio runtime with `workers` worker threads and all drivers enabled.
pub(crate) fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// The sled key of a log record: `b'L'` followed by the position as u64 BE.
pub(crate) fn log_key(position: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// A tiny deterministic PRNG (xorshift64*), so the tests need no extra crate.
pub(crate) struct Rng(u64);

impl Rng {
    /// Starts from `state` exactly as given (it must not be 0).
    pub(crate) fn with_state(state: u64) -> Self {
        Rng(state)
    }

    /// Seeds through a splitmix64 step, so that small/similar seeds give unrelated streams, never 0.
    pub(crate) fn splitmix(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Seeds with `seed` times the golden-ratio constant, made odd (so never 0).
    pub(crate) fn golden(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform-ish in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// All files below `dir` (recursively), sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files.extend(files_under(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}

/// Copies the directory tree `from` to `to` (created if missing).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A command that re-runs this test binary for the single test `name` (stdout piped).
pub(crate) fn self_command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Writes one line to stdout and flushes it; exits the child process if the parent went away.
pub(crate) fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// Fails a child process loudly: the parent sees the `ERR` line and a non-SIGKILL exit.
pub(crate) fn child_fail(what: &str) -> ! {
    emit(&format!("ERR {what}"));
    std::process::exit(2);
}
