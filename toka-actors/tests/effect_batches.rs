//! Batches of independent side effects (`Context::effects`): they run concurrently, each
//! outcome is recorded and reused, and after a crash each effect is settled on its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{T, memory_journal};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, Context, Effect, Error, OnDoubt, Runtime, SpawnSpec};
use tokio::sync::Barrier;

/// Runs batches of effects that count their runs by name.
struct Batcher {
    runs: Arc<DashMap<String, u32>>,
    /// Whether the first handling already failed (then the second succeeds).
    failed_once: Arc<AtomicBool>,
    started: Arc<AtomicU32>,
}

#[derive(Serialize, Deserialize)]
enum Op {
    /// Effects "x" and "y" meet at a barrier (so they only finish if run concurrently);
    /// "x" then finishes last. The first handling fails after the batch.
    MeetThenFail,
    /// "a" and "b" (retried on doubt) start and hang; "c" (never run twice) waits until
    /// both started, then panics: the handler crashes with all three in doubt.
    CrashInside,
}

impl Batcher {
    fn ran(&self, name: &str) -> u32 {
        self.runs.get(name).map_or(0, |n| *n)
    }
}

impl Agent for Batcher {
    const KIND: &'static str = "batcher";
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
        let first = !self.failed_once.swap(true, Ordering::SeqCst);
        let barrier = Arc::new(Barrier::new(2));
        let effect = |name: &'static str, on_doubt: OnDoubt| {
            let (runs, barrier, started) =
                (self.runs.clone(), barrier.clone(), self.started.clone());
            let crash = matches!(op, Op::CrashInside) && first;
            Effect::new(name, on_doubt, move || async move {
                *runs.entry(name.to_owned()).or_insert(0) += 1;
                match name {
                    "x" | "y" => {
                        barrier.wait().await;
                        if name == "x" {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                    "a" | "b" if crash => {
                        started.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    "c" if crash => {
                        while started.load(Ordering::SeqCst) < 2 {
                            tokio::task::yield_now().await;
                        }
                        panic!("crash inside effect c");
                    }
                    _ => {}
                }
                Ok::<String, AgentError>(name.to_owned())
            })
        };
        let batch = match op {
            Op::MeetThenFail => vec![effect("x", OnDoubt::Retry), effect("y", OnDoubt::Fail)],
            Op::CrashInside => vec![
                effect("a", OnDoubt::Retry),
                effect("b", OnDoubt::Retry),
                effect("c", OnDoubt::Fail),
            ],
        };
        let outcomes: Vec<String> = ctx
            .effects(batch)
            .await
            .into_iter()
            .map(|outcome| match outcome {
                Ok(name) => name,
                Err(Error::InDoubt { name, .. }) => format!("{name}: in doubt"),
                Err(other) => format!("error: {other}"),
            })
            .collect();
        if matches!(op, Op::MeetThenFail) && first {
            return Err(AgentError::msg("crash after the batch"));
        }
        Ok(outcomes.join(","))
    }
}

async fn runtime() -> (Runtime, Batcher) {
    let runs = Arc::new(DashMap::new());
    let agent = || Batcher {
        runs: runs.clone(),
        failed_once: Arc::new(AtomicBool::new(false)),
        started: Arc::new(AtomicU32::new(0)),
    };
    let rt = Runtime::builder(memory_journal())
        .register(agent())
        .start()
        .await
        .unwrap();
    (rt, agent())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_concurrently_answers_in_order_and_is_reused_after_a_crash() {
    let (rt, probe) = runtime().await;
    let b = rt
        .spawn::<Batcher>(SpawnSpec::new("b").unwrap(), ())
        .await
        .unwrap();
    b.send(Op::MeetThenFail).await.unwrap();
    // The first handling failed after the batch; the restarted agent handles the message
    // again and must get both recorded outcomes, in the order given, without running
    // either again (run one after the other, x and y would wait at the barrier forever).
    common::eventually(|| {
        rt.journal()
            .read_stream(toka_actors::AgentId::new("b").unwrap().stream(), 1, 100)
            .unwrap()
            .iter()
            .filter(|ev| ev.kind == toka_actors::record::RecordKind::Result.stored())
            .count()
            == 2
    })
    .await;
    let again = b.ask(Op::MeetThenFail, T).await.unwrap();
    assert_eq!(again, "x,y", "outcomes in the order given, x finished last");
    assert_eq!((probe.ran("x"), probe.ran("y")), (2, 2), "once per message");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_inside_a_batch_each_effect_follows_its_own_on_doubt() {
    let (rt, probe) = runtime().await;
    let b = rt
        .spawn::<Batcher>(SpawnSpec::new("c").unwrap(), ())
        .await
        .unwrap();
    assert!(
        b.ask(Op::CrashInside, T).await.is_err(),
        "the first handling crashed inside effect c"
    );
    // The restarted agent handles the message again: a and b are safe to repeat and run
    // again; c may have happened, so it is reported in doubt and never runs again.
    common::eventually(|| probe.ran("a") == 2 && probe.ran("b") == 2).await;
    let journal = rt.journal().clone();
    let outcomes = move || -> Vec<toka_actors::record::ReplyRecord> {
        journal
            .read_stream(toka_actors::AgentId::new("c").unwrap().stream(), 1, 100)
            .unwrap()
            .into_iter()
            .filter(|ev| ev.kind == toka_actors::record::RecordKind::Result.stored())
            .map(|ev| {
                toka_actors::record::decode_reply(&ev.kind, "agent/c", ev.seq, &ev.payload).unwrap()
            })
            .collect()
    };
    common::eventually(|| outcomes().len() == 3).await;
    let in_doubt: Vec<_> = outcomes()
        .into_iter()
        .filter(|r| r.outcome == toka_actors::record::Outcome::InDoubt)
        .map(|r| r.effect.n)
        .collect();
    assert_eq!(in_doubt, vec![3], "only c (the third effect) is in doubt");
    assert_eq!(probe.ran("c"), 1, "an effect in doubt never runs twice");
    rt.shutdown().await.unwrap();
}
