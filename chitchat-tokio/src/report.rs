//! Where background errors go: the event stream (for programs) and `tracing` (for
//! people), at a level that says how much the operator should care.

use chitchat_core::{ConnError, ConnErrorKind, EventSink};

/// Logs `error` and queues it on `events`.
pub(crate) fn error(events: &EventSink, error: ConnError) {
    use ConnErrorKind::*;
    match error.kind() {
        // Routine on any open network: a peer went away or was turned away.
        Io | Refused => tracing::debug!(%error),
        IdleTimeout | FrameTimeout | WriteTimeout | TruncatedFrame => tracing::info!(%error),
        HandlerPanic => tracing::error!(%error),
        _ => tracing::warn!(%error),
    }
    events.error(error);
}
