//! The journal conformance suite against [`PgJournal`], each case in a PostgreSQL schema
//! of its own (see `tests/pg/mod.rs`; set `TOKA_TEST_POSTGRES`).
#![cfg(feature = "postgres")]

#[macro_use]
mod conformance;
mod pg;

use std::path::PathBuf;

use conformance::Harness;
use pg::TestSchema;
use toka_store::{Backend, Error, JournalConfig, PgBackend, PgJournal};

/// A journal in its own schema. Reopening connects to the same schema again (after the old
/// journal's connection released the journal's advisory lock).
struct PgHarness {
    schema: TestSchema,
}

impl PgHarness {
    fn new() -> Self {
        PgHarness {
            schema: TestSchema::new("conf").expect("TOKA_TEST_POSTGRES is set"),
        }
    }
}

impl Harness for PgHarness {
    type Backend = PgBackend;

    fn open(&self, config: JournalConfig) -> Result<PgJournal, Error> {
        PgJournal::connect(&self.schema.journal_url(), config)
    }

    fn raw_entries(journal: &PgJournal) -> Vec<Vec<u8>> {
        let mut entries = Vec::new();
        for entry in journal.backend().range(&[], &[u8::MAX; 16]) {
            let (key, value) = entry.unwrap();
            entries.push(key);
            entries.push(value);
        }
        entries
    }

    /// What another connection sees now: the committed rows, which is what survives a
    /// crash of the journal's process (its open transaction is rolled back).
    fn crash_image(&self) -> Self {
        let image = PgHarness {
            schema: TestSchema::on(&self.schema.url, "img"),
        };
        let (from, to) = (&self.schema.name, &image.schema.name);
        image
            .schema
            .sql(&format!(
                "CREATE SCHEMA \"{to}\";
                 CREATE TABLE \"{to}\".toka_schema (LIKE \"{from}\".toka_schema INCLUDING ALL);
                 INSERT INTO \"{to}\".toka_schema SELECT * FROM \"{from}\".toka_schema;
                 CREATE TABLE \"{to}\".kv (LIKE \"{from}\".kv INCLUDING ALL);
                 INSERT INTO \"{to}\".kv SELECT * FROM \"{from}\".kv;
                 CREATE TABLE \"{to}\".anchor (LIKE \"{from}\".anchor INCLUDING ALL);
                 INSERT INTO \"{to}\".anchor SELECT * FROM \"{from}\".anchor;"
            ))
            .expect("copying the committed rows");
        image
    }

    fn stored_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

journal_conformance!(when pg::available() => PgHarness::new());
