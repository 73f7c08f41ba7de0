//! Side effects run at most once across crashes and replays: [`Context::effect`], and
//! [`Context::effects`] for independent effects run concurrently.
//!
//! An effect's intent is journaled before it runs and its outcome after it ends; a replay,
//! or a re-run after a crash, returns the recorded outcome instead of running it again. If
//! a crash fell between intent and outcome, the effect's [`OnDoubt`] decides.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::record::{self, IntentRecord, Outcome, RecordKind, ReplyRecord, StepKind};
use crate::{Agent, AgentError, Context, EffectId, Error};

/// What to do with a side effect found *in doubt* on recovery: its intent was journaled
/// but not its outcome, so it may or may not have happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDoubt {
    /// Run it again: for effects that are safe to repeat (pure, read-only, idempotent).
    Retry,
    /// Run it again, and do not wait for its intent and outcome to be durable before going
    /// on: for steps with nothing to audit before they run and nothing lost by running
    /// again (a model call). The handling's reply still waits for both, and anything a
    /// later step makes durable comes after them in the log, so nobody acts on a step the
    /// journal could lose; a crash before then makes the step run again.
    RetryUnsynced,
    /// Do not: [`Context::effect`] returns [`Error::InDoubt`] and the journal records it.
    Fail,
}

impl OnDoubt {
    /// Whether the effect's records must be durable before the handler goes on.
    fn waits(self) -> bool {
        self != OnDoubt::RetryUnsynced
    }
}

/// One side effect of a batch run concurrently by [`Context::effects`].
#[derive(Debug)]
pub struct Effect<F> {
    name: String,
    input_digest: Option<[u8; 32]>,
    on_doubt: OnDoubt,
    run: F,
}

impl<F> Effect<F> {
    /// The effect `name`, run by `run`, handled as `on_doubt` says if a crash leaves it in
    /// doubt.
    pub fn new(name: impl Into<String>, on_doubt: OnDoubt, run: F) -> Self {
        Effect {
            name: name.into(),
            input_digest: None,
            on_doubt,
            run,
        }
    }

    /// With a digest of the effect's input written in its intent record (as
    /// [`Context::effect_with_input`]).
    #[must_use]
    pub fn with_input_digest(mut self, digest: [u8; 32]) -> Self {
        self.input_digest = Some(digest);
        self
    }
}

/// How an effect's start went: settled from the journal (or refused), or to be run.
enum Start<T> {
    Settled(Result<T, Error>),
    Run(EffectId),
}

fn failed(name: &str, reason: String) -> Error {
    Error::Effect {
        name: name.to_owned(),
        reason,
    }
}

impl<A: Agent> Context<'_, A> {
    /// Runs a side effect at most once across crashes and replays (the primitive tool
    /// calls are built on). The intent is journaled before `run` starts and its outcome
    /// after it ends; a replay, or a re-run after a crash, returns the recorded outcome
    /// instead of running it again. If a crash fell between intent and outcome, `on_doubt`
    /// decides: run again, or fail with [`Error::InDoubt`] (recorded, so every later
    /// replay sees the same).
    ///
    /// Transient agents journal nothing: `run` simply runs.
    ///
    /// # Errors
    /// [`Error::Effect`] if `run` failed (now or when recorded), [`Error::InDoubt`],
    /// [`Error::Encode`], [`Error::Journal`].
    pub async fn effect<T, F, Fut>(
        &mut self,
        name: &str,
        on_doubt: OnDoubt,
        run: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, AgentError>> + Send,
    {
        self.effect_with_input(name, None, on_doubt, run).await
    }

    /// [`Context::effect`], with a digest of the effect's input (e.g. BLAKE3 of a tool
    /// call's arguments) written in its intent record, so the journal shows what was
    /// about to be done, not only its name.
    ///
    /// # Errors
    /// As [`Context::effect`].
    pub async fn effect_with_input<T, F, Fut>(
        &mut self,
        name: &str,
        input_digest: Option<[u8; 32]>,
        on_doubt: OnDoubt,
        run: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, AgentError>> + Send,
    {
        let effect = match self.start_effect(name, input_digest, on_doubt).await? {
            Start::Settled(outcome) => return outcome,
            Start::Run(effect) => effect,
        };
        self.record_intent(effect, name, input_digest).await?;
        if on_doubt.waits() {
            self.core.sync_own().await?;
        }
        let outcome = run().await;
        self.record_outcome(effect, &outcome).await?;
        if on_doubt.waits() {
            self.core.sync_own().await?;
        }
        outcome.map_err(|e| failed(name, e.to_string()))
    }

    /// Runs independent side effects **concurrently**, each at most once across crashes
    /// and replays, and returns their outcomes in the order given.
    ///
    /// Each effect gets its own effect id, in the order given, exactly as if they were
    /// run one after another with [`Context::effect_with_input`]; so does everything a
    /// replay checks. Their intents are journaled (and made durable, unless every one is
    /// [`OnDoubt::RetryUnsynced`]) before any of them starts; each outcome is journaled
    /// as it arrives, and all are durable before this returns. After a crash each effect
    /// is settled on its own: a recorded outcome is reused, one in doubt follows its
    /// [`OnDoubt`], one never started runs.
    ///
    /// Transient agents journal nothing: the effects simply run, concurrently.
    ///
    /// # Errors
    /// Each outcome as [`Context::effect`]'s. A journal failure fails the effects not yet
    /// recorded.
    pub async fn effects<T, F, Fut>(&mut self, effects: Vec<Effect<F>>) -> Vec<Result<T, Error>>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<T, AgentError>> + Send,
    {
        let mut outcomes: Vec<Option<Result<T, Error>>> = std::iter::repeat_with(|| None)
            .take(effects.len())
            .collect();
        let mut to_run = Vec::new();
        let mut waits = false;
        for (slot, effect) in effects.into_iter().enumerate() {
            let started = self
                .start_effect(&effect.name, effect.input_digest, effect.on_doubt)
                .await;
            match started {
                Ok(Start::Settled(outcome)) => outcomes[slot] = Some(outcome),
                Err(error) => outcomes[slot] = Some(Err(error)),
                Ok(Start::Run(id)) => {
                    let recorded = self
                        .record_intent(id, &effect.name, effect.input_digest)
                        .await;
                    match recorded {
                        Ok(()) => {
                            waits |= effect.on_doubt.waits();
                            to_run.push((slot, id, effect));
                        }
                        Err(error) => outcomes[slot] = Some(Err(error)),
                    }
                }
            }
        }
        let synced = if waits {
            self.core.sync_own().await
        } else {
            Ok(())
        };
        if let Err(error) = synced {
            // Nothing ran: an intent that is not durable must not be acted on.
            let reason = error.to_string();
            for (slot, _, effect) in to_run {
                outcomes[slot] = Some(Err(failed(&effect.name, reason.clone())));
            }
        } else {
            let mut running: FuturesUnordered<_> = to_run
                .into_iter()
                .map(|(slot, id, effect)| async move {
                    let outcome = (effect.run)().await;
                    (slot, id, effect.name, outcome)
                })
                .collect();
            while let Some((slot, id, name, outcome)) = running.next().await {
                outcomes[slot] = Some(match self.record_outcome(id, &outcome).await {
                    Ok(()) => outcome.map_err(|e| failed(&name, e.to_string())),
                    Err(error) => Err(error),
                });
            }
            if waits && let Err(error) = self.core.sync_own().await {
                let reason = error.to_string();
                for outcome in &mut outcomes {
                    if matches!(outcome, Some(Ok(_))) {
                        *outcome = Some(Err(failed("a batch of effects", reason.clone())));
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::Internal("an effect got no outcome".into()))))
            .collect()
    }

    /// Takes effect `name`'s next id and settles it from the journal if it can: the
    /// recorded outcome, a mismatch with what the journal recorded there, or (in doubt
    /// and not to be retried) [`Error::InDoubt`], recorded. Otherwise it is to be run.
    async fn start_effect<T: DeserializeOwned>(
        &mut self,
        name: &str,
        input_digest: Option<[u8; 32]>,
        on_doubt: OnDoubt,
    ) -> Result<Start<T>, Error> {
        let effect = self.outward(StepKind::Effect, name, || {
            Ok(input_digest.as_ref().map_or(&[][..], |d| &d[..]))
        })?;
        // The journal says what this effect id was; a handler that now does something
        // else at the same point must not be handed that outcome, nor run an effect in
        // doubt as if it were the recorded one.
        let recorded_intent =
            (self.core.recorded.as_deref_mut()).and_then(|r| r.intents.remove(&effect));
        if let Some(intent) = &recorded_intent
            && (intent.name != name || intent.input_digest != input_digest)
        {
            return Ok(Start::Settled(Err(failed(
                name,
                format!(
                    "not deterministic: the journal recorded effect {:?} as {:?} with another \
                     input; this handling does {name:?} there",
                    effect, intent.name
                ),
            ))));
        }
        if let Some(recorded) =
            (self.core.recorded.as_deref_mut()).and_then(|r| r.replies.remove(&effect))
        {
            return Ok(Start::Settled(match recorded {
                Outcome::Value(body) => record::decode(self.core.id.stream(), effect.seq, &body),
                Outcome::InDoubt => Err(Error::InDoubt {
                    name: name.to_owned(),
                    effect,
                }),
                Outcome::Failed(reason) => Err(failed(name, reason)),
            }));
        }
        if self.core.durable && recorded_intent.is_some() && on_doubt == OnDoubt::Fail {
            tracing::warn!(agent = %self.core.id, name, ?effect, "side effect in doubt; not run again");
            let payload = record::encode(
                "an effect outcome",
                &ReplyRecord {
                    effect,
                    outcome: Outcome::InDoubt,
                },
            )?;
            self.core.append_own(RecordKind::Result, payload).await?;
            return Ok(Start::Settled(Err(Error::InDoubt {
                name: name.to_owned(),
                effect,
            })));
        }
        Ok(Start::Run(effect))
    }

    /// Journals an effect's intent (durable agents), not waiting for it to be durable.
    async fn record_intent(
        &mut self,
        effect: EffectId,
        name: &str,
        input_digest: Option<[u8; 32]>,
    ) -> Result<(), Error> {
        if !self.core.durable {
            return Ok(());
        }
        let intent = record::encode(
            "an effect intent",
            &IntentRecord {
                effect,
                name: name.to_owned(),
                input_digest,
            },
        )?;
        self.core
            .append_own_unsynced(RecordKind::Intent, intent)
            .await
    }

    /// Journals an effect's outcome (durable agents), not waiting for it to be durable.
    async fn record_outcome<T: Serialize>(
        &mut self,
        effect: EffectId,
        outcome: &Result<T, AgentError>,
    ) -> Result<(), Error> {
        if !self.core.durable {
            return Ok(());
        }
        let recorded = match outcome {
            Ok(value) => Outcome::Value(record::encode("an effect outcome", value)?),
            Err(error) => Outcome::Failed(error.to_string()),
        };
        let payload = record::encode(
            "an effect outcome",
            &ReplyRecord {
                effect,
                outcome: recorded,
            },
        )?;
        self.core
            .append_own_unsynced(RecordKind::Result, payload)
            .await
    }
}
