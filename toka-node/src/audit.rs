//! `audit revocations`, `audit denials` and `audit tokens`: the revoked tokens, the
//! refused requests and the issued tokens, from the journal's `toka/revocations`,
//! `toka/audit` and `toka/tokens` streams, or through the running node
//! (`GET /tokens/revocations`, `GET /audit/denials`, `GET /audit/tokens`).

use std::io::{self, Write};
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{AuditArgs, DenialsArgs, block_on};
use crate::remote::{Access, access};
use crate::server::admin::{denials_json, issued_json, revocations_json};

/// Most denials asked for at once (the node's limit too).
const MAX_DENIALS: usize = 1_000;

pub(crate) fn revocations(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let list = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => revocations_json(&journal)?,
        Access::Online(client) => array(block_on(client.get("/tokens/revocations"))??),
    };
    print(&list, args.json, "no token is revoked", |r| {
        format!(
            "{}  {}  {}",
            r["at"].as_str().unwrap_or("?"),
            r["identifier"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or_default()
        )
    })
}

pub(crate) fn denials(args: &DenialsArgs) -> anyhow::Result<ExitCode> {
    let limit = args.limit.min(MAX_DENIALS);
    let list = match access(&args.audit.dir, &args.audit.node)? {
        Access::Offline(journal) => denials_json(&journal, limit)?,
        Access::Online(client) => array(block_on(
            client.get(&format!("/audit/denials?limit={limit}")),
        )??),
    };
    print(&list, args.audit.json, "no denials", |d| {
        format!(
            "{}  {:<20} agent={} token={}  {}",
            d["at"].as_str().unwrap_or("?"),
            d["tool"].as_str().unwrap_or_default(),
            d["agent"].as_str().unwrap_or("-"),
            d["token"].as_str().unwrap_or("-"),
            d["reason"].as_str().unwrap_or_default()
        )
    })
}

pub(crate) fn tokens(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let list = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => issued_json(&journal)?,
        Access::Online(client) => array(block_on(client.get("/audit/tokens"))??),
    };
    print(&list, args.json, "no token was issued", |t| {
        let caveats = t["caveats"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        format!(
            "{}  {}  by {}  {}",
            t["at"].as_str().unwrap_or("?"),
            t["identifier"].as_str().unwrap_or_default(),
            t["issued_by"].as_str().unwrap_or("?"),
            if caveats.is_empty() {
                "(no caveats)"
            } else {
                &caveats
            }
        )
    })
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

fn print(
    list: &[Value],
    json: bool,
    none: &str,
    line: impl Fn(&Value) -> String,
) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let written = if json {
        list.iter().try_for_each(|item| writeln!(out, "{item}"))
    } else if list.is_empty() {
        writeln!(out, "{none}")
    } else {
        list.iter()
            .try_for_each(|item| writeln!(out, "{}", line(item)))
    };
    match written {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
