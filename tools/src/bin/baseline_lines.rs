//! Benchmark baseline: an echo server written the way tokio-util's docs show it,
//! `Framed` + `LinesCodec` (with a maximum line length), one `send` per line. Each
//! `send` encodes the line and flushes it: one write system call per frame.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin baseline_lines -- --listen 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Used by `bench` (see
//! BENCHMARKS.md); not a model for servers: see `echo_server` for that.

use chitchat_tools::baseline::{serve_baseline, BaselineArgs};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LinesCodec};

/// Longest line accepted: the same limit as chitchat's default frame limit, so
/// every server in the benchmark refuses the same inputs.
const MAX_LINE: usize = 64 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BaselineArgs::parse();
    // Echoes every line, one `send` per line.
    serve_baseline(args.listen, |socket| async move {
        let mut lines = Framed::new(socket, LinesCodec::new_with_max_length(MAX_LINE));
        while let Some(Ok(line)) = lines.next().await {
            if lines.send(line).await.is_err() {
                break;
            }
        }
    })
    .await
}
