//! One connection's task: transport → framer → handler → coalesced writes, with the
//! idle, write and linger timers, written once for every transport.
//!
//! The task is a hand-written future rather than an `async` block with `select!`: it
//! owns the socket, the read buffer and the output buffer, polls reads, writes and
//! one timer from the same `poll`, and so can
//! - wait for readability with no read buffer at all, and give back everything a
//!   connection needs only while it works (the [`busy`] state: buffers, framer,
//!   the clocks of work in progress), so that an idle connection is a small task;
//! - call the handler for every frame of a read, then write all their replies at once;
//! - stop reading while the peer does not take our output (backpressure);
//! - move deadlines without touching the timer wheel on every read (the timer fires
//!   at the old deadline and is re-armed only if the deadline moved).

use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chitchat_core::backend::{close_event, lend_frame, FrameExtent, LocateFrames};
use chitchat_core::{
    Addr, CloseReason, ConnConfig, ConnError, ConnStats, Connection, FrameError, OversizePolicy,
};
use tokio::time::Instant;

use crate::clock::Stamp;
use crate::ctx::{Ctx, Request};
use crate::deadlines::Sweeper;
use crate::erased::{ConnState, ErasedHandler};
use crate::handle::{CloseRequest, ConnHandle};
use crate::hub::Hub;
use crate::shutdown::Finished;

mod busy;
mod read_room;

use busy::{BufferSizes, Busy};

/// Largest single read: full-size reads that fill the buffer double the next one
/// up to this.
const MAX_READ: usize = 64 * 1024;

/// Rounds (read, handle, write) per poll before the task yields to its neighbours.
const ROUNDS_PER_POLL: usize = 32;

/// What every connection of one server (or one client) shares.
pub(crate) struct ConnParams<S> {
    pub(crate) config: ConnConfig,
    pub(crate) handler: Box<dyn ErasedHandler<S>>,
    pub(crate) state: Arc<S>,
    pub(crate) hub: Arc<Hub>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Reading, handling and writing.
    Open,
    /// Our write side is shut down (or about to be); frames are still handled.
    WriteShut { shutdown_sent: bool },
    /// No more frames are handled: write out what is queued, shut down, then, if
    /// `drain`, read until the peer's EOF (discarding): closing a socket with unread
    /// input makes TCP send a reset, which can destroy our last bytes in flight.
    /// Until the work state's `close_deadline`.
    Closing {
        reason: CloseReason,
        shutdown_sent: bool,
        drain: bool,
    },
}

/// The reason and outcome of an ending connection.
struct End {
    reason: CloseReason,
    flushed: bool,
}

/// The future that runs one connection until it closes.
pub(crate) struct Driver<C, S> {
    kept: Resident<C, S>,
    /// Made when the task is polled, given back when it waits at rest.
    busy: Option<Box<Busy>>,
}

/// What a connection's task holds for its whole life, idle or not.
struct Resident<C, S> {
    /// Dropped first, by hand: the task counts as ended once its socket is closed.
    conn: ManuallyDrop<C>,
    shared: ConnHandle,
    params: Arc<ConnParams<S>>,
    stats: ConnStats,
    phase: Phase,
    /// The peer shut down its write side: nothing more to read.
    read_eof: bool,
    /// Set by the handler or a full queue: end now, without flushing.
    abort: Option<CloseReason>,
    /// The open hook has run (or the connection ended before it could).
    opened: bool,
    /// The close has been reported (event, close hook, registry).
    announced: bool,
    last_read: Stamp,
    /// The current minimum-receive-rate window, when that limit is on (boxed: off
    /// by default, and every connection task holds this field).
    rate_window: Option<Box<RateWindow>>,
    /// The deadline armed in the hub's index: the task is woken then, or sooner.
    armed: Option<Stamp>,
    /// The handler's state for this connection: made when it opens, handed to the
    /// close hook.
    conn_state: Option<ConnState>,
    /// The buffer sizes its next burst starts with.
    sizes: BufferSizes,
}

/// A connection at work: its resident part and its work state, borrowed for one
/// poll.
struct Active<'a, C, S> {
    kept: &'a mut Resident<C, S>,
    busy: &'a mut Busy,
}

/// A window of the minimum receive rate: when it began and `bytes_in` then.
struct RateWindow {
    began: Stamp,
    bytes_then: u64,
}

/// The handler's context, built from a driver's fields one by one, so that the
/// caller may borrow its other fields (the read buffer a frame is lent from).
macro_rules! handler_ctx {
    ($driver:ident, $frame:expr, $writable:expr, $request:expr) => {
        Ctx {
            frame: $frame,
            shared: &$driver.kept.shared,
            conn: &*$driver.kept.conn,
            hub: &$driver.kept.params.hub,
            framer: &$driver.busy.framer,
            out: &mut $driver.busy.out,
            first_output: $driver.kept.sizes.out(),
            unpublished: &mut $driver.busy.unpublished,
            frames_out: &mut $driver.kept.stats.frames_out,
            writable: $writable,
            request: $request,
            state: &*$driver.kept.params.state,
        }
    };
}

impl<C: Connection, S: Send + Sync + 'static> Driver<C, S> {
    pub(crate) fn new(mut conn: C, shared: ConnHandle, params: Arc<ConnParams<S>>) -> Self {
        // Without keepalive a vanished peer is noticed later, by a timeout: not worth
        // refusing the connection for.
        let _ = conn.set_keepalive(params.config.keepalive);
        params.hub.shutdown.task_started();
        let last_read = params.hub.epoch.stamp(Instant::now());
        let rate_window = params.config.min_receive_rate.map(|_| {
            Box::new(RateWindow {
                began: last_read,
                bytes_then: 0,
            })
        });
        let kept = Resident {
            conn: ManuallyDrop::new(conn),
            shared,
            params,
            stats: ConnStats::default(),
            phase: Phase::Open,
            read_eof: false,
            abort: None,
            opened: false,
            announced: false,
            last_read,
            rate_window,
            armed: None,
            conn_state: None,
            sizes: BufferSizes::START,
        };
        Driver { kept, busy: None }
    }
}

impl<C: Connection, S: Send + Sync + 'static> Active<'_, C, S> {
    fn peer(&self) -> Addr {
        self.kept.shared.peer()
    }

    /// Stop reading while this much output waits: the peer is not keeping up.
    fn read_high_water(&self) -> usize {
        self.kept.params.config.max_outbound / 2
    }

    fn delivering(&self) -> bool {
        self.kept.abort.is_none() && !matches!(self.kept.phase, Phase::Closing { .. })
    }

    /// One round: take requests, write, shut down if due, read and handle.
    /// `Ok(true)` when anything moved, so another round may move more.
    fn round(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let mut progressed = false;
        if let Some((frames, request)) = self.kept.shared.take_inbox(cx.waker(), &mut self.busy.out)
        {
            self.kept.stats.frames_out += frames;
            match request {
                None => {}
                Some(CloseRequest::Abort(reason)) => {
                    return Err(End {
                        reason,
                        flushed: self.busy.out.is_empty(),
                    })
                }
                Some(CloseRequest::Graceful { reason, linger }) => {
                    self.begin_closing(reason, linger)
                }
                Some(CloseRequest::ShutdownWrite) if self.kept.phase == Phase::Open => {
                    self.kept.phase = Phase::WriteShut {
                        shutdown_sent: false,
                    };
                    self.kept.shared.close_writes();
                }
                Some(CloseRequest::ShutdownWrite) => {}
            }
        }

        if !self.busy.out.is_empty() {
            progressed |= self.poll_write(cx)?;
        }

        if self.busy.out.is_empty() && self.busy.unflushed {
            // Not progress by itself: the shutdown check below sees its effect.
            self.poll_flush(cx)?;
        }

        if self.busy.out.is_empty() && !self.busy.unflushed {
            progressed |= self.poll_shutdown_if_due(cx)?;
        }

        if let Phase::Closing {
            reason,
            shutdown_sent: true,
            drain,
            ..
        } = self.kept.phase
        {
            // Our last bytes are handed to the transport: closed for the
            // application, whatever the drain below still takes.
            self.announce_close(reason);
            if self.kept.read_eof || !drain {
                return Err(End {
                    reason,
                    flushed: true,
                });
            }
        }

        if self.wants_read() {
            progressed |= self.poll_read(cx)?;
        }
        if let Some(reason) = self.kept.abort {
            return Err(End {
                reason,
                flushed: false,
            });
        }
        Ok(progressed)
    }

    fn wants_read(&self) -> bool {
        if self.kept.read_eof {
            return false;
        }
        match self.kept.phase {
            Phase::Open | Phase::WriteShut { .. } => {
                self.busy.out.len() < self.read_high_water() && !self.kept.params.hub.reads_paused()
            }
            Phase::Closing {
                shutdown_sent,
                drain,
                ..
            } => shutdown_sent && drain,
        }
    }

    /// Adds the replies counted since the last call to the shared counter.
    fn publish_queued(&mut self) {
        if self.busy.unpublished > 0 {
            self.kept
                .shared
                .add_queued(std::mem::take(&mut self.busy.unpublished));
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        self.publish_queued();
        self.busy.out_peak = self.busy.out_peak.max(self.busy.out.len());
        match self.kept.conn.poll_write(cx, &self.busy.out) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(0)) => Err(self.fail(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                self.busy.out.advance(n);
                self.busy.unflushed = true;
                self.kept.stats.bytes_out += n as u64;
                self.kept.params.hub.counters.add_bytes_out(n);
                self.busy.write_stalled_since = None;
                self.kept.shared.sub_queued(n);
                self.kept.params.hub.output_progressed();
                Ok(true)
            }
            Poll::Ready(Err(err)) => Err(self.fail(err)),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Result<(), End> {
        match self.kept.conn.poll_flush(cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.busy.unflushed = false;
                Ok(())
            }
            Poll::Ready(Err(err)) => Err(self.fail(err)),
        }
    }

    fn poll_shutdown_if_due(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let (Phase::WriteShut { shutdown_sent } | Phase::Closing { shutdown_sent, .. }) =
            &mut self.kept.phase
        else {
            return Ok(false);
        };
        if *shutdown_sent {
            return Ok(false);
        }
        match self.kept.conn.poll_shutdown(cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(())) => {
                *shutdown_sent = true;
                Ok(true)
            }
            Poll::Ready(Err(err)) => Err(self.fail(err)),
        }
    }

    /// Reads once and handles what came in.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        if self.busy.read_buf.capacity() == 0 {
            match self.kept.conn.poll_read_ready(cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(err)) => return Err(self.fail(err)),
                Poll::Ready(Ok(())) => {}
            }
        }
        let spare = self.busy.read_buf.capacity() - self.busy.read_buf.len();
        let read_size = self.busy.read_size as usize;
        if spare < read_size / 4 {
            let max_frame = self.busy.framer.config().max_frame_len;
            read_room::make_room(&mut self.busy.read_buf, read_size, max_frame);
        }
        let spare = self.busy.read_buf.capacity() - self.busy.read_buf.len();
        match self.kept.conn.poll_read(cx, &mut self.busy.read_buf) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(0)) => {
                self.kept.read_eof = true;
                self.on_eof();
                Ok(true)
            }
            Poll::Ready(Ok(n)) => {
                self.kept.stats.bytes_in += n as u64;
                self.kept.params.hub.counters.add_bytes_in(n);
                self.kept.last_read = self.kept.params.hub.epoch.stamp(Instant::now());
                // A full-size read that filled the buffer: more is waiting. (A
                // small remainder filled says little: doubling on it would grow
                // a reused buffer for nothing.)
                if n == spare && spare >= read_size {
                    self.busy.read_size = (self.busy.read_size * 2).min(MAX_READ as u32);
                }
                if self.delivering() {
                    self.decode_frames();
                } else {
                    self.busy.read_buf.clear();
                }
                self.track_unfinished_frame();
                Ok(true)
            }
            Poll::Ready(Err(err)) => Err(self.fail(err)),
        }
    }

    /// Starts or stops the frame clock, and reports what an unfinished frame holds.
    fn track_unfinished_frame(&mut self) {
        if !self.busy.framer.is_mid_frame(&self.busy.read_buf) {
            self.busy.frame_started = None;
        } else if self.busy.frame_started.is_none() {
            self.busy.frame_started = Some(self.kept.last_read);
        }
        // Memory, not bytes: the buffer an unfinished frame keeps allocated.
        let held = if self.busy.read_buf.is_empty() {
            0
        } else {
            self.busy.read_buf.capacity()
        };
        self.report_partial(held);
    }

    fn report_partial(&mut self, held: usize) {
        let reported = self.kept.shared.partial();
        if held != reported {
            let hub = &self.kept.params.hub;
            match &hub.budget {
                Some(budget) => budget.update(
                    &self.kept.shared,
                    reported,
                    held,
                    &hub.registry,
                    &hub.reporter,
                ),
                None => self.kept.shared.set_partial(held),
            }
        }
    }

    fn decode_frames(&mut self) {
        while self.delivering() {
            match self.busy.framer.locate_frame(&mut self.busy.read_buf) {
                Ok(Some(extent)) => self.deliver(extent),
                Ok(None) => return,
                Err(err) => self.on_frame_error(err),
            }
        }
        // Closing: whatever else was buffered will not be handled.
        self.busy.read_buf.clear();
    }

    fn on_eof(&mut self) {
        while self.delivering() {
            match self
                .busy
                .framer
                .locate_frame_at_eof(&mut self.busy.read_buf)
            {
                Ok(Some(extent)) => self.deliver(extent),
                Ok(None) => break,
                Err(err) => self.on_frame_error(err),
            }
        }
        self.busy.read_buf = BytesMut::new();
        self.busy.frame_started = None;
        self.report_partial(0);
        self.begin_closing(CloseReason::PeerEof, None);
    }

    fn on_frame_error(&mut self, err: FrameError) {
        let peer = self.peer();
        match err {
            FrameError::TooLong { limit } => {
                self.report(ConnError::FrameTooLong { peer, limit });
                if self.kept.params.config.oversize == OversizePolicy::Close {
                    self.begin_closing(CloseReason::FrameTooLong, None);
                }
            }
            FrameError::Truncated { len } => {
                self.report(ConnError::TruncatedFrame { peer, len });
            }
            // FrameError is non-exhaustive; a new kind of fault closes the connection.
            _ => self.begin_closing(CloseReason::PeerReset, None),
        }
    }

    /// Builds the handler's context from the task's fields and runs `call` with it
    /// and the connection's state, catching a panic. `frame` is where the frame
    /// being handled lies (empty outside `on_frame`).
    fn with_ctx<R>(
        &mut self,
        frame: std::ops::Range<*const u8>,
        writable: bool,
        call: impl FnOnce(&dyn ErasedHandler<S>, &mut Ctx<'_, S, C>, &mut Option<ConnState>) -> R,
    ) -> (std::thread::Result<R>, Option<Request>) {
        let mut request = None;
        let mut ctx = handler_ctx!(self, frame, writable, &mut request);
        let (handler, conn_state) = (&*self.kept.params.handler, &mut self.kept.conn_state);
        let outcome = catch_unwind(AssertUnwindSafe(|| call(handler, &mut ctx, conn_state)));
        (outcome, request)
    }

    /// Runs the open hook, once, before the first frame.
    fn open(&mut self) {
        self.kept.opened = true;
        let writable = self.kept.phase == Phase::Open;
        let (outcome, request) = self.with_ctx(
            std::ptr::null()..std::ptr::null(),
            writable,
            |handler, ctx, conn| {
                *conn = Some(handler.on_open(ctx));
            },
        );
        self.after_handler(outcome, request);
    }

    /// Calls the handler with the frame lent in place; it stays in the read buffer
    /// unless the handler takes it, and is skipped afterwards. The hot path: the
    /// context is built here from field borrows, beside the frame's borrow of the
    /// read buffer.
    fn deliver(&mut self, extent: FrameExtent) {
        self.kept.stats.frames_in += 1;
        let unread = self.busy.read_buf.len();
        let writable = self.kept.phase == Phase::Open;
        let mut request = None;
        let outcome = {
            let frame = lend_frame(&mut self.busy.read_buf, extent);
            let range = frame.as_ptr_range();
            let mut ctx = handler_ctx!(self, range, writable, &mut request);
            let handler = &*self.kept.params.handler;
            // Frames are delivered only after the open hook made the state.
            let conn_state = &mut self.kept.conn_state;
            catch_unwind(AssertUnwindSafe(|| {
                if let Some(state) = conn_state {
                    handler.on_frame(&mut ctx, state, frame);
                }
            }))
        };
        // A handler that kept the frame (`Frame::into_bytes`) took it out already,
        // and its `Bytes` shares the read buffer's allocation from then on.
        if self.busy.read_buf.len() == unread {
            self.busy.read_buf.advance(extent.wire_len);
        } else {
            self.busy.read_buf_shared = true;
        }
        // The common case, a frame handled with nothing asked, costs no call.
        if outcome.is_err() || request.is_some() {
            self.after_handler(outcome, request);
        }
    }

    /// Acts on what a handler call asked for, or on its panic.
    fn after_handler(&mut self, outcome: std::thread::Result<()>, request: Option<Request>) {
        if let Err(panic) = outcome {
            self.report_panic(panic.as_ref());
            self.begin_closing(CloseReason::HandlerPanic, None);
            return;
        }
        match request {
            None => {}
            Some(Request::Close) => self.begin_closing(CloseReason::ClosedByHandler, None),
            Some(Request::Abort(reason)) => self.kept.abort = Some(reason),
        }
    }

    /// Reports a handler's panic as the connection's error.
    fn report_panic(&self, panic: &(dyn std::any::Any + Send)) {
        let message = panic_message(panic);
        self.report(ConnError::HandlerPanic {
            peer: self.peer(),
            message,
        });
    }

    /// Reports an error of this connection to the server's error channel.
    fn report(&self, error: ConnError) {
        self.kept.params.hub.reporter.error(error);
    }

    /// Reports the close, once, as soon as the connection is closed for the
    /// application and our queued output is handed to the transport: the close
    /// hook runs and subscribers get the event. The task may still linger
    /// afterwards, draining what the peer sends so that our last bytes are not
    /// destroyed by a reset.
    fn announce_close(&mut self, reason: CloseReason) {
        if self.kept.announced {
            return;
        }
        self.kept.announced = true;
        self.kept.shared.set_closing();
        // The totals include what the event reports.
        self.report_traffic();
        let event = close_event(self.peer(), reason, self.kept.stats);
        if self.kept.conn_state.is_some() {
            let (outcome, _) = self.with_ctx(
                std::ptr::null()..std::ptr::null(),
                false,
                |handler, ctx, conn| {
                    if let Some(state) = conn.take() {
                        handler.on_close(ctx, state, &event);
                    }
                },
            );
            if let Err(panic) = outcome {
                self.report_panic(panic.as_ref());
            }
        }
        self.kept.params.hub.conn_closed(event);
    }

    /// Stops handling frames and starts the orderly close. The first reason wins.
    fn begin_closing(&mut self, reason: CloseReason, linger: Option<Duration>) {
        let shutdown_sent = match self.kept.phase {
            Phase::Closing { .. } => return,
            Phase::WriteShut { shutdown_sent } => shutdown_sent,
            Phase::Open => false,
        };
        self.kept.shared.close_writes();
        let linger = linger.unwrap_or(self.kept.params.config.linger);
        // A peer that went quiet (idle) or already finished (EOF) has nothing in
        // flight that could turn our close into a reset.
        // A shutting-down server does not wait on its peers.
        let drain = !matches!(
            reason,
            CloseReason::IdleTimeout
                | CloseReason::PeerEof
                | CloseReason::FrameTimeout
                | CloseReason::TooSlow
                | CloseReason::Shutdown
        );
        self.kept.phase = Phase::Closing {
            reason,
            shutdown_sent,
            drain,
        };
        let deadline = self.kept.params.hub.epoch.stamp(Instant::now() + linger);
        self.busy.close_deadline = Some(deadline);
        // No longer a peer; the close is reported once our output is out.
        self.kept.shared.set_closing();
    }

    /// A transport error ends the connection. While closing it only cuts the close
    /// short; otherwise it is reported.
    fn fail(&mut self, err: io::Error) -> End {
        let flushed = self.busy.out.is_empty();
        if let Phase::Closing { reason, .. } = self.kept.phase {
            return End { reason, flushed };
        }
        // Only keepalive gives up with `TimedOut` on an established connection.
        let reason = if err.kind() == io::ErrorKind::TimedOut {
            CloseReason::PeerVanished
        } else {
            CloseReason::PeerReset
        };
        self.report(ConnError::Io {
            peer: self.peer(),
            source: Arc::new(err),
        });
        End { reason, flushed }
    }

    /// Checks the deadlines and arms the timer for the nearest one. `Ok(true)` when
    /// a deadline changed the state (another round is due).
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<bool, End> {
        let now = Instant::now();
        let epoch = self.kept.params.hub.epoch;
        let mut next: Option<Instant> = None;
        let mut consider = |deadline: Instant| {
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        };
        let peer = self.peer();
        if let Phase::Closing {
            reason,
            shutdown_sent,
            ..
        } = self.kept.phase
        {
            // Set with the phase; the work state is kept until the close ends.
            if let Some(deadline) = self.busy.close_deadline {
                let deadline = epoch.instant(deadline);
                if now >= deadline {
                    return Err(End {
                        reason,
                        flushed: self.busy.out.is_empty() && shutdown_sent,
                    });
                }
                consider(deadline);
            }
        } else if !self.kept.read_eof {
            if let Some(idle) = self.kept.params.hub.timeouts.idle() {
                let deadline = epoch.instant(self.kept.last_read).checked_add(idle);
                if deadline.is_some_and(|d| now >= d) {
                    self.report(ConnError::IdleTimeout { peer, after: idle });
                    self.begin_closing(CloseReason::IdleTimeout, None);
                    return Ok(true);
                }
                deadline.map(&mut consider);
            }
            if let (Some(after), Some(started)) = (
                self.kept.params.config.frame_timeout,
                self.busy.frame_started,
            ) {
                let deadline = epoch.instant(started).checked_add(after);
                if deadline.is_some_and(|d| now >= d) {
                    self.report(ConnError::FrameTimeout { peer, after });
                    self.begin_closing(CloseReason::FrameTimeout, None);
                    return Ok(true);
                }
                deadline.map(&mut consider);
            }
            if let (Some(rate), Some(window)) = (
                self.kept.params.config.min_receive_rate,
                &mut self.kept.rate_window,
            ) {
                let deadline = epoch.instant(window.began).checked_add(rate.per);
                if deadline.is_some_and(|d| now >= d) {
                    let received = self.kept.stats.bytes_in - window.bytes_then;
                    // A window with nothing is the idle timeout's business.
                    if received > 0 && received < rate.bytes {
                        self.report(ConnError::TooSlow {
                            peer,
                            received,
                            min: rate.bytes,
                            per: rate.per,
                        });
                        self.begin_closing(CloseReason::TooSlow, None);
                        return Ok(true);
                    }
                    window.began = epoch.stamp(now);
                    window.bytes_then = self.kept.stats.bytes_in;
                    now.checked_add(rate.per).map(&mut consider);
                } else {
                    deadline.map(&mut consider);
                }
            }
        }
        if !self.busy.out.is_empty() {
            if let Some(after) = self.kept.params.hub.timeouts.write() {
                let since = *self
                    .busy
                    .write_stalled_since
                    .get_or_insert(epoch.stamp(now));
                let deadline = epoch.instant(since).checked_add(after);
                if deadline.is_some_and(|d| now >= d) {
                    self.report(ConnError::WriteTimeout { peer, after });
                    return Err(End {
                        reason: CloseReason::WriteStalled,
                        flushed: false,
                    });
                }
                deadline.map(&mut consider);
            }
        }
        let Some(deadline) = next else {
            return Ok(false);
        };
        // An earlier deadline armed before stays: the task is woken then, looks
        // again and arms this one. Moving it on every read would cost an index
        // update per read.
        let deadlines = &self.kept.params.hub.deadlines;
        let seq = self.kept.shared.seq();
        if deadlines.arm(
            seq,
            &mut self.kept.armed,
            epoch.stamp(deadline),
            epoch.stamp(now),
        ) {
            return Ok(true);
        }
        let mut came = false;
        if deadlines.sweeper() == Sweeper::Connection {
            deadlines.poll_sweep(cx, |_| came = true);
        }
        Ok(came)
    }

    /// Adds the frames of this connection since the last report to the shared
    /// totals (bytes are added as they move).
    fn report_traffic(&mut self) {
        // Truncation intended: the difference modulo 2^32 is exact.
        let frames = [
            self.kept.stats.frames_in as u32,
            self.kept.stats.frames_out as u32,
        ];
        if frames != self.busy.frames_reported {
            self.kept.params.hub.counters.add_frames(
                u64::from(frames[0].wrapping_sub(self.busy.frames_reported[0])),
                u64::from(frames[1].wrapping_sub(self.busy.frames_reported[1])),
            );
            self.busy.frames_reported = frames;
        }
    }

    fn finish(&mut self, end: End) -> Finished {
        let seq = self.kept.shared.seq();
        self.kept
            .params
            .hub
            .deadlines
            .disarm(seq, &mut self.kept.armed);
        // Before the task ends: the budget counts an ended connection as gone.
        self.report_partial(0);
        self.kept.shared.close_writes();
        self.kept.shared.clear_queued();
        self.report_traffic();
        self.announce_close(end.reason);
        tracing::debug!(
            peer = %self.kept.shared.peer(),
            reason = ?end.reason,
            frames_in = self.kept.stats.frames_in,
            frames_out = self.kept.stats.frames_out,
            bytes_in = self.kept.stats.bytes_in,
            bytes_out = self.kept.stats.bytes_out,
            "closed"
        );
        let finished = Finished {
            reason: end.reason,
            flushed: end.flushed,
        };
        self.kept
            .params
            .hub
            .conn_finished(&self.kept.shared, &finished);
        finished
    }
}

impl<C: Connection, S: Send + Sync + 'static> Future for Driver<C, S> {
    type Output = Finished;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let Driver { kept, busy } = self.get_mut();
        let slot = busy;
        let busy = slot
            .get_or_insert_with(|| Busy::take(kept.params.config.frame, &kept.stats, kept.sizes));
        let mut this = Active { kept, busy };
        if !this.kept.opened {
            this.open();
        }
        for _ in 0..ROUNDS_PER_POLL {
            let step = match this.round(cx) {
                Ok(true) => Ok(true),
                Ok(false) => this.poll_timers(cx),
                Err(end) => Err(end),
            };
            match step {
                Ok(true) => continue,
                Ok(false) => {
                    this.report_traffic();
                    let closing = matches!(this.kept.phase, Phase::Closing { .. });
                    if !closing && this.busy.is_at_rest() {
                        // Going idle: hold no buffer, no framer, no clock of work.
                        if let Some(busy) = slot.take() {
                            kept.sizes = busy.give_back();
                        }
                    } else {
                        // Waiting with work left: hold no empty buffer.
                        for buf in [&mut this.busy.read_buf, &mut this.busy.out] {
                            if buf.is_empty() && buf.capacity() > 0 {
                                *buf = BytesMut::new();
                            }
                        }
                    }
                    return Poll::Pending;
                }
                Err(end) => return Poll::Ready(this.finish(end)),
            }
        }
        // Still busy: let the other connections on this worker run first.
        this.report_traffic();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<C, S> Drop for Resident<C, S> {
    fn drop(&mut self) {
        // SAFETY: `conn` is dropped here only, once, and not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.conn) };
        self.params.hub.shutdown.task_ended();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// Every idle connection of a server is one task holding a `Driver` (its work
    /// state given back) and one shared handle: their sizes are most of what an
    /// idle connection costs (BENCHMARKS.md has the whole account), so they only
    /// grow on purpose. tokio allocates a task in 128-byte steps: a future of at
    /// most 152 bytes fits a 256-byte task, one more word makes it 384. The
    /// handle, with its `Arc` counts and the allocator's header, fits a 128-byte
    /// chunk.
    #[test]
    fn an_idle_tcp_connection_task_stays_small() {
        assert!(
            size_of::<crate::TcpConn>() <= 40,
            "{}",
            size_of::<crate::TcpConn>()
        );
        let driver = size_of::<super::Driver<crate::TcpConn, ()>>();
        assert!(driver <= 152, "{driver}");
        let shared = size_of::<crate::handle::ConnShared>();
        assert!(shared <= 104, "{shared}");
    }
}
