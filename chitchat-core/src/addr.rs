//! The address of an endpoint, whatever the transport.
//!
//! Every error, event and context names an [`Addr`]. It is an enum rather than
//! `SocketAddr` so that transports whose endpoints are not IP sockets (Unix domain
//! sockets) can join later without changing any signature.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where a listener is bound or a peer is connected from.
///
/// ```
/// use chitchat_core::Addr;
///
/// let addr: Addr = "127.0.0.1:7878".parse().unwrap();
/// assert_eq!(addr.to_string(), "127.0.0.1:7878");
/// assert_eq!(addr.as_inet().unwrap().port(), 7878);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Addr {
    /// An IPv4 or IPv6 socket address (TCP, and the in-memory network).
    Inet(SocketAddr),
}

impl Addr {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(addr) => Some(*addr),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        Addr::Inet(addr)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.as_inet() == Some(*other)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(addr) => addr.fmt(f),
        }
    }
}

/// The text was not an address chitchat understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {text:?}: expected IP:PORT, e.g. 127.0.0.1:7878 or [::1]:7878")]
pub struct AddrParseError {
    /// The text that failed to parse.
    pub text: String,
}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<SocketAddr>()
            .map(Addr::Inet)
            .map_err(|_| AddrParseError {
                text: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_ipv4_and_ipv6() {
        for text in ["127.0.0.1:1", "[::1]:65535"] {
            assert_eq!(text.parse::<Addr>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_text_that_is_not_ip_and_port() {
        let err = "localhost".parse::<Addr>().unwrap_err();
        assert_eq!(err.text, "localhost");
    }
}
