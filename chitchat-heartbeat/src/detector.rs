//! The master's failure detector: probe outcomes and the current time in, membership
//! changes out. No clock, no socket, no task: the master's runtime passes `now` to
//! every call (the sans-IO style of quinn-proto), so tests drive time by hand.
//!
//! # States
//! | from             | input                                   | to      | event                        |
//! |------------------|-----------------------------------------|---------|------------------------------|
//! | (none), Left     | `register`                              | Alive   | [`Change::Joined`]           |
//! | Alive            | failed probe (the first)                | Suspect | [`Change::Suspect`]          |
//! | Suspect          | failed probe number `max_failures + 1`  | Dead    | [`Change::Dead`] + evidence  |
//! | Suspect          | successful probe                        | Alive   | [`Change::Alive`]            |
//! | Dead             | `register`                              | Alive   | [`Change::Alive`]            |
//! | Alive, Suspect   | `register` of a newer incarnation       | Alive   | [`Change::Joined`] (`replaced`) |
//! | any but Left     | `leave`                                 | Left    | [`Change::Left`]             |
//!
//! - **Alive → Suspect** on the first failed probe; **Suspect → Dead** when the
//!   consecutive failures exceed [`HeartbeatConfig::max_failures`] (the 4th failure
//!   in a row by default). With `max_failures = 0` the first failure is fatal:
//!   Alive → Dead directly. A successful probe resets the count and brings a Suspect
//!   back to Alive.
//! - A Dead node is no longer probed; it comes back, Alive, by registering again.
//! - **Leave** makes a node Left at once. Dead and Left entries stay in the table for
//!   the snapshot until [`Detector::remove`] or a new registration.
//!
//! # Identity
//! Each run of a node has an incarnation, greater than that of its earlier runs.
//! - A `register` with a **higher** incarnation replaces the old identity, whatever
//!   its state: a restarted node is one entry, never two. Over a live entry this is
//!   [`Change::Joined`] with `replaced: Some(old)`; over a Dead one, [`Change::Alive`].
//! - A `register` with a **lower** incarnation is refused:
//!   [`RegisterError::StaleIncarnation`].
//! - The **same** incarnation again, from the same address, while the node is live,
//!   is a repeat (the node missed the ack): accepted, no event, metadata updated.
//! - The same incarnation from **another address** while the node is live is a
//!   second process claiming the same id and run: refused with
//!   [`RegisterError::DuplicateId`]; the first one keeps the id. (A second process
//!   with a *higher* incarnation cannot be told from a restart, and replaces the
//!   first, which is then refused as stale when it re-registers.) Once the entry is
//!   Dead or Left, the same incarnation may register from anywhere.
//! - Probe outcomes and `leave` for another incarnation than the entry's are ignored
//!   (a `leave` from a newer one is applied: that run is leaving).
//!
//! # Timing and stalls
//! The master calls [`Detector::tick`] at the start of every probe round, probes each
//! live node once per round, and reports one outcome per probe. A node that dies just
//! after answering a probe is declared Dead within the detection bound
//! ([`HeartbeatConfig::detection_bound`]):
//!
//! `probe_interval × (max_failures + 1) + probe_timeout` (14 s by default).
//!
//! If the master's own runtime stalls (overloaded host, paused VM, debugger), its
//! probe timeouts fire late and look like failures of every node at once. A round
//! is **stalled** when its tick comes more than one `probe_interval` after it was due
//! (the tick before it plus `probe_interval`); the tick then emits
//! [`Event::Stalled`] instead of anyone's failure:
//! - a failure reported while the next tick is overdue by more than one interval
//!   (the stall is under way and not yet measured) is not counted;
//! - after a stalled tick, failures reported within `probe_timeout` of it are not
//!   counted: they are timeouts of probes sent before the stall, firing late. A
//!   node that is really down is caught one round later.
//!
//! Successes are always counted.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use chitchat_heartbeat::{Change, Detector, Event, HeartbeatConfig, Metadata, NodeId, NodeState};
//!
//! let config = HeartbeatConfig::default();
//! let (interval, timeout) = (config.probe_interval, config.probe_timeout);
//! let mut detector = Detector::new(config);
//! let t0 = Instant::now();
//! let node = NodeId::new("node-1").unwrap();
//! let addr = "127.0.0.1:7001".parse().unwrap();
//! detector.register(t0, node, addr, 1, Metadata::new()).unwrap();
//!
//! // The node stops answering: four rounds of failed probes.
//! for round in 1..=4 {
//!     let start = t0 + interval * round;
//!     detector.tick(start);
//!     detector.probe_failed(start + timeout, "node-1", 1);
//! }
//! let changes: Vec<&str> = detector
//!     .drain_events()
//!     .filter_map(|event| match event {
//!         Event::Node(event) => Some(event.change.as_str()),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(changes, ["joined", "suspect", "dead"]);
//! assert_eq!(detector.node("node-1").unwrap().state, NodeState::Dead);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use chitchat_core::Addr;

use crate::wire::{ClusterId, Metadata, NodeId, RefuseReason};

/// Settings of the heartbeat protocol, shared by the master and its nodes.
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
    /// How long the master waits for a probe's answer before counting a failure.
    /// Default 2 s: under the interval, so a round's outcomes are in before the next.
    pub probe_timeout: Duration,
    /// Consecutive failures tolerated: the one after them makes the node Dead.
    /// Default 3, so one lost probe or a short hiccup only makes a node Suspect.
    pub max_failures: u32,
    /// How long a node waits without a probe before it declares the master lost
    /// and registers again. Default 10 s: over three probe intervals.
    pub master_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            cluster: ClusterId(String::from("default")),
            probe_interval: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(2),
            max_failures: 3,
            master_timeout: Duration::from_secs(10),
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
}

/// Where a node stands in the master's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Answers its probes.
    Alive,
    /// Missed its last probes, but not more than `max_failures` of them.
    Suspect,
    /// Missed more than `max_failures` probes in a row; no longer probed.
    Dead,
    /// Left gracefully; no longer probed.
    Left,
}

impl NodeState {
    /// Whether the node is probed: Alive or Suspect.
    pub fn is_live(&self) -> bool {
        matches!(self, NodeState::Alive | NodeState::Suspect)
    }

    /// `alive`, `suspect`, `dead` or `left`.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
            NodeState::Left => "left",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the membership table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeSnapshot {
    /// The node's id: the key of the table.
    pub node: NodeId,
    /// Where the node answers probes.
    pub addr: Addr,
    /// Current state.
    pub state: NodeState,
    /// Round-trip time of the last successful probe of this incarnation.
    pub last_rtt: Option<Duration>,
    /// Failed probes in a row (0 after a success).
    pub failures: u32,
    /// When the node entered its current state.
    pub since: Instant,
    /// The run of the node this entry describes.
    pub incarnation: u64,
    /// The labels it registered with.
    pub metadata: Metadata,
}

/// Why a node was declared Dead, for the log line that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evidence {
    /// Failed probes in a row (`threshold + 1`).
    pub failures: u32,
    /// The configured `max_failures` they exceeded.
    pub threshold: u32,
    /// Time since the last successful probe; `None` if no probe of this incarnation
    /// ever succeeded.
    pub last_success_age: Option<Duration>,
}

/// What happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Registered: new id, a return after Left, or a newer run of a live node.
    Joined {
        /// The incarnation this one replaced while it was still live (a restart
        /// faster than detection), else `None`.
        replaced: Option<u64>,
    },
    /// First failed probe: Alive → Suspect.
    Suspect,
    /// Back to Alive: a Suspect answered a probe, or a Dead node registered again.
    Alive {
        /// The state it came back from.
        from: NodeState,
    },
    /// Too many failed probes in a row.
    Dead(Evidence),
    /// Left gracefully.
    Left,
}

impl Change {
    /// `joined`, `suspect`, `alive`, `dead` or `left`: the word for event lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Joined { .. } => "joined",
            Change::Suspect => "suspect",
            Change::Alive { .. } => "alive",
            Change::Dead(_) => "dead",
            Change::Left => "left",
        }
    }
}

/// A node changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeEvent {
    /// The node.
    pub node: NodeId,
    /// Its probe address (after the change).
    pub addr: Addr,
    /// Its incarnation (after the change).
    pub incarnation: u64,
    /// The `now` of the input that caused the change.
    pub at: Instant,
    /// What changed.
    pub change: Change,
}

/// The master's probe rounds ran late: its runtime was stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// When the tick was due.
    pub expected: Instant,
    /// When it came.
    pub actual: Instant,
    /// `actual - expected`, more than one probe interval.
    pub drift: Duration,
}

/// An output of the detector, in the order the changes happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A node changed state.
    Node(NodeEvent),
    /// The master itself was stalled; the probes it missed were not counted.
    Stalled(Stall),
}

/// A registration the master refuses; the table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A live node already has this id and incarnation, at another address.
    #[error("node id {node} is taken by a live node at {existing} with the same incarnation (claimed from {claimed})")]
    DuplicateId {
        /// The id claimed.
        node: NodeId,
        /// The address of the node holding it.
        existing: Addr,
        /// The address in the refused registration.
        claimed: Addr,
    },
    /// The master knows a newer run of this node.
    #[error("node {node} registered with incarnation {got}, older than the known {current}")]
    StaleIncarnation {
        /// The node.
        node: NodeId,
        /// The incarnation in the table.
        current: u64,
        /// The incarnation in the refused registration.
        got: u64,
    },
}

impl RegisterError {
    /// The reason to send in the `refuse` reply.
    pub fn refuse_reason(&self) -> RefuseReason {
        match self {
            RegisterError::DuplicateId { .. } => RefuseReason::DuplicateId,
            RegisterError::StaleIncarnation { .. } => RefuseReason::StaleIncarnation,
        }
    }
}

/// The membership table and the rules that move nodes between states (see the
/// [module docs](self)).
#[derive(Clone, Debug)]
pub struct Detector {
    config: HeartbeatConfig,
    nodes: BTreeMap<NodeId, Entry>,
    /// Changes not yet drained; drain after every input to keep this short.
    events: VecDeque<Event>,
    /// Ticks so far: tells whether a node's outcome for the current round is in.
    round: u64,
    /// Start of the current round: the base of drift measurement.
    last_tick: Option<Instant>,
    /// When the last stalled tick came: failures within `probe_timeout` of it are
    /// late timeouts of probes sent before the stall.
    stall_end: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Entry {
    status: NodeSnapshot,
    /// Base of [`Evidence::last_success_age`].
    last_success: Option<Instant>,
    /// The round of the last counted outcome (or of registration): if older than the
    /// current round, a probe is in flight.
    outcome_round: u64,
}

impl Detector {
    /// An empty table applying `config`.
    ///
    /// # Panics
    /// If `config.probe_interval` is zero: there would be no rounds to measure.
    pub fn new(config: HeartbeatConfig) -> Self {
        assert!(
            !config.probe_interval.is_zero(),
            "heartbeat probe_interval must not be zero"
        );
        Detector {
            config,
            nodes: BTreeMap::new(),
            events: VecDeque::new(),
            round: 0,
            last_tick: None,
            stall_end: None,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    /// A node registers (see the identity rules in the [module docs](self)). On
    /// success the master sends `register-ack`, also for a repeated registration.
    ///
    /// # Errors
    /// [`RegisterError::StaleIncarnation`] or [`RegisterError::DuplicateId`]: the
    /// master sends `refuse` with [`RegisterError::refuse_reason`].
    // `DuplicateId` names two addresses, so the error is over clippy's 128 bytes; a
    // refusal is rare and off the probe path, and boxing would cost every caller.
    #[allow(clippy::result_large_err)]
    pub fn register(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Addr,
        incarnation: u64,
        metadata: Metadata,
    ) -> Result<(), RegisterError> {
        let change = match self.nodes.get_mut(node.as_str()) {
            None => Change::Joined { replaced: None },
            Some(entry) => {
                let current = entry.status.incarnation;
                let state = entry.status.state;
                if incarnation < current {
                    return Err(RegisterError::StaleIncarnation {
                        node,
                        current,
                        got: incarnation,
                    });
                }
                if incarnation == current && state.is_live() {
                    if entry.status.addr != addr {
                        return Err(RegisterError::DuplicateId {
                            node,
                            existing: entry.status.addr,
                            claimed: addr,
                        });
                    }
                    entry.status.metadata = metadata;
                    return Ok(());
                }
                match state {
                    NodeState::Alive | NodeState::Suspect => Change::Joined {
                        replaced: Some(current),
                    },
                    NodeState::Dead => Change::Alive { from: state },
                    NodeState::Left => Change::Joined { replaced: None },
                }
            }
        };
        let status = NodeSnapshot {
            node: node.clone(),
            addr,
            state: NodeState::Alive,
            last_rtt: None,
            failures: 0,
            since: now,
            incarnation,
            metadata,
        };
        push_change(&mut self.events, &status, now, change);
        self.nodes.insert(
            node,
            Entry {
                status,
                last_success: None,
                outcome_round: self.round,
            },
        );
        Ok(())
    }

    /// The node sent `leave`: it becomes Left at once.
    ///
    /// Returns whether the table changed: `false` for an unknown node, an older
    /// incarnation, or a node already Left.
    pub fn leave(&mut self, now: Instant, node: &str, incarnation: u64) -> bool {
        let Some(entry) = self.nodes.get_mut(node) else {
            return false;
        };
        if incarnation < entry.status.incarnation || entry.status.state == NodeState::Left {
            return false;
        }
        entry.status.incarnation = incarnation;
        set_state(&mut self.events, entry, NodeState::Left, now, Change::Left);
        true
    }

    /// A probe of `node` was answered after `rtt`, with this `incarnation` in the
    /// `probe-ack`. Resets the failure count; a Suspect becomes Alive.
    ///
    /// Returns whether it was counted: `false` for an unknown node, another
    /// incarnation, or a node that is Dead or Left.
    pub fn probe_succeeded(
        &mut self,
        now: Instant,
        node: &str,
        incarnation: u64,
        rtt: Duration,
    ) -> bool {
        let round = self.round;
        let Some(entry) = live_entry(&mut self.nodes, node, incarnation) else {
            return false;
        };
        entry.last_success = Some(now);
        entry.outcome_round = round;
        entry.status.last_rtt = Some(rtt);
        entry.status.failures = 0;
        if entry.status.state == NodeState::Suspect {
            let change = Change::Alive {
                from: NodeState::Suspect,
            };
            set_state(&mut self.events, entry, NodeState::Alive, now, change);
        }
        true
    }

    /// A probe of `node` (which the master knows at `incarnation`) got no valid
    /// answer: timeout, connection error, or a `probe-ack` of another incarnation.
    /// The first failure makes the node Suspect, failure `max_failures + 1` in a row
    /// makes it Dead.
    ///
    /// Returns whether it was counted: `false` for an unknown node, another
    /// incarnation, a node that is Dead or Left, or a failure reported during or
    /// just after a stall of the master (see the [module docs](self)).
    pub fn probe_failed(&mut self, now: Instant, node: &str, incarnation: u64) -> bool {
        if self.is_stall_artifact(now) {
            return false;
        }
        let (round, threshold) = (self.round, self.config.max_failures);
        let Some(entry) = live_entry(&mut self.nodes, node, incarnation) else {
            return false;
        };
        entry.outcome_round = round;
        entry.status.failures = entry.status.failures.saturating_add(1);
        if entry.status.failures > threshold {
            let evidence = Evidence {
                failures: entry.status.failures,
                threshold,
                last_success_age: entry.last_success.map(|t| now.saturating_duration_since(t)),
            };
            let change = Change::Dead(evidence);
            set_state(&mut self.events, entry, NodeState::Dead, now, change);
        } else if entry.status.state == NodeState::Alive {
            set_state(
                &mut self.events,
                entry,
                NodeState::Suspect,
                now,
                Change::Suspect,
            );
        }
        true
    }

    /// A probe round starts. Call it once per `probe_interval`, before sending the
    /// round's probes, even when there is no node to probe: it measures the master's
    /// timer drift, and emits [`Event::Stalled`] when this tick is more than one
    /// `probe_interval` late (so a master that skips ticks reports a stall).
    pub fn tick(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        if let Some(expected) = self.last_tick.and_then(|t| t.checked_add(interval)) {
            let drift = now.saturating_duration_since(expected);
            if drift > interval {
                self.events.push_back(Event::Stalled(Stall {
                    expected,
                    actual: now,
                    drift,
                }));
                self.stall_end = Some(now);
            }
        }
        self.round += 1;
        self.last_tick = Some(now);
    }

    /// A failure reported at `now` may be an effect of the master's own stall.
    fn is_stall_artifact(&self, now: Instant) -> bool {
        let overdue = self.last_tick.is_some_and(|t| {
            now.saturating_duration_since(t) > self.config.probe_interval.saturating_mul(2)
        });
        let after_stall = self
            .stall_end
            .is_some_and(|end| now.saturating_duration_since(end) < self.config.probe_timeout);
        overdue || after_stall
    }

    /// Takes the pending events, oldest first.
    pub fn drain_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain(..)
    }

    /// The row of `node`, if it is in the table.
    pub fn node(&self, node: &str) -> Option<&NodeSnapshot> {
        self.nodes.get(node).map(|entry| &entry.status)
    }

    /// Every row, ordered by node id.
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        self.nodes.values().map(|e| e.status.clone()).collect()
    }

    /// The nodes to probe this round (Alive or Suspect), ordered by node id.
    pub fn probe_targets(&self) -> impl Iterator<Item = &NodeSnapshot> {
        self.nodes
            .values()
            .map(|entry| &entry.status)
            .filter(|status| status.state.is_live())
    }

    /// Drops the row of `node` (to forget Dead and Left nodes), returning it.
    pub fn remove(&mut self, node: &str) -> Option<NodeSnapshot> {
        self.nodes.remove(node).map(|entry| entry.status)
    }

    /// How long from `now` until `node` would be declared Dead if every further
    /// probe failed, assuming one probe per round at each tick: the pending probe of
    /// the current round (if its outcome is not in) fails at the round start plus
    /// `probe_timeout`, the next ones one `probe_interval` apart, until failure
    /// `max_failures + 1`. `None` for an unknown, Dead or Left node.
    ///
    /// Once the probe sent at a tick has succeeded, it is the detection bound
    /// ([`HeartbeatConfig::detection_bound`]) minus the time since that tick.
    pub fn time_until_dead(&self, node: &str, now: Instant) -> Option<Duration> {
        let entry = self.nodes.get(node)?;
        if !entry.status.state.is_live() {
            return None;
        }
        let HeartbeatConfig {
            probe_interval,
            probe_timeout,
            max_failures,
            ..
        } = self.config;
        let remaining = max_failures
            .saturating_add(1)
            .saturating_sub(entry.status.failures)
            .max(1);
        let first_failure = match self.last_tick {
            None => now.checked_add(probe_timeout),
            Some(tick) if entry.outcome_round < self.round => {
                tick.checked_add(probe_timeout).map(|t| t.max(now))
            }
            Some(tick) => tick
                .checked_add(probe_interval)
                .map(|next| next.max(now))
                .and_then(|next| next.checked_add(probe_timeout)),
        };
        let dead_at =
            first_failure.and_then(|t| t.checked_add(probe_interval.saturating_mul(remaining - 1)));
        Some(dead_at.map_or(Duration::MAX, |t| t.saturating_duration_since(now)))
    }
}

fn live_entry<'a>(
    nodes: &'a mut BTreeMap<NodeId, Entry>,
    node: &str,
    incarnation: u64,
) -> Option<&'a mut Entry> {
    nodes
        .get_mut(node)
        .filter(|entry| entry.status.incarnation == incarnation && entry.status.state.is_live())
}

fn set_state(
    events: &mut VecDeque<Event>,
    entry: &mut Entry,
    state: NodeState,
    now: Instant,
    change: Change,
) {
    entry.status.state = state;
    entry.status.since = now;
    push_change(events, &entry.status, now, change);
}

fn push_change(events: &mut VecDeque<Event>, status: &NodeSnapshot, at: Instant, change: Change) {
    events.push_back(Event::Node(NodeEvent {
        node: status.node.clone(),
        addr: status.addr,
        incarnation: status.incarnation,
        at,
        change,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn local(port: u16) -> Addr {
        Addr::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A detector with the default config, one time origin, and helpers that speak
    /// in seconds since it.
    struct Harness {
        detector: Detector,
        t0: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Harness::with(HeartbeatConfig::default())
        }

        fn with(config: HeartbeatConfig) -> Self {
            Harness {
                detector: Detector::new(config),
                t0: Instant::now(),
            }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        #[allow(clippy::result_large_err)] // see Detector::register
        fn register(
            &mut self,
            secs: f64,
            node: &str,
            port: u16,
            inc: u64,
        ) -> Result<(), RegisterError> {
            let now = self.at(secs);
            let addr = local(port);
            let node = NodeId::new(node).unwrap();
            self.detector
                .register(now, node, addr, inc, Metadata::new())
        }

        fn tick(&mut self, secs: f64) {
            let now = self.at(secs);
            self.detector.tick(now);
        }

        fn fail(&mut self, secs: f64, node: &str, inc: u64) -> bool {
            let now = self.at(secs);
            self.detector.probe_failed(now, node, inc)
        }

        fn succeed(&mut self, secs: f64, node: &str, inc: u64) -> bool {
            let now = self.at(secs);
            self.detector
                .probe_succeeded(now, node, inc, Duration::from_millis(5))
        }

        /// Rounds at 3 s, 6 s... each probe failing at its timeout.
        fn fail_rounds(&mut self, rounds: std::ops::RangeInclusive<u32>, node: &str, inc: u64) {
            for round in rounds {
                let start = 3.0 * f64::from(round);
                self.tick(start);
                self.fail(start + 2.0, node, inc);
            }
        }

        fn changes(&mut self) -> Vec<(String, Change)> {
            self.detector
                .drain_events()
                .filter_map(|event| match event {
                    Event::Node(e) => Some((e.node.to_string(), e.change)),
                    Event::Stalled(_) => None,
                })
                .collect()
        }

        fn names(&mut self) -> Vec<&'static str> {
            self.changes().iter().map(|(_, c)| c.as_str()).collect()
        }

        fn state(&self, node: &str) -> NodeState {
            self.detector.node(node).unwrap().state
        }
    }

    #[test]
    fn register_joins_alive() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 7).unwrap();
        let node = h.detector.node("a").unwrap();
        assert_eq!(
            (node.state, node.incarnation, node.failures, node.since),
            (NodeState::Alive, 7, 0, h.t0)
        );
        assert_eq!(
            h.changes(),
            [("a".into(), Change::Joined { replaced: None })]
        );
    }

    #[test]
    fn first_failure_makes_suspect_and_fourth_makes_dead() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.changes();
        h.fail_rounds(1..=1, "a", 1);
        assert_eq!(h.state("a"), NodeState::Suspect);
        assert_eq!(h.names(), ["suspect"]);
        h.fail_rounds(2..=3, "a", 1);
        assert_eq!(h.state("a"), NodeState::Suspect);
        assert_eq!(h.detector.node("a").unwrap().failures, 3);
        assert!(h.names().is_empty());
        h.fail_rounds(4..=4, "a", 1);
        assert_eq!(h.state("a"), NodeState::Dead);
        assert_eq!(h.detector.node("a").unwrap().since, h.at(14.0));
        assert_eq!(h.names(), ["dead"]);
    }

    #[test]
    fn dead_event_carries_its_evidence() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.tick(3.0);
        assert!(h.succeed(3.1, "a", 1));
        h.fail_rounds(2..=5, "a", 1);
        let events: Vec<Event> = h.detector.drain_events().collect();
        let Some(Event::Node(dead)) = events.last() else {
            panic!("no event")
        };
        let expected = Evidence {
            failures: 4,
            threshold: 3,
            last_success_age: Some(Duration::from_secs_f64(17.0 - 3.1)),
        };
        assert_eq!(dead.change, Change::Dead(expected));
        assert_eq!((dead.at, dead.incarnation), (h.at(17.0), 1));
        assert_eq!(dead.addr.as_inet().unwrap().port(), 1);
    }

    #[test]
    fn evidence_without_any_success_has_no_age() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=4, "a", 1);
        let (_, dead) = h.changes().pop().unwrap();
        assert!(matches!(
            dead,
            Change::Dead(Evidence {
                last_success_age: None,
                ..
            })
        ));
    }

    #[test]
    fn success_brings_suspect_back_and_resets_the_count() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=3, "a", 1);
        h.tick(12.0);
        assert!(h.succeed(12.01, "a", 1));
        let node = h.detector.node("a").unwrap();
        assert_eq!(
            (node.state, node.failures, node.since),
            (NodeState::Alive, 0, h.at(12.01))
        );
        assert_eq!(node.last_rtt, Some(Duration::from_millis(5)));
        assert_eq!(
            h.changes()[1..],
            [
                ("a".into(), Change::Suspect),
                (
                    "a".into(),
                    Change::Alive {
                        from: NodeState::Suspect
                    }
                )
            ]
        );
        // Failures must be consecutive: three more only make it Suspect again.
        h.fail_rounds(5..=7, "a", 1);
        assert_eq!(h.state("a"), NodeState::Suspect);
    }

    #[test]
    fn zero_max_failures_goes_straight_to_dead() {
        let mut h = Harness::with(HeartbeatConfig {
            max_failures: 0,
            ..HeartbeatConfig::default()
        });
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=1, "a", 1);
        assert_eq!(h.names(), ["joined", "dead"]);
    }

    #[test]
    fn dead_node_is_not_probed_and_ignores_outcomes() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.register(0.0, "b", 2, 1).unwrap();
        h.fail_rounds(1..=4, "a", 1);
        let targets: Vec<_> = h
            .detector
            .probe_targets()
            .map(|n| n.node.to_string())
            .collect();
        assert_eq!(targets, ["b"]);
        h.changes();
        assert!(!h.succeed(15.0, "a", 1));
        assert!(!h.fail(15.0, "a", 1));
        assert_eq!(h.state("a"), NodeState::Dead);
        assert!(h.changes().is_empty());
    }

    #[test]
    fn dead_node_that_registers_again_is_alive_again() {
        for (port, inc) in [(1, 1), (9, 1), (9, 2)] {
            let mut h = Harness::new();
            h.register(0.0, "a", 1, 1).unwrap();
            h.fail_rounds(1..=4, "a", 1);
            h.changes();
            h.register(20.0, "a", port, inc).unwrap();
            assert_eq!(
                h.changes(),
                [(
                    "a".into(),
                    Change::Alive {
                        from: NodeState::Dead
                    }
                )]
            );
            let node = h.detector.node("a").unwrap();
            assert_eq!(
                (node.state, node.failures, node.incarnation, node.since),
                (NodeState::Alive, 0, inc, h.at(20.0))
            );
            assert_eq!(node.addr.as_inet().unwrap().port(), port);
        }
    }

    #[test]
    fn leave_makes_left_at_once() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=1, "a", 1);
        h.changes();
        assert!(h.detector.leave(h.at(4.0), "a", 1));
        assert_eq!(h.state("a"), NodeState::Left);
        assert_eq!(h.names(), ["left"]);
        assert!(!h.detector.leave(h.at(5.0), "a", 1), "already left");
        assert!(!h.detector.leave(h.at(5.0), "nobody", 1));
        assert!(h.detector.probe_targets().next().is_none());
        assert_eq!(h.detector.time_until_dead("a", h.at(5.0)), None);
    }

    #[test]
    fn leave_of_an_older_incarnation_is_ignored() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 5).unwrap();
        assert!(!h.detector.leave(h.at(1.0), "a", 4));
        assert_eq!(h.state("a"), NodeState::Alive);
        assert!(h.detector.leave(h.at(1.0), "a", 6), "a newer run leaving");
        assert_eq!(h.detector.node("a").unwrap().incarnation, 6);
    }

    #[test]
    fn left_node_can_join_again() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.detector.leave(h.at(1.0), "a", 1);
        h.changes();
        h.register(2.0, "a", 2, 1).unwrap();
        assert_eq!(
            h.changes(),
            [("a".into(), Change::Joined { replaced: None })]
        );
        assert_eq!(h.state("a"), NodeState::Alive);
    }

    #[test]
    fn repeated_registration_is_idempotent() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=1, "a", 1);
        h.changes();
        let mut metadata = Metadata::new();
        metadata.insert("role", "worker").unwrap();
        let addr = local(1);
        let node = NodeId::new("a").unwrap();
        h.detector
            .register(h.at(5.0), node, addr, 1, metadata)
            .unwrap();
        assert!(h.changes().is_empty(), "no second Joined");
        let row = h.detector.node("a").unwrap();
        assert_eq!(
            (row.state, row.failures, row.since),
            (NodeState::Suspect, 1, h.at(5.0))
        );
        assert_eq!(row.metadata.get("role"), Some("worker"));
    }

    #[test]
    fn same_incarnation_from_another_address_is_a_duplicate() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        let err = h.register(1.0, "a", 2, 1).unwrap_err();
        assert_eq!(
            err,
            RegisterError::DuplicateId {
                node: NodeId::new("a").unwrap(),
                existing: local(1),
                claimed: local(2),
            }
        );
        assert_eq!(err.refuse_reason(), RefuseReason::DuplicateId);
        // Still refused while Suspect; the holder keeps its row.
        h.fail_rounds(1..=1, "a", 1);
        assert!(h.register(4.0, "a", 2, 1).is_err());
        assert_eq!(
            h.detector.node("a").unwrap().addr.as_inet().unwrap().port(),
            1
        );
    }

    #[test]
    fn higher_incarnation_replaces_a_live_identity() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.fail_rounds(1..=2, "a", 1);
        h.changes();
        h.register(7.0, "a", 2, 2).unwrap();
        assert_eq!(
            h.changes(),
            [("a".into(), Change::Joined { replaced: Some(1) })]
        );
        assert_eq!(
            h.detector.snapshot().len(),
            1,
            "never two entries for one id"
        );
        let row = h.detector.node("a").unwrap();
        assert_eq!(
            (row.state, row.failures, row.incarnation),
            (NodeState::Alive, 0, 2)
        );
        // The old run's outcomes no longer count.
        assert!(!h.fail(8.0, "a", 1));
        assert!(!h.succeed(8.0, "a", 1));
        assert!(h.succeed(8.0, "a", 2));
    }

    #[test]
    fn older_incarnation_is_refused_as_stale() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 5).unwrap();
        let err = h.register(1.0, "a", 1, 4).unwrap_err();
        assert_eq!(err.refuse_reason(), RefuseReason::StaleIncarnation);
        assert_eq!(
            err.to_string(),
            "node a registered with incarnation 4, older than the known 5"
        );
        h.fail_rounds(1..=4, "a", 5);
        assert!(h.register(20.0, "a", 1, 4).is_err(), "also once Dead");
    }

    #[test]
    fn outcomes_of_unknown_nodes_or_other_incarnations_are_ignored() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 5).unwrap();
        h.changes();
        assert!(!h.fail(1.0, "b", 5));
        assert!(!h.fail(1.0, "a", 4));
        assert!(!h.fail(1.0, "a", 6));
        assert!(!h.succeed(1.0, "a", 6));
        assert!(h.changes().is_empty());
        assert_eq!(h.detector.node("a").unwrap().failures, 0);
    }

    #[test]
    fn late_tick_reports_a_stall() {
        let mut h = Harness::new();
        h.tick(0.0);
        h.tick(3.0);
        h.tick(8.9); // 2.9 s late: under one interval, not a stall
        assert_eq!(h.detector.drain_events().count(), 0);
        h.tick(15.0); // due at 11.9: 3.1 s late
        let events: Vec<Event> = h.detector.drain_events().collect();
        assert_eq!(
            events,
            [Event::Stalled(Stall {
                expected: h.at(11.9),
                actual: h.at(15.0),
                drift: h.at(15.0) - h.at(11.9),
            })]
        );
    }

    #[test]
    fn failures_during_and_just_after_a_stall_are_not_counted() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.tick(0.0);
        // The runtime freezes from 0.5 s to 20 s: the probe timeout of round 0 fires
        // late, before or after the late tick.
        assert!(!h.fail(20.0, "a", 1), "tick overdue: stall under way");
        h.tick(20.0);
        assert!(
            !h.fail(20.001, "a", 1),
            "timeout of a probe sent before the stall"
        );
        assert_eq!(h.state("a"), NodeState::Alive);
        assert_eq!(h.names(), ["joined"]);
        // The round after the stall counts again.
        assert!(h.fail(22.0, "a", 1));
        assert_eq!(h.state("a"), NodeState::Suspect);
    }

    #[test]
    fn a_stall_never_kills_everyone_at_once() {
        let mut h = Harness::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            h.register(0.0, name, i as u16, 1).unwrap();
        }
        h.fail_rounds(1..=3, "a", 1); // "a" is really down
        h.changes();
        // Stalled for a minute: every pending probe times out at once.
        for name in ["a", "b", "c"] {
            h.fail(70.0, name, 1);
        }
        h.tick(70.0);
        for name in ["a", "b", "c"] {
            h.fail(70.0, name, 1);
        }
        assert!(h.names().is_empty());
        assert_eq!(h.state("b"), NodeState::Alive);
        // "a" is still caught on the next real failure.
        h.fail(72.0, "a", 1);
        assert_eq!(h.state("a"), NodeState::Dead);
    }

    #[test]
    fn time_until_dead_follows_the_rounds() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        // No tick yet: a probe now would fail after the timeout, then 3 more rounds.
        assert_eq!(h.detector.time_until_dead("a", h.at(0.0)), Some(11 * SEC));
        h.tick(3.0);
        // Probe in flight: fails at 5 s, dead at 5 + 9 = 14 s.
        assert_eq!(h.detector.time_until_dead("a", h.at(3.0)), Some(11 * SEC));
        h.succeed(3.0, "a", 1);
        // Outcome in: the worst case is the detection bound.
        assert_eq!(
            h.detector.time_until_dead("a", h.at(3.0)),
            Some(h.detector.config().detection_bound())
        );
        assert_eq!(h.detector.time_until_dead("a", h.at(4.0)), Some(13 * SEC));
        h.tick(6.0);
        h.fail(8.0, "a", 1);
        // Two failures: 3 left, the next at 11 s, dead at 17 s.
        assert_eq!(h.detector.time_until_dead("a", h.at(8.0)), Some(9 * SEC));
        h.fail_rounds(3..=5, "a", 1);
        assert_eq!(h.state("a"), NodeState::Dead);
        assert_eq!(h.detector.time_until_dead("a", h.at(17.0)), None);
        assert_eq!(h.detector.time_until_dead("nobody", h.at(17.0)), None);
    }

    #[test]
    fn time_until_dead_is_met_by_the_detector() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.tick(0.0);
        h.succeed(0.01, "a", 1);
        let deadline = h.at(0.01) + h.detector.time_until_dead("a", h.at(0.01)).unwrap();
        h.fail_rounds(1..=4, "a", 1);
        assert_eq!(h.detector.node("a").unwrap().since, deadline);
    }

    #[test]
    fn snapshot_is_ordered_and_complete() {
        let mut h = Harness::new();
        h.register(0.0, "b", 2, 1).unwrap();
        h.register(0.0, "a", 1, 3).unwrap();
        h.tick(3.0);
        h.succeed(3.02, "a", 3);
        let snapshot = h.detector.snapshot();
        let ids: Vec<_> = snapshot.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(snapshot[0].last_rtt, Some(Duration::from_millis(5)));
        assert_eq!(snapshot[1].last_rtt, None);
        assert_eq!(h.detector.remove("a").unwrap().incarnation, 3);
        assert_eq!(h.detector.snapshot().len(), 1);
    }

    #[test]
    fn config_defaults_and_bound() {
        let config = HeartbeatConfig::default();
        assert_eq!(config.cluster, "default");
        assert_eq!(config.probe_interval, 3 * SEC);
        assert_eq!(config.probe_timeout, 2 * SEC);
        assert_eq!(config.max_failures, 3);
        assert_eq!(config.master_timeout, 10 * SEC);
        assert_eq!(config.detection_bound(), 14 * SEC);
    }

    #[test]
    #[should_panic(expected = "probe_interval must not be zero")]
    fn zero_interval_is_refused() {
        Detector::new(HeartbeatConfig {
            probe_interval: Duration::ZERO,
            ..HeartbeatConfig::default()
        });
    }
}
