//! Tokio's readiness-based sockets (TCP, Unix) as chitchat connections: an idle
//! connection waits for readiness with no buffer; reads then go through tokio's
//! `AsyncRead`, which, unlike `try_read_buf`, takes a short read as "drained" and
//! so saves the `EAGAIN` system call that would otherwise follow every read.
//! Written once for every socket type that has these primitives.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use chitchat_core::{Addr, Connection, Keepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The readiness primitives tokio's stream sockets share (implemented for
/// `TcpStream` and `UnixStream`).
pub trait ReadinessIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    #[doc(hidden)]
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    #[doc(hidden)]
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    #[doc(hidden)]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Keepalive, for the sockets that have it (TCP); the others ignore it.
    #[doc(hidden)]
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        let _ = keepalive;
        Ok(())
    }
    /// What a connection keeps to tell its addresses: nothing for TCP, whose
    /// addresses the system reports; the names it was made with for Unix sockets.
    #[doc(hidden)]
    type Names: std::fmt::Debug + Send + Sync + Unpin + 'static;
    /// The local (`local`) or peer address.
    #[doc(hidden)]
    fn addr(&self, names: &Self::Names, local: bool) -> io::Result<Addr>;
}

macro_rules! readiness_io {
    ($stream:ty, names: $names:ty, addr: $addr:expr $(, keepalive: $keepalive:path)?) => {
        impl ReadinessIo for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$stream>::try_write(self, buf)
            }
            $(
                fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
                    $keepalive(self, keepalive)
                }
            )?
            type Names = $names;
            fn addr(&self, names: &$names, local: bool) -> io::Result<Addr> {
                ($addr)(self, names, local)
            }
        }
    };
}

readiness_io!(
    TcpStream,
    names: (),
    addr: |stream: &TcpStream, _: &(), local: bool| {
        let addr = if local { stream.local_addr() } else { stream.peer_addr() };
        addr.map(Addr::from)
    },
    keepalive: super::keepalive::apply
);
readiness_io!(
    UnixStream,
    names: Box<[Addr; 2]>,
    addr: |_: &UnixStream, names: &[Addr; 2], local: bool| {
        Ok(names[usize::from(!local)])
    }
);

/// One connection over a tokio socket: [`TcpConn`](crate::TcpConn) or
/// [`UnixConn`](crate::UnixConn).
///
/// A TCP connection asks the system for its addresses when asked and keeps
/// nothing for them (each idle connection of a server would carry two addresses it
/// never reads); a Unix connection keeps the names it was made with (an unnamed
/// peer's is made up at accept, the system has none).
#[derive(Debug)]
pub struct StreamConn<S: ReadinessIo> {
    stream: S,
    names: S::Names,
}

impl StreamConn<TcpStream> {
    /// A connection whose addresses the system reports.
    pub(crate) fn asking_the_system(stream: TcpStream) -> Self {
        StreamConn { stream, names: () }
    }
}

impl StreamConn<UnixStream> {
    /// A connection that keeps the addresses it was made with.
    pub(crate) fn with_addrs(stream: UnixStream, local: Addr, peer: Addr) -> Self {
        StreamConn {
            stream,
            names: Box::new([local, peer]),
        }
    }
}

impl<S: ReadinessIo> StreamConn<S> {
    /// The underlying socket, for options chitchat does not cover.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The underlying socket, by value (to layer TLS on it, for instance).
    pub fn into_stream(self) -> S {
        self.stream
    }
}

impl<S: ReadinessIo> Connection for StreamConn<S> {
    fn local_addr(&self) -> io::Result<Addr> {
        self.stream.addr(&self.names, true)
    }

    fn peer_addr(&self) -> io::Result<Addr> {
        self.stream.addr(&self.names, false)
    }

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        poll_write(&self.stream, cx, buf)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn set_keepalive(&mut self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.stream.set_keepalive(keepalive)
    }
}

/// Writes some of `buf` once the socket is writable.
fn poll_write<S: ReadinessIo>(
    stream: &S,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}
