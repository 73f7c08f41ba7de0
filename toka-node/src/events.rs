//! The offline `events` commands: `list`, `verify` and `export`.

use std::borrow::Cow;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use toka_store::{Journal, RecordedEvent};

use crate::cli::{ExportArgs, ListArgs, VerifyArgs};
use crate::progress::{Progress, stdout_is_terminal};

pub(crate) fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let journal = args.dir.open_journal()?;
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

/// `events export`: every event as one JSON object per line, the payload in standard
/// base64 (lossless for any bytes, unlike `list --json`, which shows UTF-8 text or hex),
/// except that capability tokens found in a payload are replaced by
/// `[redacted capability token]` (the line then has `"redacted": true`).
pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let journal = args.dir.open_journal()?;
    let mut progress = Progress::new(journal.head_position(), "exporting", !stdout_is_terminal());
    let mut out = io::BufWriter::new(io::stdout().lock());
    for event in journal.iter_all(1) {
        let event = event.context("reading the journal")?;
        progress.inc();
        let (payload, redacted) = shown_payload(&event.payload);
        let line = json!({
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
        });
        if let Err(e) = writeln!(out, "{line}") {
            return broken_pipe_is_success(e);
        }
    }
    match out.flush() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => broken_pipe_is_success(e),
    }
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
    let journal = args.dir.open_journal()?;
    // The store's walk reports no per-record progress: a spinner says it is working.
    let progress = Progress::spinner(journal.head_position(), "verifying the hash chain", true);
    let report = journal.verify().context("walking the journal")?;
    progress.finish();
    if args.json {
        println!(
            "{}",
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
        );
    } else {
        match &report.first_bad {
            None => println!(
                "journal intact: {} records ({} pruned), head position {}, head hash {}",
                report.records,
                report.pruned,
                report.head_position,
                report.head_hash_hex()
            ),
            Some(bad) => println!(
                "journal damaged: first bad record at {bad} ({} records before it verified)",
                report.records
            ),
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
