//! [`Busy`]: what a connection's task holds only while it has work to do: the
//! framer, the read and output buffers, and the clocks of a frame, a write or a
//! close in progress. A connection that waits idle gives all of it back, so an
//! idle connection is its task's resident part alone (see the size test in
//! `conn`).

use bytes::BytesMut;
use chitchat_core::backend::LocateFrames;
use chitchat_core::{ConnStats, FrameConfig, Framer};

use crate::clock::Stamp;

/// First read size. Small enough that a burst of short frames costs little memory,
/// large enough for one Ethernet-sized segment several times over.
const INITIAL_READ: usize = 8 * 1024;

/// See the [module docs](self).
pub(super) struct Busy {
    pub(super) framer: Framer,
    /// Unhandled input. Capacity 0 until the socket is readable.
    pub(super) read_buf: BytesMut,
    /// Encoded output not yet taken by the transport.
    pub(super) out: BytesMut,
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
    /// so far, `stats`, is all reported.
    pub(super) fn new(frame: FrameConfig, stats: &ConnStats) -> Box<Self> {
        Box::new(Busy {
            framer: Framer::new(frame),
            read_buf: BytesMut::new(),
            out: BytesMut::new(),
            unpublished: 0,
            frame_started: None,
            write_stalled_since: None,
            close_deadline: None,
            // Truncation intended: see the field.
            frames_reported: [stats.frames_in as u32, stats.frames_out as u32],
            read_size: INITIAL_READ as u32,
            unflushed: false,
        })
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
    use super::*;

    fn busy() -> Box<Busy> {
        Busy::new(FrameConfig::default(), &ConnStats::default())
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
        assert_eq!(
            Busy::new(FrameConfig::default(), &stats).frames_reported,
            [7, 3]
        );
    }
}
