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
    /// Connections open now (a closed one may still hold its socket for a moment,
    /// writing out and draining: see [`CloseEvent`](crate::CloseEvent)).
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
    /// Errors reported, by kind (whether or not an event stream read them).
    pub errors: ErrorCounts,
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

/// Live error counters by kind, for backends (see [`crate::backend`]).
#[derive(Debug, Default)]
pub struct ErrorCounters([AtomicU64; ConnErrorKind::ALL.len()]);

impl ErrorCounters {
    /// Counts one error of `kind`.
    pub fn count(&self, kind: ConnErrorKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> ErrorCounts {
        ErrorCounts(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}
