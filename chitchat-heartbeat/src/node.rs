//! The node role: answers the master's probes, registers with the master, notices
//! when the master goes silent and registers again until it answers. It runs on
//! chitchat-tokio over any transport, like the [master](crate::master).
//!
//! # Tasks
//! - **Probe server**: a chitchat-tokio `Server` on the node's listen address. Its
//!   handler answers each `probe` with a `probe-ack` (the probe's header, with this
//!   node's id and incarnation) and notes the time of the last probe of this run.
//!   Anything else closes the connection, with a [`NodeError`] on the event stream.
//! - **Registration task**: sends `register` (one connection per attempt, closed
//!   after the answer) and waits up to `probe_timeout` for `register-ack` or
//!   `refuse`. Once registered, it declares the master lost when no probe came for
//!   `master_timeout`, and registers again. Failed attempts are retried after an
//!   exponential backoff with jitter (see [`NodeBuilder::start`]).
//!
//! A `refuse` ends the registration task: the reason (wrong cluster, duplicate id,
//! stale incarnation) does not change by retrying. The node keeps answering probes
//! until it is stopped.
//!
//! # Stopping
//! [`leave`](Node::leave) tells the master (the node becomes Left at once) and stops.
//! [`stop`](Node::stop), or dropping the node, stops without a word, like a crash:
//! the master finds out by its probes failing.
//!
//! # Example
//! See the [crate docs](crate) for a master, two nodes and a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use chitchat_core::{
    Addr, BindError, Binder, ConnectError, Connector, Frame, ReadContext, WriteError,
};
use chitchat_tokio::{Client, Server};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::detector::HeartbeatConfig;
use crate::events::{Emitter, Events, DEFAULT_EVENT_CAPACITY};
use crate::wire::{
    decode, Body, Message, Metadata, NodeId, RefuseReason, WireError, WrongCluster, MAX_MESSAGE_LEN,
};

/// Replies buffered between a registration connection's handler and the task
/// waiting for one: one is expected, the rest are dropped.
const REPLY_QUEUE: usize = 4;

/// Where the node stands with the master, as it sees it.
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
    /// The master refused the registration; the node no longer tries.
    Refused(RefuseReason),
    /// Stopped or left.
    Stopped,
}

/// What happened to a node's membership, as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberEvent {
    /// This node.
    pub node: NodeId,
    /// The address it registers for probes.
    pub addr: Addr,
    /// This run of the node.
    pub incarnation: u64,
    /// When it happened (under tokio's paused clock, the paused time).
    pub at: Instant,
    /// What happened.
    pub change: MemberChange,
}

/// The kinds of [`MemberEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberChange {
    /// The master accepted the first registration of this run.
    Registered,
    /// The master refused the registration; the node stops trying.
    Refused {
        /// Why.
        reason: RefuseReason,
    },
    /// No probe came for `master_timeout`; the node registers again.
    MasterLost {
        /// Time since the last probe (or the registration).
        silent_for: Duration,
    },
    /// The master accepted a registration again after it was lost.
    MasterBack {
        /// Time since the master was declared lost.
        lost_for: Duration,
    },
    /// A peer broke the protocol; its connection was closed.
    Error(NodeError),
}

impl MemberChange {
    /// The word for event lines: `registered`, `refused`, `master-lost`,
    /// `master-back` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberChange::Registered => "registered",
            MemberChange::Refused { .. } => "refused",
            MemberChange::MasterLost { .. } => "master-lost",
            MemberChange::MasterBack { .. } => "master-back",
            MemberChange::Error(_) => "error",
        }
    }
}

/// A peer of the node broke the protocol: the connection was closed. Each names
/// the peer's address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A frame that is not a valid heartbeat message.
    #[error("invalid message from {peer}: {source}")]
    Wire {
        /// The sender: a prober, or the master answering a registration.
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

/// [`Node::leave`] could not tell the master. The node is stopped anyway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaveError {
    /// The master could not be reached.
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
/// The master restarts: the node notices the silence within `master_timeout` and
/// registers with the new master.
///
/// ```
/// use std::net::SocketAddr;
///
/// use chitchat_heartbeat::{Master, MemberStatus, Node, NodeId};
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
///
/// master.shutdown().await;
/// let master = Master::builder(master_addr).start(&master_host, master_host.clone()).await?;
/// let words: Vec<&str> = events.by_ref().take(3).map(|e| e.change.as_str()).collect().await;
/// assert_eq!(words, ["registered", "master-lost", "master-back"]);
/// assert!(master.node("web-1").is_some());
/// # Ok(())
/// # }
/// ```
pub struct Node {
    shared: Arc<NodeShared>,
    server: Server<Arc<NodeShared>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Asks the registration task, which holds the connector, to send `leave`.
    leave: Mutex<Option<oneshot::Sender<LeaveReply>>>,
}

type LeaveReply = oneshot::Sender<Result<(), LeaveError>>;

/// Configures and starts a [`Node`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct NodeBuilder {
    id: NodeId,
    master: Addr,
    listen: Option<Addr>,
    metadata: Metadata,
    incarnation: Option<u64>,
    config: HeartbeatConfig,
    event_capacity: usize,
}

/// What the probe handler, the registration task and the handle share.
struct NodeShared {
    id: NodeId,
    incarnation: u64,
    config: HeartbeatConfig,
    master: Addr,
    metadata: Metadata,
    /// The probe server's bound address, set once it listens.
    bound: OnceLock<Addr>,
    /// The address registered: `bound`, with the IP the master sees us from when
    /// bound to the unspecified address.
    advertised: Mutex<Addr>,
    /// The last probe of this run, or the last registration: the master's last
    /// sign of life.
    last_contact: Mutex<tokio::time::Instant>,
    /// Seq of the node's own requests (`register`, `leave`).
    seq: AtomicU64,
    /// Seed of the backoff jitter: from the id and incarnation, so that a
    /// simulation replays and nodes that lost the master together spread out.
    jitter_seed: u64,
    events: Emitter<MemberEvent>,
    status: watch::Sender<MemberStatus>,
}

impl Node {
    /// Starts building node `id`, which registers with the master at `master`.
    ///
    /// Defaults: listens on the unspecified address of the master's family, port 0
    /// (and registers the IP it reaches the master from); no metadata; the
    /// incarnation is the time in milliseconds since the Unix epoch (raised if need
    /// be so that it grows on every start within the process); the default
    /// [`HeartbeatConfig`], which must match the master's.
    pub fn builder(id: NodeId, master: impl Into<Addr>) -> NodeBuilder {
        NodeBuilder {
            id,
            master: master.into(),
            listen: None,
            metadata: Metadata::new(),
            incarnation: None,
            config: HeartbeatConfig::default(),
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// This run's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// The probe server's bound address (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> Addr {
        self.server.local_addr()
    }

    /// Where the node stands with the master now.
    pub fn status(&self) -> MemberStatus {
        *self.shared.status.borrow()
    }

    /// Waits until the master has accepted the node ([`MemberStatus::Registered`])
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

    /// The stream of the node's events. The first call gets every event since the
    /// start; later calls get the events from the call on. Bounded (see [`Events`]);
    /// it ends once the node stops.
    pub fn events(&self) -> Events<MemberEvent> {
        self.shared.events.subscribe()
    }

    /// Sends `leave` to the master (which marks the node Left at once), then stops
    /// like [`stop`](Self::stop). Returns once the master has closed the exchange,
    /// so it has applied the `leave`.
    ///
    /// # Errors
    /// A [`LeaveError`] when the master could not be told within `probe_timeout`;
    /// the node is stopped anyway, and the master will declare it Dead.
    pub async fn leave(&self) -> Result<(), LeaveError> {
        let request = self
            .leave
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let stopped = || LeaveError::Stopped {
            node: self.shared.id.clone(),
        };
        let result = match request {
            Some(request) => {
                let (reply, answer) = oneshot::channel();
                match request.send(reply) {
                    Ok(()) => answer.await.unwrap_or_else(|_| Err(stopped())),
                    Err(_) => Err(stopped()),
                }
            }
            None => Err(stopped()),
        };
        self.stop().await;
        result
    }

    /// Stops without telling the master, like a crash: the registration task ends,
    /// the probe server stops listening and drops its connections. Returns once the
    /// listen address can be bound again. The event stream ends. Calling it again
    /// does nothing.
    pub async fn stop(&self) {
        self.leave
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.server.cut().await;
        self.shared.status.send_replace(MemberStatus::Stopped);
        self.shared.events.close();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .field("incarnation", &self.shared.incarnation)
            .field("local_addr", &self.local_addr())
            .field("master", &self.shared.master)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Where the probe server listens (port 0 picks a free port).
    pub fn listen(mut self, addr: impl Into<Addr>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Labels to register with, shown in the master's table.
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

    /// Replaces the settings; the cluster and timings must match the master's.
    pub fn config(mut self, config: HeartbeatConfig) -> Self {
        self.config = config;
        self
    }

    /// Events kept for a reader that lags (default [`DEFAULT_EVENT_CAPACITY`]).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Binds the probe server with `binder` and starts registering with the master
    /// through `connector`, in the background: the node answers probes at once and
    /// registers as soon as the master answers ([`Node::registered`] waits for it).
    /// Call it within a tokio runtime.
    ///
    /// Failed registration attempts (unreachable master, no answer within
    /// `probe_timeout`) are retried after an exponential backoff: the ceiling starts
    /// at a quarter of `probe_interval` and doubles up to `master_timeout`; each
    /// pause is drawn between half the ceiling and the ceiling, from a generator
    /// seeded with the node id and incarnation (no global randomness, so a
    /// simulation replays exactly).
    ///
    /// # Errors
    /// [`BindError`] naming the address when the probe server cannot bind; nothing
    /// runs then.
    pub async fn start<B: Binder, C: Connector>(
        self,
        binder: &B,
        connector: C,
    ) -> Result<Node, BindError> {
        let listen = self.listen.unwrap_or_else(|| unspecified_like(self.master));
        let incarnation = self.incarnation.unwrap_or_else(next_incarnation);
        let (status, _) = watch::channel(MemberStatus::Registering);
        let shared = Arc::new(NodeShared {
            jitter_seed: fnv1a(self.id.as_str().as_bytes()) ^ mix(incarnation),
            id: self.id,
            incarnation,
            config: self.config,
            master: self.master,
            metadata: self.metadata,
            bound: OnceLock::new(),
            advertised: Mutex::new(listen),
            last_contact: Mutex::new(tokio::time::Instant::now()),
            seq: AtomicU64::new(0),
            events: Emitter::new(self.event_capacity),
            status,
        });
        let config = &shared.config;
        let server = Server::with_state(listen, shared.clone())
            .on_frame(on_probe_frame)
            .max_frame_len(MAX_MESSAGE_LEN)
            // Probes come every probe_interval: a connection silent for longer
            // than master_timeout belongs to a master that is gone.
            .idle_timeout(config.master_timeout)
            .linger(config.probe_timeout)
            .listen_on(binder)
            .await?;
        let bound = server.local_addr();
        let _ = shared.bound.set(bound);
        *shared
            .advertised
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bound;
        let (leave, leave_requests) = oneshot::channel();
        let task = tokio::spawn(run(shared.clone(), connector, leave_requests));
        Ok(Node {
            shared,
            server,
            task: Mutex::new(Some(task)),
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

/// The clock's milliseconds since the Unix epoch, raised above the last value
/// handed out in this process, so that a node restarted within one millisecond
/// still gets a greater incarnation.
fn next_incarnation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(clock.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    clock.max(previous.saturating_add(1))
}

/// FNV-1a: a stable hash of the node id (std's hasher is randomly seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads the bits of `x` over the whole word.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn encode(message: &Message) -> BytesMut {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    out
}

impl NodeShared {
    fn emit(&self, change: MemberChange) {
        let addr = *self
            .advertised
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.events.emit(MemberEvent {
            node: self.id.clone(),
            addr,
            incarnation: self.incarnation,
            at: now(),
            change,
        });
    }

    fn touch(&self) {
        *self
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tokio::time::Instant::now();
    }

    fn last_contact(&self) -> tokio::time::Instant {
        *self
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The pause before registration attempt `attempt + 1` (see
    /// [`NodeBuilder::start`]).
    fn backoff(&self, attempt: u32) -> Duration {
        let base = (self.config.probe_interval / 4).max(Duration::from_millis(1));
        let cap = self.config.master_timeout.max(base);
        let ceiling = base.saturating_mul(1 << attempt.min(20)).min(cap);
        let half = ceiling / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let draw = mix(self.jitter_seed ^ u64::from(attempt)) % span.saturating_add(1);
        half + Duration::from_nanos(draw)
    }

    fn message(&self, body: Body) -> Message {
        Message {
            cluster: self.config.cluster.clone(),
            node: self.id.clone(),
            incarnation: self.incarnation,
            seq: self.next_seq(),
            body,
        }
    }
}

/// The probe server's handler.
fn on_probe_frame(ctx: &mut dyn ReadContext<Arc<NodeShared>>, frame: Frame<'_>) {
    let shared = ctx.state().clone();
    let peer = ctx.peer_addr();
    let error = match decode(&frame) {
        Err(source) => NodeError::Wire { peer, source },
        Ok(probe) => match probe.check_cluster(&shared.config.cluster) {
            Err(source) => NodeError::WrongCluster { peer, source },
            Ok(()) if probe.body == Body::Probe => {
                // Only a probe of this very run says the master knows this run.
                if probe.node == shared.id && probe.incarnation == shared.incarnation {
                    shared.touch();
                }
                let ack = Message {
                    cluster: probe.cluster,
                    node: shared.id.clone(),
                    incarnation: shared.incarnation,
                    seq: probe.seq,
                    body: Body::ProbeAck,
                };
                let _ = ctx.reply(&encode(&ack));
                return;
            }
            Ok(()) => NodeError::Unexpected {
                peer,
                message: probe.body.name(),
            },
        },
    };
    shared.emit(MemberChange::Error(error));
    ctx.close();
}

/// The registration task: registers, watches for probes, registers again; serves
/// one `leave` request.
async fn run<C: Connector>(
    shared: Arc<NodeShared>,
    connector: C,
    mut leave: oneshot::Receiver<LeaveReply>,
) {
    let request = tokio::select! {
        biased;
        request = &mut leave => request,
        () = keep_registered(&shared, &connector) => leave.await,
    };
    if let Ok(reply) = request {
        let _ = reply.send(send_leave(&shared, &connector).await);
    }
}

/// How one registration attempt ended.
enum Answer {
    Ack,
    Refused(RefuseReason),
}

/// Registers and re-registers until refused (never returns otherwise).
async fn keep_registered<C: Connector>(shared: &Arc<NodeShared>, connector: &C) {
    let mut lost_at: Option<tokio::time::Instant> = None;
    let mut attempt = 0u32;
    loop {
        match register_once(shared, connector).await {
            None => {
                tokio::time::sleep(shared.backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
            Some(Answer::Refused(reason)) => {
                shared.status.send_replace(MemberStatus::Refused(reason));
                shared.emit(MemberChange::Refused { reason });
                return;
            }
            Some(Answer::Ack) => {
                attempt = 0;
                shared.touch();
                shared.status.send_replace(MemberStatus::Registered);
                shared.emit(match lost_at.take() {
                    None => MemberChange::Registered,
                    Some(lost) => MemberChange::MasterBack {
                        lost_for: lost.elapsed(),
                    },
                });
            }
        }
        let timeout = shared.config.master_timeout;
        let silent_for = loop {
            let last = shared.last_contact();
            let now = tokio::time::Instant::now();
            if now >= last + timeout {
                break now - last;
            }
            tokio::time::sleep_until(last + timeout).await;
        };
        lost_at = Some(tokio::time::Instant::now());
        shared.status.send_replace(MemberStatus::MasterLost);
        shared.emit(MemberChange::MasterLost { silent_for });
    }
}

/// The state of a registration connection's handler.
struct ReplySink {
    replies: mpsc::Sender<Message>,
    shared: Arc<NodeShared>,
}

/// The handler of a registration connection: forwards the master's answers.
fn on_register_reply(ctx: &mut dyn ReadContext<ReplySink>, frame: Frame<'_>) {
    let peer = ctx.peer_addr();
    let sink = ctx.state();
    let error = match decode(&frame) {
        Ok(reply) if matches!(reply.body, Body::RegisterAck | Body::Refuse { .. }) => {
            let _ = sink.replies.try_send(reply);
            return;
        }
        Ok(reply) => NodeError::Unexpected {
            peer,
            message: reply.body.name(),
        },
        Err(source) => NodeError::Wire { peer, source },
    };
    sink.shared.emit(MemberChange::Error(error));
    ctx.close();
}

/// One registration: dial, `register`, wait for the answer to it, all within
/// `probe_timeout`. `None` when there was no answer.
async fn register_once<C: Connector>(shared: &Arc<NodeShared>, connector: &C) -> Option<Answer> {
    let timeout = shared.config.probe_timeout;
    let attempt = async {
        let (replies, mut rx) = mpsc::channel(REPLY_QUEUE);
        let sink = ReplySink {
            replies,
            shared: shared.clone(),
        };
        let client = Client::with_state(shared.master, sink)
            .on_frame(on_register_reply)
            .max_frame_len(MAX_MESSAGE_LEN)
            .connect_timeout(timeout)
            .linger(timeout)
            .connect_with(connector)
            .await
            .ok()?;
        let bound = shared.bound.get().copied()?;
        let addr = advertised(bound, client.local_addr());
        *shared
            .advertised
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addr;
        let register = shared.message(Body::Register {
            addr,
            metadata: shared.metadata.clone(),
        });
        client.try_write(&encode(&register)).ok()?;
        loop {
            let reply = tokio::select! {
                biased;
                reply = rx.recv() => reply?,
                _ = client.closed() => return None,
            };
            let ours = reply.seq == register.seq
                && reply.node == register.node
                && reply.incarnation == register.incarnation;
            match reply.body {
                Body::RegisterAck if ours => return Some(Answer::Ack),
                Body::Refuse { reason } if ours => return Some(Answer::Refused(reason)),
                _ => {}
            }
        }
        // The client is dropped here: it closes in the background.
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
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

async fn send_leave<C: Connector>(shared: &NodeShared, connector: &C) -> Result<(), LeaveError> {
    let after = shared.config.probe_timeout;
    let master = shared.master;
    let attempt = async {
        let client = Client::builder(master)
            .max_frame_len(MAX_MESSAGE_LEN)
            .connect_timeout(after)
            .linger(after)
            .connect_with(connector)
            .await?;
        client.try_write(&encode(&shared.message(Body::Leave)))?;
        // The master handles `leave` before it answers our close with its own.
        client.close().await;
        Ok(())
    };
    tokio::time::timeout(after, attempt)
        .await
        .unwrap_or(Err(LeaveError::Timeout { master, after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_for(id: &str, incarnation: u64) -> NodeShared {
        let (status, _) = watch::channel(MemberStatus::Registering);
        let bound: Addr = "10.0.0.1:7001".parse().unwrap();
        NodeShared {
            id: NodeId::new(id).unwrap(),
            incarnation,
            config: HeartbeatConfig::default(),
            master: "10.0.0.2:7000".parse().unwrap(),
            metadata: Metadata::new(),
            bound: OnceLock::from(bound),
            advertised: Mutex::new(bound),
            last_contact: Mutex::new(tokio::time::Instant::now()),
            seq: AtomicU64::new(0),
            jitter_seed: fnv1a(id.as_bytes()) ^ mix(incarnation),
            events: Emitter::new(1),
            status,
        }
    }

    #[test]
    fn backoff_doubles_up_to_master_timeout_with_jitter() {
        let shared = shared_for("node-1", 1);
        // Default config: ceiling 750 ms, 1.5 s, 3 s, 6 s, then 10 s for good.
        let ceilings = [750, 1500, 3000, 6000, 10_000, 10_000, 10_000];
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
    fn incarnations_grow_within_the_process() {
        let first = next_incarnation();
        let second = next_incarnation();
        assert!(second > first);
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(first <= epoch_ms + 1000);
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
