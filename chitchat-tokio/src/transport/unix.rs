//! The Unix domain socket transport: the same engine on a filesystem path or a
//! Linux abstract name.
//!
//! Clients of this transport bind an abstract name of their own before connecting,
//! so that the server sees a distinct, stable address for each of them (the one
//! they see as their local address). Peers that connect unnamed (`nc -U`, most
//! other programs) are numbered by the listener: `unix:unnamed#7`.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use chitchat_core::{Addr, BindOptions, Binder, Connector, Listener, UnixAddr};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener, UnixStream};

use super::readiness::StreamConn;

/// How long a client waits before retrying a connect that found the listener's
/// backlog full (Unix sockets fail at once where TCP would wait for a SYN retry).
const BACKLOG_FULL_RETRY: Duration = Duration::from_millis(10);

/// Unix domain sockets over tokio: a [`Binder`] for servers and a [`Connector`]
/// for clients. Addresses are `unix:/path` or `unix:@abstract-name`.
///
/// A server bound to a path removes the socket file when it stops listening; it
/// does not remove a file left by someone else (binding then fails with
/// `AddrInUse`).
///
/// ```
/// use chitchat_core::Addr;
/// use chitchat_tokio::{Server, Unix};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let path = std::env::temp_dir().join(format!("doc-{}.sock", std::process::id()));
/// let addr: Addr = format!("unix:{}", path.display()).parse()?;
/// let server = Server::builder(addr).listen_on(&Unix).await?;
/// assert_eq!(server.local_addr(), addr);
/// server.cut().await;
/// assert!(!path.exists());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Unix;

/// A listening Unix socket.
#[derive(Debug)]
pub struct UnixAcceptor {
    listener: UnixListener,
    addr: UnixAddr,
    /// Numbers unnamed peers so each has an address of its own.
    unnamed: u32,
}

/// One Unix socket connection.
pub type UnixConn = StreamConn<UnixStream>;

fn unix_addr(addr: &Addr) -> io::Result<UnixAddr> {
    addr.as_unix().copied().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} is not a Unix socket address"),
        )
    })
}

fn sock_addr(addr: &UnixAddr) -> io::Result<SockAddr> {
    match (addr.path(), addr.abstract_namespace()) {
        (Some(path), _) => SockAddr::unix(path),
        (_, Some(name)) => SockAddr::unix(format!("\0{name}")),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot bind or connect to {addr}"),
        )),
    }
}

/// What a socket address is, as chitchat names it; `None` for unnamed.
fn name_of(addr: &tokio::net::unix::SocketAddr) -> Option<UnixAddr> {
    if let Some(path) = addr.as_pathname() {
        return UnixAddr::path_name(path.to_str()?).ok();
    }
    let name = std::str::from_utf8(addr.as_abstract_name()?).ok()?;
    UnixAddr::abstract_name(name).ok()
}

impl Binder for Unix {
    type Listener = UnixAcceptor;

    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<UnixAcceptor> {
        let addr = unix_addr(addr)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&sock_addr(&addr)?)?;
        socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
        socket.set_nonblocking(true)?;
        let listener = UnixListener::from_std(socket.into())?;
        Ok(UnixAcceptor {
            listener,
            addr,
            unnamed: 0,
        })
    }
}

/// Gives each client socket of this process a distinct abstract name.
fn client_name() -> io::Result<UnixAddr> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    UnixAddr::abstract_name(&format!("chitchat-{}-{n}", std::process::id()))
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

impl Connector for Unix {
    type Conn = UnixConn;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<UnixConn>> + Send {
        let target = unix_addr(addr).and_then(|a| Ok((a, sock_addr(&a)?)));
        async move {
            let (peer, target) = target?;
            let local = client_name()?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&sock_addr(&local)?)?;
            socket.set_nonblocking(true)?;
            loop {
                match socket.connect(&target) {
                    Ok(()) => break,
                    // The backlog is full: wait like TCP would, until the caller's
                    // timeout decides.
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(BACKLOG_FULL_RETRY).await;
                    }
                    // No socket file: nobody listens there.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Err(io::ErrorKind::ConnectionRefused.into());
                    }
                    Err(err) => return Err(err),
                }
            }
            let stream = UnixStream::from_std(socket.into())?;
            Ok(StreamConn::with_addrs(stream, local.into(), peer.into()))
        }
    }
}

impl Listener for UnixAcceptor {
    type Conn = UnixConn;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixConn, Addr)>> {
        let (stream, _) = ready!(self.listener.poll_accept(cx))?;
        // The address `accept` reports is unnamed even when the peer bound a name;
        // `getpeername` has it.
        let name = stream.peer_addr().ok().as_ref().and_then(name_of);
        let peer = Addr::Unix(name.unwrap_or_else(|| {
            self.unnamed = self.unnamed.wrapping_add(1);
            UnixAddr::unnamed(self.unnamed)
        }));
        let conn = StreamConn::with_addrs(stream, self.addr.into(), peer);
        Poll::Ready(Ok((conn, peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.addr.into())
    }
}

impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        // Our own socket file only: the listener's address says it is ours.
        if let Some(path) = self.addr.path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat_core::Connection;
    use std::future::poll_fn;

    #[tokio::test]
    async fn the_server_sees_the_clients_own_name() {
        let addr: Addr = format!("unix:@chitchat-unit-{}", std::process::id())
            .parse()
            .unwrap();
        let mut listener = Unix.bind(&addr, &BindOptions::default()).unwrap();
        let client = Unix.connect(&addr).await.unwrap();
        let (accepted, peer) = poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(accepted.peer_addr().unwrap(), peer);
        assert_eq!(client.peer_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn unnamed_peers_get_distinct_numbers_and_the_file_goes_with_the_listener() {
        let path = std::env::temp_dir().join(format!("chitchat-unit-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let addr: Addr = format!("unix:{}", path.display()).parse().unwrap();
        let mut listener = Unix.bind(&addr, &BindOptions::default()).unwrap();
        let _a = UnixStream::connect(&path).await.unwrap();
        let _b = UnixStream::connect(&path).await.unwrap();
        let (_, first) = poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
        let (_, second) = poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
        assert_eq!(first.to_string(), "unix:unnamed#1");
        assert_eq!(second.to_string(), "unix:unnamed#2");
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists(), "the listener removes its socket file");
    }
}
