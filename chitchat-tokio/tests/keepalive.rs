//! TCP keepalive on real sockets: the engine sets it on every accepted and dialed
//! TCP (and TLS) socket as configured, on by default, and off when asked. Each
//! test finds the engine's socket among this process's file descriptors by its
//! addresses and reads the options back with `getsockopt`.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use chitchat_core::{Addr, Keepalive};
use chitchat_tokio::{Client, Server, ServerBuilder};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `getsockopt` says about one socket's keepalive.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    on: bool,
    idle: Duration,
    interval: Duration,
    retries: u32,
}

/// The keepalive options of the TCP socket of this process connecting `local` to
/// `peer`.
fn options_of(local: SocketAddr, peer: SocketAddr) -> Options {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        // SAFETY: the fd is only read from for the duration of this call; if it was
        // closed meanwhile, getsockname fails (or names another socket) and it is
        // skipped.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&fd);
        let addrs = (socket.local_addr(), socket.peer_addr());
        let (Ok(ours), Ok(theirs)) = addrs else {
            continue;
        };
        if ours.as_socket() == Some(local) && theirs.as_socket() == Some(peer) {
            return Options {
                on: socket.keepalive().unwrap(),
                idle: socket.keepalive_time().unwrap(),
                interval: socket.keepalive_interval().unwrap(),
                retries: socket.keepalive_retries().unwrap(),
            };
        }
    }
    panic!("no socket from {local} to {peer} in this process");
}

fn expected(keepalive: Keepalive) -> Options {
    Options {
        on: true,
        idle: keepalive.idle,
        interval: keepalive.interval,
        retries: keepalive.retries,
    }
}

async fn echo_server(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Server {
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    configure(Server::builder(addr).on_frame(|ctx, frame| {
        let _ = ctx.reply(&frame);
    }))
    .listen()
    .await
    .unwrap()
}

/// Connects a plain TCP peer and waits for one echo: the engine has the socket.
async fn echoed_peer(server: &Server) -> TcpStream {
    let addr = server.local_addr().as_inet().unwrap();
    let mut peer = TcpStream::connect(addr).await.unwrap();
    peer.write_all(b"ping\n").await.unwrap();
    let mut echo = [0; 5];
    peer.read_exact(&mut echo).await.unwrap();
    peer
}

#[tokio::test]
async fn accepted_sockets_get_the_configured_keepalive() {
    let keepalive = Keepalive::new(Duration::from_secs(7), Duration::from_secs(3), 4);
    let server = echo_server(|b| b.keepalive(keepalive)).await;
    let peer = echoed_peer(&server).await;
    let options = options_of(peer.peer_addr().unwrap(), peer.local_addr().unwrap());
    assert_eq!(options, expected(keepalive));
    server.cut().await;
}

#[tokio::test]
async fn keepalive_is_on_by_default() {
    let server = echo_server(|b| b).await;
    let peer = echoed_peer(&server).await;
    let options = options_of(peer.peer_addr().unwrap(), peer.local_addr().unwrap());
    assert_eq!(options, expected(Keepalive::default()));
    assert_eq!(
        (options.idle, options.interval, options.retries),
        (Duration::from_secs(60), Duration::from_secs(10), 5)
    );
    server.cut().await;
}

#[tokio::test]
async fn keepalive_can_be_turned_off() {
    let server = echo_server(|b| b.keepalive(None)).await;
    let peer = echoed_peer(&server).await;
    let options = options_of(peer.peer_addr().unwrap(), peer.local_addr().unwrap());
    assert!(!options.on, "{options:?}");
    server.cut().await;
}

#[tokio::test]
async fn dialed_sockets_get_the_configured_keepalive() {
    let server = echo_server(|b| b).await;
    let keepalive = Keepalive::new(Duration::from_secs(11), Duration::from_secs(2), 6);
    let client = Client::builder(server.local_addr())
        .keepalive(keepalive)
        .connect()
        .await
        .unwrap();
    let (local, peer) = (client.local_addr(), client.peer_addr());
    let options = options_of(local.as_inet().unwrap(), peer.as_inet().unwrap());
    assert_eq!(options, expected(keepalive));
    client.close().await;
    server.cut().await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_sockets_get_the_keepalive_on_both_sides() {
    use chitchat_tokio::{TlsBinder, TlsConnector};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = cert.key_pair.serialize_pem();
    let tls_server = TlsBinder::from_pem(pem.as_bytes(), key.as_bytes()).unwrap();
    let tls_client = TlsConnector::from_ca_pem(pem.as_bytes(), "localhost").unwrap();
    let server_keepalive = Keepalive::new(Duration::from_secs(9), Duration::from_secs(4), 3);
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    let server = Server::builder(addr)
        .keepalive(server_keepalive)
        .listen_on(&tls_server)
        .await
        .unwrap();
    let client_keepalive = Keepalive::new(Duration::from_secs(13), Duration::from_secs(5), 2);
    let client = Client::builder(server.local_addr())
        .keepalive(client_keepalive)
        .connect_with(&tls_client)
        .await
        .unwrap();
    let (local, peer) = (
        client.local_addr().as_inet().unwrap(),
        client.peer_addr().as_inet().unwrap(),
    );
    assert_eq!(options_of(local, peer), expected(client_keepalive));
    // The server's session is admitted once its own side of the handshake is done.
    let server_addr = server.local_addr().as_inet().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.connection_count() == 0
        || options_of(server_addr, local) != expected(server_keepalive)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server's socket has {:?}",
            options_of(server_addr, local)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.close().await;
    server.cut().await;
}
