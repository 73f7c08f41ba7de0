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
//!
//! The tool calls of one model answer are independent, so they run concurrently
//! ([`ToolCalls::call_tools`]), each still journaled and settled on its own. With
//! [`AGENTS_ASK`] among its tools, the model can ask another agent (delegation and
//! teams; see [`agents_ask_tool`](super::agents_ask_tool)).
//!
//! The [`HistoryPolicy`] bounds what is kept: the last N turns and/or an estimated token
//! budget; turns that leave are dropped, or folded into a running summary by one
//! (journaled) model call. With snapshots, a long conversation then costs its kept tail
//! to recover, not its whole life.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toka_actors::{Agent, AgentError, Context, Queries};

use super::delegate::{AGENTS_ASK, agents_ask_tool, ask_agent};
use super::{ChatMessage, ModelCalls, ModelRequest, ModelTool, Role, ToolCall, TurnEvent, Usage};
use crate::{Capability, Sealer, ToolCalls, ToolError, ToolErrorKind, ToolHost};

/// The kind name the node registers the assistant under.
pub const ASSISTANT_KIND: &str = "assistant";

fn default_max_steps() -> u32 {
    8
}

fn default_ask_timeout_secs() -> u64 {
    300
}

/// What the model is asked to do when turns leave a summarising history.
const SUMMARY_PROMPT: &str = "You keep the memory of a long conversation. Write a concise \
    summary of the conversation below (the earlier summary, if any, and the turns that \
    follow it): the facts, decisions, open questions and anything the user asked to \
    remember. Answer with the summary only.";

/// How a snapshot of an assistant starts (then: postcard of its kept history).
const SNAPSHOT_MAGIC: &[u8] = b"\xfftoka-assistant/2\n";

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
    /// How long an [`AGENTS_ASK`] call waits for the asked agent's reply, in seconds.
    #[serde(default = "default_ask_timeout_secs")]
    pub ask_timeout_secs: u64,
}

impl AssistantArgs {
    /// Arguments for an assistant asking configured model `model` and holding `token`
    /// (sealed, for a sealed assistant), with the defaults: no system prompt, no tools,
    /// 8 steps a turn, the whole history kept, 300 s for an [`AGENTS_ASK`] call.
    pub fn new(model: impl Into<String>, token: impl Into<String>) -> Self {
        AssistantArgs {
            model: model.into(),
            system: String::new(),
            tools: Vec::new(),
            max_steps: default_max_steps(),
            token: token.into(),
            history: HistoryPolicy::default(),
            ask_timeout_secs: default_ask_timeout_secs(),
        }
    }
}

/// How much of the conversation an assistant keeps (and sends to its model).
///
/// After each turn, the oldest turns leave while more than `keep_turns` are kept or the
/// kept turns are estimated at more than `max_tokens` (the newest turn always stays).
/// Without `summarize` they are dropped. With it, they are folded into a running summary
/// by one model call (journaled like any model call; its tokens count in the turn's
/// usage), sent to the model with the system prompt; to make one summary call cover
/// several turns, a summarising history then keeps only half of each limit.
///
/// Tokens are estimated at four bytes of text each (plus a few per message): a budget,
/// not a tokenizer's count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryPolicy {
    /// Keep at most the last this many turns. `None`: no limit on turns.
    #[serde(default)]
    pub keep_turns: Option<u32>,
    /// Keep at most about this many tokens of turns. `None`: no limit on tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Fold leaving turns into a summary instead of dropping them.
    #[serde(default)]
    pub summarize: bool,
}

impl HistoryPolicy {
    /// Whether `turns` (with `tokens` estimated) are more than the policy keeps.
    fn exceeded(&self, turns: usize, tokens: u64) -> bool {
        self.keep_turns.is_some_and(|keep| turns > keep as usize)
            || self.max_tokens.is_some_and(|max| tokens > u64::from(max))
    }

    /// How many of `turns` (oldest first) leave.
    fn leaving(&self, turns: &VecDeque<Vec<ChatMessage>>) -> usize {
        let estimates: Vec<u64> = match self.max_tokens {
            Some(_) => turns.iter().map(|t| estimate_tokens(t)).collect(),
            None => vec![0; turns.len()],
        };
        let total: u64 = estimates.iter().sum();
        if !self.exceeded(turns.len(), total) {
            return 0;
        }
        // A summarising history compacts down to half of each limit.
        let (keep, max) = if self.summarize {
            (
                self.keep_turns.map(|k| (k / 2).max(1)),
                self.max_tokens.map(|m| m / 2),
            )
        } else {
            (self.keep_turns, self.max_tokens)
        };
        let (mut left, mut tokens) = (turns.len(), total);
        let mut leaving = 0;
        for turn_tokens in estimates {
            let over = keep.is_some_and(|k| left > k as usize)
                || max.is_some_and(|m| tokens > u64::from(m));
            if !over || left == 1 {
                break;
            }
            leaving += 1;
            left -= 1;
            tokens -= turn_tokens;
        }
        leaving
    }
}

/// The estimated tokens of `messages`: four bytes of text each, plus four per message.
fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let text = m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>();
            4 + (text as u64).div_ceil(4)
        })
        .sum()
}

/// A user's message: starts a turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTurn {
    /// What the user says.
    pub user: String,
}

/// News of a decided approval (see [`crate::approval`]): a turn waiting for it goes on.
/// The node sends it to the calling agent when a human decides (again after a restart,
/// so it may come twice: news no turn waits for is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalNews {
    /// The approval's id.
    pub approval: String,
    /// Its status (`approved`, `denied`, `expired`): informative; the tool host decides.
    #[serde(default)]
    pub status: Option<String>,
}

/// What an assistant handles: as JSON, `{"user": "..."}` or `{"approval": "<id>"}`
/// (in the journal, a tagged binary form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssistantMsg {
    /// A user's message: starts a turn.
    Turn(UserTurn),
    /// A decided approval: a turn waiting for it goes on.
    Approval(ApprovalNews),
}

/// [`AssistantMsg`] in a binary format (the journal's): tagged.
#[derive(Serialize, Deserialize)]
enum TaggedMsg {
    Turn(UserTurn),
    Approval(ApprovalNews),
}

/// [`AssistantMsg`] as JSON: told apart by its fields.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonMsg {
    Turn(UserTurn),
    Approval(ApprovalNews),
}

impl Serialize for AssistantMsg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let human = serializer.is_human_readable();
        match (self.clone(), human) {
            (AssistantMsg::Turn(t), true) => JsonMsg::Turn(t).serialize(serializer),
            (AssistantMsg::Approval(a), true) => JsonMsg::Approval(a).serialize(serializer),
            (AssistantMsg::Turn(t), false) => TaggedMsg::Turn(t).serialize(serializer),
            (AssistantMsg::Approval(a), false) => TaggedMsg::Approval(a).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for AssistantMsg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(match JsonMsg::deserialize(deserializer)? {
                JsonMsg::Turn(t) => AssistantMsg::Turn(t),
                JsonMsg::Approval(a) => AssistantMsg::Approval(a),
            })
        } else {
            Ok(match TaggedMsg::deserialize(deserializer)? {
                TaggedMsg::Turn(t) => AssistantMsg::Turn(t),
                TaggedMsg::Approval(a) => AssistantMsg::Approval(a),
            })
        }
    }
}

impl From<UserTurn> for AssistantMsg {
    fn from(turn: UserTurn) -> Self {
        AssistantMsg::Turn(turn)
    }
}

/// How a turn ended, or why it waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnAnswer {
    /// The model's final answer (with `stopped` set: its last text, possibly empty).
    pub answer: String,
    /// Model calls the turn made.
    pub steps: u32,
    /// Why the turn ended without a final answer, if it did: `"max_steps"`;
    /// `"approval"` (it waits for the human decisions in `approvals` and goes on by itself
    /// when they come: read the transcript then); `"busy"` (a message while a turn
    /// waits: it was not taken); `"ignored"` (news of an approval no turn waits for).
    pub stopped: Option<String>,
    /// Tokens the turn's model calls used.
    pub usage: Usage,
    /// The approvals the turn waits for (with `stopped: "approval"` or `"busy"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
}

impl TurnAnswer {
    fn stopped(reason: &str, approvals: Vec<String>) -> Self {
        TurnAnswer {
            answer: String::new(),
            steps: 0,
            stopped: Some(reason.to_owned()),
            usage: Usage::default(),
            approvals,
        }
    }
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
/// kept history. A snapshot holds the history only.
#[derive(Clone, Debug)]
pub struct AssistantState {
    args: AssistantArgs,
    token: Capability,
    history: History,
}

/// What an assistant keeps of its conversation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct History {
    /// The summary of the turns that left (summarising policies).
    summary: Option<String>,
    /// The kept turns, oldest first: each the messages it added.
    turns: VecDeque<Vec<ChatMessage>>,
    /// The turn waiting for human decisions, if one is.
    waiting: Option<WaitingTurn>,
}

/// A turn stopped until the approvals of some of its tool calls are decided.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WaitingTurn {
    /// The turn's messages so far, ending with the model's answer that called the tools.
    messages: Vec<ChatMessage>,
    /// What each of that answer's calls told the model; `None` while it waits.
    results: Vec<Option<String>>,
    /// The approvals still undecided.
    approvals: Vec<String>,
    steps: u32,
    usage: Usage,
}

impl AssistantState {
    /// The kept conversation, oldest first; a summary of earlier turns, if any, comes
    /// first as a `system` entry.
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        let summary = self.history.summary.iter().map(|s| TranscriptEntry {
            role: Role::System.as_str().to_owned(),
            content: summary_text(s),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
        let entry = |m: &ChatMessage| TranscriptEntry {
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
        };
        let mut entries: Vec<TranscriptEntry> = summary
            .chain(self.history.turns.iter().flatten().map(entry))
            .collect();
        if let Some(waiting) = &self.history.waiting {
            entries.extend(waiting.messages.iter().map(entry));
            let calls = waiting
                .messages
                .last()
                .map(|m| m.tool_calls.as_slice())
                .unwrap_or_default();
            for (call, result) in calls.iter().zip(&waiting.results) {
                let content = result.clone().unwrap_or_else(|| {
                    format!("waiting for approval ({})", waiting.approvals.join(", "))
                });
                entries.push(TranscriptEntry {
                    role: Role::Tool.as_str().to_owned(),
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id.clone()),
                });
            }
        }
        entries
    }
}

/// How the summary of earlier turns is shown to the model.
fn summary_text(summary: &str) -> String {
    format!("Summary of the earlier conversation:\n{summary}")
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

    /// The request for the next step: system prompt (with the summary of earlier turns),
    /// kept turns, the turn so far.
    fn request(
        args: &AssistantArgs,
        history: &History,
        turn: &[ChatMessage],
        tools: &[ModelTool],
    ) -> ModelRequest {
        let mut messages = Vec::new();
        let system = match &history.summary {
            Some(summary) if args.system.is_empty() => summary_text(summary),
            Some(summary) => format!("{}\n\n{}", args.system, summary_text(summary)),
            None => args.system.clone(),
        };
        if !system.is_empty() {
            messages.push(ChatMessage::system(system));
        }
        messages.extend(history.turns.iter().flatten().cloned());
        messages.extend(turn.iter().cloned());
        ModelRequest {
            messages,
            tools: tools.to_vec(),
            ..ModelRequest::default()
        }
    }

    /// The tools offered to the model: the tool host's specs of `args.tools`, and
    /// [`AGENTS_ASK`] if listed.
    fn offered_tools(cx: &Context<'_, Self>, args: &AssistantArgs) -> Vec<ModelTool> {
        let host = cx.extension::<ToolHost>();
        args.tools
            .iter()
            .filter_map(|name| {
                if name == AGENTS_ASK {
                    return Some(agents_ask_tool());
                }
                host.as_ref()?.spec(name).map(ModelTool::from)
            })
            .collect()
    }

    /// Runs tool calls of one model answer: the tool host's concurrently, then the
    /// [`AGENTS_ASK`] calls one by one (always in this order, so a re-run takes the same
    /// steps). Returns their outcomes in the calls' order.
    async fn run_tool_calls(
        cx: &mut Context<'_, Self>,
        args: &AssistantArgs,
        token: &Capability,
        calls: &[&ToolCall],
    ) -> Vec<Result<Value, ToolError>> {
        let inputs: Vec<Result<Value, ToolError>> = calls
            .iter()
            .map(|call| {
                serde_json::from_str::<Value>(&call.arguments).map_err(|e| {
                    ToolError::invalid_input(format!(
                        "{}: the arguments are not JSON: {e}",
                        call.name
                    ))
                })
            })
            .collect();
        let mut results: Vec<Option<Result<Value, ToolError>>> = vec![None; calls.len()];
        let mut batch = Vec::new();
        for (slot, (call, input)) in calls.iter().zip(&inputs).enumerate() {
            match input {
                Err(error) => results[slot] = Some(Err(error.clone())),
                Ok(input) if call.name != AGENTS_ASK => {
                    batch.push((slot, call.name.as_str(), input))
                }
                Ok(_) => {}
            }
        }
        let requests: Vec<(&str, &Value)> = batch.iter().map(|&(_, n, i)| (n, i)).collect();
        let outcomes = cx.call_tools(token, &requests).await;
        for ((slot, _, _), outcome) in batch.iter().zip(outcomes) {
            results[*slot] = Some(outcome);
        }
        let timeout = Duration::from_secs(args.ask_timeout_secs);
        for (slot, (call, input)) in calls.iter().zip(inputs).enumerate() {
            if let (true, Ok(input)) = (call.name == AGENTS_ASK, input) {
                results[slot] = Some(ask_agent(cx, token, input, timeout).await);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ToolError::invalid_input("no call"))))
            .collect()
    }

    /// Runs the calls of the turn's last answer that have no result yet, and notes what
    /// each tells the model; the approvals some still wait for are returned.
    async fn run_pending_calls(
        cx: &mut Context<'_, Self>,
        args: &AssistantArgs,
        token: &Capability,
        turn: &mut TurnSoFar,
    ) -> Vec<String> {
        let calls: Vec<ToolCall> = turn
            .messages
            .last()
            .map(|m| m.tool_calls.clone())
            .unwrap_or_default();
        turn.results.resize(calls.len(), None);
        let open: Vec<usize> = (0..calls.len())
            .filter(|&i| turn.results[i].is_none())
            .collect();
        let asked: Vec<&ToolCall> = open.iter().map(|&i| &calls[i]).collect();
        let outcomes = Self::run_tool_calls(cx, args, token, &asked).await;
        let mut waiting = Vec::new();
        for (i, outcome) in open.into_iter().zip(outcomes) {
            match outcome.as_ref().err().and_then(ToolError::pending_approval) {
                Some(approval) => waiting.push(approval.to_owned()),
                None => turn.results[i] = Some(tool_result_text(outcome)),
            }
        }
        waiting
    }

    /// Goes on with a turn: model call, tool calls, until a final answer, `max_steps`,
    /// or a tool call that waits for a human decision (then the turn is kept waiting).
    async fn go_on(
        cx: &mut Context<'_, Self>,
        state: &mut AssistantState,
        mut turn: TurnSoFar,
    ) -> Result<TurnAnswer, AgentError> {
        let (args, token) = (state.args.clone(), state.token.clone());
        let tools = Self::offered_tools(cx, &args);
        let mut stopped = Some("max_steps".to_owned());
        loop {
            if !turn.results.is_empty() {
                let waiting = Self::run_pending_calls(cx, &args, &token, &mut turn).await;
                if !waiting.is_empty() {
                    let answer = TurnAnswer {
                        answer: turn.answer.clone(),
                        steps: turn.steps,
                        stopped: Some("approval".to_owned()),
                        usage: turn.usage,
                        approvals: waiting.clone(),
                    };
                    if let Some(host) = cx.extension::<super::ModelHost>()
                        && !cx.is_replaying()
                    {
                        let approvals = waiting.clone();
                        host.notify(cx.id().as_str(), TurnEvent::AwaitingApproval { approvals });
                    }
                    state.history.waiting = Some(WaitingTurn {
                        messages: turn.messages,
                        results: turn.results,
                        approvals: waiting,
                        steps: turn.steps,
                        usage: turn.usage,
                    });
                    return Ok(answer);
                }
                let calls: Vec<ToolCall> = turn
                    .messages
                    .last()
                    .map(|m| m.tool_calls.clone())
                    .unwrap_or_default();
                for (call, text) in calls.into_iter().zip(std::mem::take(&mut turn.results)) {
                    turn.messages
                        .push(ChatMessage::tool_result(call.id, text.unwrap_or_default()));
                }
            }
            if turn.steps >= args.max_steps {
                break;
            }
            turn.steps += 1;
            let request = Self::request(&args, &state.history, &turn.messages, &tools);
            let response = cx
                .call_model(&args.model, &token, &request)
                .await
                .map_err(|e| AgentError::msg(format!("model {}: {e}", args.model)))?;
            turn.usage.input_tokens += response.usage.input_tokens;
            turn.usage.output_tokens += response.usage.output_tokens;
            turn.answer.clone_from(&response.content);
            let calls = response.tool_calls.len();
            turn.messages.push(ChatMessage::assistant(
                response.content,
                response.tool_calls,
            ));
            if calls == 0 {
                stopped = None;
                break;
            }
            turn.results = vec![None; calls];
        }
        state.history.turns.push_back(turn.messages);
        let mut usage = turn.usage;
        Self::compact(cx, &args, &token, &mut state.history, &mut usage).await?;
        Ok(TurnAnswer {
            answer: turn.answer,
            steps: turn.steps,
            stopped,
            usage,
            approvals: Vec::new(),
        })
    }

    /// Applies the history policy after a turn: the turns that leave are dropped or, for
    /// a summarising policy, folded into the summary by one model call.
    async fn compact(
        cx: &mut Context<'_, Self>,
        args: &AssistantArgs,
        token: &Capability,
        history: &mut History,
        usage: &mut Usage,
    ) -> Result<(), AgentError> {
        let leaving = args.history.leaving(&history.turns);
        if leaving == 0 {
            return Ok(());
        }
        let left: Vec<Vec<ChatMessage>> = history.turns.drain(..leaving).collect();
        if !args.history.summarize {
            return Ok(());
        }
        let mut text = String::new();
        if let Some(summary) = &history.summary {
            text.push_str("Earlier summary:\n");
            text.push_str(summary);
            text.push_str("\n\n");
        }
        for message in left.iter().flatten() {
            text.push_str(message.role.as_str());
            text.push_str(": ");
            text.push_str(&message.content);
            for call in &message.tool_calls {
                text.push_str(&format!(" [calls {} with {}]", call.name, call.arguments));
            }
            text.push('\n');
        }
        let request = ModelRequest {
            messages: vec![ChatMessage::system(SUMMARY_PROMPT), ChatMessage::user(text)],
            ..ModelRequest::default()
        };
        let response = cx
            .call_model(&args.model, token, &request)
            .await
            .map_err(|e| AgentError::msg(format!("model {} (summary): {e}", args.model)))?;
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;
        history.summary = Some(response.content);
        Ok(())
    }
}

/// A turn in progress.
#[derive(Default)]
struct TurnSoFar {
    /// Its messages, from the user's on.
    messages: Vec<ChatMessage>,
    /// For the calls of the last answer: what each told the model (`None`: not run yet).
    /// Empty when the last message is not an answer that called tools.
    results: Vec<Option<String>>,
    steps: u32,
    usage: Usage,
    /// The model's last text.
    answer: String,
}

/// What a tool call's outcome tells the model.
fn tool_result_text(outcome: Result<Value, ToolError>) -> String {
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
    type Msg = AssistantMsg;
    type Reply = TurnAnswer;
    type State = AssistantState;

    fn init(&self, args: &AssistantArgs) -> Result<AssistantState, AgentError> {
        if args.max_steps == 0 {
            return Err(AgentError::msg("max_steps must be at least 1"));
        }
        if args.history.keep_turns == Some(0) {
            return Err(AgentError::msg("history.keep_turns must be at least 1"));
        }
        Ok(AssistantState {
            args: args.clone(),
            token: self.capability(&args.token)?,
            history: History::default(),
        })
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        state: &mut AssistantState,
        msg: AssistantMsg,
    ) -> Result<TurnAnswer, AgentError> {
        match msg {
            AssistantMsg::Turn(turn) => {
                if let Some(waiting) = &state.history.waiting {
                    return Ok(TurnAnswer::stopped("busy", waiting.approvals.clone()));
                }
                let turn = TurnSoFar {
                    messages: vec![ChatMessage::user(turn.user)],
                    ..TurnSoFar::default()
                };
                Self::go_on(cx, state, turn).await
            }
            AssistantMsg::Approval(news) => {
                let Some(mut waiting) = state.history.waiting.take() else {
                    return Ok(TurnAnswer::stopped("ignored", Vec::new()));
                };
                if !waiting.approvals.contains(&news.approval) {
                    state.history.waiting = Some(waiting);
                    return Ok(TurnAnswer::stopped("ignored", Vec::new()));
                }
                waiting.approvals.retain(|a| *a != news.approval);
                if !waiting.approvals.is_empty() {
                    let approvals = waiting.approvals.clone();
                    state.history.waiting = Some(waiting);
                    return Ok(TurnAnswer::stopped("approval", approvals));
                }
                let answer = waiting
                    .messages
                    .last()
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                let turn = TurnSoFar {
                    messages: waiting.messages,
                    results: waiting.results,
                    steps: waiting.steps,
                    usage: waiting.usage,
                    answer,
                };
                Self::go_on(cx, state, turn).await
            }
        }
    }

    fn snapshot(&self, state: &AssistantState) -> Option<Vec<u8>> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        postcard::to_io(&state.history, &mut bytes).ok()?;
        Some(bytes)
    }

    fn restore(&self, args: &AssistantArgs, snapshot: &[u8]) -> Result<AssistantState, AgentError> {
        let decoded = match snapshot.strip_prefix(SNAPSHOT_MAGIC) {
            Some(history) => postcard::from_bytes(history),
            // The first format: the kept turns alone.
            None => postcard::from_bytes(snapshot).map(|turns| History {
                turns,
                ..History::default()
            }),
        };
        let history = decoded
            .map_err(|e| AgentError::msg(format!("an assistant snapshot does not decode: {e}")))?;
        Ok(AssistantState {
            history,
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
