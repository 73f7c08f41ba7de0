//! Catch-up-then-live subscriptions to the whole log.
//!
//! A [`Subscription`] holds no event queue fed by writers. It remembers the next position
//! it owes its reader and watches the journal's *acknowledged head*; when the head is past
//! its position it reads the missing events from the store in pages. Hence:
//! - **No event is ever lost or skipped**, however slow the reader: falling behind only
//!   means the next pages come from disk instead of cache. Writers never wait for readers.
//! - **Order** is position order, the same as [`Journal::iter_all`](crate::Journal::iter_all).
//! - **Visibility**: in `Fsync` journals a subscriber sees an event once it is flushed, so
//!   it never acts on an event a crash could take back; in `Buffered` journals once it is
//!   written.
//! - **Closing**: when the journal is dropped, `next` returns `None` once caught up.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::{Error, RecordedEvent};

/// Events are read from the store this many at a time.
const PAGE: usize = 256;

/// A journal as seen by a subscription.
pub(crate) trait LogSource: Send + Sync {
    /// Appends the events in `from..=to` (at most `limit` positions) to `out`; returns the
    /// next position to read.
    fn read_page(
        self: Arc<Self>,
        from: u64,
        to: u64,
        limit: usize,
        out: &mut VecDeque<RecordedEvent>,
    ) -> Result<u64, Error>;
}

/// A live feed of the journal from a position: first the stored events, then new ones.
///
/// A subscription holds no event queue fed by writers. It remembers the next position it
/// owes its reader and watches the journal's *acknowledged head*; when the head is past its
/// position it reads the missing events from the store in pages. Hence:
/// - **No event is ever lost or skipped**, however slow the reader: falling behind only
///   means the next pages come from disk instead of cache. Writers never wait for readers.
/// - **Order** is position order, the same as [`Journal::iter_all`](crate::Journal::iter_all).
/// - **Visibility**: in `Fsync` journals a subscriber sees an event once it is flushed, so
///   it never acts on an event a crash could take back; in `Buffered` journals once it is
///   written.
/// - **Closing**: when the journal is dropped, [`Subscription::next`] returns `None`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), toka_store::Error> {
/// use toka_store::{ExpectedVersion, Journal, JournalConfig, MemoryJournal, NewEvent};
/// let journal = MemoryJournal::new(JournalConfig::default())?;
/// journal.append("s", ExpectedVersion::Any, &[NewEvent::new("old", vec![])]).await??;
/// let mut feed = journal.subscribe(1);
/// assert_eq!(feed.next().await.unwrap()?.kind, "old"); // catch-up
/// journal.append("s", ExpectedVersion::Any, &[NewEvent::new("new", vec![])]).await??;
/// assert_eq!(feed.next().await.unwrap()?.kind, "new"); // live
/// # Ok(()) }
/// ```
pub struct Subscription {
    source: Weak<dyn LogSource>,
    head: watch::Receiver<u64>,
    next_position: u64,
    buffer: VecDeque<RecordedEvent>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next_position", &self.next_position)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        source: Weak<dyn LogSource>,
        head: watch::Receiver<u64>,
        from_position: u64,
    ) -> Self {
        Subscription {
            source,
            head,
            next_position: from_position.max(1),
            buffer: VecDeque::new(),
        }
    }

    /// The next event: immediately if one is stored past the last one returned, otherwise
    /// once one is appended. `None` once the journal is closed and everything was read.
    ///
    /// An `Err` (e.g. a corrupt record) does not advance the subscription: calling `next`
    /// again retries the same position.
    ///
    /// Cancel safety: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, Error>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            let head = *self.head.borrow_and_update();
            if self.next_position <= head {
                let source = self.source.upgrade()?;
                match source.read_page(self.next_position, head, PAGE, &mut self.buffer) {
                    Ok(next) => self.next_position = next,
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            if self.head.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The position of the next event this subscription will return.
    pub fn position(&self) -> u64 {
        self.buffer
            .front()
            .map_or(self.next_position, |event| event.position)
    }
}
