//! Shared services handed to every handler: a type map of `Arc`s, set once on the
//! builder (like axum's `Extension` or actix's `Data`).
//!
//! Agents are built by the runtime from serialized arguments, so handles that cannot be
//! serialized (a tool host, an HTTP client, a model client) reach them through here:
//! [`RuntimeBuilder::extension`](crate::RuntimeBuilder::extension) stores a value and
//! [`Context::extension`](crate::Context::extension) fetches it by type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Values keyed by their type; at most one per type.
#[derive(Clone, Default)]
pub(crate) struct Extensions {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// Stores `value`, replacing an earlier value of the same type.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let value = Arc::clone(self.values.get(&TypeId::of::<T>())?);
        value.downcast::<T>().ok()
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.values.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type_and_replaced() {
        let mut ext = Extensions::default();
        assert!(ext.get::<String>().is_none());
        ext.insert(String::from("a"));
        ext.insert(7u32);
        ext.insert(String::from("b"));
        assert_eq!(
            ext.get::<String>().as_deref().map(String::as_str),
            Some("b")
        );
        assert_eq!(ext.get::<u32>().as_deref(), Some(&7));
        assert!(ext.get::<u64>().is_none());
    }
}
