//! Master/node liveness for chitchat: nodes register with one or more masters, each
//! master probes them and tells who is alive, suspect, dead or gone.
//!
//! The wire format, the failure detector and the admission rules are sans-IO: they
//! take bytes, outcomes, addresses and the current time, and return messages,
//! verdicts and state changes, with no socket, clock or task of their own. The two
//! roles run them on chitchat-tokio, generic over the transport: the same code runs
//! on TCP and on the testkit's in-memory network, where tests own time.
//!
//! # Layout
//! - [`wire`]: the versioned wire format: [`Message`], [`encode`](Message::encode),
//!   [`decode`], [`WireError`], ids and metadata.
//! - [`auth`]: message authentication: [`Keyring`] (HMAC-SHA256 over every
//!   message, key files, rotation) and [`ReplayWindow`].
//! - `config`: [`HeartbeatConfig`]: timings, key and limits, each default explained.
//! - [`detector`]: the master's failure detector: [`Detector`] turns registrations,
//!   probe outcomes and ticks into [`DetectorEvent`]s and a membership table.
//! - [`policy`]: what a master agrees to dial ([`check_probe_addr`]) and how many
//!   registrations one address may send ([`RateLimiter`]).
//! - [`master`]: the master role: [`Master`] serves registrations, probes every live
//!   node once per round, and publishes [`MasterEvent`]s, a snapshot and
//!   [`MasterStats`].
//! - [`node`]: the node role: [`Node`] answers probes, registers with each of its
//!   masters, notices a lost or restarted master and registers again; publishes
//!   [`NodeEvent`]s.
//! - [`Events`]: the bounded event stream of both roles, chitchat-core's broadcast
//!   queue (every subscriber gets every event from when it subscribed).
//! - `builder_events`: the event queue a builder makes before its role starts, so
//!   that a stream taken from the builder misses nothing (internal).
//! - `clock`: the wall clock of incarnations and epochs (internal).
//!
//! # Example
//! A master and two nodes on the in-memory network, under paused time: one node's
//! machine crashes, and the master declares it dead within the detection bound. The
//! 12 virtual seconds this takes pass at once.
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use chitchat_core::Addr;
//! use chitchat_heartbeat::{Change, HeartbeatConfig, Master, MasterEvent, MemberStatus, Node, NodeId};
//! use chitchat_testkit::Network;
//! use futures::StreamExt;
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let net = Network::new(7); // the seed of every random choice of the network
//!     let config = HeartbeatConfig::default(); // probe every 3 s, 2 s timeout, 3 failures
//!
//!     // The master listens with its host's binder and dials nodes with its connector
//!     // (on TCP: `.start(&chitchat_tokio::Tcp, chitchat_tokio::Tcp)`).
//!     let master_host = net.host([10, 0, 0, 1]);
//!     let master = Master::builder("10.0.0.1:7000".parse::<Addr>()?)
//!         .config(config.clone())
//!         .start(&master_host, master_host.clone())
//!         .await?;
//!     let mut events = master.events();
//!     let start = tokio::time::Instant::now().into_std();
//!
//!     // Two nodes, each on its own host, answering probes on port 7001.
//!     let mut nodes = Vec::new();
//!     for (i, ip) in [[10, 0, 0, 2], [10, 0, 0, 3]].into_iter().enumerate() {
//!         let host = net.host(ip);
//!         let node = Node::builder(NodeId::new(format!("node-{i}"))?, master.local_addr())
//!             .listen(SocketAddr::from((ip, 7001)))
//!             .config(config.clone())
//!             .start(&host, host.clone())
//!             .await?;
//!         assert_eq!(node.registered().await, MemberStatus::Registered);
//!         nodes.push(node);
//!     }
//!
//!     // node-1's machine crashes: its connections reset, its process is gone.
//!     net.kill([10, 0, 0, 3]);
//!     drop(nodes.pop());
//!     let crashed = tokio::time::Instant::now().into_std();
//!
//!     // event node=node-0 state=joined at_ms=0, ..., event node=node-1 state=dead at_ms=12000
//!     let dead = loop {
//!         let Some(event) = events.next().await else { unreachable!("master running") };
//!         if let MasterEvent::Changed(change) = event {
//!             let at_ms = (change.at - start).as_millis();
//!             println!("event node={} state={} at_ms={at_ms}", change.node, change.change.as_str());
//!             if let Change::Dead { .. } = change.change {
//!                 break change;
//!             }
//!         }
//!     };
//!     assert_eq!(dead.node, "node-1");
//!     assert!(dead.at - crashed <= config.detection_bound());
//!
//!     // The table a dashboard shows.
//!     for row in master.snapshot() {
//!         println!("{} {} {} rtt={:?} failures={}", row.node, row.addr, row.state, row.last_rtt, row.failures);
//!     }
//!     master.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Protocol
//! A node sends `register` (its id, incarnation, probe address and metadata) to
//! each of its masters and gets `register-ack` or `refuse`; each master sends it a
//! `probe` every `probe_interval` and the node answers `probe-ack`; on shutdown the
//! node sends `leave`. Each message is one `\n`-terminated line of text, signed
//! when the cluster has a key:
//!
//! ```text
//! CHB 2 register prod node-7 1717171717000 0 1 10.0.0.7:7001 zone=eu-west Lk3…
//! CHB 2 probe prod node-7 1717171717000 1717171700000 42 9Qa…
//! ```
//!
//! The [`wire`] module documents every message and field token by token, and the
//! limits. The [`detector`] module documents the states, the identity rules
//! (incarnations, duplicate ids, replays) and the handling of master stalls.
//!
//! # Timing
//! A node that dies is declared Dead within
//! `probe_interval × (max_failures + 1) + probe_timeout` (14 s with the defaults:
//! 3 s, 3 failures, 2 s; see [`HeartbeatConfig::detection_bound`]). A node that
//! registers is first probed at the next round, within one `probe_interval`.
//!
//! A master closes its probe connection to a node it declares Dead, forgets, or
//! stops serving; the node sees the close and checks in (registers again) after a
//! seeded delay under `probe_interval / 2`. So a node that was paused (SIGSTOP, a
//! VM migration) or cut off long enough to be declared Dead is Alive again within
//! a round of coming back: the probes that queued up meanwhile say nothing of now
//! (they are answered, each seq once, and the master ignores the late answers),
//! but the close queued behind them does, and the node acts on it. A master that
//! restarts has its nodes back within `probe_interval` of listening again (its old
//! connections closed with it; nodes retry a silent master with a backoff capped
//! at `probe_interval`). A node that hears nothing from a master for `master_timeout`
//! (10 s) declares it lost ([`NodeEvent::MasterLost`]) and keeps registering.
//!
//! # Several masters
//! A node given several masters ([`NodeBuilder::master`]; `heartbeat node --master
//! A --master B`) registers with each and answers each one's probes; every master
//! detects on its own, with no consensus needed for liveness. Losing one master is
//! one [`NodeEvent::MasterLost`] naming it; the others go on as if nothing happened.
//!
//! # Events
//! Both roles publish what happens as an [`Events`] stream: the master's
//! [`MasterEvent`]s (a node joined, turned suspect, alive, dead, left or was
//! forgotten, each with the node id, address, incarnation and time; a stall of the
//! master; a peer that broke the protocol or was refused, named) and each node's
//! [`NodeEvent`]s (registered, refused, renewed, master lost, master back, errors).
//! Every subscriber gets every event from the moment it subscribed. Match the enums;
//! `as_str` gives the word for a log line. A stream never slows its role down: a
//! reader that lags loses the oldest events and can tell how many.
//!
//! # Threat model
//! What the heartbeat defends against depends on whether the cluster has a key
//! ([`HeartbeatConfig::keyring`]).
//!
//! **With a key**, every message in both directions carries an HMAC-SHA256 over all
//! its fields, made with the cluster key and checked before anything else is read,
//! in constant time. Someone on the network without the key cannot:
//! - register, re-register or move a node, make it leave, or squat an id;
//! - answer probes for a node (keep a dead node "alive"), or send probes that a node
//!   believes (keep a node believing it is registered);
//! - replay a captured message: each `register` and `leave` counts once per
//!   incarnation and seq, each probe once per master run and seq, each reply only
//!   for the request outstanding;
//! - alter any field in flight, or turn one message type into another.
//!
//! A message that fails verification gets a typed error naming the peer, closes its
//! connection and changes nothing.
//!
//! The key does **not** protect:
//! - **confidentiality**: messages travel in clear; node ids, addresses, metadata,
//!   incarnations and the timing of probes are visible to anyone on the path. Put no
//!   secrets in metadata; use TLS (below) if the membership itself is sensitive;
//! - **against a compromised member**: every process holds the same key, so one that
//!   is taken over can speak for any node and any master of the cluster. Rotate the
//!   key ([`auth`] says how) after removing it;
//! - **availability against a flood**: a peer without the key still costs a MAC
//!   check per message and a connection slot until the limits below close it;
//! - **replays across a master restart** of a `register` captured earlier: a new
//!   master run has no memory of old seqs. The worst it does is bring back, for one
//!   detection bound, the row of a node at the address it really registered.
//!
//! **Without a key**, anyone who reaches the ports can speak for any node. The
//! rules that hold anyway: a `leave` applies only to the exact current incarnation;
//! an incarnation more than `max_incarnation_skew` ahead of the master's clock is
//! refused (no id lockout at `2^64 − 1`); a node refused as stale or duplicate takes
//! a new incarnation and registers again instead of giving up; the master dials only
//! the IP a registration came from and never loopback, unspecified, multicast or
//! broadcast addresses (no reflection); a probe naming another node is refused
//! without an answer; and every limit below applies.
//!
//! # Safe deployment
//! - Give every master and node the same key file (`--key-file`, or
//!   [`Keyring::load`]): `head -c 32 /dev/urandom | base64 > cluster.key`,
//!   `chmod 600`. The master reports a cluster without one
//!   ([`Master::security_warning`]).
//! - Keep the limits on (they are by default): `max_nodes` 10 000,
//!   `max_registrations_per_ip` 100/s, `max_metadata_len` 1 KiB, no foreign probe
//!   addresses, frame deadlines and idle timeouts on both ports,
//!   `registration_connections` 1024 and `probe_connections` 64, and dead rows
//!   forgotten after 10 minutes. A master runs at most 512 probe dials at once
//!   (the rest wait their turn), so a start with thousands of nodes to dial does
//!   not hold a dial for each at once. Size `max_nodes + registration_connections` under
//!   the master's open-file limit with room to spare (the binary does).
//! - Run two masters for a service that must see failures while one restarts.
//! - Bind the registration port to the cluster's network, not the internet, when
//!   you can: the key stops forgery, not load.
//!
//! # Message MACs or mutual TLS?
//! chitchat-tokio speaks TLS (feature `tls`: `TlsBinder` binds, `TlsConnector`
//! connects; rustls), and both roles take any binder and connector, so the
//! heartbeat can run over mutual TLS as it is.
//!
//! | | cluster key (this crate) | mutual TLS (rustls) |
//! |-|-|-|
//! | authenticates | every message: "a holder of the cluster key" | every connection: "the holder of this certificate" |
//! | confidentiality | none | yes |
//! | per-member identity | no: a shared key | yes: a certificate per member, revocable |
//! | replay protection | seqs and windows in the protocol | the TLS record layer |
//! | setup | one random key file | a CA, a certificate and key per process, renewal |
//! | cost | one HMAC per message; no handshake | a handshake per connection (the nodes' registrations open one each), encryption |
//!
//! Use the **cluster key** on a private network you do not fully trust, when the
//! membership is not secret and a compromised member is out of scope: it is one
//! file and costs microseconds. Use **mutual TLS** when the membership or metadata
//! must stay confidential, when each member must be identified and revocable on its
//! own, or when the traffic crosses networks you do not control. Both can run
//! together: the key inside, TLS around it.
#![deny(missing_docs)]

pub mod auth;
mod builder_events;
mod clock;
mod config;
pub mod detector;
pub mod master;
pub mod node;
pub mod policy;
pub mod wire;

pub use auth::{Key, KeyError, Keyring, ReplayWindow};
pub use chitchat_core::Events;
pub use config::{HeartbeatConfig, DEFAULT_EVENT_CAPACITY};
pub use detector::{
    Change, Detector, DetectorEvent, Evidence, ForgetReason, LeaveRefused, NodeChange,
    NodeSnapshot, NodeState, RegisterError, Registration, Slot, Stall, StateCounts,
};
pub use master::{Master, MasterBuilder, MasterError, MasterEvent, MasterStats};
pub use node::{LeaveError, MemberStatus, Node, NodeBuilder, NodeError, NodeEvent, NodeStats};
pub use policy::{check_probe_addr, AddrError, RateLimiter};
pub use wire::{
    decode, Body, ClusterId, IdError, Message, Metadata, MetadataError, NodeId, RefuseReason,
    WireError, WireField, WrongCluster,
};
