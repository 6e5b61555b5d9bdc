//! The frames loadgen sends: `--size` bytes each, `\n` included, a hex header
//! naming the client and sequence number written over pseudo-random letters, so a
//! lost, repeated or misrouted frame shows in the echo.

/// Distinct frame bodies; the header makes every frame distinct anyway.
const VARIANTS: usize = 7;

/// Hex digits of the frame header (client << 40 | sequence number).
const HEADER_DIGITS: usize = 16;

/// The frames every client sends: `VARIANTS` bodies of `size` bytes each ending in
/// `\n`, with a per-frame header written over their first bytes.
pub struct Pattern {
    pub size: usize,
    header_len: usize,
    bodies: Vec<u8>,
}

impl Pattern {
    pub fn new(size: usize) -> Self {
        // xorshift64: printable letters, the same in every run.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut bodies = Vec::with_capacity(VARIANTS * size);
        for _ in 0..VARIANTS {
            for _ in 0..size - 1 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bodies.push(b'a' + (state % 26) as u8);
            }
            bodies.push(b'\n');
        }
        Pattern {
            size,
            header_len: (size - 1).min(HEADER_DIGITS),
            bodies,
        }
    }

    /// The body of frame `seq` of `client`: it depends on both, so that frames stay
    /// distinct when the header is cut short by a small `--size`.
    fn body(&self, client: u64, seq: u64) -> &[u8] {
        let start = (client.wrapping_add(seq) % VARIANTS as u64) as usize * self.size;
        &self.bodies[start..start + self.size]
    }

    /// The last `header_len` hex digits of `client << 40 | seq`.
    pub fn header(&self, client: u64, seq: u64) -> [u8; HEADER_DIGITS] {
        let value = client << 40 | seq;
        let mut out = [0; HEADER_DIGITS];
        out[..8].copy_from_slice(&hex8((value >> 32) as u32));
        out[8..].copy_from_slice(&hex8(value as u32));
        out
    }

    /// Appends frame `seq` of `client` to `out`.
    pub fn push(&self, client: u64, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.body(client, seq));
        let header = self.header(client, seq);
        out[start..start + self.header_len]
            .copy_from_slice(&header[HEADER_DIGITS - self.header_len..]);
    }
}

/// The 8 lowercase hex digits of `value`, computed in a register (this runs for
/// every frame; a digit-by-digit loop cost more than the rest of queueing it).
fn hex8(value: u32) -> [u8; 8] {
    // Spread the nibbles into bytes, most significant first: 0x0a0b0c0d0e0f0g0h.
    let mut x = u64::from(value);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // Bytes above 9 get 'a' - '0' - 10 = 0x27 more than '0'.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_format() {
        for value in [0, 1, 9, 10, 15, 16, 0xdead_beef, u32::MAX, 0x0123_4567] {
            assert_eq!(hex8(value), format!("{value:08x}").as_bytes(), "{value:#x}");
        }
        let pattern = Pattern::new(64);
        assert_eq!(&pattern.header(0xab, 0x12)[..], b"0000ab0000000012");
    }

    #[test]
    fn frames_carry_their_header_and_end_in_the_delimiter() {
        for size in [1, 2, 10, 64, 16 * 1024] {
            let pattern = Pattern::new(size);
            let frame = |client, seq| {
                let mut out = Vec::new();
                pattern.push(client, seq, &mut out);
                out
            };
            let out = frame(3, 5);
            assert_eq!(out.len(), size);
            assert_eq!(out[size - 1], b'\n');
            assert!(!out[..size - 1].contains(&b'\n'));
            if size > 1 {
                // The last header digit is the sequence number's.
                assert_ne!(out, frame(3, 6), "size {size}");
            }
            if size > HEADER_DIGITS {
                assert_ne!(out, frame(4, 5), "size {size}");
            }
        }
    }
}
