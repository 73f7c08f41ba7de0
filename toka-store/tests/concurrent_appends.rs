//! Property test: concurrent appenders against a real sled journal.
//!
//! A generated plan gives several tokio tasks each a list of batches (1..=8 events) for
//! their own streams (appended with the exact expected version, since the task is the
//! only writer) and for one shared stream (appended with `ExpectedVersion::Any`). After
//! running the plan concurrently, and again after a reopen, the log must be gap-free,
//! every batch contiguous, every stream gap-free, every task's events in its own order,
//! and the hash chain intact.
#![cfg(feature = "sled")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fsync_config, multi_thread_runtime};
use proptest::prelude::*;
use toka_store::{
    Appended, Durability, ExpectedVersion, Journal, JournalConfig, NewEvent, RecordedEvent,
    SledJournal,
};

const SHARED: &str = "shared";

#[derive(Clone, Copy, Debug)]
enum Target {
    /// One of the task's own streams.
    Own(u8),
    /// The stream every task appends to.
    Shared,
}

#[derive(Clone, Copy, Debug)]
struct Op {
    target: Target,
    size: u64,
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..3, 1u64..=8).prop_map(|(t, size)| Op {
        target: if t == 2 {
            Target::Shared
        } else {
            Target::Own(t)
        },
        size,
    })
}

/// Tasks × their batches, and whether the journal is `Buffered` instead of `Fsync`.
fn plan() -> impl Strategy<Value = (Vec<Vec<Op>>, bool)> {
    (
        prop::collection::vec(prop::collection::vec(op(), 1..=8), 2..=5),
        any::<bool>(),
    )
}

/// One acknowledged batch.
#[derive(Debug)]
struct Done {
    task: usize,
    op: usize,
    stream: String,
    size: u64,
    appended: Appended,
}

fn payload(task: usize, op: usize, k: u64) -> Vec<u8> {
    format!("{task}/{op}/{k}").into_bytes()
}

fn parse(payload: &[u8]) -> (usize, usize, u64) {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let mut parts = text.split('/').map(|p| p.parse::<u64>().expect("number"));
    let (t, o, k) = (parts.next(), parts.next(), parts.next());
    (t.unwrap() as usize, o.unwrap() as usize, k.unwrap())
}

async fn run_task(journal: SledJournal, task: usize, ops: Vec<Op>) -> Vec<Done> {
    let mut own_versions = [0u64; 2];
    let mut done = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let (stream, expected) = match op.target {
            Target::Own(k) => (
                format!("t{task}-{k}"),
                ExpectedVersion::Exact(own_versions[usize::from(k)]),
            ),
            Target::Shared => (SHARED.to_owned(), ExpectedVersion::Any),
        };
        let batch: Vec<NewEvent> = (0..op.size)
            .map(|k| NewEvent::new(format!("t{task}"), payload(task, index, k)))
            .collect();
        let appended = journal
            .append(&stream, expected, &batch)
            .await
            .expect("append failed")
            .expect("a task's own stream had a conflict");
        assert_eq!(
            appended.last_position - appended.first_position + 1,
            op.size
        );
        assert_eq!(appended.last_seq - appended.first_seq + 1, op.size);
        if let Target::Own(k) = op.target {
            let version = &mut own_versions[usize::from(k)];
            assert_eq!(appended.first_seq, *version + 1);
            *version = appended.last_seq;
        }
        done.push(Done {
            task,
            op: index,
            stream,
            size: op.size,
            appended,
        });
        tokio::task::yield_now().await;
    }
    done
}

fn check(journal: &SledJournal, plan: &[Vec<Op>], done: &[Done]) -> Vec<RecordedEvent> {
    let total: u64 = plan.iter().flatten().map(|op| op.size).sum();
    assert_eq!(done.len(), plan.iter().map(Vec::len).sum::<usize>());

    // The global log: positions 1..=N, gap-free, strictly increasing.
    let all = journal.read_all(1, usize::MAX).expect("read_all");
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    let iterated: Vec<RecordedEvent> = journal
        .iter_all(1)
        .collect::<Result<_, _>>()
        .expect("iter_all");
    assert_eq!(iterated, all);
    assert_eq!(journal.head_position(), total);

    // Every batch occupies contiguous positions and seqs, in its order, with its content.
    for d in done {
        let a = d.appended;
        assert_eq!(a.last_position - a.first_position + 1, d.size);
        for k in 0..d.size {
            let e = &all[(a.first_position + k - 1) as usize];
            assert_eq!(e.stream, d.stream, "batch {d:?}");
            assert_eq!(e.seq, a.first_seq + k, "batch {d:?}");
            assert_eq!(e.payload, payload(d.task, d.op, k), "batch {d:?}");
        }
    }

    // Every stream: seqs 1..=n without gaps, in position order; reads agree.
    let mut streams: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in &all {
        streams.entry(e.stream.as_str()).or_default().push(e);
    }
    let mut version_sum = 0;
    for (stream, events) in &streams {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
        let read = journal
            .read_stream(stream, 1, usize::MAX)
            .expect("read_stream");
        assert_eq!(read.iter().collect::<Vec<_>>(), *events, "{stream}");
        let version = journal.stream_version(stream).expect("stream_version");
        assert_eq!(version, events.len() as u64, "{stream}");
        version_sum += version;
    }
    assert_eq!(version_sum, total);

    // Each task's events appear in the order the task appended them.
    for (task, ops) in plan.iter().enumerate() {
        let order: Vec<(usize, u64)> = all
            .iter()
            .map(|e| parse(&e.payload))
            .filter(|(t, _, _)| *t == task)
            .map(|(_, op, k)| (op, k))
            .collect();
        let expected: Vec<(usize, u64)> = ops
            .iter()
            .enumerate()
            .flat_map(|(op, o)| (0..o.size).map(move |k| (op, k)))
            .collect();
        assert_eq!(order, expected, "task {task} out of order");
    }

    let report = journal.verify().expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.records, report.head_position), (total, total));
    all
}

fn run_plan(plan: &[Vec<Op>], buffered: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = if buffered {
        JournalConfig::default()
            .durability(Durability::Buffered)
            .flush_interval(Duration::from_millis(5))
    } else {
        fsync_config()
    };
    let runtime = multi_thread_runtime(2);
    runtime.block_on(async {
        let journal = SledJournal::open(dir.path(), config.clone()).expect("open");
        let tasks: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(task, ops)| tokio::spawn(run_task(journal.clone(), task, ops.clone())))
            .collect();
        let mut done = Vec::new();
        for task in tasks {
            done.extend(task.await.expect("task panicked"));
        }
        if buffered {
            journal.flush().await.expect("flush");
        }
        let before = check(&journal, plan, &done);
        drop(journal);
        let journal = SledJournal::open(dir.path(), config).expect("reopen");
        let after = check(&journal, plan, &done);
        assert_eq!(before, after, "log changed across reopen");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn concurrent_appends_keep_the_log_consistent((plan, buffered) in plan()) {
        run_plan(&plan, buffered);
    }
}
