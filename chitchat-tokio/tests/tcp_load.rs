//! Loopback TCP under load: many clients at once, every echo byte-exact and in order.

use std::time::Duration;

use bytes::Bytes;
use chitchat_core::{Addr, ReadContext};
use chitchat_tokio::{Client, Server};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::timeout;

async fn start_echo_server() -> Server {
    Server::builder("127.0.0.1:0".parse::<Addr>().unwrap())
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
        })
        .listen()
        .await
        .expect("bind loopback")
}

/// 1000 clients connect at once (more than tokio's default backlog of 128) and
/// each pipelines 100 frames of distinct content; every reply is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clients_hundred_frames_each_echo_exactly_in_order() {
    const CLIENTS: usize = 1000;
    const FRAMES: usize = 100;
    let server = start_echo_server().await;
    let addr = server.local_addr();

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let (tx, mut rx) = unbounded_channel::<Bytes>();
            let client = Client::with_state(addr, tx)
                .on_frame(|ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>, frame| {
                    let _ = ctx.state().send(frame.into_bytes());
                })
                .connect()
                .await
                .expect("connect");
            for i in 0..FRAMES {
                // Sizes vary so that frames straddle read boundaries.
                let payload = format!("client {c} frame {i} {}", "x".repeat((c * 7 + i) % 300));
                client.try_write(payload.as_bytes()).expect("queue");
            }
            for i in 0..FRAMES {
                let expected = format!("client {c} frame {i} {}", "x".repeat((c * 7 + i) % 300));
                let got = timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("reply in time")
                    .expect("client running");
                assert_eq!(got, expected.as_bytes());
            }
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let report = timeout(Duration::from_secs(30), server.cut())
        .await
        .expect("cut in time");
    assert_eq!(report.forced, 0);
    assert_eq!(server.connection_count(), 0);
}
