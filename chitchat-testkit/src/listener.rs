//! A bound in-memory listener, [`SimListener`], implementing chitchat's
//! [`Listener`]: it hands out the connections the connect handshake queued in its
//! backlog.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use chitchat_core::{Addr, Listener};

use crate::conn::SimConn;
use crate::trace::TraceEvent;
use crate::world::World;

/// A listener bound on a [`Host`](crate::Host) of the in-memory network.
///
/// Connections are established (the connect returns) before they are accepted, up
/// to the bind's backlog; past it, connects wait, as with a full SYN queue. Dropping
/// the listener stops listening and resets the connections it had not accepted.
/// After its host is [killed](crate::Network::kill) it accepts nothing, ever, and
/// never wakes: a dead process does not report.
pub struct SimListener {
    world: World,
    host: IpAddr,
    /// Tells this listener from a later one on the same port.
    id: u64,
    addr: SocketAddr,
}

impl SimListener {
    pub(crate) fn new(world: World, host: IpAddr, id: u64, addr: SocketAddr) -> Self {
        SimListener {
            world,
            host,
            id,
            addr,
        }
    }

    /// The next connection and its peer's address, like tokio's
    /// `TcpListener::accept`.
    ///
    /// # Errors
    /// None today; the signature is TCP's.
    pub async fn accept(&mut self) -> io::Result<(SimConn, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx))
            .await
            .map(|(conn, peer)| (conn, peer.as_inet().expect("in-memory addresses are IP")))
    }
}

impl Listener for SimListener {
    type Conn = SimConn;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(SimConn, Addr)>> {
        self.world.with(|st| {
            let listener = st
                .hosts
                .get_mut(&self.host)
                .and_then(|host| host.listeners.get_mut(&self.addr.port()))
                .filter(|listener| listener.id == self.id);
            let Some(listener) = listener else {
                // Killed: stay silent forever.
                return Poll::Pending;
            };
            let Some(id) = listener.backlog.pop_front() else {
                if !listener
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    listener.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            };
            let conn = st.conn_mut(id);
            let (client, server) = (conn.client, conn.server);
            st.record(TraceEvent::Accept {
                conn: id,
                client,
                server,
            });
            // The backlog has room again: a connect waiting for it may go on.
            st.changed();
            let conn = SimConn::accepted(self.world.clone(), id, server, client);
            Poll::Ready(Ok((conn, Addr::Inet(client))))
        })
    }

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(self.addr))
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let (host, port, id) = (self.host, self.addr.port(), self.id);
        self.world.with(|st| st.remove_listener(host, port, id));
    }
}

impl fmt::Debug for SimListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimListener")
            .field("addr", &self.addr)
            .finish()
    }
}
