//! The cost of an MCP tool call through Toka: `mcp.everything.echo` of the npm
//! `@modelcontextprotocol/server-everything` (in `tests/peers`) called through a
//! [`ToolHost`] (capability check, tool actor, timeout, the server sandboxed and
//! supervised) against the same call made directly with the same client library (`rmcp`)
//! on the same server started with plain `tokio::process`, in the same run, alternating
//! rounds. One call at a time (latency), then 8 callers at once (throughput).
//!
//! ```text
//! npm ci --prefix tests/peers
//! cargo bench -p toka-tools --bench mcp --features mcp
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-tools --bench mcp --features mcp
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient};
use serde_json::json;
use toka_test_support::bench::{BenchResult, median};
use toka_tools::mcp::{McpServer, McpServerConfig};
use toka_tools::{Authority, Capability, Caveat, SandboxPolicy, ToolHost};

const ROUNDS: usize = 5;
const CONCURRENCY: usize = 8;

fn peer(name: &str) -> BenchResult<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers/node_modules/@modelcontextprotocol")
        .join(name)
        .join("dist/index.js");
    if !path.is_file() {
        return Err(format!(
            "{} is missing: run `npm ci --prefix tests/peers`",
            path.display()
        )
        .into());
    }
    Ok(path.canonicalize()?)
}

async fn via_toka(host: &ToolHost, token: &Capability, calls: usize) -> BenchResult<f64> {
    let input = serde_json::to_vec(&json!({"message": "ping"}))?;
    let started = Instant::now();
    for _ in 0..calls {
        host.call_json(token, None, "mcp.everything.echo", &input)
            .await?;
    }
    Ok(started.elapsed().as_secs_f64() / calls as f64)
}

async fn direct(peer: &Peer<RoleClient>, calls: usize) -> BenchResult<f64> {
    let started = Instant::now();
    for _ in 0..calls {
        let mut params = CallToolRequestParams::new("echo");
        params.arguments = json!({"message": "ping"}).as_object().cloned();
        let result = peer.call_tool(params).await?;
        if result.is_error == Some(true) {
            return Err("echo failed".into());
        }
    }
    Ok(started.elapsed().as_secs_f64() / calls as f64)
}

async fn via_toka_concurrent(
    host: &ToolHost,
    token: &Capability,
    calls: usize,
) -> BenchResult<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (host, token) = (host.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let input = serde_json::to_vec(&json!({"message": "ping"})).unwrap_or_default();
            for _ in 0..calls / CONCURRENCY {
                host.call_json(&token, None, "mcp.everything.echo", &input)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64() / calls as f64)
}

async fn direct_concurrent(peer: &Peer<RoleClient>, calls: usize) -> BenchResult<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let peer = peer.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls / CONCURRENCY {
                let mut params = CallToolRequestParams::new("echo");
                params.arguments = json!({"message": "ping"}).as_object().cloned();
                peer.call_tool(params).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64() / calls as f64)
}

fn main() -> BenchResult<()> {
    let quick = std::env::var_os("TOKA_BENCH_QUICK").is_some();
    let calls = if quick { 200 } else { 2000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let everything = peer("server-everything")?;
        let peers = everything
            .ancestors()
            .nth(4)
            .ok_or("no tests/peers")?
            .to_path_buf();
        let tmp = tempfile::tempdir()?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let mut policy = SandboxPolicy::new(tmp.path());
        policy.system_paths.push(peers);
        policy.system_paths.push("/etc/ssl".into());
        policy.env.clear();
        policy.pass_env.clear();
        policy.cpu_seconds = 3600;
        policy.address_space = 4 << 30;
        policy.open_files = 256;
        let config = McpServerConfig::stdio(
            "everything",
            vec![
                "node".into(),
                everything.to_string_lossy().into_owned(),
                "stdio".into(),
            ],
            policy,
        );
        let server = McpServer::start(config).await?;
        let authority = Authority::from_secret(b"mcp bench root secret...........");
        let token = authority.mint([Caveat::Tool("mcp.everything.*".parse()?)])?;
        let host = server.register(ToolHost::builder(authority)).start().await?;

        let mut child = tokio::process::Command::new("node")
            .arg(&everything)
            .arg("stdio")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let client = ().serve((stdout, stdin)).await?;
        let bare = client.peer().clone();

        // Warm-up (JIT, connections).
        via_toka(&host, &token, 200).await?;
        direct(&bare, 200).await?;

        let (mut ours, mut base, mut ours_c, mut base_c) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                ours.push(via_toka(&host, &token, calls).await?);
                base.push(direct(&bare, calls).await?);
                ours_c.push(via_toka_concurrent(&host, &token, calls).await?);
                base_c.push(direct_concurrent(&bare, calls).await?);
            } else {
                base.push(direct(&bare, calls).await?);
                ours.push(via_toka(&host, &token, calls).await?);
                base_c.push(direct_concurrent(&bare, calls).await?);
                ours_c.push(via_toka_concurrent(&host, &token, calls).await?);
            }
        }
        let us = |s: f64| s * 1e6;
        let (t, b) = (median(&ours), median(&base));
        println!(
            "MCP echo, one at a time: through Toka {:.0} µs/call; rmcp direct {:.0} µs/call; ratio {:.2}x (+{:.0} µs)",
            us(t),
            us(b),
            t / b,
            us(t - b)
        );
        let (t, b) = (median(&ours_c), median(&base_c));
        println!(
            "MCP echo, {CONCURRENCY} callers: through Toka {:.0} calls/s; rmcp direct {:.0} calls/s; ratio {:.2}x",
            1.0 / t,
            1.0 / b,
            t / b
        );
        host.shutdown().await;
        server.shutdown().await;
        drop(client);
        let _ = child.kill().await;
        Ok(())
    })
}
