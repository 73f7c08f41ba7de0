//! `status`: what an operator checks first.
//!
//! Through the running node: its `GET /status` (version, uptime, agents by status,
//! journal head, size and durability, recovery time, tools, models) and the number of
//! pending approvals (`GET /approvals`, when the node has that route). Offline, what the
//! data directory says: no node runs, the journal's head and size, and how many agents
//! it records.

use std::process::ExitCode;

use serde_json::{Value, json};
use toka_store::Journal;

use crate::cli::{StatusArgs, block_on};
use crate::client::{ClientError, NodeClient};
use crate::remote::{Access, access};

pub(crate) fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let report = match access(&args.dir, &args.node)? {
        Access::Online(client) => block_on(online(&client))??,
        Access::Offline(journal) => json!({
            "online": false,
            "data_dir": args.dir.data_dir.display().to_string(),
            "agents": { "total": crate::agents::count(&journal)? },
            "journal": {
                "head_position": journal.head_position(),
                "size_bytes": crate::server::admin::size_of(&args.dir.journal_path()),
            },
        }),
    };
    if args.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

async fn online(client: &NodeClient) -> anyhow::Result<Value> {
    let mut report = client.get("/status").await?;
    // `GET /approvals` may not exist on this node (404): then nothing is said.
    let pending = match client.get("/approvals").await {
        Ok(Value::Array(items)) => Some(pending(&items)),
        Ok(Value::Object(map)) => map
            .get("approvals")
            .and_then(Value::as_array)
            .map(|items| pending(items)),
        Ok(_) | Err(ClientError::Status { status: 404, .. }) => None,
        Err(error) => return Err(error.into()),
    };
    report["online"] = json!(true);
    report["node"] = json!(client.url());
    if let Some(pending) = pending {
        report["pending_approvals"] = json!(pending);
    }
    Ok(report)
}

/// Approvals still waiting: those whose `status` is `pending` (all, if they have none).
fn pending(items: &[Value]) -> usize {
    items
        .iter()
        .filter(|a| {
            a.get("status")
                .and_then(Value::as_str)
                .is_none_or(|s| s == "pending")
        })
        .count()
}

/// Bytes as `12.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as `3d 4h 5m 6s` (leading zero units left out).
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !out.is_empty() {
            out.push_str(&format!("{n}{unit} "));
        }
    }
    out.push_str(&format!("{s}s"));
    out
}

fn list(value: &Value) -> String {
    let items: Vec<&str> = value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The report as aligned lines.
fn text(r: &Value) -> String {
    let journal = &r["journal"];
    let size = journal["size_bytes"].as_u64().map_or("?".to_owned(), bytes);
    if r["online"] != json!(true) {
        return format!(
            "node           not running on {}\nagents         {} (recorded in the journal)\njournal        head {}, {}\n",
            r["data_dir"].as_str().unwrap_or_default(),
            r["agents"]["total"],
            journal["head_position"],
            size
        );
    }
    let agents = &r["agents"];
    let mut out = format!(
        "node           {} (toka-node {})\nuptime         {}\nagents         {} ({} running, {} down, {} halted)\njournal        head {} (acknowledged {}), {}, durability {}{}\nrecovery       {} ms\ntools          {}\nmodels         {}\n",
        r["node"].as_str().unwrap_or_default(),
        r["version"].as_str().unwrap_or("?"),
        duration(r["uptime_secs"].as_u64().unwrap_or(0)),
        agents["total"],
        agents["running"],
        agents["down"],
        agents["halted"],
        journal["head_position"],
        journal["acknowledged_head"],
        size,
        journal["durability"].as_str().unwrap_or("?"),
        if journal["writable"] == json!(false) {
            " (NOT WRITABLE: see GET /health)"
        } else {
            ""
        },
        r["recovery_ms"],
        list(&r["tools"]),
        list(&r["models"]),
    );
    if let Some(pending) = r.get("pending_approvals") {
        out.push_str(&format!("approvals      {pending} pending\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(3_661), "1h 1m 1s");
        assert_eq!(duration(86_400), "1d 0h 0m 0s");
    }
}
