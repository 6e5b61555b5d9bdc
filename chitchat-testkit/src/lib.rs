//! A deterministic in-memory network for testing chitchat code: the same transport
//! traits as TCP ([`Binder`](chitchat_core::Binder),
//! [`Listener`](chitchat_core::Listener), [`Connector`](chitchat_core::Connector),
//! [`Connection`](chitchat_core::Connection)), TCP's error kinds and addresses,
//! tokio's paused time, and faults injected on purpose from one seed.
//!
//! # Layout
//! - [`net`]: the [`Network`] (hosts, connections, fault controls, trace) and its
//!   [`Host`]s, which bind and connect.
//! - [`listener`]: [`SimListener`], a bound listener.
//! - [`conn`]: [`SimConn`], one end of a connection, and the connect handshake.
//! - `pipe`: one direction of a byte stream, with arrival times and the window
//!   (internal).
//! - [`fault`]: [`LinkConfig`] (latency, jitter, bandwidth, chunking) and the
//!   seeded bookkeeping of partitions.
//! - [`trace`]: the recorder: [`TraceEntry`], [`Event`], [`ConnId`].
//! - [`conformance`]: the behaviour contract of Server and Client, generic over the
//!   transport.
//!
//! # Example
//! A listener and a connector exchange bytes across a partition and its heal, under
//! paused time: the 30 virtual seconds of the partition pass at once.
//!
//! ```
//! use std::future::poll_fn;
//! use std::time::Duration;
//!
//! use bytes::BytesMut;
//! use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Listener};
//! use chitchat_testkit::{Event, LinkConfig, Network};
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> std::io::Result<()> {
//!     let net = Network::new(7); // the seed of every random choice
//!     let server = net.host([10, 0, 0, 1]);
//!     let client = net.host([10, 0, 0, 2]);
//!     net.set_pair(&server, &client, LinkConfig::default().latency(Duration::from_millis(20)));
//!
//!     let addr: Addr = "10.0.0.1:7878".parse().unwrap();
//!     let mut listener = server.bind(&addr, &BindOptions::default())?;
//!     let mut conn = client.connect(&addr).await?; // one round trip: 40 ms
//!     let (mut accepted, peer) = poll_fn(|cx| listener.poll_accept(cx)).await?;
//!     assert_eq!(peer, conn.local_addr()?);
//!
//!     // Cut the cable, then write: the bytes are held, not lost.
//!     net.partition(&server, &client);
//!     poll_fn(|cx| conn.poll_write(cx, b"ping")).await?;
//!     let mut buf = BytesMut::with_capacity(64);
//!     let waited = tokio::time::timeout(
//!         Duration::from_secs(30),
//!         poll_fn(|cx| accepted.poll_read(cx, &mut buf)),
//!     )
//!     .await;
//!     assert!(waited.is_err(), "nothing crosses a partition");
//!
//!     // Plug it back: the bytes arrive one link delay later.
//!     net.heal(&server, &client);
//!     poll_fn(|cx| accepted.poll_read(cx, &mut buf)).await?;
//!     assert_eq!(&buf[..], b"ping");
//!
//!     // Half-close: the peer reads EOF after the data.
//!     poll_fn(|cx| conn.poll_shutdown(cx)).await?;
//!     assert_eq!(poll_fn(|cx| accepted.poll_read(cx, &mut buf)).await?, 0);
//!
//!     // The trace tells what happened, and when (virtual time).
//!     for entry in net.trace() {
//!         println!("{entry}");
//!     }
//!     let delivered = net.trace().into_iter().find(|e| matches!(e.event, Event::Delivered { .. }));
//!     assert_eq!(delivered.unwrap().at, Duration::from_millis(40 + 30_000 + 20));
//!     Ok(())
//! }
//! ```
//!
//! # Determinism
//! Every random choice comes from the seed given to [`Network::new`], drawn in the
//! order operations happen. On tokio's current-thread runtime (what
//! `#[tokio::test]` gives) with paused time, and with code under test that does not
//! draw randomness of its own (an unbiased `tokio::select!` does), the same test
//! with the same seed records the same [`trace`](Network::trace).
#![deny(missing_docs)]

pub mod conformance;
pub mod conn;
pub mod fault;
pub mod listener;
pub mod net;
mod pipe;
pub mod trace;

pub use conn::SimConn;
pub use fault::LinkConfig;
pub use listener::SimListener;
pub use net::{Host, NetConfig, Network, DEFAULT_BUFFER_SIZE};
pub use trace::{ConnId, Event, TraceEntry};
