//! The master role: accepts registrations, probes every live node once per round,
//! and publishes what the [`Detector`] concludes as a stream of [`MasterEvent`]s, a
//! membership snapshot and [`MasterStats`]. It runs on chitchat-tokio over any
//! transport: TCP in production, the testkit's in-memory network in tests.
//!
//! # Tasks
//! - **Registration server** (`registration`): a chitchat-tokio `Server` whose
//!   handler verifies and decodes each frame, checks the probe address
//!   ([`check_probe_addr`](crate::policy::check_probe_addr)) and the per-address
//!   rate, answers `register` with `register-ack` or `refuse`, and applies `leave`.
//!   A peer that sends anything invalid, unauthentic or replayed gets a typed
//!   [`MasterError`] naming it on the event stream and its connection closed;
//!   nothing else is disturbed. The port has a frame deadline and an idle timeout
//!   of `probe_timeout` and serves at most `registration_connections` at once.
//! - **Round driver** (`rounds`), one task for the whole table: every
//!   `probe_interval` it ticks the detector (stall measurement, forgetting old
//!   rows), writes one `probe` on each live node's connection (dialing it first if
//!   there is none: the only per-node task, for the time of a dial), and one
//!   deadline `probe_timeout` later sweeps the unanswered ones as failures. A
//!   `probe-ack` is handled in its connection's handler, straight into the
//!   detector. No task, channel or timer per node.
//!
//! The detector and the probe connections (kept in its rows) sit behind one
//! `std::sync::Mutex`; every critical section is a short detector call, never held
//! across an `.await`. Events are emitted under that lock, so they come out in the
//! order the detector decided them.
//!
//! # Memory
//! Per node: its row (id, address, state, counters, metadata up to
//! `max_metadata_len`; about 300 bytes without metadata), its probe connection in
//! the engine, and one file descriptor. BENCHMARKS.md has the measured figure.
//!
//! # Example
//! See the [crate docs](crate) for a master, two nodes and a failure.

mod registration;
mod rounds;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chitchat_core::{Addr, BindError, Binder, ConnError, Connector, ServerConfig};
use chitchat_tokio::Server;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::rounds::Link;
use crate::clock::{next_incarnation, now};
use crate::config::HeartbeatConfig;
use crate::detector::{
    Detector, DetectorEvent, LeaveRefused, NodeChange, NodeSnapshot, RegisterError, Stall,
    StateCounts,
};
use chitchat_core::{EventQueue, Events};

use crate::builder_events::BuilderEvents;
use crate::policy::RateLimiter;
use crate::wire::{NodeId, RefuseReason, WireError, WrongCluster, MAX_MESSAGE_LEN};

/// What happened at the master: a node changed state, the master stalled, or a peer
/// misbehaved. Match it; [`as_str`](Self::as_str) gives the word for a log line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum MasterEvent {
    /// A node changed state (joined, suspect, alive, dead, left, forgotten).
    Changed(NodeChange),
    /// The master's own runtime ran late; the probes it missed were not counted.
    Stalled(Stall),
    /// A peer sent something the protocol does not allow (its connection was
    /// closed), or a registration or leave was refused.
    Error {
        /// When it was seen.
        at: Instant,
        /// What, naming the peer.
        error: MasterError,
    },
    /// The registration server's engine reported a connection error (an oversized
    /// or unfinished frame, an idle or reset connection, one over the connection
    /// cap), naming the peer.
    Connection {
        /// When it was seen.
        at: Instant,
        /// The engine's error.
        error: ConnError,
    },
}

impl MasterEvent {
    /// When it happened (under tokio's paused clock, the paused time).
    pub fn at(&self) -> Instant {
        match self {
            MasterEvent::Changed(change) => change.at,
            MasterEvent::Stalled(stall) => stall.actual,
            MasterEvent::Error { at, .. } | MasterEvent::Connection { at, .. } => *at,
        }
    }

    /// The word for event lines: the node's change (`joined`, `suspect`, `alive`,
    /// `dead`, `left`, `forgotten`), `stalled`, or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MasterEvent::Changed(change) => change.change.as_str(),
            MasterEvent::Stalled(_) => "stalled",
            MasterEvent::Error { .. } | MasterEvent::Connection { .. } => "error",
        }
    }

    /// The membership change, if this is one.
    pub fn as_change(&self) -> Option<&NodeChange> {
        match self {
            MasterEvent::Changed(change) => Some(change),
            _ => None,
        }
    }

    /// The protocol error, if this is one.
    pub fn as_error(&self) -> Option<&MasterError> {
        match self {
            MasterEvent::Error { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A peer of the master broke the protocol, or was refused. Each names the peer's
/// address, and reads as one sentence with its cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterError {
    /// A frame that is not a valid or authentic heartbeat message (bad magic, old
    /// or unknown version, no MAC or a wrong one, malformed field); the connection
    /// was closed and nothing changed.
    #[error("invalid message from {peer}: {source}")]
    Wire {
        /// The sender: a registering peer, or a probed node's address.
        peer: Addr,
        /// What is wrong with the frame.
        #[source]
        source: WireError,
    },
    /// A node of another cluster; it was sent `refuse wrong-cluster`.
    #[error("{peer} (node {node}) refused: {source}")]
    WrongCluster {
        /// The sender.
        peer: Addr,
        /// The node id it claimed.
        node: NodeId,
        /// Both clusters.
        #[source]
        source: WrongCluster,
    },
    /// A registration refused (sent `refuse` with the reason, then closed; a replay
    /// is closed without an answer).
    #[error("refused registration from {peer}: {source}")]
    Refused {
        /// The sender.
        peer: Addr,
        /// Why.
        #[source]
        source: RegisterError,
    },
    /// A `leave` refused (another incarnation, unknown node, replay); nothing
    /// changed.
    #[error("refused leave from {peer}: {source}")]
    Leave {
        /// The sender.
        peer: Addr,
        /// Why.
        #[source]
        source: LeaveRefused,
    },
    /// A well-formed message that has no business where it arrived (a `probe` on the
    /// registration port, a `register` on a probe connection, an ack of another
    /// master run); the connection was closed.
    #[error("{peer} sent an unexpected {message} message")]
    Unexpected {
        /// The sender.
        peer: Addr,
        /// The message type, as on the wire.
        message: &'static str,
    },
}

/// What a master has done and refused so far, and its table by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterStats {
    /// Rows by state now.
    pub nodes: StateCounts,
    /// Registrations accepted (new nodes, returns, repeats).
    pub registrations: u64,
    /// Leaves applied.
    pub leaves: u64,
    /// Probes sent.
    pub probes: u64,
    /// Probe answers counted.
    pub acks: u64,
    /// Messages refused for their MAC: none where one is required, or one no key
    /// verifies.
    pub rejected_unauthenticated: u64,
    /// Messages refused as replays.
    pub rejected_replays: u64,
    /// Other invalid messages: malformed, old or unknown version, wrong cluster,
    /// unexpected type, refused leave.
    pub rejected_invalid: u64,
    /// Connections the registration port refused at its connection cap.
    pub connections_refused: u64,
    refused: [u64; RefuseReason::ALL.len()],
}

impl MasterStats {
    /// Registrations refused with `reason`.
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused[reason.index()]
    }

    /// Registrations refused, whatever the reason.
    pub fn refusals(&self) -> u64 {
        self.refused.iter().sum()
    }
}

/// The counters behind [`MasterStats`], bumped without the table's lock.
#[derive(Default)]
struct Counters {
    registrations: AtomicU64,
    leaves: AtomicU64,
    probes: AtomicU64,
    acks: AtomicU64,
    unauthenticated: AtomicU64,
    replays: AtomicU64,
    invalid: AtomicU64,
    connections_refused: AtomicU64,
    refused: [AtomicU64; RefuseReason::ALL.len()],
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A running master (see the [module docs](self)).
///
/// Dropping it stops the round driver and stops listening, without waiting;
/// [`shutdown`](Self::shutdown) waits until everything has ended.
///
/// A node leaves: the master marks it Left at once, and its row shows the last
/// round-trip time.
///
/// ```
/// use std::net::SocketAddr;
///
/// use chitchat_heartbeat::{Master, Node, NodeId, NodeState};
/// use chitchat_testkit::Network;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = Network::new(1);
/// let (master_host, node_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
/// let master = Master::builder(SocketAddr::from(([10, 0, 0, 1], 7000)))
///     .start(&master_host, master_host.clone())
///     .await?;
/// let node = Node::builder(NodeId::new("web-1")?, master.local_addr())
///     .listen(SocketAddr::from(([10, 0, 0, 2], 7001)))
///     .start(&node_host, node_host.clone())
///     .await?;
/// node.registered().await;
/// tokio::time::sleep(master.config().probe_interval * 2).await; // a round of probes
///
/// let row = master.node("web-1").unwrap();
/// assert_eq!((row.state, row.failures), (NodeState::Alive, 0));
/// assert!(row.last_rtt.is_some());
/// node.leave().await?;
/// assert_eq!(master.node("web-1").unwrap().state, NodeState::Left);
/// assert_eq!(master.stats().leaves, 1);
/// master.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Master {
    shared: Arc<Shared>,
    server: Server<Arc<Shared>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<Tasks>>,
}

struct Tasks {
    rounds: JoinHandle<()>,
    /// Forwards the registration server's engine errors to the event stream.
    forward: JoinHandle<()>,
}

/// Configures and starts a [`Master`].
///
/// A clone has an event stream of its own: streams taken from one builder see
/// only the master that builder starts.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct MasterBuilder {
    addr: Addr,
    config: HeartbeatConfig,
    /// Created with the builder, so that [`events`](Self::events) can subscribe
    /// before anything happens.
    events: BuilderEvents<MasterEvent>,
    epoch: Option<u64>,
}

/// What the registration handler, the round driver and the probe connections
/// share.
struct Shared {
    config: HeartbeatConfig,
    /// This run of the master: in every message it sends, echoed in every ack.
    epoch: u64,
    state: Mutex<State>,
    events: Arc<EventQueue<MasterEvent>>,
    counters: Counters,
}

/// The table and what is decided with it, under one lock.
struct State {
    detector: Detector<Link>,
    limiter: RateLimiter,
    /// Seq of the last probe sent, by any node's: unique within this epoch, so an
    /// answer matches one probe only.
    probe_seq: u64,
}

impl Master {
    /// Starts building a master that listens for registrations on `addr` (port 0
    /// picks a free port), with the default [`HeartbeatConfig`].
    pub fn builder(addr: impl Into<Addr>) -> MasterBuilder {
        MasterBuilder {
            addr: addr.into(),
            config: HeartbeatConfig::default(),
            events: BuilderEvents::new(),
            epoch: None,
        }
    }

    /// The address registrations go to (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> Addr {
        self.server.local_addr()
    }

    /// The settings in force.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.shared.config
    }

    /// This run's epoch: its start time in milliseconds (see
    /// [`MasterBuilder::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// A one-line warning when the cluster has no key (every message unsigned: any
    /// host that reaches the master can register, leave or answer probes as any
    /// node); `None` with a keyring. Print or log it at start.
    pub fn security_warning(&self) -> Option<String> {
        self.shared.config.keyring.is_none().then(|| {
            format!(
                "heartbeat cluster {} on {} is unauthenticated: any host that reaches it can \
                 register, leave or answer probes as any node (give every process the cluster key)",
                self.shared.config.cluster,
                self.local_addr()
            )
        })
    }

    /// A stream of the events from this call on (see [`Events`]); to miss none
    /// from the start, take it from the builder ([`MasterBuilder::events`]). It ends
    /// after [`shutdown`](Self::shutdown).
    pub fn events(&self) -> Events<MasterEvent> {
        self.shared.events.subscribe()
    }

    /// The membership table, ordered by node id. It copies every row: for a live
    /// view of a large table, keep one from [`events`](Self::events) and read
    /// [`counts`](Self::counts) and [`node`](Self::node) instead.
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        self.shared.lock().detector.snapshot()
    }

    /// The row of one node, if it is in the table.
    pub fn node(&self, node: &str) -> Option<NodeSnapshot> {
        self.shared.lock().detector.node(node).cloned()
    }

    /// How many rows are in each state; costs nothing.
    pub fn counts(&self) -> StateCounts {
        self.shared.lock().detector.counts()
    }

    /// What the master has done and refused so far.
    pub fn stats(&self) -> MasterStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MasterStats {
            nodes: self.counts(),
            registrations: read(&counters.registrations),
            leaves: read(&counters.leaves),
            probes: read(&counters.probes),
            acks: read(&counters.acks),
            rejected_unauthenticated: read(&counters.unauthenticated),
            rejected_replays: read(&counters.replays),
            rejected_invalid: read(&counters.invalid),
            connections_refused: read(&counters.connections_refused),
            refused: std::array::from_fn(|i| read(&counters.refused[i])),
        }
    }

    /// How long until `node` would be declared Dead if every further probe failed
    /// (see [`Detector::time_until_dead`]); `None` for an unknown, Dead or Left node.
    pub fn time_until_dead(&self, node: &str) -> Option<Duration> {
        let now = now();
        self.shared.lock().detector.time_until_dead(node, now)
    }

    /// Forgets a node, whatever its state, returning its last row (a
    /// [`Change::Forgotten`](crate::Change::Forgotten) goes on the event stream). A
    /// live node that is removed is no longer probed: its probe connection closes,
    /// so a node that is still running checks in and registers again.
    pub fn remove(&self, node: &str) -> Option<NodeSnapshot> {
        self.shared
            .with_state(|state, now| state.detector.remove(node, now))
    }

    /// Stops probing and listening, closes every connection, and returns once every
    /// task of the master has ended and its address can be bound again. The event
    /// stream ends after its last event. Calling it again does nothing.
    ///
    /// (The probe connections finish closing in the engine's background, within
    /// `probe_timeout`; they hold no listening port.)
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(tasks) = tasks else {
            return;
        };
        // The round driver drops the probe connections before it returns.
        let _ = tasks.rounds.await;
        self.server.cut().await;
        let _ = tasks.forward.await;
        self.shared.events.close();
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(tasks) = self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tasks.forward.abort();
        }
    }
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("local_addr", &self.local_addr())
            .field("cluster", &self.shared.config.cluster)
            .field("epoch", &self.shared.epoch)
            .finish_non_exhaustive()
    }
}

impl MasterBuilder {
    /// Replaces the settings (cluster, timings, key, limits).
    pub fn config(mut self, config: HeartbeatConfig) -> Self {
        self.config = config;
        self
    }

    /// Events kept for a reader that lags (default
    /// [`DEFAULT_EVENT_CAPACITY`](crate::DEFAULT_EVENT_CAPACITY)); past it, the
    /// reader loses the oldest. Give a cluster of `n` nodes room for a few events
    /// each if a reader may fall behind while they all join. Set it before taking
    /// [`events`](Self::events): it starts a new stream.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.events = BuilderEvents::with_capacity(capacity);
        self
    }

    /// A stream of every event of the master this builder starts, from its very
    /// start: on a multi-threaded runtime a node may register before a stream taken
    /// from the running master ([`Master::events`]) exists.
    pub fn events(&self) -> Events<MasterEvent> {
        self.events.subscribe()
    }

    /// This run's epoch, instead of the clock's: it must be greater than that of
    /// every earlier run of this master, and differ from every other master's the
    /// nodes register with (they tell the probes of two masters apart by it).
    /// Default: the start time in milliseconds since the Unix epoch, raised to be
    /// unique within the process.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Binds the registration address with `binder`, and starts the round driver,
    /// which probes nodes through `connector`. Call it within a tokio runtime.
    ///
    /// File descriptors: the master holds one per live node (its probe connection)
    /// and up to `registration_connections` more; keep `max_nodes +
    /// registration_connections` and some reserve under the process's open-file
    /// limit (the `heartbeat` binary lowers `max_nodes` to fit).
    ///
    /// # Errors
    /// [`BindError`] naming the address when it cannot be bound; nothing runs then.
    ///
    /// # Panics
    /// If `config.probe_interval` is zero.
    pub async fn start<B: Binder, C: Connector>(
        self,
        binder: &B,
        connector: C,
    ) -> Result<Master, BindError> {
        let config = self.config;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                detector: Detector::new(config.clone()),
                limiter: RateLimiter::new(config.max_registrations_per_ip),
                probe_seq: 0,
            }),
            events: self.events.into_queue(),
            epoch: self.epoch.unwrap_or_else(|| next_incarnation(0)),
            counters: Counters::default(),
            config,
        });
        let config = &shared.config;
        let mut server_config = ServerConfig::default();
        server_config.max_connections = config.registration_connections;
        let server = Server::with_state(self.addr, shared.clone())
            .config(server_config)
            .on_frame(registration::on_frame)
            .max_frame_len(MAX_MESSAGE_LEN)
            // Nodes send their register as soon as they connect and close after the
            // answer: only a slow, stuck or idle peer meets these.
            .frame_timeout(config.probe_timeout)
            .idle_timeout(config.probe_timeout)
            .linger(config.probe_timeout)
            .listen_on(binder)
            .await?;
        let mut engine_events = server.events();
        let forward = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(event) = engine_events.next().await {
                    if let Some(error) = event.as_error() {
                        if matches!(error, ConnError::Refused { .. }) {
                            bump(&shared.counters.connections_refused, 1);
                        }
                        shared.events.emit(MasterEvent::Connection {
                            at: now(),
                            error: error.clone(),
                        });
                    }
                }
            })
        };
        let (stop, stopped) = watch::channel(false);
        let rounds = tokio::spawn(rounds::run(shared.clone(), Arc::new(connector), stopped));
        Ok(Master {
            shared,
            server,
            stop,
            tasks: Mutex::new(Some(Tasks { rounds, forward })),
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under this lock leaves a consistent table (every detector call
        // completes its changes before returning), so keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state at the current time and publishes what the detector
    /// decided, in order, before the lock is released.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut state = self.lock();
        let out = f(&mut state, now());
        for event in state.detector.drain_events() {
            self.events.emit(match event {
                DetectorEvent::Changed(change) => MasterEvent::Changed(change),
                DetectorEvent::Stalled(stall) => MasterEvent::Stalled(stall),
            });
        }
        out
    }

    /// Counts and publishes a peer's fault.
    fn error(&self, error: MasterError) {
        let counters = &self.counters;
        match &error {
            MasterError::Wire { source, .. } if source.is_auth() => {
                bump(&counters.unauthenticated, 1)
            }
            MasterError::Refused {
                source: RegisterError::Replay { .. },
                ..
            }
            | MasterError::Leave {
                source: LeaveRefused::Replay { .. },
                ..
            } => bump(&counters.replays, 1),
            MasterError::Refused { source, .. } => {
                if let Some(reason) = source.refuse_reason() {
                    bump(&counters.refused[reason.index()], 1);
                }
            }
            MasterError::WrongCluster { .. } => {
                bump(&counters.refused[RefuseReason::WrongCluster.index()], 1)
            }
            _ => bump(&counters.invalid, 1),
        }
        self.events.emit(MasterEvent::Error { at: now(), error });
    }
}
