//! Command-line definitions (clap) and dispatch.
//!
//! The help text of every command and flag is written once, here, as doc comments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use toka_store::{EncryptionKey, JournalConfig, SledJournal};

/// The Toka node.
#[derive(Debug, Parser)]
#[command(name = "toka-node", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `toka-node secret ...`.
#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Read a secret's value from stdin (up to its end; one trailing newline is dropped)
    /// and store it under NAME, replacing any earlier value. Never echoes the value.
    Set(SecretSetArgs),
    /// List the secrets' names (never their values).
    List(DataDir),
}

/// `secret set`.
#[derive(Debug, Args)]
pub(crate) struct SecretSetArgs {
    /// The secret's name (e.g. `openai-key`).
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) dir: DataDir,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: its journal, root key and an admin token (printed once).
    ///
    /// Creates `DATA_DIR` (mode 0700), the journal, the root key `DATA_DIR/root.key` and
    /// an admin token without caveats, saved in `DATA_DIR/admin.token` (both mode 0600)
    /// and printed once on stdout. On an initialised directory it changes nothing and
    /// prints no token. A directory with a root key but no admin token, or the reverse,
    /// is an error that says what to do.
    Init(InitArgs),
    /// Run the node: recover the agent tree from the journal, then serve the HTTP API.
    ///
    /// Initialises `DATA_DIR` first if it never was (as `init` does, but the admin token
    /// stays in `DATA_DIR/admin.token`: a service's output ends up in logs). Prints
    /// `listening on ADDR` on stdout once it serves, then on stderr the console's URL
    /// and where to read the admin token. SIGINT or
    /// SIGTERM: stops accepting requests, drains the agents, flushes the journal and
    /// exits 0.
    Run(RunArgs),
    /// Inspect the event journal of a data directory (through the running node, or
    /// offline on a stopped one).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect the agents of a data directory (through the running node, or offline).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Mint, attenuate, inspect and revoke capability tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit trail: revoked tokens and refused requests (through the running node, or
    /// offline).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The node's status: version, uptime, agents by status, journal size and head,
    /// durability, recovery time, tools, models and pending approvals.
    ///
    /// With no node running on the data directory, what the directory itself says: the
    /// journal's size and head and the agents it records.
    Status(StatusArgs),
    /// Store secrets (such as model API keys) in the data directory's encrypted vault.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// List, approve and deny the tool calls that wait for a human decision, on a
    /// running node (over its HTTP API: `--url`, `--token-file` or `TOKA_TOKEN`).
    #[command(subcommand)]
    Approvals(crate::approvals_cli::ApprovalsCommand),
    /// Print shell completions for toka-node (e.g. `toka-node completions bash`).
    Completions(CompletionsArgs),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// List events, oldest first.
    List(ListArgs),
    /// Walk the hash chain; exit 0 if intact, 1 and the first bad position otherwise.
    Verify(VerifyArgs),
    /// Export every event, oldest first, as JSON lines (payloads in standard base64).
    ///
    /// One JSON object per event and line: `position`, `stream`, `seq`, `id`, `kind`,
    /// `timestamp` (RFC 3339, UTC), `timestamp_micros`, `causation_id`,
    /// `correlation_id` and `payload_base64` (the payload bytes, decrypted, in standard
    /// base64 with padding).
    Export(ExportArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Every revoked token identifier, with its reason and time, oldest first.
    Revocations(AuditArgs),
    /// The most recent capability denials (tool, agent, token identifier, reason), oldest
    /// first.
    Denials(DenialsArgs),
    /// Every token issued (by `init`, `token mint` or `POST /tokens`): when, its
    /// identifier, who issued it and its caveats, oldest first. Never the token itself.
    Tokens(AuditArgs),
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// The supervision tree as the journal records it (spawns and stops replayed in order).
    Tree(TreeArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a new token signed by the data directory's root key.
    Mint(MintArgs),
    /// Narrow a token with more caveats (needs no key); prints the new token.
    Attenuate(AttenuateArgs),
    /// Show a token's identifier and caveats, and whether it verifies and is revoked.
    ///
    /// Exit status: 0 when nothing is wrong with the token as far as it could be checked;
    /// 1 when it has expired, holds a caveat Toka does not understand, or (checked with a
    /// data directory) its signature does not verify or it is revoked; 2 when the token
    /// or the data directory cannot be read.
    Inspect(InspectArgs),
    /// Revoke a token, and every attenuation of it, by identifier (journaled).
    Revoke(RevokeArgs),
}

/// Where the node keeps its state.
#[derive(Clone, Debug, Args)]
pub(crate) struct DataDir {
    /// The data directory (journal in `DATA_DIR/journal`, root key in `DATA_DIR/root.key`).
    #[arg(long, default_value = "./toka-data", env = "TOKA_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// A file holding the journal's 32-byte encryption key, if it is encrypted (for
    /// `run`, also `key_file` in the config file).
    #[arg(long, env = "TOKA_KEY_FILE")]
    pub(crate) key_file: Option<PathBuf>,
}

/// How to reach a running node. Without `--node`, a command opens the data directory
/// itself, and calls the node at the config's `listen` only when a running node holds
/// the directory.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct NodeArgs {
    /// Work through the running node at URL (e.g. `http://127.0.0.1:7070`) [default:
    /// the data directory itself, or, when a running node holds it, the node at the
    /// config's `listen` (`TOKA_LISTEN`, or 127.0.0.1:7070)].
    #[arg(long, env = "TOKA_NODE", value_name = "URL", alias = "url")]
    pub(crate) node: Option<String>,
    /// A file holding the bearer token for the node [default: `TOKA_TOKEN` (the token
    /// itself), else `DATA_DIR/admin.token`].
    #[arg(long, env = "TOKA_TOKEN_FILE", value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// The node's config file, read for its `listen` address.
    #[arg(long, env = "TOKA_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    /// The address to serve the HTTP API on (port 0: any free port) [default:
    /// 127.0.0.1:7070, or `listen` in the config file].
    #[arg(long, env = "TOKA_LISTEN")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// A TOML config file: `listen`, `durability` ("fsync" or "buffered"), `log` (a
    /// tracing filter such as "info,toka_actors=debug"; `RUST_LOG` overrides it),
    /// `log_format` ("text" or "json"), `ask_timeout_ms`, `key_file` (the journal's
    /// encryption key, as `--key-file`), a `[tools]` table (`fs_root`, `fs_read_only`,
    /// `fs_max_file_bytes`, `shell_jail`, `shell_allow`, and the sandbox limits of
    /// shell.exec: `shell_timeout_secs`, `shell_cpu_seconds`, `shell_memory_mb`,
    /// `shell_max_processes`, `shell_max_open_files`, `shell_file_size_mb`,
    /// `shell_output_bytes`; `approval`, the tools whose every call waits for a human
    /// decision, and `approval_ttl_secs`, after which an undecided one expires) and
    /// `[[agents]]` to start at boot (`id`, `kind`, `args`,
    /// `parent`), and the HTTP limits `header_timeout_ms`, `body_timeout_ms`,
    /// `max_connections` and `shutdown_timeout_ms`. Unknown keys are an error. Flags and
    /// their `TOKA_*` variables override it. Without a config file, the fs tools are
    /// confined to the data directory's `workspace` (created) and shell.exec is off.
    #[arg(long, env = "TOKA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// How appends reach the disk: `fsync` (every acknowledged append is on disk, the
    /// default) or `buffered` (flushed in the background) [config: `durability`].
    #[arg(long, env = "TOKA_DURABILITY", value_enum)]
    pub(crate) durability: Option<crate::config::DurabilitySetting>,
    /// Keep the journal in PostgreSQL: `postgres://user[:password]@host[:port]/db`, with
    /// `?schema=NAME` for the schema it lives in (default `toka`, created with its tables
    /// on first use) [default: the sled database `journal` in the data directory; config:
    /// `journal`]. The password is never shown (prefer `TOKA_JOURNAL` or the config file
    /// to a flag, which other users can see in the process list).
    #[arg(long, env = "TOKA_JOURNAL", value_name = "URL", hide_env_values = true)]
    pub(crate) journal: Option<String>,
    /// Run as node ID of a cluster over the PostgreSQL journal: the nodes sharing a
    /// database share the agents, each shard on one node at a time (1 to 32 of a-z, 0-9,
    /// _) [config: `[cluster] node_id`; see the README's "A cluster of nodes"].
    #[arg(long, env = "TOKA_NODE_ID", value_name = "ID")]
    pub(crate) node_id: Option<String>,
    /// The URL other cluster nodes reach this node's API at [default: http:// and the
    /// listen address; config: `[cluster] advertise`].
    #[arg(long, env = "TOKA_ADVERTISE", value_name = "URL")]
    pub(crate) advertise: Option<String>,
    /// A tracing filter, e.g. `info,toka_actors=debug` [default: warn; config: `log`;
    /// `RUST_LOG` overrides it].
    #[arg(long, env = "TOKA_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// Log JSON lines on stderr instead of text [config: `log_format = "json"`; the
    /// variable takes `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`].
    #[arg(
        long,
        env = "TOKA_LOG_JSON",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) log_json: bool,
    /// How long `POST /agents/{id}/ask` waits for a reply, in milliseconds [default:
    /// 5000; config: `ask_timeout_ms`].
    #[arg(long, env = "TOKA_ASK_TIMEOUT_MS", value_name = "MS")]
    pub(crate) ask_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's head (request line and headers);
    /// also how long an idle keep-alive connection stays open, in milliseconds [default:
    /// 5000; config: `header_timeout_ms`].
    #[arg(long, env = "TOKA_HEADER_TIMEOUT_MS", value_name = "MS")]
    pub(crate) header_timeout_ms: Option<u64>,
    /// How long a request's body may take to arrive, in milliseconds; then 408 [default:
    /// 10000; config: `body_timeout_ms`].
    #[arg(long, env = "TOKA_BODY_TIMEOUT_MS", value_name = "MS")]
    pub(crate) body_timeout_ms: Option<u64>,
    /// How many connections are served at once; more wait to be accepted [default: 512;
    /// config: `max_connections`].
    #[arg(long, env = "TOKA_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// On SIGINT/SIGTERM, how long open connections may take to finish before they are
    /// dropped, in milliseconds [default: 5000; config: `shutdown_timeout_ms`].
    #[arg(long, env = "TOKA_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub(crate) shutdown_timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    /// Print the outcome as JSON (`created`, `data_dir`, `admin_token_file`, `token`).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Only this stream (positions then follow the stream's sequence numbers).
    #[arg(long)]
    pub(crate) stream: Option<String>,
    /// First global position (or sequence number with `--stream`).
    #[arg(long, default_value_t = 1)]
    pub(crate) from: u64,
    /// At most this many events.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// JSON lines: the only export format (accepted so scripts can say what they expect).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TreeArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Print a JSON array of `{"id", "kind", "parent"}`, parents before children.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// A caveat, `KEY = VALUE` (repeatable): `tool = fs.read`, `tool = fs.*`,
    /// `agent = ID`, `expires = RFC3339`, `path-prefix = /dir`, `max-bytes = N`,
    /// `secret = NAME`, `approval = required` (or `approval = fs.*`: those tool calls wait
    /// for a human decision). Without any, the token allows everything (an admin token).
    #[arg(long = "caveat", value_name = "CAVEAT")]
    pub(crate) caveats: Vec<String>,
    /// Adds `expires = now + TTL`; e.g. `30s`, `15m`, `1h`, `2d`, `1w`, `1h30m`.
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Print `{"token", "identifier", "caveats"}` as JSON instead of the bare token.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AttenuateArgs {
    /// The token to narrow (`-`: read it from standard input).
    pub(crate) token: String,
    /// A caveat to add, `KEY = VALUE` (repeatable; see `token mint --help`); at least
    /// one, or `--ttl`.
    #[arg(
        long = "caveat",
        value_name = "CAVEAT",
        required_unless_present = "ttl"
    )]
    pub(crate) caveats: Vec<String>,
    /// Adds `expires = now + TTL`; e.g. `30s`, `15m`, `1h`, `2d`.
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Print `{"token", "identifier", "caveats"}` as JSON instead of the bare token.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where the admin token is, with `--node` (needs nothing else: without `--node`,
    /// the token is narrowed here, without any key).
    #[command(flatten)]
    pub(crate) dir: DataDir,
    /// With `--node`, the node first checks that the token is genuine and unrevoked.
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The token to inspect (`-`: read it from standard input).
    pub(crate) token: String,
    /// The data directory whose root key checks the signature and whose journal lists
    /// revocations; it must be initialised. Without it, `./toka-data` is used if it
    /// holds a root key, and otherwise the token is only decoded.
    #[arg(long, env = "TOKA_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// A file holding the journal's 32-byte encryption key, if it is encrypted.
    #[arg(long, env = "TOKA_KEY_FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// While a node runs on the data directory, the revocations are asked of it (the
    /// signature is still checked with the directory's root key).
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The token's identifier (as `token inspect` shows it), or the token itself.
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Why, recorded with the revocation.
    #[arg(long, default_value = "revoked with toka-node token revoke")]
    pub(crate) reason: String,
    /// Print `{"identifier", "already_revoked"}` as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Print the status as JSON (the node's `GET /status`, plus `pending_approvals`
    /// and `online`).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DenialsArgs {
    #[command(flatten)]
    pub(crate) audit: AuditArgs,
    /// How many of the most recent denials (at most 1,000).
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

impl Cli {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Init(args) => crate::init::init(&args),
            Command::Run(args) => crate::run::run(&args),
            Command::Events(EventsCommand::List(args)) => crate::events::list(&args),
            Command::Events(EventsCommand::Verify(args)) => crate::events::verify(&args),
            Command::Events(EventsCommand::Export(args)) => crate::events::export(&args),
            Command::Agents(AgentsCommand::Tree(args)) => crate::agents::tree(&args),
            Command::Token(TokenCommand::Mint(args)) => crate::token::mint(&args),
            Command::Token(TokenCommand::Attenuate(args)) => crate::token::attenuate(&args),
            Command::Token(TokenCommand::Inspect(args)) => crate::token::inspect(&args),
            Command::Token(TokenCommand::Revoke(args)) => crate::token::revoke(&args),
            Command::Audit(AuditCommand::Revocations(args)) => crate::audit::revocations(&args),
            Command::Audit(AuditCommand::Denials(args)) => crate::audit::denials(&args),
            Command::Audit(AuditCommand::Tokens(args)) => crate::audit::tokens(&args),
            Command::Status(args) => crate::status::status(&args),
            Command::Secret(SecretCommand::Set(args)) => crate::secrets::set(&args),
            Command::Secret(SecretCommand::List(dir)) => crate::secrets::list(&dir),
            Command::Approvals(command) => command.run(),
            Command::Completions(args) => {
                clap_complete::generate(
                    args.shell,
                    &mut Cli::command(),
                    "toka-node",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl DataDir {
    /// The journal's directory.
    pub(crate) fn journal_path(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// The root key file.
    pub(crate) fn root_key_path(&self) -> PathBuf {
        self.data_dir.join("root.key")
    }

    /// The key that seals capability tokens before they are journaled (created by `run`
    /// on first use; keep it with the root key: without it, reactors cannot open their
    /// tokens).
    pub(crate) fn seal_key_path(&self) -> PathBuf {
        self.data_dir.join("seal.key")
    }

    /// The encrypted vault of secrets (model API keys), and the key that seals it.
    pub(crate) fn vault_paths(&self) -> (PathBuf, PathBuf) {
        (self.data_dir.join("vault"), self.data_dir.join("vault.key"))
    }

    /// The admin token written by `init`.
    pub(crate) fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The fs tools' workspace when no config file names an `fs_root`.
    pub(crate) fn workspace_path(&self) -> PathBuf {
        self.data_dir.join("workspace")
    }

    /// Opens the journal of this data directory, which must already exist.
    pub(crate) fn open_journal(&self) -> anyhow::Result<SledJournal> {
        let path = self.journal_path();
        if !path.is_dir() {
            bail!("no journal at {} (is --data-dir right?)", path.display());
        }
        self.open_or_create_journal()
    }

    /// Opens the journal of this data directory, creating it if it is absent.
    pub(crate) fn open_or_create_journal(&self) -> anyhow::Result<SledJournal> {
        let path = self.journal_path();
        let mut config = JournalConfig::default();
        if let Some(key_file) = &self.key_file {
            config = config.encryption(read_encryption_key(key_file)?);
        }
        SledJournal::open(&path, config).with_context(|| {
            format!(
                "opening the journal at {} (is the node running?)",
                path.display()
            )
        })
    }

    /// Fails unless `init` has run here (the root key exists), without creating anything.
    pub(crate) fn require_initialised(&self) -> anyhow::Result<()> {
        let key = self.root_key_path();
        if !key.is_file() {
            bail!(
                "{} is not initialised: no root key at {} (run `toka-node init --data-dir {}`)",
                self.data_dir.display(),
                key.display(),
                self.data_dir.display()
            );
        }
        Ok(())
    }
}

pub(crate) fn read_encryption_key(key_file: &Path) -> anyhow::Result<EncryptionKey> {
    let bytes = std::fs::read(key_file)
        .with_context(|| format!("reading key file {}", key_file.display()))?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "key file {} holds {} bytes; a key is exactly 32 bytes",
            key_file.display(),
            bytes.len()
        )
    })?;
    Ok(EncryptionKey::from_bytes(key))
}

/// Runs `future` to completion on a single-threaded runtime (for the journal's async
/// append offline, and the HTTP client online).
pub(crate) fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let mut full = vec!["toka-node"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_events_list() {
        let cli = Cli::try_parse_from([
            "toka-node",
            "events",
            "list",
            "--data-dir",
            "/d",
            "--stream",
            "s",
            "--from",
            "3",
            "--limit",
            "9",
            "--json",
        ])
        .unwrap();
        let Command::Events(EventsCommand::List(args)) = cli.command else {
            panic!("parsed {cli:?}");
        };
        assert_eq!(args.dir.data_dir, PathBuf::from("/d"));
        assert_eq!(args.stream.as_deref(), Some("s"));
        assert_eq!((args.from, args.limit, args.json), (3, Some(9), true));
    }

    #[test]
    fn parses_events_verify_and_run() {
        let cli = Cli::try_parse_from(["toka-node", "events", "verify", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Events(EventsCommand::Verify(VerifyArgs { json: true, .. }))
        ));
        let cli = Cli::try_parse_from(["toka-node", "run", "--data-dir", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Run(_)));
    }

    #[test]
    fn parses_run() {
        let Command::Run(args) = parse(&[
            "run",
            "--data-dir",
            "/d",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/etc/toka.toml",
        ]) else {
            panic!()
        };
        assert_eq!(args.dir.data_dir, PathBuf::from("/d"));
        assert_eq!(args.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args.config, Some(PathBuf::from("/etc/toka.toml")));
        let cli = Cli::try_parse_from(["toka-node", "run", "--listen", "nowhere"]);
        assert!(cli.is_err());
    }

    #[test]
    fn parses_init() {
        let Command::Init(args) = parse(&["init", "--data-dir", "/d", "--json"]) else {
            panic!()
        };
        assert_eq!(args.dir.data_dir, PathBuf::from("/d"));
        assert!(args.json);
        let Command::Init(args) = parse(&["init"]) else {
            panic!()
        };
        // The default, unless the test runs with TOKA_DATA_DIR set.
        if std::env::var_os("TOKA_DATA_DIR").is_none() {
            assert_eq!(args.dir.data_dir, PathBuf::from("./toka-data"));
        }
        assert!(!args.json);
    }

    #[test]
    fn parses_events_export() {
        let Command::Events(EventsCommand::Export(args)) =
            parse(&["events", "export", "--json", "--data-dir", "/d"])
        else {
            panic!()
        };
        assert!(args.json);
        assert_eq!(args.dir.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn parses_agents_tree() {
        let Command::Agents(AgentsCommand::Tree(args)) =
            parse(&["agents", "tree", "--data-dir", "/d", "--json"])
        else {
            panic!()
        };
        assert_eq!((args.dir.data_dir, args.json), (PathBuf::from("/d"), true));
    }

    #[test]
    fn parses_token_mint() {
        let Command::Token(TokenCommand::Mint(args)) = parse(&[
            "token",
            "mint",
            "--data-dir",
            "/d",
            "--caveat",
            "tool = fs.read",
            "--caveat",
            "agent = a",
            "--ttl",
            "1h",
        ]) else {
            panic!()
        };
        assert_eq!(args.caveats, ["tool = fs.read", "agent = a"]);
        assert_eq!(args.ttl.as_deref(), Some("1h"));
        assert!(!args.json);
        let Command::Token(TokenCommand::Mint(args)) = parse(&["token", "mint"]) else {
            panic!()
        };
        assert!(args.caveats.is_empty() && args.ttl.is_none());
    }

    #[test]
    fn parses_token_attenuate_and_needs_a_caveat() {
        let Command::Token(TokenCommand::Attenuate(args)) = parse(&[
            "token",
            "attenuate",
            "TOKEN",
            "--caveat",
            "agent = a",
            "--json",
        ]) else {
            panic!()
        };
        assert_eq!(args.token, "TOKEN");
        assert_eq!(args.caveats, ["agent = a"]);
        assert!(args.json);
        assert!(Cli::try_parse_from(["toka-node", "token", "attenuate", "TOKEN"]).is_err());
    }

    #[test]
    fn parses_token_inspect() {
        let Command::Token(TokenCommand::Inspect(args)) =
            parse(&["token", "inspect", "TOKEN", "--data-dir", "/d", "--json"])
        else {
            panic!()
        };
        assert_eq!(args.token, "TOKEN");
        assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
        assert!(args.json);
    }

    #[test]
    fn parses_token_revoke() {
        let Command::Token(TokenCommand::Revoke(args)) = parse(&[
            "token",
            "revoke",
            "ID",
            "--data-dir",
            "/d",
            "--reason",
            "leaked",
        ]) else {
            panic!()
        };
        assert_eq!((args.id.as_str(), args.reason.as_str()), ("ID", "leaked"));
        assert!(Cli::try_parse_from(["toka-node", "token", "revoke"]).is_err());
    }

    #[test]
    fn parses_completions() {
        let Command::Completions(args) = parse(&["completions", "zsh"]) else {
            panic!()
        };
        assert_eq!(args.shell, clap_complete::Shell::Zsh);
        assert!(Cli::try_parse_from(["toka-node", "completions", "cmd.exe"]).is_err());
    }
}
