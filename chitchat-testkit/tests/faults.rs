//! Each fault of the in-memory network, injected while connections run.

mod util;

use std::io;
use std::time::Duration;

use chitchat_core::{Connection, Connector, Listener};
use chitchat_testkit::{LinkConfig, Network, TraceEvent};
use tokio::time::Instant;
use util::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn latency_with_jitter_delays_each_write_within_bounds_and_in_order() {
    let net = Network::new(5);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.set_link(
        &client,
        &server,
        LinkConfig::default().latency(ms(100)).jitter(ms(50)),
    );
    let mut delays = Vec::new();
    for i in 0..20u8 {
        let sent = Instant::now();
        write_all(&mut conn, &[i]).await.unwrap();
        assert_eq!(read_exact(&mut accepted, 1).await.unwrap(), [i]);
        delays.push(sent.elapsed());
    }
    assert!(
        delays.iter().all(|d| *d >= ms(100) && *d <= ms(150)),
        "{delays:?}"
    );
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 5, "jitter is drawn: {delays:?}");

    // Only that direction: replies are immediate.
    let sent = Instant::now();
    write_all(&mut accepted, b"r").await.unwrap();
    read_exact(&mut conn, 1).await.unwrap();
    assert_eq!(sent.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn bandwidth_limits_throughput() {
    let net = Network::new(1);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.set_pair(&client, &server, LinkConfig::default().bandwidth(10_000));
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        write_all(&mut conn, &[1u8; 50_000]).await.unwrap();
        conn
    });
    assert_eq!(
        read_exact(&mut accepted, 50_000).await.unwrap().len(),
        50_000
    );
    let took = start.elapsed();
    assert!(
        took >= ms(4990) && took <= ms(5010),
        "50 kB at 10 kB/s took {took:?}"
    );
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn chunking_delivers_writes_in_pieces_down_to_one_byte() {
    let net = Network::new(3);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.set_link(&client, &server, LinkConfig::default().chunking(1));
    write_all(&mut conn, b"hello").await.unwrap();
    for byte in b"hello" {
        assert_eq!(read_some(&mut accepted, 100).await.unwrap(), [*byte]);
    }

    net.set_link(&client, &server, LinkConfig::default().chunking(8));
    let payload: Vec<u8> = (0..=255).collect();
    write_all(&mut conn, &payload).await.unwrap();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while got.len() < payload.len() {
        let piece = read_some(&mut accepted, 100).await.unwrap();
        sizes.push(piece.len());
        got.extend(piece);
    }
    assert_eq!(got, payload, "pieces keep the bytes and their order");
    assert!(sizes.iter().all(|&n| (1..=8).contains(&n)), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n < 8), "sizes are drawn: {sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn reset_fails_the_next_read_and_write_on_both_ends() {
    let net = Network::new(1);
    let (server, client, mut listener, mut conn, mut accepted) = setup(&net).await;
    write_all(&mut conn, b"lost").await.unwrap();
    // A reader waiting in read is woken by the reset.
    let reader = tokio::spawn(async move {
        let mut buf = bytes::BytesMut::with_capacity(16);
        let _ = read_some(&mut conn, 4).await.unwrap(); // nothing came back yet: waits
        std::future::poll_fn(|cx| conn.poll_read(cx, &mut buf)).await
    });
    tokio::task::yield_now().await;
    write_all(&mut accepted, b"x").await.unwrap();
    tokio::task::yield_now().await;
    net.reset(&server, &client);
    assert_eq!(
        reader.await.unwrap().unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    let err = read_some(&mut accepted, 10).await.unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionReset,
        "buffered bytes dropped"
    );
    let err = write_all(&mut accepted, b"y").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(
        err.to_string().contains("10.0.0.2"),
        "names the peer: {err}"
    );
    let err = shutdown(&mut accepted).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

    // New connections are fine.
    let mut fresh = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    let mut fresh_accepted = accept(&mut listener).await;
    write_all(&mut fresh, b"ok").await.unwrap();
    assert_eq!(read_exact(&mut fresh_accepted, 2).await.unwrap(), b"ok");
    let trace = net.trace();
    assert!(trace
        .iter()
        .any(|e| matches!(e.event, TraceEvent::ResetPair { .. })));
    assert!(trace
        .iter()
        .any(|e| matches!(e.event, TraceEvent::Reset { .. })));
}

#[tokio::test(start_paused = true)]
async fn partition_holds_bytes_until_heal_like_a_pulled_cable() {
    let net = Network::new(1);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.set_pair(&server, &client, LinkConfig::default().latency(ms(10)));
    write_all(&mut conn, b"before ").await.unwrap();
    tokio::time::sleep(ms(10)).await; // arrived
    net.partition(&server, &client);
    write_all(&mut conn, b"during").await.unwrap();
    write_all(&mut accepted, b"reply").await.unwrap();

    // What arrived before the cut is readable; nothing else crosses, either way.
    assert_eq!(read_some(&mut accepted, 100).await.unwrap(), b"before ");
    assert!(stays_pending(Duration::from_secs(60), read_some(&mut accepted, 100)).await);
    assert!(stays_pending(Duration::from_secs(60), read_some(&mut conn, 100)).await);

    let healed = Instant::now();
    net.heal(&server, &client);
    assert_eq!(read_exact(&mut accepted, 6).await.unwrap(), b"during");
    assert_eq!(
        healed.elapsed(),
        ms(10),
        "retransmitted one link delay after heal"
    );
    assert_eq!(read_exact(&mut conn, 5).await.unwrap(), b"reply");
}

#[tokio::test(start_paused = true)]
async fn one_way_partition_cuts_one_direction_only() {
    let net = Network::new(1);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.partition_oneway(&client, &server);
    write_all(&mut conn, b"up").await.unwrap();
    write_all(&mut accepted, b"down").await.unwrap();
    assert_eq!(read_exact(&mut conn, 4).await.unwrap(), b"down");
    assert!(stays_pending(ms(500), read_some(&mut accepted, 10)).await);
    net.heal_oneway(&client, &server);
    assert_eq!(read_exact(&mut accepted, 2).await.unwrap(), b"up");
}

#[tokio::test(start_paused = true)]
async fn connect_across_a_partition_hangs_and_goes_on_after_heal() {
    let net = Network::new(1);
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let mut listener = bind(&server, "10.0.0.1:7000").unwrap();
    net.partition_oneway(&server, &client); // the answer cannot come back
    let hung = tokio::time::timeout(
        Duration::from_secs(30),
        client.connect(&addr("10.0.0.1:7000")),
    )
    .await;
    assert!(hung.is_err(), "a black hole: the caller's timeout decides");

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.connect(&addr("10.0.0.1:7000")).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!pending.is_finished());
    net.heal_all();
    let conn = pending.await.unwrap().expect("connects after heal");
    let accepted = accept(&mut listener).await;
    assert_eq!(accepted.peer_addr().unwrap(), conn.local_addr().unwrap());
}

#[tokio::test(start_paused = true)]
async fn refuse_and_allow_new_connections() {
    let net = Network::new(1);
    let (server, client, mut listener, mut conn, mut accepted) = setup(&net).await;
    net.refuse(&server);
    let err = client.connect(&addr("10.0.0.1:7000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // Established connections go on.
    write_all(&mut conn, b"still here").await.unwrap();
    assert_eq!(read_exact(&mut accepted, 10).await.unwrap(), b"still here");
    net.allow(&server);
    client
        .connect(&addr("10.0.0.1:7000"))
        .await
        .expect("allowed again");
    accept(&mut listener).await;
}

#[tokio::test(start_paused = true)]
async fn kill_resets_connections_silences_listeners_and_the_host_restarts() {
    let net = Network::new(1);
    let (server, client, mut listener, mut conn, mut accepted) = setup(&net).await;
    let queued = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    write_all(&mut conn, b"unread").await.unwrap();
    net.kill(&server);

    // Both ends of its connections are reset.
    assert_eq!(
        read_some(&mut conn, 10).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(
        read_some(&mut accepted, 10).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    let mut queued = queued;
    assert_eq!(
        write_all(&mut queued, b"x").await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    // Its listener is gone: connects are refused, the old handle accepts nothing.
    let err = client.connect(&addr("10.0.0.1:7000")).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        stays_pending(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| listener.poll_accept(cx))
        )
        .await
    );
    assert!(net.listening().is_empty());

    // Restart: bind the same port again, and serve.
    let mut restarted = bind(&server, "10.0.0.1:7000").expect("the port is free after a kill");
    let mut fresh = client.connect(&addr("10.0.0.1:7000")).await.unwrap();
    let mut fresh_accepted = accept(&mut restarted).await;
    write_all(&mut fresh, b"again").await.unwrap();
    assert_eq!(read_exact(&mut fresh_accepted, 5).await.unwrap(), b"again");
    // The dead listener's drop does not unbind its successor.
    drop(listener);
    assert_eq!(
        net.listening(),
        vec![addr("10.0.0.1:7000").as_inet().unwrap()]
    );
    assert!(net
        .trace()
        .iter()
        .any(|e| matches!(e.event, TraceEvent::Kill { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_connect_in_progress_fails_when_its_host_is_killed() {
    let net = Network::new(1);
    net.set_default_link(LinkConfig::default().latency(Duration::from_secs(1)));
    let server = net.host(SERVER);
    let client = net.host(CLIENT);
    let _listener = bind(&server, "10.0.0.1:7000").unwrap();
    let connecting = tokio::spawn({
        let client = client.clone();
        async move { client.connect(&addr("10.0.0.1:7000")).await }
    });
    tokio::time::sleep(ms(500)).await;
    net.kill(&client);
    let err = connecting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test(start_paused = true)]
async fn link_changes_apply_to_bytes_written_after_them() {
    let net = Network::new(1);
    let (server, client, _l, mut conn, mut accepted) = setup(&net).await;
    net.set_link(
        &client,
        &server,
        LinkConfig::default().latency(Duration::from_secs(1)),
    );
    write_all(&mut conn, b"slow").await.unwrap();
    net.set_link(&client, &server, LinkConfig::default());
    write_all(&mut conn, b"fast").await.unwrap();
    // In order: "fast" waits behind "slow", as TCP would.
    let start = Instant::now();
    assert_eq!(read_exact(&mut accepted, 8).await.unwrap(), b"slowfast");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(net.link(&client, &server), LinkConfig::default());
}

#[tokio::test(start_paused = true)]
async fn faults_are_recorded_with_virtual_timestamps() {
    let net = Network::new(1);
    let a = net.host(SERVER);
    let b = net.host(CLIENT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.partition(&a, &b);
    tokio::time::advance(Duration::from_millis(250)).await;
    net.heal(&a, &b);
    net.refuse(&a);
    net.allow(&a);
    net.kill(&b);
    let lines: Vec<String> = net.trace().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "3.000000s fault partition 10.0.0.1 -> 10.0.0.2",
            "3.000000s fault partition 10.0.0.2 -> 10.0.0.1",
            "3.250000s fault heal 10.0.0.1 -> 10.0.0.2",
            "3.250000s fault heal 10.0.0.2 -> 10.0.0.1",
            "3.250000s fault refuse 10.0.0.1",
            "3.250000s fault allow 10.0.0.1",
            "3.250000s fault kill 10.0.0.2",
        ]
    );
    assert!(net.trace().iter().all(|e| e.event.is_fault()));
    assert!(net.take_trace().len() == 7 && net.trace().is_empty());
}
