//! The journal conformance suite against [`SledJournal`], on real sled databases in
//! temporary directories.
#![cfg(feature = "sled")]

#[macro_use]
mod conformance;

use std::path::{Path, PathBuf};

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

fn copy_dir(from: &Path, to: &Path) {
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

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
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
        let mut files = Vec::new();
        files_under(self.dir.path(), &mut files);
        files
    }
}

journal_conformance!(SledHarness::new());
