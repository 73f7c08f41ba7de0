//! `init`: create a data directory, its root key and an admin token.
//!
//! A data directory is *initialised* when it holds both `root.key` and `admin.token`.
//! `init` never overwrites either:
//! - neither exists: create the directory (`0700`), the journal, the root key (`0600`,
//!   by [`Authority::open`]) and an admin token (no caveats) in `admin.token` (`0600`,
//!   created exclusively), then print the token once on stdout;
//! - both exist: say so on stderr, print nothing on stdout, exit 0;
//! - only one exists (an interrupted `init`, or a token file removed on purpose): a
//!   one-line error saying what to do, exit 2. A missing admin token is replaced with
//!   `token mint`; an admin token without its root key can never verify.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;
use toka_tools::{Authority, Capability};

use crate::cli::{DataDir, InitArgs};

pub(crate) fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    init_with(args, || sled_journal(&args.dir))
}

/// The data directory's own (sled) journal, created if need be.
fn sled_journal(dir: &DataDir) -> anyhow::Result<Arc<dyn toka_store::Journal>> {
    Ok(Arc::new(dir.open_or_create_journal()?))
}

/// [`init`] with the journal opened by `open_journal` (`run --journal postgres://…`: the
/// root key's records go to PostgreSQL, and the data directory gets no sled journal).
pub(crate) fn init_with(
    args: &InitArgs,
    open_journal: impl FnOnce() -> anyhow::Result<Arc<dyn toka_store::Journal>>,
) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let key_path = dir.root_key_path();
    let token_path = dir.admin_token_path();
    match (key_path.exists(), token_path.exists()) {
        (true, true) => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "created": false,
                        "data_dir": dir.data_dir.display().to_string(),
                        "admin_token_file": token_path.display().to_string(),
                    })
                );
            } else {
                eprintln!(
                    "toka-node: {} is already initialised; nothing changed (the admin token is \
                     in {})",
                    dir.data_dir.display(),
                    token_path.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        (true, false) => bail!(
            "{} has a root key but no admin token ({}): init was interrupted or the token was \
             removed; mint a new one with `toka-node token mint --data-dir {}`",
            dir.data_dir.display(),
            token_path.display(),
            dir.data_dir.display()
        ),
        (false, true) => bail!(
            "{} has an admin token but no root key ({}), so that token can never verify; move \
             {} away and run `toka-node init` again",
            dir.data_dir.display(),
            key_path.display(),
            token_path.display()
        ),
        (false, false) => {}
    }

    let token = create(dir, open_journal)?;
    let text = token.to_string();
    if args.json {
        println!(
            "{}",
            json!({
                "created": true,
                "data_dir": dir.data_dir.display().to_string(),
                "admin_token_file": token_path.display().to_string(),
                "identifier": token.identifier(),
                "token": text,
            })
        );
    } else {
        eprintln!(
            "toka-node: initialised {}: journal, root key {} and an admin token (no caveats), \
             saved in {} and printed below, once",
            dir.data_dir.display(),
            key_path.display(),
            token_path.display()
        );
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The first `toka-node run` on a fresh data directory: initialises it like `init`, but
/// never prints the admin token (a service's output ends up in logs); one line on stderr
/// says where it is. A half-initialised directory fails as `init` does.
///
/// `open_journal` opens the node's journal (the data directory's own, or PostgreSQL).
pub(crate) fn on_first_run(
    dir: &DataDir,
    open_journal: impl FnOnce() -> anyhow::Result<Arc<dyn toka_store::Journal>>,
) -> anyhow::Result<()> {
    if dir.root_key_path().exists() && dir.admin_token_path().exists() {
        return Ok(());
    }
    if !dir.root_key_path().exists() && !dir.admin_token_path().exists() {
        create(dir, open_journal)?;
        eprintln!(
            "toka-node: initialised {}: journal, root key and an admin token (no caveats) in {}",
            dir.data_dir.display(),
            dir.admin_token_path().display()
        );
        return Ok(());
    }
    init_with(
        &InitArgs {
            dir: dir.clone(),
            json: false,
        },
        open_journal,
    )
    .map(drop)
}

/// Creates the data directory, its journal, root key and admin token file (see the
/// module docs); returns the admin token.
fn create(
    dir: &DataDir,
    open_journal: impl FnOnce() -> anyhow::Result<Arc<dyn toka_store::Journal>>,
) -> anyhow::Result<Capability> {
    let key_path = dir.root_key_path();
    let token_path = dir.admin_token_path();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir.data_dir)
        .with_context(|| format!("creating {}", dir.data_dir.display()))?;
    let journal = open_journal()?;
    let authority = Authority::open(&key_path, journal).context("creating the root key")?;
    // The seal key too, so that copies of the directory (the nodes of a cluster) open
    // each other's sealed tokens.
    toka_tools::Sealer::open(&dir.seal_key_path()).context("creating the seal key")?;
    let token = crate::cli::block_on(authority.issue(Vec::new(), "init"))?
        .context("minting the admin token")?;
    let text = token.to_string();

    // Exclusive create with the mode set at creation: never overwrites, never readable
    // by others even for an instant (the umask can only narrow it).
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_path)
        .with_context(|| format!("creating {}", token_path.display()))?;
    writeln!(file, "{text}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", token_path.display()))?;
    // Make the new entries durable too.
    if let Ok(d) = std::fs::File::open(&dir.data_dir) {
        let _ = d.sync_all();
    }
    Ok(token)
}
