//! Command-line definitions (clap) and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use toka_store::{EncryptionKey, JournalConfig, SledJournal};

/// The Toka node.
#[derive(Debug, Parser)]
#[command(name = "toka-node", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node (not implemented yet: the actor runtime and HTTP API come later).
    Run(DataDir),
    /// Inspect the event journal of a data directory (offline: the node must not be running).
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// List events, oldest first.
    List(ListArgs),
    /// Walk the hash chain; exit 0 if intact, 1 and the first bad position otherwise.
    Verify(VerifyArgs),
}

/// Where the node keeps its state.
#[derive(Debug, Args)]
pub(crate) struct DataDir {
    /// The data directory (the journal lives in `DATA_DIR/journal`).
    #[arg(long, default_value = "./toka-data", env = "TOKA_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// A file holding the journal's 32-byte encryption key, if it is encrypted.
    #[arg(long, env = "TOKA_KEY_FILE")]
    pub(crate) key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) dir: DataDir,
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
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Cli {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Run(_) => bail!(
                "`run` is not implemented yet: the actor runtime and HTTP API are still being \
                 built. The offline `events list` and `events verify` commands work today."
            ),
            Command::Events(EventsCommand::List(args)) => crate::events::list(&args),
            Command::Events(EventsCommand::Verify(args)) => crate::events::verify(&args),
        }
    }
}

impl DataDir {
    /// Opens the journal of this data directory, which must already exist.
    pub(crate) fn open_journal(&self) -> anyhow::Result<SledJournal> {
        let path = self.data_dir.join("journal");
        if !path.is_dir() {
            bail!("no journal at {} (is --data-dir right?)", path.display());
        }
        let mut config = JournalConfig::default();
        if let Some(key_file) = &self.key_file {
            let bytes = std::fs::read(key_file)
                .with_context(|| format!("reading key file {}", key_file.display()))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "key file {} holds {} bytes; a key is exactly 32 bytes",
                    key_file.display(),
                    bytes.len()
                )
            })?;
            config = config.encryption(EncryptionKey::from_bytes(key));
        }
        SledJournal::open(&path, config)
            .with_context(|| format!("opening the journal at {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
}
