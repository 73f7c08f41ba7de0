//! Messaging through the public API: send/ask, agent-to-agent effects, topics, transient
//! agents, errors.

mod common;

use common::*;
use toka_actors::{Error, SpawnSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_ask_a_durable_agent() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let c = rt
        .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
        .await
        .unwrap();
    for n in 1..=10 {
        c.send(Cmd::Add(n)).await.unwrap();
    }
    assert_eq!(c.ask(Cmd::Get, T).await.unwrap(), 55);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_agents_work_and_are_not_recovered() {
    let log = Log::default();
    let journal = memory_journal();
    let rt = builder(journal.clone(), &log).start().await.unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    t.send(Cmd::Add(4)).await.unwrap();
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 4);
    assert_eq!(
        journal.head_position(),
        0,
        "transient agents journal nothing"
    );
    rt.shutdown().await.unwrap();
    let rt = builder(journal, &log).start().await.unwrap();
    assert!(matches!(
        rt.agent::<Counter>(&id("t")),
        Err(Error::UnknownAgent(_))
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_send_ask_and_spawn_through_their_context() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let a = rt
        .spawn::<Counter>(SpawnSpec::new("a").unwrap(), "a".into())
        .await
        .unwrap();
    a.send(Cmd::Spawn("kid".into())).await.unwrap();
    a.send(Cmd::SendTo("kid".into(), 7)).await.unwrap();
    a.send(Cmd::AskAndAdd("kid".into())).await.unwrap();
    assert_eq!(a.ask(Cmd::Get, T).await.unwrap(), 7);
    let tree = rt.tree();
    let kid = tree.iter().find(|i| i.id == id("kid")).unwrap();
    assert_eq!(kid.parent, Some(id("a")));
    // Spawning the same child again (a re-run handler) returns it instead of failing.
    a.ask(Cmd::Spawn("kid".into()), T).await.unwrap();
    // A stop removes it from the tree.
    a.ask(Cmd::StopChild("kid".into()), T).await.unwrap();
    assert!(rt.tree().iter().all(|i| i.id != id("kid")));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_reach_durable_and_transient_subscribers() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let d = rt
        .spawn::<Counter>(SpawnSpec::new("d").unwrap(), "d".into())
        .await
        .unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    assert_eq!(rt.publish(&ticks(), &5).await.unwrap(), 2);
    // `send` returns once journaled; ask to wait for the handling (and its publish).
    d.ask(Cmd::Publish(1), T).await.unwrap();
    assert_eq!(d.ask(Cmd::Get, T).await.unwrap(), 6);
    eventually(|| log.count("handled:t") >= 2).await;
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_went_wrong() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    rt.spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
        .await
        .unwrap();
    let again = rt
        .spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
        .await;
    assert!(matches!(again, Err(Error::AlreadyExists(i)) if i == id("x")));
    assert!(matches!(
        rt.agent::<Counter>(&id("nope")),
        Err(Error::UnknownAgent(_))
    ));
    assert!(matches!(
        rt.spawn_json(
            None,
            "no-such-kind",
            SpawnSpec::new("y").unwrap(),
            serde_json::json!(null)
        )
        .await,
        Err(Error::UnknownKind(_))
    ));
    assert!(matches!(
        rt.spawn_json(
            None,
            "counter",
            SpawnSpec::new("y").unwrap(),
            serde_json::json!({"not": "a string"})
        )
        .await,
        Err(Error::BadJson { .. })
    ));
    let x = rt.agent::<Counter>(&id("x")).unwrap();
    let failed = x.ask(Cmd::Fail, T).await;
    assert!(matches!(failed, Err(Error::Handler { .. })), "{failed:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_messages_for_apis() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    rt.spawn_json(
        None,
        "counter",
        SpawnSpec::new("j").unwrap(),
        serde_json::json!("j"),
    )
    .await
    .unwrap();
    rt.send_json(&id("j"), serde_json::json!({"Add": 3}))
        .await
        .unwrap();
    let v = rt
        .ask_json(&id("j"), serde_json::json!("Get"), T)
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!(3));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_appends_flush_waits_and_restarts() {
    const N: u64 = 20;
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let before = rt.metrics();
    let c = rt
        .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
        .await
        .unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    for n in 1..=N {
        c.send(Cmd::Add(n.try_into().unwrap())).await.unwrap();
        t.send(Cmd::Add(1)).await.unwrap();
    }
    // The asks are handled after every message sent before them.
    c.ask(Cmd::Get, T).await.unwrap();
    t.ask(Cmd::Get, T).await.unwrap();
    let m = rt.metrics();
    assert!(
        m.messages_handled >= before.messages_handled + 2 * N,
        "{m:?}"
    );
    assert!(m.journal_appends >= N, "{m:?}");
    assert!(m.journal_group_writes >= 1, "{m:?}");
    assert!(m.journal_group_writes <= m.journal_appends, "{m:?}");
    assert!(m.flush_waits >= N, "{m:?}");
    // A failing handler makes the root restart the agent.
    assert!(c.ask(Cmd::Fail, T).await.is_err());
    let deadline = std::time::Instant::now() + T;
    while rt.metrics().agent_restarts == before.agent_restarts {
        assert!(std::time::Instant::now() < deadline, "no restart counted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The tree counts it for the agent that restarted, and only for it.
    let restarts = |agent: &str| {
        rt.tree()
            .into_iter()
            .find(|info| info.id.as_str() == agent)
            .map(|info| info.restarts)
    };
    // (The failing message is tried again after each restart, so there may be several.)
    let counted = restarts("c").unwrap();
    assert!(counted >= 1);
    assert!(counted <= rt.metrics().agent_restarts - before.agent_restarts);
    assert_eq!(restarts("t"), Some(0));
    rt.shutdown().await.unwrap();
}
