//! Model clients: how an agent asks a language model, in provider-neutral types.
//!
//! - [`ModelRequest`] / [`ModelResponse`]: a conversation ([`ChatMessage`]s), the tools
//!   the model may call ([`ModelTool`], made from a [`ToolSpec`]), and the complete answer:
//!   text, [`ToolCall`]s, [`Usage`] and why it stopped ([`FinishReason`]). Every type is
//!   plain data that serializes with postcard, so a response can be journaled as it is
//!   (tool-call arguments are kept as JSON *text*).
//! - [`ModelClient`]: one configured model; [`ModelClient::complete`] returns the whole
//!   answer, [`ModelClient::stream`] yields [`StreamEvent`]s while the model generates and
//!   ends with the same complete answer.
//! - [`live`]: what an agent's model calls generate, as they generate it, for whoever
//!   [subscribes](ModelHost::subscribe) to the agent ([`TurnEvent`]s); never journaled.
//! - Providers, each behind a cargo feature: [`OpenAiClient`] (feature `openai`: OpenAI's
//!   Chat Completions and every server that speaks it: vLLM, Ollama, llama.cpp's server,
//!   LM Studio, OpenRouter), and [`AnthropicClient`] (feature `anthropic`: Anthropic's
//!   Messages API).
//! - [`ToolNames`]: providers only accept tool names matching `^[a-zA-Z0-9_-]{1,64}$`, so
//!   `fs.read` is sent under a legal name and the model's calls are mapped back.
//!
//! API keys come from the [`Vault`](crate::Vault) by name and are held as a
//! [`Secret`](crate::Secret): they are never part of a request's `Debug`, an error, a log
//! line or a journal record.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::tool::ToolSpec;

#[cfg(feature = "anthropic")]
mod anthropic;
mod assistant;
mod call;
mod delegate;
mod host;
#[cfg(any(feature = "openai", feature = "anthropic"))]
mod http;
pub mod live;
#[cfg(feature = "openai")]
mod openai;
mod retry;

#[cfg(feature = "anthropic")]
pub use anthropic::{AnthropicClient, AnthropicClientBuilder};
pub use assistant::{
    ASSISTANT_KIND, ApprovalNews, Assistant, AssistantArgs, AssistantMsg, AssistantQuery,
    AssistantState, HistoryPolicy, TranscriptEntry, TurnAnswer, UserTurn,
};
pub use call::ModelCalls;
pub use delegate::{AGENTS_ASK, agents_ask_tool};
pub use host::{ModelHost, ModelHostBuilder, ModelMetrics, USAGE_STREAM_PREFIX, UsageRecord};
pub use live::{Lagged, TurnEvent, TurnSubscription};
#[cfg(feature = "openai")]
pub use openai::{OpenAiClient, OpenAiClientBuilder};
pub use retry::RetryPolicy;

/// Who wrote a message of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person (or program) the model answers.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call the model asked for.
    Tool,
}

impl Role {
    /// The role's name on the wire (`"system"`, `"user"`, `"assistant"`, `"tool"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text (empty for an assistant message that only calls tools).
    pub content: String,
    /// The tools an assistant message called.
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage::text(Role::User, content)
    }

    /// An assistant message (text, and the tools it called).
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            tool_calls,
            ..ChatMessage::text(Role::Assistant, content)
        }
    }

    /// The result of tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            tool_call_id: Some(call_id.into()),
            ..ChatMessage::text(Role::Tool, content)
        }
    }

    fn text(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; the result message names it.
    pub id: String,
    /// The tool's Toka name (e.g. `fs.read`), mapped back from the name it was sent under.
    pub name: String,
    /// Its input, as JSON text (as the model wrote it: it may not even be valid JSON).
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelTool {
    /// The tool's Toka name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its input, as JSON text.
    pub parameters: String,
}

impl From<&ToolSpec> for ModelTool {
    fn from(spec: &ToolSpec) -> Self {
        ModelTool {
            name: spec.name.clone(),
            description: spec.description.clone(),
            parameters: spec.input_schema.to_string(),
        }
    }
}

/// What to ask a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    pub tools: Vec<ModelTool>,
    /// At most this many tokens in the answer.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Structured output: a JSON Schema (as JSON text) the answer must follow.
    pub response_schema: Option<String>,
}

impl ModelRequest {
    /// A request of `messages`, with no tools.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        ModelRequest {
            messages,
            ..ModelRequest::default()
        }
    }

    /// The BLAKE3 digest of the request (postcard), which the journal records with a
    /// model call's intent.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

/// Tokens a call used, as the provider counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

impl Usage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It wants the tool calls of the answer run.
    ToolCalls,
    /// It hit the token limit.
    Length,
    /// The provider said something else (named as it said it).
    Other(String),
}

/// A model's complete answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// Its text.
    pub content: String,
    /// The tools it called.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub finish: FinishReason,
    /// The model that answered, as the provider named it.
    pub model: String,
}

/// What a streamed call yields while the model generates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// More of the answer's text.
    Text(String),
    /// The model began tool call `index` of the answer.
    ToolCallStarted {
        /// Its place among the answer's calls.
        index: usize,
        /// The provider's id of the call.
        id: String,
        /// The tool's Toka name.
        name: String,
    },
    /// More of tool call `index`'s arguments (JSON text, in fragments).
    ToolCallArguments {
        /// Its place among the answer's calls.
        index: usize,
        /// The next fragment.
        fragment: String,
    },
    /// The complete answer; always the last event of a stream that did not fail.
    Done(ModelResponse),
}

/// One configured model.
#[async_trait]
pub trait ModelClient: Send + Sync + 'static {
    /// The model's name on the provider's side (e.g. `gpt-4o-mini`).
    fn model(&self) -> &str;

    /// The provider, as OpenTelemetry's `gen_ai.system` names it (`openai`,
    /// `anthropic`); `_OTHER` unless the client says.
    fn system(&self) -> &str {
        "_OTHER"
    }

    /// Asks the model and returns its complete answer.
    ///
    /// # Errors
    /// [`Error::Model`], with what went wrong ([`ModelErrorKind`]).
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, Error>;

    /// Asks the model and streams its answer as it is generated; the last event is
    /// [`StreamEvent::Done`] with the complete answer.
    ///
    /// # Errors
    /// [`Error::Model`] before the stream starts, or as an item of the stream.
    async fn stream(
        &self,
        request: &ModelRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, Error>>, Error>;
}

/// What kind of failure a model call met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelErrorKind {
    /// The provider refused the API key (401, 403).
    Unauthorized,
    /// The provider refused the request (400, 404, 422, …).
    BadRequest,
    /// Too many requests (429), still after the retries.
    RateLimited,
    /// The provider failed (5xx), still after the retries.
    Server,
    /// No answer in time.
    Timeout,
    /// The connection failed or broke.
    Transport,
    /// The answer did not have the provider's format.
    Decode,
    /// The client is misconfigured (an unusable base URL, a key that is not text).
    Config,
}

impl ModelErrorKind {
    /// Whether a call that failed so may succeed when tried again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ModelErrorKind::RateLimited
                | ModelErrorKind::Server
                | ModelErrorKind::Timeout
                | ModelErrorKind::Transport
        )
    }
}

/// Tool names as a provider accepts them (`^[a-zA-Z0-9_-]{1,64}$`), and back.
///
/// A name that is already legal is kept. Otherwise every other character becomes `_`
/// (`fs.read` → `fs_read`); a name that then collides with another, or is too long, gets a
/// suffix of its BLAKE3 digest. The mapping depends only on the set of names, so the same
/// tools are always sent under the same names (a journaled request's digest stays stable).
#[derive(Clone, Debug, Default)]
pub struct ToolNames {
    to_wire: HashMap<String, String>,
    from_wire: HashMap<String, String>,
}

/// Longest tool name providers accept.
const MAX_WIRE_NAME: usize = 64;

impl ToolNames {
    /// The mapping for `names`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut mapping = ToolNames::default();
        // Legal names first: they keep themselves, the others must avoid them.
        for name in names.iter().copied().filter(|n| is_legal(n)) {
            mapping.insert(name, name.to_owned());
        }
        for name in names.iter().copied().filter(|n| !is_legal(n)) {
            let mut wire: String = name
                .chars()
                .map(|c| if is_legal_char(c) { c } else { '_' })
                .collect();
            if wire.is_empty()
                || wire.len() > MAX_WIRE_NAME
                || mapping.from_wire.contains_key(&wire)
            {
                let hash = blake3::hash(name.as_bytes()).to_hex();
                let keep = MAX_WIRE_NAME - 9;
                wire.truncate(keep);
                wire.push('_');
                wire.push_str(&hash[..8]);
            }
            mapping.insert(name, wire);
        }
        mapping
    }

    fn insert(&mut self, name: &str, wire: String) {
        self.from_wire.insert(wire.clone(), name.to_owned());
        self.to_wire.insert(name.to_owned(), wire);
    }

    /// The name `name` is sent under (itself if it is not one of the mapped tools).
    pub fn to_wire<'a>(&'a self, name: &'a str) -> &'a str {
        self.to_wire.get(name).map_or(name, String::as_str)
    }

    /// The Toka name of a tool the model called by `wire` (itself if unknown: the call is
    /// then refused as an unknown tool, as it should be).
    pub fn from_wire<'a>(&'a self, wire: &'a str) -> &'a str {
        self.from_wire.get(wire).map_or(wire, String::as_str)
    }
}

fn is_legal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_legal(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_WIRE_NAME && name.chars().all(is_legal_char)
}

/// Timeouts of a model client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelTimeouts {
    /// Connecting to the provider.
    pub connect: Duration,
    /// A whole non-streamed call; for a streamed one, the wait for each next chunk.
    pub request: Duration,
}

impl Default for ModelTimeouts {
    fn default() -> Self {
        ModelTimeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_legal_unique_and_map_back() {
        let long = "x.".repeat(40);
        let names = [
            "fs.read",
            "fs_read",
            "shell.exec",
            "agents.ask",
            "ok-name_1",
            long.as_str(),
            "ünïcode.tool",
        ];
        let mapping = ToolNames::new(names);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let wire = mapping.to_wire(name);
            assert!(is_legal(wire), "{name:?} -> {wire:?}");
            assert!(seen.insert(wire.to_owned()), "{wire:?} twice");
            assert_eq!(mapping.from_wire(wire), name);
        }
        assert_eq!(
            mapping.to_wire("fs_read"),
            "fs_read",
            "legal names keep themselves"
        );
        assert_ne!(mapping.to_wire("fs.read"), "fs_read");
        assert_eq!(mapping.to_wire("shell.exec"), "shell_exec");
        // The same set in another order maps the same way.
        let again = ToolNames::new(names.iter().rev().copied());
        for name in names {
            assert_eq!(mapping.to_wire(name), again.to_wire(name));
        }
        assert_eq!(mapping.from_wire("unknown"), "unknown");
    }

    #[test]
    fn responses_round_trip_through_postcard() {
        let response = ModelResponse {
            content: "hi".into(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "fs.read".into(),
                arguments: r#"{"path":"a"}"#.into(),
            }],
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
            },
            finish: FinishReason::ToolCalls,
            model: "m".into(),
        };
        let bytes = postcard::to_stdvec(&response).unwrap();
        assert_eq!(
            postcard::from_bytes::<ModelResponse>(&bytes).unwrap(),
            response
        );
        let request = ModelRequest::new(vec![ChatMessage::user("hello")]);
        assert_eq!(request.digest(), request.clone().digest());
        assert_ne!(
            request.digest(),
            ModelRequest::new(vec![ChatMessage::user("hello!")]).digest()
        );
    }
}
