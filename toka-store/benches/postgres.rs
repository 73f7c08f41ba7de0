//! Durable appends/s of the PostgreSQL journal against the sled journal, in one run on the
//! same machine: [`Durability::Fsync`] single-event appends (256-byte payloads) by N
//! concurrent tokio tasks (multi-thread runtime, 2 workers), each on its own stream, for a
//! fixed time; N = 1, 8 and 64. Every append returns only once durable, so the rate shows
//! group commit: sled shares one `flush` (fsync) between the appends waiting, PostgreSQL
//! one transaction (one WAL fsync at `COMMIT`).
//!
//! Each (back-end, N) is measured [`REPS`] times, sled and PostgreSQL interleaved; the table
//! reports medians and the ratio PostgreSQL / sled. The PostgreSQL journal gets a fresh
//! schema per run (dropped after); opening and closing are not timed.
//!
//! ```text
//! eval "export TOKA_TEST_POSTGRES=$(toka-store/tests/postgres/start.sh)"
//! cargo bench -p toka-store --features postgres --bench postgres
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-store --features postgres --bench postgres   # ~1 s runs
//! ```

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toka_store::{
    Durability, EventJournal, ExpectedVersion, Journal, JournalConfig, NewEvent, PgJournal,
    SledJournal,
};
use toka_test_support::bench::{BenchResult, fmt_rate, median};

/// Timed repetitions per measurement.
const REPS: usize = 3;
const APPENDERS: [usize; 3] = [1, 8, 64];

fn fsync() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

/// `appenders` tasks appending single events until `duration` is over; appends/s.
fn run<B: toka_store::Backend>(
    rt: &tokio::runtime::Runtime,
    journal: EventJournal<B>,
    appenders: usize,
    duration: Duration,
) -> BenchResult<f64> {
    let event = Arc::new([NewEvent::new("bench.event", vec![7u8; 256])]);
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::with_capacity(appenders);
        for i in 0..appenders {
            let (journal, event, done) = (journal.clone(), Arc::clone(&event), Arc::clone(&done));
            tasks.push(tokio::spawn(async move {
                let stream = format!("appender-{i}");
                while Instant::now() < deadline {
                    journal
                        .append(&stream, ExpectedVersion::Any, &event[..])
                        .await??;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, toka_store::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<_, Box<dyn StdError + Send + Sync>>(start.elapsed())
    })?;
    let done = done.load(Ordering::Relaxed);
    if journal.head_position() != done {
        return Err(format!("journal head {} != {done}", journal.head_position()).into());
    }
    Ok(done as f64 / elapsed.as_secs_f64())
}

fn admin(url: &str, sql: String) -> BenchResult<()> {
    let url = url.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        client.batch_execute(&sql).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "admin thread panicked")??;
    Ok(())
}

fn main() -> BenchResult<()> {
    let Ok(url) = std::env::var("TOKA_TEST_POSTGRES") else {
        eprintln!("set TOKA_TEST_POSTGRES (see toka-store/tests/postgres/start.sh)");
        std::process::exit(2);
    };
    let quick = std::env::var("TOKA_BENCH_QUICK").is_ok_and(|v| v == "1");
    let duration = Duration::from_secs(if quick { 1 } else { 3 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut schema_no = 0;
    for appenders in APPENDERS {
        let (mut sled, mut pg) = (Vec::new(), Vec::new());
        for rep in 0..REPS {
            for pg_first in [rep % 2 == 0, rep % 2 != 0] {
                if pg_first {
                    schema_no += 1;
                    let schema = format!("bench_{}_{schema_no}", std::process::id());
                    let sep = if url.contains('?') { '&' } else { '?' };
                    let journal =
                        PgJournal::connect(&format!("{url}{sep}schema={schema}"), fsync())?;
                    pg.push(run(&rt, journal, appenders, duration)?);
                    admin(&url, format!("DROP SCHEMA \"{schema}\" CASCADE"))?;
                } else {
                    let dir = TempDir::new()?;
                    let journal = SledJournal::open(dir.path(), fsync())?;
                    sled.push(run(&rt, journal, appenders, duration)?);
                }
            }
        }
        eprintln!("{appenders:>3} appenders: sled {sled:.0?} postgres {pg:.0?}");
        rows.push((appenders, median(&sled), median(&pg)));
    }
    println!("\ndurable appends/s (Fsync, single events, 256 B), medians of {REPS}:");
    println!(
        "{:>10} {:>14} {:>14} {:>10}",
        "appenders", "sled", "postgres", "pg/sled"
    );
    for (appenders, sled, pg) in rows {
        println!(
            "{appenders:>10} {:>14} {:>14} {:>9.2}x",
            fmt_rate(sled),
            fmt_rate(pg),
            pg / sled
        );
    }
    Ok(())
}
