//! The in-memory network behaves like TCP where code under test can tell: error
//! kinds, addresses, half-close, close, backpressure, readiness, time.

mod util;

use std::future::poll_fn;
use std::io;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use chitchat_core::{BindOptions, Binder, Connection, Connector, Listener};
use chitchat_testkit::{LinkConfig, NetConfig, Network, TraceEvent};
use util::*;

#[tokio::test(start_paused = true)]
async fn connect_where_nobody_listens_is_refused() {
    let net = Network::new(1);
    let _server = net.host(SERVER);
    let client = net.host(CLIENT);
    let err = client.connect(&addr("10.0.0.1:7000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        err.to_string().contains("10.0.0.1:7000"),
        "names the address: {err}"
    );
    // An IP no host has is refused too.
    let err = client.connect(&addr("10.9.9.9:1")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    let refused = net
        .trace()
        .iter()
        .filter(|e| matches!(e.event, TraceEvent::Refused { .. }))
        .count();
    assert_eq!(refused, 2);
    assert_eq!(net.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn bind_in_use_fails_until_the_listener_is_dropped() {
    let net = Network::new(1);
    let host = net.host(SERVER);
    let listener = bind(&host, "10.0.0.1:7000").unwrap();
    let err = bind(&host, "10.0.0.1:7000").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains("10.0.0.1:7000"),
        "names the address: {err}"
    );
    let err = bind(&host, "0.0.0.0:7000").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    drop(listener);
    assert!(net.listening().is_empty());
    bind(&host, "10.0.0.1:7000").expect("free again");
}

#[tokio::test(start_paused = true)]
async fn bind_takes_own_or_unspecified_ip_and_port_zero_is_ephemeral() {
    let net = Network::new(1);
    let host = net.host(SERVER);
    let err = bind(&host, "10.0.0.2:7000").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
    let first = bind(&host, "10.0.0.1:0").unwrap();
    let second = bind(&host, "10.0.0.1:0").unwrap();
    assert_eq!(first.local_addr().unwrap(), addr("10.0.0.1:49152"));
    assert_eq!(second.local_addr().unwrap(), addr("10.0.0.1:49153"));

    // A listener on 0.0.0.0 accepts connections to the host's IP.
    let mut any = bind(&host, "0.0.0.0:80").unwrap();
    assert_eq!(any.local_addr().unwrap(), addr("0.0.0.0:80"));
    let client = net.host(CLIENT);
    let conn = client.connect(&addr("10.0.0.1:80")).await.unwrap();
    let accepted = accept(&mut any).await;
    assert_eq!(accepted.local_addr().unwrap(), addr("10.0.0.1:80"));
    assert_eq!(accepted.peer_addr().unwrap(), conn.local_addr().unwrap());
}

#[tokio::test(start_paused = true)]
async fn addresses_look_like_tcp() {
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut listener = bind(&server, "10.0.0.1:7000").unwrap();
    let conn = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    let (accepted, peer) = poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
    assert_eq!(conn.local_addr().unwrap(), addr("10.0.0.2:49152"));
    assert_eq!(conn.peer_addr().unwrap(), addr("10.0.0.1:7000"));
    assert_eq!(peer, addr("10.0.0.2:49152"));
    assert_eq!(accepted.local_addr().unwrap(), addr("10.0.0.1:7000"));
    assert_eq!(accepted.peer_addr().unwrap(), peer);
    // The next connect gets the next ephemeral port.
    let other = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    assert_eq!(other.local_addr().unwrap(), addr("10.0.0.2:49153"));
}

/// As with TCP, one source port serves connections to different destinations: a
/// host dials more connections than it has ephemeral ports (16 384), as long as no
/// two go from one port to one destination.
#[tokio::test(start_paused = true)]
async fn a_source_port_serves_connections_to_different_destinations() {
    const PORTS: usize = 16_384;
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut options = BindOptions::default();
    options.backlog = PORTS as u32 + 1;
    let _first = server.bind(&addr("10.0.0.1:7000"), &options).unwrap();
    let _second = server.bind(&addr("10.0.0.1:7001"), &options).unwrap();
    let mut to_first = Vec::with_capacity(PORTS);
    for _ in 0..PORTS {
        to_first.push(client.connect(&addr("10.0.0.1:7000")).await.unwrap());
    }
    // Every port holds a connection to the first listener: none is left for it...
    let err = client.connect(&addr("10.0.0.1:7000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable, "{err}");
    // ...but the first port still serves a connection to the second.
    let other = client.connect(&addr("10.0.0.1:7001")).await.unwrap();
    assert_eq!(other.local_addr().unwrap(), addr("10.0.0.2:49152"));
    // A connection to the first that closes gives its port back to it.
    let closed = to_first.swap_remove(100);
    assert_eq!(closed.local_addr().unwrap(), addr("10.0.0.2:49252"));
    drop(closed);
    let again = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    assert_eq!(again.local_addr().unwrap(), addr("10.0.0.2:49252"));
}

#[tokio::test(start_paused = true)]
async fn half_close_gives_the_peer_eof_after_the_data() {
    let net = Network::new(1);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut conn, b"request").await.unwrap();
    shutdown(&mut conn).await.unwrap();
    shutdown(&mut conn).await.expect("shutdown twice is fine");
    assert_eq!(read_to_end(&mut accepted).await.unwrap(), b"request");
    assert_eq!(
        read_some(&mut accepted, 10).await.unwrap(),
        b"",
        "EOF stays"
    );

    // The other direction still works.
    write_all(&mut accepted, b"reply").await.unwrap();
    assert_eq!(read_exact(&mut conn, 5).await.unwrap(), b"reply");

    // Writing after our own shutdown fails like TCP's EPIPE.
    let err = write_all(&mut conn, b"more").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(net
        .trace()
        .iter()
        .any(|e| matches!(e.event, TraceEvent::Shutdown { .. })));
}

#[tokio::test(start_paused = true)]
async fn close_gives_the_peer_eof_and_its_writes_fail() {
    let net = Network::new(1);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut accepted, b"bye").await.unwrap();
    drop(accepted);
    assert_eq!(read_to_end(&mut conn).await.unwrap(), b"bye");
    let err = write_all(&mut conn, b"anyone?").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(
        err.to_string().contains("10.0.0.1:7000"),
        "names the peer: {err}"
    );
    drop(conn);
    assert_eq!(net.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_blocks_the_writer() {
    let mut config = NetConfig::default();
    config.buffer_size = 1000;
    let net = Network::with_config(1, config);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;

    let chunk = [7u8; 300];
    let mut written = 0;
    let blocked = poll_fn(|cx| loop {
        match conn.poll_write(cx, &chunk) {
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(err)) => panic!("write failed: {err}"),
            Poll::Pending => return Poll::Ready(()),
        }
    });
    blocked.await;
    assert_eq!(written, 1000, "the window, and not a byte more");

    // A blocked writer is woken when the reader frees space.
    let writer = tokio::spawn(async move {
        write_all(&mut conn, &[8u8; 500]).await.unwrap();
        conn
    });
    tokio::task::yield_now().await;
    assert!(!writer.is_finished());
    assert_eq!(read_exact(&mut accepted, 1500).await.unwrap().len(), 1500);
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_blocked_writer_fails_when_the_peer_closes() {
    let mut config = NetConfig::default();
    config.buffer_size = 10;
    let net = Network::with_config(1, config);
    let (_s, _c, _l, mut conn, accepted) = setup(&net).await;
    let writer = tokio::spawn(async move { write_all(&mut conn, &[0u8; 100]).await });
    tokio::task::yield_now().await;
    drop(accepted);
    let err = writer.await.unwrap().unwrap_err();
    // The peer closed with our bytes unread: a reset, as TCP does.
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test(start_paused = true)]
async fn closing_with_unread_input_resets_the_peer() {
    let net = Network::new(1);
    net.set_default_link(LinkConfig::default().latency(Duration::from_millis(10)));
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut accepted, b"arrived").await.unwrap();
    write_all(&mut conn, b"never read").await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    write_all(&mut accepted, b"in flight").await.unwrap();
    drop(accepted);
    // What had reached the client stays readable, then the reset; the rest is lost.
    assert_eq!(read_some(&mut conn, 100).await.unwrap(), b"arrived");
    let err = read_some(&mut conn, 100).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let err = write_all(&mut conn, b"x").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(net
        .trace()
        .iter()
        .any(|e| matches!(e.event, TraceEvent::Abort { .. })));
}

#[tokio::test(start_paused = true)]
async fn read_ready_waits_for_data_then_for_eof() {
    let net = Network::new(1);
    net.set_default_link(LinkConfig::default().latency(Duration::from_millis(5)));
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    let ready = poll_fn(|cx| Poll::Ready(accepted.poll_read_ready(cx))).await;
    assert!(ready.is_pending(), "nothing sent yet");

    write_all(&mut conn, b"x").await.unwrap();
    let ready = poll_fn(|cx| Poll::Ready(accepted.poll_read_ready(cx))).await;
    assert!(ready.is_pending(), "sent, not yet arrived");
    poll_fn(|cx| accepted.poll_read_ready(cx)).await.unwrap();
    assert_eq!(
        net.elapsed(),
        Duration::from_millis(10 + 5),
        "handshake + latency"
    );
    // Ready does not consume: the read still gets the byte.
    assert_eq!(read_some(&mut accepted, 10).await.unwrap(), b"x");

    shutdown(&mut conn).await.unwrap();
    poll_fn(|cx| accepted.poll_read_ready(cx)).await.unwrap();
    assert_eq!(
        read_some(&mut accepted, 10).await.unwrap(),
        b"",
        "ready for EOF"
    );
}

#[tokio::test(start_paused = true)]
async fn sixty_virtual_seconds_take_milliseconds() {
    let wall = std::time::Instant::now();
    let net = Network::new(1);
    net.set_default_link(LinkConfig::default().latency(Duration::from_millis(500)));
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    let start = net.elapsed();
    for round in 0..60u8 {
        write_all(&mut conn, &[round]).await.unwrap();
        assert_eq!(read_exact(&mut accepted, 1).await.unwrap(), [round]);
        write_all(&mut accepted, &[round]).await.unwrap();
        assert_eq!(read_exact(&mut conn, 1).await.unwrap(), [round]);
    }
    assert_eq!(net.elapsed() - start, Duration::from_secs(60));
    // An idle connection under a 60 s timeout, as the engine's idle test does.
    let idle = tokio::time::timeout(Duration::from_secs(60), read_some(&mut accepted, 1)).await;
    assert!(idle.is_err());
    assert_eq!(net.elapsed() - start, Duration::from_secs(120));
    // Real sleeps would take all 120 s; a loaded machine may slow the work
    // itself, so the bound is half of that, not a figure of an idle machine.
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "took {:?}",
        wall.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn connects_wait_while_the_backlog_is_full() {
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut options = BindOptions::default();
    options.backlog = 1;
    let mut listener = server.bind(&addr("10.0.0.1:7000"), &options).unwrap();
    let _first = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.connect(&addr("10.0.0.1:7000")).await }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !second.is_finished(),
        "SYN dropped while the backlog is full"
    );
    let _accepted = accept(&mut listener).await;
    second.await.unwrap().expect("goes on once there is room");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_listener_resets_what_it_did_not_accept() {
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let listener = bind(&server, "10.0.0.1:7000").unwrap();
    let mut conn = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    drop(listener);
    let err = read_some(&mut conn, 10).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let err = client.connect(&addr("10.0.0.1:7000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    drop(conn);
    assert_eq!(net.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn abort_makes_the_peer_see_a_reset_after_what_arrived() {
    let net = Network::new(1);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut conn, b"last words").await.unwrap();
    conn.abort();
    assert_eq!(read_some(&mut accepted, 100).await.unwrap(), b"last words");
    let err = read_some(&mut accepted, 10).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    drop(accepted);
    assert_eq!(net.open_connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connect_given_up_by_its_caller_frees_everything() {
    let net = Network::new(1);
    net.set_default_link(LinkConfig::default().latency(Duration::from_secs(1)));
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut listener = bind(&server, "10.0.0.1:7000").unwrap();
    // Gives up after the SYN arrived (1 s) and before the answer (2 s).
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1500),
        client.connect(&addr("10.0.0.1:7000")),
    )
    .await;
    assert!(gave_up.is_err());
    // The server had established it: it reads EOF, as if the client closed at once.
    let mut orphan = accept(&mut listener).await;
    assert_eq!(read_to_end(&mut orphan).await.unwrap(), b"");
    drop(orphan);
    assert_eq!(net.open_connections(), 0);
    // The source port is free again (ports are handed round-robin).
    let conn = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    assert_eq!(conn.local_addr().unwrap(), addr("10.0.0.2:49153"));
}

#[tokio::test(start_paused = true)]
async fn tokio_io_traits_work_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let net = Network::new(1);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    conn.write_all(b"hello").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut text = String::new();
    accepted.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "hello");
}

#[tokio::test(start_paused = true)]
async fn a_full_read_buffer_still_reads() {
    let net = Network::new(1);
    let (_s, _c, _l, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut conn, b"abc").await.unwrap();
    let mut buf = BytesMut::new();
    let n = poll_fn(|cx| accepted.poll_read(cx, &mut buf))
        .await
        .unwrap();
    assert_eq!((n, &buf[..]), (3, &b"abc"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_threaded_runtime_with_real_time() {
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut listener = bind(&server, "10.0.0.1:7000").unwrap();
    let echo = tokio::spawn(async move {
        let mut conn = accept(&mut listener).await;
        let data = read_to_end(&mut conn).await.unwrap();
        write_all(&mut conn, &data).await.unwrap();
    });
    let mut conn = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let writer = {
        let payload = payload.clone();
        async move {
            write_all(&mut conn, &payload).await.unwrap();
            shutdown(&mut conn).await.unwrap();
            conn
        }
    };
    let mut conn = writer.await;
    assert_eq!(read_to_end(&mut conn).await.unwrap(), payload);
    echo.await.unwrap();
}
