//! A server built with no settings at all against the peers that used to be held
//! forever: one that says nothing, one that trickles a frame that never ends, one
//! that never reads its replies. Each is closed by a default, at the moment the
//! default says.
//!
//! Real loopback sockets on tokio's paused clock: the runtime jumps to the next
//! timer whenever it has nothing else to do, so a 300 s timeout takes no real time
//! and fires at exactly 300 s of the test's clock (the kernel delivers loopback
//! bytes before the runtime looks for work, so no timer fires ahead of I/O).

use std::time::Duration;

use chitchat_core::{
    Addr, ConnError, ConnEvent, Events, DEFAULT_FRAME_TIMEOUT, DEFAULT_SERVER_IDLE_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
};
use chitchat_tokio::Server;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Longer than any default: a peer still held after this is held for good.
const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// An echo server with every setting at its default.
async fn default_server() -> Server {
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    Server::builder(addr)
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
        })
        .listen()
        .await
        .unwrap()
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.local_addr().as_inet().unwrap())
        .await
        .unwrap()
}

/// Reads (and drops) until the server closes; panics if it never does.
async fn until_closed(stream: &mut TcpStream) {
    let mut sink = vec![0; 64 * 1024];
    timeout(FOREVER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await
    .expect("the peer is held for good");
}

/// The first error on `events` (a subscription taken before the peer connects).
async fn first_error(events: &mut Events<ConnEvent>) -> ConnError {
    while let Some(event) = events.next().await {
        if let ConnEvent::Error(err) = event {
            return err;
        }
    }
    panic!("no error reported");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_closed_after_the_default_idle_timeout() {
    let server = default_server().await;
    let mut events = server.events();
    let began = Instant::now();
    let mut peer = connect(&server).await;
    until_closed(&mut peer).await;
    let held = began.elapsed();
    assert!(
        (DEFAULT_SERVER_IDLE_TIMEOUT..DEFAULT_SERVER_IDLE_TIMEOUT + Duration::from_secs(1))
            .contains(&held),
        "closed after {held:?}"
    );
    let err = first_error(&mut events).await;
    let us = Addr::from(peer.local_addr().unwrap());
    assert!(
        matches!(err, ConnError::IdleTimeout { peer, after }
            if peer == us && after == DEFAULT_SERVER_IDLE_TIMEOUT),
        "{err}"
    );
    server.cut().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_trickling_a_frame_is_closed_after_the_default_frame_timeout() {
    let server = default_server().await;
    let mut events = server.events();
    let mut peer = connect(&server).await;
    let began = Instant::now();
    // One byte every 10 s: never idle for long, never a whole frame.
    let trickle = async {
        loop {
            if peer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    timeout(FOREVER, trickle)
        .await
        .expect("the trickling peer is held for good");
    let held = began.elapsed();
    // The server closes at 60 s; the trickle notices at its next write, 10 s later
    // at most (a write after the close fails, the one that meets the FIN may not).
    assert!(
        (DEFAULT_FRAME_TIMEOUT..DEFAULT_FRAME_TIMEOUT + Duration::from_secs(21)).contains(&held),
        "noticed after {held:?}"
    );
    let err = first_error(&mut events).await;
    assert!(
        matches!(err, ConnError::FrameTimeout { after, .. } if after == DEFAULT_FRAME_TIMEOUT),
        "{err}"
    );
    server.cut().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_is_dropped_after_the_default_write_timeout() {
    let server = default_server().await;
    let mut events = server.events();
    let mut peer = connect(&server).await;
    // Whole frames, one write each, with a pause that lets the server read each
    // one whole: when it stops reading (its replies have nowhere to go), it holds
    // no unfinished frame, so only the write timeout can close the connection.
    let mut frame = vec![b'y'; 16 * 1024 - 1];
    frame.push(b'\n');
    let stalled = async {
        loop {
            match timeout(Duration::from_secs(1), peer.write_all(&frame)).await {
                Ok(Ok(())) => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(Err(_)) => return None,
                Err(_) => return Some(Instant::now()),
            }
        }
    };
    let stalled_at = stalled.await.expect("the server closed while we wrote");
    let err = timeout(FOREVER, first_error(&mut events))
        .await
        .expect("the non-reader is held for good");
    assert!(
        matches!(err, ConnError::WriteTimeout { after, .. } if after == DEFAULT_WRITE_TIMEOUT),
        "{err}"
    );
    // The server's stall began no later than ours (our write blocked because it
    // stopped reading, which it does once its replies stop going out).
    let reported = stalled_at.elapsed();
    assert!(
        reported <= DEFAULT_WRITE_TIMEOUT,
        "reported {reported:?} after our writes stalled"
    );
    server.cut().await;
}
