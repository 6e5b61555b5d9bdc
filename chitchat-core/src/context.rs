//! What user code sees of a connection while it handles it: the [`Frame`] just
//! received and the [`ReadContext`] (the peer, replies, close, user data, and every
//! other connection).
//!
//! The context is object-safe and runtime-free, so a handler is written once against
//! chitchat-core and runs on any backend: tokio TCP in production, the in-memory
//! network in tests.

use std::fmt::{self, Write as _};
use std::ops::Deref;

use bytes::{Bytes, BytesMut};

use crate::addr::Addr;
use crate::error::WriteError;
use crate::frame::FrameExtent;
use crate::peers::Peers;

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
    /// The frame the framer located at the front of `buf` (see
    /// [`backend::lend_frame`](crate::backend::lend_frame)).
    ///
    /// # Panics
    /// When `buf` is shorter than the extent.
    #[inline]
    pub(crate) fn lend(buf: &'a mut BytesMut, extent: FrameExtent) -> Self {
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

/// The connection being handled, as seen from inside the handler: the frame's peer,
/// our replies to it, and every other connection through [`peers`](Self::peers).
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
    /// [`WriteError::Closed`] after [`close`](Self::close) and in
    /// [`Handler::on_close`](crate::Handler::on_close); nothing is queued then. On the server,
    /// [`WriteError::OutboundFull`] means the peer does not read and is being dropped.
    fn reply(&mut self, payload: &[u8]) -> Result<(), WriteError>;

    /// Closes this connection once the replies queued so far are written out. Frames
    /// already received after this one are not handed to the handler, and
    /// [`Handler::on_close`](crate::Handler::on_close) runs as soon as this handler call returns.
    fn close(&mut self);

    /// The user data the server or client was built with (the Go library's
    /// `additional`).
    fn state(&self) -> &S;

    /// Every connection of this server (for a client: its connection), to write to
    /// other peers, broadcast, close one, or list them.
    fn peers(&self) -> &dyn Peers;
}
