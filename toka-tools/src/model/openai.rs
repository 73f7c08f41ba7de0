//! The OpenAI-compatible Chat Completions client (`POST {base_url}/chat/completions`),
//! for OpenAI and every server that speaks its wire format.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_stream::Event;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Endpoint, KeyHeader, SseDecoder, prepare, sse_stream};
use super::{
    ChatMessage, FinishReason, ModelClient, ModelErrorKind, ModelRequest, ModelResponse,
    ModelTimeouts, RetryPolicy, Role, StreamEvent, ToolCall, ToolNames, Usage,
};
use crate::{Error, Secret};

/// A client of one model behind an OpenAI-compatible Chat Completions endpoint.
///
/// ```no_run
/// # async fn demo() -> Result<(), toka_tools::Error> {
/// use toka_tools::model::{ChatMessage, ModelClient, ModelRequest, OpenAiClient};
///
/// let client = OpenAiClient::builder("http://127.0.0.1:11434/v1", "llama3.2").build()?;
/// let answer = client
///     .complete(&ModelRequest::new(vec![ChatMessage::user("Say hi")]))
///     .await?;
/// println!("{} ({} tokens)", answer.content, answer.usage.total());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Endpoint>,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.inner.url)
            .field("model", &self.inner.model)
            .field("api_key", &self.inner.key.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// Builds an [`OpenAiClient`].
#[derive(Debug)]
pub struct OpenAiClientBuilder {
    base_url: String,
    model: String,
    key: Option<Secret>,
    timeouts: ModelTimeouts,
    retry: RetryPolicy,
}

impl OpenAiClientBuilder {
    /// The API key (from the [`Vault`](crate::Vault)); local servers need none.
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

    /// The client.
    ///
    /// # Errors
    /// [`Error::Model`] ([`ModelErrorKind::Config`]) for a base URL that is not http(s),
    /// or an API key that is not printable text.
    pub fn build(self) -> Result<OpenAiClient, Error> {
        let (base, http) = prepare(
            &self.model,
            &self.base_url,
            self.key.as_ref(),
            self.timeouts,
        )?;
        Ok(OpenAiClient {
            inner: Arc::new(Endpoint {
                http,
                url: format!("{base}/chat/completions"),
                model: self.model,
                key: self.key,
                key_header: KeyHeader::Bearer,
                headers: Vec::new(),
                timeouts: self.timeouts,
                retry: self.retry,
            }),
        })
    }
}

impl OpenAiClient {
    /// A builder for `model` at `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn builder(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiClientBuilder {
        OpenAiClientBuilder {
            base_url: base_url.into(),
            model: model.into(),
            key: None,
            timeouts: ModelTimeouts::default(),
            retry: RetryPolicy::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The wire format.

/// The request body for `request`, tools under their wire names.
fn wire_request(model: &str, request: &ModelRequest, names: &ToolNames, stream: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| wire_message(m, names))
        .collect();
    let mut body = json!({ "model": model, "messages": messages });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let parameters: Value = serde_json::from_str(&tool.parameters)
                    .unwrap_or_else(|_| json!({ "type": "object" }));
                json!({
                    "type": "function",
                    "function": {
                        "name": names.to_wire(&tool.name),
                        "description": tool.description,
                        "parameters": parameters,
                    }
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if let Some(max) = request.max_tokens {
        body["max_tokens"] = json!(max);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(schema) = &request.response_schema {
        let schema: Value = serde_json::from_str(schema).unwrap_or_else(|_| json!({}));
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": "answer", "schema": schema, "strict": true }
        });
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

fn wire_message(message: &ChatMessage, names: &ToolNames) -> Value {
    let mut wire = json!({ "role": message.role.as_str(), "content": message.content });
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        if message.content.is_empty() {
            wire["content"] = Value::Null;
        }
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": names.to_wire(&call.name), "arguments": call.arguments },
                })
            })
            .collect();
        wire["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &message.tool_call_id {
        wire["tool_call_id"] = json!(id);
    }
    wire
}

#[derive(Deserialize)]
struct WireResponse {
    /// Some servers send `""` (vLLM without a served model name): taken as absent.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    delta: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    /// A JSON string as OpenAI sends it; some servers send the object itself.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }
    }
}

fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("stop") | Some("end_turn") if !has_calls => FinishReason::Stop,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("stop") | None if has_calls => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        None => FinishReason::Stop,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

/// The complete answer of a non-streamed call.
fn parse_response(body: &[u8], model: &str, names: &ToolNames) -> Result<ModelResponse, String> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not a chat completion: {e}"))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or("the answer has no choices")?;
    let message = choice.message.unwrap_or_default();
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let function = call.function.unwrap_or(WireFunction {
                name: None,
                arguments: None,
            });
            ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: names
                    .from_wire(function.name.as_deref().unwrap_or_default())
                    .to_owned(),
                arguments: arguments_text(function.arguments),
            }
        })
        .collect();
    Ok(ModelResponse {
        content: message.content.unwrap_or_default(),
        finish: finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: wire.usage.map(Usage::from).unwrap_or_default(),
        model: wire
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model.to_owned()),
    })
}

/// Assembles a streamed answer from its chunks.
#[derive(Default)]
struct Assembly {
    model: Option<String>,
    content: String,
    /// Tool calls by index: id, wire name, arguments so far.
    calls: BTreeMap<usize, (String, String, String)>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Assembly {
    /// Takes one chunk; returns the events it makes.
    fn chunk(&mut self, data: &str, names: &ToolNames) -> Result<Vec<StreamEvent>, String> {
        let wire: WireResponse = serde_json::from_str(data)
            .map_err(|e| format!("a stream chunk does not decode: {e}"))?;
        if let Some(name) = wire.model.filter(|m| !m.is_empty()) {
            self.model = Some(name);
        }
        if let Some(usage) = wire.usage {
            self.usage = Some(usage.into());
        }
        let mut events = Vec::new();
        for choice in wire.choices {
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
            let Some(delta) = choice.delta.or(choice.message) else {
                continue;
            };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.content.push_str(&text);
                events.push(StreamEvent::Text(text));
            }
            for call in delta.tool_calls.unwrap_or_default() {
                let function = call.function.unwrap_or(WireFunction {
                    name: None,
                    arguments: None,
                });
                let index = match call.index {
                    Some(index) => index,
                    None => self.indexless(call.id.as_deref(), function.name.as_deref()),
                };
                let started = !self.calls.contains_key(&index);
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                    entry.0 = id;
                }
                if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                    entry.1.push_str(&name);
                }
                if started {
                    events.push(StreamEvent::ToolCallStarted {
                        index,
                        id: entry.0.clone(),
                        name: names.from_wire(&entry.1).to_owned(),
                    });
                }
                let fragment = arguments_text(function.arguments);
                if !fragment.is_empty() {
                    entry.2.push_str(&fragment);
                    events.push(StreamEvent::ToolCallArguments { index, fragment });
                }
            }
        }
        Ok(events)
    }

    /// Where a tool-call delta without an `index` belongs. Some servers (Gemini's
    /// OpenAI-compatible endpoint) leave `index` out: each parallel call then comes as its
    /// own delta with its id and name, and a call's later argument fragments carry
    /// neither. So a delta with a new id, or with a name, starts the next call; one with a
    /// known id goes to that call; any other continues the latest call.
    fn indexless(&self, id: Option<&str>, name: Option<&str>) -> usize {
        let id = id.filter(|id| !id.is_empty());
        if let Some(known) = id.and_then(|id| {
            self.calls
                .iter()
                .find(|(_, (seen, _, _))| seen == id)
                .map(|(index, _)| *index)
        }) {
            return known;
        }
        let latest = self.calls.keys().next_back().copied();
        let starts = id.is_some() || name.is_some_and(|n| !n.is_empty());
        match latest {
            Some(latest) if !starts => latest,
            Some(latest) => latest + 1,
            None => 0,
        }
    }

    fn finish(self, model: &str, names: &ToolNames) -> ModelResponse {
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|(index, (id, name, arguments))| ToolCall {
                id: if id.is_empty() {
                    format!("call_{index}")
                } else {
                    id
                },
                name: names.from_wire(&name).to_owned(),
                arguments,
            })
            .collect();
        ModelResponse {
            content: self.content,
            finish: finish_reason(self.finish.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage.unwrap_or_default(),
            model: self.model.unwrap_or_else(|| model.to_owned()),
        }
    }
}

#[async_trait]
impl ModelClient for OpenAiClient {
    fn model(&self) -> &str {
        &self.inner.model
    }

    fn system(&self) -> &str {
        "openai"
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, Error> {
        let names = ToolNames::new(request.tools.iter().map(|t| t.name.as_str()));
        let body = wire_request(&self.inner.model, request, &names, false);
        let response = self.inner.send(&body, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.inner.transport_error(&e))?;
        parse_response(&bytes, &self.inner.model, &names)
            .map_err(|message| self.inner.error(ModelErrorKind::Decode, message))
    }

    async fn stream(
        &self,
        request: &ModelRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, Error>>, Error> {
        let names = ToolNames::new(request.tools.iter().map(|t| t.name.as_str()));
        let body = wire_request(&self.inner.model, request, &names, true);
        let response = self.inner.send(&body, true).await?;
        let decoder = ChatStream {
            assembly: Assembly::default(),
            names,
            model: self.inner.model.clone(),
        };
        Ok(sse_stream(self.inner.clone(), response, decoder))
    }
}

/// The decoder of a streamed Chat Completion: `data:` chunks until `[DONE]`.
struct ChatStream {
    assembly: Assembly,
    names: ToolNames,
    model: String,
}

impl SseDecoder for ChatStream {
    fn event(
        &mut self,
        event: &Event,
    ) -> Result<Option<Vec<StreamEvent>>, (ModelErrorKind, String)> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(None);
        }
        if data.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.assembly
            .chunk(data, &self.names)
            .map(Some)
            .map_err(|message| (ModelErrorKind::Decode, message))
    }

    fn finish(self) -> Result<ModelResponse, (ModelErrorKind, String)> {
        Ok(self.assembly.finish(&self.model, &self.names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_tools_legally_and_maps_their_calls_back() {
        let request = ModelRequest {
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("read a"),
                ChatMessage::assistant(
                    "",
                    vec![ToolCall {
                        id: "c1".into(),
                        name: "fs.read".into(),
                        arguments: r#"{"path":"a"}"#.into(),
                    }],
                ),
                ChatMessage::tool_result("c1", "contents"),
            ],
            tools: vec![super::super::ModelTool {
                name: "fs.read".into(),
                description: "reads".into(),
                parameters: r#"{"type":"object"}"#.into(),
            }],
            max_tokens: Some(50),
            ..ModelRequest::default()
        };
        let names = ToolNames::new(["fs.read"]);
        let body = wire_request("m", &request, &names, true);
        assert_eq!(body["tools"][0]["function"]["name"], "fs_read");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["name"],
            "fs_read"
        );
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 50);

        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m-2024",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_9", "type": "function",
                    "function": {"name": "fs_read", "arguments": "{\"path\":\"b\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        });
        let parsed = parse_response(answer.to_string().as_bytes(), "m", &names).unwrap();
        assert_eq!(parsed.tool_calls[0].name, "fs.read");
        assert_eq!(parsed.tool_calls[0].arguments, r#"{"path":"b"}"#);
        assert_eq!(parsed.finish, FinishReason::ToolCalls);
        assert_eq!(parsed.usage.total(), 15);
        assert_eq!(parsed.model, "m-2024");
    }

    #[test]
    fn an_empty_model_name_is_no_name() {
        // vLLM without --served-model-name sends `"model":""`.
        let names = ToolNames::new([]);
        let body = r#"{"model":"","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}]}"#;
        let parsed = parse_response(body.as_bytes(), "configured", &names).unwrap();
        assert_eq!(parsed.model, "configured");
        let mut assembly = Assembly::default();
        assembly
            .chunk(r#"{"model":"served","choices":[]}"#, &names)
            .unwrap();
        assembly
            .chunk(
                r#"{"model":"","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
                &names,
            )
            .unwrap();
        assert_eq!(assembly.finish("configured", &names).model, "served");
    }

    #[test]
    fn tool_call_deltas_without_an_index_are_told_apart() {
        // Hand-written in the shape reported for Gemini's OpenAI-compatible stream (no
        // `index`; parallel calls each in its own delta; indexless argument fragments; a
        // tool-call answer finished with "stop"), not a recorded capture.
        let names = ToolNames::new(["get_weather", "get_time"]);
        let mut assembly = Assembly::default();
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"function-call-1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"\"Paris\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"function-call-2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"UTC\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ];
        let mut started = 0;
        for chunk in chunks {
            for event in assembly.chunk(chunk, &names).unwrap() {
                if matches!(event, StreamEvent::ToolCallStarted { .. }) {
                    started += 1;
                }
            }
        }
        assert_eq!(started, 3);
        let done = assembly.finish("m", &names);
        let calls: Vec<(&str, &str, &str)> = done
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("function-call-1", "get_weather", r#"{"city":"Paris"}"#),
                ("function-call-2", "get_weather", r#"{"city":"Rome"}"#),
                ("call_2", "get_time", r#"{"tz":"UTC"}"#),
            ]
        );
        assert_eq!(done.finish, FinishReason::ToolCalls);

        // With an index, a repeated name or id changes nothing: the index decides.
        let mut assembly = Assembly::default();
        for chunk in [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"get_time","arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"","arguments":"}"}}]}}]}"#,
        ] {
            assembly.chunk(chunk, &names).unwrap();
        }
        let done = assembly.finish("m", &names);
        assert_eq!(done.tool_calls.len(), 1);
        assert_eq!(done.tool_calls[0].arguments, "{}");
    }

    #[test]
    fn stream_chunks_assemble_text_and_argument_fragments() {
        let names = ToolNames::new(["fs.read"]);
        let mut assembly = Assembly::default();
        let chunks = [
            r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"fs_read","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"pa"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\":\"a\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
        ];
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(assembly.chunk(chunk, &names).unwrap());
        }
        assert_eq!(events[0], StreamEvent::Text("Hel".into()));
        assert!(events.contains(&StreamEvent::ToolCallStarted {
            index: 0,
            id: "call_1".into(),
            name: "fs.read".into()
        }));
        let done = assembly.finish("m", &names);
        assert_eq!(done.content, "Hello");
        assert_eq!(done.tool_calls[0].arguments, r#"{"path":"a"}"#);
        assert_eq!(done.tool_calls[0].name, "fs.read");
        assert_eq!(done.finish, FinishReason::ToolCalls);
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 7,
                output_tokens: 3
            }
        );
    }
}
