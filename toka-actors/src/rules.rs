//! # Rules for handlers
//!
//! What the runtime guarantees an agent, and what it asks of the agent's code in return.
//! Break a rule and recovery cannot promise to rebuild the same state.
//!
//! ## 1. Handlers are deterministic
//! Given the agent's state and a message, [`Agent::handle`](crate::Agent::handle) must make
//! the same changes and the same outward steps every time it runs. After a crash or a
//! restart the runtime *replays* every message handled since the agent's last snapshot
//! through the same handler to rebuild its state; a handler that branches on the clock,
//! a random number, a global variable, a file or an environment variable rebuilds
//! something else.
//! - Time: use [`Context::now`](crate::Context::now) (the time the message was sent,
//!   journaled with it), never `SystemTime::now`.
//! - Randomness, I/O, calls to services, anything whose answer may change: put it inside
//!   [`Context::effect`](crate::Context::effect), which journals the outcome and returns the
//!   recorded one on replay.
//! - Iterate in a deterministic order (`BTreeMap`, not `HashMap`, when the order decides
//!   what is sent).
//!
//! ## 2. What is journaled
//! Every message to a durable agent, before it is handled. Every outward step of a
//! handling: sends, asks and their replies, queries and their answers, spawns and stops
//! of children, publishes, timers, side effects (intent before, outcome after), and the
//! list of steps each handling made. Handled progress, in batches. Snapshots, when the
//! agent implements [`Agent::snapshot`](crate::Agent::snapshot). Nothing else: the state
//! itself is never journaled, it is rebuilt.
//!
//! ## 3. Replay checks every step
//! While replaying, each outward step is compared with what the journal recorded for the
//! same message and step number: its kind (send, ask, query, spawn, stop, publish, timer,
//! effect), its target and a digest of its content. A handler whose code changed so that
//! it now does something else halts the agent with
//! [`Error::NonDeterministic`](crate::Error::NonDeterministic), naming the agent, the
//! message, the step, and what was recorded against what happens now. The halt is
//! journaled, the agent's supervisor does not restart it, and the rest of the tree goes
//! on. To change a handler's behaviour for messages already handled, take a snapshot
//! first (replay starts after it), or version the behaviour in the state.
//!
//! ## 4. What survives a restart
//! - The state (rebuilt), pending durable timers, per-sender deduplication watermarks,
//!   the tree of children, dead letters.
//! - Not the reply port of an [`AgentRef::ask`](crate::AgentRef::ask) waiting when the
//!   runtime stopped: the asker got an error; the message itself stays journaled and is
//!   handled after the restart, its reply going nowhere.
//! - Not transient agents ([`SpawnSpec::transient`](crate::SpawnSpec::transient)): they
//!   are not journaled, start fresh after every restart of their own and are gone after
//!   a restart of the runtime. A durable agent may send to one; the send is then a plain
//!   mailbox put, neither journaled on the receiver's side nor deduplicated.
//!
//! ## 5. At-least-once handling, exactly-once state
//! A message being handled when the process died is handled again after recovery, live:
//! its outward steps run again, and are made idempotent by their ids (receivers drop a
//! sender's message they already handled, spawns of an existing child return it,
//! recorded timers, replies and effect outcomes are reused). A side effect whose intent
//! was journaled but not its outcome is *in doubt*: [`OnDoubt`](crate::OnDoubt) decides.
//!
//! ## 6. The progress window
//! Handled progress is recorded in batches (every 100 ms, and at shutdown), not after
//! every message. After a crash, the messages handled since the last batch are handled
//! again live (rule 5), not replayed. Keep handlers quick: a handler holds its agent's
//! mailbox, and an agent's queries wait behind it.
//!
//! ## 7. Reads are queries
//! Reading state through an ask journals the read like any message. Implement
//! [`Queries`](crate::Queries) instead: a query reads `&State`, is answered between two
//! messages, and writes nothing.
