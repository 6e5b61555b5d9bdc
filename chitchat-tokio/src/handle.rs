//! The part of a connection that other tasks can reach: the registry, `write_to`,
//! `broadcast`, `close_remote`, a client's `try_write`. They queue output and requests
//! here and wake the connection's task, which owns the socket.
//!
//! Kept small, since every open connection has one: what is the same for every
//! connection of a server (framer, bounds) is passed in by the caller.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use chitchat_core::{Addr, CloseReason, Framer, WriteError};
use futures::task::AtomicWaker;

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
struct Inbox {
    /// Encoded frames, delimiters included.
    out: BytesMut,
    /// How many frames `out` holds, for the counters.
    frames: u64,
    /// The strongest close request so far.
    close: Option<CloseRequest>,
}

/// How much a connection may queue, and what a full queue means.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutboundBound {
    pub(crate) limit: usize,
    /// On a server a full queue means the peer does not read: it is dropped. A
    /// client only refuses the write; its user can wait for room.
    pub(crate) drop_when_full: bool,
}

/// Shared between a connection's task and everything that holds its handle.
#[derive(Debug)]
pub(crate) struct ConnShared {
    peer: PeerAddr,
    /// Accept order, set once when registered.
    seq: AtomicU64,
    /// Allocated by the first write or request from outside, freed when the task
    /// takes it: most connections of a server never have one.
    inbox: Mutex<Option<Box<Inbox>>>,
    /// Set whenever `inbox` has something, so the task's hot path skips the lock.
    inbox_ready: AtomicBool,
    /// No more output accepted (closing or closed).
    write_closed: AtomicBool,
    /// Closed for the application: no longer a peer, though its task may still be
    /// writing out and draining (linger).
    closing: AtomicBool,
    /// Bytes queued and not yet written to the transport: the inbox's and the
    /// task's together. One counter, so the outbound bound is exact.
    queued: AtomicUsize,
    /// Bytes of an unfinished frame the task holds, for the server's budget.
    partial: AtomicUsize,
    waker: AtomicWaker,
}

/// A peer address in 32 bytes where an [`Addr`] takes 92 (it holds a Unix name
/// inline): every connection keeps its peer's, and IP peers are the common case.
#[derive(Debug)]
enum PeerAddr {
    Inet(SocketAddr),
    Other(Box<Addr>),
}

impl PeerAddr {
    fn new(addr: Addr) -> Self {
        match addr {
            Addr::Inet(inet) => PeerAddr::Inet(inet),
            other => PeerAddr::Other(Box::new(other)),
        }
    }

    fn get(&self) -> Addr {
        match self {
            PeerAddr::Inet(inet) => Addr::Inet(*inet),
            PeerAddr::Other(addr) => **addr,
        }
    }
}

/// A cheap, clonable handle to one connection.
pub(crate) type ConnHandle = Arc<ConnShared>;

impl ConnShared {
    pub(crate) fn new(peer: Addr) -> Self {
        ConnShared {
            peer: PeerAddr::new(peer),
            seq: AtomicU64::new(0),
            inbox: Mutex::new(None),
            inbox_ready: AtomicBool::new(false),
            write_closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            partial: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn inbox(&self) -> MutexGuard<'_, Option<Box<Inbox>>> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> Addr {
        self.peer.get()
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub(crate) fn set_seq(&self, seq: u64) {
        self.seq.store(seq, Ordering::Relaxed);
    }

    /// Queues one frame for the peer, encoded by `framer`, within `bound`. A full
    /// queue on a server asks the task to drop the peer; the caller reports it.
    pub(crate) fn write(
        &self,
        payload: &[u8],
        framer: &Framer,
        bound: OutboundBound,
    ) -> Result<(), WriteError> {
        let peer = self.peer();
        let mut guard = self.inbox();
        if self.write_closed.load(Ordering::Acquire) {
            return Err(WriteError::Closed { peer });
        }
        let inbox = guard.get_or_insert_with(Box::default);
        let before = inbox.out.len();
        framer
            .encode(payload, &mut inbox.out)
            .map_err(|source| WriteError::Encode { peer, source })?;
        let len = inbox.out.len() - before;
        // An empty queue takes any frame: the bound is on backlog, and a frame the
        // framer accepts must always be sendable.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > bound.limit {
            inbox.out.truncate(before);
            if bound.drop_when_full {
                inbox.close = Some(CloseRequest::Abort(CloseReason::WriteStalled));
                self.write_closed.store(true, Ordering::Release);
                drop(guard);
                self.wake();
            }
            return Err(WriteError::OutboundFull {
                peer,
                limit: bound.limit,
            });
        }
        inbox.frames += 1;
        self.queued.fetch_add(len, Ordering::AcqRel);
        drop(guard);
        self.wake();
        Ok(())
    }

    /// Asks the task to close. A later request only ever strengthens an earlier one
    /// (abort beats graceful beats write shutdown).
    pub(crate) fn request_close(&self, request: CloseRequest) {
        let mut guard = self.inbox();
        let inbox = guard.get_or_insert_with(Box::default);
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
        if request != CloseRequest::ShutdownWrite {
            self.write_closed.store(true, Ordering::Release);
        }
        drop(guard);
        self.wake();
    }

    /// Makes the task look at its state again (e.g. after a timeout changed).
    pub(crate) fn nudge(&self) {
        self.wake();
    }

    /// Makes the task poll again, with nothing queued (a deadline has come).
    pub(crate) fn wake_task(&self) {
        self.waker.wake();
    }

    fn wake(&self) {
        self.inbox_ready.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// For the task: registers its waker and takes what was queued, if anything:
    /// appends the frames to `into` and returns how many, and the close request.
    pub(crate) fn take_inbox(
        &self,
        waker: &std::task::Waker,
        into: &mut BytesMut,
    ) -> Option<(u64, Option<CloseRequest>)> {
        self.waker.register(waker);
        if !self.inbox_ready.swap(false, Ordering::AcqRel) {
            return None;
        }
        let inbox = self.inbox().take()?;
        let Inbox { out, frames, close } = *inbox;
        if into.is_empty() {
            *into = out;
        } else {
            into.extend_from_slice(&out);
        }
        Some((frames, close))
    }

    /// For the task: stop accepting output from outside.
    pub(crate) fn close_writes(&self) {
        self.write_closed.store(true, Ordering::Release);
    }

    /// For the task: the connection is closed for the application.
    pub(crate) fn set_closing(&self) {
        self.close_writes();
        self.closing.store(true, Ordering::Release);
    }

    /// Closed for the application (its task may still linger).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Bytes queued and not yet written, inbox included.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// For the task: counts `n` more bytes queued by its handler.
    pub(crate) fn add_queued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    /// For the task: `n` queued bytes were written (or `all`, at the end).
    pub(crate) fn sub_queued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// For the task, at the end: nothing is queued any more.
    pub(crate) fn clear_queued(&self) {
        self.queued.store(0, Ordering::Release);
    }

    /// Bytes of an unfinished frame the task holds.
    pub(crate) fn partial(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    pub(crate) fn set_partial(&self, held: usize) {
        self.partial.store(held, Ordering::Relaxed);
    }
}
