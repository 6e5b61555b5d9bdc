//! The connection limits over loopback TCP: the per-IP share, refused at accept with
//! an error naming the peer, and given back when a connection ends.

use std::net::SocketAddr;
use std::time::Duration;

use chitchat_core::{Addr, CloseReason, ConnError, ConnEvent};
use chitchat_tokio::Server;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const PROMPT: Duration = Duration::from_secs(10);

/// A connection from `source` (any loopback address) to `server`.
async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

async fn refused_peer(events: &mut chitchat_core::Events<ConnEvent>) -> (Addr, usize) {
    loop {
        let event = timeout(PROMPT, events.next()).await.unwrap().unwrap();
        if let ConnEvent::Error(ConnError::RefusedPerIp { peer, limit }) = event {
            let close = timeout(PROMPT, events.next()).await.unwrap().unwrap();
            let close = close
                .as_closed()
                .cloned()
                .expect("the refusal's close follows");
            assert_eq!((close.peer, close.reason), (peer, CloseReason::Refused));
            return (peer, limit);
        }
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    timeout(PROMPT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn one_ip_gets_its_share_and_others_are_not_locked_out() {
    let server = Server::builder("127.0.0.1:0")
        .max_connections_per_ip(2)
        .listen()
        .await
        .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let mut events = server.events();
    let first = connect_from([127, 0, 0, 1], addr).await;
    let _second = connect_from([127, 0, 0, 1], addr).await;
    wait_until(|| server.remote_addrs().len() == 2).await;

    let mut third = connect_from([127, 0, 0, 1], addr).await;
    let third_addr = Addr::from(third.local_addr().unwrap());
    assert_eq!(refused_peer(&mut events).await, (third_addr, 2));
    let mut rest = Vec::new();
    let _ = timeout(PROMPT, third.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());

    // Another address is served while 127.0.0.1 is at its share.
    let _other = connect_from([127, 0, 0, 2], addr).await;
    wait_until(|| server.remote_addrs().len() == 3).await;
    assert_eq!(server.stats().refused, 1);

    // A connection that ends gives its slot back.
    drop(first);
    wait_until(|| server.connection_count() == 2).await;
    let _again = connect_from([127, 0, 0, 1], addr).await;
    wait_until(|| server.remote_addrs().len() == 3).await;
    server.cut().await;
}
