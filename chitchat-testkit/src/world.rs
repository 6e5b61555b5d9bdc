//! The shared state of an in-memory network: every host, listener and connection,
//! behind one lock, and [`World`], the handle to it that the network, its hosts,
//! listeners and connections hold.
//!
//! All state sits behind that lock, so every operation (a write, a partition, a
//! kill) happens at one point of virtual time and in one order, which is what makes
//! a run reproducible from its seed. Wakers are woken after the lock is released.
//! The methods of [`State`] are the network's verbs at the level of its parts
//! (reset a connection, close one end, remove a listener, cut a link); the public
//! types above it (`Network`, `Host`, `SimConn`, `SimListener`) call them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::fault::{Faults, LinkConfig};
use crate::pipe::Pipe;
use crate::trace::{ConnId, TraceEntry, TraceEvent};

/// First port handed out for port 0 and for the source of connects: the start of the
/// IANA dynamic range, so ephemeral ports look like the ones TCP gives.
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// The lowest socket address in `SocketAddr`'s order (IPv4 before IPv6).
const LOWEST_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// A handle to the state of one network: cheap to clone, every clone the same
/// network.
#[derive(Clone)]
pub(crate) struct World {
    shared: Arc<Shared>,
}

struct Shared {
    /// Kept to report it: a failing test prints the seed to replay.
    seed: u64,
    state: Mutex<State>,
}

impl World {
    /// A network with no host yet, its clock starting now; `buffer_size` is the
    /// window of every connection, `link` the config of links without their own.
    pub fn new(seed: u64, buffer_size: usize, link: LinkConfig) -> Self {
        let state = State {
            start: Instant::now(),
            buffer_size,
            faults: Faults::new(seed, link),
            hosts: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            next_listener: 0,
            generation: 0,
            change_wakers: Vec::new(),
            trace: Vec::new(),
            wakes: Vec::new(),
        };
        World {
            shared: Arc::new(Shared {
                seed,
                state: Mutex::new(state),
            }),
        }
    }

    /// The seed every random choice of this network comes from.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Runs `f` under the lock, then wakes the tasks it made ready.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut state);
        let wakes = std::mem::take(&mut state.wakes);
        drop(state);
        for waker in wakes {
            waker.wake();
        }
        out
    }

    /// Waits until `ready` holds, re-checking after every change of the network's
    /// topology (bind, accept, heal, allow, kill).
    pub async fn wait_until(&self, mut ready: impl FnMut(&State) -> bool) {
        // The waker this wait left for the current generation, if any: a change
        // takes every waker left, so one is left per generation, without searching
        // the others' (thousands of connects may wait on a full backlog).
        let mut left: Option<(u64, Waker)> = None;
        poll_fn(|cx| {
            self.with(|st| {
                if ready(st) {
                    return Poll::Ready(());
                }
                let already = left
                    .as_ref()
                    .is_some_and(|(at, w)| *at == st.generation && w.will_wake(cx.waker()));
                if !already {
                    st.change_wakers.push(cx.waker().clone());
                    left = Some((st.generation, cx.waker().clone()));
                }
                Poll::Pending
            })
        })
        .await;
    }
}

/// Which end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The end that dialled.
    Client,
    /// The end a listener accepted.
    Server,
}

/// A connection as the network sees it: both directions and what became of each end.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub to_server: Pipe,
    pub to_client: Pipe,
    /// Reset by a fault or a kill: every operation fails from now on.
    pub reset: bool,
    /// Whether the client's and the server's end are still open (not dropped); a
    /// server end waiting in a backlog counts as open. The state goes when both close.
    pub open: [bool; 2],
}

impl ConnState {
    /// `(outgoing, incoming)` pipes of `side`.
    pub fn pipes_mut(&mut self, side: Side) -> (&mut Pipe, &mut Pipe) {
        match side {
            Side::Client => (&mut self.to_server, &mut self.to_client),
            Side::Server => (&mut self.to_client, &mut self.to_server),
        }
    }

    /// `(local, peer)` addresses of `side`.
    pub fn addrs(&self, side: Side) -> (SocketAddr, SocketAddr) {
        match side {
            Side::Client => (self.client, self.server),
            Side::Server => (self.server, self.client),
        }
    }
}

/// A bound listener as the network sees it.
#[derive(Debug)]
pub(crate) struct ListenerState {
    /// Tells this listener from a later one on the same port (after a kill or drop).
    pub id: u64,
    pub addr: SocketAddr,
    /// Established connections not yet accepted (the server end has no handle yet).
    pub backlog: VecDeque<ConnId>,
    /// Backlog length past which new connects wait, as a full SYN queue drops SYNs.
    pub limit: usize,
    /// The task waiting in `poll_accept`.
    pub waker: Option<Waker>,
}

/// One host as the network sees it.
#[derive(Debug)]
pub(crate) struct HostState {
    /// By port; one IP per host, so the port alone names a listener.
    pub listeners: BTreeMap<u16, ListenerState>,
    /// Source ports of this host's dialled connections still open, each with the
    /// address it dialled: as with TCP, one source port serves connections to
    /// different destinations, so a host dials more than 16 384 of them.
    pub client_ports: BTreeSet<(u16, SocketAddr)>,
    /// Where the search for the next ephemeral port starts.
    next_port: u16,
    /// Bumped by a kill: connects that began before it fail.
    pub epoch: u64,
}

/// Everything of a network, behind its lock.
pub(crate) struct State {
    start: Instant,
    pub buffer_size: usize,
    pub faults: Faults,
    pub hosts: BTreeMap<IpAddr, HostState>,
    pub conns: BTreeMap<ConnId, ConnState>,
    next_conn: u64,
    next_listener: u64,
    /// Bumped on every change a waiting connect may care about.
    pub generation: u64,
    /// Connects waiting for such a change.
    change_wakers: Vec<Waker>,
    pub trace: Vec<TraceEntry>,
    /// Wakers to wake once the lock is released.
    wakes: Vec<Waker>,
}

impl State {
    pub fn now_since_start(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// Appends to the trace, stamped with the current virtual time.
    pub fn record(&mut self, event: TraceEvent) {
        let at = self.now_since_start();
        self.trace.push(TraceEntry { at, event });
    }

    /// Schedules a wake-up for after the lock is released.
    pub fn wake(&mut self, waker: Option<Waker>) {
        self.wakes.extend(waker);
    }

    /// Signals waiting connects that the topology changed.
    pub fn changed(&mut self) {
        self.generation += 1;
        self.wakes.append(&mut self.change_wakers);
    }

    pub fn host_mut(&mut self, ip: IpAddr) -> &mut HostState {
        self.hosts.entry(ip).or_insert_with(|| HostState {
            listeners: BTreeMap::new(),
            client_ports: BTreeSet::new(),
            next_port: FIRST_EPHEMERAL_PORT,
            epoch: 0,
        })
    }

    /// Whether `port` of `ip` is taken, by a listener or by any dialled connection.
    pub fn port_in_use(&self, ip: IpAddr, port: u16) -> bool {
        self.hosts.get(&ip).is_some_and(|host| {
            host.listeners.contains_key(&port)
                || host
                    .client_ports
                    .range((port, LOWEST_ADDR)..)
                    .next()
                    .is_some_and(|&(used, _)| used == port)
        })
    }

    /// A free ephemeral port of `ip` to listen on, searched round-robin as kernels
    /// do (so a port just freed is not handed out again at once).
    pub fn free_port(&mut self, ip: IpAddr) -> Option<u16> {
        self.search_port(ip, |st, port| !st.port_in_use(ip, port))
    }

    /// An ephemeral port of `ip` to dial `to` from: one no listener holds and no
    /// connection from it to `to` does (connections to other destinations may share
    /// it, as with TCP), searched round-robin like [`free_port`](Self::free_port).
    pub fn free_port_to(&mut self, ip: IpAddr, to: SocketAddr) -> Option<u16> {
        self.search_port(ip, |st, port| {
            st.hosts.get(&ip).is_none_or(|host| {
                !host.listeners.contains_key(&port) && !host.client_ports.contains(&(port, to))
            })
        })
    }

    fn search_port(&mut self, ip: IpAddr, usable: impl Fn(&State, u16) -> bool) -> Option<u16> {
        let range = usize::from(u16::MAX - FIRST_EPHEMERAL_PORT) + 1;
        let start = self.host_mut(ip).next_port;
        for step in 0..range {
            let offset = (usize::from(start - FIRST_EPHEMERAL_PORT) + step) % range;
            let port = FIRST_EPHEMERAL_PORT + u16::try_from(offset).expect("in range");
            if usable(self, port) {
                self.host_mut(ip).next_port = port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                return Some(port);
            }
        }
        None
    }

    /// Registers a listener of host `ip` bound on `addr` (its port free), which
    /// holds at most `limit` connections not yet accepted (at least 1); returns its id.
    pub fn add_listener(&mut self, ip: IpAddr, addr: SocketAddr, limit: usize) -> u64 {
        let id = self.next_listener;
        self.next_listener += 1;
        self.host_mut(ip).listeners.insert(
            addr.port(),
            ListenerState {
                id,
                addr,
                backlog: VecDeque::new(),
                limit: limit.max(1),
                waker: None,
            },
        );
        id
    }

    pub fn conn_mut(&mut self, id: ConnId) -> &mut ConnState {
        self.conns
            .get_mut(&id)
            .expect("a connection's state lives as long as a handle to it")
    }

    /// Ids of the connections matching `pred`, in order.
    pub fn conns_where(&self, pred: impl Fn(&ConnState) -> bool) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Creates the state of a connection the handshake established.
    pub fn new_conn(&mut self, client: SocketAddr, server: SocketAddr) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            ConnState {
                client,
                server,
                to_server: Pipe::new(self.buffer_size),
                to_client: Pipe::new(self.buffer_size),
                reset: false,
                open: [true, true],
            },
        );
        id
    }

    /// Resets a connection: both directions drop their bytes, every waiting task
    /// wakes to its `ConnectionReset`.
    pub fn reset_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.reset {
            return;
        }
        conn.reset = true;
        let mut wakers = Vec::new();
        for pipe in [&mut conn.to_server, &mut conn.to_client] {
            pipe.discard();
            wakers.extend(pipe.take_reader());
            wakers.extend(pipe.take_writer());
        }
        let (client, server) = (conn.client, conn.server);
        self.wakes.extend(wakers);
        self.record(TraceEvent::Reset {
            conn: id,
            client,
            server,
        });
    }

    /// Closes one end (its handle was dropped): the peer reads EOF after what was
    /// sent, and its writes fail with `BrokenPipe`. The close is abortive (a reset)
    /// when `abort` is asked or input had arrived unread, as with TCP: the peer
    /// reads what had reached it, then `ConnectionReset`, and its writes fail so.
    pub fn close_end(&mut self, id: ConnId, side: Side, abort: bool) {
        let now = Instant::now();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.open[side as usize] = false;
        let (local, peer) = conn.addrs(side);
        let mut aborted = false;
        if !conn.reset {
            let out_cut = self.faults.is_partitioned(local.ip(), peer.ip());
            let in_cut = self.faults.is_partitioned(peer.ip(), local.ip());
            let (outgoing, incoming) = conn.pipes_mut(side);
            aborted = abort || incoming.has_unread(now, in_cut);
            if aborted {
                outgoing.abort(now, out_cut);
                incoming.reset = true;
            } else if !outgoing.fin_sent {
                outgoing.push_fin(now + self.faults.delay(local.ip(), peer.ip()));
            }
            incoming.reader_closed = true;
            incoming.discard();
            let wakers = [outgoing.take_reader(), incoming.take_writer()];
            self.wakes.extend(wakers.into_iter().flatten());
        }
        let event = if aborted {
            TraceEvent::Abort {
                conn: id,
                by: local,
            }
        } else {
            TraceEvent::Close {
                conn: id,
                by: local,
            }
        };
        self.record(event);
        if side == Side::Client {
            if let Some(host) = self.hosts.get_mut(&local.ip()) {
                host.client_ports.remove(&(local.port(), peer));
            }
        }
        self.forget_if_closed(id);
    }

    /// Drops the state of a connection both of whose ends are closed.
    pub fn forget_if_closed(&mut self, id: ConnId) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| c.open == [false, false])
        {
            self.conns.remove(&id);
        }
    }

    /// Removes a listener (dropped or killed) unless a later one took its port; the
    /// connections in its backlog are reset, as TCP resets connections a closed
    /// listener never accepted.
    pub fn remove_listener(&mut self, ip: IpAddr, port: u16, id: u64) {
        let Some(host) = self.hosts.get_mut(&ip) else {
            return;
        };
        if host.listeners.get(&port).map(|l| l.id) != Some(id) {
            return;
        }
        let listener = host.listeners.remove(&port).expect("checked above");
        self.record(TraceEvent::Unbind {
            addr: listener.addr,
        });
        for conn in listener.backlog {
            self.reset_conn(conn);
            if let Some(state) = self.conns.get_mut(&conn) {
                state.open[Side::Server as usize] = false;
            }
            self.forget_if_closed(conn);
        }
        self.changed();
    }

    /// The pipes carrying bytes `from -> to`, in a stable order.
    fn pipes_over(
        conns: &mut BTreeMap<ConnId, ConnState>,
        from: IpAddr,
        to: IpAddr,
    ) -> Vec<&mut Pipe> {
        let mut pipes = Vec::new();
        for conn in conns.values_mut() {
            let (client, server) = (conn.client.ip(), conn.server.ip());
            if (client, server) == (from, to) {
                pipes.push(&mut conn.to_server);
            }
            if (server, client) == (from, to) {
                pipes.push(&mut conn.to_client);
            }
        }
        pipes
    }

    pub fn partition_link(&mut self, from: IpAddr, to: IpAddr) {
        let now = Instant::now();
        if !self.faults.partition(from, to, now) {
            return;
        }
        let mut wakers = Vec::new();
        for pipe in State::pipes_over(&mut self.conns, from, to) {
            pipe.mark_arrived(now);
            wakers.extend(pipe.take_reader());
        }
        // Readers on both sides look again: their keepalive now has a deadline.
        for pipe in State::pipes_over(&mut self.conns, to, from) {
            wakers.extend(pipe.take_reader());
        }
        self.wakes.extend(wakers);
        self.record(TraceEvent::Partition { from, to });
    }

    pub fn heal_link(&mut self, from: IpAddr, to: IpAddr) {
        if !self.faults.heal(from, to) {
            return;
        }
        let now = Instant::now();
        let mut wakers = Vec::new();
        for pipe in State::pipes_over(&mut self.conns, from, to) {
            let faults = &mut self.faults;
            pipe.retime_held(now, || faults.delay(from, to));
            wakers.extend(pipe.take_reader());
        }
        self.wakes.extend(wakers);
        self.record(TraceEvent::Heal { from, to });
        self.changed();
    }

    pub fn kill(&mut self, ip: IpAddr) {
        self.record(TraceEvent::Kill { host: ip });
        let host = self.host_mut(ip);
        host.epoch += 1;
        let listeners: Vec<(u16, u64)> = host
            .listeners
            .iter()
            .map(|(&port, l)| (port, l.id))
            .collect();
        for (port, id) in listeners {
            self.remove_listener(ip, port, id);
        }
        let ids = self.conns_where(|c| c.client.ip() == ip || c.server.ip() == ip);
        for id in ids {
            self.reset_conn(id);
        }
        self.changed();
    }
}
