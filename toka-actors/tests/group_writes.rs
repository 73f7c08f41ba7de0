//! The journal writer groups concurrent appends into one write. An append the journal
//! refuses on its own merits (a record over `max_record_bytes`) must fail only its own
//! caller, with its own error, while the rest of the group commits (issue 11, item 3).
//! Real sled, real concurrency: many tasks send at once, so groups mix good and bad
//! appends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, Context, Error, Runtime, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};

/// Counts the bytes of the messages it handled.
struct Sink(Arc<AtomicU64>);

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

impl Agent for Sink {
    const KIND: &'static str = "sink";
    type Args = ();
    type Msg = Blob;
    type Reply = ();
    type State = ();

    fn init(&self, (): &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        _cx: &mut Context<'_, Self>,
        (): &mut (),
        Blob(bytes): Blob,
    ) -> Result<(), AgentError> {
        self.0.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_append_fails_only_its_own_caller() {
    const LIMIT: usize = 4096;
    const SENDERS: usize = 64;
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig::default()
        .durability(Durability::Fsync)
        .max_record_bytes(LIMIT);
    let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(dir.path(), config).unwrap());
    let handled = Arc::new(AtomicU64::new(0));
    let runtime = Runtime::builder(journal.clone())
        .register(Sink(handled.clone()))
        .start()
        .await
        .unwrap();
    let sink = runtime
        .spawn::<Sink>(SpawnSpec::new("sink").unwrap(), ())
        .await
        .unwrap();

    // Every 8th sender sends a record twice the limit; the others small ones, all at once.
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..ROUNDS {
                let big = sender % 8 == 0;
                let size = if big { 2 * LIMIT } else { 16 };
                outcomes.push((big, sink.send(Blob(vec![7; size])).await));
            }
            outcomes
        }));
    }
    let (mut good, mut refused) = (0u64, 0u64);
    for task in tasks {
        for (big, outcome) in task.await.unwrap() {
            match (big, outcome) {
                (false, Ok(())) => good += 1,
                (true, Err(Error::Journal(toka_store::Error::RecordTooLarge { max, .. }))) => {
                    assert_eq!(max, LIMIT);
                    refused += 1;
                }
                (big, outcome) => panic!("big = {big}: unexpected outcome {outcome:?}"),
            }
        }
    }
    assert_eq!(refused, (SENDERS / 8 * ROUNDS) as u64);
    assert_eq!(good, ((SENDERS - SENDERS / 8) * ROUNDS) as u64);
    // Every good message was journaled and handled; no refused one was.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handled.load(Ordering::Relaxed) < good * 16 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message was handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handled.load(Ordering::Relaxed), good * 16);
    let stream: Vec<_> = journal
        .iter_stream("agent/sink", 1)
        .unwrap()
        .map(Result::unwrap)
        .filter(|e| e.kind == toka_actors::record::RecordKind::Msg.stored())
        .collect();
    assert_eq!(stream.len() as u64, good);
    runtime.shutdown().await.unwrap();
}
