//! The engine on the in-memory network is as reproducible as the network itself:
//! a server and clients running the real chitchat engine, on rough links with a
//! partition and a kill, record the same trace for the same seed.

use std::time::Duration;

use chitchat_core::{Addr, ReadContext};
use chitchat_testkit::{LinkConfig, Network, TraceEntry};
use chitchat_tokio::{Client, Server};

async fn scenario(seed: u64) -> Vec<TraceEntry> {
    let net = Network::new(seed);
    net.set_default_link(
        LinkConfig::default()
            .latency(Duration::from_millis(5))
            .jitter(Duration::from_millis(10))
            .chunking(16),
    );
    let server_host = net.host([10, 0, 0, 1]);
    let server = Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap())
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
        })
        .idle_timeout(Duration::from_secs(2))
        .listen_on(&server_host)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..4u8 {
        let host = net.host([10, 0, 1, c]);
        let addr = server.local_addr();
        let net = net.clone();
        let server_ip = server_host.ip();
        tasks.push(tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let client = Client::with_state(addr, tx)
                .on_frame(|ctx: &mut dyn ReadContext<_>, frame| {
                    let _ = ctx.state().send(frame.into_bytes());
                })
                .connect_with(&host)
                .await
                .unwrap();
            for i in 0..20 {
                client.try_write(format!("{c}-{i}").as_bytes()).unwrap();
            }
            if c == 0 {
                net.partition(&host, server_ip);
                tokio::time::sleep(Duration::from_millis(500)).await;
                net.heal(&host, server_ip);
            }
            for _ in 0..20 {
                rx.recv().await.unwrap();
            }
            // Client 3 goes quiet and is dropped by the idle timeout.
            if c == 3 {
                client.closed().await;
            } else {
                client.close().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.cut().await;
    net.trace()
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_trace_with_the_engine() {
    let first = scenario(11).await;
    let second = scenario(11).await;
    assert!(
        first.len() > 100,
        "a substantial trace: {} entries",
        first.len()
    );
    assert_eq!(first, second);
}

#[tokio::test(start_paused = true)]
async fn another_seed_another_trace_with_the_engine() {
    assert_ne!(scenario(11).await, scenario(12).await);
}

/// Connections whose idle deadlines fall on one instant are closed in accept order:
/// the server wakes connections in deadline, then accept order, so neither the
/// peers' addresses nor a hash seed decide who is closed first.
#[tokio::test(start_paused = true)]
async fn idle_connections_with_one_deadline_close_in_accept_order() {
    use chitchat_core::{CloseReason, ConnEvent};
    use futures::StreamExt;

    let net = Network::new(3);
    let server_host = net.host([10, 0, 0, 1]);
    let server = Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap())
        .on_frame(|_ctx, _frame| {})
        .idle_timeout(Duration::from_secs(2))
        .listen_on(&server_host)
        .await
        .unwrap();
    let mut events = server.events();
    // Hosts whose addresses are in an order unrelated to the dialing order, all
    // dialing at one instant: their idle deadlines are the same.
    let hosts: Vec<_> = (0..40u8)
        .map(|i| net.host([10, 0, 1, i.wrapping_mul(97).wrapping_add(1)]))
        .collect();
    let dials = hosts.iter().map(|host| {
        Client::builder(server.local_addr())
            .on_frame(|_ctx, _frame| {})
            .connect_with(host)
    });
    let clients: Vec<_> = futures::future::join_all(dials)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    while server.connection_count() < clients.len() {
        tokio::task::yield_now().await;
    }
    let accepted = server.remote_addrs();
    assert_eq!(accepted.len(), clients.len());

    let mut closed = Vec::new();
    while closed.len() < accepted.len() {
        let Some(ConnEvent::Closed(close)) = events.next().await else {
            continue;
        };
        assert_eq!(close.reason, CloseReason::IdleTimeout);
        closed.push(close.peer);
    }
    assert_eq!(closed, accepted);
    server.cut().await;
}
