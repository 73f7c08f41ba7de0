//! Tool calls from agents, journaled as effects: intent → result, exactly once.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toka_actors::{Agent, Context, OnDoubt};

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
        let host = self.extension::<ToolHost>().ok_or_else(|| {
            ToolError::new(
                ToolErrorKind::Unavailable,
                "no ToolHost: add one with RuntimeBuilder::extension",
            )
        })?;
        let input = serde_json::to_vec(input)
            .map_err(|e| ToolError::invalid_input(format!("{name}: input: {e}")))?;
        let digest = *blake3::hash(&input).as_bytes();
        let on_doubt = match host.spec(name) {
            Some(spec) if !spec.side_effect.safe_to_repeat() => OnDoubt::Fail,
            _ => OnDoubt::Retry,
        };
        let caller = self.id().as_str().to_owned();
        let outcome = self
            .effect_with_input(name, Some(digest), on_doubt, || async {
                Ok::<Outcome, toka_actors::AgentError>(
                    host.call_json(token, Some(&caller), name, &input).await,
                )
            })
            .await;
        let output = match outcome {
            Ok(outcome) => outcome?,
            Err(toka_actors::Error::InDoubt { effect, .. }) => {
                return Err(ToolError::new(
                    ToolErrorKind::InDoubt,
                    format!(
                        "{name}: a crash cut off call {effect:?} after it started; the tool \
                         has external side effects, so it was not run again"
                    ),
                ));
            }
            Err(other) => {
                return Err(ToolError::new(
                    ToolErrorKind::Unavailable,
                    format!("{name}: {other}"),
                ));
            }
        };
        decode_output(name, &output)
    }
}
