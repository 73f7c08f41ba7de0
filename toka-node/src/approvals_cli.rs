//! `toka-node approvals list | approve ID | deny ID`: the approvals of a *running* node,
//! over its HTTP API (approvals are kept by the node; its data directory is locked while
//! it runs). The node is found as every live command finds it ([`crate::remote::online`]).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::{DataDir, NodeArgs};
use crate::client::NodeClient;

/// Longest input shown in `approvals list`'s table, in characters.
const INPUT_WIDTH: usize = 60;

/// `toka-node approvals ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List the approvals (oldest first): id, status, tool, agent, when asked, input.
    List(ListArgs),
    /// Approve a pending approval: the waiting tool call runs, once.
    Approve(DecideArgs),
    /// Deny a pending approval: the waiting tool call never runs.
    Deny(DecideArgs),
}

/// Which node, and the token to call it with: the running node of `--data-dir` (at its
/// config's `listen`) or `--node URL`; the token from `--token-file`, `TOKA_TOKEN` or
/// the data directory's `admin.token`. It must allow `api.approvals.read` (to list) or
/// `api.approvals.decide.<TOOL>` (to decide).
#[derive(Debug, Args)]
pub(crate) struct Api {
    #[command(flatten)]
    pub(crate) dir: DataDir,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// `approvals list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) api: Api,
    /// Only approvals with this status: pending, approved, denied or expired.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only this agent's approvals.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// Print the JSON array the API answers instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `approvals approve` and `approvals deny`.
#[derive(Debug, Args)]
pub(crate) struct DecideArgs {
    /// The approval's id (as `approvals list` shows it).
    pub(crate) id: String,
    /// Why (journaled with the decision).
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) api: Api,
    /// Print the decided approval as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ApprovalsCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            ApprovalsCommand::List(args) => list(&args),
            ApprovalsCommand::Approve(args) => decide(&args, "approve"),
            ApprovalsCommand::Deny(args) => decide(&args, "deny"),
        }
    }
}

/// A client of the node's API ([`NodeClient`]), run to completion on its own runtime.
struct Client {
    node: NodeClient,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(api: &Api) -> anyhow::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Client {
            node: crate::remote::online(&api.dir, &api.node)?,
            runtime,
        })
    }

    /// `GET path`: the answer's JSON, or an error with the API's message.
    fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.runtime.block_on(self.node.get(path))?)
    }

    /// `POST path` with `body`: the answer's JSON, or an error with the API's message.
    fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.runtime.block_on(self.node.post(path, body))?)
    }
}

/// An id as one path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut query = Vec::new();
    if let Some(status) = &args.status {
        query.push(format!("status={}", segment(status)));
    }
    if let Some(agent) = &args.agent {
        query.push(format!("agent={}", segment(agent)));
    }
    let path = if query.is_empty() {
        "/approvals".to_owned()
    } else {
        format!("/approvals?{}", query.join("&"))
    };
    let listed = client.get(&path)?;
    if args.json {
        println!("{listed}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = listed.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no approvals");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:<9} {:<16} {:<16} {:<27} INPUT",
        "ID", "STATUS", "TOOL", "AGENT", "REQUESTED"
    );
    for row in rows {
        let text = |key: &str| row[key].as_str().unwrap_or("-").to_owned();
        let mut input = row["input"].to_string();
        if input.chars().count() > INPUT_WIDTH {
            input = input.chars().take(INPUT_WIDTH - 1).collect::<String>() + "…";
        }
        println!(
            "{:<40} {:<9} {:<16} {:<16} {:<27} {input}",
            text("id"),
            text("status"),
            text("tool"),
            text("agent"),
            text("requested_at"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(args: &DecideArgs, decision: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let mut body = json!({ "decision": decision });
    if let Some(reason) = &args.reason {
        body["reason"] = Value::String(reason.clone());
    }
    let path = format!("/approvals/{}", segment(&args.id));
    let decided = client.post(&path, &body)?;
    if args.json {
        println!("{decided}");
    } else {
        println!(
            "{} {} ({})",
            decided["status"].as_str().unwrap_or(decision),
            decided["id"].as_str().unwrap_or(&args.id),
            decided["tool"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    fn parses(args: &[&str]) -> bool {
        let mut full = vec!["toka-node", "approvals"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).is_ok()
    }

    #[test]
    fn parses_approvals_commands() {
        assert!(parses(&["list"]));
        assert!(parses(&[
            "list", "--json", "--status", "pending", "--agent", "helper"
        ]));
        assert!(parses(&[
            "approve",
            "apr-1",
            "--reason",
            "ok",
            "--node",
            "http://127.0.0.1:1"
        ]));
        assert!(
            parses(&["list", "--url", "http://127.0.0.1:1"]),
            "--url still works"
        );
        assert!(parses(&["deny", "apr-1", "--token-file", "/tmp/t"]));
        assert!(!parses(&["approve"]), "an id is needed");
        assert!(!parses(&["undo", "apr-1"]));
    }

    #[test]
    fn ids_are_escaped_as_one_segment() {
        assert_eq!(super::segment("apr-0a_b.c~"), "apr-0a_b.c~");
        assert_eq!(super::segment("a/b?c"), "a%2Fb%3Fc");
    }
}
