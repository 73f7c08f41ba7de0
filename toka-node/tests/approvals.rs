//! Durable human approvals on the real node binary (issue 13):
//! - an API client's call with an `approval = required` token waits (202); an approver
//!   scoped to other tools is refused; approval runs it exactly once, a denial never;
//! - a pending approval survives `kill -9` (same id, not asked again);
//! - `kill -9` right after an approval: the call still runs exactly once;
//! - an undecided approval expires (counts as denied: 409 to a late decision, never runs);
//! - an assistant whose call waits: its ask says so, its transcript shows the wait while
//!   other agents go on answering, the CLI approves, and the turn goes on by itself,
//!   also across a `kill -9` while it waits;
//! - no token in any approval JSON, event or CLI output.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Node, admin_token, cli, transcript};
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

const KEY: &str = "sk-approvals-test-5d2e8c1b9f7a4e6d0c3b";

/// A data dir and a config with the file tools in `files/`, plus `extra` config text
/// (in the `[tools]` table).
struct Setup {
    tmp: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(tools_extra: &str, rest: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let files = tmp.path().join("files");
        std::fs::create_dir(&files).unwrap();
        cli(&tmp.path().join("data"), &["init"]);
        let config = tmp.path().join("toka.toml");
        std::fs::write(
            &config,
            format!(
                "log = \"warn\"\n[tools]\nfs_root = {:?}\n{tools_extra}\n{rest}",
                files.to_str().unwrap()
            ),
        )
        .unwrap();
        Setup { tmp, config }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join("files").join(name)
    }

    fn start(&self) -> Node {
        Node::start_with(&self.dir(), &["--config", self.config.to_str().unwrap()])
    }

    fn admin(&self) -> String {
        admin_token(&self.dir())
    }
}

/// `token attenuate TOKEN --caveat C...`: (token, identifier).
fn attenuate(token: &str, caveats: &[&str]) -> (String, String) {
    let mut args = vec!["token", "attenuate", token, "--json"];
    for caveat in caveats {
        args.extend(["--caveat", caveat]);
    }
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        json["token"].as_str().unwrap().to_owned(),
        json["identifier"].as_str().unwrap().to_owned(),
    )
}

/// `toka-node approvals ARGS` against `node` with the token in a file; (success, stdout,
/// stderr).
fn approvals_cli(node: &Node, token_file: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("approvals")
        .args(args)
        .arg("--node")
        .arg(format!("http://{}", node.addr))
        .arg("--token-file")
        .arg(token_file)
        .env_remove("TOKA_TOKEN")
        .env_remove("TOKA_NODE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn invoke_write(node: &Node, token: &str, path: &str, content: &str) -> (u16, Value) {
    node.json(
        "POST",
        "/tools/fs.write/invoke",
        token,
        &json!({"path": path, "content": content}),
    )
}

/// Invokes `fs.write` and expects 202 with a pending approval; its id.
fn pending_write(node: &Node, token: &str, path: &str, content: &str) -> String {
    let (status, body) = invoke_write(node, token, path, content);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    let id = body["approval"].as_str().unwrap().to_owned();
    assert!(id.starts_with("apr-"), "{body}");
    id
}

fn approval(node: &Node, token: &str, id: &str) -> Value {
    let (status, body) = node.get(&format!("/approvals/{id}"), token);
    assert_eq!(status, 200, "{body}");
    body
}

fn decide(node: &Node, token: &str, id: &str, decision: &str, reason: &str) -> (u16, Value) {
    node.json(
        "POST",
        &format!("/approvals/{id}"),
        token,
        &json!({"decision": decision, "reason": reason}),
    )
}

/// Polls approval `id` until `done` holds (at most 20 s).
fn wait_for(
    node: &Node,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = approval(node, token, id);
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The decoded approval records of `GET /events` (`{"requested": ...}` etc.).
fn approval_events(node: &Node, token: &str) -> Vec<Value> {
    let (status, events) = node.get("/events?from=1&limit=1000", token);
    assert_eq!(status, 200, "{events}");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == "toka/approvals")
        .map(|e| {
            assert_eq!(e["kind"], "toka.approval@1", "{e}");
            assert!(
                e["approval"].is_object(),
                "an undecoded approval record: {e}"
            );
            e["approval"].clone()
        })
        .collect()
}

/// How many approval records of kind `step` (`requested`, `decided`, `started`,
/// `finished`, `expired`) approval `id` has.
fn count(events: &[Value], step: &str, id: &str) -> usize {
    events.iter().filter(|e| e[step]["id"] == id).count()
}

/// Panics if any of `tokens` appears in `text`.
fn no_tokens(text: &str, tokens: &[&str], what: &str) {
    for token in tokens {
        assert!(!text.contains(token), "a token in {what}: {text}");
    }
}

#[test]
fn an_api_call_waits_runs_once_when_approved_and_never_when_denied() {
    let setup = Setup::new("", "");
    let node = setup.start();
    let admin = setup.admin();
    let (asker, asker_id) = attenuate(&admin, &["approval = required"]);
    let (shell_approver, _) = attenuate(&admin, &["tool = api.approvals.decide.shell.*"]);
    let (reader, _) = attenuate(&admin, &["tool = api.approvals.read"]);
    let (agent_approver, _) = attenuate(&admin, &["agent = helper"]);
    let (fs_approver, fs_approver_id) = attenuate(&admin, &["tool = api.approvals.decide.fs.*"]);
    let tokens = [
        admin.as_str(),
        &asker,
        &shell_approver,
        &reader,
        &agent_approver,
        &fs_approver,
    ];

    let id = pending_write(&node, &asker, "a.txt", "hello");
    assert!(
        !setup.file("a.txt").exists(),
        "the call ran before approval"
    );
    let (status, listed) = node.get("/approvals", &reader);
    assert_eq!(status, 200, "{listed}");
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "pending");
    assert_eq!(listed[0]["tool"], "fs.write");
    assert_eq!(
        listed[0]["input"],
        json!({"path": "a.txt", "content": "hello"})
    );
    assert_eq!(
        listed[0]["token"],
        asker_id.as_str(),
        "the asking token's id"
    );
    assert!(listed[0].get("agent").is_none());

    // Approvers whose caveats do not cover fs.write (or this caller) are refused.
    for token in [&shell_approver, &reader, &agent_approver] {
        let (status, body) = decide(&node, token, &id, "approve", "");
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("forbidden"),
            "{body}"
        );
    }
    // A token sees what it may read or decide.
    for (token, seen) in [
        (&shell_approver, 0),
        (&agent_approver, 0),
        (&fs_approver, 1),
    ] {
        let (status, body) = node.get("/approvals", token);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.as_array().unwrap().len(), seen, "{body}");
    }
    let (status, body) = node.get(&format!("/approvals/{id}"), &shell_approver);
    assert_eq!(status, 403, "{body}");
    assert_eq!(approval(&node, &fs_approver, &id)["status"], "pending");
    let (status, body) = node.get("/approvals?agent=helper&status=pending", &reader);
    assert_eq!((status, body), (200, json!([])));
    // Malformed bodies and unknown ids.
    let (status, body) = node.json(
        "POST",
        &format!("/approvals/{id}"),
        &fs_approver,
        &json!({"decision": "maybe"}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = decide(&node, &fs_approver, "apr-nope", "approve", "");
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !setup.file("a.txt").exists(),
        "a refused decision ran the call"
    );

    let (status, decided) = decide(&node, &fs_approver, &id, "approve", "looks fine");
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], fs_approver_id.as_str());
    assert_eq!(decided["reason"], "looks fine");
    let done = wait_for(&node, &reader, &id, "the approved call never ran", |a| {
        a.get("output").is_some()
    });
    assert_eq!(done["status"], "approved");
    assert_eq!(done["started"], true);
    assert_eq!(done["output"], json!({"path": "/a.txt", "bytes": 5}));
    assert_eq!(
        std::fs::read_to_string(setup.file("a.txt")).unwrap(),
        "hello"
    );
    let (status, body) = decide(&node, &fs_approver, &id, "deny", "");
    assert_eq!(status, 409, "deciding twice: {body}");

    // Denied: never runs.
    let denied = pending_write(&node, &asker, "b.txt", "never");
    assert_ne!(denied, id);
    let (status, body) = decide(&node, &fs_approver, &denied, "deny", "not today");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "denied");
    std::thread::sleep(Duration::from_millis(500));
    let body = approval(&node, &reader, &denied);
    assert_eq!(body["status"], "denied");
    assert_eq!(body["started"], false);
    assert!(
        body.get("output").is_none() && body.get("error").is_none(),
        "{body}"
    );
    assert!(!setup.file("b.txt").exists(), "a denied call ran");
    let (status, body) = decide(&node, &fs_approver, &denied, "approve", "");
    assert_eq!(status, 409, "approving a denied call: {body}");

    // The journal says the same, once each; no token anywhere.
    let events = approval_events(&node, &admin);
    assert_eq!(count(&events, "requested", &id), 1);
    assert_eq!(count(&events, "decided", &id), 1);
    assert_eq!(count(&events, "started", &id), 1, "{events:#?}");
    assert_eq!(count(&events, "finished", &id), 1, "{events:#?}");
    assert_eq!(count(&events, "decided", &denied), 1);
    assert_eq!(count(&events, "started", &denied), 0);
    let decided = events
        .iter()
        .find(|e| e["decided"]["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        decided["decided"]["approver"],
        fs_approver_id.as_str(),
        "audit: who decided"
    );
    assert_eq!(decided["decided"]["decision"], "approve");
    let (_, all) = node.get("/events?from=1&limit=1000", &admin);
    no_tokens(&all.to_string(), &tokens, "the events");
    let (_, listed) = node.get("/approvals", &admin);
    no_tokens(&listed.to_string(), &tokens, "GET /approvals");

    // The event stream shows the requests and decisions as they happen.
    let mut stream = node.stream_events(&admin, 1);
    let third = pending_write(&node, &asker, "c.txt", "x");
    let (status, _) = decide(&node, &fs_approver, &third, "deny", "");
    assert_eq!(status, 200);
    let seen = read_until(
        &mut stream,
        &format!("\"decided\":{{\"approver\":\"{fs_approver_id}\""),
    );
    assert!(seen.contains("\"requested\":{\"agent\":null"), "{seen}");
    no_tokens(&seen, &tokens, "the event stream");
    drop(stream);
    assert!(node.sigterm().success());
}

/// Reads the SSE `stream` until `needle` appears (at most 20 s); what was read.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0; 8192];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle} in {}",
            String::from_utf8_lossy(&seen)
        );
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn a_pending_approval_survives_kill_9_and_is_not_asked_again() {
    let setup = Setup::new("", "");
    let node = setup.start();
    let admin = setup.admin();
    let (asker, _) = attenuate(&admin, &["approval = fs.*"]);
    let id = pending_write(&node, &asker, "a.txt", "hello");
    node.kill_9();

    let node = setup.start();
    let body = approval(&node, &admin, &id);
    assert_eq!(body["status"], "pending", "{body}");
    // The same call again waits for the same approval.
    assert_eq!(pending_write(&node, &asker, "a.txt", "hello"), id);
    let (_, listed) = node.get("/approvals", &admin);
    assert_eq!(listed.as_array().unwrap().len(), 1, "asked again: {listed}");
    assert!(!setup.file("a.txt").exists());
    let (status, _) = decide(&node, &admin, &id, "approve", "");
    assert_eq!(status, 200);
    wait_for(&node, &admin, &id, "never ran", |a| {
        a.get("output").is_some()
    });
    assert_eq!(
        std::fs::read_to_string(setup.file("a.txt")).unwrap(),
        "hello"
    );
    assert!(node.sigterm().success());
}

#[test]
fn an_approval_cut_by_kill_9_runs_exactly_once_after_the_restart() {
    let setup = Setup::new("", "");
    let admin = setup.admin();
    let (asker, _) = attenuate(&admin, &["approval = required"]);
    let (mut after_restart, mut cut) = (0, 0);
    let rounds = 3;
    for round in 0..rounds {
        let node = setup.start();
        let file = format!("r{round}.txt");
        let id = pending_write(&node, &asker, &file, "once");
        let (status, _) = decide(&node, &admin, &id, "approve", "");
        assert_eq!(status, 200);
        // Killed at once: the run the decision started may not have begun, or be cut.
        node.kill_9();
        let killed_at = now_micros();

        let node = setup.start();
        let done = wait_for(&node, &admin, &id, "the approved call never ran", |a| {
            a.get("output").is_some()
        });
        assert_eq!(
            done["output"],
            json!({"path": format!("/{file}"), "bytes": 4})
        );
        assert_eq!(std::fs::read_to_string(setup.file(&file)).unwrap(), "once");
        let (_, raw) = node.get("/events?from=1&limit=1000", &admin);
        let finished: Vec<&Value> = raw
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["approval"]["finished"]["id"] == id.as_str())
            .collect();
        assert_eq!(finished.len(), 1, "ran more than once: {finished:#?}");
        let events = approval_events(&node, &admin);
        assert_eq!(count(&events, "started", &id), 1, "{events:#?}");
        if finished[0]["timestamp_micros"].as_u64().unwrap() > killed_at {
            after_restart += 1;
        }
        let started = raw
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["approval"]["started"]["id"] == id.as_str());
        if started.is_some_and(|e| e["timestamp_micros"].as_u64().unwrap() < killed_at) {
            cut += 1;
        }
        assert!(node.sigterm().success());
    }
    eprintln!(
        "{after_restart} of {rounds} approved calls finished after the restart ({cut} of them \
         had started before the kill)"
    );
    // The kill lands within a millisecond of the decision's answer, before the run's two
    // fsynced records: the restart path is what this test exercises.
    assert!(after_restart > 0, "every run finished before the kill");
}

fn now_micros() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

#[test]
fn an_undecided_approval_expires_and_never_runs() {
    let setup = Setup::new("approval = [\"fs.write\"]\napproval_ttl_secs = 1", "");
    let node = setup.start();
    let admin = setup.admin();
    // The config makes fs.write wait, whatever the token says.
    let id = pending_write(&node, &admin, "late.txt", "too late");
    assert_eq!(approval(&node, &admin, &id)["status"], "pending");
    let expired = wait_for(&node, &admin, &id, "never expired", |a| {
        a["status"] == "expired"
    });
    assert!(expired.get("decided_by").is_none());
    let (status, body) = decide(&node, &admin, &id, "approve", "");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Expired"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!setup.file("late.txt").exists(), "an expired call ran");
    // The sweeper journals the expiry (within about a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = approval_events(&node, &admin);
        if count(&events, "expired", &id) > 0 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "no expiry journaled: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(count(&events, "expired", &id), 1, "{events:#?}");
    assert_eq!(count(&events, "started", &id), 0);
    assert_eq!(count(&events, "decided", &id), 0);
    // fs.read is not in the list: it runs at once.
    std::fs::write(setup.file("n.txt"), "now").unwrap();
    let (status, body) = node.json(
        "POST",
        "/tools/fs.read/invoke",
        &admin,
        &json!({"path": "n.txt"}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(node.sigterm().success());
}

// ---- an assistant whose tool call waits ----

/// The vault key and a `[models.local]` at `server`.
fn assistant_setup(server: &ModelServer) -> Setup {
    let models = format!(
        "[models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
         api_key_secret = \"openai-key\"\ntimeout_secs = 30\nmax_retries = 0\n",
        server.base_url()
    );
    let setup = Setup::new("", &models);
    common::set_secret(&setup.dir(), "openai-key", KEY);
    setup
}

/// Spawns assistant `helper` (fs.write, its token waits for approval of fs.write) and
/// counter `hits`; the assistant's token.
fn spawn_agents(node: &Node, admin: &str) -> String {
    let (token, _) = attenuate(admin, &["approval = fs.write"]);
    common::spawn_assistant(node, admin, &token, "You write files.", &["fs.write"]);
    let (status, body) = node.json(
        "POST",
        "/agents",
        admin,
        &json!({"id": "hits", "kind": "counter"}),
    );
    assert_eq!(status, 201, "{body}");
    token
}

const FINAL: &str = "I wrote done to out.txt.";

fn script(server: &ModelServer) {
    server.push(Reply::Json(chat_tool_calls(
        &[(
            "call_1",
            "fs_write",
            json!({"path": "out.txt", "content": "done"}),
        )],
        50,
        10,
    )));
    server.push(Reply::Json(chat_text(FINAL, 70, 9)));
}

/// Asks `helper` to write; expects the turn to wait; the approval's id.
fn ask_waits(node: &Node, admin: &str) -> String {
    let (status, answer) = node.json(
        "POST",
        "/agents/helper/ask",
        admin,
        &json!({"user": "Write done to out.txt"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stopped"], "approval", "{answer}");
    let approvals = answer["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{answer}");
    approvals[0].as_str().unwrap().to_owned()
}

/// The transcript while the turn waits: the call, then a tool entry saying it waits.
fn assert_waiting(node: &Node, admin: &str, id: &str) {
    let entries = transcript(node, admin);
    let roles: Vec<&str> = entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{entries:#?}");
    assert_eq!(
        entries[1]["tool_calls"][0]["name"], "fs.write",
        "{entries:#?}"
    );
    assert_eq!(
        entries[2]["content"],
        format!("waiting for approval ({id})"),
        "{entries:#?}"
    );
}

/// Waits for the turn to end with the model's final answer; checks the file and that the
/// model was asked each step once.
fn assert_turn_finished(node: &Node, admin: &str, server: &ModelServer, setup: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = transcript(node, admin);
        if entries
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == FINAL)
        {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not go on: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let roles: Vec<&str> = entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "{entries:#?}"
    );
    assert!(
        entries[2]["content"].as_str().unwrap().contains("out.txt"),
        "the tool's real result: {entries:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(setup.file("out.txt")).unwrap(),
        "done"
    );
    let sent = server.requests();
    assert_eq!(sent.len(), 2, "each step once: {sent:#?}");
    assert_ne!(sent[0].body, sent[1].body);
}

#[test]
fn an_assistant_waits_for_approval_and_goes_on_when_the_cli_approves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let setup = assistant_setup(&server);
    let node = setup.start();
    let admin = setup.admin();
    let helper_token = spawn_agents(&node, &admin);
    script(&server);

    let id = ask_waits(&node, &admin);
    assert_waiting(&node, &admin, &id);
    assert!(!setup.file("out.txt").exists());
    let body = approval(&node, &admin, &id);
    assert_eq!(body["agent"], "helper");
    assert_eq!(body["tool"], "fs.write");
    assert_eq!(body["status"], "pending");
    // Another agent answers meanwhile; the assistant itself says it waits.
    let (status, _) = node.json("POST", "/agents/hits/messages", &admin, &json!({"add": 2}));
    assert_eq!(status, 202);
    assert_eq!(common::value_of(&node, &admin, "hits"), json!({"value": 2}));
    let (status, busy) = node.json(
        "POST",
        "/agents/helper/ask",
        &admin,
        &json!({"user": "more?"}),
    );
    assert_eq!(status, 200, "{busy}");
    assert_eq!(busy["stopped"], "busy", "{busy}");
    assert_eq!(busy["approvals"], json!([id]));

    // The CLI lists it, then approves it.
    let token_file = setup.dir().join("admin.token");
    let (ok, out, err) = approvals_cli(&node, &token_file, &["list"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{out}"));
    for word in ["pending", "fs.write", "helper", "out.txt"] {
        assert!(line.contains(word), "{word} missing: {out}");
    }
    assert!(out.starts_with("ID "), "{out}");
    let (ok, out, err) = approvals_cli(
        &node,
        &token_file,
        &["list", "--json", "--status", "pending"],
    );
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    no_tokens(&out, &[&admin, &helper_token], "approvals list --json");
    let (ok, out, err) = approvals_cli(&node, &token_file, &["approve", &id, "--reason", "ok"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("approved {id} (fs.write)"));
    let (ok, _, err) = approvals_cli(&node, &token_file, &["deny", &id]);
    assert!(!ok, "deciding twice");
    assert!(err.contains("409"), "{err}");

    assert_turn_finished(&node, &admin, &server, &setup);
    let events = approval_events(&node, &admin);
    assert_eq!(count(&events, "started", &id), 1);
    assert_eq!(count(&events, "finished", &id), 1);
    let (_, all) = node.get("/events?from=1&limit=1000", &admin);
    no_tokens(&all.to_string(), &[&admin, &helper_token], "the events");
    assert!(node.sigterm().success());
}

#[test]
fn an_assistant_waiting_across_kill_9_goes_on_after_the_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let setup = assistant_setup(&server);
    let node = setup.start();
    let admin = setup.admin();
    spawn_agents(&node, &admin);
    script(&server);
    let id = ask_waits(&node, &admin);
    node.kill_9();

    let node = setup.start();
    assert_waiting(&node, &admin, &id);
    assert_eq!(approval(&node, &admin, &id)["status"], "pending");
    let token_file = setup.dir().join("admin.token");
    let (ok, out, err) = approvals_cli(&node, &token_file, &["approve", &id]);
    assert!(ok, "{err}");
    assert!(out.starts_with("approved "), "{out}");
    assert_turn_finished(&node, &admin, &server, &setup);
    assert!(node.sigterm().success());

    // After another restart nothing runs or asks again.
    let node = setup.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(transcript(&node, &admin).len(), 4);
    assert_eq!(server.requests().len(), 2);
    let events = approval_events(&node, &admin);
    assert_eq!(count(&events, "started", &id), 1);
    assert!(node.sigterm().success());
}

#[test]
fn a_denied_assistant_call_tells_the_model_and_never_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let setup = assistant_setup(&server);
    let node = setup.start();
    let admin = setup.admin();
    spawn_agents(&node, &admin);
    script(&server);
    let id = ask_waits(&node, &admin);
    let (status, body) = decide(&node, &admin, &id, "deny", "no");
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = transcript(&node, &admin);
        if entries.len() == 4 {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not go on: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let told = entries[2]["content"].as_str().unwrap();
    assert!(
        told.contains("Denied") || told.contains("denied"),
        "{entries:#?}"
    );
    assert!(!setup.file("out.txt").exists(), "a denied call ran");
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].body.to_string().contains(&id),
        "the model hears of the denial"
    );
    assert!(node.sigterm().success());
}

#[test]
fn concurrent_decisions_of_one_approval_run_it_once() {
    let setup = Setup::new("", "");
    let node = setup.start();
    let admin = setup.admin();
    let (asker, _) = attenuate(&admin, &["approval = required"]);
    for round in 0..3 {
        let id = pending_write(&node, &asker, &format!("c{round}.txt"), "x");
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let deciders: Vec<_> = (0..8)
                .map(|_| s.spawn(|| decide(&node, &admin, &id, "approve", "").0))
                .collect();
            deciders.into_iter().map(|d| d.join().unwrap()).collect()
        });
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 409),
            "{statuses:?}"
        );
        wait_for(&node, &admin, &id, "never ran", |a| {
            a.get("output").is_some()
        });
        let events = approval_events(&node, &admin);
        assert_eq!(count(&events, "decided", &id), 1, "{events:#?}");
        assert_eq!(count(&events, "started", &id), 1, "{events:#?}");
        assert_eq!(count(&events, "finished", &id), 1, "{events:#?}");
    }
    assert!(node.sigterm().success());
}
