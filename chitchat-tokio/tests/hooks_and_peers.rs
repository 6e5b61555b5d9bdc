//! Handlers over loopback TCP: the connection hooks and their per-connection state,
//! every other peer reachable from inside a handler from the first frame on, the
//! order of peer lists and broadcasts, and a close reported when it happens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chitchat_core::{
    Addr, CloseEvent, CloseReason, ConnEvent, Frame, Handler, Peers, PeersHandle, ReadContext,
};
use chitchat_tokio::{Client, Server};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest wait for something that should happen promptly, on a loaded machine.
const PROMPT: Duration = Duration::from_secs(10);

async fn next_line(client: &mut Client) -> Bytes {
    timeout(PROMPT, client.next())
        .await
        .expect("a frame in time")
        .expect("still connected")
}

async fn join(server: &Server<impl Send + Sync + 'static>) -> Client {
    Client::builder(server.local_addr())
        .connect()
        .await
        .unwrap()
}

/// Counts lines per connection, greets on open, reports on close.
struct Counting {
    closes: Arc<Mutex<Vec<(CloseEvent, u32)>>>,
}

impl Handler for Counting {
    type Conn = u32;

    fn on_open(&self, ctx: &mut dyn ReadContext, lines: &mut u32) {
        *lines = 100; // the open hook fills the state in
        let _ = ctx.reply(format!("hello {}", ctx.peer_addr()).as_bytes());
    }

    fn on_frame(&self, ctx: &mut dyn ReadContext, lines: &mut u32, frame: Frame<'_>) {
        *lines += 1;
        let _ = ctx.reply(format!("{lines} {}", String::from_utf8_lossy(&frame)).as_bytes());
        if frame == "bye" {
            ctx.close();
        }
    }

    fn on_close(&self, ctx: &mut dyn ReadContext, lines: u32, close: &CloseEvent) {
        assert!(
            ctx.reply(b"too late").is_err(),
            "replies fail in the close hook"
        );
        self.closes.lock().unwrap().push((close.clone(), lines));
    }
}

#[tokio::test]
async fn hooks_greet_keep_state_per_connection_and_report_the_close() {
    let closes = Arc::new(Mutex::new(Vec::new()));
    let server = Server::builder("127.0.0.1:0")
        .handler(Counting {
            closes: closes.clone(),
        })
        .listen()
        .await
        .unwrap();
    let mut events = server.events();
    let (mut a, mut b) = (join(&server).await, join(&server).await);
    assert_eq!(next_line(&mut a).await, format!("hello {}", a.local_addr()));
    assert_eq!(next_line(&mut b).await, format!("hello {}", b.local_addr()));
    a.send(b"x").await.unwrap();
    a.send(b"y").await.unwrap();
    b.send(b"z").await.unwrap();
    assert_eq!(next_line(&mut a).await, "101 x");
    assert_eq!(next_line(&mut a).await, "102 y");
    assert_eq!(next_line(&mut b).await, "101 z");
    a.send(b"bye").await.unwrap();
    assert_eq!(next_line(&mut a).await, "103 bye");
    let closed = loop {
        match timeout(PROMPT, events.next()).await.unwrap().unwrap() {
            ConnEvent::Closed(close) => break close,
            _ => continue,
        }
    };
    let hooked = closes.lock().unwrap().clone();
    assert_eq!(hooked.len(), 1, "the hook ran before the event");
    assert_eq!(hooked[0].0, closed);
    assert_eq!(hooked[0].1, 103, "the close hook gets the state");
    assert_eq!(closed.peer, a.local_addr());
    assert_eq!(closed.reason, CloseReason::ClosedByHandler);
    assert_eq!((closed.stats.frames_in, closed.stats.frames_out), (3, 4));
    server.cut().await;
}

/// Relays each frame to every other peer from inside the handler; answers `who`
/// with the peer list and closes the named peer on `kick <addr>`.
struct Relay;

impl Handler for Relay {
    type Conn = ();

    fn on_frame(&self, ctx: &mut dyn ReadContext, _: &mut (), frame: Frame<'_>) {
        let me = ctx.peer_addr();
        if frame == "who" {
            let list: Vec<String> = ctx
                .peers()
                .remote_addrs()
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = ctx.reply(list.join(" ").as_bytes());
        } else if let Some(target) = frame.strip_prefix(b"kick ") {
            let target: Addr = std::str::from_utf8(target).unwrap().parse().unwrap();
            ctx.peers().close_remote(&target).unwrap();
        } else if let Some(text) = frame.strip_prefix(b"to-first ") {
            let first = ctx.peers().remote_addrs()[0];
            ctx.peers().write_to(&first, text).unwrap();
        } else {
            let _ = ctx.peers().broadcast_except(&me, &frame);
        }
    }
}

#[tokio::test]
async fn a_handler_reaches_every_peer_from_the_first_frame_in_accept_order() {
    let server = Server::builder("127.0.0.1:0")
        .handler(Relay)
        .listen()
        .await
        .unwrap();
    let mut peers = Vec::new();
    for _ in 0..4 {
        peers.push(join(&server).await);
        // Accepted in this order: the next one connects once this one is listed.
        let want = peers.len();
        timeout(PROMPT, async {
            while server.remote_addrs().len() < want {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }
    let order: Vec<Addr> = peers.iter().map(Client::local_addr).collect();
    assert_eq!(server.remote_addrs(), order, "accept order");

    // The very first frame of the last peer reaches the others.
    peers[3].send(b"hi").await.unwrap();
    for peer in &mut peers[..3] {
        assert_eq!(next_line(peer).await, "hi");
    }
    peers[2].send(b"who").await.unwrap();
    let listed: Vec<String> = order.iter().map(ToString::to_string).collect();
    assert_eq!(next_line(&mut peers[2]).await, listed.join(" "));
    peers[2].send(b"to-first psst").await.unwrap();
    assert_eq!(next_line(&mut peers[0]).await, "psst");

    // A handler closes another peer.
    peers[0]
        .send(format!("kick {}", order[1]).as_bytes())
        .await
        .unwrap();
    let kicked = timeout(PROMPT, peers[1].closed()).await.unwrap();
    assert_eq!(kicked.reason, CloseReason::PeerEof);
    assert_eq!(server.remote_addrs(), [order[0], order[2], order[3]]);
    server.cut().await;
}

#[tokio::test]
async fn a_task_keeps_a_peers_handle_and_writes_later() {
    let (handles, mut kept) = tokio::sync::mpsc::unbounded_channel::<PeersHandle>();
    let server = Server::with_state("127.0.0.1:0", handles)
        .on_frame(|ctx, _frame| {
            let _ = ctx.state().send(ctx.peers().handle());
        })
        .listen()
        .await
        .unwrap();
    let mut client = join(&server).await;
    client.send(b"call me back").await.unwrap();
    let handle = timeout(PROMPT, kept.recv()).await.unwrap().unwrap();
    let me = client.local_addr();
    tokio::spawn(async move { handle.write_to(&me, b"later").unwrap() });
    assert_eq!(next_line(&mut client).await, "later");
    server.cut().await;
}

#[tokio::test]
async fn the_close_is_reported_while_the_lingering_drain_still_runs() {
    // An hour of linger: a close reported at the end of the drain would not be
    // seen by this test at all.
    let server = Server::builder("127.0.0.1:0")
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
            ctx.close();
        })
        .linger(Duration::from_secs(3600))
        .listen()
        .await
        .unwrap();
    let mut events = server.events();
    let addr = server.local_addr().as_inet().unwrap();
    let mut peer = TcpStream::connect(addr).await.unwrap();
    // The frame, then more input the server must drain: the peer never closes.
    peer.write_all(b"last\nunread\n").await.unwrap();
    let mut echoed = [0; 5];
    timeout(PROMPT, peer.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"last\n");
    let close = loop {
        match timeout(PROMPT, events.next()).await.unwrap().unwrap() {
            ConnEvent::Closed(close) => break close,
            _ => continue,
        }
    };
    assert_eq!(close.reason, CloseReason::ClosedByHandler);
    assert_eq!(
        close.stats.bytes_out, 5,
        "the counters include our last bytes"
    );
    assert!(server.remote_addrs().is_empty(), "no longer a peer");
    assert_eq!(server.connection_count(), 1, "still draining");
    drop(peer);
    server.cut().await;
}

#[tokio::test]
async fn each_subscriber_gets_every_event_from_when_it_subscribed() {
    let server = Server::builder("127.0.0.1:0")
        .on_frame(|ctx, _| ctx.close())
        .listen()
        .await
        .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let close_one = || async {
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let local = Addr::from(peer.local_addr().unwrap());
        peer.write_all(b"x\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = timeout(PROMPT, peer.read_to_end(&mut rest)).await;
        local
    };
    let mut early = server.events();
    let first = close_one().await;
    let mut late = server.events();
    let second = close_one().await;
    assert_eq!(closes(&mut early, 2).await, [first, second]);
    assert_eq!(closes(&mut late, 1).await, [second], "nothing from before");
    assert_eq!((early.dropped(), late.dropped()), (0, 0));
    server.cut().await;
    assert!(timeout(PROMPT, late.next()).await.unwrap().is_none());
}

/// The peers of the next `n` closes on `events`.
async fn closes(events: &mut chitchat_core::Events<ConnEvent>, n: usize) -> Vec<Addr> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let event = timeout(PROMPT, events.next()).await.unwrap().unwrap();
        if let ConnEvent::Closed(close) = event {
            seen.push(close.peer);
        }
    }
    seen
}

/// Code written against chitchat-core's `Peers` takes the tokio server as it is.
fn peer_count(peers: &dyn Peers) -> usize {
    peers.remote_addrs().len()
}

#[tokio::test]
async fn the_server_is_a_peers_and_a_core_server() {
    let server = Server::builder("127.0.0.1:0").listen().await.unwrap();
    let _client = join(&server).await;
    timeout(PROMPT, async {
        while peer_count(&server) < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let report = chitchat_core::Server::shutdown(&server, Duration::from_secs(1)).await;
    assert_eq!(report.drained + report.forced, 1);
}
