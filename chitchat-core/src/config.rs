//! Limits, delimiter, timeouts and their defaults: what a backend needs to know to run
//! a server or a client, with no behaviour of its own.
//!
//! The structs are `#[non_exhaustive]` with public fields: start from `default()` and
//! assign what you need, so that new knobs never break your code.
//!
//! ```
//! use chitchat_core::{Delimiter, ServerConfig};
//! use std::time::Duration;
//!
//! let mut config = ServerConfig::default();
//! config.conn.frame.delimiter = Delimiter::Byte(b';');
//! config.conn.idle_timeout = Some(Duration::from_secs(30));
//! config.conn.write_timeout = None; // off: a peer that stops reading is held
//! config.max_connections = 10_000;
//! ```
//!
//! Every limit is on by default; [`ServerConfig`] has the table of the defaults,
//! beside nginx's, and each constant says how its value was chosen.

use std::time::Duration;

/// Default largest frame, in bytes: the size of a generous protocol message, small
/// enough that 10 000 connections each holding an unfinished one stay under 1 GiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Default server-wide budget for bytes held in unfinished frames: a thousand
/// peers each one maximum frame deep. Past it, the peer holding the most is shed.
pub const DEFAULT_PARTIAL_FRAME_BUDGET: usize = 1024 * DEFAULT_MAX_FRAME_LEN;

/// Default bound on bytes queued for one peer that are not yet written to its socket.
/// Four maximum frames: a burst of replies fits, a peer that stops reading does not
/// make the server hold more than this for it.
pub const DEFAULT_MAX_OUTBOUND: usize = 4 * DEFAULT_MAX_FRAME_LEN;

/// Default share of one source IP in a server's connections: large NAT gateways put
/// hundreds of users behind one address, and 1 024 keeps any one address under 1 %
/// of the default total, so a single host cannot lock the others out.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// Default bytes of received frames a stream client keeps for its reader before it
/// stops reading from the socket: a burst of replies fits, a server that sends
/// faster than the program reads is slowed down by TCP instead of filling memory.
pub const DEFAULT_MAX_INBOUND: usize = 4 * DEFAULT_MAX_FRAME_LEN;

/// Default listen backlog. tokio's `TcpListener::bind` uses 128, which overflows when
/// thousands of clients connect at once (each overflow costs the client a 1 s SYN
/// retry); the kernel caps this value at `net.core.somaxconn` anyway.
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Default frame-completion deadline: once a frame has begun, its end must arrive
/// within this time, or the connection is closed. nginx gives a request header the
/// same 60 s (`client_header_timeout`); a peer trickling a frame byte by byte to
/// hold its memory (slowloris) is bounded by it, while a 64 KiB frame fits it down
/// to about 1 KiB/s.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Default write timeout: a peer that takes none of our output for this long is
/// dropped, as nginx's `send_timeout` (60 s) does. Longer than any pause of a live
/// reader (a TCP retransmission backs off to a minute only after minutes of loss).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default idle timeout of a server's connections: one that sends nothing at all
/// for this long is closed. chitchat's protocols are sessions that may stay quiet
/// between messages (nginx's 75 s is for an HTTP client between requests), so it
/// is longer; short enough that a flood of silent connections is reclaimed within
/// minutes. Clients have none by default: a client chose its server, which may
/// legitimately speak rarely, and keepalive notices one that vanished.
pub const DEFAULT_SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How a byte stream is cut into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delimiter {
    /// A frame ends at this byte (the byte is not part of the frame). With `b'\n'`,
    /// one `'\r'` before it is dropped too, so CRLF and LF peers both work.
    Byte(u8),
    /// The whole stream, up to the peer shutting down its write side, is one frame.
    Eof,
}

impl Delimiter {
    /// The Go library's convention: byte `0` means [`Delimiter::Eof`]. (Use
    /// `Delimiter::Byte(0)` explicitly for NUL-terminated frames.)
    ///
    /// ```
    /// use chitchat_core::Delimiter;
    /// assert_eq!(Delimiter::from_go_byte(0), Delimiter::Eof);
    /// assert_eq!(Delimiter::from_go_byte(b'\n'), Delimiter::Byte(b'\n'));
    /// ```
    pub fn from_go_byte(byte: u8) -> Self {
        match byte {
            0 => Delimiter::Eof,
            byte => Delimiter::Byte(byte),
        }
    }
}

/// Default TCP keepalive idle time: a peer silent this long is probed. Well under
/// the idle timeouts of NATs and load balancers (AWS NLB 350 s, Azure LB 4 min,
/// many home routers 5 min), so the probes also keep those paths open; one small
/// packet a minute per idle connection (1 700 a second for 100 000) costs nothing.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Default time between unanswered keepalive probes.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Default unanswered probes before the connection is dropped: five lost in a row,
/// over 50 s, is no passing loss. A peer that vanished without a word is dropped
/// 110 s after it last spoke, before the 300 s idle timeout of a server would.
pub const DEFAULT_KEEPALIVE_RETRIES: u32 = 5;

/// TCP keepalive: how the socket probes a silent peer, so that one that vanished
/// without closing (power lost, cable pulled, NAT state dropped) is noticed. The
/// connection then fails with a transport error (`TimedOut`), as if reset.
///
/// Probes go out only while nothing is in flight: a peer that does not acknowledge
/// our data is the write timeout's case.
///
/// ```
/// use chitchat_core::Keepalive;
/// use std::time::Duration;
///
/// let mut keepalive = Keepalive::default();
/// keepalive.idle = Duration::from_secs(30);
/// assert_eq!(keepalive.dead_after(), Duration::from_secs(80));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Keepalive {
    /// Silence before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between unanswered probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            retries: DEFAULT_KEEPALIVE_RETRIES,
        }
    }
}

impl Keepalive {
    /// Probes after `idle`, every `interval`, dropping after `retries` unanswered.
    pub fn new(idle: Duration, interval: Duration, retries: u32) -> Self {
        Keepalive {
            idle,
            interval,
            retries,
        }
    }

    /// How long after the peer last spoke a vanished peer is dropped.
    pub fn dead_after(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.retries))
    }
}

/// A minimum receive rate: at least `bytes` in every window of `per` in which the
/// peer sends anything (see [`ConnConfig::min_receive_rate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReceiveRate {
    /// Bytes the peer must send per window, once it sends at all.
    pub bytes: u64,
    /// The window.
    pub per: Duration,
}

impl ReceiveRate {
    /// At least `bytes` per window of `per`.
    ///
    /// # Panics
    /// If `per` is zero.
    pub fn new(bytes: u64, per: Duration) -> Self {
        assert!(!per.is_zero(), "a receive-rate window of zero");
        ReceiveRate { bytes, per }
    }
}

/// What the framer needs: where frames end and how long they may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameConfig {
    /// Where frames end.
    pub delimiter: Delimiter,
    /// Largest frame accepted from the peer and written to it, delimiter excluded
    /// (with `\n`, a `'\r'` before it counts: the framer fails fast, before it can
    /// know the `'\n'` follows). Bounds the memory one connection can make the other
    /// side buffer.
    pub max_frame_len: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            delimiter: Delimiter::Byte(b'\n'),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl FrameConfig {
    /// A config with this delimiter and the default limit.
    pub fn new(delimiter: Delimiter) -> Self {
        FrameConfig {
            delimiter,
            ..FrameConfig::default()
        }
    }
}

/// What to do with a connection whose peer sent a frame over the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OversizePolicy {
    /// Report the error and close the connection: a peer that breaks the limit is
    /// presumed broken or hostile.
    #[default]
    Close,
    /// Report the error once, drop the frame up to its delimiter, and go on: for
    /// protocols where one bad message must not cost the session.
    SkipFrame,
}

/// Settings of one connection, the same on the server and the client side (but for
/// the idle timeout's default).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnConfig {
    /// Framing in both directions.
    pub frame: FrameConfig,
    /// What an oversized incoming frame costs the connection.
    pub oversize: OversizePolicy,
    /// Close the connection when nothing at all arrives for this long; restarts on
    /// every read. `None`: wait forever. Default: [`DEFAULT_SERVER_IDLE_TIMEOUT`]
    /// on a server ([`ServerConfig::default`]), `None` on a client.
    pub idle_timeout: Option<Duration>,
    /// Close the connection when a frame, once begun, is not finished within this
    /// time: bounds a peer that trickles one byte just inside the idle timeout.
    /// `None`: no limit. Default: [`DEFAULT_FRAME_TIMEOUT`].
    pub frame_timeout: Option<Duration>,
    /// Close the connection when queued output makes no progress for this long (the
    /// peer stopped reading). `None`: wait forever, bounded by `max_outbound` only.
    /// Default: [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Option<Duration>,
    /// Most bytes queued for the peer and not yet accepted by the transport. Past it
    /// the server drops the peer (it does not read); a client's write is refused. An
    /// empty queue takes any one frame, so a frame is never too big to send.
    pub max_outbound: usize,
    /// How long a closing connection may spend writing out what is already queued
    /// before it is dropped regardless.
    pub linger: Duration,
    /// TCP keepalive on the connection's socket, to notice a peer that vanished
    /// without closing. `None`: no probes, such a peer is held until a timeout (or
    /// forever). Transports without keepalive ignore it.
    pub keepalive: Option<Keepalive>,
    /// Close the connection when, in a window in which the peer sent anything, it
    /// sent fewer bytes than this (windows run back to back from the connection's
    /// start); a window with nothing is left to `idle_timeout`. Bounds a peer that
    /// holds its connection by trickling complete frames (`a\n` every second dodges
    /// both the idle and the frame timeout).
    ///
    /// Default: `None`. No rate tells such a peer from an honest quiet one (a chat
    /// member who types a line a minute sends less than a trickler at one byte a
    /// second), so the value depends on the protocol; what bounds tricklers by
    /// default is the connection limits (`max_connections_per_ip`,
    /// `max_connections`): each holds one connection of its IP's share, and the
    /// idle timeout still closes it when it stops.
    pub min_receive_rate: Option<ReceiveRate>,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            frame: FrameConfig::default(),
            oversize: OversizePolicy::Close,
            idle_timeout: None,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            max_outbound: DEFAULT_MAX_OUTBOUND,
            linger: Duration::from_secs(5),
            keepalive: Some(Keepalive::default()),
            min_receive_rate: None,
        }
    }
}

/// Settings of a server: one [`ConnConfig`] for every accepted connection (with the
/// idle timeout on: [`DEFAULT_SERVER_IDLE_TIMEOUT`]), plus the listener's own limits.
///
/// # Defaults
/// Every limit is on by default, with a value meant for a server facing the
/// internet; each `DEFAULT_*` constant says how it was chosen, and each can be turned
/// off (`None`, or `usize::MAX` for a size). nginx's defaults are beside them for
/// comparison (nginx serves HTTP requests, chitchat long-lived sessions, so the idle
/// time is longer here).
///
/// | setting | chitchat | nginx |
/// | --- | --- | --- |
/// | frame must be complete within ([`DEFAULT_FRAME_TIMEOUT`]) | 60 s | `client_header_timeout 60s` |
/// | idle read timeout, server ([`DEFAULT_SERVER_IDLE_TIMEOUT`]) | 300 s | `keepalive_timeout 75s` |
/// | idle read timeout, client | none | (`proxy_read_timeout 60s`) |
/// | write makes no progress for ([`DEFAULT_WRITE_TIMEOUT`]) | 60 s | `send_timeout 60s` |
/// | TCP keepalive ([`Keepalive::default`]) | on: 60 s idle, 10 s × 5 probes | `so_keepalive=off` |
/// | minimum receive rate ([`ConnConfig::min_receive_rate`]) | off: protocol-dependent | none (Apache `mod_reqtimeout`: 500 B/s within a request) |
/// | largest frame ([`DEFAULT_MAX_FRAME_LEN`]) | 64 KiB | `large_client_header_buffers 4 8k`, `client_max_body_size 1m` |
/// | output queued per peer ([`DEFAULT_MAX_OUTBOUND`]) | 256 KiB | (`proxy_buffers 8 4k\|8k`) |
/// | unfinished frames, all peers ([`DEFAULT_PARTIAL_FRAME_BUDGET`]) | 64 MiB | none |
/// | connections ([`ServerConfig::max_connections`]) | 100 000 | `worker_connections 512` per worker |
/// | connections per source IP ([`DEFAULT_MAX_CONNECTIONS_PER_IP`]) | 1 024 | `limit_conn`: none |
/// | listen backlog ([`DEFAULT_BACKLOG`]) | 4 096 | `backlog=511` |
/// | linger at close ([`ConnConfig::linger`]) | 5 s | `lingering_timeout 5s` |
/// | TLS handshake (chitchat-tokio's `TlsBinder`) | 10 s, 16 KiB, 1 024 at once | `ssl_handshake_timeout 60s` (stream) |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Applied to every accepted connection.
    pub conn: ConnConfig,
    /// Connections served at once (closing ones included: they still hold a
    /// socket); more are closed at accept, with a refusal event.
    pub max_connections: usize,
    /// Connections one source IP may hold at once (see
    /// [`DEFAULT_MAX_CONNECTIONS_PER_IP`]); `usize::MAX` turns the limit off. Unix
    /// socket peers count only in `max_connections`.
    pub max_connections_per_ip: usize,
    /// Pending connections the kernel queues before `accept` (see [`DEFAULT_BACKLOG`]).
    pub backlog: u32,
    /// Memory all connections together may hold for unfinished frames (the read
    /// buffers they keep while a frame is incomplete, counted by capacity); past it
    /// the connection holding the most is shed (see [`DEFAULT_PARTIAL_FRAME_BUDGET`]).
    pub partial_frame_budget: usize,
    /// Events kept for each subscriber of the event stream; one that falls further
    /// behind loses its oldest and counts them, so a slow reader never slows the
    /// server.
    pub event_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            conn: ConnConfig {
                idle_timeout: Some(DEFAULT_SERVER_IDLE_TIMEOUT),
                ..ConnConfig::default()
            },
            max_connections: 100_000,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            backlog: DEFAULT_BACKLOG,
            partial_frame_budget: DEFAULT_PARTIAL_FRAME_BUDGET,
            event_capacity: 1024,
        }
    }
}

/// Settings of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The connection's settings.
    pub conn: ConnConfig,
    /// How long dialing may take before it fails with a timeout.
    pub connect_timeout: Duration,
    /// Events kept for a reader of the event stream (see [`ServerConfig`]).
    pub event_capacity: usize,
    /// Without a handler, received frames wait for the client's reader (its
    /// `Stream`); past this many bytes the client stops reading from the socket
    /// until the reader catches up (see [`DEFAULT_MAX_INBOUND`]).
    pub max_inbound: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            conn: ConnConfig::default(),
            connect_timeout: Duration::from_secs(10),
            event_capacity: 64,
            max_inbound: DEFAULT_MAX_INBOUND,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_on_by_default_but_a_clients_idle_timeout() {
        let server = ServerConfig::default().conn;
        assert_eq!(server.idle_timeout, Some(DEFAULT_SERVER_IDLE_TIMEOUT));
        let client = ClientConfig::default().conn;
        assert_eq!(client.idle_timeout, None);
        for conn in [server, client] {
            assert_eq!(conn.frame_timeout, Some(DEFAULT_FRAME_TIMEOUT));
            assert_eq!(conn.write_timeout, Some(DEFAULT_WRITE_TIMEOUT));
            assert_eq!(conn.keepalive, Some(Keepalive::default()));
        }
    }
}
