//! The examples run and print what they promise.

use std::process::Command;

#[test]
fn journal_example_runs() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", "journal"])
        .output()
        .expect("cargo run --example journal");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("stale append: version conflict"),
        "{stdout}"
    );
    assert!(stdout.contains("#3 (position 3)"), "{stdout}");
    assert!(stdout.contains("subscriber saw position 3"), "{stdout}");
    assert!(stdout.contains("snapshot at seq 3"), "{stdout}");
    assert!(stdout.contains("verify: intact=true records=3"), "{stdout}");
}

#[test]
fn supervised_example_recovers_its_tree() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", "supervised"])
        .output()
        .expect("cargo run --example supervised");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("before restart: alice=8 bob=4"), "{stdout}");
    assert!(stdout.contains("dead letters of alice: 1"), "{stdout}");
    assert!(stdout.contains("after restart: alice=8 bob=4"), "{stdout}");
    assert!(
        stdout.contains("alice (worker) parent=team running=true"),
        "{stdout}"
    );
}
