//! TCP keepalive as a socket option: what `Connection::set_keepalive` does for every
//! transport over TCP (plain and TLS).

use std::io;

use chitchat_core::Keepalive;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Applies `keepalive` to a TCP socket: probes as it says, or none.
pub(super) fn apply(stream: &TcpStream, keepalive: Option<Keepalive>) -> io::Result<()> {
    let socket = SockRef::from(stream);
    let Some(keepalive) = keepalive else {
        return socket.set_keepalive(false);
    };
    let params = TcpKeepalive::new().with_time(keepalive.idle);
    // Where the interval and count can be set; elsewhere the system's stay.
    #[cfg(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "illumos",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
    ))]
    let params = params
        .with_interval(keepalive.interval)
        .with_retries(keepalive.retries);
    socket.set_tcp_keepalive(&params)
}
