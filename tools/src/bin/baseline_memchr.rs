//! Benchmark baseline: what a hand-tuned tokio echo server reaches without a
//! library. One `BytesMut` per connection filled by large reads, frames split with
//! `memchr` (the search resumes where it stopped), all replies of one read copied
//! into one output buffer and written back with one write.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin baseline_memchr -- --listen 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Used by `bench` (see
//! BENCHMARKS.md).

use std::io;

use bytes::{Buf, BytesMut};
use chitchat_tools::baseline::{serve_baseline, BaselineArgs};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest frame accepted, delimiter excluded: chitchat's default limit.
const MAX_FRAME: usize = 64 * 1024;

/// Read buffer reserved at a time: tokio-util's `Framed` starts with the same.
const READ_SIZE: usize = 8 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BaselineArgs::parse();
    // Echoes every `\n`-terminated frame; all replies of a read go out in one write.
    serve_baseline(args.listen, |socket| async move {
        let _ = serve(socket).await;
    })
    .await
}

async fn serve(mut socket: TcpStream) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_SIZE);
    let mut output = BytesMut::with_capacity(READ_SIZE);
    // Bytes at the front of `input` already searched: a long frame arriving in
    // pieces is scanned once, not once per read.
    let mut scanned = 0;
    loop {
        if input.capacity() - input.len() < READ_SIZE / 4 {
            input.reserve(READ_SIZE);
        }
        if socket.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some(found) = memchr::memchr(b'\n', &input[scanned..]) {
            let end = scanned + found + 1;
            // The frame is `input[..end]`; the echo handler copies it out.
            output.extend_from_slice(&input[..end]);
            input.advance(end);
            scanned = 0;
        }
        scanned = input.len();
        if scanned > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            output.clear();
        }
    }
}
