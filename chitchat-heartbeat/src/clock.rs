//! The clocks the roles read: tokio's (paused in tests) for every timing, and the
//! wall clock for the numbers that must grow across restarts (a node's incarnation,
//! a master's epoch) and for the incarnation skew check. Also the small seeded mixer
//! that spreads retries without any global randomness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The current time as the detector takes it: tokio's clock (paused in tests), as a
/// std `Instant`.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Milliseconds since the Unix epoch by the wall clock (0 before 1970).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The wall clock's milliseconds, raised above the last value handed out in this
/// process and above `at_least`: a node restarted within one millisecond, or two
/// masters started together, still get distinct, growing numbers.
pub(crate) fn next_incarnation(at_least: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let clock = unix_millis().max(at_least);
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(clock.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    clock.max(previous.saturating_add(1))
}

/// FNV-1a: a stable hash of an id (std's hasher is randomly seeded).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads the bits of `x` over the whole word.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_grow_within_the_process_and_beat_the_floor() {
        let first = next_incarnation(0);
        let second = next_incarnation(0);
        assert!(second > first);
        assert!(first <= unix_millis() + 1000);
        let floor = unix_millis() + 3_600_000;
        assert!(next_incarnation(floor) >= floor);
    }

    #[test]
    fn the_mixer_is_stable() {
        assert_eq!(mix(1), mix(1));
        assert_ne!(mix(1), mix(2));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
