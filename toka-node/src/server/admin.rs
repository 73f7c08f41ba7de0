//! The operator's routes, behind the live CLI (`toka-node token|events|agents|audit|status`
//! against a running node): mint, attenuate and revoke tokens, read the revocations and
//! the recent denials, verify the journal, export it, and the node's status.
//!
//! Minting is a root power: a holder of `api.tokens.mint` can mint a token without
//! caveats. Give it to operators only. Revocation takes effect at once (the node's
//! authority refuses the token from the next request on) and is journaled first, so it
//! survives a crash.
//!
//! The two long answers are JSON lines (`application/x-ndjson`), streamed as they are
//! produced: `GET /events/export` (one event per line, as `events export` prints offline)
//! and `GET /events/verify` (`{"progress": ...}` lines while the walk runs, then one
//! `{"report": ...}` line).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use toka_store::Journal;
use toka_tools::capability::{AUDIT_STREAM, issued_in, revocations_in};
use toka_tools::{Capability, Caveat, DenialRecord, Verified};
use tokio::sync::mpsc;

use super::auth::permit;
use super::openapi as doc;
use super::routes::JsonBody;
use super::{ApiError, AppState};

/// Most denials one `GET /audit/denials` returns.
const MAX_DENIALS: usize = 1_000;

/// Most caveats a minted or attenuated token may get in one request.
const MAX_CAVEATS: usize = 64;

/// Events read from the journal per step of an export.
const EXPORT_PAGE: usize = 256;

/// How often `GET /events/verify` says it is still walking.
const VERIFY_TICK: Duration = Duration::from_millis(500);

/// `POST /tokens`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintBody {
    /// The new token's caveats (at most 64), e.g. `tool = fs.read`; none: an unrestricted token.
    #[serde(default)]
    #[schema(example = json!(["tool = api.agents.read"]))]
    caveats: Vec<String>,
}

/// `POST /tokens/attenuate`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttenuateBody {
    /// The token to narrow.
    token: String,
    /// The caveats to add (1 to 64).
    #[schema(example = json!(["tool = api.agents.read"]))]
    caveats: Vec<String>,
}

/// `POST /tokens/revoke`'s body: the identifier, or a whole token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    /// The token's identifier, or the whole token.
    identifier: String,
    /// Why (at most 1,024 bytes).
    #[serde(default)]
    reason: Option<String>,
}

fn caveats_of(texts: &[String]) -> Result<Vec<Caveat>, ApiError> {
    if texts.len() > MAX_CAVEATS {
        return Err(ApiError::bad_request(format!(
            "{} caveats: at most {MAX_CAVEATS} per request",
            texts.len()
        )));
    }
    texts
        .iter()
        .map(|text| {
            Caveat::parse(text.as_bytes())
                .map_err(|d| ApiError::bad_request(format!("bad caveat {text:?}: {}", d.reason)))
        })
        .collect()
}

/// `{"token", "identifier", "caveats"}`, as `token mint --json` prints it.
fn token_json(token: &Capability) -> Result<Value, ApiError> {
    let caveats = token.caveats().map_err(|d| ApiError::internal(d.reason))?;
    Ok(json!({
        "token": token.to_string(),
        "identifier": token.identifier(),
        "caveats": caveats.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
}

/// `POST /tokens`: a new token signed by the node's root key, with these caveats.
#[utoipa::path(post, path = "/tokens", tag = "tokens",
    request_body = MintBody,
    responses(
        (status = 201, description = "The new token", body = doc::Token),
        (status = 400, description = "A caveat that does not parse, or too many", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn mint(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
    body: Result<JsonBody<MintBody>, ApiError>,
) -> Result<Response, ApiError> {
    permit(&state, &caller, "api.tokens.mint", None)?;
    let JsonBody(body) = body?;
    let caveats = caveats_of(&body.caveats)?;
    let issued_by = format!("api:{}", caller.token().identifier());
    let token = state
        .inner
        .authority
        .issue(caveats, &issued_by)
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(token_json(&token)?)).into_response())
}

/// `POST /tokens/attenuate`: `token` narrowed by more caveats, once the node has checked
/// that it is genuine, unrevoked and understood (400 otherwise).
#[utoipa::path(post, path = "/tokens/attenuate", tag = "tokens",
    request_body = AttenuateBody,
    responses(
        (status = 201, description = "The narrower token", body = doc::Token),
        (status = 400, description = "A token that is forged, revoked or not understood; no caveat, or one that does not parse", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn attenuate(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
    body: Result<JsonBody<AttenuateBody>, ApiError>,
) -> Result<Response, ApiError> {
    permit(&state, &caller, "api.tokens.mint", None)?;
    let JsonBody(body) = body?;
    if body.caveats.is_empty() {
        return Err(ApiError::bad_request(
            "attenuating needs at least one caveat",
        ));
    }
    let caveats = caveats_of(&body.caveats)?;
    let token = state
        .inner
        .authority
        .verify_text(&body.token)
        .map_err(|d| ApiError::bad_request(format!("the token to attenuate: {}", d.reason)))?;
    let narrower = caveats.iter().fold(token.token().clone(), |token, caveat| {
        token.attenuate(caveat)
    });
    Ok((StatusCode::CREATED, Json(token_json(&narrower)?)).into_response())
}

/// `POST /tokens/revoke`: revokes the identifier (and every token attenuated from it),
/// journaled, effective from the next request on.
#[utoipa::path(post, path = "/tokens/revoke", tag = "tokens",
    request_body = RevokeBody,
    responses(
        (status = 200, description = "Revoked (journaled), refused from the next request on", body = doc::Revoked),
        (status = 400, description = "Not an identifier or token, or an over-long reason", body = doc::ApiErrorBody),
        (status = 503, description = "The journal refuses writes", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
    body: Result<JsonBody<RevokeBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.tokens.revoke", None)?;
    let JsonBody(body) = body?;
    let identifier = crate::token::identifier_of(&body.identifier)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let authority = &state.inner.authority;
    let already = authority.is_revoked(&identifier);
    if !already {
        let reason = body.reason.as_deref().unwrap_or("revoked over the API");
        if reason.len() > 1024 {
            return Err(ApiError::bad_request("the reason is over 1,024 bytes"));
        }
        authority
            .revoke(&identifier, reason)
            .await
            .map_err(|e| match e {
                toka_tools::Error::Journal(store) => {
                    ApiError::from(toka_actors::Error::Journal(store))
                }
                other => ApiError::internal(other),
            })?;
    }
    Ok(Json(
        json!({ "identifier": identifier, "already_revoked": already }),
    ))
}

/// A time in microseconds since the epoch as RFC 3339 (UTC), or `null`.
fn rfc3339(micros: i64) -> Option<String> {
    jiff::Timestamp::from_microsecond(micros)
        .ok()
        .map(|t| t.to_string())
}

/// The revocations in a journal, oldest first, as JSON (also used offline).
pub(crate) fn revocations_json(journal: &dyn Journal) -> anyhow::Result<Vec<Value>> {
    Ok(revocations_in(journal)?
        .into_iter()
        .map(|record| {
            json!({
                "identifier": record.identifier,
                "reason": record.reason,
                "at": rfc3339(record.at_micros),
                "at_micros": record.at_micros,
            })
        })
        .collect())
}

/// Every token issued ([`toka_tools::Authority::issue`]) in a journal, oldest first, as
/// JSON (also used offline): identifiers and caveats, never a token.
pub(crate) fn issued_json(journal: &dyn Journal) -> anyhow::Result<Vec<Value>> {
    Ok(issued_in(journal)?
        .into_iter()
        .map(|record| {
            json!({
                "at": rfc3339(record.at_micros),
                "at_micros": record.at_micros,
                "identifier": record.identifier,
                "caveats": record.caveats,
                "issued_by": record.issued_by,
            })
        })
        .collect())
}

/// `GET /audit/tokens`: every token issued (by `init`, the CLI or `POST /tokens`), oldest
/// first: its identifier, caveats and issuer, never the token.
#[utoipa::path(get, path = "/audit/tokens", tag = "tokens",
    responses((status = 200, description = "Every token issued, oldest first", body = Vec<doc::IssuedToken>)))]
pub(crate) async fn issued(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.audit.read", None)?;
    let journal = Arc::clone(&state.inner.journal);
    let list = tokio::task::spawn_blocking(move || issued_json(&*journal))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(list)))
}

/// The last `limit` denials in a journal, oldest first, as JSON (also used offline).
pub(crate) fn denials_json(journal: &dyn Journal, limit: usize) -> anyhow::Result<Vec<Value>> {
    let version = journal.stream_version(AUDIT_STREAM)?;
    let from = version.saturating_sub(limit as u64) + 1;
    let mut out = Vec::new();
    for event in journal.read_stream(AUDIT_STREAM, from, limit)? {
        let record: DenialRecord = postcard::from_bytes(&event.payload).map_err(|e| {
            anyhow::anyhow!("{AUDIT_STREAM} record {} does not decode: {e}", event.seq)
        })?;
        out.push(json!({
            "at": rfc3339(record.at_micros),
            "at_micros": record.at_micros,
            "tool": record.tool,
            "agent": record.agent,
            "token": record.token,
            "reason": record.reason,
        }));
    }
    Ok(out)
}

/// `GET /tokens/revocations`: every revoked identifier, oldest first.
#[utoipa::path(get, path = "/tokens/revocations", tag = "tokens",
    responses((status = 200, description = "Every revocation, oldest first", body = Vec<doc::Revocation>)))]
pub(crate) async fn revocations(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.audit.read", None)?;
    let journal = Arc::clone(&state.inner.journal);
    let list = tokio::task::spawn_blocking(move || revocations_json(&*journal))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(list)))
}

/// `GET /audit/denials`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DenialsQuery {
    /// How many (default 100, at most 1,000).
    limit: Option<usize>,
}

/// `GET /audit/denials?limit=N`: the last N (default 100, at most 1,000) capability
/// denials, oldest first. They hold the token's identifier, never the token.
#[utoipa::path(get, path = "/audit/denials", tag = "tokens",
    params(DenialsQuery),
    responses((status = 200, description = "The last denials, oldest first", body = Vec<doc::Denial>)))]
pub(crate) async fn denials(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
    query: Result<Query<DenialsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.audit.read", None)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).min(MAX_DENIALS);
    let journal = Arc::clone(&state.inner.journal);
    let list = tokio::task::spawn_blocking(move || denials_json(&*journal, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(Value::Array(list)))
}

/// A streamed JSON-lines answer fed by `lines`.
fn ndjson(lines: mpsc::Receiver<Value>) -> Response {
    let stream = futures_util::stream::unfold(lines, |mut lines| async move {
        let line = lines.recv().await?;
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(bytes)), lines))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /events/export`: every acknowledged event, oldest first, one JSON object per
/// line, streamed (payloads in standard base64, tokens redacted), as `events export`.
#[utoipa::path(get, path = "/events/export", tag = "events",
    responses((status = 200, description = "JSON lines, streamed: one event per line (`position`, `stream`, `seq`, `id`, `kind`, `timestamp`, `timestamp_micros`, `causation_id`, `correlation_id`, `payload_base64`, `redacted`)", body = String, content_type = "application/x-ndjson")))]
pub(crate) async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Response, ApiError> {
    permit(&state, &caller, "api.events.read", None)?;
    let journal = Arc::clone(&state.inner.journal);
    let end = journal.acknowledged_head();
    let closing = state.inner.closing.subscribe();
    let (tx, rx) = mpsc::channel(EXPORT_PAGE);
    tokio::spawn(async move {
        let mut from = 1;
        while from <= end && !*closing.borrow() {
            let limit = usize::try_from(end + 1 - from)
                .unwrap_or(usize::MAX)
                .min(EXPORT_PAGE);
            let reader = Arc::clone(&journal);
            let page = tokio::task::spawn_blocking(move || reader.read_all(from, limit)).await;
            let page = match page {
                Ok(Ok(page)) if !page.is_empty() => page,
                Ok(Ok(_)) => return,
                Ok(Err(error)) => {
                    tracing::error!(%error, "export: reading the journal");
                    let _ = tx
                        .send(json!({ "error": "reading the journal failed" }))
                        .await;
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "export: the reader failed");
                    return;
                }
            };
            for event in &page {
                from = event.position + 1;
                if tx.send(crate::events::export_json(event)).await.is_err() {
                    return; // The client went away.
                }
            }
        }
    });
    Ok(ndjson(rx))
}

/// `GET /events/verify`: walks the whole hash chain while the node runs. Answers JSON
/// lines: `{"progress": {"elapsed_ms", "head_position"}}` every half second of the walk,
/// then `{"report": {...}}` (as `events verify --json` prints it).
#[utoipa::path(get, path = "/events/verify", tag = "events",
    responses((status = 200, description = "JSON lines, streamed: `{\"progress\": {\"elapsed_ms\", \"head_position\"}}` while the walk runs, then `{\"report\": {\"intact\", \"records\", \"pruned\", \"head_position\", \"head_hash\", \"first_bad\"}}`", body = String, content_type = "application/x-ndjson")))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Response, ApiError> {
    permit(&state, &caller, "api.events.verify", None)?;
    let journal = Arc::clone(&state.inner.journal);
    let head = journal.head_position();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let walk = tokio::task::spawn_blocking(move || journal.verify());
        tokio::pin!(walk);
        let mut ticks = tokio::time::interval(VERIFY_TICK);
        ticks.tick().await;
        let report = loop {
            tokio::select! {
                done = &mut walk => break done,
                _ = ticks.tick() => {
                    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let line = json!({ "progress": { "elapsed_ms": elapsed, "head_position": head } });
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        };
        let line = match report {
            Ok(Ok(report)) => json!({ "report": crate::events::report_json(&report) }),
            Ok(Err(error)) => {
                tracing::error!(%error, "verify: walking the journal");
                json!({ "error": format!("walking the journal failed: {error}") })
            }
            Err(error) => {
                tracing::error!(%error, "verify: the walk failed");
                json!({ "error": "the walk failed" })
            }
        };
        let _ = tx.send(line).await;
    });
    Ok(ndjson(rx))
}

/// Bytes of the files under `dir`, recursively (0 if it cannot be read).
pub(crate) fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_of(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /cluster`: the cluster's members and which node holds each shard. A standalone node
/// answers `{"mode": "standalone"}`; a cluster node's front answers it itself (see
/// `cluster::front`) before any shard's API is reached.
#[utoipa::path(get, path = "/cluster", tag = "node",
    responses((status = 200, description = "The members and the shards' holders, or `{\"mode\": \"standalone\"}`", body = doc::ClusterStatus)))]
pub(crate) async fn cluster(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.status.read", None)?;
    Ok(Json(serde_json::json!({"mode": "standalone"})))
}

/// `GET /status`: what an operator checks first.
#[utoipa::path(get, path = "/status", tag = "node",
    responses((status = 200, description = "What an operator checks first", body = doc::Status)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &caller, "api.status.read", None)?;
    let inner = &state.inner;
    let tree = inner.runtime.tree();
    let (mut running, mut down, mut halted) = (0, 0, 0);
    for agent in &tree {
        match (&agent.halted, agent.running) {
            (Some(_), _) => halted += 1,
            (None, true) => running += 1,
            (None, false) => down += 1,
        }
    }
    let journal_dir = inner.info.journal_dir.clone();
    let size = match journal_dir {
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || size_of(&dir))
                .await
                .map_err(ApiError::internal)?,
        ),
        None => None,
    };
    let tools: Vec<String> = inner.host.specs().into_iter().map(|s| s.name).collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": inner.info.started.elapsed().as_secs(),
        "agents": {
            "total": tree.len(),
            "running": running,
            "down": down,
            "halted": halted,
        },
        "journal": {
            "head_position": inner.journal.head_position(),
            "acknowledged_head": inner.journal.acknowledged_head(),
            "size_bytes": size,
            "durability": inner.info.durability,
            "writable": inner.journal.write_failure().is_none(),
        },
        "recovery_ms": inner.metrics.recovery_millis.load(std::sync::atomic::Ordering::Relaxed),
        "tools": tools,
        "models": inner.info.models,
    })))
}
