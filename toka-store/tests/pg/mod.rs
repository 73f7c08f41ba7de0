//! Set-up shared by the PostgreSQL tests: the server URL from the environment, and one
//! PostgreSQL schema per test (dropped at the end), so tests run in parallel.
//!
//! `TOKA_TEST_POSTGRES` is the URL of a database the tests may create schemas in
//! (`tests/postgres/start.sh` starts a local server and prints one). Without it the tests
//! pass without doing anything, unless `TOKA_REQUIRE_POSTGRES=1` (as in CI): then they fail.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The URL of the test database, or `None` (after saying so) when the tests should skip.
///
/// # Panics
/// When `TOKA_REQUIRE_POSTGRES=1` and `TOKA_TEST_POSTGRES` is not set.
pub(crate) fn url() -> Option<String> {
    match std::env::var("TOKA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("TOKA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TOKA_REQUIRE_POSTGRES=1 but TOKA_TEST_POSTGRES is not set \
                 (start a server with toka-store/tests/postgres/start.sh)"
            );
            eprintln!("skipped: TOKA_TEST_POSTGRES is not set");
            None
        }
    }
}

/// Whether the PostgreSQL tests run (see [`url`]).
pub(crate) fn available() -> bool {
    url().is_some()
}

/// Runs SQL on a fresh connection, on a thread of its own (the sync `postgres` client
/// cannot run inside a tokio runtime).
pub(crate) fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_owned())?
}

/// A PostgreSQL schema of its own, dropped (with everything in it) when this is dropped.
#[derive(Debug)]
pub(crate) struct TestSchema {
    /// The server URL without a schema.
    pub(crate) url: String,
    /// The schema name.
    pub(crate) name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestSchema {
    /// A fresh, unique schema name on the test server (the schema itself is created when
    /// a journal opens it). `None` when the tests skip.
    pub(crate) fn new(tag: &str) -> Option<Self> {
        let url = url()?;
        Some(Self::on(&url, tag))
    }

    /// A fresh schema name on the server of `url`.
    pub(crate) fn on(url: &str, tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "t_{tag}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TestSchema {
            url: url.to_owned(),
            name,
        }
    }

    /// The URL of the journal in this schema.
    pub(crate) fn journal_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.url, self.name)
    }

    /// Runs SQL with `{s}` replaced by the quoted schema name.
    pub(crate) fn sql(&self, sql: &str) -> Result<(), String> {
        admin(&self.url, sql.replace("{s}", &format!("\"{}\"", self.name)))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let _ = self.sql("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {s} CASCADE");
    }
}

/// Runs a query returning one `bigint` on a fresh connection.
pub(crate) fn query_i64(url: &str, sql: String) -> Result<i64, String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        let row = client.query_one(&sql, &[]).map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0))
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_owned())?
}
