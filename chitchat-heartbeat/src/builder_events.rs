//! The event queue a master's or node's builder makes before its role starts, so
//! that a stream taken from the builder misses nothing from the very start.

use std::sync::Arc;

use chitchat_core::{EventQueue, Events};

use crate::config::DEFAULT_EVENT_CAPACITY;

/// A role's event queue, held by its builder until `start` hands it to the role.
///
/// A clone is a new queue of the same capacity: streams taken from one builder
/// see only the role that builder starts.
pub(crate) struct BuilderEvents<E>(Arc<EventQueue<E>>);

impl<E: Clone> BuilderEvents<E> {
    /// A queue keeping [`DEFAULT_EVENT_CAPACITY`] events for a reader that lags.
    pub(crate) fn new() -> Self {
        Self::with_capacity(DEFAULT_EVENT_CAPACITY)
    }

    /// A queue keeping `capacity` events for a reader that lags.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        BuilderEvents(Arc::new(EventQueue::new(capacity)))
    }

    /// A stream of every event from now on.
    pub(crate) fn subscribe(&self) -> Events<E> {
        self.0.subscribe()
    }

    /// The queue, for the role to emit on.
    pub(crate) fn into_queue(self) -> Arc<EventQueue<E>> {
        self.0
    }
}

impl<E: Clone> Clone for BuilderEvents<E> {
    fn clone(&self) -> Self {
        Self::with_capacity(self.0.capacity())
    }
}

impl<E> std::fmt::Debug for BuilderEvents<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_is_a_new_queue_of_the_same_capacity() {
        let events = BuilderEvents::<u32>::with_capacity(3);
        let _stream = events.subscribe();
        let clone = events.clone();
        assert_eq!(clone.0.capacity(), 3);
        assert_eq!(clone.0.subscriber_count(), 0);
        assert_eq!(events.0.subscriber_count(), 1);
        assert_eq!(
            BuilderEvents::<u32>::new().0.capacity(),
            DEFAULT_EVENT_CAPACITY
        );
    }
}
