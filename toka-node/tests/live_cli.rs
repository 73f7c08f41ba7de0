//! The CLI against a running node (issue 14): the real `toka-node` binary, a real node on
//! 127.0.0.1, the same commands online (through the node's API) and offline (on the
//! stopped data directory), and the one clear line when neither works.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use common::{BIN, Node, admin_token};
use serde_json::{Value, json};
use toka_store::{JournalConfig, SledJournal};

/// `toka-node ARGS` with a clean environment plus `env`.
fn toka(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("TOKA_DATA_DIR")
        .env_remove("TOKA_KEY_FILE")
        .env_remove("TOKA_NODE")
        .env_remove("TOKA_TOKEN")
        .env_remove("TOKA_TOKEN_FILE")
        .env_remove("TOKA_LISTEN")
        .env_remove("TOKA_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running toka-node")
}

/// `toka-node ARGS --data-dir DIR`, found by the node's address (`TOKA_LISTEN`, as an
/// operator's config would give it) when the node runs; asserts success; stdout.
fn ok(dir: &Path, listen: &str, args: &[&str]) -> String {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--data-dir", dir.to_str().unwrap()]);
    let out = toka(&full, &[("TOKA_LISTEN", listen)]);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An address where nothing listens.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A node with two counters (one under the other) and a few messages.
fn busy_node(dir: &Path) -> Node {
    let node = Node::start(dir);
    let token = admin_token(dir);
    for (id, parent) in [("top", None), ("leaf", Some("top"))] {
        let body = json!({"id": id, "kind": "counter", "args": {}, "parent": parent});
        let (status, reply) = node.json("POST", "/agents", &token, &body);
        assert_eq!(status, 201, "{reply}");
    }
    for n in 1..=5 {
        let (status, _) = node.json("POST", "/agents/leaf/messages", &token, &json!({"add": n}));
        assert_eq!(status, 202);
    }
    node
}

#[test]
fn token_commands_work_online_and_a_revocation_refuses_the_token_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let listen = node.addr.to_string();
    let admin = admin_token(&dir);

    // Minted by the running node (the journal is locked: offline would fail).
    let token = ok(
        &dir,
        &listen,
        &["token", "mint", "--caveat", "tool = api.agents.*"],
    );
    let token = token.trim();
    assert_eq!(node.get("/agents", token).0, 200);
    let minted = lines(&ok(
        &dir,
        &listen,
        &["token", "mint", "--ttl", "1h", "--json"],
    ));
    assert_eq!(minted[0]["caveats"].as_array().unwrap().len(), 1);

    // Attenuated through the node: still valid, narrower.
    let url = format!("http://{listen}");
    let narrower = lines(&ok(
        &dir,
        &listen,
        &[
            "token",
            "attenuate",
            token,
            "--caveat",
            "tool = api.agents.read",
            "--node",
            &url,
            "--json",
        ],
    ));
    let narrower = narrower[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(node.get("/agents", &narrower).0, 200);
    assert_eq!(node.get("/metrics", &narrower).0, 403);

    // Revoked through the node: refused at once, with every attenuation; admin unaffected.
    let said = ok(
        &dir,
        &listen,
        &["token", "revoke", token, "--reason", "leaked"],
    );
    assert!(said.contains("revoked token"), "{said}");
    let (status, body) = node.get("/agents", token);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(node.get("/agents", &narrower).0, 401);
    assert_eq!(node.get("/agents", &admin).0, 200);
    // The node attenuates no revoked token.
    let out = toka(
        &[
            "token",
            "attenuate",
            token,
            "--caveat",
            "agent = x",
            "--node",
            &url,
        ],
        &[("TOKA_TOKEN", &admin)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(err.contains("400") && err.contains("revoked"), "{err}");
    let again = lines(&ok(&dir, &listen, &["token", "revoke", token, "--json"]));
    assert_eq!(again[0]["already_revoked"], true);

    // Inspected while the node runs: signature by the root key, revocation by the node.
    let d = dir.to_str().unwrap();
    let inspect = |token: &str| {
        let out = toka(
            &["token", "inspect", token, "--data-dir", d, "--json"],
            &[("TOKA_LISTEN", &listen)],
        );
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        (out.status.code(), report)
    };
    let (code, report) = inspect(token);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        (report["signature_valid"].clone(), report["revoked"].clone()),
        (json!(true), json!(true))
    );
    let (code, report) = inspect(&admin);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["revoked"], false);

    // The audit trail lists it, online.
    let identifier = again[0]["identifier"].as_str().unwrap().to_owned();
    let revocations = lines(&ok(&dir, &listen, &["audit", "revocations", "--json"]));
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["identifier"], identifier.as_str());
    assert_eq!(revocations[0]["reason"], "leaked");
    let denials = ok(&dir, &listen, &["audit", "denials"]);
    assert!(
        !denials.contains(token),
        "a denial shows a token: {denials}"
    );

    // Every issue is journaled: the admin token by init, the two mints by the node on the
    // admin token's behalf; identifiers and caveats, never a token.
    let admin_id = report["identifier"].as_str().unwrap().to_owned();
    let issued = lines(&ok(&dir, &listen, &["audit", "tokens", "--json"]));
    let by: Vec<&str> = issued
        .iter()
        .map(|t| t["issued_by"].as_str().unwrap())
        .collect();
    let api = format!("api:{admin_id}");
    assert_eq!(by, ["init", api.as_str(), api.as_str()], "{issued:?}");
    assert_eq!(issued[0]["identifier"], admin_id.as_str());
    assert_eq!(issued[1]["identifier"], identifier.as_str());
    assert_eq!(issued[1]["caveats"], json!(["tool = api.agents.*"]));
    let table = ok(&dir, &listen, &["audit", "tokens"]);
    for secret in [token, admin.as_str(), narrower.as_str()] {
        assert!(!table.contains(secret), "a token in the audit: {table}");
        assert!(
            !issued.iter().any(|t| t.to_string().contains(secret)),
            "a token in the audit: {issued:?}"
        );
    }

    // Journaled: after a restart the node still refuses it.
    assert!(node.sigterm().success());
    let offline = lines(&ok(&dir, &listen, &["audit", "revocations", "--json"]));
    assert_eq!(offline, revocations);
    ok(&dir, &listen, &["token", "mint", "--caveat", "agent = x"]);
    let offline = lines(&ok(&dir, &listen, &["audit", "tokens", "--json"]));
    assert_eq!(offline.len(), 4, "{offline:?}");
    assert_eq!(offline[..3], issued[..]);
    assert_eq!(offline[3]["issued_by"], "cli");
    assert_eq!(offline[3]["caveats"], json!(["agent = x"]));
    let node = Node::start(&dir);
    assert_eq!(node.get("/agents", token).0, 401);
    assert!(node.sigterm().success());
}

#[test]
fn token_commands_still_work_offline_on_a_stopped_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // SIGTERM as soon as it says `listening on`: a graceful stop (it used to come before
    // the handler was installed now and then, and kill the node).
    assert!(Node::start(&dir).sigterm().success());
    // Nothing listens at the config's address: the directory itself is used.
    let listen = free_addr();
    let token = ok(
        &dir,
        &listen,
        &["token", "mint", "--caveat", "tool = api.agents.read"],
    );
    let token = token.trim();
    let narrower = ok(&dir, &listen, &["token", "attenuate", token, "--ttl", "1h"]);
    assert_ne!(narrower.trim(), token);
    let said = ok(&dir, &listen, &["token", "revoke", token]);
    assert!(said.contains("revoked token"), "{said}");
    let node = Node::start(&dir);
    assert_eq!(node.get("/agents", token).0, 401);
    assert_eq!(node.get("/agents", narrower.trim()).0, 401);
    assert!(node.sigterm().success());
}

#[test]
fn events_and_agents_work_online_then_offline_with_the_same_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = busy_node(&dir);
    let listen = node.addr.to_string();
    let head = common::journal_head(&node, &admin_token(&dir));
    assert!(head >= 7, "head {head}");

    // Online.
    let listed = lines(&ok(&dir, &listen, &["events", "list", "--json"]));
    let table = ok(
        &dir,
        &listen,
        &["events", "list", "--stream", "agent/leaf", "--from", "2"],
    );
    let exported = ok(&dir, &listen, &["events", "export"]);
    let verified = lines(&ok(&dir, &listen, &["events", "verify", "--json"]));
    let tree = lines(&ok(&dir, &listen, &["agents", "tree", "--json"]));
    let tree_text = ok(&dir, &listen, &["agents", "tree"]);

    let positions: Vec<u64> = listed
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    assert!(positions.len() as u64 >= head);
    let in_leaf = listed
        .iter()
        .filter(|e| e["stream"] == "agent/leaf")
        .count();
    assert!(in_leaf >= 5, "{listed:?}");
    assert_eq!(table.lines().count(), in_leaf - 1, "{table}");
    assert!(table.lines().all(|l| l.contains(" agent/leaf ")), "{table}");
    // The node may journal bookkeeping records between two commands: compare prefixes.
    let export_lines = lines(&exported);
    assert!(export_lines.len() >= listed.len());
    for (exported, listed) in export_lines.iter().zip(&listed) {
        assert_eq!(exported["position"], listed["position"]);
        assert_eq!(exported["id"], listed["id"]);
    }
    assert!(export_lines.iter().all(|e| e["payload_base64"].is_string()));
    assert_eq!(verified[0]["intact"], true);
    assert!(verified[0]["head_position"].as_u64().unwrap() >= head);
    assert_eq!(
        tree[0],
        json!([
            {"id": "top", "kind": "counter", "parent": null},
            {"id": "leaf", "kind": "counter", "parent": "top"},
        ])
    );
    assert_eq!(tree_text, "top (counter)\n  leaf (counter)\n");

    // The export route streams JSON lines.
    let raw = raw_get(&node, "/events/export", &admin_token(&dir));
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("content-type: application/x-ndjson"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    let raw = raw_get(&node, "/events/verify", &admin_token(&dir));
    assert!(raw.contains("\"report\""), "{raw}");

    // Offline, on the stopped directory: the same answers (the node may have journaled
    // more while it stopped).
    assert!(node.sigterm().success());
    let listen = free_addr();
    let offline_export = ok(&dir, &listen, &["events", "export"]);
    assert!(
        offline_export.starts_with(&exported),
        "offline export differs"
    );
    let offline_list = lines(&ok(&dir, &listen, &["events", "list", "--json"]));
    assert_eq!(offline_list[..listed.len()], listed[..]);
    let offline_verify = lines(&ok(&dir, &listen, &["events", "verify", "--json"]));
    assert_eq!(offline_verify[0]["intact"], true);
    assert_eq!(
        lines(&ok(&dir, &listen, &["agents", "tree", "--json"])),
        tree
    );
    assert_eq!(ok(&dir, &listen, &["agents", "tree"]), tree_text);
}

/// One `GET` (`Connection: close`), the raw response with lowercase headers.
fn raw_get(node: &Node, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    format!(
        "{}\r\n\r\n{body}",
        head.to_ascii_lowercase()
            .replacen("http/1.1", "HTTP/1.1", 1)
    )
}

#[test]
fn status_prints_the_nodes_fields_online_and_the_directorys_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "[tools]\nfs_root = {:?}\nfs_read_only = true\n\
             [models.local]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
            files.to_str().unwrap()
        ),
    )
    .unwrap();
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    let token = admin_token(&dir);
    let body = json!({"id": "c", "kind": "counter", "args": {}});
    assert_eq!(node.json("POST", "/agents", &token, &body).0, 201);
    let listen = node.addr.to_string();

    let status = lines(&ok(&dir, &listen, &["status", "--json"]));
    let status = &status[0];
    assert_eq!(status["online"], true);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_secs"].is_u64());
    assert_eq!(status["agents"]["running"], 1);
    assert_eq!(status["agents"]["total"], 1);
    assert!(status["journal"]["head_position"].as_u64().unwrap() >= 1);
    assert!(status["journal"]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(status["journal"]["durability"], "fsync");
    assert!(status["recovery_ms"].is_u64());
    assert_eq!(status["tools"], json!(["fs.list", "fs.read"]));
    assert_eq!(status["models"], json!(["local"]));
    assert_eq!(status["pending_approvals"], 0, "{status}");

    let text = ok(&dir, &listen, &["status"]);
    for field in [
        "node ",
        "uptime ",
        "agents         1 (1 running, 0 down, 0 halted)",
        "journal        head ",
        "durability fsync",
        "recovery ",
        "tools          fs.list, fs.read",
        "models         local",
        "approvals      0 pending",
    ] {
        assert!(text.contains(field), "{field:?} not in:\n{text}");
    }
    // The route needs its capability.
    let narrow = ok(
        &dir,
        &listen,
        &["token", "mint", "--caveat", "tool = api.agents.*"],
    );
    assert_eq!(node.get("/status", narrow.trim()).0, 403);

    assert!(node.sigterm().success());
    let text = ok(&dir, &free_addr(), &["status"]);
    assert!(text.contains("not running"), "{text}");
    assert!(text.contains("agents         1"), "{text}");
}

#[test]
fn a_locked_data_dir_with_no_node_answering_says_so_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = toka(&["init", "--data-dir", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    // Another process (this test) holds the journal; nothing listens where the node
    // would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let journal = runtime
        .block_on(async { SledJournal::open(dir.join("journal"), JournalConfig::default()) })
        .unwrap();
    let listen = free_addr();
    let d = dir.to_str().unwrap();
    let admin = admin_token(&dir);
    for args in [
        &["token", "mint", "--data-dir", d][..],
        &["token", "inspect", &admin, "--data-dir", d],
        &[
            "token",
            "revoke",
            "0190e7a2-5c3b-7d4e-9f00-000000000001",
            "--data-dir",
            d,
        ],
        &["events", "list", "--data-dir", d],
        &["events", "verify", "--data-dir", d],
        &["events", "export", "--data-dir", d],
        &["agents", "tree", "--data-dir", d],
        &["audit", "denials", "--data-dir", d],
        &["status", "--data-dir", d],
    ] {
        let started = std::time::Instant::now();
        let out = toka(args, &[("TOKA_LISTEN", &listen)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(
            err,
            format!(
                "toka-node: no node answers at http://{listen}, and {d} is locked by a running \
                 process (if its node listens elsewhere, pass --node URL)\n"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        // Seen at once, not after the journal's lock retries.
        assert!(
            started.elapsed().as_secs() < 3,
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    drop(journal);
}

#[test]
fn errors_through_the_node_are_one_line_and_a_second_node_names_the_lock_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let url = format!("http://{}", node.addr);
    let bad = tmp.path().join("bad.token");
    std::fs::write(&bad, "not-a-token\n").unwrap();
    let out = toka(
        &[
            "events",
            "list",
            "--node",
            &url,
            "--token-file",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-a-token"), "the token was echoed: {err}");

    // `TOKA_TOKEN` and `--node` reach the node with no data dir here at all.
    let admin = admin_token(&dir);
    let out = toka(
        &[
            "agents",
            "tree",
            "--node",
            &url,
            "--data-dir",
            "/nonexistent",
        ],
        &[("TOKA_TOKEN", &admin)],
    );
    assert!(out.status.success(), "{out:?}");

    // A second node on the same directory: the lock is named once (it was printed
    // twice, once in the store's message and again as its cause).
    let out = toka(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(err.matches("could not acquire lock").count(), 1, "{err}");
    assert!(node.sigterm().success());
}
