//! A data directory written by the node as of 2026-12 (the journal format that issue 10
//! left), committed as a fixture in `tests/fixtures/data-2026-12/`, must keep opening.
//!
//! Every later change to what the journal stores (record layouts, kinds, versions) is
//! checked against it: the node either reads it (the tree, the states, sealed tokens,
//! revocations, a re-spawned incarnation come back) or refuses it with a clear error. The
//! fixture holds: a supervisor `ops` with a counter `hits` under it (100 adds, so
//! snapshots were taken), a counter `again` stopped after 5 adds and spawned again with 7
//! (a second incarnation), a stopped counter `gone`, a reactor `r` holding a sealed
//! `fs.write` token, and a revoked token (`revoked.token`).
//!
//! Regenerate it (only on purpose, when the format changes and a migration exists):
//! `cargo test -p toka-node --test journal_format -- --ignored generate_fixture`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Node, admin_token, cli, tree, value_of};
use serde_json::json;
use toka_test_support::fs::copy_dir;

/// The committed fixture.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-2026-12")
}

/// Restores the owner-only mode the node requires of its key files (git keeps 0644).
fn tighten_keys(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for key in ["root.key", "seal.key"] {
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
#[ignore = "writes the committed fixture; run on purpose only"]
fn generate_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    cli(&dir, &["init"]);
    let revoked = cli(&dir, &["token", "mint"]);
    cli(&dir, &["token", "revoke", &revoked, "--reason", "fixture"]);
    std::fs::write(dir.join("revoked.token"), &revoked).unwrap();
    let writer = cli(&dir, &["token", "mint", "--caveat", "tool = fs.write"]);
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    let spawn = |body: serde_json::Value| {
        let (status, reply) = node.json("POST", "/agents", &token, &body);
        assert_eq!(status, 201, "{reply}");
    };
    let add = |id: &str, times: u32| {
        for _ in 0..times {
            let (status, reply) = node.json(
                "POST",
                &format!("/agents/{id}/messages"),
                &token,
                &json!({"add": 1}),
            );
            assert_eq!(status, 202, "{reply}");
        }
    };
    let stop = |id: &str| {
        let (status, reply) = node.call("DELETE", &format!("/agents/{id}"), Some(&token), b"");
        assert_eq!(status, 200, "{reply}");
    };
    spawn(json!({"id": "ops", "kind": "supervisor", "args": {"max_restarts": 5}}));
    spawn(json!({"id": "hits", "kind": "counter", "parent": "ops"}));
    add("hits", 100);
    spawn(json!({"id": "gone", "kind": "counter"}));
    add("gone", 3);
    stop("gone");
    spawn(json!({"id": "again", "kind": "counter"}));
    add("again", 5);
    stop("again");
    spawn(json!({"id": "again", "kind": "counter"}));
    add("again", 7);
    spawn(json!({
        "id": "r",
        "kind": "reactor",
        "args": {"subscribe": "alerts", "tool": "fs.write",
                 "input": {"path": "a.txt", "content": "{{/m}}"}, "token": writer}
    }));
    assert!(node.sigterm().success());
}

#[test]
fn a_data_directory_of_the_2026_12_format_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture(), &dir);
    tighten_keys(&dir);
    let verified = cli(&dir, &["events", "verify"]);
    assert!(verified.starts_with("journal intact"), "{verified}");

    let node = Node::start(&dir);
    let token = admin_token(&dir);
    let mut agents = tree(&node, &token);
    agents.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        agents,
        [
            ("again".into(), "counter".into(), json!(null)),
            ("hits".into(), "counter".into(), json!("ops")),
            ("ops".into(), "supervisor".into(), json!(null)),
            ("r".into(), "reactor".into(), json!(null)),
        ]
    );
    assert_eq!(value_of(&node, &token, "hits"), json!({"value": 100}));
    assert_eq!(value_of(&node, &token, "again"), json!({"value": 7}));
    // The reactor opened its sealed token (it would have failed to start otherwise).
    let (status, info) = node.get("/agents/r", &token);
    assert_eq!(
        (status, info["status"].as_str()),
        (200, Some("running")),
        "{info}"
    );
    let revoked = std::fs::read_to_string(dir.join("revoked.token")).unwrap();
    assert_eq!(node.get("/agents", revoked.trim()).0, 401);

    // It keeps working: new writes, a kill -9, and everything is back.
    let (status, _) = node.json("POST", "/agents/hits/messages", &token, &json!({"add": 5}));
    assert_eq!(status, 202);
    node.kill_9();
    let node = Node::start(&dir);
    assert_eq!(value_of(&node, &token, "hits"), json!({"value": 105}));
    assert_eq!(value_of(&node, &token, "again"), json!({"value": 7}));
    assert!(node.sigterm_within(Duration::from_secs(15)).success());
}
