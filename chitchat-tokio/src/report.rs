//! Where background errors go: the event stream (for programs) and `tracing` (for
//! people), at a level that says how much the operator should care.

use std::error::Error;
use std::fmt;

use chitchat_core::{ConnError, ConnErrorKind, EventSink};

/// Logs `error` and queues it on `events`.
pub(crate) fn error(events: &EventSink, error: ConnError) {
    use ConnErrorKind::*;
    let text = Chain(&error);
    match error.kind() {
        // Routine on any open network: a peer went away or was turned away.
        Io | Refused => tracing::debug!(error = %text),
        IdleTimeout | FrameTimeout | WriteTimeout | TruncatedFrame | Handshake => {
            tracing::info!(error = %text)
        }
        HandlerPanic => tracing::error!(error = %text),
        _ => tracing::warn!(error = %text),
    }
    events.error(error);
}

/// An error and its causes, `: `-separated; formatted only if a subscriber wants it.
struct Chain<'a>(&'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}
