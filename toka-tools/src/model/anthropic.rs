//! The Anthropic Messages API client (`POST {base_url}/messages`, `anthropic-version:
//! 2023-06-01`).
//!
//! How the provider-neutral types map onto the API:
//!
//! - System messages (wherever they are) become the top-level `system` text, joined by
//!   blank lines.
//! - The other messages become `user` / `assistant` messages of content blocks, and
//!   consecutive messages of the same side are merged into one, as the API wants the two
//!   sides to alternate: an assistant message's tool calls are `tool_use` blocks after its
//!   text, and tool results ([`Role::Tool`]) are `tool_result` blocks of a `user`
//!   message (several results in a row: one message).
//! - `max_tokens` is required by the API: a request without one gets the client's default
//!   ([`AnthropicClientBuilder::max_tokens_default`], 4096 unless set).
//! - Structured output ([`ModelRequest::response_schema`]) has no direct counterpart in
//!   the API; it is asked for as a forced tool call: a tool whose input schema is the
//!   response schema, with `tool_choice` naming it. Its input comes back as the answer's
//!   `content` (JSON text; streamed as [`StreamEvent::Text`]) and the finish reason is
//!   [`FinishReason::Stop`]. The schema must describe an object (tool inputs are objects),
//!   and while the answer is forced, the model calls none of the request's other tools.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_stream::Event;
use futures_util::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{Endpoint, KeyHeader, SseDecoder, prepare, sse_stream};
use super::{
    ChatMessage, FinishReason, ModelClient, ModelErrorKind, ModelRequest, ModelResponse,
    ModelTimeouts, RetryPolicy, Role, StreamEvent, ToolCall, ToolNames, Usage,
};
use crate::{Error, Secret};

/// The API version the client speaks (the `anthropic-version` header).
const API_VERSION: &str = "2023-06-01";

/// The `max_tokens` of a request that names none, unless the builder sets another.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The name the forced tool of a structured answer is sent under (a digit is added if a
/// tool of the request already has it).
const ANSWER_TOOL: &str = "structured_answer";

/// A client of one model behind Anthropic's Messages API.
///
/// ```no_run
/// # async fn demo(key: toka_tools::Secret) -> Result<(), toka_tools::Error> {
/// use toka_tools::model::{AnthropicClient, ChatMessage, ModelClient, ModelRequest};
///
/// let client = AnthropicClient::builder("https://api.anthropic.com/v1", "claude-sonnet-4-5")
///     .api_key(key)
///     .build()?;
/// let answer = client
///     .complete(&ModelRequest::new(vec![ChatMessage::user("Say hi")]))
///     .await?;
/// println!("{} ({} tokens)", answer.content, answer.usage.total());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnthropicClient {
    inner: Arc<Endpoint>,
    max_tokens: u32,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("url", &self.inner.url)
            .field("model", &self.inner.model)
            .field("api_key", &self.inner.key.as_ref().map(|_| "<secret>"))
            .field("max_tokens_default", &self.max_tokens)
            .finish()
    }
}

/// Builds an [`AnthropicClient`].
#[derive(Debug)]
pub struct AnthropicClientBuilder {
    base_url: String,
    model: String,
    key: Option<Secret>,
    timeouts: ModelTimeouts,
    retry: RetryPolicy,
    max_tokens: u32,
}

impl AnthropicClientBuilder {
    /// The API key (from the [`Vault`](crate::Vault)), sent as `x-api-key`.
    #[must_use]
    pub fn api_key(mut self, key: Secret) -> Self {
        self.key = Some(key);
        self
    }

    /// Connect and request timeouts.
    #[must_use]
    pub fn timeouts(mut self, timeouts: ModelTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How failed calls are retried.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The `max_tokens` of requests that name none (the API requires one); default 4096.
    #[must_use]
    pub fn max_tokens_default(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`Error::Model`] ([`ModelErrorKind::Config`]) for a base URL that is not http(s),
    /// an API key that is not printable text, or a default `max_tokens` of 0.
    pub fn build(self) -> Result<AnthropicClient, Error> {
        let (base, http) = prepare(
            &self.model,
            &self.base_url,
            self.key.as_ref(),
            self.timeouts,
        )?;
        if self.max_tokens == 0 {
            return Err(Error::Model {
                model: self.model,
                kind: ModelErrorKind::Config,
                message: "the default max_tokens must be at least 1".into(),
            });
        }
        Ok(AnthropicClient {
            inner: Arc::new(Endpoint {
                http,
                url: format!("{base}/messages"),
                model: self.model,
                key: self.key,
                key_header: KeyHeader::XApiKey,
                headers: vec![(
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(API_VERSION),
                )],
                timeouts: self.timeouts,
                retry: self.retry,
            }),
            max_tokens: self.max_tokens,
        })
    }
}

impl AnthropicClient {
    /// A builder for `model` at `base_url` (e.g. `https://api.anthropic.com/v1`).
    pub fn builder(
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> AnthropicClientBuilder {
        AnthropicClientBuilder {
            base_url: base_url.into(),
            model: model.into(),
            key: None,
            timeouts: ModelTimeouts::default(),
            retry: RetryPolicy::default(),
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The wire format.

/// How a request's tools are named on the wire, and the forced answer tool if any.
struct Wire {
    names: ToolNames,
    /// The wire name of the structured answer's tool.
    answer: Option<String>,
}

impl Wire {
    fn new(request: &ModelRequest) -> Self {
        let names = ToolNames::new(request.tools.iter().map(|t| t.name.as_str()));
        let answer = request.response_schema.as_ref().map(|_| {
            let taken = |candidate: &str| {
                request
                    .tools
                    .iter()
                    .any(|t| names.to_wire(&t.name) == candidate)
            };
            let mut name = ANSWER_TOOL.to_owned();
            let mut n = 2u32;
            while taken(&name) {
                name = format!("{ANSWER_TOOL}_{n}");
                n += 1;
            }
            name
        });
        Wire { names, answer }
    }
}

/// A JSON object parsed from `text`, or `{}` (the API wants tool inputs as objects).
fn json_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(Map::new()),
    }
}

/// The request body for `request`, tools under their wire names.
fn wire_request(
    model: &str,
    request: &ModelRequest,
    wire: &Wire,
    max_tokens: u32,
    stream: bool,
) -> Value {
    let mut system: Vec<&str> = Vec::new();
    // (role, content blocks), the two sides alternating.
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(&message.content);
                continue;
            }
            // The API refuses empty text blocks.
            Role::User if message.content.is_empty() => continue,
            Role::User => ("user", vec![text_block(&message.content)]),
            Role::Assistant => ("assistant", assistant_blocks(message, &wire.names)),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                    "content": message.content,
                })],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens.unwrap_or(max_tokens),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            let schema: Value = serde_json::from_str(&tool.parameters)
                .unwrap_or_else(|_| json!({ "type": "object" }));
            json!({
                "name": wire.names.to_wire(&tool.name),
                "description": tool.description,
                "input_schema": schema,
            })
        })
        .collect();
    if let (Some(name), Some(schema)) = (&wire.answer, &request.response_schema) {
        let schema: Value =
            serde_json::from_str(schema).unwrap_or_else(|_| json!({ "type": "object" }));
        tools.push(json!({
            "name": name,
            "description": "Gives the answer, in the required structure.",
            "input_schema": schema,
        }));
        body["tool_choice"] = json!({ "type": "tool", "name": name });
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn assistant_blocks(message: &ChatMessage, names: &ToolNames) -> Vec<Value> {
    let mut blocks = Vec::new();
    // The API refuses empty text blocks.
    if !message.content.is_empty() {
        blocks.push(text_block(&message.content));
    }
    for call in &message.tool_calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": names.to_wire(&call.name),
            "input": json_object(&call.arguments),
        }));
    }
    blocks
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Option<Value>,
    },
    /// Thinking, server tools' blocks, and whatever else the API adds.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("end_turn") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some(other) => FinishReason::Other(other.to_owned()),
        None if has_calls => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    }
}

/// The answer made of `content`, the tool calls and the rest; a structured answer's tool
/// call is not a call but the answer, so the finish reason is then [`FinishReason::Stop`].
fn response(
    content: String,
    tool_calls: Vec<ToolCall>,
    answered: bool,
    stop_reason: Option<&str>,
    usage: Usage,
    model: String,
) -> ModelResponse {
    let finish = if answered && tool_calls.is_empty() && stop_reason == Some("tool_use") {
        FinishReason::Stop
    } else {
        finish_reason(stop_reason, !tool_calls.is_empty())
    };
    ModelResponse {
        content,
        tool_calls,
        usage,
        finish,
        model,
    }
}

/// The complete answer of a non-streamed call.
fn parse_response(body: &[u8], model: &str, wire: &Wire) -> Result<ModelResponse, String> {
    let message: WireMessage = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not a Messages API message: {e}"))?;
    let mut text = String::new();
    let mut answer: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            WireBlock::Text { text: more } => text.push_str(&more),
            WireBlock::ToolUse { id, name, input } => {
                let arguments = input.map_or_else(|| "{}".to_owned(), |v| v.to_string());
                if wire.answer.as_deref() == Some(name.as_str()) {
                    answer = Some(arguments);
                } else {
                    tool_calls.push(ToolCall {
                        id,
                        name: wire.names.from_wire(&name).to_owned(),
                        arguments,
                    });
                }
            }
            WireBlock::Other => {}
        }
    }
    let usage = message.usage.unwrap_or_default();
    let answered = answer.is_some();
    Ok(response(
        answer.unwrap_or(text),
        tool_calls,
        answered,
        message.stop_reason.as_deref(),
        Usage {
            input_tokens: usage.input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
        },
        message.model.unwrap_or_else(|| model.to_owned()),
    ))
}

/// One server-sent event of a streamed answer (the fields its `type` uses).
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// What a streamed content block is.
enum Block {
    Text,
    /// The tool call with this place among the answer's calls.
    Call(usize),
    /// The structured answer's tool call.
    Answer,
    Other,
}

/// A tool call being streamed: id, wire name, its input at the start, the fragments so
/// far.
struct Call {
    id: String,
    name: String,
    start_input: Option<Value>,
    arguments: String,
}

/// Assembles a streamed answer from its events.
struct Assembly {
    wire: Wire,
    model: String,
    started: bool,
    stopped: bool,
    content: String,
    /// The structured answer's JSON so far.
    answer: Option<String>,
    /// The structured answer's input in its start event (used if no fragments follow).
    answer_start: Option<Value>,
    calls: Vec<Call>,
    blocks: HashMap<usize, Block>,
    stop_reason: Option<String>,
    usage: Usage,
}

impl Assembly {
    fn new(wire: Wire, model: &str) -> Self {
        Assembly {
            wire,
            model: model.to_owned(),
            started: false,
            stopped: false,
            content: String::new(),
            answer: None,
            answer_start: None,
            calls: Vec::new(),
            blocks: HashMap::new(),
            stop_reason: None,
            usage: Usage::default(),
        }
    }

    /// Takes one event's data; returns the events it makes.
    fn event(&mut self, data: &str) -> Result<Vec<StreamEvent>, (ModelErrorKind, String)> {
        let event: WireEvent = serde_json::from_str(data).map_err(|e| {
            (
                ModelErrorKind::Decode,
                format!("a stream event does not decode: {e}"),
            )
        })?;
        let mut out = Vec::new();
        match event.kind.as_str() {
            "message_start" => {
                self.started = true;
                if let Some(message) = event.message {
                    if let Some(model) = message.model {
                        self.model = model;
                    }
                    if let Some(usage) = message.usage {
                        self.take_usage(usage);
                    }
                }
            }
            "content_block_start" => {
                let index = event.index.unwrap_or(self.blocks.len());
                let block = match event.content_block {
                    Some(WireBlock::Text { text }) => {
                        self.text(text, &mut out);
                        Block::Text
                    }
                    Some(WireBlock::ToolUse { name, input, .. })
                        if self.wire.answer.as_deref() == Some(name.as_str()) =>
                    {
                        self.answer = Some(String::new());
                        self.answer_start = input;
                        Block::Answer
                    }
                    Some(WireBlock::ToolUse { id, name, input }) => {
                        let place = self.calls.len();
                        out.push(StreamEvent::ToolCallStarted {
                            index: place,
                            id: id.clone(),
                            name: self.wire.names.from_wire(&name).to_owned(),
                        });
                        self.calls.push(Call {
                            id,
                            name,
                            start_input: input,
                            arguments: String::new(),
                        });
                        Block::Call(place)
                    }
                    Some(WireBlock::Other) | None => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else {
                    return Ok(out);
                };
                let block = event.index.and_then(|i| self.blocks.get(&i));
                match (delta.kind.as_deref(), block) {
                    (Some("text_delta"), _) => {
                        self.text(delta.text.unwrap_or_default(), &mut out);
                    }
                    (Some("input_json_delta"), Some(Block::Call(place))) => {
                        let place = *place;
                        let fragment = delta.partial_json.unwrap_or_default();
                        if let Some(call) = self.calls.get_mut(place) {
                            if !fragment.is_empty() {
                                call.arguments.push_str(&fragment);
                                out.push(StreamEvent::ToolCallArguments {
                                    index: place,
                                    fragment,
                                });
                            }
                        }
                    }
                    (Some("input_json_delta"), Some(Block::Answer)) => {
                        let fragment = delta.partial_json.unwrap_or_default();
                        if !fragment.is_empty() {
                            self.answer.get_or_insert_default().push_str(&fragment);
                            out.push(StreamEvent::Text(fragment));
                        }
                    }
                    // Thinking, signatures, citations: not part of the answer.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = event.usage {
                    self.take_usage(usage);
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = event.error.unwrap_or(WireError {
                    kind: String::new(),
                    message: String::new(),
                });
                let kind = match error.kind.as_str() {
                    "authentication_error" | "permission_error" => ModelErrorKind::Unauthorized,
                    "rate_limit_error" => ModelErrorKind::RateLimited,
                    "invalid_request_error" | "not_found_error" | "request_too_large" => {
                        ModelErrorKind::BadRequest
                    }
                    _ => ModelErrorKind::Server,
                };
                let message = if kind == ModelErrorKind::Unauthorized {
                    format!("the stream failed: {}", error.kind)
                } else {
                    format!("the stream failed: {}: {}", error.kind, error.message)
                };
                return Err((kind, message));
            }
            // ping, content_block_stop, and event types the API may add.
            _ => {}
        }
        Ok(out)
    }

    /// Text of a text block: part of the answer, unless the answer is the structured one.
    fn text(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        if text.is_empty() || self.wire.answer.is_some() {
            return;
        }
        self.content.push_str(&text);
        out.push(StreamEvent::Text(text));
    }

    fn take_usage(&mut self, usage: WireUsage) {
        if let Some(input) = usage.input_tokens {
            self.usage.input_tokens = input;
        }
        if let Some(output) = usage.output_tokens {
            self.usage.output_tokens = output;
        }
    }

    fn finish(self) -> Result<ModelResponse, (ModelErrorKind, String)> {
        if !self.started || !self.stopped {
            return Err((
                ModelErrorKind::Transport,
                "the stream ended before the message was complete".into(),
            ));
        }
        let names = &self.wire.names;
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|call| ToolCall {
                id: call.id,
                name: names.from_wire(&call.name).to_owned(),
                // A call without input fragments (a tool without parameters) has its input
                // in the start event: `{}`.
                arguments: if call.arguments.trim().is_empty() {
                    call.start_input
                        .map_or_else(|| "{}".to_owned(), |v| v.to_string())
                } else {
                    call.arguments
                },
            })
            .collect();
        let answered = self.answer.is_some();
        let content = match self.answer {
            Some(answer) if answer.trim().is_empty() => self
                .answer_start
                .map_or_else(|| "{}".to_owned(), |v| v.to_string()),
            Some(answer) => answer,
            None => self.content,
        };
        Ok(response(
            content,
            tool_calls,
            answered,
            self.stop_reason.as_deref(),
            self.usage,
            self.model,
        ))
    }
}

impl SseDecoder for Assembly {
    fn event(
        &mut self,
        event: &Event,
    ) -> Result<Option<Vec<StreamEvent>>, (ModelErrorKind, String)> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let made = Assembly::event(self, data)?;
        Ok(if self.stopped { None } else { Some(made) })
    }

    fn finish(self) -> Result<ModelResponse, (ModelErrorKind, String)> {
        Assembly::finish(self)
    }
}

#[async_trait]
impl ModelClient for AnthropicClient {
    fn model(&self) -> &str {
        &self.inner.model
    }

    fn system(&self) -> &str {
        "anthropic"
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, Error> {
        let wire = Wire::new(request);
        let body = wire_request(&self.inner.model, request, &wire, self.max_tokens, false);
        let response = self.inner.send(&body, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.inner.transport_error(&e))?;
        parse_response(&bytes, &self.inner.model, &wire)
            .map_err(|message| self.inner.error(ModelErrorKind::Decode, message))
    }

    async fn stream(
        &self,
        request: &ModelRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, Error>>, Error> {
        let wire = Wire::new(request);
        let body = wire_request(&self.inner.model, request, &wire, self.max_tokens, true);
        let response = self.inner.send(&body, true).await?;
        let assembly = Assembly::new(wire, &self.inner.model);
        Ok(sse_stream(self.inner.clone(), response, assembly))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ModelTool;
    use super::*;

    fn fs_read() -> ModelTool {
        ModelTool {
            name: "fs.read".into(),
            description: "reads".into(),
            parameters: r#"{"type":"object","properties":{"path":{"type":"string"}}}"#.into(),
        }
    }

    #[test]
    fn a_conversation_alternates_with_system_on_top_and_tool_results_merged() {
        let request = ModelRequest {
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("read a and b"),
                ChatMessage::assistant(
                    "Reading both.",
                    vec![
                        ToolCall {
                            id: "toolu_1".into(),
                            name: "fs.read".into(),
                            arguments: r#"{"path":"a"}"#.into(),
                        },
                        ToolCall {
                            id: "toolu_2".into(),
                            name: "fs.read".into(),
                            arguments: "not json".into(),
                        },
                    ],
                ),
                ChatMessage::tool_result("toolu_1", "A"),
                ChatMessage::tool_result("toolu_2", "B"),
                ChatMessage::system("and polite"),
            ],
            tools: vec![fs_read()],
            temperature: Some(0.5),
            ..ModelRequest::default()
        };
        let wire = Wire::new(&request);
        let body = wire_request("claude", &request, &wire, 1000, false);
        assert_eq!(body["system"], "be brief\n\nand polite");
        assert_eq!(body["max_tokens"], 1000);
        assert_eq!(body["temperature"], 0.5);
        assert!(body.get("stream").is_none());
        assert_eq!(body["tools"][0]["name"], "fs_read");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        let assistant = &messages[1]["content"];
        assert_eq!(
            assistant[0],
            json!({"type": "text", "text": "Reading both."})
        );
        assert_eq!(
            assistant[1],
            json!({"type": "tool_use", "id": "toolu_1", "name": "fs_read", "input": {"path": "a"}})
        );
        assert_eq!(
            assistant[2]["input"],
            json!({}),
            "arguments that are not JSON"
        );
        assert_eq!(
            messages[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "B"},
            ])
        );

        let mut request = request;
        request.max_tokens = Some(7);
        assert_eq!(
            wire_request("claude", &request, &wire, 1000, true)["max_tokens"],
            7
        );
    }

    #[test]
    fn answers_map_blocks_stop_reasons_and_tool_names_back() {
        let request = ModelRequest {
            tools: vec![fs_read()],
            ..ModelRequest::new(vec![ChatMessage::user("read a")])
        };
        let wire = Wire::new(&request);
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "look."},
                {"type": "tool_use", "id": "toolu_9", "name": "fs_read", "input": {"path": "a"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5}
        });
        let parsed = parse_response(answer.to_string().as_bytes(), "m", &wire).unwrap();
        assert_eq!(parsed.content, "Let me look.");
        assert_eq!(parsed.tool_calls.len(), 1);
        assert_eq!(parsed.tool_calls[0].id, "toolu_9");
        assert_eq!(parsed.tool_calls[0].name, "fs.read");
        assert_eq!(parsed.tool_calls[0].arguments, r#"{"path":"a"}"#);
        assert_eq!(parsed.finish, FinishReason::ToolCalls);
        assert_eq!(parsed.usage.total(), 15);
        assert_eq!(parsed.model, "claude-x");
        for (reason, finish) in [
            ("end_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("stop_sequence", FinishReason::Other("stop_sequence".into())),
            ("refusal", FinishReason::Other("refusal".into())),
        ] {
            assert_eq!(finish_reason(Some(reason), false), finish);
        }
        assert!(parse_response(b"{\"content\": 3}", "m", &wire).is_err());
    }

    #[test]
    fn a_structured_answer_is_a_forced_tool_whose_input_is_the_content() {
        let schema = r#"{"type":"object","properties":{"city":{"type":"string"}}}"#;
        let request = ModelRequest {
            response_schema: Some(schema.into()),
            tools: vec![ModelTool {
                name: ANSWER_TOOL.into(),
                ..fs_read()
            }],
            ..ModelRequest::new(vec![ChatMessage::user("where?")])
        };
        let wire = Wire::new(&request);
        let answer_tool = wire.answer.clone().unwrap();
        assert_ne!(answer_tool, ANSWER_TOOL, "it avoids the request's own tool");
        let body = wire_request("claude", &request, &wire, 100, false);
        assert_eq!(body["tool_choice"]["name"], answer_tool.as_str());
        assert_eq!(body["tools"][1]["name"], answer_tool.as_str());
        assert_eq!(
            body["tools"][1]["input_schema"]["properties"]["city"]["type"],
            "string"
        );

        let reply = json!({
            "model": "claude-x",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": answer_tool, "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4}
        });
        let parsed = parse_response(reply.to_string().as_bytes(), "m", &wire).unwrap();
        assert_eq!(parsed.content, r#"{"city":"Paris"}"#);
        assert!(parsed.tool_calls.is_empty());
        assert_eq!(parsed.finish, FinishReason::Stop);

        // Streamed: the input's fragments are the text.
        let mut assembly = Assembly::new(Wire::new(&request), "m");
        let mut text = String::new();
        for data in [
            json!({"type": "message_start", "message": {"model": "claude-x", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": answer_tool, "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ] {
            for event in assembly.event(&data.to_string()).unwrap() {
                match event {
                    StreamEvent::Text(t) => text.push_str(&t),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let done = Assembly::finish(assembly).unwrap();
        assert_eq!(done.content, text);
        assert_eq!(done.content, r#"{"city": "Paris"}"#);
        assert_eq!(done.finish, FinishReason::Stop);
        assert_eq!(done.usage.output_tokens, 9);
    }

    #[test]
    fn stream_errors_and_cut_streams_fail() {
        let request = ModelRequest::new(vec![ChatMessage::user("hi")]);
        let mut assembly = Assembly::new(Wire::new(&request), "m");
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let (kind, message) = assembly.event(&error.to_string()).unwrap_err();
        assert_eq!(kind, ModelErrorKind::Server);
        assert!(message.contains("Overloaded"), "{message}");

        let mut cut = Assembly::new(Wire::new(&request), "m");
        let start = json!({"type": "message_start", "message": {"model": "m", "content": [], "usage": {"input_tokens": 1}}});
        cut.event(&start.to_string()).unwrap();
        let (kind, _) = Assembly::finish(cut).unwrap_err();
        assert_eq!(kind, ModelErrorKind::Transport);
    }
}
