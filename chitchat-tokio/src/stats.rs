//! The live counters behind `stats()`: frames are added by connection tasks once
//! per poll, not once per frame, and bytes once per system call, so that counting
//! costs nothing measurable.

use std::sync::atomic::{AtomicU64, Ordering};

use chitchat_core::Stats;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    pub(crate) fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds frames a connection handled and queued since its last report.
    pub(crate) fn add_frames(&self, frames_in: u64, frames_out: u64) {
        for (counter, delta) in [(&self.frames_in, frames_in), (&self.frames_out, frames_out)] {
            if delta > 0 {
                counter.fetch_add(delta, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters; the error counts are the reporter's, filled in by the hub.
    pub(crate) fn snapshot(&self) -> Stats {
        let mut stats = Stats::default();
        stats.open = self.open.load(Ordering::Relaxed);
        stats.accepted = self.accepted.load(Ordering::Relaxed);
        stats.refused = self.refused.load(Ordering::Relaxed);
        stats.frames_in = self.frames_in.load(Ordering::Relaxed);
        stats.frames_out = self.frames_out.load(Ordering::Relaxed);
        stats.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        stats.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        stats
    }
}
