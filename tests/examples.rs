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
