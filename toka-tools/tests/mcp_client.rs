//! The MCP client against real third-party MCP servers from npm (`tests/peers`, installed
//! by `npm ci`; `.ci/run` does it): `@modelcontextprotocol/server-everything` and
//! `@modelcontextprotocol/server-filesystem`, run by Node in Toka's sandbox.
//!
//! A missing peer fails these tests (it does not skip them): run `npm ci --prefix tests/peers`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toka_tools::mcp::{McpServer, McpServerConfig};
use toka_tools::{
    Authority, Caveat, SandboxPolicy, SideEffect, ToolErrorKind, ToolHost, ToolLimits,
};

/// `tests/peers` at the workspace root.
fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .canonicalize()
        .expect("tests/peers exists")
}

/// The entry point of npm package `@modelcontextprotocol/NAME`; panics (fails the test)
/// if it is not installed.
fn peer(name: &str) -> String {
    let path = peers()
        .join("node_modules/@modelcontextprotocol")
        .join(name)
        .join("dist/index.js");
    assert!(
        path.is_file(),
        "the MCP peer {name} is missing at {}: run `npm ci --prefix tests/peers`",
        path.display()
    );
    path.to_str().unwrap().to_owned()
}

/// A jail (world-writable, as the sandbox user is `nobody` under root).
fn jail(tmp: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let jail = tmp.join("jail");
    std::fs::create_dir_all(&jail).unwrap();
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o777)).unwrap();
    jail
}

/// The sandbox policy of a Node server: the peers readable, a long CPU budget.
fn policy(jail: &Path) -> SandboxPolicy {
    let mut policy = SandboxPolicy::new(jail);
    policy.system_paths.push(peers());
    // Node reads OpenSSL's configuration at start.
    policy.system_paths.push("/etc/ssl".into());
    policy.env.clear();
    policy.pass_env.clear();
    policy.cpu_seconds = 600;
    policy.address_space = 4 << 30;
    policy.open_files = 256;
    policy
}

fn everything(jail: &Path) -> McpServerConfig {
    McpServerConfig::stdio(
        "everything",
        vec!["node".into(), peer("server-everything"), "stdio".into()],
        policy(jail),
    )
}

fn filesystem(jail: &Path, root: &Path) -> McpServerConfig {
    McpServerConfig::stdio(
        "fs",
        vec![
            "node".into(),
            peer("server-filesystem"),
            root.to_str().unwrap().into(),
        ],
        policy(jail),
    )
}

async fn host_of(servers: &[&McpServer]) -> (ToolHost, toka_tools::Capability) {
    let authority = Authority::from_secret(b"mcp client tests root secret....");
    let token = authority
        .mint([Caveat::Tool("mcp.*".parse().unwrap())])
        .unwrap();
    let mut builder = ToolHost::builder(authority);
    for server in servers {
        builder = server.register(builder);
    }
    (builder.start().await.unwrap(), token)
}

fn text_of(output: &Value) -> String {
    output["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn process_alive(pid: i32) -> bool {
    // A zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) != Some("Z"))
        .unwrap_or(false)
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_their_schemas_and_side_effects_and_called_through_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let root = jail.join("files");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.txt"), "hello from a file").unwrap();
    let everything = McpServer::start(everything(&jail)).await.unwrap();
    let fs = McpServer::start(filesystem(&jail, &root)).await.unwrap();
    let (host, token) = host_of(&[&everything, &fs]).await;

    let names: Vec<String> = host.specs().into_iter().map(|s| s.name).collect();
    for expected in [
        "mcp.everything.echo",
        "mcp.everything.get-sum",
        "mcp.fs.read_text_file",
        "mcp.fs.write_file",
        "mcp.fs.edit_file",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let echo = host.spec("mcp.everything.echo").unwrap();
    assert_eq!(echo.side_effect, SideEffect::ReadOnly);
    assert_eq!(echo.input_schema["type"], "object");
    assert!(
        echo.input_schema["properties"]["message"].is_object(),
        "{}",
        echo.input_schema
    );
    assert!(!echo.description.is_empty());
    // readOnlyHint → read-only; idempotentHint → idempotent; neither → external.
    assert_eq!(
        host.spec("mcp.fs.read_text_file").unwrap().side_effect,
        SideEffect::ReadOnly
    );
    assert_eq!(
        host.spec("mcp.fs.write_file").unwrap().side_effect,
        SideEffect::Idempotent
    );
    assert_eq!(
        host.spec("mcp.fs.edit_file").unwrap().side_effect,
        SideEffect::External
    );
    assert_eq!(
        host.spec("mcp.fs.move_file").unwrap().side_effect,
        SideEffect::External
    );

    let out: Value = host
        .call(
            &token,
            Some("alice"),
            "mcp.everything.echo",
            &json!({"message": "hi there"}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("hi there"), "{out}");
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.everything.get-sum",
            &json!({"a": 2, "b": 40}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("42"), "{out}");
    let path = root.join("a.txt");
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.fs.read_text_file",
            &json!({"path": path}),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&out), "hello from a file");

    // A result the server marks as an error fails; bad arguments are the caller's fault.
    let err = host
        .call::<_, Value>(
            &token,
            None,
            "mcp.fs.read_text_file",
            &json!({"path": "/etc/passwd"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Failed, "{err}");
    let err = host
        .call::<_, Value>(&token, None, "mcp.everything.echo", &json!([1, 2]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::InvalidInput, "{err}");

    // Capability-checked like any tool.
    let narrow = host
        .authority()
        .mint([Caveat::Tool("mcp.fs.*".parse().unwrap())])
        .unwrap();
    let err = host
        .call::<_, Value>(
            &narrow,
            None,
            "mcp.everything.echo",
            &json!({"message": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Denied, "{err}");

    let pids = [everything.pid().unwrap(), fs.pid().unwrap()];
    host.shutdown().await;
    everything.shutdown().await;
    fs.shutdown().await;
    for pid in pids {
        eventually(
            "the server to be gone after shutdown",
            Duration::from_secs(5),
            || !process_alive(pid),
        )
        .await;
    }
    let err = host
        .call::<_, Value>(
            &token,
            None,
            "mcp.everything.echo",
            &json!({"message": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_in_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    // The host's PATH is on the allow-list; its HOME (and everything else) is not.
    assert!(std::env::var_os("HOME").is_some() && std::env::var_os("PATH").is_some());
    let mut config = everything(&jail);
    if let toka_tools::mcp::McpTransport::Stdio { policy, .. } = &mut config.transport {
        policy.pass_env = vec!["PATH".into()];
    }
    let server = McpServer::start(config).await.unwrap();
    let pid = server.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    if nix_is_root() {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains("65534")),
            "{status}"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let cpu = limits
        .lines()
        .find(|l| l.starts_with("Max cpu time"))
        .unwrap();
    assert!(cpu.contains("600"), "{cpu}");
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(files.contains("256"), "{files}");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, jail.canonicalize().unwrap());
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains("toka-sandbox"),
        "not in a run cgroup: {cgroup}"
    );

    let (host, token) = host_of(&[&server]).await;
    let out: Value = host
        .call(&token, None, "mcp.everything.get-env", &json!({}))
        .await
        .unwrap();
    let env: Value = serde_json::from_str(&text_of(&out)).unwrap();
    let env = env.as_object().unwrap();
    let keys: Vec<&String> = env.keys().collect();
    assert_eq!(keys, ["PATH"], "environment: {env:?}");
    assert_eq!(env["PATH"].as_str(), std::env::var("PATH").ok().as_deref());
    server.shutdown().await;
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_keeps_the_server_to_its_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "not for the server").unwrap();
    std::fs::set_permissions(
        outside.join("secret.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The server itself would allow the whole of tmp; the sandbox allows the jail only.
    let server = McpServer::start(filesystem(&jail, tmp.path()))
        .await
        .unwrap();
    let (host, token) = host_of(&[&server]).await;
    std::fs::write(jail.join("inside.txt"), "inside").unwrap();
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.fs.read_text_file",
            &json!({"path": jail.join("inside.txt")}),
        )
        .await
        .unwrap();
    assert_eq!(text_of(&out), "inside");
    let err = host
        .call::<_, Value>(
            &token,
            None,
            "mcp.fs.read_text_file",
            &json!({"path": outside.join("secret.txt")}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Failed, "{err}");
    assert!(!err.message.contains("not for the server"), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_is_restarted_and_its_tools_are_unavailable_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let mut config = everything(&jail);
    config.backoff = Duration::from_millis(1500);
    let server = McpServer::start(config).await.unwrap();
    let (host, token) = host_of(&[&server]).await;
    let first = server.pid().unwrap();

    let call = {
        let (host, token) = (host.clone(), token.clone());
        tokio::spawn(async move {
            host.call::<_, Value>(
                &token,
                None,
                "mcp.everything.trigger-long-running-operation",
                &json!({"duration": 10, "steps": 5}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!call.is_finished());
    let started = Instant::now();
    nix_kill(first, 9);
    let err = call.await.unwrap().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the cut call waited"
    );
    // A read-only tool: not in doubt, but cut.
    assert_eq!(err.kind, ToolErrorKind::Crashed, "{err}");

    // Down (backing off): its tools answer "unavailable" at once.
    eventually(
        "the supervisor to see it down",
        Duration::from_secs(5),
        || server.status().restarts == 1,
    )
    .await;
    let asked = Instant::now();
    let err = host
        .call::<_, Value>(
            &token,
            None,
            "mcp.everything.echo",
            &json!({"message": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Unavailable, "{err}");
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert!(err.message.contains("killed by SIGKILL"), "{err}");

    assert!(
        server.wait_up(Duration::from_secs(20)).await,
        "{:?}",
        server.status()
    );
    let second = server.pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(server.status().restarts, 1);
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.everything.echo",
            &json!({"message": "back"}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("back"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_call_cut_by_the_servers_death_is_in_doubt() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let root = jail.join("files");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(root.join("from.txt"), "x").unwrap();
    let mut config = filesystem(&jail, &root);
    config.health_interval = Duration::from_secs(60);
    let server = McpServer::start(config).await.unwrap();
    let (host, token) = host_of(&[&server]).await;
    let pid = server.pid().unwrap();
    // Stopped, the server cannot answer: the call is surely in flight when it dies.
    nix_kill(pid, 19);
    let call = {
        let (host, token) = (host.clone(), token.clone());
        let (from, to) = (root.join("from.txt"), root.join("to.txt"));
        tokio::spawn(async move {
            host.call::<_, Value>(
                &token,
                None,
                "mcp.fs.move_file",
                &json!({"source": from, "destination": to}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix_kill(pid, 9);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::InDoubt, "{err}");
    assert!(root.join("from.txt").exists());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_killed_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let mut config = everything(&jail);
    config.health_interval = Duration::from_millis(200);
    config.health_timeout = Duration::from_millis(500);
    let server = McpServer::start(config).await.unwrap();
    let first = server.pid().unwrap();
    nix_kill(first, 19); // SIGSTOP: alive, but answers nothing
    eventually("a restart", Duration::from_secs(20), || {
        server.pid().is_some_and(|pid| pid != first)
    })
    .await;
    let status = server.status();
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(
        status.last_down.as_deref().unwrap().contains("hung"),
        "{status:?}"
    );
    eventually("the hung server to be gone", Duration::from_secs(5), || {
        !process_alive(first)
    })
    .await;
    let (host, token) = host_of(&[&server]).await;
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.everything.echo",
            &json!({"message": "alive"}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("alive"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_and_a_server_over_its_cpu_limit_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let mut config = everything(&jail);
    config.limits = ToolLimits {
        timeout: Duration::from_secs(1),
        ..ToolLimits::default()
    };
    let server = McpServer::start(config).await.unwrap();
    let (host, token) = host_of(&[&server]).await;
    let started = Instant::now();
    let err = host
        .call::<_, Value>(
            &token,
            None,
            "mcp.everything.trigger-long-running-operation",
            &json!({"duration": 5, "steps": 5}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ToolErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // The server itself is fine.
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.everything.echo",
            &json!({"message": "still here"}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("still here"));
    server.shutdown().await;

    // 2 CPU seconds for the server's whole life; listing /usr recursively burns them.
    let mut config = filesystem(&jail, Path::new("/usr"));
    if let toka_tools::mcp::McpTransport::Stdio { policy, .. } = &mut config.transport {
        policy.cpu_seconds = 2;
    }
    config.limits.timeout = Duration::from_secs(10);
    config.max_result_bytes = 64 << 20;
    let server = McpServer::start(config).await.unwrap();
    let (host, token) = host_of(&[&server]).await;
    let first = server.pid().unwrap();
    // Calls that succeed, fail (an unreadable directory) or time out all use CPU time:
    // repeat until the limit kills the server.
    let deadline = Instant::now() + Duration::from_secs(120);
    for path in ["/usr/lib", "/usr/share", "/usr/bin", "/usr/include"]
        .iter()
        .cycle()
    {
        if server.status().restarts > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CPU limit never killed the server"
        );
        let _ = host
            .call::<_, Value>(
                &token,
                None,
                "mcp.fs.directory_tree",
                &json!({"path": path}),
            )
            .await;
    }
    eventually("a restart", Duration::from_secs(20), || {
        server.status().restarts == 1
    })
    .await;
    let status = server.status();
    assert!(
        status.last_down.as_deref().unwrap().contains("CPU"),
        "{status:?}"
    );
    assert!(server.wait_up(Duration::from_secs(20)).await);
    assert_ne!(server.pid(), Some(first));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_is_an_error_naming_why() {
    let tmp = tempfile::tempdir().unwrap();
    let jail = jail(tmp.path());
    let config = McpServerConfig::stdio(
        "broken",
        vec![
            "node".into(),
            "-e".into(),
            "console.error('no such server'); process.exit(3)".into(),
        ],
        policy(&jail),
    );
    let err = McpServer::start(config).await.unwrap_err().to_string();
    assert!(err.contains("mcp.broken"), "{err}");
    assert!(err.contains("no such server"), "{err}");
    let config = McpServerConfig::stdio("bad name", vec!["node".into()], policy(&jail));
    assert!(McpServer::start(config).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_server() {
    // server-everything over streamable HTTP, on a free port, outside the sandbox.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new("node")
        .arg(peer("server-everything"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTP server did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = McpServerConfig::http("remote", url, None);
    let server = McpServer::start(config).await.unwrap();
    let (host, token) = host_of(&[&server]).await;
    assert_eq!(
        host.spec("mcp.remote.echo").unwrap().side_effect,
        SideEffect::ReadOnly
    );
    let out: Value = host
        .call(
            &token,
            None,
            "mcp.remote.echo",
            &json!({"message": "over http"}),
        )
        .await
        .unwrap();
    assert!(text_of(&out).contains("over http"));
    server.shutdown().await;
    let _ = child.kill().await;
}

fn nix_kill(pid: i32, signal: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
