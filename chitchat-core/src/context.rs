//! What user code sees of a connection while it handles a frame: the [`Frame`], the
//! [`ReadContext`], and the [`Handler`] that receives both.
//!
//! Both are object-safe and runtime-free, so a handler is written once against
//! chitchat-core and runs on any backend: tokio TCP in production, the in-memory
//! network in tests.

use std::fmt::{self, Write as _};
use std::ops::Deref;

use bytes::{Bytes, BytesMut};

use crate::addr::Addr;
use crate::error::WriteError;
use crate::frame::FrameExtent;

/// One received frame (delimiter removed), lent to the handler where it lies in the
/// connection's read buffer.
///
/// It dereferences to `[u8]`. Lending it costs nothing per frame; a handler that
/// wants to keep the frame past its call takes it with [`into_bytes`](Self::into_bytes),
/// which moves it out of the read buffer without copying.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use chitchat_core::Frame;
///
/// let mut buf = BytesMut::from(&b"ping"[..]);
/// let frame = Frame::from(&mut buf);
/// assert_eq!(frame, "ping");
/// assert!(frame.starts_with(b"pi"));
/// let kept: Bytes = frame.into_bytes();
/// assert_eq!(kept, "ping");
/// ```
pub struct Frame<'a> {
    buf: &'a mut BytesMut,
    extent: FrameExtent,
}

impl<'a> Frame<'a> {
    /// The frame [`Framer::find_frame`](crate::Framer::find_frame) located at the front
    /// of `buf` (for backends).
    ///
    /// # Panics
    /// When `buf` is shorter than the extent.
    #[inline]
    pub fn new(buf: &'a mut BytesMut, extent: FrameExtent) -> Self {
        assert!(
            extent.payload_len <= extent.wire_len && extent.wire_len <= buf.len(),
            "frame extent {extent:?} outside a {}-byte buffer",
            buf.len()
        );
        Frame { buf, extent }
    }

    /// The frame, taken out of the read buffer as its own `Bytes`: no copy, and
    /// it lives as long as you keep it.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.extent.split_off(self.buf)
    }
}

/// The whole buffer as one frame: for calling a handler directly in a test.
impl<'a> From<&'a mut BytesMut> for Frame<'a> {
    fn from(buf: &'a mut BytesMut) -> Self {
        let len = buf.len();
        Frame {
            buf,
            extent: FrameExtent {
                payload_len: len,
                wire_len: len,
            },
        }
    }
}

impl Deref for Frame<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.buf[..self.extent.payload_len]
    }
}

impl AsRef<[u8]> for Frame<'_> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `Bytes` shows itself (b"..."), without copying the frame.
        f.write_str("b\"")?;
        for byte in self.iter().flat_map(|&b| std::ascii::escape_default(b)) {
            f.write_char(char::from(byte))?;
        }
        f.write_str("\"")
    }
}

impl PartialEq<[u8]> for Frame<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Frame<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Frame<'_> {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<str> for Frame<'_> {
    fn eq(&self, other: &str) -> bool {
        **self == *other.as_bytes()
    }
}

impl PartialEq<&str> for Frame<'_> {
    fn eq(&self, other: &&str) -> bool {
        **self == *other.as_bytes()
    }
}

/// The connection a frame arrived on, as seen from inside the handler.
///
/// ```
/// use chitchat_core::{Frame, ReadContext};
///
/// /// Replies "<peer> said <frame>"; closes the connection on "bye".
/// fn handle(ctx: &mut dyn ReadContext<()>, frame: Frame<'_>) {
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
/// use chitchat_core::{Frame, Handler, ReadContext};
///
/// let echo = |ctx: &mut dyn ReadContext<()>, frame: Frame<'_>| {
///     let _ = ctx.reply(&frame);
/// };
/// fn assert_handler<H: Handler<()>>(_: &H) {}
/// assert_handler(&echo);
/// ```
pub trait Handler<S: ?Sized = ()>: Send + Sync + 'static {
    /// Handles one complete frame (delimiter removed).
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, frame: Frame<'_>);
}

impl<S: ?Sized, F> Handler<S> for F
where
    F: Fn(&mut dyn ReadContext<S>, Frame<'_>) + Send + Sync + 'static,
{
    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, frame: Frame<'_>) {
        self(ctx, frame)
    }
}

/// The handler of a client that only writes: frames from the server are dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreFrames;

impl<S: ?Sized> Handler<S> for IgnoreFrames {
    fn on_frame(&self, _: &mut dyn ReadContext<S>, _: Frame<'_>) {}
}
