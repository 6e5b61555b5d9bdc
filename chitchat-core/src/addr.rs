//! The address of an endpoint, whatever the transport.
//!
//! Every error, event and context names an [`Addr`]: an IP socket address, or a
//! Unix domain socket address. It stays `Copy` and small (a Unix name is stored
//! inline, up to [`MAX_UNIX_NAME_LEN`] bytes), so events and errors carry it without
//! allocating and `Result`s that hold it stay cheap to return.

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
///
/// let unix: Addr = "unix:/tmp/app.sock".parse().unwrap();
/// assert_eq!(unix.as_unix().unwrap().path(), Some("/tmp/app.sock"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Addr {
    /// An IPv4 or IPv6 socket address (TCP, and the in-memory network).
    Inet(SocketAddr),
    /// A Unix domain socket address.
    Unix(UnixAddr),
}

impl Addr {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(addr) => Some(*addr),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix domain socket address, if this is one.
    pub fn as_unix(&self) -> Option<&UnixAddr> {
        match self {
            Addr::Unix(addr) => Some(addr),
            Addr::Inet(_) => None,
        }
    }
}

/// Longest Unix socket name chitchat stores. The kernel allows 107 bytes; 86 keeps
/// an [`Addr`] at 96 bytes and every error that names one under 128 (the size past
/// which returning a `Result` starts to cost), and covers the paths services use.
pub const MAX_UNIX_NAME_LEN: usize = 86;

/// A Unix domain socket address: a filesystem path, a Linux abstract name, or an
/// unnamed peer (most clients never bind a name) told apart by a number its
/// listener gave it, so that every connection has an address of its own.
///
/// Names are limited to [`MAX_UNIX_NAME_LEN`] bytes of printable ASCII (`!` to `~`,
/// no spaces), so that every address prints as one plain token, as protocols that
/// carry addresses as text (the heartbeat's) expect.
///
/// ```
/// use chitchat_core::UnixAddr;
///
/// let path = UnixAddr::path_name("/run/app.sock").unwrap();
/// assert_eq!(path.to_string(), "unix:/run/app.sock");
/// assert_eq!(UnixAddr::abstract_name("app").unwrap().to_string(), "unix:@app");
/// assert_eq!(UnixAddr::unnamed(7).to_string(), "unix:unnamed#7");
/// assert!(UnixAddr::path_name("/has space").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixAddr {
    kind: UnixKind,
    /// The listener's number for an unnamed peer; 0 for names.
    number: u32,
    len: u8,
    bytes: [u8; MAX_UNIX_NAME_LEN],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum UnixKind {
    Path,
    Abstract,
    Unnamed,
}

impl UnixAddr {
    fn named(kind: UnixKind, name: &str) -> Result<Self, AddrParseError> {
        let bad = || AddrParseError {
            text: name.to_owned(),
        };
        if name.is_empty()
            || name.len() > MAX_UNIX_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad());
        }
        let mut bytes = [0; MAX_UNIX_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(UnixAddr {
            kind,
            number: 0,
            len: name.len() as u8,
            bytes,
        })
    }

    /// A filesystem path.
    ///
    /// # Errors
    /// When the path is empty, too long, or not printable ASCII without spaces.
    pub fn path_name(path: &str) -> Result<Self, AddrParseError> {
        UnixAddr::named(UnixKind::Path, path)
    }

    /// A Linux abstract-namespace name (no file; printed with a leading `@`).
    ///
    /// # Errors
    /// As [`path_name`](Self::path_name).
    pub fn abstract_name(name: &str) -> Result<Self, AddrParseError> {
        UnixAddr::named(UnixKind::Abstract, name)
    }

    /// An unnamed peer, numbered by its listener (numbers wrap after 2³²).
    pub fn unnamed(number: u32) -> Self {
        UnixAddr {
            kind: UnixKind::Unnamed,
            number,
            len: 0,
            bytes: [0; MAX_UNIX_NAME_LEN],
        }
    }

    fn name(&self) -> &str {
        // Only ever filled from a `&str` cut at its own length.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// The filesystem path, if the address is one.
    pub fn path(&self) -> Option<&str> {
        (self.kind == UnixKind::Path).then(|| self.name())
    }

    /// The abstract name (without the `@`), if the address is one.
    pub fn abstract_namespace(&self) -> Option<&str> {
        (self.kind == UnixKind::Abstract).then(|| self.name())
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            UnixKind::Path => write!(f, "unix:{}", self.name()),
            UnixKind::Abstract => write!(f, "unix:@{}", self.name()),
            UnixKind::Unnamed => write!(f, "unix:unnamed#{}", self.number),
        }
    }
}

impl fmt::Debug for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixAddr({self})")
    }
}

impl From<UnixAddr> for Addr {
    fn from(addr: UnixAddr) -> Self {
        Addr::Unix(addr)
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
            Addr::Unix(addr) => addr.fmt(f),
        }
    }
}

/// The text was not an address chitchat understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {text:?}: expected IP:PORT (127.0.0.1:7878, [::1]:7878), unix:PATH or unix:@NAME")]
pub struct AddrParseError {
    /// The text that failed to parse.
    pub text: String,
}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || AddrParseError {
            text: text.to_owned(),
        };
        if let Some(rest) = text.strip_prefix("unix:") {
            let unix = match rest.strip_prefix('@') {
                Some(name) => UnixAddr::abstract_name(name),
                None => UnixAddr::path_name(rest),
            };
            return unix.map(Addr::Unix).map_err(|_| bad());
        }
        text.parse::<SocketAddr>()
            .map(Addr::Inet)
            .map_err(|_| bad())
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
    fn parses_and_prints_unix_paths_and_abstract_names() {
        for text in ["unix:/tmp/a.sock", "unix:@chitchat-1", "unix:relative/p"] {
            assert_eq!(text.parse::<Addr>().unwrap().to_string(), text);
        }
        let long = format!("unix:/{}", "x".repeat(MAX_UNIX_NAME_LEN));
        for bad in [
            "unix:",
            "unix:@",
            "unix:/a b",
            "unix:/caf\u{e9}",
            long.as_str(),
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_stay_small() {
        assert!(std::mem::size_of::<Addr>() <= 96);
        assert!(std::mem::size_of::<crate::WriteError>() <= 128);
        assert!(std::mem::size_of::<crate::ConnError>() <= 128);
    }

    #[test]
    fn unnamed_peers_differ_by_number() {
        assert_ne!(UnixAddr::unnamed(1), UnixAddr::unnamed(2));
        assert_eq!(UnixAddr::unnamed(3).path(), None);
    }

    #[test]
    fn rejects_text_that_is_not_ip_and_port() {
        let err = "localhost".parse::<Addr>().unwrap_err();
        assert_eq!(err.text, "localhost");
    }
}
