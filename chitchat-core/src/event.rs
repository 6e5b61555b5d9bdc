//! What happens in the background, as a bounded stream: errors and closed connections.
//!
//! The Go library's error channel blocked the server when nobody drained it. Here the
//! queue keeps the newest [`ServerConfig::event_capacity`](crate::ServerConfig) events
//! and drops the oldest, counting them: an unread stream costs a fixed amount of
//! memory and never slows anything down.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

use crate::addr::Addr;
use crate::error::ConnError;
use crate::stats::{ErrorCounters, ErrorCounts};

/// Why a connection ended. Exactly one close event is emitted per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer shut down its side; queued replies were written out first.
    PeerEof,
    /// The peer reset the connection, or the transport failed.
    PeerReset,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// A frame was not finished within the frame timeout.
    FrameTimeout,
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
    /// The server was at its connection limit.
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

/// The end of one connection.
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

impl CloseEvent {
    /// A close event (for backends).
    pub fn new(peer: Addr, reason: CloseReason, stats: ConnStats) -> Self {
        CloseEvent {
            peer,
            reason,
            stats,
        }
    }
}

/// One item of the event stream.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Something went wrong; the error names the peer.
    Error(ConnError),
    /// A connection ended.
    Closed(CloseEvent),
}

impl Event {
    /// The error, if this event is one.
    pub fn as_error(&self) -> Option<&ConnError> {
        match self {
            Event::Error(err) => Some(err),
            Event::Closed(_) => None,
        }
    }

    /// The close event, if this event is one.
    pub fn as_closed(&self) -> Option<&CloseEvent> {
        match self {
            Event::Closed(close) => Some(close),
            Event::Error(_) => None,
        }
    }
}

/// Creates a bounded event queue: the backend keeps the sink, users get streams.
///
/// ```
/// use chitchat_core::{event_queue, CloseEvent, CloseReason, ConnStats, Event};
/// use futures::StreamExt;
///
/// let (sink, mut stream) = event_queue(2);
/// let peer = "127.0.0.1:1".parse().unwrap();
/// for _ in 0..3 {
///     sink.emit(Event::Closed(CloseEvent::new(peer, CloseReason::PeerEof, ConnStats::default())));
/// }
/// assert_eq!(stream.dropped(), 1); // capacity 2: the oldest went
/// assert!(futures::executor::block_on(stream.next()).is_some());
/// ```
///
/// # Panics
/// If `capacity` is 0.
pub fn event_queue(capacity: usize) -> (EventSink, EventStream) {
    let (sender, receiver) = async_channel::bounded(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        EventSink {
            sender,
            dropped: dropped.clone(),
            errors: Arc::default(),
        },
        EventStream {
            receiver: Box::pin(receiver),
            dropped,
        },
    )
}

/// The sending side of an event queue, held by the backend. Never blocks.
#[derive(Clone, Debug)]
pub struct EventSink {
    sender: async_channel::Sender<Event>,
    dropped: Arc<AtomicU64>,
    errors: Arc<ErrorCounters>,
}

impl EventSink {
    /// Queues `event`, dropping the oldest one when the queue is full.
    pub fn emit(&self, event: Event) {
        match self.sender.force_send(event) {
            Ok(None) => {}
            // Displaced the oldest event, or every stream is gone: counted either way.
            Ok(Some(_)) | Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts and queues an error event.
    pub fn error(&self, error: ConnError) {
        self.errors.count(error.kind());
        self.emit(Event::Error(error));
    }

    /// Errors reported so far, by kind.
    pub fn error_counts(&self) -> ErrorCounts {
        self.errors.snapshot()
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Marks the end of the stream: readers get `None` once the queue is drained.
    pub fn close(&self) {
        self.sender.close();
    }
}

/// The background events of a server or client, in order, as a `Stream`.
///
/// Clones share one queue: each event goes to one of them.
#[derive(Debug)]
pub struct EventStream {
    // Boxed so that the stream is `Unpin` (the channel's receiver is not) and
    // `stream.next().await` works without pinning.
    receiver: Pin<Box<async_channel::Receiver<Event>>>,
    dropped: Arc<AtomicU64>,
}

impl Clone for EventStream {
    fn clone(&self) -> Self {
        EventStream {
            receiver: Box::pin((*self.receiver).clone()),
            dropped: self.dropped.clone(),
        }
    }
}

impl EventStream {
    /// Events dropped so far because the queue was full (or nobody could read them).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next(&self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.receiver.as_mut().poll_next(cx)
    }
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that wrote out their queued output and shut down in order.
    pub drained: usize,
    /// Connections closed with output still queued (cut, or the grace ran out).
    pub forced: usize,
}

impl ShutdownReport {
    /// A report (for backends).
    pub fn new(drained: usize, forced: usize) -> Self {
        ShutdownReport { drained, forced }
    }
}
