//! `toka-node run --journal postgres://…`: the journal in PostgreSQL, end to end with the
//! real binary. Needs `TOKA_TEST_POSTGRES` (see `toka-store/tests/postgres/start.sh`);
//! without it the tests pass doing nothing, unless `TOKA_REQUIRE_POSTGRES=1` (CI).
//!
//! - `node_keeps_its_journal_in_postgres`: a tree and counter states survive `kill -9`;
//!   the URL comes from `--journal`, then from the config file; no sled journal is made.
//! - `journal_passwords_are_never_shown`: a wrong password or an unreachable server fails
//!   `run` with the URL shown redacted; `--help` does not show `TOKA_JOURNAL`'s value.
#![cfg(feature = "postgres")]

mod common;

use std::process::Command;

use common::{BIN, Node, admin_token, postgres_url, tree, value_of};
use serde_json::json;

/// Drops the schema when the test ends.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = client.batch_execute(&sql);
        }
    }
}

#[test]
fn node_keeps_its_journal_in_postgres() {
    let Some(url) = postgres_url() else {
        return;
    };
    let schema = Schema {
        url: url.clone(),
        name: format!("node_{}", std::process::id()),
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let journal = format!("{url}{sep}schema={}", schema.name);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    let node = Node::start_with(&dir, &["--journal", &journal]);
    let token = admin_token(&dir);
    for (id, parent) in [("root", None), ("leaf", Some("root"))] {
        let body = json!({"id": id, "kind": "counter", "args": {}, "parent": parent});
        let (status, reply) = node.json("POST", "/agents", &token, &body);
        assert_eq!(status, 201, "{reply}");
    }
    for (id, n) in [("root", 5), ("root", 7), ("leaf", 3)] {
        let (status, reply) = node.json(
            "POST",
            &format!("/agents/{id}/messages"),
            &token,
            &json!({"add": n}),
        );
        assert_eq!(status, 202, "{reply}");
    }
    assert_eq!(value_of(&node, &token, "root"), json!({"value": 12}));
    let before = tree(&node, &token);
    node.kill_9();
    assert!(
        !dir.join("journal").exists(),
        "a sled journal was created beside the PostgreSQL one"
    );

    // Restart with the URL from the config file: everything acknowledged is back.
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, format!("journal = \"{journal}\"\n")).unwrap();
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    assert_eq!(tree(&node, &token), before);
    assert_eq!(value_of(&node, &token, "root"), json!({"value": 12}));
    assert_eq!(value_of(&node, &token, "leaf"), json!({"value": 3}));
    let (status, health) = node.get("/health", &token);
    assert_eq!(status, 200, "{health}");
    assert_eq!(node.sigterm().code(), Some(0));

    // The journal really is in PostgreSQL: the schema has the node's records.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{}\".kv", schema.name), &[])
        .unwrap()
        .get(0);
    assert!(rows > 0);
}

#[test]
fn journal_passwords_are_never_shown() {
    let Some(url) = postgres_url() else {
        return;
    };
    const SECRET: &str = "N0t-the-pa55word";
    let host = url
        .rsplit_once('@')
        .map_or("127.0.0.1:5432/toka", |(_, h)| h);
    let tmp = tempfile::tempdir().unwrap();
    for journal in [
        format!("postgres://toka:{SECRET}@{host}"),
        format!("postgres://toka:{SECRET}@127.0.0.1:1/toka"),
        format!("mysql://toka:{SECRET}@127.0.0.1/toka"),
    ] {
        let out = Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .env("TOKA_JOURNAL", &journal)
            .env_remove("TOKA_CONFIG")
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{journal}: {shown}");
        assert!(!shown.contains(SECRET), "the password was shown: {shown}");
        assert!(shown.contains("toka:***@"), "{shown}");
    }
    let help = Command::new(BIN)
        .args(["run", "--help"])
        .env("TOKA_JOURNAL", format!("postgres://toka:{SECRET}@h/db"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--journal"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}
