//! Fuzz target for chitchat-core's `Framer`: any bytes, cut into any chunks, must
//! split exactly as the same bytes fed at once, and as an independent reference
//! split written from the framer's documented contract, whether frames are taken
//! with `decode` or located in place with `locate_frame` (the engine's path, each
//! frame lent as a `Frame`, then kept or skipped); nothing may panic.
//!
//! Input layout (all of it chosen by the fuzzer):
//! - byte 0: the delimiter (`0xFF` picks EOF mode, any other value is that byte);
//! - byte 1: the frame limit, 0..=255;
//! - byte 2: how many chunk sizes follow (0..=15);
//! - that many bytes: chunk sizes, used in a cycle (0 means a 1-byte chunk);
//! - the rest: the stream.
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use chitchat_core::backend::{lend_frame, FrameExtent, LocateFrames};
use chitchat_core::{Delimiter, FrameConfig, FrameError, Framer};
use libfuzzer_sys::fuzz_target;

/// One outcome of splitting, in stream order.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Frame(Bytes),
    TooLong,
    Truncated(usize),
}

fn push(out: &mut Vec<Out>, result: Result<Option<Bytes>, FrameError>) -> bool {
    match result {
        Ok(Some(frame)) => out.push(Out::Frame(frame)),
        Ok(None) => return false,
        Err(FrameError::TooLong { .. }) => out.push(Out::TooLong),
        Err(FrameError::Truncated { len }) => out.push(Out::Truncated(len)),
        Err(other) => panic!("unknown frame error {other:?}"),
    }
    true
}

/// Feeds `chunks` one after another, decoding after each, then hits EOF.
fn split<'a>(config: FrameConfig, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Out> {
    let mut framer = Framer::new(config);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while push(&mut out, framer.decode(&mut buf)) {}
        // The framer keeps nothing it has judged: an over-limit frame is dropped.
        assert!(
            buf.len() <= config.max_frame_len,
            "holds more than the limit"
        );
    }
    while push(&mut out, framer.decode_eof(&mut buf)) {}
    assert!(buf.is_empty(), "bytes left after EOF");
    out
}

/// [`split`] the engine's way: frames located in place and lent; every other one
/// is kept (`into_bytes`), the rest copied and skipped.
fn split_in_place<'a>(config: FrameConfig, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Out> {
    let mut framer = Framer::new(config);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let take = |buf: &mut BytesMut,
                result: Result<Option<FrameExtent>, FrameError>,
                out: &mut Vec<Out>| {
        let extent = match result {
            Ok(Some(extent)) => extent,
            Ok(None) => return false,
            Err(err) => return push(out, Err(err)),
        };
        let frame = lend_frame(buf, extent);
        if out.len() % 2 == 0 {
            out.push(Out::Frame(frame.into_bytes()));
        } else {
            out.push(Out::Frame(Bytes::copy_from_slice(&frame)));
            buf.advance(extent.wire_len);
        }
        true
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while {
            let found = framer.locate_frame(&mut buf);
            take(&mut buf, found, &mut out)
        } {}
    }
    while {
        let found = framer.locate_frame_at_eof(&mut buf);
        take(&mut buf, found, &mut out)
    } {}
    assert!(buf.is_empty(), "bytes left after EOF");
    out
}

/// The contract, written independently: a frame is the bytes before each delimiter
/// (one `\r` before a `\n` dropped); one with more than `limit` bytes (its `\r`
/// counted) is one `TooLong`; bytes after the last delimiter are `Truncated`, unless
/// they already passed the limit. EOF mode: the whole stream is one frame.
fn reference(config: FrameConfig, stream: &[u8]) -> Vec<Out> {
    let limit = config.max_frame_len;
    let Delimiter::Byte(delimiter) = config.delimiter else {
        return vec![if stream.len() > limit {
            Out::TooLong
        } else {
            Out::Frame(Bytes::copy_from_slice(stream))
        }];
    };
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(at) = rest.iter().position(|&b| b == delimiter) {
        let mut frame = &rest[..at];
        if frame.len() > limit {
            out.push(Out::TooLong);
        } else {
            if delimiter == b'\n' && frame.last() == Some(&b'\r') {
                frame = &frame[..frame.len() - 1];
            }
            out.push(Out::Frame(Bytes::copy_from_slice(frame)));
        }
        rest = &rest[at + 1..];
    }
    if rest.len() > limit {
        out.push(Out::TooLong);
    } else if !rest.is_empty() {
        out.push(Out::Truncated(rest.len()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [delimiter, limit, n_sizes, rest @ ..] = data else {
        return;
    };
    let n_sizes = usize::from(*n_sizes % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n_sizes);
    let mut config = FrameConfig::new(match delimiter {
        0xFF => Delimiter::Eof,
        byte => Delimiter::Byte(*byte),
    });
    config.max_frame_len = usize::from(*limit);

    let whole = split(config, std::iter::once(stream));
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let size = sizes
            .get(i % sizes.len().max(1))
            .map_or(1, |&s| usize::from(s).max(1));
        let end = (at + size).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
        i += 1;
    }
    let chunked = split(config, chunks.iter().copied());
    assert_eq!(whole, chunked, "chunking changed the split");
    let in_place = split_in_place(config, chunks.into_iter());
    assert_eq!(whole, in_place, "the in-place path differs from decode");
    assert_eq!(
        whole,
        reference(config, stream),
        "the framer and the contract differ"
    );
});
