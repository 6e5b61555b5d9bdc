//! The part of a connection that other tasks can reach: the registry, a client
//! handle, `write_to` and `close_remote`. They queue output and requests here and wake
//! the connection's task, which owns the socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use chitchat_core::{Addr, CloseEvent, CloseReason, ConnError, EventSink, Framer, WriteError};
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::report;

/// How a connection should end, as asked from outside its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    /// Write out what is queued (within `linger`), shut down, close.
    Graceful {
        reason: CloseReason,
        linger: Option<Duration>,
    },
    /// Our write side only: keep reading (a client's `shutdown`).
    ShutdownWrite,
    /// Drop the connection now, queued output included.
    Abort(CloseReason),
}

/// What outside tasks queued for the connection task.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Encoded frames, delimiters included.
    pub(crate) out: BytesMut,
    /// How many frames `out` holds, for the counters.
    pub(crate) frames: u64,
    /// The strongest close request so far.
    pub(crate) close: Option<CloseRequest>,
}

/// Shared between a connection's task and everything that holds its handle.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) peer: Addr,
    pub(crate) local: Addr,
    /// Encodes external writes exactly as the task encodes replies.
    framer: Framer,
    max_outbound: usize,
    /// On the server a full queue means the peer does not read: drop it. A client
    /// only refuses the write; its user can flush and retry.
    drop_when_full: bool,
    events: EventSink,
    inbox: Mutex<Inbox>,
    /// Set whenever `inbox` has something, so the task's hot path skips the lock.
    inbox_ready: AtomicBool,
    /// No more output accepted (closing or closed).
    write_closed: AtomicBool,
    /// Bytes queued and not yet written to the transport: the inbox's and the
    /// task's together. One counter, so the outbound bound is exact.
    pub(crate) queued: AtomicUsize,
    /// Bytes of an unfinished frame the task holds, for the server's budget.
    pub(crate) partial: AtomicUsize,
    waker: AtomicWaker,
    /// Woken when the task's queue empties, for `flush`.
    pub(crate) drained: Notify,
    closed: OnceLock<CloseEvent>,
    closed_notify: Notify,
}

impl ConnShared {
    pub(crate) fn new(
        peer: Addr,
        local: Addr,
        framer: Framer,
        max_outbound: usize,
        drop_when_full: bool,
        events: EventSink,
    ) -> Self {
        ConnShared {
            peer,
            local,
            framer,
            max_outbound,
            drop_when_full,
            events,
            inbox: Mutex::new(Inbox::default()),
            inbox_ready: AtomicBool::new(false),
            write_closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            partial: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
            drained: Notify::new(),
            closed: OnceLock::new(),
            closed_notify: Notify::new(),
        }
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues one frame for the peer.
    pub(crate) fn write(&self, payload: &[u8]) -> Result<(), WriteError> {
        let peer = self.peer;
        let mut inbox = self.inbox();
        if self.write_closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed { peer });
        }
        let before = inbox.out.len();
        self.framer
            .encode(payload, &mut inbox.out)
            .map_err(|source| WriteError::Encode { peer, source })?;
        let len = inbox.out.len() - before;
        // An empty queue takes any frame: the bound is on backlog, and a frame the
        // framer accepts must always be sendable.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > self.max_outbound {
            inbox.out.truncate(before);
            let limit = self.max_outbound;
            if self.drop_when_full {
                inbox.close = Some(CloseRequest::Abort(CloseReason::WriteStalled));
                self.write_closed.store(true, Ordering::Release);
                drop(inbox);
                report::error(&self.events, ConnError::OutboundFull { peer, limit });
                self.wake();
            }
            return Err(WriteError::OutboundFull { peer, limit });
        }
        inbox.frames += 1;
        self.queued.fetch_add(len, Ordering::AcqRel);
        drop(inbox);
        self.wake();
        Ok(())
    }

    /// Asks the task to close. A later request only ever strengthens an earlier one
    /// (abort beats graceful beats write shutdown).
    pub(crate) fn request_close(&self, request: CloseRequest) {
        let mut inbox = self.inbox();
        let stronger = match (inbox.close, request) {
            (None, _) => true,
            (Some(CloseRequest::Abort(_)), _) => false,
            (Some(_), CloseRequest::Abort(_)) => true,
            (Some(CloseRequest::ShutdownWrite), CloseRequest::Graceful { .. }) => true,
            (Some(_), _) => false,
        };
        if stronger {
            inbox.close = Some(request);
        }
        self.write_closed.store(true, Ordering::Release);
        drop(inbox);
        self.wake();
    }

    /// Makes the task look at its state again (e.g. after a timeout changed).
    pub(crate) fn nudge(&self) {
        self.wake();
    }

    fn wake(&self) {
        self.inbox_ready.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// For the task: registers its waker and takes what was queued, if anything.
    pub(crate) fn take_inbox(
        &self,
        waker: &std::task::Waker,
        into: &mut BytesMut,
    ) -> Option<(u64, Option<CloseRequest>)> {
        self.waker.register(waker);
        if !self.inbox_ready.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut inbox = self.inbox();
        if into.is_empty() {
            std::mem::swap(into, &mut inbox.out);
        } else {
            into.extend_from_slice(&inbox.out);
            inbox.out.clear();
        }
        let frames = std::mem::take(&mut inbox.frames);
        Some((frames, inbox.close.take()))
    }

    /// For the task: stop accepting output from outside.
    pub(crate) fn close_writes(&self) {
        self.write_closed.store(true, Ordering::Release);
    }

    /// Bytes queued and not yet written, inbox included.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The bound on [`queued`](Self::queued).
    pub(crate) fn max_outbound(&self) -> usize {
        self.max_outbound
    }

    /// Whether a full queue drops the peer (server) or only refuses (client).
    pub(crate) fn drops_when_full(&self) -> bool {
        self.drop_when_full
    }

    pub(crate) fn events(&self) -> &EventSink {
        &self.events
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// For the task, once: the connection is gone.
    pub(crate) fn set_closed(&self, event: CloseEvent) {
        self.write_closed.store(true, Ordering::Release);
        let _ = self.closed.set(event);
        self.closed_notify.notify_waiters();
        self.drained.notify_waiters();
    }

    /// Waits until the connection is gone.
    pub(crate) async fn closed(&self) -> CloseEvent {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.closed.get() {
                return event.clone();
            }
            notified.await;
        }
    }

    /// Waits until everything queued so far is written to the transport.
    pub(crate) async fn flush(&self) -> Result<(), WriteError> {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queued() == 0 {
                return Ok(());
            }
            if self.is_closed() {
                return Err(WriteError::Closed { peer: self.peer });
            }
            notified.await;
        }
    }
}

/// A cheap, clonable handle to one connection.
pub(crate) type ConnHandle = Arc<ConnShared>;
