//! What a TLS handshake flood is made of: half a ClientHello that leaves the server
//! waiting, a ClientHello far larger than any real one, and an open-file limit high
//! enough for thousands of connections on loopback.
//!
//! Two suites include this file: `tests/tls_handshake.rs` here, against the engine
//! in-process, and the examples' `tests/tls_flood.rs` (by `#[path]`), against
//! `echo_server` as a black box. It lives with the published crate, whose tests
//! cannot depend on the examples; chitchat-testkit, the in-memory network, stays
//! free of TLS and of libc. It uses std and libc only.

// Each suite uses only part of it.
#![allow(dead_code)]

use std::sync::OnceLock;

/// The first 20 bytes of a ClientHello whose record announces 200: rustls waits for
/// the rest, which never comes.
pub const HALF_HELLO: [u8; 20] = [
    0x16, 0x03, 0x01, 0x00, 0xc8, // handshake record of 200 bytes
    0x01, 0x00, 0x00, 0xc4, // ClientHello of 196 bytes
    0x03, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9, // version, the start of the random
];

/// A ClientHello of nearly 64 KiB (the most rustls would buffer for one handshake
/// message) in four records, all but its last byte.
pub fn huge_hello() -> &'static [u8] {
    static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
    HELLO.get_or_init(|| {
        let body_len: usize = 65_000;
        let mut message = vec![0x01, 0x00, (body_len >> 8) as u8, body_len as u8];
        message.extend_from_slice(&[0x03, 0x03]);
        message.resize(4 + body_len, 0x5a);
        let mut wire = Vec::new();
        for record in message.chunks(16_384) {
            wire.extend_from_slice(&[0x16, 0x03, 0x01]);
            wire.extend_from_slice(&(record.len() as u16).to_be_bytes());
            wire.extend_from_slice(record);
        }
        wire.pop();
        wire
    })
}

/// Raises the soft limit on open files to at least `needed`, as far as the hard
/// limit allows (child processes inherit it).
pub fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}
