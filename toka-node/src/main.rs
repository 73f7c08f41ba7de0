//! `toka-node`: the standalone Toka node.
//!
//! It offers `run`, the actor runtime behind the HTTP API of [`server`]; `init` (journal,
//! root key, admin token); the operator's commands `token mint|attenuate|inspect|revoke`,
//! `events list|verify|export`, `agents tree`, `audit revocations|denials` and `status`,
//! which work through the running node or offline on a stopped data directory
//! ([`remote`]); `approvals list|approve|deny`, a client of a running node's API;
//! `secret set|list`; and `completions SHELL`. `main` only parses, runs and maps the outcome to an exit
//! code: 0 success, 1 a check that failed (`events verify`, `token inspect`), 2 an error
//! (one line on stderr).

/// mimalloc: per-thread heaps instead of glibc's arena locks, which showed up as ~12 %
/// of a durable message's CPU under HTTP load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agents;
mod approvals;
mod approvals_cli;
mod audit;
mod cli;
mod client;
#[cfg(feature = "postgres")]
mod cluster;
mod config;
mod events;
mod init;
mod kinds;
mod mcp;
mod otel;
mod progress;
mod remote;
mod run;
mod secrets;
mod server;
mod stack;
mod status;
mod token;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toka-node: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text an outer
/// message already holds (an error that prints its source *and* returns it from
/// `source()`) is left out.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::other("could not acquire lock");
        let error = anyhow::Error::new(io)
            .context("storage failed: could not acquire lock")
            .context("opening the journal");
        assert_eq!(
            super::one_line(&error),
            "opening the journal: storage failed: could not acquire lock"
        );
    }
}
