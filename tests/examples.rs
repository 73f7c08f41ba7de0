//! The examples run and print what they promise.
//!
//! The examples are built once, for the whole workspace (`cargo build --workspace
//! --examples`), so their dependencies have the features `cargo test --workspace` already
//! built them with: nothing is compiled or linked a second time. Then each test runs its
//! example's binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The feature the `assistant` example needs, besides the defaults.
const EXAMPLE_FEATURES: &str = "toka/openai";

/// The built example `name` (its binary in this target directory's `examples`).
fn example(name: &str) -> Command {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--examples",
                "--features",
            ])
            .arg(EXAMPLE_FEATURES)
            .output()
            .expect("cargo build --examples");
        assert!(out.status.success(), "{out:?}");
        // This test runs from `<target>/<profile>/deps`; examples live beside `deps`.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the profile directory");
        profile.join("examples")
    });
    Command::new(dir.join(name))
}

#[test]
fn journal_example_runs() {
    let out = example("journal").output().expect("the journal example");
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
    let out = example("supervised")
        .output()
        .expect("the supervised example");
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

/// Runs example `name` and returns its stdout, checking it succeeded.
fn run_example(name: &str) -> String {
    let out = example(name)
        .output()
        .unwrap_or_else(|e| panic!("example {name}: {e}"));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn embed_example_calls_tools_under_a_scoped_token() {
    let stdout = run_example("embed");
    assert!(
        stdout.contains("scribe: wrote /notes/today.md (9 bytes)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scribe read back: \"buy milk\\n\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("denied: kind=Denied (path \"/etc/passwd\" is outside"),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit log: 1 denial(s) journaled"),
        "{stdout}"
    );
    assert!(stdout.contains("etc/passwd exists = false"), "{stdout}");
    assert!(stdout.contains("shut down cleanly"), "{stdout}");
}

#[test]
fn agent_example_shows_timers_snapshots_and_children() {
    let stdout = run_example("agent");
    assert!(
        stdout.contains("on_start: alice-todo subscribes to announcements"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alice-todo got news: office closed friday"),
        "{stdout}"
    );
    assert!(stdout.contains("reminder #3: alice-todo"), "{stdout}");
    assert!(
        stdout.contains("archived into alice-todo-archive: 1 item(s) there now"),
        "{stdout}"
    );
    assert!(
        stdout.contains("restore: alice's list from a snapshot"),
        "{stdout}"
    );
    // The reminder pending at shutdown fires after the restart.
    assert!(
        stdout.contains(
            "reminder #4: alice-todo open: [\"write the report\", \"call bob\", \"book flights\"]"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("alice-todo-archive (archive) parent=alice-todo"),
        "{stdout}"
    );
}

#[test]
fn crash_recovery_example_rebuilds_the_killed_tree() {
    let stdout = run_example("crash_recovery");
    assert!(stdout.contains("killed the child: signal: 9"), "{stdout}");
    assert!(
        stdout.contains("recovered: eng kind=dept parent=hq members=alice,bob"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recovered: bob kind=counter parent=eng total=11"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recovered tree and states match the child's (5 agents)"),
        "{stdout}"
    );
}

/// The assistant example against a scripted OpenAI-compatible server: the model lists the
/// files, reads the notes, and answers; the example prints the answer and the transcript.
#[test]
fn assistant_example_answers_from_the_files() {
    use serde_json::json;
    use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start());
    server.push(Reply::Json(chat_tool_calls(
        &[("c1", "fs_list", json!({"path": ""}))],
        90,
        12,
    )));
    server.push(Reply::Json(chat_tool_calls(
        &[("c2", "fs_read", json!({"path": "notes.txt"}))],
        120,
        14,
    )));
    server.push(Reply::Json(chat_text(
        "Thursday at 10:00, in room B.",
        160,
        11,
    )));
    let out = example("assistant")
        .env("TOKA_MODEL_BASE_URL", server.base_url())
        .env("TOKA_MODEL", "scripted")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("the assistant example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("answer: Thursday at 10:00, in room B."),
        "{stdout}"
    );
    assert!(stdout.contains("steps: 3, tokens: 407"), "{stdout}");
    let sent = server.requests();
    assert_eq!(sent.len(), 3);
    let last = sent[2].body["messages"].as_array().unwrap();
    let read = last.iter().rev().find(|m| m["role"] == "tool").unwrap();
    assert!(
        read["content"].as_str().unwrap().contains("room B"),
        "{read}"
    );
}
