//! [`Busy`]: what a connection's task holds only while it has work to do: the
//! framer, the read and output buffers, and the clocks of a frame, a write or a
//! close in progress. A connection that waits idle gives all of it back, so an
//! idle connection is its task's resident part alone (see the size test in
//! `conn`).
//!
//! What is given back is kept for the next connection that wakes on the same
//! thread, up to [`SPARE_PER_THREAD`] of them: a client that sends one frame and
//! waits for the answer makes its connection go idle after every frame, and would
//! otherwise cost three allocations a frame (this state, the read buffer and the
//! output buffer). A spare holds no trace of its last connection: only buffer
//! capacity, at most [`INITIAL_READ`] of each, and no read buffer whose
//! allocation a frame the handler kept still shares.
//!
//! The resting connection keeps its [`BufferSizes`] (two bytes): its next burst
//! starts with buffers as large as its last one needed, allocated once rather than
//! grown by copying.

use std::cell::RefCell;

use bytes::BytesMut;
use chitchat_core::backend::LocateFrames;
use chitchat_core::{ConnStats, FrameConfig, Framer};

use crate::clock::Stamp;

/// First read size. Small enough that a burst of short frames costs little memory,
/// large enough for one Ethernet-sized segment several times over.
const INITIAL_READ: usize = 8 * 1024;

/// The output buffer's first allocation when a connection's last burst needed
/// no more.
const FIRST_OUTPUT: usize = 1024;

/// Largest output buffer a resting connection asks for at the start of its next
/// burst (beyond, the buffer grows as replies come).
const MAX_OUTPUT_HINT: usize = 64 * 1024;

/// Work states kept per thread for connections that wake there: enough for the
/// connections one worker serves between two waits; with their two buffers of at
/// most `INITIAL_READ` each, at most about 0.5 MiB per thread.
const SPARE_PER_THREAD: usize = 32;

thread_local! {
    /// Work states given back on this thread, at rest and wiped. Boxed: the
    /// boxes are what is reused, handed to connections as they are.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Busy>>> = const { RefCell::new(Vec::new()) };
}

/// The buffer sizes a connection's next burst starts with, as powers of two:
/// what its last burst reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BufferSizes {
    read_log2: u8,
    out_log2: u8,
}

impl BufferSizes {
    /// For a connection that has not rested yet.
    pub(super) const START: BufferSizes = BufferSizes {
        read_log2: INITIAL_READ.ilog2() as u8,
        out_log2: FIRST_OUTPUT.ilog2() as u8,
    };

    /// Bytes of the first read of a burst.
    fn read(self) -> usize {
        1 << self.read_log2
    }

    /// Capacity of the output buffer for the first reply of a burst.
    pub(super) fn out(self) -> usize {
        1 << self.out_log2
    }
}

/// See the [module docs](self).
pub(super) struct Busy {
    pub(super) framer: Framer,
    /// Unhandled input. Without capacity (a new state, not a spare), readability
    /// is awaited before a buffer is allocated.
    pub(super) read_buf: BytesMut,
    /// A frame was taken out of `read_buf` whole: what is left of it shares its
    /// allocation with that frame, and is not kept as a spare.
    pub(super) read_buf_shared: bool,
    /// Encoded output not yet taken by the transport.
    pub(super) out: BytesMut,
    /// The most output queued at once in this burst.
    pub(super) out_peak: usize,
    /// Reply bytes in `out` not yet added to the shared `queued` counter: replies
    /// are counted locally and published once per read, not once per frame.
    pub(super) unpublished: usize,
    /// When the unfinished frame at the front of the input began, for the frame
    /// timeout.
    pub(super) frame_started: Option<Stamp>,
    /// Since when queued output has been waiting without progress.
    pub(super) write_stalled_since: Option<Stamp>,
    /// While closing: when the close stops waiting for the peer.
    pub(super) close_deadline: Option<Stamp>,
    /// Frames in and out as last added to the shared counters, modulo 2^32 (fewer
    /// than that are handled between two reports; bytes are added as they move,
    /// once per system call).
    pub(super) frames_reported: [u32; 2],
    pub(super) read_size: u32,
    /// Bytes were written since the transport was last flushed (TLS buffers
    /// records; TCP's flush is free).
    pub(super) unflushed: bool,
}

impl Busy {
    /// The work state of a connection starting (again) from rest, whose traffic
    /// so far, `stats`, is all reported: a spare of this thread's, or a new one.
    pub(super) fn take(frame: FrameConfig, stats: &ConnStats, sizes: BufferSizes) -> Box<Self> {
        let spare = SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten();
        match spare {
            Some(mut busy) => {
                let (read_buf, out) = (
                    std::mem::take(&mut busy.read_buf),
                    std::mem::take(&mut busy.out),
                );
                *busy = Busy::fresh(frame, stats, sizes, read_buf, out);
                busy
            }
            None => Box::new(Busy::fresh(
                frame,
                stats,
                sizes,
                BytesMut::new(),
                BytesMut::new(),
            )),
        }
    }

    fn fresh(
        frame: FrameConfig,
        stats: &ConnStats,
        sizes: BufferSizes,
        read_buf: BytesMut,
        out: BytesMut,
    ) -> Self {
        Busy {
            framer: Framer::new(frame),
            read_buf,
            read_buf_shared: false,
            out,
            out_peak: 0,
            unpublished: 0,
            frame_started: None,
            write_stalled_since: None,
            close_deadline: None,
            // Truncation intended: see the field.
            frames_reported: [stats.frames_in as u32, stats.frames_out as u32],
            read_size: sizes.read() as u32,
            unflushed: false,
        }
    }

    /// Keeps this state, at rest, for the next connection that wakes on this
    /// thread, or frees it when the thread has enough; returns the sizes the
    /// connection's next burst starts with.
    pub(super) fn give_back(mut self: Box<Self>) -> BufferSizes {
        debug_assert!(self.is_at_rest());
        let out = self.out_peak.clamp(FIRST_OUTPUT, MAX_OUTPUT_HINT);
        let sizes = BufferSizes {
            // A power of two, doubled from the initial size up to `MAX_READ`.
            read_log2: self.read_size.ilog2() as u8,
            out_log2: out.next_power_of_two().ilog2() as u8,
        };
        if self.read_buf_shared {
            // A spare holding it would keep the frames' memory alive after them.
            self.read_buf = BytesMut::new();
        }
        for buf in [&mut self.read_buf, &mut self.out] {
            buf.clear();
            // Empty: back to the start of its allocation, all of it usable again
            // (false when it is there already or shared).
            let _ = buf.try_reclaim(buf.capacity() + 1);
            if buf.capacity() > INITIAL_READ {
                *buf = BytesMut::new();
            }
        }
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_PER_THREAD {
                spare.push(self);
            }
        });
        sizes
    }

    /// Nothing here outlives a wait for the peer: no input kept, no frame begun,
    /// no output queued or unflushed. (A closing connection keeps its deadline;
    /// the caller knows the phase.) Frames must be reported first.
    pub(super) fn is_at_rest(&self) -> bool {
        !self.framer.is_mid_frame(&self.read_buf)
            && self.out.is_empty()
            && !self.unflushed
            && self.unpublished == 0
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    fn busy() -> Box<Busy> {
        Busy::take(
            FrameConfig::default(),
            &ConnStats::default(),
            BufferSizes::START,
        )
    }

    #[test]
    fn a_fresh_busy_state_is_at_rest() {
        assert!(busy().is_at_rest());
    }

    #[test]
    fn input_output_or_a_pending_flush_keep_it() {
        let mut with_input = busy();
        with_input.read_buf.extend_from_slice(b"half a fr");
        assert!(!with_input.is_at_rest());

        let mut with_output = busy();
        with_output.out.extend_from_slice(b"reply\n");
        assert!(!with_output.is_at_rest());

        let mut unflushed = busy();
        unflushed.unflushed = true;
        assert!(!unflushed.is_at_rest());
    }

    #[test]
    fn skipping_an_oversized_frame_keeps_it_with_no_byte_buffered() {
        let mut skipping = busy();
        let mut config = FrameConfig::default();
        config.max_frame_len = 4;
        skipping.framer = Framer::new(config);
        skipping.read_buf.extend_from_slice(b"far too long");
        assert!(skipping
            .framer
            .locate_frame(&mut skipping.read_buf)
            .is_err());
        assert!(skipping.read_buf.is_empty());
        assert!(!skipping.is_at_rest());
    }

    #[test]
    fn frames_already_counted_are_not_reported_again() {
        let mut stats = ConnStats::default();
        stats.frames_in = (1 << 32) + 7;
        stats.frames_out = 3;
        let busy = Busy::take(FrameConfig::default(), &stats, BufferSizes::START);
        assert_eq!(busy.frames_reported, [7, 3]);
    }

    #[test]
    fn a_spare_comes_back_wiped_with_its_buffers_whole_capacity() {
        let mut used = busy();
        used.read_buf.extend_from_slice(&[b'x'; 1000]);
        used.read_buf.advance(1000);
        used.out.extend_from_slice(&[b'y'; 500]);
        used.out.advance(500);
        used.frames_reported = [9, 0];
        used.close_deadline = None;
        let _ = used.give_back();

        let reused = busy();
        assert!(reused.is_at_rest());
        // The handled fronts are usable again.
        assert!(reused.read_buf.capacity() >= 1000);
        assert!(reused.out.capacity() >= 500);
        assert_eq!(reused.read_size, INITIAL_READ as u32);
        assert_eq!(reused.frames_reported, [0, 0]);
        assert_eq!(reused.out_peak, 0);
    }

    #[test]
    fn a_spare_keeps_no_large_buffer_and_a_thread_keeps_few_spares() {
        let mut large = busy();
        large.read_buf.reserve(4 * INITIAL_READ);
        let _ = large.give_back();
        assert_eq!(busy().read_buf.capacity(), 0);

        let many: Vec<_> = (0..2 * SPARE_PER_THREAD).map(|_| busy()).collect();
        for busy in many {
            let _ = busy.give_back();
        }
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), SPARE_PER_THREAD);
    }

    #[test]
    fn a_read_buffer_shared_with_a_kept_frame_is_not_kept() {
        let mut used = busy();
        used.read_buf.extend_from_slice(b"kept\nrest");
        let kept = used.read_buf.split_to(5).freeze();
        used.read_buf.clear();
        used.read_buf_shared = true;
        let _ = used.give_back();
        let reused = busy();
        assert_eq!(reused.read_buf.capacity(), 0);
        assert!(!reused.read_buf_shared);
        assert_eq!(kept, "kept\n");
    }

    #[test]
    fn the_next_burst_starts_with_the_sizes_the_last_one_reached() {
        let mut bulk = busy();
        bulk.read_size = 64 * 1024;
        bulk.out_peak = 40_000;
        let sizes = bulk.give_back();
        assert_eq!(sizes.out(), 64 * 1024);
        let next = Busy::take(FrameConfig::default(), &ConnStats::default(), sizes);
        assert_eq!(next.read_size, 64 * 1024);

        // The output size follows the last burst down; short replies get the
        // first size, huge ones no more than the hint's bound.
        let mut quiet = next;
        quiet.out_peak = 100;
        assert_eq!(quiet.give_back().out(), FIRST_OUTPUT);
        let mut huge = busy();
        huge.out_peak = 10 << 20;
        assert_eq!(huge.give_back().out(), MAX_OUTPUT_HINT);
        assert_eq!(BufferSizes::START.read(), INITIAL_READ);
    }
}
