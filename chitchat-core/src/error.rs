//! Typed errors, one small enum per operation. Each names the address it concerns:
//! the peer, or the address being bound or dialed.
//!
//! Framing faults ([`FrameError`](crate::FrameError), [`EncodeError`]) carry no
//! address because the framer does no I/O; the backend wraps them here with the peer.
//!
//! An error's message is one whole sentence: what failed, where, and why, so
//! `eprintln!("{e}")` says everything. The cause is also chained through `source()`
//! for code that walks it; printing the chain as well (anyhow's `{:#}`) repeats it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::frame::EncodeError;

/// A listener could not be set up. Nothing keeps running after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The name to listen on did not resolve to an address.
    #[error("cannot listen on {name}: {source}")]
    Resolve {
        /// The `host:port` text given.
        name: String,
        /// What the lookup said.
        #[source]
        source: io::Error,
    },
    /// The transport refused the address (in use, not local, no permission...).
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address we tried to bind.
        addr: Addr,
        /// What the transport said.
        #[source]
        source: io::Error,
    },
}

/// A client could not connect. Nothing keeps running after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name to connect to did not resolve to an address.
    #[error("cannot connect to {name}: {source}")]
    Resolve {
        /// The `host:port` text given.
        name: String,
        /// What the lookup said.
        #[source]
        source: io::Error,
    },
    /// Nobody answered in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address dialed.
        addr: Addr,
        /// The configured connect timeout.
        after: Duration,
    },
    /// Nobody listens there.
    #[error("connection to {addr} refused")]
    Refused {
        /// The address dialed.
        addr: Addr,
    },
    /// Any other transport failure.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// The address dialed.
        addr: Addr,
        /// What the transport said.
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// Classifies a transport error from dialing `addr`.
    pub fn from_io(addr: Addr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::ConnectionRefused => ConnectError::Refused { addr },
            _ => ConnectError::Io { addr, source },
        }
    }
}

/// A payload was not queued for a peer. When this is returned, nothing of the
/// payload was queued: a message is never sent in part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The payload cannot be framed (see [`EncodeError`]).
    #[error("cannot send to {peer}: {source}")]
    Encode {
        /// The peer the payload was for.
        peer: Addr,
        /// Why it cannot be framed.
        #[source]
        source: EncodeError,
    },
    /// The connection is closed or closing.
    #[error("connection to {peer} is closed")]
    Closed {
        /// The peer of that connection.
        peer: Addr,
    },
    /// Queuing it would pass the connection's outbound bound.
    #[error("outbound queue to {peer} is full ({limit} bytes)")]
    OutboundFull {
        /// The peer that is not reading fast enough.
        peer: Addr,
        /// The configured bound.
        limit: usize,
    },
    /// No connection from this address.
    #[error("no connection from {peer}")]
    UnknownPeer {
        /// The address asked for.
        peer: Addr,
    },
}

/// Something that went wrong in the background, reported on the event stream. Each
/// names the peer (or, for [`ConnError::Accept`], the listening address).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer sent a frame over the limit.
    #[error("{peer} sent a frame longer than {limit} bytes")]
    FrameTooLong {
        /// The offending peer.
        peer: Addr,
        /// The configured maximum frame length.
        limit: usize,
    },
    /// The peer closed its side in the middle of a frame.
    #[error("{peer} closed the stream inside a frame: {len} bytes without a delimiter dropped")]
    TruncatedFrame {
        /// The peer.
        peer: Addr,
        /// Bytes of the unfinished frame.
        len: usize,
    },
    /// Nothing arrived for the idle timeout.
    #[error("{peer} sent nothing for {after:?}")]
    IdleTimeout {
        /// The silent peer.
        peer: Addr,
        /// The configured idle timeout.
        after: Duration,
    },
    /// A frame was begun and not finished within the frame timeout (a peer that
    /// trickles bytes just fast enough to dodge the idle timeout).
    #[error("{peer} took longer than {after:?} to finish a frame")]
    FrameTimeout {
        /// The slow peer.
        peer: Addr,
        /// The configured frame timeout.
        after: Duration,
    },
    /// The server held more bytes of unfinished frames than its budget, and this
    /// peer held the most: it was dropped to make room.
    #[error("shed {peer}: it held {held} bytes of an unfinished frame when the server's {budget}-byte budget ran out")]
    Shed {
        /// The peer dropped.
        peer: Addr,
        /// Bytes of its unfinished frame.
        held: usize,
        /// The server-wide budget.
        budget: usize,
    },
    /// The peer was sending, but fewer bytes in a window than the minimum receive
    /// rate (a peer that trickles complete frames to hold its connection).
    #[error("{peer} sent only {received} bytes in {per:?}, below the minimum of {min}")]
    TooSlow {
        /// The slow peer.
        peer: Addr,
        /// Bytes it sent in the window.
        received: u64,
        /// The configured minimum per window.
        min: u64,
        /// The configured window.
        per: Duration,
    },
    /// Queued output made no progress for the write timeout.
    #[error("{peer} accepted no data for {after:?}")]
    WriteTimeout {
        /// The peer that stopped reading.
        peer: Addr,
        /// The configured write timeout.
        after: Duration,
    },
    /// Output for the peer passed the outbound bound.
    #[error("{peer} reads too slowly: more than {limit} bytes queued")]
    OutboundFull {
        /// The slow peer.
        peer: Addr,
        /// The configured bound.
        limit: usize,
    },
    /// The server was at its connection limit when the peer connected.
    #[error("refused {peer}: {limit} connections already open")]
    Refused {
        /// The refused peer.
        peer: Addr,
        /// The configured maximum number of connections.
        limit: usize,
    },
    /// The peer's IP already held its share of the server's connections.
    #[error("refused {peer}: its IP already holds {limit} connections")]
    RefusedPerIp {
        /// The refused peer.
        peer: Addr,
        /// The configured maximum number of connections per IP.
        limit: usize,
    },
    /// The handler panicked on one of the peer's frames (or in a connection hook).
    #[error("handler panicked on a frame from {peer}: {message}")]
    HandlerPanic {
        /// The peer whose frame was being handled.
        peer: Addr,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The transport failed (reset, broken pipe...).
    #[error("connection with {peer} failed: {source}")]
    Io {
        /// The peer.
        peer: Addr,
        /// What the transport said.
        #[source]
        source: Arc<io::Error>,
    },
    /// Accepting a connection failed (e.g. out of file descriptors); the listener
    /// backs off and keeps going.
    #[error("accept on {local} failed: {source}")]
    Accept {
        /// The listening address.
        local: Addr,
        /// What the transport said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The peer's connection failed before it was established (its TLS handshake
    /// failed, timed out or was too long): it never reached a handler, and counts
    /// as no connection (no close event). The listener accepts on at once.
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer.
        peer: Addr,
        /// Why it failed.
        #[source]
        source: Arc<io::Error>,
    },
}

/// The kind of a [`ConnError`], without its data: easy to match and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // one-to-one with ConnError's variants
pub enum ConnErrorKind {
    FrameTooLong,
    TruncatedFrame,
    IdleTimeout,
    FrameTimeout,
    TooSlow,
    Shed,
    WriteTimeout,
    OutboundFull,
    Refused,
    RefusedPerIp,
    HandlerPanic,
    Io,
    Accept,
    Handshake,
}

impl ConnErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ConnErrorKind; 14] = [
        ConnErrorKind::FrameTooLong,
        ConnErrorKind::TruncatedFrame,
        ConnErrorKind::IdleTimeout,
        ConnErrorKind::FrameTimeout,
        ConnErrorKind::TooSlow,
        ConnErrorKind::Shed,
        ConnErrorKind::WriteTimeout,
        ConnErrorKind::OutboundFull,
        ConnErrorKind::Refused,
        ConnErrorKind::RefusedPerIp,
        ConnErrorKind::HandlerPanic,
        ConnErrorKind::Io,
        ConnErrorKind::Accept,
        ConnErrorKind::Handshake,
    ];

    /// Position in [`ALL`](Self::ALL), for counting by kind.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl ConnError {
    /// The kind of error.
    pub fn kind(&self) -> ConnErrorKind {
        match self {
            ConnError::FrameTooLong { .. } => ConnErrorKind::FrameTooLong,
            ConnError::TruncatedFrame { .. } => ConnErrorKind::TruncatedFrame,
            ConnError::IdleTimeout { .. } => ConnErrorKind::IdleTimeout,
            ConnError::FrameTimeout { .. } => ConnErrorKind::FrameTimeout,
            ConnError::TooSlow { .. } => ConnErrorKind::TooSlow,
            ConnError::Shed { .. } => ConnErrorKind::Shed,
            ConnError::WriteTimeout { .. } => ConnErrorKind::WriteTimeout,
            ConnError::OutboundFull { .. } => ConnErrorKind::OutboundFull,
            ConnError::Refused { .. } => ConnErrorKind::Refused,
            ConnError::RefusedPerIp { .. } => ConnErrorKind::RefusedPerIp,
            ConnError::HandlerPanic { .. } => ConnErrorKind::HandlerPanic,
            ConnError::Io { .. } => ConnErrorKind::Io,
            ConnError::Accept { .. } => ConnErrorKind::Accept,
            ConnError::Handshake { .. } => ConnErrorKind::Handshake,
        }
    }

    /// The address the error concerns: the peer, or the listener for `Accept`.
    pub fn addr(&self) -> Addr {
        match self {
            ConnError::FrameTooLong { peer, .. }
            | ConnError::TruncatedFrame { peer, .. }
            | ConnError::IdleTimeout { peer, .. }
            | ConnError::FrameTimeout { peer, .. }
            | ConnError::TooSlow { peer, .. }
            | ConnError::Shed { peer, .. }
            | ConnError::WriteTimeout { peer, .. }
            | ConnError::OutboundFull { peer, .. }
            | ConnError::Refused { peer, .. }
            | ConnError::RefusedPerIp { peer, .. }
            | ConnError::HandlerPanic { peer, .. }
            | ConnError::Io { peer, .. }
            | ConnError::Handshake { peer, .. } => *peer,
            ConnError::Accept { local, .. } => *local,
        }
    }
}
