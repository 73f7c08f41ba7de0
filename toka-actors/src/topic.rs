//! Typed publish/subscribe topics.

use std::marker::PhantomData;
use std::sync::Arc;

/// A named topic carrying messages of type `M`.
///
/// Agents subscribe in [`Agent::on_start`](crate::Agent::on_start) with
/// [`StartContext::subscribe`](crate::StartContext::subscribe) (their `Msg` must implement
/// `From<M>`); anyone publishes with [`Context::publish`](crate::Context::publish) or
/// [`Runtime::publish`](crate::Runtime::publish). Each subscriber gets its own journaled
/// copy, so durable subscribers miss nothing across their restarts.
///
/// ```
/// use toka_actors::Topic;
/// let prices: Topic<u64> = Topic::new("prices");
/// assert_eq!(prices.name(), "prices");
/// ```
pub struct Topic<M> {
    name: Arc<str>,
    _message: PhantomData<fn(M)>,
}

impl<M> Topic<M> {
    /// The topic named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Topic {
            name: name.into(),
            _message: PhantomData,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<M> Clone for Topic<M> {
    fn clone(&self) -> Self {
        Topic {
            name: Arc::clone(&self.name),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Topic<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topic({:?})", self.name)
    }
}
