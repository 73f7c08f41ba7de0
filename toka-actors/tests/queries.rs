//! Queries (issue 11): read-only questions answered from an agent's state, never
//! journaled, and seeing every message acknowledged before them. Real sled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, AgentId, Context, Error, Queries, Runtime, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};

const WAIT: Duration = Duration::from_secs(10);

/// `Ask::Counted` queries answered (only the handler-query test makes them).
static COUNTED: AtomicU64 = AtomicU64::new(0);

/// A counter: messages add, queries read (or panic, or fail, on request).
struct Tally;

#[derive(Serialize, Deserialize)]
struct Add(u64);

#[derive(Serialize, Deserialize)]
enum Ask {
    Value,
    Counted,
    Panic,
    Fail,
}

impl Agent for Tally {
    const KIND: &'static str = "tally";
    type Args = ();
    type Msg = Add;
    type Reply = u64;
    type State = u64;

    fn init(&self, (): &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _cx: &mut Context<'_, Self>,
        value: &mut u64,
        Add(n): Add,
    ) -> Result<u64, AgentError> {
        *value += n;
        Ok(*value)
    }

    fn snapshot(&self, value: &u64) -> Option<Vec<u8>> {
        Some(value.to_le_bytes().to_vec())
    }

    fn restore(&self, (): &(), bytes: &[u8]) -> Result<u64, AgentError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| AgentError::msg("8 bytes"))?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl Queries for Tally {
    type Query = Ask;
    type Answer = u64;

    fn query(&self, value: &u64, ask: Ask) -> Result<u64, AgentError> {
        match ask {
            Ask::Value => Ok(*value),
            Ask::Counted => {
                COUNTED.fetch_add(1, Ordering::SeqCst);
                Ok(*value)
            }
            Ask::Panic => panic!("a query that panics"),
            Ask::Fail => Err(AgentError::msg("a query that fails")),
        }
    }
}

fn open(dir: &std::path::Path) -> Arc<dyn Journal> {
    let config = JournalConfig::default().durability(Durability::Fsync);
    Arc::new(SledJournal::open(dir, config).unwrap())
}

async fn start(journal: Arc<dyn Journal>) -> Runtime {
    Runtime::builder(journal)
        .register_with_queries(Tally)
        .start()
        .await
        .unwrap()
}

/// Waits until the journal's head stops moving (the writer's progress records settle).
async fn settled(journal: &dyn Journal) -> u64 {
    let mut head = journal.head_position();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = journal.head_position();
        if now == head {
            return head;
        }
        head = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_from_the_state_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path());
    let runtime = start(journal.clone()).await;
    let tally = runtime
        .spawn::<Tally>(SpawnSpec::new("t").unwrap(), ())
        .await
        .unwrap();
    for _ in 0..10 {
        tally.send(Add(3)).await.unwrap();
    }
    assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), 30);
    let head = settled(&*journal).await;
    let stream = journal.stream_version("agent/t").unwrap();
    let started = Instant::now();
    for _ in 0..1_000 {
        assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), 30);
    }
    let elapsed = started.elapsed();
    assert_eq!(journal.head_position(), head, "queries grew the journal");
    assert_eq!(journal.stream_version("agent/t").unwrap(), stream);
    eprintln!(
        "1,000 sequential queries in {elapsed:?} ({:.0}/s)",
        1000.0 / elapsed.as_secs_f64()
    );

    // A failing or panicking query answers with the error; the agent goes on.
    let failed = tally.query(Ask::Fail, WAIT).await.unwrap_err();
    assert!(matches!(failed, Error::Handler { .. }), "{failed:?}");
    let panicked = tally.query(Ask::Panic, WAIT).await.unwrap_err();
    assert!(
        panicked.to_string().contains("a query that panics"),
        "{panicked}"
    );
    assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), 30);

    // JSON queries; a kind registered without queries says so.
    let id = AgentId::new("t").unwrap();
    let answer = runtime
        .query_json(&id, serde_json::json!("Value"), WAIT)
        .await
        .unwrap();
    assert_eq!(answer, serde_json::json!(30));
    let bad = runtime
        .query_json(&id, serde_json::json!("Nope"), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::BadJson { .. }), "{bad:?}");
    let unknown = runtime
        .query_json(
            &AgentId::new("nobody").unwrap(),
            serde_json::json!("Value"),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(unknown, Error::UnknownAgent(_)), "{unknown:?}");
    runtime.shutdown().await.unwrap();
    drop((tally, journal));

    // After a restart, queries see the recovered state (and wait for recovery).
    let journal = open(dir.path());
    let runtime = Runtime::builder(journal.clone())
        .register(Tally)
        .start()
        .await
        .unwrap();
    let tally = runtime.agent::<Tally>(&id).unwrap();
    assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), 30);
    let plain = runtime
        .query_json(&id, serde_json::json!("Value"), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(plain, Error::NoQueries { .. }), "{plain:?}");
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sees_every_message_acknowledged_before_it() {
    const SENDERS: u64 = 8;
    const EACH: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let journal = open(dir.path());
    let runtime = start(journal).await;
    let tally = runtime
        .spawn::<Tally>(SpawnSpec::new("t").unwrap(), ())
        .await
        .unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (tally, acknowledged) = (tally.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                tally.send(Add(1)).await.unwrap();
                acknowledged.fetch_add(1, Ordering::SeqCst);
                // Every message acknowledged to anyone so far must be visible.
                let seen = acknowledged.load(Ordering::SeqCst);
                let value = tally.query(Ask::Value, WAIT).await.unwrap();
                assert!(
                    value >= seen,
                    "a query saw {value} after {seen} acknowledged"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), SENDERS * EACH);
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_agents_answer_queries_in_mailbox_order() {
    let journal = open(tempfile::tempdir().unwrap().path());
    let runtime = start(journal).await;
    let tally = runtime
        .spawn::<Tally>(SpawnSpec::new("mem").unwrap().transient(), ())
        .await
        .unwrap();
    for n in 1..=50 {
        tally.send(Add(1)).await.unwrap();
        assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), n);
    }
    runtime.shutdown().await.unwrap();
}

/// Read-your-writes for a transient agent under concurrent senders: a transient agent's
/// messages wait in its inbox, and a query must still see every message its sender sent
/// before it, however many other senders keep the inbox busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_agents_query_sees_its_senders_messages_under_concurrent_senders() {
    let journal = open(tempfile::tempdir().unwrap().path());
    let runtime = start(journal).await;
    let tally = runtime
        .spawn::<Tally>(SpawnSpec::new("busy").unwrap().transient(), ())
        .await
        .unwrap();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let tally = tally.clone();
            tokio::spawn(async move {
                for sent in 1..=500u64 {
                    tally.send(Add(1)).await.unwrap();
                    if sent % 10 == 0 {
                        let seen = tally.query(Ask::Value, WAIT).await.unwrap();
                        assert!(seen >= sent, "a query saw {seen} after {sent} own sends");
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(tally.query(Ask::Value, WAIT).await.unwrap(), 2_000);
    runtime.shutdown().await.unwrap();
}

/// Reads `tally` by query from its handler and keeps what it read.
struct Watcher;

impl Agent for Watcher {
    const KIND: &'static str = "watcher";
    type Args = ();
    type Msg = ();
    type Reply = Vec<u64>;
    type State = Vec<u64>;

    fn init(&self, (): &()) -> Result<Vec<u64>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        seen: &mut Vec<u64>,
        (): (),
    ) -> Result<Vec<u64>, AgentError> {
        let tally = cx.agent::<Tally>(&AgentId::new("watched").unwrap())?;
        let value = cx.query(&tally, Ask::Counted, WAIT).await?;
        seen.push(value);
        Ok(seen.clone())
    }
}

/// A query from a handler is an outward step of the asker: recorded, and replayed from the
/// record (the queried agent is not asked again, and its newer state does not leak in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_from_a_handler_is_recorded_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let builder = |journal| Runtime::builder(journal).register(Tally).register(Watcher);
    let journal = open(dir.path());
    let runtime = builder(journal.clone()).start().await.unwrap();
    let tally = runtime
        .spawn::<Tally>(SpawnSpec::new("watched").unwrap(), ())
        .await
        .unwrap();
    let watcher = runtime
        .spawn::<Watcher>(SpawnSpec::new("w").unwrap(), ())
        .await
        .unwrap();
    tally.send(Add(5)).await.unwrap();
    assert_eq!(watcher.ask((), WAIT).await.unwrap(), [5]);
    tally.send(Add(10)).await.unwrap();
    assert_eq!(watcher.ask((), WAIT).await.unwrap(), [5, 15]);
    tally.send(Add(100)).await.unwrap();
    runtime.shutdown().await.unwrap();
    drop((tally, watcher, journal));

    let journal = open(dir.path());
    let before = COUNTED.load(Ordering::SeqCst);
    let runtime = builder(journal).start().await.unwrap();
    let watcher = runtime
        .agent::<Watcher>(&AgentId::new("w").unwrap())
        .unwrap();
    // The replayed handlers got the recorded answers (5, 15), not today's 115.
    assert_eq!(watcher.ask((), WAIT).await.unwrap(), [5, 15, 115]);
    assert_eq!(
        COUNTED.load(Ordering::SeqCst) - before,
        1,
        "the replay queried the agent again"
    );
    runtime.shutdown().await.unwrap();
}
