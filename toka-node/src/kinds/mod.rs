//! The node's built-in agent kinds, so a node is useful without writing Rust: `counter`,
//! `supervisor`, `reactor` and `assistant` ([`toka_tools::model::Assistant`]). Each is an ordinary [`toka_actors::Agent`] with JSON-shaped
//! arguments, messages and replies; [`register`] adds them all to a runtime.

mod counter;
mod reactor;
pub(crate) mod supervisor;

pub(crate) use counter::Counter;
pub(crate) use reactor::Reactor;
pub(crate) use supervisor::Supervisor;

use toka_actors::RuntimeBuilder;
use toka_tools::Sealer;
use toka_tools::model::Assistant;

/// Registers every built-in kind; reactors and assistants open their sealed tokens with
/// `sealer`.
pub(crate) fn register(builder: RuntimeBuilder, sealer: Option<Sealer>) -> RuntimeBuilder {
    let assistant = match &sealer {
        Some(sealer) => Assistant::sealed(sealer.clone()),
        None => Assistant::new(),
    };
    builder
        .register_with_queries(Counter)
        .register(Supervisor)
        .register(Reactor::new(sealer))
        .register_with_queries(assistant)
}
