//! Replay checks every outward step, over the real sled journal: a handler changed between
//! two runs halts its agent with a non-determinism error (journaled, reported through
//! supervision) instead of diverging; an unchanged one replays cleanly; records in a
//! newer format are refused with an error naming both formats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka_actors::record::{HaltRecord, RecordKind};
use toka_actors::{Agent, AgentError, AgentId, Context, Error, Runtime, SpawnSpec, Topic};
use toka_store::{Durability, ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};

const T: Duration = Duration::from_secs(5);

/// What the `Relay` handler does for a message; changed between runs.
static BEHAVIOUR: AtomicU8 = AtomicU8::new(0);
/// Held by each test: they share [`BEHAVIOUR`].
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const SEND_TO_A: u8 = 0;
const SEND_TO_B: u8 = 1;
const SEND_OTHER_CONTENT: u8 = 2;
const SEND_NOTHING: u8 = 3;
const SEND_AND_PUBLISH: u8 = 4;
const SPAWN_INSTEAD: u8 = 5;
const MANY_SENDS: u8 = 6;
const MANY_SENDS_ONE_CHANGED: u8 = 7;

/// Forwards every number to a sink; how depends on [`BEHAVIOUR`].
struct Relay;

/// Counts what it gets.
struct Sink;

#[derive(Serialize, Deserialize)]
struct Num(i64);

impl Agent for Sink {
    const KIND: &'static str = "sink";
    type Args = ();
    type Msg = Num;
    type Reply = i64;
    type State = i64;

    fn init(&self, (): &()) -> Result<i64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        sum: &mut i64,
        Num(n): Num,
    ) -> Result<i64, AgentError> {
        *sum += n;
        Ok(*sum)
    }
}

impl Agent for Relay {
    const KIND: &'static str = "relay";
    type Args = ();
    type Msg = Num;
    type Reply = i64;
    type State = i64;

    fn init(&self, (): &()) -> Result<i64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        seen: &mut i64,
        Num(n): Num,
    ) -> Result<i64, AgentError> {
        *seen += 1;
        let a = ctx.agent::<Sink>(&id("a"))?;
        let b = ctx.agent::<Sink>(&id("b"))?;
        match BEHAVIOUR.load(Ordering::SeqCst) {
            SEND_TO_A => ctx.send(&a, Num(n)).await?,
            SEND_TO_B => ctx.send(&b, Num(n)).await?,
            SEND_OTHER_CONTENT => ctx.send(&a, Num(n + 1)).await?,
            SEND_NOTHING => {}
            SEND_AND_PUBLISH => {
                ctx.send(&a, Num(n)).await?;
                ctx.publish(&Topic::<i64>::new("nums"), &n).await?;
            }
            SPAWN_INSTEAD => {
                ctx.spawn::<Sink>(SpawnSpec::new(format!("s{n}"))?, ())
                    .await?;
            }
            // More steps than a steps record keeps in full (256).
            MANY_SENDS | MANY_SENDS_ONE_CHANGED => {
                let changed = BEHAVIOUR.load(Ordering::SeqCst) == MANY_SENDS_ONE_CHANGED;
                for k in 0..300 {
                    let value = i64::from(changed && k == 290);
                    ctx.send(&a, Num(value)).await?;
                }
            }
            _ => unreachable!(),
        }
        Ok(*seen)
    }
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn open(dir: &std::path::Path) -> Arc<dyn Journal> {
    let config = JournalConfig::default().durability(Durability::Fsync);
    Arc::new(SledJournal::open(dir, config).unwrap())
}

async fn start(dir: &std::path::Path) -> Result<Runtime, Error> {
    Runtime::builder(open(dir))
        .register(Relay)
        .register(Sink)
        .start()
        .await
}

/// First run: a relay, two sinks, three numbers relayed to `a` the original way.
async fn first_run(dir: &std::path::Path) {
    BEHAVIOUR.store(SEND_TO_A, Ordering::SeqCst);
    let rt = start(dir).await.unwrap();
    let a = rt
        .spawn::<Sink>(SpawnSpec::new("a").unwrap(), ())
        .await
        .unwrap();
    rt.spawn::<Sink>(SpawnSpec::new("b").unwrap(), ())
        .await
        .unwrap();
    let relay = rt
        .spawn::<Relay>(SpawnSpec::new("relay").unwrap(), ())
        .await
        .unwrap();
    for n in [1, 2, 3] {
        assert_eq!(relay.ask(Num(n), T).await.unwrap(), n);
    }
    // The sends reached `a` (an ask queues behind them).
    assert_eq!(a.ask(Num(0), T).await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}

/// The halt records of `relay`'s stream.
fn halts(rt: &Runtime) -> Vec<HaltRecord> {
    rt.journal()
        .iter_stream(id("relay").stream(), 1)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.kind == RecordKind::Halt.stored())
        .map(|e| postcard::from_bytes(&e.payload).unwrap())
        .collect()
}

async fn changed_handler_halts(behaviour: u8, recorded: &str, now: &str) {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    BEHAVIOUR.store(behaviour, Ordering::SeqCst);
    let rt = start(dir.path()).await.unwrap();
    let relay = rt.tree().into_iter().find(|i| i.id == id("relay")).unwrap();
    let kinds: Vec<String> = rt
        .journal()
        .iter_stream(id("relay").stream(), 1)
        .unwrap()
        .map(|e| e.unwrap().kind)
        .collect();
    assert!(
        !relay.running,
        "the relay halted instead of diverging: {kinds:?}"
    );
    assert!(rt.failure().is_none(), "the rest of the runtime goes on");
    let reason = relay.halted.as_deref().unwrap_or_default();
    assert!(reason.contains("not deterministic"), "{relay:?}");
    let halts = halts(&rt);
    assert_eq!(halts.len(), 1, "{halts:?}");
    let text = &halts[0].error;
    assert!(
        text.contains("agent relay is not deterministic")
            && text.contains("replaying message 1, step 1")
            && text.contains(recorded)
            && text.contains(now),
        "{text}"
    );
    // Nothing diverged: `b` got nothing, `a` still has exactly the first run's numbers.
    let a = rt.agent::<Sink>(&id("a")).unwrap();
    let b = rt.agent::<Sink>(&id("b")).unwrap();
    assert_eq!(b.ask(Num(0), T).await.unwrap(), 0);
    assert_eq!(a.ask(Num(0), T).await.unwrap(), 6);
    drop((a, b));
    rt.shutdown().await.unwrap();
    // Restarting with the original handler replays cleanly: the agent was only halted.
    BEHAVIOUR.store(SEND_TO_A, Ordering::SeqCst);
    let rt = start(dir.path()).await.unwrap();
    let relay = rt.agent::<Relay>(&id("relay")).unwrap();
    assert_eq!(relay.ask(Num(4), T).await.unwrap(), 4);
    drop(relay);
    rt.shutdown().await.unwrap();
}

// One test runs the cases in turn: they share the handler's behaviour switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_changed_between_runs_halts_its_agent() {
    let _one = ONE_AT_A_TIME.lock().await;
    changed_handler_halts(SEND_TO_B, "a send to \"a\"", "a send to \"b\"").await;
    changed_handler_halts(
        SEND_OTHER_CONTENT,
        "a send to \"a\" (content",
        "a send to \"a\" (content",
    )
    .await;
    changed_handler_halts(
        SEND_NOTHING,
        "a send to \"a\"",
        "nothing: the handling ended",
    )
    .await;
    changed_handler_halts(SPAWN_INSTEAD, "a send to \"a\"", "a spawn of \"s1\"").await;
    // One more step than recorded.
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    BEHAVIOUR.store(SEND_AND_PUBLISH, Ordering::SeqCst);
    let rt = start(dir.path()).await.unwrap();
    let text = &halts(&rt)[0].error;
    assert!(
        text.contains("step 2")
            && text.contains("no such step")
            && text.contains("a publish to topic \"nums\""),
        "{text}"
    );
    rt.shutdown().await.unwrap();
    // Unchanged: replays without a halt, many times.
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    for _ in 0..3 {
        let rt = start(dir.path()).await.unwrap();
        assert!(halts(&rt).is_empty());
        let relay = rt.agent::<Relay>(&id("relay")).unwrap();
        assert!(rt.tree().iter().all(|i| i.running));
        assert!(relay.ask(Num(1), T).await.is_ok());
        drop(relay);
        rt.shutdown().await.unwrap();
    }
    BEHAVIOUR.store(SEND_TO_A, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_a_newer_format_are_refused_naming_both_formats() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;
    {
        let journal = open(dir.path());
        journal
            .append(
                id("a").stream(),
                ExpectedVersion::Any,
                &[NewEvent::new("toka.msg@4", vec![0])],
            )
            .await
            .unwrap()
            .unwrap();
        journal.flush().await.unwrap();
    }
    let error = start(dir.path()).await.unwrap_err().to_string();
    assert!(
        error.contains("agent/a") && error.contains("format 4") && error.contains("formats 1 to 3"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_past_the_steps_kept_in_full_is_caught_by_the_digest() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    BEHAVIOUR.store(MANY_SENDS, Ordering::SeqCst);
    {
        let rt = start(dir.path()).await.unwrap();
        rt.spawn::<Sink>(SpawnSpec::new("a").unwrap(), ())
            .await
            .unwrap();
        rt.spawn::<Sink>(SpawnSpec::new("b").unwrap(), ())
            .await
            .unwrap();
        let relay = rt
            .spawn::<Relay>(SpawnSpec::new("relay").unwrap(), ())
            .await
            .unwrap();
        relay.ask(Num(1), T).await.unwrap();
        drop(relay);
        rt.shutdown().await.unwrap();
    }
    // Unchanged: replays cleanly.
    let rt = start(dir.path()).await.unwrap();
    assert!(halts(&rt).is_empty());
    rt.shutdown().await.unwrap();
    // Step 291 of 300 changed: not kept in full, caught by the digest of them all.
    BEHAVIOUR.store(MANY_SENDS_ONE_CHANGED, Ordering::SeqCst);
    let rt = start(dir.path()).await.unwrap();
    let halts = halts(&rt);
    assert_eq!(halts.len(), 1, "{halts:?}");
    assert!(
        halts[0].error.contains("step 257") && halts[0].error.contains("digest"),
        "{}",
        halts[0].error
    );
    rt.shutdown().await.unwrap();
    BEHAVIOUR.store(SEND_TO_A, Ordering::SeqCst);
}
