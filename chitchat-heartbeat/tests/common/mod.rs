//! A simulated cluster for the heartbeat tests: a master and its nodes, each on its
//! own host of the in-memory network, with the master's events recorded as they
//! come. Run under `#[tokio::test(start_paused = true)]`.

#![allow(dead_code)] // each test binary uses its own part of the helper

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chitchat_core::Addr;
use chitchat_heartbeat::{
    Body, Change, ClusterId, HeartbeatConfig, Master, MasterError, MasterEvent, MemberStatus,
    Message, Metadata, Node, NodeChange, NodeError, NodeEvent, NodeId, NodeState,
};
use chitchat_testkit::RawPeer;
use chitchat_testkit::{Host, Network, SimConn};
use futures::StreamExt;
use tokio::task::JoinHandle;

/// Port of the master's registration server.
pub const MASTER_PORT: u16 = 7000;
/// Port of every node's probe server.
pub const NODE_PORT: u16 = 7001;

/// The master's host.
pub fn master_ip() -> IpAddr {
    Ipv4Addr::new(10, 0, 0, 1).into()
}

/// The host of node `i`: 10.1.x.y, one per node.
pub fn node_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap();
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8).into()
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("node-{i:04}")).unwrap()
}

/// Lets every task that is ready run (the recorders among them) before the test
/// looks: one virtual millisecond.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The current (virtual) time, as event timestamps carry it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Everything a stream yielded so far, filled by a background task.
pub struct Recorder<T> {
    pub items: Arc<Mutex<Vec<T>>>,
    task: JoinHandle<u64>,
}

impl<T: Clone + Send + 'static> Recorder<T> {
    pub fn new(mut events: chitchat_heartbeat::Events<T>) -> Self {
        let items = Arc::new(Mutex::new(Vec::new()));
        let sink = items.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                sink.lock().unwrap().push(event);
            }
            events.dropped()
        });
        Recorder { items, task }
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// Waits until the stream ends, checks that it lost nothing, and returns
    /// everything it yielded.
    pub async fn finish(self) -> Vec<T> {
        assert_eq!(self.task.await.unwrap(), 0, "no event lost");
        std::mem::take(&mut *self.items.lock().unwrap())
    }
}

impl Recorder<MasterEvent> {
    /// The membership changes, in order.
    pub fn node_events(&self) -> Vec<NodeChange> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_change().cloned())
            .collect()
    }

    /// The membership changes that `pick` selects, in order.
    pub fn changes(&self, pick: fn(&Change) -> bool) -> Vec<NodeChange> {
        self.node_events()
            .into_iter()
            .filter(|e| pick(&e.change))
            .collect()
    }

    /// The Dead changes, in order.
    pub fn deaths(&self) -> Vec<NodeChange> {
        self.changes(|c| matches!(c, Change::Dead { .. }))
    }

    /// The Joined changes, in order.
    pub fn joins(&self) -> Vec<NodeChange> {
        self.changes(|c| matches!(c, Change::Joined { .. }))
    }
}

impl Recorder<NodeEvent> {
    /// The membership events (those about a master), as their words, in order.
    pub fn words(&self) -> Vec<&'static str> {
        self.items
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.master().is_some())
            .map(NodeEvent::as_str)
            .collect()
    }
}

pub struct Cluster {
    pub net: Network,
    pub config: HeartbeatConfig,
    pub master_host: Host,
    pub master: Option<Master>,
    pub master_events: Recorder<MasterEvent>,
    pub hosts: Vec<Host>,
    pub nodes: Vec<Option<Node>>,
    pub node_events: Vec<Recorder<NodeEvent>>,
}

pub fn master_addr() -> Addr {
    Addr::from(std::net::SocketAddr::new(master_ip(), MASTER_PORT))
}

pub async fn start_master(net: &Network, config: &HeartbeatConfig, capacity: usize) -> Master {
    let host = net.host(master_ip());
    Master::builder(master_addr())
        .config(config.clone())
        .event_capacity(capacity)
        .start(&host, host.clone())
        .await
        .expect("master binds")
}

pub async fn start_node(net: &Network, config: &HeartbeatConfig, i: usize) -> Node {
    let host = net.host(node_ip(i));
    Node::builder(node_id(i), master_addr())
        .listen(std::net::SocketAddr::new(node_ip(i), NODE_PORT))
        .config(config.clone())
        .incarnation(1)
        .start(&host, host.clone())
        .await
        .expect("node binds")
}

impl Cluster {
    /// A master and `n` registered nodes on network `seed`.
    pub async fn start(seed: u64, config: HeartbeatConfig, n: usize) -> Cluster {
        let net = Network::new(seed);
        Cluster::start_on(net, config, n).await
    }

    pub async fn start_on(net: Network, config: HeartbeatConfig, n: usize) -> Cluster {
        let master = start_master(&net, &config, 4 * n + 64).await;
        let master_events = Recorder::new(master.events());
        let mut nodes = Vec::with_capacity(n);
        let mut hosts = Vec::with_capacity(n);
        let mut node_events = Vec::with_capacity(n);
        for i in 0..n {
            let node = start_node(&net, &config, i).await;
            node_events.push(Recorder::new(node.events()));
            hosts.push(net.host(node_ip(i)));
            nodes.push(Some(node));
        }
        for node in nodes.iter().flatten() {
            assert_eq!(node.registered().await, MemberStatus::Registered);
        }
        Cluster {
            master_host: net.host(master_ip()),
            net,
            config,
            master: Some(master),
            master_events,
            hosts,
            nodes,
            node_events,
        }
    }

    pub fn master(&self) -> &Master {
        self.master.as_ref().expect("master running")
    }

    /// Crashes node `i`: its host dies (connections reset, listener gone) and its
    /// process with it.
    pub fn kill(&mut self, i: usize) -> Instant {
        self.net.kill(node_ip(i));
        drop(self.nodes[i].take());
        now()
    }

    pub fn count(&self, state: NodeState) -> usize {
        self.master()
            .snapshot()
            .iter()
            .filter(|row| row.state == state)
            .count()
    }

    /// Sleeps in steps of `step` until `done` holds, for at most `limit`.
    pub async fn wait_until(
        &self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(step).await;
        }
    }
}

/// A small seeded generator (splitmix64), so the tests draw no global randomness.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The key of the keyed tests' cluster.
pub fn cluster_keys() -> chitchat_heartbeat::Keyring {
    chitchat_heartbeat::Keyring::single(chitchat_heartbeat::Key::new(&[0x5a; 32]).unwrap())
}

/// A config with the cluster key.
pub fn keyed(mut config: HeartbeatConfig) -> HeartbeatConfig {
    config.keyring = Some(cluster_keys());
    config
}

/// `message` as one frame's text, signed with `keys` (or `-`), with its delimiter.
pub fn frame(
    message: &chitchat_heartbeat::Message,
    keys: Option<&chitchat_heartbeat::Keyring>,
) -> Vec<u8> {
    let mut bytes = message.to_bytes(keys).to_vec();
    bytes.push(b'\n');
    bytes
}

/// Whether `event` is a Dead event.
pub fn is_dead(event: &NodeChange) -> bool {
    matches!(event.change, Change::Dead { .. })
}

/// A host that is none of the cluster's: 10.9.0.`last`, for raw peers.
pub fn outsider(cluster: &Cluster, last: u8) -> Host {
    cluster
        .net
        .host(IpAddr::from(Ipv4Addr::new(10, 9, 0, last)))
}

/// A raw connection from `host` to `addr`.
pub async fn raw(host: &Host, addr: Addr) -> RawPeer<SimConn> {
    RawPeer::connect(host, &addr).await.expect("connects")
}

/// Sends one frame and returns the first frame of the answer, if any.
pub async fn exchange(peer: &mut RawPeer<SimConn>, frame: &[u8]) -> Option<Bytes> {
    peer.write_all(frame).await.unwrap();
    peer.read_frame(b'\n').await.unwrap()
}

/// A message of cluster `default` about `node`.
pub fn message(node: &str, incarnation: u64, epoch: u64, seq: u64, body: Body) -> Message {
    Message {
        cluster: ClusterId::new("default").unwrap(),
        node: NodeId::new(node).unwrap(),
        incarnation,
        epoch,
        seq,
        body,
    }
}

/// The body of a `register` with probe address `addr` and no metadata.
pub fn register_body(addr: impl Into<Addr>) -> Body {
    Body::Register {
        addr: addr.into(),
        metadata: Metadata::new(),
    }
}

/// The master's protocol errors so far.
pub fn errors(cluster: &Cluster) -> Vec<MasterError> {
    cluster
        .master_events
        .snapshot()
        .iter()
        .filter_map(|e| e.as_error().cloned())
        .collect()
}

/// A node's protocol errors so far.
pub fn node_errors(recorder: &Recorder<NodeEvent>) -> Vec<NodeError> {
    recorder
        .snapshot()
        .into_iter()
        .filter_map(|e| match e {
            NodeEvent::Error { error, .. } => Some(error),
            _ => None,
        })
        .collect()
}

/// The rest of the cluster saw nothing: its `nodes` rows Alive and probed, and no
/// change but their joins.
pub async fn assert_undisturbed(cluster: &Cluster, nodes: usize) {
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    let rows = cluster.master().snapshot();
    assert_eq!(rows.len(), nodes);
    for row in &rows {
        assert_eq!((row.state, row.failures), (NodeState::Alive, 0), "{row:?}");
    }
    let changes: Vec<_> = cluster
        .master_events
        .node_events()
        .into_iter()
        .filter(|e| !matches!(e.change, Change::Joined { replaced: None }))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(cluster.master_events.joins().len(), nodes);
}
