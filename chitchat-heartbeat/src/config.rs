//! [`HeartbeatConfig`]: the timings, the key and the limits of the protocol, shared
//! by a master and its nodes. Every limit is on by default, with a value chosen for
//! a master that faces the internet; each says why, and how to turn it off.

use std::time::Duration;

use crate::auth::Keyring;
use crate::wire::ClusterId;

/// Events kept for a reader of a master's or node's event stream that has not read
/// them yet, by default: one event per node for a cluster of a thousand, with room
/// for a burst of state changes.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Settings of the heartbeat protocol, shared by the master and its nodes (the
/// cluster, timings and keyring must match; the limits are the master's or the
/// node's own).
///
/// `#[non_exhaustive]` with public fields: start from `default()` and assign.
///
/// ```
/// use std::time::Duration;
/// use chitchat_heartbeat::HeartbeatConfig;
///
/// let mut config = HeartbeatConfig::default();
/// assert_eq!(config.detection_bound(), Duration::from_secs(14));
/// config.probe_interval = Duration::from_millis(500);
/// config.probe_timeout = Duration::from_millis(300);
/// assert_eq!(config.detection_bound(), Duration::from_millis(2300));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// The cluster the master serves: registrations naming another cluster are
    /// refused, so two clusters sharing a network cannot mix. Default `default`.
    pub cluster: ClusterId,
    /// Time between the starts of two probe rounds: the detection granularity.
    /// Default 3 s. Must not be zero.
    pub probe_interval: Duration,
    /// How long the master waits for a probe's answer before counting a failure;
    /// also how long a node waits for the master's answer to a registration, and
    /// the frame deadline of both ports. Default 2 s: under the interval, so a
    /// round's outcomes are in before the next.
    pub probe_timeout: Duration,
    /// Consecutive failures tolerated: the one after them makes the node Dead.
    /// Default 3, so one lost probe or a short hiccup only makes a node Suspect.
    pub max_failures: u32,
    /// How long a node waits without a probe from a master before it declares that
    /// master lost (and registers again); also the idle timeout of the node's probe
    /// port. Default 10 s: over three probe intervals.
    pub master_timeout: Duration,
    /// The cluster key(s): with a keyring, every message is signed and every
    /// message received must verify, in both directions (see the [crate
    /// docs](crate#threat-model)). Default `None`: unauthenticated, for a trusted
    /// network only; the master reports it
    /// ([`Master::security_warning`](crate::Master::security_warning)).
    pub keyring: Option<Keyring>,
    /// How far ahead of the master's clock an incarnation may be. Incarnations are
    /// start times in milliseconds; one far ahead would lock the id out of every
    /// later run (their incarnations would all be older). Default 5 minutes: clocks
    /// kept by NTP agree within seconds, and a clock set wrong by more is worth an
    /// error. `Duration::MAX` turns the check off.
    pub max_incarnation_skew: Duration,
    /// How long a Dead or Left node stays in the master's table before it is
    /// forgotten, so that memory comes back. Default `Some(10 minutes)`: long
    /// enough to see what died; a node that comes back registers anew. `None`
    /// keeps them until [`Master::remove`](crate::Master::remove).
    pub forget_after: Option<Duration>,
    /// Most nodes in the master's table, live or not. A new id is refused
    /// ([`RefuseReason::TableFull`](crate::RefuseReason::TableFull)) when the table
    /// is full, unless a Dead or Left row can be forgotten (the oldest first);
    /// nodes already in the table are never evicted. Default 10 000: each live
    /// node holds a probe connection (a file descriptor) and a few KiB at the
    /// master. `usize::MAX` turns it off.
    pub max_nodes: usize,
    /// Registrations a master takes per second from one IP address (exact repeats
    /// of a registration in the table are not counted); more are refused with
    /// [`RefuseReason::Busy`](crate::RefuseReason::Busy) and the node retries
    /// later. Default 100: a host runs a few nodes; a flood from one address costs
    /// the table at most 100 rows a second. `u32::MAX` turns it off.
    pub max_registrations_per_ip: u32,
    /// Most bytes of metadata (keys and values, before escaping) a master keeps per
    /// node; a registration with more is refused
    /// ([`RefuseReason::MetadataTooLarge`](crate::RefuseReason::MetadataTooLarge)).
    /// Default 1024: role, zone, version and a few labels; the wire's own bound is
    /// 5 KiB, which times `max_nodes` would be 50 MiB. `usize::MAX` keeps the
    /// wire's bound only.
    pub max_metadata_len: usize,
    /// Whether a node may register a probe address on another host than the one it
    /// registers from. Default `false`: the master dials only the IP the
    /// registration came from, so it cannot be made to connect to a third host
    /// (reflection); unspecified, multicast and broadcast addresses, and loopback
    /// from a non-loopback host, are refused in every case. Set it when nodes
    /// register through a NAT or a proxy.
    pub allow_foreign_probe_addrs: bool,
    /// Connections the master's registration port serves at once; more are refused
    /// at accept. Nodes close after each exchange and the port's frame deadline and
    /// idle timeout are `probe_timeout`, so honest nodes never reach it; it bounds
    /// what slow or idle peers hold. Default 1024.
    pub registration_connections: usize,
    /// Connections a node's probe port serves at once. A master keeps one open to
    /// each node; the rest bounds what strangers hold (frame deadline
    /// `probe_timeout`, idle timeout `master_timeout`). Default 64.
    pub probe_connections: usize,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            cluster: ClusterId(String::from("default")),
            probe_interval: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
            max_failures: 3,
            master_timeout: Duration::from_secs(10),
            keyring: None,
            max_incarnation_skew: Duration::from_secs(5 * 60),
            forget_after: Some(Duration::from_secs(10 * 60)),
            max_nodes: 10_000,
            max_registrations_per_ip: 100,
            max_metadata_len: 1024,
            allow_foreign_probe_addrs: false,
            registration_connections: 1024,
            probe_connections: 64,
        }
    }
}

impl HeartbeatConfig {
    /// The default settings for cluster `cluster`.
    pub fn new(cluster: ClusterId) -> Self {
        HeartbeatConfig {
            cluster,
            ..HeartbeatConfig::default()
        }
    }

    /// The longest time from a node's death to its Dead event, when the master is
    /// not stalled: `probe_interval × (max_failures + 1) + probe_timeout`. (The node
    /// answered a probe just before dying; the next `max_failures + 1` probes fail,
    /// the last one `probe_timeout` after it was sent.)
    pub fn detection_bound(&self) -> Duration {
        self.probe_interval
            .saturating_mul(self.max_failures.saturating_add(1))
            .saturating_add(self.probe_timeout)
    }

    /// The keyring, if any: what signs and verifies every message.
    pub(crate) fn keys(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn defaults_and_bound() {
        let config = HeartbeatConfig::default();
        assert_eq!(config.cluster, "default");
        assert_eq!(config.probe_interval, 3 * SEC);
        assert_eq!(config.probe_timeout, 2 * SEC);
        assert_eq!(config.max_failures, 3);
        assert_eq!(config.master_timeout, 10 * SEC);
        assert_eq!(config.detection_bound(), 14 * SEC);
        assert_eq!(config.keyring, None);
        assert_eq!(config.forget_after, Some(600 * SEC));
        assert_eq!(
            (config.max_nodes, config.max_registrations_per_ip),
            (10_000, 100)
        );
    }
}
