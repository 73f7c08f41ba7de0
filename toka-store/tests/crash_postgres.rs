//! Crash test of the PostgreSQL journal in `Fsync` mode with real processes and real
//! `SIGKILL`s, in the style of `crash_fsync.rs` (`notes/testing.md` §1, §4).
//!
//! The parent test [`acknowledged_appends_survive_sigkill_postgres`] re-runs this binary as
//! a child (`crash_child_postgres`) with `TOKA_CRASH_PG_URL` set to the journal's URL (its
//! own schema). The child opens the journal and appends batches of 1–4 events forever from
//! several tokio tasks, printing `INV` before and `ACK` after every append. The parent
//! kills it at a random moment (sometimes while it is still connecting, migrating or
//! recovering), reopens the journal and checks the log against the history: every
//! acknowledged append is there, where its acknowledgement put it; nothing never invoked
//! appears; nothing twice; positions and per-stream sequences have no gaps; batches are
//! whole; and nothing once observed disappears later.
//!
//! Replay a run with `TOKA_SEED=<seed> cargo test -p toka-store --features postgres --test crash_postgres`.
#![cfg(all(unix, feature = "postgres"))]

mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use pg::TestSchema;
use toka_store::{Durability, JournalConfig};
use toka_store::{ExpectedVersion, Journal, NewEvent, PgJournal};
use toka_test_support::child::{child_fail, emit, self_command};
use toka_test_support::rng::{Rng, seed_from_env_or_time};

/// The journal URL; set only in the child.
const CHILD_URL_ENV: &str = "TOKA_CRASH_PG_URL";
const CHILD_ROUND_ENV: &str = "TOKA_CRASH_PG_ROUND";
const TASKS: u32 = 4;
const MAX_BATCH: u64 = 4;
const ROUNDS: u32 = 16;
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn fsync_config() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// One append: round, task (stream `t{task}`), the task's counter.
type OpId = (u32, u32, u64);

fn payload((round, task, counter): OpId, n: u64, index: u64) -> Vec<u8> {
    format!("r{round}:t{task}:c{counter}:n{n}:i{index}").into_bytes()
}

fn parse_payload(bytes: &[u8]) -> Option<(OpId, u64, u64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let fields: Vec<u64> = text
        .split(':')
        .map(|part| part.get(1..)?.parse().ok())
        .collect::<Option<_>>()?;
    let [round, task, counter, n, index] = fields[..] else {
        return None;
    };
    let op = (
        u32::try_from(round).ok()?,
        u32::try_from(task).ok()?,
        counter,
    );
    (payload(op, n, index) == bytes).then_some((op, n, index))
}

async fn child_task(journal: PgJournal, round: u32, task: u32) {
    let stream = format!("t{task}");
    let mut rng = Rng::splitmix((u64::from(round) << 32) ^ u64::from(task));
    let mut version = journal
        .stream_version(&stream)
        .unwrap_or_else(|e| child_fail(&format!("stream_version: {e}")));
    for counter in 0u64.. {
        let op = (round, task, counter);
        let n = rng.range(1, MAX_BATCH);
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
                    "ACK {round} {task} {counter} {} {} {}",
                    a.first_position, a.first_seq, a.last_seq
                ));
                version = a.last_seq;
            }
            Ok(Err(conflict)) => child_fail(&format!("unexpected conflict: {conflict}")),
            Err(e) => child_fail(&format!("append failed: {e}")),
        }
    }
}

/// The child half; a no-op unless `TOKA_CRASH_PG_URL` is set.
#[test]
fn crash_child_postgres() {
    let Ok(url) = std::env::var(CHILD_URL_ENV) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        child_fail("was never killed");
    });
    multi_thread_runtime(2).block_on(async move {
        emit("START");
        let journal = PgJournal::connect(&url, fsync_config())
            .unwrap_or_else(|e| child_fail(&format!("open: {e}")));
        emit(&format!("OPEN {}", journal.head_position()));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(child_task(journal.clone(), round, task)))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// What a child printed: invocations (op → batch size) and acks (op → first position,
/// first and last seq).
#[derive(Debug, Default)]
struct ChildOutput {
    opened: bool,
    invoked: BTreeMap<OpId, u64>,
    acked: BTreeMap<OpId, (u64, u64, u64)>,
    errors: Vec<String>,
}

fn run_child(url: &str, round: u32, after_open: bool, delay: Duration) -> ChildOutput {
    let mut child = self_command("crash_child_postgres")
        .env(CHILD_URL_ENV, url)
        .env(CHILD_ROUND_ENV, round.to_string())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = ChildOutput::default();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(skip) = words
                .iter()
                .position(|w| ["START", "OPEN", "INV", "ACK", "ERR"].contains(w))
            else {
                continue;
            };
            let words = &words[skip..];
            let num = |i: usize| -> u64 { words[i].parse().unwrap() };
            match words[0] {
                "START" => {}
                "OPEN" => {
                    out.opened = true;
                    let _ = opened_tx.send(());
                }
                "INV" => {
                    out.invoked
                        .insert((num(1) as u32, num(2) as u32, num(3)), num(4));
                }
                "ACK" => {
                    out.acked.insert(
                        (num(1) as u32, num(2) as u32, num(3)),
                        (num(4), num(5), num(6)),
                    );
                }
                _ => out.errors.push(line.clone()),
            }
        }
        out
    });
    if after_open {
        let _ = opened_rx.recv_timeout(Duration::from_secs(20));
    }
    std::thread::sleep(delay);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(
        out.errors.is_empty(),
        "round {round}: child errors: {:?}",
        out.errors
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: child ended by itself: {status}"
    );
    out
}

/// Checks the recovered log against the history; returns the ops present.
fn check(
    journal: &PgJournal,
    invoked: &BTreeMap<OpId, u64>,
    acked: &BTreeMap<OpId, (u64, u64, u64)>,
    before: &BTreeSet<OpId>,
) -> Result<BTreeSet<OpId>, String> {
    let head = journal.head_position();
    let mut present = BTreeMap::<OpId, (u64, u64)>::new(); // op → (first position, first seq)
    let mut stream_seq = BTreeMap::<String, u64>::new();
    let mut last_op_of_task = BTreeMap::<u32, OpId>::new();
    let mut expected_position = 1;
    let mut open: Option<(OpId, u64, u64)> = None; // op, n, next index
    for event in journal.iter_all(1) {
        let event = event.map_err(|e| format!("reading the log: {e}"))?;
        if event.position != expected_position {
            return Err(format!(
                "position gap: expected {expected_position}, found {}",
                event.position
            ));
        }
        expected_position += 1;
        let seq = stream_seq.entry(event.stream.clone()).or_insert(0);
        *seq += 1;
        if event.seq != *seq {
            return Err(format!(
                "stream {} seq gap at position {}",
                event.stream, event.position
            ));
        }
        let Some((op, n, index)) = parse_payload(&event.payload) else {
            return Err(format!("unknown payload at position {}", event.position));
        };
        if event.stream != format!("t{}", op.1) {
            return Err(format!("op {op:?} in the wrong stream {}", event.stream));
        }
        match open {
            Some((current, n_open, next)) if current == op && next == index && n_open == n => {
                open = (index + 1 < n).then_some((op, n, index + 1));
            }
            Some((current, ..)) => {
                return Err(format!(
                    "torn batch {current:?}: {op:?} at {}",
                    event.position
                ));
            }
            None => {
                if index != 0 {
                    return Err(format!("batch {op:?} starts at index {index}"));
                }
                if present.insert(op, (event.position, event.seq)).is_some() {
                    return Err(format!("duplicate op {op:?}"));
                }
                if invoked.get(&op) != Some(&n) {
                    return Err(format!("phantom op {op:?} (never invoked with {n} events)"));
                }
                if let Some(last) = last_op_of_task.insert(op.1, op) {
                    if last > op {
                        return Err(format!("task {} reordered: {last:?} before {op:?}", op.1));
                    }
                }
                open = (n > 1).then_some((op, n, 1));
            }
        }
    }
    if let Some((op, ..)) = open {
        return Err(format!("torn last batch {op:?}"));
    }
    if expected_position != head + 1 {
        return Err(format!(
            "log ends at {} but head is {head}",
            expected_position - 1
        ));
    }
    for (op, &(position, first_seq, last_seq)) in acked {
        match present.get(op) {
            None => return Err(format!("acknowledged op {op:?} lost")),
            Some(&(p, s)) if (p, s) != (position, first_seq) => {
                return Err(format!(
                    "op {op:?} acknowledged at position {position} seq {first_seq}..={last_seq}, found at {p} seq {s}"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(op) = before.iter().find(|op| !present.contains_key(op)) {
        return Err(format!("op {op:?} flickered: present before, gone now"));
    }
    Ok(present.into_keys().collect())
}

#[test]
fn acknowledged_appends_survive_sigkill_postgres() {
    let Some(schema) = TestSchema::new("crash") else {
        return;
    };
    let url = schema.journal_url();
    let seed = seed_from_env_or_time();
    println!("crash_postgres seed: TOKA_SEED={seed}");
    let mut rng = Rng::splitmix(seed);
    let (mut invoked, mut acked) = (BTreeMap::new(), BTreeMap::new());
    let mut present = BTreeSet::new();
    let mut total_acked = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        // One kill in four lands while the child connects, migrates or recovers.
        let early = rng.below(4) == 0;
        let delay = if early {
            Duration::from_millis(rng.range(0, 120))
        } else {
            Duration::from_millis(rng.range(20, 400))
        };
        let out = run_child(&url, round, !early, delay);
        assert!(
            early || out.opened,
            "round {round}: the child never opened the journal"
        );
        total_acked += out.acked.len();
        invoked.extend(out.invoked);
        acked.extend(out.acked);
        let journal = PgJournal::connect(&url, fsync_config())
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        present = check(&journal, &invoked, &acked, &present)
            .unwrap_or_else(|e| panic!("round {round} (TOKA_SEED={seed}): {e}"));
        assert!(
            journal.verify().unwrap().is_intact(),
            "round {round}: chain broken"
        );
    }
    println!(
        "crash_postgres: {ROUNDS} kills, {total_acked} acknowledged appends, {} ops present, {:?}",
        present.len(),
        started.elapsed()
    );
    assert!(total_acked > 0, "no child ever acknowledged an append");
}

#[test]
fn checker_flags_a_lost_ack_and_a_phantom() {
    // The checker must be able to fail: an empty journal with an acknowledged op.
    let Some(schema) = TestSchema::new("crashchk") else {
        return;
    };
    let journal = PgJournal::connect(&schema.journal_url(), fsync_config()).unwrap();
    let op = (0, 0, 0);
    let invoked = BTreeMap::from([(op, 1)]);
    let acked = BTreeMap::from([(op, (1, 1, 1))]);
    let lost = check(&journal, &invoked, &acked, &BTreeSet::new()).unwrap_err();
    assert!(lost.contains("lost"), "{lost}");
    let flicker = check(&journal, &invoked, &BTreeMap::new(), &BTreeSet::from([op])).unwrap_err();
    assert!(flicker.contains("flickered"), "{flicker}");
    let runtime = multi_thread_runtime(1);
    runtime.block_on(async {
        journal
            .append(
                "t0",
                ExpectedVersion::Any,
                &[NewEvent::new("x", payload((0, 0, 7), 1, 0))],
            )
            .await
            .unwrap()
            .unwrap();
    });
    let phantom = check(&journal, &invoked, &BTreeMap::new(), &BTreeSet::new()).unwrap_err();
    assert!(phantom.contains("phantom"), "{phantom}");
}
