//! The runtime's side of one running agent ([`Core`]): its identity and settings, where
//! it is in its stream, its timers, watermarks and subscriptions, its children, and the
//! bookkeeping of the handling in progress (the outward steps it made, or, replaying,
//! what the journal recorded for them). The agent actor owns it; a handler reaches it
//! through its [`Context`](crate::Context).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use toka_store::Timestamp;
use tokio::task::AbortHandle;

use crate::children::Children;
use crate::delivery::LastTarget;
use crate::envelope::Envelope;
use crate::kernel::Kernel;
use crate::progress::HandledCell;
use crate::record::{self, DeadRecord, RecordKind, Step, StepKind, StepsRecord, TimerRecord};
use crate::recovery::Recorded;
use crate::writer::Routing;
use crate::{Agent, AgentId, EffectId, Error, TimerId};

/// A steps record larger than this keeps only its count and digest.
const MAX_STEPS_RECORD_BYTES: usize = 8 * 1024;

/// Converts a topic message into the agent's message type.
pub(crate) type TopicDecoder<M> = fn(&[u8]) -> Result<M, postcard::Error>;

/// The runtime's side of an agent.
pub(crate) struct Core<A: Agent> {
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) id: AgentId,
    pub(crate) durable: bool,
    pub(crate) myself: ActorRef<Envelope>,
    pub(crate) args: A::Args,
    pub(crate) snapshot_every: u64,
    pub(crate) max_attempts: u32,
    /// Where this incarnation begins in the agent's stream: the records at or below it
    /// are earlier incarnations' (see [`record`]); the seq of effects made at start.
    pub(crate) base: u64,
    /// Last stream sequence number dealt with (at least `base`).
    pub(crate) applied: u64,
    pub(crate) handled: Option<HandledCell>,
    /// Per sender, the newest effect handled from it; `None` until a message from an
    /// agent is handled (boxed: most agents are sent to from outside, or not at all).
    // The box is deliberate: `None` takes 8 bytes in every idle agent, an empty map 48.
    #[allow(clippy::box_collection)]
    pub(crate) watermarks: Option<Box<HashMap<AgentId, EffectId>>>,
    /// Own records, timers and subscriptions: `None` until the agent has any (see
    /// [`Extras`]).
    pub(crate) extras: Option<Box<Extras<A>>>,
    /// While recovering: what the journal recorded of the handlings being replayed.
    /// `None` otherwise (boxed: most of an agent's life has nothing recorded to keep).
    pub(crate) recorded: Option<Box<Recorded>>,
    /// The transient agent this agent last sent to, reached again without the directory
    /// (boxed: most agents never send).
    pub(crate) last_target: Option<Box<LastTarget>>,
    /// The outward steps of the handling in progress.
    pub(crate) steps: Vec<Step>,
    /// Whether the message being replayed was journaled in a format whose handlings
    /// record their steps (2 on); format 1 messages replay unchecked.
    pub(crate) steps_recorded: bool,
    /// A replay that did not match the journal: the agent stops with it (boxed: rare,
    /// and an error is large).
    pub(crate) halt: Option<Box<Error>>,
    pub(crate) since_snapshot: u64,
    /// The last position of an own record appended without waiting for durability
    /// (0: none pending); the handling's reply waits for it ([`Core::sync_own`]).
    pub(crate) unsynced: u64,
    pub(crate) children: Children,
    /// Whether the tree recorded children for the agent when it started (a newly spawned
    /// agent has none, and does not look).
    pub(crate) start_children: bool,
}

/// The parts of a [`Core`] that many agents never use, allocated on first use: the core
/// is kept inline in the agent's task by ractor, so every byte here would be paid by every
/// idle agent (see `ARCHITECTURE.md`, "An idle agent's size is paid once per agent").
pub(crate) struct Extras<A: Agent> {
    /// Sequence numbers of this agent's own records not yet passed by `applied`.
    pub(crate) own: BTreeSet<u64>,
    pub(crate) timers: BTreeMap<TimerId, TimerRecord>,
    // B-trees, not hash maps: empty, they are smaller (no hasher state), and most agents
    // never arm a timer or subscribe.
    pub(crate) timer_tasks: BTreeMap<TimerId, AbortHandle>,
    pub(crate) subscriptions: BTreeMap<String, TopicDecoder<A::Msg>>,
}

impl<A: Agent> Default for Extras<A> {
    fn default() -> Self {
        Extras {
            own: BTreeSet::new(),
            timers: BTreeMap::new(),
            timer_tasks: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
        }
    }
}

impl<A: Agent> Core<A> {
    /// The [`Extras`], allocated if the agent had none.
    pub(crate) fn extras_mut(&mut self) -> &mut Extras<A> {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Whether `seq` is one of the agent's own records not yet passed.
    pub(crate) fn is_own(&self, seq: u64) -> bool {
        self.extras.as_ref().is_some_and(|e| e.own.contains(&seq))
    }

    /// Pending timer `id`, if any.
    pub(crate) fn timer(&self, id: &TimerId) -> Option<&TimerRecord> {
        self.extras.as_ref().and_then(|e| e.timers.get(id))
    }

    /// Removes pending timer `id` (aborting its task); whether it was pending.
    pub(crate) fn remove_timer(&mut self, id: &TimerId) -> bool {
        let Some(extras) = self.extras.as_mut() else {
            return false;
        };
        if let Some(task) = extras.timer_tasks.remove(id) {
            task.abort();
        }
        extras.timers.remove(id).is_some()
    }

    /// The decoder of `topic`'s messages, if the agent subscribed to it.
    pub(crate) fn subscription(&self, topic: &str) -> Option<TopicDecoder<A::Msg>> {
        self.extras
            .as_ref()
            .and_then(|e| e.subscriptions.get(topic).copied())
    }

    /// Appends one of the agent's own records (not delivered) and waits until durable
    /// (which makes every earlier append durable too: the log is flushed as a prefix).
    pub(crate) async fn append_own(
        &mut self,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        self.append_own_unsynced(kind, payload).await?;
        self.sync_own().await
    }

    /// Appends one of the agent's own records without waiting for it to be durable: for
    /// records whose loss in a crash only makes the step run again (the intent and outcome
    /// of an [`OnDoubt::RetryUnsynced`](crate::OnDoubt::RetryUnsynced) effect). The
    /// handling's reply waits for them ([`Core::sync_own`]), and anything a later step
    /// makes durable comes after them in the log, so nobody ever acts on a step the journal
    /// could lose.
    pub(crate) async fn append_own_unsynced(
        &mut self,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        let appended = self
            .kernel
            .append(&self.id, kind, payload, Routing::Own)
            .await?;
        self.extras_mut().own.insert(appended.first_seq);
        self.unsynced = self.unsynced.max(appended.last_position);
        Ok(())
    }

    /// Waits until every own record appended so far is durable.
    pub(crate) async fn sync_own(&mut self) -> Result<(), Error> {
        let position = std::mem::take(&mut self.unsynced);
        if position > 0 {
            self.kernel.wait_durable(position).await?;
        }
        Ok(())
    }

    /// Notes that one of the agent's own records, not waited for, was appended at `seq`.
    pub(crate) fn own_appended(&mut self, seq: u64) {
        if seq > self.applied {
            self.extras_mut().own.insert(seq);
        }
    }

    /// Subscribes to `topic`, decoding its messages with `decode`.
    pub(crate) fn subscribe(&mut self, topic: &str, decode: TopicDecoder<A::Msg>) {
        self.extras_mut()
            .subscriptions
            .insert(topic.to_owned(), decode);
        self.kernel.directory.subscribe(topic, &self.id);
    }

    /// Adds a pending timer, arming it when `arm`.
    pub(crate) fn pending_timer(&mut self, timer: TimerRecord, arm: bool) {
        let id = timer.id;
        let due = timer.due_micros;
        self.extras_mut().timers.insert(id, timer);
        if arm {
            self.arm(id, due);
        }
    }

    /// Arms timer `id` to come due at `due_micros`.
    pub(crate) fn arm(&mut self, id: TimerId, due_micros: u64) {
        let delay = Duration::from_micros(due_micros.saturating_sub(Timestamp::now().as_micros()));
        let myself = self.myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = myself.send_message(Envelope::TimerDue(id));
        });
        if let Some(old) = self
            .extras_mut()
            .timer_tasks
            .insert(id, task.abort_handle())
        {
            old.abort();
        }
    }

    /// Marks message `seq` handled.
    pub(crate) fn mark_handled(&mut self, seq: u64) {
        if let Some(cell) = &self.handled {
            cell.mark(seq, &self.kernel.progress);
        }
    }

    /// Records message `seq` as dead (after `attempts` failures) and skips it.
    pub(crate) async fn dead_letter(
        &mut self,
        seq: u64,
        attempts: u32,
        error: String,
    ) -> Result<(), Error> {
        tracing::warn!(agent = %self.id, seq, attempts, %error, "message dead-lettered");
        let payload = record::encode(
            "a dead letter",
            &DeadRecord {
                seq,
                attempts,
                error,
            },
        )?;
        self.append_own(RecordKind::Dead, payload).await?;
        self.mark_handled(seq);
        if let Some(port) = self.kernel.directory.take_ask(&self.id, seq) {
            let _ = port.send(Err(Error::Handler {
                id: self.id.clone(),
                reason: format!("dead-lettered after {attempts} failed attempts"),
            }));
        }
        Ok(())
    }

    /// Moves `applied` past this agent's own records.
    pub(crate) fn skip_own(&mut self) {
        let Some(extras) = self.extras.as_mut() else {
            return;
        };
        while extras.own.remove(&(self.applied + 1)) {
            self.applied += 1;
        }
    }

    /// Checks outward step `n` of the handling of message `seq` (durable agents). The
    /// step is noted either way: live, to be journaled with the handling
    /// ([`Core::record_steps`]); replaying a message whose handling recorded its steps,
    /// to compare as a whole at the end. A step recorded in full must be the one made now:
    /// if not, the agent halts with [`Error::NonDeterministic`].
    pub(crate) fn check_step(
        &mut self,
        seq: u64,
        n: u32,
        replaying: bool,
        step: Step,
    ) -> Result<(), Error> {
        if !self.durable {
            return Ok(());
        }
        if !replaying {
            self.steps.push(step);
            return Ok(());
        }
        if !self.steps_recorded {
            // Journaled before handlings recorded their steps (record format 1).
            return Ok(());
        }
        let record = self.recorded.as_deref().and_then(|r| r.steps.get(&seq));
        let recorded = record.and_then(|r| r.steps.get(n as usize - 1));
        let beyond_kept = record.is_some_and(|r| n as usize > r.steps.len() && n <= r.total);
        if recorded == Some(&step) || beyond_kept {
            self.steps.push(step);
            return Ok(());
        }
        let recorded = recorded.map_or_else(
            || "no such step (the handling ended before it)".to_owned(),
            Step::to_string,
        );
        Err(self.halt_with(seq, n, recorded, step.to_string()))
    }

    /// After replaying message `seq`, which made `made` steps: a recorded step it did not
    /// make is non-determinism too, and so are steps past those kept in full that do not
    /// match the record's digest of them all.
    pub(crate) fn check_replay_complete(&mut self, seq: u64, made: u32) {
        let steps = std::mem::take(&mut self.steps);
        if !self.durable || !self.steps_recorded {
            return;
        }
        let Some(record) = self.recorded.as_deref().and_then(|r| r.steps.get(&seq)) else {
            return;
        };
        let (total, kept, all) = (record.total, record.steps.len(), record.all);
        let next = record.steps.get(made as usize).map(Step::to_string);
        if made < total {
            let recorded = next.unwrap_or_else(|| {
                format!(
                    "step {} of {total} (past the first {kept}, not kept)",
                    made + 1
                )
            });
            let now = "nothing: the handling ended".to_owned();
            let _ = self.halt_with(seq, made + 1, recorded, now);
        } else if made == total && record::steps_digest(&steps) != all {
            let recorded = format!("{total} steps whose digest is {all:016x}");
            let now =
                format!("{made} steps whose digest differs, past the first {kept} kept in full");
            let _ = self.halt_with(
                seq,
                u32::try_from(kept).unwrap_or(u32::MAX) + 1,
                recorded,
                now,
            );
        }
    }

    fn halt_with(&mut self, seq: u64, step: u32, recorded: String, now: String) -> Error {
        let id = self.id.clone();
        let make = || Error::NonDeterministic {
            id: id.clone(),
            seq,
            step,
            recorded: recorded.clone(),
            now: now.clone(),
        };
        if self.halt.is_none() {
            tracing::error!(agent = %id, seq, step, %recorded, %now, "replay does not match the journal");
            self.halt = Some(Box::new(make()));
        }
        make()
    }

    /// Journals the steps of the live handling of message `seq`, if it made any, before
    /// the message is marked handled (so a replay finds them). Not waited for: the
    /// writer records progress only behind the appends queued before it read the handled
    /// counters (see `WriterMsg::WriteProgress`), so a message is never recorded handled
    /// without its steps.
    pub(crate) fn record_steps(&mut self, seq: u64) -> Result<(), Error> {
        if self.steps.is_empty() {
            return Ok(());
        }
        let mut steps = std::mem::take(&mut self.steps);
        let total = u32::try_from(steps.len()).unwrap_or(u32::MAX);
        let all = record::steps_digest(&steps);
        steps.truncate(record::MAX_KEPT_STEPS);
        let record = StepsRecord {
            seq,
            steps,
            total,
            all,
        };
        let mut payload = record::encode("a steps record", &record)?;
        if payload.len() > MAX_STEPS_RECORD_BYTES {
            // Long targets: keep only the count and the digest, which still catch a change
            // (journals may be configured with small records).
            let record = StepsRecord {
                steps: Vec::new(),
                ..record
            };
            payload = record::encode("a steps record", &record)?;
        }
        self.kernel
            .append_detached(&self.id, RecordKind::Steps, payload)
    }
}

/// A step's description: its kind, target and a digest of its content.
pub(crate) fn step(kind: StepKind, target: &str, content: &[u8]) -> Step {
    Step {
        kind,
        target: target.to_owned(),
        digest: record::digest(content),
    }
}
