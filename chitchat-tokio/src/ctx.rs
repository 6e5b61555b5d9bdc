//! [`Ctx`]: the [`ReadContext`] a connection's task hands its handler. Replies go
//! straight into the task's output buffer: no channel, no allocation.

use std::ops::Range;

use bytes::BytesMut;
use chitchat_core::backend::LocateFrames;
use chitchat_core::{
    Addr, CloseReason, ConnError, Connection, Framer, Peers, ReadContext, WriteError,
};

use crate::handle::ConnHandle;
use crate::hub::Hub;

/// What the handler asked for, beyond replies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Request {
    Close,
    Abort(CloseReason),
}

/// See the [module docs](self). Built from the task's fields for one handler call.
pub(crate) struct Ctx<'a, S: ?Sized, C> {
    /// Where the frame being handled lies. Nothing can write there while the
    /// handler runs, so a reply from inside it (an echo) is known to hold no
    /// delimiter and is not searched again.
    pub(crate) frame: Range<*const u8>,
    pub(crate) shared: &'a ConnHandle,
    pub(crate) conn: &'a C,
    pub(crate) hub: &'a Hub,
    pub(crate) framer: &'a Framer,
    pub(crate) out: &'a mut BytesMut,
    /// The capacity to give `out` when the first reply finds it too small.
    pub(crate) first_output: usize,
    /// Reply bytes not yet added to the shared `queued` counter.
    pub(crate) unpublished: &'a mut usize,
    pub(crate) frames_out: &'a mut u64,
    /// False once our write side is shut down, and in the close hook.
    pub(crate) writable: bool,
    pub(crate) request: &'a mut Option<Request>,
    pub(crate) state: &'a S,
}

impl<S: ?Sized, C: Connection> ReadContext<S> for Ctx<'_, S, C> {
    fn peer_addr(&self) -> Addr {
        self.shared.peer()
    }

    fn local_addr(&self) -> Addr {
        // Asked of the socket, not stored: a few hundred thousand idle connections
        // would each keep a copy otherwise.
        self.conn.local_addr().unwrap_or(self.hub.local)
    }

    fn reply(&mut self, payload: &[u8]) -> Result<(), WriteError> {
        // The peer's address (96 bytes) is copied only into an error.
        let shared = self.shared;
        if !self.writable || self.request.is_some() {
            return Err(WriteError::Closed {
                peer: shared.peer(),
            });
        }
        if self.out.is_empty() && !self.out.try_reclaim(self.first_output) {
            // The first reply of a burst: room for as much as the connection's
            // last burst queued, allocated once (nothing to copy).
            *self.out = BytesMut::with_capacity(self.first_output.max(payload.len() + 2));
        }
        // Encode first (one pass over the payload checks and copies it), then
        // take it back out if it does not fit.
        let before = self.out.len();
        let from_frame =
            self.frame.start <= payload.as_ptr() && payload.as_ptr_range().end <= self.frame.end;
        if from_frame {
            self.framer.encode_part_of_frame(payload, self.out);
        } else {
            self.framer
                .encode(payload, self.out)
                .map_err(|source| WriteError::Encode {
                    peer: shared.peer(),
                    source,
                })?;
        }
        let bound = self.hub.bound;
        let queued = shared.queued() + *self.unpublished;
        if queued > 0 && queued + (self.out.len() - before) > bound.limit {
            self.out.truncate(before);
            let (peer, limit) = (shared.peer(), bound.limit);
            if bound.drop_when_full {
                self.hub
                    .reporter
                    .error(ConnError::OutboundFull { peer, limit });
                *self.request = Some(Request::Abort(CloseReason::WriteStalled));
            }
            return Err(WriteError::OutboundFull { peer, limit });
        }
        *self.unpublished += self.out.len() - before;
        *self.frames_out += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.request.get_or_insert(Request::Close);
    }

    fn state(&self) -> &S {
        self.state
    }

    fn peers(&self) -> &dyn Peers {
        self.hub
    }
}
