//! The node's TOML config file (`run --config FILE`). Every key is optional; flags and
//! `TOKA_*` environment variables override it.
//!
//! ```toml
//! listen = "127.0.0.1:7070"
//! durability = "fsync"      # or "buffered"
//! log = "info"              # a tracing filter; RUST_LOG overrides it
//! log_format = "json"       # or "text" (the default); --log-json overrides it
//! ask_timeout_ms = 5000     # how long POST /agents/{id}/ask waits for a reply
//!
//! [tools]
//! fs_root = "/srv/toka"     # fs.read, fs.list and fs.write, confined to this directory
//! fs_read_only = false      # true: no fs.write
//! fs_max_file_bytes = 16777216
//! shell_jail = "/srv/jail"  # shell.exec runs the allowed programs jailed here
//! shell_allow = ["ls", "cat", "wc"]
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

use anyhow::Context;
use serde::Deserialize;
use toka_store::Durability;

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
    /// Which tools the node's tool host offers.
    #[serde(default)]
    pub(crate) tools: ToolsConfig,
    /// Agents to start at boot, in order, unless the tree already holds their id.
    #[serde(default)]
    pub(crate) agents: Vec<BootAgent>,
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
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
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
            "listen = \"127.0.0.1:9000\"\nlog_format = \"json\"\ndurability = \"buffered\"\nlog = \"debug\"\nask_timeout_ms = 10\n",
        )
        .unwrap();
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
}
