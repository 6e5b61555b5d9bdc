//! What user code sees of a connection while it handles a frame: the [`ReadContext`],
//! and the [`Handler`] that receives it.
//!
//! Both are object-safe and runtime-free, so a handler is written once against
//! chitchat-core and runs on any backend: tokio TCP in production, the in-memory
//! network in tests.

use bytes::Bytes;

use crate::addr::Addr;
use crate::error::WriteError;

/// The connection a frame arrived on, as seen from inside the handler.
///
/// ```
/// use bytes::Bytes;
/// use chitchat_core::ReadContext;
///
/// /// Replies "<peer> said <frame>"; closes the connection on "bye".
/// fn handle(ctx: &mut dyn ReadContext<()>, frame: Bytes) {
///     if frame == "bye" {
///         ctx.close();
///         return;
///     }
///     let text = format!("{} said {}", ctx.peer_addr(), String::from_utf8_lossy(&frame));
///     let _ = ctx.reply(text.as_bytes());
/// }
/// ```
pub trait ReadContext<S: ?Sized = ()> {
    /// The other end of this connection.
    fn peer_addr(&self) -> Addr;

    /// Our end of this connection.
    fn local_addr(&self) -> Addr;

    /// Queues `payload` and the delimiter for the peer. Replies to the frames of one
    /// read go out together, in as few writes as possible, after the handler returns.
    ///
    /// # Errors
    /// [`WriteError::Encode`] when the payload cannot be framed,
    /// [`WriteError::Closed`] after [`close`](Self::close); nothing is queued then. On
    /// the server, [`WriteError::OutboundFull`] means the peer does not read and is
    /// being dropped.
    fn reply(&mut self, payload: &[u8]) -> Result<(), WriteError>;

    /// Closes this connection once the replies queued so far are written out. Frames
    /// already received after this one are not handed to the handler.
    fn close(&mut self);

    /// The user data the server or client was built with (the Go library's
    /// `additional`).
    fn state(&self) -> &S;
}

/// Receives every frame, in order per connection, on the connection's task.
///
/// Keep it quick: a handler that blocks stalls its connection (other connections run
/// on), so spawn long work and answer later with the server's `write_to`. A panic
/// closes only this connection and is reported as an error event.
///
/// Closures implement it:
///
/// ```
/// use bytes::Bytes;
/// use chitchat_core::{Handler, ReadContext};
///
/// let echo = |ctx: &mut dyn ReadContext<()>, frame: Bytes| {
///     let _ = ctx.reply(&frame);
/// };
/// fn assert_handler<H: Handler<()>>(_: &H) {}
/// assert_handler(&echo);
/// ```
pub trait Handler<S: ?Sized = ()>: Send + Sync + 'static {
    /// Handles one complete frame (delimiter removed).
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, frame: Bytes);
}

impl<S: ?Sized, F> Handler<S> for F
where
    F: Fn(&mut dyn ReadContext<S>, Bytes) + Send + Sync + 'static,
{
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, frame: Bytes) {
        self(ctx, frame)
    }
}

/// The handler of a client that only writes: frames from the server are dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreFrames;

impl<S: ?Sized> Handler<S> for IgnoreFrames {
    fn on_frame(&self, _: &mut dyn ReadContext<S>, _: Bytes) {}
}
