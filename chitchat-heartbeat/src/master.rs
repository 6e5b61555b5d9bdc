//! The master role: accepts registrations, probes every live node once per round,
//! and publishes what the [`Detector`] concludes as a stream of [`MasterEvent`]s and a
//! membership snapshot. It runs on chitchat-tokio over any transport: TCP in
//! production, the testkit's in-memory network in tests.
//!
//! # Tasks
//! - **Registration server**: a chitchat-tokio `Server` whose handler decodes each
//!   frame and answers `register` with `register-ack` or `refuse`, applies `leave`,
//!   and closes the connection of a peer that sends anything invalid (a typed
//!   [`MasterError`] naming the peer goes on the event stream; nothing else is
//!   disturbed).
//! - **Round loop**: every `probe_interval` it ticks the detector (which measures
//!   the master's own timer drift and reports stalls), starts a prober for each live
//!   node that has none (a node that registers is first probed at the next round),
//!   and signals every prober that a round began, in node order.
//! - **One prober per live node**: keeps one connection to the node's probe address
//!   open across rounds, writes `probe` with a fresh seq, and waits for the
//!   `probe-ack` with that seq for at most `probe_timeout`, dial included. Any
//!   failure drops the connection; the next round dials again. Probers run
//!   concurrently, so a slow node delays no other. A prober ends when its node is no
//!   longer live with the same incarnation and address (Dead, Left, or replaced).
//!
//! The detector sits behind a `std::sync::Mutex` shared by the handler and the
//! probers; every critical section is one detector call, never held across an
//! `.await`. Events are emitted under that lock, so they come out in the order the
//! detector decided them.
//!
//! # Example
//! See the [crate docs](crate) for a master, two nodes and a failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chitchat_core::{Addr, BindError, Binder, ConnError, Connector, Frame, ReadContext};
use chitchat_tokio::{Client, Server};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use crate::detector::{
    Detector, Event, HeartbeatConfig, NodeEvent, NodeSnapshot, RegisterError, Stall,
};
use crate::events::{Emitter, Events, DEFAULT_EVENT_CAPACITY};
use crate::wire::{
    decode, Body, Message, NodeId, RefuseReason, WireError, WrongCluster, MAX_MESSAGE_LEN,
};

/// `probe-ack`s buffered between a probe connection's handler and its prober. One is
/// awaited at a time; the room absorbs late or repeated acks, and a node that floods
/// acks loses the surplus instead of growing memory.
const ACK_QUEUE: usize = 8;

/// What happened at the master: a node changed state, the master stalled, or a peer
/// misbehaved.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum MasterEvent {
    /// A node changed state (joined, suspect, alive, dead, left).
    Node(NodeEvent),
    /// The master's own runtime ran late; the probes it missed were not counted.
    Stalled(Stall),
    /// A peer sent something the protocol does not allow; its connection was closed
    /// (or its registration refused).
    Error {
        /// When it was seen.
        at: Instant,
        /// What, naming the peer.
        error: MasterError,
    },
    /// The registration server's engine reported a connection error (an oversized
    /// frame, an idle or reset connection), naming the peer.
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
            MasterEvent::Node(event) => event.at,
            MasterEvent::Stalled(stall) => stall.actual,
            MasterEvent::Error { at, .. } | MasterEvent::Connection { at, .. } => *at,
        }
    }

    /// The word for event lines: the node's change (`joined`, `suspect`, `alive`,
    /// `dead`, `left`), `stalled`, or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MasterEvent::Node(event) => event.change.as_str(),
            MasterEvent::Stalled(_) => "stalled",
            MasterEvent::Error { .. } | MasterEvent::Connection { .. } => "error",
        }
    }

    /// The node event, if this is one.
    pub fn as_node(&self) -> Option<&NodeEvent> {
        match self {
            MasterEvent::Node(event) => Some(event),
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

/// A peer of the master broke the protocol. Each names the peer's address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterError {
    /// A frame that is not a valid heartbeat message (bad magic, unknown version,
    /// malformed field); the connection was closed.
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
    /// A registration the detector refuses (duplicate id, stale incarnation); the
    /// node was sent `refuse` with the reason.
    #[error("refused registration from {peer}: {source}")]
    Refused {
        /// The sender.
        peer: Addr,
        /// Why.
        #[source]
        source: RegisterError,
    },
    /// A well-formed message that has no business where it arrived (a `probe` on the
    /// registration port, a `register` on a probe connection); the connection was
    /// closed.
    #[error("{peer} sent an unexpected {message} message")]
    Unexpected {
        /// The sender.
        peer: Addr,
        /// The message type, as on the wire.
        message: &'static str,
    },
}

/// A running master (see the [module docs](self)).
///
/// Dropping it stops the round loop and the probers and stops listening, without
/// waiting; [`shutdown`](Self::shutdown) waits until everything has ended.
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
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct MasterBuilder {
    addr: Addr,
    config: HeartbeatConfig,
    event_capacity: usize,
}

/// What the registration handler, the round loop and the probers share.
struct Shared {
    config: HeartbeatConfig,
    detector: Mutex<Detector>,
    events: Emitter<MasterEvent>,
}

impl Master {
    /// Starts building a master that listens for registrations on `addr` (port 0
    /// picks a free port), with the default [`HeartbeatConfig`].
    pub fn builder(addr: impl Into<Addr>) -> MasterBuilder {
        MasterBuilder {
            addr: addr.into(),
            config: HeartbeatConfig::default(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
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

    /// The stream of events. The first call gets every event since the start; later
    /// calls get the events from the call on. Bounded (see [`Events`]); it ends after
    /// [`shutdown`](Self::shutdown).
    pub fn events(&self) -> Events<MasterEvent> {
        self.shared.events.subscribe()
    }

    /// The membership table, ordered by node id.
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        self.shared.lock().snapshot()
    }

    /// The row of one node, if it is in the table.
    pub fn node(&self, node: &str) -> Option<NodeSnapshot> {
        self.shared.lock().node(node).cloned()
    }

    /// How long until `node` would be declared Dead if every further probe failed
    /// (see [`Detector::time_until_dead`]); `None` for an unknown, Dead or Left node.
    pub fn time_until_dead(&self, node: &str) -> Option<Duration> {
        let now = now();
        self.shared.lock().time_until_dead(node, now)
    }

    /// Forgets a node (to drop Dead and Left rows), returning its last row. A live
    /// node that is removed is no longer probed; it is back once it registers again.
    pub fn remove(&self, node: &str) -> Option<NodeSnapshot> {
        self.shared.lock().remove(node)
    }

    /// Stops probing and listening, closes every connection, and returns once every
    /// task of the master has ended and its address can be bound again. The event
    /// stream ends after its last event. Calling it again does nothing.
    ///
    /// (A probe connection dropped after a failed probe finishes closing in the
    /// engine's background, within `probe_timeout`; it holds no listening port.)
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
        // The probers close their connections before the round loop returns.
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
            .finish_non_exhaustive()
    }
}

impl MasterBuilder {
    /// Replaces the settings (cluster, intervals, thresholds).
    pub fn config(mut self, config: HeartbeatConfig) -> Self {
        self.config = config;
        self
    }

    /// Events kept for a reader that lags (default [`DEFAULT_EVENT_CAPACITY`]); past
    /// it, the reader loses the oldest. Give a cluster of `n` nodes room for a few
    /// events each if a reader may fall behind while they all join.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Binds the registration address with `binder`, and starts the round loop,
    /// which probes nodes through `connector`. Call it within a tokio runtime.
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
            detector: Mutex::new(Detector::new(config.clone())),
            events: Emitter::new(self.event_capacity),
            config,
        });
        let server = Server::with_state(self.addr, shared.clone())
            .on_frame(on_registration_frame)
            .max_frame_len(MAX_MESSAGE_LEN)
            // Nodes close after each exchange: only a stuck or idle peer hits this.
            .idle_timeout(shared.config.master_timeout)
            .linger(shared.config.probe_timeout)
            .listen_on(binder)
            .await?;
        let mut engine_events = server.events();
        let forward = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(event) = engine_events.next().await {
                    if let Some(error) = event.as_error() {
                        shared.events.emit(MasterEvent::Connection {
                            at: now(),
                            error: error.clone(),
                        });
                    }
                }
            })
        };
        let (stop, stopped) = watch::channel(false);
        let rounds = tokio::spawn(run_rounds(shared.clone(), Arc::new(connector), stopped));
        Ok(Master {
            shared,
            server,
            stop,
            tasks: Mutex::new(Some(Tasks { rounds, forward })),
        })
    }
}

/// The current time as the detector takes it: tokio's clock (paused in tests), as a
/// std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn encode(message: &Message) -> BytesMut {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    out
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Detector> {
        // A panic under this lock leaves a consistent table (every detector call
        // completes its changes before returning), so keep using it.
        self.detector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one detector call at the current time and publishes what it decided.
    fn with_detector<R>(&self, f: impl FnOnce(&mut Detector, Instant) -> R) -> R {
        let mut detector = self.lock();
        let out = f(&mut detector, now());
        for event in detector.drain_events() {
            self.events.emit(match event {
                Event::Node(event) => MasterEvent::Node(event),
                Event::Stalled(stall) => MasterEvent::Stalled(stall),
            });
        }
        out
    }

    fn error(&self, error: MasterError) {
        self.events.emit(MasterEvent::Error { at: now(), error });
    }

    /// Whether `target` is still a node to probe, as its prober knows it.
    fn is_target(&self, target: &Target) -> bool {
        self.lock().node(target.node.as_str()).is_some_and(|row| {
            row.state.is_live() && row.incarnation == target.incarnation && row.addr == target.addr
        })
    }
}

/// The registration server's handler: one heartbeat message per frame.
#[allow(clippy::result_large_err)] // the detector's `register` result (see there)
fn on_registration_frame(ctx: &mut dyn ReadContext<Arc<Shared>>, frame: Frame<'_>) {
    let shared = ctx.state().clone();
    let peer = ctx.peer_addr();
    let message = match decode(&frame) {
        Ok(message) => message,
        Err(source) => {
            shared.error(MasterError::Wire { peer, source });
            ctx.close();
            return;
        }
    };
    if let Err(source) = message.check_cluster(&shared.config.cluster) {
        let refuse = message.reply(Body::Refuse {
            reason: RefuseReason::WrongCluster,
        });
        let _ = ctx.reply(&encode(&refuse));
        shared.error(MasterError::WrongCluster {
            peer,
            node: message.node,
            source,
        });
        ctx.close();
        return;
    }
    match &message.body {
        Body::Register { addr, metadata } => {
            let result = shared.with_detector(|detector, now| {
                detector.register(
                    now,
                    message.node.clone(),
                    *addr,
                    message.incarnation,
                    metadata.clone(),
                )
            });
            match result {
                Ok(()) => {
                    let _ = ctx.reply(&encode(&message.reply(Body::RegisterAck)));
                }
                Err(source) => {
                    let reason = source.refuse_reason();
                    let _ = ctx.reply(&encode(&message.reply(Body::Refuse { reason })));
                    shared.error(MasterError::Refused { peer, source });
                }
            }
        }
        Body::Leave => {
            shared.with_detector(|detector, now| {
                detector.leave(now, message.node.as_str(), message.incarnation)
            });
        }
        other => {
            shared.error(MasterError::Unexpected {
                peer,
                message: other.name(),
            });
            ctx.close();
        }
    }
}

/// A node as its prober knows it: a change of any field is a new prober.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    node: NodeId,
    addr: Addr,
    incarnation: u64,
}

/// The round loop's record of a running prober.
struct Prober {
    target: Target,
    /// One message per round; dropping it ends the prober. Capacity 1: a prober
    /// still busy with the last round's probe skips a round rather than queue it.
    rounds: mpsc::Sender<()>,
    task: AbortHandle,
}

async fn run_rounds<C: Connector>(
    shared: Arc<Shared>,
    connector: Arc<C>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(shared.config.probe_interval);
    // After a stall, start the next round one interval later instead of bursting
    // the missed ones: the detector has reported the stall already.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Ordered maps and per-prober channels: probers are signalled, started and
    // dropped in node order, so a simulation with one seed replays exactly (a
    // shared watch channel would wake them in a random order).
    let mut probers: BTreeMap<NodeId, Prober> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ticks.tick() => {}
        }
        let targets: Vec<Target> = shared.with_detector(|detector, now| {
            detector.tick(now);
            detector
                .probe_targets()
                .map(|row| Target {
                    node: row.node.clone(),
                    addr: row.addr,
                    incarnation: row.incarnation,
                })
                .collect()
        });
        while tasks.try_join_next().is_some() {}
        let mut next = BTreeMap::new();
        for target in targets {
            let prober = match probers.remove(&target.node) {
                Some(prober) if prober.target == target && !prober.task.is_finished() => prober,
                // New, or replaced (new incarnation or address): dropping the old
                // record below ends the old prober.
                _ => {
                    let (rounds, signals) = mpsc::channel(1);
                    let task = tasks.spawn(probe_node(
                        shared.clone(),
                        connector.clone(),
                        target.clone(),
                        signals,
                        stop.clone(),
                    ));
                    Prober {
                        target: target.clone(),
                        rounds,
                        task,
                    }
                }
            };
            let _ = prober.rounds.try_send(());
            next.insert(target.node, prober);
        }
        // Probers of nodes that are no longer live end here.
        probers = next;
    }
    drop(probers);
    while tasks.join_next().await.is_some() {}
}

/// One probe connection: the engine's client, and the acks its handler forwards.
struct Link {
    client: Client<AckSink>,
    acks: mpsc::Receiver<Message>,
}

/// The state of a probe connection's handler.
struct AckSink {
    acks: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

/// The handler of a probe connection: forwards `probe-ack`s to the prober, closes
/// the connection on anything else.
fn on_probe_reply(ctx: &mut dyn ReadContext<AckSink>, frame: Frame<'_>) {
    let peer = ctx.peer_addr();
    let sink = ctx.state();
    let error = match decode(&frame) {
        Err(source) => MasterError::Wire { peer, source },
        Ok(message) => match message.check_cluster(&sink.shared.config.cluster) {
            Err(source) => MasterError::WrongCluster {
                peer,
                node: message.node,
                source,
            },
            Ok(()) if message.body == Body::ProbeAck => {
                // Full only if the node sends acks nobody asked for: drop those.
                let _ = sink.acks.try_send(message);
                return;
            }
            Ok(()) => MasterError::Unexpected {
                peer,
                message: message.body.name(),
            },
        },
    };
    sink.shared.error(error);
    ctx.close();
}

/// A prober: one probe per round signal, until the round loop drops it (its node
/// is no longer live with this identity) or the master stops.
async fn probe_node<C: Connector>(
    shared: Arc<Shared>,
    connector: Arc<C>,
    target: Target,
    mut rounds: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut link: Option<Link> = None;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            round = rounds.recv() => if round.is_none() { break },
        }
        if !shared.is_target(&target) {
            break;
        }
        seq += 1;
        let rtt = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            rtt = probe(&shared, &*connector, &target, &mut link, seq) => rtt,
        };
        let (node, incarnation) = (target.node.as_str(), target.incarnation);
        shared.with_detector(|detector, now| match rtt {
            Some(rtt) => detector.probe_succeeded(now, node, incarnation, rtt),
            None => detector.probe_failed(now, node, incarnation),
        });
        if rtt.is_none() {
            // Dropping the client closes it in the background; the next round dials.
            link = None;
        }
    }
    if let Some(link) = link {
        // Bounded by the client's linger (the probe timeout).
        link.client.close().await;
    }
}

/// One probe: dial if needed, write `probe`, wait for the matching `probe-ack`, all
/// within `probe_timeout`. The round-trip time on success; `None` on any failure
/// (including an ack from another node or incarnation at that address).
async fn probe<C: Connector>(
    shared: &Arc<Shared>,
    connector: &C,
    target: &Target,
    link: &mut Option<Link>,
    seq: u64,
) -> Option<Duration> {
    let timeout = shared.config.probe_timeout;
    let attempt = async {
        if !matches!(link, Some(link) if !link.client.is_closed()) {
            *link = None;
            let (acks, rx) = mpsc::channel(ACK_QUEUE);
            let sink = AckSink {
                acks,
                shared: shared.clone(),
            };
            let client = Client::with_state(target.addr, sink)
                .on_frame(on_probe_reply)
                .max_frame_len(MAX_MESSAGE_LEN)
                .connect_timeout(timeout)
                .linger(timeout)
                .connect_with(connector)
                .await
                .ok()?;
            *link = Some(Link { client, acks: rx });
        }
        let Link { client, acks } = link.as_mut()?;
        // Acks of earlier probes that came after their timeout.
        while acks.try_recv().is_ok() {}
        let probe = Message {
            cluster: shared.config.cluster.clone(),
            node: target.node.clone(),
            incarnation: target.incarnation,
            seq,
            body: Body::Probe,
        };
        let sent = tokio::time::Instant::now();
        client.try_write(&encode(&probe)).ok()?;
        loop {
            let ack = tokio::select! {
                biased;
                ack = acks.recv() => ack?,
                _ = client.closed() => return None,
            };
            if ack.seq == seq {
                let valid = ack.node == target.node && ack.incarnation == target.incarnation;
                return valid.then(|| sent.elapsed());
            }
        }
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}
