//! The frames of one loadgen client between queued and echoed, and the check of
//! every echoed byte against what was sent.

use crate::pattern::Pattern;

/// The frames of one client from queued to echoed: replies are checked against the
/// bytes that were sent with one comparison per read, not one per frame.
pub struct InFlight {
    size: usize,
    /// Frames queued and not yet fully echoed, starting at a frame boundary.
    /// Capacity for twice the pipeline depth: compacted, never regrown.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already echoed and checked.
    checked: usize,
    /// Bytes at the front of `buf` already handed to the socket.
    written: usize,
    /// Sequence numbers: the next frame to queue, the next to complete.
    next_seq: u64,
    done_seq: u64,
    /// A byte of the frame being received differed from what was sent.
    bad: bool,
}

impl InFlight {
    pub fn new(size: usize, depth: usize) -> Self {
        InFlight {
            size,
            buf: Vec::with_capacity(2 * depth * size),
            checked: 0,
            written: 0,
            next_seq: 0,
            done_seq: 0,
            bad: false,
        }
    }

    pub fn count(&self) -> u64 {
        self.next_seq - self.done_seq
    }

    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    pub fn sent(&mut self, n: usize) {
        self.written += n;
    }

    /// Queues `count` more frames of `client`.
    pub fn push(&mut self, pattern: &Pattern, client: u64, count: usize) {
        if self.buf.len() + count * self.size > self.buf.capacity() {
            // Drop the whole frames already checked (at most `depth` frames stay).
            let drop = self.checked - self.checked % self.size;
            self.buf.drain(..drop);
            self.checked -= drop;
            self.written -= drop;
        }
        for _ in 0..count {
            pattern.push(client, self.next_seq, &mut self.buf);
            self.next_seq += 1;
        }
    }

    /// Checks bytes just read; returns how many frames they completed and how many
    /// of those differed from what was sent.
    pub fn check(&mut self, mut data: &[u8]) -> (usize, u64) {
        let mut mismatches = 0;
        if self.checked + data.len() > self.written {
            // More bytes than were sent: a mismatch, whatever they are.
            mismatches += 1;
            data = &data[..self.written - self.checked];
        }
        let size = self.size;
        let from = self.checked;
        let to = from + data.len();
        if data != &self.buf[from..to] {
            // Rare: find which frames differ.
            let mut pos = from;
            while pos < to {
                let end = (pos / size + 1) * size;
                let end = end.min(to);
                if data[pos - from..end - from] != self.buf[pos..end] {
                    self.bad = true;
                }
                if end.is_multiple_of(size) && std::mem::take(&mut self.bad) {
                    mismatches += 1;
                }
                pos = end;
            }
        } else if self.bad && to / size > from / size {
            // The frame that went wrong in an earlier read has ended.
            self.bad = false;
            mismatches += 1;
        }
        let done = to / size - from / size;
        self.checked = to;
        self.done_seq += done as u64;
        (done, mismatches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues `count` frames of 10 bytes and marks them all written.
    fn in_flight(count: usize) -> (InFlight, Vec<u8>) {
        let pattern = Pattern::new(10);
        let mut frames = InFlight::new(10, count);
        frames.push(&pattern, 7, count);
        let sent = frames.unsent().to_vec();
        frames.sent(sent.len());
        (frames, sent)
    }

    #[test]
    fn echo_in_any_pieces_completes_every_frame() {
        for piece in [1, 3, 10, 17, 40] {
            let (mut frames, sent) = in_flight(4);
            let mut done = 0;
            for chunk in sent.chunks(piece) {
                let (completed, mismatches) = frames.check(chunk);
                assert_eq!(mismatches, 0, "pieces of {piece}");
                done += completed;
            }
            assert_eq!(done, 4, "pieces of {piece}");
            assert_eq!(frames.count(), 0);
        }
    }

    #[test]
    fn a_wrong_byte_is_one_mismatch_even_across_reads() {
        let (mut frames, mut echo) = in_flight(3);
        echo[12] ^= 1; // in the second frame, which arrives in two reads
        assert_eq!(frames.check(&echo[..15]), (1, 0));
        assert_eq!(frames.check(&echo[15..]), (2, 1));
    }

    #[test]
    fn bytes_beyond_what_was_sent_are_a_mismatch() {
        let (mut frames, mut echo) = in_flight(1);
        echo.extend_from_slice(b"extra\n");
        assert_eq!(frames.check(&echo), (1, 1));
    }

    #[test]
    fn queueing_past_the_first_capacity_compacts_instead_of_growing() {
        let pattern = Pattern::new(10);
        let mut frames = InFlight::new(10, 2);
        let capacity = frames.buf.capacity();
        for _ in 0..50 {
            frames.push(&pattern, 1, 2);
            let sent = frames.unsent().to_vec();
            frames.sent(sent.len());
            assert_eq!(frames.check(&sent), (2, 0));
        }
        assert_eq!(frames.buf.capacity(), capacity);
    }
}
