//! Agents as tools: [`AGENTS_ASK`] lets an assistant's model ask another agent (another
//! assistant, or any agent that answers JSON), for delegation and teams.
//!
//! The call is capability-checked as the tool `agents.ask.<ID>`, where `ID` is the agent
//! asked, and the caller is the asking agent (as for every tool call): a token attenuated
//! with `tool = agents.ask.researcher` lets its holder ask `researcher` and no one else,
//! `tool = agents.ask.team.*` any agent whose id starts with `team.`, and `agent = lead`
//! still binds the token to the asking agent `lead`. (The asked agent is part of the
//! tool's name rather than an `agent` caveat because `agent` names the *caller* of a tool
//! or model call: a token scoped to one target that way could not call its own model.)
//! The check's decision is journaled (a denial is audited once, and a re-run after a
//! crash sees the same decision), and the ask itself is journaled as
//! [`Context::ask_json`] journals it: delivered once, its reply recorded and reused.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use toka_actors::{Agent, AgentId, Context, OnDoubt};

use super::{ModelHost, ModelTool};
use crate::capability::DenialRecord;
use crate::caveat::{self, Request};
use crate::{Authority, Capability, ToolError, ToolErrorKind, ToolHost};

/// The tool name under which an assistant offers its model to ask another agent.
pub const AGENTS_ASK: &str = "agents.ask";

/// What the model gives [`AGENTS_ASK`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskInput {
    /// The id of the agent to ask.
    agent: String,
    /// The message, as the asked agent's kind takes it as JSON.
    message: Value,
}

/// [`AGENTS_ASK`] as the model sees it.
pub fn agents_ask_tool() -> ModelTool {
    let schema = json!({
        "type": "object",
        "properties": {
            "agent": {"type": "string", "description": "The id of the agent to ask."},
            "message": {
                "description": "The message to send, as that agent takes it; an assistant \
                                takes {\"user\": \"<question>\"}."
            }
        },
        "required": ["agent", "message"],
        "additionalProperties": false
    });
    ModelTool {
        name: AGENTS_ASK.to_owned(),
        description: "Ask another agent and get its reply (for an assistant: its answer)."
            .to_owned(),
        parameters: schema.to_string(),
    }
}

/// The authority that checks tokens: the tool host's, else the model host's.
fn authority<A: Agent>(cx: &Context<'_, A>) -> Option<Authority> {
    cx.extension::<ToolHost>()
        .map(|host| host.authority().clone())
        .or_else(|| {
            cx.extension::<ModelHost>()
                .map(|host| host.authority().clone())
        })
}

/// Asks the agent named in `input` (an [`AGENTS_ASK`] call), holding `token`, waiting up
/// to `timeout` for its reply.
///
/// # Errors
/// [`ToolErrorKind::InvalidInput`] for input that is not `{"agent", "message"}`, an
/// invalid id, or the caller itself; [`ToolErrorKind::Denied`];
/// [`ToolErrorKind::Failed`] if the asked agent failed, is unknown or did not take the
/// message; [`ToolErrorKind::Timeout`]; [`ToolErrorKind::Unavailable`].
pub(crate) async fn ask_agent<A: Agent>(
    cx: &mut Context<'_, A>,
    token: &Capability,
    input: Value,
    timeout: Duration,
) -> Result<Value, ToolError> {
    let input: AskInput = serde_json::from_value(input)
        .map_err(|e| ToolError::invalid_input(format!("{AGENTS_ASK}: {e}")))?;
    let target = AgentId::new(&input.agent)
        .map_err(|e| ToolError::invalid_input(format!("{AGENTS_ASK}: {e}")))?;
    if &target == cx.id() {
        return Err(ToolError::invalid_input(format!(
            "{AGENTS_ASK}: an agent cannot ask itself (it is busy with this turn)"
        )));
    }
    let authority = authority(cx).ok_or_else(|| {
        ToolError::new(
            ToolErrorKind::Unavailable,
            "no ToolHost or ModelHost to check tokens with",
        )
    })?;
    let caller = cx.id().as_str().to_owned();
    let decision = cx
        .effect(
            &format!("{AGENTS_ASK}:check"),
            OnDoubt::RetryUnsynced,
            || async {
                let tool = format!("{AGENTS_ASK}.{target}");
                let request = Request {
                    tool: &tool,
                    agent: Some(&caller),
                    path: None,
                    bytes: None,
                    now: Timestamp::now(),
                    model: None,
                };
                let checked = authority
                    .verify(token)
                    .and_then(|caveats| caveat::admit_all(&caveats, &request));
                Ok(match checked {
                    Ok(_) => None,
                    Err(denial) => {
                        authority
                            .audit(DenialRecord {
                                at_micros: Timestamp::now().as_microsecond(),
                                tool,
                                agent: Some(caller),
                                token: Some(token.identifier().to_owned()),
                                reason: denial.reason.clone(),
                            })
                            .await;
                        Some(denial.reason)
                    }
                })
            },
        )
        .await
        .map_err(|e| ToolError::new(ToolErrorKind::Unavailable, format!("{AGENTS_ASK}: {e}")))?;
    if let Some(reason) = decision {
        return Err(ToolError::new(
            ToolErrorKind::Denied,
            format!("{AGENTS_ASK} {target}: {reason}"),
        ));
    }
    cx.ask_json(&target, input.message, timeout)
        .await
        .map_err(|e| {
            let kind = match e {
                toka_actors::Error::Timeout { .. } => ToolErrorKind::Timeout,
                toka_actors::Error::Journal(_) | toka_actors::Error::ShuttingDown => {
                    ToolErrorKind::Unavailable
                }
                _ => ToolErrorKind::Failed,
            };
            ToolError::new(kind, format!("{AGENTS_ASK} {target}: {e}"))
        })
}
