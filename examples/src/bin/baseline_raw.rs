//! Benchmark baseline: tokio copies every byte back, no framing at all
//! (`tokio::io::copy` between the two halves of the socket, with its 8 KiB buffer).
//! The upper bound for a design with one task per connection; a load generator that
//! cannot saturate this server is not the bottleneck of the others.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin baseline_raw -- --listen 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Used by `bench` (see
//! BENCHMARKS.md).

use std::net::SocketAddr;

use clap::Parser;
use tokio::net::TcpListener;

/// Copies every byte back to its sender.
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
        let mut socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            // Out of file descriptors, or a peer that left: pause, keep serving.
            Err(err) => {
                eprintln!("error: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let (mut reader, mut writer) = socket.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}
