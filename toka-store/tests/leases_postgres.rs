//! Leases with fencing epochs in PostgreSQL, and journals fenced by them: a writer that
//! lost its lease commits nothing more, and a history of many hand-overs between
//! competing writers (some of them paused past their lease) never interleaves two
//! holdings. Each test uses schemas of its own (`tests/pg/mod.rs`).
#![cfg(feature = "postgres")]

mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pg::TestSchema;
use toka_store::{
    Durability, Error, ExpectedVersion, Journal, JournalConfig, Leases, NewEvent, PgJournal,
};

fn fsync() -> JournalConfig {
    JournalConfig::default().durability(Durability::Fsync)
}

/// An event naming the holding that wrote it: `holder:epoch:n`.
fn tagged(holder: &str, epoch: i64, n: u32) -> NewEvent {
    NewEvent::new("w", format!("{holder}:{epoch}:{n}").into_bytes())
}

/// Runs blocking lease calls off the async workers, as the docs ask.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[test]
fn a_lease_is_held_by_one_holder_and_each_holding_gets_a_new_epoch() {
    let Some(table) = TestSchema::new("lease") else {
        return;
    };
    let leases = Leases::connect(&table.url, &table.name).unwrap();
    let ttl = Duration::from_millis(400);
    let a = leases.try_acquire("shard-0", "a", ttl).unwrap().unwrap();
    assert_eq!((a.holder(), a.epoch()), ("a", 1));
    // Held: nobody else gets it, not even the same holder again.
    assert_eq!(leases.try_acquire("shard-0", "b", ttl).unwrap(), None);
    assert_eq!(leases.try_acquire("shard-0", "a", ttl).unwrap(), None);
    // Another name is another lease.
    let other = leases.try_acquire("shard-1", "b", ttl).unwrap().unwrap();
    assert_eq!(other.epoch(), 1);
    assert!(leases.renew(&a, ttl).unwrap());

    // Expired: lost, even before anyone took it; the next holding is epoch 2.
    std::thread::sleep(ttl + Duration::from_millis(100));
    assert!(!leases.renew(&a, ttl).unwrap(), "renewed an expired lease");
    let b = leases.try_acquire("shard-0", "b", ttl).unwrap().unwrap();
    assert_eq!(b.epoch(), 2);
    assert!(
        !leases.release(&a).unwrap(),
        "released someone else's holding"
    );
    assert!(leases.renew(&b, ttl).unwrap());

    // Released: taken at once, at epoch 3.
    assert!(leases.release(&b).unwrap());
    assert!(!leases.renew(&b, ttl).unwrap());
    let c = leases.try_acquire("shard-0", "c", ttl).unwrap().unwrap();
    assert_eq!(c.epoch(), 3);

    let listed = leases.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].name, "shard-0");
    assert_eq!(listed[0].holder.as_deref(), Some("c"));
    assert_eq!(listed[0].epoch, 3);
    assert!(listed[0].remaining_ms > 0 && listed[0].remaining_ms <= 400);
    // Connecting again finds the table as it is.
    let again = Leases::connect(&table.url, &table.name)
        .unwrap()
        .list()
        .unwrap();
    let summary = |l: &toka_store::LeaseState| (l.name.clone(), l.holder.clone(), l.epoch);
    assert_eq!(
        again.iter().map(summary).collect::<Vec<_>>(),
        listed.iter().map(summary).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_lease_was_taken_over_commits_nothing_more() {
    let Some(table) = TestSchema::new("fence") else {
        return;
    };
    let journal_schema = TestSchema::on(&table.url, "fencej");
    let (url, schema) = (table.url.clone(), table.name.clone());
    let leases = Arc::new(blocking(move || Leases::connect(&url, &schema).unwrap()).await);
    // Long enough for a connection and a few commits on a loaded machine (500 ms was
    // not, twice, under load average 8), short enough to wait out.
    let ttl = Duration::from_millis(2_000);

    let l = Arc::clone(&leases);
    let a_lease = blocking(move || l.try_acquire("j", "a", ttl).unwrap().unwrap()).await;
    let a = PgJournal::connect_fenced(&table.url, &journal_schema.name, &a_lease, fsync()).unwrap();
    for n in 0..3 {
        a.append("s", ExpectedVersion::Any, &[tagged("a", 1, n)])
            .await
            .unwrap()
            .unwrap();
    }

    // `a` pauses past its lease; `b` takes the journal over.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let l = Arc::clone(&leases);
    let b_lease = blocking(move || l.try_acquire("j", "b", ttl).unwrap().unwrap()).await;
    assert_eq!(b_lease.epoch(), 2);
    let b = PgJournal::connect_fenced(&table.url, &journal_schema.name, &b_lease, fsync()).unwrap();
    assert_eq!(
        b.stream_version("s").unwrap(),
        3,
        "b sees a's acknowledged writes"
    );
    b.append("s", ExpectedVersion::Exact(3), &[tagged("b", 2, 0)])
        .await
        .unwrap()
        .unwrap();

    // `a` wakes up and writes with its old epoch: refused by the database.
    let refused = a
        .append("s", ExpectedVersion::Any, &[tagged("a", 1, 3)])
        .await;
    match refused {
        Err(Error::Fenced { lease, epoch }) => assert_eq!((lease.as_str(), epoch), ("j", 1)),
        other => panic!("a stale writer's append was not fenced: {other:?}"),
    }
    // And stays refused: nothing of `a` gets in later either.
    assert!(
        a.append("s", ExpectedVersion::Any, &[tagged("a", 1, 4)])
            .await
            .is_err()
    );
    drop(a);
    b.append("s", ExpectedVersion::Exact(4), &[tagged("b", 2, 1)])
        .await
        .unwrap()
        .unwrap();
    let written: Vec<String> = b
        .read_stream("s", 1, 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        written,
        ["a:1:0", "a:1:1", "a:1:2", "b:2:0", "b:2:1"],
        "the journal holds a's writes before the take-over and b's after, nothing else"
    );
    assert!(b.verify().unwrap().is_intact());
}

/// Three writers compete for one journal for a few seconds: each takes the lease when it
/// can, opens the journal fenced, appends events naming its holding, and sometimes
/// pauses past its lease before writing again (a stale writer) or releases it. The log
/// must read as a sequence of holdings with increasing epochs, each a gap-free run of
/// its own events, and every acknowledged append must be in it.
#[test]
fn competing_writers_never_interleave_their_holdings() {
    let Some(table) = TestSchema::new("compete") else {
        return;
    };
    let journal_schema = TestSchema::on(&table.url, "competej");
    let ttl = Duration::from_millis(300);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let fenced = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, holder)| {
            let (url, lease_schema, schema) = (
                table.url.clone(),
                table.name.clone(),
                journal_schema.name.clone(),
            );
            let (stop, acked, fenced) =
                (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&fenced));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let leases = Leases::connect(&url, &lease_schema).unwrap();
                let mut round = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let Some(lease) = leases.try_acquire("j", holder, ttl).unwrap() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let journal =
                        PgJournal::connect_fenced(&url, &schema, &lease, fsync()).unwrap();
                    let mut n = 0;
                    loop {
                        let event = tagged(holder, lease.epoch(), n);
                        let payload = String::from_utf8(event.payload.to_vec()).unwrap();
                        match rt.block_on(journal.append("s", ExpectedVersion::Any, &[event])) {
                            Ok(Ok(_)) => acked.lock().unwrap().push(payload),
                            Ok(Err(conflict)) => panic!("conflict with Any: {conflict:?}"),
                            Err(Error::Fenced { .. }) => {
                                fenced.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(other) => panic!("{holder}: unexpected error {other}"),
                        }
                        n += 1;
                        match (round + n as u64) % 7 {
                            // A pause past the lease: the next append must be fenced
                            // (if someone took over) or still land (if nobody did).
                            0 => std::thread::sleep(ttl + Duration::from_millis(50)),
                            // A graceful hand-over.
                            3 if n > 2 => {
                                drop(journal);
                                leases.release(&lease).unwrap();
                                break;
                            }
                            _ => {
                                if !leases.renew(&lease, ttl).unwrap() {
                                    // Lost: one more try must be refused, never land.
                                }
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }

    // Read the log with a holding of its own.
    let leases = Leases::connect(&table.url, &table.name).unwrap();
    let started = Instant::now();
    let reader = loop {
        if let Some(lease) = leases.try_acquire("j", "reader", ttl).unwrap() {
            break lease;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
    };
    let journal =
        PgJournal::connect_fenced(&table.url, &journal_schema.name, &reader, fsync()).unwrap();
    let log: Vec<String> = journal
        .read_stream("s", 1, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    let mut last_epoch = 0;
    let mut expected_n = 0;
    for entry in &log {
        let mut parts = entry.split(':');
        let (_holder, epoch, n) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<i64>().unwrap(),
            parts.next().unwrap().parse::<u32>().unwrap(),
        );
        if epoch != last_epoch {
            assert!(
                epoch > last_epoch,
                "epoch {epoch} after {last_epoch}: {log:?}"
            );
            last_epoch = epoch;
            expected_n = 0;
        }
        assert_eq!(
            n, expected_n,
            "a holding's writes are not a gap-free run: {log:?}"
        );
        expected_n += 1;
    }
    let acked = acked.lock().unwrap();
    assert_eq!(
        log.len(),
        acked.len(),
        "acknowledged appends missing or extra"
    );
    let mut sorted_log = log.clone();
    sorted_log.sort();
    let mut sorted_acked = acked.clone();
    sorted_acked.sort();
    assert_eq!(sorted_log, sorted_acked);
    assert!(
        last_epoch >= 4,
        "too few hand-overs to mean anything: {last_epoch}"
    );
    assert!(
        fenced.load(Ordering::Relaxed) >= 1,
        "no stale writer was ever fenced: the test exercised nothing"
    );
}
