//! Helpers shared by the integration tests: drive chitchat's `Connection` trait with
//! `poll_fn`, as the engine does, and build the usual two-host setup.
#![allow(dead_code)] // each test file uses a different subset

use std::future::poll_fn;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use chitchat_core::{Addr, BindOptions, Binder, Connection, Connector, Listener};
use chitchat_testkit::{Host, Network, SimConn, SimListener};

/// The server host of [`setup`].
pub const SERVER: [u8; 4] = [10, 0, 0, 1];
/// The client host of [`setup`].
pub const CLIENT: [u8; 4] = [10, 0, 0, 2];

pub fn addr(text: &str) -> Addr {
    text.parse().expect("valid address")
}

pub fn bind(host: &Host, text: &str) -> io::Result<SimListener> {
    host.bind(&addr(text), &BindOptions::default())
}

pub async fn accept(listener: &mut SimListener) -> SimConn {
    poll_fn(|cx| listener.poll_accept(cx))
        .await
        .expect("accept")
        .0
}

/// Writes all of `data`, waiting for window space as needed.
pub async fn write_all<C: Connection>(conn: &mut C, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| conn.poll_write(cx, data)).await?;
        data = &data[n..];
    }
    Ok(())
}

/// One read of at most `max` bytes; empty at EOF.
pub async fn read_some<C: Connection>(conn: &mut C, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = BytesMut::with_capacity(max);
    poll_fn(|cx| conn.poll_read(cx, &mut buf)).await?;
    Ok(buf.to_vec())
}

/// Reads exactly `n` bytes.
pub async fn read_exact<C: Connection>(conn: &mut C, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = BytesMut::with_capacity(n);
    while buf.len() < n {
        if poll_fn(|cx| conn.poll_read(cx, &mut buf)).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.to_vec())
}

/// Reads until EOF.
pub async fn read_to_end<C: Connection>(conn: &mut C) -> io::Result<Vec<u8>> {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(4096);
        if poll_fn(|cx| conn.poll_read(cx, &mut buf)).await? == 0 {
            return Ok(buf.to_vec());
        }
    }
}

pub async fn shutdown<C: Connection>(conn: &mut C) -> io::Result<()> {
    poll_fn(|cx| conn.poll_shutdown(cx)).await
}

/// Whether `fut` is still pending after `wait` of (virtual) time.
pub async fn stays_pending<F: std::future::Future>(wait: Duration, fut: F) -> bool {
    tokio::time::timeout(wait, fut).await.is_err()
}

/// Two hosts, a listener on the server's port 7000 and one connection:
/// `(server host, client host, listener, client end, server end)`.
pub async fn setup(net: &Network) -> (Host, Host, SimListener, SimConn, SimConn) {
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut listener = bind(&server, "10.0.0.1:7000").expect("bind");
    let conn = client
        .connect(&addr("10.0.0.1:7000"))
        .await
        .expect("connect");
    let accepted = accept(&mut listener).await;
    (server, client, listener, conn, accepted)
}
