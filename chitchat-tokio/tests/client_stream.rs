//! The client as a `Stream` of frames and a `Sink` of sends over loopback TCP:
//! `send` waits for room where `try_write` refuses, names are looked up, and
//! errors say what happened.

use std::time::Duration;

use chitchat_core::{ConnectError, WriteError};
use chitchat_tokio::{Client, Server};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::timeout;

const PROMPT: Duration = Duration::from_secs(10);

async fn echo_server() -> Server {
    Server::builder("127.0.0.1:0")
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
        })
        .listen()
        .await
        .unwrap()
}

#[tokio::test]
async fn frames_arrive_as_a_stream_and_go_out_through_the_sink() {
    let server = echo_server().await;
    let mut client = Client::builder(server.local_addr())
        .connect()
        .await
        .unwrap();
    let frames: Vec<String> = (0..1000).map(|i| format!("frame {i}")).collect();
    let mut sends = futures::stream::iter(frames.clone().into_iter().map(Ok));
    client.send_all(&mut sends).await.unwrap();
    for expected in &frames {
        let got = timeout(PROMPT, client.next()).await.unwrap().unwrap();
        assert_eq!(got, expected.as_bytes());
    }
    // Closing the sink shuts our side down: the echo server closes, the stream ends.
    SinkExt::<&[u8]>::close(&mut client).await.unwrap();
    assert_eq!(timeout(PROMPT, client.next()).await.unwrap(), None);
    server.cut().await;
}

#[tokio::test]
async fn send_waits_for_room_where_try_write_refuses() {
    // A server that reads nothing until the client's queue has filled up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Client::builder(addr)
        .max_outbound(64 * 1024)
        .write_timeout(None)
        .connect()
        .await
        .unwrap();
    let (mut server_side, _) = listener.accept().await.unwrap();
    let (start_reading, may_read) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let _ = may_read.await;
        let mut sink = vec![0; 1 << 20];
        let mut total = 0usize;
        while let Ok(n @ 1..) = server_side.read(&mut sink).await {
            total += n;
        }
        total
    });
    // Far more than the kernel's buffers and our queue hold together.
    const FRAMES: usize = 2048;
    let frame = vec![b'x'; 16 * 1024];
    let mut start_reading = Some(start_reading);
    let mut refusals = 0;
    for _ in 0..FRAMES {
        match client.try_write(&frame) {
            Ok(()) => {}
            Err(err @ WriteError::OutboundFull { .. }) => {
                assert!(err.to_string().contains("65536"), "{err}");
                refusals += 1;
                if let Some(start) = start_reading.take() {
                    let _ = start.send(());
                }
                // Where `try_write` refuses, `send` waits until the server reads.
                timeout(PROMPT, client.send(&frame)).await.unwrap().unwrap();
            }
            Err(other) => panic!("{other}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(refusals > 0, "the queue never filled");
    client.flush().await.unwrap();
    drop(client);
    let total = timeout(PROMPT, reader).await.unwrap().unwrap();
    assert_eq!(total, FRAMES * (frame.len() + 1), "every frame, once");
}

#[tokio::test]
async fn a_name_is_looked_up_and_each_of_its_addresses_tried() {
    let server = echo_server().await;
    let port = server.local_addr().as_inet().unwrap().port();
    // `localhost` may give ::1 first, where nobody listens: the next address is tried.
    let mut client = Client::builder(format!("localhost:{port}"))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.peer_addr(), server.local_addr());
    client.send(b"ping").await.unwrap();
    assert_eq!(
        timeout(PROMPT, client.next()).await.unwrap().unwrap(),
        "ping"
    );
    server.cut().await;
}

#[tokio::test]
async fn a_name_that_cannot_be_looked_up_is_named_in_the_error() {
    let err = Client::builder("no-port-here").connect().await.unwrap_err();
    assert!(matches!(&err, ConnectError::Resolve { name, .. } if name == "no-port-here"));
    assert!(
        err.to_string()
            .starts_with("cannot connect to no-port-here: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_write_says_why_in_one_sentence() {
    let server = echo_server().await;
    let client = Client::builder(server.local_addr())
        .connect()
        .await
        .unwrap();
    let err = client.try_write(&vec![b'x'; 100 * 1024]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot send to {}: payload of 102400 bytes exceeds the 65536-byte frame limit",
            server.local_addr()
        )
    );
    // The cause still chains for code that walks it.
    assert!(std::error::Error::source(&err).is_some());
    server.cut().await;
}

#[tokio::test]
async fn a_client_with_a_handler_has_an_empty_stream() {
    let server = echo_server().await;
    let mut client = Client::builder(server.local_addr())
        .on_frame(|_, _| {})
        .connect()
        .await
        .unwrap();
    assert_eq!(client.next().await, None);
    server.cut().await;
}

#[tokio::test]
async fn a_stream_nobody_reads_stops_reading_the_socket() {
    const INBOUND: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = Client::builder(addr)
        .max_inbound(INBOUND)
        .connect()
        .await
        .unwrap();
    let (mut server_side, _) = listener.accept().await.unwrap();
    let line = [vec![b'y'; 1023], vec![b'\n']].concat();
    const LINES: usize = 8 * 1024; // 8 MiB
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..LINES {
            server_side.write_all(&line).await.unwrap();
        }
        server_side
    });
    // Whatever the timing: what the client holds for its reader stays bounded by
    // the limit, one read (64 KiB) and one frame.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let held = client.stats().bytes_in;
        assert!(
            held <= (INBOUND + 64 * 1024 + 1024) as u64,
            "{held} bytes held"
        );
    }
    let mut got = 0;
    while got < LINES {
        let frame = timeout(PROMPT, client.next()).await.unwrap().unwrap();
        assert_eq!(frame.len(), 1023);
        got += 1;
    }
    drop(timeout(PROMPT, writer).await.unwrap().unwrap());
}
