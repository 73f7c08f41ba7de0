//! The node's MCP server (`/mcp`, feature `mcp`) against a real MCP client: the official
//! Python SDK (`mcp` on PyPI, pinned in `tests/peers/requirements.txt`), run as a child
//! process by `tests/peers/mcp_client.py` against the real `toka-node` binary.
//!
//! The MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`, pinned in
//! `tests/peers/package.json`) is the second client: it declares Node >= 22.19, yet its CLI
//! runs on the Node 20 of Toka's machines, which [`the_mcp_inspector_cli_lists_and_calls`]
//! checks.
//!
//! The peers are installed by `tests/peers/setup.sh` (CI's `.ci/run` calls it). Without
//! them these tests fail, saying so: they never skip.
#![cfg(feature = "mcp")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Node, admin_token, cli};
use serde_json::{Value, json};

/// The peer's Python (the venv `tests/peers/setup.sh` makes).
fn peer_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/.venv/bin/python");
    assert!(
        python.is_file(),
        "the MCP test peer is missing: run toka-node/tests/peers/setup.sh (it installs the \
         Python `mcp` client in a venv; .ci/run does it)"
    );
    python
}

/// Runs the MCP Inspector's CLI against `node` with `token` and `args` (after the URL);
/// its exit code and what it printed as JSON (`null` if nothing was): the result on
/// stdout, or its own error on stderr. It exits 5 when the result is an error.
fn inspector(node: &Node, token: &str, args: &[&str]) -> (i32, Value) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/peers/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js",
    );
    assert!(
        bin.is_file(),
        "the MCP Inspector is missing: run toka-node/tests/peers/setup.sh (.ci/run does it)"
    );
    let out = Command::new("node")
        .arg(bin)
        .arg("--cli")
        .arg(format!("http://{}/mcp", node.addr))
        .args(args)
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("starting node (the MCP Inspector)");
    let code = out.status.code().unwrap_or(-1);
    // A result on stdout; an error of the Inspector's own on stderr.
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
    let report = json(&out.stdout)
        .or_else(|| json(&out.stderr))
        .unwrap_or(Value::Null);
    (code, report)
}

/// Runs the Python MCP client against `node` with `token` and `steps`; its JSON report.
fn mcp(node: &Node, token: &str, steps: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let mut child = Command::new(peer_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the MCP client");
    let plan = json!({
        "url": format!("http://{}/mcp", node.addr),
        "token": token,
        "steps": steps,
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "MCP client printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The names of a `list` step's tools.
fn names(step: &Value) -> Vec<&str> {
    step["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tool list: {step}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

/// The tool named `name` in a `list` step.
fn tool<'a>(step: &'a Value, name: &str) -> &'a Value {
    step["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {step}"))
}

/// A metric's value from `GET /metrics`.
fn metric(node: &Node, token: &str, name: &str) -> u64 {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// A node with `fs.*` tools over a files directory holding `note.txt` and `pub/a.txt`,
/// and two counters, `hits` and `other`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    node: Node,
    admin: String,
}

impl Fixture {
    fn start() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let files = tmp.path().join("files");
        std::fs::create_dir_all(files.join("pub")).unwrap();
        std::fs::write(files.join("note.txt"), "hello from toka").unwrap();
        std::fs::write(files.join("pub/a.txt"), "public").unwrap();
        let config = tmp.path().join("toka.toml");
        std::fs::write(
            &config,
            format!(
                "log = \"warn\"\n[tools]\nfs_root = {:?}\n\
                 [[agents]]\nid = \"hits\"\nkind = \"counter\"\n\
                 [[agents]]\nid = \"other\"\nkind = \"counter\"\n",
                files.to_str().unwrap()
            ),
        )
        .unwrap();
        cli(&dir, &["init"]);
        let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
        let admin = admin_token(&dir);
        Fixture {
            _tmp: tmp,
            dir,
            node,
            admin,
        }
    }

    /// The admin token attenuated with `caveats` (offline, needing no data directory:
    /// minting would, and the running node holds it).
    fn mint(&self, caveats: &[&str]) -> String {
        let mut command = Command::new(common::BIN);
        command.args(["token", "attenuate", &self.admin]);
        for caveat in caveats {
            command.args(["--caveat", caveat]);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{caveats:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

#[test]
fn an_admin_token_sees_every_tool_and_agent_and_calls_them() {
    let fx = Fixture::start();
    let report = mcp(
        &fx.node,
        &fx.admin,
        json!([
            {"op": "list"},
            {"op": "call", "name": "fs.read", "args": {"path": "note.txt"}},
            {"op": "call", "name": "agents.ask", "args": {"agent": "hits", "message": {"add": 3}}},
            {"op": "call", "name": "agents.ask", "args": {"agent": "hits", "message": "get"}},
            {"op": "call", "name": "fs.read", "args": {"nope": 1}},
            {"op": "call", "name": "no.such", "args": {}},
            {"op": "call", "name": "agents.ask", "args": {"agent": "nobody", "message": "get"}},
        ]),
    );
    assert_eq!(report["server"]["name"], "toka-node", "{report}");
    let steps = report["steps"].as_array().unwrap();

    assert_eq!(
        names(&steps[0]),
        ["agents.ask", "fs.list", "fs.read", "fs.write"]
    );
    let read = tool(&steps[0], "fs.read");
    assert_eq!(read["annotations"]["readOnlyHint"], true, "{read}");
    assert_eq!(read["inputSchema"]["type"], "object", "{read}");
    let write = tool(&steps[0], "fs.write");
    assert_eq!(write["annotations"]["readOnlyHint"], false, "{write}");
    let ask = tool(&steps[0], "agents.ask");
    assert_eq!(
        ask["inputSchema"]["properties"]["agent"]["enum"],
        json!(["hits", "other"]),
        "{ask}"
    );

    assert_eq!(steps[1]["isError"], false, "{}", steps[1]);
    assert_eq!(steps[1]["structured"]["content"], "hello from toka");
    assert!(
        steps[1]["text"]
            .as_str()
            .unwrap()
            .contains("hello from toka")
    );

    assert_eq!(steps[2]["isError"], false, "{}", steps[2]);
    assert_eq!(steps[2]["structured"], json!({"value": 3}));
    assert_eq!(steps[3]["structured"], json!({"value": 3}));

    // Bad input: an error result the model can read, not a protocol error.
    assert_eq!(steps[4]["isError"], true, "{}", steps[4]);
    assert_eq!(steps[4]["structured"]["kind"], "InvalidInput");
    let text: Value = serde_json::from_str(steps[4]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, steps[4]["structured"], "the text is the same JSON");

    // An unknown tool is a JSON-RPC error (-32602), as the spec asks.
    assert_eq!(steps[5]["rpcError"]["code"], -32602, "{}", steps[5]);
    // An unknown agent: 404, as over HTTP.
    assert_eq!(steps[6]["isError"], true, "{}", steps[6]);
    assert_eq!(steps[6]["structured"]["status"], 404, "{}", steps[6]);

    // The ask went through the journal like an HTTP ask: the counter kept it.
    assert_eq!(
        common::value_of(&fx.node, &fx.admin, "hits"),
        json!({"value": 3})
    );
    assert!(fx.node.sigterm().success());
}

#[test]
fn a_scoped_token_sees_and_calls_only_what_it_allows() {
    let fx = Fixture::start();
    let reader = fx.mint(&["tool = fs.read"]);
    let denials_before = metric(&fx.node, &fx.admin, "toka_tool_denials_total");
    let report = mcp(
        &fx.node,
        &reader,
        json!([
            {"op": "list"},
            {"op": "call", "name": "fs.read", "args": {"path": "note.txt"}},
            {"op": "call", "name": "fs.write", "args": {"path": "note.txt", "content": "pwned"}},
            {"op": "call", "name": "agents.ask", "args": {"agent": "hits", "message": {"add": 1}}},
        ]),
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(names(&steps[0]), ["fs.read"], "{}", steps[0]);
    assert_eq!(steps[1]["structured"]["content"], "hello from toka");

    // Not listed, and denied when called anyway: by the tool host, audited.
    assert_eq!(steps[2]["isError"], true, "{}", steps[2]);
    assert_eq!(steps[2]["structured"]["kind"], "Denied", "{}", steps[2]);
    assert!(
        steps[2]["structured"]["error"]
            .as_str()
            .unwrap()
            .contains("fs.write"),
        "{}",
        steps[2]
    );
    let files = fx._tmp.path().join("files/note.txt");
    assert_eq!(std::fs::read_to_string(files).unwrap(), "hello from toka");
    assert_eq!(
        metric(&fx.node, &fx.admin, "toka_tool_denials_total"),
        denials_before + 1
    );
    // Asking needs `api.agents.ask`: 403, as over HTTP; nothing reached the counter.
    assert_eq!(steps[3]["isError"], true, "{}", steps[3]);
    assert_eq!(steps[3]["structured"]["status"], 403, "{}", steps[3]);
    assert_eq!(
        common::value_of(&fx.node, &fx.admin, "hits"),
        json!({"value": 0})
    );

    // Input caveats still apply to the call: a path-limited reader sees fs.read, and reads
    // only under its prefix.
    let public = fx.mint(&["tool = fs.read", "path-prefix = /pub"]);
    let report = mcp(
        &fx.node,
        &public,
        json!([
            {"op": "list"},
            {"op": "call", "name": "fs.read", "args": {"path": "pub/a.txt"}},
            {"op": "call", "name": "fs.read", "args": {"path": "note.txt"}},
        ]),
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(names(&steps[0]), ["fs.read"]);
    assert_eq!(steps[1]["structured"]["content"], "public", "{}", steps[1]);
    assert_eq!(steps[2]["structured"]["kind"], "Denied", "{}", steps[2]);

    // An agent-scoped asker sees only `agents.ask`, naming only its agent.
    let asker = fx.mint(&["tool = api.agents.ask", "agent = hits"]);
    let report = mcp(
        &fx.node,
        &asker,
        json!([
            {"op": "list"},
            {"op": "call", "name": "agents.ask", "args": {"agent": "hits", "message": {"add": 5}}},
            {"op": "call", "name": "agents.ask", "args": {"agent": "other", "message": {"add": 5}}},
        ]),
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(names(&steps[0]), ["agents.ask"]);
    assert_eq!(
        tool(&steps[0], "agents.ask")["inputSchema"]["properties"]["agent"]["enum"],
        json!(["hits"])
    );
    assert_eq!(steps[1]["structured"], json!({"value": 5}), "{}", steps[1]);
    assert_eq!(steps[2]["structured"]["status"], 403, "{}", steps[2]);
    assert_eq!(
        common::value_of(&fx.node, &fx.admin, "other"),
        json!({"value": 0})
    );

    // A token that allows nothing here still connects, and sees no tools.
    let metrics_only = fx.mint(&["tool = api.metrics.read"]);
    let report = mcp(&fx.node, &metrics_only, json!([{"op": "list"}]));
    assert_eq!(names(&report["steps"][0]), Vec::<&str>::new());
    assert!(fx.node.sigterm().success());
}

#[test]
fn bad_or_revoked_tokens_get_401_json() {
    let fx = Fixture::start();
    // The real client is turned away at once, with 401 JSON.
    let report = mcp(&fx.node, "not-a-token", json!([{"op": "list"}]));
    assert!(report.get("steps").is_none(), "{report}");
    assert_eq!(report["statuses"], json!([401]), "{report}");
    let body: Value = serde_json::from_str(report["errorBodies"][0].as_str().unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("invalid token"),
        "{body}"
    );

    // On the wire: 401 with a JSON error, with and without a token.
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    });
    for token in [Some("not-a-token"), None] {
        let (status, body) = fx
            .node
            .call("POST", "/mcp", token, init.to_string().as_bytes());
        assert_eq!(status, 401, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // rmcp's own refusals are JSON too (the node's error layer): no SSE stream to GET in
    // a stateless server (405), a POST that does not accept JSON (406).
    let (status, body) = fx.node.call("GET", "/mcp", Some(&fx.admin), b"");
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = fx
        .node
        .call("POST", "/mcp", Some(&fx.admin), init.to_string().as_bytes());
    assert_eq!(status, 406, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // A revoked token: 401 too, though it worked a moment before. (Revoking it revokes the
    // admin token it was attenuated from: they share an identifier.)
    let reader = fx.mint(&["tool = fs.read"]);
    let report = mcp(&fx.node, &reader, json!([{"op": "list"}]));
    assert_eq!(names(&report["steps"][0]), ["fs.read"]);
    let (status, _) = fx.node.json(
        "POST",
        "/tools/fs.read/invoke",
        &reader,
        &json!({"path": "note.txt"}),
    );
    assert_eq!(status, 200);
    assert!(fx.node.sigterm().success());
    cli(&fx.dir, &["token", "revoke", &reader, "--reason", "test"]);
    let node = Node::start_with(&fx.dir, &[]);
    let report = mcp(&node, &reader, json!([{"op": "list"}]));
    assert_eq!(report["statuses"], json!([401]), "{report}");
    assert!(
        report["errorBodies"][0]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{report}"
    );
    assert!(node.sigterm().success());
}

#[test]
fn the_mcp_inspector_cli_lists_and_calls() {
    let fx = Fixture::start();
    let reader = fx.mint(&["tool = fs.read"]);

    let (code, list) = inspector(&fx.node, &reader, &["--method", "tools/list"]);
    assert_eq!(code, 0, "{list}");
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fs.read"]);

    let read = [
        "--method",
        "tools/call",
        "--tool-name",
        "fs.read",
        "--tool-arg",
        "path=note.txt",
    ];
    let (code, out) = inspector(&fx.node, &reader, &read);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["isError"], false, "{out}");
    assert_eq!(
        out["structuredContent"]["content"], "hello from toka",
        "{out}"
    );

    // A tool the token does not list: the Inspector will not even call it (exit 5,
    // "tool_not_found").
    let write = [
        "--method",
        "tools/call",
        "--tool-name",
        "fs.write",
        "--tool-arg",
        "path=note.txt",
        "content=pwned",
    ];
    let (code, out) = inspector(&fx.node, &reader, &write);
    assert_eq!(code, 5, "{out}");
    assert_eq!(out["error"]["code"], "tool_not_found", "{out}");
    assert_eq!(
        std::fs::read_to_string(fx._tmp.path().join("files/note.txt")).unwrap(),
        "hello from toka"
    );
    // A listed tool called outside the token's path prefix: denied by the tool host.
    let public = fx.mint(&["tool = fs.read", "path-prefix = /pub"]);
    let (code, out) = inspector(&fx.node, &public, &read);
    assert_eq!(code, 5, "{out}");
    assert_eq!(out["isError"], true, "{out}");
    assert_eq!(out["structuredContent"]["kind"], "Denied", "{out}");

    // JSON arguments reach the agent as JSON.
    let ask = [
        "--method",
        "tools/call",
        "--tool-name",
        "agents.ask",
        "--tool-arg",
        "agent=hits",
        r#"message={"add": 7}"#,
    ];
    let (code, out) = inspector(&fx.node, &fx.admin, &ask);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["structuredContent"], json!({"value": 7}), "{out}");

    // A bad token: refused (the Inspector then wants OAuth, which Toka does not offer).
    let (code, out) = inspector(&fx.node, "not-a-token", &["--method", "tools/list"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.get("tools").is_none(), "{out}");
    assert!(fx.node.sigterm().success());
}

#[test]
fn a_call_that_needs_approval_waits_over_mcp_and_runs_once_approved() {
    let fx = Fixture::start();
    let writer = fx.mint(&["approval = fs.write"]);
    let report = mcp(
        &fx.node,
        &writer,
        json!([
            {"op": "call", "name": "fs.write", "args": {"path": "out.txt", "content": "approved"}},
        ]),
    );
    let step = &report["steps"][0];
    // Not an error: the client learns the approval it waits for.
    assert_eq!(step["isError"], false, "{step}");
    assert_eq!(step["structured"]["status"], "pending", "{step}");
    let id = step["structured"]["approval"].as_str().unwrap().to_owned();
    let out = fx._tmp.path().join("files/out.txt");
    assert!(!out.exists(), "nothing ran before the decision");
    // Approved (here with the CLI against the running node), the call runs, once.
    let decided = Command::new(common::BIN)
        .args(["approvals", "approve", &id, "--node"])
        .arg(format!("http://{}", fx.node.addr))
        .env("TOKA_TOKEN", &fx.admin)
        .output()
        .unwrap();
    assert!(decided.status.success(), "{decided:?}");
    for _ in 0..100 {
        if out.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "approved");
}
