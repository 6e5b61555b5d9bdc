//! The reliability suite on the in-memory network, where time matters (slowloris
//! peers, clients of silent or failing servers, partitions and resets, any
//! segmentation, and a minimal reproduction of the partial-frame budget): paused tokio
//! time, so 5-second deadlines cost no wall time and every figure is exact, and
//! every fault comes from a seed, so every run can be replayed.
//!
//! Each test states its pass criterion in its doc comment and asserts it; each is
//! bounded in count and in (virtual and real) time. Run with `--nocapture` to see
//! the measured figures, one `[reliability]` line each: RELIABILITY.md records them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chitchat_core::{
    Addr, BindOptions, Binder, CloseReason, ConnError, ConnErrorKind, ConnEvent, ConnectError,
    Connection, Connector, Events, Keepalive, Listener, ReadContext, ReceiveRate, WriteError,
};
use chitchat_testkit::{
    Host, LinkConfig, NetConfig, Network, RawPeer, SimConn, SimListener, TraceEntry,
};
use chitchat_tokio::{Client, Server, ServerBuilder};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Prints a measured figure for RELIABILITY.md (`--nocapture` shows it).
fn figure(what: &str, text: impl std::fmt::Display) {
    println!("[reliability] {what}: {text}");
}

fn echo<S: Send + Sync + 'static>(builder: ServerBuilder<S>) -> ServerBuilder<S> {
    builder.on_frame(|ctx, frame| {
        let _ = ctx.reply(&frame);
    })
}

/// Everything a server or client reports, with the (virtual) time it was seen.
type Log = Arc<Mutex<Vec<(Instant, ConnEvent)>>>;

fn record(mut stream: Events<ConnEvent>) -> Log {
    let log = Log::default();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            sink.lock().unwrap().push((Instant::now(), event));
        }
    });
    log
}

fn errors(log: &Log) -> Vec<ConnError> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| e.as_error().cloned())
        .collect()
}

/// What each connection shed over the partial-frame budget held, in shed order.
fn shed_sizes(log: &Log) -> Vec<usize> {
    errors(log)
        .iter()
        .filter_map(|e| match e {
            ConnError::Shed { held, .. } => Some(*held),
            _ => None,
        })
        .collect()
}

fn closes(log: &Log) -> Vec<(Instant, chitchat_core::CloseEvent)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|(at, e)| e.as_closed().cloned().map(|c| (*at, c)))
        .collect()
}

/// 200 slowloris peers each send one byte every 0.9 s, never a delimiter,
/// against a 1 s idle timeout and a 5 s frame deadline, while 20 good peers send a
/// frame every 0.3 s.
///
/// Pass: every slowloris connection is closed with `FrameTimeout` naming it (none
/// by the idle timeout, which it dodges) within 5 s + 1 s of its first byte; the
/// good peers get all their 30 echoes each and none of them is closed or named in
/// an error.
#[tokio::test(start_paused = true)]
async fn slowloris_peers_are_closed_by_the_frame_deadline() {
    const SLOW: usize = 200;
    const GOOD: usize = 20;
    let net = Network::new(3);
    let (server_host, bad, good) = (
        net.host([10, 0, 0, 1]),
        net.host([10, 0, 0, 2]),
        net.host([10, 0, 0, 3]),
    );
    let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
        .idle_timeout(secs(1))
        .frame_timeout(secs(5))
        .listen_on(&server_host)
        .await
        .unwrap();
    let addr = server.local_addr();
    let log = record(server.events());
    let began = Instant::now();

    let mut slow = JoinSet::new();
    for _ in 0..SLOW {
        let bad = bad.clone();
        slow.spawn(async move {
            let mut peer = RawPeer::connect(&bad, &addr).await.unwrap();
            let local = peer.local_addr();
            let first = Instant::now();
            let mut sent = 0;
            // Bounded: 20 bytes (18 s) at most; the deadline ends it long before.
            for _ in 0..20 {
                if peer.write_all(b"x").await.is_err() {
                    break;
                }
                sent += 1;
                sleep(ms(900)).await;
            }
            (local, first, sent)
        });
    }
    let mut good_peers = JoinSet::new();
    for g in 0..GOOD {
        let good = good.clone();
        good_peers.spawn(async move {
            let mut peer = RawPeer::connect(&good, &addr).await.unwrap();
            let local = peer.local_addr();
            for i in 0..30 {
                let frame = format!("good {g} frame {i}");
                peer.write_all(format!("{frame}\n").as_bytes())
                    .await
                    .unwrap();
                let echo = peer.read_frame(b'\n').await.unwrap().unwrap();
                assert_eq!(echo, frame);
                sleep(ms(300)).await;
            }
            (local, peer)
        });
    }
    let mut first_byte = HashMap::new();
    let mut bytes_sent = Vec::new();
    while let Some(r) = slow.join_next().await {
        let (local, first, sent) = r.unwrap();
        first_byte.insert(local, first);
        bytes_sent.push(sent);
    }
    let mut good_addrs = HashSet::new();
    let mut kept = Vec::new();
    while let Some(r) = good_peers.join_next().await {
        let (local, peer) = r.unwrap();
        good_addrs.insert(local);
        kept.push(peer); // still connected: checked below
    }

    let mut slowest = Duration::ZERO;
    let mut fastest = Duration::MAX;
    let closes = closes(&log);
    for (at, close) in &closes {
        assert!(!good_addrs.contains(&close.peer), "a good peer was closed");
        assert_eq!(close.reason, CloseReason::FrameTimeout, "{close:?}");
        let took = *at - first_byte[&close.peer];
        slowest = slowest.max(took);
        fastest = fastest.min(took);
    }
    assert_eq!(closes.len(), SLOW, "every slowloris is closed");
    let errors = errors(&log);
    assert_eq!(errors.len(), SLOW, "{errors:?}");
    for err in &errors {
        assert!(
            matches!(err, ConnError::FrameTimeout { peer, after } if first_byte.contains_key(peer) && *after == secs(5)),
            "{err}"
        );
    }
    figure(
        "slowloris peers",
        format_args!(
            "{SLOW} slowloris peers (1 byte / 0.9 s; idle timeout 1 s, frame deadline 5 s): all closed with FrameTimeout \
             {fastest:?}..{slowest:?} after their first byte (each sent {}..{} bytes), none by the idle timeout; \
             {GOOD} good peers echoed {} frames, 0 lost, none closed; virtual time {:?}",
            bytes_sent.iter().min().unwrap(),
            bytes_sent.iter().max().unwrap(),
            GOOD * 30,
            began.elapsed()
        ),
    );
    assert!(slowest <= secs(6), "{slowest:?}");
    assert_eq!(server.connection_count(), GOOD);
    server.cut().await;
}

/// A server that accepts and never answers.
///
/// Pass: a client with a 2 s idle timeout that sent a request is closed with
/// `IdleTimeout` naming the server exactly 2 s (virtual) after its request, and
/// its handler got nothing.
#[tokio::test(start_paused = true)]
async fn client_of_a_silent_server_times_out_as_configured() {
    let net = Network::new(10);
    let (server_host, client_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
    let addr: Addr = "10.0.0.1:7000".parse().unwrap();
    let mut listener = server_host.bind(&addr, &BindOptions::default()).unwrap();
    let (tx, mut inbox) = unbounded_channel::<Bytes>();
    let client = Client::with_state(addr, tx)
        .on_frame(|ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>, frame| {
            let _ = ctx.state().send(frame.into_bytes());
        })
        .idle_timeout(secs(2))
        .connect_with(&client_host)
        .await
        .unwrap();
    let (_held, _) = listener.accept().await.unwrap(); // accepted, never read
    let log = record(client.events());
    let sent = Instant::now();
    client.try_write(b"anybody there?").unwrap();
    let closed = client.closed().await;
    let after = sent.elapsed();
    tokio::task::yield_now().await;
    assert_eq!(closed.reason, CloseReason::IdleTimeout);
    let errors = errors(&log);
    assert!(
        matches!(errors[..], [ConnError::IdleTimeout { peer, after }] if peer == addr && after == secs(2)),
        "{errors:?}"
    );
    assert!(inbox.try_recv().is_err(), "nothing delivered");
    figure(
        "client of a silent server (in-memory)",
        format_args!(
            "client with a 2 s idle timeout closed with IdleTimeout {after:?} after its request"
        ),
    );
    assert_eq!(after, secs(2));
}

/// A server that closes in the middle of its reply, with a
/// FIN and with a reset, over a link that delivers 3 bytes per read.
///
/// Pass: FIN: the whole frame before it is delivered, then `TruncatedFrame` naming
/// the server with the partial reply's length, close `PeerEof`. Reset: `Io` error
/// naming the server, close `PeerReset`. The partial frame is never delivered.
#[tokio::test(start_paused = true)]
async fn client_of_a_server_closing_mid_frame_reports_a_typed_error() {
    for abortive in [false, true] {
        let mut config = NetConfig::default();
        config.link = LinkConfig::default().latency(ms(5)).chunking(3);
        let net = Network::with_config(11, config);
        let (server_host, client_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
        let addr: Addr = "10.0.0.1:7000".parse().unwrap();
        let mut listener = server_host.bind(&addr, &BindOptions::default()).unwrap();
        let server = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut peer = RawPeer::new(conn);
            peer.read_frame(b'\n').await.unwrap();
            peer.write_all(b"whole\npartial rep").await.unwrap();
            if abortive {
                // Let the bytes arrive first: a reset drops what is still in flight.
                sleep(ms(100)).await;
                peer.into_inner().abort();
            } else {
                peer.shutdown().await.unwrap();
                let _ = peer.read_to_end().await;
            }
        });
        let (tx, mut inbox) = unbounded_channel::<Bytes>();
        let client = Client::with_state(addr, tx)
            .on_frame(|ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>, frame| {
                let _ = ctx.state().send(frame.into_bytes());
            })
            .connect_with(&client_host)
            .await
            .unwrap();
        let log = record(client.events());
        client.try_write(b"hello").unwrap();
        let closed = client.closed().await;
        server.await.unwrap();
        tokio::task::yield_now().await;
        let errors = errors(&log);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].addr(), addr);
        assert_eq!(inbox.recv().await.unwrap(), "whole");
        assert!(
            inbox.try_recv().is_err(),
            "the partial frame is not delivered"
        );
        let what = if abortive {
            assert_eq!(closed.reason, CloseReason::PeerReset);
            assert_eq!(errors[0].kind(), ConnErrorKind::Io);
            "reset"
        } else {
            assert_eq!(closed.reason, CloseReason::PeerEof);
            assert!(
                matches!(errors[0], ConnError::TruncatedFrame { len: 11, .. }),
                "{}",
                errors[0]
            );
            "FIN"
        };
        figure(
            "client of a server closing mid-frame (in-memory)",
            format_args!(
                "{what}: client got \"whole\", then reported {} and closed with {:?}",
                errors[0], closed.reason
            ),
        );
    }
}

/// Dialing an address that is black-holed (its host cut off,
/// so the handshake never completes).
///
/// Pass: the connect fails with `ConnectError::Timeout` naming the address and the
/// configured 3 s, exactly 3 s (virtual) after it began.
#[tokio::test(start_paused = true)]
async fn dial_to_a_black_holed_address_times_out_as_configured() {
    let net = Network::new(12);
    let (hole, client_host) = (net.host([10, 0, 0, 99]), net.host([10, 0, 0, 2]));
    let addr: Addr = "10.0.0.99:7000".parse().unwrap();
    let _listener = hole.bind(&addr, &BindOptions::default()).unwrap();
    net.partition(&hole, &client_host);
    let began = Instant::now();
    let err = Client::builder(addr)
        .connect_timeout(secs(3))
        .connect_with(&client_host)
        .await
        .unwrap_err();
    let after = began.elapsed();
    assert!(
        matches!(err, ConnectError::Timeout { addr: a, after } if a == addr && after == secs(3)),
        "{err}"
    );
    figure(
        "dial to a black hole (in-memory)",
        format_args!("dial with a 3 s connect timeout failed with \"{err}\" after {after:?}"),
    );
    assert_eq!(after, secs(3));
}

/// Frames the server received, by peer.
type Received = Mutex<HashMap<Addr, Vec<Bytes>>>;

/// 1000 clients on 10 hosts each send 20 frames (one per 400 ms) to an
/// echo server with a 3 s idle timeout, over links with 1-3 ms delay that deliver
/// at most 16 bytes per read, while the network: cuts host 0 off for 5 s, resets
/// every connection of host 1, cuts host 2 off for 1 s, cuts host 3's outgoing
/// direction for 0.5 s, and gives host 4 one-byte reads and 20 ms latency.
///
/// Pass: for every client, the frames the server handled are a prefix of what it
/// sent, and the frames its handler got are a prefix of those (each exactly once,
/// in order); hosts 2-9 get all 20 frames back; every failure is a typed error of
/// the kind its fault explains (server: `IdleTimeout` for host 0, `Io` reset for
/// host 1; clients: `Io` resets only), and nothing else fails.
#[tokio::test(start_paused = true)]
async fn echo_under_partitions_resets_and_chunking_delivers_exactly_once_in_order() {
    const HOSTS: usize = 10;
    const PER_HOST: usize = 100;
    const FRAMES: usize = 20;
    let mut config = NetConfig::default();
    config.link = LinkConfig::default()
        .latency(ms(1))
        .jitter(ms(2))
        .chunking(16);
    let net = Network::with_config(11, config);
    let server_host = net.host([10, 0, 0, 1]);
    let hosts: Vec<Host> = (0..HOSTS).map(|h| net.host([10, 0, 1, h as u8])).collect();
    net.set_pair(
        &server_host,
        &hosts[4],
        LinkConfig::default().latency(ms(20)).chunking(1),
    );
    let server = Server::with_state(
        "10.0.0.1:7000".parse::<Addr>().unwrap(),
        Received::default(),
    )
    .on_frame(|ctx, frame| {
        ctx.state()
            .lock()
            .unwrap()
            .entry(ctx.peer_addr())
            .or_default()
            .push(Bytes::copy_from_slice(&frame));
        let _ = ctx.reply(&frame);
    })
    .idle_timeout(secs(3))
    .listen_on(&server_host)
    .await
    .unwrap();
    let addr = server.local_addr();
    let server_log = record(server.events());
    let began = Instant::now();

    let mut clients = JoinSet::new();
    for c in 0..HOSTS * PER_HOST {
        let host = hosts[c % HOSTS].clone();
        clients.spawn(async move {
            let (tx, inbox) = unbounded_channel::<Bytes>();
            let client = Client::with_state(addr, tx)
                .on_frame(|ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>, frame| {
                    let _ = ctx.state().send(frame.into_bytes());
                })
                .connect_with(&host)
                .await
                .unwrap();
            let log = record(client.events());
            let mut sent = Vec::new();
            for i in 0..FRAMES {
                let frame = format!("client {c} frame {i} {}", "z".repeat((c + i) % 40));
                match client.try_write(frame.as_bytes()) {
                    Ok(()) => sent.push(Bytes::from(frame)),
                    Err(WriteError::Closed { .. }) => break, // typed, and final
                    Err(other) => panic!("client {c}: {other}"),
                }
                sleep(ms(400)).await;
            }
            (c % HOSTS, client, inbox, log, sent)
        });
    }
    // The faults, at fixed virtual times while the clients send.
    sleep_until(began + ms(300)).await;
    net.partition(&server_host, &hosts[0]);
    sleep_until(began + ms(500)).await;
    net.reset(&server_host, &hosts[1]);
    sleep_until(began + ms(700)).await;
    net.partition(&server_host, &hosts[2]);
    sleep_until(began + ms(900)).await;
    net.partition_oneway(&hosts[3], &server_host);
    sleep_until(began + ms(1400)).await;
    net.heal_oneway(&hosts[3], &server_host);
    sleep_until(began + ms(1700)).await;
    net.heal(&server_host, &hosts[2]);
    sleep_until(began + ms(5300)).await;
    net.heal(&server_host, &hosts[0]);
    sleep_until(began + secs(10)).await;

    let mut by_host: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    let mut client_errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut client_closes: BTreeMap<String, usize> = BTreeMap::new();
    let mut delivered_total = 0;
    let mut open_clients = Vec::new();
    let received = server.state();
    while let Some(r) = clients.join_next().await {
        let (host, client, mut inbox, log, sent) = r.unwrap();
        let local = client.local_addr();
        let handled = received
            .lock()
            .unwrap()
            .get(&local)
            .cloned()
            .unwrap_or_default();
        let mut got = Vec::new();
        while let Ok(frame) = inbox.try_recv() {
            got.push(frame);
        }
        assert!(
            sent.starts_with(&handled),
            "client {local}: server handled a non-prefix"
        );
        assert!(
            handled.starts_with(&got),
            "client {local}: got a non-prefix back"
        );
        if host >= 2 {
            assert_eq!(
                got.len(),
                FRAMES,
                "client {local} on host {host} lost frames"
            );
        }
        delivered_total += got.len();
        let entry = by_host.entry(host).or_default();
        entry.0 += sent.len();
        entry.1 += handled.len();
        entry.2 += got.len();
        for err in errors(&log) {
            let kind = match &err {
                ConnError::Io { source, .. } if host <= 1 => source.kind(),
                _ => panic!("client {local} on host {host}: {err}"),
            };
            assert!(
                matches!(
                    kind,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "client {local} on host {host}: {err}"
            );
            *client_errors
                .entry(format!("host {host} Io({kind:?})"))
                .or_default() += 1;
        }
        if client.is_closed() {
            let reason = timeout(secs(1), client.closed()).await.unwrap().reason;
            assert!(
                host <= 1,
                "client {local} on host {host} closed: {reason:?}"
            );
            *client_closes
                .entry(format!("host {host} {reason:?}"))
                .or_default() += 1;
        } else {
            open_clients.push(client);
        }
    }
    let mut server_errors: BTreeMap<String, usize> = BTreeMap::new();
    for err in errors(&server_log) {
        let host = err.addr().as_inet().unwrap().ip();
        let host = hosts.iter().position(|h| h.ip() == host).unwrap();
        let expected = match host {
            0 => err.kind() == ConnErrorKind::IdleTimeout,
            1 => {
                matches!(&err, ConnError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionReset)
            }
            _ => false,
        };
        assert!(expected, "server error for host {host}: {err}");
        *server_errors
            .entry(format!("host {host} {:?}", err.kind()))
            .or_default() += 1;
    }
    figure(
        "partitions, resets and chunking",
        format_args!(
            "{} clients x {FRAMES} frames: (sent, handled, echoed) by host {by_host:?}; {delivered_total} echoes delivered, \
             each exactly once and in order; server errors {server_errors:?}; client errors {client_errors:?}; \
             client closes {client_closes:?}; {} clients untouched",
            HOSTS * PER_HOST,
            open_clients.len()
        ),
    );
    assert_eq!(open_clients.len(), (HOSTS - 2) * PER_HOST);
    for client in &open_clients {
        client.close().await;
    }
    server.cut().await;
}

/// A connection whose read sizes, write sizes and spurious `Pending`s all come
/// from a seed, as h2's fuzz harness drives its I/O: the engine must give the
/// same frames whatever the segmentation and whenever it is made to wait.
struct Chaos<C> {
    inner: C,
    rng: ChaCha8Rng,
    /// Chance in 1000 that a call returns `Pending` (waking at once) instead.
    pending: u32,
}

impl<C> Chaos<C> {
    fn new(inner: C, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pending = rng.gen_range(0..500);
        Chaos {
            inner,
            rng,
            pending,
        }
    }

    /// A wake-up point chosen by the seed: pretend we must wait, and wake at once.
    fn waits(&mut self, cx: &Context<'_>) -> bool {
        let wait = self.rng.gen_range(0..1000) < self.pending;
        if wait {
            cx.waker().wake_by_ref();
        }
        wait
    }

    /// A size in `1..=max`, log-uniform: single bytes as likely as large runs.
    fn size(&mut self, max: usize) -> usize {
        let bits = self.rng.gen_range(0..=16u32);
        self.rng.gen_range(1..=max.clamp(1, 1 << bits))
    }
}

impl<C: Connection> Connection for Chaos<C> {
    fn local_addr(&self) -> io::Result<Addr> {
        self.inner.local_addr()
    }

    fn peer_addr(&self) -> io::Result<Addr> {
        self.inner.peer_addr()
    }

    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.waits(cx) {
            return Poll::Pending;
        }
        self.inner.poll_read_ready(cx)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if self.waits(cx) {
            return Poll::Pending;
        }
        let spare = buf.capacity() - buf.len();
        let mut part = BytesMut::with_capacity(self.size(spare.max(1)));
        let n = ready!(self.inner.poll_read(cx, &mut part))?;
        buf.extend_from_slice(&part[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.waits(cx) {
            return Poll::Pending;
        }
        let n = self.size(buf.len());
        self.inner.poll_write(cx, &buf[..n.min(buf.len())])
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.waits(cx) {
            return Poll::Pending;
        }
        self.inner.poll_shutdown(cx)
    }
}

/// Binds [`Chaos`] listeners on a host: each accepted connection gets its own seed.
struct ChaosBinder {
    host: Host,
    seed: u64,
}

struct ChaosListener {
    inner: SimListener,
    seeds: ChaCha8Rng,
}

impl Binder for ChaosBinder {
    type Listener = ChaosListener;

    fn bind(&self, addr: &Addr, options: &BindOptions) -> io::Result<ChaosListener> {
        Ok(ChaosListener {
            inner: self.host.bind(addr, options)?,
            seeds: ChaCha8Rng::seed_from_u64(self.seed),
        })
    }
}

impl Listener for ChaosListener {
    type Conn = Chaos<SimConn>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Chaos<SimConn>, Addr)>> {
        let (conn, peer) = ready!(self.inner.poll_accept(cx))?;
        Poll::Ready(Ok((Chaos::new(conn, self.seeds.gen()), peer)))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.inner.local_addr()
    }
}

/// Dials [`Chaos`] connections from a host.
struct ChaosConnector {
    host: Host,
    seed: u64,
}

impl Connector for ChaosConnector {
    type Conn = Chaos<SimConn>;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<Chaos<SimConn>>> + Send {
        let seed = self.seed;
        let dial = self.host.connect(addr);
        async move { Ok(Chaos::new(dial.await?, seed)) }
    }
}

/// Frames per seed of the segmentation runs.
const CHAOS_FRAMES: usize = 1000;

/// One segmentation run: an echo server and a client, both on [`Chaos`] connections,
/// exchange `CHAOS_FRAMES` frames whose sizes, bursts and pauses, and whose links'
/// window, chunking and delays, all come from `seed`. Returns the network's trace,
/// or what went wrong.
fn chaos_run(seed: u64) -> Result<Vec<TraceEntry>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut knobs = ChaCha8Rng::seed_from_u64(seed);
        let link = LinkConfig::default()
            .latency(ms(knobs.gen_range(0..3)))
            .jitter(ms(knobs.gen_range(0..3)))
            .chunking(knobs.gen_range(1..=256));
        let mut config = NetConfig::default();
        config.buffer_size = knobs.gen_range(1..=64 * 1024);
        config.link = link;
        let net = Network::with_config(seed, config);
        let server_host = net.host([10, 0, 0, 1]);
        let binder = ChaosBinder {
            host: server_host,
            seed: knobs.gen(),
        };
        let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
            .listen_on(&binder)
            .await
            .map_err(|e| e.to_string())?;
        let connector = ChaosConnector {
            host: net.host([10, 0, 0, 2]),
            seed: knobs.gen(),
        };
        let (tx, mut inbox) = unbounded_channel::<Bytes>();
        let client = Client::with_state(server.local_addr(), tx)
            .on_frame(|ctx: &mut dyn ReadContext<UnboundedSender<Bytes>>, frame| {
                let _ = ctx.state().send(frame.into_bytes());
            })
            .connect_with(&connector)
            .await
            .map_err(|e| e.to_string())?;
        let frame = |i: usize, pad: usize| format!("{seed}:{i}:{}", "f".repeat(pad));
        let pads: Vec<usize> = (0..CHAOS_FRAMES)
            .map(|_| {
                let bits = knobs.gen_range(0..=8u32);
                knobs.gen_range(0..1usize << bits)
            })
            .collect();
        let mut i = 0;
        while i < CHAOS_FRAMES {
            let burst = knobs.gen_range(1..=64);
            for _ in 0..burst.min(CHAOS_FRAMES - i) {
                match client.try_write(frame(i, pads[i]).as_bytes()) {
                    Ok(()) => i += 1,
                    Err(WriteError::OutboundFull { .. }) => {
                        client.flush().await.map_err(|e| e.to_string())?;
                    }
                    Err(err) => return Err(format!("write {i}: {err}")),
                }
            }
            match knobs.gen_range(0..3) {
                0 => tokio::task::yield_now().await,
                1 => sleep(Duration::from_micros(knobs.gen_range(0..3000))).await,
                _ => {}
            }
        }
        for (i, &pad) in pads.iter().enumerate() {
            let got = timeout(secs(600), inbox.recv())
                .await
                .map_err(|_| format!("frame {i} never came back"))?
                .ok_or_else(|| format!("client closed before frame {i}"))?;
            if got != frame(i, pad) {
                return Err(format!("frame {i} came back altered or out of order"));
            }
        }
        if inbox.try_recv().is_ok() {
            return Err("a frame came back twice".to_owned());
        }
        client.close().await;
        server.cut().await;
        Ok(net.trace())
    })
}

/// Segmentation and wake-ups chosen by the input: for each of 1000 seeds,
/// 1000 frames echoed over connections whose read sizes, write sizes, spurious
/// `Pending`s, window, chunking and delays all come from the seed (both ends run
/// the engine).
///
/// Pass: for every seed, every frame comes back exactly once, intact, in order; a
/// seed replays exactly (two runs of the same seed record the same trace, checked
/// for three seeds). `RELIABILITY_SEED=n` runs one seed; `RELIABILITY_SEEDS=n`
/// sets how many.
#[test]
fn any_segmentation_and_wake_up_order_delivers_every_frame_once_in_order() {
    let seeds: Vec<u64> = match std::env::var("RELIABILITY_SEED") {
        Ok(seed) => vec![seed.parse().expect("RELIABILITY_SEED is a number")],
        Err(_) => {
            let n =
                std::env::var("RELIABILITY_SEEDS").map_or(1000, |n| n.parse().expect("a number"));
            (0..n).collect()
        }
    };
    let began = std::time::Instant::now();
    // Each seed runs on its own single-threaded runtime: spread them over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let failures: Vec<(u64, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = &seeds;
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .filter_map(|&seed| chaos_run(seed).err().map(|e| (seed, e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let took = began.elapsed();
    let replays = seeds.iter().take(3).copied().collect::<Vec<_>>();
    for &seed in &replays {
        let first = chaos_run(seed);
        let second = chaos_run(seed);
        assert!(
            first.is_ok() && first == second,
            "seed {seed} does not replay"
        );
    }
    figure(
        "any segmentation and wake-up order",
        format_args!(
            "{} seeds x {CHAOS_FRAMES} frames ({} frames) with seeded read/write sizes, spurious Pendings, windows, \
             chunking and delays: {} failed; replay of seeds {replays:?} gave identical traces; {took:?} on {threads} threads",
            seeds.len(),
            seeds.len() * CHAOS_FRAMES,
            failures.len()
        ),
    );
    assert!(
        failures.is_empty(),
        "failed seeds (replay one with RELIABILITY_SEED=n cargo test -p chitchat-testkit --test reliability_sim any_segmentation): {failures:?}"
    );
}

/// The partial-frame budget, holders arriving at the same instant: five peers send 290, 250, 260,
/// 270 and 280 bytes of unfinished frames at once to a server whose budget holds
/// three read buffers. A shed peer counts as gone from the moment it is told, so
/// the reads that pass the budget while it is still closing shed the next largest,
/// and nothing stays over. (This once failed: one shed at a time left the excess
/// that came in meanwhile held for good.)
///
/// Pass: exactly two shed, three kept.
#[tokio::test(start_paused = true)]
async fn partial_frame_budget_holds_when_holders_arrive_at_once() {
    let net = Network::new(14);
    let (server_host, client_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
    let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
        // Each unfinished frame keeps one 8 KiB read buffer: room for three.
        .partial_frame_budget(3 * 8192)
        .listen_on(&server_host)
        .await
        .unwrap();
    let log = record(server.events());
    let mut peers = Vec::new();
    for len in [290, 250, 260, 270, 280] {
        let peer = RawPeer::connect(&client_host, &server.local_addr())
            .await
            .unwrap();
        peers.push((len, peer));
    }
    sleep(ms(10)).await; // every connection accepted
    for (len, peer) in &mut peers {
        peer.write_all(&vec![b'p'; *len]).await.unwrap();
    }
    sleep(secs(1)).await;
    let held: HashMap<Addr, usize> = peers
        .iter()
        .map(|(len, p)| (p.local_addr(), *len))
        .collect();
    let kept: Vec<usize> = server.remote_addrs().iter().map(|a| held[a]).collect();
    let shed = shed_sizes(&log);
    figure(
        "partial-frame budget, holders at once (in-memory)",
        format_args!(
            "budget 24 KiB, five holders at once (one 8 KiB buffer each): shed {shed:?}, kept {}",
            kept.len()
        ),
    );
    assert_eq!(
        kept.len(),
        3,
        "kept within the budget, and no more shed than needed"
    );
    assert_eq!(shed, [8192, 8192]);
    server.cut().await;
}

/// Four peers each send 60 KiB of a frame they never finish, under the default
/// 64 KiB frame limit and a partial-frame budget just short of four buffers of
/// 64 KiB and one byte: the most a frame under the limit needs before it ends or
/// is refused. (Read buffers that grew by doubling held 120 KiB for such a frame:
/// two of the four were shed.)
///
/// Pass: one shed, holding exactly 64 KiB and one byte; three kept.
#[tokio::test(start_paused = true)]
async fn an_unfinished_frame_holds_no_more_buffer_than_the_frame_limit_needs() {
    const FRAME_ROOM: usize = 64 * 1024 + 1;
    let net = Network::new(15);
    let (server_host, client_host) = (net.host([10, 0, 0, 1]), net.host([10, 0, 0, 2]));
    let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
        .partial_frame_budget(4 * FRAME_ROOM - 1)
        .listen_on(&server_host)
        .await
        .unwrap();
    let log = record(server.events());
    let mut peers = Vec::new();
    for _ in 0..4 {
        let peer = RawPeer::connect(&client_host, &server.local_addr())
            .await
            .unwrap();
        peers.push(peer);
    }
    sleep(ms(10)).await; // every connection accepted
    for peer in &mut peers {
        peer.write_all(&vec![b'p'; 60 * 1024]).await.unwrap();
        sleep(ms(10)).await; // one holder at a time
    }
    sleep(secs(1)).await;
    let shed = shed_sizes(&log);
    let kept = server.remote_addrs().len();
    figure(
        "unfinished 60 KiB frames (in-memory)",
        format_args!("budget 4 x 64 KiB + 3 B, four holders: shed {shed:?}, kept {kept}"),
    );
    assert_eq!(shed, [FRAME_ROOM]);
    assert_eq!(kept, 3);
    server.cut().await;
}

/// Peers that vanish without a FIN or a reset (their host cut off in both
/// directions, as when a cable is pulled), against a server with the default
/// settings and against one with keepalive off.
///
/// Pass: with the defaults, every vanished peer is closed with `PeerVanished` and an
/// `Io` error (`TimedOut`) naming it, `Keepalive::default().dead_after()` (110 s)
/// after the cut, long before the 300 s idle timeout; with keepalive off it is held
/// until the idle timeout, 300 s after its last byte. A peer on another host echoes
/// a frame every 10 s throughout and is never closed.
#[tokio::test(start_paused = true)]
async fn vanished_peers_are_closed_by_keepalive_before_the_idle_timeout() {
    const GONE: usize = 3;
    for keepalive in [Some(Keepalive::default()), None] {
        let net = Network::new(11);
        let (server_host, gone, good) = (
            net.host([10, 0, 0, 1]),
            net.host([10, 0, 0, 2]),
            net.host([10, 0, 0, 3]),
        );
        let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
            .keepalive(keepalive)
            .listen_on(&server_host)
            .await
            .unwrap();
        let addr = server.local_addr();
        let log = record(server.events());
        let mut vanished = Vec::new();
        let mut last_byte = Instant::now();
        for _ in 0..GONE {
            let mut peer = RawPeer::connect(&gone, &addr).await.unwrap();
            peer.write_all(b"hi\n").await.unwrap();
            last_byte = Instant::now();
            assert_eq!(peer.read_frame(b'\n').await.unwrap().unwrap(), "hi");
            vanished.push(peer);
        }
        let gone_addrs: HashSet<Addr> = vanished.iter().map(RawPeer::local_addr).collect();
        let mut honest = RawPeer::connect(&good, &addr).await.unwrap();
        net.partition([10, 0, 0, 1], [10, 0, 0, 2]);
        let cut = Instant::now();

        // Bounded: 32 frames, 320 s of virtual time.
        for i in 0..32 {
            let frame = format!("still here {i}");
            honest
                .write_all(format!("{frame}\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(honest.read_frame(b'\n').await.unwrap().unwrap(), frame);
            sleep(secs(10)).await;
        }

        let expected = match keepalive {
            Some(keepalive) => cut + keepalive.dead_after(),
            None => last_byte + chitchat_core::DEFAULT_SERVER_IDLE_TIMEOUT,
        };
        let closes = closes(&log);
        assert_eq!(closes.len(), GONE, "{closes:?}");
        for (at, close) in &closes {
            assert!(gone_addrs.contains(&close.peer), "{close:?}");
            let want = if keepalive.is_some() {
                CloseReason::PeerVanished
            } else {
                CloseReason::IdleTimeout
            };
            assert_eq!(close.reason, want);
            assert!(
                *at >= expected && *at <= expected + secs(1),
                "closed {:?} after the cut, expected {:?}",
                *at - cut,
                expected - cut
            );
        }
        for err in errors(&log) {
            let named = gone_addrs.contains(&err.addr());
            let right_kind = match &err {
                ConnError::Io { source, .. } => {
                    keepalive.is_some() && source.kind() == io::ErrorKind::TimedOut
                }
                ConnError::IdleTimeout { .. } => keepalive.is_none(),
                _ => false,
            };
            assert!(named && right_kind, "{err}");
        }
        figure(
            "vanished peers",
            format_args!(
                "{GONE} peers cut off without FIN or reset, keepalive {}: closed {:?} after the cut \
                 ({}); an honest peer echoed 32 frames meanwhile, never closed",
                if keepalive.is_some() { "on (default)" } else { "off" },
                closes[0].0 - cut,
                if keepalive.is_some() { "PeerVanished" } else { "IdleTimeout" },
            ),
        );
        assert_eq!(server.connection_count(), 1);
        server.cut().await;
    }
}

/// Peers that hold their connection by trickling complete frames (`a\n` every
/// second: 20 bytes per 10 s), a quiet peer that sends one 100-byte frame and then
/// nothing, and an honest peer that sends a 100-byte frame every second, against a
/// server with a minimum receive rate of 64 bytes per 10 s and a 30 s idle timeout;
/// then one trickler against the defaults.
///
/// Pass: every trickler is closed with `TooSlow` naming it at the end of its first
/// window (10 s after it connected, within 1 s); the quiet peer only by the idle
/// timeout; the honest peer never. With the defaults the trickler is still served
/// after 60 s: the rate is off by default, and what bounds such peers is the
/// per-IP connection limit.
#[tokio::test(start_paused = true)]
async fn peers_trickling_complete_frames_are_closed_by_the_minimum_receive_rate() {
    const TRICKLERS: usize = 10;
    let net = Network::new(12);
    let (server_host, bad, good) = (
        net.host([10, 0, 0, 1]),
        net.host([10, 0, 0, 2]),
        net.host([10, 0, 0, 3]),
    );
    let server = echo(Server::builder("10.0.0.1:7000".parse::<Addr>().unwrap()))
        .min_receive_rate(ReceiveRate::new(64, secs(10)))
        .idle_timeout(secs(30))
        .listen_on(&server_host)
        .await
        .unwrap();
    let addr = server.local_addr();
    let log = record(server.events());

    let mut tricklers = JoinSet::new();
    for _ in 0..TRICKLERS {
        let bad = bad.clone();
        tricklers.spawn(async move {
            let mut peer = RawPeer::connect(&bad, &addr).await.unwrap();
            let (local, began) = (peer.local_addr(), Instant::now());
            // Bounded: 30 frames; the rate ends it after 10.
            for _ in 0..30 {
                if peer.write_all(b"a\n").await.is_err() {
                    break;
                }
                sleep(secs(1)).await;
            }
            (local, began)
        });
    }
    let mut quiet = RawPeer::connect(&good, &addr).await.unwrap();
    let quiet_addr = quiet.local_addr();
    let line = format!("{}\n", "q".repeat(99));
    quiet.write_all(line.as_bytes()).await.unwrap();
    let quiet_spoke = Instant::now();
    let mut honest = RawPeer::connect(&good, &addr).await.unwrap();
    for _ in 0..40 {
        honest.write_all(line.as_bytes()).await.unwrap();
        assert!(honest.read_frame(b'\n').await.unwrap().is_some());
        sleep(secs(1)).await;
    }
    let mut began = HashMap::new();
    while let Some(joined) = tricklers.join_next().await {
        let (local, at) = joined.unwrap();
        began.insert(local, at);
    }

    let closed = closes(&log);
    assert_eq!(closed.len(), TRICKLERS + 1, "{closed:?}");
    for (at, close) in &closed {
        if close.peer == quiet_addr {
            assert_eq!(close.reason, CloseReason::IdleTimeout);
            assert!(*at >= quiet_spoke + secs(30) && *at <= quiet_spoke + secs(31));
            continue;
        }
        assert_eq!(close.reason, CloseReason::TooSlow, "{close:?}");
        let took = *at - began[&close.peer];
        assert!(took >= secs(10) && took <= secs(11), "{took:?}");
    }
    let too_slow = errors(&log)
        .into_iter()
        .filter(|err| {
            matches!(err, ConnError::TooSlow { peer, received, min: 64, per }
                if began.contains_key(peer) && *received < 64 && *per == secs(10))
        })
        .count();
    assert_eq!(too_slow, TRICKLERS);
    assert_eq!(server.connection_count(), 1, "the honest peer stays");
    server.cut().await;
    figure(
        "peers trickling complete frames",
        format_args!(
            "{TRICKLERS} peers sending `a\\n` every second against a minimum rate of 64 bytes per 10 s: \
             all closed with TooSlow 10 s after connecting; a quiet peer closed only by the idle \
             timeout; an honest peer (100 bytes/s) served 40 frames, never closed"
        ),
    );

    // The defaults: held (bounded by the per-IP limit instead).
    let server = echo(Server::builder("10.0.0.1:7001".parse::<Addr>().unwrap()))
        .listen_on(&server_host)
        .await
        .unwrap();
    let log = record(server.events());
    let mut peer = RawPeer::connect(&bad, &server.local_addr()).await.unwrap();
    for _ in 0..60 {
        peer.write_all(b"a\n").await.unwrap();
        assert_eq!(peer.read_frame(b'\n').await.unwrap().unwrap(), "a");
        sleep(secs(1)).await;
    }
    assert!(closes(&log).is_empty());
    assert_eq!(server.connection_count(), 1);
    server.cut().await;
}
