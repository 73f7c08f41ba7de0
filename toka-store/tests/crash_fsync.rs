//! Crash test of the sled journal in `Fsync` mode with real processes and real `SIGKILL`s.
//!
//! The test binary re-runs itself (see `notes/testing.md` §1): the parent test
//! [`acknowledged_appends_survive_sigkill`] spawns `current_exe() crash_child --exact` with
//! `TOKA_CRASH_CHILD_DIR` set. The child opens the journal and appends forever from several
//! tokio tasks, printing `INV` before and `ACK` after every append. The parent kills it at a
//! random moment (sometimes while it is still opening/recovering), reopens the journal and
//! checks the read-back log against the recorded history with a jepsen-style checker
//! (`notes/testing.md` §4): nothing acknowledged is lost, nothing never attempted appears,
//! nothing is duplicated, positions and per-stream sequences have no gaps, batches are
//! atomic, and nothing once observed disappears later.
//!
//! A second scenario, [`buffered_appends_lose_only_the_newest_whole_batches_on_sigkill`],
//! runs the same child with `TOKA_CRASH_CHILD_MODE=buffered` ([`Durability::Buffered`],
//! batches of up to 16 events). There acknowledged batches may be lost, but only whole and
//! newest first ([`check_buffered`]); before every early kill the parent leaves the crashed
//! journal to the next child, so that kills also land inside a first recovery.
//!
//! Replay a run with `TOKA_SEED=<seed> cargo test -p toka-store --test crash_fsync`.
#![cfg(all(unix, feature = "sled"))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Rng, child_fail, copy_dir, emit, fsync_config, multi_thread_runtime, seed_from_env_or_time,
    self_command,
};
use toka_store::{
    Durability, ExpectedVersion, Journal, JournalConfig, NewEvent, RecordedEvent, SledJournal,
};

/// Directory of the journal; set only in the child process.
const CHILD_DIR_ENV: &str = "TOKA_CRASH_CHILD_DIR";
/// Round number, baked into every payload so payloads are unique across rounds.
const CHILD_ROUND_ENV: &str = "TOKA_CRASH_CHILD_ROUND";
/// Seed of the child's batch-size generator.
const CHILD_SEED_ENV: &str = "TOKA_CRASH_CHILD_SEED";
/// `buffered` for the [`Durability::Buffered`] scenario; unset (or anything else): `Fsync`.
const CHILD_MODE_ENV: &str = "TOKA_CRASH_CHILD_MODE";

/// Concurrent appending tasks in the child; task `k` appends to stream `t{k}`.
const TASKS: u32 = 4;
/// Largest batch a child appends.
const MAX_BATCH: u32 = 4;
/// Largest batch a child appends in the `Buffered` scenario.
const BUFFERED_MAX_BATCH: u32 = 16;
/// Kill rounds of the `Buffered` scenario.
const BUFFERED_ROUNDS: u32 = 20;
/// Kill rounds of the parent.
const ROUNDS: u32 = 30;
/// A child that was never killed gives up after this long (e.g. its parent died).
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The history model and the checker (pure functions).

/// One append attempt: round, task (= stream `t{task}`) and the task's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct OpId {
    round: u32,
    task: u32,
    counter: u64,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}/t{}/c{}", self.round, self.task, self.counter)
    }
}

fn stream_of(task: u32) -> String {
    format!("t{task}")
}

/// Payload of event `index` of a batch of `n` events of `op`.
fn payload(op: OpId, n: u32, index: u32) -> Vec<u8> {
    format!("r{}:t{}:c{}:n{n}:i{index}", op.round, op.task, op.counter).into_bytes()
}

/// Parses a payload back into `(op, n, index)`; `None` if it is not one we produce.
fn parse_payload(bytes: &[u8]) -> Option<(OpId, u32, u32)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    let mut field = |tag: char| -> Option<u64> {
        let part = parts.next()?;
        part.strip_prefix(tag)?.parse().ok()
    };
    let round = u32::try_from(field('r')?).ok()?;
    let task = u32::try_from(field('t')?).ok()?;
    let counter = field('c')?;
    let n = u32::try_from(field('n')?).ok()?;
    let index = u32::try_from(field('i')?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    let op = OpId {
        round,
        task,
        counter,
    };
    (payload(op, n, index) == bytes).then_some((op, n, index))
}

/// What the child reported for an acknowledged append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    first_position: u64,
    last_position: u64,
    first_seq: u64,
    last_seq: u64,
}

/// Everything the clients said: invocations (with batch size) and acknowledgements.
/// An invocation without acknowledgement has an unknown outcome (jepsen's `info`).
#[derive(Clone, Debug, Default)]
struct History {
    invoked: BTreeMap<OpId, u32>,
    acked: BTreeMap<OpId, Ack>,
}

/// One event as read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    position: u64,
    stream: String,
    seq: u64,
    payload: Vec<u8>,
}

impl From<&RecordedEvent> for Observed {
    fn from(e: &RecordedEvent) -> Self {
        Observed {
            position: e.position,
            stream: e.stream.clone(),
            seq: e.seq,
            payload: e.payload.clone(),
        }
    }
}

/// The checker's verdict. Valid iff every anomaly list is empty.
#[derive(Debug, Default)]
struct CheckReport {
    /// Acknowledged but (partly) not read back.
    lost: Vec<String>,
    /// Read back but never invoked, or not a payload any client produces.
    phantom: Vec<String>,
    /// The same event read back more than once.
    duplicate: Vec<String>,
    /// Global positions or per-stream sequence numbers that skip or repeat.
    gap: Vec<String>,
    /// A batch read back partly, or its events not contiguous / out of order.
    torn: Vec<String>,
    /// An event in another stream, position or seq than its payload / its ack says.
    misplaced: Vec<String>,
    /// Appends of one task (sequential by construction) read back out of order.
    reordered: Vec<String>,
    /// Present in an earlier observation, absent now.
    flicker: Vec<String>,
    /// Every op present in this observation (fully).
    present: BTreeSet<OpId>,
    /// Present although never acknowledged (unknown outcome that took effect).
    recovered: usize,
}

impl CheckReport {
    fn is_valid(&self) -> bool {
        self.anomalies().iter().all(|(_, list)| list.is_empty())
    }

    fn anomalies(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("lost", &self.lost),
            ("phantom", &self.phantom),
            ("duplicate", &self.duplicate),
            ("gap", &self.gap),
            ("torn", &self.torn),
            ("misplaced", &self.misplaced),
            ("reordered", &self.reordered),
            ("flicker", &self.flicker),
        ]
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, list) in self.anomalies() {
            if !list.is_empty() {
                writeln!(f, "{name} ({}):", list.len())?;
                for line in list.iter().take(20) {
                    writeln!(f, "  {line}")?;
                }
            }
        }
        Ok(())
    }
}

/// Checks the log read back (in position order, as `iter_all(1)` yields it) against the
/// client history and the ops present at the previous observation.
fn check(history: &History, log: &[Observed], previously_present: &BTreeSet<OpId>) -> CheckReport {
    let mut report = CheckReport::default();

    // Global positions: 1, 2, 3, … in order.
    for (expected, event) in (1u64..).zip(log) {
        if event.position != expected {
            report.gap.push(format!(
                "expected position {expected}, read {}",
                event.position
            ));
            break;
        }
    }

    // Per-stream sequence numbers: 1, 2, 3, … in position order.
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    for event in log {
        let last = last_seq.entry(event.stream.as_str()).or_insert(0);
        if event.seq != *last + 1 {
            report.gap.push(format!(
                "stream {:?}: seq {} follows seq {} (position {})",
                event.stream, event.seq, last, event.position
            ));
        }
        *last = event.seq;
    }

    // Group events by op; flag phantoms, duplicates and events in the wrong stream.
    let mut by_op: BTreeMap<OpId, Vec<(u32, u32, &Observed)>> = BTreeMap::new();
    let mut seen: BTreeSet<(OpId, u32)> = BTreeSet::new();
    for event in log {
        let Some((op, n, index)) = parse_payload(&event.payload) else {
            report.phantom.push(format!(
                "position {}: payload {:?} was never produced by a client",
                event.position,
                String::from_utf8_lossy(&event.payload)
            ));
            continue;
        };
        match history.invoked.get(&op) {
            None => report.phantom.push(format!(
                "position {}: op {op} was never invoked",
                event.position
            )),
            Some(&invoked_n) if invoked_n != n || index >= n => {
                report.phantom.push(format!(
                    "position {}: op {op} event {index}/{n}, but the op was invoked with {invoked_n} events",
                    event.position
                ));
            }
            Some(_) => {}
        }
        if !seen.insert((op, index)) {
            report.duplicate.push(format!(
                "op {op} event {index} read again at position {}",
                event.position
            ));
            continue;
        }
        if event.stream != stream_of(op.task) {
            report.misplaced.push(format!(
                "position {}: op {op} is in stream {:?}, expected {:?}",
                event.position,
                event.stream,
                stream_of(op.task)
            ));
        }
        by_op.entry(op).or_default().push((n, index, event));
    }

    // Batches: all events, contiguous positions and seqs, in index order.
    for (op, events) in &by_op {
        let n = events[0].0;
        let (_, _, first) = events[0];
        let complete = events.len() == n as usize
            && events.iter().zip(0u32..).all(|(&(_, index, e), k)| {
                index == k
                    && e.position == first.position + u64::from(k)
                    && e.seq == first.seq + u64::from(k)
            });
        if complete {
            report.present.insert(*op);
        } else {
            let found: Vec<String> = events
                .iter()
                .map(|(_, i, e)| format!("#{i}@{}/seq{}", e.position, e.seq))
                .collect();
            report.torn.push(format!(
                "op {op}: batch of {n} read back as [{}]",
                found.join(", ")
            ));
        }
    }

    // Acknowledged ops: present, where the ack said.
    for (op, ack) in &history.acked {
        match by_op.get(op) {
            None => report.lost.push(format!(
                "op {op} acknowledged at positions {}..={} is missing",
                ack.first_position, ack.last_position
            )),
            Some(events) => {
                let invoked_n = history.invoked.get(op).copied().unwrap_or(0);
                if events.len() != invoked_n as usize {
                    report.lost.push(format!(
                        "op {op} acknowledged with {invoked_n} events, {} read back",
                        events.len()
                    ));
                }
                let (_, _, first) = events[0];
                let (_, _, last) = events[events.len() - 1];
                let read = (first.position, last.position, first.seq, last.seq);
                let acked = (
                    ack.first_position,
                    ack.last_position,
                    ack.first_seq,
                    ack.last_seq,
                );
                if read != acked {
                    report.misplaced.push(format!(
                        "op {op} acknowledged at (first, last position, first, last seq) {acked:?}, read back at {read:?}"
                    ));
                }
            }
        }
    }
    report.recovered = report
        .present
        .iter()
        .filter(|op| !history.acked.contains_key(op))
        .count();

    // Each task appends sequentially, so its ops appear in (round, counter) order.
    let mut last_op: BTreeMap<u32, OpId> = BTreeMap::new();
    for event in log {
        let Some((op, _, _)) = parse_payload(&event.payload) else {
            continue;
        };
        if let Some(previous) = last_op.insert(op.task, op) {
            if previous > op {
                report.reordered.push(format!(
                    "position {}: op {op} after op {previous}",
                    event.position
                ));
            }
        }
    }

    // Nothing observed earlier may disappear.
    for op in previously_present {
        if !report.present.contains(op) {
            report
                .flicker
                .push(format!("op {op} was present before and is gone now"));
        }
    }
    report
}

/// The checker of the `Buffered` scenario. There a crash may lose acknowledged appends, but
/// only the newest ones, as whole batches: sled recovers a prefix of the writes, and the
/// journal writes records in position order. So within one round (one child's life) every
/// append that survived was written before every acknowledged append that was lost
/// (positions are the write order), and per task the surviving appends are its first ones
/// (counters 0, 1, …, k): an acknowledged batch lost implies every later batch of that task
/// is lost too. Everything else is checked by [`check`], where the lost acknowledged appends
/// count as appends of unknown outcome.
///
/// Returns the report and the acknowledged appends that are missing.
fn check_buffered(
    history: &History,
    log: &[Observed],
    previously_present: &BTreeSet<OpId>,
) -> (CheckReport, BTreeSet<OpId>) {
    // Where each op read back starts (its first event in position order).
    let mut first_position: BTreeMap<OpId, u64> = BTreeMap::new();
    for event in log {
        if let Some((op, _, _)) = parse_payload(&event.payload) {
            first_position.entry(op).or_insert(event.position);
        }
    }
    let missing: BTreeSet<OpId> = history
        .acked
        .keys()
        .filter(|op| !first_position.contains_key(op))
        .copied()
        .collect();
    let mut relaxed = history.clone();
    relaxed.acked.retain(|op, _| !missing.contains(op));
    let mut report = check(&relaxed, log, previously_present);

    // Per round: nothing written after the oldest lost acknowledged append survived.
    let mut oldest_lost: BTreeMap<u32, (u64, OpId)> = BTreeMap::new();
    for op in &missing {
        let position = history.acked[op].first_position;
        let oldest = oldest_lost.entry(op.round).or_insert((position, *op));
        if position < oldest.0 {
            *oldest = (position, *op);
        }
    }
    for (op, &read_at) in &first_position {
        // Where it was written: the ack says, else where it is now (the same place, as
        // nothing before it may be missing).
        let position = history.acked.get(op).map_or(read_at, |a| a.first_position);
        if let Some(&(lost_at, lost)) = oldest_lost.get(&op.round) {
            if position > lost_at {
                report.lost.push(format!(
                    "op {lost} acknowledged at position {lost_at} is missing, but op {op} \
                     written after it (position {position}) survived"
                ));
            }
        }
    }

    // Per round and task: the surviving appends are the task's first ones.
    let mut survivors: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    for op in first_position.keys() {
        survivors
            .entry((op.round, op.task))
            .or_default()
            .push(op.counter);
    }
    for ((round, task), counters) in &survivors {
        if let Some((expected, counter)) = (0u64..)
            .zip(counters)
            .find(|(expected, counter)| *expected != **counter)
        {
            report.lost.push(format!(
                "op r{round}/t{task}/c{counter} survived, but the earlier op \
                 r{round}/t{task}/c{expected} of the same task did not"
            ));
        }
    }
    (report, missing)
}

// ---------------------------------------------------------------------------------------
// The child: appends forever until killed.

/// The child's durability mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fsync,
    Buffered,
}

impl Mode {
    fn from_env() -> Self {
        match std::env::var(CHILD_MODE_ENV).as_deref() {
            Ok("buffered") => Mode::Buffered,
            _ => Mode::Fsync,
        }
    }

    /// The child's journal configuration (`Buffered`: the default 100 ms flush interval).
    fn config(self) -> JournalConfig {
        match self {
            Mode::Fsync => fsync_config(),
            Mode::Buffered => JournalConfig::default().durability(Durability::Buffered),
        }
    }

    fn max_batch(self) -> u32 {
        match self {
            Mode::Fsync => MAX_BATCH,
            Mode::Buffered => BUFFERED_MAX_BATCH,
        }
    }
}

async fn child_task(journal: SledJournal, round: u32, task: u32, seed: u64, mode: Mode) {
    let stream = stream_of(task);
    let mut rng = Rng::splitmix(seed ^ (u64::from(round) << 32) ^ u64::from(task));
    let mut version = journal
        .stream_version(&stream)
        .unwrap_or_else(|e| child_fail(&format!("stream_version({stream}): {e}")));
    for counter in 0u64.. {
        let op = OpId {
            round,
            task,
            counter,
        };
        let n = rng.range(1, u64::from(mode.max_batch())) as u32;
        let events: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent::new("crash.test", payload(op, n, i)))
            .collect();
        emit(&format!("INV {round} {task} {counter} {n}"));
        match journal
            .append(&stream, ExpectedVersion::Exact(version), &events)
            .await
        {
            Ok(Ok(a)) => {
                emit(&format!(
                    "ACK {round} {task} {counter} {n} {} {} {stream} {} {}",
                    a.first_position, a.last_position, a.first_seq, a.last_seq
                ));
                version = a.last_seq;
            }
            Ok(Err(conflict)) => child_fail(&format!("op {op}: unexpected conflict: {conflict}")),
            Err(e) => child_fail(&format!("op {op}: append failed: {e}")),
        }
    }
}

/// The child half of the crash test; a no-op unless `TOKA_CRASH_CHILD_DIR` is set.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mode = Mode::from_env();
    // Never outlive a parent that forgot to kill us.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        child_fail("was never killed");
    });
    let runtime = multi_thread_runtime(2);
    runtime.block_on(async move {
        emit("START");
        let journal = SledJournal::open(&dir, mode.config())
            .unwrap_or_else(|e| child_fail(&format!("open: {e}")));
        emit(&format!("OPEN {}", journal.head_position()));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(child_task(journal.clone(), round, task, seed, mode)))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------
// The parent.

/// What one child printed before it died.
#[derive(Debug, Default)]
struct ChildOutput {
    /// When (after spawning) the child said it starts opening the journal.
    started: Option<Duration>,
    /// When (after spawning) the child said the journal is open.
    opened: Option<Duration>,
    invoked: Vec<(OpId, u32)>,
    acked: Vec<(OpId, u32, Ack)>,
    errors: Vec<String>,
}

const TAGS: [&str; 5] = ["START", "OPEN", "INV", "ACK", "ERR"];

fn parse_child_line(line: &str, at: Duration, out: &mut ChildOutput) {
    let words: Vec<&str> = line.split_whitespace().collect();
    // libtest prints "test crash_child ... " without a newline, so the first line of the
    // child's own output is glued to it: start at the first tag.
    let Some(skip) = words.iter().position(|w| TAGS.contains(w)) else {
        return; // libtest's own chatter ("running 1 test", …)
    };
    let words = &words[skip..];
    let num = |i: usize| -> u64 { words[i].parse().unwrap() };
    match words[0] {
        "START" => out.started = Some(at),
        "OPEN" => out.opened = Some(at),
        "INV" => {
            let op = OpId {
                round: num(1) as u32,
                task: num(2) as u32,
                counter: num(3),
            };
            out.invoked.push((op, num(4) as u32));
        }
        "ACK" => {
            let op = OpId {
                round: num(1) as u32,
                task: num(2) as u32,
                counter: num(3),
            };
            assert_eq!(words[7], stream_of(op.task), "bad ACK line {line:?}");
            let ack = Ack {
                first_position: num(5),
                last_position: num(6),
                first_seq: num(8),
                last_seq: num(9),
            };
            out.acked.push((op, num(4) as u32, ack));
        }
        _ => out.errors.push(line.to_owned()),
    }
}

/// Runs one child for `delay`, then SIGKILLs it and returns what it printed.
/// When the parent kills a child.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after spawning it (lands in start-up, open or recovery).
    AfterSpawn(Duration),
    /// This long after it reported the journal open (lands in the append loop, however
    /// slow opening is on a loaded machine).
    AfterOpen(Duration),
}

/// Runs one child, SIGKILLs it at `kill_at` and returns what it printed.
fn run_child(dir: &Path, round: u32, seed: u64, kill_at: KillAt) -> ChildOutput {
    run_child_in(Mode::Fsync, dir, round, seed, kill_at)
}

/// [`run_child`] with the child's durability mode.
fn run_child_in(mode: Mode, dir: &Path, round: u32, seed: u64, kill_at: KillAt) -> ChildOutput {
    let spawned = Instant::now();
    let mut child = self_command("crash_child")
        .env(CHILD_DIR_ENV, dir)
        .env(
            CHILD_MODE_ENV,
            match mode {
                Mode::Fsync => "fsync",
                Mode::Buffered => "buffered",
            },
        )
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_SEED_ENV, seed.to_string())
        .env_remove("TOKA_SEED")
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = ChildOutput::default();
        for line in BufReader::new(stdout).lines() {
            parse_child_line(&line.unwrap(), spawned.elapsed(), &mut out);
            if out.opened.is_some() {
                let _ = opened_tx.send(());
            }
        }
        out
    });
    match kill_at {
        KillAt::AfterSpawn(delay) => std::thread::sleep(delay),
        KillAt::AfterOpen(delay) => {
            // Returns early if the child dies without opening; the checks below report it.
            let _ = opened_rx.recv_timeout(Duration::from_secs(20));
            std::thread::sleep(delay);
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(
        out.errors.is_empty(),
        "round {round}: the child reported errors: {:?}",
        out.errors
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child ended by itself ({status}) instead of by SIGKILL"
    );
    out
}

/// Opens the journal in the parent (`SledJournal::open` itself retries briefly if sled's
/// lock is still held).
fn reopen(dir: &Path, context: &str) -> SledJournal {
    SledJournal::open(dir, fsync_config())
        .unwrap_or_else(|e| panic!("{context}: reopening the journal failed: {e}"))
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let seed = seed_from_env_or_time();
    println!("crash_fsync seed: TOKA_SEED={seed}");
    let mut rng = Rng::splitmix(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");

    let started = Instant::now();
    let mut history = History::default();
    let mut previously_present = BTreeSet::new();
    let mut previous_head = 0u64;
    let mut rounds_with_acks = 0u32;
    // Where the kills landed: before the child started opening, while it opened/recovered,
    // after the journal was open.
    let (mut killed_before_start, mut killed_during_open) = (0u32, 0u32);
    let mut unacked_present = 0usize;
    // Time from spawn to "journal open" in the last round that got there; early kills aim
    // at [0, this + 5 ms] so that some land inside open/recovery.
    let mut open_latency = Duration::from_millis(60);
    // Time from spawn to "opening the journal" in the same round.
    let mut start_latency = Duration::from_millis(5);

    for round in 0..ROUNDS {
        let context = format!("TOKA_SEED={seed} round {round}");
        // One round in four dies early: during start-up, or inside open/recovery; the
        // others 5..=300 ms into the append loop.
        let kill_at = if round % 4 == 1 {
            let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap();
            let (start, open) = (micros(start_latency), micros(open_latency) + 5_000);
            KillAt::AfterSpawn(Duration::from_micros(if rng.range(0, 2) == 0 {
                rng.range(0, start)
            } else {
                rng.range(start, open.max(start))
            }))
        } else {
            KillAt::AfterOpen(Duration::from_millis(rng.range(5, 300)))
        };
        let out = run_child(&dir, round, rng.next(), kill_at);
        match (out.started, out.opened) {
            (None, _) => killed_before_start += 1,
            (Some(_), None) => killed_during_open += 1,
            (Some(s), Some(o)) => (start_latency, open_latency) = (s, o),
        }
        for (op, n) in &out.invoked {
            assert!(
                history.invoked.insert(*op, *n).is_none(),
                "{context}: op {op} invoked twice"
            );
        }
        for (op, n, ack) in &out.acked {
            assert_eq!(
                history.invoked.get(op),
                Some(n),
                "{context}: op {op} acknowledged without a matching invocation"
            );
            assert_eq!(
                ack.last_position - ack.first_position + 1,
                u64::from(*n),
                "{context}: op {op} acknowledged with a wrong position range"
            );
            history.acked.insert(*op, *ack);
        }
        if !out.acked.is_empty() {
            rounds_with_acks += 1;
        }

        // Recover in the parent and check.
        let journal = reopen(&dir, &context);
        let head = journal.head_position();
        let log = recovered_log(&journal, head, &context);

        let highest_acked = history
            .acked
            .values()
            .map(|a| a.last_position)
            .max()
            .unwrap_or(0);
        assert!(
            head >= highest_acked,
            "{context}: head {head} is below the highest acknowledged position {highest_acked}"
        );
        assert!(
            head >= previous_head,
            "{context}: head went back from {previous_head} to {head}"
        );
        previous_head = head;

        let observed: Vec<Observed> = log.iter().map(Observed::from).collect();
        let verdict = check(&history, &observed, &previously_present);
        assert!(
            verdict.is_valid(),
            "{context}: checker found anomalies:\n{verdict}"
        );
        unacked_present = verdict.recovered;
        previously_present = verdict.present;
        drop(journal);
        println!(
            "round {round:2}: kill {kill_at:?} ({}), {:4} invoked, {:4} acked, head {head}",
            match (out.started, out.opened) {
                (None, _) => "before open".to_owned(),
                (Some(_), None) => "during open".to_owned(),
                (Some(s), Some(o)) => format!("open took {} ms", (o - s).as_millis()),
            },
            out.invoked.len(),
            out.acked.len(),
        );
    }

    let acked_events: u64 = history
        .acked
        .values()
        .map(|a| a.last_position - a.first_position + 1)
        .sum();
    println!(
        "{ROUNDS} rounds in {:?}: {} appends invoked, {} acknowledged ({acked_events} events), \
         {unacked_present} unacknowledged appends present at the end, {rounds_with_acks} rounds with acks, \
         {killed_before_start} kills before open, {killed_during_open} during open, final head {previous_head}",
        started.elapsed(),
        history.invoked.len(),
        history.acked.len(),
    );
    // The test must be able to fail: enough rounds must have acknowledged something.
    assert!(
        rounds_with_acks >= ROUNDS / 2,
        "only {rounds_with_acks} of {ROUNDS} rounds acknowledged an append (seed {seed})"
    );
    assert!(
        acked_events >= 100,
        "only {acked_events} events acknowledged (seed {seed})"
    );
}

/// Number of log records in a copy of the (crashed, closed) sled database at `dir`, before
/// the journal's recovery ran on it. The copy keeps the real directory untouched, so that
/// the journal's open is the first to recover it.
fn raw_records(dir: &Path, scratch: &Path) -> u64 {
    if !dir.exists() {
        return 0; // killed before sled created anything
    }
    let _ = std::fs::remove_dir_all(scratch);
    copy_dir(dir, scratch);
    let db = sled::Config::new()
        .path(scratch)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let records = common::stored_records(&db);
    drop(db);
    std::fs::remove_dir_all(scratch).unwrap();
    records
}

/// The `Buffered` scenario: batches of 1..=16 events, background flush every 100 ms,
/// SIGKILL at random moments. Acknowledged batches may be lost, but only the newest ones of
/// the crashed round, whole, and nothing else may go wrong (see [`check_buffered`]).
#[test]
fn buffered_appends_lose_only_the_newest_whole_batches_on_sigkill() {
    let seed = seed_from_env_or_time();
    println!("crash_fsync buffered seed: TOKA_SEED={seed}");
    let mut rng = Rng::splitmix(seed ^ 0xB0FF_E2ED);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let scratch = tmp.path().join("scratch");

    let started = Instant::now();
    let mut history = History::default();
    let mut previously_present = BTreeSet::new();
    let mut lost_so_far: BTreeSet<OpId> = BTreeSet::new();
    let mut previous_head = 0u64;
    let mut rounds_with_acks = 0u32;
    let (mut rounds_with_loss, mut lost_acked, mut torn_rounds, mut torn_records) =
        (0u32, 0usize, 0u32, 0u64);
    let mut open_latency = Duration::from_millis(60);
    let mut start_latency = Duration::from_millis(5);
    // The first round whose crash nobody recovered and checked yet.
    let mut unchecked_since = 0u32;
    // Kills that landed while a child was recovering a crash nobody else had opened.
    let mut killed_in_recovery = 0u32;

    for round in 0..BUFFERED_ROUNDS {
        let context = format!("buffered, TOKA_SEED={seed} round {round}");
        let kill_at = if round % 4 == 1 {
            let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap();
            let (start, open) = (micros(start_latency), micros(open_latency) + 5_000);
            KillAt::AfterSpawn(Duration::from_micros(rng.range(start / 2, open.max(start))))
        } else {
            KillAt::AfterOpen(Duration::from_millis(rng.range(5, 300)))
        };
        let out = run_child_in(Mode::Buffered, &dir, round, rng.next(), kill_at);
        if unchecked_since < round && out.started.is_some() && out.opened.is_none() {
            killed_in_recovery += 1;
        }
        if let (Some(s), Some(o)) = (out.started, out.opened) {
            (start_latency, open_latency) = (s, o);
        }
        for (op, n) in &out.invoked {
            assert!(
                history.invoked.insert(*op, *n).is_none(),
                "{context}: op {op} invoked twice"
            );
        }
        for (op, n, ack) in &out.acked {
            assert_eq!(
                history.invoked.get(op),
                Some(n),
                "{context}: op {op} acknowledged without a matching invocation"
            );
            assert_eq!(
                ack.last_position - ack.first_position + 1,
                u64::from(*n),
                "{context}: op {op} acknowledged with a wrong position range"
            );
            history.acked.insert(*op, *ack);
        }
        if !out.acked.is_empty() {
            rounds_with_acks += 1;
        }

        // Before each early kill the parent leaves the crashed journal alone, so that the
        // next child is the first to recover it and may die while doing so.
        if round % 4 == 0 && round + 1 < BUFFERED_ROUNDS {
            println!(
                "round {round:2}: kill {kill_at:?}, {:4} invoked, {:4} acked, left unrecovered",
                out.invoked.len(),
                out.acked.len(),
            );
            continue;
        }

        // What sled recovered before the journal looked at it.
        let raw = raw_records(&dir, &scratch);

        let journal = reopen(&dir, &context);
        let head = journal.head_position();
        assert!(
            raw >= head && raw - head < u64::from(BUFFERED_MAX_BATCH),
            "{context}: sled holds {raw} records, the journal recovered {head}: \
             at most one torn batch (< {BUFFERED_MAX_BATCH} records) may be dropped"
        );
        if raw > head {
            torn_rounds += 1;
            torn_records += raw - head;
        }
        let log = recovered_log(&journal, head, &context);
        assert!(
            head >= previous_head,
            "{context}: head went back from {previous_head} to {head}"
        );
        previous_head = head;

        let observed: Vec<Observed> = log.iter().map(Observed::from).collect();
        let (verdict, missing) = check_buffered(&history, &observed, &previously_present);
        assert!(
            verdict.is_valid(),
            "{context}: checker found anomalies:\n{verdict}"
        );
        // Only the acknowledged appends of the rounds since the last check can be newly lost.
        let newly_lost: Vec<&OpId> = missing.difference(&lost_so_far).collect();
        assert!(
            newly_lost.iter().all(|op| op.round >= unchecked_since),
            "{context}: appends of rounds checked before got lost: {newly_lost:?}"
        );
        unchecked_since = round + 1;
        if !newly_lost.is_empty() {
            rounds_with_loss += 1;
            lost_acked += newly_lost.len();
        }
        let lost_now = newly_lost.len();
        lost_so_far = missing;
        previously_present = verdict.present;
        drop(journal);
        println!(
            "round {round:2}: kill {kill_at:?} ({}), {:4} invoked, {:4} acked, {lost_now:3} acked \
             lost, {} torn records dropped, head {head}",
            match (out.started, out.opened) {
                (None, _) => "before open",
                (Some(_), None) => "during open",
                (Some(_), Some(_)) => "after open",
            },
            out.invoked.len(),
            out.acked.len(),
            raw - head,
        );
    }

    let acked_events: u64 = history
        .acked
        .values()
        .map(|a| a.last_position - a.first_position + 1)
        .sum();
    println!(
        "{BUFFERED_ROUNDS} buffered rounds in {:?}: {} appends invoked, {} acknowledged \
         ({acked_events} events), {lost_acked} acknowledged appends lost in {rounds_with_loss} \
         rounds, torn batches dropped in {torn_rounds} rounds ({torn_records} records), \
         {killed_in_recovery} kills during a child's recovery, final head {previous_head}",
        started.elapsed(),
        history.invoked.len(),
        history.acked.len(),
    );
    assert!(
        rounds_with_acks >= BUFFERED_ROUNDS / 2,
        "only {rounds_with_acks} of {BUFFERED_ROUNDS} rounds acknowledged an append (seed {seed})"
    );
    assert!(
        acked_events >= 100,
        "only {acked_events} events acknowledged (seed {seed})"
    );
}

// ---------------------------------------------------------------------------------------
// The checker on hand-made histories (jepsen's checker_test.clj style).

fn op(round: u32, task: u32, counter: u64) -> OpId {
    OpId {
        round,
        task,
        counter,
    }
}

/// A consistent history of three ops and the log it produced:
/// t0: op(0,0,0) ×2 at 1..=2, t1: op(0,1,0) ×1 at 3, t0: op(0,0,1) ×1 at 4.
fn good_history() -> (History, Vec<Observed>) {
    let mut history = History::default();
    let mut log = Vec::new();
    let mut next_seq: BTreeMap<u32, u64> = BTreeMap::new();
    for (o, n) in [(op(0, 0, 0), 2), (op(0, 1, 0), 1), (op(0, 0, 1), 1)] {
        history.invoked.insert(o, n);
        let first_position = log.len() as u64 + 1;
        let seq = next_seq.entry(o.task).or_insert(1);
        let first_seq = *seq;
        for i in 0..n {
            log.push(Observed {
                position: log.len() as u64 + 1,
                stream: stream_of(o.task),
                seq: *seq,
                payload: payload(o, n, i),
            });
            *seq += 1;
        }
        history.acked.insert(
            o,
            Ack {
                first_position,
                last_position: log.len() as u64,
                first_seq,
                last_seq: *seq - 1,
            },
        );
    }
    (history, log)
}

/// Renumbers positions 1.. after a hand edit of the log.
fn renumber(log: &mut [Observed]) {
    for (p, e) in (1u64..).zip(log.iter_mut()) {
        e.position = p;
    }
}

#[test]
fn checker_accepts_a_good_history() {
    let (history, log) = good_history();
    let report = check(&history, &log, &BTreeSet::new());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.present.len(), 3);
    assert_eq!(report.recovered, 0);
    // And the same log observed again after its own observation.
    let again = check(&history, &log, &report.present);
    assert!(again.is_valid(), "{again}");
}

#[test]
fn checker_accepts_an_unacknowledged_op_that_took_effect_or_not() {
    let (mut history, log) = good_history();
    // Outcome unknown: invoked, not acknowledged, present → "recovered", not an anomaly.
    history.acked.remove(&op(0, 0, 1));
    let report = check(&history, &log, &BTreeSet::new());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.recovered, 1);
    // Invoked, not acknowledged, absent → fine too.
    let report = check(&history, &log[..3], &BTreeSet::new());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.present.len(), 2);
}

#[test]
fn checker_flags_a_lost_ack() {
    let (history, mut log) = good_history();
    log.pop(); // op(0,0,1) was acknowledged at position 4
    let report = check(&history, &log, &BTreeSet::new());
    assert!(!report.is_valid());
    assert_eq!(report.lost.len(), 1, "{report}");
    assert!(report.lost[0].contains("r0/t0/c1"), "{report}");
    assert!(
        report.gap.is_empty() && report.phantom.is_empty(),
        "{report}"
    );
}

#[test]
fn checker_flags_a_duplicate() {
    let (history, mut log) = good_history();
    let mut copy = log[2].clone(); // op(0,1,0) again, appended at the end of its stream
    copy.seq = 2;
    log.push(copy);
    renumber(&mut log);
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.duplicate.len(), 1, "{report}");
    assert!(report.duplicate[0].contains("r0/t1/c0"), "{report}");
    assert!(report.lost.is_empty() && report.gap.is_empty(), "{report}");
}

#[test]
fn checker_flags_a_position_gap_and_a_seq_gap() {
    let (history, mut log) = good_history();
    log[3].position = 5; // position 4 missing
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.gap.len(), 1, "{report}");
    assert!(report.gap[0].contains("expected position 4"), "{report}");

    let (history, mut log) = good_history();
    log[3].seq = 4; // t0 jumps from seq 2 to 4
    let report = check(&history, &log, &BTreeSet::new());
    assert!(
        report.gap.iter().any(|g| g.contains("seq 4 follows seq 2")),
        "{report}"
    );
}

#[test]
fn checker_flags_phantoms() {
    // An op that was never invoked.
    let (history, mut log) = good_history();
    log.push(Observed {
        position: 5,
        stream: "t1".into(),
        seq: 2,
        payload: payload(op(0, 1, 7), 1, 0),
    });
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.phantom.len(), 1, "{report}");
    assert!(report.phantom[0].contains("never invoked"), "{report}");

    // A payload no client produces.
    let (history, mut log) = good_history();
    log.push(Observed {
        position: 5,
        stream: "t1".into(),
        seq: 2,
        payload: b"garbage".to_vec(),
    });
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.phantom.len(), 1, "{report}");
    assert!(report.phantom[0].contains("never produced"), "{report}");

    // An event index beyond the invoked batch size.
    let (history, mut log) = good_history();
    log.push(Observed {
        position: 5,
        stream: "t0".into(),
        seq: 4,
        payload: payload(op(0, 0, 1), 2, 1),
    });
    let report = check(&history, &log, &BTreeSet::new());
    assert!(!report.phantom.is_empty(), "{report}");
}

#[test]
fn checker_flags_a_torn_batch() {
    let (mut history, mut log) = good_history();
    // op(0,0,0) was a batch of 2; only its first event survived. Unacknowledged, so only
    // atomicity is violated.
    history.acked.remove(&op(0, 0, 0));
    log.remove(1);
    renumber(&mut log);
    log[2].seq = 2;
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.torn.len(), 1, "{report}");
    assert!(report.torn[0].contains("r0/t0/c0"), "{report}");
    assert!(report.lost.is_empty(), "{report}");
}

#[test]
fn checker_flags_an_event_where_the_ack_did_not_put_it() {
    let (mut history, log) = good_history();
    history.acked.get_mut(&op(0, 1, 0)).unwrap().first_position = 4;
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.misplaced.len(), 1, "{report}");

    let (history, mut log) = good_history();
    log[2].stream = "t0".into(); // op of task 1 stored in stream t0
    let report = check(&history, &log, &BTreeSet::new());
    assert!(!report.misplaced.is_empty(), "{report}");
}

#[test]
fn checker_flags_reordered_appends_of_one_task() {
    let (history, mut log) = good_history();
    // Swap t0's ops: op(0,0,1) before op(0,0,0), with consistent positions and seqs.
    let later = log.pop().unwrap();
    log.insert(0, later);
    renumber(&mut log);
    for (seq, i) in [(1, 0), (2, 1), (3, 2)] {
        log[i].seq = seq;
    }
    let report = check(&history, &log, &BTreeSet::new());
    assert_eq!(report.reordered.len(), 1, "{report}");
}

#[test]
fn checker_flags_flicker() {
    let (history, log) = good_history();
    let first = check(&history, &log, &BTreeSet::new());
    assert!(first.is_valid());
    // Next observation lost an unacknowledged-but-once-present op.
    let mut history = history;
    history.acked.remove(&op(0, 0, 1));
    let second = check(&history, &log[..3], &first.present);
    assert_eq!(second.flicker.len(), 1, "{second}");
    assert!(second.flicker[0].contains("r0/t0/c1"), "{second}");
    assert!(second.lost.is_empty(), "{second}");
}

#[test]
fn payloads_round_trip_and_reject_garbage() {
    let o = op(3, 2, 41);
    assert_eq!(parse_payload(&payload(o, 4, 3)), Some((o, 4, 3)));
    assert_eq!(parse_payload(b"r1:t2:c3:n4"), None);
    assert_eq!(parse_payload(b"r1:t2:c3:n4:i0:x"), None);
    assert_eq!(parse_payload(b"r01:t2:c3:n4:i0"), None);
    assert_eq!(parse_payload(&[0xFF, 0x00]), None);
}

// The buffered checker.

#[test]
fn buffered_checker_accepts_the_loss_of_the_newest_acknowledged_appends() {
    let (history, log) = good_history();
    // op(0,0,1) at position 4 was the newest: losing it is allowed in buffered mode…
    let (report, missing) = check_buffered(&history, &log[..3], &BTreeSet::new());
    assert!(report.is_valid(), "{report}");
    assert_eq!(missing, BTreeSet::from([op(0, 0, 1)]));
    // …and so is losing everything after position 2.
    let (report, missing) = check_buffered(&history, &log[..2], &BTreeSet::new());
    assert!(report.is_valid(), "{report}");
    assert_eq!(missing, BTreeSet::from([op(0, 1, 0), op(0, 0, 1)]));
    // But not in Fsync mode.
    assert!(!check(&history, &log[..3], &BTreeSet::new()).is_valid());
}

#[test]
fn buffered_checker_flags_a_lost_append_followed_by_a_surviving_one() {
    let (history, mut log) = good_history();
    // op(0,1,0) (position 3) lost, op(0,0,1) written after it survived.
    log.remove(2);
    renumber(&mut log);
    log[2].seq = 3;
    let (report, _) = check_buffered(&history, &log, &BTreeSet::new());
    assert!(!report.is_valid());
    assert!(
        report
            .lost
            .iter()
            .any(|l| l.contains("r0/t1/c0") && l.contains("r0/t0/c1")),
        "{report}"
    );

    // The same task: c0 lost, c1 survived.
    let (mut history, mut log) = good_history();
    history.acked.remove(&op(0, 0, 1));
    log.drain(..2);
    log[1].seq = 1;
    renumber(&mut log);
    let (report, _) = check_buffered(&history, &log, &BTreeSet::new());
    assert!(
        report
            .lost
            .iter()
            .any(|l| l.contains("r0/t0/c1 survived") && l.contains("r0/t0/c0")),
        "{report}"
    );
}

#[test]
fn buffered_checker_still_flags_torn_batches_and_flicker() {
    let (history, mut log) = good_history();
    log.truncate(1); // op(0,0,0) was a batch of 2
    let (report, _) = check_buffered(&history, &log, &BTreeSet::new());
    assert_eq!(report.torn.len(), 1, "{report}");

    let (history, log) = good_history();
    let (first, _) = check_buffered(&history, &log, &BTreeSet::new());
    assert!(first.is_valid(), "{first}");
    let (second, _) = check_buffered(&history, &log[..3], &first.present);
    assert_eq!(second.flicker.len(), 1, "{second}");
}

/// Reads back a recovered journal and checks what every round checks, whatever the
/// durability: `iter_all` yields exactly `head` events, `verify()` is intact up to `head`,
/// and each task's stream (`read_stream`, `stream_version`) agrees with the global log.
fn recovered_log(journal: &SledJournal, head: u64, context: &str) -> Vec<RecordedEvent> {
    let log: Vec<RecordedEvent> = journal
        .iter_all(1)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{context}: reading the log failed: {e}"));
    assert_eq!(
        log.len() as u64,
        head,
        "{context}: iter_all(1) yields {} events but head_position() is {head}",
        log.len()
    );
    let report = journal.verify().unwrap();
    assert!(
        report.is_intact(),
        "{context}: verify() found {:?}",
        report.first_bad
    );
    assert_eq!(report.records, head, "{context}: verify() record count");
    assert_eq!(report.head_position, head, "{context}: verify() head");
    for task in 0..TASKS {
        let stream = stream_of(task);
        let expected: Vec<&RecordedEvent> = log.iter().filter(|e| e.stream == stream).collect();
        let read = journal
            .read_stream(&stream, 1, usize::MAX)
            .unwrap_or_else(|e| panic!("{context}: read_stream({stream}) failed: {e}"));
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            expected,
            "{context}: read_stream({stream}) disagrees with iter_all"
        );
        assert_eq!(
            journal.stream_version(&stream).unwrap(),
            expected.len() as u64,
            "{context}: stream_version({stream})"
        );
    }
    log
}
