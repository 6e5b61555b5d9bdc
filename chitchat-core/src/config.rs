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
//! config.max_connections = 10_000;
//! ```

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

/// Settings of one connection, the same on the server and the client side.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnConfig {
    /// Framing in both directions.
    pub frame: FrameConfig,
    /// What an oversized incoming frame costs the connection.
    pub oversize: OversizePolicy,
    /// Close the connection when nothing at all arrives for this long; restarts on
    /// every read. `None`: wait forever.
    pub idle_timeout: Option<Duration>,
    /// Close the connection when a frame, once begun, is not finished within this
    /// time: bounds a peer that trickles one byte just inside the idle timeout.
    /// `None`: no limit.
    pub frame_timeout: Option<Duration>,
    /// Close the connection when queued output makes no progress for this long (the
    /// peer stopped reading). `None`: wait forever, bounded by `max_outbound` only.
    pub write_timeout: Option<Duration>,
    /// Most bytes queued for the peer and not yet accepted by the transport. Past it
    /// the server drops the peer (it does not read); a client's write is refused. An
    /// empty queue takes any one frame, so a frame is never too big to send.
    pub max_outbound: usize,
    /// How long a closing connection may spend writing out what is already queued
    /// before it is dropped regardless.
    pub linger: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            frame: FrameConfig::default(),
            oversize: OversizePolicy::Close,
            idle_timeout: None,
            frame_timeout: None,
            write_timeout: None,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            linger: Duration::from_secs(5),
        }
    }
}

/// Settings of a server: one [`ConnConfig`] for every accepted connection, plus the
/// listener's own limits.
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
            conn: ConnConfig::default(),
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
