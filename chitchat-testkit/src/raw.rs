//! A raw peer: one transport connection driven byte by byte, with no framing and no
//! engine, to play the misbehaving client or server that the engine must survive.

use std::future::poll_fn;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use chitchat_core::{Addr, Connection, Connector};

/// A connection used directly through chitchat-core's `Connection` trait.
#[derive(Debug)]
pub struct RawPeer<C> {
    conn: C,
    buf: BytesMut,
}

impl<C: Connection> RawPeer<C> {
    /// Wraps an established connection.
    pub fn new(conn: C) -> Self {
        RawPeer {
            conn,
            buf: BytesMut::new(),
        }
    }

    /// Dials `addr` with `connector`.
    ///
    /// # Errors
    /// As the connector's.
    pub async fn connect<K: Connector<Conn = C>>(connector: &K, addr: &Addr) -> io::Result<Self> {
        Ok(RawPeer::new(connector.connect(addr).await?))
    }

    /// Our end's address.
    ///
    /// # Panics
    /// If the transport cannot tell.
    pub fn local_addr(&self) -> Addr {
        self.conn.local_addr().expect("local address")
    }

    /// Writes all of `data`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.conn.poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        poll_fn(|cx| self.conn.poll_flush(cx)).await
    }

    /// Shuts down our write side: the other end reads EOF.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.conn.poll_shutdown(cx)).await
    }

    /// Reads once more into the internal buffer; `Ok(0)` at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(16 * 1024);
        poll_fn(|cx| self.conn.poll_read(cx, &mut self.buf)).await
    }

    /// Reads up to and including the next `delimiter`; returns the bytes before it.
    /// `Ok(None)` at EOF (bytes without a delimiter are dropped).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn read_frame(&mut self, delimiter: u8) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == delimiter) {
                let frame = self.buf.split_to(i).freeze();
                self.buf.advance(1);
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads exactly `n` bytes.
    ///
    /// # Errors
    /// `UnexpectedEof` if the stream ends first; transport failures.
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Bytes> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// Reads everything until the other end closes. The result is what arrived and
    /// how the stream ended: `Ok(())` for an orderly EOF, the error for a reset.
    pub async fn read_to_end(&mut self) -> (Bytes, io::Result<()>) {
        loop {
            match self.fill().await {
                Ok(0) => return (self.buf.split().freeze(), Ok(())),
                Ok(_) => {}
                Err(err) => return (self.buf.split().freeze(), Err(err)),
            }
        }
    }

    /// The connection, for transport-specific actions (e.g. an abortive close).
    pub fn into_inner(self) -> C {
        self.conn
    }
}
