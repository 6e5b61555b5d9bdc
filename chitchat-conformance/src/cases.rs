//! The conformance cases. Each takes the harness, builds servers and clients on its
//! transport, and asserts one behaviour of the contract.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chitchat_core::{
    Addr, BindError, BindOptions, Binder, CloseReason, ConnErrorKind, ConnEvent, ConnectError,
    Connection, Delimiter, EncodeError, Events, Frame, Handler, Listener, OversizePolicy,
    ReadContext, WriteError,
};
use chitchat_testkit::RawPeer;
use chitchat_tokio::{Client, ClientBuilder, Server, ServerBuilder};
use futures::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

use crate::harness::Harness;

/// Longest wait for anything that should happen promptly. Virtual time on the
/// in-memory network; on TCP, generous for a loaded CI machine.
const PROMPT: Duration = Duration::from_secs(10);

type RawConn<H> = <<H as Harness>::Connector as chitchat_core::Connector>::Conn;

/// Frames a client received, in order.
type Inbox = UnboundedReceiver<Bytes>;

/// The event stream of a server or client.
type EventStream = Events<ConnEvent>;

/// Replies to every frame with the frame.
struct Echo;

impl<S: ?Sized> Handler<S> for Echo {
    type Conn = ();

    fn on_frame(&self, ctx: &mut dyn ReadContext<S>, _: &mut (), frame: Frame<'_>) {
        let _ = ctx.reply(&frame);
    }
}

/// Forwards every frame to the channel in the client's state.
struct Forward;

impl Handler<UnboundedSender<Bytes>> for Forward {
    type Conn = ();

    fn on_frame(
        &self,
        ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>,
        _: &mut (),
        frame: Frame<'_>,
    ) {
        let _ = ctx.state().send(frame.into_bytes());
    }
}

fn echo(builder: ServerBuilder) -> ServerBuilder {
    builder.handler(Echo)
}

async fn serve<H: Harness, S: Send + Sync + 'static>(
    h: &H,
    builder: ServerBuilder<S>,
) -> Server<S> {
    builder
        .listen_on(h.binder())
        .await
        .expect("the server binds")
}

async fn echo_server<H: Harness>(
    h: &H,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Server {
    serve(h, configure(echo(Server::builder(h.server_addr())))).await
}

/// A client that forwards every frame it receives to the returned inbox.
async fn client<H: Harness>(
    h: &H,
    addr: Addr,
    configure: impl FnOnce(
        ClientBuilder<UnboundedSender<Bytes>>,
    ) -> ClientBuilder<UnboundedSender<Bytes>>,
) -> (Client<UnboundedSender<Bytes>>, Inbox) {
    let (tx, rx) = unbounded_channel();
    let builder = Client::with_state(addr, tx).handler(Forward);
    let client = configure(builder)
        .connect_with(h.connector())
        .await
        .expect("the client connects");
    (client, rx)
}

async fn raw<H: Harness>(h: &H, addr: Addr) -> RawPeer<RawConn<H>> {
    timeout(PROMPT, RawPeer::connect(h.connector(), &addr))
        .await
        .expect("connect in time")
        .expect("raw peer connects")
}

async fn recv(inbox: &mut Inbox) -> Bytes {
    timeout(PROMPT, inbox.recv())
        .await
        .expect("a frame arrives in time")
        .expect("the client is still running")
}

async fn read_frame<C: chitchat_core::Connection>(peer: &mut RawPeer<C>) -> Bytes {
    timeout(PROMPT, peer.read_frame(b'\n'))
        .await
        .expect("a frame arrives in time")
        .expect("no transport error")
        .expect("a frame, not EOF")
}

async fn read_to_end<C: chitchat_core::Connection>(
    peer: &mut RawPeer<C>,
) -> (Bytes, std::io::Result<()>) {
    timeout(PROMPT, peer.read_to_end())
        .await
        .expect("the stream ends in time")
}

/// Waits until `cond` holds, looking every millisecond (virtual time on the
/// in-memory network).
async fn until(mut cond: impl FnMut() -> bool) {
    timeout(PROMPT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the condition holds in time")
}

/// The next event matching `pick`, skipping others.
async fn next_event<T>(
    events: &mut EventStream,
    mut pick: impl FnMut(&ConnEvent) -> Option<T>,
) -> T {
    timeout(PROMPT, async {
        loop {
            let event = events.next().await.expect("the event stream is open");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the event arrives in time")
}

async fn next_error(events: &mut EventStream, kind: ConnErrorKind) -> chitchat_core::ConnError {
    next_event(events, |e| {
        e.as_error().filter(|err| err.kind() == kind).cloned()
    })
    .await
}

async fn next_close(events: &mut EventStream) -> chitchat_core::CloseEvent {
    next_event(events, |e| e.as_closed().cloned()).await
}

/// Frames received are echoed byte for byte, delimiter restored.
pub async fn echo_round_trip<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"hello\nworld\n").await.unwrap();
    assert_eq!(peer.read_exact(12).await.unwrap(), "hello\nworld\n");
    server.cut().await;
}

/// With `\n`, one `\r` before it is dropped; replies end in `\n` only.
pub async fn crlf_is_stripped<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"a\r\n\r\nb\r\r\n").await.unwrap();
    // "b\r\r" loses one '\r'; the echo of "b\r" goes out as "b\r\r\n", so that the
    // peer's CRLF handling gives back exactly "b\r".
    assert_eq!(peer.read_exact(7).await.unwrap(), "a\n\nb\r\r\n");
    peer.shutdown().await.unwrap();
    let (rest, end) = read_to_end(&mut peer).await;
    assert_eq!(rest, "", "nothing after the three replies");
    end.unwrap();
    server.cut().await;
}

/// Replies are checked like any write whatever they are made of: a part of the
/// frame goes out as it is, bytes from elsewhere that hold the delimiter are
/// refused, and a part ending in `'\r'` goes out with a second `'\r'` (the one the
/// peer strips).
pub async fn replies_are_checked_wherever_they_come_from<H: Harness>(h: &H) {
    let server = serve(
        h,
        Server::builder(h.server_addr()).on_frame(|ctx, frame| {
            let outcomes = [
                ctx.reply(&frame[1..]),
                ctx.reply(b"x\ny"),
                ctx.reply(&frame[..2]),
            ];
            let verdict: Vec<String> = outcomes
                .iter()
                .map(|outcome| match outcome {
                    Ok(()) => "ok".to_owned(),
                    Err(WriteError::Encode {
                        source: EncodeError::ContainsDelimiter { offset },
                        ..
                    }) => format!("delimiter@{offset}"),
                    Err(other) => format!("{other}"),
                })
                .collect();
            let _ = ctx.reply(verdict.join(",").as_bytes());
        }),
    )
    .await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"a\rbc\n").await.unwrap();
    assert_eq!(read_frame(&mut peer).await, "\rbc");
    assert_eq!(read_frame(&mut peer).await, "a\r\r");
    assert_eq!(read_frame(&mut peer).await, "ok,delimiter@1,ok");
    server.cut().await;
}

/// Empty frames are frames.
pub async fn empty_frames_are_delivered<H: Harness>(h: &H) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let server = serve(
        h,
        Server::builder(h.server_addr()).on_frame(move |ctx, frame| {
            assert!(frame.is_empty());
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = ctx.reply(b"");
        }),
    )
    .await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"\n\n\r\n").await.unwrap();
    assert_eq!(peer.read_exact(3).await.unwrap(), "\n\n\n");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    server.cut().await;
}

/// Any byte can be the delimiter; `\r` is then ordinary data.
pub async fn custom_delimiter<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.delimiter(Delimiter::Byte(b';'))).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"a\r;b\n;").await.unwrap();
    assert_eq!(peer.read_exact(6).await.unwrap(), "a\r;b\n;");
    server.cut().await;
}

/// EOF mode: everything until the peer's shutdown is one frame; the reply is
/// followed by our EOF.
pub async fn eof_mode_echoes_whole_message<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.delimiter(Delimiter::Eof)).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"line one\nline two\n").await.unwrap();
    peer.write_all(b"\0binary\r\n").await.unwrap();
    peer.shutdown().await.unwrap();
    let (echoed, end) = read_to_end(&mut peer).await;
    assert_eq!(echoed, "line one\nline two\n\0binary\r\n");
    end.unwrap();
    server.cut().await;
}

/// An EOF-mode client shuts down its side to end its message, and still gets the
/// whole reply.
pub async fn eof_mode_client_gets_whole_reply<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.delimiter(Delimiter::Eof)).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b.delimiter(Delimiter::Eof)).await;
    client.try_write(b"part one, ").unwrap();
    client.try_write(b"part two").unwrap();
    client.shutdown();
    assert_eq!(recv(&mut inbox).await, "part one, part two");
    let closed = timeout(PROMPT, client.closed()).await.unwrap();
    assert_eq!(closed.reason, CloseReason::PeerEof);
    server.cut().await;
}

/// A thousand pipelined frames come back complete and in order.
pub async fn frames_keep_their_order_when_pipelined<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b).await;
    for i in 0..1000 {
        client.try_write(format!("frame {i}").as_bytes()).unwrap();
    }
    for i in 0..1000 {
        assert_eq!(recv(&mut inbox).await, format!("frame {i}"));
    }
    client.close().await;
    server.cut().await;
}

/// Many clients at once, each with its own ordered stream.
pub async fn many_clients_at_once<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for c in 0..50 {
        let (client, inbox) = client(h, addr, |b| b).await;
        for i in 0..50 {
            client.try_write(format!("{c}:{i}").as_bytes()).unwrap();
        }
        clients.push((client, inbox));
    }
    for (c, (client, mut inbox)) in clients.into_iter().enumerate() {
        for i in 0..50 {
            assert_eq!(recv(&mut inbox).await, format!("{c}:{i}"));
        }
        client.close().await;
    }
    server.cut().await;
}

/// The read context gives both addresses and the user data.
pub async fn handler_sees_addresses_and_state<H: Harness>(h: &H) {
    let server = serve(
        h,
        Server::with_state(h.server_addr(), String::from("shared")).on_frame(|ctx, _| {
            let text = format!("{} {} {}", ctx.peer_addr(), ctx.local_addr(), ctx.state());
            let _ = ctx.reply(text.as_bytes());
        }),
    )
    .await;
    assert_eq!(server.state(), "shared");
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"who\n").await.unwrap();
    let reply = read_frame(&mut peer).await;
    let expected = format!("{} {} shared", peer.local_addr(), server.local_addr());
    assert_eq!(reply, expected);
    server.cut().await;
}

/// An oversized frame closes its connection with an error naming the peer; replies
/// to earlier frames still arrive, and other connections go on.
pub async fn frame_too_long_closes_and_names_peer<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.max_frame_len(16)).await;
    let mut events = server.events();
    let mut bystander = raw(h, server.local_addr()).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"fine\n").await.unwrap();
    peer.write_all(&[b'x'; 64]).await.unwrap();
    let (got, _) = read_to_end(&mut peer).await;
    assert_eq!(got, "fine\n");
    let addr = peer.local_addr();
    drop(peer); // a client that reads EOF closes, which ends the server's lingering close
    let err = next_error(&mut events, ConnErrorKind::FrameTooLong).await;
    assert_eq!(err.addr(), addr);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let closed = next_close(&mut events).await;
    assert_eq!(closed.reason, CloseReason::FrameTooLong);
    bystander.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_frame(&mut bystander).await, "still here");
    server.cut().await;
}

/// With the skip policy, each oversized frame costs one error and nothing else.
pub async fn oversized_frames_skipped_twice_then_recovers<H: Harness>(h: &H) {
    let server = echo_server(h, |b| {
        b.max_frame_len(8).oversize(OversizePolicy::SkipFrame)
    })
    .await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"one\n0123456789abcdef\n").await.unwrap();
    peer.write_all(b"0123456789\ntwo\n").await.unwrap();
    assert_eq!(read_frame(&mut peer).await, "one");
    assert_eq!(read_frame(&mut peer).await, "two");
    for _ in 0..2 {
        next_error(&mut events, ConnErrorKind::FrameTooLong).await;
    }
    assert!(events.try_next().is_none(), "exactly two errors");
    server.cut().await;
}

/// Bytes without a delimiter at EOF are reported with their count, not delivered.
pub async fn truncated_frame_at_eof_is_reported<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"whole\npart").await.unwrap();
    peer.shutdown().await.unwrap();
    let (got, end) = read_to_end(&mut peer).await;
    assert_eq!(got, "whole\n");
    end.unwrap();
    match next_error(&mut events, ConnErrorKind::TruncatedFrame).await {
        chitchat_core::ConnError::TruncatedFrame { peer: who, len } => {
            assert_eq!((who, len), (peer.local_addr(), 4));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(next_close(&mut events).await.reason, CloseReason::PeerEof);
    server.cut().await;
}

fn closing_echo(builder: ServerBuilder) -> ServerBuilder {
    builder.on_frame(|ctx, frame| {
        let _ = ctx.reply(&frame);
        if frame == "quit" {
            ctx.close();
        }
    })
}

/// `close` inside the handler: the reply queued before it is written, then EOF.
pub async fn close_from_handler_flushes_reply_first<H: Harness>(h: &H) {
    let server = serve(h, closing_echo(Server::builder(h.server_addr()))).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"a\nquit\n").await.unwrap();
    let (got, end) = read_to_end(&mut peer).await;
    assert_eq!(got, "a\nquit\n");
    end.unwrap();
    drop(peer);
    assert_eq!(
        next_close(&mut events).await.reason,
        CloseReason::ClosedByHandler
    );
    server.cut().await;
}

/// Frames that arrive after the handler closed the connection are not handled.
pub async fn frames_after_close_are_not_handled<H: Harness>(h: &H) {
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let server = serve(
        h,
        Server::builder(h.server_addr()).on_frame(move |ctx, frame| {
            count.fetch_add(1, Ordering::SeqCst);
            if frame == "quit" {
                ctx.close();
                assert!(ctx.reply(b"late").is_err(), "no replies after close");
            }
        }),
    )
    .await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"quit\nafter\nmore\n").await.unwrap();
    let (got, _) = read_to_end(&mut peer).await;
    assert_eq!(got, "");
    drop(peer);
    next_close(&mut events).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    server.cut().await;
}

/// `close_remote` ends one connection and no other.
pub async fn close_remote_closes_only_that_peer<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut doomed = raw(h, server.local_addr()).await;
    let mut other = raw(h, server.local_addr()).await;
    doomed.write_all(b"x\n").await.unwrap();
    other.write_all(b"y\n").await.unwrap();
    read_frame(&mut doomed).await;
    read_frame(&mut other).await;
    let doomed_addr = doomed.local_addr();
    server.close_remote(&doomed_addr).unwrap();
    let (_, end) = read_to_end(&mut doomed).await;
    end.unwrap();
    drop(doomed);
    let closed = next_close(&mut events).await;
    assert_eq!(
        (closed.peer, closed.reason),
        (doomed_addr, CloseReason::ClosedLocally)
    );
    other.write_all(b"z\n").await.unwrap();
    assert_eq!(read_frame(&mut other).await, "z");
    server.cut().await;
}

/// `close_remote` of an address with no connection is a typed error.
pub async fn close_remote_of_unknown_peer_fails<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let nobody: Addr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        server.close_remote(&nobody),
        Err(WriteError::UnknownPeer { peer: nobody })
    );
    server.cut().await;
}

/// `write_to` sends a frame to one peer, from outside any handler.
pub async fn write_to_reaches_one_peer<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut target = raw(h, server.local_addr()).await;
    target.write_all(b"hi\n").await.unwrap();
    read_frame(&mut target).await;
    server.write_to(&target.local_addr(), b"pushed").unwrap();
    assert_eq!(read_frame(&mut target).await, "pushed");
    server.cut().await;
}

/// `write_to` an unknown address is a typed error.
pub async fn write_to_unknown_peer_fails<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let nobody: Addr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        server.write_to(&nobody, b"x"),
        Err(WriteError::UnknownPeer { peer: nobody })
    );
    server.cut().await;
}

/// A payload containing the delimiter is refused whole: nothing reaches the peer.
pub async fn write_refuses_payload_with_delimiter<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b).await;
    let peer = client.peer_addr();
    assert_eq!(
        client.try_write(b"two\nframes"),
        Err(WriteError::Encode {
            peer,
            source: EncodeError::ContainsDelimiter { offset: 3 }
        })
    );
    client.try_write(b"after").unwrap();
    assert_eq!(recv(&mut inbox).await, "after");
    client.close().await;
    server.cut().await;
}

/// `broadcast` queues one frame for every connected peer.
pub async fn broadcast_reaches_every_peer<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut peers = Vec::new();
    for _ in 0..3 {
        let mut peer = raw(h, server.local_addr()).await;
        peer.write_all(b"hello\n").await.unwrap();
        read_frame(&mut peer).await;
        peers.push(peer);
    }
    assert_eq!(server.broadcast(b"news").unwrap(), 3);
    for peer in &mut peers {
        assert_eq!(read_frame(peer).await, "news");
    }
    assert!(matches!(
        server.broadcast(b"bad\n"),
        Err(WriteError::Encode { .. })
    ));
    server.cut().await;
}

/// `remote_addrs` lists exactly the open connections.
pub async fn remote_addrs_follow_connections<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut a = raw(h, server.local_addr()).await;
    let mut b = raw(h, server.local_addr()).await;
    for peer in [&mut a, &mut b] {
        peer.write_all(b"x\n").await.unwrap();
        read_frame(peer).await;
    }
    let mut listed = server.remote_addrs();
    listed.sort();
    let mut expected = vec![a.local_addr(), b.local_addr()];
    expected.sort();
    assert_eq!(listed, expected);
    a.shutdown().await.unwrap();
    next_close(&mut events).await;
    assert_eq!(server.remote_addrs(), vec![b.local_addr()]);
    server.cut().await;
}

/// Binding an address in use fails at once, naming it.
pub async fn bind_in_use_fails_with_address<H: Harness>(h: &H) {
    let first = echo_server(h, |b| b).await;
    let taken = first.local_addr();
    let err = echo(Server::builder(taken))
        .listen_on(h.binder())
        .await
        .expect_err("the address is taken");
    let BindError::Io { addr, source } = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(*addr, taken);
    assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&taken.to_string()));
    first.cut().await;
}

/// Dialing where nobody listens fails as refused, naming the address.
pub async fn connect_refused_fails_with_address<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let addr = server.local_addr();
    server.cut().await;
    let err = Client::builder(addr)
        .connect_with(h.connector())
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, ConnectError::Refused { addr: a } if a == addr),
        "{err}"
    );
}

/// Dialing an address that never answers fails after the connect timeout.
pub async fn connect_times_out<H: Harness>(h: &H) {
    let (addr, _guard) = h.black_hole().await;
    let after = Duration::from_millis(300);
    let err = timeout(
        PROMPT,
        Client::builder(addr)
            .connect_timeout(after)
            .connect_with(h.connector()),
    )
    .await
    .expect("the connect timeout fires")
    .expect_err("nobody answers");
    assert!(
        matches!(err, ConnectError::Timeout { addr: a, after: t } if a == addr && t == after),
        "{err}"
    );
}

/// A peer that sends nothing for the idle timeout is closed, with an error.
pub async fn idle_timeout_closes_silent_peer<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.idle_timeout(Duration::from_millis(300))).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    let (_, end) = read_to_end(&mut peer).await;
    end.unwrap();
    let err = next_error(&mut events, ConnErrorKind::IdleTimeout).await;
    assert_eq!(err.addr(), peer.local_addr());
    assert_eq!(
        next_close(&mut events).await.reason,
        CloseReason::IdleTimeout
    );
    server.cut().await;
}

/// A peer that trickles a frame fast enough to dodge the idle timeout is closed by
/// the frame timeout, no earlier than the timeout after its first byte; a
/// well-behaved peer is not.
pub async fn frame_timeout_closes_slow_trickler<H: Harness>(h: &H) {
    // A byte every 100 ms against a 1 s idle timeout: 900 ms of margin for a loaded
    // machine's late timers on real transports.
    let idle = Duration::from_millis(1000);
    let frame_timeout = Duration::from_millis(1500);
    let server = echo_server(h, |b| b.idle_timeout(idle).frame_timeout(frame_timeout)).await;
    let mut events = server.events();
    let mut slow = raw(h, server.local_addr()).await;
    let mut good = raw(h, server.local_addr()).await;
    // Before the first byte, so before the server's frame clock starts.
    let started = tokio::time::Instant::now();
    // One byte every 100 ms, never a delimiter, until the server closes the
    // connection (bounded: 10 s of bytes); the good peer sends whole frames.
    for i in 0..100 {
        if slow.write_all(b"x").await.is_err() {
            break;
        }
        good.write_all(format!("{i}\n").as_bytes()).await.unwrap();
        assert_eq!(read_frame(&mut good).await, format!("{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = next_error(&mut events, ConnErrorKind::FrameTimeout).await;
    assert_eq!(err.addr(), slow.local_addr());
    let closed = next_close(&mut events).await;
    assert_eq!(closed.reason, CloseReason::FrameTimeout);
    assert!(
        started.elapsed() >= frame_timeout,
        "closed after {:?}",
        started.elapsed()
    );
    server.cut().await;
}

/// When unfinished frames together pass the server's budget, the peer holding the
/// most is shed; the others keep their partial frames and finish them.
pub async fn partial_frame_budget_sheds_largest_holder<H: Harness>(h: &H) {
    // The budget counts the read buffers unfinished frames keep (8 KiB at least).
    let server = echo_server(h, |b| b.partial_frame_budget(40 * 1024)).await;
    let mut events = server.events();
    let mut big = raw(h, server.local_addr()).await;
    let mut small = raw(h, server.local_addr()).await;
    let mut last = raw(h, server.local_addr()).await;
    big.write_all(&[b'b'; 30 * 1024]).await.unwrap();
    small.write_all(&[b's'; 300]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    last.write_all(&[b'l'; 200]).await.unwrap();
    let err = next_error(&mut events, ConnErrorKind::Shed).await;
    assert_eq!(err.addr(), big.local_addr());
    assert!(
        matches!(err, chitchat_core::ConnError::Shed { held, budget: 40960, .. } if held >= 30 * 1024),
        "{err}"
    );
    assert_eq!(next_close(&mut events).await.reason, CloseReason::Shed);
    small.write_all(b"\n").await.unwrap();
    assert_eq!(read_frame(&mut small).await.len(), 300);
    last.write_all(b"\n").await.unwrap();
    assert_eq!(read_frame(&mut last).await.len(), 200);
    server.cut().await;
}

/// The idle timeout counts from the last read, not from the connect.
pub async fn idle_timeout_restarts_on_every_read<H: Harness>(h: &H) {
    let idle = Duration::from_millis(1000);
    let server = echo_server(h, |b| b.idle_timeout(idle)).await;
    let mut peer = raw(h, server.local_addr()).await;
    // Fifteen bytes 100 ms apart: 1.5 s in all, more than the idle timeout, and a
    // 900 ms margin for a loaded machine's late timers on real transports.
    for _ in 0..15 {
        tokio::time::sleep(idle / 10).await;
        peer.write_all(b"x").await.unwrap();
    }
    peer.write_all(b"\n").await.unwrap();
    assert_eq!(read_frame(&mut peer).await, "x".repeat(15));
    let (_, end) = read_to_end(&mut peer).await;
    end.unwrap();
    server.cut().await;
}

/// `set_read_timeout` changes the idle timeout of connections already open.
pub async fn read_timeout_can_change_while_running<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"x\n").await.unwrap();
    read_frame(&mut peer).await;
    // The new timeout applies at once, counted from the last read.
    server.set_idle_timeout(Some(Duration::from_millis(200)));
    let (_, end) = read_to_end(&mut peer).await;
    end.unwrap();
    assert_eq!(
        next_close(&mut events).await.reason,
        CloseReason::IdleTimeout
    );
    server.cut().await;
}

/// A peer that stops reading is dropped once output makes no progress for the
/// write timeout.
pub async fn write_timeout_drops_peer_that_stops_reading<H: Harness>(h: &H) {
    let server = echo_server(h, |b| {
        b.write_timeout(Duration::from_millis(300))
            .max_outbound(usize::MAX / 2)
    })
    .await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"hi\n").await.unwrap();
    read_frame(&mut peer).await;
    // More than any transport buffers (TCP on loopback takes a few MiB).
    let chunk = vec![b'z'; 60 * 1024];
    for _ in 0..1024 {
        if server.write_to(&peer.local_addr(), &chunk).is_err() {
            break;
        }
    }
    let err = next_error(&mut events, ConnErrorKind::WriteTimeout).await;
    assert_eq!(err.addr(), peer.local_addr());
    assert_eq!(
        next_close(&mut events).await.reason,
        CloseReason::WriteStalled
    );
    server.cut().await;
}

/// A handler burst beyond the outbound bound drops that peer at once.
pub async fn outbound_bound_drops_slow_consumer<H: Harness>(h: &H) {
    let server = serve(
        h,
        Server::builder(h.server_addr())
            .max_outbound(256 * 1024)
            .on_frame(|ctx, _| {
                let big = vec![b'z'; 60 * 1024];
                for _ in 0..10 {
                    if ctx.reply(&big).is_err() {
                        return;
                    }
                }
            }),
    )
    .await;
    let mut events = server.events();
    let bystander = echo_server(h, |b| b).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"flood me\n").await.unwrap();
    let err = next_error(&mut events, ConnErrorKind::OutboundFull).await;
    assert_eq!(err.addr(), peer.local_addr());
    assert_eq!(
        next_close(&mut events).await.reason,
        CloseReason::WriteStalled
    );
    let mut other = raw(h, bystander.local_addr()).await;
    other.write_all(b"ok\n").await.unwrap();
    assert_eq!(read_frame(&mut other).await, "ok");
    server.cut().await;
    bystander.cut().await;
}

/// A client's queue has a bound too; past it `write` is refused and the connection
/// stays up.
pub async fn client_write_refused_when_queue_full<H: Harness>(h: &H) {
    // The server side is a bare listener: it accepts and never reads.
    let mut listener = h
        .binder()
        .bind(&h.server_addr(), &BindOptions::default())
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let accept_and_sit = async {
        let (mut held, _) = poll_fn(|cx| listener.poll_accept(cx))
            .await
            .expect("accept");
        // An empty write completes any handshake (TLS) and sends nothing.
        poll_fn(|cx| held.poll_write(cx, b""))
            .await
            .expect("handshake");
        held
    };
    let ((client, _inbox), _held) = timeout(
        PROMPT,
        futures::future::join(
            client(h, addr, |b| b.max_outbound(256 * 1024)),
            accept_and_sit,
        ),
    )
    .await
    .expect("connect and accept in time");
    let chunk = vec![b'c'; 60 * 1024];
    let mut refused = None;
    // Bounded: 4096 chunks are far more than any transport buffers.
    for _ in 0..4096 {
        match client.try_write(&chunk) {
            Ok(()) => tokio::task::yield_now().await,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let peer = client.peer_addr();
    assert_eq!(
        refused,
        Some(WriteError::OutboundFull {
            peer,
            limit: 256 * 1024
        })
    );
    assert!(
        !client.is_closed(),
        "a full client queue does not close the connection"
    );
}

/// A frame larger than the outbound bound still goes out through an empty queue,
/// both ways: the bound limits backlog, not frame size.
pub async fn frame_larger_than_outbound_bound_fits_empty_queue<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.max_outbound(1024)).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b.max_outbound(1024)).await;
    let big = vec![b'x'; 10 * 1024];
    client.try_write(&big).unwrap();
    assert_eq!(recv(&mut inbox).await, big);
    client.close().await;
    server.cut().await;
}

/// Past `max_connections`, new peers are closed at once with a refusal event;
/// served peers are unaffected.
pub async fn max_connections_refuses_extra_peers<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.max_connections(2)).await;
    let mut events = server.events();
    let mut served = Vec::new();
    for _ in 0..2 {
        let mut peer = raw(h, server.local_addr()).await;
        peer.write_all(b"in\n").await.unwrap();
        read_frame(&mut peer).await;
        served.push(peer);
    }
    // Over TLS the refusal closes the session right after its handshake, so
    // connecting may fail.
    if let Ok(Ok(mut extra)) = timeout(
        PROMPT,
        RawPeer::connect(h.connector(), &server.local_addr()),
    )
    .await
    {
        let _ = extra.write_all(b"let me in\n").await;
        let (got, _) = read_to_end(&mut extra).await;
        assert_eq!(got, "", "a refused peer gets nothing");
    }
    let err = next_error(&mut events, ConnErrorKind::Refused).await;
    assert!(served.iter().all(|p| p.local_addr() != err.addr()), "{err}");
    assert_eq!(next_close(&mut events).await.reason, CloseReason::Refused);
    for peer in &mut served {
        peer.write_all(b"still\n").await.unwrap();
        assert_eq!(read_frame(peer).await, "still");
    }
    server.cut().await;
}

/// A handler panic closes that connection, is reported, and nothing else changes.
pub async fn handler_panic_closes_only_that_connection<H: Harness>(h: &H) {
    let server = serve(
        h,
        Server::builder(h.server_addr()).on_frame(|ctx, frame| {
            if frame == "boom" {
                panic!("handler exploded");
            }
            let _ = ctx.reply(&frame);
        }),
    )
    .await;
    let mut events = server.events();
    let mut victim = raw(h, server.local_addr()).await;
    let mut other = raw(h, server.local_addr()).await;
    victim.write_all(b"boom\n").await.unwrap();
    let (_, _) = read_to_end(&mut victim).await;
    match next_error(&mut events, ConnErrorKind::HandlerPanic).await {
        chitchat_core::ConnError::HandlerPanic { peer, message } => {
            assert_eq!(peer, victim.local_addr());
            assert_eq!(message, "handler exploded");
        }
        other => panic!("unexpected {other}"),
    }
    other.write_all(b"fine\n").await.unwrap();
    assert_eq!(read_frame(&mut other).await, "fine");
    server.cut().await;
}

/// Every connection yields exactly one close event, with its counters.
pub async fn one_close_event_per_connection_with_counters<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"ab\ncd\n").await.unwrap();
    peer.read_exact(6).await.unwrap();
    peer.shutdown().await.unwrap();
    let (_, end) = read_to_end(&mut peer).await;
    end.unwrap();
    let closed = next_close(&mut events).await;
    assert_eq!(closed.peer, peer.local_addr());
    assert_eq!(closed.reason, CloseReason::PeerEof);
    assert_eq!((closed.stats.frames_in, closed.stats.frames_out), (2, 2));
    assert_eq!((closed.stats.bytes_in, closed.stats.bytes_out), (6, 6));
    server.cut().await;
    let rest: Vec<ConnEvent> = events.collect().await;
    assert!(
        rest.iter().all(|e| e.as_closed().is_none()),
        "one close event only"
    );
}

/// `stats()` counts connections, traffic and errors by kind.
pub async fn stats_count_connections_traffic_and_errors<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b.max_frame_len(8).max_connections(2)).await;
    let mut events = server.events();
    let mut good = raw(h, server.local_addr()).await;
    let mut bad = raw(h, server.local_addr()).await;
    good.write_all(b"ab\ncd\n").await.unwrap();
    good.read_exact(6).await.unwrap();
    bad.write_all(b"far too long\n").await.unwrap();
    let _ = read_to_end(&mut bad).await;
    drop(bad);
    next_close(&mut events).await;
    // A closed connection holds its slot until its socket is released.
    until(|| server.connection_count() == 1).await;
    let mut extra = raw(h, server.local_addr()).await;
    // Over TLS a client's handshake is done before the server's (the listener
    // reads the client's last message after the client returned): wait until
    // `extra` holds its slot, or the third could take it first.
    until(|| server.connection_count() == 2).await;
    // Refused: one slot was free for `extra`.
    if let Ok(Ok(mut third)) = timeout(
        PROMPT,
        RawPeer::connect(h.connector(), &server.local_addr()),
    )
    .await
    {
        let _ = read_to_end(&mut third).await;
    }
    good.shutdown().await.unwrap();
    let _ = read_to_end(&mut good).await;
    drop(good);
    extra.shutdown().await.unwrap();
    let _ = read_to_end(&mut extra).await;
    drop(extra);
    let mut closes = 0;
    while closes < 3 {
        next_close(&mut events).await;
        closes += 1;
    }
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.refused, stats.open), (3, 1, 0));
    assert_eq!((stats.frames_in, stats.frames_out), (2, 2));
    assert_eq!(stats.bytes_out, 6);
    assert_eq!(stats.bytes_in, 6 + 13);
    assert_eq!(stats.errors.get(ConnErrorKind::FrameTooLong), 1);
    assert_eq!(stats.errors.get(ConnErrorKind::Refused), 1);
    assert_eq!(stats.errors.total(), 2);
    server.cut().await;
}

/// Nobody reads the event stream: errors pile up, the oldest are dropped and
/// counted, and serving goes on.
pub async fn undrained_events_never_block<H: Harness>(h: &H) {
    let mut config = chitchat_core::ServerConfig::default();
    config.event_capacity = 16;
    config.conn.frame.max_frame_len = 4;
    config.conn.oversize = OversizePolicy::SkipFrame;
    let server = echo_server(h, |b| b.config(config)).await;
    let events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    let errors = 2000;
    peer.write_all(&b"too long\n".repeat(errors)).await.unwrap();
    peer.write_all(b"ok\n").await.unwrap();
    assert_eq!(read_frame(&mut peer).await, "ok");
    assert_eq!(events.dropped(), errors as u64 - 16);
    server.cut().await;
}

/// A reset from the peer ends its connection with an i/o error naming it.
pub async fn peer_reset_is_reported<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut events = server.events();
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"x\n").await.unwrap();
    read_frame(&mut peer).await;
    let addr = peer.local_addr();
    peer.write_all(b"unfinished").await.unwrap();
    if !h.abort(peer.into_inner()) {
        server.cut().await;
        return; // no abortive close on this transport
    }
    let err = next_error(&mut events, ConnErrorKind::Io).await;
    assert_eq!(err.addr(), addr);
    let closed = next_close(&mut events).await;
    assert_eq!((closed.peer, closed.reason), (addr, CloseReason::PeerReset));
    server.cut().await;
}

/// `cut` ends every connection and task, and the address can be bound again at once.
pub async fn cut_frees_address_and_ends_everything<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let addr = server.local_addr();
    let mut peers = Vec::new();
    for _ in 0..5 {
        let mut peer = raw(h, addr).await;
        peer.write_all(b"x\n").await.unwrap();
        read_frame(&mut peer).await;
        peers.push(peer);
    }
    let report = timeout(PROMPT, server.cut()).await.expect("cut returns");
    assert_eq!(report.drained + report.forced, 5);
    assert_eq!(server.connection_count(), 0);
    for peer in &mut peers {
        let (_, _) = read_to_end(peer).await;
    }
    let again = echo(Server::builder(addr))
        .listen_on(h.binder())
        .await
        .expect("the address is free again");
    again.cut().await;
}

/// A graceful shutdown writes out queued replies before closing.
pub async fn graceful_shutdown_flushes_queued_replies<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let mut peer = raw(h, server.local_addr()).await;
    peer.write_all(b"x\n").await.unwrap();
    read_frame(&mut peer).await;
    let payload = vec![b'q'; 1000];
    for _ in 0..50 {
        server.write_to(&peer.local_addr(), &payload).unwrap();
    }
    let shutdown = server.shutdown(Duration::from_secs(5));
    let reader = async move {
        let (got, end) = read_to_end(&mut peer).await;
        end.unwrap();
        got.len() // dropping the peer here ends the server's lingering close
    };
    let (report, received) = tokio::join!(shutdown, reader);
    assert_eq!(received, 50 * 1001);
    assert_eq!((report.drained, report.forced), (1, 0));
}

/// The client learns when the server closes the connection.
pub async fn client_notices_server_close<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b).await;
    client.try_write(b"x").unwrap();
    recv(&mut inbox).await;
    server.close_remote(&client.local_addr()).unwrap();
    let closed = timeout(PROMPT, client.closed()).await.unwrap();
    assert_eq!(closed.reason, CloseReason::PeerEof);
    assert!(client.is_closed());
    server.cut().await;
}

/// A client can close itself from inside its own handler without deadlock.
pub async fn client_closes_from_its_own_handler<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let client = Client::builder(server.local_addr())
        .on_frame(|ctx, frame| {
            if frame == "bye" {
                ctx.close();
            }
        })
        .connect_with(h.connector())
        .await
        .unwrap();
    client.try_write(b"bye").unwrap();
    let closed = timeout(PROMPT, client.closed()).await.unwrap();
    assert_eq!(closed.reason, CloseReason::ClosedByHandler);
    server.cut().await;
}

/// Writing on a closed client is a typed error.
pub async fn client_write_after_close_fails<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let (client, _inbox) = client(h, server.local_addr(), |b| b).await;
    let peer = client.peer_addr();
    let closed = client.close().await;
    assert_eq!(closed.reason, CloseReason::ClosedLocally);
    assert_eq!(client.try_write(b"x"), Err(WriteError::Closed { peer }));
    assert_eq!(client.flush().await, Ok(()));
    server.cut().await;
}

/// `flush` returns once everything queued is handed to the transport.
pub async fn client_flush_waits_until_written<H: Harness>(h: &H) {
    let server = echo_server(h, |b| b).await;
    let (client, mut inbox) = client(h, server.local_addr(), |b| b).await;
    for i in 0..100 {
        client.try_write(format!("{i}").as_bytes()).unwrap();
    }
    timeout(PROMPT, client.flush()).await.unwrap().unwrap();
    for i in 0..100 {
        assert_eq!(recv(&mut inbox).await, format!("{i}"));
    }
    client.close().await;
    server.cut().await;
}
