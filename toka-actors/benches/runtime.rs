//! Runtime benchmarks: Toka's agents against raw ractor actors (and the journal against
//! raw sled) doing the same work, measured in the same run on the same machine.
//!
//! # What is measured
//! 1. **Transient messaging** against raw ractor:
//!    - `request-reply`: sequential [`AgentRef::ask`] round trips from one task to one
//!      transient agent that adds the number to its state and replies the sum, against
//!      `ractor::call_t!` to a plain ractor actor doing the same. Rate: round trips/s.
//!      Target: Toka ≥ 0.8× ractor.
//!    - `fan-in`: 1,000 transient sender agents, each told (by an ask) to send 1,000
//!      messages to one collector agent from inside its handler ([`Context::send`]); the
//!      run ends when every sender has answered and the collector, asked last, reports
//!      that it counted all 1,000,000. Against 1,000 ractor actors doing exactly that with
//!      `send_message` to a ractor collector (`call_t!` in place of the asks). Rate:
//!      messages/s. Target ≥ 0.8×. The spawn of the 1,001 agents / actors is timed too
//!      (context row).
//!    - `spawn`: 10,000 transient top-level agents spawned one after the other from one
//!      task ([`Runtime::spawn`]) against as many `Actor::spawn`s of a plain ractor
//!      actor. Rate: spawns/s. Target ≥ 0.5× (issue 11).
//!    - `query`: sequential reads of one durable agent's state over an `Fsync` sled
//!      journal, by [`AgentRef::query`] (answered from the state, nothing journaled)
//!      against an ask (a journaled, fsynced message). Rate: reads/s; the rounds also print
//!      how many journal records the reads added (0 for queries).
//! 2. **Durable messaging** over a [`SledJournal`] in a temporary directory:
//!    - `durable-buffered`: 1,000 durable agents, `Durability::Buffered`; 128 tokio
//!      tasks send 150,000 one-`u64` messages to random agents with [`AgentRef::send`].
//!      Rates: messages/s until every send was acknowledged, and until every message was
//!      handled (the agents count handled messages in a shared counter). Target ≥ 100,000
//!      msgs/s. Baselines in the same rounds: raw sled `insert` of as many values of the
//!      size of the record the journal stores for one message (one is appended and read
//!      back to learn it) under 9-byte keys, one thread (sled's background flush every
//!      100 ms, like the journal's Buffered mode); and, as the ceiling of Toka's single
//!      journal writer, the journal alone (no actors): one task doing the same number of
//!      `append_unsynced` calls of one such event to random agent streams.
//!    - `durable-fsync`: the same agents over a `Durability::Fsync` journal, with 1, 16, 64
//!      and 256 concurrent senders for a fixed time each. Rate: acknowledged sends/s. For
//!      one sender the baseline is raw sled `insert` + `flush()` + `fdatasync` of its log
//!      per op (sled's flush alone is not durable: see toka-store's sled back-end); for more, Toka
//!      with one sender (the ratio is the group-commit speed-up). Context: the journal
//!      alone (`append` of one event per call, same number of concurrent tasks).
//! 3. **Recovery** (`recovery`, `recovery-snapshots`): a journal with 10,000 durable agents
//!    and 1,000,000 journaled messages (100 per agent; built through the runtime with
//!    Buffered durability, then shut down gracefully), reopened; then the time
//!    `Runtime::builder(..).start()` takes to return (it returns once every agent has
//!    recovered). Target ≤ 5 s. The first start after reopening the journal (sled's cache
//!    cold) and the median of warm restarts are reported. Baseline: a raw
//!    [`Journal::replay`] of the whole log from position 1, counting events (cold: first
//!    replay after a reopen). The snapshot variant spawns the agents with
//!    `snapshot_every(100)` and implements `Agent::snapshot` / `restore`.
//! 4. **Memory** (`memory`): RSS growth (`VmRSS` of `/proc/self/status`) per agent after
//!    spawning 10,000 idle durable agents (and, for context, transient ones), against
//!    10,000 idle raw ractor actors. Every probe runs in a fresh child process (this
//!    binary, re-executed), so freed-but-kept heap of earlier workloads does not blur it.
//!
//! Everything runs on a multi-thread tokio runtime with 2 workers; drivers are spawned as
//! tasks on it (so the caller's thread does not add a third core).
//!
//! Every measurement is repeated [`REPS`] times (recovery: [`RECOVERY_REPS`]) with Toka
//! and baseline runs interleaved (order alternating), after one untimed warm-up round; the
//! summary reports medians and the ratio of the medians, and each workload also prints its
//! per-round samples. A watchdog ends the process with exit code 3 and the partial summary
//! if one run makes no progress for 300 s (`TOKA_BENCH_HANG_SECS`).
//!
//! In quick mode (`TOKA_BENCH_QUICK=1`) every size shrinks (the section headers say to
//! what) and the recovery rows have no target: 1 s is meant for 1,000,000 messages.
//! `TOKA_BENCH_ONLY=0` (Toka) or `1` (the baseline) runs one side of each workload only,
//! for a profiler (`perf record`, `valgrind --tool=callgrind`); its ratios mean nothing.
//!
//! # Running
//! ```text
//! cargo bench -p toka-actors --bench runtime                  # everything (~5 minutes)
//! cargo bench -p toka-actors --bench runtime -- fan-in        # only workloads named so
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-actors --bench runtime  # smaller sizes (smoke run)
//! ```
//! Filters match workload names: `request-reply`, `spawn`, `query`, `fan-in`, `durable-buffered`,
//! `durable-fsync`, `recovery`, `recovery-snapshots`, `memory` (`durable` selects both
//! durable workloads). The output ends with a summary table: Toka's value, the baseline's,
//! their ratio, the target and PASS/MISS.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use toka_actors::record::{self, MsgRecord, Origin};
use toka_actors::{Agent, AgentError, AgentId, AgentRef, Context, Queries, Runtime, SpawnSpec};
use toka_store::{
    Durability, ExpectedVersion, Journal, JournalConfig, MemoryJournal, NewEvent, SledJournal,
    Timestamp,
};

use toka_test_support::bench as support;
use toka_test_support::bench::{
    BenchResult, fmt_rate, log_key, median, on_pool, progress, start_watchdog,
};

/// Timed repetitions per measurement (the median is reported).
const REPS: usize = 5;
/// Rounds of the short workloads against ractor (spawn, fan-in), whose baseline swings
/// most from round to round on a shared 2-core box: more rounds, a steadier median.
const SHORT_REPS: usize = 9;
/// Timed repetitions of the (expensive) recovery measurements.
const RECOVERY_REPS: usize = 3;
/// Worker threads of the tokio runtime.
const WORKERS: usize = 2;
/// Timeout of every ask / call (generous: a timeout means a hang, not a slow run).
const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// The same, in milliseconds, for `ractor::call_t!`.
const CALL_TIMEOUT_MS: u64 = 60_000;
/// Concurrent senders of the Buffered workload and of the recovery builds.
const SENDERS: usize = 128;
/// Concurrent senders of the Fsync workload.
const FSYNC_SENDERS: [usize; 4] = [1, 16, 64, 256];
/// Snapshot interval of the snapshot recovery variant.
const SNAPSHOT_EVERY: u64 = 100;
/// Issue 11's targets: a transient ask against ractor's `call_t!`.
const ASK_RATIO_TARGET: f64 = 0.95;
/// Fan-in against ractor.
const FAN_IN_RATIO_TARGET: f64 = 0.9;
/// Spawning transient agents against ractor's `Actor::spawn`.
const SPAWN_RATIO_TARGET: f64 = 0.5;
/// Durable `Buffered` messages acknowledged per second.
const DURABLE_RATE_TARGET: f64 = 300_000.0;
/// A cold recovery of the recovery workload, in seconds.
const RECOVERY_SECS_TARGET: f64 = 1.0;
/// Durable `Fsync` messages acknowledged per second, 256 senders.
const FSYNC_RATE_TARGET: f64 = 150_000.0;
/// Memory per idle agent, in bytes.
const MEMORY_BYTES_TARGET: f64 = 8.0 * 1024.0;

/// A single run taking longer than this is taken for a hang (override with
/// `TOKA_BENCH_HANG_SECS`).
const HANG_AFTER: Duration = Duration::from_secs(300);

/// Names accepted as filters.
const WORKLOADS: [&str; 10] = [
    "request-reply",
    "spawn",
    "ask-under-flood",
    "query",
    "fan-in",
    "durable-buffered",
    "durable-fsync",
    "recovery",
    "recovery-snapshots",
    "memory",
];

/// Workload sizes; `TOKA_BENCH_QUICK=1` shrinks them.
#[derive(Clone, Copy)]
struct Scale {
    quick: bool,
    asks: u64,
    fan_senders: usize,
    fan_msgs: u64,
    spawns: usize,
    durable_agents: usize,
    durable_msgs: u64,
    fsync_time: Duration,
    recovery_agents: usize,
    recovery_per_agent: u64,
    memory_agents: usize,
}

impl Scale {
    fn from_env() -> Self {
        let quick = std::env::var("TOKA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Scale {
                quick,
                asks: 20_000,
                fan_senders: 1_000,
                fan_msgs: 50,
                spawns: 2_000,
                durable_agents: 1_000,
                durable_msgs: 10_000,
                fsync_time: Duration::from_millis(60),
                recovery_agents: 500,
                recovery_per_agent: 100,
                memory_agents: 2_000,
            }
        } else {
            Scale {
                quick,
                asks: 200_000,
                fan_senders: 1_000,
                fan_msgs: 1_000,
                spawns: 10_000,
                durable_agents: 1_000,
                durable_msgs: 150_000,
                fsync_time: Duration::from_millis(400),
                recovery_agents: 10_000,
                recovery_per_agent: 100,
                memory_agents: 10_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// What a row's numbers are.
#[derive(Clone, Copy)]
enum Unit {
    /// Per second (higher is better); the label names what.
    Rate(&'static str),
    /// Seconds (lower is better).
    Seconds,
    /// Bytes (lower is better).
    Bytes(&'static str),
    /// Microseconds of latency (lower is better).
    Micros(&'static str),
}

/// A row's target.
#[derive(Clone, Copy)]
enum Target {
    /// `toka / baseline` at least this.
    Ratio(f64),
    /// Toka's value at least this.
    AtLeast(f64),
    /// Toka's value at most this.
    AtMost(f64),
}

/// One line of the final summary.
struct Row {
    workload: String,
    unit: Unit,
    toka: f64,
    baseline_name: String,
    baseline: f64,
    target: Option<Target>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.toka / self.baseline
    }

    fn verdict(&self) -> &'static str {
        let pass = match self.target {
            None => return "-",
            Some(Target::Ratio(t)) => self.ratio() >= t,
            Some(Target::AtLeast(v)) => self.toka >= v,
            Some(Target::AtMost(v)) => self.toka <= v,
        };
        if pass { "PASS" } else { "MISS" }
    }
}

/// Summary rows so far (a static so that the watchdog can print them too).
static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn record(
    workload: impl Into<String>,
    unit: Unit,
    toka: f64,
    baseline_name: impl Into<String>,
    baseline: f64,
    target: Option<Target>,
) {
    ROWS.lock().unwrap_or_else(|e| e.into_inner()).push(Row {
        workload: workload.into(),
        unit,
        toka,
        baseline_name: baseline_name.into(),
        baseline,
        target,
    });
}

fn fmt_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Rate(_) => fmt_rate(value),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Bytes(_) => format!("{:.1} KiB", value / 1024.0),
        Unit::Micros(_) => format!("{value:.0} µs"),
    }
}

fn unit_label(unit: Unit) -> String {
    match unit {
        Unit::Rate(what) => format!("{what}/s"),
        Unit::Seconds => "seconds (lower is better)".into(),
        Unit::Bytes(what) => format!("bytes per {what} (lower is better)"),
        Unit::Micros(what) => format!("µs, {what} (lower is better)"),
    }
}

fn fmt_samples(unit: Unit, samples: &[f64]) -> String {
    samples
        .iter()
        .map(|&s| fmt_value(unit, s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the samples of one interleaved measurement and the ratio of each round (its
/// runs are neighbours in time, so slow drift of a noisy machine cancels out).
fn print_samples(label: &str, unit: Unit, toka: &[f64], base_name: &str, baseline: &[f64]) {
    println!("  {label}: toka      [{}]", fmt_samples(unit, toka));
    println!("  {label}: {base_name} [{}]", fmt_samples(unit, baseline));
    let ratios: Vec<f64> = toka.iter().zip(baseline).map(|(t, b)| t / b).collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  {label}: ratio per round [{}], median {:.2}x",
        shown.join(" "),
        median(&ratios)
    );
}

fn print_summary(rows: &[Row], total: Duration, quick: bool) {
    println!(
        "\n== summary (medians of {REPS} rounds, recovery {RECOVERY_REPS}{}; {WORKERS} tokio \
         workers; total {:.1} s)",
        if quick {
            "; QUICK sizes, not the brief's"
        } else {
            ""
        },
        total.as_secs_f64()
    );
    println!(
        "{:<50} {:>10}  {:<30} {:>10} {:>8} {:>10} {:>6}  unit",
        "workload", "toka", "baseline", "base value", "ratio", "target", "result"
    );
    for row in rows {
        let target = match row.target {
            None => "-".to_owned(),
            Some(Target::Ratio(t)) => format!(">={t}x"),
            Some(Target::AtLeast(v)) => format!(">={}", fmt_value(row.unit, v)),
            Some(Target::AtMost(v)) => format!("<={}", fmt_value(row.unit, v)),
        };
        println!(
            "{:<50} {:>10}  {:<30} {:>10} {:>7.2}x {:>10} {:>6}  {}",
            row.workload,
            fmt_value(row.unit, row.toka),
            row.baseline_name,
            fmt_value(row.unit, row.baseline),
            row.ratio(),
            target,
            row.verdict(),
            unit_label(row.unit)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Harness helpers
// ---------------------------------------------------------------------------------------

/// One side of an interleaved measurement: a run returning its metrics.
type Side<'a> = Box<dyn FnMut() -> BenchResult<Vec<f64>> + 'a>;

/// Runs every side once untimed (if `warm_up`), then `reps` timed rounds running each side
/// once, in forward order on even rounds and backward on odd ones. Returns, per side, the
/// metrics of each round.
/// `TOKA_BENCH_ONLY=0` (Toka) or `1` (the baseline) runs only that side of each
/// workload, for a profiler; the ratios printed then mean nothing.
fn profiled_side() -> Option<usize> {
    std::env::var("TOKA_BENCH_ONLY").ok()?.parse().ok()
}

fn rounds(reps: usize, warm_up: bool, sides: &mut [Side<'_>]) -> BenchResult<Vec<Vec<Vec<f64>>>> {
    if warm_up {
        for (i, side) in sides.iter_mut().enumerate() {
            if profiled_side().is_none_or(|only| only == i) {
                side()?;
            }
        }
    }
    let mut out = vec![Vec::with_capacity(reps); sides.len()];
    for rep in 0..reps {
        let order: Vec<usize> = if rep % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for i in order {
            if profiled_side().is_some_and(|only| only != i) {
                out[i].push(vec![f64::NAN; 16]);
                continue;
            }
            out[i].push(sides[i]()?);
        }
    }
    Ok(out)
}

/// Metric `m` of every round of one side.
fn col(side: &[Vec<f64>], m: usize) -> Vec<f64> {
    side.iter().map(|r| r[m]).collect()
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// A small deterministic PRNG (xorshift64*) for picking target agents.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn memory_journal() -> BenchResult<Arc<dyn Journal>> {
    Ok(Arc::new(MemoryJournal::new(JournalConfig::default())?))
}

fn sled_journal(path: &Path, durability: Durability) -> BenchResult<Arc<SledJournal>> {
    Ok(Arc::new(SledJournal::open(
        path,
        JournalConfig::default().durability(durability),
    )?))
}

/// The payload Toka journals for one `u64` message sent from outside (what the raw sled
/// baselines store per message).
fn msg_payload() -> BenchResult<Vec<u8>> {
    let body = postcard::to_allocvec(&1u64)?;
    Ok(postcard::to_allocvec(&MsgRecord {
        origin: Origin::External,
        sent_micros: Timestamp::now().as_micros(),
        topic: None,
        body: &body,
        trace: None,
    })?)
}

/// The stream of agent `i`'s messages.
fn tally_stream(i: usize) -> BenchResult<String> {
    Ok(AgentId::new(tally_id(i))?.stream().to_owned())
}

/// The size of the record the journal stores in sled for one message (what the raw sled
/// baselines insert per message): one appended for real, read back.
fn stored_record_len(rt: &tokio::runtime::Runtime) -> BenchResult<usize> {
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let event = NewEvent::new(record::RecordKind::Msg.stored(), msg_payload()?);
    let stream = tally_stream(0)?;
    let appender = Arc::clone(&journal);
    on_pool(rt, async move {
        appender
            .append(&stream, ExpectedVersion::Any, &[event])
            .await??;
        Ok(())
    })?;
    let value = journal
        .backend()
        .db()
        .get(log_key(1))?
        .ok_or("no record at position 1")?;
    Ok(value.len())
}

/// The load average (the machines are shared; a busy neighbour shows here).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A value of `len` bytes that is not all one byte.
fn value_of_len(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Waits until `counter` reaches `target` (polling every millisecond), up to `limit`.
async fn wait_count(counter: &AtomicU64, target: u64, limit: Duration) -> BenchResult<()> {
    let start = Instant::now();
    while counter.load(Ordering::Acquire) < target {
        if start.elapsed() > limit {
            return Err(format!(
                "only {} of {target} messages handled after {limit:?}",
                counter.load(Ordering::Acquire)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Agents and their raw ractor twins
// ---------------------------------------------------------------------------------------

/// Adds the number to its state and replies the sum.
struct Echo;

impl Agent for Echo {
    const KIND: &'static str = "bench.echo";
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _ctx: &mut Context<'_, Self>,
        sum: &mut u64,
        n: u64,
    ) -> Result<u64, AgentError> {
        *sum = sum.wrapping_add(n);
        Ok(*sum)
    }
}

enum RawEchoMsg {
    Add(u64, RpcReplyPort<u64>),
}

struct RawEcho;

impl Actor for RawEcho {
    type Msg = RawEchoMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RawEchoMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<RawEchoMsg>,
        msg: RawEchoMsg,
        sum: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawEchoMsg::Add(n, reply) => {
                *sum = sum.wrapping_add(n);
                let _ = reply.send(*sum);
            }
        }
        Ok(())
    }
}

/// Counts hits; `Take` replies the count and resets it.
struct Collector;

#[derive(Serialize, Deserialize)]
enum CollectorMsg {
    Hit(u64),
    Take,
}

impl Agent for Collector {
    const KIND: &'static str = "bench.collector";
    type Args = ();
    type Msg = CollectorMsg;
    type Reply = u64;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _ctx: &mut Context<'_, Self>,
        count: &mut u64,
        msg: CollectorMsg,
    ) -> Result<u64, AgentError> {
        Ok(match msg {
            CollectorMsg::Hit(i) => {
                std::hint::black_box(i);
                *count += 1;
                0
            }
            CollectorMsg::Take => std::mem::take(count),
        })
    }
}

/// Told `n`, sends `n` hits to the collector from its handler, then replies `n`.
struct FanSender {
    collector: Arc<OnceLock<AgentRef<Collector>>>,
}

impl Agent for FanSender {
    const KIND: &'static str = "bench.fan-sender";
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    type State = ();

    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        _: &mut (),
        n: u64,
    ) -> Result<u64, AgentError> {
        let to = self
            .collector
            .get()
            .ok_or_else(|| AgentError::msg("no collector"))?;
        for i in 0..n {
            ctx.send(to, CollectorMsg::Hit(i)).await?;
        }
        Ok(n)
    }
}

enum RawCollectorMsg {
    Hit(u64),
    Take(RpcReplyPort<u64>),
}

struct RawCollector;

impl Actor for RawCollector {
    type Msg = RawCollectorMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<RawCollectorMsg>,
        _: (),
    ) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<RawCollectorMsg>,
        msg: RawCollectorMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawCollectorMsg::Hit(i) => {
                std::hint::black_box(i);
                *count += 1;
            }
            RawCollectorMsg::Take(reply) => {
                let _ = reply.send(std::mem::take(count));
            }
        }
        Ok(())
    }
}

enum RawSenderMsg {
    Go(u64, RpcReplyPort<u64>),
}

struct RawSender;

impl Actor for RawSender {
    type Msg = RawSenderMsg;
    type State = ActorRef<RawCollectorMsg>;
    type Arguments = ActorRef<RawCollectorMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<RawSenderMsg>,
        collector: ActorRef<RawCollectorMsg>,
    ) -> Result<ActorRef<RawCollectorMsg>, ActorProcessingErr> {
        Ok(collector)
    }

    async fn handle(
        &self,
        _: ActorRef<RawSenderMsg>,
        msg: RawSenderMsg,
        collector: &mut ActorRef<RawCollectorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawSenderMsg::Go(n, reply) => {
                for i in 0..n {
                    collector.send_message(RawCollectorMsg::Hit(i))?;
                }
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

/// An idle raw actor (memory probe).
struct RawIdle;

impl Actor for RawIdle {
    type Msg = u64;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<u64>,
        msg: u64,
        sum: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *sum += msg;
        Ok(())
    }
}

/// Counters shared by every [`Tally`] agent of one runtime.
#[derive(Clone, Default)]
struct TallyCounters {
    /// Messages handled live.
    handled: Arc<AtomicU64>,
    /// Messages replayed during recovery.
    replayed: Arc<AtomicU64>,
    /// States restored from a snapshot.
    restored: Arc<AtomicU64>,
}

/// A durable agent summing the numbers it is sent.
struct Tally {
    counters: TallyCounters,
    snapshots: bool,
}

impl Agent for Tally {
    const KIND: &'static str = "bench.tally";
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        sum: &mut u64,
        n: u64,
    ) -> Result<u64, AgentError> {
        *sum = sum.wrapping_add(n);
        let counter = if ctx.is_replaying() {
            &self.counters.replayed
        } else {
            &self.counters.handled
        };
        counter.fetch_add(1, Ordering::Release);
        Ok(*sum)
    }

    fn snapshot(&self, sum: &u64) -> Option<Vec<u8>> {
        self.snapshots.then(|| sum.to_le_bytes().to_vec())
    }

    fn restore(&self, _: &(), snapshot: &[u8]) -> Result<u64, AgentError> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| AgentError::msg("a snapshot of the wrong size"))?;
        self.counters.restored.fetch_add(1, Ordering::Release);
        Ok(u64::from_le_bytes(bytes))
    }
}

impl Queries for Tally {
    type Query = ();
    type Answer = u64;

    fn query(&self, sum: &u64, (): ()) -> Result<u64, AgentError> {
        Ok(*sum)
    }
}

fn tally_id(i: usize) -> String {
    format!("tally-{i:06}")
}

/// Spawns `n` durable [`Tally`] agents, `concurrency` spawns at a time.
async fn spawn_tallies(
    runtime: &Runtime,
    n: usize,
    concurrency: usize,
    snapshot_every: Option<u64>,
) -> BenchResult<Vec<AgentRef<Tally>>> {
    let mut refs = Vec::with_capacity(n);
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(concurrency.max(1)) {
        let spawned = join_all(chunk.iter().map(|&i| async move {
            let mut spec = SpawnSpec::new(tally_id(i))?;
            if let Some(every) = snapshot_every {
                spec = spec.snapshot_every(every);
            }
            runtime.spawn::<Tally>(spec, ()).await
        }))
        .await;
        for agent in spawned {
            refs.push(agent?);
        }
    }
    Ok(refs)
}

// ---------------------------------------------------------------------------------------
// 1a. Request/reply
// ---------------------------------------------------------------------------------------

fn toka_request_reply(rt: &tokio::runtime::Runtime, asks: u64) -> BenchResult<Vec<f64>> {
    progress("toka request-reply");
    on_pool(rt, async move {
        let runtime = Runtime::builder(memory_journal()?)
            .register(Echo)
            .start()
            .await?;
        let echo = runtime
            .spawn::<Echo>(SpawnSpec::new("echo")?.transient(), ())
            .await?;
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..asks {
            sum = sum.wrapping_add(i);
            let got = echo.ask(i, ASK_TIMEOUT).await?;
            if got != sum {
                return Err(format!("echo replied {got}, expected {sum}").into());
            }
        }
        let elapsed = start.elapsed();
        runtime.shutdown().await?;
        Ok(vec![rate(asks, elapsed)])
    })
}

fn raw_request_reply(rt: &tokio::runtime::Runtime, asks: u64) -> BenchResult<Vec<f64>> {
    progress("raw ractor request-reply");
    on_pool(rt, async move {
        let (echo, handle) = Actor::spawn(None, RawEcho, ()).await?;
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..asks {
            sum = sum.wrapping_add(i);
            let got = ractor::call_t!(echo, RawEchoMsg::Add, CALL_TIMEOUT_MS, i)
                .map_err(|e| e.to_string())?;
            if got != sum {
                return Err(format!("raw echo replied {got}, expected {sum}").into());
            }
        }
        let elapsed = start.elapsed();
        echo.stop(None);
        handle.await?;
        Ok(vec![rate(asks, elapsed)])
    })
}

fn bench_request_reply(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let asks = scale.asks;
    println!(
        "\n== request-reply: {asks} sequential asks from one task to one transient agent \
         vs ractor call_t!; load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 2] = [
        Box::new(|| toka_request_reply(rt, asks)),
        Box::new(|| raw_request_reply(rt, asks)),
    ];
    let out = rounds(REPS, true, &mut sides)?;
    let unit = Unit::Rate("round trips");
    let (t, b) = (col(&out[0], 0), col(&out[1], 0));
    print_samples("request-reply", unit, &t, "ractor", &b);
    record(
        "request-reply (transient ask, 1 task)",
        unit,
        median(&t),
        "ractor call_t!",
        median(&b),
        Some(Target::Ratio(ASK_RATIO_TARGET)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1a''. A transient ask's latency while a durable flood runs
// ---------------------------------------------------------------------------------------

/// Sequential asks to a transient echo agent for `duration`, timed one by one, while
/// (with `flood`) 128 senders flood 1,000 durable agents of a `Buffered` sled journal.
/// Returns the asks' p50 and p99 latencies in microseconds and the flood's rate.
fn ask_latency(
    rt: &tokio::runtime::Runtime,
    duration: Duration,
    flood: bool,
) -> BenchResult<Vec<f64>> {
    progress(if flood {
        "toka ask under a durable flood"
    } else {
        "toka ask, no flood"
    });
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let out = on_pool(rt, async move {
        let runtime = Runtime::builder(journal)
            .register(Echo)
            .register(Tally {
                counters: TallyCounters::default(),
                snapshots: false,
            })
            .start()
            .await?;
        let echo = runtime
            .spawn::<Echo>(SpawnSpec::new("echo")?.transient(), ())
            .await?;
        let refs = Arc::new(spawn_tallies(&runtime, 1_000, 256, None).await?);
        let flooding = flood.then(|| {
            let refs = Arc::clone(&refs);
            tokio::spawn(async move { send_for(&refs, SENDERS, duration).await })
        });
        let start = Instant::now();
        let mut latencies = Vec::new();
        let mut sum = 0u64;
        for i in 0u64.. {
            if start.elapsed() >= duration {
                break;
            }
            sum = sum.wrapping_add(i);
            let asked = Instant::now();
            let got = echo.ask(i, ASK_TIMEOUT).await?;
            latencies.push(asked.elapsed().as_secs_f64() * 1e6);
            if got != sum {
                return Err(format!("echo replied {got}, expected {sum}").into());
            }
            // An interactive caller, not a tight loop: leave the flood its share.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let flood_rate = match flooding {
            Some(task) => task.await??,
            None => 0.0,
        };
        runtime.shutdown().await?;
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let max = latencies.last().copied().unwrap_or(0.0);
        Ok(vec![at(0.5), at(0.99), flood_rate, at(0.999), max])
    })?;
    drop(dir);
    Ok(out)
}

fn bench_ask_under_flood(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let duration = if scale.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    println!(
        "\n== ask-under-flood: a transient ask every 200 µs for {duration:?}, timed, while \
         {SENDERS} senders flood 1,000 durable agents (sled Buffered), vs the same asks with \
         no flood; load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 2] = [
        Box::new(|| ask_latency(rt, duration, true)),
        Box::new(|| ask_latency(rt, duration, false)),
    ];
    let out = rounds(REPS, false, &mut sides)?;
    let p99 = Unit::Micros("p99 of a transient ask");
    let p50 = Unit::Micros("p50 of a transient ask");
    let (t99, b99) = (col(&out[0], 1), col(&out[1], 1));
    let (t50, b50) = (col(&out[0], 0), col(&out[1], 0));
    print_samples("ask p99", p99, &t99, "no flood", &b99);
    print_samples("ask p50", p50, &t50, "no flood", &b50);
    println!(
        "  flood: [{}] msgs/s",
        fmt_samples(Unit::Rate("msgs"), &col(&out[0], 2))
    );
    let tail = Unit::Micros("tail of a transient ask");
    for (m, name) in [(3, "p99.9"), (4, "max")] {
        println!(
            "  ask {name}: flood [{}], no flood [{}]",
            fmt_samples(tail, &col(&out[0], m)),
            fmt_samples(tail, &col(&out[1], m))
        );
    }
    record(
        "transient ask p99 during a durable flood",
        p99,
        median(&t99),
        "same asks, no flood",
        median(&b99),
        None,
    );
    record(
        "transient ask p50 during a durable flood",
        p50,
        median(&t50),
        "same asks, no flood",
        median(&b50),
        None,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1a'. Reading a durable agent's state: query vs ask
// ---------------------------------------------------------------------------------------

/// Sequential reads of one durable agent's sum over an `Fsync` sled journal, from one
/// task: with a query (`reads_by_query`) or an ask of `0` (a journaled, fsynced message).
/// Returns reads/s and the journal records the reads added.
fn durable_reads(
    rt: &tokio::runtime::Runtime,
    reads: u64,
    reads_by_query: bool,
) -> BenchResult<Vec<f64>> {
    progress(if reads_by_query {
        "toka query"
    } else {
        "toka ask (read)"
    });
    on_pool(rt, async move {
        let dir = TempDir::new()?;
        let journal = sled_journal(dir.path(), Durability::Fsync)?;
        let runtime = Runtime::builder(journal.clone())
            .register(Tally {
                counters: TallyCounters::default(),
                snapshots: false,
            })
            .start()
            .await?;
        let tally = runtime
            .spawn::<Tally>(SpawnSpec::new("read-me")?, ())
            .await?;
        tally.send(7).await?;
        let before = journal.head_position();
        let start = Instant::now();
        for _ in 0..reads {
            let sum = if reads_by_query {
                tally.query((), ASK_TIMEOUT).await?
            } else {
                tally.ask(0, ASK_TIMEOUT).await?
            };
            if sum != 7 {
                return Err(format!("read {sum}, expected 7").into());
            }
        }
        let elapsed = start.elapsed();
        let grown = journal.head_position() - before;
        runtime.shutdown().await?;
        Ok(vec![rate(reads, elapsed), grown as f64])
    })
}

fn bench_query(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let reads = (scale.asks / 20).max(1_000);
    println!(
        "\n== query: {reads} sequential reads of one durable agent (Fsync sled) by query vs \
         by ask; load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 2] = [
        Box::new(|| durable_reads(rt, reads, true)),
        Box::new(|| durable_reads(rt, reads, false)),
    ];
    let out = rounds(REPS, true, &mut sides)?;
    let unit = Unit::Rate("reads");
    let (t, b) = (col(&out[0], 0), col(&out[1], 0));
    print_samples("query", unit, &t, "ask", &b);
    println!(
        "   journal records added per round: query {:?}, ask {:?}",
        col(&out[0], 1),
        col(&out[1], 1)
    );
    record(
        "durable read by query (1 task, Fsync)",
        unit,
        median(&t),
        "ask (journaled)",
        median(&b),
        None,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1a'''. Spawning transient agents
// ---------------------------------------------------------------------------------------

/// Metrics: [spawns/s].
fn toka_spawn(rt: &tokio::runtime::Runtime, n: usize) -> BenchResult<Vec<f64>> {
    progress("toka spawn");
    on_pool(rt, async move {
        let runtime = Runtime::builder(memory_journal()?)
            .register(Echo)
            .start()
            .await?;
        let mut refs = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            refs.push(
                runtime
                    .spawn::<Echo>(SpawnSpec::new(format!("s-{i}"))?.transient(), ())
                    .await?,
            );
        }
        let elapsed = start.elapsed();
        if runtime.tree().iter().filter(|a| a.running).count() != n {
            return Err("not every spawned agent runs".into());
        }
        runtime.shutdown().await?;
        Ok(vec![rate(n as u64, elapsed)])
    })
}

fn raw_spawn(rt: &tokio::runtime::Runtime, n: usize) -> BenchResult<Vec<f64>> {
    progress("raw ractor spawn");
    on_pool(rt, async move {
        let mut refs = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            refs.push(Actor::spawn(None, RawEcho, ()).await?);
        }
        let elapsed = start.elapsed();
        for (actor, handle) in refs {
            actor.stop(None);
            handle.await?;
        }
        Ok(vec![rate(n as u64, elapsed)])
    })
}

fn bench_spawn(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let n = scale.spawns;
    println!(
        "\n== spawn: {n} transient agents spawned one after the other from one task \
         (Runtime::spawn, top level) vs ractor Actor::spawn; load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 2] = [
        Box::new(|| toka_spawn(rt, n)),
        Box::new(|| raw_spawn(rt, n)),
    ];
    let out = rounds(SHORT_REPS, true, &mut sides)?;
    let unit = Unit::Rate("spawns");
    let (t, b) = (col(&out[0], 0), col(&out[1], 0));
    print_samples("spawn", unit, &t, "ractor", &b);
    record(
        format!("spawn {n} transient agents (1 task)"),
        unit,
        median(&t),
        "ractor Actor::spawn",
        median(&b),
        Some(Target::Ratio(SPAWN_RATIO_TARGET)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1b. Fan-in
// ---------------------------------------------------------------------------------------

/// Metrics: [messages/s, spawns/s].
fn toka_fan_in(rt: &tokio::runtime::Runtime, senders: usize, per: u64) -> BenchResult<Vec<f64>> {
    progress("toka fan-in");
    on_pool(rt, async move {
        let cell = Arc::new(OnceLock::new());
        let runtime = Runtime::builder(memory_journal()?)
            .register(Collector)
            .register(FanSender {
                collector: Arc::clone(&cell),
            })
            .start()
            .await?;
        let spawn_start = Instant::now();
        let collector = runtime
            .spawn::<Collector>(SpawnSpec::new("collector")?.transient(), ())
            .await?;
        let _ = cell.set(collector.clone());
        let mut refs = Vec::with_capacity(senders);
        for i in 0..senders {
            refs.push(
                runtime
                    .spawn::<FanSender>(SpawnSpec::new(format!("sender-{i}"))?.transient(), ())
                    .await?,
            );
        }
        let spawned = spawn_start.elapsed();
        let start = Instant::now();
        for acked in join_all(refs.iter().map(|s| s.ask(per, ASK_TIMEOUT))).await {
            if acked? != per {
                return Err("a sender acknowledged a wrong count".into());
            }
        }
        let total = collector.ask(CollectorMsg::Take, ASK_TIMEOUT).await?;
        let elapsed = start.elapsed();
        let expected = senders as u64 * per;
        if total != expected {
            return Err(format!("collector counted {total}, expected {expected}").into());
        }
        runtime.shutdown().await?;
        Ok(vec![
            rate(expected, elapsed),
            rate(senders as u64 + 1, spawned),
        ])
    })
}

fn raw_fan_in(rt: &tokio::runtime::Runtime, senders: usize, per: u64) -> BenchResult<Vec<f64>> {
    progress("raw ractor fan-in");
    on_pool(rt, async move {
        let spawn_start = Instant::now();
        let (collector, collector_handle) = Actor::spawn(None, RawCollector, ()).await?;
        let mut refs = Vec::with_capacity(senders);
        for _ in 0..senders {
            refs.push(Actor::spawn(None, RawSender, collector.clone()).await?);
        }
        let spawned = spawn_start.elapsed();
        let start = Instant::now();
        let acks = join_all(refs.iter().map(|(s, _)| async move {
            ractor::call_t!(s, RawSenderMsg::Go, CALL_TIMEOUT_MS, per).map_err(|e| e.to_string())
        }))
        .await;
        for acked in acks {
            if acked? != per {
                return Err("a raw sender acknowledged a wrong count".into());
            }
        }
        let total = ractor::call_t!(collector, RawCollectorMsg::Take, CALL_TIMEOUT_MS)
            .map_err(|e| e.to_string())?;
        let elapsed = start.elapsed();
        let expected = senders as u64 * per;
        if total != expected {
            return Err(format!("raw collector counted {total}, expected {expected}").into());
        }
        for (s, handle) in refs {
            s.stop(None);
            handle.await?;
        }
        collector.stop(None);
        collector_handle.await?;
        Ok(vec![
            rate(expected, elapsed),
            rate(senders as u64 + 1, spawned),
        ])
    })
}

fn bench_fan_in(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let (senders, per) = (scale.fan_senders, scale.fan_msgs);
    println!(
        "\n== fan-in: {senders} transient agents x {per} messages (Context::send from their \
         handlers) to one collector vs the same with ractor actors; load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 2] = [
        Box::new(|| toka_fan_in(rt, senders, per)),
        Box::new(|| raw_fan_in(rt, senders, per)),
    ];
    let out = rounds(SHORT_REPS, true, &mut sides)?;
    let unit = Unit::Rate("messages");
    let (t, b) = (col(&out[0], 0), col(&out[1], 0));
    print_samples("fan-in", unit, &t, "ractor", &b);
    let spawn_unit = Unit::Rate("spawns");
    let (ts, bs) = (col(&out[0], 1), col(&out[1], 1));
    print_samples("fan-in spawn", spawn_unit, &ts, "ractor", &bs);
    record(
        format!("fan-in {senders}x{per} -> 1 (transient)"),
        unit,
        median(&t),
        "ractor send_message",
        median(&b),
        Some(Target::Ratio(FAN_IN_RATIO_TARGET)),
    );
    record(
        format!("spawn {} transient agents (context)", senders + 1),
        spawn_unit,
        median(&ts),
        "ractor Actor::spawn",
        median(&bs),
        None,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2a. Durable messaging, Buffered
// ---------------------------------------------------------------------------------------

/// Sends `total` messages to random agents of `refs` from `senders` tasks; returns once
/// every send was acknowledged.
async fn send_random(
    refs: Arc<Vec<AgentRef<Tally>>>,
    senders: usize,
    total: u64,
) -> BenchResult<()> {
    let mut tasks = Vec::with_capacity(senders);
    for t in 0..senders {
        let refs = Arc::clone(&refs);
        // `total` split as evenly as it goes.
        let sends = total / senders as u64 + u64::from((t as u64) < total % senders as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(t as u64);
            for _ in 0..sends {
                refs[rng.below(refs.len())].send(1).await?;
            }
            Ok::<_, toka_actors::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Metrics: [acknowledged msgs/s, handled msgs/s, spawns/s].
fn toka_durable_buffered(
    rt: &tokio::runtime::Runtime,
    agents: usize,
    total: u64,
) -> BenchResult<Vec<f64>> {
    progress("toka durable-buffered");
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let out = on_pool(rt, async move {
        let counters = TallyCounters::default();
        let runtime = Runtime::builder(journal)
            .register(Tally {
                counters: counters.clone(),
                snapshots: false,
            })
            .start()
            .await?;
        let spawn_start = Instant::now();
        let refs = Arc::new(spawn_tallies(&runtime, agents, 1, None).await?);
        let spawned = spawn_start.elapsed();
        let start = Instant::now();
        send_random(refs, SENDERS, total).await?;
        let acked = start.elapsed();
        wait_count(&counters.handled, total, Duration::from_secs(120)).await?;
        let handled = start.elapsed();
        runtime.shutdown().await?;
        Ok(vec![
            rate(total, acked),
            rate(total, handled),
            rate(agents as u64, spawned),
        ])
    })?;
    drop(dir);
    Ok(out)
}

/// The journal alone: `total` single-event `append_unsynced` calls to random agent
/// streams from one task (what Toka's single writer does per message, minus the actors).
fn journal_alone_buffered(
    rt: &tokio::runtime::Runtime,
    agents: usize,
    total: u64,
) -> BenchResult<Vec<f64>> {
    progress("journal alone, Buffered append_unsynced");
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let payload = msg_payload()?;
    let streams: Vec<String> = (0..agents).map(tally_stream).collect::<BenchResult<_>>()?;
    let out = on_pool(rt, async move {
        let mut rng = Rng::new(7);
        let start = Instant::now();
        for _ in 0..total {
            let event = NewEvent::new(record::RecordKind::Msg.stored(), payload.clone());
            let stream = &streams[rng.below(streams.len())];
            journal
                .append_unsynced(stream, ExpectedVersion::Any, std::slice::from_ref(&event))
                .await??;
        }
        let elapsed = start.elapsed();
        journal.flush().await?;
        Ok(vec![rate(total, elapsed)])
    })?;
    drop(dir);
    Ok(out)
}

/// Raw sled: `total` inserts of `value_len`-byte values (the journal's record of one
/// message) under 9-byte keys, one thread, background flush every 100 ms (like the
/// journal's Buffered mode).
fn raw_sled_inserts(total: u64, value_len: usize) -> BenchResult<Vec<f64>> {
    progress("raw sled inserts");
    let dir = TempDir::new()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(Some(100))
        .open()?;
    let value = value_of_len(value_len);
    let start = Instant::now();
    for position in 1..=total {
        db.insert(log_key(position), value.as_slice())?;
    }
    let elapsed = start.elapsed();
    if db.len() as u64 != total {
        return Err(format!("raw sled holds {} values, expected {total}", db.len()).into());
    }
    drop(db);
    Ok(vec![rate(total, elapsed)])
}

fn bench_durable_buffered(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let (agents, total) = (scale.durable_agents, scale.durable_msgs);
    let value_len = stored_record_len(rt)?;
    println!(
        "\n== durable-buffered: {agents} durable agents, SledJournal Buffered, {SENDERS} tasks \
         sending {total} messages to random agents; raw sled inserts of {value_len} B values \
         (the journal's stored record of one message); load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 3] = [
        Box::new(|| toka_durable_buffered(rt, agents, total)),
        Box::new(|| raw_sled_inserts(total, value_len)),
        Box::new(|| journal_alone_buffered(rt, agents, total)),
    ];
    let out = rounds(REPS, true, &mut sides)?;
    let unit = Unit::Rate("msgs");
    let (acked, handled, spawns) = (col(&out[0], 0), col(&out[0], 1), col(&out[0], 2));
    let (raw, alone) = (col(&out[1], 0), col(&out[2], 0));
    print_samples("durable-buffered acked", unit, &acked, "raw sled", &raw);
    print_samples("durable-buffered handled", unit, &handled, "raw sled", &raw);
    print_samples(
        "durable-buffered acked",
        unit,
        &acked,
        "journal alone",
        &alone,
    );
    println!(
        "  durable spawns (sequential): [{}] spawns/s",
        fmt_samples(unit, &spawns)
    );
    record(
        format!("durable Buffered, {SENDERS} senders: acked"),
        unit,
        median(&acked),
        "raw sled insert, 1 thread",
        median(&raw),
        Some(Target::AtLeast(DURABLE_RATE_TARGET)),
    );
    record(
        format!("durable Buffered, {SENDERS} senders: all handled"),
        unit,
        median(&handled),
        "raw sled insert, 1 thread",
        median(&raw),
        Some(Target::AtLeast(DURABLE_RATE_TARGET)),
    );
    record(
        "journal alone, append_unsynced x1 (context)",
        unit,
        median(&alone),
        "raw sled insert, 1 thread",
        median(&raw),
        None,
    );
    record(
        "durable Buffered acked vs journal alone",
        unit,
        median(&acked),
        "journal append_unsynced x1",
        median(&alone),
        None,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2b. Durable messaging, Fsync
// ---------------------------------------------------------------------------------------

/// Sends to random agents from `senders` tasks until `duration` is over; acked sends/s.
async fn send_for(
    refs: &Arc<Vec<AgentRef<Tally>>>,
    senders: usize,
    duration: Duration,
) -> BenchResult<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(senders);
    for t in 0..senders {
        let refs = Arc::clone(refs);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(t as u64 + 1000);
            while Instant::now() < deadline {
                refs[rng.below(refs.len())].send(1).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, toka_actors::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(rate(done.load(Ordering::Relaxed), start.elapsed()))
}

/// One round: a fresh Fsync journal and runtime with `agents` agents, then every sender
/// count of [`FSYNC_SENDERS`] in turn (`reverse`: from the largest). Metrics: acked
/// sends/s per sender count, in [`FSYNC_SENDERS`] order.
fn toka_fsync_round(
    rt: &tokio::runtime::Runtime,
    agents: usize,
    duration: Duration,
    reverse: bool,
) -> BenchResult<Vec<f64>> {
    progress("toka durable-fsync");
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Fsync)?;
    let out = on_pool(rt, async move {
        let counters = TallyCounters::default();
        let runtime = Runtime::builder(journal)
            .register(Tally {
                counters,
                snapshots: false,
            })
            .start()
            .await?;
        let refs = Arc::new(spawn_tallies(&runtime, agents, 256, None).await?);
        let mut rates = vec![0.0; FSYNC_SENDERS.len()];
        let mut order: Vec<usize> = (0..FSYNC_SENDERS.len()).collect();
        if reverse {
            order.reverse();
        }
        for i in order {
            progress(format!("toka durable-fsync, {} senders", FSYNC_SENDERS[i]));
            rates[i] = send_for(&refs, FSYNC_SENDERS[i], duration).await?;
        }
        runtime.shutdown().await?;
        Ok(rates)
    })?;
    drop(dir);
    Ok(out)
}

/// The journal alone: `appenders` tasks doing Fsync `append`s of one event to random
/// agent streams for `duration`, for every count of [`FSYNC_SENDERS`].
fn journal_alone_fsync_round(
    rt: &tokio::runtime::Runtime,
    agents: usize,
    duration: Duration,
) -> BenchResult<Vec<f64>> {
    let dir = TempDir::new()?;
    let journal = sled_journal(dir.path(), Durability::Fsync)?;
    let payload = Arc::new(msg_payload()?);
    let streams: Arc<Vec<String>> =
        Arc::new((0..agents).map(tally_stream).collect::<BenchResult<_>>()?);
    let out = on_pool(rt, async move {
        let mut rates = Vec::with_capacity(FSYNC_SENDERS.len());
        for appenders in FSYNC_SENDERS {
            progress(format!("journal alone fsync, {appenders} appenders"));
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let deadline = start + duration;
            let mut tasks = Vec::with_capacity(appenders);
            for t in 0..appenders {
                let (journal, payload, done, streams) = (
                    Arc::clone(&journal),
                    Arc::clone(&payload),
                    Arc::clone(&done),
                    Arc::clone(&streams),
                );
                tasks.push(tokio::spawn(async move {
                    let mut rng = Rng::new(t as u64 + 2000);
                    while Instant::now() < deadline {
                        let stream = &streams[rng.below(streams.len())];
                        let event =
                            NewEvent::new(record::RecordKind::Msg.stored(), payload.as_slice());
                        journal
                            .append(stream, ExpectedVersion::Any, std::slice::from_ref(&event))
                            .await??;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, toka_store::Error>(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            rates.push(rate(done.load(Ordering::Relaxed), start.elapsed()));
        }
        Ok(rates)
    })?;
    drop(dir);
    Ok(out)
}

/// Raw sled: one writer doing `insert` + `flush()` + `fdatasync` of sled's log file per op
/// for `duration`; ops/s. The `fdatasync` is what makes sled's flush durable (it only
/// `sync_file_range`s its log), and what the journal's sled back-end does too.
fn raw_fsync(duration: Duration, value_len: usize) -> BenchResult<Vec<f64>> {
    progress("raw sled insert+flush+fdatasync");
    let dir = TempDir::new()?;
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()?;
    let log = std::fs::File::open(dir.path().join("db"))?;
    let value = value_of_len(value_len);
    let start = Instant::now();
    let deadline = start + duration;
    let mut position = 1u64;
    while Instant::now() < deadline {
        db.insert(log_key(position), value.as_slice())?;
        db.flush()?;
        log.sync_data()?;
        position += 1;
    }
    let elapsed = start.elapsed();
    drop(db);
    Ok(vec![rate(position - 1, elapsed)])
}

fn bench_durable_fsync(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let (agents, duration) = (scale.durable_agents, scale.fsync_time);
    let value_len = stored_record_len(rt)?;
    println!(
        "\n== durable-fsync: {agents} durable agents, SledJournal Fsync, {FSYNC_SENDERS:?} \
         concurrent senders to random agents, {} ms each; raw sled values of {value_len} B; \
         load {}",
        duration.as_millis(),
        loadavg()
    );
    let reverse = std::cell::Cell::new(false);
    let mut sides: [Side<'_>; 3] = [
        Box::new(|| {
            // Alternate the order of the sender counts between rounds too.
            reverse.set(!reverse.get());
            toka_fsync_round(rt, agents, duration, reverse.get())
        }),
        Box::new(|| raw_fsync(duration, value_len)),
        Box::new(|| journal_alone_fsync_round(rt, agents, duration)),
    ];
    let out = rounds(REPS, true, &mut sides)?;
    let unit = Unit::Rate("acked sends");
    let raw = col(&out[1], 0);
    let one = col(&out[0], 0);
    print_samples("fsync 1 sender", unit, &one, "raw insert+flush", &raw);
    for (i, senders) in FSYNC_SENDERS.iter().enumerate() {
        let toka = col(&out[0], i);
        let alone = col(&out[2], i);
        if i > 0 {
            print_samples(
                &format!("fsync {senders} senders"),
                unit,
                &toka,
                "toka 1 sender",
                &one,
            );
        }
        print_samples(
            &format!("fsync {senders} senders"),
            unit,
            &toka,
            "journal alone",
            &alone,
        );
    }
    for (i, senders) in FSYNC_SENDERS.iter().enumerate() {
        let toka = median(&col(&out[0], i));
        if i == 0 {
            record(
                "durable Fsync, 1 sender",
                unit,
                toka,
                "raw sled insert+flush+fdatasync, 1",
                median(&raw),
                None,
            );
        } else {
            record(
                format!("durable Fsync, {senders} senders (scaling)"),
                unit,
                toka,
                "toka Fsync, 1 sender",
                median(&one),
                None,
            );
        }
    }
    for (i, senders) in FSYNC_SENDERS.iter().enumerate() {
        record(
            format!("durable Fsync, {senders} senders vs journal"),
            unit,
            median(&col(&out[0], i)),
            format!("journal append x{senders}"),
            median(&col(&out[2], i)),
            (*senders == 256).then_some(Target::AtLeast(FSYNC_RATE_TARGET)),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Recovery
// ---------------------------------------------------------------------------------------

/// Builds the recovery journal in `dir` through the runtime: `agents` durable agents,
/// `per_agent` messages each (sent by [`SENDERS`] tasks), then a graceful shutdown.
fn build_recovery_log(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    agents: usize,
    per_agent: u64,
    snapshots: bool,
) -> BenchResult<()> {
    progress("building the recovery journal");
    let journal = sled_journal(dir, Durability::Buffered)?;
    let started = Instant::now();
    let total = agents as u64 * per_agent;
    let (spawned, sent) = on_pool(rt, async move {
        let counters = TallyCounters::default();
        let runtime = Runtime::builder(journal)
            .register(Tally {
                counters: counters.clone(),
                snapshots,
            })
            .start()
            .await?;
        let spawn_start = Instant::now();
        let refs = Arc::new(
            spawn_tallies(&runtime, agents, 1, snapshots.then_some(SNAPSHOT_EVERY)).await?,
        );
        let spawned = spawn_start.elapsed();
        let send_start = Instant::now();
        // Exactly `per_agent` messages per agent: message k goes to agent k % agents.
        let mut tasks = Vec::with_capacity(SENDERS);
        for t in 0..SENDERS {
            let refs = Arc::clone(&refs);
            tasks.push(tokio::spawn(async move {
                let mut k = t as u64;
                while k < total {
                    refs[(k % refs.len() as u64) as usize].send(1).await?;
                    k += SENDERS as u64;
                }
                Ok::<_, toka_actors::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        wait_count(&counters.handled, total, Duration::from_secs(300)).await?;
        let sent = send_start.elapsed();
        runtime.shutdown().await?;
        Ok((spawned, sent))
    })?;
    println!(
        "  built: {agents} agents spawned in {:.1} s ({} spawns/s), {total} messages sent and \
         handled in {:.1} s ({} msgs/s, {SENDERS} senders); {:.1} s in all",
        spawned.as_secs_f64(),
        fmt_rate(rate(agents as u64, spawned)),
        sent.as_secs_f64(),
        fmt_rate(rate(total, sent)),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Times `start()` of a runtime over `journal` until it returns, checks what was
/// recovered, shuts it down. Metrics: [start seconds, shutdown seconds].
fn toka_recovery_start(
    rt: &tokio::runtime::Runtime,
    journal: Arc<SledJournal>,
    agents: usize,
    expect_replayed: u64,
    snapshots: bool,
) -> BenchResult<Vec<f64>> {
    progress("toka recovery start");
    on_pool(rt, async move {
        let counters = TallyCounters::default();
        let start = Instant::now();
        let runtime = Runtime::builder(journal)
            .register(Tally {
                counters: counters.clone(),
                snapshots,
            })
            .start()
            .await?;
        let elapsed = start.elapsed();
        let replayed = counters.replayed.load(Ordering::Acquire);
        let restored = counters.restored.load(Ordering::Acquire);
        let handled = counters.handled.load(Ordering::Acquire);
        let running = runtime.tree().iter().filter(|a| a.running).count();
        if replayed != expect_replayed || handled != 0 || running != agents {
            return Err(format!(
                "recovery replayed {replayed} messages (expected {expect_replayed}), handled \
                 {handled} live (expected 0), restored {restored} snapshots; {running} of \
                 {agents} agents running"
            )
            .into());
        }
        if snapshots && restored != agents as u64 {
            return Err(format!("restored {restored} snapshots, expected {agents}").into());
        }
        progress("toka recovery shutdown");
        let stop = Instant::now();
        runtime.shutdown().await?;
        Ok(vec![elapsed.as_secs_f64(), stop.elapsed().as_secs_f64()])
    })
}

/// Raw journal replay from position 1, counting events; seconds.
fn journal_replay(journal: &SledJournal) -> BenchResult<Vec<f64>> {
    progress("journal replay");
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0usize);
    journal.replay(1, &mut |event| {
        count += 1;
        bytes += event.payload.len();
        ControlFlow::Continue(())
    })?;
    let elapsed = start.elapsed();
    std::hint::black_box(bytes);
    if count != journal.head_position() {
        return Err(format!(
            "replay saw {count} events, head is {}",
            journal.head_position()
        )
        .into());
    }
    Ok(vec![elapsed.as_secs_f64()])
}

fn bench_recovery(rt: &tokio::runtime::Runtime, scale: Scale, snapshots: bool) -> BenchResult<()> {
    let (agents, per_agent) = (scale.recovery_agents, scale.recovery_per_agent);
    let total = agents as u64 * per_agent;
    let name = if snapshots {
        "recovery-snapshots"
    } else {
        "recovery"
    };
    println!(
        "\n== {name}: {agents} durable agents, {total} journaled messages{}; time of start() \
         until it returns vs Journal::replay of the whole log; load {}",
        if snapshots {
            format!(", snapshots every {SNAPSHOT_EVERY} messages")
        } else {
            String::new()
        },
        loadavg()
    );
    let dir = TempDir::new()?;
    build_recovery_log(rt, dir.path(), agents, per_agent, snapshots)?;
    let expect_replayed = if snapshots {
        total - agents as u64 * (per_agent / SNAPSHOT_EVERY * SNAPSHOT_EVERY)
    } else {
        total
    };

    // Cold: a freshly opened journal, first the runtime, then (reopened again) the replay.
    progress("reopening the journal");
    let open_start = Instant::now();
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let opened = open_start.elapsed();
    let log_len = journal.head_position();
    let cold = toka_recovery_start(rt, Arc::clone(&journal), agents, expect_replayed, snapshots)?;
    drop(journal);
    let journal = sled_journal(dir.path(), Durability::Buffered)?;
    let cold_replay = journal_replay(&journal)?;
    println!(
        "  journal: {log_len} records; reopen {:.2} s; first start after reopen {:.2} s \
         (shutdown {:.2} s); first replay after reopen {:.2} s",
        opened.as_secs_f64(),
        cold[0],
        cold[1],
        cold_replay[0]
    );

    let mut sides: [Side<'_>; 2] = [
        Box::new(|| {
            toka_recovery_start(rt, Arc::clone(&journal), agents, expect_replayed, snapshots)
        }),
        Box::new(|| journal_replay(&journal)),
    ];
    let out = rounds(RECOVERY_REPS, false, &mut sides)?;
    let (t, b) = (col(&out[0], 0), col(&out[1], 0));
    print_samples(name, Unit::Seconds, &t, "replay", &b);
    println!(
        "  {name}: shutdown after recovery [{}]",
        fmt_samples(Unit::Seconds, &col(&out[0], 1))
    );
    let label = if snapshots { ", snapshots" } else { "" };
    // The 5 s target is for the brief's size; a quick run is far smaller.
    let recovery_target = (!scale.quick).then_some(Target::AtMost(RECOVERY_SECS_TARGET));
    record(
        format!("recovery {agents} agents/{total} msgs{label}: cold"),
        Unit::Seconds,
        cold[0],
        "Journal::replay, cold",
        cold_replay[0],
        recovery_target,
    );
    record(
        format!("recovery {agents} agents/{total} msgs{label}: warm"),
        Unit::Seconds,
        median(&t),
        "Journal::replay, warm",
        median(&b),
        recovery_target,
    );
    drop(sides);
    drop(journal);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Memory
// ---------------------------------------------------------------------------------------

const PROBE_ENV: &str = "TOKA_BENCH_MEMORY_PROBE";
const PROBE_N_ENV: &str = "TOKA_BENCH_MEMORY_N";
/// Agents / actors spawned before the first RSS reading (allocator and caches warm).
const PROBE_WARM: usize = 200;

/// Resident set size of this process, in bytes.
fn rss_bytes() -> BenchResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// In the child process: spawns `n` idle agents / actors of `kind` and prints the RSS
/// growth per agent.
fn memory_probe(kind: &str, n: usize) -> BenchResult<()> {
    let rt = support::tokio_runtime(WORKERS)?;
    let kind = kind.to_owned();
    let per_agent = on_pool(&rt, async move {
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        match kind.as_str() {
            "ractor" => {
                let mut actors = Vec::with_capacity(n + PROBE_WARM);
                for _ in 0..PROBE_WARM {
                    actors.push(Actor::spawn(None, RawIdle, ()).await?);
                }
                settle().await;
                let before = rss_bytes()?;
                for _ in 0..n {
                    actors.push(Actor::spawn(None, RawIdle, ()).await?);
                }
                settle().await;
                let after = rss_bytes()?;
                for (actor, _) in &actors {
                    actor.send_message(1).map_err(|e| e.to_string())?;
                }
                Ok((after.saturating_sub(before)) as f64 / n as f64)
            }
            "toka-durable" | "toka-transient" => {
                let durable = kind == "toka-durable";
                let dir = TempDir::new()?;
                let journal: Arc<dyn Journal> = if durable {
                    sled_journal(dir.path(), Durability::Buffered)?
                } else {
                    memory_journal()?
                };
                let runtime = Runtime::builder(journal)
                    .register(Tally {
                        counters: TallyCounters::default(),
                        snapshots: false,
                    })
                    .start()
                    .await?;
                let spec = |i: usize| -> BenchResult<SpawnSpec> {
                    let spec = SpawnSpec::new(tally_id(i))?;
                    Ok(if durable { spec } else { spec.transient() })
                };
                let mut refs = Vec::with_capacity(n + PROBE_WARM);
                for i in 0..PROBE_WARM {
                    refs.push(runtime.spawn::<Tally>(spec(i)?, ()).await?);
                }
                settle().await;
                let before = rss_bytes()?;
                for i in PROBE_WARM..PROBE_WARM + n {
                    refs.push(runtime.spawn::<Tally>(spec(i)?, ()).await?);
                }
                settle().await;
                let after = rss_bytes()?;
                std::hint::black_box(&refs);
                Ok((after.saturating_sub(before)) as f64 / n as f64)
            }
            other => Err(format!("unknown memory probe {other:?}").into()),
        }
    })?;
    println!("PROBE {per_agent}");
    // The runtime and journal are left to the process exit.
    std::process::exit(0);
}

/// Runs one memory probe in a child process; bytes per agent.
fn run_probe(kind: &str, n: usize) -> BenchResult<Vec<f64>> {
    progress(format!("memory probe {kind}"));
    let output = std::process::Command::new(std::env::current_exe()?)
        .env(PROBE_ENV, kind)
        .env(PROBE_N_ENV, n.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .ok_or_else(|| {
            format!(
                "memory probe {kind} failed ({}): {stdout} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(vec![value.trim().parse()?])
}

fn bench_memory(scale: Scale) -> BenchResult<()> {
    let n = scale.memory_agents;
    println!(
        "\n== memory: RSS growth per idle agent after spawning {n} (each probe in a fresh \
         process, after {PROBE_WARM} warm-up spawns); load {}",
        loadavg()
    );
    let mut sides: [Side<'_>; 3] = [
        Box::new(|| run_probe("toka-durable", n)),
        Box::new(|| run_probe("ractor", n)),
        Box::new(|| run_probe("toka-transient", n)),
    ];
    let out = rounds(RECOVERY_REPS, false, &mut sides)?;
    let unit = Unit::Bytes("agent");
    let (durable, raw, transient) = (col(&out[0], 0), col(&out[1], 0), col(&out[2], 0));
    print_samples("memory durable", unit, &durable, "ractor", &raw);
    print_samples("memory transient", unit, &transient, "ractor", &raw);
    record(
        format!("memory per idle durable agent ({n})"),
        unit,
        median(&durable),
        "idle ractor actor",
        median(&raw),
        Some(Target::AtMost(MEMORY_BYTES_TARGET)),
    );
    record(
        format!("memory per idle transient agent ({n})"),
        unit,
        median(&transient),
        "idle ractor actor",
        median(&raw),
        Some(Target::AtMost(MEMORY_BYTES_TARGET)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn main() -> BenchResult<()> {
    if let Ok(kind) = std::env::var(PROBE_ENV) {
        let n = std::env::var(PROBE_N_ENV)?.parse()?;
        return memory_probe(&kind, n);
    }
    let scale = Scale::from_env();
    // `cargo bench` passes `--bench`; every argument that is not a flag is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // An exact workload name selects only it (`recovery` is a prefix of
    // `recovery-snapshots`); anything else selects the names containing it.
    let selected = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| {
                name == f || (!WORKLOADS.contains(&f.as_str()) && name.contains(f.as_str()))
            })
    };
    println!(
        "toka-actors runtime benchmarks{}; {} cpus, {WORKERS} tokio workers; filters: {:?}",
        if scale.quick {
            " (TOKA_BENCH_QUICK: smaller sizes than the brief's, see each section)"
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
    let rt = support::tokio_runtime(WORKERS)?;
    if selected("request-reply") {
        bench_request_reply(&rt, scale)?;
    }
    if selected("ask-under-flood") {
        bench_ask_under_flood(&rt, scale)?;
    }
    if selected("query") {
        bench_query(&rt, scale)?;
    }
    if selected("spawn") {
        bench_spawn(&rt, scale)?;
    }
    if selected("fan-in") {
        bench_fan_in(&rt, scale)?;
    }
    if selected("durable-buffered") {
        bench_durable_buffered(&rt, scale)?;
    }
    if selected("durable-fsync") {
        bench_durable_fsync(&rt, scale)?;
    }
    if selected("recovery") {
        bench_recovery(&rt, scale, false)?;
    }
    if selected("recovery-snapshots") {
        bench_recovery(&rt, scale, true)?;
    }
    if selected("memory") {
        bench_memory(scale)?;
    }
    support::finished();
    let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    if rows.is_empty() {
        println!("no workload matches {filters:?}");
    }
    print_summary(&rows, started.elapsed(), scale.quick);
    Ok(())
}
