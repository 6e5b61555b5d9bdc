//! The TCP transport: chitchat-core's transport traits on tokio's TCP types.
//!
//! The listener is bound through `TcpSocket` so that the backlog is ours to set
//! (tokio's `TcpListener::bind` fixes it at 128) and `SO_REUSEADDR` lets a server
//! rebind its port right after it was cut, while old connections sit in TIME_WAIT.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Listener};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::readiness;

/// TCP over tokio: a [`Binder`] for servers and a [`Connector`] for clients.
///
/// Connections have `TCP_NODELAY` set: chitchat coalesces replies itself, so Nagle's
/// algorithm would only add latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
}

/// One TCP connection.
#[derive(Debug)]
pub struct TcpConn {
    stream: TcpStream,
}

impl TcpConn {
    /// Wraps a connected tokio stream (sets `TCP_NODELAY`).
    pub fn new(stream: TcpStream) -> Self {
        // Failing to set NODELAY costs latency, not correctness.
        let _ = stream.set_nodelay(true);
        TcpConn { stream }
    }

    /// The underlying stream, for socket options chitchat does not cover.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The underlying stream, by value (to layer TLS on it, for instance).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

fn inet(addr: &Addr) -> io::Result<SocketAddr> {
    addr.as_inet().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} is not an IP address"),
        )
    })
}

impl Binder for Tcp {
    type Listener = TcpAcceptor;

    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<TcpAcceptor> {
        let addr = inet(addr)?;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(options.backlog)?;
        Ok(TcpAcceptor { listener })
    }
}

impl Connector for Tcp {
    type Conn = TcpConn;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<TcpConn>> + Send {
        let addr = inet(addr);
        async move { Ok(TcpConn::new(TcpStream::connect(addr?).await?)) }
    }
}

impl Listener for TcpAcceptor {
    type Conn = TcpConn;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpConn, Addr)>> {
        let (stream, peer) = ready!(self.listener.poll_accept(cx))?;
        Poll::Ready(Ok((TcpConn::new(stream), peer.into())))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.listener.local_addr().map(Addr::from)
    }
}

impl Connection for TcpConn {
    fn local_addr(&self) -> io::Result<Addr> {
        self.stream.local_addr().map(Addr::from)
    }

    fn peer_addr(&self) -> io::Result<Addr> {
        self.stream.peer_addr().map(Addr::from)
    }

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        readiness::poll_read(&self.stream, cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        readiness::poll_write(&self.stream, cx, buf)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.stream), cx)
    }
}
