//! How much room a connection's read buffer gets before a read.
//!
//! An empty buffer gets the connection's read size. A buffer that holds the start
//! of a frame grows geometrically, so a long frame costs few copies, but never past
//! what the longest frame the framer accepts can take: the frame's bytes and one
//! more (its delimiter, or the byte that proves it too long). By then the frame
//! has ended or been refused, so room beyond it would only be memory held for a
//! peer that has not finished its frame, and the partial-frame budget counts that
//! memory. Growing by plain doubling left an unfinished 60 KiB frame (the default
//! limit is 64 KiB) in a 120 KiB buffer.

use bytes::BytesMut;

/// Makes room in `buf` for a read of up to `read_size` bytes; after it there is
/// room for at least one byte. Called when the room left is short of a read.
///
/// - Empty: reuses the buffer's own allocation when it has `read_size` of room,
///   else takes a new one (no copy: nothing in it is needed).
/// - Holding the start of a frame: grows to twice what it holds, or by `read_size`
///   if that is more, but to at most `max_frame + 1` bytes.
/// - With no frame limit (`usize::MAX`), or holding more than a frame can take
///   (complete frames wait in it): grows by `read_size`, doubling as a `Vec` does.
pub(super) fn make_room(buf: &mut BytesMut, read_size: usize, max_frame: usize) {
    let len = buf.len();
    if len == 0 {
        if !buf.try_reclaim(read_size) {
            *buf = BytesMut::with_capacity(read_size);
        }
        return;
    }
    let frame_room = match max_frame.checked_add(1) {
        Some(frame_room) if len < frame_room => frame_room,
        _ => {
            // As a `Vec` grows: `realloc` may extend the allocation in place, which
            // matters for frames of many megabytes.
            buf.reserve(read_size);
            return;
        }
    };
    let target = len
        .saturating_add(read_size)
        .max(len.saturating_mul(2))
        .min(frame_room);
    // `target > len`: at least one byte of room.
    if buf.try_reclaim(target - len) {
        return;
    }
    let mut grown = BytesMut::with_capacity(target);
    grown.extend_from_slice(buf);
    *buf = grown;
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    /// Feeds `total` bytes of one unfinished frame the way a connection reads
    /// them: room made when less than a quarter of a read is left, each read fills
    /// what room there is, and a read that fills a full read size doubles it (up
    /// to `MAX_READ`). Returns the buffer and how many times it was reallocated.
    fn feed(total: usize, max_frame: usize) -> (BytesMut, usize) {
        let mut buf = BytesMut::new();
        let mut read_size = 8 * 1024;
        let mut reallocations = 0;
        while buf.len() < total {
            let spare = buf.capacity() - buf.len();
            if spare < read_size / 4 {
                let before = buf.capacity();
                make_room(&mut buf, read_size, max_frame);
                reallocations += usize::from(buf.capacity() != before);
            }
            let spare = buf.capacity() - buf.len();
            assert!(spare > 0, "no room at {} bytes", buf.len());
            let n = spare.min(total - buf.len());
            buf.extend_from_slice(&vec![b'x'; n]);
            if n == spare && spare >= read_size {
                read_size = (read_size * 2).min(super::super::MAX_READ);
            }
        }
        (buf, reallocations)
    }

    #[test]
    fn an_unfinished_frame_holds_no_more_than_the_limit_and_one_byte() {
        let (buf, _) = feed(60 * 1024, LIMIT);
        assert_eq!(buf.len(), 60 * 1024);
        assert_eq!(buf.capacity(), LIMIT + 1);
    }

    #[test]
    fn a_frame_over_the_limit_is_read_until_its_extra_byte() {
        let (buf, _) = feed(LIMIT + 1, LIMIT);
        assert_eq!(buf.capacity(), LIMIT + 1);
    }

    #[test]
    fn without_a_limit_a_long_frame_grows_a_logarithmic_number_of_times() {
        let (buf, reallocations) = feed(16 * 1024 * 1024, usize::MAX);
        assert_eq!(buf.len(), 16 * 1024 * 1024);
        // 8 KiB to 16 MiB: eleven doublings, and a few reads' worth on the way.
        assert!(reallocations <= 12, "{reallocations}");
        assert!(buf.capacity() < 32 * 1024 * 1024, "{}", buf.capacity());
    }

    #[test]
    fn an_empty_buffer_gets_a_read_size_without_a_copy() {
        let mut buf = BytesMut::with_capacity(100);
        make_room(&mut buf, 8192, LIMIT);
        assert_eq!(buf.capacity(), 8192);
        let mut roomy = BytesMut::with_capacity(16384);
        let at = roomy.as_ptr();
        make_room(&mut roomy, 8192, LIMIT);
        assert_eq!(roomy.as_ptr(), at, "its own allocation reused");
    }

    #[test]
    fn a_buffer_at_the_limit_still_gets_room_for_the_byte_that_decides() {
        let mut buf = BytesMut::with_capacity(LIMIT);
        buf.extend_from_slice(&vec![b'x'; LIMIT]);
        make_room(&mut buf, 64 * 1024, LIMIT);
        assert_eq!(buf.capacity() - buf.len(), 1);
    }

    #[test]
    fn complete_frames_waiting_past_a_frames_room_still_get_a_read() {
        let mut buf = BytesMut::with_capacity(100);
        buf.extend_from_slice(&[b'x'; 100]);
        make_room(&mut buf, 8192, 10);
        assert!(buf.capacity() - buf.len() >= 8192);
    }
}
