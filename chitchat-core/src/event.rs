//! One bounded event queue for everything that reports in the background: a
//! server's or client's [`ConnEvent`]s, the heartbeat's membership changes.
//!
//! The Go library's error channel blocked the server when nobody drained it. An
//! [`EventQueue`] never blocks and never grows: each subscriber ([`Events`]) gets
//! every event emitted from the moment it subscribed, in order; when a subscriber
//! falls more than the queue's capacity behind, it loses the oldest events it has not
//! read, and counts exactly how many ([`Events::dropped`]). With no subscriber, an
//! event costs nothing but the lock.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::Stream;

/// The sending side of a bounded broadcast queue: [`emit`](Self::emit) never blocks,
/// each subscriber ([`Events`]) gets every event emitted after it subscribed, and one
/// that falls more than [`capacity`](Self::capacity) behind loses its oldest unread
/// events, counted in [`Events::dropped`].
///
/// Cloning gives another sender of the same queue.
///
/// ```
/// use chitchat_core::EventQueue;
/// use futures::StreamExt;
///
/// # futures::executor::block_on(async {
/// let queue = EventQueue::new(2);
/// queue.emit("before anyone listened"); // nobody subscribed: not kept
/// let mut early = queue.subscribe();
/// queue.emit("a");
/// let mut late = queue.subscribe();
/// for word in ["b", "c"] {
///     queue.emit(word);
/// }
/// queue.close();
/// // Capacity 2: `early` lost "a", the oldest it had not read; `late` lost nothing.
/// assert_eq!(early.by_ref().collect::<Vec<_>>().await, ["b", "c"]);
/// assert_eq!(early.dropped(), 1);
/// assert_eq!(late.by_ref().collect::<Vec<_>>().await, ["b", "c"]);
/// assert_eq!(late.dropped(), 0);
/// # });
/// ```
pub struct EventQueue<T> {
    shared: Arc<Shared<T>>,
}

/// One subscription to an [`EventQueue`]: every event emitted since it was made, in
/// order, as a `futures::Stream`.
///
/// The stream ends once the queue is closed (its owner stopped) and every kept event
/// has been read. It is `Unpin`: `events.next().await` needs no pinning.
pub struct Events<T> {
    shared: Arc<Shared<T>>,
    /// This subscriber's slot in the shared state.
    id: u64,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// The newest events, at most `capacity`; `buf[0]` has sequence number `first`.
    buf: VecDeque<T>,
    capacity: usize,
    first: u64,
    closed: bool,
    next_id: u64,
    /// Every live subscriber: the next sequence number it reads, what it lost, and
    /// the task waiting for more. Kept in subscription order.
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    id: u64,
    next: u64,
    dropped: u64,
    waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state whole; a panic elsewhere does not
        // make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> State<T> {
    fn end(&self) -> u64 {
        self.first + self.buf.len() as u64
    }

    fn subscriber(&mut self, id: u64) -> &mut Subscriber {
        let at = self
            .subscribers
            .iter()
            .position(|s| s.id == id)
            .expect("a live subscription has a slot");
        &mut self.subscribers[at]
    }

    /// The wakers of the subscribers waiting for an event, to wake once the lock
    /// is released.
    fn take_wakers(&mut self) -> Vec<Waker> {
        self.subscribers
            .iter_mut()
            .filter_map(|s| s.waker.take())
            .collect()
    }

    /// Frees the events every subscriber has read.
    fn trim(&mut self) {
        let oldest_needed = self
            .subscribers
            .iter()
            .map(|s| s.next)
            .min()
            .unwrap_or_else(|| self.end());
        while self.first < oldest_needed && self.buf.pop_front().is_some() {
            self.first += 1;
        }
    }
}

impl<T: Clone> EventQueue<T> {
    /// A queue that keeps at most `capacity` unread events per subscriber (at least 1).
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    buf: VecDeque::new(),
                    capacity: capacity.max(1),
                    first: 0,
                    closed: false,
                    next_id: 0,
                    subscribers: Vec::new(),
                }),
            }),
        }
    }

    /// Hands `event` to every subscriber; never waits. When a subscriber is
    /// `capacity` events behind, its oldest unread event is dropped (and counted).
    /// After [`close`](Self::close), or with no subscriber, the event is discarded.
    pub fn emit(&self, event: T) {
        let wakers: Vec<Waker> = {
            let mut state = self.shared.lock();
            if state.closed || state.subscribers.is_empty() {
                return;
            }
            state.buf.push_back(event);
            if state.buf.len() > state.capacity {
                state.buf.pop_front();
                state.first += 1;
            }
            state.take_wakers()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A new subscriber: it gets every event emitted from now on.
    pub fn subscribe(&self) -> Events<T> {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        let next = state.end();
        state.subscribers.push(Subscriber {
            id,
            next,
            dropped: 0,
            waker: None,
        });
        Events {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Ends every subscription once its kept events are read; later events are
    /// discarded, and later subscriptions end at once.
    pub fn close(&self) {
        let wakers: Vec<Waker> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.take_wakers()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The events kept for a subscriber that lags.
    pub fn capacity(&self) -> usize {
        self.shared.lock().capacity
    }

    /// How many subscriptions are alive.
    pub fn subscriber_count(&self) -> usize {
        self.shared.lock().subscribers.len()
    }
}

impl<T> Clone for EventQueue<T> {
    fn clone(&self) -> Self {
        EventQueue {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for EventQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("EventQueue")
            .field("capacity", &state.capacity)
            .field("subscribers", &state.subscribers.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl<T: Clone> Events<T> {
    /// Events this subscriber lost because it fell `capacity` events behind,
    /// counting those it has not reached yet.
    pub fn dropped(&self) -> u64 {
        let mut state = self.shared.lock();
        let first = state.first;
        let me = state.subscriber(self.id);
        me.dropped + first.saturating_sub(me.next)
    }

    /// The next event if one is waiting, without waiting. `None` also when the queue
    /// is closed and drained; [`is_terminated`](Self::is_terminated) tells them apart.
    pub fn try_next(&mut self) -> Option<T> {
        let mut state = self.shared.lock();
        Self::take(&mut state, self.id)
    }

    /// True once the queue is closed and this subscriber has read every kept event.
    pub fn is_terminated(&self) -> bool {
        let mut state = self.shared.lock();
        let end = state.end();
        state.closed && state.subscriber(self.id).next >= end
    }

    fn take(state: &mut State<T>, id: u64) -> Option<T> {
        let (first, end) = (state.first, state.end());
        let me = state.subscriber(id);
        if me.next < first {
            me.dropped += first - me.next;
            me.next = first;
        }
        if me.next >= end {
            return None;
        }
        let at = (me.next - first) as usize;
        me.next += 1;
        let event = state.buf[at].clone();
        state.trim();
        Some(event)
    }
}

impl<T: Clone> Stream for Events<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(event) = Self::take(&mut state, self.id) {
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        let me = state.subscriber(self.id);
        match &mut me.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Events<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.subscribers.retain(|s| s.id != self.id);
        state.trim();
    }
}

impl<T> std::fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    #[test]
    fn every_subscriber_gets_every_event_from_when_it_subscribed() {
        let queue = EventQueue::new(8);
        let mut first = queue.subscribe();
        queue.emit(1);
        let mut second = queue.subscribe();
        queue.emit(2);
        queue.close();
        queue.emit(3); // after close: nobody gets it
        assert_eq!(
            first.by_ref().collect::<Vec<_>>().now_or_never(),
            Some(vec![1, 2])
        );
        assert_eq!(
            second.by_ref().collect::<Vec<_>>().now_or_never(),
            Some(vec![2])
        );
        assert!(first.is_terminated() && second.is_terminated());
        assert_eq!(queue.subscribe().next().now_or_never(), Some(None));
    }

    #[test]
    fn a_lagging_subscriber_loses_its_oldest_and_counts_exactly() {
        let queue = EventQueue::new(3);
        let mut slow = queue.subscribe();
        let mut fast = queue.subscribe();
        for i in 0..10 {
            queue.emit(i);
            assert_eq!(fast.try_next(), Some(i));
        }
        assert_eq!(slow.dropped(), 7);
        assert_eq!(slow.try_next(), Some(7));
        assert_eq!(slow.dropped(), 7);
        assert_eq!(fast.dropped(), 0);
        assert_eq!(
            (slow.try_next(), slow.try_next(), slow.try_next()),
            (Some(8), Some(9), None)
        );
    }

    #[test]
    fn events_read_by_everyone_are_freed_and_none_are_kept_without_subscribers() {
        let queue = EventQueue::new(100);
        queue.emit(0);
        assert_eq!(queue.shared.lock().buf.len(), 0);
        let mut only = queue.subscribe();
        queue.emit(1);
        queue.emit(2);
        assert_eq!(queue.shared.lock().buf.len(), 2);
        only.try_next();
        assert_eq!(queue.shared.lock().buf.len(), 1);
        drop(only);
        assert_eq!(queue.shared.lock().buf.len(), 0);
        assert_eq!(queue.subscriber_count(), 0);
    }

    #[test]
    fn a_waiting_subscriber_is_woken_by_emit_and_by_close() {
        let queue = EventQueue::new(4);
        let mut events = queue.subscribe();
        let mut next = events.next();
        assert_eq!((&mut next).now_or_never(), None);
        queue.emit("x");
        assert_eq!(next.now_or_never(), Some(Some("x")));
        let waiting = std::thread::spawn(move || futures::executor::block_on(events.next()));
        queue.close();
        assert_eq!(waiting.join().unwrap(), None);
    }
}
