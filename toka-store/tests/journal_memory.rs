//! The journal conformance suite against [`MemoryJournal`].

#[macro_use]
mod conformance;

use std::path::PathBuf;

use conformance::Harness;
use toka_store::{Error, JournalConfig, MemoryBackend, MemoryJournal};

/// In-memory storage: reopening builds a new journal over a clone of the same backend
/// (clones share the data).
struct MemoryHarness {
    backend: MemoryBackend,
}

impl MemoryHarness {
    fn new() -> Self {
        MemoryHarness {
            backend: MemoryBackend::new(),
        }
    }
}

impl Harness for MemoryHarness {
    type Backend = MemoryBackend;

    fn open(&self, config: JournalConfig) -> Result<MemoryJournal, Error> {
        MemoryJournal::with_backend(self.backend.clone(), config)
    }

    fn raw_entries(journal: &MemoryJournal) -> Vec<Vec<u8>> {
        journal.backend().with_raw(|map| {
            map.iter()
                .flat_map(|(key, value)| [key.clone(), value.to_vec()])
                .collect()
        })
    }

    fn crash_image(&self) -> Self {
        let copy = self.backend.with_raw(|map| map.clone());
        let backend = MemoryBackend::new();
        backend.with_raw(|map| *map = copy);
        MemoryHarness { backend }
    }

    fn stored_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

journal_conformance!(MemoryHarness::new());
