//! The transport abstraction: small traits, one job each, that an engine is generic
//! over. TCP, Unix domain sockets, TLS (in `chitchat-tokio`) and the in-memory test
//! network (`chitchat-testkit`) implement them; the engine never knows which one it
//! drives.
//!
//! - [`Binder`] turns an address into a [`Listener`] (server side);
//! - [`Listener`] yields accepted [`Connection`]s;
//! - [`Connector`] dials a [`Connection`] (client side);
//! - [`Connection`] is one byte stream with half-close;
//! - [`PeerFailed`] is how a listener reports one peer whose connection failed
//!   before it was established (a TLS handshake), apart from its own failures.
//!
//! The hot methods (read, write) are poll functions: they cost nothing per call, work
//! on any executor, and let the engine drive reads, writes and timers of a connection
//! from one task. Dialing is an `async fn` (`-> impl Future + Send`), as it is rare
//! and the engine spawns on a multi-threaded runtime. Time is not part of the seam:
//! the engine runs on tokio, whose paused clock gives tests control of time.
//!
//! A sketch of an implementation over tokio's `TcpStream` (the real one, for TCP and
//! Unix sockets alike, is chitchat-tokio's `transport/readiness.rs`):
//!
//! ```ignore
//! impl Connection for TcpConn {
//!     // An idle connection waits here, with no read buffer.
//!     fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
//!         self.stream.poll_read_ready(cx)
//!     }
//!     // Through `AsyncRead`: a short read counts as drained, so no `EAGAIN` call
//!     // follows it (a `try_read_buf` loop would make one after every read).
//!     fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
//!         tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, buf)
//!     }
//!     // poll_write, poll_shutdown, local_addr, peer_addr likewise
//! }
//! ```

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::addr::Addr;
use crate::config::Keepalive;
use crate::error::ConnError;

/// One established byte stream.
///
/// Errors use the `std::io::ErrorKind`s of TCP (`ConnectionReset`, `BrokenPipe`...), so
/// the engine can classify them whatever the transport.
pub trait Connection: Send + Unpin + 'static {
    /// The address of our end.
    ///
    /// # Errors
    /// When the transport cannot tell (the connection is already gone).
    fn local_addr(&self) -> io::Result<Addr>;

    /// The address of the other end.
    ///
    /// # Errors
    /// When the transport cannot tell (the connection is already gone).
    fn peer_addr(&self) -> io::Result<Addr>;

    /// Resolves when a read would make progress (data, EOF or an error is waiting).
    ///
    /// The engine waits here with no read buffer allocated, so an idle connection
    /// holds none. Transports that cannot tell readiness apart from reading keep the
    /// default, which is always ready: the engine then allocates its buffer first and
    /// waits in [`poll_read`](Self::poll_read).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }

    /// Reads into the spare capacity of `buf` (appending), returning how many bytes
    /// were read; `Ok(0)` means the peer shut down its write side. The caller makes
    /// sure `buf` has spare capacity.
    ///
    /// # Errors
    /// Transport failures; the connection is unusable afterwards.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// Writes some of `buf`, returning how many bytes were taken.
    ///
    /// # Errors
    /// Transport failures; the connection is unusable afterwards.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Pushes out anything the transport itself buffers (TLS records, for instance).
    ///
    /// # Errors
    /// Transport failures.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }

    /// Shuts down our write side: the peer reads EOF after what was written.
    ///
    /// # Errors
    /// Transport failures.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Has the transport probe a silent peer as `keepalive` says (`None`: no
    /// probes), so that one that vanished without closing is noticed: a read or
    /// write then fails (`TimedOut`, as TCP reports it). The engine calls it once
    /// per connection, accepted or dialed, before its first read or write, with
    /// [`ConnConfig::keepalive`](crate::ConnConfig::keepalive). Transports with no
    /// such mechanism keep the default, which does nothing.
    ///
    /// # Errors
    /// When the transport cannot apply it; the engine then carries on without.
    fn set_keepalive(&mut self, keepalive: Option<Keepalive>) -> io::Result<()> {
        let _ = keepalive;
        Ok(())
    }
}

/// Accepts connections on a bound address. Dropping it stops listening.
pub trait Listener: Send + 'static {
    /// The connections this listener yields.
    type Conn: Connection;

    /// The next incoming connection and its peer address.
    ///
    /// A listener that does more than accept (a TLS handshake, for instance) hands
    /// out only connections that are established, and reports one that failed
    /// before that as a [`PeerFailed`] carried in the error (see
    /// [`PeerFailed::into_io_error`]).
    ///
    /// # Errors
    /// A [`PeerFailed`] names one peer whose connection failed: the caller reports it
    /// and accepts again at once. `ConnectionAborted` or `ConnectionReset` without
    /// one: a peer gave up before it was accepted, nothing to report. Anything else
    /// concerns the listener (out of file descriptors, say): it stays usable, and
    /// the caller should back off before trying again.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Conn, Addr)>>;

    /// The address actually bound (with the real port when port 0 was asked for).
    ///
    /// # Errors
    /// When the transport cannot tell.
    fn local_addr(&self) -> io::Result<Addr>;
}

/// One incoming connection failed before the listener could hand it out: its TLS
/// handshake failed or timed out, for instance. The listener itself is fine.
///
/// A [`Listener`] returns it from `poll_accept` inside the `io::Error`, of kind
/// `ConnectionAborted` (so an engine that does not look inside still takes it for
/// a peer that left, and does not back off); an engine takes it back out with
/// [`from_io_error`](Self::from_io_error) and reports it as
/// [`ConnError::Handshake`].
///
/// ```
/// use std::io;
/// use chitchat_core::{Addr, ConnError, PeerFailed};
///
/// let peer: Addr = "192.0.2.7:40000".parse().unwrap();
/// let timeout = io::Error::new(io::ErrorKind::TimedOut, "handshake not finished within 10s");
/// // In the listener:
/// let err: io::Error = PeerFailed::new(peer, timeout).into_io_error();
/// assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
/// // In the engine:
/// let failed = PeerFailed::from_io_error(err).unwrap();
/// assert_eq!(failed.peer, peer);
/// let reported = ConnError::from(failed);
/// assert_eq!(reported.addr(), peer);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("connection from {peer} failed before it was established: {source}")]
#[non_exhaustive]
pub struct PeerFailed {
    /// The peer whose connection failed.
    pub peer: Addr,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

impl PeerFailed {
    /// The connection from `peer` failed, for the reason `source`.
    pub fn new(peer: Addr, source: io::Error) -> Self {
        PeerFailed { peer, source }
    }

    /// The error `poll_accept` returns for it.
    pub fn into_io_error(self) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, self)
    }

    /// Takes a `PeerFailed` back out of an error `poll_accept` returned.
    ///
    /// # Errors
    /// `err` itself, unchanged, when it does not carry one.
    pub fn from_io_error(err: io::Error) -> Result<PeerFailed, io::Error> {
        if !err.get_ref().is_some_and(|inner| inner.is::<PeerFailed>()) {
            return Err(err);
        }
        let inner = err.into_inner().expect("checked above");
        Ok(*inner.downcast::<PeerFailed>().expect("checked above"))
    }
}

impl From<PeerFailed> for ConnError {
    fn from(failed: PeerFailed) -> Self {
        ConnError::Handshake {
            peer: failed.peer,
            source: Arc::new(failed.source),
        }
    }
}

/// Options of a bind, beyond the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindOptions {
    /// Pending connections to queue before they are accepted.
    pub backlog: u32,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            backlog: crate::config::DEFAULT_BACKLOG,
        }
    }
}

/// The server side of a transport: binds listeners.
pub trait Binder: Send + Sync + 'static {
    /// The listener it creates.
    type Listener: Listener;

    /// Binds `addr` and starts listening. Called from within the engine's runtime.
    ///
    /// # Errors
    /// The address is in use, not local, or otherwise refused; the error is returned
    /// at once, nothing is left listening.
    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<Self::Listener>;
}

/// The client side of a transport: dials connections.
pub trait Connector: Send + Sync + 'static {
    /// The connections it creates.
    type Conn: Connection;

    /// Opens a connection to `addr`. The engine applies the connect timeout.
    ///
    /// # Errors
    /// `ConnectionRefused` when nobody listens there; other transport failures.
    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}
