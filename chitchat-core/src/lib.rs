//! The runtime-agnostic core of chitchat: frames, contracts and transports, no I/O.
//!
//! chitchat is a library for delimiter-framed socket protocols: a server calls your
//! handler once per frame, your handler replies or closes, and the library does the
//! reading, writing, limits and timeouts. This crate holds everything that does not
//! depend on an async runtime; `chitchat-tokio` runs it on tokio.
//!
//! # Layout
//! - `frame`: the [`Framer`], a sans-IO state machine: bytes in, frames out.
//! - `config`: delimiter, limits, timeouts and their defaults.
//! - `transport`: the [`Connection`], [`Listener`], [`Binder`] and [`Connector`]
//!   traits every backend transport implements.
//! - `context`: the [`Frame`] and the [`ReadContext`] a handler gets.
//! - `handler`: the [`Handler`], with its connection hooks and per-connection state.
//! - `peers`: [`Peers`], every connection of a server as a handler reaches them.
//! - `server`, `client`: the [`Server`] and [`Client`] contracts.
//! - `event`: [`EventQueue`] and [`Events`], the one bounded broadcast queue.
//! - `conn_event`: [`ConnEvent`], [`CloseEvent`], [`CloseReason`], [`ConnStats`].
//! - `stats`: the [`Stats`] snapshot of a server's or client's counters.
//! - `error`: typed errors, each naming the address it concerns.
//! - `addr`, `target`: [`Addr`], the address of an endpoint, and [`Target`], an
//!   address or a name to look up.
//! - [`backend`]: what only backends need.
//!
//! # Configuration
//! Every limit and timeout is on by default, with a value for a server facing the
//! internet; [`ServerConfig`] has the table of the defaults beside nginx's, and each
//! `DEFAULT_*` constant says why it is what it is.
//!
//! # Example
//! A handler depends on this crate only, so it runs on any backend:
//!
//! ```
//! use bytes::BytesMut;
//! use chitchat_core::{Delimiter, Frame, FrameConfig, Framer, ReadContext};
//!
//! fn shout(ctx: &mut dyn ReadContext<()>, frame: Frame<'_>) {
//!     let _ = ctx.reply(&frame.to_ascii_uppercase());
//! }
//!
//! // The framer the backends feed their read buffers to:
//! let mut framer = Framer::new(FrameConfig::new(Delimiter::Byte(b'\n')));
//! let mut buf = BytesMut::from(&b"hi\r\nthere\n"[..]);
//! assert_eq!(framer.decode(&mut buf).unwrap().unwrap(), "hi");
//! assert_eq!(framer.decode(&mut buf).unwrap().unwrap(), "there");
//! ```
#![deny(missing_docs)]

mod addr;
pub mod backend;
mod client;
mod config;
mod conn_event;
mod context;
mod error;
mod event;
mod frame;
mod handler;
mod peers;
mod server;
mod stats;
mod target;
mod transport;

pub use addr::{Addr, AddrParseError, UnixAddr, MAX_UNIX_NAME_LEN};
pub use client::Client;
pub use config::{
    ClientConfig, ConnConfig, Delimiter, FrameConfig, Keepalive, OversizePolicy, ReceiveRate,
    ServerConfig, DEFAULT_BACKLOG, DEFAULT_FRAME_TIMEOUT, DEFAULT_KEEPALIVE_IDLE,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_RETRIES, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_INBOUND, DEFAULT_MAX_OUTBOUND, DEFAULT_PARTIAL_FRAME_BUDGET,
    DEFAULT_SERVER_IDLE_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use conn_event::{CloseEvent, CloseReason, ConnEvent, ConnStats};
pub use context::{Frame, ReadContext};
pub use error::{BindError, ConnError, ConnErrorKind, ConnectError, WriteError};
pub use event::{EventQueue, Events};
pub use frame::{EncodeError, FrameError, Framer};
pub use handler::{Handler, IgnoreFrames};
pub use peers::{Peers, PeersHandle};
pub use server::{Server, ShutdownReport};
pub use stats::{ErrorCounts, Stats};
pub use target::Target;
pub use transport::{BindOptions, Binder, Connection, Connector, Listener, PeerFailed};
