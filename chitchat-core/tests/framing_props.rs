//! Property tests of the [`Framer`], byte by byte, no I/O: any chunking of a stream
//! gives the one-shot split, both agree with a reference splitter written for
//! obviousness, encode round-trips, and the read buffer stays bounded.
//!
//! Streams are biased towards what breaks framers: frequent delimiters, empty
//! frames, `\r\n`, frames of exactly `max - 1`, `max` and `max + 1` bytes, and
//! chunkings that cut right before or after every delimiter. Limits are small
//! (`0..=64`) so the limit is hit in most cases.

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use chitchat_core::backend::{lend_frame, FrameExtent, LocateFrames};
use chitchat_core::{Delimiter, EncodeError, FrameConfig, FrameError, Framer};
use proptest::collection::vec;
use proptest::prelude::*;

/// One result of the framer: a frame or a fault, in the order they came out.
type Outcome = Result<Bytes, FrameError>;

/// Cases per property: enough to hit every boundary many times over, few enough
/// that the file runs in about a second in debug mode.
const CASES: u32 = 384;

/// The delimiters under test: LF (with its CRLF handling), another printable byte
/// on which `\r` means nothing, NUL, and the whole-stream mode.
const DELIMITERS: [Delimiter; 4] = [
    Delimiter::Byte(b'\n'),
    Delimiter::Byte(b';'),
    Delimiter::Byte(0),
    Delimiter::Eof,
];

fn framer(delimiter: Delimiter, max_frame_len: usize) -> Framer {
    let mut config = FrameConfig::new(delimiter);
    config.max_frame_len = max_frame_len;
    Framer::new(config)
}

/// The byte the stream generator uses as "end of frame" (EOF mode has none, so
/// newlines there are just data).
fn delimiter_byte(delimiter: Delimiter) -> u8 {
    match delimiter {
        Delimiter::Byte(byte) => byte,
        Delimiter::Eof => b'\n',
    }
}

// ---------------------------------------------------------------------------------
// The reference splitter.

/// A result of the reference splitter, with the moment it becomes known.
#[derive(Clone, Debug)]
struct Expected {
    outcome: Outcome,
    /// How many bytes of the stream must have been fed before the framer can (and
    /// must) report this; `None`: only at EOF.
    known_at: Option<usize>,
}

/// What the framer should report for `input`, written to be obviously correct
/// rather than fast: split on the delimiter, check each piece's length.
///
/// A frame's length is counted before the `\r` of a CRLF is stripped (the framer
/// must decide before it has seen whether a `\n` follows). An oversized frame yields
/// exactly one `TooLong`, known as soon as `max + 1` of its bytes are in, whether or
/// not its delimiter has come yet. Bytes after the last delimiter yield `Truncated`
/// at EOF, or `TooLong` if they alone pass the limit.
fn reference(delimiter: Delimiter, max: usize, input: &[u8]) -> Vec<Expected> {
    let too_long = || Err(FrameError::TooLong { limit: max });
    let Delimiter::Byte(byte) = delimiter else {
        // The whole stream is one frame.
        return vec![if input.len() > max {
            Expected {
                outcome: too_long(),
                known_at: Some(max + 1),
            }
        } else {
            Expected {
                outcome: Ok(Bytes::copy_from_slice(input)),
                known_at: None,
            }
        }];
    };
    let mut expected = Vec::new();
    let mut start = 0;
    let mut pieces = input.split(|&b| b == byte).peekable();
    while let Some(piece) = pieces.next() {
        let is_tail = pieces.peek().is_none();
        let end = start + piece.len();
        if piece.len() > max {
            expected.push(Expected {
                outcome: too_long(),
                known_at: Some(start + max + 1),
            });
        } else if !is_tail {
            let frame = match byte {
                b'\n' => piece.strip_suffix(b"\r").unwrap_or(piece),
                _ => piece,
            };
            expected.push(Expected {
                outcome: Ok(Bytes::copy_from_slice(frame)),
                known_at: Some(end + 1),
            });
        } else if !piece.is_empty() {
            expected.push(Expected {
                outcome: Err(FrameError::Truncated { len: piece.len() }),
                known_at: None,
            });
        }
        start = end + 1;
    }
    expected
}

/// What `encode` should say about `payload`: accept it exactly when the peer would
/// read it back as this one frame.
fn reference_encode(delimiter: Delimiter, max: usize, payload: &[u8]) -> Result<(), EncodeError> {
    if payload.len() > max {
        return Err(EncodeError::TooLong {
            len: payload.len(),
            limit: max,
        });
    }
    if let Delimiter::Byte(byte) = delimiter {
        if let Some(offset) = payload.iter().position(|&b| b == byte) {
            return Err(EncodeError::ContainsDelimiter { offset });
        }
        if byte == b'\n' && payload.last() == Some(&b'\r') {
            return Err(EncodeError::TrailingCarriageReturn);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Driving the framer.

/// What the buffer looked like after one chunk was fed and decoded to `Ok(None)`.
#[derive(Debug)]
struct Step {
    /// Stream bytes fed so far, this chunk included.
    fed: usize,
    /// The size of this chunk.
    chunk_len: usize,
    /// `buf.len()` once `decode` returned `Ok(None)`.
    buf_len: usize,
    /// Outcomes reported so far, this chunk's included.
    reported: usize,
}

/// Everything one feeding of a stream produced.
#[derive(Debug)]
struct Run {
    outcomes: Vec<Outcome>,
    steps: Vec<Step>,
}

/// Calls `next` until it returns `Ok(None)`, collecting what it returns. Every
/// result but the last must consume at least one byte, so more than
/// `buf.len() + 1` of them means the framer is stuck.
fn drain(
    framer: &mut Framer,
    buf: &mut BytesMut,
    outcomes: &mut Vec<Outcome>,
    next: fn(&mut Framer, &mut BytesMut) -> Result<Option<Bytes>, FrameError>,
) {
    let bound = buf.len() + 1;
    for _ in 0..=bound {
        match next(framer, buf) {
            Ok(None) => return,
            Ok(Some(frame)) => outcomes.push(Ok(frame)),
            Err(err) => outcomes.push(Err(err)),
        }
    }
    panic!("framer returned more than {bound} results for a {bound}-byte buffer");
}

/// Feeds `chunks` one at a time, decoding to `Ok(None)` after each, then decodes
/// at EOF: what a backend does with its reads.
fn feed<'a>(framer: &mut Framer, chunks: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut buf = BytesMut::new();
    let mut run = Run {
        outcomes: Vec::new(),
        steps: Vec::new(),
    };
    let mut fed = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        drain(framer, &mut buf, &mut run.outcomes, Framer::decode);
        run.steps.push(Step {
            fed,
            chunk_len: chunk.len(),
            buf_len: buf.len(),
            reported: run.outcomes.len(),
        });
    }
    drain(framer, &mut buf, &mut run.outcomes, Framer::decode_eof);
    assert!(buf.is_empty(), "bytes left in the buffer after EOF");
    run
}

/// How a stream is cut into reads.
#[derive(Clone, Debug)]
enum Chunking {
    /// Chunks of these sizes, used in turn and cycled until the stream runs out.
    Sizes(Vec<usize>),
    /// A cut right before and/or right after every delimiter byte (and, for `\n`,
    /// between `\r` and `\n`, since the cut falls before the `\n`).
    AroundDelimiters { before: bool, after: bool },
}

fn cut<'a>(chunking: &Chunking, delimiter: u8, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut cuts = Vec::new();
    match chunking {
        Chunking::Sizes(sizes) => {
            let mut at = 0;
            for size in sizes.iter().cycle() {
                if at >= input.len() {
                    break;
                }
                at = (at + size).min(input.len());
                cuts.push(at);
            }
        }
        Chunking::AroundDelimiters { before, after } => {
            for (i, _) in input.iter().enumerate().filter(|(_, &b)| b == delimiter) {
                if *before {
                    cuts.push(i);
                }
                if *after {
                    cuts.push(i + 1);
                }
            }
            cuts.push(input.len());
        }
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in cuts {
        if end > start {
            chunks.push(&input[start..end]);
            start = end;
        }
    }
    chunks
}

/// [`feed`] the way the engine does it: frames are located in place with
/// `find_frame` and lent as a [`Frame`]; a frame whose bit in `keep` is set is
/// taken with `into_bytes`, the others are copied out and skipped with `advance`.
fn feed_in_place<'a>(
    framer: &mut Framer,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    keep: u64,
) -> Vec<Outcome> {
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    let take = |buf: &mut BytesMut, extent: FrameExtent, outcomes: &mut Vec<Outcome>| {
        let index = outcomes.len() % 64;
        let frame = lend_frame(buf, extent);
        if keep >> index & 1 == 1 {
            outcomes.push(Ok(frame.into_bytes()));
        } else {
            outcomes.push(Ok(Bytes::copy_from_slice(&frame)));
            buf.advance(extent.wire_len);
        }
    };
    type Find = fn(&mut Framer, &mut BytesMut) -> Result<Option<FrameExtent>, FrameError>;
    let mut drain = |framer: &mut Framer, buf: &mut BytesMut, find: Find| {
        let bound = buf.len() + 1;
        for _ in 0..=bound {
            match find(framer, buf) {
                Ok(None) => return,
                Ok(Some(extent)) => take(buf, extent, &mut outcomes),
                Err(err) => outcomes.push(Err(err)),
            }
        }
        panic!("framer returned more than {bound} results for a {bound}-byte buffer");
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        drain(framer, &mut buf, Framer::locate_frame);
    }
    drain(framer, &mut buf, Framer::locate_frame_at_eof);
    assert!(buf.is_empty(), "bytes left in the buffer after EOF");
    outcomes
}

// ---------------------------------------------------------------------------------
// Strategies.

/// A stream of pieces that stress the framer around `max`.
fn stream(delimiter: u8, max: usize) -> impl Strategy<Value = Vec<u8>> {
    let near_limit = (max.saturating_sub(1)..=max + 1, any::<bool>()).prop_map(move |(n, crlf)| {
        let mut frame = vec![b'y'; n];
        if crlf {
            frame.push(b'\r');
        }
        frame.push(delimiter);
        frame
    });
    let piece = prop_oneof![
        4 => Just(vec![delimiter]),
        2 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        3 => (0..=2 * max + 2).prop_map(|n| vec![b'x'; n]),
        3 => near_limit,
        2 => any::<u8>().prop_map(|b| vec![b]),
        1 => vec(any::<u8>(), 0..8),
    ];
    vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn chunking(max: usize) -> impl Strategy<Value = Chunking> {
    let size = prop_oneof![
        3 => Just(1),
        3 => 1..=4usize,
        2 => max.saturating_sub(1).max(1)..=max + 2,
        2 => 1..=3 * max + 3,
    ];
    prop_oneof![
        3 => vec(size, 1..16).prop_map(Chunking::Sizes),
        1 => Just(Chunking::Sizes(vec![1])),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(before, after)| Chunking::AroundDelimiters { before, after }),
    ]
}

/// A delimiter, a limit, a stream and a way to cut it.
fn case() -> impl Strategy<Value = (Delimiter, usize, Vec<u8>, Chunking)> {
    (proptest::sample::select(&DELIMITERS[..]), 0..=64usize).prop_flat_map(|(delimiter, max)| {
        (
            Just(delimiter),
            Just(max),
            stream(delimiter_byte(delimiter), max),
            chunking(max),
        )
    })
}

/// Payloads that `encode` must sometimes refuse: delimiters and `\r` are common.
fn payload(delimiter: u8) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        1 => Just(delimiter),
        1 => Just(b'\r'),
        6 => any::<u8>(),
    ];
    vec(byte, 0..72)
}

// ---------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Cutting the stream into reads changes nothing: same frames, same errors,
    /// same order as feeding it in one piece.
    #[test]
    fn any_chunking_gives_the_one_shot_split((delimiter, max, input, chunking) in case()) {
        let one_shot = feed(&mut framer(delimiter, max), [&input[..]]).outcomes;
        let chunks = cut(&chunking, delimiter_byte(delimiter), &input);
        let chunked = feed(&mut framer(delimiter, max), chunks).outcomes;
        prop_assert_eq!(chunked, one_shot);
    }

    /// The framer reports what the reference splitter says, and each result as
    /// soon as the bytes fed so far decide it (oversized frames fail fast), not
    /// later and not earlier.
    #[test]
    fn framer_matches_the_reference_splitter((delimiter, max, input, chunking) in case()) {
        let expected = reference(delimiter, max, &input);
        let expected_outcomes: Vec<Outcome> =
            expected.iter().map(|e| e.outcome.clone()).collect();

        let one_shot = feed(&mut framer(delimiter, max), [&input[..]]);
        prop_assert_eq!(&one_shot.outcomes, &expected_outcomes);

        let chunks = cut(&chunking, delimiter_byte(delimiter), &input);
        let chunked = feed(&mut framer(delimiter, max), chunks);
        prop_assert_eq!(&chunked.outcomes, &expected_outcomes);
        for step in &chunked.steps {
            let known = expected
                .iter()
                .take_while(|e| e.known_at.is_some_and(|at| at <= step.fed))
                .count();
            prop_assert_eq!(
                step.reported, known,
                "after {} of {} bytes: reported {}, expected {}",
                step.fed, input.len(), step.reported, known
            );
        }
    }

    /// Locating frames in place and lending them (the engine's path) gives what
    /// `decode` gives, whether the handler keeps each frame or not.
    #[test]
    fn in_place_frames_match_decode(
        (delimiter, max, input, chunking) in case(),
        keep in any::<u64>(),
    ) {
        let decoded = feed(&mut framer(delimiter, max), [&input[..]]).outcomes;
        let chunks = cut(&chunking, delimiter_byte(delimiter), &input);
        let in_place = feed_in_place(&mut framer(delimiter, max), chunks, keep);
        prop_assert_eq!(in_place, decoded);
    }

    /// Between reads the buffer holds at most one unfinished frame of at most
    /// `max` bytes: never more than `max` plus the last read, as the engine's
    /// memory budget assumes (and in fact never more than `max`).
    #[test]
    fn buffer_stays_within_the_limit((delimiter, max, input, chunking) in case()) {
        let chunks = cut(&chunking, delimiter_byte(delimiter), &input);
        let mut framer = framer(delimiter, max);
        let run = feed(&mut framer, chunks);
        for step in &run.steps {
            prop_assert!(
                step.buf_len <= max + step.chunk_len,
                "buffer of {} bytes after a {}-byte read, limit {}",
                step.buf_len, step.chunk_len, max
            );
            prop_assert!(
                step.buf_len <= max,
                "buffer of {} bytes between reads, limit {}",
                step.buf_len, max
            );
        }
    }

    /// A payload `encode` accepts decodes back to exactly itself; one it refuses
    /// (for the documented reason) leaves the output untouched; and it refuses
    /// exactly the payloads that would not come back intact.
    #[test]
    fn encode_round_trips_or_writes_nothing(
        (delimiter, max, payload, prefix) in (proptest::sample::select(&DELIMITERS[..]), 0..=64usize)
            .prop_flat_map(|(delimiter, max)| (
                Just(delimiter),
                Just(max),
                payload(delimiter_byte(delimiter)),
                vec(any::<u8>(), 0..8),
            ))
    ) {
        let framer_under_test = framer(delimiter, max);
        let mut dst = BytesMut::from(&prefix[..]);
        let result = framer_under_test.encode(&payload, &mut dst);
        prop_assert_eq!(result, framer_under_test.check_payload(&payload));
        prop_assert_eq!(result, reference_encode(delimiter, max, &payload));

        // What the peer would read from the payload sent as one frame.
        let mut wire = payload.clone();
        if let Delimiter::Byte(byte) = delimiter {
            wire.push(byte);
        }
        let read_back = feed(&mut framer(delimiter, max), [&wire[..]]).outcomes;
        let intact = read_back == [Ok(Bytes::copy_from_slice(&payload))];
        prop_assert_eq!(result.is_ok(), intact, "read back as {:?}", read_back);

        if result.is_ok() {
            prop_assert_eq!(&dst[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&dst[prefix.len()..], &wire[..]);
        } else {
            prop_assert_eq!(&dst[..], &prefix[..]);
        }
    }

    /// Many payloads encoded back to back into one stream, read in any chunking,
    /// come back as exactly the accepted ones, in order.
    #[test]
    fn encoded_stream_decodes_to_the_accepted_payloads(
        (delimiter, max, payloads, chunking) in (
            proptest::sample::select(&DELIMITERS[..3]),
            0..=64usize,
        )
            .prop_flat_map(|(delimiter, max)| (
                Just(delimiter),
                Just(max),
                vec(payload(delimiter_byte(delimiter)), 0..12),
                chunking(max),
            ))
    ) {
        let encoder = framer(delimiter, max);
        let mut wire = BytesMut::new();
        let mut accepted = Vec::new();
        for payload in &payloads {
            if encoder.encode(payload, &mut wire).is_ok() {
                accepted.push(Ok(Bytes::copy_from_slice(payload)));
            }
        }
        let chunks = cut(&chunking, delimiter_byte(delimiter), &wire);
        let decoded = feed(&mut framer(delimiter, max), chunks).outcomes;
        prop_assert_eq!(decoded, accepted);
    }
}
