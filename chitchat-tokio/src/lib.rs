//! The tokio backend of chitchat: servers and clients for delimiter-framed protocols,
//! on TCP or any transport that implements chitchat-core's traits.
//!
//! # Layout
//! - `server`: [`Server`] and its builder: bind, then a handle on the running server.
//! - `client`: [`Client`] and its builder: dial (names looked up), send, receive.
//! - `accept`: the accept loop and admission (connection limits, per IP too).
//! - `hub`: what one server's connections share (registry, limits, events) and the
//!   `Peers` that handlers reach.
//! - `conn`: the task of one connection, the same for every transport and both
//!   sides; `conn::busy`: what it holds only while it works (given back while it
//!   waits); `ctx`: the `ReadContext` it hands the handler; `erased`: the handler
//!   with its per-connection state type erased.
//! - `handle`: what other tasks can reach of a connection (queue, close request).
//! - `registry`: the live connections, in accept order.
//! - `admission`, `budget`: the connection limits and the server-wide budget for
//!   bytes held in unfinished frames.
//! - `inbound`: the frames a client without a handler keeps for its `Stream`.
//! - `report`, `stats`, `timeouts`, `shutdown`: events and error counts, counters,
//!   live timeouts, cut and graceful drain; `clock`: the 8-byte time stamps a
//!   connection keeps its deadlines in; `deadlines`: when each connection must
//!   look at them again (one timer per server, not one per connection).
//! - `builder`: the per-connection setters the server and client builders share.
//! - `transport`: the transports: [`Tcp`], [`Unix`], TLS (feature `tls`), and
//!   [`StreamConn`], a tokio socket as a connection.
//! - `codec`: [`FrameCodec`], the same framing as a tokio-util `Decoder`/`Encoder`.
//!
//! # Example
//! A relay server (each line goes to every other peer, a greeting to newcomers) and
//! two clients, one of them a `Stream` of frames:
//!
//! ```
//! use chitchat_core::{Frame, Handler, ReadContext};
//! use chitchat_tokio::{Client, Server};
//! use futures::StreamExt;
//!
//! struct Relay;
//!
//! impl Handler for Relay {
//!     type Conn = ();
//!
//!     fn on_open(&self, ctx: &mut dyn ReadContext, _: &mut ()) {
//!         let _ = ctx.reply(b"welcome");
//!     }
//!
//!     fn on_frame(&self, ctx: &mut dyn ReadContext, _: &mut (), frame: Frame<'_>) {
//!         let me = ctx.peer_addr();
//!         let _ = ctx.peers().broadcast_except(&me, &frame);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = Server::builder("127.0.0.1:0").handler(Relay).listen().await?;
//!
//! let mut alice = Client::builder(server.local_addr()).connect().await?;
//! let mut bob = Client::builder(server.local_addr()).connect().await?;
//! assert_eq!(alice.next().await.unwrap(), "welcome");
//! assert_eq!(bob.next().await.unwrap(), "welcome");
//! alice.send(b"hello").await?; // waits for room if the server reads slowly
//! assert_eq!(bob.next().await.unwrap(), "hello");
//!
//! alice.close().await;
//! bob.close().await;
//! server.cut().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Memory per connection
//! What one connection can hold, by configuration (`ConnConfig`):
//! - idle: no read or write buffer, only its task, its handle, its entries in the
//!   server's registry and deadline index, and tokio's registration of the socket
//!   (about 1 KiB in all, of which tokio's socket registration is about 470 B:
//!   BENCHMARKS.md has the account), plus the kernel's socket;
//! - reading: the read buffer, one read (at most 64 KiB) when no frame is
//!   unfinished, and while one is, at most `max_frame_len` + 1 bytes: the frame and
//!   the byte that ends it or proves it too long. All unfinished frames of a
//!   server together are bounded by `partial_frame_budget` (counted by buffer
//!   capacity);
//! - writing: queued output, at most `max_outbound` (plus one frame, which always
//!   fits an empty queue);
//! - so at most `max(max_frame_len + 1, 64 KiB) + max_outbound + max_frame_len`
//!   per connection: 384 KiB (and a byte) with the defaults, and `max_connections`
//!   connections.
#![deny(missing_docs)]

mod accept;
mod admission;
mod budget;
mod builder;
mod client;
mod clock;
mod codec;
mod conn;
mod ctx;
mod deadlines;
mod erased;
mod handle;
mod hub;
mod inbound;
mod registry;
mod report;
mod server;
mod shutdown;
mod stats;
mod timeouts;
mod transport;

pub use client::{Client, ClientBuilder};
pub use codec::{CodecError, FrameCodec};
pub use server::{Server, ServerBuilder};
/// rustls, as chitchat uses it (for building TLS configurations).
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
pub use transport::{ReadinessIo, StreamConn, Tcp, TcpAcceptor, TcpConn};
#[cfg(feature = "tls")]
pub use transport::{TlsBinder, TlsConn, TlsConnector, TlsListener};
pub use transport::{Unix, UnixAcceptor, UnixConn};

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
