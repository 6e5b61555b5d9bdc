//! The framing state machine: bytes in, frames out, no I/O.
//!
//! A backend reads from its transport into a `BytesMut` and hands that buffer to
//! [`Framer::decode`] until it returns `Ok(None)` ("need more bytes"); at end of stream
//! it calls [`Framer::decode_eof`]. Outgoing payloads go through [`Framer::encode`],
//! which refuses anything the peer's framer would split or reject, and writes every
//! other payload so that the peer reads back exactly it (with delimiter `\n`, a
//! payload ending in `'\r'` is followed by `"\r\n"`: the peer strips one `'\r'`).
//!
//! Frames are never copied. `decode` splits each off as a `Bytes` view of the read
//! buffer; backends only locate it ([`backend::LocateFrames`](crate::backend::LocateFrames)),
//! so the engine can lend it to the handler where it lies and skip it afterwards,
//! with no reference counting per frame. The delimiter search resumes where the last
//! one stopped, so a frame that trickles in one byte per read costs O(n) in total,
//! not O(n²).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::config::{Delimiter, FrameConfig};

/// Cuts a byte stream into frames: bytes in, frames out, no I/O. A backend feeds
/// its read buffer to [`decode`](Self::decode) until it returns `Ok(None)`, and calls
/// [`decode_eof`](Self::decode_eof) at the end of the stream.
///
/// ```
/// use bytes::BytesMut;
/// use chitchat_core::{FrameConfig, Delimiter, Framer};
///
/// let mut framer = Framer::new(FrameConfig::new(Delimiter::Byte(b'\n')));
/// let mut buf = BytesMut::from(&b"hello\r\nwor"[..]);
/// assert_eq!(framer.decode(&mut buf).unwrap().unwrap(), "hello");
/// assert_eq!(framer.decode(&mut buf).unwrap(), None); // "wor" waits for more
/// buf.extend_from_slice(b"ld\n");
/// assert_eq!(framer.decode(&mut buf).unwrap().unwrap(), "world");
/// ```
#[derive(Clone, Debug)]
pub struct Framer {
    /// The configuration's two fields, kept apart so that the framer packs into 24
    /// bytes with its state: every connection task holds one.
    delimiter: Delimiter,
    max_frame_len: usize,
    /// Bytes at the front of the buffer already searched for the delimiter: the next
    /// search starts here, which keeps trickling input linear.
    scanned: usize,
    /// We are dropping the rest of an oversized frame, up to its delimiter (or EOF).
    discarding: bool,
    /// EOF mode only: the one frame of the stream has been handed out.
    eof_delivered: bool,
}

/// A fault in the incoming byte stream. Needing more bytes is not one.
///
/// Either way the framer stays usable: after `TooLong` it skips to the end of the
/// oversized frame; after `Truncated` the buffer is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame being received grew past the limit (it is dropped).
    #[error("frame longer than {limit} bytes")]
    TooLong {
        /// The configured maximum frame length.
        limit: usize,
    },
    /// The stream ended inside a frame: these bytes had no delimiter.
    #[error("stream ended inside a frame: {len} bytes without a delimiter")]
    Truncated {
        /// How many bytes of the unfinished frame were dropped.
        len: usize,
    },
}

/// Where the framer found the next frame: at the front of the buffer (see
/// [`backend::LocateFrames`](crate::backend::LocateFrames)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameExtent {
    /// The frame's bytes, delimiter (and a stripped `'\r'`) excluded.
    pub payload_len: usize,
    /// The bytes the frame took on the wire, delimiter included: what the caller
    /// removes from the buffer once done with the frame.
    pub wire_len: usize,
}

impl FrameExtent {
    /// Takes the frame out of the front of `buf` as its own `Bytes` (no copy).
    ///
    /// # Panics
    /// When `buf` is shorter than `wire_len`: the extent is not of this buffer.
    #[inline]
    pub fn split_off(self, buf: &mut BytesMut) -> Bytes {
        let mut frame = buf.split_to(self.wire_len);
        frame.truncate(self.payload_len);
        frame.freeze()
    }
}

/// A payload that must not be sent: the peer would not read it back as one frame.
/// Nothing was written to the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Longer than the configured maximum frame length.
    #[error("payload of {len} bytes exceeds the {limit}-byte frame limit")]
    TooLong {
        /// The payload's length as the peer's framer counts it: with delimiter
        /// `\n`, a payload ending in `'\r'` counts one byte more, the `'\r'` written
        /// after it (see [`Framer::encode`]).
        len: usize,
        /// The configured maximum frame length.
        limit: usize,
    },
    /// Contains the delimiter, so the peer would read it as two frames.
    #[error("payload contains the delimiter at byte {offset}")]
    ContainsDelimiter {
        /// Position of the first delimiter byte in the payload.
        offset: usize,
    },
}

impl Framer {
    /// A framer for this delimiter and limit.
    pub fn new(config: FrameConfig) -> Self {
        Framer {
            delimiter: config.delimiter,
            max_frame_len: config.max_frame_len,
            scanned: 0,
            discarding: false,
            eof_delivered: false,
        }
    }

    /// The configuration this framer applies.
    pub fn config(&self) -> FrameConfig {
        FrameConfig {
            delimiter: self.delimiter,
            max_frame_len: self.max_frame_len,
        }
    }

    /// True while a frame has begun and not ended: bytes of it are buffered, or the
    /// rest of an oversized one is being skipped.
    pub(crate) fn is_mid_frame(&self, buf: &BytesMut) -> bool {
        !buf.is_empty() || self.discarding
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete frame yet; the bytes stay in
    /// `buf` and the next call resumes the search where this one stopped.
    ///
    /// # Errors
    /// [`FrameError::TooLong`] as soon as an unfinished frame exceeds the limit, or a
    /// complete one is found to; its bytes are dropped, and the framer skips the rest
    /// of that frame, so calling again continues with the next one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        Ok(self.find_frame(buf)?.map(|extent| extent.split_off(buf)))
    }

    /// Locates the next frame without taking it out of `buf` (see
    /// [`backend::LocateFrames::locate_frame`](crate::backend::LocateFrames::locate_frame)).
    #[inline]
    pub(crate) fn find_frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        // Per frame only this runs (inlined into the caller's loop); faults and
        // the end of the input leave through the out-of-line paths.
        let Delimiter::Byte(delimiter) = self.delimiter else {
            return self.check_eof_frame_len(buf);
        };
        let unscanned = &buf[self.scanned..];
        // A few new bytes (input trickling in) are quicker to look at one by one
        // than through memchr's call and dispatch.
        let found = if unscanned.len() < 8 {
            unscanned.iter().position(|&byte| byte == delimiter)
        } else {
            memchr::memchr(delimiter, unscanned)
        };
        let Some(found) = found else {
            return self.wait_for_delimiter(buf);
        };
        let end = self.scanned + found;
        self.scanned = 0;
        if self.discarding || end > self.max_frame_len {
            return self.skip_through(end, buf);
        }
        let crlf = delimiter == b'\n' && end > 0 && buf[end - 1] == b'\r';
        Ok(Some(FrameExtent {
            payload_len: end - usize::from(crlf),
            wire_len: end + 1,
        }))
    }

    /// The delimiter at `end` closes a frame we drop: the rest of an oversized one
    /// (then carry on with the next), or one found complete but too long.
    #[cold]
    #[inline(never)]
    fn skip_through(
        &mut self,
        end: usize,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        buf.advance(end + 1);
        if self.discarding {
            self.discarding = false;
            return self.find_frame(buf);
        }
        Err(FrameError::TooLong {
            limit: self.max_frame_len,
        })
    }

    /// No delimiter in `buf`: remember how far we looked, and fail fast if the
    /// unfinished frame is already too long.
    #[inline(never)]
    fn wait_for_delimiter(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        if self.discarding {
            buf.clear();
            self.scanned = 0;
            return Ok(None);
        }
        if buf.len() > self.max_frame_len {
            buf.clear();
            self.scanned = 0;
            self.discarding = true;
            return Err(FrameError::TooLong {
                limit: self.max_frame_len,
            });
        }
        self.scanned = buf.len();
        Ok(None)
    }

    /// EOF mode before EOF: only the length can be checked.
    #[inline(never)]
    fn check_eof_frame_len(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        if self.discarding {
            buf.clear();
        } else if buf.len() > self.max_frame_len {
            buf.clear();
            self.discarding = true;
            return Err(FrameError::TooLong {
                limit: self.max_frame_len,
            });
        }
        Ok(None)
    }

    /// Like [`decode`](Self::decode), for when the peer has shut down its write side:
    /// call it until it returns `Ok(None)`.
    ///
    /// In EOF mode the whole stream is one frame and it is handed out here (once,
    /// even when empty: the peer sent an empty message). In delimiter mode, complete
    /// frames still in `buf` come first.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when bytes without a delimiter remain: they are not
    /// a frame, and dropping them silently would hide a broken peer. `buf` is empty
    /// afterwards. [`FrameError::TooLong`] as in `decode`.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        Ok(self
            .find_frame_eof(buf)?
            .map(|extent| extent.split_off(buf)))
    }

    /// [`decode_eof`](Self::decode_eof) leaving the frame in place, as
    /// [`find_frame`](Self::find_frame) does for [`decode`](Self::decode).
    pub(crate) fn find_frame_eof(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrameExtent>, FrameError> {
        if self.delimiter == Delimiter::Eof {
            self.check_eof_frame_len(buf)?;
            if self.discarding || self.eof_delivered {
                buf.clear();
                return Ok(None);
            }
            self.eof_delivered = true;
            return Ok(Some(FrameExtent {
                payload_len: buf.len(),
                wire_len: buf.len(),
            }));
        }
        if let Some(extent) = self.find_frame(buf)? {
            return Ok(Some(extent));
        }
        self.discarding = false;
        self.scanned = 0;
        if buf.is_empty() {
            return Ok(None);
        }
        let len = buf.len();
        buf.clear();
        Err(FrameError::Truncated { len })
    }

    /// Appends `payload` and the delimiter to `dst`, or nothing at all.
    ///
    /// Any payload without the delimiter and within the limit is written so that the
    /// peer reads back exactly it. With delimiter `\n`, a payload ending in `'\r'` is
    /// followed by `"\r\n"` rather than `"\n"`: the peer's CRLF handling strips
    /// exactly one `'\r'`, the added one. That `'\r'` counts against the limit, as
    /// the peer's framer counts it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use chitchat_core::{Delimiter, EncodeError, FrameConfig, Framer};
    ///
    /// let framer = Framer::new(FrameConfig::new(Delimiter::Byte(b'\n')));
    /// let mut out = BytesMut::new();
    /// framer.encode(b"hi", &mut out).unwrap();
    /// framer.encode(b"a\r", &mut out).unwrap();
    /// assert_eq!(&out[..], b"hi\na\r\r\n");
    /// assert_eq!(
    ///     framer.encode(b"a\nb", &mut out),
    ///     Err(EncodeError::ContainsDelimiter { offset: 1 })
    /// );
    /// assert_eq!(&out[..], b"hi\na\r\r\n"); // unchanged
    /// ```
    ///
    /// # Errors
    /// An [`EncodeError`] when the peer could not read `payload` back as this one
    /// frame; `dst` is then unchanged.
    pub fn encode(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.check_payload(payload)?;
        self.write_frame(payload, dst);
        Ok(())
    }

    /// [`encode`](Self::encode) for a payload cut from a frame this framer found (an
    /// echo, or part of a frame): such bytes hold no delimiter and fit the limit
    /// (a frame ending in `'\r'` arrived with a second `'\r'` that counted against
    /// it), so nothing is checked and the payload is not searched again. Given
    /// other bytes it may write what the peer splits or refuses; `encode` is the
    /// default.
    #[inline]
    pub(crate) fn encode_from_frame(&self, payload: &[u8], dst: &mut BytesMut) {
        debug_assert_eq!(self.check_payload(payload), Ok(()), "not bytes of a frame");
        self.write_frame(payload, dst);
    }

    /// Writes a checked payload and what ends it on the wire.
    #[inline]
    fn write_frame(&self, payload: &[u8], dst: &mut BytesMut) {
        match self.delimiter {
            Delimiter::Byte(delimiter) => {
                let cr = needs_extra_cr(delimiter, payload);
                dst.reserve(payload.len() + 1 + usize::from(cr));
                dst.extend_from_slice(payload);
                if cr {
                    dst.put_u8(b'\r');
                }
                dst.put_u8(delimiter);
            }
            Delimiter::Eof => dst.extend_from_slice(payload),
        }
    }

    /// The checks of [`encode`](Self::encode), without writing: for callers that
    /// must know a payload is acceptable before committing to send it.
    ///
    /// # Errors
    /// As `encode`.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), EncodeError> {
        let limit = self.max_frame_len;
        let len = match self.delimiter {
            Delimiter::Byte(delimiter) => {
                if let Some(offset) = memchr::memchr(delimiter, payload) {
                    return Err(EncodeError::ContainsDelimiter { offset });
                }
                payload.len() + usize::from(needs_extra_cr(delimiter, payload))
            }
            Delimiter::Eof => payload.len(),
        };
        if len > limit {
            return Err(EncodeError::TooLong { len, limit });
        }
        Ok(())
    }
}

/// With delimiter `\n` the peer strips one `'\r'` before it: a payload ending in
/// `'\r'` needs another one after it to arrive whole.
#[inline]
fn needs_extra_cr(delimiter: u8, payload: &[u8]) -> bool {
    delimiter == b'\n' && payload.last() == Some(&b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer(delimiter: Delimiter, max_frame_len: usize) -> Framer {
        let mut config = FrameConfig::new(delimiter);
        config.max_frame_len = max_frame_len;
        Framer::new(config)
    }

    fn lines() -> Framer {
        framer(Delimiter::Byte(b'\n'), 64)
    }

    #[test]
    fn encode_from_frame_writes_a_trailing_cr_twice() {
        let lf = lines();
        let mut out = BytesMut::new();
        lf.encode_from_frame(b"ab", &mut out);
        lf.encode_from_frame(b"", &mut out);
        lf.encode_from_frame(b"a\r", &mut out);
        assert_eq!(&out[..], b"ab\n\na\r\r\n");
        let eof = framer(Delimiter::Eof, 64);
        eof.encode_from_frame(b"a\r", &mut out);
        assert_eq!(&out[..], b"ab\n\na\r\r\na\r");
    }

    #[test]
    fn a_trailing_cr_survives_the_round_trip() {
        let mut out = BytesMut::new();
        for payload in [&b"a\r"[..], b"\r", b"\r\r", b"a\rb"] {
            lines().encode(payload, &mut out).unwrap();
        }
        let got = split_all(&mut lines(), &out);
        assert_eq!(frames(&got), [&b"a\r"[..], b"\r", b"\r\r", b"a\rb"]);
    }

    #[test]
    fn the_added_cr_counts_against_the_limit() {
        let framer = framer(Delimiter::Byte(b'\n'), 4);
        let mut out = BytesMut::new();
        framer.encode(b"123\r", &mut out).unwrap_err();
        assert_eq!(
            framer.check_payload(b"123\r"),
            Err(EncodeError::TooLong { len: 5, limit: 4 })
        );
        assert!(out.is_empty());
        framer.encode(b"12\r", &mut out).unwrap();
        framer.encode(b"1234", &mut out).unwrap();
        let mut decoder = framer.clone();
        assert_eq!(
            frames(&split_all(&mut decoder, &out)),
            [&b"12\r"[..], b"1234"]
        );
    }

    /// Every result of feeding `input` at once then hitting EOF.
    fn split_all(framer: &mut Framer, input: &[u8]) -> Vec<Result<Bytes, FrameError>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => out.push(Err(err)),
            }
        }
        loop {
            match framer.decode_eof(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => out.push(Err(err)),
            }
        }
        out
    }

    fn frames(results: &[Result<Bytes, FrameError>]) -> Vec<&[u8]> {
        results
            .iter()
            .map(|r| r.as_ref().expect("frame").as_ref())
            .collect()
    }

    #[test]
    fn crlf_loses_exactly_one_carriage_return() {
        let out = split_all(&mut lines(), b"a\r\n\r\nb\r\r\nc\n");
        assert_eq!(frames(&out), [&b"a"[..], b"", b"b\r", b"c"]);
    }

    #[test]
    fn empty_frames_are_delivered() {
        let out = split_all(&mut lines(), b"\n\n");
        assert_eq!(frames(&out), [&b""[..], b""]);
    }

    #[test]
    fn carriage_return_is_kept_with_other_delimiters() {
        let out = split_all(&mut framer(Delimiter::Byte(b';'), 64), b"a\r;b;");
        assert_eq!(frames(&out), [&b"a\r"[..], b"b"]);
    }

    #[test]
    fn leftover_bytes_at_eof_are_reported_not_delivered() {
        let out = split_all(&mut lines(), b"a\nbcd");
        assert_eq!(out[0].as_deref(), Ok(&b"a"[..]));
        assert_eq!(out[1], Err(FrameError::Truncated { len: 3 }));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn eof_mode_delivers_the_whole_stream_once() {
        let mut framer = framer(Delimiter::Eof, 64);
        let mut buf = BytesMut::from(&b"a\nb"[..]);
        assert_eq!(framer.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\0c");
        assert_eq!(framer.decode_eof(&mut buf).unwrap().unwrap(), "a\nb\0c");
        assert_eq!(framer.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn eof_mode_delivers_an_empty_message() {
        let out = split_all(&mut framer(Delimiter::Eof, 64), b"");
        assert_eq!(frames(&out), [&b""[..]]);
    }

    #[test]
    fn eof_mode_over_the_limit_fails_once_and_delivers_nothing() {
        let mut framer = framer(Delimiter::Eof, 4);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(
            framer.decode(&mut buf),
            Err(FrameError::TooLong { limit: 4 })
        );
        assert!(buf.is_empty());
        buf.extend_from_slice(b"more");
        assert_eq!(framer.decode(&mut buf), Ok(None));
        assert_eq!(framer.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn frames_of_limit_minus_one_and_limit_pass_limit_plus_one_fails() {
        let limit = 8;
        for (len, ok) in [(limit - 1, true), (limit, true), (limit + 1, false)] {
            let mut input = vec![b'x'; len];
            input.push(b'\n');
            input.extend_from_slice(b"next\n");
            let out = split_all(&mut framer(Delimiter::Byte(b'\n'), limit), &input);
            if ok {
                assert_eq!(frames(&out), [&input[..len], b"next"], "len {len}");
            } else {
                assert_eq!(out[0], Err(FrameError::TooLong { limit }), "len {len}");
                assert_eq!(frames(&out[1..]), [&b"next"[..]], "len {len}");
            }
        }
    }

    #[test]
    fn unfinished_frame_fails_as_soon_as_it_passes_the_limit() {
        let mut framer = framer(Delimiter::Byte(b'\n'), 4);
        let mut buf = BytesMut::from(&b"1234"[..]);
        assert_eq!(framer.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"5");
        assert_eq!(
            framer.decode(&mut buf),
            Err(FrameError::TooLong { limit: 4 })
        );
        assert!(buf.is_empty(), "the oversized bytes are not kept");
    }

    #[test]
    fn skipping_recovers_after_two_oversized_frames_in_a_row() {
        let mut framer = framer(Delimiter::Byte(b'\n'), 4);
        let mut results = Vec::new();
        let mut buf = BytesMut::new();
        for chunk in [&b"ok\n12345"[..], b"678", b"9\nabcdefgh", b"\nfine\n"] {
            buf.extend_from_slice(chunk);
            loop {
                match framer.decode(&mut buf) {
                    Ok(None) => break,
                    other => results.push(other),
                }
            }
        }
        let too_long = Err(FrameError::TooLong { limit: 4 });
        assert_eq!(
            results,
            [
                Ok(Some(Bytes::from_static(b"ok"))),
                too_long.clone(),
                too_long,
                Ok(Some(Bytes::from_static(b"fine"))),
            ]
        );
    }

    #[test]
    fn trickled_input_is_scanned_once() {
        // Two-megabyte frame, one byte per call: quadratic rescanning would take
        // minutes; resuming takes milliseconds. Assert on the resume offset instead
        // of on time.
        let mut framer = framer(Delimiter::Byte(b'\n'), 1 << 21);
        let mut buf = BytesMut::new();
        for i in 0..1000 {
            buf.put_u8(b'x');
            assert_eq!(framer.decode(&mut buf), Ok(None));
            assert_eq!(framer.scanned, i + 1);
        }
        buf.put_u8(b'\n');
        assert_eq!(framer.decode(&mut buf).unwrap().unwrap().len(), 1000);
        assert_eq!(framer.scanned, 0);
    }

    #[test]
    fn frames_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"abc\ndef\n"[..]);
        let start = buf.as_ptr();
        let mut framer = lines();
        let first = framer.decode(&mut buf).unwrap().unwrap();
        let second = framer.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.as_ptr(), start);
        assert_eq!(second.as_ptr(), start.wrapping_add(4));
    }

    #[test]
    fn encode_refuses_what_the_peer_could_not_read_back() {
        let framer = framer(Delimiter::Byte(b'\n'), 4);
        let mut out = BytesMut::new();
        assert_eq!(
            framer.encode(b"12345", &mut out),
            Err(EncodeError::TooLong { len: 5, limit: 4 })
        );
        assert_eq!(
            framer.encode(b"a\nb", &mut out),
            Err(EncodeError::ContainsDelimiter { offset: 1 })
        );
        assert!(out.is_empty());
        framer.encode(b"1234", &mut out).unwrap();
        framer.encode(b"", &mut out).unwrap();
        assert_eq!(&out[..], b"1234\n\n");
    }

    #[test]
    fn eof_mode_encodes_without_delimiter() {
        let framer = framer(Delimiter::Eof, 8);
        let mut out = BytesMut::new();
        framer.encode(b"a\nb\r", &mut out).unwrap();
        assert_eq!(&out[..], b"a\nb\r");
    }
}
