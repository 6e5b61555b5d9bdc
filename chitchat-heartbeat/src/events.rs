//! The event streams of the two roles: a bounded broadcast that never blocks the
//! sender, read as a `futures::Stream`. Every subscriber gets every event emitted
//! from the moment it subscribed, and none from before; a reader that falls behind
//! loses the oldest events and can tell how many ([`Events::dropped`]).
//!
//! The master emits from its connection handlers and its round driver while it
//! holds its table's lock, so sending must cost a few instructions and never wait: a
//! tokio broadcast channel does exactly that, and gives every subscriber the whole
//! stream. Everything else in the crate reaches it through `Emitter` only.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::stream::{self, Stream};
use tokio::sync::broadcast;

/// Events kept for a reader that has not read them yet, by default: one event per
/// node for a cluster of a thousand, with room for a burst of state changes.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// A stream of events of a [`Master`](crate::Master) or a [`Node`](crate::Node).
///
/// It yields every event emitted from the moment it was subscribed, in order; each
/// subscriber has its own. Bounded: when the reader lags more than the role's event
/// capacity behind, the oldest events it has not read are dropped, counted in
/// [`dropped`](Self::dropped), and the stream goes on with the oldest one still
/// kept. The stream ends once the role has stopped and every kept event is read.
pub struct Events<T> {
    inner: Pin<Box<dyn Stream<Item = T> + Send>>,
    dropped: Arc<AtomicU64>,
}

impl<T: Clone + Send + 'static> Events<T> {
    fn new(receiver: broadcast::Receiver<T>) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let inner = stream::unfold(receiver, move |mut receiver| {
            let counter = counter.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => return Some((event, receiver)),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            counter.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Events {
            inner: Box::pin(inner),
            dropped,
        }
    }

    /// Events this stream lost because it was read too slowly.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<T> Stream for Events<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<T> std::fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The sending side, held by a role (and by its builder, so that a stream taken
/// from the builder misses nothing of the start).
pub(crate) struct Emitter<T> {
    capacity: usize,
    /// `None` once the role has stopped: the streams end.
    sender: Mutex<Option<broadcast::Sender<T>>>,
}

impl<T: Clone + Send + 'static> Emitter<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Emitter {
            capacity,
            sender: Mutex::new(Some(sender)),
        }
    }

    /// Sends `event` to every stream; never waits.
    pub(crate) fn emit(&self, event: T) {
        if let Some(sender) = &*self.sender.lock().unwrap_or_else(PoisonError::into_inner) {
            // No reader at all is not an error: nobody is listening.
            let _ = sender.send(event);
        }
    }

    /// A new stream of the events emitted from now on. After
    /// [`close`](Self::close), a stream that ends at once.
    pub(crate) fn subscribe(&self) -> Events<T> {
        match &*self.sender.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(sender) => Events::new(sender.subscribe()),
            None => Events::new(broadcast::channel(1).1),
        }
    }

    /// The events kept for a lagging reader.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ends every stream once its kept events are read.
    pub(crate) fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl<T> std::fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn every_subscriber_gets_every_event_from_its_subscription_on() {
        let emitter = Emitter::new(8);
        emitter.emit(1);
        let mut first = emitter.subscribe();
        emitter.emit(2);
        let mut second = emitter.subscribe();
        emitter.emit(3);
        emitter.close();
        assert_eq!(first.by_ref().collect::<Vec<_>>().await, [2, 3]);
        assert_eq!(second.by_ref().collect::<Vec<_>>().await, [3]);
        assert_eq!(emitter.subscribe().next().await, None);
    }

    #[tokio::test]
    async fn a_lagging_reader_loses_the_oldest_and_counts_them() {
        let emitter = Emitter::new(2);
        let mut events = emitter.subscribe();
        for i in 0..5 {
            emitter.emit(i);
        }
        emitter.close();
        assert_eq!(events.by_ref().collect::<Vec<_>>().await, [3, 4]);
        assert_eq!(events.dropped(), 3);
    }
}
