//! Compact instants for per-connection state: a [`Stamp`] is 8 bytes where tokio's
//! `Instant` is 16, and an `Option<Stamp>` is still 8. A server holding a hundred
//! thousand idle connections keeps four of them per connection.

use std::num::NonZeroU64;
use std::time::Duration;

use tokio::time::Instant;

/// An instant as nanoseconds since an [`Epoch`] (plus one, so that `None` is free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(NonZeroU64);

/// The reference instant of a server's or client's stamps: when it started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn now() -> Self {
        Epoch(Instant::now())
    }

    /// The stamp of `at` (an instant before the epoch is the epoch).
    pub(crate) fn stamp(&self, at: Instant) -> Stamp {
        // u64 nanoseconds cover 584 years of uptime.
        let nanos =
            u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX - 1);
        Stamp(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant of `stamp`.
    pub(crate) fn instant(&self, stamp: Stamp) -> Instant {
        self.0 + Duration::from_nanos(stamp.0.get() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stamps_round_trip_to_the_nanosecond() {
        let epoch = Epoch::now();
        let start = Instant::now();
        assert_eq!(epoch.instant(epoch.stamp(start)), start);
        tokio::time::advance(Duration::from_nanos(1_234_567_891)).await;
        let later = Instant::now();
        assert_eq!(epoch.instant(epoch.stamp(later)), later);
        assert!(epoch.stamp(later) > epoch.stamp(start));
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}
