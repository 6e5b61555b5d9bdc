//! The TCP transport: chitchat-core's transport traits on tokio's TCP types.
//!
//! The listener is bound through `TcpSocket` so that the backlog is ours to set
//! (tokio's `TcpListener::bind` fixes it at 128) and `SO_REUSEADDR` lets a server
//! rebind its port right after it was cut, while old connections sit in TIME_WAIT.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};

use chitchat_core::{Addr, BindOptions, Binder, Connector, Listener};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::readiness::StreamConn;

/// TCP over tokio: a [`Binder`] for servers and a [`Connector`] for clients.
///
/// Connections have `TCP_NODELAY` set: chitchat coalesces replies itself, so Nagle's
/// algorithm would only add latency. The engine sets keepalive on each as its
/// configuration says (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`; on by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
}

/// One TCP connection.
pub type TcpConn = StreamConn<TcpStream>;

impl StreamConn<TcpStream> {
    /// Wraps a connected tokio stream (sets `TCP_NODELAY`).
    ///
    /// # Errors
    /// When the socket is no longer connected.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        // Failing to set NODELAY costs latency, not correctness.
        let _ = stream.set_nodelay(true);
        // Fails now rather than at the first use of the address.
        stream.peer_addr()?;
        Ok(StreamConn::asking_the_system(stream))
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
        async move { TcpConn::new(TcpStream::connect(addr?).await?) }
    }
}

impl Listener for TcpAcceptor {
    type Conn = TcpConn;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpConn, Addr)>> {
        let (stream, peer) = ready!(self.listener.poll_accept(cx))?;
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((StreamConn::asking_the_system(stream), peer.into())))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.listener.local_addr().map(Addr::from)
    }
}
