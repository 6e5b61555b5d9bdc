//! Benchmark of the [`Framer`]'s hot path, newline-delimited frames of 64 B, 1 KiB
//! and 64 KiB fed whole, in 1500-byte reads (one Ethernet MTU) and one byte at a
//! time, against tokio-util's `AnyDelimiterCodec` and `LinesCodec` splitting the
//! same bytes as the in-run baseline.
//!
//! The framer runs two ways: `framer` is the engine's path (`find_frame`, the frame
//! lent to the handler as a [`Frame`], then skipped), `framer_decode` is `decode`,
//! which hands out each frame as its own `Bytes` as the codecs do (and as
//! `FrameCodec` does for `Framed`).
//!
//! Run: `cargo bench -p chitchat-tokio --bench framer` (add `-- --quick` for a fast
//! pass). Throughput is in input bytes, so per-byte costs compare across read sizes.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chitchat_core::backend::{lend_frame, LocateFrames};
use chitchat_core::{Delimiter, FrameConfig, Framer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::codec::{AnyDelimiterCodec, Decoder, LinesCodec};

/// The frame limit for every splitter: the largest frame benchmarked, so none fails.
const MAX_FRAME_LEN: usize = 64 * 1024;

/// Frame sizes on the wire, delimiter included: a small message, a typical one,
/// and one at the limit.
const FRAME_SIZES: [usize; 3] = [64, 1024, 64 * 1024];

/// Bytes per input when reads are large: enough frames that per-call overhead
/// averages out, small enough to stay in L2/L3 cache.
const STREAM_LEN: usize = 1 << 20;

/// Bytes per input when fed one byte at a time (one decode call per byte).
const TRICKLE_LEN: usize = 64 * 1024;

/// One of the splitters under test, reduced to "take the next frame's length".
trait Splitter {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize>;
}

/// The engine's path: locate, lend, skip.
struct InPlace(Framer);

impl Splitter for InPlace {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize> {
        let extent = self.0.locate_frame(buf).expect("valid stream")?;
        let len = black_box(lend_frame(buf, extent)).len();
        buf.advance(extent.wire_len);
        Some(len)
    }
}

impl Splitter for Framer {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize> {
        self.decode(buf)
            .expect("valid stream")
            .map(|frame| frame.len())
    }
}

/// No splitting at all: what appending the input to the buffer costs by itself,
/// the floor under every splitter's time when fed 1 byte per call.
struct Floor;

impl Splitter for Floor {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize> {
        // Drop the bytes at each delimiter, so the buffer stays as small as a
        // framer's.
        if black_box(buf.last()) == Some(&b'\n') {
            buf.clear();
        }
        None
    }
}

impl Splitter for AnyDelimiterCodec {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize> {
        Decoder::decode(self, buf)
            .expect("valid stream")
            .map(|frame| frame.len())
    }
}

impl Splitter for LinesCodec {
    fn next_len(&mut self, buf: &mut BytesMut) -> Option<usize> {
        Decoder::decode(self, buf)
            .expect("valid stream")
            .map(|line| line.len())
    }
}

fn framer() -> Framer {
    let mut config = FrameConfig::new(Delimiter::Byte(b'\n'));
    config.max_frame_len = MAX_FRAME_LEN;
    Framer::new(config)
}

fn any_delimiter() -> AnyDelimiterCodec {
    AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\n".to_vec(), MAX_FRAME_LEN)
}

fn lines() -> LinesCodec {
    LinesCodec::new_with_max_length(MAX_FRAME_LEN)
}

/// `total` bytes (rounded down to whole frames, at least one) of `frame_size`-byte
/// newline-terminated frames of printable ASCII, so `LinesCodec` accepts them.
fn stream(frame_size: usize, total: usize) -> Vec<u8> {
    let frames = (total / frame_size).max(1);
    let mut out = Vec::with_capacity(frames * frame_size);
    for _ in 0..frames {
        out.extend((0..frame_size - 1).map(|i| b'a' + (i % 26) as u8));
        out.push(b'\n');
    }
    out
}

/// What a backend does: append each read to the buffer, split off every complete
/// frame. Returns the payload bytes seen, so nothing is optimised away.
fn feed(splitter: &mut impl Splitter, input: &[u8], read_size: usize) -> usize {
    let mut buf = BytesMut::with_capacity(read_size.min(input.len()).max(8 * 1024));
    let mut seen = 0;
    for read in input.chunks(read_size) {
        buf.extend_from_slice(read);
        while let Some(len) = splitter.next_len(&mut buf) {
            seen += black_box(len);
        }
    }
    assert!(buf.is_empty(), "every frame is complete");
    seen
}

/// One benchmark per splitter for this input and read size.
fn compare(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    param: &str,
    input: &[u8],
    read_size: usize,
) {
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_with_input(BenchmarkId::new("framer", param), input, |b, input| {
        b.iter(|| feed(&mut InPlace(framer()), input, read_size))
    });
    group.bench_with_input(
        BenchmarkId::new("framer_decode", param),
        input,
        |b, input| b.iter(|| feed(&mut framer(), input, read_size)),
    );
    group.bench_with_input(
        BenchmarkId::new("any_delimiter", param),
        input,
        |b, input| b.iter(|| feed(&mut any_delimiter(), input, read_size)),
    );
    group.bench_with_input(BenchmarkId::new("lines", param), input, |b, input| {
        b.iter(|| feed(&mut lines(), input, read_size))
    });
}

fn frame_label(frame_size: usize) -> String {
    if frame_size >= 1024 {
        format!("{}KiB", frame_size / 1024)
    } else {
        format!("{frame_size}B")
    }
}

fn split_frames(c: &mut Criterion) {
    for (name, read_size, total) in [
        ("one_piece", usize::MAX, STREAM_LEN),
        ("reads_1500", 1500, STREAM_LEN),
        ("reads_1", 1, TRICKLE_LEN),
    ] {
        let mut group = c.benchmark_group(name);
        for frame_size in FRAME_SIZES {
            let input = stream(frame_size, total);
            compare(&mut group, &frame_label(frame_size), &input, read_size);
        }
        group.finish();
    }
}

/// One 64 KiB frame at every read size: the per-byte cost should not depend on
/// the read size much, or the delimiter search is rescanning (quadratic trickle).
fn single_large_frame(c: &mut Criterion) {
    let input = stream(64 * 1024, 64 * 1024);
    let mut group = c.benchmark_group("single_64KiB_frame");
    for (label, read_size) in [("whole", usize::MAX), ("reads_1500", 1500), ("reads_1", 1)] {
        compare(&mut group, label, &input, read_size);
    }
    group.bench_with_input(BenchmarkId::new("floor", "reads_1"), &input, |b, input| {
        b.iter(|| feed(&mut Floor, input, 1))
    });
    group.finish();
}

fn config() -> Criterion {
    // The bench machine is shared: short runs, fewer samples; `--quick` still
    // shortens them further.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = split_frames, single_large_frame
}
criterion_main!(benches);
