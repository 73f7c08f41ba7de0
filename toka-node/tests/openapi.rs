//! The node's OpenAPI description (`GET /openapi.json`) checked against the real
//! `toka-node` binary:
//!
//! - `the_description_lists_every_route_and_each_answers`: the route table of the server's
//!   module docs (`src/server.rs`, the list people read) and the description name the same
//!   (method, path) pairs, but for the console's static files; each of them answers with
//!   something else than the router's fallback (`404 {"error": "no such route"}`) or a 405;
//!   on each described path the methods the router allows (its 405's `Allow`) are exactly
//!   the described ones; and paths next to the described ones are the fallback's.
//! - `schemathesis_finds_no_failure`: schemathesis (PyPI, pinned in
//!   `tests/schemathesis/requirements.txt`, installed by `tests/schemathesis/setup.sh`)
//!   fuzzes every operation with valid and invalid input under an admin token, with every
//!   check but `positive_data_acceptance` (below): no 5xx, and every status, content type,
//!   header and body (server-sent events included) as described. What differs per operation
//!   is in `tests/schemathesis/schemathesis.toml`. It finds schemathesis in
//!   `tests/schemathesis/.venv` or at `TOKA_SCHEMATHESIS`; without it the test says so and
//!   passes, unless `TOKA_REQUIRE_SCHEMATHESIS` is set (CI sets it): then it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Node, admin_token, cli};
use serde_json::{Value, json};

/// The console's routes, which the description leaves out on purpose (a web page's
/// files, not an API: `openapi::UNDESCRIBED` in the server).
const UNDESCRIBED: &[&str] = &["/ui", "/ui/{file}"];

/// One HTTP exchange, as far as it goes: status, headers (lower-case names), and the body
/// (the whole of it for a `Content-Length` answer; what came within a moment for a stream).
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    /// Whether this is the router's fallback: no such route.
    fn is_fallback(&self) -> bool {
        self.status == 404
            && serde_json::from_str::<Value>(&self.body)
                .is_ok_and(|v| v["error"] == "no such route")
    }
}

/// `method path` with `token` and a JSON `body`; reads the head and the body, or (for a
/// stream, which may never end) what arrives within half a second of the head.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 8192];
    let split = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "{method} {path}: closed before a response head");
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&seen[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = seen[split + 4..].to_vec();
    if let Some(length) = headers.get("content-length") {
        let length: usize = length.parse().unwrap();
        while body.len() < length {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "{method} {path}: body cut short");
            body.extend_from_slice(&buf[..n]);
        }
    } else {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            body.extend_from_slice(&buf[..n]);
        }
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The description the node serves (without a token).
fn description(node: &Node) -> Value {
    let answer = request(node.addr, "GET", "/openapi.json", None, "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.headers["content-type"].starts_with("application/json"),
        "{:?}",
        answer.headers
    );
    serde_json::from_str(&answer.body).unwrap()
}

/// The described (METHOD, path) pairs.
fn described(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The (METHOD, path) pairs of the route table in the server's module docs: the first cell
/// of each row, e.g. `` `POST /agents/{id}/ask` (`?timeout_ms=N`) `` or
/// `` `GET /ui`, `GET /ui/{file}` ``, without the query.
fn documented() -> BTreeSet<(String, String)> {
    let source = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/server.rs"));
    let mut out = BTreeSet::new();
    for row in source.lines().filter_map(|l| l.strip_prefix("//! | `")) {
        let first_cell = row.split(" | ").next().unwrap();
        for quoted in format!("`{first_cell}").split('`').skip(1).step_by(2) {
            let Some((method, path)) = quoted.split_once(' ') else {
                continue;
            };
            if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method) {
                let path = path.split('?').next().unwrap();
                out.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert!(out.len() > 20, "the route table was not found: {out:?}");
    out
}

/// `path` with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                "no-such-thing"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `path` is one of `template`'s (a `{param}` takes any one segment).
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[test]
fn the_description_lists_every_route_and_each_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    let spec = description(&node);
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let described = described(&spec);

    // The table and the description agree, but for the console.
    let documented: BTreeSet<_> = documented()
        .into_iter()
        .filter(|(_, path)| !UNDESCRIBED.contains(&path.as_str()))
        // `/mcp` is there with the `mcp` feature only.
        .filter(|(_, path)| cfg!(feature = "mcp") || path != "/mcp")
        .collect();
    let missing: Vec<_> = documented.difference(&described).collect();
    let extra: Vec<_> = described.difference(&documented).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes in the server's route table but not in /openapi.json: {missing:?}; \
         in /openapi.json but not in the table: {extra:?}"
    );

    // Every described route answers, with a token when it needs one.
    for (method, path) in &described {
        let public = spec["paths"][path][method.to_ascii_lowercase()]["security"] == json!([]);
        let body = if method == "GET" || method == "DELETE" {
            ""
        } else {
            "{}"
        };
        let answer = request(node.addr, method, &concrete(path), Some(&token), body);
        assert!(
            !answer.is_fallback() && answer.status != 405,
            "{method} {path} is described but not routed: {} {}",
            answer.status,
            answer.body
        );
        // Without a token: 401, unless it is public.
        let anonymous = request(node.addr, method, &concrete(path), None, body);
        if public {
            assert_ne!(anonymous.status, 401, "{method} {path}");
        } else {
            assert_eq!(anonymous.status, 401, "{method} {path}: {}", anonymous.body);
        }
    }

    // On each described path the router allows exactly the described methods.
    let paths: BTreeSet<&String> = described.iter().map(|(_, p)| p).collect();
    for path in &paths {
        let want: BTreeSet<&str> = described
            .iter()
            .filter(|(_, p)| p == *path)
            .map(|(m, _)| m.as_str())
            .collect();
        if *path == "/mcp" {
            continue; // rmcp's service takes every method and answers for itself.
        }
        let answer = request(node.addr, "PATCH", &concrete(path), Some(&token), "{}");
        assert_eq!(answer.status, 405, "PATCH {path}: {}", answer.body);
        let allowed: BTreeSet<&str> = answer.headers["allow"]
            .split(',')
            .map(str::trim)
            .filter(|m| *m != "HEAD")
            .collect();
        assert_eq!(
            allowed, want,
            "{path}: the methods routed and described differ"
        );
    }

    // Next to the described paths there is nothing: siblings, parents and a few guesses
    // are the fallback's, for every method.
    let mut around: BTreeSet<String> = [
        "/",
        "/api",
        "/docs",
        "/openapi",
        "/openapi.yaml",
        "/swagger.json",
        "/version",
        "/admin",
        "/debug",
        "/login",
        "/config",
        "/secrets",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for path in &paths {
        let segments: Vec<&str> = path.split('/').collect();
        for end in 2..=segments.len() {
            let parent = segments[..end].join("/");
            around.insert(format!("{}/nope", concrete(&parent)));
            around.insert(concrete(&parent));
        }
    }
    let mut checked = 0;
    for path in &around {
        let templates = paths.iter().map(|p| p.as_str());
        if templates
            .chain(UNDESCRIBED.iter().copied())
            .any(|template| matches(template, path))
        {
            continue;
        }
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let answer = request(node.addr, method, path, Some(&token), "{}");
            assert!(
                answer.is_fallback(),
                "{method} {path} answers {} {} but is not described",
                answer.status,
                answer.body
            );
            checked += 1;
        }
    }
    assert!(
        checked > 50,
        "only {checked} probes around the described paths"
    );
    node.sigterm();
}

/// schemathesis from `tests/schemathesis/.venv` (or `TOKA_SCHEMATHESIS`), or why not.
fn schemathesis() -> Result<PathBuf, String> {
    let path = std::env::var_os("TOKA_SCHEMATHESIS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/.venv/bin/schemathesis"),
        PathBuf::from,
    );
    if !path.is_file() {
        return Err(format!(
            "no schemathesis at {} (run toka-node/tests/schemathesis/setup.sh)",
            path.display()
        ));
    }
    Ok(path)
}

#[test]
fn schemathesis_finds_no_failure() {
    let schemathesis = match schemathesis() {
        Ok(found) => found,
        Err(missing) if std::env::var_os("TOKA_REQUIRE_SCHEMATHESIS").is_some() => {
            panic!("TOKA_REQUIRE_SCHEMATHESIS is set but {missing}")
        }
        Err(missing) => {
            eprintln!("skipping the schemathesis test: {missing}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("notes.txt"), "Meeting moved to Thursday.").unwrap();
    cli(&dir, &["init"]);
    let token = admin_token(&dir);
    // File tools, so `/tools/{name}/invoke` runs some (fs.write waits for an approval).
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"warn\"\n[tools]\nfs_root = {:?}\napproval = [\"fs.write\"]\n",
            files.to_str().unwrap()
        ),
    )
    .unwrap();
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    // The agent the description's examples name.
    let spawn = json!({"id": "c1", "kind": "counter", "args": {}});
    let (status, body) = node.json("POST", "/agents", &token, &spawn);
    assert_eq!(status, 201, "{body}");

    let report = tmp.path().join("report");
    let started = Instant::now();
    let out = Command::new(&schemathesis)
        // Per operation: what is left out, which 5xx is described, which `Accept` is sent.
        .arg("--config-file")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{}/openapi.json", node.addr))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Every check but one: `positive_data_acceptance` wants a 2xx for every input the
        // schema allows, but whether an agent kind, a tool name or a caveat exists is not a
        // schema's to say (an unknown one is a 400 or 404, as described).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "100", "--seed", "1", "--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its caches (`.schemathesis/`, hypothesis' database) go there, not in the tree.
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("schemathesis ran {elapsed:.1?}:\n{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The node is still well.
    let answer = request(node.addr, "GET", "/health", None, "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    node.sigterm();
}
