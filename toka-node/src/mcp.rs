//! The node's MCP servers: `[mcp.NAME]` tables, started before the tool host so that
//! their tools (`mcp.NAME.TOOL`) are registered in it like the built-in ones.
//!
//! ```toml
//! [mcp.fs]                       # a stdio server, run in the sandbox
//! command = ["node", "/opt/mcp/server-filesystem/dist/index.js", "/srv/mcp-fs"]
//! cwd = "/srv/mcp-fs"            # working directory: the only one it may write
//! read_paths = ["/opt/mcp", "/etc/ssl"]  # readable besides the system directories
//! env = ["LANG"]                 # host variables passed in (an allow-list); nothing else
//! timeout_secs = 30              # per call
//! cpu_seconds = 3600             # over the server's whole life; past it: killed, restarted
//! memory_mb = 4096               # address space
//! max_processes = 64
//! max_open_files = 256
//! file_size_mb = 16
//! max_result_bytes = 1048576
//! concurrency = 16               # calls at once per tool
//!
//! [mcp.remote]                   # a streamable-HTTP server
//! url = "https://mcp.example.com/mcp"
//! token_secret = "remote-mcp-token"  # vault secret sent as the bearer token
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use toka_tools::mcp::{McpServer, McpServerConfig};
use toka_tools::{SandboxPolicy, ToolHostBuilder, ToolLimits};

use crate::cli::DataDir;

/// Default CPU seconds of a stdio server's whole life.
const DEFAULT_CPU_SECONDS: u64 = 3600;

/// Default address space of a stdio server, in MiB (Node reserves a lot of it).
const DEFAULT_MEMORY_MB: u64 = 4096;

/// Default open files of a stdio server.
const DEFAULT_OPEN_FILES: u64 = 256;

/// An `[mcp.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct McpConfig {
    /// A stdio server: the program (absolute, or in `/usr/bin`, `/bin`, `/usr/local/bin`)
    /// and its arguments.
    pub(crate) command: Option<Vec<String>>,
    /// Its working directory, and the only directory it may write. Required with
    /// `command`.
    pub(crate) cwd: Option<PathBuf>,
    /// Directories and files it may read (and execute) besides the system directories.
    #[serde(default)]
    pub(crate) read_paths: Vec<PathBuf>,
    /// Host environment variables passed to it; its environment is otherwise empty.
    #[serde(default)]
    pub(crate) env: Vec<String>,
    /// A streamable-HTTP server's URL.
    pub(crate) url: Option<String>,
    /// The vault secret holding the HTTP server's bearer token.
    pub(crate) token_secret: Option<String>,
    /// Longest a call may take, in seconds. Default: 30.
    pub(crate) timeout_secs: Option<u64>,
    /// Calls of one tool running at once. Default: 16.
    pub(crate) concurrency: Option<usize>,
    /// CPU seconds over the server's life (`RLIMIT_CPU`). Default: 3600.
    pub(crate) cpu_seconds: Option<u64>,
    /// Address space in MiB (`RLIMIT_AS`). Default: 4096.
    pub(crate) memory_mb: Option<u64>,
    /// Processes (`RLIMIT_NPROC`, and the cgroup's `pids.max`). Default: 64.
    pub(crate) max_processes: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`). Default: 256.
    pub(crate) max_open_files: Option<u64>,
    /// Largest file it may write, in MiB (`RLIMIT_FSIZE`). Default: 16.
    pub(crate) file_size_mb: Option<u64>,
    /// Largest result a call may return, in bytes. Default: 1 MiB.
    pub(crate) max_result_bytes: Option<usize>,
}

impl McpConfig {
    /// The library's config for server `name`; `token` is the HTTP bearer token.
    fn server_config(
        &self,
        name: &str,
        token: Option<toka_tools::Secret>,
    ) -> anyhow::Result<McpServerConfig> {
        let mut config = match (&self.command, &self.url) {
            (Some(command), None) => {
                let Some(cwd) = &self.cwd else {
                    bail!("a stdio server needs `cwd` (its working directory)");
                };
                if self.token_secret.is_some() {
                    bail!("`token_secret` is for HTTP servers (`url`)");
                }
                McpServerConfig::stdio(name, command.clone(), self.policy(cwd)?)
            }
            (None, Some(url)) => {
                if self.cwd.is_some() || !self.read_paths.is_empty() || !self.env.is_empty() {
                    bail!("`cwd`, `read_paths` and `env` are for stdio servers (`command`)");
                }
                McpServerConfig::http(name, url.clone(), token)
            }
            _ => bail!("give either `command` (a stdio server) or `url` (an HTTP server)"),
        };
        config.limits = ToolLimits {
            timeout: Duration::from_secs(self.timeout_secs.unwrap_or(30).max(1)),
            concurrency: self.concurrency.unwrap_or(16).max(1),
            ..ToolLimits::default()
        };
        if let Some(bytes) = self.max_result_bytes {
            config.max_result_bytes = bytes;
        }
        Ok(config)
    }

    fn policy(&self, cwd: &std::path::Path) -> anyhow::Result<SandboxPolicy> {
        let mut policy = SandboxPolicy::new(cwd);
        for path in &self.read_paths {
            let path = path
                .canonicalize()
                .with_context(|| format!("read_paths: {}", path.display()))?;
            policy.system_paths.push(path);
        }
        policy.env.clear();
        policy.pass_env.clone_from(&self.env);
        policy.cpu_seconds = self.cpu_seconds.unwrap_or(DEFAULT_CPU_SECONDS);
        policy.address_space = mebibytes(self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB))?;
        policy.open_files = self.max_open_files.unwrap_or(DEFAULT_OPEN_FILES);
        if let Some(n) = self.max_processes {
            policy.processes = n;
        }
        if let Some(mb) = self.file_size_mb {
            policy.file_size = mebibytes(mb)?;
        }
        Ok(policy)
    }
}

fn mebibytes(mb: u64) -> anyhow::Result<u64> {
    mb.checked_mul(1 << 20)
        .with_context(|| format!("{mb} MiB is too large"))
}

/// Starts every configured server (one after another) and lists its tools.
///
/// # Errors
/// A table that does not make sense, a token secret missing from the vault, or a server
/// that does not start.
pub(crate) async fn start(
    dir: &DataDir,
    servers: &std::collections::BTreeMap<String, McpConfig>,
) -> anyhow::Result<Vec<McpServer>> {
    let vault = if servers.values().any(|s| s.token_secret.is_some()) {
        Some(crate::secrets::open_vault(dir)?)
    } else {
        None
    };
    let mut started = Vec::new();
    for (name, config) in servers {
        let token = match (&config.token_secret, &vault) {
            (Some(secret), Some(vault)) => Some(vault.get(secret).with_context(|| {
                format!(
                    "[mcp.{name}]: its token secret {secret:?} is not in the vault \
                     (store it with `toka-node secret set {secret}`)"
                )
            })?),
            _ => None,
        };
        let server_config = config
            .server_config(name, token)
            .with_context(|| format!("[mcp.{name}]"))?;
        let server = McpServer::start(server_config)
            .await
            .with_context(|| format!("starting MCP server {name:?}"))?;
        eprintln!(
            "toka-node: MCP server {name:?}: {} tools",
            server.tools().len()
        );
        started.push(server);
    }
    Ok(started)
}

/// Registers the servers' tools in `builder`.
pub(crate) fn register(servers: &[McpServer], builder: ToolHostBuilder) -> ToolHostBuilder {
    servers
        .iter()
        .fold(builder, |builder, server| server.register(builder))
}

/// Stops the servers (and kills their processes).
pub(crate) async fn shutdown(servers: &[McpServer]) {
    for server in servers {
        server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<McpConfig> {
        Ok(toml::from_str(text)?)
    }

    #[test]
    fn a_table_is_either_stdio_or_http() {
        let stdio = parse(
            "command = [\"node\", \"server.js\"]\ncwd = \"/tmp\"\nenv = [\"LANG\"]\ntimeout_secs = 5\ncpu_seconds = 7\nmemory_mb = 512\nmax_open_files = 99\n",
        )
        .unwrap();
        let config = stdio.server_config("fs", None).unwrap();
        assert_eq!(config.limits.timeout, Duration::from_secs(5));
        match config.transport {
            toka_tools::mcp::McpTransport::Stdio { command, policy } => {
                assert_eq!(command, ["node", "server.js"]);
                assert_eq!(policy.cpu_seconds, 7);
                assert_eq!(policy.address_space, 512 << 20);
                assert_eq!(policy.open_files, 99);
                assert_eq!(policy.pass_env, ["LANG"]);
                assert!(policy.env.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let http = parse("url = \"https://h/mcp\"\ntoken_secret = \"t\"\n").unwrap();
        assert!(http.server_config("r", None).is_ok());
        // Neither, both, or stdio keys on an HTTP server: refused.
        assert!(
            parse("timeout_secs = 1\n")
                .unwrap()
                .server_config("x", None)
                .is_err()
        );
        assert!(
            parse("command = [\"a\"]\ncwd = \"/tmp\"\nurl = \"http://h\"\n")
                .unwrap()
                .server_config("x", None)
                .is_err()
        );
        assert!(
            parse("command = [\"a\"]\n")
                .unwrap()
                .server_config("x", None)
                .is_err()
        );
        assert!(
            parse("url = \"http://h\"\ncwd = \"/tmp\"\n")
                .unwrap()
                .server_config("x", None)
                .is_err()
        );
        assert!(parse("url = \"http://h\"\nshell = 1\n").is_err());
    }
}
