//! One seed, one run: the same scenario with the same seed records the same trace,
//! and another seed another one.

mod util;

use std::time::Duration;

use chitchat_core::Connector;
use chitchat_testkit::{LinkConfig, Network, SimConn, TraceEntry, TraceEvent};
use util::*;

/// Echoes until EOF.
async fn echo(mut conn: SimConn) {
    loop {
        match read_some(&mut conn, 4096).await {
            Ok(data) if !data.is_empty() => {
                if write_all(&mut conn, &data).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Three clients on three hosts talk to an echo server over jittery, chunking,
/// bandwidth-limited links, while one of them is partitioned for a while.
async fn scenario(seed: u64) -> Vec<TraceEntry> {
    let net = Network::new(seed);
    net.set_default_link(
        LinkConfig::default()
            .latency(Duration::from_millis(10))
            .jitter(Duration::from_millis(20))
            .bandwidth(100_000)
            .chunking(64),
    );
    let server = net.host(SERVER);
    let mut listener = bind(&server, "10.0.0.1:7000").unwrap();
    let accept_loop = tokio::spawn(async move {
        loop {
            let conn = accept(&mut listener).await;
            tokio::spawn(echo(conn));
        }
    });
    let mut clients = Vec::new();
    for i in 2..5u8 {
        let host = net.host([10, 0, 0, i]);
        clients.push(tokio::spawn(async move {
            let mut conn = host.connect(&addr("10.0.0.1:7000")).await.unwrap();
            for round in 0..5u8 {
                let message = vec![i * 10 + round; 500];
                write_all(&mut conn, &message).await.unwrap();
                assert_eq!(read_exact(&mut conn, 500).await.unwrap(), message);
            }
            shutdown(&mut conn).await.unwrap();
            assert!(read_to_end(&mut conn).await.unwrap().is_empty());
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = net.host([10, 0, 0, 3]);
    net.partition(&server, &cut);
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.heal(&server, &cut);
    for client in clients {
        client.await.unwrap();
    }
    accept_loop.abort();
    net.trace()
}

/// Runs the scenario on a fresh single-threaded runtime with paused time.
fn run(seed: u64) -> Vec<TraceEntry> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(scenario(seed))
}

#[test]
fn same_seed_gives_the_same_trace() {
    let first = run(1);
    let second = run(1);
    assert_eq!(first, second);
    // The trace is worth comparing: traffic, faults, and drawn chunk sizes.
    let count = |pred: fn(&TraceEvent) -> bool| first.iter().filter(|e| pred(&e.event)).count();
    assert!(count(|e| matches!(e, TraceEvent::Delivered { len, .. } if *len < 64)) > 50);
    assert_eq!(
        count(|e| matches!(e, TraceEvent::Partition { .. } | TraceEvent::Heal { .. })),
        4
    );
    assert_eq!(count(|e| matches!(e, TraceEvent::Connected { .. })), 3);
    assert!(
        first.last().unwrap().at > Duration::from_secs(2),
        "the partition was felt"
    );
}

#[test]
fn another_seed_gives_another_trace() {
    let first = run(1);
    let other = run(2);
    assert_ne!(first, other);
    // Same story, different draws.
    let connected = |trace: &[TraceEntry]| {
        trace
            .iter()
            .filter(|e| matches!(e.event, TraceEvent::Connected { .. }))
            .count()
    };
    assert_eq!(connected(&first), connected(&other));
}
