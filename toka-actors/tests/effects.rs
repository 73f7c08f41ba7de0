//! Journaled side effects (`Context::effect`): recorded outcomes are returned instead of
//! running again, and effects in doubt are retried or refused as asked.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{T, id, memory_journal};
use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, Context, Error, OnDoubt, Runtime, SpawnSpec};

/// Runs an effect that counts its runs, then fails the handler the first `crash_after`
/// times (after the effect completed), or panics inside the effect.
struct Effector {
    runs: Arc<AtomicU32>,
    handler_failures: Arc<AtomicU32>,
}

#[derive(Serialize, Deserialize)]
enum Op {
    /// Effect succeeds, then the handler fails once: the re-run must reuse the outcome.
    ThenFail,
    /// The effect itself panics once (intent journaled, no outcome): in doubt.
    PanicInside(bool),
    /// The first attempt starts effect "a" and crashes inside it; the re-run (a changed,
    /// non-deterministic handler) does effect "b" at the same point.
    Drift,
}

impl Agent for Effector {
    const KIND: &'static str = "effector";
    type Args = ();
    type Msg = Op;
    type Reply = String;
    type State = ();

    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        _: &mut (),
        op: Op,
    ) -> Result<String, AgentError> {
        let runs = self.runs.clone();
        match op {
            Op::ThenFail => {
                let n: u32 = ctx
                    .effect("count", OnDoubt::Fail, || async move {
                        Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await?;
                if self.handler_failures.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(AgentError::msg("crash after the effect"));
                }
                Ok(format!("run {n}"))
            }
            Op::PanicInside(retry) => {
                let on_doubt = if retry { OnDoubt::Retry } else { OnDoubt::Fail };
                let outcome: Result<u32, Error> = ctx
                    .effect("flaky", on_doubt, || async move {
                        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                            panic!("crash inside the effect");
                        }
                        Ok(7)
                    })
                    .await;
                Ok(match outcome {
                    Ok(v) => format!("ok {v}"),
                    Err(Error::InDoubt { .. }) => "in doubt".into(),
                    Err(e) => format!("error {e}"),
                })
            }
            Op::Drift => {
                let attempt = self.handler_failures.fetch_add(1, Ordering::SeqCst);
                let name = if attempt == 0 { "a" } else { "b" };
                let outcome: Result<u32, Error> = ctx
                    .effect(name, OnDoubt::Retry, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        if attempt == 0 {
                            panic!("crash inside effect a");
                        }
                        Ok(7)
                    })
                    .await;
                Ok(match outcome {
                    Ok(v) => format!("ok {v}"),
                    Err(e) => format!("error {e}"),
                })
            }
        }
    }
}

async fn runtime() -> (Runtime, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    let rt = Runtime::builder(memory_journal())
        .register(Effector {
            runs: runs.clone(),
            handler_failures: Arc::new(AtomicU32::new(0)),
        })
        .start()
        .await
        .unwrap();
    (rt, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_handler_gets_the_recorded_outcome() {
    let (rt, runs) = runtime().await;
    let e = rt
        .spawn::<Effector>(SpawnSpec::new("e").unwrap(), ())
        .await
        .unwrap();
    e.send(Op::ThenFail).await.unwrap();
    // The handler failed once after the effect; the restarted agent re-ran the message.
    let journal = rt.journal().clone();
    common::eventually(|| {
        journal
            .read_stream(id("e").stream(), 1, 100)
            .unwrap()
            .iter()
            .filter(|ev| ev.kind == "toka.result@3")
            .count()
            == 1
    })
    .await;
    assert_eq!(e.ask(Op::ThenFail, T).await.unwrap(), "run 2");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one run per message, none repeated"
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_in_doubt_is_refused_or_retried() {
    let (rt, runs) = runtime().await;
    let e = rt
        .spawn::<Effector>(SpawnSpec::new("e").unwrap(), ())
        .await
        .unwrap();
    assert_eq!(
        e.ask(Op::PanicInside(false), T).await.ok(),
        None,
        "the first attempt crashed"
    );
    let dead = rt.dead_letters(&id("e")).unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    // The re-run found the intent without an outcome: refused, and recorded as such.
    let journal = rt.journal().clone();
    let outcomes = move || -> Vec<toka_actors::record::ReplyRecord> {
        journal
            .read_stream(id("e").stream(), 1, 100)
            .unwrap()
            .into_iter()
            .filter(|ev| ev.kind == toka_actors::record::RecordKind::Result.stored())
            .map(|ev| {
                toka_actors::record::decode_reply(&ev.kind, "agent/e", ev.seq, &ev.payload).unwrap()
            })
            .collect()
    };
    common::eventually(|| !outcomes().is_empty()).await;
    let recorded = outcomes();
    assert_eq!(recorded.len(), 1);
    assert!(
        recorded[0].outcome == toka_actors::record::Outcome::InDoubt,
        "{recorded:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "an external effect never runs twice"
    );

    let (rt2, runs2) = runtime().await;
    let r = rt2
        .spawn::<Effector>(SpawnSpec::new("r").unwrap(), ())
        .await
        .unwrap();
    let _ = r.ask(Op::PanicInside(true), T).await;
    common::eventually(|| runs2.load(Ordering::SeqCst) == 2).await;
    rt.shutdown().await.unwrap();
    rt2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_doing_another_effect_where_one_was_recorded_is_refused() {
    let (rt, runs) = runtime().await;
    let e = rt
        .spawn::<Effector>(SpawnSpec::new("d").unwrap(), ())
        .await
        .unwrap();
    assert!(
        e.ask(Op::Drift, T).await.is_err(),
        "the first attempt crashed"
    );
    let e2 = rt.agent::<Effector>(&id("d")).unwrap();
    let mut reply = String::new();
    for _ in 0..100 {
        if let Ok(r) = e2.ask(Op::Drift, T).await {
            reply = r;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(reply, "ok 7", "the second message runs its effect");
    // The re-run of the first message met the intent of "a" where it now does "b": it
    // got an error instead of running "b" as if it were the recorded effect. So "a" ran
    // once and "b" once (for the second message) — not twice.
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    rt.shutdown().await.unwrap();
}

/// Makes `RetryUnsynced` effects (as model calls are): each handling runs three.
struct Unsynced {
    runs: Arc<AtomicU32>,
}

impl Agent for Unsynced {
    const KIND: &'static str = "unsynced";
    type Args = ();
    type Msg = u32;
    type Reply = u32;
    type State = u32;

    fn init(&self, _: &()) -> Result<u32, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        total: &mut u32,
        add: u32,
    ) -> Result<u32, AgentError> {
        for _ in 0..3 {
            let runs = self.runs.clone();
            let n: u32 = ctx
                .effect("ask", OnDoubt::RetryUnsynced, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(add)
                })
                .await?;
            *total += n;
        }
        Ok(*total)
    }
}

/// Unsynced effects are not waited for one by one, but the reply waits for all of them:
/// when an ask returns, the journal's durable head covers every record of its handling;
/// after a restart, replay returns them and the effects do not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_effects_are_durable_by_the_reply_and_replayed_once() {
    use toka_store::{Durability, Journal, JournalConfig, SledJournal};
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let open = || -> Arc<dyn Journal> {
        // A long flush interval: nothing becomes durable behind the handler's back.
        let config = JournalConfig::default()
            .durability(Durability::Fsync)
            .flush_interval(std::time::Duration::from_secs(3600));
        Arc::new(SledJournal::open(dir.path(), config).unwrap())
    };
    let journal = open();
    let rt = Runtime::builder(journal.clone())
        .register(Unsynced { runs: runs.clone() })
        .start()
        .await
        .unwrap();
    let agent = rt
        .spawn::<Unsynced>(SpawnSpec::new("u").unwrap(), ())
        .await
        .unwrap();
    for (i, add) in [1u32, 10, 100].into_iter().enumerate() {
        let total = agent.ask(add, T).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3 * (i as u32 + 1));
        // The effects' intents and outcomes (the steps record, for replay checks only,
        // is queued behind the reply).
        let stream = journal
            .read_stream(id("u").stream(), 1, usize::MAX)
            .unwrap();
        let effects: Vec<_> = stream
            .iter()
            .filter(|e| e.kind.starts_with("toka.intent") || e.kind.starts_with("toka.result"))
            .collect();
        assert_eq!(
            effects.len(),
            6 * (i + 1),
            "{:?}",
            stream.iter().map(|e| &e.kind).collect::<Vec<_>>()
        );
        let last = effects.last().unwrap().position;
        assert!(
            journal.acknowledged_head() >= last,
            "ask {i} returned {total} before its records were durable: durable head {} < {last}",
            journal.acknowledged_head()
        );
    }
    drop(agent);
    rt.shutdown().await.unwrap();
    drop(journal);

    let rt = Runtime::builder(open())
        .register(Unsynced { runs: runs.clone() })
        .start()
        .await
        .unwrap();
    let agent = rt.agent::<Unsynced>(&id("u")).unwrap();
    assert_eq!(agent.ask(0, T).await.unwrap(), 333);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        12,
        "replay ran no effect again"
    );
    rt.shutdown().await.unwrap();
}
