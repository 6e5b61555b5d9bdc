//! What the tools need to open many loopback connections: the open-file limit
//! raised as far as the process may, and dialing from more than one loopback source
//! address (a server limits connections per source IP, and each source address
//! has only its own range of ephemeral ports).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Raises this process's open-file soft limit to its hard limit (children inherit
/// it); returns the new limit. Raising the hard limit itself needs privileges the
/// tools do not ask for.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_fd_limit() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one `rlimit` we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Dials `addr`. To an IPv4 loopback address, from loopback source address number
/// `source` (`0` is 127.0.0.1, `1` is 127.0.0.2, …); to any other address, from
/// wherever the system picks.
///
/// # Errors
/// The connect's error, or `AddrNotAvailable` past the end of 127.0.0.0/8.
pub async fn connect_from(addr: SocketAddr, source: usize) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return TcpStream::connect(addr).await;
    };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(addr).await;
    }
    let ip = u32::try_from(source)
        .ok()
        .and_then(|source| u32::from(Ipv4Addr::LOCALHOST).checked_add(source))
        .map(Ipv4Addr::from)
        .filter(|ip| ip.is_loopback() && ip.octets()[3] != 255)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("source address number {source} is past 127.255.255.254"),
            )
        })?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.connect(addr).await
}
