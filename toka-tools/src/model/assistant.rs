//! The assistant: a durable agent that reasons with a model and acts with tools.
//!
//! A message `{"user": "..."}` starts a turn: the assistant asks its model (with the
//! conversation so far and the tools it may use), runs the tool calls the model asks for
//! through [`ToolCalls::call_tool`] (capability-checked, journaled, exactly once), gives the
//! results back to the model, and so on until the model answers without calling a tool or
//! `max_steps` model calls were made. The reply is a [`TurnAnswer`]; the query
//! [`AssistantQuery::Transcript`] returns the whole kept conversation, so a client that lost
//! its connection (or outlived a restart) can read how the turn ended.
//!
//! Every model call and tool call is a journaled effect, so a turn cut off by a crash is
//! handled again after the restart and **finishes on its own**: recorded model answers and
//! tool results are reused, nothing is asked or run twice. A tool call whose outcome is in
//! doubt (an `external` tool cut off by the crash) is never run again; the model is told
//! its outcome is unknown. A denied call is reported to the model as denied, so it can
//! adapt.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toka_actors::{Agent, AgentError, Context, Queries};

use super::{ChatMessage, ModelCalls, ModelRequest, ModelTool, ToolCall, Usage};
use crate::{Capability, Sealer, ToolCalls, ToolErrorKind, ToolHost};

/// The kind name the node registers the assistant under.
pub const ASSISTANT_KIND: &str = "assistant";

fn default_max_steps() -> u32 {
    8
}

/// An assistant's arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantArgs {
    /// The configured model it asks (a name of the [`ModelHost`](super::ModelHost)).
    pub model: String,
    /// Its system prompt.
    #[serde(default)]
    pub system: String,
    /// The tools it offers the model (names of the [`ToolHost`]'s tools).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Model calls per turn at most.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// The capability token it calls its model and tools with; what it allows is what the
    /// assistant can really do. Sealed ([`Sealer`]) when the assistant has a sealer, as the
    /// node's does: the node seals tokens in spawn arguments before they are journaled.
    pub token: String,
    /// How much of the conversation it keeps.
    #[serde(default)]
    pub history: HistoryPolicy,
}

/// How much of the conversation an assistant keeps (and sends to its model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryPolicy {
    /// Keep the last this many turns; older ones are dropped. `None`: keep every turn.
    #[serde(default)]
    pub keep_turns: Option<u32>,
}

/// A user's message: starts a turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTurn {
    /// What the user says.
    pub user: String,
}

/// How a turn ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnAnswer {
    /// The model's final answer (with `stopped` set: its last text, possibly empty).
    pub answer: String,
    /// Model calls the turn made.
    pub steps: u32,
    /// Why the turn ended without a final answer (`"max_steps"`), if it did.
    pub stopped: Option<String>,
    /// Tokens the turn's model calls used.
    pub usage: Usage,
}

/// What an assistant answers without changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistantQuery {
    /// The kept conversation, oldest first.
    Transcript,
}

/// One entry of a transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// `"system"`, `"user"`, `"assistant"` or `"tool"`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The tools an assistant entry called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool entry answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// An assistant's state: its arguments, the capability its token stands for, and the
/// kept turns (each the messages it added). A snapshot holds the turns only.
#[derive(Clone, Debug)]
pub struct AssistantState {
    args: AssistantArgs,
    token: Capability,
    turns: VecDeque<Vec<ChatMessage>>,
}

impl AssistantState {
    /// The kept conversation, oldest first.
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        self.turns
            .iter()
            .flatten()
            .map(|m| TranscriptEntry {
                role: m.role.as_str().to_owned(),
                content: m.content.clone(),
                tool_calls: m.tool_calls.clone(),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect()
    }
}

/// The assistant agent kind. Register it with
/// [`RuntimeBuilder::register_with_queries`](toka_actors::RuntimeBuilder::register_with_queries);
/// the runtime needs a [`ModelHost`](super::ModelHost) and (for tools) a [`ToolHost`] as
/// extensions.
#[derive(Clone, Debug, Default)]
pub struct Assistant {
    sealer: Option<Sealer>,
}

impl Assistant {
    /// An assistant whose tokens are given in clear (an embedder that journals no token
    /// it did not mean to: prefer [`Assistant::sealed`]).
    pub fn new() -> Self {
        Assistant { sealer: None }
    }

    /// An assistant whose token argument must be sealed with `sealer` (so the token is
    /// never in the journal in clear); a token in clear is refused.
    pub fn sealed(sealer: Sealer) -> Self {
        Assistant {
            sealer: Some(sealer),
        }
    }

    fn capability(&self, text: &str) -> Result<Capability, AgentError> {
        Sealer::open_capability(self.sealer.as_ref(), text, "assistant").map_err(AgentError::msg)
    }

    /// The request for the next step: system prompt, kept turns, the turn so far.
    fn request(
        args: &AssistantArgs,
        state: &AssistantState,
        turn: &[ChatMessage],
        tools: &[ModelTool],
    ) -> ModelRequest {
        let mut messages = Vec::new();
        if !args.system.is_empty() {
            messages.push(ChatMessage::system(args.system.clone()));
        }
        messages.extend(state.turns.iter().flatten().cloned());
        messages.extend(turn.iter().cloned());
        ModelRequest {
            messages,
            tools: tools.to_vec(),
            ..ModelRequest::default()
        }
    }
}

/// What a tool call's outcome tells the model.
fn tool_result_text(outcome: Result<Value, crate::ToolError>) -> String {
    match outcome {
        Ok(output) => output.to_string(),
        Err(error) => match error.kind {
            ToolErrorKind::InDoubt => format!(
                "outcome unknown: the call was cut off by a crash and the tool has external \
                 effects, so it was not run again ({})",
                error.message
            ),
            ToolErrorKind::Denied => format!("denied: {}", error.message),
            kind => format!("error ({kind:?}): {}", error.message),
        },
    }
}

impl Agent for Assistant {
    const KIND: &'static str = ASSISTANT_KIND;
    type Args = AssistantArgs;
    type Msg = UserTurn;
    type Reply = TurnAnswer;
    type State = AssistantState;

    fn init(&self, args: &AssistantArgs) -> Result<AssistantState, AgentError> {
        if args.max_steps == 0 {
            return Err(AgentError::msg("max_steps must be at least 1"));
        }
        Ok(AssistantState {
            args: args.clone(),
            token: self.capability(&args.token)?,
            turns: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        state: &mut AssistantState,
        msg: UserTurn,
    ) -> Result<TurnAnswer, AgentError> {
        let (args, token) = (state.args.clone(), state.token.clone());
        let tools: Vec<ModelTool> = match cx.extension::<ToolHost>() {
            Some(host) => args
                .tools
                .iter()
                .filter_map(|name| host.spec(name).map(ModelTool::from))
                .collect(),
            None => Vec::new(),
        };
        let mut turn = vec![ChatMessage::user(msg.user)];
        let mut usage = Usage::default();
        let mut steps = 0;
        let mut answer = String::new();
        let mut stopped = Some("max_steps".to_owned());
        while steps < args.max_steps {
            steps += 1;
            let request = Self::request(&args, state, &turn, &tools);
            let response = cx
                .call_model(&args.model, &token, &request)
                .await
                .map_err(|e| AgentError::msg(format!("model {}: {e}", args.model)))?;
            usage.input_tokens += response.usage.input_tokens;
            usage.output_tokens += response.usage.output_tokens;
            answer.clone_from(&response.content);
            turn.push(ChatMessage::assistant(
                response.content.clone(),
                response.tool_calls.clone(),
            ));
            if response.tool_calls.is_empty() {
                stopped = None;
                break;
            }
            for call in response.tool_calls {
                let outcome = match serde_json::from_str::<Value>(&call.arguments) {
                    Ok(input) => {
                        cx.call_tool::<Value, Value>(&call.name, &token, &input)
                            .await
                    }
                    Err(e) => Err(crate::ToolError::invalid_input(format!(
                        "{}: the arguments are not JSON: {e}",
                        call.name
                    ))),
                };
                turn.push(ChatMessage::tool_result(call.id, tool_result_text(outcome)));
            }
        }
        state.turns.push_back(turn);
        if let Some(keep) = args.history.keep_turns {
            while state.turns.len() > keep as usize {
                state.turns.pop_front();
            }
        }
        Ok(TurnAnswer {
            answer,
            steps,
            stopped,
            usage,
        })
    }

    fn snapshot(&self, state: &AssistantState) -> Option<Vec<u8>> {
        postcard::to_stdvec(&state.turns).ok()
    }

    fn restore(&self, args: &AssistantArgs, snapshot: &[u8]) -> Result<AssistantState, AgentError> {
        let turns = postcard::from_bytes(snapshot)
            .map_err(|e| AgentError::msg(format!("an assistant snapshot does not decode: {e}")))?;
        Ok(AssistantState {
            turns,
            ..self.init(args)?
        })
    }
}

impl Queries for Assistant {
    type Query = AssistantQuery;
    type Answer = Vec<TranscriptEntry>;

    fn query(
        &self,
        state: &AssistantState,
        query: AssistantQuery,
    ) -> Result<Vec<TranscriptEntry>, AgentError> {
        match query {
            AssistantQuery::Transcript => Ok(state.transcript()),
        }
    }
}
