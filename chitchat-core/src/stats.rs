//! Counters of a server or client, as a plain snapshot: what monitoring reads.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ConnErrorKind;

/// A snapshot of the counters of a server or client since it started.
///
/// ```
/// use chitchat_core::{ConnErrorKind, Stats};
///
/// let stats = Stats::default();
/// assert_eq!(stats.errors.get(ConnErrorKind::FrameTooLong), 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted (server) or established (client) in all.
    pub accepted: u64,
    /// Connections refused at the connection limit.
    pub refused: u64,
    /// Frames received and handed to the handler.
    pub frames_in: u64,
    /// Frames queued for peers.
    pub frames_out: u64,
    /// Bytes read from transports.
    pub bytes_in: u64,
    /// Bytes written to transports.
    pub bytes_out: u64,
    /// Errors reported, by kind (including those dropped from the event stream).
    pub errors: ErrorCounts,
    /// Events dropped from the event stream because nobody read them in time.
    pub events_dropped: u64,
}

/// Error counts by [`ConnErrorKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ConnErrorKind::ALL.len()]);

impl ErrorCounts {
    /// How many errors of `kind` were reported.
    pub fn get(&self, kind: ConnErrorKind) -> u64 {
        self.0[kind.index()]
    }

    /// All errors, every kind together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The kinds with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (ConnErrorKind, u64)> + '_ {
        ConnErrorKind::ALL
            .iter()
            .map(|&kind| (kind, self.get(kind)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Live error counters, kept by the event sink (for backends).
#[derive(Debug, Default)]
pub(crate) struct ErrorCounters([AtomicU64; ConnErrorKind::ALL.len()]);

impl ErrorCounters {
    pub(crate) fn count(&self, kind: ConnErrorKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ErrorCounts {
        ErrorCounts(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}
