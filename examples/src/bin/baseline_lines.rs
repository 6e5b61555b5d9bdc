//! Benchmark baseline: an echo server written the way tokio-util's docs show it,
//! `Framed` + `LinesCodec` (with a maximum line length), one `send` per line. Each
//! `send` encodes the line and flushes it: one write system call per frame.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin baseline_lines -- --listen 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Used by `bench` (see
//! BENCHMARKS.md); not a model for servers: see `echo_server` for that.

use std::net::SocketAddr;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LinesCodec};

/// Longest line accepted: the same limit as chitchat's default frame limit, so
/// every server in the benchmark refuses the same inputs.
const MAX_LINE: usize = 64 * 1024;

/// Echoes every line, one `send` per line (tokio-util `LinesCodec`).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            // Out of file descriptors, or a peer that left: keep serving the others.
            Err(err) => {
                eprintln!("error: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // As chitchat's TCP transport does: replies are not held back by Nagle.
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut lines = Framed::new(socket, LinesCodec::new_with_max_length(MAX_LINE));
            while let Some(Ok(line)) = lines.next().await {
                if lines.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
}
