//! The node end to end: the real `toka-node` binary on 127.0.0.1 (port 0), a temporary
//! data directory, and a minimal HTTP/1.1 client over `TcpStream`.
//!
//! - `survives_kill_9_and_sigterm`: spawn a tree over HTTP, send messages, `kill -9`,
//!   restart: the tree and the states are back; SIGTERM exits 0 with nothing lost, even
//!   with an event stream open.
//! - `every_error_status_has_a_case`: 400, 401, 403, 404, 409 and 413, each triggered,
//!   and the node still answers `/health` after all of them.
//! - `tools_come_from_the_config_file`: `[tools] fs_root` gives `fs.*` over the API, a
//!   `tool = fs.read` token may read but not write, and `[[agents]]` start at boot once.
//! - `queries_read_state_without_writing_the_journal`: `POST /agents/{id}/query` answers
//!   a counter's value, sees every acknowledged message, and 200 queries add no record.

mod common;

use std::io::{BufReader, Read};
use std::process::{Command, Stdio};

use common::{BIN, Node, admin_token, cli, journal_head, tree, value_of};
use serde_json::{Value, json};

#[test]
fn survives_kill_9_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    // `run` on a fresh directory initialises it.
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    assert_eq!(node.call("GET", "/health", None, b"").0, 200);
    let spawn = |id: &str, parent: Option<&str>| {
        let body = json!({"id": id, "kind": "counter", "args": {}, "parent": parent});
        let (status, reply) = node.json("POST", "/agents", &token, &body);
        assert_eq!(status, 201, "{reply}");
    };
    spawn("root-counter", None);
    spawn("child-counter", Some("root-counter"));
    for (id, n) in [
        ("root-counter", 5),
        ("root-counter", 7),
        ("child-counter", 3),
    ] {
        let (status, reply) = node.json(
            "POST",
            &format!("/agents/{id}/messages"),
            &token,
            &json!({"add": n}),
        );
        assert_eq!(status, 202, "{reply}");
    }
    assert_eq!(
        value_of(&node, &token, "root-counter"),
        json!({"value": 12})
    );
    assert_eq!(
        value_of(&node, &token, "child-counter"),
        json!({"value": 3})
    );
    let before = tree(&node, &token);
    assert_eq!(
        before,
        vec![
            ("root-counter".into(), "counter".into(), Value::Null),
            (
                "child-counter".into(),
                "counter".into(),
                json!("root-counter")
            ),
        ]
    );
    node.kill_9();

    // kill -9 lost nothing that was acknowledged.
    let node = Node::start(&dir);
    assert_eq!(tree(&node, &token), before);
    assert_eq!(
        value_of(&node, &token, "root-counter"),
        json!({"value": 12})
    );
    assert_eq!(
        value_of(&node, &token, "child-counter"),
        json!({"value": 3})
    );
    let (status, _) = node.json(
        "POST",
        "/agents/child-counter/messages",
        &token,
        &json!({"add": 30}),
    );
    assert_eq!(status, 202);
    // An open event stream (catch-up: the two spawns at least) does not hold up SIGTERM.
    let _stream = node.stream_events(&token, 2);
    let status = node.sigterm();
    assert!(status.success(), "SIGTERM: {status:?}");

    // Nor did SIGTERM.
    let node = Node::start(&dir);
    assert_eq!(tree(&node, &token), before);
    assert_eq!(
        value_of(&node, &token, "root-counter"),
        json!({"value": 12})
    );
    assert_eq!(
        value_of(&node, &token, "child-counter"),
        json!({"value": 33})
    );
    assert!(node.sigterm().success());
}

#[test]
fn every_error_status_has_a_case() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cli = |args: &[&str]| cli(&dir, args);
    cli(&["init"]);
    // Minted while the node is stopped (the journal allows one process at a time).
    let other_only = cli(&["token", "mint", "--caveat", "agent = other"]);
    let read_only = cli(&["token", "mint", "--caveat", "tool = api.agents.read"]);
    let revoked = cli(&["token", "mint"]);
    cli(&["token", "revoke", &revoked]);
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    for id in ["mine", "other"] {
        let body = json!({"id": id, "kind": "counter"});
        assert_eq!(node.json("POST", "/agents", &token, &body).0, 201);
    }
    let add = json!({"add": 1}).to_string();

    // 400: malformed JSON, an unknown kind, a message the kind does not take.
    let (status, body) = node.call("POST", "/agents", Some(&token), b"{\"id\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let unknown_kind = json!({"id": "x", "kind": "no-such-kind"});
    assert_eq!(node.json("POST", "/agents", &token, &unknown_kind).0, 400);
    let bad_msg = json!({"mul": 2});
    assert_eq!(
        node.json("POST", "/agents/mine/messages", &token, &bad_msg)
            .0,
        400
    );

    // 401: no token, a garbage token, a token signed by another key, a revoked token.
    let (status, body) = node.call("POST", "/agents/mine/messages", None, add.as_bytes());
    assert_eq!(status, 401, "{body}");
    assert_eq!(node.get("/agents", "garbage").0, 401);
    let forged = toka_tools::Authority::from_secret(&[7; 32])
        .mint([])
        .unwrap()
        .to_string();
    assert_eq!(node.get("/agents", &forged).0, 401);
    assert_eq!(node.get("/agents", &revoked).0, 401);

    // 403: `agent = other` may message `other` only; `tool = api.agents.read` may read.
    let path = "/agents/mine/messages";
    let (status, body) = node.call("POST", path, Some(&other_only), add.as_bytes());
    assert_eq!(status, 403, "{body}");
    let path = "/agents/other/messages";
    assert_eq!(
        node.call("POST", path, Some(&other_only), add.as_bytes()).0,
        202
    );
    assert_eq!(node.get("/agents", &read_only).0, 200);
    let spawn = json!({"id": "y", "kind": "counter"});
    assert_eq!(node.json("POST", "/agents", &read_only, &spawn).0, 403);

    // 404: an unknown agent, an unknown parent, an unknown route.
    assert_eq!(node.get("/agents/nobody", &token).0, 404);
    let ask = json!("get");
    assert_eq!(node.json("POST", "/agents/nobody/ask", &token, &ask).0, 404);
    let orphan = json!({"id": "z", "kind": "counter", "parent": "nobody"});
    assert_eq!(node.json("POST", "/agents", &token, &orphan).0, 404);
    assert_eq!(node.get("/no/such/route", &token).0, 404);

    // 409: the id is taken.
    let again = json!({"id": "mine", "kind": "counter"});
    let (status, body) = node.json("POST", "/agents", &token, &again);
    assert_eq!(status, 409, "{body}");

    // 413: over the 1 MiB body limit.
    let big = vec![b' '; 2 << 20];
    let (status, _) = node.call("POST", "/agents/mine/messages", Some(&token), &big);
    assert_eq!(status, 413);

    // DELETE stops the agent; then it is unknown.
    assert_eq!(
        node.call("DELETE", "/agents/other", Some(&token), b"").0,
        200
    );
    assert_eq!(node.get("/agents/other", &token).0, 404);

    // The node took all of that in its stride.
    assert_eq!(node.call("GET", "/health", None, b"").0, 200);
    assert_eq!(value_of(&node, &token, "mine"), json!({"value": 0}));
    let (status, events) = node.get("/events?from=1&limit=2", &token);
    assert_eq!(status, 200);
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    assert!(node.sigterm().success());
}

#[test]
fn tools_come_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"warn\"\ndurability = \"fsync\"\n[tools]\nfs_root = {:?}\n\
             [[agents]]\nid = \"ops\"\nkind = \"supervisor\"\n\
             [[agents]]\nid = \"hits\"\nkind = \"counter\"\nparent = \"ops\"\n",
            files.to_str().unwrap()
        ),
    )
    .unwrap();
    cli(&dir, &["init"]);
    let reader = cli(&dir, &["token", "mint", "--caveat", "tool = fs.read"]);
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    let token = admin_token(&dir);

    // The config's agents started at boot.
    let boot = vec![
        ("ops".to_owned(), "supervisor".to_owned(), Value::Null),
        ("hits".to_owned(), "counter".to_owned(), json!("ops")),
    ];
    assert_eq!(tree(&node, &token), boot);
    let add = json!({"add": 2});
    assert_eq!(
        node.json("POST", "/agents/hits/messages", &token, &add).0,
        202
    );

    assert_eq!(
        tool_names(&node, &token),
        ["fs.list", "fs.read", "fs.write"]
    );

    let write = json!({"path": "note.txt", "content": "hello"});
    let (status, out) = node.json("POST", "/tools/fs.write/invoke", &token, &write);
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        std::fs::read_to_string(files.join("note.txt")).unwrap(),
        "hello"
    );
    let read = json!({"path": "note.txt"});
    let (status, out) = node.json("POST", "/tools/fs.read/invoke", &reader, &read);
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["content"], "hello");
    let (status, out) = node.json("POST", "/tools/fs.write/invoke", &reader, &write);
    assert_eq!(status, 403, "{out}");
    let bad = json!({"nope": 1});
    assert_eq!(
        node.json("POST", "/tools/fs.read/invoke", &token, &bad).0,
        400
    );
    assert_eq!(
        node.json("POST", "/tools/no.such/invoke", &token, &read).0,
        404
    );
    assert!(node.sigterm().success());

    // On restart the boot agents are recovered, not spawned again.
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    assert_eq!(tree(&node, &token), boot);
    assert_eq!(value_of(&node, &token, "hits"), json!({"value": 2}));
    assert!(node.sigterm().success());
}

/// `run` configured only through `TOKA_*` variables, with `key_file` in the config file:
/// the variables take effect (and override the file's `listen`), logs are JSON lines,
/// and the journal is encrypted (offline commands need `--key-file`).
#[test]
fn toka_variables_and_the_config_key_file_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = tmp.path().join("journal.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nkey_file = {:?}\n[[agents]]\nid = \"hits\"\nkind = \"counter\"\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .env("TOKA_DATA_DIR", &dir)
        .env("TOKA_LISTEN", "127.0.0.1:0")
        .env("TOKA_CONFIG", &config)
        .env("TOKA_LOG", "info")
        .env("TOKA_LOG_JSON", "1")
        .env("TOKA_DURABILITY", "buffered")
        .env("TOKA_ASK_TIMEOUT_MS", "3000")
        .env_remove("TOKA_KEY_FILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting toka-node run");
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let node = Node::listening(child, stdout);
    let token = admin_token(&dir);
    let (status, _) = node.json("POST", "/agents/hits/messages", &token, &json!({"add": 4}));
    assert_eq!(status, 202);
    let (status, reply) = node.json("POST", "/agents/hits/ask", &token, &json!("get"));
    assert_eq!((status, reply), (200, json!({"value": 4})));
    assert!(node.sigterm().success());
    let logs = errors.join().unwrap();
    let json_lines = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["level"] == "INFO")
        .count();
    assert!(
        json_lines > 0,
        "no JSON info logs (TOKA_LOG, TOKA_LOG_JSON): {logs}"
    );

    // The journal is encrypted with the config's key.
    let without = Command::new(BIN)
        .args(["agents", "tree", "--data-dir"])
        .arg(&dir)
        .env_remove("TOKA_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2), "{without:?}");
    let tree = cli(
        &dir,
        &["agents", "tree", "--key-file", key.to_str().unwrap()],
    );
    assert_eq!(tree, "hits (counter)");

    // Bad values in the variables are errors, not silently ignored.
    let bad = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(&dir)
        .env("TOKA_DURABILITY", "sometimes")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sometimes"));
}

#[test]
fn a_token_minted_attenuated_used_then_revoked_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cli = |args: &[&str]| cli(&dir, args);
    cli(&["init"]);
    let admin = admin_token(&dir);
    let minted = cli(&[
        "token",
        "mint",
        "--caveat",
        "tool = api.agents.*",
        "--ttl",
        "1h",
    ]);
    // Attenuation needs no key and no data dir.
    let out = Command::new(BIN)
        .args(["token", "attenuate", &minted, "--caveat", "agent = c1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let node = Node::start(&dir);
    let spawn = json!({"id": "c1", "kind": "counter"});
    assert_eq!(node.json("POST", "/agents", &admin, &spawn).0, 201);
    let add = json!({"add": 3});
    // Used: the attenuated token may message c1, and nothing else.
    assert_eq!(
        node.json("POST", "/agents/c1/messages", &narrowed, &add).0,
        202
    );
    let other = json!({"id": "c2", "kind": "counter"});
    assert_eq!(node.json("POST", "/agents", &narrowed, &other).0, 403);
    assert!(node.sigterm().success());

    // Revoked offline (by the identifier it shares with the minted token), then rejected.
    cli(&["token", "revoke", &minted, "--reason", "test"]);
    let node = Node::start(&dir);
    assert_eq!(
        node.json("POST", "/agents/c1/messages", &narrowed, &add).0,
        401
    );
    assert_eq!(
        node.json("POST", "/agents/c1/messages", &minted, &add).0,
        401
    );
    let (status, value) = node.json("POST", "/agents/c1/ask", &admin, &json!("get"));
    assert_eq!((status, value), (200, json!({"value": 3})));
    assert!(node.sigterm().success());
}

/// `POST /agents/{id}/query`: a counter's value without a journal record; scoped by
/// `api.agents.query`; every message acknowledged before it is seen.
#[test]
fn queries_read_state_without_writing_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    let (status, _) = node.json(
        "POST",
        "/agents",
        &token,
        &json!({"id": "c", "kind": "counter"}),
    );
    assert_eq!(status, 201);
    for n in 1..=20 {
        let (status, _) = node.json("POST", "/agents/c/messages", &token, &json!({"add": 1}));
        assert_eq!(status, 202);
        let (status, answer) = node.json("POST", "/agents/c/query", &token, &json!("get"));
        assert_eq!((status, answer), (200, json!({"value": n})));
    }
    // Let the runtime's progress records settle, then 200 queries add nothing.
    let mut head = journal_head(&node, &token);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let now = journal_head(&node, &token);
        if now == head {
            break;
        }
        head = now;
    }
    for _ in 0..200 {
        let (status, answer) = node.json("POST", "/agents/c/query", &token, &json!("get"));
        assert_eq!((status, answer), (200, json!({"value": 20})));
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        journal_head(&node, &token),
        head,
        "queries grew the journal"
    );
    // An ask still works, and is journaled.
    assert_eq!(value_of(&node, &token, "c"), json!({"value": 20}));
    assert!(journal_head(&node, &token) > head);

    // Errors: a query the kind does not know, a kind without queries, scoping.
    let (status, body) = node.json("POST", "/agents/c/query", &token, &json!({"add": 1}));
    assert_eq!(status, 400, "{body}");
    let (status, _) = node.json(
        "POST",
        "/agents",
        &token,
        &json!({"id": "s", "kind": "supervisor"}),
    );
    assert_eq!(status, 201);
    let (status, body) = node.json("POST", "/agents/s/query", &token, &json!("children"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("answers no queries"),
        "{body}"
    );
    let (status, _) = node.json("POST", "/agents/nobody/query", &token, &json!("get"));
    assert_eq!(status, 404);
    node.kill_9();
    let reader = cli(
        &dir,
        &["token", "mint", "--caveat", "tool = api.agents.read"],
    );
    let querier = cli(
        &dir,
        &["token", "mint", "--caveat", "tool = api.agents.query"],
    );
    let node = Node::start(&dir);
    let (status, _) = node.json("POST", "/agents/c/query", &reader, &json!("get"));
    assert_eq!(status, 403);
    let (status, answer) = node.json("POST", "/agents/c/query", &querier, &json!("get"));
    assert_eq!((status, answer), (200, json!({"value": 20})));
    assert!(node.sigterm().success());
}

/// With no config file, `toka-node run` is a useful node: fs tools confined to
/// `DATA/workspace`, no shell, and stderr says where the console is and how to read the
/// admin token, without ever printing the token.
#[test]
fn first_run_without_config_serves_an_fs_workspace_and_points_at_the_console() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("toka-data");
    let stderr_path = tmp.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env_remove("TOKA_LISTEN")
        .env_remove("TOKA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let node = Node::listening(child, stdout);
    let token = admin_token(&dir);

    assert_eq!(
        tool_names(&node, &token),
        ["fs.list", "fs.read", "fs.write"]
    );
    let write = json!({"path": "hello.txt", "content": "hi"});
    let (status, out) = node.json("POST", "/tools/fs.write/invoke", &token, &write);
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.join("workspace/hello.txt")).unwrap(),
        "hi"
    );
    let escape = json!({"path": "../admin.token"});
    let (status, out) = node.json("POST", "/tools/fs.read/invoke", &token, &escape);
    assert_eq!(status, 400, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("traversal"),
        "{out}"
    );

    assert_eq!(node.sigterm().code(), Some(0));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let addr_line = stderr
        .lines()
        .find(|line| line.contains("console at http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no console URL in:\n{stderr}"));
    assert!(addr_line.ends_with("/ui"), "{addr_line}");
    let token_path = dir.join("admin.token");
    assert!(
        stderr.contains(&format!("cat {}", token_path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "fs tools confined to {}",
            dir.join("workspace").display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the admin token leaked:\n{stderr}"
    );

    // The data directory and the workspace are private.
    use std::os::unix::fs::PermissionsExt;
    for private in [&dir, &dir.join("workspace")] {
        let mode = std::fs::metadata(private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", private.display());
    }

    // A workspace that is a symbolic link (out of the data directory) is refused.
    std::fs::remove_dir_all(dir.join("workspace")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("workspace")).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env_remove("TOKA_LISTEN")
        .env_remove("TOKA_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a symbolic link"), "{err}");
}

/// The names `GET /tools` lists.
fn tool_names(node: &Node, token: &str) -> Vec<String> {
    let (status, tools) = node.get("/tools", token);
    assert_eq!(status, 200, "{tools}");
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}
