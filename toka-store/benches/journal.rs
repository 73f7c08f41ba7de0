//! Journal benchmarks: Toka's sled journal against raw sled doing the same storage work,
//! measured in the same run on the same machine.
//!
//! # What is measured
//! 1. **Append throughput** (`append-batch1`, `append-batch64`, `append-batch1024`):
//!    [`Durability::Buffered`] appends of batches of 1, 64 and 1024 events with 256-byte
//!    payloads, awaited one after another from one task (current-thread runtime), against
//!    raw sled storing the same number of 256-byte values under 9-byte big-endian keys
//!    (batch of 1: `insert`; batch of N: one `sled::Batch` through `apply_batch`), with
//!    sled configured like the journal's back-end (`flush_every_ms(None)`).
//!    Rate: events/s of the append loop. Target: Toka ≥ 0.7× raw sled. A context row also
//!    times a final `flush()` on both sides: sled writes each `apply_batch` out
//!    asynchronously, and that deferred I/O only shows once something flushes (the
//!    journal's own background flush does, inside the timed loop).
//! 2. **Group commit** (`group-commit`): [`Durability::Fsync`] single-event appends by 64
//!    concurrent tokio tasks (multi-thread runtime), each on its own stream, against ONE
//!    task appending sequentially. Rate: appends/s over a fixed time. Target: 64 appenders
//!    ≥ 10× one appender. For context, raw sled `insert` + `flush()` per op by one writer.
//! 3. **Replay** (`replay`): a full `iter_all(1)` over 1,000,000 events with 256-byte
//!    payloads (written in Buffered batches of 1024, flushed, journal dropped and reopened),
//!    against raw sled `iter()` over 1,000,000 256-byte values (written, flushed, dropped and
//!    reopened the same way). Both sum payload lengths. Rate: events/s. Target ≥ 0.7×.
//!    Each side is built once; the first scan after reopening (cold sled cache) is reported
//!    as context, then one more untimed scan each, then the timed scans.
//!
//! All runs share one process, so sled's process-wide concurrency control is in the same
//! state for both sides (the first `apply_batch` switches it to a real lock for good).
//!
//! Every measurement is repeated [`REPS`] times with baseline and Toka runs interleaved
//! (their order alternating), after one untimed warm-up round; the summary reports the
//! ratio of the medians, and each workload also prints its per-round ratios (neighbouring
//! runs, so slow drift of a noisy machine cancels out). A watchdog ends the process with
//! exit code 3 and the partial summary if one run makes no progress for 300 s
//! (`TOKA_BENCH_HANG_SECS`): sled 0.34.7 can deadlock for good under a backlog of
//! `apply_batch` writes, which the raw baseline's batched runs issue.
//! Write workloads use a fresh temporary directory per run; only the operations are timed
//! (opening, the final close and directory removal are not).
//!
//! # Running
//! ```text
//! cargo bench -p toka-store                   # everything (several minutes)
//! cargo bench -p toka-store -- replay         # only workloads whose name contains "replay"
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-store  # every workload ~10x smaller (smoke run)
//! ```
//! Filters match workload names: `append-batch1`, `append-batch64`, `append-batch1024`,
//! `group-commit`, `replay` (`append` selects all three append workloads). The output ends
//! with a summary table: Toka's rate, the baseline's rate, their ratio, the target and
//! PASS/MISS.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toka_store::{Durability, ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};

use toka_test_support::bench as support;
use toka_test_support::bench::{BenchResult, fmt_rate, log_key, median, progress, start_watchdog};

/// Timed repetitions per measurement (the median is reported).
const REPS: usize = 5;
/// Payload size of every event / value.
const PAYLOAD: usize = 256;
/// Toka's default `flush_interval` for `Buffered` journals, in milliseconds.
const TOKA_FLUSH_INTERVAL_MS: u64 = 100;

/// Concurrent appenders of the group-commit workload.
const APPENDERS: usize = 64;

/// A single run (one measurement, one database build, one scan) taking longer than this is
/// taken for a hang: the watchdog prints what it was doing and ends the process. Override
/// with `TOKA_BENCH_HANG_SECS`.
const HANG_AFTER: Duration = Duration::from_secs(300);

/// Names accepted as filters.
const WORKLOADS: [&str; 5] = [
    "append-batch1",
    "append-batch64",
    "append-batch1024",
    "group-commit",
    "replay",
];

/// Workload sizes; `TOKA_BENCH_QUICK=1` divides them by ~10.
struct Scale {
    quick: bool,
    append_batch1: u64,
    append_batched: u64,
    fsync_time: Duration,
    replay_events: u64,
}

impl Scale {
    fn from_env() -> Self {
        let quick = std::env::var("TOKA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let div = if quick { 10 } else { 1 };
        Scale {
            quick,
            append_batch1: 100_000 / div,
            append_batched: 500_000 / div,
            fsync_time: Duration::from_millis(1000 / div),
            replay_events: 1_000_000 / div,
        }
    }
}

/// One line of the final summary.
struct Row {
    workload: String,
    unit: &'static str,
    toka: f64,
    baseline_name: &'static str,
    baseline: f64,
    /// Minimum `toka / baseline`; `None` for context rows without a target.
    target: Option<f64>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.toka / self.baseline
    }

    fn verdict(&self) -> &'static str {
        match self.target {
            Some(t) if self.ratio() >= t => "PASS",
            Some(_) => "MISS",
            None => "-",
        }
    }
}

/// Summary rows so far (a static so that the watchdog can print them too).
static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn record(row: Row) {
    ROWS.lock().unwrap_or_else(|e| e.into_inner()).push(row);
}

fn fmt_samples(samples: &[f64]) -> String {
    samples
        .iter()
        .map(|&s| fmt_rate(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A 256-byte payload that is not all one byte (so nothing compresses it away).
fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i * 31 + 7) as u8).collect()
}

/// Raw sled opened the way the journal's back-end opens it.
fn open_raw_sled(path: &Path) -> BenchResult<sled::Db> {
    Ok(sled::Config::new().path(path).flush_every_ms(None).open()?)
}

fn current_thread_runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `toka` and `baseline` `REPS` times each, interleaved with alternating order, after
/// one untimed warm-up of each. Returns (toka samples, baseline samples).
fn interleaved<T>(
    mut toka: impl FnMut() -> BenchResult<T>,
    mut baseline: impl FnMut() -> BenchResult<T>,
) -> BenchResult<(Vec<T>, Vec<T>)> {
    baseline()?;
    toka()?;
    let (mut t, mut b) = (Vec::with_capacity(REPS), Vec::with_capacity(REPS));
    for rep in 0..REPS {
        if rep % 2 == 0 {
            b.push(baseline()?);
            t.push(toka()?);
        } else {
            t.push(toka()?);
            b.push(baseline()?);
        }
    }
    Ok((t, b))
}

/// Prints the samples of one interleaved measurement.
fn print_samples(label: &str, toka: &[f64], baseline: &[f64]) {
    println!("  {label}: toka     [{}]", fmt_samples(toka));
    println!("  {label}: baseline [{}]", fmt_samples(baseline));
    print_round_ratios(label, toka, baseline);
}

/// Ratios of the runs of each round (neighbours in time, so slow drift of the machine
/// cancels out); a cross-check of the ratio of medians in the summary.
fn print_round_ratios(label: &str, toka: &[f64], baseline: &[f64]) {
    let ratios: Vec<f64> = toka.iter().zip(baseline).map(|(t, b)| t / b).collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  {label}: ratio per round [{}], median {:.2}x",
        shown.join(" "),
        median(&ratios)
    );
}

/// Rates of one append run: of the append loop alone (the headline number), and of the
/// loop plus a final `flush()` (everything on disk; context).
#[derive(Clone, Copy)]
struct AppendRates {
    appends: f64,
    durable: f64,
}

// ---------------------------------------------------------------------------------------
// 1. Append throughput (Buffered)
// ---------------------------------------------------------------------------------------

/// Toka: `total` events in appends of `batch` to one stream; events/s.
fn toka_append_run(
    rt: &tokio::runtime::Runtime,
    batch: usize,
    total: u64,
) -> BenchResult<AppendRates> {
    progress(format!("toka append-batch{batch}"));
    let dir = TempDir::new()?;
    let journal = SledJournal::open(
        dir.path(),
        JournalConfig::default().durability(Durability::Buffered),
    )?;
    // Built outside the timed loop, like the baseline's payload; the journal copies from
    // the borrowed slice on every append (ids are not required to be unique).
    let events: Vec<NewEvent> = (0..batch)
        .map(|_| NewEvent::new("bench.event", payload()))
        .collect();
    let appends = total / batch as u64;
    let (elapsed, durable) = rt.block_on(async {
        let start = Instant::now();
        for _ in 0..appends {
            journal
                .append("bench-stream", ExpectedVersion::Any, &events)
                .await??;
        }
        let elapsed = start.elapsed();
        journal.flush().await?;
        Ok::<_, Box<dyn StdError + Send + Sync>>((elapsed, start.elapsed()))
    })?;
    let written = appends * batch as u64;
    if journal.head_position() != written {
        return Err(format!("journal head {} != {written}", journal.head_position()).into());
    }
    drop(journal);
    Ok(AppendRates {
        appends: written as f64 / elapsed.as_secs_f64(),
        durable: written as f64 / durable.as_secs_f64(),
    })
}

/// Raw sled: the same number of 256-byte values under 9-byte BE keys, `insert` for a
/// batch of 1, one `apply_batch` per batch otherwise; events/s.
/// Raw sled inserting the same bytes. `flush_every_ms`: sled's own background flush
/// (`None` for the issue's baseline; `Some(100)` matches Toka's `Buffered` default, which
/// flushes every 100 ms while appending).
fn raw_append_run(
    batch: usize,
    total: u64,
    flush_every_ms: Option<u64>,
) -> BenchResult<AppendRates> {
    progress(format!("raw sled append-batch{batch}"));
    let dir = TempDir::new()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(flush_every_ms)
        .open()?;
    let value = payload();
    let appends = total / batch as u64;
    let start = Instant::now();
    let mut position = 1u64;
    for _ in 0..appends {
        if batch == 1 {
            db.insert(log_key(position), value.as_slice())?;
            position += 1;
        } else {
            let mut b = sled::Batch::default();
            for _ in 0..batch {
                b.insert(&log_key(position), value.as_slice());
                position += 1;
            }
            db.apply_batch(b)?;
        }
    }
    let elapsed = start.elapsed();
    db.flush()?;
    let durable = start.elapsed();
    let written = appends * batch as u64;
    if db.len() as u64 != written {
        return Err(format!("raw sled holds {} values, expected {written}", db.len()).into());
    }
    drop(db);
    Ok(AppendRates {
        appends: written as f64 / elapsed.as_secs_f64(),
        durable: written as f64 / durable.as_secs_f64(),
    })
}

fn bench_append(batch: usize, total: u64) -> BenchResult<()> {
    let name = format!("append-batch{batch}");
    println!("\n== {name}: Buffered, {total} events of {PAYLOAD} B in batches of {batch}");
    let rt = current_thread_runtime()?;
    let (t, b) = interleaved(
        || toka_append_run(&rt, batch, total),
        || raw_append_run(batch, total, None),
    )?;
    // Like for like: raw sled flushing in the background as often as Toka's Buffered mode.
    let (_, flushing) = interleaved(
        || toka_append_run(&rt, batch, total),
        || raw_append_run(batch, total, Some(TOKA_FLUSH_INTERVAL_MS)),
    )?;
    let pick = |runs: &[AppendRates], f: fn(&AppendRates) -> f64| -> Vec<f64> {
        runs.iter().map(f).collect()
    };
    let (t_appends, b_appends) = (pick(&t, |r| r.appends), pick(&b, |r| r.appends));
    let (t_durable, b_durable) = (pick(&t, |r| r.durable), pick(&b, |r| r.durable));
    print_samples(&name, &t_appends, &b_appends);
    print_samples(&format!("{name} incl. final flush"), &t_durable, &b_durable);
    record(Row {
        workload: name.clone(),
        unit: "events/s",
        toka: median(&t_appends),
        baseline_name: "raw sled",
        baseline: median(&b_appends),
        target: Some(0.7),
    });
    record(Row {
        workload: format!("{name} vs sled flushing /100ms (context)"),
        unit: "events/s",
        toka: median(&t_appends),
        baseline_name: "raw sled, bg flush",
        baseline: median(&pick(&flushing, |r| r.appends)),
        target: None,
    });
    record(Row {
        workload: format!("{name} +final flush (context)"),
        unit: "events/s",
        toka: median(&t_durable),
        baseline_name: "raw sled",
        baseline: median(&b_durable),
        target: None,
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Fsync group commit
// ---------------------------------------------------------------------------------------

/// Toka Fsync: `appenders` tasks, each appending single events to its own stream until
/// `duration` is over; appends/s (all completed appends over the time until the last task
/// finished).
fn toka_fsync_run(
    rt: &tokio::runtime::Runtime,
    appenders: usize,
    duration: Duration,
) -> BenchResult<f64> {
    progress(format!("toka fsync, {appenders} appender(s)"));
    let dir = TempDir::new()?;
    let journal = SledJournal::open(
        dir.path(),
        JournalConfig::default().durability(Durability::Fsync),
    )?;
    let event = Arc::new([NewEvent::new("bench.event", payload())]);
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::with_capacity(appenders);
        for i in 0..appenders {
            let journal = journal.clone();
            let event = Arc::clone(&event);
            let done = Arc::clone(&done);
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
    drop(journal);
    Ok(done as f64 / elapsed.as_secs_f64())
}

/// Raw sled: one writer doing `insert` + `flush()` per op for `duration`; ops/s.
fn raw_fsync_run(duration: Duration) -> BenchResult<f64> {
    progress("raw sled insert+flush");
    let dir = TempDir::new()?;
    let db = open_raw_sled(dir.path())?;
    let value = payload();
    let start = Instant::now();
    let deadline = start + duration;
    let mut position = 1u64;
    while Instant::now() < deadline {
        db.insert(log_key(position), value.as_slice())?;
        db.flush()?;
        position += 1;
    }
    let elapsed = start.elapsed();
    drop(db);
    Ok((position - 1) as f64 / elapsed.as_secs_f64())
}

fn bench_group_commit(duration: Duration) -> BenchResult<()> {
    println!(
        "\n== group-commit: Fsync single-event appends, {APPENDERS} tasks vs 1 task, {} ms each",
        duration.as_millis()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Interleave all three: one appender, 64 appenders, raw sled insert+flush.
    toka_fsync_run(&rt, 1, duration / 4)?;
    toka_fsync_run(&rt, APPENDERS, duration / 4)?;
    raw_fsync_run(duration / 4)?;
    let (mut one, mut many, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..REPS {
        if rep % 2 == 0 {
            one.push(toka_fsync_run(&rt, 1, duration)?);
            many.push(toka_fsync_run(&rt, APPENDERS, duration)?);
            raw.push(raw_fsync_run(duration)?);
        } else {
            raw.push(raw_fsync_run(duration)?);
            many.push(toka_fsync_run(&rt, APPENDERS, duration)?);
            one.push(toka_fsync_run(&rt, 1, duration)?);
        }
    }
    println!(
        "  group-commit: toka {APPENDERS} appenders [{}]",
        fmt_samples(&many)
    );
    println!("  group-commit: toka 1 appender   [{}]", fmt_samples(&one));
    println!(
        "  group-commit: raw sled insert+flush, 1 writer [{}]",
        fmt_samples(&raw)
    );
    print_round_ratios(&format!("group-commit: {APPENDERS} vs 1"), &many, &one);
    record(Row {
        workload: format!("group-commit {APPENDERS} vs 1 appender"),
        unit: "appends/s",
        toka: median(&many),
        baseline_name: "toka 1 appender",
        baseline: median(&one),
        target: Some(10.0),
    });
    record(Row {
        workload: "fsync 1 appender (context)".into(),
        unit: "appends/s",
        toka: median(&one),
        baseline_name: "raw insert+flush",
        baseline: median(&raw),
        target: None,
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Replay
// ---------------------------------------------------------------------------------------

fn build_toka_log(dir: &Path, events: u64) -> BenchResult<()> {
    progress("building the toka journal for replay");
    let rt = current_thread_runtime()?;
    let journal = SledJournal::open(
        dir,
        JournalConfig::default().durability(Durability::Buffered),
    )?;
    let batch: Vec<NewEvent> = (0..1024)
        .map(|_| NewEvent::new("bench.event", payload()))
        .collect();
    rt.block_on(async {
        let mut written = 0u64;
        let mut stream = 0u64;
        while written < events {
            let n = usize::try_from((events - written).min(batch.len() as u64))?;
            // A handful of streams, as a real log would have.
            let name = format!("stream-{}", stream % 16);
            stream += 1;
            journal
                .append(&name, ExpectedVersion::Any, &batch[..n])
                .await??;
            written += n as u64;
        }
        journal.flush().await?;
        Ok::<_, Box<dyn StdError + Send + Sync>>(())
    })?;
    Ok(())
}

fn build_raw_log(dir: &Path, events: u64) -> BenchResult<()> {
    progress("building the raw sled db for replay");
    let db = open_raw_sled(dir)?;
    let value = payload();
    let mut position = 1u64;
    while position <= events {
        let mut b = sled::Batch::default();
        for _ in 0..1024 {
            if position > events {
                break;
            }
            b.insert(&log_key(position), value.as_slice());
            position += 1;
        }
        db.apply_batch(b)?;
    }
    db.flush()?;
    Ok(())
}

fn toka_scan(journal: &SledJournal, expected: u64) -> BenchResult<f64> {
    progress("toka replay scan");
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0usize);
    for event in journal.iter_all(1) {
        let event = event?;
        bytes += event.payload.len();
        count += 1;
    }
    let elapsed = start.elapsed();
    let bytes = std::hint::black_box(bytes);
    if count != expected || bytes != expected as usize * PAYLOAD {
        return Err(
            format!("toka scan saw {count} events / {bytes} B, expected {expected}").into(),
        );
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Toka's borrowed replay (`Journal::replay`): no copy of any event.
fn toka_replay_scan(journal: &SledJournal, expected: u64) -> BenchResult<f64> {
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0usize);
    journal.replay(1, &mut |event| {
        bytes += event.payload.len();
        count += 1;
        std::ops::ControlFlow::Continue(())
    })?;
    let elapsed = start.elapsed();
    let bytes = std::hint::black_box(bytes);
    if count != expected || bytes != expected as usize * PAYLOAD {
        return Err(
            format!("toka replay saw {count} events / {bytes} B, expected {expected}").into(),
        );
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

fn raw_scan(db: &sled::Db, expected: u64) -> BenchResult<f64> {
    progress("raw sled replay scan");
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0usize);
    for entry in db.iter() {
        let (_key, value) = entry?;
        bytes += value.len();
        count += 1;
    }
    let elapsed = start.elapsed();
    let bytes = std::hint::black_box(bytes);
    if count != expected || bytes != expected as usize * PAYLOAD {
        return Err(format!("raw scan saw {count} values / {bytes} B, expected {expected}").into());
    }
    Ok(count as f64 / elapsed.as_secs_f64())
}

fn bench_replay(events: u64) -> BenchResult<()> {
    println!("\n== replay: iter_all over {events} events of {PAYLOAD} B vs raw sled iter()");
    let toka_dir = TempDir::new()?;
    let raw_dir = TempDir::new()?;
    let start = Instant::now();
    build_toka_log(toka_dir.path(), events)?;
    println!(
        "  built the toka journal in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    build_raw_log(raw_dir.path(), events)?;
    println!(
        "  built the raw sled db in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Reopen both (each build dropped its handle), so both scans start from sled's
    // recovered on-disk state.
    let start = Instant::now();
    let journal = SledJournal::open(toka_dir.path(), JournalConfig::default())?;
    let toka_open = start.elapsed();
    let start = Instant::now();
    let db = open_raw_sled(raw_dir.path())?;
    let raw_open = start.elapsed();
    println!(
        "  reopen: toka {:.2} s, raw sled {:.2} s",
        toka_open.as_secs_f64(),
        raw_open.as_secs_f64()
    );
    if journal.head_position() != events {
        return Err(format!(
            "reopened journal head {} != {events}",
            journal.head_position()
        )
        .into());
    }
    // The first (cold) scan pages sled's nodes in; report it, then time warm scans.
    let toka_cold = toka_scan(&journal, events)?;
    let raw_cold = raw_scan(&db, events)?;
    println!(
        "  first scan after reopen: toka {} events/s, raw sled {} events/s",
        fmt_rate(toka_cold),
        fmt_rate(raw_cold)
    );
    let (t, b) = interleaved(|| toka_scan(&journal, events), || raw_scan(&db, events))?;
    print_samples("replay", &t, &b);
    record(Row {
        workload: "replay iter_all (owned events)".into(),
        unit: "events/s",
        toka: median(&t),
        baseline_name: "raw sled iter",
        baseline: median(&b),
        target: Some(0.7),
    });
    let (t, b) = interleaved(
        || toka_replay_scan(&journal, events),
        || raw_scan(&db, events),
    )?;
    print_samples("replay (borrowed)", &t, &b);
    record(Row {
        workload: "replay (borrowed, Journal::replay)".into(),
        unit: "events/s",
        toka: median(&t),
        baseline_name: "raw sled iter",
        baseline: median(&b),
        target: Some(0.7),
    });
    record(Row {
        workload: "replay, first scan (context)".into(),
        unit: "events/s",
        toka: toka_cold,
        baseline_name: "raw sled iter",
        baseline: raw_cold,
        target: None,
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn print_summary(rows: &[Row], total: Duration, quick: bool) {
    println!(
        "\n== summary (median of {REPS}{}; total {:.1} s)",
        if quick { ", QUICK sizes" } else { "" },
        total.as_secs_f64()
    );
    println!(
        "{:<40} {:>10} {:<18} {:>10} {:>8} {:>7} {:>6}  unit",
        "workload", "toka", "baseline", "base rate", "ratio", "target", "result"
    );
    for row in rows {
        let target = row
            .target
            .map_or_else(|| "-".to_owned(), |t| format!(">={t}x"));
        println!(
            "{:<40} {:>10} {:<18} {:>10} {:>7.2}x {:>7} {:>6}  {}",
            row.workload,
            fmt_rate(row.toka),
            row.baseline_name,
            fmt_rate(row.baseline),
            row.ratio(),
            target,
            row.verdict(),
            row.unit
        );
    }
}

fn main() -> BenchResult<()> {
    let scale = Scale::from_env();
    // `cargo bench` passes `--bench`; every argument that is not a flag is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // An exact workload name selects only it (`append-batch1` is a prefix of
    // `append-batch1024`); anything else selects the names containing it.
    let selected = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| {
                name == f || (!WORKLOADS.contains(&f.as_str()) && name.contains(f.as_str()))
            })
    };
    println!(
        "toka-store journal benchmarks{}; {} cpus; filters: {:?}",
        if scale.quick {
            " (TOKA_BENCH_QUICK)"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        filters
    );

    let started = Instant::now();
    let quick = scale.quick;
    start_watchdog(HANG_AFTER, move || {
        let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
        print_summary(&rows, started.elapsed(), quick);
    })?;
    for (batch, total) in [
        (1, scale.append_batch1),
        (64, scale.append_batched),
        (1024, scale.append_batched),
    ] {
        if selected(&format!("append-batch{batch}")) {
            bench_append(batch, total)?;
        }
    }
    if selected("group-commit") {
        bench_group_commit(scale.fsync_time)?;
    }
    if selected("replay") {
        bench_replay(scale.replay_events)?;
    }
    support::finished();
    let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    if rows.is_empty() {
        println!("no workload matches {filters:?}");
    }
    print_summary(&rows, started.elapsed(), scale.quick);
    Ok(())
}
