//! The server-wide budget for bytes held in unfinished frames.
//!
//! Each connection alone is bounded by the frame limit, but two thousand peers each
//! holding 60 KiB of a frame they never finish still pin 120 MiB. Connections report
//! how much they hold after every read; when the total passes the budget, the one
//! holding the most is dropped (shed), one at a time, until the total fits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chitchat_core::{CloseReason, ConnError};

use crate::handle::{CloseRequest, ConnHandle, ConnShared};
use crate::registry::Registry;
use crate::report::Reporter;

#[derive(Debug)]
pub(crate) struct PartialBudget {
    limit: usize,
    held: AtomicUsize,
    /// Connections told to go that have not gone yet, with what they held: their
    /// bytes are as good as freed, so they count against the excess only once.
    /// Sorted by handle address: one lookup tells whether a candidate is in it.
    shedding: Mutex<Vec<(ConnHandle, usize)>>,
}

impl PartialBudget {
    pub(crate) fn new(limit: usize) -> Self {
        PartialBudget {
            limit,
            held: AtomicUsize::new(0),
            shedding: Mutex::new(Vec::new()),
        }
    }

    /// `conn` now holds `now` bytes for an unfinished frame instead of `before`.
    /// Called by the connection's task, which releases all it holds before it
    /// ends.
    pub(crate) fn update(
        &self,
        conn: &ConnShared,
        before: usize,
        now: usize,
        registry: &Registry,
        reporter: &Reporter,
    ) {
        conn.set_partial(now);
        if now < before {
            self.held.fetch_sub(before - now, Ordering::AcqRel);
            return;
        }
        let total = self.held.fetch_add(now - before, Ordering::AcqRel) + (now - before);
        if total > self.limit {
            self.shed_until_within(registry, reporter);
        }
    }

    /// Sheds the largest holders not already shed until what the rest hold fits.
    fn shed_until_within(&self, registry: &Registry, reporter: &Reporter) {
        let mut shedding = self.shedding.lock().unwrap_or_else(PoisonError::into_inner);
        // Gone ones have released their bytes already.
        shedding.retain(|(conn, _)| conn.partial() > 0);
        let mut going: usize = shedding.iter().map(|&(_, held)| held).sum();
        let find = |list: &[(ConnHandle, usize)], c: &ConnHandle| {
            list.binary_search_by_key(&address(c), |(s, _)| address(s))
        };
        while self.held.load(Ordering::Acquire).saturating_sub(going) > self.limit {
            let chosen = registry.largest_partial(|c| find(&shedding, c).is_ok());
            let Some((chosen, held)) = chosen else {
                return;
            };
            reporter.error(ConnError::Shed {
                peer: chosen.peer(),
                held,
                budget: self.limit,
            });
            chosen.request_close(CloseRequest::Abort(CloseReason::Shed));
            going += held;
            if let Err(at) = find(&shedding, &chosen) {
                shedding.insert(at, (chosen, held));
            }
        }
    }
}

/// A handle's identity for the shedding list: where its shared state lives.
fn address(conn: &ConnHandle) -> usize {
    Arc::as_ptr(conn).addr()
}
