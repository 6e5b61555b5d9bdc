//! Master/node liveness for chitchat: nodes register with a master, the master probes
//! them and tells who is alive, suspect, dead or gone.
//!
//! This crate holds the protocol's sans-IO parts: the wire format and the failure
//! detector take bytes, outcomes and the current time, and return messages and state
//! changes, with no socket, clock or task of their own, so they run the same on the
//! tokio engine and on the testkit's simulated network, and tests own time.
//!
//! # Layout
//! - [`wire`]: the versioned wire format: [`Message`], [`encode`](Message::encode),
//!   [`decode`], [`WireError`].
//! - [`detector`]: the master's failure detector: [`Detector`] turns registrations,
//!   probe outcomes and ticks into [`Event`]s and a membership snapshot;
//!   [`HeartbeatConfig`] holds the intervals and thresholds.
//!
//! The master and node roles, built on these over chitchat's transports, come next.
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
//! the master lost after `master_timeout` (10 s) without a probe.
#![deny(missing_docs)]

pub mod detector;
pub mod wire;

pub use detector::{
    Change, Detector, Event, Evidence, HeartbeatConfig, NodeEvent, NodeSnapshot, NodeState,
    RegisterError, Stall,
};
pub use wire::{
    decode, Body, ClusterId, IdError, Message, Metadata, MetadataError, NodeId, RefuseReason,
    WireError, WireField, WrongCluster,
};
