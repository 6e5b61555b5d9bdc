//! The runtime-agnostic core of chitchat: frames, contracts and transports, no I/O.
//!
//! chitchat is a library for delimiter-framed socket protocols: a server calls your
//! handler once per frame, your handler replies or closes, and the library does the
//! reading, writing, limits and timeouts. This crate holds everything that does not
//! depend on an async runtime; `chitchat-tokio` runs it on tokio.
//!
//! # Layout
//! - [`frame`]: the [`Framer`], a sans-IO state machine: bytes in, frames out.
//! - [`config`]: delimiter, limits, timeouts and their defaults (a table of them,
//!   beside nginx's, in its docs).
//! - [`transport`]: the [`Connection`], [`Listener`], [`Binder`] and [`Connector`]
//!   traits every backend transport implements.
//! - [`context`]: the [`Frame`] and [`ReadContext`] a [`Handler`] gets.
//! - [`server`], [`client`]: the [`Server`] and [`Client`] contracts.
//! - [`event`]: close reasons and the bounded [`EventStream`].
//! - [`stats`]: the [`Stats`] snapshot of a server's or client's counters.
//! - [`error`]: typed errors, each naming the address it concerns.
//! - [`addr`]: [`Addr`], the address of an endpoint.
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

pub mod addr;
pub mod client;
pub mod config;
pub mod context;
pub mod error;
pub mod event;
pub mod frame;
pub mod server;
pub mod stats;
pub mod transport;

pub use addr::{Addr, AddrParseError, UnixAddr, MAX_UNIX_NAME_LEN};
pub use client::Client;
pub use config::{
    ClientConfig, ConnConfig, Delimiter, FrameConfig, Keepalive, OversizePolicy, ServerConfig,
    DEFAULT_BACKLOG, DEFAULT_FRAME_TIMEOUT, DEFAULT_KEEPALIVE_IDLE, DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_RETRIES, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_OUTBOUND,
    DEFAULT_PARTIAL_FRAME_BUDGET, DEFAULT_SERVER_IDLE_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use context::{Frame, Handler, IgnoreFrames, ReadContext};
pub use error::{BindError, ConnError, ConnErrorKind, ConnectError, WriteError};
pub use event::{
    event_queue, CloseEvent, CloseReason, ConnStats, Event, EventSink, EventStream, ShutdownReport,
};
pub use frame::{EncodeError, FrameError, FrameExtent, Framer};
pub use server::Server;
pub use stats::{ErrorCounts, Stats};
pub use transport::{BindOptions, Binder, Connection, Connector, Listener, PeerFailed};
