//! `JournalConfig::commit_linger`: under concurrency the commit thread holds a requested
//! flush briefly so that more appends share it (fewer flushes per append); a lone
//! appender, or one after a burst, is not held back. Run on a memory back-end that counts
//! its flushes and takes a fixed time for each, like a disk's `fsync`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{HookedFlush, fsync_config};
use toka_store::{EventJournal, ExpectedVersion, Journal, NewEvent};

/// A memory back-end whose flush takes `flush_time` and is counted.
#[derive(Clone)]
struct Counted {
    backend: HookedFlush,
    flushes: Arc<AtomicU64>,
}

impl Counted {
    fn new(flush_time: Duration) -> Self {
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&flushes);
        let backend = HookedFlush::new(Arc::new(move || {
            std::thread::sleep(flush_time);
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }));
        Counted { backend, flushes }
    }

    fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }
}

/// One durable append (Fsync: returns once flushed).
async fn append(journal: &dyn Journal, stream: &str) {
    journal
        .append(
            stream,
            ExpectedVersion::Any,
            &[NewEvent::new("t", b"x".to_vec())],
        )
        .await
        .unwrap()
        .unwrap();
}

const APPENDERS: u64 = 6;
const ROUNDS: u64 = 30;

/// Runs [`APPENDERS`] threads, each appending durably [`ROUNDS`] times and pausing
/// `i × 400 µs` after each acknowledgement (so they come back spread over 2 ms, longer
/// than a 1 ms flush); returns the flushes it took.
fn crowd(linger: Duration) -> u64 {
    let backend = Counted::new(Duration::from_millis(1));
    let config = fsync_config().commit_linger(linger);
    let journal = Arc::new(EventJournal::with_backend(backend.backend.clone(), config).unwrap());
    let before = backend.flushes();
    let threads: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let runtime = common::runtime();
                for _ in 0..ROUNDS {
                    runtime.block_on(append(&*journal, &format!("s{i}")));
                    std::thread::sleep(Duration::from_micros(400 * i));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let flushes = backend.flushes() - before;
    // The last handle: closing the journal joins its commit thread.
    drop(journal);
    flushes
}

#[test]
fn a_crowd_of_appenders_shares_fewer_flushes() {
    let appends = APPENDERS * ROUNDS;
    let at_once = crowd(Duration::ZERO);
    let lingering = crowd(Duration::from_millis(50));
    eprintln!("{appends} appends: {at_once} flushes without linger, {lingering} with it");
    // Once the group has formed, one flush per round: a few more while it forms.
    assert!(
        lingering <= ROUNDS + ROUNDS / 2,
        "{lingering} flushes for {ROUNDS} rounds of {APPENDERS} appenders with a linger"
    );
    assert!(
        lingering * 3 < at_once * 2,
        "lingering took {lingering} flushes, flushing at once {at_once}"
    );
}

#[test]
fn a_lone_appender_is_not_held_back() {
    const LINGER: Duration = Duration::from_millis(300);
    const SEQUENTIAL: u32 = 20;
    let backend = Counted::new(Duration::ZERO);
    let config = fsync_config().commit_linger(LINGER);
    let journal = Arc::new(EventJournal::with_backend(backend.backend, config).unwrap());
    let runtime = common::runtime();

    // Alone from the start: never held.
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        runtime.block_on(append(&*journal, "alone"));
    }
    let alone = started.elapsed();
    assert!(
        alone < LINGER,
        "{SEQUENTIAL} lone appends took {alone:?}: held back by the linger"
    );

    // After a burst: at most one flush waits in vain, then the journal forgets the crowd.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let journal = &journal;
            scope.spawn(move || {
                let runtime = common::runtime();
                for _ in 0..5 {
                    runtime.block_on(append(&**journal, &format!("burst{i}")));
                }
            });
        }
    });
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        runtime.block_on(append(&*journal, "after"));
    }
    let after = started.elapsed();
    assert!(
        after < LINGER * 2,
        "{SEQUENTIAL} lone appends after a burst took {after:?}: held back more than once"
    );
}

/// `Journal::flushes` counts the back-end's flushes: one per lone durable append, and a
/// crowd's appends share them.
#[test]
fn the_journal_counts_its_flushes() {
    const LONE: u64 = 10;
    const THREADS: u64 = 8;
    const EACH: u64 = 5;
    let backend = Counted::new(Duration::from_millis(1));
    let journal =
        Arc::new(EventJournal::with_backend(backend.backend.clone(), fsync_config()).unwrap());
    let runtime = common::runtime();
    let (backend_before, journal_before) = (backend.flushes(), journal.flushes());

    for _ in 0..LONE {
        runtime.block_on(append(&*journal, "alone"));
    }
    assert_eq!(journal.flushes() - journal_before, LONE);

    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let journal = &journal;
            scope.spawn(move || {
                let runtime = common::runtime();
                for _ in 0..EACH {
                    runtime.block_on(append(&**journal, &format!("crowd{i}")));
                }
            });
        }
    });
    let counted = journal.flushes() - journal_before;
    assert_eq!(counted, backend.flushes() - backend_before);
    assert!(
        counted < LONE + THREADS * EACH,
        "{counted} flushes for {} appends: the crowd shared none",
        LONE + THREADS * EACH
    );
}
