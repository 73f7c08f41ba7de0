//! Crash tests re-run their own test binary as a child process, read its stdout line by
//! line, and SIGKILL it. This module is both ends' plumbing: how a child is started
//! ([`self_command`]), how it reports ([`emit`], [`child_fail`]), and the libtest-like entry
//! of `harness = false` test binaries ([`run_as_test`]).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `test` unless the command line lists tests (`--list`) or filters it out (a name
/// filter that does not match `name`, or `--exact` with another name): enough of
/// libtest's command line for `cargo test` to list and filter a `harness = false` test.
pub fn run_as_test(name: &str, test: impl FnOnce()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                *f == name
            } else {
                name.contains(f.as_str())
            }
        });
    if !selected {
        println!("{name}: filtered out");
        return;
    }
    test();
}

/// A command that re-runs this (libtest) test binary for the single test `name`, stdout
/// piped for the parent to read.
///
/// # Panics
/// If the path of the running binary is unknown.
pub fn self_command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Writes one line to stdout and flushes it; exits the child (code 3) if the parent went
/// away.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// Fails a child loudly: the parent sees one `ERR` line per line of `what`, and an exit
/// code (2) that is not SIGKILL's.
pub fn child_fail(what: &str) -> ! {
    for line in what.lines() {
        emit(&format!("ERR {line}"));
    }
    std::process::exit(2);
}
