//! `toka-node`: the standalone Toka node.
//!
//! It offers the offline commands on a data directory: `init` (journal, root key,
//! admin token), `token mint|attenuate|inspect|revoke`, `events list|verify|export`,
//! `agents tree`, and `completions SHELL`; `approvals list|approve|deny`, a client of a
//! running node's API; and `run`, the actor runtime behind the HTTP
//! API of [`server`]. `main` only parses, runs and maps the outcome to an exit
//! code: 0 success, 1 a check that failed (`events verify`, `token inspect`), 2 an error
//! (one line on stderr).

/// mimalloc: per-thread heaps instead of glibc's arena locks, which showed up as ~12 %
/// of a durable message's CPU under HTTP load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agents;
mod approvals;
mod approvals_cli;
mod cli;
mod config;
mod events;
mod init;
mod kinds;
mod mcp;
mod progress;
mod run;
mod secrets;
mod server;
mod token;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toka-node: {error:#}");
            ExitCode::from(2)
        }
    }
}
