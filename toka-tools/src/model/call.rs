//! Model calls from agents, journaled as effects: the model is never asked twice for the
//! same step.

use std::future::Future;

use toka_actors::{Agent, Context, OnDoubt};

use super::{ModelHost, ModelRequest, ModelResponse};
use crate::{Capability, ToolError, ToolErrorKind};

/// The recorded outcome of a model call.
type Outcome = Result<ModelResponse, ToolError>;

/// Calling models from an agent's handler.
///
/// Each call is an effect of the handling message (see
/// [`Context::effect_with_input`]): its intent (the model's name and the BLAKE3 digest of
/// the request) is journaled before the model is asked, and the complete answer (text,
/// tool calls, usage), or the error, after. A replay, or a re-handling after a crash,
/// returns the recorded answer: the model is not asked again. A call cut off by a crash
/// between intent and answer had no outward effect, so it is asked again, and the first
/// complete answer is the one recorded. Neither record is waited for before the handler
/// goes on ([`OnDoubt::RetryUnsynced`]): the handling's reply waits for both, so a turn of
/// several model calls pays for one flush, not two per call.
///
/// The runtime must have the [`ModelHost`] as an extension
/// ([`RuntimeBuilder::extension`](toka_actors::RuntimeBuilder::extension)).
pub trait ModelCalls {
    /// Asks configured model `model`, holding `token`; the caller is this agent.
    ///
    /// # Errors
    /// As [`ModelHost::complete`] (recorded); [`ToolErrorKind::Unavailable`] if there is
    /// no model host or the journal failed.
    fn call_model(
        &mut self,
        model: &str,
        token: &Capability,
        request: &ModelRequest,
    ) -> impl Future<Output = Result<ModelResponse, ToolError>> + Send;
}

impl<A: Agent> ModelCalls for Context<'_, A> {
    async fn call_model(
        &mut self,
        model: &str,
        token: &Capability,
        request: &ModelRequest,
    ) -> Result<ModelResponse, ToolError> {
        let host = self.extension::<ModelHost>().ok_or_else(|| {
            ToolError::new(
                ToolErrorKind::Unavailable,
                "no ModelHost: add one with RuntimeBuilder::extension",
            )
        })?;
        let caller = self.id().as_str().to_owned();
        let name = format!("model:{model}");
        let outcome = self
            .effect_with_input(
                &name,
                Some(request.digest()),
                OnDoubt::RetryUnsynced,
                || async {
                    Ok::<Outcome, toka_actors::AgentError>(
                        host.complete(token, Some(&caller), model, request).await,
                    )
                },
            )
            .await;
        match outcome {
            Ok(outcome) => outcome,
            Err(other) => Err(ToolError::new(
                ToolErrorKind::Unavailable,
                format!("{name}: {other}"),
            )),
        }
    }
}
