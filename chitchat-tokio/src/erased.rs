//! A [`Handler`] with its per-connection state type erased, so that builders and
//! connection tasks have one type whatever the handler (a builder can then be
//! passed to and returned from helper functions, and a handler chosen at run time).
//!
//! The state lives in a `Box<dyn Any>`: no allocation for a handler without one
//! (`()` is zero-sized), and one small allocation per connection otherwise.

use std::any::Any;

use chitchat_core::{CloseEvent, Frame, Handler, ReadContext};

/// A connection's handler state, whatever its type.
pub(crate) type ConnState = Box<dyn Any + Send>;

/// [`Handler`] over [`ConnState`].
pub(crate) trait ErasedHandler<S: ?Sized>: Send + Sync + 'static {
    fn on_open(&self, ctx: &mut dyn ReadContext<S>) -> ConnState;
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, conn: &mut ConnState, frame: Frame<'_>);
    fn on_close(&self, ctx: &mut dyn ReadContext<S>, conn: ConnState, close: &CloseEvent);
}

impl<S: ?Sized, H: Handler<S>> ErasedHandler<S> for H {
    fn on_open(&self, ctx: &mut dyn ReadContext<S>) -> ConnState {
        let mut conn = H::Conn::default();
        Handler::on_open(self, ctx, &mut conn);
        Box::new(conn)
    }

    #[inline]
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, conn: &mut ConnState, frame: Frame<'_>) {
        if std::mem::size_of::<H::Conn>() == 0 {
            // A handler without per-connection state (closures): nothing to look
            // up, so no type check on every frame.
            // SAFETY: a reference to a zero-sized type needs only to be non-null
            // and aligned, which `dangling` is; it reads and writes no byte. The
            // value itself (made by `on_open`) stays in the box for the close.
            let unit = unsafe { &mut *std::ptr::NonNull::<H::Conn>::dangling().as_ptr() };
            Handler::on_frame(self, ctx, unit, frame);
            return;
        }
        // The state was made by `on_open` above, from this same handler.
        if let Some(conn) = conn.downcast_mut::<H::Conn>() {
            Handler::on_frame(self, ctx, conn, frame);
        }
    }

    fn on_close(&self, ctx: &mut dyn ReadContext<S>, conn: ConnState, close: &CloseEvent) {
        if let Ok(conn) = conn.downcast::<H::Conn>() {
            Handler::on_close(self, ctx, *conn, close);
        }
    }
}
