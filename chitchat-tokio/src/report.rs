//! Where background errors and closes go: the event queue (for programs), the error
//! counters behind `stats()`, and `tracing` (for people), at a level that says how
//! much the operator should care.

use chitchat_core::backend::ErrorCounters;
use chitchat_core::{
    CloseEvent, ConnError, ConnErrorKind, ConnEvent, ErrorCounts, EventQueue, Events,
};

/// The event queue and error counters of one server or client.
#[derive(Debug)]
pub(crate) struct Reporter {
    events: EventQueue<ConnEvent>,
    errors: ErrorCounters,
}

impl Reporter {
    pub(crate) fn new(capacity: usize) -> Self {
        Reporter {
            events: EventQueue::new(capacity),
            errors: ErrorCounters::default(),
        }
    }

    /// Logs `error`, counts it, and queues it for subscribers.
    pub(crate) fn error(&self, error: ConnError) {
        use ConnErrorKind::*;
        let kind = error.kind();
        match kind {
            // Routine on any open network: a peer went away or was turned away.
            Io | Refused | RefusedPerIp => tracing::debug!(error = %error),
            IdleTimeout | FrameTimeout | WriteTimeout | TruncatedFrame => {
                tracing::info!(error = %error)
            }
            HandlerPanic => tracing::error!(error = %error),
            _ => tracing::warn!(error = %error),
        }
        self.errors.count(kind);
        self.events.emit(ConnEvent::Error(error));
    }

    /// Queues the close of a connection for subscribers.
    pub(crate) fn closed(&self, event: CloseEvent) {
        self.events.emit(ConnEvent::Closed(event));
    }

    pub(crate) fn subscribe(&self) -> Events<ConnEvent> {
        self.events.subscribe()
    }

    /// Ends every subscription once its events are read.
    pub(crate) fn close(&self) {
        self.events.close();
    }

    pub(crate) fn error_counts(&self) -> ErrorCounts {
        self.errors.snapshot()
    }
}
