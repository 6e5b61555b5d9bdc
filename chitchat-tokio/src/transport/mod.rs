//! The transports chitchat-tokio ships, each implementing chitchat-core's `Binder`,
//! `Listener`, `Connector` and `Connection` traits on tokio's sockets. The engine
//! (`server`, `client`, `conn`) never names one of them but the default, TCP.
//!
//! - `readiness`: [`StreamConn`], a TCP or Unix socket as a connection.
//! - `keepalive`: TCP keepalive as a socket option, for TCP and TLS.
//! - `tcp`: [`Tcp`], TCP with a configurable backlog and `TCP_NODELAY`.
//! - `unix`: [`Unix`], Unix domain sockets (paths and Linux abstract names).
//! - `tls` (feature `tls`): TLS over TCP with rustls.
//! - `handshake` (feature `tls`): the TLS listener's handshakes, each under a
//!   timeout and a byte cap, a bounded number at once.

#[cfg(feature = "tls")]
mod handshake;
mod keepalive;
mod readiness;
mod tcp;
#[cfg(feature = "tls")]
mod tls;
mod unix;

pub use readiness::{ReadinessIo, StreamConn};
pub use tcp::{Tcp, TcpAcceptor, TcpConn};
#[cfg(feature = "tls")]
pub use tls::{TlsBinder, TlsConn, TlsConnector, TlsListener};
pub use unix::{Unix, UnixAcceptor, UnixConn};
