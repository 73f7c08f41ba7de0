//! Helpers shared by the integration tests; each test binary uses a subset of them.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::time::{Duration, Instant};

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

pub(crate) use toka_test_support::bench::log_key;
pub(crate) use toka_test_support::child::{child_fail, emit, self_command};
pub(crate) use toka_test_support::fs::{copy_dir, files_under};
pub(crate) use toka_test_support::rng::{Rng, seed_from_env_or_time};

/// Number of log records stored in a raw sled database: a log value is one record (format
/// 1) or a pack (format 2: `[2][count u32 LE]…`).
pub(crate) fn stored_records(db: &sled::Db) -> u64 {
    db.scan_prefix(b"L")
        .values()
        .map(|value| {
            let value = value.unwrap();
            match value.first() {
                Some(2) => u64::from(u32::from_le_bytes(value[1..5].try_into().unwrap())),
                _ => 1,
            }
        })
        .sum()
}

/// Opens the raw sled database of a closed journal. sled releases its directory lock from
/// its own background threads shortly after the last handle is dropped, so this retries a
/// held lock for a few seconds, as `SledBackend::open` does.
pub(crate) fn open_raw_db(dir: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(e)
                if started.elapsed() < Duration::from_secs(5)
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("opening the raw database failed: {e}"),
        }
    }
}

/// Runs `edit` on the raw sled database of a closed journal, then flushes and closes it.
pub(crate) fn with_raw_db<R>(dir: &Path, edit: impl FnOnce(&sled::Db) -> R) -> R {
    let db = open_raw_db(dir);
    let result = edit(&db);
    db.flush().unwrap();
    result
}

/// What a [`HookedFlush`] back-end does before each flush (sleep like a disk's `fsync`,
/// wait for a gate, fail).
pub(crate) type FlushHook = std::sync::Arc<dyn Fn() -> Result<(), toka_store::Error> + Send + Sync>;

/// A memory back-end whose `flush` runs a test's hook first: a slow, held-back or broken
/// disk.
#[derive(Clone)]
pub(crate) struct HookedFlush {
    inner: toka_store::MemoryBackend,
    hook: FlushHook,
}

impl HookedFlush {
    /// A fresh memory back-end whose flushes run `hook` first.
    pub(crate) fn new(hook: FlushHook) -> Self {
        HookedFlush {
            inner: toka_store::MemoryBackend::new(),
            hook,
        }
    }
}

impl toka_store::Backend for HookedFlush {
    type Value = <toka_store::MemoryBackend as toka_store::Backend>::Value;
    type Range = <toka_store::MemoryBackend as toka_store::Backend>::Range;

    fn apply(&self, batch: toka_store::WriteBatch) -> Result<(), toka_store::Error> {
        self.inner.apply(batch)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, toka_store::Error> {
        self.inner.get(key)
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Self::Range {
        self.inner.range(start, end)
    }

    fn last_in(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<toka_store::backend::Entry<Self::Value>>, toka_store::Error> {
        self.inner.last_in(start, end)
    }

    fn flush(&self) -> Result<(), toka_store::Error> {
        (self.hook)()?;
        self.inner.flush()
    }
}
