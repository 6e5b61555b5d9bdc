//! A host of the in-memory network, [`Host`]: one IP address, the binder of its
//! listeners and the connector of its connections (chitchat's [`Binder`] and
//! [`Connector`]).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use chitchat_core::{Addr, BindOptions, Binder, Connector};

use crate::conn::{self, SimConn};
use crate::listener::SimListener;
use crate::trace::TraceEvent;
use crate::world::World;

/// A host of a [`Network`](crate::Network): one IP address that binds listeners and dials
/// connections, implementing chitchat's [`Binder`] and [`Connector`].
///
/// Clones are the same host. Connections get ephemeral source ports like TCP's
/// (49152 and up), so the addresses code under test sees look real; as with TCP,
/// connections to different destinations may share a source port.
#[derive(Clone)]
pub struct Host {
    world: World,
    ip: IpAddr,
}

impl Host {
    pub(crate) fn new(world: World, ip: IpAddr) -> Self {
        Host { world, ip }
    }

    /// The host's IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("ip", &self.ip).finish()
    }
}

impl From<&Host> for IpAddr {
    fn from(host: &Host) -> IpAddr {
        host.ip
    }
}

/// The IP socket address in `addr`, or the error a real socket gives for a foreign
/// address family.
fn inet(addr: &Addr) -> io::Result<SocketAddr> {
    addr.as_inet().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr}: the in-memory network has IP addresses only"),
        )
    })
}

impl Binder for Host {
    type Listener = SimListener;

    /// Listens on `addr`, which must carry the host's IP or the unspecified address
    /// (`0.0.0.0`, `[::]`); port 0 picks a free ephemeral port.
    ///
    /// # Errors
    /// `AddrNotAvailable` for another IP, `AddrInUse` when a listener or a connection
    /// of this host has the port.
    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<SimListener> {
        let addr = inet(addr)?;
        if addr.ip() != self.ip && !addr.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("cannot bind {addr}: host {} has no such address", self.ip),
            ));
        }
        let (id, bound) = self.world.with(|st| {
            let port = match addr.port() {
                0 => st.free_port(self.ip).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("cannot bind {addr}: no ephemeral port left"),
                    )
                })?,
                port if st.port_in_use(self.ip, port) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("cannot bind {addr}: address in use"),
                    ))
                }
                port => port,
            };
            let bound = SocketAddr::new(addr.ip(), port);
            let limit = usize::try_from(options.backlog).unwrap_or(usize::MAX);
            let id = st.add_listener(self.ip, bound, limit);
            st.record(TraceEvent::Bind { addr: bound });
            st.changed();
            Ok::<_, io::Error>((id, bound))
        })?;
        Ok(SimListener::new(self.world.clone(), self.ip, id, bound))
    }
}

impl Connector for Host {
    type Conn = SimConn;

    /// Dials `addr` from this host, from a fresh ephemeral port. Takes one round trip
    /// of the links (their latency and jitter) to succeed or be refused.
    ///
    /// # Errors
    /// `ConnectionRefused` when nobody listens on `addr` (or no host has its IP, or
    /// the host refuses connections); `ConnectionReset` when this host is killed
    /// meanwhile. Across a partition it never completes: apply a timeout.
    async fn connect(&self, addr: &Addr) -> io::Result<SimConn> {
        let to = inet(addr)?;
        conn::connect(&self.world, self.ip, to).await
    }
}
