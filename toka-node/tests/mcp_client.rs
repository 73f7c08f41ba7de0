//! MCP servers in the real node binary (`[mcp.NAME]`), against the npm servers in
//! `tests/peers` (`npm ci --prefix tests/peers`; a missing peer fails these tests):
//! - their tools in `GET /tools` (schema, side effect) and called over
//!   `POST /tools/{name}/invoke`, and from an assistant (scripted model);
//! - `kill -9` of the node while an assistant's MCP call runs: the servers die with the
//!   node; after the restart a read-only call is run again and the turn finishes, an
//!   external one is reported in doubt to the model and not sent again.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Node, admin_token, cli, transcript};
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

/// The entry point of npm package `@modelcontextprotocol/NAME` in `tests/peers`; fails
/// the test if it is not installed.
fn peer(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers/node_modules/@modelcontextprotocol")
        .join(name)
        .join("dist/index.js");
    assert!(
        path.is_file(),
        "the MCP peer {name} is missing at {}: run `npm ci --prefix tests/peers`",
        path.display()
    );
    path.canonicalize().unwrap()
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .canonicalize()
        .unwrap()
}

/// A data dir, a world-writable `mcp` directory (the servers' cwd; `files/` in it served
/// by the filesystem server), and a config with both servers (and `model`, if given).
fn setup(tmp: &Path, model: Option<&ModelServer>) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.join("data");
    cli(&dir, &["init"]);
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cwd = tmp.join("mcp");
    let files = cwd.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for d in [&cwd, &files] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::write(files.join("from.txt"), "move me").unwrap();
    let mut config = format!(
        "log = \"warn\"\n\
         [mcp.everything]\ncommand = [\"node\", {everything:?}, \"stdio\"]\ncwd = {cwd:?}\n\
         read_paths = [{peers:?}, \"/etc/ssl\"]\ntimeout_secs = 20\n\
         [mcp.fs]\ncommand = [\"node\", {fs:?}, {files:?}]\ncwd = {cwd:?}\n\
         read_paths = [{peers:?}, \"/etc/ssl\"]\n",
        everything = peer("server-everything"),
        fs = peer("server-filesystem"),
        peers = peers_dir(),
        cwd = cwd,
        files = files,
    );
    if let Some(model) = model {
        config.push_str(&format!(
            "[models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
             timeout_secs = 30\nmax_retries = 0\n",
            model.base_url()
        ));
    }
    let path = tmp.join("toka.toml");
    std::fs::write(&path, config).unwrap();
    (path, files)
}

fn start(tmp: &Path, config: &Path) -> Node {
    Node::start_with(&tmp.join("data"), &["--config", config.to_str().unwrap()])
}

/// The node's children running `script`.
fn children_running(node_pid: i32, script: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<i32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(node_pid)
            && String::from_utf8_lossy(&cmdline).contains(script.to_str().unwrap())
        {
            found.push(pid);
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) != Some("Z"))
        .unwrap_or(false)
}

fn signal(pid: i32, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn text_of(output: &Value) -> String {
    output["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn mcp_tools_are_listed_and_called_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, files) = setup(tmp.path(), None);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));

    let (status, tools) = node.get("/tools", &token);
    assert_eq!(status, 200, "{tools}");
    let tools = tools.as_array().unwrap();
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    let echo = find("mcp.everything.echo");
    assert_eq!(echo["side_effect"], "read-only");
    assert_eq!(echo["input_schema"]["type"], "object");
    assert_eq!(find("mcp.fs.write_file")["side_effect"], "idempotent");
    assert_eq!(find("mcp.fs.move_file")["side_effect"], "external");

    let (status, out) = node.json(
        "POST",
        "/tools/mcp.everything.echo/invoke",
        &token,
        &json!({"message": "over the API"}),
    );
    assert_eq!(status, 200, "{out}");
    assert!(text_of(&out).contains("over the API"), "{out}");
    let (status, out) = node.json(
        "POST",
        "/tools/mcp.fs.read_text_file/invoke",
        &token,
        &json!({"path": files.join("from.txt")}),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(text_of(&out), "move me");

    // Killed by someone: restarted by its supervisor, meanwhile "unavailable" (503).
    let servers = children_running(node.pid().as_raw(), &peer("server-everything"));
    assert_eq!(servers.len(), 1, "{servers:?}");
    signal(servers[0], "-9");
    let mut saw_unavailable = false;
    wait_for("the server to be back", Duration::from_secs(20), || {
        let (status, _) = node.json(
            "POST",
            "/tools/mcp.everything.echo/invoke",
            &token,
            &json!({"message": "again"}),
        );
        saw_unavailable |= status == 503;
        status == 200
    });
    let again = children_running(node.pid().as_raw(), &peer("server-everything"));
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], servers[0]);
    let _ = saw_unavailable; // a restart may be quicker than the first retry

    // SIGTERM: the node stops its servers.
    let fs_server = children_running(node.pid().as_raw(), &peer("server-filesystem"));
    assert!(node.sigterm().success());
    for pid in again.iter().chain(&fs_server) {
        wait_for("the server to be gone", Duration::from_secs(5), || {
            !alive(*pid)
        });
    }
}

fn spawn_assistant(node: &Node, token: &str, tools: &[&str]) {
    common::spawn_assistant(node, token, token, "You use tools.", tools);
}

/// Sends an ask whose connection will die with the node.
fn ask_in_background(node: &Node, token: &str, question: &str) -> std::thread::JoinHandle<()> {
    let addr = node.addr;
    let token = token.to_owned();
    let body = json!({"user": question}).to_string();
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

#[test]
fn an_assistant_calls_an_mcp_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = rt.block_on(ModelServer::start());
    let (config, _) = setup(tmp.path(), Some(&model));
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token, &["mcp.everything.get-sum"]);

    model.push(Reply::Json(chat_tool_calls(
        &[(
            "call_1",
            "mcp_everything_get-sum",
            json!({"a": 20, "b": 22}),
        )],
        50,
        10,
    )));
    model.push(Reply::Json(chat_text("It is 42.", 80, 5)));
    let (status, answer) = node.json(
        "POST",
        "/agents/helper/ask",
        &token,
        &json!({"user": "What is 20 + 22?"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answer"], "It is 42.");
    let sent = model.requests();
    // The model was offered the MCP tool with its schema, and got its result back.
    let offered = &sent[0].body["tools"][0]["function"];
    assert_eq!(offered["name"], "mcp_everything_get-sum", "{offered}");
    assert!(
        offered["parameters"]["properties"]["a"].is_object(),
        "{offered}"
    );
    let tool_message = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool_message["content"].as_str().unwrap().contains("42"),
        "{tool_message}"
    );
    assert!(node.sigterm().success());
}

#[test]
fn kill_9_of_the_node_mid_call_reruns_a_read_only_call_and_reports_an_external_one_in_doubt() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = rt.block_on(ModelServer::start());
    let (config, files) = setup(tmp.path(), Some(&model));
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(
        &node,
        &token,
        &[
            "mcp.everything.trigger-long-running-operation",
            "mcp.fs.move_file",
        ],
    );

    // 1. A read-only call (3 s) cut by kill -9: run again after the restart.
    model.push(Reply::Json(chat_tool_calls(
        &[(
            "call_1",
            "mcp_everything_trigger-long-running-operation",
            json!({"duration": 3, "steps": 3}),
        )],
        50,
        10,
    )));
    let asker = ask_in_background(&node, &token, "Run the long operation.");
    wait_for("the model's first step", Duration::from_secs(20), || {
        model.requests().len() == 1
    });
    std::thread::sleep(Duration::from_millis(800));
    let servers: Vec<i32> = ["server-everything", "server-filesystem"]
        .iter()
        .flat_map(|p| children_running(node.pid().as_raw(), &peer(p)))
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    node.kill_9();
    let _ = asker.join();
    for pid in &servers {
        wait_for(
            "the MCP servers to die with the node",
            Duration::from_secs(5),
            || !alive(*pid),
        );
    }
    assert_eq!(model.requests().len(), 1, "no second step before the kill");

    model.push(Reply::Json(chat_text("Done.", 80, 5)));
    let node = start(tmp.path(), &config);
    wait_for("the turn to finish", Duration::from_secs(30), || {
        transcript(&node, &token)
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == "Done.")
    });
    let tool = transcript(&node, &token)
        .into_iter()
        .find(|e| e["role"] == "tool")
        .unwrap();
    assert!(
        tool["content"]
            .as_str()
            .unwrap()
            .contains("Long running operation completed"),
        "the read-only call was not run again: {tool}"
    );

    // 2. An external call (move_file) cut by kill -9: the server is stopped first, so the
    //    call is surely in flight; after the restart it is in doubt and not sent again.
    let fs_server = children_running(node.pid().as_raw(), &peer("server-filesystem"));
    assert_eq!(fs_server.len(), 1);
    signal(fs_server[0], "-STOP");
    let (from, to) = (files.join("from.txt"), files.join("to.txt"));
    model.push(Reply::Json(chat_tool_calls(
        &[(
            "call_2",
            "mcp_fs_move_file",
            json!({"source": from, "destination": to}),
        )],
        50,
        10,
    )));
    let before = model.requests().len();
    let asker = ask_in_background(&node, &token, "Move the file.");
    wait_for("the model's step", Duration::from_secs(20), || {
        model.requests().len() == before + 1
    });
    std::thread::sleep(Duration::from_millis(500));
    node.kill_9();
    let _ = asker.join();
    wait_for(
        "the stopped server to die with the node",
        Duration::from_secs(5),
        || !alive(fs_server[0]),
    );

    model.push(Reply::Json(chat_text("I could not tell.", 80, 5)));
    let node = start(tmp.path(), &config);
    wait_for("the second turn to finish", Duration::from_secs(30), || {
        transcript(&node, &token)
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == "I could not tell.")
    });
    let last_request = model.requests().last().unwrap().body.clone();
    let told = last_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(told.contains("outcome unknown"), "{told}");
    // Never sent again: the file is where it was.
    assert!(from.exists() && !to.exists());
    assert!(node.sigterm().success());
}
