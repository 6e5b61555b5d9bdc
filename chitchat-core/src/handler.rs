//! The [`Handler`]: a server's or client's application logic, with its optional
//! connection hooks and typed per-connection state.

use crate::conn_event::CloseEvent;
use crate::context::{Frame, ReadContext};
#[cfg(doc)]
use crate::error::WriteError;
#[cfg(doc)]
use crate::peers::Peers;

/// A server's or client's application logic: called when a connection opens, once
/// per frame, and when the connection closes, always on the connection's own task
/// and in that order.
///
/// Keep each call quick: a handler that blocks stalls its connection (other
/// connections run on), so spawn long work and answer later through
/// [`Peers::handle`]. A panic closes only this connection and is reported.
///
/// A plain closure is a handler with no per-connection state and no hooks:
///
/// ```
/// use chitchat_core::{Frame, Handler, ReadContext};
///
/// let echo = |ctx: &mut dyn ReadContext<()>, frame: Frame<'_>| {
///     let _ = ctx.reply(&frame);
/// };
/// fn assert_handler<H: Handler<()>>(_: &H) {}
/// assert_handler(&echo);
/// ```
///
/// With hooks and typed per-connection state (here: a line counter per peer):
///
/// ```
/// use chitchat_core::{CloseEvent, Frame, Handler, ReadContext};
///
/// struct Counter;
///
/// impl Handler for Counter {
///     type Conn = u64; // lines seen on this connection
///
///     fn on_open(&self, ctx: &mut dyn ReadContext, _lines: &mut u64) {
///         let _ = ctx.reply(b"hello");
///     }
///
///     fn on_frame(&self, ctx: &mut dyn ReadContext, lines: &mut u64, _frame: Frame<'_>) {
///         *lines += 1;
///         let _ = ctx.reply(lines.to_string().as_bytes());
///     }
///
///     fn on_close(&self, _ctx: &mut dyn ReadContext, lines: u64, close: &CloseEvent) {
///         println!("{} sent {lines} lines ({:?})", close.peer, close.reason);
///     }
/// }
/// ```
pub trait Handler<S: ?Sized = ()>: Send + Sync + 'static {
    /// What the handler keeps for each connection (`()` for nothing): made with
    /// `Default` when the connection opens, lent mutably to every call, handed over
    /// to [`on_close`](Self::on_close).
    type Conn: Default + Send + 'static;

    /// The connection opened (accepted, or connected for a client), before its first
    /// frame. It may reply (a greeting), write to other peers (announce the newcomer),
    /// fill in `conn`, or close.
    fn on_open(&self, ctx: &mut dyn ReadContext<S>, conn: &mut Self::Conn) {
        let _ = (ctx, conn);
    }

    /// Handles one complete frame (delimiter removed).
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, conn: &mut Self::Conn, frame: Frame<'_>);

    /// The connection is closed for the application, for `close.reason`: called
    /// once, when it happens (not after the linger that protects our last bytes),
    /// for every connection whose `on_open` ran. Replies fail with
    /// [`WriteError::Closed`]; other peers can still be reached through
    /// [`ReadContext::peers`], where this connection is no longer listed.
    fn on_close(&self, ctx: &mut dyn ReadContext<S>, conn: Self::Conn, close: &CloseEvent) {
        let _ = (ctx, conn, close);
    }
}

impl<S: ?Sized, F> Handler<S> for F
where
    F: Fn(&mut dyn ReadContext<S>, Frame<'_>) + Send + Sync + 'static,
{
    type Conn = ();

    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, _: &mut (), frame: Frame<'_>) {
        self(ctx, frame)
    }
}

/// The handler of a client that only writes: frames from the server are dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreFrames;

impl<S: ?Sized> Handler<S> for IgnoreFrames {
    type Conn = ();

    fn on_frame(&self, _: &mut dyn ReadContext<S>, _: &mut (), _: Frame<'_>) {}
}
