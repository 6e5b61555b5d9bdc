//! The frames a client without a handler keeps for its reader (the client's
//! `Stream`), bounded: past the bound the connection stops reading from the socket
//! until the reader catches up, so a fast server is slowed down by TCP instead of
//! filling memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chitchat_core::{Frame, Handler, ReadContext};
use futures::task::AtomicWaker;

#[derive(Debug)]
pub(crate) struct Inbound {
    queue: Mutex<Queue>,
    /// The reader waiting for a frame.
    pub(crate) waker: AtomicWaker,
    /// Bytes kept before reading stops.
    limit: usize,
    /// Reading is stopped: the queue passed the limit and has not drained to half.
    full: AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

/// What the reader took: the frame, and whether reading should resume.
pub(crate) struct Taken {
    pub(crate) frame: Option<Bytes>,
    pub(crate) resume: bool,
}

impl Inbound {
    pub(crate) fn new(limit: usize) -> Self {
        Inbound {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            limit,
            full: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, frame: Bytes) {
        let mut queue = self.lock();
        queue.bytes += frame.len();
        queue.frames.push_back(frame);
        if queue.bytes > self.limit {
            self.full.store(true, Ordering::Release);
        }
        drop(queue);
        self.waker.wake();
    }

    /// The oldest frame, if any. Reading resumes once the queue is down to half the
    /// limit, so that it does not stop and start at every frame.
    pub(crate) fn take(&self) -> Taken {
        let mut queue = self.lock();
        let frame = queue.frames.pop_front();
        if let Some(frame) = &frame {
            queue.bytes -= frame.len();
        }
        let resume = queue.bytes <= self.limit / 2 && self.full.swap(false, Ordering::AcqRel);
        Taken { frame, resume }
    }

    /// Reading should stop until the reader takes some frames.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }
}

/// The handler of a client without one: every frame goes to the client's stream.
pub(crate) struct QueueFrames(pub(crate) Arc<Inbound>);

impl<S: ?Sized> Handler<S> for QueueFrames {
    type Conn = ();

    fn on_frame(&self, _: &mut dyn ReadContext<S>, _: &mut (), frame: Frame<'_>) {
        self.0.push(frame.into_bytes());
    }
}
