//! What a server or client reports about its connections: [`ConnEvent`]s (errors and
//! closes), each close with its [`CloseReason`] and [`ConnStats`].

use crate::addr::Addr;
use crate::error::ConnError;

/// Why a connection ended. Exactly one close is reported per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer shut down its side; queued replies were written out first.
    PeerEof,
    /// The peer reset the connection, or the transport failed.
    PeerReset,
    /// The peer vanished without closing (host down, cable pulled): the
    /// transport's keepalive probes went unanswered.
    PeerVanished,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// A frame was not finished within the frame timeout.
    FrameTimeout,
    /// The peer sent less than the minimum receive rate.
    TooSlow,
    /// Dropped to keep the server's unfinished-frame bytes within budget.
    Shed,
    /// The peer sent a frame over the limit (with [`OversizePolicy::Close`](crate::OversizePolicy)).
    FrameTooLong,
    /// The peer did not read: the write timeout or the outbound bound was hit.
    WriteStalled,
    /// The handler called [`ReadContext::close`](crate::ReadContext::close).
    ClosedByHandler,
    /// Closed from outside the handler: `close_remote`, or a client's `close`.
    ClosedLocally,
    /// The server was at a connection limit (its total, or the peer's IP's share).
    Refused,
    /// The handler panicked.
    HandlerPanic,
    /// The server or client was shut down.
    Shutdown,
}

/// Traffic counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnStats {
    /// Frames received and handed to the handler.
    pub frames_in: u64,
    /// Frames queued for the peer (replies and writes).
    pub frames_out: u64,
    /// Bytes read from the transport.
    pub bytes_in: u64,
    /// Bytes written to the transport.
    pub bytes_out: u64,
}

/// The end of one connection, reported when the connection is closed for the
/// application: no more frames are handled and no more writes accepted.
///
/// A closing connection may still spend up to its linger time writing out what was
/// queued and reading (and discarding) what the peer still sends, so that our last
/// bytes are not destroyed by a reset; the close is reported without waiting for
/// that. `frames_in` and `frames_out` are final; `bytes_in` and `bytes_out` count
/// what had gone through when the close was reported (what the linger moves later
/// is added to the server's or client's `stats()`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseEvent {
    /// The peer of the connection.
    pub peer: Addr,
    /// Why it closed.
    pub reason: CloseReason,
    /// What went through it.
    pub stats: ConnStats,
}

/// What a server or client reports in the background, on its event stream.
///
/// ```
/// use chitchat_core::{CloseReason, ConnEvent};
///
/// fn log(event: &ConnEvent) {
///     match event {
///         ConnEvent::Error(error) => eprintln!("{error}"),
///         ConnEvent::Closed(close) if close.reason == CloseReason::PeerEof => {}
///         ConnEvent::Closed(close) => eprintln!("{} closed: {:?}", close.peer, close.reason),
///         _ => {}
///     }
/// }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnEvent {
    /// Something went wrong; the error names the peer.
    Error(ConnError),
    /// A connection ended.
    Closed(CloseEvent),
}

impl ConnEvent {
    /// The error, if this event is one.
    pub fn as_error(&self) -> Option<&ConnError> {
        match self {
            ConnEvent::Error(err) => Some(err),
            ConnEvent::Closed(_) => None,
        }
    }

    /// The close, if this event is one.
    pub fn as_closed(&self) -> Option<&CloseEvent> {
        match self {
            ConnEvent::Closed(close) => Some(close),
            ConnEvent::Error(_) => None,
        }
    }
}
