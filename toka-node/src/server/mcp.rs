//! The MCP server at `/mcp` (feature `mcp`, on by default): Toka's tools, and its agents
//! through one `agents.ask` tool, offered to Model Context Protocol clients over
//! streamable HTTP ([rmcp]).
//!
//! # Authorization
//!
//! `/mcp` sits behind the same bearer middleware as every other route: a request
//! without a valid token gets 401 JSON before MCP sees it. Every MCP request is then
//! checked with *its own* token (the server is stateless: no MCP session outlives its
//! HTTP request, so no token is ever remembered for later requests):
//!
//! - `tools/list` shows only what the token could call
//!   ([`Authority::may_call`](toka_tools::Authority::may_call): tool, agent and expiry
//!   caveats; those about a call's input, `path-prefix` and `max-bytes`, are left to the
//!   call). A `tool = fs.read` token sees `fs.read` and nothing else; listing needs no
//!   `api.tools.read`.
//! - `tools/call` of a Toka tool goes through [`ToolHost::call_json`] as
//!   `POST /tools/{name}/invoke` does (caller: none, not an agent): the full capability
//!   check, denials audited in the journal.
//! - `agents.ask` `{"agent", "message", "timeout_ms"?}` is checked as
//!   `POST /agents/{agent}/ask` is (`api.agents.ask` on that agent), then asks the agent
//!   (the message's capability tokens sealed before it is journaled). It is listed, with
//!   the askable agents as an `enum`, when the token may ask at least one agent.
//!
//! # Results
//!
//! A tool's JSON output is the result's text content, and its `structuredContent` when
//! it is an object. A failure the caller should see (denied, bad input, the tool
//! failed, an unknown or failing agent, a timeout) is a result with `isError: true`
//! whose text is JSON: `{"error": "...", "kind": "Denied"}` (a [`ToolErrorKind`]) for a
//! tool, `{"error": "...", "status": 404}` (the HTTP API's status) for an ask. An
//! unknown tool name is a JSON-RPC error (`-32602`), as the MCP spec asks.
//!
//! Approvals: a call that the tool host reports as waiting for a human decision is to be
//! answered like any other outcome, in [`tool_result`]: a result (not an error) saying
//! `{"status": "pending", "approval": ID}`, or an MCP task once clients support them.
//!
//! # Names
//!
//! MCP tool names are 1–128 of `A-Za-z0-9_.-` (spec 2025-11-25). Toka's names keep their
//! form (`fs.read`); a character Toka allows and MCP does not (`:`, `@`) becomes `_`, and
//! a tool whose MCP name would collide with another's, or is too long, is not offered.
//! `agents.ask` is the node's; a registered tool of that name is not offered.
//!
//! # Transport
//!
//! Stateless streamable HTTP with JSON responses (no SSE stream, no `Mcp-Session-Id`).
//! The `Host` allow-list of rmcp (a defence against DNS rebinding for servers that
//! trust every local caller) is off: every request needs a bearer token, which a page
//! rebound to this address does not have. The body is read here first, with the API's
//! body limit (413) and body timeout (408).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::RequestExt as _;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{Value, json};
use toka_actors::AgentId;
use toka_tools::{SideEffect, ToolError, ToolErrorKind, ToolSpec, Verified};

use super::{ApiError, AppState, BODY_LIMIT};

/// The MCP tool that asks an agent.
pub(crate) const AGENTS_ASK: &str = "agents.ask";

/// Tools per `tools/list` page.
const PAGE: usize = 100;

/// Most agent ids listed in `agents.ask`'s `enum`; past it the schema names none (any
/// agent the token may ask can still be asked).
const MAX_AGENT_ENUM: usize = 256;

/// The longest MCP tool name (spec 2025-11-25).
const MAX_NAME: usize = 128;

/// The `/mcp` service: rmcp's stateless streamable-HTTP server over [`TokaMcp`].
pub(crate) fn service(state: AppState) -> StreamableHttpService<TokaMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(BODY_LIMIT)
        // Bearer tokens already stop DNS-rebinding pages (see the module docs); the node
        // serves whatever host name it is reached by.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            Ok(TokaMcp {
                state: state.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Middleware of `/mcp`: reads the whole body within the node's body timeout (408) and
/// limit (413, JSON like every error) before rmcp sees the request.
pub(crate) async fn read_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = Request::from_parts(parts.clone(), body).extract::<Bytes, _>();
    let bytes = match tokio::time::timeout(state.inner.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(rejection)) => {
            return ApiError::new(rejection.status(), rejection.body_text()).into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    state.inner.body_timeout.as_millis()
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The MCP handler for one request.
#[derive(Clone)]
pub(crate) struct TokaMcp {
    state: AppState,
}

/// `agents.ask`'s arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    agent: String,
    message: Value,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl TokaMcp {
    /// Every Toka tool by its MCP name (names that collide or are too long left out).
    fn catalogue(&self) -> BTreeMap<String, ToolSpec> {
        let specs = self.state.inner.host.specs();
        let mut by_name: BTreeMap<String, Vec<ToolSpec>> = BTreeMap::new();
        for spec in specs {
            if spec.name == AGENTS_ASK {
                tracing::warn!(
                    tool = AGENTS_ASK,
                    "a tool named like the node's own MCP tool is not offered over MCP"
                );
                continue;
            }
            match mcp_name(&spec.name) {
                Some(name) => by_name.entry(name).or_default().push(spec),
                None => {
                    tracing::warn!(tool = %spec.name, "tool name longer than MCP allows; not offered over MCP")
                }
            }
        }
        by_name
            .into_iter()
            .filter_map(|(name, mut specs)| {
                // A name taken by two tools (`a:b` and `a_b`) goes to the one that is
                // spelled that way, if any; otherwise to neither.
                if specs.len() == 1 {
                    return specs.pop().map(|spec| (name, spec));
                }
                let exact = specs.iter().position(|s| s.name == name);
                tracing::warn!(mcp_name = %name, "tool names collide once made MCP names");
                exact.map(|i| (name, specs.swap_remove(i)))
            })
            .collect()
    }

    /// The agents `token` may ask (not halted), sorted.
    fn askable(&self, token: &Verified) -> Vec<String> {
        let authority = &self.state.inner.authority;
        let mut ids: Vec<String> = self
            .state
            .inner
            .runtime
            .tree()
            .into_iter()
            .filter(|info| info.halted.is_none())
            .map(|info| info.id.as_str().to_owned())
            .filter(|id| {
                authority
                    .may_call(token, "api.agents.ask", Some(id))
                    .is_ok()
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every tool `token` could call, by MCP name.
    fn visible_tools(&self, token: &Verified) -> Vec<Tool> {
        let authority = &self.state.inner.authority;
        let mut tools: Vec<Tool> = self
            .catalogue()
            .into_iter()
            .filter(|(_, spec)| authority.may_call(token, &spec.name, None).is_ok())
            .map(|(name, spec)| mcp_tool(name, &spec))
            .collect();
        let askable = self.askable(token);
        if !askable.is_empty() {
            tools.push(agents_ask_tool(&askable));
        }
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// `tools/call` of a Toka tool.
    async fn call(
        &self,
        token: &Verified,
        name: &str,
        input: Value,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(spec) = self.catalogue().remove(name) else {
            return Err(ErrorData::invalid_params(
                format!("no tool named {name:?}"),
                None,
            ));
        };
        let inner = &self.state.inner;
        let input = serde_json::to_vec(&input)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        inner.metrics.tool_calls.fetch_add(1, Ordering::Relaxed);
        let result = inner
            .host
            .call_json(token.token(), None, &spec.name, &input)
            .await;
        if matches!(&result, Err(e) if e.kind == ToolErrorKind::Denied) {
            inner.metrics.forbidden.fetch_add(1, Ordering::Relaxed);
        }
        Ok(tool_result(result))
    }

    /// `tools/call` of `agents.ask`.
    async fn ask(&self, token: &Verified, arguments: Value) -> CallToolResult {
        let args: AskArgs = match serde_json::from_value(arguments) {
            Ok(args) => args,
            Err(e) => {
                return ask_error(&ApiError::bad_request(format!(
                    "{AGENTS_ASK} takes {{\"agent\", \"message\", \"timeout_ms\"?}}: {e}"
                )));
            }
        };
        match self.ask_agent(token, args).await {
            Ok(reply) => success(reply),
            Err(error) => ask_error(&error),
        }
    }

    async fn ask_agent(&self, token: &Verified, args: AskArgs) -> Result<Value, ApiError> {
        let state = &self.state;
        super::auth::permit(state, token, "api.agents.ask", Some(&args.agent))?;
        let timeout = match args.timeout_ms {
            None => state.inner.ask_timeout,
            Some(ms @ 1..=super::routes::MAX_ASK_TIMEOUT_MS) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(ApiError::bad_request(format!(
                    "timeout_ms = {ms}: it must be 1 to {}",
                    super::routes::MAX_ASK_TIMEOUT_MS
                )));
            }
        };
        let id = AgentId::new(&args.agent)?;
        let mut message = args.message;
        state.inner.sealer.seal_tokens(&mut message);
        state.inner.metrics.asks.fetch_add(1, Ordering::Relaxed);
        Ok(state.inner.runtime.ask_json(&id, message, timeout).await?)
    }
}

impl ServerHandler for TokaMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("toka-node", env!("CARGO_PKG_VERSION")).with_title("Toka"),
            )
            .with_instructions(
                "Toka's tools, and `agents.ask` to ask one of its agents. The list shows only \
                 what your token may call.",
            )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let token = token_of(&context)?;
        let tools = self.visible_tools(&token);
        let cursor = request.and_then(|r| r.cursor);
        let start = match &cursor {
            None => 0,
            // The cursor is the last name of the previous page.
            Some(after) => tools.partition_point(|t| t.name.as_ref() <= after.as_str()),
        };
        let page: Vec<Tool> = tools.into_iter().skip(start).take(PAGE + 1).collect();
        let mut result;
        if page.len() > PAGE {
            let mut page = page;
            page.truncate(PAGE);
            let next = page.last().map(|t| t.name.to_string());
            result = ListToolsResult::with_all_items(page);
            result.next_cursor = next;
        } else {
            result = ListToolsResult::with_all_items(page);
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let token = token_of(&context)?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let result = if request.name == AGENTS_ASK {
            self.ask(&token, arguments).await
        } else {
            self.call(&token, &request.name, arguments).await?
        };
        Ok(result.into())
    }
}

/// The verified bearer token of the HTTP request behind `context` (put there by the
/// auth middleware; rmcp hands the request's parts to the handler).
fn token_of(context: &RequestContext<RoleServer>) -> Result<Verified, ErrorData> {
    context
        .extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Verified>())
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an MCP request reached its handler without a verified token");
            ErrorData::internal_error("internal error", None)
        })
}

/// Toka's tool name as an MCP tool name: unchanged if legal, else with each character
/// MCP does not allow as `_`; `None` if too long.
fn mcp_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    Some(
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// A Toka tool as MCP lists it; its side-effect class as annotations.
fn mcp_tool(name: String, spec: &ToolSpec) -> Tool {
    let schema = match &spec.input_schema {
        Value::Object(schema) => schema.clone(),
        _ => object_schema(),
    };
    let annotations = match spec.side_effect {
        SideEffect::Pure | SideEffect::ReadOnly => {
            ToolAnnotations::new().read_only(true).idempotent(true)
        }
        SideEffect::Idempotent => ToolAnnotations::new()
            .read_only(false)
            .destructive(true)
            .idempotent(true),
        SideEffect::External => ToolAnnotations::new()
            .read_only(false)
            .destructive(true)
            .idempotent(false),
    };
    let annotations = if spec.side_effect == SideEffect::Pure {
        annotations.open_world(false)
    } else {
        annotations
    };
    Tool::new(Cow::Owned(name), spec.description.clone(), schema).with_annotations(annotations)
}

fn object_schema() -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema
}

/// `agents.ask` as MCP lists it, naming the agents the token may ask.
fn agents_ask_tool(askable: &[String]) -> Tool {
    let mut agent = json!({
        "type": "string",
        "description": "The id of the agent to ask."
    });
    if askable.len() <= MAX_AGENT_ENUM {
        agent["enum"] = json!(askable);
    }
    let schema = json!({
        "type": "object",
        "properties": {
            "agent": agent,
            "message": {
                "description": "The message, as that agent's kind takes it (JSON): a counter \
                                takes \"get\" or {\"add\": N}, an assistant {\"user\": \"<question>\"}."
            },
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": super::routes::MAX_ASK_TIMEOUT_MS,
                "description": "How long to wait for the reply (default: the node's ask timeout)."
            }
        },
        "required": ["agent", "message"],
        "additionalProperties": false
    });
    let schema = match schema {
        Value::Object(schema) => schema,
        _ => object_schema(),
    };
    Tool::new(
        AGENTS_ASK,
        "Ask one of the node's agents and get its reply (the message is journaled).",
        schema,
    )
    .with_annotations(ToolAnnotations::new().read_only(false).idempotent(false))
}

/// A successful result: the JSON as text, and as structured content if an object.
fn success(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    if value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

/// An `isError` result whose text (and structured content) is `error`.
fn failure(error: Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
    result.structured_content = Some(error);
    result
}

/// A tool call's outcome as an MCP result. (Where a "pending approval" outcome belongs:
/// see the module docs.)
fn tool_result(result: Result<Vec<u8>, ToolError>) -> CallToolResult {
    match result {
        Ok(output) => match serde_json::from_slice::<Value>(&output) {
            Ok(value) => success(value),
            Err(_) => CallToolResult::success(vec![ContentBlock::text(
                String::from_utf8_lossy(&output).into_owned(),
            )]),
        },
        // Waiting for a human decision is not a failure: the client learns the approval's
        // id, as `POST /tools/{name}/invoke` answers 202 with it.
        Err(error) => match error.pending_approval() {
            Some(approval) => success(json!({ "approval": approval, "status": "pending" })),
            None => failure(json!({ "error": error.message, "kind": error.kind })),
        },
    }
}

/// A failed ask as an `isError` result with the HTTP API's status.
fn ask_error(error: &ApiError) -> CallToolResult {
    failure(json!({ "error": error.message(), "status": error.status().as_u16() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_form_when_mcp_allows_it() {
        assert_eq!(mcp_name("fs.read").as_deref(), Some("fs.read"));
        assert_eq!(mcp_name("mcp:git@host").as_deref(), Some("mcp_git_host"));
        assert_eq!(mcp_name(&"a".repeat(129)), None);
        assert_eq!(mcp_name(""), None);
    }

    #[test]
    fn errors_are_json_results_flagged_as_errors() {
        let denied = tool_result(Err(ToolError::new(ToolErrorKind::Denied, "no")));
        assert_eq!(denied.is_error, Some(true));
        assert_eq!(
            denied.structured_content,
            Some(json!({"error": "no", "kind": "Denied"}))
        );
        let ok = tool_result(Ok(br#"{"content": "hi"}"#.to_vec()));
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(ok.structured_content, Some(json!({"content": "hi"})));
    }
}
