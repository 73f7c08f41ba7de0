//! The MCP client: the tools of [Model Context Protocol] servers as Toka tools.
//!
//! An [`McpServer`] connects to one server — a **stdio** server started as a child process
//! in the [`Sandbox`] (jail as working directory, rlimits, Landlock, a cgroup, an empty
//! environment plus an allow-list), or a **streamable HTTP** server (a URL and an optional
//! bearer token) — through the official Rust SDK (`rmcp`), lists its tools, and offers each
//! as an [`McpTool`] named `mcp.NAME.TOOL` with the server's JSON Schema. Registered in a
//! [`ToolHost`](crate::ToolHost) they are tools like any other: tool actors, capability-
//! checked, journaled when agents call them ([`ToolCalls`](crate::ToolCalls)).
//!
//! ```text
//! ToolHost ─ tool actor mcp.fs.read_file ─┐
//!          ─ tool actor mcp.fs.write_file ─┼─► McpServer "fs" (shared connection)
//!          ─ …                            ─┘     └── supervisor task: start, watch, restart
//!                                                     └── sandboxed child (or HTTP session)
//! ```
//!
//! # Side effects
//! Each tool's [`SideEffect`] comes from its MCP annotations: `readOnlyHint` → read-only,
//! else `idempotentHint` → idempotent, anything else → external. A call of an external
//! tool cut by a crash (of Toka or of the server) is reported in doubt
//! ([`ToolErrorKind::InDoubt`]) and never sent again.
//!
//! # Failure
//! - The server's **supervisor** (a task owned by the [`McpServer`]) restarts a server that
//!   exits, crashes, is killed over a limit (CPU time, memory, processes…), closes its
//!   pipes, or stops answering its health probe (hung), with exponential backoff. While it
//!   is down its tools answer [`ToolErrorKind::Unavailable`] at once.
//! - A call that is cut because the server died fails with `InDoubt` (external tools) or
//!   `Crashed` (the others); it is never re-sent by the client.
//! - Calls time out with the host's per-tool [`ToolLimits`](crate::ToolLimits) timeout; the
//!   SDK then tells the server the request is cancelled.
//! - A result larger than [`McpServerConfig::max_result_bytes`] fails with
//!   [`ToolErrorKind::Limit`]; a result the server marks `isError` fails with `Failed`.
//!
//! Tools are discovered once, when the server first connects ([`McpServer::start`]); a
//! restarted server is expected to offer the same tools (a tool it dropped fails when
//! called).
//!
//! [Model Context Protocol]: https://modelcontextprotocol.io

mod supervise;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ContentBlock, Tool as RemoteTool};
use rmcp::service::ServiceError;
use serde_json::Value;

use crate::caveat::NamePattern;
use crate::host::{ToolHostBuilder, ToolLimits};
use crate::sandbox::SandboxPolicy;
use crate::tool::{SideEffect, Tool, ToolContext};
use crate::vault::Secret;
use crate::{Error, ToolError, ToolErrorKind};

pub use supervise::McpStatus;
use supervise::{Link, Supervisor};

/// How Toka reaches an MCP server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum McpTransport {
    /// A child process speaking MCP on its stdin and stdout, run in the sandbox.
    Stdio {
        /// The program (absolute, or a name looked up in `/usr/bin`, `/bin`) and its
        /// arguments.
        command: Vec<String>,
        /// The sandbox: `jail` is its working directory (the only directory it may write),
        /// `system_paths` what it may read and execute (add the server's own files),
        /// `env` + `pass_env` its whole environment; the rlimits bound the server process
        /// over its whole life (a server past them is killed and restarted). `timeout` and
        /// `output_bytes` are not used: see [`McpServerConfig::call_timeout`] and
        /// [`McpServerConfig::max_result_bytes`].
        policy: Box<SandboxPolicy>,
    },
    /// A streamable-HTTP server.
    Http {
        /// Its endpoint, e.g. `https://mcp.example.com/mcp`.
        url: String,
        /// A bearer token sent with every request (from the vault; never logged).
        token: Option<Secret>,
    },
}

/// One MCP server's settings.
#[derive(Clone, Debug)]
pub struct McpServerConfig {
    /// The `NAME` in the tools' names `mcp.NAME.TOOL` (letters, digits, `-`, `_`).
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// The limits of each of its tools (concurrency, call timeout, actor restarts).
    pub limits: ToolLimits,
    /// Longest a (re)start may take: process start, MCP handshake and tool listing.
    /// Default: 30 s.
    pub start_timeout: Duration,
    /// First wait before restarting a server that went down; doubled on each failure in
    /// a row up to `max_backoff`. Default: 200 ms.
    pub backoff: Duration,
    /// Longest wait between restarts. Default: 30 s.
    pub max_backoff: Duration,
    /// How often the supervisor checks that the server answers (an MCP `ping`; any
    /// answer, even an error, counts). Default: 10 s.
    pub health_interval: Duration,
    /// How long the server may take to answer the health check before it is deemed hung,
    /// killed and restarted. Default: 5 s.
    pub health_timeout: Duration,
    /// The largest result (as JSON) a call may return; larger fails with
    /// [`ToolErrorKind::Limit`]. Default: 1 MiB.
    pub max_result_bytes: usize,
}

impl McpServerConfig {
    fn new(name: impl Into<String>, transport: McpTransport) -> Self {
        McpServerConfig {
            name: name.into(),
            transport,
            limits: ToolLimits::default(),
            start_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            health_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(5),
            max_result_bytes: 1 << 20,
        }
    }

    /// A stdio server `name` started as `command` under `policy`.
    pub fn stdio(name: impl Into<String>, command: Vec<String>, policy: SandboxPolicy) -> Self {
        Self::new(
            name,
            McpTransport::Stdio {
                command,
                policy: Box::new(policy),
            },
        )
    }

    /// A streamable-HTTP server `name` at `url`, with an optional bearer token.
    pub fn http(name: impl Into<String>, url: impl Into<String>, token: Option<Secret>) -> Self {
        Self::new(
            name,
            McpTransport::Http {
                url: url.into(),
                token,
            },
        )
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |reason: &str| Error::Registration {
            name: format!("mcp.{}", self.name),
            reason: reason.to_owned(),
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("an MCP server's name is letters, digits, `-` and `_`"));
        }
        match &self.transport {
            McpTransport::Stdio { command, .. } if command.is_empty() => {
                Err(bad("the command is empty"))
            }
            McpTransport::Http { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                Err(bad("the URL must start with http:// or https://"))
            }
            _ => Ok(()),
        }
    }
}

/// A connected, supervised MCP server; cheap to clone. Its child process (or HTTP
/// session) ends when [`McpServer::shutdown`] is called, or when this handle and every
/// [`McpTool`] of it are dropped.
#[derive(Clone)]
pub struct McpServer {
    supervisor: Arc<Supervisor>,
    tools: Arc<Vec<McpTool>>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.supervisor.name())
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl McpServer {
    /// Starts (or connects to) the server, waits for its MCP handshake and lists its
    /// tools; from then on its supervisor keeps it running.
    ///
    /// Tools whose names do not make a valid Toka tool name (`mcp.NAME.TOOL` with
    /// letters, digits and `.-_:@`) are left out, with a warning.
    ///
    /// # Errors
    /// [`Error::Registration`] for an unusable config, or a server that does not start,
    /// answer the handshake or list its tools within `start_timeout` (its stderr's last
    /// lines are in the message).
    pub async fn start(config: McpServerConfig) -> Result<McpServer, Error> {
        config.check()?;
        let name = config.name.clone();
        let max_result_bytes = config.max_result_bytes;
        let (supervisor, remote_tools) = Supervisor::start(config).await?;
        let supervisor = Arc::new(supervisor);
        let mut tools = Vec::new();
        for remote in remote_tools {
            match McpTool::new(&name, remote, &supervisor, max_result_bytes) {
                Some(tool) => tools.push(tool),
                None => continue,
            }
        }
        tracing::info!(server = %name, tools = tools.len(), "MCP server connected");
        Ok(McpServer {
            supervisor,
            tools: Arc::new(tools),
        })
    }

    /// Its name (the `NAME` of `mcp.NAME.TOOL`).
    pub fn name(&self) -> &str {
        self.supervisor.name()
    }

    /// Its tools, as listed when it first connected.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// Registers every tool of the server in `builder`, with the server's limits.
    #[must_use]
    pub fn register(&self, mut builder: ToolHostBuilder) -> ToolHostBuilder {
        for tool in self.tools.iter() {
            builder = builder.tool_with_limits(tool.clone(), self.supervisor.limits());
        }
        builder
    }

    /// Whether it is up, how often it was restarted, why it last went down.
    pub fn status(&self) -> McpStatus {
        self.supervisor.status()
    }

    /// The process id of a stdio server while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.supervisor.pid()
    }

    /// Waits until the server is up (again), at most `timeout`; whether it is.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        self.supervisor.wait_up(timeout).await
    }

    /// Stops the supervisor and the server (its process group and cgroup are killed);
    /// its tools answer `Unavailable` from then on.
    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }
}

/// One tool of an MCP server, as a Toka [`Tool`] named `mcp.NAME.TOOL`.
#[derive(Clone)]
pub struct McpTool {
    name: String,
    remote: Arc<str>,
    description: String,
    schema: Value,
    side_effect: SideEffect,
    max_result_bytes: usize,
    supervisor: Arc<Supervisor>,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.name)
            .field("side_effect", &self.side_effect)
            .finish_non_exhaustive()
    }
}

/// The side-effect class an MCP tool's annotations give it.
fn side_effect_of(tool: &RemoteTool) -> SideEffect {
    let annotations = tool.annotations.as_ref();
    if annotations.and_then(|a| a.read_only_hint) == Some(true) {
        SideEffect::ReadOnly
    } else if annotations.and_then(|a| a.idempotent_hint) == Some(true) {
        SideEffect::Idempotent
    } else {
        SideEffect::External
    }
}

impl McpTool {
    fn new(
        server: &str,
        remote: RemoteTool,
        supervisor: &Arc<Supervisor>,
        max_result_bytes: usize,
    ) -> Option<McpTool> {
        let name = format!("mcp.{server}.{}", remote.name);
        if name.parse::<NamePattern>().ok() != Some(NamePattern::Exact(name.clone())) {
            tracing::warn!(server, tool = %remote.name, "MCP tool name unusable in Toka; left out");
            return None;
        }
        let description = remote
            .description
            .as_deref()
            .map(str::to_owned)
            .or_else(|| remote.title.clone())
            .unwrap_or_default();
        Some(McpTool {
            side_effect: side_effect_of(&remote),
            schema: Value::Object((*remote.input_schema).clone()),
            remote: Arc::from(remote.name.as_ref()),
            name,
            description,
            max_result_bytes,
            supervisor: Arc::clone(supervisor),
        })
    }

    /// The tool's name on its server.
    pub fn remote_name(&self) -> &str {
        &self.remote
    }

    fn failure(&self, error: ServiceError) -> ToolError {
        let name = &self.name;
        match error {
            ServiceError::McpError(e) if e.code.0 == -32602 => {
                ToolError::invalid_input(format!("{name}: {}", e.message))
            }
            ServiceError::McpError(e) => ToolError::failed(format!("{name}: {}", e.message)),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                // The request may have reached the server and taken effect before it went.
                let kind = if self.side_effect.safe_to_repeat() {
                    ToolErrorKind::Crashed
                } else {
                    ToolErrorKind::InDoubt
                };
                ToolError::new(
                    kind,
                    format!(
                        "{name}: the MCP server went down during the call; whether it took \
                         effect is unknown"
                    ),
                )
            }
            ServiceError::Timeout { timeout } => ToolError::new(
                ToolErrorKind::Timeout,
                format!("{name}: no answer within {timeout:?}"),
            ),
            other => ToolError::failed(format!("{name}: {other}")),
        }
    }
}

/// The text of a result's content, for an error message.
fn content_text(content: &[ContentBlock]) -> String {
    let text: Vec<&str> = content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect();
    if text.is_empty() {
        "the tool reported an error".to_owned()
    } else {
        text.join("\n")
    }
}

impl Tool for McpTool {
    /// The arguments: a JSON object (or `null` for none).
    type Input = Value;
    /// `{"content": [...], "structuredContent": ...}` as the server returned them.
    type Output = Value;

    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn input_schema(&self) -> Value {
        self.schema.clone()
    }

    fn side_effect(&self) -> SideEffect {
        self.side_effect
    }

    async fn invoke(&self, input: Value, _cx: ToolContext) -> Result<Value, ToolError> {
        let arguments = match input {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => {
                return Err(ToolError::invalid_input(format!(
                    "{}: the arguments must be a JSON object",
                    self.name
                )));
            }
        };
        let peer = match self.supervisor.link() {
            Link::Up(peer) => peer,
            Link::Down(reason) => {
                return Err(ToolError::new(
                    ToolErrorKind::Unavailable,
                    format!("{}: the MCP server is down ({reason})", self.name),
                ));
            }
        };
        let mut params = CallToolRequestParams::new(Cow::Owned(self.remote.to_string()));
        params.arguments = arguments;
        let result = peer.call_tool(params).await.map_err(|e| self.failure(e))?;
        if result.is_error == Some(true) {
            return Err(ToolError::failed(format!(
                "{}: {}",
                self.name,
                content_text(&result.content)
            )));
        }
        let mut output = serde_json::Map::new();
        let content = serde_json::to_value(&result.content)
            .map_err(|e| ToolError::failed(format!("{}: its content: {e}", self.name)))?;
        output.insert("content".into(), content);
        if let Some(structured) = result.structured_content {
            output.insert("structuredContent".into(), structured);
        }
        let output = Value::Object(output);
        let size = serde_json::to_vec(&output).map(|v| v.len()).unwrap_or(0);
        if size > self.max_result_bytes {
            return Err(ToolError::new(
                ToolErrorKind::Limit,
                format!(
                    "{}: the result is {size} bytes, over the limit of {}",
                    self.name, self.max_result_bytes
                ),
            ));
        }
        Ok(output)
    }
}

/// Resolves a stdio server's program like `shell.exec` does: absolute, or a bare name in
/// `/usr/bin`, `/bin`, `/usr/local/bin`.
fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    if program.contains('/') {
        return None;
    }
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}
