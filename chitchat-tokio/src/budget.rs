//! The server-wide budget for bytes held in unfinished frames.
//!
//! Each connection alone is bounded by the frame limit, but two thousand peers each
//! holding 60 KiB of a frame they never finish still pin 120 MiB. Connections report
//! how much they hold after every read; when the total passes the budget, the one
//! holding the most is dropped (shed), one at a time, until the total fits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chitchat_core::{CloseReason, ConnError, EventSink};

use crate::handle::{CloseRequest, ConnHandle, ConnShared};
use crate::registry::Registry;
use crate::report;

#[derive(Debug)]
pub(crate) struct PartialBudget {
    limit: usize,
    held: AtomicUsize,
    /// The connection told to go, until it has gone: shed one at a time, so that a
    /// burst over the limit does not drop several peers for one excess.
    victim: Mutex<Option<ConnHandle>>,
    registry: Arc<Registry>,
    events: EventSink,
}

impl PartialBudget {
    pub(crate) fn new(limit: usize, registry: Arc<Registry>, events: EventSink) -> Self {
        PartialBudget {
            limit,
            held: AtomicUsize::new(0),
            victim: Mutex::new(None),
            registry,
            events,
        }
    }

    /// `conn` now holds `now` bytes of an unfinished frame instead of `before`.
    /// Called by the connection's task, which also releases all it holds before it
    /// reports itself closed.
    pub(crate) fn update(&self, conn: &ConnShared, before: usize, now: usize) {
        conn.partial.store(now, Ordering::Relaxed);
        if now < before {
            self.held.fetch_sub(before - now, Ordering::AcqRel);
            return;
        }
        let total = self.held.fetch_add(now - before, Ordering::AcqRel) + (now - before);
        if total > self.limit {
            self.shed_largest();
        }
    }

    fn shed_largest(&self) {
        let mut victim = self.victim.lock().unwrap_or_else(|e| e.into_inner());
        if victim.as_ref().is_some_and(|v| !v.is_closed()) {
            return; // the last one shed is still going
        }
        *victim = None;
        let Some((chosen, held)) = self.registry.largest_partial() else {
            return;
        };
        report::error(
            &self.events,
            ConnError::Shed {
                peer: chosen.peer,
                held,
                budget: self.limit,
            },
        );
        chosen.request_close(CloseRequest::Abort(CloseReason::Shed));
        *victim = Some(chosen);
    }
}
