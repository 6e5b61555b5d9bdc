//! The in-memory network: the [`Network`] every host, listener and connection of a
//! test shares, the [`Host`] handle code under test binds and connects with, and the
//! fault controls a test turns while the code runs.
//!
//! All state sits behind one lock, so every operation (a write, a partition, a kill)
//! happens at one point of virtual time and in one order, which is what makes a run
//! reproducible from its seed. Wakers are woken after the lock is released.
//!
//! # Example
//! A listener and a connector exchange bytes across a partition and its heal, under
//! paused time: the 30 virtual seconds of the partition pass at once.
//!
//! ```
//! use std::future::poll_fn;
//! use std::time::Duration;
//!
//! use bytes::BytesMut;
//! use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Listener};
//! use chitchat_testkit::{Event, LinkConfig, Network};
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> std::io::Result<()> {
//!     let net = Network::new(7); // the seed of every random choice
//!     let server = net.host([10, 0, 0, 1]);
//!     let client = net.host([10, 0, 0, 2]);
//!     net.set_pair(&server, &client, LinkConfig::default().latency(Duration::from_millis(20)));
//!
//!     let addr: Addr = "10.0.0.1:7878".parse().unwrap();
//!     let mut listener = server.bind(&addr, &BindOptions::default())?;
//!     let mut conn = client.connect(&addr).await?; // one round trip: 40 ms
//!     let (mut accepted, peer) = poll_fn(|cx| listener.poll_accept(cx)).await?;
//!     assert_eq!(peer, conn.local_addr()?);
//!
//!     // Cut the cable, then write: the bytes are held, not lost.
//!     net.partition(&server, &client);
//!     poll_fn(|cx| conn.poll_write(cx, b"ping")).await?;
//!     let mut buf = BytesMut::with_capacity(64);
//!     let waited = tokio::time::timeout(
//!         Duration::from_secs(30),
//!         poll_fn(|cx| accepted.poll_read(cx, &mut buf)),
//!     )
//!     .await;
//!     assert!(waited.is_err(), "nothing crosses a partition");
//!
//!     // Plug it back: the bytes arrive one link delay later.
//!     net.heal(&server, &client);
//!     poll_fn(|cx| accepted.poll_read(cx, &mut buf)).await?;
//!     assert_eq!(&buf[..], b"ping");
//!
//!     // Half-close: the peer reads EOF after the data.
//!     poll_fn(|cx| conn.poll_shutdown(cx)).await?;
//!     assert_eq!(poll_fn(|cx| accepted.poll_read(cx, &mut buf)).await?, 0);
//!
//!     // The trace tells what happened, and when (virtual time).
//!     for entry in net.trace() {
//!         println!("{entry}");
//!     }
//!     let delivered = net.trace().into_iter().find(|e| matches!(e.event, Event::Delivered { .. }));
//!     assert_eq!(delivered.unwrap().at, Duration::from_millis(40 + 30_000 + 20));
//!     Ok(())
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use chitchat_core::{Addr, BindOptions, Binder, Connector};
use tokio::time::Instant;

use crate::conn::{self, SimConn};
use crate::fault::{Faults, LinkConfig};
use crate::listener::SimListener;
use crate::pipe::Pipe;
use crate::trace::{ConnId, Event, TraceEntry};

/// Default bound on the bytes of one direction of a connection that are written and
/// not yet read: 64 KiB, the largest TCP window without window scaling, so a peer
/// that stops reading blocks its writer after a realistic amount, and a test of it
/// fills the window in a few writes.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// First port handed out for port 0 and for the source of connects: the start of the
/// IANA dynamic range, so ephemeral ports look like the ones TCP gives.
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// Settings of a whole [`Network`], fixed at creation.
///
/// ```
/// use std::time::Duration;
/// use chitchat_testkit::{LinkConfig, NetConfig, Network};
///
/// let mut config = NetConfig::default();
/// config.buffer_size = 4096;
/// config.link = LinkConfig::default().latency(Duration::from_millis(1));
/// let net = Network::with_config(42, config);
/// # drop(net);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetConfig {
    /// Bytes of one direction of a connection written and not yet read before writes
    /// wait (the window; see [`DEFAULT_BUFFER_SIZE`]). Small values make
    /// backpressure tests quick; never below 1.
    pub buffer_size: usize,
    /// The config of every link that was not given one of its own.
    pub link: LinkConfig,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            buffer_size: DEFAULT_BUFFER_SIZE,
            link: LinkConfig::default(),
        }
    }
}

/// A simulated network of hosts, addressed by IP, with faults you control.
///
/// A cheap handle (clone it freely): every clone sees and changes the same network.
/// Create it inside the test's tokio runtime, so that its clock is the runtime's
/// (paused or not) and the trace's timestamps start at zero. Every random choice
/// (jitter, chunk sizes) comes from `seed`: with a single-threaded runtime, the same
/// test with the same seed gives the same [`trace`](Self::trace).
///
/// ```
/// use chitchat_testkit::Network;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let net = Network::new(1);
/// let server = net.host([10, 0, 0, 1]);
/// let client = net.host([10, 0, 0, 2]);
/// net.partition(&server, &client);
/// net.heal(&server, &client);
/// assert_eq!(net.trace().len(), 4); // two directions cut, two healed
/// # }
/// ```
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    /// Kept to report it: a failing test prints the seed to replay.
    seed: u64,
    state: Mutex<State>,
}

/// A host of a [`Network`]: one IP address that binds listeners and dials
/// connections, implementing chitchat's [`Binder`] and [`Connector`].
///
/// Clones are the same host. Connections get ephemeral source ports like TCP's
/// (49152 and up), so the addresses code under test sees look real.
#[derive(Clone)]
pub struct Host {
    net: Network,
    ip: IpAddr,
}

impl Network {
    /// A network with the default [`NetConfig`] (ideal links, 64 KiB windows).
    pub fn new(seed: u64) -> Self {
        Network::with_config(seed, NetConfig::default())
    }

    /// A network with the given settings.
    ///
    /// # Panics
    /// If `config.buffer_size` is zero.
    pub fn with_config(seed: u64, config: NetConfig) -> Self {
        assert!(
            config.buffer_size > 0,
            "a window of zero bytes never carries data"
        );
        let state = State {
            start: Instant::now(),
            buffer_size: config.buffer_size,
            faults: Faults::new(seed, config.link),
            hosts: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            next_listener: 0,
            generation: 0,
            change_wakers: Vec::new(),
            trace: Vec::new(),
            wakes: Vec::new(),
        };
        Network {
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

    /// The host with this IP address, created on first use. Connecting to an address
    /// no host has is refused, as if nobody listened there.
    pub fn host(&self, ip: impl Into<IpAddr>) -> Host {
        let ip = ip.into();
        self.with(|st| {
            st.host_mut(ip);
        });
        Host {
            net: self.clone(),
            ip,
        }
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.with(|st| st.now_since_start())
    }

    /// A copy of everything recorded so far, oldest first.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.with(|st| st.trace.clone())
    }

    /// Everything recorded so far, leaving the recorder empty (for long tests that
    /// check the trace in phases).
    pub fn take_trace(&self) -> Vec<TraceEntry> {
        self.with(|st| std::mem::take(&mut st.trace))
    }

    /// Gives the direction `from -> to` its own config, replacing the default.
    /// Applies to bytes written from now on.
    pub fn set_link(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>, config: LinkConfig) {
        let (from, to) = (from.into(), to.into());
        self.with(|st| {
            st.faults.set_config(from, to, config);
            st.record(Event::SetLink {
                from: Some(from),
                to: Some(to),
                config,
            });
        });
    }

    /// Gives both directions between `a` and `b` the same config.
    pub fn set_pair(&self, a: impl Into<IpAddr>, b: impl Into<IpAddr>, config: LinkConfig) {
        let (a, b) = (a.into(), b.into());
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// Changes the config of every link that has none of its own.
    pub fn set_default_link(&self, config: LinkConfig) {
        self.with(|st| {
            st.faults.default = config;
            st.record(Event::SetLink {
                from: None,
                to: None,
                config,
            });
        });
    }

    /// The config in force from `from` to `to`.
    pub fn link(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>) -> LinkConfig {
        let (from, to) = (from.into(), to.into());
        self.with(|st| st.faults.config(from, to))
    }

    /// Cuts both directions between `a` and `b`: see
    /// [`partition_oneway`](Self::partition_oneway).
    pub fn partition(&self, a: impl Into<IpAddr>, b: impl Into<IpAddr>) {
        let (a, b) = (a.into(), b.into());
        self.partition_oneway(a, b);
        self.partition_oneway(b, a);
    }

    /// Cuts `from -> to`, like a cable pulled out: bytes that had arrived stay
    /// readable; bytes in flight and bytes written later are held, not lost, and
    /// arrive one link delay after [`heal`](Self::heal) (as TCP retransmits them).
    /// Connections are not told. A connect between the two hosts (in either
    /// direction, as the handshake needs both) hangs until heal, so the caller's
    /// timeout decides, as with a black hole. Cutting a cut direction does nothing.
    pub fn partition_oneway(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>) {
        let (from, to) = (from.into(), to.into());
        self.with(|st| st.partition_link(from, to));
    }

    /// Restores both directions between `a` and `b`.
    pub fn heal(&self, a: impl Into<IpAddr>, b: impl Into<IpAddr>) {
        let (a, b) = (a.into(), b.into());
        self.heal_oneway(a, b);
        self.heal_oneway(b, a);
    }

    /// Restores `from -> to`: held bytes leave now and arrive one link delay later;
    /// waiting connects go ahead. Healing a direction that is not cut does nothing.
    pub fn heal_oneway(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>) {
        let (from, to) = (from.into(), to.into());
        self.with(|st| st.heal_link(from, to));
    }

    /// Restores every cut direction.
    pub fn heal_all(&self) {
        self.with(|st| {
            for (from, to) in st.faults.partitioned_links() {
                st.heal_link(from, to);
            }
        });
    }

    /// Resets every connection between `a` and `b` (whichever dialled): their next
    /// read, write or shutdown, on both ends, fails with `ConnectionReset`, and what
    /// they had buffered is dropped. New connections are not affected.
    pub fn reset(&self, a: impl Into<IpAddr>, b: impl Into<IpAddr>) {
        let (a, b) = (a.into(), b.into());
        self.with(|st| {
            st.record(Event::ResetPair { a, b });
            let ids = st.conns_where(|c| {
                let (x, y) = (c.client.ip(), c.server.ip());
                (x, y) == (a, b) || (x, y) == (b, a)
            });
            for id in ids {
                st.reset_conn(id);
            }
        });
    }

    /// Makes `host` refuse new connections (`ConnectionRefused`, as if nobody
    /// listened) until [`allow`](Self::allow). Established connections go on.
    pub fn refuse(&self, host: impl Into<IpAddr>) {
        let host = host.into();
        self.with(|st| {
            if st.faults.refusing.insert(host) {
                st.record(Event::Refuse { host });
            }
        });
    }

    /// Lets `host` accept new connections again after [`refuse`](Self::refuse).
    pub fn allow(&self, host: impl Into<IpAddr>) {
        let host = host.into();
        self.with(|st| {
            if st.faults.refusing.remove(&host) {
                st.record(Event::Allow { host });
                st.changed();
            }
        });
    }

    /// Kills `host`, like a crash of its process: every connection to or from it is
    /// reset (on both ends), its listeners are gone (their handles accept nothing,
    /// ever; connections they had not accepted are reset), and its connects in
    /// progress fail with `ConnectionReset`. The host itself stays: binding on it
    /// again is a restart. Links and their faults are unchanged.
    pub fn kill(&self, host: impl Into<IpAddr>) {
        let host = host.into();
        self.with(|st| st.kill(host));
    }

    /// Connections of which at least one end is still open (not dropped), including
    /// ones waiting in a listener's backlog: 0 once code under test has shut down
    /// and freed everything.
    pub fn open_connections(&self) -> usize {
        self.with(|st| st.conns.len())
    }

    /// The addresses listened on, in order.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.with(|st| {
            st.hosts
                .values()
                .flat_map(|host| host.listeners.values().map(|l| l.addr))
                .collect()
        })
    }

    /// Runs `f` under the lock, then wakes the tasks it made ready.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
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
    pub(crate) async fn wait_until(&self, mut ready: impl FnMut(&State) -> bool) {
        poll_fn(|cx| {
            self.with(|st| {
                if ready(st) {
                    Poll::Ready(())
                } else {
                    if !st.change_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        st.change_wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            })
        })
        .await;
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.shared.seed)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// The host's IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The network the host is on.
    pub fn network(&self) -> &Network {
        &self.net
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
pub(crate) fn inet(addr: &Addr) -> io::Result<SocketAddr> {
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
        let (id, bound) = self.net.with(|st| {
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
            let id = st.next_listener;
            st.next_listener += 1;
            st.host_mut(self.ip).listeners.insert(
                port,
                ListenerState {
                    id,
                    addr: bound,
                    backlog: VecDeque::new(),
                    limit: usize::try_from(options.backlog)
                        .unwrap_or(usize::MAX)
                        .max(1),
                    waker: None,
                },
            );
            st.record(Event::Bind { addr: bound });
            st.changed();
            Ok::<_, io::Error>((id, bound))
        })?;
        Ok(SimListener::new(self.net.clone(), self.ip, id, bound))
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
        conn::connect(&self.net, self.ip, to).await
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
    /// Source ports of this host's dialled connections still open.
    pub client_ports: BTreeSet<u16>,
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
    trace: Vec<TraceEntry>,
    /// Wakers to wake once the lock is released.
    wakes: Vec<Waker>,
}

impl State {
    fn now_since_start(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// Appends to the trace, stamped with the current virtual time.
    pub fn record(&mut self, event: Event) {
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

    pub fn port_in_use(&self, ip: IpAddr, port: u16) -> bool {
        self.hosts.get(&ip).is_some_and(|host| {
            host.listeners.contains_key(&port) || host.client_ports.contains(&port)
        })
    }

    /// A free ephemeral port of `ip`, searched round-robin as kernels do (so a port
    /// just freed is not handed out again at once).
    pub fn free_port(&mut self, ip: IpAddr) -> Option<u16> {
        let range = usize::from(u16::MAX - FIRST_EPHEMERAL_PORT) + 1;
        let start = self.host_mut(ip).next_port;
        for step in 0..range {
            let offset = (usize::from(start - FIRST_EPHEMERAL_PORT) + step) % range;
            let port = FIRST_EPHEMERAL_PORT + u16::try_from(offset).expect("in range");
            if !self.port_in_use(ip, port) {
                self.host_mut(ip).next_port = port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                return Some(port);
            }
        }
        None
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
        self.record(Event::Reset {
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
            Event::Abort {
                conn: id,
                by: local,
            }
        } else {
            Event::Close {
                conn: id,
                by: local,
            }
        };
        self.record(event);
        if side == Side::Client {
            if let Some(host) = self.hosts.get_mut(&local.ip()) {
                host.client_ports.remove(&local.port());
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
        self.record(Event::Unbind {
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

    fn partition_link(&mut self, from: IpAddr, to: IpAddr) {
        let now = Instant::now();
        if !self.faults.partition(from, to) {
            return;
        }
        for pipe in State::pipes_over(&mut self.conns, from, to) {
            pipe.mark_arrived(now);
        }
        self.record(Event::Partition { from, to });
    }

    fn heal_link(&mut self, from: IpAddr, to: IpAddr) {
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
        self.record(Event::Heal { from, to });
        self.changed();
    }

    fn kill(&mut self, ip: IpAddr) {
        self.record(Event::Kill { host: ip });
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
