//! The tokio backend of chitchat: servers and clients for delimiter-framed protocols,
//! on TCP or any transport that implements chitchat-core's traits.
//!
//! # Layout
//! - `server`: [`Server`] and its builder: bind, accept loop, registry of connections.
//! - `client`: [`Client`] and its builder: dial with a timeout, write, close.
//! - `conn`: the task of one connection, the same for every transport and both sides.
//! - `handle`: what other tasks can reach of a connection (queue, close request).
//! - `registry`: the live connections of a server, by peer address.
//! - `budget`: the server-wide budget for bytes held in unfinished frames.
//! - `shutdown`: cut and graceful drain.
//! - `transport`: the transports: [`Tcp`], [`Unix`], TLS (feature `tls`), and
//!   [`StreamConn`], a tokio socket as a connection.
//! - `codec`: [`FrameCodec`], the same framing as a tokio-util `Decoder`/`Encoder`.
//!
//! # Example
//! An echo server and a client that talks to it:
//!
//! ```
//! use chitchat_core::{Addr, Frame, ReadContext};
//! use chitchat_tokio::{Client, Server};
//! use std::sync::Mutex;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = Server::builder("127.0.0.1:0".parse::<Addr>()?)
//!     .on_frame(|ctx, frame| {
//!         let _ = ctx.reply(&frame); // delimiter appended
//!     })
//!     .listen()
//!     .await?;
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let client = Client::with_state(server.local_addr(), Mutex::new(tx))
//!     .on_frame(|ctx: &mut dyn ReadContext<_>, frame: Frame<'_>| {
//!         let _ = ctx.state().lock().unwrap().send(frame.into_bytes());
//!     })
//!     .connect()
//!     .await?;
//! client.write(b"hello")?;
//! assert_eq!(rx.recv().await.unwrap(), "hello");
//!
//! client.close().await;
//! server.cut().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Memory per connection
//! What one connection can hold, by configuration (`ConnConfig`):
//! - idle: no read or write buffer, only its task and bookkeeping (a few hundred
//!   bytes plus the socket; see BENCHMARKS.md for the measured figure);
//! - reading: the read buffer, at most `max_frame_len` + one read (64 KiB) while a
//!   frame is unfinished; all unfinished frames of a server together are bounded
//!   by `partial_frame_budget` (counted by buffer capacity);
//! - writing: queued output, at most `max_outbound` (plus one frame, which always
//!   fits an empty queue);
//! - so at most `max_frame_len + 64 KiB + max_outbound + max_frame_len` per
//!   connection: 448 KiB with the defaults, and `max_connections` connections.
#![deny(missing_docs)]

mod budget;
mod builder;
mod client;
mod codec;
mod conn;
mod handle;
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
pub use transport::{TlsClient, TlsConn, TlsListener, TlsServer};
pub use transport::{Unix, UnixAcceptor, UnixConn};

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
