//! Tool calls from agents, journaled as effects: intent → result, exactly once.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toka_actors::{Agent, Context, Effect, OnDoubt};

use crate::capability::Capability;
use crate::host::{ToolHost, decode_output};
use crate::{ToolError, ToolErrorKind};

/// The recorded outcome of a call: the tool's JSON output, or its error.
type Outcome = Result<Vec<u8>, ToolError>;

/// Calling tools from an agent's handler.
///
/// Each call is an effect of the handling message (see
/// [`Context::effect_with_input`]): its intent (tool name and BLAKE3 digest of the input)
/// is journaled before the tool runs and its outcome (output or error, denials included)
/// after. A replay, or a re-handling after a crash, gets the recorded outcome and the
/// tool does not run again. If a crash fell between intent and outcome, a `pure`,
/// `read-only` or `idempotent` tool runs again; an `external` one does not, and the call
/// fails with [`ToolErrorKind::InDoubt`] (recorded, so every replay sees the same).
///
/// The runtime must have the [`ToolHost`] as an extension
/// ([`RuntimeBuilder::extension`](toka_actors::RuntimeBuilder::extension)).
pub trait ToolCalls {
    /// Calls tool `name` with `input`, holding `token`; the caller is this agent.
    ///
    /// # Errors
    /// The tool's [`ToolError`] (recorded); [`ToolErrorKind::InDoubt`];
    /// [`ToolErrorKind::Unavailable`] if there is no tool host or the journal failed.
    fn call_tool<I, O>(
        &mut self,
        name: &str,
        token: &Capability,
        input: &I,
    ) -> impl Future<Output = Result<O, ToolError>> + Send
    where
        I: Serialize + Sync,
        O: DeserializeOwned;

    /// Calls several tools **concurrently**, holding `token`, and returns their outputs in
    /// the order given: each call is journaled and settled exactly as [`call_tool`]
    /// settles one (see [`Context::effects`]), so use it for calls that do not depend on
    /// each other, such as the parallel tool calls of one model answer.
    ///
    /// [`call_tool`]: ToolCalls::call_tool
    fn call_tools(
        &mut self,
        token: &Capability,
        calls: &[(&str, &serde_json::Value)],
    ) -> impl Future<Output = Vec<Result<serde_json::Value, ToolError>>> + Send;
}

impl<A: Agent> ToolCalls for Context<'_, A> {
    async fn call_tool<I, O>(
        &mut self,
        name: &str,
        token: &Capability,
        input: &I,
    ) -> Result<O, ToolError>
    where
        I: Serialize + Sync,
        O: DeserializeOwned,
    {
        let host = tool_host(self)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| ToolError::invalid_input(format!("{name}: input: {e}")))?;
        let caller = self.id().as_str().to_owned();
        let planned = PlannedCall::new(&host, name, &input);
        let outcome = self
            .effect_with_input(name, Some(planned.digest), planned.on_doubt, || async {
                Ok::<Outcome, toka_actors::AgentError>(
                    host.call_json(token, Some(&caller), name, &input).await,
                )
            })
            .await;
        decode_output(name, &settle(name, outcome)?)
    }

    async fn call_tools(
        &mut self,
        token: &Capability,
        calls: &[(&str, &serde_json::Value)],
    ) -> Vec<Result<serde_json::Value, ToolError>> {
        let host = match tool_host(self) {
            Ok(host) => host,
            Err(error) => return calls.iter().map(|_| Err(error.clone())).collect(),
        };
        let caller = self.id().as_str().to_owned();
        let inputs: Vec<Vec<u8>> = calls
            .iter()
            .map(|(_, input)| input.to_string().into_bytes())
            .collect();
        let (host, caller) = (&host, caller.as_str());
        let effects = calls
            .iter()
            .zip(&inputs)
            .map(|(&(name, _), input)| {
                let planned = PlannedCall::new(host, name, input);
                Effect::new(name, planned.on_doubt, move || async move {
                    Ok::<Outcome, toka_actors::AgentError>(
                        host.call_json(token, Some(caller), name, input).await,
                    )
                })
                .with_input_digest(planned.digest)
            })
            .collect();
        let outcomes = self.effects(effects).await;
        calls
            .iter()
            .zip(outcomes)
            .map(|(&(name, _), outcome)| decode_output(name, &settle(name, outcome)?))
            .collect()
    }
}

/// The runtime's tool host.
fn tool_host<A: Agent>(cx: &Context<'_, A>) -> Result<std::sync::Arc<ToolHost>, ToolError> {
    cx.extension::<ToolHost>().ok_or_else(|| {
        ToolError::new(
            ToolErrorKind::Unavailable,
            "no ToolHost: add one with RuntimeBuilder::extension",
        )
    })
}

/// What the journal needs to know of a call before it runs.
struct PlannedCall {
    /// BLAKE3 of the input, written in the intent record.
    digest: [u8; 32],
    /// An `external` tool is never run twice; the others are safe to repeat.
    on_doubt: OnDoubt,
}

impl PlannedCall {
    fn new(host: &ToolHost, name: &str, input: &[u8]) -> Self {
        let on_doubt = match host.spec(name) {
            Some(spec) if !spec.side_effect.safe_to_repeat() => OnDoubt::Fail,
            _ => OnDoubt::Retry,
        };
        PlannedCall {
            digest: *blake3::hash(input).as_bytes(),
            on_doubt,
        }
    }
}

/// A call's recorded (or fresh) outcome as the tool's output bytes or its error.
fn settle(name: &str, outcome: Result<Outcome, toka_actors::Error>) -> Result<Vec<u8>, ToolError> {
    match outcome {
        Ok(outcome) => outcome,
        Err(toka_actors::Error::InDoubt { effect, .. }) => Err(ToolError::new(
            ToolErrorKind::InDoubt,
            format!(
                "{name}: a crash cut off call {effect:?} after it started; the tool has \
                 external side effects, so it was not run again"
            ),
        )),
        Err(other) => Err(ToolError::new(
            ToolErrorKind::Unavailable,
            format!("{name}: {other}"),
        )),
    }
}
