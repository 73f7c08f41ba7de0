//! The API's OpenAPI 3.1 description, served at `GET /openapi.json` (no token needed,
//! like `/health`: it says what the API is, not what the node holds).
//!
//! It is generated from the code: every handler carries a `#[utoipa::path]` annotation
//! (method, path, parameters, body, responses), and [`super::app`] registers each route
//! through utoipa-axum's `routes!`, which takes the method and path from that annotation.
//! So a route cannot be added without its description, and the description cannot name a
//! route the router lacks. What the annotations leave out, [`finish`] adds to every
//! operation: the bearer security scheme, and the error responses every route shares
//! (400, 401, 403; 408 and 413 for a route that reads a body), all with the JSON body
//! `{"error": "..."}` ([`ApiErrorBody`]).
//!
//! The schemas here describe the JSON the handlers build; the ones the handlers parse
//! (`SpawnBody`, `MintBody`, the query structs...) derive their schema where they are
//! defined. `toka-node/tests/openapi.rs` checks the description against the running node:
//! every (method, path) it lists answers, every route the node answers is listed, and
//! schemathesis fuzzes every operation, checking statuses, content types and bodies.
//!
//! Not described: the operator console's static files (`/ui`, `/ui/`, `/ui/{file}`:
//! HTML, scripts and style, not an API). `POST /mcp` is described only as
//! a JSON-RPC endpoint: its messages are the Model Context Protocol's.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi as _, ToSchema};

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// The description's fixed part; [`super::app`] adds the paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Toka node API",
        description = "The HTTP API of `toka-node run`: agents, tools, approvals, the event \
            journal, tokens and the node's status. Every route but `/health` and \
            `/openapi.json` needs `Authorization: Bearer <token>`, a capability token \
            minted by the node's root key: 401 if it cannot be trusted, 403 if its caveats \
            refuse the request. Every error is JSON `{\"error\": \"...\"}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "agents", description = "Spawn, message, ask, query and stop agents"),
        (name = "tools", description = "The node's tools, called under the caller's token"),
        (name = "approvals", description = "Tool calls that wait for a human decision"),
        (name = "events", description = "The event journal: read, follow, export, verify"),
        (name = "tokens", description = "Mint, attenuate and revoke capability tokens; the audit trail"),
        (name = "node", description = "Health, status, metrics and this description"),
        (name = "mcp", description = "The Model Context Protocol server (streamable HTTP, JSON-RPC)"),
    )
)]
struct ApiDoc;

/// The description without paths: info, tags and the bearer scheme.
pub(crate) fn base() -> OpenApi {
    let mut spec = ApiDoc::openapi();
    spec.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert(
            BEARER.into(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A capability token (macaroon) minted by the node's root key, e.g. \
                         the admin token in `<data dir>/admin.token`.",
                    ))
                    .build(),
            ),
        );
    spec
}

/// `POST /mcp`, described as what it is to HTTP: a JSON-RPC endpoint. Its messages,
/// streams and sessions are the Model Context Protocol's (streamable HTTP, stateless, JSON
/// responses), which an OpenAPI document cannot express; see `mcp.rs`.
#[cfg(feature = "mcp")]
pub(crate) fn mcp() -> OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(mcp_endpoint))]
    struct McpDoc;
    McpDoc::openapi()
}

/// The MCP server (description only: the route is rmcp's service).
#[cfg(feature = "mcp")]
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = Value, description = "A JSON-RPC 2.0 message of the Model Context Protocol (send `Accept: application/json, text/event-stream`)"),
    responses(
        (status = 200, description = "The JSON-RPC response", body = Value),
        (status = 202, description = "A notification or response, accepted"),
        (status = 406, description = "An `Accept` header without `application/json` and `text/event-stream`", body = ApiErrorBody),
        (status = 415, description = "A body that is not `application/json`", body = ApiErrorBody),
    ),
    description = "The Model Context Protocol server: its messages are described by the MCP specification (https://modelcontextprotocol.io/specification), not here.")]
#[allow(dead_code)] // Only its description is used.
fn mcp_endpoint() {}

/// Completes the description once the routes are in: each operation that does not say
/// it is public (`security(())`) gets the bearer requirement and the 400, 401 and 403
/// responses (a public one 400 only if it has parameters, and the empty security list: no
/// requirement); one with a request body gets 408 and 413. A response the annotation gives
/// for one of these statuses is kept.
pub(crate) fn finish(spec: &mut OpenApi) {
    let components = spec.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        "ApiError".into(),
        <ApiErrorBody as utoipa::PartialSchema>::schema(),
    );
    for (name, description) in COMMON_ERRORS {
        let response = ResponseBuilder::new()
            .description(*description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiError")))
                    .build(),
            )
            .build();
        components
            .responses
            .insert((*name).into(), RefOr::T(response));
    }
    for item in spec.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete(op);
        }
    }
}

/// `spec` as pretty JSON, with utoipa's spelling of the unsigned formats (`u-int64`)
/// corrected to the usual one (`uint64`).
pub(crate) fn to_json(spec: &OpenApi) -> serde_json::Result<String> {
    fn fix(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(format)) = map.get_mut("format") {
                    if let Some(bits) = format.strip_prefix("u-int") {
                        *format = format!("uint{bits}");
                    }
                }
                map.values_mut().for_each(fix);
            }
            Value::Array(items) => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(spec)?;
    fix(&mut json);
    serde_json::to_string_pretty(&json)
}

/// The shared error responses: (component name, description).
const COMMON_ERRORS: &[(&str, &str)] = &[
    (
        "BadRequest",
        "A malformed path, query or body (JSON with a repeated key included), or a value out of range",
    ),
    (
        "Unauthorized",
        "No `Authorization: Bearer <token>`, or a token that is unreadable, forged, revoked, expired or carries a caveat the node does not understand",
    ),
    (
        "Forbidden",
        "A valid token whose caveats refuse this request",
    ),
    (
        "RequestTimeout",
        "The request body did not arrive within the node's body timeout",
    ),
    (
        "PayloadTooLarge",
        "A body over 1 MiB (refused at once when `Content-Length` declares it)",
    ),
];

fn complete(op: &mut Operation) {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
    let mut add = |status: &str, name: &str| {
        op.responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if public {
        if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
            add("400", "BadRequest");
        }
    } else {
        add("400", "BadRequest");
        add("401", "Unauthorized");
        add("403", "Forbidden");
    }
    if op.request_body.is_some() {
        add("408", "RequestTimeout");
        add("413", "PayloadTooLarge");
    }
    op.security = Some(if public {
        Vec::new()
    } else {
        vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]
    });
}

/// Every error's body.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiError)]
pub(crate) struct ApiErrorBody {
    /// What went wrong, for people.
    pub(crate) error: String,
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`; `unwritable` once the journal refuses writes; `failed` once the runtime gave up.
    #[schema(pattern = "^(ok|unwritable|failed)$")]
    pub(crate) status: String,
    /// With `unwritable` or `failed`: why, and what to do.
    #[schema(nullable = false)]
    pub(crate) reason: Option<String>,
}

/// One server-sent event of a `text/event-stream` answer, as a client reads it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ServerSentEvent {
    /// Its name: on `GET /events/stream` `event` (or `error`, last); on a streamed ask or
    /// `GET /agents/{id}/turn` `delta`, `tool_call`, `tool_call_arguments`, `step_done`,
    /// `lagged`, then `answer` or `error`.
    pub(crate) event: String,
    /// Its data: JSON text (an event as `GET /events` shows it; a live model event's fields;
    /// the reply; `{"error", "status"}`).
    pub(crate) data: String,
    /// On `GET /events/stream`: the event's position.
    #[schema(nullable = false)]
    pub(crate) id: Option<String>,
}

/// An agent as `GET /agents` lists it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Agent {
    /// Its id.
    pub(crate) id: String,
    /// Its kind (`counter`, `supervisor`, `reactor`, `assistant`, ...).
    pub(crate) kind: String,
    /// Its parent's id; `null` for a top-level agent.
    pub(crate) parent: Option<String>,
    /// `running`, `down`, or `halted` (its handler does not replay its journal).
    #[schema(pattern = "^(running|down|halted)$")]
    pub(crate) status: String,
    /// Whether its messages are journaled.
    pub(crate) durable: bool,
    /// Its supervisor's restarts of it since the node started.
    pub(crate) restarts: u64,
    /// With `status` `halted`: how it halted.
    #[schema(nullable = false)]
    pub(crate) halted: Option<String>,
    /// In a cluster, for a child placed in another shard than its parent's (spawned with
    /// `"placement": "anywhere"`): the parent, which supervises it from its own shard
    /// (`parent` is then `null`: in this shard it is top-level).
    #[schema(nullable = false)]
    pub(crate) supervisor: Option<String>,
}

/// An agent as `GET /agents/{id}` shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentDetail {
    /// What `GET /agents` says of it.
    #[serde(flatten)]
    pub(crate) agent: Agent,
    /// Its latest snapshot; `null` if it has none.
    pub(crate) snapshot: Option<Snapshot>,
}

/// Where an agent's latest snapshot is (not its state).
#[derive(Serialize, ToSchema)]
pub(crate) struct Snapshot {
    /// The sequence number it was taken at.
    pub(crate) seq: u64,
    /// Its size in bytes.
    pub(crate) bytes: u64,
    /// When it was taken, in microseconds since the Unix epoch.
    pub(crate) timestamp_micros: u64,
}

/// `POST /agents`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Spawned {
    /// The new agent's id.
    pub(crate) id: String,
    /// Its kind.
    pub(crate) kind: String,
    /// Its parent, if any.
    pub(crate) parent: Option<String>,
}

/// `POST /agents/{id}/messages`'s answer: the message is durably journaled.
#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// Always `true`.
    pub(crate) accepted: bool,
}

/// `DELETE /agents/{id}`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Stopped {
    /// The stopped agent's id (its children were stopped too).
    pub(crate) stopped: String,
}

/// A tool's public description.
#[derive(Serialize, ToSchema)]
pub(crate) struct ToolSpec {
    /// Its unique name, e.g. `fs.read`.
    pub(crate) name: String,
    /// What it does.
    pub(crate) description: String,
    /// The JSON Schema of its input.
    pub(crate) input_schema: Value,
    /// What its calls do to the world: `pure`, `read-only`, `idempotent` or `external`.
    pub(crate) side_effect: String,
}

/// `POST /tools/{name}/invoke`'s answer when the call waits for a human decision.
#[derive(Serialize, ToSchema)]
pub(crate) struct PendingCall {
    /// The approval's id (`GET /approvals/{id}`).
    pub(crate) approval: String,
    /// `pending`.
    pub(crate) status: String,
}

/// Where an approval stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used: the handlers serialize toka_tools' own.
pub(crate) enum ApprovalStatus {
    /// Waiting for a human decision.
    Pending,
    /// Approved: the call runs (or ran) once.
    Approved,
    /// Denied: the call never runs.
    Denied,
    /// Not decided in time: counts as denied.
    Expired,
}

/// A human's decision.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only its schema is used: the handlers serialize toka_tools' own.
pub(crate) enum Decision {
    /// Let the call run.
    Approve,
    /// Refuse it.
    Deny,
}

/// A tool call that waits (or waited) for a human decision.
#[derive(Serialize, ToSchema)]
pub(crate) struct Approval {
    /// Its id.
    pub(crate) id: String,
    /// Where it stands.
    pub(crate) status: ApprovalStatus,
    /// The tool called.
    pub(crate) tool: String,
    /// The calling agent; absent for an API client's call.
    #[schema(nullable = false)]
    pub(crate) agent: Option<String>,
    /// The call's input, vault values redacted.
    pub(crate) input: Value,
    /// The id of the token the call was made with (never the token).
    pub(crate) token: String,
    /// When it was asked for (RFC 3339).
    pub(crate) requested_at: String,
    /// When it expires if not decided (RFC 3339).
    pub(crate) expires_at: String,
    /// The id of the token that decided it.
    #[schema(nullable = false)]
    pub(crate) decided_by: Option<String>,
    /// The reason given with the decision.
    #[schema(nullable = false)]
    pub(crate) reason: Option<String>,
    /// Whether the approved call has started.
    pub(crate) started: bool,
    /// Once the approved call ran: its output.
    pub(crate) output: Option<Value>,
    /// Once the approved call ran: its error (`{"kind", "message"}`).
    pub(crate) error: Option<Value>,
}

/// A journaled event as `GET /events` shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Event {
    /// Its position in the whole journal.
    pub(crate) position: u64,
    /// Its stream (an agent's id, or a system stream).
    pub(crate) stream: String,
    /// Its sequence number in its stream.
    pub(crate) seq: u64,
    /// Its id.
    pub(crate) id: String,
    /// What kind of event it is.
    pub(crate) kind: String,
    /// When it was written, in microseconds since the Unix epoch.
    pub(crate) timestamp_micros: u64,
    /// The event that caused it.
    pub(crate) causation_id: Option<String>,
    /// The conversation it belongs to.
    pub(crate) correlation_id: Option<String>,
    /// The payload: `{"utf8": TEXT}` or `{"hex": HEX}`, tokens redacted.
    pub(crate) payload: Value,
    /// Whether a token was redacted from it.
    pub(crate) redacted: bool,
    /// On the approvals stream: the approval step it records, decoded.
    #[schema(nullable = false)]
    pub(crate) approval: Option<Value>,
}

/// `GET /status`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Status {
    /// The node's version.
    pub(crate) version: String,
    /// Seconds since it started.
    pub(crate) uptime_secs: u64,
    /// Its agents, counted.
    pub(crate) agents: AgentCounts,
    /// Its journal.
    pub(crate) journal: JournalStatus,
    /// How long its start (recovery) took, in milliseconds.
    pub(crate) recovery_ms: u64,
    /// The names of its tools.
    pub(crate) tools: Vec<String>,
    /// The names of its configured models.
    pub(crate) models: Vec<String>,
}

/// `GET /cluster`'s answer. A standalone node answers `{"mode": "standalone"}` only.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterStatus {
    /// `standalone` or `cluster`.
    pub(crate) mode: String,
    /// The answering node's id (cluster).
    pub(crate) node: Option<String>,
    /// Where other nodes reach it (cluster).
    pub(crate) address: Option<String>,
    /// The lease period in milliseconds (cluster).
    pub(crate) lease_ms: Option<u64>,
    /// The members: `{"id", "address", "alive", "silent_ms"}` (cluster).
    pub(crate) members: Option<Vec<Value>>,
    /// Each shard: `{"shard", "holder", "epoch", "expires_in_ms", "serving_here"}`; `holder`
    /// is `null` while nobody holds it (cluster).
    pub(crate) shards: Option<Vec<Value>>,
}

/// The agents of `GET /status`.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentCounts {
    /// All of them.
    pub(crate) total: u64,
    /// Those with a running actor.
    pub(crate) running: u64,
    /// Those without one.
    pub(crate) down: u64,
    /// Those halted.
    pub(crate) halted: u64,
}

/// The journal of `GET /status`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JournalStatus {
    /// Its last position.
    pub(crate) head_position: u64,
    /// Its last durable (acknowledged) position.
    pub(crate) acknowledged_head: u64,
    /// Its directory's size; `null` for a memory journal.
    pub(crate) size_bytes: Option<u64>,
    /// `fsync` or `buffered`.
    pub(crate) durability: String,
    /// Whether it still takes writes.
    pub(crate) writable: bool,
}

/// A token, as minted or attenuated.
#[derive(Serialize, ToSchema)]
pub(crate) struct Token {
    /// The token itself (a secret: whoever holds it has its powers).
    pub(crate) token: String,
    /// Its identifier (not a secret; what revocation names).
    pub(crate) identifier: String,
    /// Its caveats, as text.
    pub(crate) caveats: Vec<String>,
}

/// `POST /tokens/revoke`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Revoked {
    /// The revoked identifier.
    pub(crate) identifier: String,
    /// Whether it was revoked before this request.
    pub(crate) already_revoked: bool,
}

/// A revocation.
#[derive(Serialize, ToSchema)]
pub(crate) struct Revocation {
    /// The revoked identifier.
    pub(crate) identifier: String,
    /// Why.
    pub(crate) reason: String,
    /// When (RFC 3339); `null` if out of range.
    pub(crate) at: Option<String>,
    /// When, in microseconds since the Unix epoch.
    pub(crate) at_micros: i64,
}

/// A token issued (by `init`, the CLI or `POST /tokens`): never the token itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedToken {
    /// When (RFC 3339); `null` if out of range.
    pub(crate) at: Option<String>,
    /// When, in microseconds since the Unix epoch.
    pub(crate) at_micros: i64,
    /// The token's identifier.
    pub(crate) identifier: String,
    /// Its caveats as text (`tool = fs.read`); empty for an unrestricted token.
    pub(crate) caveats: Vec<String>,
    /// Who issued it: `init`, `cli` or `api:<the calling token's identifier>`.
    pub(crate) issued_by: String,
}

/// A capability denial.
#[derive(Serialize, ToSchema)]
pub(crate) struct Denial {
    /// When (RFC 3339); `null` if out of range.
    pub(crate) at: Option<String>,
    /// When, in microseconds since the Unix epoch.
    pub(crate) at_micros: i64,
    /// The tool (or API request) refused.
    pub(crate) tool: String,
    /// The agent it was for, if any.
    pub(crate) agent: Option<String>,
    /// The refused token's identifier (never the token).
    pub(crate) token: String,
    /// Why it was refused.
    pub(crate) reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_and_the_description_are_public() {
        let json: Value = serde_json::from_str(&to_json(&crate::server::spec()).unwrap()).unwrap();
        let mut public = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}: no success response"
                );
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{method} {path}"
                );
                if op["security"] == serde_json::json!([]) {
                    public.push(format!("{method} {path}"));
                } else {
                    assert_eq!(op["security"], serde_json::json!([{ "bearer": [] }]));
                    assert!(responses.contains_key("401"), "{method} {path}");
                    assert!(responses.contains_key("403"), "{method} {path}");
                }
                if op.get("requestBody").is_some() {
                    assert!(responses.contains_key("413"), "{method} {path}");
                }
            }
        }
        public.sort();
        assert_eq!(public, ["get /health", "get /openapi.json"]);
        assert!(
            !json.to_string().contains("u-int"),
            "utoipa's format spelling left"
        );
    }

    #[test]
    fn finish_marks_public_and_secured_operations() {
        use utoipa::openapi::HttpMethod;
        use utoipa::openapi::path::{OperationBuilder, PathItem};
        let mut spec = base();
        let public = OperationBuilder::new()
            .security(SecurityRequirement::default())
            .build();
        spec.paths
            .paths
            .insert("/open".into(), PathItem::new(HttpMethod::Get, public));
        spec.paths.paths.insert(
            "/closed".into(),
            PathItem::new(HttpMethod::Get, OperationBuilder::new().build()),
        );
        finish(&mut spec);
        let json: Value = serde_json::from_str(&to_json(&spec).unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let open = &json["paths"]["/open"]["get"];
        assert_eq!(open["security"], serde_json::json!([]));
        assert!(open["responses"].get("401").is_none());
        let closed = &json["paths"]["/closed"]["get"];
        assert_eq!(closed["security"], serde_json::json!([{ "bearer": [] }]));
        assert_eq!(
            json["components"]["schemas"]["ApiError"]["required"],
            serde_json::json!(["error"])
        );
        for status in ["400", "401", "403"] {
            assert_eq!(
                closed["responses"][status]["$ref"],
                format!(
                    "#/components/responses/{}",
                    match status {
                        "400" => "BadRequest",
                        "401" => "Unauthorized",
                        _ => "Forbidden",
                    }
                )
            );
        }
    }
}
