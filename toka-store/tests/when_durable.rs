//! `Journal::when_durable`: a callback instead of a waiting task, run by the commit
//! thread right after the flush that covers its position, in registration order; at once
//! when there is nothing to wait for; with the error when the journal can no longer make
//! the write durable. Run on a memory back-end whose flushes the test holds back or
//! breaks.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{HookedFlush, fsync_config};
use toka_store::{
    Durability, Error, EventJournal, ExpectedVersion, Journal, JournalConfig, NewEvent,
};

/// What the gated back-end's `flush` does when called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Returns at once.
    Open,
    /// Blocks until the gate changes.
    Closed,
    /// Fails.
    Broken,
}

/// A memory back-end whose flushes the test holds back or breaks.
#[derive(Clone)]
struct Gated {
    backend: HookedFlush,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

impl Gated {
    fn new(gate: Gate) -> Self {
        let gate = Arc::new((Mutex::new(gate), Condvar::new()));
        let shared = Arc::clone(&gate);
        let backend = HookedFlush::new(Arc::new(move || {
            let (gate, changed) = &*shared;
            let mut gate = gate.lock().unwrap();
            while *gate == Gate::Closed {
                gate = changed.wait(gate).unwrap();
            }
            match *gate {
                Gate::Broken => Err(Error::Poisoned("the test broke the disk".into())),
                _ => Ok(()),
            }
        }));
        Gated { backend, gate }
    }

    fn set(&self, gate: Gate) {
        *self.gate.0.lock().unwrap() = gate;
        self.gate.1.notify_all();
    }
}

/// Appends one event to `stream` without waiting; its log position.
fn append(journal: &dyn Journal, stream: &str) -> u64 {
    block_on(journal.append_unsynced(
        stream,
        ExpectedVersion::Any,
        &[NewEvent::new("t", b"x".to_vec())],
    ))
    .unwrap()
    .unwrap()
    .last_position
}

/// Runs a future to completion on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    common::runtime().block_on(future)
}

/// Registers a callback that sends its result (and the acknowledged head it saw) on `tx`.
fn register(
    journal: &Arc<EventJournal<HookedFlush>>,
    position: u64,
    tx: &mpsc::Sender<(u64, Result<(), String>, u64)>,
) {
    let tx = tx.clone();
    let seen = Arc::clone(journal);
    let unused = journal.when_durable(
        position,
        Box::new(move |result| {
            let _ = tx.send((
                position,
                result.map_err(|e| e.to_string()),
                seen.acknowledged_head(),
            ));
        }),
    );
    assert!(unused.is_none(), "the event journal calls back itself");
}

#[test]
fn callbacks_run_after_the_flush_that_covers_them_in_order() {
    let backend = Gated::new(Gate::Open);
    let journal =
        Arc::new(EventJournal::with_backend(backend.backend.clone(), fsync_config()).unwrap());
    backend.set(Gate::Closed);
    let (tx, rx) = mpsc::channel();
    let mut positions = Vec::new();
    for i in 0..20 {
        let position = append(&*journal, &format!("s{}", i % 3));
        register(&journal, position, &tx);
        positions.push(position);
    }
    // The flush is held back: nothing may be called yet.
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a callback ran before its write was flushed"
    );
    backend.set(Gate::Open);
    let mut called = Vec::new();
    for _ in &positions {
        let (position, result, acknowledged) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(result, Ok(()));
        assert!(
            acknowledged >= position,
            "called at acknowledged head {acknowledged}, before position {position} was durable"
        );
        called.push(position);
    }
    assert_eq!(called, positions, "callbacks run in registration order");
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "each runs once"
    );

    // Already durable: called at once, on the caller's thread.
    let (now_tx, now_rx) = mpsc::channel();
    register(&journal, positions[5], &now_tx);
    assert!(now_rx.try_recv().unwrap().1.is_ok());
}

#[test]
fn a_failed_flush_fails_every_waiting_callback_and_every_later_one() {
    let backend = Gated::new(Gate::Open);
    let journal =
        Arc::new(EventJournal::with_backend(backend.backend.clone(), fsync_config()).unwrap());
    backend.set(Gate::Closed);
    let (tx, rx) = mpsc::channel();
    for _ in 0..5 {
        let position = append(&*journal, "s");
        register(&journal, position, &tx);
    }
    backend.set(Gate::Broken);
    for _ in 0..5 {
        let (_, result, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let error = result.unwrap_err();
        assert!(error.contains("the test broke the disk"), "{error}");
    }
    // Poisoned now: a later callback gets the failure at once.
    let (later_tx, later_rx) = mpsc::channel();
    register(&journal, 1, &later_tx);
    register(&journal, u64::MAX, &later_tx);
    for _ in 0..2 {
        let (_, result, _) = later_rx.try_recv().unwrap();
        assert!(result.is_err(), "a poisoned journal promised durability");
    }
}

#[test]
fn buffered_journals_call_back_at_once() {
    let backend = Gated::new(Gate::Open);
    let config = JournalConfig::default().durability(Durability::Buffered);
    let journal = Arc::new(EventJournal::with_backend(backend.backend.clone(), config).unwrap());
    backend.set(Gate::Closed);
    let (tx, rx) = mpsc::channel();
    let position = append(&*journal, "s");
    register(&journal, position, &tx);
    assert_eq!(rx.try_recv().unwrap().1, Ok(()));
    backend.set(Gate::Open);
}

/// Whoever learns of a failed flush (a durable append's error) finds the journal refusing
/// writes at once: the failure is recorded before anyone is woken with it.
#[test]
fn an_append_that_saw_the_failure_finds_the_journal_poisoned() {
    for _ in 0..20 {
        let backend = Gated::new(Gate::Open);
        let journal =
            Arc::new(EventJournal::with_backend(backend.backend.clone(), fsync_config()).unwrap());
        backend.set(Gate::Closed);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let appender = Arc::clone(&journal);
        let append = runtime.spawn(async move {
            let result = appender
                .append(
                    "s",
                    ExpectedVersion::Any,
                    &[NewEvent::new("t", b"x".to_vec())],
                )
                .await;
            (result.is_err(), appender.write_failure().is_some())
        });
        backend.set(Gate::Broken);
        let (failed, poisoned) = runtime.block_on(append).unwrap();
        assert!(failed, "an append covered by a failed flush succeeded");
        assert!(
            poisoned,
            "the append saw the failure, write_failure did not"
        );
    }
}
