//! An MCP server's supervisor: starts the server (a sandboxed child or an HTTP session),
//! watches it (exit, closed connection, health check), and restarts it with backoff.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, Implementation, PingRequest,
    Tool as RemoteTool,
};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{McpServerConfig, McpTransport, resolve_program};
use crate::Error;
use crate::host::ToolLimits;
use crate::sandbox::{Sandbox, ServiceProcess};

/// How much of a server's stderr is kept for the message of a failed start.
const STDERR_TAIL: usize = 2048;

/// What a call finds: the server's connection, or why there is none.
pub(super) enum Link {
    Up(Peer<RoleClient>),
    Down(String),
}

/// An MCP server's state, from [`McpServer::status`](super::McpServer::status).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpStatus {
    /// Whether it is connected now.
    pub up: bool,
    /// How often it went down after it first came up.
    pub restarts: u64,
    /// Why it last went down (or failed to start again).
    pub last_down: Option<String>,
    /// Its process id, for a stdio server that is up.
    pub pid: Option<i32>,
}

/// The supervisor's shared state.
struct State {
    peer: Option<Peer<RoleClient>>,
    pid: Option<i32>,
    restarts: u64,
    last_down: Option<String>,
    stopped: bool,
}

impl State {
    fn status(&self) -> McpStatus {
        McpStatus {
            up: self.peer.is_some(),
            restarts: self.restarts,
            last_down: self.last_down.clone(),
            pid: self.pid,
        }
    }
}

/// The handle of a server's supervisor task; the task ends (and the server with it) on
/// [`Supervisor::shutdown`] or when this is dropped.
pub(super) struct Supervisor {
    name: String,
    limits: ToolLimits,
    state: watch::Receiver<State>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Where a stdio server starts.
struct Launch {
    sandbox: Arc<Sandbox>,
    program: PathBuf,
    args: Vec<String>,
}

/// One live connection.
struct Connection {
    service: RunningService<RoleClient, ClientConfig>,
    process: Option<ServiceProcess>,
}

impl Supervisor {
    /// Starts the supervisor and waits for the first connection and its tool list.
    pub(super) async fn start(
        config: McpServerConfig,
    ) -> Result<(Supervisor, Vec<RemoteTool>), Error> {
        let full_name = format!("mcp.{}", config.name);
        let fail = |reason: String| Error::Registration {
            name: full_name.clone(),
            reason,
        };
        let launch = match &config.transport {
            McpTransport::Stdio { command, policy } => {
                let (program, args) = command
                    .split_first()
                    .ok_or_else(|| fail("the command is empty".into()))?;
                let program = resolve_program(program).ok_or_else(|| {
                    fail(format!(
                        "program {program:?} not found (absolute, or in /usr/bin, /bin, /usr/local/bin)"
                    ))
                })?;
                let sandbox = Sandbox::new((**policy).clone())?;
                Some(Launch {
                    sandbox: Arc::new(sandbox),
                    program,
                    args: args.to_vec(),
                })
            }
            McpTransport::Http { .. } => None,
        };
        let (state_tx, state) = watch::channel(State {
            peer: None,
            pid: None,
            restarts: 0,
            last_down: None,
            stopped: false,
        });
        let (stop, stop_rx) = watch::channel(false);
        let (first_tx, first_rx) = oneshot::channel();
        let name = config.name.clone();
        let limits = config.limits;
        let task = tokio::spawn(supervise(config, launch, state_tx, stop_rx, first_tx));
        let supervisor = Supervisor {
            name,
            limits,
            state,
            stop,
            task: Mutex::new(Some(task)),
        };
        match first_rx.await {
            Ok(Ok(tools)) => Ok((supervisor, tools)),
            Ok(Err(reason)) => {
                supervisor.shutdown().await;
                Err(fail(reason))
            }
            Err(_) => Err(fail(
                "the supervisor ended before the server started".into(),
            )),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn limits(&self) -> ToolLimits {
        self.limits
    }

    pub(super) fn link(&self) -> Link {
        let state = self.state.borrow();
        match &state.peer {
            Some(peer) if !peer.is_transport_closed() => Link::Up(peer.clone()),
            _ if state.stopped => Link::Down("it was shut down".into()),
            _ => Link::Down(match &state.last_down {
                Some(reason) => format!("{reason}; restarting"),
                None => "restarting".into(),
            }),
        }
    }

    pub(super) fn status(&self) -> McpStatus {
        self.state.borrow().status()
    }

    pub(super) fn pid(&self) -> Option<i32> {
        self.state.borrow().pid
    }

    pub(super) async fn wait_up(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        matches!(
            tokio::time::timeout(timeout, state.wait_for(|s| s.peer.is_some() || s.stopped))
                .await,
            Ok(Ok(s)) if s.peer.is_some()
        )
    }

    pub(super) async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Resolves when the supervisor is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The supervisor task.
async fn supervise(
    config: McpServerConfig,
    launch: Option<Launch>,
    state: watch::Sender<State>,
    mut stop: watch::Receiver<bool>,
    first: oneshot::Sender<Result<Vec<RemoteTool>, String>>,
) {
    let mut first = Some(first);
    let mut backoff = config.backoff;
    loop {
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(config.start_timeout, connect(&config, launch.as_ref())) => attempt,
            () = stopped(&mut stop) => break,
        };
        let attempt = attempt.unwrap_or_else(|_| {
            Err(format!(
                "it did not complete the MCP handshake within {:?}",
                config.start_timeout
            ))
        });
        match attempt {
            Ok(connection) => {
                let up_since = Instant::now();
                let pid = connection.process.as_ref().map(ServiceProcess::pid);
                state.send_modify(|s| {
                    s.peer = Some(connection.service.peer().clone());
                    s.pid = pid;
                });
                tracing::info!(server = %config.name, ?pid, "MCP server up");
                if let Some(first) = first.take() {
                    let listed = tokio::time::timeout(
                        config.start_timeout,
                        connection.service.peer().list_all_tools(),
                    )
                    .await;
                    match listed {
                        Ok(Ok(tools)) => {
                            let _ = first.send(Ok(tools));
                        }
                        Ok(Err(e)) => {
                            let _ = first.send(Err(format!("listing its tools: {e}")));
                            kill(connection);
                            break;
                        }
                        Err(_) => {
                            let _ = first.send(Err(format!(
                                "it did not list its tools within {:?}",
                                config.start_timeout
                            )));
                            kill(connection);
                            break;
                        }
                    }
                }
                let down = watch_connection(&config, connection, &mut stop).await;
                let Some(reason) = down else { break };
                tracing::warn!(server = %config.name, %reason, "MCP server down; restarting");
                state.send_modify(|s| {
                    s.peer = None;
                    s.pid = None;
                    s.restarts += 1;
                    s.last_down = Some(reason);
                });
                if up_since.elapsed() >= config.max_backoff {
                    backoff = config.backoff;
                }
            }
            Err(reason) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(reason));
                    break;
                }
                tracing::warn!(server = %config.name, %reason, "MCP server did not start");
                state.send_modify(|s| s.last_down = Some(format!("restart failed: {reason}")));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
    state.send_modify(|s| {
        s.peer = None;
        s.pid = None;
        s.stopped = true;
    });
}

/// Watches a live connection until it goes down (why) or the supervisor stops (`None`);
/// the server is killed either way.
async fn watch_connection(
    config: &McpServerConfig,
    connection: Connection,
    stop: &mut watch::Receiver<bool>,
) -> Option<String> {
    let Connection { service, process } = connection;
    let peer = service.peer().clone();
    let cancel = service.cancellation_token();
    let exited = async {
        match &process {
            Some(process) => process.wait().await,
            None => std::future::pending().await,
        }
    };
    let health = async {
        loop {
            tokio::time::sleep(config.health_interval).await;
            let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
            match tokio::time::timeout(config.health_timeout, ping).await {
                // Any answer, an error included, shows the server is alive.
                Ok(Ok(_) | Err(ServiceError::McpError(_))) => {}
                Ok(Err(e)) => return format!("its health check failed ({e}); killed"),
                Err(_) => {
                    return format!(
                        "it did not answer a health check within {:?} (hung); killed",
                        config.health_timeout
                    );
                }
            }
        }
    };
    tokio::pin!(exited);
    let reason = tokio::select! {
        status = &mut exited => Some(format!("the server {status}")),
        _ = service.waiting() => {
            // The connection closed: the process is likely exiting; say how it ended.
            match tokio::time::timeout(Duration::from_millis(500), &mut exited).await {
                Ok(status) => Some(format!("the server {status}")),
                Err(_) => Some("the server closed its connection".to_owned()),
            }
        }
        reason = health => Some(reason),
        () = stopped(stop) => None,
    };
    cancel.cancel();
    if let Some(process) = &process {
        process.kill();
    }
    reason
}

/// Closes a connection and kills its server.
fn kill(connection: Connection) {
    connection.service.cancellation_token().cancel();
    if let Some(process) = &connection.process {
        process.kill();
    }
}

/// Starts the server and completes the MCP handshake.
async fn connect(config: &McpServerConfig, launch: Option<&Launch>) -> Result<Connection, String> {
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("toka", env!("CARGO_PKG_VERSION")),
    );
    match (&config.transport, launch) {
        (McpTransport::Stdio { .. }, Some(launch)) => {
            let mut process = launch
                .sandbox
                .start_service(&launch.program, &launch.args)
                .map_err(|e| e.message)?;
            let (stdin, stdout, stderr) = process
                .take_stdio()
                .ok_or_else(|| "the server has no stdio".to_owned())?;
            let tail = Arc::new(Mutex::new(VecDeque::new()));
            tokio::spawn(drain_stderr(config.name.clone(), stderr, Arc::clone(&tail)));
            match client.serve((stdout, stdin)).await {
                Ok(service) => Ok(Connection {
                    service,
                    process: Some(process),
                }),
                Err(e) => {
                    process.kill();
                    // Let the stderr reader catch up with what the server wrote last.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let tail: Vec<u8> = tail
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .copied()
                        .collect();
                    let tail = String::from_utf8_lossy(&tail);
                    Err(format!(
                        "the MCP handshake failed: {e}; its stderr ended with: {:?}",
                        tail.trim()
                    ))
                }
            }
        }
        (McpTransport::Http { url, token }, _) => {
            let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = token {
                let token = token
                    .expose_str()
                    .ok_or_else(|| "the token is not UTF-8".to_owned())?;
                transport_config = transport_config.auth_header(token);
            }
            let transport = StreamableHttpClientTransport::from_config(transport_config);
            let service = client
                .serve(transport)
                .await
                .map_err(|e| format!("the MCP handshake with {url} failed: {e}"))?;
            Ok(Connection {
                service,
                process: None,
            })
        }
        (McpTransport::Stdio { .. }, None) => Err("no sandbox for the stdio server".to_owned()),
    }
}

/// Reads a server's stderr to its end: each line logged at debug, the last
/// [`STDERR_TAIL`] bytes kept.
async fn drain_stderr(
    name: String,
    mut stderr: tokio::net::unix::pipe::Receiver,
    tail: Arc<Mutex<VecDeque<u8>>>,
) {
    let mut chunk = [0u8; 4096];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tracing::debug!(server = %name, stderr = %String::from_utf8_lossy(&chunk[..n]).trim_end(), "MCP server stderr");
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.extend(&chunk[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        }
    }
}
