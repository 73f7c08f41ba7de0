//! Compile-time checks that the journal's public types can cross threads and tasks.

use std::sync::Arc;

use toka_store::{
    Error, EventIter, Journal, JournalConfig, MemoryJournal, NewEvent, RecordedEvent, Subscription,
    VerifyReport,
};

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_send_future<F: std::future::Future + Send>(_: &F) {}

#[test]
fn public_types_are_send_and_sync() {
    is_send::<MemoryJournal>();
    is_sync::<MemoryJournal>();
    #[cfg(feature = "sled")]
    {
        is_send::<toka_store::SledJournal>();
        is_sync::<toka_store::SledJournal>();
    }
    is_send::<Arc<dyn Journal>>();
    is_sync::<Arc<dyn Journal>>();
    is_send::<Subscription>();
    is_send::<EventIter>();
    is_send::<Error>();
    is_sync::<Error>();
    is_send::<RecordedEvent>();
    is_send::<NewEvent>();
    is_send::<VerifyReport>();
}

#[test]
fn futures_are_send_so_they_can_be_spawned() {
    let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
    let events = [NewEvent::new("k", vec![])];
    let append = journal.append("s", toka_store::ExpectedVersion::Any, &events);
    is_send_future(&append);
    let flush = journal.flush();
    is_send_future(&flush);
    let mut subscription = journal.subscribe(1);
    let next = subscription.next();
    is_send_future(&next);
}
