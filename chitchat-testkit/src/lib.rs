//! A deterministic in-memory network for testing chitchat code: the same transport
//! traits as TCP ([`Binder`](chitchat_core::Binder),
//! [`Listener`](chitchat_core::Listener), [`Connector`](chitchat_core::Connector),
//! [`Connection`](chitchat_core::Connection)), TCP's error kinds and addresses,
//! tokio's paused time, and faults injected on purpose from one seed.
//!
//! # Layout
//! - `net.rs`: the [`Network`]: hosts, fault controls (links, partitions, resets,
//!   refusals, kills) and the trace; [`NetConfig`].
//! - `host.rs`: a [`Host`], one IP address, which binds and connects.
//! - `world.rs`: the shared state behind one lock, and the handle to it every part
//!   holds (internal).
//! - `listener.rs`: [`SimListener`], a bound listener.
//! - `conn.rs`: [`SimConn`], one end of a connection, and the connect handshake.
//! - `pipe.rs`: one direction of a byte stream, with arrival times and the window
//!   (internal).
//! - `fault.rs`: [`LinkConfig`] (latency, jitter, bandwidth, chunking) and the
//!   seeded bookkeeping of partitions.
//! - `trace.rs`: the recorder: [`TraceEntry`], [`TraceEvent`], [`ConnId`].
//! - `raw.rs`: [`RawPeer`], a connection driven byte by byte, to play a
//!   misbehaving peer.
//!
//! Files import downwards only: `net` → `host` → `listener` → `conn` → `world` →
//! `pipe`, `fault`, `trace`.
//!
//! The behaviour contract of chitchat's Server and Client, run on every transport
//! and on this network, is the `chitchat-conformance` crate of the workspace.
//!
//! # What a test needs
//! This crate's clock is tokio's: run tests on a current-thread runtime with paused
//! time, which takes tokio's `test-util` feature in your dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! chitchat-testkit = "0.1"
//! chitchat-tokio = "0.1"   # the engine under test
//! tokio = { version = "1", features = ["macros", "rt", "test-util"] }
//! ```
//!
//! and `#[tokio::test(start_paused = true)]` on each test.
//!
//! # Example
//! A user's handler, tested on the in-memory network with paused time: it answers
//! `ping` with `pong`; then the cable is cut, and the server's 60-second idle timeout
//! drops the silent client. The test takes milliseconds of wall time.
//!
//! ```
//! use std::time::Duration;
//!
//! use chitchat_core::{CloseReason, ConnEvent, Frame, ReadContext};
//! use chitchat_testkit::Network;
//! use chitchat_tokio::{Client, Server};
//! use futures::StreamExt;
//! use tokio::time::Instant;
//!
//! /// The handler under test.
//! fn pong(ctx: &mut dyn ReadContext<()>, frame: Frame<'_>) {
//!     if frame == "ping" {
//!         let _ = ctx.reply(b"pong");
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let net = Network::new(42); // one seed drives every random choice
//!     let server_host = net.host([10, 0, 0, 1]);
//!     let client_host = net.host([10, 0, 0, 2]);
//!
//!     // The engine is the one that runs on TCP; only the transport differs.
//!     let server = Server::builder("10.0.0.1:7000")
//!         .on_frame(pong)
//!         .idle_timeout(Duration::from_secs(60))
//!         .listen_on(&server_host)
//!         .await?;
//!     let mut events = server.events();
//!
//!     let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
//!     let client = Client::with_state(server.local_addr(), tx)
//!         .on_frame(|ctx, frame| {
//!             let _ = ctx.state().send(frame.into_bytes());
//!         })
//!         .connect_with(&client_host)
//!         .await?;
//!     client.try_write(b"ping")?;
//!     assert_eq!(replies.recv().await.unwrap(), "pong");
//!
//!     // Cut the cable: nothing arrives, and 60 virtual seconds later the server
//!     // gives up on the client.
//!     net.partition(&server_host, &client_host);
//!     let cut_at = Instant::now();
//!     let closed = loop {
//!         if let Some(ConnEvent::Closed(closed)) = events.next().await {
//!             break closed;
//!         }
//!     };
//!     assert_eq!(closed.reason, CloseReason::IdleTimeout);
//!     assert_eq!(closed.peer, client.local_addr());
//!     assert!(cut_at.elapsed() >= Duration::from_secs(60));
//!
//!     // Plug it back in: the server's FIN, held by the partition, reaches the client.
//!     net.heal(&server_host, &client_host);
//!     assert_eq!(client.closed().await.reason, CloseReason::PeerEof);
//!     server.cut().await;
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

mod conn;
mod fault;
mod host;
mod listener;
mod net;
mod pipe;
mod raw;
mod trace;
mod world;

pub use conn::SimConn;
pub use fault::LinkConfig;
pub use host::Host;
pub use listener::SimListener;
pub use net::{NetConfig, Network, DEFAULT_BUFFER_SIZE};
pub use raw::RawPeer;
pub use trace::{ConnId, TraceEntry, TraceEvent};
