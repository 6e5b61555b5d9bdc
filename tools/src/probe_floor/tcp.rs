//! The floor over TCP: one connection per node, as the master holds.
//!
//! A [`Prober`] sends every connection one [`PROBE`] per round from one task, as
//! the master's round does; a reader task per connection counts the [`ACK`]s.
//! [`respond`] answers each probe line with one ack. Both ends set `TCP_NODELAY`
//! as chitchat's TCP transport does.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use super::{ACK, PROBE};
use crate::sockets;

/// Connections dialed from one loopback source address before the next one.
const PER_SOURCE_IP: usize = 1000;

/// Connections dialed at once.
const DIAL_BATCH: usize = 512;

/// Accepts on `listener` until it fails, and answers every probe line of every
/// connection with one [`ACK`]; a connection's task ends when its peer closes.
///
/// # Errors
/// The accept error that ended the loop.
pub async fn respond(listener: TcpListener) -> io::Result<()> {
    loop {
        let (mut socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut acks = Vec::new();
            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                let lines = memchr::memchr_iter(b'\n', &buf[..n]).count();
                acks.clear();
                for _ in 0..lines {
                    acks.extend_from_slice(ACK);
                }
                if socket.write_all(&acks).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One connection per node to the responders, probed in rounds.
pub struct Prober {
    writers: Vec<OwnedWriteHalf>,
    acks: Arc<AtomicU64>,
}

impl Prober {
    /// Dials `count` connections, spread evenly over `targets`, from 127.0.0.1,
    /// 127.0.0.2, … (1 000 each), and starts a reader task on each.
    ///
    /// # Errors
    /// The first dial that failed; `InvalidInput` when `targets` is empty.
    pub async fn connect(targets: &[SocketAddr], count: usize) -> io::Result<Prober> {
        if targets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no responder to dial",
            ));
        }
        let acks = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::with_capacity(count);
        for first in (0..count).step_by(DIAL_BATCH) {
            let batch = first..(first + DIAL_BATCH).min(count);
            let dials =
                batch.map(|i| sockets::connect_from(targets[i % targets.len()], i / PER_SOURCE_IP));
            for stream in futures::future::join_all(dials).await {
                writers.push(Self::start_reader(stream?, acks.clone()));
            }
        }
        Ok(Prober { writers, acks })
    }

    fn start_reader(stream: TcpStream, acks: Arc<AtomicU64>) -> OwnedWriteHalf {
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                let lines = memchr::memchr_iter(b'\n', &buf[..n]).count();
                acks.fetch_add(lines as u64, Ordering::Relaxed);
            }
        });
        writer
    }

    /// The acks received so far, on every connection.
    pub fn acks(&self) -> Arc<AtomicU64> {
        self.acks.clone()
    }

    /// Sends one [`PROBE`] on every connection every `interval`, the first round at
    /// once; returns only on a write error.
    ///
    /// # Errors
    /// The first write that failed.
    pub async fn run(mut self, interval: Duration) -> io::Result<()> {
        let mut rounds = tokio::time::interval(interval);
        loop {
            rounds.tick().await;
            for writer in &mut self.writers {
                writer.write_all(PROBE).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_probe_is_acked_once() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(respond(listener));
        let prober = Prober::connect(&[target], 3).await.unwrap();
        let acks = prober.acks();
        tokio::spawn(prober.run(Duration::from_secs(3600)));
        // The first round goes out at once.
        crate::probe_floor::tests::expect_acks(&acks, 3).await;
    }
}
