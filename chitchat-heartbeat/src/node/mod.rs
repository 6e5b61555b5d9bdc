//! The node role: answers its masters' probes, registers with every master, notices
//! when one goes silent or drops it, and registers again. It runs on chitchat-tokio
//! over any transport, like the [master](crate::master).
//!
//! # Tasks
//! - **Probe server** (`probes`): a chitchat-tokio `Server` on the node's listen
//!   address. Its handler answers a verified `probe` that names this node and this
//!   run with a `probe-ack`; a probe naming another node or run is refused without
//!   an answer (nothing about this node is revealed), and anything else closes the
//!   connection, with a [`NodeError`] on the event stream. A probe is counted as a
//!   sign of life of the master whose epoch it carries once per seq
//!   ([`ReplayWindow`]). The port has a frame deadline
//!   of `probe_timeout`, an idle timeout of `master_timeout` and a cap of
//!   `probe_connections`; the engine's errors on it go to the event stream too.
//! - **One membership task per master** (`membership`): sends `register` (one
//!   connection per attempt, closed after the answer) and waits up to
//!   `probe_timeout` for `register-ack` or `refuse`. Once registered, it declares
//!   that master lost when no probe of it came for `master_timeout`, and registers
//!   again. It also **checks in** (registers again at once, after a short seeded
//!   delay) when the connection that carried that master's probes closes: a master
//!   closes it when it declares the node Dead, forgets it, or stops, so a node that
//!   was paused, partitioned or outlived its master is back within a round. Failed
//!   attempts are retried after an exponential backoff with jitter (see
//!   [`NodeBuilder::start`]).
//!
//! # Refusals
//! A master refuses for a reason ([`RefuseReason`]): `stale-incarnation` and
//! `duplicate-id` make the node take a new incarnation, greater than the one the
//! master knows, and register again with every master ([`NodeEvent::Renewed`]: the
//! refutation of SWIM, as foca renews an identity); `too-far-ahead`, `table-full`
//! and `busy` are retried after the backoff; `wrong-cluster`, `bad-address` and
//! `metadata-too-large` are final for that master (a configuration error): the node
//! stops registering with it and keeps answering the others.
//!
//! # Stopping
//! [`leave`](Node::leave) tells every master that accepted the node (each marks it
//! Left at once) and stops. [`stop`](Node::stop), or dropping the node, stops
//! without a word, like a crash: the masters find out by their probes failing.
//!
//! # Example
//! See the [crate docs](crate) for a master, two nodes and a failure, and
//! [`Node`] for a master that restarts.

mod membership;
mod probes;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chitchat_core::{
    Addr, BindError, Binder, ConnError, ConnectError, Connector, ServerConfig, WriteError,
};
use chitchat_tokio::Server;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::auth::ReplayWindow;
use crate::clock::{fnv1a, mix, next_incarnation};
use crate::config::HeartbeatConfig;
use chitchat_core::{EventQueue, Events};

use crate::builder_events::BuilderEvents;
use crate::wire::{Metadata, NodeId, RefuseReason, WireError, WrongCluster, MAX_MESSAGE_LEN};

/// Events the probe server's engine keeps for the node's forwarder, which reads
/// them at once: a few dozen cover a burst of closes.
const ENGINE_EVENTS: usize = 32;

/// Where the node stands with one master, or (from [`Node::status`]) with its
/// masters together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberStatus {
    /// Trying to register for the first time.
    Registering,
    /// The master accepted the registration, and probes (or the registration) came
    /// within `master_timeout`.
    Registered,
    /// No probe for `master_timeout`: registering again.
    MasterLost,
    /// The master refused the registration for a final reason; the node no longer
    /// tries it.
    Refused(RefuseReason),
    /// Stopped or left.
    Stopped,
}

/// What happened to a node's membership, as the node sees it. Match it;
/// [`as_str`](Self::as_str) gives the word for a log line.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A master accepted this node: the first time, or after that master restarted
    /// (a new epoch).
    Registered {
        /// When (under tokio's paused clock, the paused time).
        at: Instant,
        /// The master, as the node dials it.
        master: Addr,
        /// That master's run.
        epoch: u64,
    },
    /// A master refused the registration. For a final reason the node stops trying
    /// that master; otherwise it retries, or renews its incarnation
    /// ([`Renewed`](Self::Renewed)).
    Refused {
        /// When.
        at: Instant,
        /// The master.
        master: Addr,
        /// Why.
        reason: RefuseReason,
    },
    /// The node took a new incarnation after a master refused the old one as stale
    /// or duplicate, and registers it with every master.
    Renewed {
        /// When.
        at: Instant,
        /// The master that refused.
        master: Addr,
        /// The incarnation refused.
        from: u64,
        /// The new one.
        to: u64,
    },
    /// No probe of this master came for `master_timeout`; the node registers again.
    MasterLost {
        /// When.
        at: Instant,
        /// The master.
        master: Addr,
        /// Time since its last probe (or its registration).
        silent_for: Duration,
    },
    /// A master that was lost accepted a registration again.
    MasterBack {
        /// When.
        at: Instant,
        /// The master.
        master: Addr,
        /// Time since it was declared lost.
        lost_for: Duration,
    },
    /// A peer broke the protocol; its connection was closed.
    Error {
        /// When.
        at: Instant,
        /// What, naming the peer.
        error: NodeError,
    },
    /// The probe server's engine reported a connection error (an oversized or
    /// unfinished frame, an idle or reset connection, one over the connection cap),
    /// naming the peer.
    Connection {
        /// When.
        at: Instant,
        /// The engine's error.
        error: ConnError,
    },
}

impl NodeEvent {
    /// When it happened.
    pub fn at(&self) -> Instant {
        match self {
            NodeEvent::Registered { at, .. }
            | NodeEvent::Refused { at, .. }
            | NodeEvent::Renewed { at, .. }
            | NodeEvent::MasterLost { at, .. }
            | NodeEvent::MasterBack { at, .. }
            | NodeEvent::Error { at, .. }
            | NodeEvent::Connection { at, .. } => *at,
        }
    }

    /// The master it concerns, if one.
    pub fn master(&self) -> Option<Addr> {
        match self {
            NodeEvent::Registered { master, .. }
            | NodeEvent::Refused { master, .. }
            | NodeEvent::Renewed { master, .. }
            | NodeEvent::MasterLost { master, .. }
            | NodeEvent::MasterBack { master, .. } => Some(*master),
            NodeEvent::Error { .. } | NodeEvent::Connection { .. } => None,
        }
    }

    /// The word for event lines: `registered`, `refused`, `renewed`, `master-lost`,
    /// `master-back` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeEvent::Registered { .. } => "registered",
            NodeEvent::Refused { .. } => "refused",
            NodeEvent::Renewed { .. } => "renewed",
            NodeEvent::MasterLost { .. } => "master-lost",
            NodeEvent::MasterBack { .. } => "master-back",
            NodeEvent::Error { .. } | NodeEvent::Connection { .. } => "error",
        }
    }
}

/// A peer of the node broke the protocol or was refused: the connection was closed.
/// Each names the peer's address, and reads as one sentence with its cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A frame that is not a valid or authentic heartbeat message.
    #[error("invalid message from {peer}: {source}")]
    Wire {
        /// The sender: a prober, or a master answering a registration.
        peer: Addr,
        /// What is wrong with the frame.
        #[source]
        source: WireError,
    },
    /// A probe of another cluster.
    #[error("probe from {peer} refused: {source}")]
    WrongCluster {
        /// The sender.
        peer: Addr,
        /// Both clusters.
        #[source]
        source: WrongCluster,
    },
    /// A probe naming another node or another run of this one: not answered, so
    /// the sender learns nothing of this node.
    #[error("probe from {peer} refused: it names another node or run")]
    NotThisNode {
        /// The sender.
        peer: Addr,
    },
    /// A probe whose seq was already counted for its master run: a replay.
    #[error("probe from {peer} refused: it repeats sequence number {seq} of master run {epoch} (a replay)")]
    Replay {
        /// The sender.
        peer: Addr,
        /// The master run the probe names.
        epoch: u64,
        /// The repeated sequence number.
        seq: u64,
    },
    /// A well-formed message that has no business on a probe port (anything but
    /// `probe`) or as a registration answer.
    #[error("{peer} sent an unexpected {message} message")]
    Unexpected {
        /// The sender.
        peer: Addr,
        /// The message type, as on the wire.
        message: &'static str,
    },
}

/// What a node has answered and refused so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Probes answered.
    pub probes_answered: u64,
    /// Registrations a master accepted.
    pub registrations: u64,
    /// Registrations a master refused.
    pub refusals: u64,
    /// Incarnations taken after a refusal as stale or duplicate.
    pub renewals: u64,
    /// Messages refused for their MAC: none where one is required, or one no key
    /// verifies.
    pub rejected_unauthenticated: u64,
    /// Probes refused as replays.
    pub rejected_replays: u64,
    /// Other messages refused: malformed, of another cluster, naming another node
    /// or run, of an unexpected type.
    pub rejected_invalid: u64,
}

/// The counters behind [`NodeStats`].
#[derive(Default)]
struct Counters {
    probes_answered: AtomicU64,
    registrations: AtomicU64,
    refusals: AtomicU64,
    renewals: AtomicU64,
    unauthenticated: AtomicU64,
    replays: AtomicU64,
    invalid: AtomicU64,
}

/// [`Node::leave`] could not tell a master. The node is stopped anyway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaveError {
    /// A master could not be reached.
    #[error("cannot send leave: {0}")]
    Connect(#[from] ConnectError),
    /// The connection closed before `leave` was queued.
    #[error("cannot send leave: {0}")]
    Write(#[from] WriteError),
    /// The master did not close the exchange within `probe_timeout`: it may or may
    /// not have seen `leave`.
    #[error("leave to master {master} not confirmed within {after:?}")]
    Timeout {
        /// The master's address.
        master: Addr,
        /// The configured probe timeout.
        after: Duration,
    },
    /// The node had already stopped or left.
    #[error("node {node} has already stopped")]
    Stopped {
        /// The node.
        node: NodeId,
    },
}

/// A running node (see the [module docs](self)).
///
/// Dropping it stops it like [`stop`](Self::stop), without waiting.
///
/// The master restarts: its probe connection closes, and the node checks in with
/// the new run at once.
///
/// ```
/// use std::net::SocketAddr;
///
/// use chitchat_heartbeat::{Master, MemberStatus, Node, NodeEvent, NodeId};
/// use chitchat_testkit::Network;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = Network::new(1);
/// let (master_host, node_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
/// let master_addr = SocketAddr::from(([10, 0, 0, 1], 7000));
/// let master = Master::builder(master_addr).start(&master_host, master_host.clone()).await?;
/// let node = Node::builder(NodeId::new("web-1")?, master_addr)
///     .listen(SocketAddr::from(([10, 0, 0, 2], 7001)))
///     .start(&node_host, node_host.clone())
///     .await?;
/// let mut events = node.events();
/// assert_eq!(node.registered().await, MemberStatus::Registered);
/// tokio::time::sleep(master.config().probe_interval * 2).await; // probed
///
/// master.shutdown().await;
/// let restarted = Master::builder(master_addr).start(&master_host, master_host.clone()).await?;
/// // The old run closed its probe connection: the node checks in with the new one.
/// let new_epoch = tokio::time::timeout(std::time::Duration::from_secs(60), async {
///     loop {
///         match events.next().await {
///             Some(NodeEvent::Registered { epoch, .. }) if epoch != master.epoch() => break epoch,
///             Some(_) => {}
///             None => unreachable!("the node is running"),
///         }
///     }
/// })
/// .await?;
/// assert_eq!(new_epoch, restarted.epoch());
/// assert!(restarted.node("web-1").is_some());
/// # Ok(())
/// # }
/// ```
pub struct Node {
    shared: Arc<NodeShared>,
    server: Server<Arc<NodeShared>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Sends `leave` to the masters; taken once.
    leave: Mutex<Option<LeaveAll>>,
}

type LeaveAll =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), LeaveError>> + Send>> + Send>;

/// Configures and starts a [`Node`].
///
/// A clone has an event stream of its own: streams taken from one builder see
/// only the node that builder starts.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct NodeBuilder {
    id: NodeId,
    masters: Vec<Addr>,
    listen: Option<Addr>,
    metadata: Metadata,
    incarnation: Option<u64>,
    config: HeartbeatConfig,
    /// Created with the builder, so that [`events`](Self::events) can subscribe
    /// before anything happens.
    events: BuilderEvents<NodeEvent>,
}

/// What the probe handler, the membership tasks and the handle share.
struct NodeShared {
    id: NodeId,
    /// This run; raised when a master refuses it as stale or duplicate.
    incarnation: AtomicU64,
    config: HeartbeatConfig,
    metadata: Metadata,
    /// The probe server's bound address, set once it listens.
    bound: OnceLock<Addr>,
    /// Seq of the node's own requests (`register`, `leave`), unique in this process
    /// run, so each is accepted once.
    seq: AtomicU64,
    /// Seed of the backoff and check-in jitter: from the id and first incarnation,
    /// so that a simulation replays and nodes that lost a master together spread
    /// out.
    jitter_seed: u64,
    masters: Vec<MasterSlot>,
    events: Arc<EventQueue<NodeEvent>>,
    /// The status of the node with its masters together (see [`Node::status`]).
    status: watch::Sender<MemberStatus>,
    counters: Counters,
}

/// One master, as this node knows it.
struct MasterSlot {
    addr: Addr,
    view: Mutex<MasterView>,
    /// Wakes the membership task: check in with this master now.
    check_in: Notify,
}

struct MasterView {
    status: MemberStatus,
    /// The master's run, from its last `register-ack`; 0 before the first.
    epoch: u64,
    /// Probe seqs of that run seen so far.
    probes: ReplayWindow,
    /// The last counted probe of this master, or its last `register-ack`.
    last_contact: tokio::time::Instant,
    /// The connection the last counted probe came on: when it closes, the node
    /// checks in.
    link_peer: Option<Addr>,
    /// The address registered with it: the bound one, with the IP the master sees
    /// us from when bound to the unspecified address.
    advertised: Addr,
}

impl Node {
    /// Starts building node `id`, which registers with the master at `master` (add
    /// more with [`NodeBuilder::master`]).
    ///
    /// Defaults: listens on the unspecified address of the first master's family,
    /// port 0 (and registers, with each master, the IP it reaches that master from);
    /// no metadata; the incarnation is the time in milliseconds since the Unix epoch
    /// (raised if need be so that it grows on every start within the process); the
    /// default [`HeartbeatConfig`], whose cluster, timings and keyring must match
    /// the masters'.
    pub fn builder(id: NodeId, master: impl Into<Addr>) -> NodeBuilder {
        NodeBuilder {
            id,
            masters: vec![master.into()],
            listen: None,
            metadata: Metadata::new(),
            incarnation: None,
            config: HeartbeatConfig::default(),
            events: BuilderEvents::new(),
        }
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// This run's incarnation now (it grows if a master refused an older one).
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation()
    }

    /// The probe server's bound address (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> Addr {
        self.server.local_addr()
    }

    /// The masters, in the order given, with where the node stands with each.
    pub fn masters(&self) -> Vec<(Addr, MemberStatus)> {
        self.shared
            .masters
            .iter()
            .map(|master| (master.addr, master.view().status))
            .collect()
    }

    /// Where the node stands with its masters together: `Registered` if one or more
    /// accepted it and are not lost; otherwise `MasterLost` if one was lost,
    /// `Registering` while one is still being tried, `Refused` once every master
    /// refused it for good (the first master's reason), `Stopped` after
    /// [`stop`](Self::stop).
    pub fn status(&self) -> MemberStatus {
        *self.shared.status.borrow()
    }

    /// What the node has answered and refused so far.
    pub fn stats(&self) -> NodeStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NodeStats {
            probes_answered: read(&counters.probes_answered),
            registrations: read(&counters.registrations),
            refusals: read(&counters.refusals),
            renewals: read(&counters.renewals),
            rejected_unauthenticated: read(&counters.unauthenticated),
            rejected_replays: read(&counters.replays),
            rejected_invalid: read(&counters.invalid),
        }
    }

    /// Waits until a master has accepted the node ([`MemberStatus::Registered`])
    /// or the node can no longer get there (`Refused`, `Stopped`), and returns that
    /// status.
    pub async fn registered(&self) -> MemberStatus {
        let mut status = self.shared.status.subscribe();
        let settled = status
            .wait_for(|s| {
                matches!(
                    s,
                    MemberStatus::Registered | MemberStatus::Refused(_) | MemberStatus::Stopped
                )
            })
            .await
            .map(|s| *s);
        settled.unwrap_or(MemberStatus::Stopped)
    }

    /// A stream of the node's events from this call on (see [`Events`]); to miss
    /// none from the start (the first registration), take it from the builder
    /// ([`NodeBuilder::events`]). It ends once the node stops.
    pub fn events(&self) -> Events<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// Sends `leave` to every master that accepted the node (each marks it Left at
    /// once), then stops like [`stop`](Self::stop). Returns once the masters have
    /// closed the exchanges, so they have applied the `leave`.
    ///
    /// # Errors
    /// The first [`LeaveError`] when a master could not be told within
    /// `probe_timeout`; the node is stopped anyway, and that master will declare it
    /// Dead.
    pub async fn leave(&self) -> Result<(), LeaveError> {
        let leave = self
            .leave
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let result = match leave {
            Some(leave) => {
                // No registration may race the goodbye.
                self.stop_tasks().await;
                leave().await
            }
            None => Err(LeaveError::Stopped {
                node: self.shared.id.clone(),
            }),
        };
        self.stop().await;
        result
    }

    /// Stops without telling the masters, like a crash: the membership tasks end,
    /// the probe server stops listening and drops its connections. Returns once the
    /// listen address can be bound again. The event stream ends. Calling it again
    /// does nothing.
    pub async fn stop(&self) {
        self.leave
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.stop_tasks().await;
        self.server.cut().await;
        self.shared.status.send_replace(MemberStatus::Stopped);
        self.shared.events.close();
    }

    async fn stop_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .field("incarnation", &self.incarnation())
            .field("local_addr", &self.local_addr())
            .field("masters", &self.masters())
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// One more master to register with. The node registers with every master and
    /// answers each one's probes; each detects on its own, and losing one is one
    /// [`NodeEvent::MasterLost`] naming it. A master given twice counts once.
    pub fn master(mut self, master: impl Into<Addr>) -> Self {
        let master = master.into();
        if !self.masters.contains(&master) {
            self.masters.push(master);
        }
        self
    }

    /// Where the probe server listens (port 0 picks a free port).
    pub fn listen(mut self, addr: impl Into<Addr>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Labels to register with, shown in the masters' tables.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// This run's incarnation, instead of the clock's: it must be greater than that
    /// of every earlier run of this node id (see the
    /// [wire docs](crate::wire#choosing-an-incarnation)).
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Replaces the settings; the cluster, timings and keyring must match the
    /// masters'.
    pub fn config(mut self, config: HeartbeatConfig) -> Self {
        self.config = config;
        self
    }

    /// Events kept for a reader that lags (default
    /// [`DEFAULT_EVENT_CAPACITY`](crate::DEFAULT_EVENT_CAPACITY)). Set it before
    /// taking [`events`](Self::events): it starts a new stream.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.events = BuilderEvents::with_capacity(capacity);
        self
    }

    /// A stream of every event of the node this builder starts, from its very
    /// start: on a multi-threaded runtime the first registration may complete
    /// before a stream taken from the running node ([`Node::events`]) exists.
    pub fn events(&self) -> Events<NodeEvent> {
        self.events.subscribe()
    }

    /// Binds the probe server with `binder` and starts registering with every
    /// master through `connector`, in the background: the node answers probes at
    /// once and registers as soon as a master answers ([`Node::registered`] waits
    /// for it). Call it within a tokio runtime.
    ///
    /// Failed registration attempts (unreachable master, no answer within
    /// `probe_timeout`, a refusal worth retrying) are retried after an exponential
    /// backoff: the ceiling starts at a quarter of `probe_interval` and doubles up
    /// to `probe_interval`, so a master that comes back has every node within a
    /// round; each pause is drawn between half the ceiling and the ceiling, from a
    /// generator seeded with the node id and incarnation (no global randomness, so
    /// a simulation replays exactly).
    ///
    /// # Errors
    /// [`BindError`] naming the address when the probe server cannot bind; nothing
    /// runs then.
    pub async fn start<B: Binder, C: Connector>(
        self,
        binder: &B,
        connector: C,
    ) -> Result<Node, BindError> {
        let listen = self
            .listen
            .unwrap_or_else(|| unspecified_like(self.masters[0]));
        let incarnation = self.incarnation.unwrap_or_else(|| next_incarnation(0));
        let (status, _) = watch::channel(MemberStatus::Registering);
        let origin = tokio::time::Instant::now();
        let masters = self
            .masters
            .iter()
            .map(|&addr| MasterSlot {
                addr,
                view: Mutex::new(MasterView {
                    status: MemberStatus::Registering,
                    epoch: 0,
                    probes: ReplayWindow::default(),
                    last_contact: origin,
                    link_peer: None,
                    advertised: listen,
                }),
                check_in: Notify::new(),
            })
            .collect();
        let shared = Arc::new(NodeShared {
            jitter_seed: fnv1a(self.id.as_str().as_bytes()) ^ mix(incarnation),
            id: self.id,
            incarnation: AtomicU64::new(incarnation),
            config: self.config,
            metadata: self.metadata,
            bound: OnceLock::new(),
            seq: AtomicU64::new(0),
            masters,
            events: self.events.into_queue(),
            status,
            counters: Counters::default(),
        });
        let config = &shared.config;
        let mut server_config = ServerConfig::default();
        server_config.max_connections = config.probe_connections;
        server_config.event_capacity = ENGINE_EVENTS;
        let server = Server::with_state(listen, shared.clone())
            .config(server_config)
            .handler(probes::ProbePort)
            .max_frame_len(MAX_MESSAGE_LEN)
            .frame_timeout(config.probe_timeout)
            // Probes come every probe_interval: a connection silent for longer
            // than master_timeout belongs to a master that is gone.
            .idle_timeout(config.master_timeout)
            .linger(config.probe_timeout)
            .listen_on(binder)
            .await?;
        let bound = server.local_addr();
        let _ = shared.bound.set(bound);
        for master in &shared.masters {
            master.view().advertised = bound;
        }
        let connector = Arc::new(connector);
        let mut tasks = vec![tokio::spawn(probes::watch_engine(
            shared.clone(),
            server.events(),
        ))];
        for index in 0..shared.masters.len() {
            tasks.push(tokio::spawn(membership::run(
                shared.clone(),
                index,
                connector.clone(),
            )));
        }
        let leave: LeaveAll = {
            let shared = shared.clone();
            Box::new(move || Box::pin(membership::leave_all(shared, connector)))
        };
        Ok(Node {
            shared,
            server,
            tasks: Mutex::new(tasks),
            leave: Mutex::new(Some(leave)),
        })
    }
}

/// `0.0.0.0:0` or `[::]:0`, matching the family of `addr`.
fn unspecified_like(addr: Addr) -> Addr {
    let ip = match addr.as_inet() {
        Some(SocketAddr::V6(_)) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0).into()
}

impl MasterSlot {
    fn view(&self) -> MutexGuard<'_, MasterView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NodeShared {
    fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::Acquire)
    }

    fn emit(&self, event: NodeEvent) {
        let counters = &self.counters;
        let counter = match &event {
            NodeEvent::Registered { .. } | NodeEvent::MasterBack { .. } => None,
            NodeEvent::Refused { .. } => Some(&counters.refusals),
            NodeEvent::Renewed { .. } => Some(&counters.renewals),
            NodeEvent::Error { error, .. } => Some(match error {
                NodeError::Wire { source, .. } if source.is_auth() => &counters.unauthenticated,
                NodeError::Replay { .. } => &counters.replays,
                _ => &counters.invalid,
            }),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.events.emit(event);
    }

    /// Counts an answered probe or an accepted registration.
    fn count(&self, counter: fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sets one master's status and recomputes the node's.
    fn set_status(&self, index: usize, status: MemberStatus) {
        self.masters[index].view().status = status;
        let all: Vec<MemberStatus> = self.masters.iter().map(|m| m.view().status).collect();
        let overall = if all.contains(&MemberStatus::Registered) {
            MemberStatus::Registered
        } else if all.contains(&MemberStatus::MasterLost) {
            MemberStatus::MasterLost
        } else if all.contains(&MemberStatus::Registering) {
            MemberStatus::Registering
        } else {
            all.first().copied().unwrap_or(MemberStatus::Stopped)
        };
        self.status.send_if_modified(|current| {
            let changed = *current != overall && *current != MemberStatus::Stopped;
            if changed {
                *current = overall;
            }
            changed
        });
    }

    /// A pause drawn from `[ceiling / 2, ceiling]` with the node's seeded
    /// generator; `draw` tells the draws apart.
    fn jitter(&self, ceiling: Duration, draw: u64) -> Duration {
        let half = ceiling / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let pick = mix(self.jitter_seed ^ draw) % span.saturating_add(1);
        half + Duration::from_nanos(pick)
    }

    /// The pause before registration attempt `attempt + 1` (see
    /// [`NodeBuilder::start`]).
    fn backoff(&self, attempt: u32) -> Duration {
        let base = (self.config.probe_interval / 4).max(Duration::from_millis(1));
        let cap = self.config.probe_interval.max(base);
        let ceiling = base.saturating_mul(1 << attempt.min(20)).min(cap);
        self.jitter(ceiling, u64::from(attempt))
    }
}

/// Whether `at` is due: `now` at or past it.
fn passed(at: tokio::time::Instant) -> bool {
    tokio::time::Instant::now() >= at
}

/// `bound`, with the local IP of the connection to the master when `bound` is the
/// unspecified address: the master cannot probe `0.0.0.0`.
fn advertised(bound: Addr, to_master: Addr) -> Addr {
    match (bound.as_inet(), to_master.as_inet()) {
        (Some(bound), Some(local)) if bound.ip().is_unspecified() => {
            SocketAddr::new(local.ip(), bound.port()).into()
        }
        _ => bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_for(id: &str, incarnation: u64) -> NodeShared {
        let (status, _) = watch::channel(MemberStatus::Registering);
        let bound: Addr = "10.0.0.1:7001".parse().unwrap();
        NodeShared {
            id: NodeId::new(id).unwrap(),
            incarnation: AtomicU64::new(incarnation),
            config: HeartbeatConfig::default(),
            metadata: Metadata::new(),
            bound: OnceLock::from(bound),
            seq: AtomicU64::new(0),
            jitter_seed: fnv1a(id.as_bytes()) ^ mix(incarnation),
            masters: Vec::new(),
            events: Arc::new(EventQueue::new(1)),
            status,
            counters: Counters::default(),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_probe_interval_with_jitter() {
        let shared = shared_for("node-1", 1);
        // Default config: ceiling 750 ms, 1.5 s, then 3 s for good.
        let ceilings = [750, 1500, 3000, 3000, 3000];
        for (attempt, ceiling) in ceilings.into_iter().enumerate() {
            let pause = shared.backoff(attempt as u32);
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                pause >= ceiling / 2 && pause <= ceiling,
                "attempt {attempt}: {pause:?}"
            );
        }
        assert_eq!(shared.backoff(1000), shared.backoff(1000));
    }

    #[test]
    fn backoff_is_reproducible_and_differs_between_nodes() {
        let a = shared_for("node-1", 7);
        let again = shared_for("node-1", 7);
        let b = shared_for("node-2", 7);
        let restarted = shared_for("node-1", 8);
        let pauses = |s: &NodeShared| (0..6).map(|i| s.backoff(i)).collect::<Vec<_>>();
        assert_eq!(pauses(&a), pauses(&again));
        assert_ne!(pauses(&a), pauses(&b));
        assert_ne!(pauses(&a), pauses(&restarted));
    }

    #[test]
    fn unspecified_bind_advertises_the_ip_seen_by_the_master() {
        let bound: Addr = "0.0.0.0:7001".parse().unwrap();
        let local: Addr = "10.0.0.9:49152".parse().unwrap();
        assert_eq!(
            advertised(bound, local),
            "10.0.0.9:7001".parse::<Addr>().unwrap()
        );
        let fixed: Addr = "10.0.0.1:7001".parse().unwrap();
        assert_eq!(advertised(fixed, local), fixed);
        assert_eq!(
            unspecified_like("[::1]:1".parse().unwrap()),
            "[::]:0".parse::<Addr>().unwrap()
        );
    }
}
