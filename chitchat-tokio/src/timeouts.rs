//! Idle and write timeouts that can change while connections run (the Go library's
//! `SetDeadLine`), read by each connection at its next read or write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `u64::MAX` nanoseconds stands for "no timeout" (585 years).
const NONE: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct LiveTimeouts {
    idle: AtomicU64,
    write: AtomicU64,
}

fn encode(timeout: Option<Duration>) -> u64 {
    timeout.map_or(NONE, |t| u64::try_from(t.as_nanos()).unwrap_or(NONE - 1))
}

fn decode(nanos: u64) -> Option<Duration> {
    (nanos != NONE).then(|| Duration::from_nanos(nanos))
}

impl LiveTimeouts {
    pub(crate) fn new(idle: Option<Duration>, write: Option<Duration>) -> Self {
        LiveTimeouts {
            idle: AtomicU64::new(encode(idle)),
            write: AtomicU64::new(encode(write)),
        }
    }

    pub(crate) fn idle(&self) -> Option<Duration> {
        decode(self.idle.load(Ordering::Relaxed))
    }

    pub(crate) fn write(&self) -> Option<Duration> {
        decode(self.write.load(Ordering::Relaxed))
    }

    pub(crate) fn set_idle(&self, timeout: Option<Duration>) {
        self.idle.store(encode(timeout), Ordering::Relaxed);
    }

    pub(crate) fn set_write(&self, timeout: Option<Duration>) {
        self.write.store(encode(timeout), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_none_and_durations() {
        let timeouts = LiveTimeouts::new(None, Some(Duration::from_millis(5)));
        assert_eq!(timeouts.idle(), None);
        assert_eq!(timeouts.write(), Some(Duration::from_millis(5)));
        timeouts.set_idle(Some(Duration::MAX));
        assert!(timeouts.idle().is_some());
        timeouts.set_write(None);
        assert_eq!(timeouts.write(), None);
    }
}
