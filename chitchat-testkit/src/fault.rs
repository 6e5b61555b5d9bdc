//! Faults of the in-memory network: what each link between two hosts does to the
//! bytes crossing it (latency, jitter, bandwidth, chunking, partitions), and the one
//! seeded random generator every random choice of a [`Network`](crate::Network)
//! draws from.
//!
//! [`LinkConfig`] is the public knob; `Faults` is the network's private bookkeeping,
//! consulted by the connections when they write and read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// How one direction of the link between two hosts treats the bytes sent over it.
///
/// Start from `default()` (an ideal link: no latency, unlimited bandwidth, writes
/// delivered whole) and set what you need, through the fields or the chained setters.
/// A change applies to bytes written after it; bytes already in flight keep their
/// arrival time.
///
/// ```
/// use std::time::Duration;
/// use chitchat_testkit::LinkConfig;
///
/// let wan = LinkConfig::default()
///     .latency(Duration::from_millis(40))
///     .jitter(Duration::from_millis(10))
///     .bandwidth(1_000_000)
///     .chunking(16);
/// assert_eq!(wan.bandwidth, Some(1_000_000));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// Fixed one-way delay before written bytes become readable on the other side.
    pub latency: Duration,
    /// Extra one-way delay drawn uniformly from `0..=jitter` for each piece sent, from
    /// the network's seed. Bytes are never reordered: a piece never overtakes the one
    /// written before it.
    pub jitter: Duration,
    /// Bytes per second the link carries, shared by all connections over it; `None`
    /// for unlimited. With the bounded connection buffers this throttles writers too.
    pub bandwidth: Option<u64>,
    /// Largest piece a write is cut into: each write is delivered as pieces of random
    /// size in `1..=chunking` bytes, each read returning at most one piece, as a
    /// fragmenting network would. `None` delivers writes whole. `Some(1)` delivers
    /// one byte per read.
    pub chunking: Option<usize>,
}

impl LinkConfig {
    /// Sets [`latency`](Self::latency).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`bandwidth`](Self::bandwidth), in bytes per second.
    ///
    /// # Panics
    /// If `bytes_per_sec` is zero: use a partition to stop a link.
    pub fn bandwidth(mut self, bytes_per_sec: u64) -> Self {
        assert!(
            bytes_per_sec > 0,
            "a link of zero bandwidth: use partition()"
        );
        self.bandwidth = Some(bytes_per_sec);
        self
    }

    /// Sets [`chunking`](Self::chunking): writes arrive in pieces of `1..=max_piece`
    /// bytes.
    ///
    /// # Panics
    /// If `max_piece` is zero.
    pub fn chunking(mut self, max_piece: usize) -> Self {
        assert!(max_piece > 0, "pieces of zero bytes never deliver anything");
        self.chunking = Some(max_piece);
        self
    }
}

/// The state of one direction between two hosts.
#[derive(Debug)]
pub(crate) struct Link {
    /// Set by `set_link`; `None` follows the network's default config.
    config: Option<LinkConfig>,
    /// Cut since this instant: nothing crosses until heal (the pipes hold what had
    /// not arrived).
    cut_at: Option<Instant>,
    /// When the link finishes sending what it was given: the bandwidth limit
    /// serialises pieces of all connections over the link.
    busy_until: Option<Instant>,
}

/// One piece of a write as the link will deliver it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Bytes in the piece.
    pub len: usize,
    /// When the piece becomes readable (before the pipe keeps it in order).
    pub ready_at: Instant,
    /// Whether a read must stop after this piece (chunking).
    pub boundary: bool,
}

/// The network's fault bookkeeping and its random generator.
#[derive(Debug)]
pub(crate) struct Faults {
    /// The only source of randomness of the network: seeded once, drawn in the order
    /// operations happen, so that one seed gives one run.
    rng: ChaCha8Rng,
    /// The config of links without one of their own.
    pub default: LinkConfig,
    /// Per ordered `(from, to)` host pair; created on first use.
    links: BTreeMap<(IpAddr, IpAddr), Link>,
    /// Hosts that answer new connections with a refusal.
    pub refusing: BTreeSet<IpAddr>,
}

impl Faults {
    pub fn new(seed: u64, default: LinkConfig) -> Self {
        Faults {
            rng: ChaCha8Rng::seed_from_u64(seed),
            default,
            links: BTreeMap::new(),
            refusing: BTreeSet::new(),
        }
    }

    fn link_mut(&mut self, from: IpAddr, to: IpAddr) -> &mut Link {
        self.links.entry((from, to)).or_insert(Link {
            config: None,
            cut_at: None,
            busy_until: None,
        })
    }

    /// The config in force from `from` to `to`.
    pub fn config(&self, from: IpAddr, to: IpAddr) -> LinkConfig {
        self.links
            .get(&(from, to))
            .and_then(|link| link.config)
            .unwrap_or(self.default)
    }

    /// Gives `from -> to` a config of its own.
    pub fn set_config(&mut self, from: IpAddr, to: IpAddr, config: LinkConfig) {
        self.link_mut(from, to).config = Some(config);
    }

    /// Whether `from -> to` is cut.
    pub fn is_partitioned(&self, from: IpAddr, to: IpAddr) -> bool {
        self.links
            .get(&(from, to))
            .is_some_and(|link| link.cut_at.is_some())
    }

    /// Since when a probe between the two hosts is lost (either direction cut),
    /// or `None` while both directions are up.
    pub fn cut_since(&self, a: IpAddr, b: IpAddr) -> Option<Instant> {
        let at = |from, to| self.links.get(&(from, to)).and_then(|link| link.cut_at);
        match (at(a, b), at(b, a)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// Whether a handshake between the two hosts is lost (either direction is cut).
    pub fn is_blocked(&self, a: IpAddr, b: IpAddr) -> bool {
        self.is_partitioned(a, b) || self.is_partitioned(b, a)
    }

    /// Cuts `from -> to` at `now`; returns false if it was cut already.
    pub fn partition(&mut self, from: IpAddr, to: IpAddr, now: Instant) -> bool {
        let link = self.link_mut(from, to);
        if link.cut_at.is_some() {
            return false;
        }
        link.cut_at = Some(now);
        true
    }

    /// Restores `from -> to`; returns false if it was not cut.
    pub fn heal(&mut self, from: IpAddr, to: IpAddr) -> bool {
        self.links
            .get_mut(&(from, to))
            .is_some_and(|link| link.cut_at.take().is_some())
    }

    /// Every cut direction, in a stable order.
    pub fn partitioned_links(&self) -> Vec<(IpAddr, IpAddr)> {
        self.links
            .iter()
            .filter(|(_, link)| link.cut_at.is_some())
            .map(|(&pair, _)| pair)
            .collect()
    }

    /// One one-way delay of `from -> to`: latency plus a jitter draw.
    pub fn delay(&mut self, from: IpAddr, to: IpAddr) -> Duration {
        let config = self.config(from, to);
        config.latency + self.draw_jitter(config.jitter)
    }

    fn draw_jitter(&mut self, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return Duration::ZERO;
        }
        // Whole microseconds: finer than any test cares about, and the traces print
        // short numbers.
        let max = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.gen_range(0..=max))
    }

    /// Cuts a write of `len` bytes sent `from -> to` at `now` into the pieces the
    /// link delivers, with their arrival times.
    pub fn plan_write(&mut self, from: IpAddr, to: IpAddr, now: Instant, len: usize) -> Vec<Piece> {
        let config = self.config(from, to);
        let mut pieces = Vec::new();
        let mut left = len;
        while left > 0 {
            let piece = match config.chunking {
                Some(max) => self.rng.gen_range(1..=max.min(left)),
                None => left,
            };
            left -= piece;
            let sent_at = match config.bandwidth {
                Some(bytes_per_sec) => {
                    let link = self.link_mut(from, to);
                    let start = link.busy_until.map_or(now, |busy| busy.max(now));
                    let nanos = piece as u128 * 1_000_000_000 / u128::from(bytes_per_sec);
                    let done = start + Duration::from_nanos(nanos.try_into().unwrap_or(u64::MAX));
                    link.busy_until = Some(done);
                    done
                }
                None => now,
            };
            let ready_at = sent_at + config.latency + self.draw_jitter(config.jitter);
            pieces.push(Piece {
                len: piece,
                ready_at,
                boundary: config.chunking.is_some(),
            });
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn ideal_link_delivers_a_write_whole_and_at_once() {
        let mut faults = Faults::new(1, LinkConfig::default());
        let now = Instant::now();
        let pieces = faults.plan_write(A, B, now, 100);
        assert_eq!(
            pieces,
            vec![Piece {
                len: 100,
                ready_at: now,
                boundary: false
            }]
        );
    }

    #[test]
    fn chunking_cuts_writes_into_bounded_pieces_that_add_up() {
        let mut faults = Faults::new(1, LinkConfig::default().chunking(7));
        let pieces = faults.plan_write(A, B, Instant::now(), 1000);
        assert_eq!(pieces.iter().map(|p| p.len).sum::<usize>(), 1000);
        assert!(pieces
            .iter()
            .all(|p| (1..=7).contains(&p.len) && p.boundary));
        let sizes: BTreeSet<usize> = pieces.iter().map(|p| p.len).collect();
        assert!(sizes.len() > 3, "sizes are drawn, not fixed: {sizes:?}");
    }

    #[test]
    fn same_seed_draws_the_same_plan_and_another_seed_another() {
        let config = LinkConfig::default()
            .chunking(50)
            .jitter(Duration::from_millis(20));
        let now = Instant::now();
        let plan = |seed| Faults::new(seed, config).plan_write(A, B, now, 500);
        assert_eq!(plan(3), plan(3));
        assert_ne!(plan(3), plan(4));
    }

    #[test]
    fn jitter_stays_within_latency_plus_jitter() {
        let config = LinkConfig::default()
            .latency(Duration::from_millis(10))
            .jitter(Duration::from_millis(5));
        let mut faults = Faults::new(9, config);
        for _ in 0..100 {
            let delay = faults.delay(A, B);
            assert!(delay >= Duration::from_millis(10) && delay <= Duration::from_millis(15));
        }
    }

    #[test]
    fn bandwidth_serialises_writes_on_the_link() {
        let mut faults = Faults::new(1, LinkConfig::default().bandwidth(1000));
        let now = Instant::now();
        let first = faults.plan_write(A, B, now, 500);
        let second = faults.plan_write(A, B, now, 500);
        assert_eq!(first[0].ready_at, now + Duration::from_millis(500));
        assert_eq!(second[0].ready_at, now + Duration::from_secs(1));
        // The other direction has its own wire.
        assert_eq!(
            faults.plan_write(B, A, now, 1)[0].ready_at,
            now + Duration::from_millis(1)
        );
    }

    #[test]
    fn partition_is_per_direction() {
        let mut faults = Faults::new(1, LinkConfig::default());
        let now = Instant::now();
        assert!(faults.partition(A, B, now));
        assert!(!faults.partition(A, B, now), "cut twice");
        assert!(faults.is_blocked(B, A), "a handshake needs both directions");
        assert!(!faults.is_partitioned(B, A));
        assert_eq!(faults.partitioned_links(), vec![(A, B)]);
        assert_eq!(
            faults.cut_since(B, A),
            Some(now),
            "a probe needs both directions"
        );
        let later = now + Duration::from_secs(1);
        assert!(faults.partition(B, A, later));
        assert_eq!(faults.cut_since(A, B), Some(now), "the first cut counts");
        assert!(faults.heal(B, A));
        assert!(faults.heal(A, B));
        assert_eq!(faults.cut_since(A, B), None);
        assert!(!faults.heal(A, B));
        assert!(!faults.is_blocked(A, B));
    }

    #[test]
    fn per_link_config_overrides_the_default_one_way() {
        let mut faults = Faults::new(1, LinkConfig::default());
        let slow = LinkConfig::default().latency(Duration::from_secs(1));
        faults.set_config(A, B, slow);
        assert_eq!(faults.config(A, B), slow);
        assert_eq!(faults.config(B, A), LinkConfig::default());
    }
}
