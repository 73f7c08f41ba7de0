//! OTP supervision through the public API: strategies, restart intensity and escalation,
//! backoff, poison messages.

mod common;

use std::time::Duration;

use common::*;
use toka_actors::{Backoff, Intensity, SpawnSpec, Strategy, SupervisorSpec};

/// Spawns supervisor `sup` (with `spec`) and children a, b, c under it.
async fn family(rt: &toka_actors::Runtime, spec: SupervisorSpec) {
    rt.spawn::<Counter>(SpawnSpec::new("sup").unwrap().supervise(spec), "sup".into())
        .await
        .unwrap();
    for child in ["a", "b", "c"] {
        rt.spawn_under::<Counter>(
            Some(&id("sup")),
            SpawnSpec::new(child).unwrap(),
            child.into(),
        )
        .await
        .unwrap();
    }
}

/// Crashes `b` once and returns which of a, b, c started again.
async fn restarted_after_b_fails(strategy: Strategy) -> Vec<String> {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    family(&rt, SupervisorSpec::new(strategy)).await;
    let c = rt.agent::<Counter>(&id("c")).unwrap();
    c.ask(Cmd::Add(1), T).await.unwrap();
    log.take();
    let b = rt.agent::<Counter>(&id("b")).unwrap();
    b.send(Cmd::Panic).await.unwrap();
    // After the restart, b's poison message is retried; wait until b answers again.
    b.send(Cmd::Add(1)).await.unwrap();
    eventually(|| log.count("handled:b") >= 1).await;
    // State survives a restart because it is recovered from the journal.
    assert_eq!(c.ask(Cmd::Get, T).await.unwrap(), 1);
    let starts: Vec<String> = log
        .take()
        .into_iter()
        .filter_map(|e| e.strip_prefix("start:").map(str::to_owned))
        .collect();
    rt.shutdown().await.unwrap();
    starts
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let starts = restarted_after_b_fails(Strategy::OneForOne).await;
    assert!(starts.iter().all(|s| s == "b"), "{starts:?}");
    assert!(!starts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child_in_order() {
    let starts = restarted_after_b_fails(Strategy::OneForAll).await;
    assert_eq!(dedup(starts[..3].to_vec()), ["a", "b", "c"], "{starts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let starts = restarted_after_b_fails(Strategy::RestForOne).await;
    assert_eq!(starts[..2].to_vec(), ["b", "c"], "{starts:?}");
    assert!(!starts.contains(&"a".to_owned()), "{starts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_after_max_attempts() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let p = rt
        .spawn::<Counter>(SpawnSpec::new("p").unwrap().max_attempts(3), "p".into())
        .await
        .unwrap();
    p.send(Cmd::Add(1)).await.unwrap();
    p.send(Cmd::Panic).await.unwrap();
    p.send(Cmd::Add(10)).await.unwrap();
    assert_eq!(p.ask(Cmd::Get, Duration::from_secs(10)).await.unwrap(), 11);
    assert_eq!(log.count("panic:p"), 3, "tried exactly max_attempts times");
    let dead = rt.dead_letters(&id("p")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].seq, dead[0].attempts), (2, 3));
    assert!(dead[0].error.contains("told to panic"), "{}", dead[0].error);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_intensity_escalates_to_the_parent() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    // sup gives up after 1 restart in 5 s; the root then restarts sup (and so its subtree).
    let spec = SupervisorSpec::new(Strategy::OneForOne).intensity(Intensity {
        max_restarts: 1,
        within: Duration::from_secs(5),
    });
    family(&rt, spec).await;
    log.take();
    let a = rt.agent::<Counter>(&id("a")).unwrap();
    a.send(Cmd::Fail).await.unwrap();
    // Second failure of the same poison message exceeds sup's intensity.
    eventually(|| log.count("start:sup") >= 1).await;
    let entries = log.take();
    assert!(
        entries.iter().filter(|e| *e == "fail:a").count() >= 2,
        "{entries:?}"
    );
    // The whole family came back and still works.
    a.send(Cmd::Add(2)).await.unwrap();
    assert_eq!(a.ask(Cmd::Get, Duration::from_secs(10)).await.unwrap(), 2);
    assert!(rt.failure().is_none());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_past_the_root_fails_the_runtime() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log)
        .root_supervision(
            SupervisorSpec::new(Strategy::OneForOne).intensity(Intensity {
                max_restarts: 0,
                within: Duration::from_secs(5),
            }),
        )
        .start()
        .await
        .unwrap();
    let x = rt
        .spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
        .await
        .unwrap();
    x.send(Cmd::Fail).await.unwrap();
    eventually(|| rt.failure().is_some()).await;
    assert!(rt.failure().unwrap().contains("restart intensity"));
    assert!(matches!(
        x.send(Cmd::Add(1)).await,
        Err(toka_actors::Error::ShuttingDown)
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_delays_restarts_and_messages_wait_in_order() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let spec = SupervisorSpec::new(Strategy::OneForOne).backoff(Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(1),
    });
    family(&rt, spec).await;
    let b = rt.agent::<Counter>(&id("b")).unwrap();
    log.take();
    let started = std::time::Instant::now();
    b.send(Cmd::Fail).await.unwrap();
    // Journaled while b is down; handled in order once it is back.
    for n in 1..=5 {
        b.send(Cmd::Add(n)).await.unwrap();
    }
    eventually(|| log.count("start:b") >= 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.ask(Cmd::Get, Duration::from_secs(10)).await.unwrap(), 15);
    rt.shutdown().await.unwrap();
}
