//! The real `toka-node` binary against real sled data directories.

use std::path::Path;
use std::process::{Command, Output};

use toka_store::{ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};

fn toka_node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toka-node"))
        .args(args)
        .env_remove("TOKA_DATA_DIR")
        .env_remove("TOKA_KEY_FILE")
        .output()
        .expect("spawn toka-node")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A data dir whose journal holds 10 events: positions 1..=10, streams `a` and `b`.
fn populated_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let journal =
            SledJournal::open(dir.path().join("journal"), JournalConfig::default()).unwrap();
        for i in 0..10u32 {
            let stream = if i % 2 == 0 { "a" } else { "b" };
            let event = NewEvent::new("test.event", format!("payload-{i}").into_bytes());
            journal
                .append(stream, ExpectedVersion::Any, &[event])
                .await
                .unwrap()
                .unwrap();
        }
    });
    dir
}

fn corrupt_position(data_dir: &Path, position: u64) {
    let journal = SledJournal::open(data_dir.join("journal"), JournalConfig::default()).unwrap();
    let db = journal.backend().db();
    let mut key = vec![b'L'];
    key.extend_from_slice(&position.to_be_bytes());
    let mut value = db.get(&key).unwrap().unwrap().to_vec();
    let last = value.len() - 1;
    value[last] ^= 0x40;
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}

#[test]
fn verify_succeeds_on_an_intact_journal() {
    let dir = populated_data_dir();
    let out = toka_node(&[
        "events",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("journal intact: 10 records"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_fails_and_names_the_position_on_a_corrupted_journal() {
    let dir = populated_data_dir();
    corrupt_position(dir.path(), 4);
    let path = dir.path().to_str().unwrap();
    let out = toka_node(&["events", "verify", "--data-dir", path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("position 4"), "{}", stdout(&out));

    let out = toka_node(&["events", "verify", "--data-dir", path, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_bad"]["position"], 4);
    assert_eq!(report["records"], 3);
}

#[test]
fn list_prints_json_lines_and_filters_by_stream() {
    let dir = populated_data_dir();
    let path = dir.path().to_str().unwrap();
    let out = toka_node(&["events", "list", "--data-dir", path, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[3]["position"], 4);
    assert_eq!(lines[3]["payload"]["utf8"], "payload-3");

    let out = toka_node(&[
        "events",
        "list",
        "--data-dir",
        path,
        "--stream",
        "b",
        "--from",
        "2",
        "--limit",
        "2",
        "--json",
    ]);
    let seqs: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3]);

    let out = toka_node(&["events", "list", "--data-dir", path]);
    assert_eq!(stdout(&out).lines().count(), 10);
}

#[test]
fn list_reports_a_corrupt_record_as_an_error() {
    let dir = populated_data_dir();
    corrupt_position(dir.path(), 6);
    let out = toka_node(&["events", "list", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("position 6"), "{stderr}");
    assert_eq!(
        stdout(&out).lines().count(),
        5,
        "records before the damage are listed"
    );
}

#[test]
fn missing_data_dir_and_unimplemented_run_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = toka_node(&[
        "events",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal at"));

    let out = toka_node(&["run", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented yet"));
}

#[test]
fn every_command_has_help() {
    let commands: [&[&str]; 5] = [
        &["--help"],
        &["events", "--help"],
        &["events", "list", "--help"],
        &["events", "verify", "--help"],
        &["run", "--help"],
    ];
    for args in commands {
        let out = toka_node(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
}
