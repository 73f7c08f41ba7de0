//! A transient agent's inbox: where its messages wait, so that the actor takes them in
//! batches instead of one trip through its ractor mailbox each.
//!
//! A sender appends to the inbox and, only when the inbox was idle, sends the actor one
//! wake-up (`Envelope::Wake`); the actor then handles what the inbox holds, one message
//! after the other, until it is empty (Akka's dispatcher "throughput", Erlang's
//! reductions: a busy agent pays its mailbox's costs once per batch, not once per
//! message). The rules that keep this equivalent to one mailbox:
//! - a sender appends before it sends the actor anything else, and the actor empties the
//!   inbox before it handles any other envelope ([`Inbox::is_empty`]), so what one sender
//!   sent is handled in the order sent, and a query sees every message sent before it;
//! - one wake-up is pending or running at a time (`scheduled`); the actor marks the inbox
//!   idle under the same lock as the take that found it empty ([`Inbox::pop_or_idle`]),
//!   so a message appended after that finds it idle and wakes the actor: no message waits
//!   without a wake-up on its way;
//! - the inbox belongs to one incarnation of the agent (the directory's entry for its
//!   actor): messages left in it when the actor fails are lost with it, as a mailbox's are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The inbox of one running transient agent, holding `T`s (its envelopes).
pub(crate) struct Inbox<T> {
    queue: Mutex<VecDeque<T>>,
    /// A wake-up is on its way to the actor, or the actor is taking messages.
    scheduled: AtomicBool,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox {
            queue: Mutex::new(VecDeque::new()),
            scheduled: AtomicBool::new(false),
        }
    }
}

impl<T> Inbox<T> {
    fn queue(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A push or a pop cannot be left half-done by a panic: take a poisoned lock over.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `item`; `true` if the caller must wake the actor (the inbox was idle).
    pub(crate) fn push(&self, item: T) -> bool {
        self.queue().push_back(item);
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// The oldest waiting item; `None` if there is none, and then the inbox is idle: the
    /// next push wakes the actor.
    pub(crate) fn pop_or_idle(&self) -> Option<T> {
        let mut queue = self.queue();
        let item = queue.pop_front();
        if item.is_none() {
            // Under the lock: a push after this sees the inbox idle.
            self.scheduled.store(false, Ordering::Release);
        }
        item
    }

    /// Takes every waiting item, in order (the inbox stays scheduled: a wake-up that
    /// finds it empty marks it idle).
    pub(crate) fn take(&self) -> VecDeque<T> {
        std::mem::take(&mut *self.queue())
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_push_to_an_idle_inbox_wakes_the_actor() {
        let inbox = Inbox::default();
        assert!(inbox.push(1), "the first push wakes");
        assert!(!inbox.push(2), "a push to a scheduled inbox does not");
        assert_eq!(inbox.pop_or_idle(), Some(1));
        assert_eq!(inbox.pop_or_idle(), Some(2));
        assert!(
            !inbox.push(3),
            "still scheduled while the actor takes messages"
        );
        assert_eq!(inbox.take(), VecDeque::from([3]));
        assert_eq!(inbox.pop_or_idle(), None);
        assert!(inbox.push(4), "idle again: the next push wakes");
    }

    /// Many pushers against one taker that goes idle whenever the inbox is empty: every
    /// item is taken, in each pusher's order, and an item never waits while the inbox
    /// is idle (the taker is woken for it).
    #[test]
    fn no_item_waits_without_a_wake_up() {
        use std::sync::Arc;
        use std::sync::mpsc;
        let inbox = Arc::new(Inbox::default());
        let (wake, woken) = mpsc::channel::<()>();
        let pushers: Vec<_> = (0..4u64)
            .map(|p| {
                let (inbox, wake) = (Arc::clone(&inbox), wake.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        if inbox.push((p, i)) {
                            wake.send(()).expect("the taker listens");
                        }
                    }
                })
            })
            .collect();
        drop(wake);
        let mut next = [0u64; 4];
        let mut taken = 0;
        // Each wake-up takes until idle; the channel closes when every pusher is done.
        while woken.recv().is_ok() {
            while let Some((p, i)) = inbox.pop_or_idle() {
                assert_eq!(i, next[p as usize], "pusher {p}'s items out of order");
                next[p as usize] += 1;
                taken += 1;
            }
        }
        for pusher in pushers {
            pusher.join().expect("pusher");
        }
        assert_eq!(taken, 80_000, "items left without a wake-up: {next:?}");
    }
}
