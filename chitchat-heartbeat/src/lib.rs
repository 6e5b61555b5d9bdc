//! Master/node liveness for chitchat: nodes register with a master, the master probes
//! them and tells who is alive, suspect, dead or gone.
//!
//! The wire format and the failure detector are sans-IO: they take bytes, outcomes
//! and the current time, and return messages and state changes, with no socket,
//! clock or task of their own. The two roles run them on chitchat-tokio, generic over
//! the transport: the same code runs on TCP and on the testkit's in-memory network,
//! where tests own time.
//!
//! # Layout
//! - [`wire`]: the versioned wire format: [`Message`], [`encode`](Message::encode),
//!   [`decode`], [`WireError`].
//! - [`detector`]: the master's failure detector: [`Detector`] turns registrations,
//!   probe outcomes and ticks into [`Event`]s and a membership snapshot;
//!   [`HeartbeatConfig`] holds the intervals and thresholds.
//! - [`master`]: the master role: [`Master`] serves registrations, probes every live
//!   node once per round, and publishes [`MasterEvent`]s and a snapshot.
//! - [`node`]: the node role: [`Node`] answers probes, registers, notices a lost
//!   master and registers again; publishes [`MemberEvent`]s.
//! - [`events`]: [`Events`], the bounded event stream of both roles.
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
//! use chitchat_heartbeat::{HeartbeatConfig, Master, MasterEvent, MemberStatus, Node, NodeId};
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
//!         if let MasterEvent::Node(change) = &event {
//!             let at_ms = (change.at - start).as_millis();
//!             println!("event node={} state={} at_ms={at_ms}", change.node, event.as_str());
//!         }
//!         match event {
//!             MasterEvent::Node(change) if change.change.as_str() == "dead" => break change,
//!             _ => {}
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
//! A node sends `register` (its id, incarnation, probe address and metadata) and
//! gets `register-ack` or `refuse`; the master sends it a `probe` every
//! `probe_interval` and the node answers `probe-ack`; on shutdown the node sends
//! `leave`. Each message is one `\n`-terminated line of text:
//!
//! ```text
//! CHB 1 register prod node-7 1717171717000 1 10.0.0.7:7001 zone=eu-west
//! CHB 1 probe prod node-7 1717171717000 42
//! ```
//!
//! The [`wire`] module documents every message and field token by token, and the
//! limits. The [`detector`] module documents the states, the identity rules
//! (incarnations, duplicate ids) and the handling of master stalls.
//!
//! # Timing
//! A node that dies is declared Dead within
//! `probe_interval × (max_failures + 1) + probe_timeout` (14 s with the defaults:
//! 3 s, 3 failures, 2 s; see [`HeartbeatConfig::detection_bound`]). A node declares
//! the master lost after `master_timeout` (10 s) without a probe, then registers
//! again at once, and after each failed attempt waits an exponential backoff with
//! jitter (from a quarter of `probe_interval` up to `master_timeout`; see
//! [`NodeBuilder::start`]). A node that registers is first probed at the next round,
//! within one `probe_interval`.
//!
//! # Events
//! Both roles publish what happens as an [`Events`] stream: the master's
//! [`MasterEvent`]s (a node joined, turned suspect, alive, dead or left, each with
//! the node id, address, incarnation and time; a stall of the master; a peer that
//! broke the protocol, named) and each node's [`MemberEvent`]s (registered, refused,
//! master lost, master back). `as_str` gives the word for a log line. A stream never
//! slows its role down: a reader that lags loses the oldest events and can tell how
//! many.
#![deny(missing_docs)]

pub mod detector;
pub mod events;
pub mod master;
pub mod node;
pub mod wire;

pub use detector::{
    Change, Detector, Event, Evidence, HeartbeatConfig, NodeEvent, NodeSnapshot, NodeState,
    RegisterError, Stall,
};
pub use events::{Events, DEFAULT_EVENT_CAPACITY};
pub use master::{Master, MasterBuilder, MasterError, MasterEvent};
pub use node::{LeaveError, MemberChange, MemberEvent, MemberStatus, Node, NodeBuilder, NodeError};
pub use wire::{
    decode, Body, ClusterId, IdError, Message, Metadata, MetadataError, NodeId, RefuseReason,
    WireError, WireField, WrongCluster,
};
