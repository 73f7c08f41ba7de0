//! The journal conformance suite against [`SledJournal`], on real sled databases in
//! temporary directories.
#![cfg(feature = "sled")]

mod common;
#[macro_use]
mod conformance;

use std::path::PathBuf;

use common::{copy_dir, files_under};
use conformance::Harness;
use tempfile::TempDir;
use toka_store::{Error, JournalConfig, SledBackend, SledJournal};

/// A sled database in its own temporary directory, kept alive as long as the harness.
/// Reopening opens the same directory again (after the old journal released sled's lock).
struct SledHarness {
    dir: TempDir,
}

impl SledHarness {
    fn new() -> Self {
        SledHarness {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("journal")
    }
}

impl Harness for SledHarness {
    type Backend = SledBackend;

    fn open(&self, config: JournalConfig) -> Result<SledJournal, Error> {
        SledJournal::open(self.db_path(), config)
    }

    fn raw_entries(journal: &SledJournal) -> Vec<Vec<u8>> {
        let db = journal.backend().db();
        let mut entries = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            for entry in tree.iter() {
                let (key, value) = entry.unwrap();
                entries.push(key.to_vec());
                entries.push(value.to_vec());
            }
        }
        entries
    }

    fn crash_image(&self) -> Self {
        let image = SledHarness::new();
        copy_dir(&self.db_path(), &image.db_path());
        image
    }

    fn stored_files(&self) -> Vec<PathBuf> {
        files_under(self.dir.path())
    }
}

journal_conformance!(SledHarness::new());
