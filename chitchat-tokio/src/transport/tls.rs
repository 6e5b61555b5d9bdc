//! TLS over TCP with rustls: the same engine, with a handshake in front.
//!
//! A server's listener performs the handshakes itself (see `handshake`): each on a
//! task of its own, under a timeout (10 s by default), a cap on what it may read
//! (16 KiB) and a cap on how many run at once (1 024; past it new connections wait
//! in the kernel's backlog). Only established sessions reach the engine, so only
//! they count against `max_connections`, and a slow or hostile handshake never
//! occupies the accept loop or a connection slot. A failed one is reported as
//! `ConnError::Handshake` naming the peer, and its socket is closed at once.
//!
//! TLS keeps decrypted bytes inside the session, so readiness of the socket does not
//! tell whether a read would make progress: a TLS connection holds a read buffer
//! while idle, unlike a plain TCP one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Keepalive, Listener};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, crypto::ring, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsStream};

use super::handshake::{Established, HandshakeIo, HandshakeLimits, Handshakes};
use super::keepalive;
use super::tcp::{Tcp, TcpAcceptor};

/// Connections accepted in one call of `poll_accept` before it yields to the other
/// tasks of its worker: a flood of connections must not keep the accept loop busy
/// for a thousand handshake spawns in a row.
const ACCEPTS_PER_POLL: usize = 64;

/// The server side: binds TCP and speaks TLS with this configuration.
///
/// ```no_run
/// use chitchat_core::Addr;
/// use chitchat_tokio::{Server, TlsBinder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let tls = TlsBinder::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
/// let server = Server::builder("0.0.0.0:7443".parse::<Addr>()?)
///     .on_frame(|ctx, frame| {
///         let _ = ctx.reply(&frame);
///     })
///     .listen_on(&tls)
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// The handshake limits are on by default; each setter says why its default is what
/// it is, and how to turn it off:
///
/// ```no_run
/// # use std::time::Duration;
/// # use chitchat_tokio::TlsBinder;
/// # fn main() -> std::io::Result<()> {
/// # let (cert, key) = (Vec::new(), Vec::new());
/// let tls = TlsBinder::from_pem(&cert, &key)?
///     .handshake_timeout(Duration::from_secs(5))
///     .max_handshakes(256);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsBinder {
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
}

/// The client side: dials TCP and speaks TLS, checking the server's certificate
/// against `server_name`.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

/// A listening TLS socket, with the handshakes it is performing.
pub struct TlsListener {
    tcp: TcpAcceptor,
    handshakes: Handshakes,
}

/// One established TLS connection.
pub struct TlsConn {
    stream: Box<TlsStream<HandshakeIo<TcpStream>>>,
    local: Addr,
    peer: Addr,
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, err.to_string())
}

/// rustls with ring, named explicitly: no reliance on a process-wide default.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl TlsBinder {
    /// Default handshake timeout: a real client finishes in one or two round
    /// trips, well under a second even across the world; 10 s leaves room for a
    /// lossy mobile link, and is the order of nginx's and HAProxy's (`timeout
    /// client` is typically 10-60 s, nginx's `ssl_handshake_timeout` is 60 s).
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default cap on handshakes in progress at once: a burst of a thousand real
    /// clients connecting together handshakes without waiting, while a flood of
    /// connections that never finish holds at most this many, each at most
    /// [`DEFAULT_MAX_HANDSHAKE_LEN`](Self::DEFAULT_MAX_HANDSHAKE_LEN) deep: measured,
    /// 17 KiB for a handshake that sent 20 bytes, 36 KiB for one at its cap, so
    /// 36 MiB at worst in all, the order of the default partial-frame budget.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

    /// Default cap on bytes one handshake may read: one TLS record's worth
    /// (16 KiB). A ClientHello is under 2 KiB (post-quantum key shares included), a
    /// client certificate chain a few KiB; rustls alone would buffer up to 64 KiB.
    pub const DEFAULT_MAX_HANDSHAKE_LEN: usize = 16 * 1024;

    /// A server speaking TLS with `config`, with the default handshake limits.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsBinder {
            acceptor: TlsAcceptor::from(config),
            limits: HandshakeLimits {
                timeout: Some(Self::DEFAULT_HANDSHAKE_TIMEOUT),
                max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
                max_len: Self::DEFAULT_MAX_HANDSHAKE_LEN,
            },
        }
    }

    /// Closes a connection whose handshake is not done this long after it was
    /// accepted (default [`DEFAULT_HANDSHAKE_TIMEOUT`](Self::DEFAULT_HANDSHAKE_TIMEOUT));
    /// `None` waits forever, and then a peer that never finishes holds its
    /// handshake slot for good.
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.timeout = timeout.into();
        self
    }

    /// Handshakes in progress at once (default
    /// [`DEFAULT_MAX_HANDSHAKES`](Self::DEFAULT_MAX_HANDSHAKES); at least 1). Past
    /// it the listener stops accepting: new connections wait in the kernel's
    /// backlog, established ones are not touched. `usize::MAX` for no cap.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.limits.max_handshakes = max.max(1);
        self
    }

    /// Bytes one handshake may read from its peer before it fails (default
    /// [`DEFAULT_MAX_HANDSHAKE_LEN`](Self::DEFAULT_MAX_HANDSHAKE_LEN)): bounds what
    /// an unfinished handshake makes rustls buffer. Raise it for clients with long
    /// certificate chains; `usize::MAX` leaves only rustls' own 64 KiB bound.
    pub fn max_handshake_len(mut self, bytes: usize) -> Self {
        self.limits.max_len = bytes;
        self
    }

    /// A server presenting the PEM certificate chain and private key.
    ///
    /// # Errors
    /// `InvalidInput` when the PEM does not parse or the key does not fit the chain.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(invalid)?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(invalid)?;
        Ok(TlsBinder::new(Arc::new(config)))
    }
}

impl TlsConnector {
    /// A client speaking TLS with `config`, expecting the server to prove it is
    /// `server_name`.
    ///
    /// # Errors
    /// `InvalidInput` when `server_name` is neither a DNS name nor an IP address.
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> io::Result<Self> {
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name: ServerName::try_from(server_name.to_owned()).map_err(invalid)?,
        })
    }

    /// A client that trusts the PEM certificate authorities in `ca` only.
    ///
    /// # Errors
    /// `InvalidInput` when the PEM does not parse or `server_name` is invalid.
    pub fn from_ca_pem(ca: &[u8], server_name: &str) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots.add(cert.map_err(invalid)?).map_err(invalid)?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::new(Arc::new(config), server_name)
    }
}

impl Binder for TlsBinder {
    type Listener = TlsListener;

    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<TlsListener> {
        Ok(TlsListener {
            tcp: Tcp.bind(addr, options)?,
            handshakes: Handshakes::new(self.acceptor.clone(), self.limits),
        })
    }
}

impl Listener for TlsListener {
    type Conn = TlsConn;

    /// Starts the handshakes of newly accepted connections while there is room,
    /// then hands out one that finished.
    ///
    /// # Errors
    /// A [`PeerFailed`](chitchat_core::PeerFailed) for a handshake that failed, timed
    /// out or passed its cap; otherwise as TCP's `accept`.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TlsConn, Addr)>> {
        let mut accepted = 0;
        while self.handshakes.has_room() {
            if accepted == ACCEPTS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            match self.tcp.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => {
                    let local = tcp.local_addr()?;
                    self.handshakes.start(tcp.into_stream(), local, peer);
                    accepted += 1;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => break,
            }
        }
        match self.handshakes.poll_finished(cx) {
            Poll::Ready(Ok(Established {
                stream,
                local,
                peer,
            })) => {
                let conn = TlsConn {
                    stream: Box::new(TlsStream::Server(stream)),
                    local,
                    peer,
                };
                Poll::Ready(Ok((conn, peer)))
            }
            Poll::Ready(Err(failed)) => Poll::Ready(Err(failed.into_io_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.tcp.local_addr()
    }
}

impl Connector for TlsConnector {
    type Conn = TlsConn;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<TlsConn>> + Send {
        let connector = self.connector.clone();
        let name = self.server_name.clone();
        let tcp = Tcp.connect(addr);
        async move {
            let tcp = tcp.await?;
            let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
            let io = HandshakeIo::unlimited(tcp.into_stream());
            let stream = connector.connect(name, io).await?;
            Ok(TlsConn {
                stream: Box::new(TlsStream::Client(stream)),
                local,
                peer,
            })
        }
    }
}

impl TlsConn {
    fn stream(&mut self) -> Pin<&mut TlsStream<HandshakeIo<TcpStream>>> {
        Pin::new(self.stream.as_mut())
    }

    /// The TCP stream under the TLS session, for socket options. Always `Some`:
    /// every connection handed out is established.
    pub fn tcp(&self) -> Option<&TcpStream> {
        Some(self.stream.get_ref().0.get_ref())
    }
}

impl Connection for TlsConn {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<Addr> {
        Ok(self.peer)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(self.stream(), cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn set_keepalive(&mut self, keepalive: Option<Keepalive>) -> io::Result<()> {
        keepalive::apply(self.stream.get_ref().0.get_ref(), keepalive)
    }
}
