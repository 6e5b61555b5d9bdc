//! The handshakes of a TLS listener. Each runs on a task of its own, under a
//! deadline and a cap on the bytes it may read, and at most `max_handshakes` run at
//! once; past that the listener stops accepting and new connections wait in the
//! kernel's backlog. Only established sessions leave here, so a slow or hostile
//! handshake never occupies a connection slot of the engine, and a failed one is
//! closed at once, with no linger.
//!
//! The cap on bytes bounds what one handshake makes rustls buffer: rustls grows its
//! buffer 4 KiB per read, up to 64 KiB for one handshake message, so without the
//! cap 1 500 unfinished 64 KiB ClientHellos would hold about 100 MiB.

use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chitchat_core::{Addr, PeerFailed};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The limits on a TLS server's handshakes (see the `TlsBinder` setters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HandshakeLimits {
    /// How long a handshake may take from its accept; `None`: forever.
    pub(super) timeout: Option<Duration>,
    /// Handshakes in progress at once (at least 1).
    pub(super) max_handshakes: usize,
    /// Bytes a handshake may read from its peer.
    pub(super) max_len: usize,
}

/// A handshake that finished: the session and the addresses of its socket.
pub(super) struct Established {
    pub(super) stream: TlsStream<HandshakeIo<TcpStream>>,
    pub(super) local: Addr,
    pub(super) peer: Addr,
}

/// The handshakes in progress.
pub(super) struct Handshakes {
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
    running: JoinSet<Result<Established, PeerFailed>>,
}

impl Handshakes {
    pub(super) fn new(acceptor: TlsAcceptor, limits: HandshakeLimits) -> Self {
        Handshakes {
            acceptor,
            limits,
            running: JoinSet::new(),
        }
    }

    /// True while another handshake may start.
    pub(super) fn has_room(&self) -> bool {
        self.running.len() < self.limits.max_handshakes.max(1)
    }

    /// Starts the handshake of a connection just accepted; its deadline runs from
    /// now, not from when its task first runs.
    pub(super) fn start(&mut self, stream: TcpStream, local: Addr, peer: Addr) {
        let deadline = self
            .limits
            .timeout
            .and_then(|after| Some((Instant::now().checked_add(after)?, after)));
        let max_len = self.limits.max_len;
        let mut accept = self.acceptor.accept(HandshakeIo::limited(stream, max_len));
        // At its cap the stream stops reading: a handshake still waiting then can
        // only be one that sent too much.
        let accept = poll_fn(move |cx| match Pin::new(&mut accept).poll(cx) {
            Poll::Pending if accept.get_ref().is_some_and(|io| io.capped) => {
                Poll::Ready(Err(too_long(max_len)))
            }
            other => other,
        });
        let handshake = async move {
            let result = match deadline {
                Some((at, after)) => tokio::time::timeout_at(at, accept)
                    .await
                    .unwrap_or_else(|_| Err(timed_out(after))),
                None => accept.await,
            };
            let mut stream = result?;
            stream.get_mut().0.established();
            Ok(Established {
                stream,
                local,
                peer,
            })
        };
        // A failed handshake drops its socket here, on its own task: closed at once.
        self.running.spawn(async move {
            match AssertUnwindSafe(handshake).catch_unwind().await {
                Ok(result) => result.map_err(|source| PeerFailed::new(peer, source)),
                Err(_) => Err(PeerFailed::new(
                    peer,
                    io::Error::other("the TLS handshake panicked"),
                )),
            }
        });
    }

    /// The next handshake that finished, established or failed. Pending while none
    /// has (and when none runs: the caller then waits on its accept).
    pub(super) fn poll_finished(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Established, PeerFailed>> {
        match self.running.poll_join_next(cx) {
            Poll::Ready(Some(Ok(finished))) => Poll::Ready(finished),
            // Handshake tasks catch their panics and are aborted only when the
            // listener is dropped: an error here cannot name a peer, so try again.
            Poll::Ready(Some(Err(_))) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

fn too_long(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the TLS handshake sent more than {limit} bytes"),
    )
}

fn timed_out(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the TLS handshake did not finish within {after:?}"),
    )
}

/// A TCP stream under TLS that counts what the handshake reads, and stops reading
/// at the cap. Once the session is established it only passes through.
///
/// At the cap a read is pending (with no wakeup) rather than failed: rustls reads
/// on after the peer's last handshake message, as long as application data
/// follows, and a session established by then must not fail. The handshake future
/// checks [`capped`](Self::capped) whenever it is pending.
#[derive(Debug)]
pub(super) struct HandshakeIo<S> {
    io: S,
    /// Bytes the handshake may still read; `None` once established (or unlimited).
    left: Option<usize>,
    /// A read found the cap reached.
    capped: bool,
}

impl<S> HandshakeIo<S> {
    /// No cap (the client side, which chose its server).
    pub(super) fn unlimited(io: S) -> Self {
        HandshakeIo {
            io,
            left: None,
            capped: false,
        }
    }

    fn limited(io: S, limit: usize) -> Self {
        HandshakeIo {
            io,
            left: Some(limit),
            capped: false,
        }
    }

    /// The handshake is done: stop counting.
    fn established(&mut self) {
        self.left = None;
    }

    pub(super) fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(left) = this.left else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        if left == 0 {
            this.capped = true;
            return Poll::Pending;
        }
        // Read at most what is left of the cap (rustls reads 4 KiB at a time, so
        // this costs no extra system call).
        let room = buf.remaining().min(left);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let result = Pin::new(&mut this.io).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        buf.advance(n);
        this.left = Some(left - n);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_handshake_reads_up_to_its_cap_then_stops() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut io = HandshakeIo::limited(ours, 10);
        peer.write_all(b"0123456789ab").await.unwrap();
        let mut got = [0; 16];
        let mut total = 0;
        while !io.capped {
            let read = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut got[total..]);
                match Pin::new(&mut io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Ready(None),
                    Poll::Ready(result) => Poll::Ready(Some(result.map(|()| buf.filled().len()))),
                }
            });
            match read.await {
                Some(n) => total += n.unwrap(),
                None => assert!(io.capped, "pending only at the cap: 12 bytes are there"),
            }
        }
        assert_eq!(total, 10, "reads stop at the cap");
        assert_eq!(&got[..10], b"0123456789");
    }

    #[tokio::test]
    async fn an_established_session_reads_without_counting() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut io = HandshakeIo::limited(ours, 2);
        io.established();
        peer.write_all(b"0123456789").await.unwrap();
        let mut got = [0; 10];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"0123456789");
    }
}
