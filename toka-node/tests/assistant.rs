//! The built-in `assistant` kind on the real node binary, with a model from `[models.NAME]`
//! whose API key is in the vault (`secret set`), against a scripted OpenAI-compatible
//! server on 127.0.0.1:
//! - a turn over HTTP (a tool call, then the answer), the transcript query, the key sent
//!   to the model and found in no export of the journal nor in `secret list`;
//! - `kill -9` while the model answers a turn's second step: after the restart the turn
//!   finishes on its own; the completed first step is not asked again;
//! - `kill -9` right after the model answered a step that calls a tool (before or while the
//!   tool runs, at several offsets): the turn finishes on its own, and the model is asked
//!   each step once, except a step whose answer the journal had not recorded yet;
//! - `kill -9` while an `external` tool (`shell.exec` appending a line to a file, then
//!   sleeping) runs: after the restart the line is there once (the tool is not run again),
//!   the model is told the outcome is unknown, and the turn finishes.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Node, admin_token, cli, transcript};
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

const KEY: &str = "sk-node-test-4f1c9e2b7a6d3c8e5b0a";

/// A data dir with `files/notes.txt`, the key in the vault, and a config naming the model
/// `local` at `server` and the file tools; returns the config file.
fn setup(tmp: &Path, server: &ModelServer) -> std::path::PathBuf {
    setup_with(tmp, server, "")
}

/// As [`setup`], with `tools` (TOML lines) added to the `[tools]` table.
fn setup_with(tmp: &Path, server: &ModelServer, tools: &str) -> std::path::PathBuf {
    let dir = tmp.join("data");
    let files = common::notes_dir(tmp);
    cli(&dir, &["init"]);
    common::set_secret(&dir, "openai-key", KEY);
    let config = tmp.join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"warn\"\n[tools]\nfs_root = {:?}\n{tools}\n\
             [models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
             api_key_secret = \"openai-key\"\ntimeout_secs = 30\nmax_retries = 0\n",
            files.to_str().unwrap(),
            server.base_url(),
        ),
    )
    .unwrap();
    config
}

fn start(tmp: &Path, config: &Path) -> Node {
    Node::start_with(&tmp.join("data"), &["--config", config.to_str().unwrap()])
}

fn spawn_assistant(node: &Node, token: &str) {
    spawn_assistant_with(node, token, &["fs.read"]);
}

fn spawn_assistant_with(node: &Node, token: &str, tools: &[&str]) {
    common::spawn_assistant(
        node,
        token,
        token,
        "You answer questions about files.",
        tools,
    );
}

#[test]
fn an_assistant_answers_over_http_with_a_key_from_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    server.push(common::read_notes());
    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let (status, answer) = node.json(
        "POST",
        "/agents/helper/ask",
        &token,
        &json!({"user": "When is the meeting?"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answer"], "On Thursday, in room B.");
    assert_eq!(answer["steps"], 2);
    let roles: Vec<String> = transcript(&node, &token)
        .iter()
        .map(|e| e["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let tool = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool["content"].as_str().unwrap().contains("room B"),
        "{tool}"
    );
    assert!(node.sigterm().success());

    // The key is nowhere in the journal, nor in what `secret list` prints.
    let dir = tmp.path().join("data");
    let export = cli(&dir, &["events", "export", "--json"]);
    assert!(!export.contains(KEY), "the API key is in the journal");
    assert!(
        !export.contains(&token),
        "the assistant's token is in the journal in clear"
    );
    assert_eq!(cli(&dir, &["secret", "list"]), "openai-key");
}

#[test]
fn a_turn_cut_by_kill_9_finishes_on_its_own_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    // Step 1 answers (a tool call); step 2 never does: the node is killed while it waits.
    server.push(common::read_notes());
    server.push(Reply::Hang);
    let addr_token = token.clone();
    let asker = {
        let addr = node.addr;
        std::thread::spawn(move || {
            // The connection dies with the node; nothing to check here.
            let _ = std::net::TcpStream::connect(addr).and_then(|mut s| {
                let body = json!({"user": "When is the meeting?"}).to_string();
                write!(
                    s,
                    "POST /agents/helper/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {addr_token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                let mut sink = Vec::new();
                std::io::Read::read_to_end(&mut s, &mut sink)
            });
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second step never reached the model"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill_9();
    let _ = asker.join();

    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let node = start(tmp.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = transcript(&node, &token);
        if entries
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == "On Thursday, in room B.")
        {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not finish: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    common::assert_cut_turn_finished_once(&entries, &server.requests());
    assert!(node.sigterm().success());
}

/// Asks `helper` a question on a thread of its own; the answer is not read (the
/// connection dies with the node).
fn ask_in_background(node: &Node, token: &str, user: &str) -> std::thread::JoinHandle<()> {
    let (addr, token) = (node.addr, token.to_owned());
    let body = json!({ "user": user }).to_string();
    std::thread::spawn(move || {
        let _ = std::net::TcpStream::connect(addr).and_then(|mut s| {
            write!(
                s,
                "POST /agents/helper/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut sink)
        });
    })
}

/// Polls `done` every millisecond for at most 20 s; panics with `what` after that.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The transcript once its last entry is the assistant's `answer` (at most 20 s).
fn finished_transcript(node: &Node, token: &str, answer: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = transcript(node, token);
        if entries
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == answer)
        {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not finish: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn roles(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect()
}

/// The payloads of the effect outcomes (`toka.result`) in `helper`'s stream, read offline
/// from the journal of the stopped node.
fn recorded_outcomes(dir: &Path) -> Vec<Vec<u8>> {
    let listed = cli(
        dir,
        &["events", "list", "--json", "--stream", "agent/helper"],
    );
    listed
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| e["kind"].as_str().unwrap().starts_with("toka.result"))
        .map(|e| match (&e["payload"]["utf8"], &e["payload"]["hex"]) {
            (Value::String(text), _) => text.as_bytes().to_vec(),
            (_, Value::String(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
            _ => panic!("a payload neither text nor hex: {e}"),
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// How often each distinct request body was sent, in first-seen order.
fn asked(server: &ModelServer) -> Vec<(Value, usize)> {
    let mut counts: Vec<(Value, usize)> = Vec::new();
    for request in server.requests() {
        match counts.iter_mut().find(|(body, _)| *body == request.body) {
            Some((_, n)) => *n += 1,
            None => counts.push((request.body, 1)),
        }
    }
    counts
}

/// `kill -9` at several offsets right after the model answered step 1 (a call of
/// `fs.read`): before the node read the answer, while it records it, while the tool runs,
/// or once it waits for step 2 (which hangs). Whatever the offset, after the restart the
/// turn finishes on its own, with one tool result; step 1 is asked again only if the
/// journal had not recorded its answer (checked offline, between kill and restart), and
/// step 2 again only if the kill cut it off.
#[test]
fn a_kill_9_right_after_a_model_answer_asks_no_recorded_step_again() {
    for offset_ms in [0, 1, 5, 50] {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
        let config = setup(tmp.path(), &server);
        let node = start(tmp.path(), &config);
        let token = admin_token(&tmp.path().join("data"));
        spawn_assistant(&node, &token);

        server.push(common::read_notes());
        server.push(Reply::Hang);
        let asker = ask_in_background(&node, &token, "When is the meeting?");
        // The server took step 1's reply: it is answering (or answered) it.
        wait_for("step 1 to be answered", || server.queued() < 2);
        std::thread::sleep(Duration::from_millis(offset_ms));
        node.kill_9();
        let _ = asker.join();
        let step_2_cut = server.queued() == 0;
        server.clear();

        let dir = tmp.path().join("data");
        let outcomes = recorded_outcomes(&dir);
        let step_1_recorded = outcomes.iter().any(|o| contains(o, "call_1"));
        let tool_recorded = outcomes.iter().any(|o| contains(o, "room B"));
        assert!(
            step_1_recorded || !tool_recorded,
            "offset {offset_ms} ms: the tool's outcome is recorded but not the answer that asked for it"
        );

        if !step_1_recorded {
            // It will be asked again: the model answers it as before.
            server.push(common::read_notes());
        }
        server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
        let node = start(tmp.path(), &config);
        let entries = finished_transcript(&node, &token, "On Thursday, in room B.");
        assert_eq!(
            roles(&entries),
            ["user", "assistant", "tool", "assistant"],
            "offset {offset_ms} ms: one turn, one tool call"
        );
        assert!(
            entries[2]["content"].as_str().unwrap().contains("room B"),
            "{entries:#?}"
        );
        assert!(node.sigterm().success());

        let asked = asked(&server);
        assert_eq!(
            asked.len(),
            2,
            "offset {offset_ms} ms: two distinct steps: {asked:#?}"
        );
        let step_1 = asked[0].1;
        let step_2 = asked[1].1;
        assert_eq!(
            step_1,
            if step_1_recorded { 1 } else { 2 },
            "offset {offset_ms} ms: step 1 (answer recorded: {step_1_recorded}) asked {step_1} times"
        );
        assert_eq!(
            step_2,
            if step_2_cut { 2 } else { 1 },
            "offset {offset_ms} ms: step 2 (cut off by the kill: {step_2_cut}) asked {step_2} times"
        );
        // Whatever is asked again is asked as it was: the second step carries the file.
        let tool = asked[1].0["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool")
            .unwrap()
            .clone();
        assert!(
            tool["content"].as_str().unwrap().contains("room B"),
            "{tool}"
        );
        eprintln!(
            "offset {offset_ms} ms: step 1 answer recorded {step_1_recorded}, tool outcome recorded {tool_recorded}, step 2 cut {step_2_cut}"
        );
    }
}

/// `kill -9` while an `external` tool runs: `shell.exec` runs `sh`, which appends a line
/// to `ledger.txt` in its jail (the effect), then sleeps. The node is killed once the line
/// is there. After the restart the call is in doubt: it is not run again (the ledger holds
/// one line, also well after the turn ended), the model is told the outcome is unknown
/// (in its next request and in the transcript), and the turn finishes.
#[test]
fn a_kill_9_during_an_external_tool_never_runs_it_again_and_tells_the_model() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // As root the sandbox runs `sh` as `nobody`: it must reach and write its jail.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let jail = tmp.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ledger = jail.join("ledger.txt");
    let lines = || {
        std::fs::read_to_string(&ledger)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup_with(
        tmp.path(),
        &server,
        &format!(
            "shell_jail = {:?}\nshell_allow = [\"sh\", \"sleep\"]\nshell_timeout_secs = 120\nshell_cpu_seconds = 120\n",
            jail.to_str().unwrap()
        ),
    );
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant_with(&node, &token, &["fs.read", "shell.exec"]);

    server.push(Reply::Json(chat_tool_calls(
        &[(
            "call_ledger",
            "shell_exec",
            json!({"program": "sh", "args": ["-c", "echo paid >> ledger.txt; sleep 60"]}),
        )],
        60,
        12,
    )));
    let asker = ask_in_background(&node, &token, "Pay the invoice.");
    wait_for("the tool's side effect", || lines() == 1);
    node.kill_9();
    let _ = asker.join();
    assert_eq!(server.requests().len(), 1);

    server.push(Reply::Json(chat_text(
        "I cannot tell whether the payment went through; please check.",
        90,
        8,
    )));
    let node = start(tmp.path(), &config);
    let entries = finished_transcript(
        &node,
        &token,
        "I cannot tell whether the payment went through; please check.",
    );
    assert_eq!(roles(&entries), ["user", "assistant", "tool", "assistant"]);
    let told = entries[2]["content"].as_str().unwrap();
    assert!(told.starts_with("outcome unknown"), "transcript: {told}");
    assert_eq!(entries[2]["tool_call_id"], "call_ledger");

    let sent = server.requests();
    assert_eq!(sent.len(), 2, "step 1 once, then the step told the outcome");
    assert_ne!(sent[0].body, sent[1].body);
    let tool = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool["content"]
            .as_str()
            .unwrap()
            .starts_with("outcome unknown"),
        "the model was not told: {tool}"
    );
    // Had the tool run again, its line would be there by now (it appends first).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(), 1, "the external tool ran again");

    // A second restart replays the recorded doubt: nothing runs or is asked again.
    assert!(node.sigterm().success());
    let node = start(tmp.path(), &config);
    assert_eq!(transcript(&node, &token), entries);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(lines(), 1);
    assert!(node.sigterm().success());
}
