//! Scripted chunk tests of the [`Framer`]: hand-written streams fed as a list of
//! reads, with the expected frames and errors spelled out per read, around the
//! frame limit where framers break (`max - 1`, `max`, `max + 1` bytes, the
//! delimiter on every possible read boundary, oversized frames back to back).
//!
//! The framer always skips an oversized frame and goes on; whether that costs the
//! connection (`OversizePolicy`) is the engine's call, so "SkipFrame" recovery is
//! simply the framer's behaviour here.

use bytes::{Bytes, BytesMut};
use chitchat_core::{Delimiter, FrameConfig, FrameError, Framer};

type Outcome = Result<Bytes, FrameError>;

fn framer(delimiter: Delimiter, max_frame_len: usize) -> Framer {
    let mut config = FrameConfig::new(delimiter);
    config.max_frame_len = max_frame_len;
    Framer::new(config)
}

/// Feeds each read, decoding to `Ok(None)` after it, then decodes at EOF. Returns
/// what each read produced, with EOF's results as the last entry.
fn script(framer: &mut Framer, reads: &[&[u8]]) -> Vec<Vec<Outcome>> {
    fn drain(
        framer: &mut Framer,
        buf: &mut BytesMut,
        next: fn(&mut Framer, &mut BytesMut) -> Result<Option<Bytes>, FrameError>,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        loop {
            match next(framer, buf) {
                Ok(None) => return out,
                Ok(Some(frame)) => out.push(Ok(frame)),
                Err(err) => out.push(Err(err)),
            }
            assert!(out.len() <= 1 << 16, "framer stuck");
        }
    }
    let mut buf = BytesMut::new();
    let mut per_read: Vec<_> = reads
        .iter()
        .map(|read| {
            buf.extend_from_slice(read);
            drain(framer, &mut buf, Framer::decode)
        })
        .collect();
    per_read.push(drain(framer, &mut buf, Framer::decode_eof));
    per_read
}

fn frame(bytes: &[u8]) -> Outcome {
    Ok(Bytes::copy_from_slice(bytes))
}

fn too_long(limit: usize) -> Outcome {
    Err(FrameError::TooLong { limit })
}

/// `input` in reads of `size` bytes, the first one `first` bytes (so the delimiter
/// lands at every offset within a read as `first` varies).
fn fixed_reads(input: &[u8], first: usize, size: usize) -> Vec<&[u8]> {
    let (head, rest) = input.split_at(first.min(input.len()));
    std::iter::once(head)
        .chain(rest.chunks(size))
        .filter(|read| !read.is_empty())
        .collect()
}

/// Every way to cut `input` into one, two or three reads, plus fixed read sizes
/// (1, 2, 3, 7, `max`, `max + 1`, `max + 2`) at every starting offset.
fn chunkings(input: &[u8], max: usize) -> Vec<Vec<&[u8]>> {
    let n = input.len();
    let mut all = vec![vec![input]];
    for i in 1..n {
        all.push(vec![&input[..i], &input[i..]]);
        for j in i + 1..n {
            all.push(vec![&input[..i], &input[i..j], &input[j..]]);
        }
    }
    for size in [1, 2, 3, 7, max, max + 1, max + 2] {
        let size = size.max(1);
        for first in 0..size {
            all.push(fixed_reads(input, first, size));
        }
    }
    all
}

/// Index of the read during which byte number `count` (1-based) of the stream
/// arrives.
fn read_holding_byte(reads: &[&[u8]], count: usize) -> usize {
    let mut fed = 0;
    for (i, read) in reads.iter().enumerate() {
        fed += read.len();
        if fed >= count {
            return i;
        }
    }
    panic!("stream shorter than {count} bytes");
}

#[test]
fn frames_around_the_limit_with_the_delimiter_on_every_read_boundary() {
    for max in [1, 2, 5, 8] {
        for len in [max - 1, max, max + 1] {
            let mut input = vec![b'a'; len];
            input.extend_from_slice(b"\nk\n");
            for reads in chunkings(&input, max) {
                let per_read = script(&mut framer(Delimiter::Byte(b'\n'), max), &reads);
                let all: Vec<_> = per_read.concat();
                let first = if len <= max {
                    frame(&input[..len])
                } else {
                    too_long(max)
                };
                assert_eq!(all, [first, frame(b"k")], "max {max}, reads {reads:?}");
                if len > max {
                    // Fails fast: in the read that brings byte `max + 1`, even when
                    // the delimiter is still to come.
                    let at = read_holding_byte(&reads, max + 1);
                    assert_eq!(per_read[at][0], too_long(max), "reads {reads:?}");
                }
            }
        }
    }
}

#[test]
fn crlf_counts_toward_the_limit_until_it_is_stripped() {
    // The `\r` is part of the frame until the `\n` proves it is a CRLF, so with
    // CRLF the longest frame is `max - 1` bytes (as with tokio-util's LinesCodec).
    let max = 6;
    for len in [max - 1, max] {
        let mut input = vec![b'a'; len];
        input.extend_from_slice(b"\r\nok\r\n");
        for reads in chunkings(&input, max) {
            let all = script(&mut framer(Delimiter::Byte(b'\n'), max), &reads).concat();
            let first = if len < max {
                frame(&input[..len])
            } else {
                too_long(max)
            };
            assert_eq!(all, [first, frame(b"ok")], "reads {reads:?}");
        }
    }
}

#[test]
fn oversized_frames_twice_in_a_row_are_skipped_and_the_next_one_delivered() {
    let max = 4;
    let input = b"ok\n12345\n123456789abc\n\nfine\n";
    for reads in chunkings(input, max) {
        let all = script(&mut framer(Delimiter::Byte(b'\n'), max), &reads).concat();
        assert_eq!(
            all,
            [
                frame(b"ok"),
                too_long(max),
                too_long(max),
                frame(b""),
                frame(b"fine")
            ],
            "reads {reads:?}"
        );
    }
}

#[test]
fn oversized_frames_back_to_back_with_another_delimiter() {
    let max = 3;
    let input = b"abcd;efghij;k;";
    for reads in chunkings(input, max) {
        let all = script(&mut framer(Delimiter::Byte(b';'), max), &reads).concat();
        assert_eq!(
            all,
            [too_long(max), too_long(max), frame(b"k")],
            "{reads:?}"
        );
    }
}

#[test]
fn eof_inside_a_skipped_frame_reports_nothing_more() {
    let max = 4;
    let input = b"ok\n1234567";
    for reads in chunkings(input, max) {
        let all = script(&mut framer(Delimiter::Byte(b'\n'), max), &reads).concat();
        assert_eq!(all, [frame(b"ok"), too_long(max)], "reads {reads:?}");
    }
}

#[test]
fn unterminated_tail_within_the_limit_is_truncated_at_eof() {
    let max = 4;
    let input = b"ok\n1234";
    for reads in chunkings(input, max) {
        let per_read = script(&mut framer(Delimiter::Byte(b'\n'), max), &reads);
        assert_eq!(
            per_read.last().unwrap(),
            &[Err(FrameError::Truncated { len: 4 })],
            "reported at EOF only, reads {reads:?}"
        );
        assert_eq!(per_read.concat()[0], frame(b"ok"));
    }
}

#[test]
fn nul_delimiter_splits_empty_frames() {
    let input = b"\0a\0\0";
    for reads in chunkings(input, 2) {
        let all = script(&mut framer(Delimiter::Byte(0), 2), &reads).concat();
        assert_eq!(all, [frame(b""), frame(b"a"), frame(b"")], "{reads:?}");
    }
}

#[test]
fn eof_mode_delivers_a_stream_of_exactly_the_limit_and_rejects_one_more_byte() {
    let max = 5;
    for len in [max - 1, max, max + 1] {
        let input = vec![b'\n'; len];
        for reads in chunkings(&input, max) {
            let per_read = script(&mut framer(Delimiter::Eof, max), &reads);
            if len <= max {
                assert_eq!(per_read.concat(), [frame(&input)], "reads {reads:?}");
                assert_eq!(per_read.last().unwrap().len(), 1, "delivered at EOF");
            } else {
                let at = read_holding_byte(&reads, max + 1);
                assert_eq!(per_read[at], [too_long(max)], "reads {reads:?}");
                assert_eq!(per_read.concat().len(), 1, "reads {reads:?}");
            }
        }
    }
}
