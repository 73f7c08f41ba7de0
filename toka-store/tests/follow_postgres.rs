//! Followers of a PostgreSQL journal ([`PgJournal::follow`]): a writer journal and a
//! follower on their own connections (as another process would have), each test in a
//! schema of its own (`tests/pg/mod.rs`; set `TOKA_TEST_POSTGRES`).
//!
//! The follower's poll is set to a minute where a test must show that the commit's
//! `NOTIFY` (or the listening connection's reconnect) woke it, not the poll.
#![cfg(feature = "postgres")]

mod pg;

use std::time::{Duration, Instant};

use pg::TestSchema;
use toka_store::{
    Durability, EncryptionKey, Error, ExpectedVersion, FollowConfig, Journal, JournalConfig,
    Leases, NewEvent, PgBackend, PgJournal, RecordedEvent, Subscription,
};

fn fsync() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

fn event(i: u64) -> NewEvent {
    NewEvent::new("n", i.to_be_bytes().to_vec())
}

/// Only a notification (or a reconnect) can wake it within a test's time.
fn notify_only() -> FollowConfig {
    FollowConfig::default().poll_interval(Duration::from_secs(60))
}

/// Takes events from `feed` until it has delivered position `last`, checking that they
/// come in order, gap-free, each once; fails after `within`.
async fn take_through(
    feed: &mut Subscription,
    from: u64,
    last: u64,
    within: Duration,
) -> Vec<(RecordedEvent, Instant)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut expected = from;
    while expected <= last {
        let next = tokio::time::timeout_at(deadline, feed.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the follower delivered up to {} of {last} in time",
                    expected - 1
                )
            })
            .expect("the subscription ended")
            .expect("the follower read an event");
        assert_eq!(next.position, expected, "in order, gap-free, once");
        expected += 1;
        got.push((next, Instant::now()));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_committed_event_in_order_once() {
    let Some(schema) = TestSchema::new("fol") else {
        return;
    };
    let key = EncryptionKey::generate().unwrap();
    let writer =
        PgJournal::connect(&schema.journal_url(), fsync().encryption(key.clone())).unwrap();
    writer
        .append("early", ExpectedVersion::NoStream, &[event(0)])
        .await
        .unwrap()
        .unwrap();
    // A follower takes no lock: it opens beside the writer.
    let follower = PgJournal::follow_with(
        &schema.journal_url(),
        fsync().encryption(key.clone()),
        notify_only(),
    )
    .unwrap();
    assert!(follower.is_follower());
    assert_eq!(follower.acknowledged_head(), 1);
    let mut feed = follower.subscribe(1);

    // Concurrent appenders (shared commits), single events and batches.
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let events: Vec<NewEvent> = (0..1 + i % 3)
                    .map(|j| event(task * 1000 + i * 10 + j))
                    .collect();
                writer
                    .append(&format!("s{task}"), ExpectedVersion::Any, &events)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Unsynced appends become visible once the writer's background flush commits them.
    writer
        .append_unsynced("late", ExpectedVersion::Any, &[event(9), event(10)])
        .await
        .unwrap()
        .unwrap();
    let head = writer.head_position();
    let got = take_through(&mut feed, 1, head, Duration::from_secs(20)).await;
    let written: Vec<RecordedEvent> = writer.iter_all(1).map(Result::unwrap).collect();
    assert_eq!(written.len() as u64, head);
    for ((seen, _), mine) in got.iter().zip(&written) {
        assert_eq!(
            seen, mine,
            "the follower decrypts and verifies as the writer reads"
        );
    }
    // Reads beside the subscription, streams included (the writer's index may lag).
    assert_eq!(follower.acknowledged_head(), head);
    assert_eq!(follower.read_all(1, 10_000).unwrap(), written);
    assert_eq!(
        follower.stream_version("s2").unwrap(),
        writer.stream_version("s2").unwrap()
    );
    assert_eq!(
        follower.read_stream("s2", 1, 10_000).unwrap(),
        writer.read_stream("s2", 1, 10_000).unwrap()
    );
    assert!(follower.verify().unwrap().is_intact());
    // Nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.next())
            .await
            .is_err()
    );

    // The wrong key is refused at once; no key cannot open sealed records.
    let other = EncryptionKey::generate().unwrap();
    let wrong = PgJournal::follow(&schema.journal_url(), fsync().encryption(other)).unwrap_err();
    assert!(matches!(wrong, Error::WrongKey), "{wrong:?}");
    let keyless = PgJournal::follow(&schema.journal_url(), fsync()).unwrap_err();
    assert!(matches!(keyless, Error::KeyRequired), "{keyless:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writer_notifies_its_followers() {
    let Some(schema) = TestSchema::new("folf") else {
        return;
    };
    // The lease calls block: off the runtime's threads.
    let leases =
        tokio::task::block_in_place(|| Leases::connect(&schema.url, &schema.name)).unwrap();
    let lease = tokio::task::block_in_place(|| {
        leases.try_acquire("journal", "w1", Duration::from_secs(30))
    })
    .unwrap()
    .unwrap();
    let writer = PgJournal::connect_fenced(&schema.url, &schema.name, &lease, fsync()).unwrap();
    writer
        .append("a", ExpectedVersion::Any, &[event(1)])
        .await
        .unwrap()
        .unwrap();
    let follower = PgJournal::follow_with(&schema.journal_url(), fsync(), notify_only()).unwrap();
    let mut feed = follower.subscribe(2);
    for i in 2..=20 {
        writer
            .append("a", ExpectedVersion::Any, &[event(i)])
            .await
            .unwrap()
            .unwrap();
    }
    // With a minute between polls, only the fenced commits' NOTIFY can deliver these.
    take_through(&mut feed, 2, 20, Duration::from_secs(10)).await;

    // A writer that lost its lease commits nothing, so notifies nothing.
    assert!(tokio::task::block_in_place(|| leases.release(&lease)).unwrap());
    let refused = writer
        .append("a", ExpectedVersion::Any, &[event(21)])
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Fenced { .. }), "{refused:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), feed.next())
            .await
            .is_err()
    );
    assert_eq!(follower.acknowledged_head(), 20);
}

/// p50 and p99 of `samples` (sorted here).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Appends `count` single events one by one (each durable before the next, a few ms
/// apart), and measures for each the time from its commit (the append returning) to
/// the follower's subscription delivering it.
async fn commit_to_follower(
    schema: &TestSchema,
    follow: FollowConfig,
    count: u64,
) -> Vec<Duration> {
    let writer = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    writer
        .append("warm", ExpectedVersion::Any, &[event(0)])
        .await
        .unwrap()
        .unwrap();
    let follower = PgJournal::follow_with(&schema.journal_url(), fsync(), follow).unwrap();
    let first = writer.head_position() + 1;
    let mut feed = follower.subscribe(first);
    let reader = tokio::spawn(async move {
        take_through(&mut feed, first, first + count - 1, Duration::from_secs(60)).await
    });
    let mut committed = Vec::new();
    for i in 0..count {
        writer
            .append("lat", ExpectedVersion::Any, &[event(i)])
            .await
            .unwrap()
            .unwrap();
        committed.push(Instant::now());
        // 2-7 ms apart: commits do not line up with the poll.
        tokio::time::sleep(Duration::from_millis(2 + i % 6)).await;
    }
    let got = reader.await.unwrap();
    got.iter()
        .zip(committed)
        .map(|((_, seen), committed)| seen.saturating_duration_since(committed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_followers_sooner_than_the_poll() {
    let (Some(notify_schema), Some(poll_schema)) =
        (TestSchema::new("latn"), TestSchema::new("latp"))
    else {
        return;
    };
    const COUNT: u64 = 300;
    let mut notified = commit_to_follower(&notify_schema, FollowConfig::default(), COUNT).await;
    let mut polled =
        commit_to_follower(&poll_schema, FollowConfig::default().listen(false), COUNT).await;
    let (n50, n99) = percentiles(&mut notified);
    let (p50, p99) = percentiles(&mut polled);
    eprintln!(
        "commit -> follower over {COUNT} appends: NOTIFY p50 {n50:?} p99 {n99:?}; \
         poll (1 s) only p50 {p50:?} p99 {p99:?}"
    );
    assert!(n99 < Duration::from_millis(250), "NOTIFY p99 {n99:?}");
    assert!(p50 > Duration::from_millis(150), "polling p50 {p50:?}");
    assert!(n50 * 5 < p50, "NOTIFY p50 {n50:?} vs poll p50 {p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_survives_its_connections_being_terminated() {
    let Some(schema) = TestSchema::new("folk") else {
        return;
    };
    let writer = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    let follower = PgJournal::follow_with(&schema.journal_url(), fsync(), notify_only()).unwrap();
    let mut feed = follower.subscribe(1);
    let terminate = |which: &str| {
        let killed = pg::query_i64(
            &schema.url,
            format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{which}/{}'",
                schema.name
            ),
        )
        .unwrap();
        assert_eq!(killed, 1, "one {which} connection");
    };
    let mut last = 0;
    for round in 0..3 {
        for _ in 0..20 {
            last = writer
                .append("a", ExpectedVersion::Any, &[event(last)])
                .await
                .unwrap()
                .unwrap()
                .last_position;
        }
        // The reading connection reconnects at its next read, the listening one at once.
        match round {
            1 => terminate("toka-follower"),
            _ => terminate("toka-listen"),
        }
    }
    // Written while (or right after) its connections were down.
    for _ in 0..20 {
        last = writer
            .append("a", ExpectedVersion::Any, &[event(last)])
            .await
            .unwrap()
            .unwrap()
            .last_position;
    }
    // A minute between polls: only a reconnected listener delivers these in time.
    let got = take_through(&mut feed, 1, last, Duration::from_secs(15)).await;
    assert_eq!(got.len() as u64, last);
    // And it keeps following.
    let more = writer
        .append("a", ExpectedVersion::Any, &[event(last)])
        .await
        .unwrap()
        .unwrap();
    take_through(
        &mut feed,
        more.last_position,
        more.last_position,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_writes() {
    let Some(schema) = TestSchema::new("folw") else {
        return;
    };
    // No journal yet: nothing to follow (and a follower creates nothing).
    let missing = PgJournal::follow(&schema.journal_url(), fsync()).unwrap_err();
    assert!(
        missing.to_string().contains("holds no journal yet"),
        "{missing}"
    );

    let writer = PgJournal::connect(&schema.journal_url(), fsync()).unwrap();
    writer
        .append("a", ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap()
        .unwrap();
    let follower = PgJournal::follow(&schema.journal_url(), fsync()).unwrap();
    let refused = follower
        .append("a", ExpectedVersion::Any, &[event(2)])
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Follower), "{refused:?}");
    assert!(
        refused.to_string().contains("read-only follower"),
        "{refused}"
    );
    for refused in [
        follower
            .append_unsynced("b", ExpectedVersion::Any, &[event(2)])
            .await
            .unwrap_err(),
        follower.save_snapshot("a", 1, b"state").await.unwrap_err(),
    ] {
        assert!(matches!(refused, Error::Follower), "{refused:?}");
    }
    assert!(matches!(follower.write_failure(), Some(Error::Follower)));
    // Nothing was written, and the writer carries on.
    assert_eq!(writer.head_position(), 1);
    assert_eq!(follower.read_all(1, 10).unwrap().len(), 1);
    assert!(follower.load_snapshot("a").unwrap().is_none());
    writer
        .append("a", ExpectedVersion::Exact(1), &[event(2)])
        .await
        .unwrap()
        .unwrap();
    follower.wait_durable(2).await.unwrap();
    assert_eq!(follower.stream_version("a").unwrap(), 2);

    // The channel is an identifier of at most 63 bytes, also for the longest schemas.
    assert_eq!(PgBackend::notify_channel("agents"), "toka_agents");
    let long = PgBackend::notify_channel(&"x".repeat(63));
    assert!(long.len() <= 63 && long.starts_with("toka_"), "{long}");
    assert_ne!(
        long,
        PgBackend::notify_channel(&format!("{}y", "x".repeat(62)))
    );
}
