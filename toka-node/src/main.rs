//! `toka-node`: the standalone Toka node.
//!
//! Today it offers the offline journal commands (`events list`, `events verify`) on a data
//! directory; `run` (the actor runtime and HTTP API) is not implemented yet and says so.
//! `main` only parses, runs and maps the outcome to an exit code.

mod cli;
mod events;

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
