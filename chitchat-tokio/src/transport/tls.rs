//! TLS over TCP with rustls: the same engine, with a handshake in front.
//!
//! A server's listener hands out connections before their handshake: the engine's
//! first read or write on one drives the handshake, so a slow or hostile handshake
//! occupies that connection's task only, never the accept loop. A failed handshake
//! is an i/o error naming the peer, like any other.
//!
//! TLS keeps decrypted bytes inside the session, so readiness of the socket does not
//! tell whether a read would make progress: a TLS connection holds a read buffer
//! while idle, unlike a plain TCP one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Listener};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, crypto::ring, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{Accept, TlsAcceptor, TlsConnector, TlsStream};

use super::tcp::{Tcp, TcpAcceptor};

/// The server side: binds TCP and speaks TLS with this configuration.
///
/// ```no_run
/// use chitchat_core::Addr;
/// use chitchat_tokio::{Server, TlsServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let tls = TlsServer::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
/// let server = Server::builder("0.0.0.0:7443".parse::<Addr>()?)
///     .on_frame(|ctx, frame| {
///         let _ = ctx.reply(&frame);
///     })
///     .listen_on(&tls)
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

/// The client side: dials TCP and speaks TLS, checking the server's certificate
/// against `server_name`.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// A listening TLS socket.
pub struct TlsListener {
    tcp: TcpAcceptor,
    acceptor: TlsAcceptor,
}

/// One TLS connection, handshaking or established.
pub struct TlsConn {
    state: State,
    local: Addr,
    peer: Addr,
}

enum State {
    Handshake(Box<Accept<TcpStream>>),
    Ready(Box<TlsStream<TcpStream>>),
    Failed,
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, err.to_string())
}

/// rustls with ring, named explicitly: no reliance on a process-wide default.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl TlsServer {
    /// A server speaking TLS with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsServer {
            acceptor: TlsAcceptor::from(config),
        }
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
        Ok(TlsServer::new(Arc::new(config)))
    }
}

impl TlsClient {
    /// A client speaking TLS with `config`, expecting the server to prove it is
    /// `server_name`.
    ///
    /// # Errors
    /// `InvalidInput` when `server_name` is neither a DNS name nor an IP address.
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> io::Result<Self> {
        Ok(TlsClient {
            connector: TlsConnector::from(config),
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
        TlsClient::new(Arc::new(config), server_name)
    }
}

impl Binder for TlsServer {
    type Listener = TlsListener;

    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<TlsListener> {
        Ok(TlsListener {
            tcp: Tcp.bind(addr, options)?,
            acceptor: self.acceptor.clone(),
        })
    }
}

impl Listener for TlsListener {
    type Conn = TlsConn;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TlsConn, Addr)>> {
        let (tcp, peer) = ready!(self.tcp.poll_accept(cx))?;
        let local = tcp.local_addr()?;
        let conn = TlsConn {
            state: State::Handshake(Box::new(self.acceptor.accept(tcp.into_stream()))),
            local,
            peer,
        };
        Poll::Ready(Ok((conn, peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.tcp.local_addr()
    }
}

impl Connector for TlsClient {
    type Conn = TlsConn;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<TlsConn>> + Send {
        let connector = self.connector.clone();
        let name = self.server_name.clone();
        let tcp = Tcp.connect(addr);
        async move {
            let tcp = tcp.await?;
            let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
            let stream = connector.connect(name, tcp.into_stream()).await?;
            Ok(TlsConn {
                state: State::Ready(Box::new(TlsStream::Client(stream))),
                local,
                peer,
            })
        }
    }
}

impl TlsConn {
    /// The TLS stream once the handshake is done; drives the handshake until then.
    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Pin<&mut TlsStream<TcpStream>>>> {
        if let State::Handshake(accept) = &mut self.state {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(stream) => self.state = State::Ready(Box::new(TlsStream::Server(stream))),
                Err(err) => {
                    self.state = State::Failed;
                    return Poll::Ready(Err(err));
                }
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(Pin::new(stream.as_mut()))),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }

    /// The TCP stream under the TLS session, for socket options.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.state {
            State::Ready(stream) => Some(stream.get_ref().0),
            _ => None,
        }
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
        let stream = ready!(self.poll_stream(cx))?;
        tokio_util::io::poll_read_buf(stream, cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_stream(cx))?.poll_write(cx, buf)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_stream(cx))?.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_stream(cx))?.poll_shutdown(cx)
    }
}
