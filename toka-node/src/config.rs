//! The node's TOML config file (`run --config FILE`). Every key is optional; flags and
//! `TOKA_*` environment variables override it.
//!
//! ```toml
//! listen = "127.0.0.1:7070"
//! durability = "fsync"      # or "buffered"
//! log = "info"              # a tracing filter; RUST_LOG overrides it
//! log_format = "json"       # or "text" (the default); --log-json overrides it
//! ask_timeout_ms = 5000     # how long POST /agents/{id}/ask waits for a reply
//! key_file = "/etc/toka/journal.key"  # 32 bytes: encrypt the journal (as --key-file)
//! journal = "postgres://toka@127.0.0.1/toka?schema=toka"  # the journal in PostgreSQL (as --journal)
//! header_timeout_ms = 5000  # a request head must arrive within this (also the idle timeout)
//! body_timeout_ms = 10000   # a request body must arrive within this, else 408
//! max_connections = 512     # connections served at once; more wait to be accepted
//! shutdown_timeout_ms = 5000  # SIGTERM: open connections are dropped after this
//! commit_linger_us = 2000   # fsync: how long a flush may wait for concurrent appends (0: never)
//!
//! [tools]
//! fs_root = "/srv/toka"     # fs.read, fs.list and fs.write, confined to this directory
//! fs_read_only = false      # true: no fs.write
//! fs_max_file_bytes = 16777216
//! shell_jail = "/srv/jail"  # shell.exec runs the allowed programs jailed here
//! shell_allow = ["ls", "cat", "wc"]
//! shell_timeout_secs = 10   # sandbox limits of shell.exec (these are the defaults)
//! shell_cpu_seconds = 5
//! shell_memory_mb = 1024    # address space
//! shell_max_processes = 64
//! shell_max_open_files = 64
//! shell_file_size_mb = 16   # largest file a run may write
//! shell_output_bytes = 1048576  # of stdout and of stderr each; more kills the run
//! approval = ["shell.exec", "fs.*"]  # these tools' every call waits for a human decision
//! approval_ttl_secs = 86400 # an undecided approval expires (counts as denied) after this
//!
//! [models.local]            # a model agents and assistants may call, by this name
//! provider = "openai"       # OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp, LM Studio, OpenRouter)
//! base_url = "http://127.0.0.1:11434/v1"
//! model = "llama3.2"
//! api_key_secret = "openai-key"  # a vault secret's name (`toka-node secret set NAME`); optional for local servers
//! timeout_secs = 120        # per call (and per stream chunk)
//! max_retries = 3           # on 429 (honouring Retry-After), 5xx, timeouts
//!
//! [models.claude]
//! provider = "anthropic"    # Anthropic's Messages API
//! base_url = "https://api.anthropic.com/v1"
//! model = "claude-sonnet-4-5"
//! api_key_secret = "anthropic-key"
//!
//! [mcp.fs]                  # an MCP server (stdio) whose tools become mcp.fs.TOOL
//! command = ["node", "/opt/mcp/server-filesystem/dist/index.js", "/srv/mcp-fs"]
//! cwd = "/srv/mcp-fs"       # its working directory: the only one it may write
//! read_paths = ["/opt/mcp", "/etc/ssl"]  # what else it may read (besides /usr, /lib…)
//! env = ["LANG"]            # host variables it gets; its environment is otherwise empty
//! timeout_secs = 30         # per call; also cpu_seconds, memory_mb, max_processes,
//!                           # max_open_files, file_size_mb, max_result_bytes, concurrency
//!
//! [mcp.remote]              # a streamable-HTTP MCP server
//! url = "https://mcp.example.com/mcp"
//! token_secret = "remote-mcp-token"  # a vault secret, sent as a bearer token
//!
//! [otel]                    # export traces over OTLP/HTTP (feature `otel`, see otel.rs)
//! endpoint = "http://127.0.0.1:4318"
//! service_name = "toka-node"  # optional
//!
//! [[agents]]                # started at boot unless the journal already has them
//! id = "ops"
//! kind = "supervisor"
//! args = { strategy = "one_for_one", max_restarts = 3, within_secs = 5 }
//!
//! [[agents]]
//! id = "hits"
//! kind = "counter"
//! parent = "ops"            # parents come before their children
//! ```
//!
//! Without a `[tools]` table the node has no tools (`GET /tools` is empty).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use toka_store::Durability;
use toka_tools::SandboxPolicy;

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The HTTP API's address.
    pub(crate) listen: Option<SocketAddr>,
    /// How appends reach the disk.
    pub(crate) durability: Option<DurabilitySetting>,
    /// A tracing filter.
    pub(crate) log: Option<String>,
    /// `json`: one JSON object per log line (default: `text`).
    pub(crate) log_format: Option<LogFormat>,
    /// How long an ask waits for a reply, in milliseconds. Default: 5,000.
    pub(crate) ask_timeout_ms: Option<u64>,
    /// A file holding the journal's 32-byte encryption key (`--key-file` overrides it).
    pub(crate) key_file: Option<PathBuf>,
    /// Where the journal lives: a `postgres://` URL; absent: the sled database in the data
    /// directory (`--journal` overrides it).
    pub(crate) journal: Option<String>,
    /// How long a request head may take to arrive, in milliseconds. Default: 5,000.
    pub(crate) header_timeout_ms: Option<u64>,
    /// How long a request body may take to arrive, in milliseconds. Default: 10,000.
    pub(crate) body_timeout_ms: Option<u64>,
    /// Connections served at once. Default: 512.
    pub(crate) max_connections: Option<usize>,
    /// How long a graceful shutdown waits for open connections, in milliseconds.
    /// Default: 5,000.
    pub(crate) shutdown_timeout_ms: Option<u64>,
    /// With `fsync` durability: how long, at most, the journal holds a flush so that
    /// concurrent appends share it, in microseconds (0: flush at once). Default: 2,000
    /// (`toka_store::JournalConfig::commit_linger`).
    pub(crate) commit_linger_us: Option<u64>,
    /// Which tools the node's tool host offers.
    #[serde(default)]
    pub(crate) tools: ToolsConfig,
    /// Agents to start at boot, in order, unless the tree already holds their id.
    #[serde(default)]
    pub(crate) agents: Vec<BootAgent>,
    /// The models agents may call, by name.
    #[serde(default)]
    pub(crate) models: std::collections::BTreeMap<String, ModelConfig>,
    /// MCP servers whose tools the node offers as `mcp.NAME.TOOL` (see `mcp.rs`).
    #[serde(default)]
    pub(crate) mcp: std::collections::BTreeMap<String, crate::mcp::McpConfig>,
    /// Where traces are exported (feature `otel`, see `otel.rs`); none: nowhere.
    pub(crate) otel: Option<crate::otel::OtelConfig>,
    /// Run as a node of a cluster over the PostgreSQL journal (see `cluster.rs`).
    pub(crate) cluster: Option<ClusterConfig>,
}

/// The `[cluster]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterConfig {
    /// This node's id (`--node-id` overrides it): 1 to 32 of `a-z`, `0-9`, `_`.
    pub(crate) node_id: Option<String>,
    /// The URL other nodes reach this node's API at (`--advertise` overrides it).
    /// Default: `http://` and the listen address.
    pub(crate) advertise: Option<String>,
    /// How many shards the agents are spread over; fixed when the cluster is made.
    /// Default: 8.
    pub(crate) shards: Option<u32>,
    /// How long a shard's lease lasts unless renewed, in milliseconds: a dead node's
    /// shards move after about this long. Default: 3,000.
    pub(crate) lease_ms: Option<u64>,
}

/// A `[models.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelConfig {
    /// The wire format: `"openai"` (Chat Completions) or `"anthropic"` (Messages API).
    pub(crate) provider: ModelProvider,
    /// The API's base URL, e.g. `https://api.openai.com/v1`.
    pub(crate) base_url: String,
    /// The model's name on the provider's side.
    pub(crate) model: String,
    /// The vault secret holding the API key; none for local servers.
    pub(crate) api_key_secret: Option<String>,
    /// Seconds a call (or a stream's next chunk) may take. Default: 120.
    pub(crate) timeout_secs: Option<u64>,
    /// Retries on 429, 5xx and timeouts. Default: 3.
    pub(crate) max_retries: Option<u32>,
}

/// A model provider's wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModelProvider {
    /// OpenAI-compatible Chat Completions.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

/// An `[[agents]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BootAgent {
    /// Its id.
    pub(crate) id: String,
    /// Its kind.
    pub(crate) kind: String,
    /// Its arguments (default: `{}`).
    #[serde(default = "empty_object")]
    pub(crate) args: serde_json::Value,
    /// Its parent (default: top level).
    pub(crate) parent: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The `[tools]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolsConfig {
    /// The directory the file tools are confined to; none: no file tools.
    pub(crate) fs_root: Option<PathBuf>,
    /// Only `fs.read` and `fs.list`.
    #[serde(default)]
    pub(crate) fs_read_only: bool,
    /// The largest file `fs.read` returns and `fs.write` accepts, in bytes.
    pub(crate) fs_max_file_bytes: Option<u64>,
    /// The jail directory of `shell.exec`; none: no shell tool.
    pub(crate) shell_jail: Option<PathBuf>,
    /// The programs `shell.exec` may run (names in `/usr/bin` or `/bin`, or absolute).
    #[serde(default)]
    pub(crate) shell_allow: Vec<String>,
    /// Wall-clock limit of a `shell.exec` run, in seconds.
    pub(crate) shell_timeout_secs: Option<u64>,
    /// CPU seconds of a run (`RLIMIT_CPU`).
    pub(crate) shell_cpu_seconds: Option<u64>,
    /// Address space of a run, in MiB (`RLIMIT_AS`).
    pub(crate) shell_memory_mb: Option<u64>,
    /// Processes (`RLIMIT_NPROC`).
    pub(crate) shell_max_processes: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub(crate) shell_max_open_files: Option<u64>,
    /// Largest file a run may write, in MiB (`RLIMIT_FSIZE`).
    pub(crate) shell_file_size_mb: Option<u64>,
    /// Bytes kept of stdout and of stderr each; more kills the run.
    pub(crate) shell_output_bytes: Option<usize>,
    /// Tools (names or `prefix.*`) whose every call waits for a human approval, whatever
    /// the caller's token says.
    #[serde(default)]
    pub(crate) approval: Vec<String>,
    /// How long an approval stays pending before it expires (counts as denied), in
    /// seconds. Default: one day.
    pub(crate) approval_ttl_secs: Option<u64>,
}

impl ToolsConfig {
    /// The sandbox policy of `shell.exec` jailed in `jail`: the strict defaults of
    /// [`SandboxPolicy::new`] with this table's limits applied.
    pub(crate) fn sandbox_policy(&self, jail: &Path) -> anyhow::Result<SandboxPolicy> {
        let mut policy = SandboxPolicy::new(jail);
        if let Some(secs) = self.shell_timeout_secs {
            policy.timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.shell_cpu_seconds {
            policy.cpu_seconds = secs;
        }
        if let Some(mb) = self.shell_memory_mb {
            policy.address_space = mebibytes(mb, "shell_memory_mb")?;
        }
        if let Some(n) = self.shell_max_processes {
            policy.processes = n;
        }
        if let Some(n) = self.shell_max_open_files {
            policy.open_files = n;
        }
        if let Some(mb) = self.shell_file_size_mb {
            policy.file_size = mebibytes(mb, "shell_file_size_mb")?;
        }
        if let Some(bytes) = self.shell_output_bytes {
            policy.output_bytes = bytes;
        }
        Ok(policy)
    }
}

fn mebibytes(mb: u64, key: &str) -> anyhow::Result<u64> {
    mb.checked_mul(1 << 20)
        .with_context(|| format!("[tools] {key} = {mb} is too large"))
}

/// `log_format` in the config file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// `durability` in the config file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DurabilitySetting {
    /// Every append is fsynced before it is acknowledged.
    Fsync,
    /// Appends are flushed in the background.
    Buffered,
}

impl From<DurabilitySetting> for Durability {
    fn from(setting: DurabilitySetting) -> Self {
        match setting {
            DurabilitySetting::Fsync => Durability::Fsync,
            DurabilitySetting::Buffered => Durability::Buffered,
        }
    }
}

impl Config {
    /// Reads `path`; `None` gives the defaults.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_rejects_unknown_ones() {
        let config = Config::parse(
            "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\ndurability = \"buffered\"\nlog = \"debug\"\nask_timeout_ms = 10\ncommit_linger_us = 250\n",
        )
        .unwrap();
        assert_eq!(config.commit_linger_us, Some(250));
        assert_eq!(config.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(config.durability, Some(DurabilitySetting::Buffered));
        assert_eq!(config.log.as_deref(), Some("debug"));
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(config.ask_timeout_ms, Some(10));
        assert!(config.tools.fs_root.is_none());
        let config = Config::parse(
            "[tools]\nfs_root = \"/srv\"\nfs_read_only = true\nshell_jail = \"/j\"\nshell_allow = [\"ls\"]\n",
        )
        .unwrap();
        assert_eq!(config.tools.fs_root, Some(PathBuf::from("/srv")));
        assert!(config.tools.fs_read_only);
        assert_eq!(config.tools.shell_allow, ["ls"]);
        let policy = config.tools.sandbox_policy(Path::new("/j")).unwrap();
        let defaults = SandboxPolicy::new("/j");
        assert_eq!(policy.timeout, defaults.timeout);
        assert_eq!(policy.address_space, defaults.address_space);
        assert_eq!(policy.output_bytes, defaults.output_bytes);
        let config = Config::parse(
            "key_file = \"/etc/toka.key\"\n[tools]\nshell_jail = \"/j\"\nshell_timeout_secs = 3\nshell_cpu_seconds = 2\nshell_memory_mb = 256\nshell_max_processes = 8\nshell_max_open_files = 32\nshell_file_size_mb = 4\nshell_output_bytes = 4096\n",
        )
        .unwrap();
        assert_eq!(config.key_file, Some(PathBuf::from("/etc/toka.key")));
        let policy = config.tools.sandbox_policy(Path::new("/j")).unwrap();
        assert_eq!(policy.jail, PathBuf::from("/j"));
        assert_eq!(policy.timeout, Duration::from_secs(3));
        assert_eq!(policy.cpu_seconds, 2);
        assert_eq!(policy.address_space, 256 << 20);
        assert_eq!(policy.processes, 8);
        assert_eq!(policy.open_files, 32);
        assert_eq!(policy.file_size, 4 << 20);
        assert_eq!(policy.output_bytes, 4096);
        let huge = Config::parse("[tools]\nshell_memory_mb = 18446744073709551615\n").unwrap();
        assert!(huge.tools.sandbox_policy(Path::new("/j")).is_err());
        assert!(Config::parse("[tools]\nshell_memory = 5\n").is_err());
        assert!(Config::parse("keyfile = \"k\"\n").is_err());
        let config = Config::parse(
            "[[agents]]\nid = \"s\"\nkind = \"supervisor\"\nargs = { max_restarts = 2 }\n[[agents]]\nid = \"c\"\nkind = \"counter\"\nparent = \"s\"\n",
        )
        .unwrap();
        assert_eq!(config.agents.len(), 2);
        assert_eq!(
            config.agents[0].args,
            serde_json::json!({"max_restarts": 2})
        );
        assert_eq!(config.agents[1].args, serde_json::json!({}));
        assert_eq!(config.agents[1].parent.as_deref(), Some("s"));
        assert!(Config::parse("").is_ok());
        assert!(Config::parse("colour = \"blue\"").is_err());
    }

    #[test]
    fn models_name_their_provider() {
        let config = Config::parse(
            "[models.local]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3.2\"\n[models.claude]\nprovider = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\nmodel = \"claude-sonnet-4-5\"\napi_key_secret = \"anthropic-key\"\n",
        )
        .unwrap();
        assert_eq!(config.models["local"].provider, ModelProvider::Openai);
        assert_eq!(config.models["claude"].provider, ModelProvider::Anthropic);
        assert_eq!(
            config.models["claude"].api_key_secret.as_deref(),
            Some("anthropic-key")
        );
        assert!(
            Config::parse(
                "[models.x]\nprovider = \"Anthropic\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\n"
            )
            .is_err(),
            "provider names are lower case"
        );
    }
}
