//! The event journal on its own: append, read, subscribe, snapshot, verify.
//!
//! Run with `cargo run --example journal`. It uses a temporary sled directory in `Fsync`
//! mode, so every acknowledged append is on disk.

use std::error::Error;

use toka::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let journal = SledJournal::open(dir.path(), JournalConfig::default())?;

    // A live feed of everything, started before the writes: catch-up, then live.
    let mut feed = journal.subscribe(1);

    // Two appends to one stream; the second is checked against the version the first left.
    let first = journal
        .append(
            "counter-1",
            ExpectedVersion::NoStream,
            &[NewEvent::new("counter.added", b"{\"add\":2}".to_vec())],
        )
        .await??;
    journal
        .append(
            "counter-1",
            ExpectedVersion::Exact(first.last_seq),
            &[
                NewEvent::new("counter.added", b"{\"add\":3}".to_vec()),
                NewEvent::new("counter.added", b"{\"add\":5}".to_vec()),
            ],
        )
        .await??;

    // A stale writer loses cleanly: nothing is written.
    let stale = journal
        .append(
            "counter-1",
            ExpectedVersion::Exact(first.last_seq),
            &[NewEvent::new("counter.added", b"{\"add\":100}".to_vec())],
        )
        .await?;
    println!("stale append: {}", stale.unwrap_err());

    for event in journal.iter_stream("counter-1", 1)? {
        let event = event?;
        println!(
            "#{} (position {}) {} {}",
            event.seq,
            event.position,
            event.kind,
            String::from_utf8_lossy(&event.payload)
        );
    }
    for _ in 0..3 {
        let event = feed.next().await.ok_or("journal closed")??;
        println!("subscriber saw position {}", event.position);
    }

    journal
        .save_snapshot("counter-1", 3, b"{\"value\":10}")
        .await?;
    let snapshot = journal.load_snapshot("counter-1")?.ok_or("no snapshot")?;
    println!(
        "snapshot at seq {}: {}",
        snapshot.seq,
        String::from_utf8_lossy(&snapshot.state)
    );

    let report = journal.verify()?;
    println!(
        "verify: intact={} records={} head hash {}",
        report.is_intact(),
        report.records,
        report.head_hash_hex()
    );
    Ok(())
}
