//! Delivery: the one path every message takes to an agent, whoever sends it
//! ([`AgentRef`](crate::AgentRef), the JSON API of [`Runtime`](crate::Runtime), a
//! handler's [`Context`](crate::Context), a topic, a timer).
//!
//! [`deliver`] looks the target up once: a running transient agent gets the message in
//! its inbox (boxed, no encoding; see [`crate::inbox`]); a durable agent, running or
//! not, gets it journaled ([`journal`]): the record goes to the single writer, which
//! appends it in a group write; once the journal made the group durable, it hands the
//! message to the agent's actor if it runs, and acknowledges the sender. A message is
//! acknowledged only once it would survive a crash, and handled only then.

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use ractor::{ActorRef, ActorStatus};
use tokio::sync::oneshot;
use tracing::Instrument as _;

use crate::directory::Running;
use crate::envelope::QueryFn;
use crate::envelope::{AnyBox, Envelope, ReplyPort, any_box, unbox};
use crate::inbox::Inbox;
use crate::kernel::{Kernel, Kind};
use crate::record::{self, MsgRecord, Origin, RecordKind};
use crate::writer::Routing;
use crate::{AgentId, Error};

/// A message on its way, in whatever form the sender has it.
pub(crate) trait Payload {
    /// The topic it was published to, if any.
    fn topic(&self) -> Option<&str> {
        None
    }
    /// As a transient agent's mailbox takes it.
    fn into_envelope(self, reply: Option<ReplyPort>) -> Result<Envelope, Error>;
    /// Encoded, as the journal takes it.
    fn encode(&self) -> Result<Cow<'_, [u8]>, Error>;
}

/// A typed message, with its encoding once something needed it (a durable sender's step
/// digest), so a durable target's record reuses it instead of encoding again.
pub(crate) struct Typed<M> {
    msg: M,
    encoded: Option<Vec<u8>>,
}

impl<M: serde::Serialize> Typed<M> {
    /// `msg`, not encoded yet.
    pub(crate) fn new(msg: M) -> Self {
        Typed { msg, encoded: None }
    }

    /// Its encoding, computed on first use and kept.
    pub(crate) fn encoded(&mut self) -> Result<&[u8], Error> {
        if self.encoded.is_none() {
            self.encoded = Some(record::encode("a message", &self.msg)?);
        }
        Ok(self.encoded.as_deref().unwrap_or_default())
    }
}

impl<M: serde::Serialize + Send + 'static> Payload for Typed<M> {
    fn into_envelope(self, reply: Option<ReplyPort>) -> Result<Envelope, Error> {
        Ok(Envelope::Local {
            msg: crate::envelope::any_box(self.msg),
            reply,
        })
    }

    fn encode(&self) -> Result<Cow<'_, [u8]>, Error> {
        match &self.encoded {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => record::encode("a message", &self.msg).map(Cow::Owned),
        }
    }
}

/// A message as JSON, for an agent of `kind`.
pub(crate) struct Json<'k> {
    pub(crate) kind: &'k dyn Kind,
    pub(crate) value: serde_json::Value,
}

impl Payload for Json<'_> {
    fn into_envelope(self, reply: Option<ReplyPort>) -> Result<Envelope, Error> {
        Ok(Envelope::Local {
            msg: self.kind.boxed_msg_from_json(self.value)?,
            reply,
        })
    }

    fn encode(&self) -> Result<Cow<'_, [u8]>, Error> {
        self.kind.msg_from_json(&self.value).map(Cow::Owned)
    }
}

/// A topic message, encoded once for every subscriber.
#[derive(Clone, Copy)]
pub(crate) struct TopicMsg<'a> {
    pub(crate) topic: &'a str,
    pub(crate) body: &'a [u8],
}

impl Payload for TopicMsg<'_> {
    fn topic(&self) -> Option<&str> {
        Some(self.topic)
    }

    fn into_envelope(self, _reply: Option<ReplyPort>) -> Result<Envelope, Error> {
        Ok(Envelope::LocalTopic {
            topic: self.topic.to_owned(),
            body: self.body.to_vec(),
        })
    }

    fn encode(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(self.body))
    }
}

/// The actor of the transient agent a sender reached last, kept by the sender (a
/// handler's core) so that sending to the same agent again skips the directory: used
/// only while that actor runs, so it reaches the same incarnation the directory would.
/// Its inbox is held weakly: the directory's entry owns it, so when the actor is gone,
/// whatever was left in it is dropped (an asker learns at once that no reply will come).
pub(crate) struct LastTarget {
    id: AgentId,
    actor: ActorRef<Envelope>,
    inbox: Weak<Inbox<Envelope>>,
}

/// Delivers `msg` to agent `to`, from `origin`; with `reply`, the handler's reply goes
/// there. Returns once the message is in a transient agent's inbox, or journaled with
/// the journal's durability for a durable agent.
///
/// # Errors
/// [`Error::ShuttingDown`], [`Error::UnknownAgent`], [`Error::Encode`] or
/// [`Error::BadJson`] for a message that does not fit, [`Error::Journal`].
pub(crate) fn deliver<'a>(
    kernel: &'a Kernel,
    to: &'a AgentId,
    msg: impl Payload + Send + 'a,
    origin: Origin,
    reply: Option<ReplyPort>,
) -> impl Future<Output = Result<(), Error>> + Send + 'a {
    deliver_from(kernel, None, to, msg, origin, reply)
}

/// [`deliver`], for a sender that keeps the transient agent it reached last in `last`.
///
/// Not an `async fn`: a message for a running transient agent is in its inbox before
/// this returns, and the future is then a ready one; only the journal's and the remote
/// path's (large) future is boxed and awaited.
pub(crate) fn deliver_from<'a>(
    kernel: &'a Kernel,
    last: Option<&mut Option<Box<LastTarget>>>,
    to: &'a AgentId,
    msg: impl Payload + Send + 'a,
    origin: Origin,
    reply: Option<ReplyPort>,
) -> impl Future<Output = Result<(), Error>> + Send + 'a {
    let local = kernel
        .check_accepting()
        .and_then(|()| send_local(kernel, last, to, msg, reply));
    match local {
        Ok(None) => Either::Left(std::future::ready(Ok(()))),
        Err(error) => Either::Left(std::future::ready(Err(error))),
        Ok(Some((msg, reply, durable))) => Either::Right(Box::pin(deliver_placed(
            kernel, to, msg, origin, reply, durable,
        ))),
    }
}

/// Puts `msg` in the inbox of `to` if it is a running transient agent (`Ok(None)`);
/// gives it back otherwise, with whether `to` runs here as a durable agent.
fn send_local<P: Payload>(
    kernel: &Kernel,
    last: Option<&mut Option<Box<LastTarget>>>,
    to: &AgentId,
    msg: P,
    reply: Option<ReplyPort>,
) -> Result<Option<(P, Option<ReplyPort>, bool)>, Error> {
    if let Some(Some(target)) = last.as_deref() {
        if target.id == *to && target.actor.get_status() == ActorStatus::Running {
            if let Some(inbox) = target.inbox.upgrade() {
                let envelope = msg.into_envelope(reply)?;
                return post(&target.actor, &inbox, envelope, to).map(|()| None);
            }
        }
    }
    // Under the directory's read lock: no reference counting unless the sender keeps it.
    let mut pending = Some((msg, reply));
    let local = kernel.directory.send_local_with(to, |actor, inbox| {
        let Some((msg, reply)) = pending.take() else {
            return Ok::<_, Error>(None);
        };
        post(actor, inbox, msg.into_envelope(reply)?, to)?;
        Ok(last
            .is_some()
            .then(|| (actor.clone(), Arc::downgrade(inbox))))
    });
    let durable = match local {
        Running::Transient(sent) => {
            if let (Some((actor, inbox)), Some(slot)) = (sent?, last) {
                *slot = Some(Box::new(LastTarget {
                    id: to.clone(),
                    actor,
                    inbox,
                }));
            }
            return Ok(None);
        }
        Running::Durable => true,
        Running::No => false,
    };
    Ok(pending.map(|(msg, reply)| (msg, reply, durable)))
}

/// Puts `envelope` in a transient agent's inbox, waking its actor if the inbox was idle.
/// An actor that is stopping takes nothing more, as its mailbox would not.
fn post(
    actor: &ActorRef<Envelope>,
    inbox: &Arc<Inbox<Envelope>>,
    envelope: Envelope,
    to: &AgentId,
) -> Result<(), Error> {
    if actor.get_status() >= ActorStatus::Stopping {
        return Err(Error::UnknownAgent(to.clone()));
    }
    if inbox.push(envelope) {
        actor
            .send_message(Envelope::Wake(Arc::clone(inbox)))
            .map_err(|_| Error::UnknownAgent(to.clone()))?;
    }
    Ok(())
}

/// Delivers `msg` to `to`, which runs no transient actor here: journaled for a durable
/// agent of this runtime, handed to the [`Remote`](crate::remote::Remote) for one that
/// is not here. `running_durable`: the directory has `to` running here as a durable
/// agent, which settles where it is without the tree (whose lock every durable send would
/// otherwise take).
async fn deliver_placed(
    kernel: &Kernel,
    to: &AgentId,
    msg: impl Payload,
    origin: Origin,
    reply: Option<ReplyPort>,
    running_durable: bool,
) -> Result<(), Error> {
    let placed = if running_durable {
        Placed::Here { durable: true }
    } else {
        let tree = kernel.tree();
        match tree.get(to) {
            Some(_) if tree.is_elsewhere(to) => Placed::Elsewhere,
            Some(node) => Placed::Here {
                durable: node.durable(),
            },
            None => Placed::Unknown,
        }
    };
    match placed {
        Placed::Here { durable: true } => {
            let body = msg.encode()?;
            journal(kernel, to, origin, msg.topic(), &body, reply).await
        }
        // In the tree but not running: a transient agent being restarted.
        Placed::Here { durable: false } => Err(Error::UnknownAgent(to.clone())),
        Placed::Elsewhere => remote(kernel, to, msg, origin, reply).await,
        // Not here: with other runtimes connected, the one holding it (if any) answers.
        Placed::Unknown if kernel.remote.is_some() => remote(kernel, to, msg, origin, reply).await,
        Placed::Unknown => Err(Error::UnknownAgent(to.clone())),
    }
}

/// Where a message's target is, as this runtime's tree knows it.
enum Placed {
    /// In this runtime.
    Here { durable: bool },
    /// A remote child of one of this runtime's agents.
    Elsewhere,
    /// Not in the tree.
    Unknown,
}

/// Hands `msg` for agent `to` of another runtime to the runtime's
/// [`Remote`](crate::remote::Remote): a tell is done once that runtime has it
/// (journaled, for a durable agent); an ask's encoded reply comes back to `reply`.
async fn remote(
    kernel: &Kernel,
    to: &AgentId,
    msg: impl Payload,
    origin: Origin,
    reply: Option<ReplyPort>,
) -> Result<(), Error> {
    let Some(link) = kernel.remote.as_ref() else {
        return Err(Error::UnknownAgent(to.clone()));
    };
    let message = crate::remote::RemoteMessage {
        topic: msg.topic().map(str::to_owned),
        body: msg.encode()?.into_owned(),
        origin,
    };
    let Some(reply) = reply else {
        return link.deliver(to.clone(), message).await;
    };
    // An ask: the reply comes back encoded; the asker decodes it (`reply_as`) and keeps
    // its own timeout.
    let asked = link.ask(to.clone(), message);
    tokio::spawn(async move {
        let answer = asked.await.map(|bytes| any_box(RemoteReply(bytes)));
        let _ = reply.send(answer);
    });
    Ok(())
}

/// A reply or answer from another runtime, still encoded.
pub(crate) struct RemoteReply(Vec<u8>);

/// A reply (or answer) of type `R`, as a local agent gives it or as another runtime
/// encoded it.
pub(crate) fn reply_as<R: serde::de::DeserializeOwned + 'static>(
    reply: AnyBox,
    kind: &str,
) -> Result<R, Error> {
    match unbox::<R>(reply) {
        Ok(reply) => Ok(reply),
        Err(other) => match unbox::<RemoteReply>(other) {
            Ok(encoded) => record::decode(kind, 0, &encoded.0),
            Err(_) => Err(Error::Internal(format!(
                "a reply of kind {kind} has another type"
            ))),
        },
    }
}

/// Queries agent `id` of another runtime with `query` (encoded as its kind's `Query`),
/// if it is one; `None` if `id` is to be queried here.
pub(crate) async fn remote_query(
    kernel: &Kernel,
    id: &AgentId,
    query: impl FnOnce() -> Result<Vec<u8>, Error>,
    timeout: Duration,
) -> Option<Result<AnyBox, Error>> {
    let link = kernel.remote.as_ref()?;
    let elsewhere = {
        let tree = kernel.tree();
        match tree.get(id) {
            Some(_) => tree.is_elsewhere(id),
            None => true,
        }
    };
    if !elsewhere {
        return None;
    }
    let asked = async {
        let answer = link.query(id.clone(), query()?, timeout).await?;
        Ok(any_box(RemoteReply(answer)))
    };
    Some(asked.await)
}

/// A message from another runtime: encoded, with its topic if it was published.
pub(crate) struct Encoded<'k> {
    pub(crate) kind: &'k dyn Kind,
    pub(crate) topic: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Payload for Encoded<'_> {
    fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    fn into_envelope(self, reply: Option<ReplyPort>) -> Result<Envelope, Error> {
        Ok(match self.topic {
            Some(topic) => Envelope::LocalTopic {
                topic,
                body: self.body,
            },
            None => Envelope::Local {
                msg: self.kind.boxed_msg_from_bytes(&self.body)?,
                reply,
            },
        })
    }

    fn encode(&self) -> Result<Cow<'_, [u8]>, Error> {
        Ok(Cow::Borrowed(&self.body))
    }
}

/// Journals encoded message `body` for durable agent `to`; returns once it is durable,
/// in a `toka.journal.append` span whose trace context the record keeps (when the
/// runtime has a [`TracePropagator`](crate::TracePropagator) and the span is enabled).
pub(crate) async fn journal(
    kernel: &Kernel,
    to: &AgentId,
    origin: Origin,
    topic: Option<&str>,
    body: &[u8],
    reply: Option<ReplyPort>,
) -> Result<(), Error> {
    let span = tracing::info_span!("toka.journal.append", agent.id = %to, otel.kind = "producer");
    let trace = match &kernel.trace {
        Some(hook) if !span.is_disabled() => hook.context_of(&span).map(Into::into),
        _ => None,
    };
    // The body, its length, the send time, and a little for the rest (an agent origin,
    // a topic and a trace context take more, and grow the buffer once).
    let size_hint = body.len() + topic.map_or(0, str::len) + 24;
    let payload = record::encode_sized(
        "a message",
        &MsgRecord {
            origin,
            sent_micros: toka_store::Timestamp::now().as_micros(),
            topic,
            body,
            trace,
        },
        size_hint,
    )?;
    kernel
        .append_durable(to, RecordKind::Msg, payload, Routing::Deliver(reply))
        .instrument(span)
        .await
        .map(drop)
}

/// Publishes encoded `body` to every subscriber of `topic`; returns how many there were.
pub(crate) async fn publish(
    kernel: &Kernel,
    topic: &str,
    origin: Origin,
    body: &[u8],
) -> Result<usize, Error> {
    let subscribers = kernel.directory.subscribers(topic);
    for id in &subscribers {
        deliver(kernel, id, TopicMsg { topic, body }, origin.clone(), None).await?;
    }
    Ok(subscribers.len())
}

/// Sends query `run` to agent `id` and waits (at most `timeout`) for its answer. Nothing
/// is journaled: the query goes to the agent's mailbox, behind every message already
/// there (see [`query`](crate::query) for what it sees). An agent being restarted or
/// recovered is waited for.
pub(crate) async fn query(
    kernel: &Kernel,
    id: &AgentId,
    run: QueryFn,
    timeout: Duration,
) -> Result<AnyBox, Error> {
    kernel.check_accepting()?;
    let deadline = Instant::now() + timeout;
    let (reply, answer) = oneshot::channel();
    let mut envelope = Envelope::Query { run, reply };
    loop {
        match kernel.directory.send(id, envelope) {
            Ok(()) => break,
            Err(None) => return Err(Error::UnknownAgent(id.clone())),
            Err(Some(returned)) => envelope = returned,
        }
        if kernel.tree().get(id).is_none() {
            return Err(Error::UnknownAgent(id.clone()));
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                id: id.clone(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    await_reply(
        id,
        answer,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
}

/// Waits up to `timeout` for the reply to an ask or a query.
pub(crate) async fn await_reply(
    id: &AgentId,
    answer: oneshot::Receiver<Result<AnyBox, Error>>,
    timeout: Duration,
) -> Result<AnyBox, Error> {
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(Error::Timeout {
            id: id.clone(),
            after: timeout,
        }),
        Ok(Err(_)) => Err(Error::NoReply(id.clone())),
        Ok(Ok(reply)) => reply,
    }
}
