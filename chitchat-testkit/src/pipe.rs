//! One direction of an in-memory byte stream: the bytes a writer sent, each piece
//! with the time it becomes readable, ending in an optional FIN; the reader's and
//! writer's wakers; and the bound that gives backpressure like a TCP window.
//!
//! A pipe knows nothing of hosts or faults: the connection asks the link for the
//! arrival times ([`Faults::plan_write`](crate::fault::Faults)) and tells the pipe
//! whether its link is partitioned when it reads.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;
use tokio::time::Instant;

/// A piece of the stream on its way.
#[derive(Debug)]
struct Segment {
    /// The bytes; empty for the FIN.
    data: Bytes,
    /// When the segment becomes readable; never earlier than the one before it.
    ready_at: Instant,
    /// Whether a read stops after this segment (the link chunks writes).
    boundary: bool,
    /// The end of the stream: reads return EOF from here on.
    fin: bool,
    /// Had arrived when the link was last cut, so a partition does not hold it.
    arrived: bool,
}

/// What the reader of a pipe can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readable {
    /// Bytes can be read.
    Data,
    /// The writer shut down and everything before it was read.
    Eof,
    /// The next segment becomes readable at this time.
    At(Instant),
    /// Nothing is on its way, or it is held by a partition: wait for a wake-up.
    Nothing,
    /// The stream was reset (an abortive close) and what had arrived was read.
    Reset,
}

/// One direction of a connection.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// Segments in stream order, arrival times non-decreasing.
    segments: VecDeque<Segment>,
    /// Data bytes written and not yet read, in flight or arrived: what the window
    /// counts.
    buffered: usize,
    /// The window: writes wait while `buffered` is at this bound.
    capacity: usize,
    /// Arrival time of the last segment, to keep the stream in order.
    last_ready: Option<Instant>,
    /// The writer shut down (FIN queued); further writes fail.
    pub fin_sent: bool,
    /// The reader closed its end: what is buffered is dropped, writes fail with
    /// `BrokenPipe`.
    pub reader_closed: bool,
    /// Ended abortively (RST): the reader gets `ConnectionReset` once it has read
    /// what had arrived; writes fail with `ConnectionReset`.
    pub reset: bool,
    /// The task waiting to read.
    reader: Option<Waker>,
    /// The task waiting for window space.
    writer: Option<Waker>,
}

impl Pipe {
    pub fn new(capacity: usize) -> Self {
        Pipe {
            segments: VecDeque::new(),
            buffered: 0,
            capacity,
            last_ready: None,
            fin_sent: false,
            reader_closed: false,
            reset: false,
            reader: None,
            writer: None,
        }
    }

    /// Window space left for the writer.
    pub fn space(&self) -> usize {
        self.capacity.saturating_sub(self.buffered)
    }

    /// Data bytes written and not yet read.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn push_segment(&mut self, data: Bytes, ready_at: Instant, boundary: bool, fin: bool) {
        // In order, like TCP: a segment never becomes readable before the one
        // written before it, whatever jitter was drawn for it.
        let ready_at = self.last_ready.map_or(ready_at, |last| last.max(ready_at));
        self.last_ready = Some(ready_at);
        self.buffered += data.len();
        self.segments.push_back(Segment {
            data,
            ready_at,
            boundary,
            fin,
            arrived: false,
        });
    }

    /// Queues written bytes; the caller checked [`space`](Self::space).
    pub fn push(&mut self, data: Bytes, ready_at: Instant, boundary: bool) {
        debug_assert!(data.len() <= self.space());
        self.push_segment(data, ready_at, boundary, false);
    }

    /// Queues the end of the stream after what was written.
    pub fn push_fin(&mut self, ready_at: Instant) {
        self.fin_sent = true;
        self.push_segment(Bytes::new(), ready_at, true, true);
    }

    /// What the reader can do at `now`. While the pipe's link is `partitioned`, only
    /// segments that had arrived when it was cut can be read.
    pub fn readable(&self, now: Instant, partitioned: bool) -> Readable {
        let Some(front) = self.segments.front() else {
            return if self.reset {
                Readable::Reset
            } else {
                Readable::Nothing
            };
        };
        if partitioned && !front.arrived {
            return Readable::Nothing;
        }
        if front.ready_at > now {
            return Readable::At(front.ready_at);
        }
        if front.fin {
            Readable::Eof
        } else {
            Readable::Data
        }
    }

    /// Takes up to `max` readable bytes, handing each run to `sink`; returns how many
    /// were taken. Stops at a chunk boundary, a held or future segment, or the FIN
    /// (which stays, so every later read sees EOF too).
    pub fn read(
        &mut self,
        now: Instant,
        partitioned: bool,
        max: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> usize {
        let mut taken = 0;
        while taken < max && self.readable(now, partitioned) == Readable::Data {
            let front = self.segments.front_mut().expect("readable data");
            let n = front.data.len().min(max - taken);
            sink(&front.data[..n]);
            taken += n;
            if n < front.data.len() {
                let _ = front.data.split_to(n);
                break;
            }
            let boundary = front.boundary;
            self.segments.pop_front();
            if boundary {
                break;
            }
        }
        self.buffered -= taken;
        taken
    }

    /// Drops every queued segment (the reader closed, or the connection was reset),
    /// freeing the window.
    pub fn discard(&mut self) {
        self.segments.clear();
        self.buffered = 0;
    }

    /// Whether bytes have arrived that the reader has not read: closing then is
    /// abortive, as TCP answers unread input with a reset.
    pub fn has_unread(&self, now: Instant, partitioned: bool) -> bool {
        self.readable(now, partitioned) == Readable::Data
    }

    /// Ends the stream abortively at `now`: the RST overtakes what is still on its
    /// way (dropped); what had arrived stays readable, then the reader gets the
    /// reset.
    pub fn abort(&mut self, now: Instant, partitioned: bool) {
        let arrived = self
            .segments
            .iter()
            .take_while(|s| s.ready_at <= now && (!partitioned || s.arrived))
            .count();
        self.segments.truncate(arrived);
        self.buffered = self.segments.iter().map(|s| s.data.len()).sum();
        self.reset = true;
    }

    /// When the link is cut at `now`: what has arrived stays readable, everything
    /// else (in flight or written later) is held until heal.
    pub fn mark_arrived(&mut self, now: Instant) {
        for segment in &mut self.segments {
            if segment.ready_at > now {
                break;
            }
            segment.arrived = true;
        }
    }

    /// When the link is restored at `now`: gives each held segment a new arrival
    /// time, `now` plus a fresh one-way `delay`, as TCP retransmits once the cable is
    /// back; the stream stays in order.
    pub fn retime_held(&mut self, now: Instant, mut delay: impl FnMut() -> std::time::Duration) {
        let mut last: Option<Instant> = None;
        for segment in &mut self.segments {
            if !segment.arrived {
                segment.ready_at = segment.ready_at.max(now + delay());
            }
            if let Some(last) = last {
                segment.ready_at = segment.ready_at.max(last);
            }
            last = Some(segment.ready_at);
        }
        if last.is_some() {
            self.last_ready = last.max(self.last_ready);
        }
    }

    /// Remembers the reader's waker (the task waiting to read).
    pub fn park_reader(&mut self, waker: &Waker) {
        park(&mut self.reader, waker);
    }

    /// Remembers the writer's waker (the task waiting for window space).
    pub fn park_writer(&mut self, waker: &Waker) {
        park(&mut self.writer, waker);
    }

    /// The reader's waker, to wake after a change it must see.
    pub fn take_reader(&mut self) -> Option<Waker> {
        self.reader.take()
    }

    /// The writer's waker, to wake after a change it must see.
    pub fn take_writer(&mut self) -> Option<Waker> {
        self.writer.take()
    }
}

fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(parked) if parked.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn read_all(pipe: &mut Pipe, now: Instant, held: bool, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        pipe.read(now, held, max, |bytes| out.extend_from_slice(bytes));
        out
    }

    #[test]
    fn bytes_become_readable_at_their_arrival_time() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"abc"), t0 + ms(10), false);
        assert_eq!(pipe.readable(t0, false), Readable::At(t0 + ms(10)));
        assert_eq!(read_all(&mut pipe, t0, false, 10), b"");
        assert_eq!(pipe.readable(t0 + ms(10), false), Readable::Data);
        assert_eq!(read_all(&mut pipe, t0 + ms(10), false, 10), b"abc");
        assert_eq!(pipe.readable(t0 + ms(10), false), Readable::Nothing);
    }

    #[test]
    fn later_writes_never_overtake_earlier_ones() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"slow"), t0 + ms(50), false);
        pipe.push(Bytes::from_static(b"fast"), t0 + ms(1), false);
        assert_eq!(pipe.readable(t0 + ms(1), false), Readable::At(t0 + ms(50)));
        assert_eq!(read_all(&mut pipe, t0 + ms(50), false, 100), b"slowfast");
    }

    #[test]
    fn window_counts_unread_bytes_and_reads_free_it() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(8);
        pipe.push(Bytes::from_static(b"12345"), t0, false);
        assert_eq!(pipe.space(), 3);
        assert_eq!(read_all(&mut pipe, t0, false, 2), b"12");
        assert_eq!((pipe.space(), pipe.buffered()), (5, 3));
        assert_eq!(read_all(&mut pipe, t0, false, 10), b"345");
        assert_eq!(pipe.space(), 8);
    }

    #[test]
    fn chunk_boundaries_end_a_read() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"ab"), t0, true);
        pipe.push(Bytes::from_static(b"cd"), t0, true);
        assert_eq!(read_all(&mut pipe, t0, false, 100), b"ab");
        assert_eq!(read_all(&mut pipe, t0, false, 100), b"cd");
    }

    #[test]
    fn fin_gives_eof_after_the_data_and_stays() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"x"), t0, false);
        pipe.push_fin(t0);
        assert_eq!(pipe.readable(t0, false), Readable::Data);
        assert_eq!(read_all(&mut pipe, t0, false, 100), b"x");
        assert_eq!(pipe.readable(t0, false), Readable::Eof);
        assert_eq!(read_all(&mut pipe, t0, false, 100), b"");
        assert_eq!(pipe.readable(t0, false), Readable::Eof);
    }

    #[test]
    fn abort_keeps_what_arrived_then_resets() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"here"), t0, false);
        pipe.push(Bytes::from_static(b"flying"), t0 + ms(5), false);
        pipe.push_fin(t0 + ms(5));
        pipe.abort(t0, false);
        assert_eq!(pipe.buffered(), 4);
        assert_eq!(read_all(&mut pipe, t0 + ms(10), false, 100), b"here");
        assert_eq!(pipe.readable(t0 + ms(10), false), Readable::Reset);
    }

    #[test]
    fn partition_holds_what_had_not_arrived_and_heal_retimes_it() {
        let t0 = Instant::now();
        let mut pipe = Pipe::new(100);
        pipe.push(Bytes::from_static(b"early"), t0 + ms(5), true);
        pipe.push(Bytes::from_static(b"late"), t0 + ms(20), true);
        pipe.mark_arrived(t0 + ms(10));
        // Written at the very instant of the cut, with no latency: held too.
        pipe.push(Bytes::from_static(b"now"), t0 + ms(10), true);
        // Arrived before the cut: still readable during the partition.
        assert_eq!(read_all(&mut pipe, t0 + ms(30), true, 100), b"early");
        assert_eq!(pipe.readable(t0 + ms(30), true), Readable::Nothing);
        pipe.retime_held(t0 + ms(100), || ms(7));
        assert_eq!(
            pipe.readable(t0 + ms(100), false),
            Readable::At(t0 + ms(107))
        );
        assert_eq!(read_all(&mut pipe, t0 + ms(107), false, 100), b"late");
        assert_eq!(read_all(&mut pipe, t0 + ms(107), false, 100), b"now");
    }
}
