//! What the PostgreSQL back-end adds to the conformance suite: schema migrations and their
//! version check, the one-writer lock, one transaction per group commit, a lost connection,
//! and passwords kept out of errors. Each test uses a schema of its own (`tests/pg/mod.rs`).
#![cfg(feature = "postgres")]

mod pg;

use std::time::{Duration, Instant};

use pg::TestSchema;
use toka_store::backend::{PG_LOCK_RETRY_FOR, PG_SCHEMA_VERSION};
use toka_store::{
    Durability, Error, ExpectedVersion, Journal, JournalConfig, NewEvent, PgBackend, PgJournal,
};

fn fsync() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

fn event(i: u32) -> NewEvent {
    NewEvent::new("n", i.to_be_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_applies_the_migrations_and_refuses_a_newer_schema() {
    let Some(schema) = TestSchema::new("mig") else {
        return;
    };
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    assert_eq!(journal.backend().schema(), schema.name);
    assert_eq!(
        journal.backend().schema_version().unwrap(),
        PG_SCHEMA_VERSION
    );
    journal
        .append("a", ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap()
        .unwrap();
    drop(journal);
    let rows = pg::query_i64(
        &schema.url,
        format!("SELECT count(*) FROM \"{}\".toka_schema", schema.name),
    )
    .unwrap();
    assert_eq!(rows, i64::from(PG_SCHEMA_VERSION), "one row per migration");

    // Reopening applies nothing new and keeps the data.
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    assert_eq!(journal.stream_version("a").unwrap(), 1);
    drop(journal);

    // A schema a newer build migrated is refused, naming both versions.
    schema
        .sql("INSERT INTO {s}.toka_schema (version) VALUES (99)")
        .unwrap();
    let error = PgJournal::connect(&schema.journal_url(), fsync()).unwrap_err();
    match &error {
        Error::UnsupportedSchema {
            schema: name,
            found,
            supported,
        } => {
            assert_eq!(name, &schema.name);
            assert_eq!((*found, *supported), (99, i64::from(PG_SCHEMA_VERSION)));
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
    assert!(error.to_string().contains("version 99"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_until_the_first_closes() {
    let Some(schema) = TestSchema::new("lock") else {
        return;
    };
    let first = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    let started = Instant::now();
    let error = PgJournal::connect(&schema.journal_url(), fsync()).unwrap_err();
    assert!(
        error.to_string().contains("open in another connection"),
        "{error}"
    );
    assert!(started.elapsed() >= PG_LOCK_RETRY_FOR);
    drop(first);
    // Dropping the journal closes its connection, and with it the lock.
    let second = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions() {
    let Some(schema) = TestSchema::new("group") else {
        return;
    };
    const TASKS: u32 = 40;
    const EACH: u32 = 10;
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    // Every write transaction takes a transaction id; count them across the appends.
    let xid = || {
        pg::query_i64(
            &schema.url,
            "SELECT pg_current_xact_id()::text::bigint".into(),
        )
        .unwrap()
    };
    let before = xid();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                journal
                    .append(&format!("s{task}"), ExpectedVersion::Any, &[event(i)])
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let used = xid() - before - 1;
    let appends = i64::from(TASKS * EACH);
    assert_eq!(journal.head_position(), appends as u64);
    eprintln!("{appends} durable appends took {used} write transactions");
    assert!(
        used * 2 <= appends,
        "{appends} concurrent appends used {used} transactions: no group commit"
    );
    drop(journal);
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    assert_eq!(journal.head_position(), appends as u64);
    assert!(journal.verify().unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_poisons_the_journal_and_reopening_recovers() {
    let Some(schema) = TestSchema::new("lost") else {
        return;
    };
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    for i in 0..5 {
        journal
            .append("a", ExpectedVersion::Any, &[event(i)])
            .await
            .unwrap()
            .unwrap();
    }
    // The server ends the journal's connection (as a restart or a network cut would).
    pg::query_i64(
        &schema.url,
        format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'toka-journal/{}'",
            schema.name
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match journal.append("a", ExpectedVersion::Any, &[event(9)]).await {
            Err(error) => break error,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(result) => panic!("appends still succeed on a killed connection: {result:?}"),
        }
    };
    assert!(
        matches!(error, Error::Backend { .. } | Error::Poisoned(_)),
        "{error:?}"
    );
    assert!(journal.write_failure().is_some());
    drop(journal);
    let journal = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    let version = journal.stream_version("a").unwrap();
    assert!(version >= 5, "acknowledged appends lost: version {version}");
    assert!(journal.verify().unwrap().is_intact());
}

#[tokio::test]
async fn errors_never_show_the_password() {
    let Some(url) = pg::url() else {
        return;
    };
    const SECRET: &str = "Wr0ng-s3cret-pw";
    // A wrong password for the test role, and a server that is not there.
    let user = url
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split([':', '@']).next())
        .unwrap_or("toka");
    let host = url
        .rsplit_once('@')
        .map_or("127.0.0.1:5432/toka", |(_, h)| h);
    let urls = [
        format!("postgres://{user}:{SECRET}@{host}"),
        format!("postgres://{user}:{SECRET}@127.0.0.1:1/toka"),
        format!("postgres://{user}:{SECRET}@127.0.0.1:1/toka?schema=Bad-Name"),
        format!("postgres://{user}:{SECRET}@127.0.0.1:1/toka?sslmode=nonsense"),
        format!("host=127.0.0.1 port=1 user={user} password={SECRET}"),
    ];
    for url in urls {
        let error = PgBackend::connect(&url).unwrap_err();
        let shown = format!(
            "{error} / {error:?} / {:?}",
            std::error::Error::source(&error)
        );
        assert!(!shown.contains(SECRET), "password shown: {shown}");
        assert!(!toka_store::redact_url(&url).contains(SECRET));
    }
}
