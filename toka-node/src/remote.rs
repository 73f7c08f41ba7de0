//! Online or offline: how a command reaches a data directory.
//!
//! A command that reads or changes a data directory works either through the running
//! node's HTTP API or on the directory itself, when no node holds it:
//!
//! 1. `--node URL` (or `TOKA_NODE`): through that node only.
//! 2. Otherwise the command opens the data directory's journal itself (offline, as
//!    before). If a running process holds its lock, the command calls the node at the
//!    config's `listen` address (`--config`/`TOKA_CONFIG`; `TOKA_LISTEN` overrides it;
//!    default `127.0.0.1:7070`), if one answers there.
//! 3. If the directory is locked and no node answers, one line says so and the command
//!    exits 2.
//!
//! Opening the directory first (rather than asking whatever node answers at the default
//! address) means a command never acts on another directory's node by mistake.
//!
//! Commands with no offline form (`approvals`) use [`online`]: `--node URL`, else the
//! config's `listen`.
//!
//! Online, the bearer token is read from `--token-file FILE`, else `TOKA_TOKEN` (the
//! token itself), else the data directory's `admin.token`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use toka_store::SledJournal;

use crate::cli::{DataDir, NodeArgs, block_on};
use crate::client::NodeClient;

/// Where the node listens unless its config says otherwise (as `run`).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// How long a node has to answer `GET /health` before the command gives up on it.
const PROBE: Duration = Duration::from_secs(2);

/// How a command reaches its data directory.
pub(crate) enum Access {
    /// The journal, opened by this process (no node holds it).
    Offline(SledJournal),
    /// The running node's API.
    Online(NodeClient),
}

/// Decides how to reach `dir` (see the [module docs](self)).
pub(crate) fn access(dir: &DataDir, node: &NodeArgs) -> anyhow::Result<Access> {
    if let Some(url) = &node.node {
        return Ok(Access::Online(NodeClient::new(
            url,
            Some(token(dir, node)?),
        )?));
    }
    // A held lock is seen at once here; opening the journal would first retry it for
    // a few seconds (for a handle of this process being released).
    if !held_by_another(&dir.journal_path()) {
        match dir.open_journal() {
            Ok(journal) => return Ok(Access::Offline(journal)),
            Err(error) if is_locked(&error) => {}
            Err(error) => return Err(error),
        }
    }
    let url = default_url(node)?;
    let probe = NodeClient::new(&url, None)?;
    if block_on(probe.answers(PROBE))? {
        return Ok(Access::Online(NodeClient::new(
            &url,
            Some(token(dir, node)?),
        )?));
    }
    bail!(
        "no node answers at {url}, and {} is locked by a running process (if its node \
         listens elsewhere, pass --node URL)",
        dir.data_dir.display()
    )
}

/// Only through a running node, for commands that have no offline form (approvals live
/// in the node's memory): `--node URL`, else the node at the config's `listen` (as
/// [`access`] finds it), with the token [`access`] would use.
pub(crate) fn online(dir: &DataDir, node: &NodeArgs) -> anyhow::Result<NodeClient> {
    let url = match &node.node {
        Some(url) => url.clone(),
        None => default_url(node)?,
    };
    NodeClient::new(&url, Some(token(dir, node)?))
}

/// Only through the node: `--node URL` is needed (for commands that need no data
/// directory, such as `token attenuate`).
pub(crate) fn explicit(dir: &DataDir, node: &NodeArgs) -> anyhow::Result<Option<NodeClient>> {
    node.node
        .as_deref()
        .map(|url| NodeClient::new(url, Some(token(dir, node)?)))
        .transpose()
}

/// Whether another process holds the lock of the sled database in `journal` (sled
/// `flock`s its `db` file for as long as it is open). A probe only: taken, the lock is
/// released at once.
fn held_by_another(journal: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(journal.join("db")) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let _ = lock.unlock();
            false
        }
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Whether opening the journal failed because another process holds its lock.
pub(crate) fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::WouldBlock)
            || cause.to_string().contains("could not acquire lock")
    })
}

/// The URL of the node `run` would start with the same config: `TOKA_LISTEN`, else the
/// config's `listen`, else [`DEFAULT_LISTEN`]; an unspecified address (`0.0.0.0`, `::`)
/// is called on loopback.
fn default_url(node: &NodeArgs) -> anyhow::Result<String> {
    let from_env = std::env::var("TOKA_LISTEN")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse::<SocketAddr>()
                .with_context(|| format!("TOKA_LISTEN={v:?} is not an address"))
        })
        .transpose()?;
    let listen = match from_env {
        Some(addr) => addr,
        None => match crate::config::Config::load(node.config.as_deref())?.listen {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("the default address")?,
        },
    };
    Ok(format!("http://{}", reachable(listen)))
}

/// `listen` as a client can call it.
pub(crate) fn reachable(mut listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    listen
}

/// The bearer token for the node: `--token-file`, else `TOKA_TOKEN`, else the data
/// directory's `admin.token`.
fn token(dir: &DataDir, node: &NodeArgs) -> anyhow::Result<String> {
    if let Some(file) = &node.token_file {
        return read_token_file(file);
    }
    if let Ok(token) = std::env::var("TOKA_TOKEN") {
        let token = token.trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    let file = dir.admin_token_path();
    if file.is_file() {
        return read_token_file(&file);
    }
    bail!(
        "no token for the node: pass --token-file FILE or set TOKA_TOKEN (there is no {})",
        file.display()
    )
}

fn read_token_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the token file {}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", file.display());
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_called_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9".parse().unwrap();
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:9");
        let v6: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(reachable(v6).to_string(), "[::1]:9");
        let given: SocketAddr = "10.0.0.1:9".parse().unwrap();
        assert_eq!(reachable(given), given);
    }

    #[test]
    fn lock_errors_are_recognised_through_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::WouldBlock, "busy");
        let error = anyhow::Error::new(io).context("opening the journal");
        assert!(is_locked(&error));
        assert!(!is_locked(&anyhow::anyhow!("no journal at x")));
    }
}
