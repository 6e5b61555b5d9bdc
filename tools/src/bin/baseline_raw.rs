//! Benchmark baseline: tokio copies every byte back, no framing at all
//! (`tokio::io::copy` between the two halves of the socket, with its 8 KiB buffer).
//! The upper bound for a design with one task per connection; a load generator that
//! cannot saturate this server is not the bottleneck of the others.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin baseline_raw -- --listen 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Used by `bench` (see
//! BENCHMARKS.md).

use chitchat_tools::baseline::{serve_baseline, BaselineArgs};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BaselineArgs::parse();
    // Copies every byte back to its sender.
    serve_baseline(args.listen, |mut socket| async move {
        let (mut reader, mut writer) = socket.split();
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
    })
    .await
}
