//! What only backends need: the framer's in-place API, lending frames to handlers,
//! and constructors for the reports a backend makes. Application code never needs
//! this module; a new runtime backend (or a test double of one) does.

use bytes::BytesMut;

use crate::addr::Addr;
use crate::conn_event::{CloseEvent, CloseReason, ConnStats};
use crate::context::Frame;
use crate::frame::{EncodeError, FrameError, Framer};

pub use crate::frame::FrameExtent;
pub use crate::stats::ErrorCounters;

/// The framer's in-place path: frames are located where they lie in the read buffer
/// and lent to the handler, with no reference counting per frame; a handler that
/// keeps one takes it out itself ([`Frame::into_bytes`]).
///
/// ```
/// use bytes::{Buf, BytesMut};
/// use chitchat_core::backend::LocateFrames;
/// use chitchat_core::{Delimiter, FrameConfig, Framer};
///
/// let mut framer = Framer::new(FrameConfig::new(Delimiter::Byte(b'\n')));
/// let mut buf = BytesMut::from(&b"hi\r\nyo\n"[..]);
/// let extent = framer.locate_frame(&mut buf).unwrap().unwrap();
/// assert_eq!(&buf[..extent.payload_len], b"hi");
/// buf.advance(extent.wire_len);
/// assert_eq!(&buf[..], b"yo\n");
/// ```
pub trait LocateFrames {
    /// Like [`Framer::decode`], but leaves the frame where it is: the frame is
    /// `buf[..payload_len]`, and the caller removes `wire_len` bytes from the front
    /// of `buf` (with `advance` or `split_to`) before calling again. Bytes that are
    /// not part of a frame (an oversized frame being skipped) are removed here.
    ///
    /// # Errors
    /// As [`Framer::decode`].
    fn locate_frame(&mut self, buf: &mut BytesMut) -> Result<Option<FrameExtent>, FrameError>;

    /// [`Framer::decode_eof`] leaving the frame in place, as
    /// [`locate_frame`](Self::locate_frame) does for `decode`.
    ///
    /// # Errors
    /// As [`Framer::decode_eof`].
    fn locate_frame_at_eof(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError>;

    /// [`Framer::encode`] for a payload cut from a frame this framer located (an
    /// echo, or part of a frame): such bytes hold no delimiter and fit the limit,
    /// so they are not searched again. Given other bytes it may write what the peer
    /// splits; `encode` is the default.
    ///
    /// # Errors
    /// As [`Framer::encode`], for the checks that remain.
    fn encode_part_of_frame(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError>;

    /// True while a frame has begun and not ended: bytes of it are in `buf`, or the
    /// rest of an oversized one is being skipped. A deadline on frame completion
    /// runs while this holds.
    fn is_mid_frame(&self, buf: &BytesMut) -> bool;
}

impl LocateFrames for Framer {
    #[inline]
    fn locate_frame(&mut self, buf: &mut BytesMut) -> Result<Option<FrameExtent>, FrameError> {
        self.find_frame(buf)
    }

    fn locate_frame_at_eof(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        self.find_frame_eof(buf)
    }

    #[inline]
    fn encode_part_of_frame(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_from_frame(payload, dst)
    }

    #[inline]
    fn is_mid_frame(&self, buf: &BytesMut) -> bool {
        Framer::is_mid_frame(self, buf)
    }
}

/// Lends the frame `extent` located at the front of `buf` to a handler.
///
/// # Panics
/// When `buf` is shorter than the extent.
#[inline]
pub fn lend_frame(buf: &mut BytesMut, extent: FrameExtent) -> Frame<'_> {
    Frame::lend(buf, extent)
}

/// The close of the connection from `peer`.
pub fn close_event(peer: Addr, reason: CloseReason, stats: ConnStats) -> CloseEvent {
    CloseEvent {
        peer,
        reason,
        stats,
    }
}
