//! The floor under what a heartbeat master spends per probe: the same exchange
//! written with nothing but tokio (and, over UDP, the system calls that batch
//! datagrams), so that `heartbeat_bench` can put the master's CPU per probe next to
//! what the kernel and the runtime alone cost.
//!
//! - [`tcp`]: one connection per node, as the master holds; the floor of the
//!   master as built.
//! - [`udp`]: one socket for every node, probes sent and acks received in batches;
//!   the floor of a datagram probe path, which the master does not have.
//!
//! Both send lines of the length of a real unauthenticated heartbeat probe and ack.
//! What a floor leaves out is everything the master adds: the framer and its
//! limits, deadlines, signing and parsing, the detector's table.

pub mod tcp;
pub mod udp;

/// A probe line, as long as an unauthenticated heartbeat probe for `bench-00000`.
pub const PROBE: &[u8] = b"CHB 2 probe default bench-00000 1764513600000 1764513500000 42 -\n";

/// An ack line, as long as the heartbeat's `probe-ack` to [`PROBE`].
pub const ACK: &[u8] = b"CHB 2 probe-ack default bench-00000 1764513600000 1764513500000 42 -\n";

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// Waits until `acks` reaches `count`, then checks that no more come: one ack
    /// per probe of one round.
    pub(super) async fn expect_acks(acks: &AtomicU64, count: u64) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while acks.load(Ordering::Relaxed) < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("an ack for every probe");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(acks.load(Ordering::Relaxed), count);
    }

    #[test]
    fn probe_and_ack_are_one_line_each() {
        for line in [PROBE, ACK] {
            assert_eq!(memchr::memchr_iter(b'\n', line).count(), 1);
            assert!(line.ends_with(b"\n"));
        }
    }
}
