//! Reading and writing tokio's readiness-based sockets (TCP, Unix) the way the
//! engine wants: wait for readiness with no buffer, then one non-blocking call.
//! Written once for every socket type that has the four primitives.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::net::{TcpStream, UnixStream};

/// The readiness primitives tokio's stream sockets share.
pub(crate) trait ReadinessIo {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! readiness_io {
    ($stream:ty) => {
        impl ReadinessIo for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$stream>::try_read_buf(self, buf)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$stream>::try_write(self, buf)
            }
        }
    };
}

readiness_io!(TcpStream);
readiness_io!(UnixStream);

/// Reads into `buf`'s spare capacity once the socket is readable.
pub(crate) fn poll_read<S: ReadinessIo>(
    stream: &S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        // try_read_buf clears the readiness it consumed when it would block.
        match stream.try_read_buf(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// Writes some of `buf` once the socket is writable.
pub(crate) fn poll_write<S: ReadinessIo>(
    stream: &S,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}
