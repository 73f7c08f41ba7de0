//! The `events` commands: `list`, `verify` and `export`, on the data directory itself
//! or through the running node ([`crate::remote`]).

use std::borrow::Cow;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use serde_json::json;
use toka_store::{Journal, RecordedEvent, VerifyReport};

use crate::cli::{ExportArgs, ListArgs, VerifyArgs, block_on};
use crate::client::NodeClient;
use crate::progress::{Progress, stdout_is_terminal};
use crate::remote::{Access, access};

/// Events asked of the node per `GET /events` (its limit).
const PAGE: usize = 1_000;

pub(crate) fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let journal = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => journal,
        Access::Online(client) => return block_on(list_online(&client, args))?,
    };
    let (events, last) = match &args.stream {
        Some(stream) => (
            journal.iter_stream(stream, args.from)?,
            journal.stream_version(stream)?,
        ),
        None => (journal.iter_all(args.from), journal.head_position()),
    };
    let limit = args.limit.unwrap_or(usize::MAX);
    let len = (last + 1)
        .saturating_sub(args.from.max(1))
        .min(u64::try_from(limit).unwrap_or(u64::MAX));
    let mut progress = Progress::new(len, "listing", !stdout_is_terminal());
    let mut out = io::stdout().lock();
    for event in events.take(limit) {
        let event = event.context("reading the journal")?;
        progress.inc();
        let written = if args.json {
            writeln!(out, "{}", event_json(&event))
        } else {
            writeln!(
                out,
                "{:>8}  {:<24} {:>6}  {:<24} {} bytes",
                event.position,
                event.stream,
                event.seq,
                event.kind,
                event.payload.len()
            )
        };
        if let Err(e) = written {
            // A closed pipe (`| head`) is a normal way to stop reading.
            if e.kind() == io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `events list` through the node: `GET /events` page by page, printed as offline.
async fn list_online(client: &NodeClient, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut from = args.from.max(1);
    let mut out = io::stdout().lock();
    while left > 0 {
        let mut path = format!("/events?from={from}&limit={}", left.min(PAGE));
        if let Some(stream) = &args.stream {
            path.push_str("&stream=");
            path.push_str(&percent_encode(stream));
        }
        let page = client.get(&path).await?;
        let events = page.as_array().map(Vec::as_slice).unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for event in events {
            let written = if args.json {
                writeln!(out, "{event}")
            } else {
                let payload = &event["payload"];
                let bytes = match (payload["utf8"].as_str(), payload["hex"].as_str()) {
                    (Some(text), _) => text.len(),
                    (None, Some(hex)) => hex.len() / 2,
                    _ => 0,
                };
                writeln!(
                    out,
                    "{:>8}  {:<24} {:>6}  {:<24} {} bytes",
                    event["position"],
                    event["stream"].as_str().unwrap_or_default(),
                    event["seq"],
                    event["kind"].as_str().unwrap_or_default(),
                    bytes
                )
            };
            if let Err(e) = written {
                return broken_pipe_is_success(e);
            }
            left -= 1;
        }
        let last = events.last().map_or(0, |event| {
            let key = if args.stream.is_some() {
                "seq"
            } else {
                "position"
            };
            event[key].as_u64().unwrap_or(0)
        });
        if last < from {
            break;
        }
        from = last + 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// A query parameter's value, percent-encoded (everything but unreserved characters).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `events export`: every event as one JSON object per line, the payload in standard
/// base64 (lossless for any bytes, unlike `list --json`, which shows UTF-8 text or hex),
/// except that capability tokens found in a payload are replaced by
/// `[redacted capability token]` (the line then has `"redacted": true`). Through the node,
/// its `GET /events/export` streams the same lines, written out as they arrive.
pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let journal = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => journal,
        Access::Online(client) => return block_on(export_online(&client))?,
    };
    let mut progress = Progress::new(journal.head_position(), "exporting", !stdout_is_terminal());
    let mut out = io::BufWriter::new(io::stdout().lock());
    for event in journal.iter_all(1) {
        let event = event.context("reading the journal")?;
        progress.inc();
        if let Err(e) = writeln!(out, "{}", export_json(&event)) {
            return broken_pipe_is_success(e);
        }
    }
    match out.flush() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => broken_pipe_is_success(e),
    }
}

async fn export_online(client: &NodeClient) -> anyhow::Result<ExitCode> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut closed = false;
    let mut failed = None;
    client
        .lines("/events/export", |line| {
            // The node ends a failed export with an `{"error"}` line.
            if line.starts_with(b"{\"error\"") {
                failed = Some(String::from_utf8_lossy(line).into_owned());
                return Ok(false);
            }
            match out.write_all(line).and_then(|()| out.write_all(b"\n")) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    closed = true;
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    if let Some(error) = failed {
        anyhow::bail!("the node's export failed: {error}");
    }
    if closed {
        return Ok(ExitCode::SUCCESS);
    }
    match out.flush() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => broken_pipe_is_success(e),
    }
}

/// An event as `events export` prints it (and `GET /events/export` streams it).
pub(crate) fn export_json(event: &RecordedEvent) -> Value {
    let (payload, redacted) = shown_payload(&event.payload);
    json!({
        "position": event.position,
        "stream": event.stream,
        "seq": event.seq,
        "id": event.id.to_string(),
        "kind": event.kind,
        "timestamp": timestamp_rfc3339(event.timestamp.as_micros()),
        "timestamp_micros": event.timestamp.as_micros(),
        "causation_id": event.causation_id.map(|id| id.to_string()),
        "correlation_id": event.correlation_id.map(|id| id.to_string()),
        "payload_base64": STANDARD.encode(&payload),
        "redacted": redacted,
    })
}

/// A closed pipe (`| head`) is a normal way to stop reading.
fn broken_pipe_is_success(e: io::Error) -> anyhow::Result<ExitCode> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e.into())
    }
}

/// RFC 3339 in UTC, or `null` for a time jiff cannot represent.
fn timestamp_rfc3339(micros: u64) -> Option<String> {
    let micros = i64::try_from(micros).ok()?;
    jiff::Timestamp::from_microsecond(micros)
        .ok()
        .map(|t| t.to_string())
}

/// A payload as it may be shown: with every capability token replaced (sealing keeps
/// tokens out of records; this is the backstop for any that got in another way), and
/// whether one was.
fn shown_payload(payload: &[u8]) -> (Cow<'_, [u8]>, bool) {
    match toka_tools::seal::redact_tokens(payload) {
        Some(redacted) => (Cow::Owned(redacted), true),
        None => (Cow::Borrowed(payload), false),
    }
}

/// An event as the API and `events list --json` show it: the payload as UTF-8 text or
/// hex, capability tokens redacted (`"redacted": true`); an approval record (stream
/// `toka/approvals`) also decoded, under `"approval"` ([`toka_tools::approval::describe`]).
pub(crate) fn event_json(event: &RecordedEvent) -> serde_json::Value {
    let mut json = plain_event_json(event);
    if event.stream == toka_tools::approval::APPROVALS_STREAM
        && let Some(described) = toka_tools::approval::describe(&event.payload)
    {
        // The same backstop as for the payload: no token in what is shown.
        let text = described.to_string();
        json["approval"] = match toka_tools::seal::redact_tokens(text.as_bytes()) {
            Some(redacted) => {
                json["redacted"] = serde_json::Value::Bool(true);
                serde_json::from_slice(&redacted).unwrap_or(serde_json::Value::Null)
            }
            None => described,
        };
    }
    json
}

/// [`event_json`] without decoding.
fn plain_event_json(event: &RecordedEvent) -> serde_json::Value {
    let (shown, redacted) = shown_payload(&event.payload);
    let payload = match std::str::from_utf8(&shown) {
        Ok(text) => json!({ "utf8": text }),
        Err(_) => {
            json!({ "hex": shown.iter().map(|b| format!("{b:02x}")).collect::<String>() })
        }
    };
    json!({
        "position": event.position,
        "stream": event.stream,
        "seq": event.seq,
        "id": event.id.to_string(),
        "kind": event.kind,
        "timestamp_micros": event.timestamp.as_micros(),
        "causation_id": event.causation_id.map(|id| id.to_string()),
        "correlation_id": event.correlation_id.map(|id| id.to_string()),
        "payload": payload,
        "redacted": redacted,
    })
}

pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = match access(&args.dir, &args.node)? {
        Access::Offline(journal) => {
            // The store's walk reports no per-record progress: a spinner says it is working.
            let progress =
                Progress::spinner(journal.head_position(), "verifying the hash chain", true);
            let report = journal.verify().context("walking the journal")?;
            progress.finish();
            report_json(&report)
        }
        Access::Online(client) => block_on(verify_online(&client))??,
    };
    print_report(&report, args.json)
}

/// `GET /events/verify`: a spinner while the node walks the chain (its progress lines),
/// then its report.
async fn verify_online(client: &NodeClient) -> anyhow::Result<Value> {
    let mut progress: Option<Progress> = None;
    let mut report = None;
    client
        .lines("/events/verify", |line| {
            let line: Value = serde_json::from_slice(line)
                .map_err(|e| anyhow::anyhow!("the node's verify answer is not JSON: {e}"))?;
            if let Some(step) = line.get("progress") {
                let head = step["head_position"].as_u64().unwrap_or(0);
                progress.get_or_insert_with(|| {
                    Progress::spinner(head, "the node is verifying the hash chain", true)
                });
            } else if let Some(done) = line.get("report") {
                report = Some(done.clone());
            } else if let Some(error) = line.get("error") {
                anyhow::bail!("the node could not verify its journal: {error}");
            }
            Ok(true)
        })
        .await?;
    if let Some(progress) = progress {
        progress.finish();
    }
    report.ok_or_else(|| anyhow::anyhow!("the node's verify answer ended without a report"))
}

/// A verify report as `events verify --json` prints it (and `GET /events/verify` ends
/// with it).
pub(crate) fn report_json(report: &VerifyReport) -> Value {
    json!({
        "intact": report.is_intact(),
        "records": report.records,
        "pruned": report.pruned,
        "head_position": report.head_position,
        "head_hash": report.head_hash_hex(),
        "first_bad": report.first_bad.as_ref().map(|bad| json!({
            "position": bad.position,
            "reason": bad.reason,
        })),
    })
}

fn print_report(report: &Value, json: bool) -> anyhow::Result<ExitCode> {
    let intact = report["intact"].as_bool().unwrap_or(false);
    if json {
        println!("{report}");
    } else if intact {
        println!(
            "journal intact: {} records ({} pruned), head position {}, head hash {}",
            report["records"],
            report["pruned"],
            report["head_position"],
            report["head_hash"].as_str().unwrap_or_default()
        );
    } else {
        let bad = &report["first_bad"];
        println!(
            "journal damaged: first bad record at position {}: {} ({} records before it verified)",
            bad["position"],
            bad["reason"].as_str().unwrap_or_default(),
            report["records"]
        );
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
