//! What the benchmark's baseline servers (`baseline_lines`, `baseline_memchr`,
//! `baseline_raw`) share: the `--listen` flag and a plain tokio accept loop, one
//! task per connection. Each baseline keeps only its per-connection code, the part
//! the benchmark compares.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The baselines' command line.
#[derive(Debug, clap::Parser)]
#[command(about = "A benchmark baseline echo server (see BENCHMARKS.md)")]
pub struct BaselineArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
}

/// Binds `listen`, prints `listening on ADDR` and runs `serve` on its own task for
/// every accepted socket, with `TCP_NODELAY` set as chitchat's TCP transport sets
/// it. An accept error (out of file descriptors, a peer that left) pauses the loop
/// 10 ms; the other connections are served on. Returns only on a bind error.
///
/// # Errors
/// The bind error.
pub async fn serve_baseline<F, Fut>(listen: SocketAddr, serve: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve(socket));
            }
            Err(err) => {
                eprintln!("error: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
