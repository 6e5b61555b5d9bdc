//! The in-memory network, [`Network`]: the handle a test creates, gets its
//! [`Host`]s from, and turns the fault controls of while the code under test runs
//! (links, partitions, resets, refusals, kills), with the trace of what happened.
//! The state it controls is in `world.rs`; a host's binder and connector in
//! `host.rs`.
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
//! use chitchat_testkit::{LinkConfig, Network, TraceEvent};
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
//!     let delivered = net.trace().into_iter().find(|e| matches!(e.event, TraceEvent::Delivered { .. }));
//!     assert_eq!(delivered.unwrap().at, Duration::from_millis(40 + 30_000 + 20));
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::fault::LinkConfig;
use crate::host::Host;
use crate::trace::{TraceEntry, TraceEvent};
use crate::world::World;

/// Default bound on the bytes of one direction of a connection that are written and
/// not yet read: 64 KiB, the largest TCP window without window scaling, so a peer
/// that stops reading blocks its writer after a realistic amount, and a test of it
/// fills the window in a few writes.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

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
    world: World,
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
        Network {
            world: World::new(seed, config.buffer_size, config.link),
        }
    }

    /// The seed every random choice of this network comes from.
    pub fn seed(&self) -> u64 {
        self.world.seed()
    }

    /// The host with this IP address, created on first use. Connecting to an address
    /// no host has is refused, as if nobody listened there.
    pub fn host(&self, ip: impl Into<IpAddr>) -> Host {
        let ip = ip.into();
        self.world.with(|st| {
            st.host_mut(ip);
        });
        Host::new(self.world.clone(), ip)
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.world.with(|st| st.now_since_start())
    }

    /// A copy of everything recorded so far, oldest first.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.world.with(|st| st.trace.clone())
    }

    /// Everything recorded so far, leaving the recorder empty (for long tests that
    /// check the trace in phases).
    pub fn take_trace(&self) -> Vec<TraceEntry> {
        self.world.with(|st| std::mem::take(&mut st.trace))
    }

    /// Gives the direction `from -> to` its own config, replacing the default.
    /// Applies to bytes written from now on.
    pub fn set_link(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>, config: LinkConfig) {
        let (from, to) = (from.into(), to.into());
        self.world.with(|st| {
            st.faults.set_config(from, to, config);
            st.record(TraceEvent::SetLink {
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
        self.world.with(|st| {
            st.faults.default = config;
            st.record(TraceEvent::SetLink {
                from: None,
                to: None,
                config,
            });
        });
    }

    /// The config in force from `from` to `to`.
    pub fn link(&self, from: impl Into<IpAddr>, to: impl Into<IpAddr>) -> LinkConfig {
        let (from, to) = (from.into(), to.into());
        self.world.with(|st| st.faults.config(from, to))
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
        self.world.with(|st| st.partition_link(from, to));
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
        self.world.with(|st| st.heal_link(from, to));
    }

    /// Restores every cut direction.
    pub fn heal_all(&self) {
        self.world.with(|st| {
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
        self.world.with(|st| {
            st.record(TraceEvent::ResetPair { a, b });
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
        self.world.with(|st| {
            if st.faults.refusing.insert(host) {
                st.record(TraceEvent::Refuse { host });
            }
        });
    }

    /// Lets `host` accept new connections again after [`refuse`](Self::refuse).
    pub fn allow(&self, host: impl Into<IpAddr>) {
        let host = host.into();
        self.world.with(|st| {
            if st.faults.refusing.remove(&host) {
                st.record(TraceEvent::Allow { host });
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
        self.world.with(|st| st.kill(host));
    }

    /// Connections of which at least one end is still open (not dropped), including
    /// ones waiting in a listener's backlog: 0 once code under test has shut down
    /// and freed everything.
    pub fn open_connections(&self) -> usize {
        self.world.with(|st| st.conns.len())
    }

    /// The addresses listened on, in order.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.world.with(|st| {
            st.hosts
                .values()
                .flat_map(|host| host.listeners.values().map(|l| l.addr))
                .collect()
        })
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.world.seed())
            .finish_non_exhaustive()
    }
}
