//! What the tools need to open many loopback connections: the open-file limit
//! raised as far as the process may, and dialing from more than one loopback source
//! address (a server limits connections per source IP, and each source address
//! has only its own range of ephemeral ports), and a loopback address per node for
//! benches that run many.

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

/// The `i`-th of the numbered loopback hosts, `127.1.x.y` with `x = i / 254` and
/// `y = i % 254 + 1` (into 127.2 and on past 65 024): one address per node, each
/// with its own ports, clear of 127.0.0.1's.
pub fn numbered_loopback(i: usize) -> Ipv4Addr {
    let x = i / 254;
    let [_, _, hi, lo] = u32::try_from(x).unwrap_or(u32::MAX).to_be_bytes();
    Ipv4Addr::new(127, hi.saturating_add(1), lo, (i % 254 + 1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_loopback_hosts_are_distinct() {
        assert_eq!(numbered_loopback(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(numbered_loopback(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(numbered_loopback(254), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(numbered_loopback(254 * 256), Ipv4Addr::new(127, 2, 0, 1));
        let ips: std::collections::HashSet<_> = (0..70_000).map(numbered_loopback).collect();
        assert_eq!(ips.len(), 70_000);
        assert!(ips.iter().all(|ip| ip.is_loopback() && ip.octets()[3] != 0));
    }
}
