//! The master's failure detector: registrations, probe outcomes and the current time
//! in, membership changes out. No clock, no socket, no task: the master's runtime
//! passes `now` to every call (the sans-IO style of quinn-proto), so tests drive
//! time by hand.
//!
//! # States
//! | from             | input                                   | to      | change                       |
//! |------------------|-----------------------------------------|---------|------------------------------|
//! | (none), Left     | `register`                              | Alive   | [`Change::Joined`]           |
//! | Alive            | failed probe (the first)                | Suspect | [`Change::Suspect`]          |
//! | Suspect          | failed probe number `max_failures + 1`  | Dead    | [`Change::Dead`] + evidence  |
//! | Suspect          | successful probe                        | Alive   | [`Change::Alive`]            |
//! | Dead             | `register`                              | Alive   | [`Change::Alive`]            |
//! | Alive, Suspect   | `register` of a newer incarnation       | Alive   | [`Change::Joined`] (`replaced`) |
//! | any but Left     | `leave` of the current incarnation      | Left    | [`Change::Left`]             |
//! | Dead, Left       | `forget_after` passed, or evicted       | (none)  | [`Change::Forgotten`]        |
//!
//! - **Alive → Suspect** on the first failed probe; **Suspect → Dead** when the
//!   consecutive failures exceed [`HeartbeatConfig::max_failures`] (the 4th failure
//!   in a row by default). With `max_failures = 0` the first failure is fatal:
//!   Alive → Dead directly. A successful probe resets the count and brings a Suspect
//!   back to Alive.
//! - A Dead node is no longer probed; it comes back, Alive, by registering again.
//! - **Leave** makes a node Left at once.
//! - Dead and Left rows stay for the snapshot until
//!   [`forget_after`](HeartbeatConfig::forget_after) has passed (checked at each
//!   [`tick`](Detector::tick)), until [`Detector::remove`], or until a new node
//!   needs their room in a full table (the oldest first).
//!
//! # Identity
//! Each run of a node has an incarnation, greater than that of its earlier runs.
//! - A `register` with a **higher** incarnation replaces the old identity, whatever
//!   its state: a restarted node is one entry, never two. Over a live entry this is
//!   [`Change::Joined`] with `replaced: Some(old)`; over a Dead one, [`Change::Alive`].
//! - A `register` with a **lower** incarnation is refused:
//!   [`RegisterError::StaleIncarnation`], which tells the node the incarnation to
//!   beat (it takes a greater one and registers again).
//! - An incarnation more than [`max_incarnation_skew`](HeartbeatConfig) ahead of
//!   the master's wall clock is refused ([`RegisterError::TooFarAhead`]): a run at
//!   `u64::MAX` would otherwise make every later run of that id stale.
//! - The **same** incarnation again, from the same address, while the node is live,
//!   is a repeat (the node missed the ack, or checks in): accepted, no change,
//!   metadata updated.
//! - The same incarnation from **another address** while the node is live is a
//!   second process claiming the same id and run: refused with
//!   [`RegisterError::DuplicateId`]; the first one keeps the id. Once the entry is
//!   Dead or Left, the same incarnation may register from anywhere.
//! - Each `register` and `leave` carries a sequence number, accepted once per
//!   incarnation ([`ReplayWindow`]): a replayed one is refused
//!   ([`RegisterError::Replay`], [`LeaveRefused::Replay`]).
//! - `leave` applies to the current incarnation only: one for another incarnation
//!   is refused ([`LeaveRefused::Incarnation`]) and changes nothing.
//! - Probe outcomes for another incarnation than the entry's are ignored.
//!
//! # Capacity
//! The table holds at most [`max_nodes`](HeartbeatConfig::max_nodes) rows, live or
//! not. A new id finds room by forgetting the oldest Dead or Left row; without one
//! it is refused ([`RegisterError::TableFull`]). Rows in the table are never
//! evicted for a newcomer. Metadata over
//! [`max_metadata_len`](HeartbeatConfig::max_metadata_len) is refused.
//!
//! # Rounds
//! The master calls [`tick`](Detector::tick) at the start of every probe round,
//! then [`send_probes`](Detector::send_probes), which hands it every live node (in
//! id order) and records the seq of the probe it sent; an answer goes to
//! [`probe_acked`](Detector::probe_acked), and [`sweep`](Detector::sweep), called
//! `probe_timeout` after the tick, counts a failure for every probe of the round
//! still unanswered. (The lower-level [`probe_succeeded`](Detector::probe_succeeded)
//! and [`probe_failed`](Detector::probe_failed) report one outcome directly.)
//!
//! A node that dies just after answering a probe is declared Dead within the
//! detection bound ([`HeartbeatConfig::detection_bound`]):
//! `probe_interval × (max_failures + 1) + probe_timeout` (14 s by default).
//!
//! Each row can carry a value of the caller's, `L` (the master keeps its probe
//! connection there): it is reset to `L::default()`, dropping the old one, whenever
//! the node's identity or address changes, a probe failure is counted, or the node
//! turns Dead or Left, so a connection never outlives what it was opened for.
//!
//! # Stalls
//! If the master's own runtime stalls (overloaded host, paused VM, debugger), its
//! probe timeouts fire late and look like failures of every node at once. A round
//! is **stalled** when its tick comes more than one `probe_interval` after it was due
//! (the tick before it plus `probe_interval`); the tick then emits
//! [`DetectorEvent::Stalled`] instead of anyone's failure:
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
//! use chitchat_heartbeat::{Change, Detector, DetectorEvent, HeartbeatConfig, NodeId, NodeState, Registration};
//!
//! let config = HeartbeatConfig::default();
//! let (interval, timeout) = (config.probe_interval, config.probe_timeout);
//! let mut detector: Detector = Detector::new(config);
//! let t0 = Instant::now();
//! let wall_ms = 1_717_171_717_000; // the master's clock, for the incarnation check
//! let node = NodeId::new("node-1").unwrap();
//! let addr = "127.0.0.1:7001".parse().unwrap();
//! detector.register(t0, wall_ms, Registration::new(node, addr, 1)).unwrap();
//!
//! // The node stops answering: four rounds of probes, none answered.
//! let mut seq = 0;
//! for round in 1..=4 {
//!     let start = t0 + interval * round;
//!     detector.tick(start);
//!     detector.send_probes(start, |_slot, _row, _link| {
//!         seq += 1;
//!         Some(seq)
//!     });
//!     detector.sweep(start + timeout);
//! }
//! let mut dead = false;
//! for event in detector.drain_events() {
//!     if let DetectorEvent::Changed(change) = event {
//!         println!("{} {}", change.node, change.change.as_str());
//!         dead |= matches!(change.change, Change::Dead { .. });
//!     }
//! }
//! assert!(dead);
//! assert_eq!(detector.node("node-1").unwrap().state, NodeState::Dead);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use chitchat_core::Addr;

use crate::auth::ReplayWindow;
use crate::config::HeartbeatConfig;
use crate::policy::AddrError;
use crate::wire::{Metadata, NodeId, RefuseReason};

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
    /// Every state, in declaration order.
    pub const ALL: [NodeState; 4] = [
        NodeState::Alive,
        NodeState::Suspect,
        NodeState::Dead,
        NodeState::Left,
    ];

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

/// How many rows are in each state: kept as the table changes, so reading it costs
/// nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StateCounts {
    /// Rows Alive.
    pub alive: usize,
    /// Rows Suspect.
    pub suspect: usize,
    /// Rows Dead.
    pub dead: usize,
    /// Rows Left.
    pub left: usize,
}

impl StateCounts {
    /// Every row.
    pub fn total(&self) -> usize {
        self.alive + self.suspect + self.dead + self.left
    }

    /// Rows in `state`.
    pub fn of(&self, state: NodeState) -> usize {
        match state {
            NodeState::Alive => self.alive,
            NodeState::Suspect => self.suspect,
            NodeState::Dead => self.dead,
            NodeState::Left => self.left,
        }
    }

    fn slot(&mut self, state: NodeState) -> &mut usize {
        match state {
            NodeState::Alive => &mut self.alive,
            NodeState::Suspect => &mut self.suspect,
            NodeState::Dead => &mut self.dead,
            NodeState::Left => &mut self.left,
        }
    }
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

/// Why a row left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForgetReason {
    /// Dead or Left for longer than `forget_after`.
    Expired,
    /// The oldest Dead or Left row of a full table, forgotten to make room.
    Evicted,
    /// [`Detector::remove`] (or `Master::remove`).
    Removed,
}

/// What happened to a node. Match it; [`as_str`](Self::as_str) gives the word for
/// a log line.
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
    Dead {
        /// The failures that decided it.
        evidence: Evidence,
    },
    /// Left gracefully.
    Left,
    /// The row is gone from the table.
    Forgotten {
        /// The state it was in.
        from: NodeState,
        /// Why it went.
        reason: ForgetReason,
    },
}

impl Change {
    /// `joined`, `suspect`, `alive`, `dead`, `left` or `forgotten`: the word for
    /// event lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Joined { .. } => "joined",
            Change::Suspect => "suspect",
            Change::Alive { .. } => "alive",
            Change::Dead { .. } => "dead",
            Change::Left => "left",
            Change::Forgotten { .. } => "forgotten",
        }
    }
}

/// A node changed state: a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeChange {
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
pub enum DetectorEvent {
    /// A node changed state.
    Changed(NodeChange),
    /// The master itself was stalled; the probes it missed were not counted.
    Stalled(Stall),
}

/// A registration, as the detector takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The node.
    pub node: NodeId,
    /// Where it answers probes.
    pub addr: Addr,
    /// Its run.
    pub incarnation: u64,
    /// The sequence number of the `register`: accepted once per incarnation.
    pub seq: u64,
    /// Its labels.
    pub metadata: Metadata,
}

impl Registration {
    /// A registration with seq 1 and no metadata.
    pub fn new(node: NodeId, addr: Addr, incarnation: u64) -> Registration {
        Registration {
            node,
            addr,
            incarnation,
            seq: 1,
            metadata: Metadata::new(),
        }
    }
}

/// A registration the master refuses; the table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A live node already has this id and incarnation, at another address.
    #[error("node id {node} is taken by a live node at {existing} with the same incarnation (claimed for {claimed})")]
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
    /// The incarnation is further ahead of the master's clock than
    /// `max_incarnation_skew`.
    #[error("node {node} registered with incarnation {got}, more than the allowed skew ahead of the master's clock (at most {limit})")]
    TooFarAhead {
        /// The node.
        node: NodeId,
        /// The incarnation in the refused registration.
        got: u64,
        /// The greatest incarnation the master accepted at that moment.
        limit: u64,
    },
    /// The probe address is one the master does not dial.
    #[error("node {node} registered probe address {addr}: {reason}")]
    BadAddress {
        /// The node.
        node: NodeId,
        /// The probe address refused.
        addr: Addr,
        /// Why.
        reason: AddrError,
    },
    /// More metadata than `max_metadata_len`.
    #[error("node {node} registered {len} bytes of metadata, over the {limit}-byte limit")]
    MetadataTooLarge {
        /// The node.
        node: NodeId,
        /// Bytes of keys and values.
        len: usize,
        /// `max_metadata_len`.
        limit: usize,
    },
    /// The table is full of live rows.
    #[error("node {node} refused: the table is full ({limit} nodes, none dead or left)")]
    TableFull {
        /// The node.
        node: NodeId,
        /// `max_nodes`.
        limit: usize,
    },
    /// Too many registrations from the node's address this second.
    #[error("node {node} refused: more than {limit} registrations from its address this second")]
    Busy {
        /// The node.
        node: NodeId,
        /// `max_registrations_per_ip`.
        limit: u32,
    },
    /// This registration's sequence number was already seen for this incarnation:
    /// a replayed message. Not answered.
    #[error("registration of node {node} repeats sequence number {seq} of incarnation {incarnation} (a replay)")]
    Replay {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// The repeated sequence number.
        seq: u64,
    },
}

impl RegisterError {
    /// The reason to send in the `refuse` reply; `None` for a replay, which is not
    /// answered.
    pub fn refuse_reason(&self) -> Option<RefuseReason> {
        Some(match self {
            RegisterError::DuplicateId { .. } => RefuseReason::DuplicateId,
            RegisterError::StaleIncarnation { .. } => RefuseReason::StaleIncarnation,
            RegisterError::TooFarAhead { .. } => RefuseReason::TooFarAhead,
            RegisterError::BadAddress { .. } => RefuseReason::BadAddress,
            RegisterError::MetadataTooLarge { .. } => RefuseReason::MetadataTooLarge,
            RegisterError::TableFull { .. } => RefuseReason::TableFull,
            RegisterError::Busy { .. } => RefuseReason::Busy,
            RegisterError::Replay { .. } => return None,
        })
    }

    /// The incarnation the master holds for the node, sent with a refusal: a node
    /// refused as stale or duplicate takes a greater one. 0 when not relevant.
    pub fn known_incarnation(&self) -> u64 {
        match self {
            RegisterError::StaleIncarnation { current, .. } => *current,
            _ => 0,
        }
    }
}

/// A `leave` the master refuses; the table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaveRefused {
    /// No row for this id.
    #[error("leave of node {node}, which is not in the table")]
    Unknown {
        /// The node.
        node: NodeId,
    },
    /// Another incarnation than the row's.
    #[error(
        "leave of node {node} at incarnation {got}, but the table holds incarnation {current}"
    )]
    Incarnation {
        /// The node.
        node: NodeId,
        /// The incarnation in the table.
        current: u64,
        /// The incarnation in the `leave`.
        got: u64,
    },
    /// The node has left already.
    #[error("leave of node {node}, which has left already")]
    AlreadyLeft {
        /// The node.
        node: NodeId,
    },
    /// This sequence number was already seen for this incarnation: a replay.
    #[error("leave of node {node} repeats sequence number {seq} of incarnation {incarnation} (a replay)")]
    Replay {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// The repeated sequence number.
        seq: u64,
    },
}

/// A row's place in the table, for answering its probes without a search. A slot
/// is reused after its row is forgotten; [`Detector::probe_acked`] checks the
/// probe's seq, so a stale slot matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u32);

/// The membership table and the rules that move nodes between states (see the
/// [module docs](self)). `L` is the caller's value per row (see
/// [Rounds](self#rounds)).
#[derive(Debug)]
pub struct Detector<L = ()> {
    config: HeartbeatConfig,
    /// The rows, by slot; `None` for a free slot.
    rows: Vec<Option<Row<L>>>,
    /// Free slots, reused last in, first out.
    free: Vec<u32>,
    /// Slot of each node id, in id order: every walk of the table follows it.
    index: BTreeMap<NodeId, u32>,
    /// Dead and Left rows by the time they entered that state: the oldest are
    /// forgotten first.
    gone: BTreeSet<(Instant, u32)>,
    counts: StateCounts,
    /// Changes not yet drained; drain after every input to keep this short.
    events: VecDeque<DetectorEvent>,
    /// Ticks so far: tells whether a node's outcome for the current round is in.
    round: u64,
    /// Start of the current round: the base of drift measurement.
    last_tick: Option<Instant>,
    /// When the last stalled tick came: failures within `probe_timeout` of it are
    /// late timeouts of probes sent before the stall.
    stall_end: Option<Instant>,
}

#[derive(Debug)]
struct Row<L> {
    status: NodeSnapshot,
    /// Base of [`Evidence::last_success_age`].
    last_success: Option<Instant>,
    /// The round of the last counted outcome (or of registration): if older than the
    /// current round, a probe is in flight.
    outcome_round: u64,
    /// Sequence numbers of this incarnation's `register` and `leave` seen so far.
    requests: ReplayWindow,
    /// The probe of this round not answered yet: its seq and when it was sent.
    pending: Option<(u64, Instant)>,
    link: L,
}

impl<L: Default> Detector<L> {
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
            rows: Vec::new(),
            free: Vec::new(),
            index: BTreeMap::new(),
            gone: BTreeSet::new(),
            counts: StateCounts::default(),
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

    /// A node registers (see the identity and capacity rules in the [module
    /// docs](self)); `wall_ms` is the master's clock in milliseconds since the Unix
    /// epoch, the base of the incarnation skew check. On success the master sends
    /// `register-ack`, also for a repeated registration.
    ///
    /// # Errors
    /// A [`RegisterError`]; the master sends `refuse` with its
    /// [`refuse_reason`](RegisterError::refuse_reason) (none for a replay).
    // `DuplicateId` names two addresses, so the error is over clippy's 128 bytes; a
    // refusal is rare and off the probe path, and boxing would cost every caller.
    #[allow(clippy::result_large_err)]
    pub fn register(
        &mut self,
        now: Instant,
        wall_ms: u64,
        registration: Registration,
    ) -> Result<(), RegisterError> {
        let Registration {
            node,
            addr,
            incarnation,
            seq,
            metadata,
        } = registration;
        let len = metadata.size();
        if len > self.config.max_metadata_len {
            let limit = self.config.max_metadata_len;
            return Err(RegisterError::MetadataTooLarge { node, len, limit });
        }
        let skew = u64::try_from(self.config.max_incarnation_skew.as_millis()).unwrap_or(u64::MAX);
        let limit = wall_ms.saturating_add(skew);
        if incarnation > limit {
            return Err(RegisterError::TooFarAhead {
                node,
                got: incarnation,
                limit,
            });
        }
        let Some(&slot) = self.index.get(node.as_str()) else {
            return self.insert(now, node, addr, incarnation, seq, metadata);
        };
        let row = self.row_mut(slot);
        let current = row.status.incarnation;
        let state = row.status.state;
        if incarnation < current {
            return Err(RegisterError::StaleIncarnation {
                node,
                current,
                got: incarnation,
            });
        }
        if incarnation == current {
            // Another address first: a second process has its own seqs, which may
            // well repeat the first one's.
            if state.is_live() && row.status.addr != addr {
                return Err(RegisterError::DuplicateId {
                    node,
                    existing: row.status.addr,
                    claimed: addr,
                });
            }
            if !row.requests.is_new(seq) {
                return Err(RegisterError::Replay {
                    node,
                    incarnation,
                    seq,
                });
            }
            if state.is_live() {
                row.requests.accept(seq);
                row.status.metadata = metadata;
                if row.status.failures > 0 {
                    // The node says it is there: the next round dials afresh
                    // instead of trusting a connection that lost probes.
                    row.link = L::default();
                }
                return Ok(());
            }
        }
        let change = match state {
            NodeState::Alive | NodeState::Suspect => Change::Joined {
                replaced: Some(current),
            },
            NodeState::Dead => Change::Alive { from: state },
            NodeState::Left => Change::Joined { replaced: None },
        };
        let round = self.round;
        let row = self.row_mut(slot);
        if incarnation == current {
            row.requests.accept(seq);
        } else {
            row.requests = ReplayWindow::starting_at(seq);
        }
        row.status.addr = addr;
        row.status.incarnation = incarnation;
        row.status.metadata = metadata;
        row.status.last_rtt = None;
        row.status.failures = 0;
        row.last_success = None;
        row.outcome_round = round;
        row.pending = None;
        row.link = L::default();
        self.set_state(slot, NodeState::Alive, now, change);
        Ok(())
    }

    /// A new id: room is made by forgetting the oldest Dead or Left row if the
    /// table is full.
    #[allow(clippy::result_large_err)] // see `register`
    fn insert(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: Addr,
        incarnation: u64,
        seq: u64,
        metadata: Metadata,
    ) -> Result<(), RegisterError> {
        if self.index.len() >= self.config.max_nodes {
            match self.gone.first().copied() {
                Some((_, oldest)) => {
                    self.forget(Slot(oldest), now, ForgetReason::Evicted);
                }
                None => {
                    let limit = self.config.max_nodes;
                    return Err(RegisterError::TableFull { node, limit });
                }
            }
        }
        let row = Row {
            status: NodeSnapshot {
                node: node.clone(),
                addr,
                state: NodeState::Alive,
                last_rtt: None,
                failures: 0,
                since: now,
                incarnation,
                metadata,
            },
            last_success: None,
            outcome_round: self.round,
            requests: ReplayWindow::starting_at(seq),
            pending: None,
            link: L::default(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.rows[slot as usize] = Some(row);
                slot
            }
            None => {
                self.rows.push(Some(row));
                u32::try_from(self.rows.len() - 1).expect("fewer than 2^32 rows")
            }
        };
        self.index.insert(node, slot);
        *self.counts.slot(NodeState::Alive) += 1;
        if let Some(row) = &self.rows[slot as usize] {
            push_change(
                &mut self.events,
                &row.status,
                now,
                Change::Joined { replaced: None },
            );
        }
        Ok(())
    }

    /// The node sent `leave`: it becomes Left at once.
    ///
    /// # Errors
    /// A [`LeaveRefused`] for an unknown node, another incarnation than the row's,
    /// a node that has left already, or a replayed seq; nothing changes then.
    pub fn leave(
        &mut self,
        now: Instant,
        node: &str,
        incarnation: u64,
        seq: u64,
    ) -> Result<(), LeaveRefused> {
        let id = || NodeId(node.to_owned());
        let Some(&slot) = self.index.get(node) else {
            return Err(LeaveRefused::Unknown { node: id() });
        };
        let row = self.row_mut(slot);
        let current = row.status.incarnation;
        if incarnation != current {
            return Err(LeaveRefused::Incarnation {
                node: id(),
                current,
                got: incarnation,
            });
        }
        if !row.requests.accept(seq) {
            return Err(LeaveRefused::Replay {
                node: id(),
                incarnation,
                seq,
            });
        }
        if row.status.state == NodeState::Left {
            return Err(LeaveRefused::AlreadyLeft { node: id() });
        }
        self.set_state(slot, NodeState::Left, now, Change::Left);
        Ok(())
    }

    /// A probe round starts. Call it once per `probe_interval`, before sending the
    /// round's probes, even when there is no node to probe: it measures the master's
    /// timer drift, and emits [`DetectorEvent::Stalled`] when this tick is more than
    /// one `probe_interval` late (so a master that skips ticks reports a stall). It
    /// also forgets the Dead and Left rows older than `forget_after`.
    pub fn tick(&mut self, now: Instant) {
        let interval = self.config.probe_interval;
        if let Some(expected) = self.last_tick.and_then(|t| t.checked_add(interval)) {
            let drift = now.saturating_duration_since(expected);
            if drift > interval {
                self.events.push_back(DetectorEvent::Stalled(Stall {
                    expected,
                    actual: now,
                    drift,
                }));
                self.stall_end = Some(now);
            }
        }
        self.round += 1;
        self.last_tick = Some(now);
        if let Some(ttl) = self.config.forget_after {
            while let Some(&(since, slot)) = self.gone.first() {
                if now.saturating_duration_since(since) < ttl {
                    break;
                }
                self.forget(Slot(slot), now, ForgetReason::Expired);
            }
        }
    }

    /// Hands every live node, in id order, to `send`, which probes it and returns
    /// the probe's seq (or `None` if it sent nothing). The probe counts as sent at
    /// `now`; [`sweep`](Self::sweep) decides it if no answer comes.
    pub fn send_probes(
        &mut self,
        now: Instant,
        mut send: impl FnMut(Slot, &NodeSnapshot, &mut L) -> Option<u64>,
    ) {
        for &slot in self.index.values() {
            let Some(row) = self.rows[slot as usize].as_mut() else {
                continue;
            };
            if !row.status.state.is_live() {
                continue;
            }
            row.pending = send(Slot(slot), &row.status, &mut row.link).map(|seq| (seq, now));
        }
    }

    /// A `probe-ack` for the probe with `seq` of the node in `slot` came at `now`,
    /// naming `node` at `incarnation`. Counted as a success (with the round trip
    /// since the probe was sent) if it answers that node's unanswered probe and
    /// names its id and incarnation; returns whether it was.
    pub fn probe_acked(
        &mut self,
        now: Instant,
        slot: Slot,
        node: &str,
        incarnation: u64,
        seq: u64,
    ) -> bool {
        let Some(row) = self.rows.get(slot.0 as usize).and_then(Option::as_ref) else {
            return false;
        };
        let answers = row.pending.is_some_and(|(pending, _)| pending == seq)
            && row.status.node.as_str() == node
            && row.status.incarnation == incarnation
            && row.status.state.is_live();
        if !answers {
            return false;
        }
        let sent = row.pending.map_or(now, |(_, sent)| sent);
        self.row_mut(slot.0).pending = None;
        self.succeed(slot.0, now, now.saturating_duration_since(sent));
        true
    }

    /// The round's deadline: every probe sent by [`send_probes`](Self::send_probes)
    /// and not answered since counts as a failure (unless the master is stalled,
    /// see the [module docs](self#stalls)).
    pub fn sweep(&mut self, now: Instant) {
        let artifact = self.is_stall_artifact(now);
        let slots: Vec<u32> = self
            .index
            .values()
            .copied()
            .filter(|&slot| self.row(Slot(slot)).pending.is_some())
            .collect();
        for slot in slots {
            self.row_mut(slot).pending = None;
            if !artifact {
                self.fail(slot, now);
            }
        }
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
        match self.live_slot(node, incarnation) {
            Some(slot) => {
                self.row_mut(slot).pending = None;
                self.succeed(slot, now, rtt);
                true
            }
            None => false,
        }
    }

    /// A probe of `node` (which the master knows at `incarnation`) got no valid
    /// answer: timeout, connection error, or a `probe-ack` of another incarnation.
    /// The first failure makes the node Suspect, failure `max_failures + 1` in a row
    /// makes it Dead.
    ///
    /// Returns whether it was counted: `false` for an unknown node, another
    /// incarnation, a node that is Dead or Left, or a failure reported during or
    /// just after a stall of the master (see the [module docs](self#stalls)).
    pub fn probe_failed(&mut self, now: Instant, node: &str, incarnation: u64) -> bool {
        if self.is_stall_artifact(now) {
            return false;
        }
        match self.live_slot(node, incarnation) {
            Some(slot) => {
                self.row_mut(slot).pending = None;
                self.fail(slot, now);
                true
            }
            None => false,
        }
    }

    /// The caller's value of the row in `slot`, if that row is still the live node
    /// `node` at `incarnation` and `addr` (a connection opened for it may be kept
    /// there).
    pub fn link_mut(
        &mut self,
        slot: Slot,
        node: &str,
        incarnation: u64,
        addr: &Addr,
    ) -> Option<&mut L> {
        let row = self.rows.get_mut(slot.0 as usize)?.as_mut()?;
        let same = row.status.node.as_str() == node
            && row.status.incarnation == incarnation
            && row.status.addr == *addr
            && row.status.state.is_live();
        same.then_some(&mut row.link)
    }

    /// Resets every row's value to `L::default()` (the master closes its probe
    /// connections when it stops).
    pub fn reset_links(&mut self) {
        for row in self.rows.iter_mut().flatten() {
            row.link = L::default();
        }
    }

    /// Takes the pending events, oldest first.
    pub fn drain_events(&mut self) -> impl Iterator<Item = DetectorEvent> + '_ {
        self.events.drain(..)
    }

    /// The row of `node`, if it is in the table.
    pub fn node(&self, node: &str) -> Option<&NodeSnapshot> {
        let slot = *self.index.get(node)?;
        Some(&self.row(Slot(slot)).status)
    }

    /// Every row, ordered by node id.
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        self.rows().cloned().collect()
    }

    /// Every row, ordered by node id, without copying.
    pub fn rows(&self) -> impl Iterator<Item = &NodeSnapshot> {
        self.index
            .values()
            .map(|&slot| &self.row(Slot(slot)).status)
    }

    /// How many rows are in each state.
    pub fn counts(&self) -> StateCounts {
        self.counts
    }

    /// Rows in the table, live or not.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The nodes to probe this round (Alive or Suspect), ordered by node id.
    pub fn probe_targets(&self) -> impl Iterator<Item = &NodeSnapshot> {
        self.rows().filter(|status| status.state.is_live())
    }

    /// Forgets `node` (whatever its state), returning its last row and emitting
    /// [`Change::Forgotten`]. A live node that is removed is no longer probed; it is
    /// back once it registers again.
    pub fn remove(&mut self, node: &str, now: Instant) -> Option<NodeSnapshot> {
        let slot = *self.index.get(node)?;
        self.forget(Slot(slot), now, ForgetReason::Removed)
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
        let row = self.row(Slot(*self.index.get(node)?));
        if !row.status.state.is_live() {
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
            .saturating_sub(row.status.failures)
            .max(1);
        let first_failure = match self.last_tick {
            None => now.checked_add(probe_timeout),
            Some(tick) if row.outcome_round < self.round => {
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

    fn row(&self, slot: Slot) -> &Row<L> {
        self.rows[slot.0 as usize]
            .as_ref()
            .expect("indexed slots hold rows")
    }

    fn row_mut(&mut self, slot: u32) -> &mut Row<L> {
        self.rows[slot as usize]
            .as_mut()
            .expect("indexed slots hold rows")
    }

    fn live_slot(&self, node: &str, incarnation: u64) -> Option<u32> {
        let slot = *self.index.get(node)?;
        let row = self.row(Slot(slot));
        (row.status.incarnation == incarnation && row.status.state.is_live()).then_some(slot)
    }

    fn succeed(&mut self, slot: u32, now: Instant, rtt: Duration) {
        let round = self.round;
        let row = self.row_mut(slot);
        row.last_success = Some(now);
        row.outcome_round = round;
        row.status.last_rtt = Some(rtt);
        row.status.failures = 0;
        if row.status.state == NodeState::Suspect {
            let change = Change::Alive {
                from: NodeState::Suspect,
            };
            self.set_state(slot, NodeState::Alive, now, change);
        }
    }

    fn fail(&mut self, slot: u32, now: Instant) {
        let (round, threshold) = (self.round, self.config.max_failures);
        let row = self.row_mut(slot);
        row.outcome_round = round;
        row.status.failures = row.status.failures.saturating_add(1);
        // A failed probe drops its connection: the next round dials afresh.
        row.link = L::default();
        if row.status.failures > threshold {
            let evidence = Evidence {
                failures: row.status.failures,
                threshold,
                last_success_age: row.last_success.map(|t| now.saturating_duration_since(t)),
            };
            self.set_state(slot, NodeState::Dead, now, Change::Dead { evidence });
        } else if row.status.state == NodeState::Alive {
            self.set_state(slot, NodeState::Suspect, now, Change::Suspect);
        }
    }

    /// Moves a row to `state`, keeping the counts and the forget order, and emits
    /// `change`.
    fn set_state(&mut self, slot: u32, state: NodeState, now: Instant, change: Change) {
        let row = self.rows[slot as usize]
            .as_mut()
            .expect("indexed slots hold rows");
        let old = (row.status.state, row.status.since);
        if !old.0.is_live() {
            self.gone.remove(&(old.1, slot));
        }
        *self.counts.slot(old.0) -= 1;
        *self.counts.slot(state) += 1;
        row.status.state = state;
        row.status.since = now;
        if !state.is_live() {
            row.link = L::default();
            row.pending = None;
            self.gone.insert((now, slot));
        }
        push_change(&mut self.events, &row.status, now, change);
    }

    fn forget(&mut self, slot: Slot, now: Instant, reason: ForgetReason) -> Option<NodeSnapshot> {
        let row = self.rows.get_mut(slot.0 as usize)?.take()?;
        let status = row.status;
        self.index.remove(status.node.as_str());
        self.gone.remove(&(status.since, slot.0));
        *self.counts.slot(status.state) -= 1;
        self.free.push(slot.0);
        let change = Change::Forgotten {
            from: status.state,
            reason,
        };
        push_change(&mut self.events, &status, now, change);
        Some(status)
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
}

fn push_change(
    events: &mut VecDeque<DetectorEvent>,
    status: &NodeSnapshot,
    at: Instant,
    change: Change,
) {
    events.push_back(DetectorEvent::Changed(NodeChange {
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
    /// The master's wall clock in the tests: incarnations are far below it.
    const WALL_MS: u64 = 1_700_000_000_000;

    fn local(port: u16) -> Addr {
        Addr::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A detector with the default config, one time origin, and helpers that speak
    /// in seconds since it.
    struct Harness {
        detector: Detector,
        t0: Instant,
        seq: u64,
    }

    impl Harness {
        fn new() -> Self {
            Harness::with(HeartbeatConfig::default())
        }

        fn with(config: HeartbeatConfig) -> Self {
            Harness {
                detector: Detector::new(config),
                t0: Instant::now(),
                seq: 0,
            }
        }

        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }

        fn next_seq(&mut self) -> u64 {
            self.seq += 1;
            self.seq
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
            let mut registration = Registration::new(NodeId::new(node).unwrap(), local(port), inc);
            registration.seq = self.next_seq();
            self.detector.register(now, WALL_MS, registration)
        }

        fn leave(&mut self, secs: f64, node: &str, inc: u64) -> Result<(), LeaveRefused> {
            let (now, seq) = (self.at(secs), self.next_seq());
            self.detector.leave(now, node, inc, seq)
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
                    DetectorEvent::Changed(e) => Some((e.node.to_string(), e.change)),
                    DetectorEvent::Stalled(_) => None,
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
        assert_eq!(h.detector.counts().alive, 1);
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
        let counts = h.detector.counts();
        assert_eq!((counts.alive, counts.suspect, counts.dead), (0, 0, 1));
    }

    #[test]
    fn rounds_of_sent_probes_are_decided_by_acks_and_the_sweep() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.register(0.0, "b", 2, 1).unwrap();
        h.changes();
        let mut seq = 100;
        let mut sent = Vec::new();
        h.tick(3.0);
        let start = h.at(3.0);
        h.detector.send_probes(start, |slot, row, _| {
            seq += 1;
            sent.push((slot, row.node.to_string(), seq));
            Some(seq)
        });
        assert_eq!(sent.len(), 2);
        let (slot_a, _, seq_a) = sent[0].clone();
        let (slot_b, _, seq_b) = sent[1].clone();
        let later = start + Duration::from_millis(10);
        assert!(
            !h.detector.probe_acked(later, slot_a, "a", 1, seq_b),
            "wrong seq"
        );
        assert!(
            !h.detector.probe_acked(later, slot_b, "a", 1, seq_b),
            "wrong node"
        );
        assert!(
            !h.detector.probe_acked(later, slot_a, "a", 2, seq_a),
            "wrong run"
        );
        assert!(h.detector.probe_acked(later, slot_a, "a", 1, seq_a));
        assert!(
            !h.detector.probe_acked(later, slot_a, "a", 1, seq_a),
            "answered once"
        );
        assert_eq!(
            h.detector.node("a").unwrap().last_rtt,
            Some(Duration::from_millis(10))
        );
        let deadline = h.at(5.0);
        h.detector.sweep(deadline);
        assert_eq!(h.state("a"), NodeState::Alive);
        assert_eq!(h.state("b"), NodeState::Suspect);
        assert_eq!(h.names(), ["suspect"]);
        // A late ack of a swept probe counts for nothing.
        assert!(!h.detector.probe_acked(h.at(5.5), slot_b, "b", 1, seq_b));
    }

    #[test]
    fn dead_event_carries_its_evidence() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.tick(3.0);
        assert!(h.succeed(3.1, "a", 1));
        h.fail_rounds(2..=5, "a", 1);
        let events: Vec<DetectorEvent> = h.detector.drain_events().collect();
        let Some(DetectorEvent::Changed(dead)) = events.last() else {
            panic!("no event")
        };
        let expected = Evidence {
            failures: 4,
            threshold: 3,
            last_success_age: Some(Duration::from_secs_f64(17.0 - 3.1)),
        };
        assert_eq!(dead.change, Change::Dead { evidence: expected });
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
            Change::Dead {
                evidence: Evidence {
                    last_success_age: None,
                    ..
                }
            }
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
        assert_eq!(h.leave(4.0, "a", 1), Ok(()));
        assert_eq!(h.state("a"), NodeState::Left);
        assert_eq!(h.names(), ["left"]);
        assert!(matches!(
            h.leave(5.0, "a", 1),
            Err(LeaveRefused::AlreadyLeft { .. })
        ));
        assert!(matches!(
            h.leave(5.0, "nobody", 1),
            Err(LeaveRefused::Unknown { .. })
        ));
        assert!(h.detector.probe_targets().next().is_none());
        assert_eq!(h.detector.time_until_dead("a", h.at(5.0)), None);
    }

    #[test]
    fn leave_applies_to_the_current_incarnation_only() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 5).unwrap();
        for other in [4, 6, u64::MAX] {
            assert_eq!(
                h.leave(1.0, "a", other),
                Err(LeaveRefused::Incarnation {
                    node: NodeId::new("a").unwrap(),
                    current: 5,
                    got: other
                })
            );
        }
        assert_eq!(h.state("a"), NodeState::Alive);
        assert_eq!(h.detector.node("a").unwrap().incarnation, 5);
        // Nothing was locked out: the node's next run registers as usual.
        h.register(2.0, "a", 1, 6).unwrap();
        assert_eq!(h.state("a"), NodeState::Alive);
    }

    #[test]
    fn a_replayed_register_or_leave_is_refused_and_changes_nothing() {
        let mut h = Harness::new();
        let node = NodeId::new("a").unwrap();
        let mut registration = Registration::new(node.clone(), local(1), 5);
        registration.seq = 10;
        h.detector
            .register(h.at(0.0), WALL_MS, registration.clone())
            .unwrap();
        assert_eq!(
            h.detector
                .register(h.at(1.0), WALL_MS, registration.clone()),
            Err(RegisterError::Replay {
                node: node.clone(),
                incarnation: 5,
                seq: 10
            })
        );
        h.detector.leave(h.at(2.0), "a", 5, 11).unwrap();
        h.changes();
        // Replaying the registration or the leave does not bring it back or move it.
        assert!(h
            .detector
            .register(h.at(3.0), WALL_MS, registration)
            .is_err());
        assert!(matches!(
            h.detector.leave(h.at(3.0), "a", 5, 11),
            Err(LeaveRefused::Replay { seq: 11, .. })
        ));
        assert_eq!(h.state("a"), NodeState::Left);
        assert!(h.changes().is_empty());
    }

    #[test]
    fn an_incarnation_too_far_ahead_is_refused() {
        let mut h = Harness::new();
        let skew = 5 * 60 * 1000;
        assert!(h.register(0.0, "a", 1, WALL_MS + skew).is_ok());
        for inc in [WALL_MS + skew + 1, u64::MAX] {
            assert_eq!(
                h.register(0.0, "b", 1, inc),
                Err(RegisterError::TooFarAhead {
                    node: NodeId::new("b").unwrap(),
                    got: inc,
                    limit: WALL_MS + skew
                })
            );
        }
        assert!(h.detector.node("b").is_none());
    }

    #[test]
    fn left_node_can_join_again() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 1).unwrap();
        h.leave(1.0, "a", 1).unwrap();
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
        let mut registration = Registration::new(NodeId::new("a").unwrap(), local(1), 1);
        registration.metadata.insert("role", "worker").unwrap();
        registration.seq = 99;
        h.detector
            .register(h.at(5.0), WALL_MS, registration)
            .unwrap();
        assert!(h.changes().is_empty(), "no second Joined");
        let row = h.detector.node("a").unwrap();
        assert_eq!((row.state, row.failures), (NodeState::Suspect, 1));
        assert_eq!(row.metadata.get("role"), Some("worker"));
    }

    #[test]
    fn metadata_over_the_limit_is_refused() {
        let mut h = Harness::with(HeartbeatConfig {
            max_metadata_len: 10,
            ..HeartbeatConfig::default()
        });
        let mut registration = Registration::new(NodeId::new("a").unwrap(), local(1), 1);
        registration.metadata.insert("zone", "eu-west-1").unwrap();
        assert!(matches!(
            h.detector.register(h.at(0.0), WALL_MS, registration),
            Err(RegisterError::MetadataTooLarge {
                len: 13,
                limit: 10,
                ..
            })
        ));
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
        assert_eq!(err.refuse_reason(), Some(RefuseReason::DuplicateId));
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
        assert_eq!(h.detector.len(), 1, "never two entries for one id");
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
    fn older_incarnation_is_refused_as_stale_with_the_one_to_beat() {
        let mut h = Harness::new();
        h.register(0.0, "a", 1, 5).unwrap();
        let err = h.register(1.0, "a", 1, 4).unwrap_err();
        assert_eq!(err.refuse_reason(), Some(RefuseReason::StaleIncarnation));
        assert_eq!(err.known_incarnation(), 5);
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
    fn a_full_table_forgets_the_oldest_gone_row_and_never_a_live_one() {
        let mut h = Harness::with(HeartbeatConfig {
            max_nodes: 3,
            ..HeartbeatConfig::default()
        });
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            h.register(0.0, name, i as u16 + 1, 1).unwrap();
        }
        assert_eq!(
            h.register(1.0, "d", 4, 1),
            Err(RegisterError::TableFull {
                node: NodeId::new("d").unwrap(),
                limit: 3
            })
        );
        h.leave(2.0, "b", 1).unwrap();
        h.leave(3.0, "a", 1).unwrap();
        h.changes();
        h.register(4.0, "d", 4, 1).unwrap();
        assert_eq!(
            h.changes(),
            [
                (
                    "b".into(),
                    Change::Forgotten {
                        from: NodeState::Left,
                        reason: ForgetReason::Evicted
                    }
                ),
                ("d".into(), Change::Joined { replaced: None }),
            ]
        );
        h.register(5.0, "e", 5, 1).unwrap();
        assert!(h.register(6.0, "f", 6, 1).is_err());
        let ids: Vec<_> = h.detector.rows().map(|r| r.node.to_string()).collect();
        assert_eq!(ids, ["c", "d", "e"]);
        // Existing rows still register (a repeat, a new run).
        h.register(7.0, "c", 3, 2).unwrap();
        assert_eq!(h.detector.counts().total(), 3);
    }

    #[test]
    fn gone_rows_are_forgotten_after_forget_after() {
        let mut h = Harness::with(HeartbeatConfig {
            forget_after: Some(60 * SEC),
            ..HeartbeatConfig::default()
        });
        h.register(0.0, "a", 1, 1).unwrap();
        h.register(0.0, "b", 2, 1).unwrap();
        h.fail_rounds(1..=4, "a", 1); // dead at 14 s
        h.leave(15.0, "b", 1).unwrap();
        h.changes();
        h.tick(73.0);
        assert_eq!(h.detector.len(), 2);
        h.tick(74.0);
        assert_eq!(
            h.changes(),
            [(
                "a".into(),
                Change::Forgotten {
                    from: NodeState::Dead,
                    reason: ForgetReason::Expired
                }
            )]
        );
        h.tick(75.0);
        assert!(h.detector.is_empty());
        assert_eq!(h.detector.counts(), StateCounts::default());
        // A slot is reused, and an old probe seq matches nothing in it.
        h.register(76.0, "c", 3, 1).unwrap();
        assert_eq!(h.detector.rows.len(), 2);
    }

    #[test]
    fn late_tick_reports_a_stall() {
        let mut h = Harness::new();
        h.tick(0.0);
        h.tick(3.0);
        h.tick(8.9); // 2.9 s late: under one interval, not a stall
        assert_eq!(h.detector.drain_events().count(), 0);
        h.tick(15.0); // due at 11.9: 3.1 s late
        let events: Vec<DetectorEvent> = h.detector.drain_events().collect();
        assert_eq!(
            events,
            [DetectorEvent::Stalled(Stall {
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
    fn links_are_dropped_when_their_node_changes() {
        let mut detector: Detector<Option<u32>> = Detector::new(HeartbeatConfig::default());
        let t0 = Instant::now();
        let node = NodeId::new("a").unwrap();
        detector
            .register(t0, WALL_MS, Registration::new(node.clone(), local(1), 1))
            .unwrap();
        let mut slots = Vec::new();
        detector.send_probes(t0, |slot, _, link| {
            *link = Some(7);
            slots.push(slot);
            Some(1)
        });
        let slot = slots[0];
        assert_eq!(
            detector.link_mut(slot, "a", 1, &local(1)),
            Some(&mut Some(7))
        );
        assert_eq!(detector.link_mut(slot, "a", 1, &local(2)), None);
        detector.sweep(t0 + 2 * SEC);
        assert_eq!(
            detector.link_mut(slot, "a", 1, &local(1)),
            Some(&mut None),
            "failure"
        );
        *detector.link_mut(slot, "a", 1, &local(1)).unwrap() = Some(8);
        let mut again = Registration::new(node, local(1), 2);
        again.seq = 2;
        detector.register(t0, WALL_MS, again).unwrap();
        assert_eq!(
            detector.link_mut(slot, "a", 2, &local(1)),
            Some(&mut None),
            "new run"
        );
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
        h.changes();
        assert_eq!(h.detector.remove("a", h.at(4.0)).unwrap().incarnation, 3);
        assert_eq!(h.detector.snapshot().len(), 1);
        assert_eq!(
            h.changes(),
            [(
                "a".into(),
                Change::Forgotten {
                    from: NodeState::Alive,
                    reason: ForgetReason::Removed
                }
            )]
        );
    }

    #[test]
    #[should_panic(expected = "probe_interval must not be zero")]
    fn zero_interval_is_refused() {
        Detector::<()>::new(HeartbeatConfig {
            probe_interval: Duration::ZERO,
            ..HeartbeatConfig::default()
        });
    }
}
