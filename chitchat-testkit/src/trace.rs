//! The recorder of a [`Network`](crate::Network): every connect, accept, refusal,
//! close, byte count and injected fault, stamped with the virtual time since the
//! network was created. Tests read it in assertions, print it when they fail, and
//! compare two runs of the same seed entry by entry.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::fault::LinkConfig;

/// The identity of one connection in a network's trace: numbered from 0 in the order
/// connections are established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One line of the trace: what happened, and when.
///
/// ```
/// use std::time::Duration;
/// use chitchat_testkit::{TraceEvent, TraceEntry};
///
/// let entry = TraceEntry {
///     at: Duration::from_millis(1500),
///     event: TraceEvent::Kill { host: [10, 0, 0, 1].into() },
/// };
/// assert_eq!(entry.to_string(), "1.500000s fault kill 10.0.0.1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual time since the network was created (tokio's clock, so paused time
    /// counts as it is advanced).
    pub at: Duration,
    /// What happened.
    pub event: TraceEvent,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s {}",
            self.at.as_secs(),
            self.at.subsec_micros(),
            self.event
        )
    }
}

/// Something the network did or was told to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A listener was bound.
    Bind {
        /// The address it listens on (the real port when 0 was asked for).
        addr: SocketAddr,
    },
    /// A listener was dropped; connections it had not accepted were reset.
    Unbind {
        /// The address it listened on.
        addr: SocketAddr,
    },
    /// A host started to connect (its SYN left).
    Connect {
        /// The connecting end, with its ephemeral port.
        from: SocketAddr,
        /// The address dialled.
        to: SocketAddr,
    },
    /// A connect was refused: nobody listens there, or the host refuses connections.
    Refused {
        /// The connecting end.
        from: SocketAddr,
        /// The address dialled.
        to: SocketAddr,
    },
    /// A listener handed out a connection.
    Accept {
        /// The connection.
        conn: ConnId,
        /// Its connecting end.
        client: SocketAddr,
        /// Its listening end.
        server: SocketAddr,
    },
    /// A connect returned its connection to the caller.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Its connecting end.
        client: SocketAddr,
        /// Its listening end.
        server: SocketAddr,
    },
    /// A write was taken by the network.
    Sent {
        /// The connection.
        conn: ConnId,
        /// The writing end.
        from: SocketAddr,
        /// The other end.
        to: SocketAddr,
        /// Bytes taken.
        len: usize,
    },
    /// A read handed bytes to the application.
    Delivered {
        /// The connection.
        conn: ConnId,
        /// The end that wrote them.
        from: SocketAddr,
        /// The reading end.
        to: SocketAddr,
        /// Bytes read.
        len: usize,
    },
    /// One end shut down its write side (half-close).
    Shutdown {
        /// The connection.
        conn: ConnId,
        /// The end that shut down.
        by: SocketAddr,
    },
    /// One end was closed (dropped).
    Close {
        /// The connection.
        conn: ConnId,
        /// The end that closed.
        by: SocketAddr,
    },
    /// One end was closed abortively (with a reset), because it had unread input or
    /// was [aborted](crate::SimConn::abort): the other end reads what had reached
    /// it, then `ConnectionReset`.
    Abort {
        /// The connection.
        conn: ConnId,
        /// The end that closed.
        by: SocketAddr,
    },
    /// One end's keepalive probes went unanswered across a cut link: its reads fail
    /// with `TimedOut` from now on (see [`SimConn`](crate::SimConn)).
    KeepaliveTimeout {
        /// The connection.
        conn: ConnId,
        /// The end that gave up.
        by: SocketAddr,
    },
    /// A connection was reset by a fault or a kill: every read and write on it
    /// fails from now on.
    Reset {
        /// The connection.
        conn: ConnId,
        /// Its connecting end.
        client: SocketAddr,
        /// Its listening end.
        server: SocketAddr,
    },
    /// Fault: a link was given a config of its own (or the default changed, when
    /// `from` and `to` are `None`).
    SetLink {
        /// The sending host, or `None` for the default of all links.
        from: Option<IpAddr>,
        /// The receiving host, or `None` for the default of all links.
        to: Option<IpAddr>,
        /// The new config.
        config: LinkConfig,
    },
    /// Fault: a direction was cut.
    Partition {
        /// The sending host.
        from: IpAddr,
        /// The receiving host.
        to: IpAddr,
    },
    /// Fault: a cut direction was restored; held bytes are on their way again.
    Heal {
        /// The sending host.
        from: IpAddr,
        /// The receiving host.
        to: IpAddr,
    },
    /// Fault: the connections between two hosts were reset.
    ResetPair {
        /// One host.
        a: IpAddr,
        /// The other host.
        b: IpAddr,
    },
    /// Fault: a host started refusing new connections.
    Refuse {
        /// The host.
        host: IpAddr,
    },
    /// Fault: a host accepts new connections again.
    Allow {
        /// The host.
        host: IpAddr,
    },
    /// Fault: a host was killed: its connections reset, its listeners gone.
    Kill {
        /// The host.
        host: IpAddr,
    },
}

impl TraceEvent {
    /// Whether this is a fault injected by the test rather than traffic.
    ///
    /// ```
    /// use chitchat_testkit::TraceEvent;
    /// assert!(TraceEvent::Kill { host: [10, 0, 0, 1].into() }.is_fault());
    /// ```
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            TraceEvent::SetLink { .. }
                | TraceEvent::Partition { .. }
                | TraceEvent::Heal { .. }
                | TraceEvent::ResetPair { .. }
                | TraceEvent::Refuse { .. }
                | TraceEvent::Allow { .. }
                | TraceEvent::Kill { .. }
        )
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceEvent::Bind { addr } => write!(f, "bind {addr}"),
            TraceEvent::Unbind { addr } => write!(f, "unbind {addr}"),
            TraceEvent::Connect { from, to } => write!(f, "connect {from} -> {to}"),
            TraceEvent::Refused { from, to } => write!(f, "refused {from} -> {to}"),
            TraceEvent::Accept {
                conn,
                client,
                server,
            } => {
                write!(f, "accept {conn} {client} -> {server}")
            }
            TraceEvent::Connected {
                conn,
                client,
                server,
            } => {
                write!(f, "connected {conn} {client} -> {server}")
            }
            TraceEvent::Sent {
                conn,
                from,
                to,
                len,
            } => write!(f, "sent {conn} {from} -> {to} {len}B"),
            TraceEvent::Delivered {
                conn,
                from,
                to,
                len,
            } => {
                write!(f, "delivered {conn} {from} -> {to} {len}B")
            }
            TraceEvent::Shutdown { conn, by } => write!(f, "shutdown {conn} by {by}"),
            TraceEvent::Close { conn, by } => write!(f, "close {conn} by {by}"),
            TraceEvent::Abort { conn, by } => write!(f, "abort {conn} by {by}"),
            TraceEvent::KeepaliveTimeout { conn, by } => {
                write!(f, "keepalive timeout {conn} by {by}")
            }
            TraceEvent::Reset {
                conn,
                client,
                server,
            } => {
                write!(f, "reset {conn} {client} -> {server}")
            }
            TraceEvent::SetLink { from, to, config } => match (from, to) {
                (Some(from), Some(to)) => write!(f, "fault link {from} -> {to} {config:?}"),
                _ => write!(f, "fault default link {config:?}"),
            },
            TraceEvent::Partition { from, to } => write!(f, "fault partition {from} -> {to}"),
            TraceEvent::Heal { from, to } => write!(f, "fault heal {from} -> {to}"),
            TraceEvent::ResetPair { a, b } => write!(f, "fault reset {a} <-> {b}"),
            TraceEvent::Refuse { host } => write!(f, "fault refuse {host}"),
            TraceEvent::Allow { host } => write!(f, "fault allow {host}"),
            TraceEvent::Kill { host } => write!(f, "fault kill {host}"),
        }
    }
}
