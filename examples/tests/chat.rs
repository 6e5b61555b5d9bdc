//! The chat room over loopback TCP: its logic in process with three peers, and the
//! `chat` binary as a black box (its flags, its first line, its signals).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chitchat_core::Addr;
use chitchat_examples::chat::ChatRoom;
use chitchat_tokio::{Client, Server};
use common::{Proc, TIMEOUT};
use futures::StreamExt;

/// One member of the room, in process.
struct Peer {
    client: Client,
}

impl Peer {
    async fn join(server: SocketAddr) -> Peer {
        let client = Client::builder(server).connect().await.expect("joins");
        Peer { client }
    }

    fn addr(&self) -> Addr {
        self.client.local_addr()
    }

    async fn say(&self, line: &str) {
        self.client.send(line.as_bytes()).await.expect("sends");
    }

    async fn hears(&mut self) -> String {
        let line: Bytes = tokio::time::timeout(TIMEOUT, self.client.next())
            .await
            .expect("a line in time")
            .expect("still connected");
        String::from_utf8(line.to_vec()).unwrap()
    }
}

#[tokio::test]
async fn three_peers_chat_rename_and_leave() {
    let server = Server::builder("127.0.0.1:0")
        .handler(ChatRoom)
        .listen()
        .await
        .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let mut ann = Peer::join(addr).await;
    assert_eq!(ann.hears().await, format!("* welcome {}", ann.addr()));
    let mut bob = Peer::join(addr).await;
    assert_eq!(bob.hears().await, format!("* welcome {}", bob.addr()));
    assert_eq!(ann.hears().await, format!("* {} joined", bob.addr()));
    let mut cat = Peer::join(addr).await;
    assert_eq!(cat.hears().await, format!("* welcome {}", cat.addr()));
    for peer in [&mut ann, &mut bob] {
        assert_eq!(peer.hears().await, format!("* {} joined", cat.addr()));
    }

    // A line goes to the others, named by address until a nick is chosen.
    bob.say("hi all").await;
    for peer in [&mut ann, &mut cat] {
        assert_eq!(peer.hears().await, format!("{}: hi all", bob.addr()));
    }
    ann.say("/nick ann").await;
    assert_eq!(ann.hears().await, "* you are now ann");
    ann.say("").await; // ignored
    ann.say("hello").await;
    for peer in [&mut bob, &mut cat] {
        assert_eq!(peer.hears().await, "ann: hello");
    }

    // /quit: a goodbye for the one leaving, a notice for the others.
    ann.say("/quit").await;
    assert_eq!(ann.hears().await, "* bye");
    for peer in [&mut bob, &mut cat] {
        assert_eq!(peer.hears().await, "* ann left");
    }
    assert_eq!(
        ann.client.closed().await.reason,
        chitchat_core::CloseReason::PeerEof
    );

    // A peer that goes away by itself is announced the same way.
    let cat_addr = cat.addr();
    drop(cat);
    assert_eq!(bob.hears().await, format!("* {cat_addr} left"));
    assert_eq!(server.remote_addrs(), [bob.addr()]);
    server.cut().await;
}

#[tokio::test]
async fn a_leave_is_announced_while_the_quitter_still_holds_its_socket() {
    // A linger of an hour: were the close reported at the end of the linger (the
    // drain that protects our last bytes), nobody would hear of it in this test.
    let server = Server::builder("127.0.0.1:0")
        .handler(ChatRoom)
        .linger(Duration::from_secs(3600))
        .listen()
        .await
        .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let mut ann = Peer::join(addr).await;
    ann.hears().await;
    let mut quitter = tokio::net::TcpStream::connect(addr).await.unwrap();
    let quitter_addr = quitter.local_addr().unwrap();
    ann.hears().await; // joined
    use tokio::io::AsyncWriteExt;
    quitter.write_all(b"/quit\n").await.unwrap();
    // The quitter neither reads nor closes: the server's drain waits on it.
    assert_eq!(ann.hears().await, format!("* {quitter_addr} left"));
    assert_eq!(server.remote_addrs(), [ann.addr()]);
    drop(quitter);
    server.cut().await;
}

fn start_chat() -> (Proc, SocketAddr) {
    let chat = Proc::spawn(
        env!("CARGO_BIN_EXE_chat"),
        &["--listen", "127.0.0.1:0"],
        None,
    );
    let addr = chat.listening();
    (chat, addr)
}

/// A raw TCP member of the room, line by line.
struct Line(BufReader<TcpStream>);

impl Line {
    fn connect(addr: SocketAddr) -> Line {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Line(BufReader::new(stream))
    }

    fn local(&self) -> SocketAddr {
        self.0.get_ref().local_addr().unwrap()
    }

    fn send(&mut self, line: &str) {
        self.0
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end_matches('\n').to_owned()
    }
}

#[test]
fn the_binary_speaks_the_chat_lines() {
    let (_chat, addr) = start_chat();
    let mut ann = Line::connect(addr);
    assert_eq!(ann.read(), format!("* welcome {}", ann.local()));
    let mut bob = Line::connect(addr);
    assert_eq!(bob.read(), format!("* welcome {}", bob.local()));
    assert_eq!(ann.read(), format!("* {} joined", bob.local()));
    bob.send("/nick bob");
    assert_eq!(bob.read(), "* you are now bob");
    bob.send("hello\r"); // a CRLF client
    assert_eq!(ann.read(), "bob: hello");
    bob.send("/quit");
    assert_eq!(bob.read(), "* bye");
    assert_eq!(ann.read(), "* bob left");
}

#[test]
fn sigint_and_sigterm_stop_the_room_gracefully_with_peers_connected() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let (mut chat, addr) = start_chat();
        let mut peer = Line::connect(addr);
        peer.read();
        chat.signal(signal);
        let signalled = Instant::now();
        // The room's own grace is 2 s; the rest is room for a loaded machine.
        let status = chat.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{status:?}: {}", chat.stderr());
        assert!(signalled.elapsed() <= Duration::from_secs(5));
        // Its peers are closed, not left hanging.
        let mut rest = String::new();
        assert_eq!(peer.0.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    }
}

#[test]
fn a_bad_listen_address_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut chat = Proc::spawn(env!("CARGO_BIN_EXE_chat"), &["--listen", &addr], None);
    let status = chat.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let stderr = chat.stderr();
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    // The cause is said once.
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
}
