//! One end of an in-memory connection, [`SimConn`], implementing chitchat's
//! [`Connection`] (and tokio's `AsyncRead`/`AsyncWrite`, for raw test clients); and
//! the connect handshake that creates it.
//!
//! Reads wait with tokio timers for the next piece's arrival time, so under paused
//! time the runtime jumps straight to it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use chitchat_core::{Addr, Connection, Keepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, sleep_until, Instant, Sleep};

use crate::pipe::{Pipe, Readable};
use crate::trace::{ConnId, TraceEvent};
use crate::world::{Side, State, World};

/// One end of an in-memory connection: a byte stream with half-close and TCP's
/// error kinds.
///
/// - Reads return bytes once the link delivered them, and `Ok(0)` (EOF, for good)
///   after the peer shut down its write side or closed.
/// - Writes take as much as fits in the peer's window
///   ([`NetConfig::buffer_size`](crate::NetConfig) bytes written and not yet read)
///   and return `Pending` when it is full; they fail with `BrokenPipe` after our own
///   shutdown or once the peer closed its end.
/// - Dropping it closes both directions: the peer reads what was sent, then EOF.
///   As with TCP, closing with input arrived and unread is abortive (a reset), and
///   so is [`abort`](Self::abort): the peer reads what had reached it, then
///   `ConnectionReset`; its writes fail with `ConnectionReset`.
/// - After a [reset](crate::Network::reset) or a [kill](crate::Network::kill) every
///   read, write and shutdown fails with `ConnectionReset`.
/// - With keepalive set ([`Connection::set_keepalive`]), a connection whose peer is
///   cut off (a [partition](crate::Network::partition) in either direction) fails
///   its reads with `TimedOut` once [`Keepalive::dead_after`] has passed since the
///   later of the last bytes it read and the cut, as a TCP socket does when its
///   keepalive probes go unanswered (a network trace entry records it); every
///   later operation fails the same way. The model leaves out retransmission of
///   unacknowledged data, which TCP gives up on only after many minutes.
///
/// Get one from [`Host`](crate::Host)'s `connect` or a
/// [`SimListener`](crate::SimListener).
pub struct SimConn {
    world: World,
    id: ConnId,
    side: Side,
    local: SocketAddr,
    peer: SocketAddr,
    /// Wakes a reader when the next piece arrives. A tokio timer, so that paused
    /// time advances to it; kept across polls to avoid re-registering.
    timer: Option<Pin<Box<Sleep>>>,
    /// Closed by [`abort`](Self::abort) already: dropping does nothing more.
    closed: bool,
    /// Keepalive probing, as set by [`Connection::set_keepalive`].
    keepalive: Option<Keepalive>,
    /// When a read last returned bytes (or the connection was made): where the
    /// keepalive's idle time starts.
    heard_at: Instant,
    /// The keepalive gave up on the peer: every operation fails with `TimedOut`.
    timed_out: bool,
}

/// What one look at the incoming pipe decided.
enum Step {
    Done(io::Result<usize>),
    SleepUntil(Instant),
    Wait,
}

impl SimConn {
    fn new(world: World, id: ConnId, side: Side, local: SocketAddr, peer: SocketAddr) -> Self {
        SimConn {
            world,
            id,
            side,
            local,
            peer,
            timer: None,
            closed: false,
            keepalive: None,
            heard_at: Instant::now(),
            timed_out: false,
        }
    }

    /// The server end of connection `id`, handed out by a listener.
    pub(crate) fn accepted(
        world: World,
        id: ConnId,
        server: SocketAddr,
        client: SocketAddr,
    ) -> Self {
        SimConn::new(world, id, Side::Server, server, client)
    }

    /// The connection's number in the network's trace.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Closes abortively, like TCP with `SO_LINGER` 0: a reset instead of a FIN.
    /// The peer reads what had already reached it, then `ConnectionReset` instead
    /// of EOF; what was still on its way is dropped; its writes fail with
    /// `ConnectionReset`.
    pub fn abort(mut self) {
        let (id, side) = (self.id, self.side);
        self.closed = true;
        self.world.with(|st| st.close_end(id, side, true));
    }

    /// The pipe this end writes into, or `ConnectionReset` once the connection or
    /// that direction was reset.
    fn outgoing<'s>(&self, st: &'s mut State) -> io::Result<&'s mut Pipe> {
        let conn = st.conn_mut(self.id);
        if conn.reset {
            return Err(reset_error(self.peer));
        }
        let (outgoing, _) = conn.pipes_mut(self.side);
        if outgoing.reset {
            return Err(reset_error(self.peer));
        }
        Ok(outgoing)
    }

    /// Waits for the incoming pipe: with `max` set, reads up to `max` bytes into
    /// `sink`; with `None`, only waits until a read would make progress.
    fn poll_incoming(
        &mut self,
        cx: &mut Context<'_>,
        max: Option<usize>,
        mut sink: impl FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(keepalive_error(self.peer)));
        }
        loop {
            let step = self.world.with(|st| self.look(st, cx, max, &mut sink));
            match step {
                Step::Done(result) => {
                    match &result {
                        Ok(len) if *len > 0 => self.heard_at = Instant::now(),
                        Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                            self.timed_out = true;
                        }
                        _ => {}
                    }
                    return Poll::Ready(result);
                }
                Step::Wait => return Poll::Pending,
                Step::SleepUntil(deadline) => {
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    ready!(timer.as_mut().poll(cx));
                }
            }
        }
    }

    fn look(
        &self,
        st: &mut State,
        cx: &mut Context<'_>,
        max: Option<usize>,
        sink: &mut impl FnMut(&[u8]),
    ) -> Step {
        let now = Instant::now();
        let held = st.faults.is_partitioned(self.peer.ip(), self.local.ip());
        let conn = st.conn_mut(self.id);
        if conn.reset {
            return Step::Done(Err(reset_error(self.peer)));
        }
        let (_, incoming) = conn.pipes_mut(self.side);
        match incoming.readable(now, held) {
            Readable::Data => {
                let Some(max) = max else {
                    return Step::Done(Ok(0));
                };
                let len = incoming.read(now, held, max, sink);
                let writer = incoming.take_writer();
                st.wake(writer);
                st.record(TraceEvent::Delivered {
                    conn: self.id,
                    from: self.peer,
                    to: self.local,
                    len,
                });
                Step::Done(Ok(len))
            }
            Readable::Eof => Step::Done(Ok(0)),
            Readable::Reset => Step::Done(Err(reset_error(self.peer))),
            waiting => {
                // Parked even with a deadline: a reset or kill must wake us first.
                incoming.park_reader(cx.waker());
                let arrival = match waiting {
                    Readable::At(deadline) => Some(deadline),
                    _ => None,
                };
                let Some(dead_at) = self.keepalive_gives_up_at(st) else {
                    return arrival.map_or(Step::Wait, Step::SleepUntil);
                };
                if now >= dead_at {
                    st.record(TraceEvent::KeepaliveTimeout {
                        conn: self.id,
                        by: self.local,
                    });
                    return Step::Done(Err(keepalive_error(self.peer)));
                }
                Step::SleepUntil(arrival.map_or(dead_at, |at| at.min(dead_at)))
            }
        }
    }

    /// When the keepalive probes, unanswered across a cut link, give up on the peer;
    /// `None` without keepalive or while the link is up. A heal before then wakes
    /// the reader, which looks again.
    fn keepalive_gives_up_at(&self, st: &State) -> Option<Instant> {
        let keepalive = self.keepalive?;
        let cut = st.faults.cut_since(self.local.ip(), self.peer.ip())?;
        Some(self.heard_at.max(cut) + keepalive.dead_after())
    }
}

impl Connection for SimConn {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(self.local))
    }

    fn peer_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(self.peer))
    }

    fn set_keepalive(&mut self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.keepalive = keepalive;
        Ok(())
    }

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_incoming(cx, None, |_| {}).map_ok(|_| ())
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if buf.len() == buf.capacity() {
            // What `BufMut::chunk_mut` does for tokio's `TcpStream::try_read_buf`: a
            // full `BytesMut` grows rather than reading nothing.
            buf.reserve(64);
        }
        let max = buf.capacity() - buf.len();
        self.poll_incoming(cx, Some(max), |bytes| buf.extend_from_slice(bytes))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(keepalive_error(self.peer)));
        }
        self.world.with(|st| {
            let now = Instant::now();
            let (local, peer) = (self.local, self.peer);
            let outgoing = match self.outgoing(st) {
                Ok(outgoing) => outgoing,
                Err(err) => return Poll::Ready(Err(err)),
            };
            if outgoing.fin_sent {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("write to {peer} after shutdown"),
                )));
            }
            if outgoing.reader_closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("{peer} closed the connection"),
                )));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let len = buf.len().min(outgoing.space());
            if len == 0 {
                outgoing.park_writer(cx.waker());
                return Poll::Pending;
            }
            let pieces = st.faults.plan_write(local.ip(), peer.ip(), now, len);
            let (outgoing, _) = st.conn_mut(self.id).pipes_mut(self.side);
            let mut data = Bytes::copy_from_slice(&buf[..len]);
            for piece in pieces {
                outgoing.push(data.split_to(piece.len), piece.ready_at, piece.boundary);
            }
            let reader = outgoing.take_reader();
            st.wake(reader);
            st.record(TraceEvent::Sent {
                conn: self.id,
                from: local,
                to: peer,
                len,
            });
            Poll::Ready(Ok(len))
        })
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.world.with(|st| {
            let (local, peer) = (self.local, self.peer);
            let delay = st.faults.delay(local.ip(), peer.ip());
            let outgoing = match self.outgoing(st) {
                Ok(outgoing) => outgoing,
                Err(err) => return Poll::Ready(Err(err)),
            };
            if !outgoing.fin_sent {
                outgoing.push_fin(Instant::now() + delay);
                let reader = outgoing.take_reader();
                st.wake(reader);
                st.record(TraceEvent::Shutdown {
                    conn: self.id,
                    by: local,
                });
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncRead for SimConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let max = buf.remaining();
        this.poll_incoming(cx, Some(max), |bytes| buf.put_slice(bytes))
            .map_ok(|_| ())
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Connection::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Connection::poll_shutdown(self.get_mut(), cx)
    }
}

impl Drop for SimConn {
    fn drop(&mut self) {
        if !self.closed {
            let (id, side) = (self.id, self.side);
            self.world.with(|st| st.close_end(id, side, false));
        }
    }
}

impl fmt::Debug for SimConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConn")
            .field("id", &self.id)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

fn keepalive_error(peer: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("keepalive probes to {peer} went unanswered"),
    )
}

fn reset_error(peer: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("connection reset by {peer}"),
    )
}

/// The source port a connect holds; released if the connect gives up (refused,
/// dropped by the caller's timeout) before a connection owns it.
struct PortClaim {
    world: World,
    ip: IpAddr,
    port: u16,
    to: SocketAddr,
    owned_by_conn: bool,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        if !self.owned_by_conn {
            let (ip, claimed) = (self.ip, (self.port, self.to));
            self.world.with(|st| {
                if let Some(host) = st.hosts.get_mut(&ip) {
                    host.client_ports.remove(&claimed);
                }
            });
        }
    }
}

/// What the SYN found when it arrived.
enum Handshake {
    /// A direction was cut while it travelled: it is lost, try again after heal.
    Lost,
    /// The backlog is full: wait for an accept (or another change) and try again.
    Full { generation: u64 },
    /// The connecting host was killed meanwhile.
    Killed,
    /// Nobody listens (or the host refuses): the refusal takes `back` to return.
    Refused { back: std::time::Duration },
    /// Queued in the listener's backlog; the answer takes `back` to return.
    Established {
        id: ConnId,
        back: std::time::Duration,
    },
}

/// The connect handshake from `from_ip` to `to`: one link delay there, the
/// listener's verdict, one link delay back.
pub(crate) async fn connect(world: &World, from_ip: IpAddr, to: SocketAddr) -> io::Result<SimConn> {
    let (from, epoch) = world.with(|st| {
        let port = st.free_port_to(from_ip, to).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("no ephemeral port left on {from_ip} to connect to {to}"),
            )
        })?;
        let host = st.host_mut(from_ip);
        host.client_ports.insert((port, to));
        let epoch = host.epoch;
        let from = SocketAddr::new(from_ip, port);
        st.record(TraceEvent::Connect { from, to });
        Ok::<_, io::Error>((from, epoch))
    })?;
    let mut claim = PortClaim {
        world: world.clone(),
        ip: from_ip,
        port: from.port(),
        to,
        owned_by_conn: false,
    };
    loop {
        world
            .wait_until(|st| !st.faults.is_blocked(from_ip, to.ip()))
            .await;
        let there = world.with(|st| st.faults.delay(from_ip, to.ip()));
        sleep(there).await;
        match world.with(|st| handshake(st, from, to, epoch)) {
            Handshake::Lost => continue,
            Handshake::Full { generation } => {
                world.wait_until(|st| st.generation != generation).await;
            }
            Handshake::Killed => return Err(reset_error(to)),
            Handshake::Refused { back } => {
                sleep(back).await;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("connection refused by {to}"),
                ));
            }
            Handshake::Established { id, back } => {
                claim.owned_by_conn = true;
                let conn = SimConn::new(world.clone(), id, Side::Client, from, to);
                sleep(back).await;
                let alive = world.with(|st| {
                    let alive = st.hosts.get(&from_ip).map(|h| h.epoch) == Some(epoch);
                    if alive {
                        st.record(TraceEvent::Connected {
                            conn: id,
                            client: from,
                            server: to,
                        });
                    }
                    alive
                });
                // Dropped outside the lock if the host died: its end closes.
                return if alive {
                    Ok(conn)
                } else {
                    Err(reset_error(to))
                };
            }
        }
    }
}

fn handshake(st: &mut State, from: SocketAddr, to: SocketAddr, epoch: u64) -> Handshake {
    if st.faults.is_blocked(from.ip(), to.ip()) {
        return Handshake::Lost;
    }
    if st.hosts.get(&from.ip()).map(|h| h.epoch) != Some(epoch) {
        return Handshake::Killed;
    }
    let back = st.faults.delay(to.ip(), from.ip());
    let refusing = st.faults.refusing.contains(&to.ip());
    let listener = st
        .hosts
        .get(&to.ip())
        .and_then(|host| host.listeners.get(&to.port()))
        .filter(|_| !refusing);
    match listener {
        None => {
            st.record(TraceEvent::Refused { from, to });
            Handshake::Refused { back }
        }
        Some(listener) if listener.backlog.len() >= listener.limit => Handshake::Full {
            generation: st.generation,
        },
        Some(_) => {
            let id = st.new_conn(from, to);
            let listener = st
                .hosts
                .get_mut(&to.ip())
                .and_then(|host| host.listeners.get_mut(&to.port()))
                .expect("found above");
            listener.backlog.push_back(id);
            let waker = listener.waker.take();
            st.wake(waker);
            Handshake::Established { id, back }
        }
    }
}
