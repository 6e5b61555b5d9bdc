//! [`Target`]: where a server listens or a client connects, given as an address or as
//! `host:port` text to look up, so that `Server::builder("127.0.0.1:7878")` and
//! `Client::builder("example.com:7878")` need no parsing at the call site.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::addr::{Addr, UnixAddr};

/// An address, or a `host:port` name that the backend looks up when it binds or
/// dials (an error then names the text).
///
/// Text that parses as an [`Addr`] (`127.0.0.1:7878`, `[::1]:7878`, `unix:/path`)
/// is that address; any other text is a name.
///
/// ```
/// use chitchat_core::{Addr, Target};
///
/// let ip = Target::from("127.0.0.1:7878");
/// assert_eq!(ip.addr(), Some("127.0.0.1:7878".parse::<Addr>().unwrap()));
/// let name = Target::from("localhost:7878");
/// assert_eq!(name.addr(), None);
/// assert_eq!(name.to_string(), "localhost:7878");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target(Inner);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Inner {
    Addr(Addr),
    Name(String),
}

impl Target {
    /// The address, if this target is one (not a name to look up).
    pub fn addr(&self) -> Option<Addr> {
        match &self.0 {
            Inner::Addr(addr) => Some(*addr),
            Inner::Name(_) => None,
        }
    }

    /// The `host:port` text to look up, if this target is a name.
    pub fn name(&self) -> Option<&str> {
        match &self.0 {
            Inner::Name(name) => Some(name),
            Inner::Addr(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Addr(addr) => addr.fmt(f),
            Inner::Name(name) => f.write_str(name),
        }
    }
}

impl From<Addr> for Target {
    fn from(addr: Addr) -> Self {
        Target(Inner::Addr(addr))
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Addr::from(addr).into()
    }
}

impl From<UnixAddr> for Target {
    fn from(addr: UnixAddr) -> Self {
        Addr::from(addr).into()
    }
}

impl<I: Into<IpAddr>> From<(I, u16)> for Target {
    fn from((ip, port): (I, u16)) -> Self {
        SocketAddr::new(ip.into(), port).into()
    }
}

impl From<&str> for Target {
    fn from(text: &str) -> Self {
        match text.parse::<Addr>() {
            Ok(addr) => addr.into(),
            Err(_) => Target(Inner::Name(text.to_owned())),
        }
    }
}

impl From<String> for Target {
    fn from(text: String) -> Self {
        match text.parse::<Addr>() {
            Ok(addr) => addr.into(),
            Err(_) => Target(Inner::Name(text)),
        }
    }
}

impl From<&String> for Target {
    fn from(text: &String) -> Self {
        text.as_str().into()
    }
}

impl From<&Addr> for Target {
    fn from(addr: &Addr) -> Self {
        (*addr).into()
    }
}
