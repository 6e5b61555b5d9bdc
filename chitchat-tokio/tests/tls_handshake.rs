//! TLS handshakes under attack, on loopback: connections that send half a
//! ClientHello and wait, ClientHellos far larger than any real one, bytes that are
//! no handshake at all, each thrown at a server while real TLS clients talk to it.
//!
//! Timing is measured from a moment that cannot be later than the server's own
//! clock: the instant before the attacker's `connect` (the server cannot accept,
//! and so cannot start a handshake's deadline, before that). Only what cannot be
//! late is bounded tightly: a close before the timeout is a bug; a late one is a
//! loaded machine, bounded by `PROMPT` only. Run with `--nocapture` to see the
//! figures RELIABILITY.md records.
#![cfg(feature = "tls")]

mod handshake_flood;
mod reliability_util;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat_core::{Addr, ConnError, ConnErrorKind};
use chitchat_tokio::{Client, Server, ServerBuilder, TlsBinder, TlsConnector};
use futures::StreamExt;
use handshake_flood::{huge_hello, raise_fd_limit, HALF_HELLO};
use reliability_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// A server certificate for `localhost` and a client that trusts it.
fn certificates() -> (TlsBinder, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let server =
        TlsBinder::from_pem(pem.as_bytes(), cert.key_pair.serialize_pem().as_bytes()).unwrap();
    let client = TlsConnector::from_ca_pem(pem.as_bytes(), "localhost").unwrap();
    (server, client)
}

/// An echo server over `tls` on loopback.
async fn tls_echo_server(
    tls: &TlsBinder,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Server {
    configure(Server::builder(loopback()).on_frame(|ctx, frame| {
        let _ = ctx.reply(&frame);
    }))
    .listen_on(tls)
    .await
    .expect("bind loopback")
}

/// A real TLS client of the echo server, checking every echo.
struct RealClient {
    client: Client,
    sent: usize,
}

impl RealClient {
    async fn connect(addr: Addr, tls: &TlsConnector) -> RealClient {
        let client = Client::builder(addr)
            .connect_timeout(PROMPT)
            .connect_with(tls)
            .await
            .unwrap_or_else(|err| panic!("a real client cannot connect: {err}"));
        RealClient { client, sent: 0 }
    }

    /// One frame and its echo.
    async fn round(&mut self) {
        let frame = payload(0, self.sent);
        self.client.send(&frame).await.expect("send");
        let echo = timeout(PROMPT, self.client.next())
            .await
            .unwrap_or_else(|_| panic!("echo {} late", self.sent))
            .expect("the connection stays open");
        assert_eq!(echo, frame, "echo {} altered", self.sent);
        self.sent += 1;
    }
}

/// One attacker's connection: when it began (no later than the server's clock for
/// it), its address, and when the server closed it.
struct Held {
    began: Instant,
    peer: Addr,
    closed: Instant,
}

impl Held {
    fn lasted(&self) -> Duration {
        self.closed - self.began
    }
}

/// Connects, sends `bytes` (stopping quietly if the server closes first), then
/// reads until the server closes (EOF or reset).
async fn attacker(addr: SocketAddr, bytes: &'static [u8]) -> Held {
    let began = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let peer = Addr::from(stream.local_addr().unwrap());
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0; 4096];
    let held = timeout(PROMPT * 2, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    });
    held.await
        .unwrap_or_else(|_| panic!("{peer} still held after {:?}", PROMPT * 2));
    Held {
        began,
        peer,
        closed: Instant::now(),
    }
}

/// The handshake errors recorded, by peer, with their cause.
fn handshake_errors(recorder: &Recorder) -> Vec<(Addr, String)> {
    recorder
        .errors()
        .into_iter()
        .filter(|err| err.kind() == ConnErrorKind::Handshake)
        .map(|err| {
            let cause = std::error::Error::source(&err).map(|s| s.to_string());
            (err.addr(), cause.unwrap_or_default())
        })
        .collect()
}

/// Waits until `n` handshake errors are recorded (fewer than the event queue's
/// capacity: none can be dropped).
async fn wait_for_handshake_errors(recorder: &Recorder, n: usize) {
    recorder
        .wait_for(&format!("{n} handshake errors"), |events| {
            let errors = events.iter().filter_map(|(_, e)| e.as_error());
            errors
                .filter(|e| e.kind() == ConnErrorKind::Handshake)
                .count()
                >= n
        })
        .await;
}

/// Waits until the server has counted `n` handshake errors, for floods larger than
/// the event queue: `stats()` counts exactly, while a subscriber that falls behind
/// a flood loses its oldest events (the causes are checked on those it kept).
async fn wait_for_counted_handshake_errors(server: &Server, n: u64) {
    wait_until(&format!("{n} handshake errors"), || {
        server.stats().errors.get(ConnErrorKind::Handshake) >= n
    })
    .await;
}

/// 200 connections send half a ClientHello and wait, against a server with a 1 s
/// handshake timeout and a 10-minute linger, while a real client established
/// before them and a new real client every round keep talking to it.
///
/// Pass: each is closed no sooner than 1 s after it connected, and within `PROMPT`
/// of that (so a failed handshake does not linger); each is reported once as
/// `ConnError::Handshake` naming it; none counts as a connection; every real
/// client gets every echo.
#[test]
fn half_hellos_are_closed_at_the_handshake_timeout_while_real_clients_are_served() {
    run(|| async {
        let (tls, client_tls) = certificates();
        let after = Duration::from_secs(1);
        let linger = Duration::from_secs(600);
        let server = tls_echo_server(&tls.handshake_timeout(after), |b| b.linger(linger)).await;
        let recorder = Recorder::start(server.events());
        let addr = server.local_addr();
        let mut steady = RealClient::connect(addr, &client_tls).await;
        steady.round().await;

        let mut flood = JoinSet::new();
        for _ in 0..200 {
            flood.spawn(attacker(inet(&server), &HALF_HELLO));
        }
        let mut held = Vec::new();
        let mut fresh_clients = 0;
        while held.len() < 200 {
            while let Some(done) = flood.try_join_next() {
                held.push(done.expect("attacker task"));
            }
            steady.round().await;
            let mut fresh = RealClient::connect(addr, &client_tls).await;
            fresh.round().await;
            fresh.client.close().await;
            fresh_clients += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let shortest = held.iter().map(Held::lasted).min().unwrap();
        let longest = held.iter().map(Held::lasted).max().unwrap();
        figure(
            "TLS half-hello flood, 200 connections, 1 s handshake timeout",
            format!(
                "closed {shortest:?} to {longest:?} after connecting; {} rounds of a \
                 steady client and {fresh_clients} new clients served meanwhile",
                steady.sent
            ),
        );
        assert!(shortest >= after, "closed before the timeout: {shortest:?}");
        assert!(longest <= after + PROMPT, "closed late: {longest:?}");

        let attackers: HashSet<Addr> = held.iter().map(|h| h.peer).collect();
        wait_for_handshake_errors(&recorder, 200).await;
        let reported = handshake_errors(&recorder);
        assert_eq!(reported.len(), 200, "one error per attacker");
        for (peer, cause) in &reported {
            assert!(attackers.contains(peer), "error names {peer}");
            assert_eq!(cause, "the TLS handshake did not finish within 1s");
        }
        let stats = server.stats();
        assert_eq!(stats.accepted, 1 + fresh_clients, "only real clients count");
        assert_eq!(stats.errors.get(ConnErrorKind::Handshake), 200);
        assert_eq!(stats.errors.get(ConnErrorKind::Accept), 0, "no backoff");
        server.cut().await;
    });
}

/// 60 connections send half a ClientHello to a server limited to 50 connections,
/// then a real client connects.
///
/// Pass: the real client is served; the half-hellos hold no connection slot
/// (`connection_count` is 1) and nothing is refused.
#[test]
fn half_hellos_do_not_take_connection_slots() {
    run(|| async {
        let (tls, client_tls) = certificates();
        let server = tls_echo_server(&tls, |b| b.max_connections(50)).await;
        let mut half_hellos = Vec::new();
        for _ in 0..60 {
            let mut stream = TcpStream::connect(inet(&server)).await.unwrap();
            stream.write_all(&HALF_HELLO).await.unwrap();
            half_hellos.push(stream);
        }
        let mut real = RealClient::connect(server.local_addr(), &client_tls).await;
        real.round().await;
        assert_eq!(server.connection_count(), 1);
        assert_eq!(server.stats().refused, 0);
        server.cut().await;
    });
}

/// A server allows 8 handshakes at once with a 1 s timeout; 12 connections send
/// half a ClientHello, then a new real client connects, while a client established
/// before them keeps talking.
///
/// Pass: the new client's handshake waits in the backlog until a half-hello's
/// timeout frees a slot (it is established no sooner than 1 s after the first
/// half-hello connected); the 4 half-hellos past the cap wait too, and their own
/// timeout starts only when they are accepted (closed no sooner than 2 s after the
/// first connected); the established client is never dropped.
#[test]
fn handshakes_past_the_cap_wait_in_the_backlog() {
    run(|| async {
        let (tls, client_tls) = certificates();
        let after = Duration::from_secs(1);
        let tls = tls.handshake_timeout(after).max_handshakes(8);
        let server = tls_echo_server(&tls, |b| b).await;
        let recorder = Recorder::start(server.events());
        let addr = server.local_addr();
        let mut steady = RealClient::connect(addr, &client_tls).await;
        steady.round().await;

        let first = Instant::now();
        let mut attackers = JoinSet::new();
        for _ in 0..12 {
            // One at a time, so that the backlog holds them in this order.
            let mut stream = TcpStream::connect(inet(&server)).await.unwrap();
            stream.write_all(&HALF_HELLO).await.unwrap();
            attackers.spawn(async move {
                let mut sink = [0; 64];
                let held = timeout(PROMPT * 2, async {
                    while let Ok(1..) = stream.read(&mut sink).await {}
                });
                held.await.expect("a half-hello is held forever");
                Instant::now()
            });
        }
        let waiting = tokio::spawn({
            let client_tls = client_tls.clone();
            async move {
                let mut real = RealClient::connect(addr, &client_tls).await;
                let established = Instant::now();
                real.round().await;
                established
            }
        });
        let mut steady_rounds = 0;
        while !waiting.is_finished() {
            steady.round().await;
            steady_rounds += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let established = waiting.await.unwrap() - first;
        let mut closes = Vec::new();
        while let Some(closed) = attackers.join_next().await {
            closes.push(closed.unwrap() - first);
        }
        closes.sort();
        figure(
            "TLS handshake cap 8, 12 half-hellos, 1 s timeout",
            format!(
                "the new client established {established:?} after the first half-hello; \
                 half-hellos closed at {:?} (first 8) and {:?} (last 4); the established \
                 client did {steady_rounds} rounds meanwhile",
                closes[..8].iter().max().unwrap(),
                closes[8..].iter().max().unwrap(),
            ),
        );
        assert!(
            established >= after,
            "handshaked past the cap: {established:?}"
        );
        assert!(closes[..8].iter().all(|&c| c >= after), "{closes:?}");
        assert!(closes[8..].iter().all(|&c| c >= 2 * after), "{closes:?}");
        assert!(steady_rounds > 0);
        wait_for_handshake_errors(&recorder, 12).await;
        assert_eq!(server.stats().errors.get(ConnErrorKind::Handshake), 12);
        server.cut().await;
    });
}

/// Runs 1 500 attackers sending `hello` against `server` at once, while `real`
/// keeps talking to it; returns how long the longest was held.
async fn flood(server: &Server, hello: &'static [u8], real: &mut RealClient) -> Duration {
    let mut flood = JoinSet::new();
    for _ in 0..1500 {
        flood.spawn(attacker(inet(server), hello));
    }
    let mut longest = Duration::ZERO;
    let mut done = 0;
    while done < 1500 {
        while let Some(held) = flood.try_join_next() {
            longest = longest.max(held.expect("attacker task").lasted());
            done += 1;
        }
        real.round().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    longest
}

/// 1 500 connections each send a 64 KiB ClientHello but its last byte, against a
/// server with the default handshake limits, while a real client talks to it; then
/// 1 500 more.
///
/// Pass: each is closed as soon as it passes the 16 KiB handshake cap (with a
/// `Handshake` error naming it, well before the 10 s timeout could); the process's
/// memory never grows by more than 40 MiB (the cap allows 1 024 handshakes of about
/// 20 KiB; the full hellos would hold 100 MiB), and the second flood reuses what the
/// first freed (less than 8 MiB more: the allocator's noise, where a leak of the
/// hellos would be 100 MiB); no handshake task is left; the real client gets every
/// echo.
#[test]
fn oversized_client_hellos_are_cut_at_the_cap_and_memory_comes_back() {
    raise_fd_limit(4 * 1500);
    run(|| async {
        let (tls, client_tls) = certificates();
        let server = tls_echo_server(&tls, |b| b).await;
        let recorder = Recorder::start(server.events());
        let mut real = RealClient::connect(server.local_addr(), &client_tls).await;
        real.round().await;
        let hello = huge_hello();

        let tasks_before = alive_tasks();
        let rss_before = rss_kib();
        reset_peak_rss();
        let first = flood(&server, hello, &mut real).await;
        wait_for_counted_handshake_errors(&server, 1500).await;
        let peak = peak_rss_kib().saturating_sub(rss_before);
        let rss_between = rss_kib();
        let second = flood(&server, hello, &mut real).await;
        wait_for_counted_handshake_errors(&server, 3000).await;
        let peak = peak.max(peak_rss_kib().saturating_sub(rss_before));
        let again = rss_kib().saturating_sub(rss_between);
        let longest = first.max(second);
        figure(
            "TLS 64 KiB ClientHellos, 2 x 1 500 connections, default limits",
            format!(
                "each closed within {longest:?}; process RSS peaked {} MiB above the \
                 start, {} MiB after the first flood, and grew {} KiB more over the \
                 second; {} echoes served meanwhile",
                peak / 1024,
                rss_between.saturating_sub(rss_before) / 1024,
                again,
                real.sent
            ),
        );
        for (_, cause) in handshake_errors(&recorder) {
            assert_eq!(cause, "the TLS handshake sent more than 16384 bytes");
        }
        assert!(
            longest < TlsBinder::DEFAULT_HANDSHAKE_TIMEOUT,
            "cut by the cap, not the timeout"
        );
        assert!(peak < 40 * 1024, "RSS grew by {peak} KiB");
        assert!(again < 8 * 1024, "the second flood took {again} KiB more");
        wait_until("the handshake tasks end", || alive_tasks() <= tasks_before).await;
        server.cut().await;
    });
}

/// 100 connections in a row send bytes that are no TLS at all, then a real client
/// connects.
///
/// Pass: each is reported as `ConnError::Handshake` naming it and its cause; the
/// accept loop does not back off (no `Accept` error, and the real client, queued
/// behind all 100, is served within `PROMPT`: backing off 10 ms to 1 s after each
/// would take minutes).
#[test]
fn failed_handshakes_are_reported_and_do_not_slow_accepting() {
    run(|| async {
        let (tls, client_tls) = certificates();
        let server = tls_echo_server(&tls, |b| b).await;
        let recorder = Recorder::start(server.events());
        let mut peers = HashSet::new();
        let mut streams = Vec::new();
        for _ in 0..100 {
            let mut stream = TcpStream::connect(inet(&server)).await.unwrap();
            stream.write_all(b"hello, this is not TLS\n").await.unwrap();
            peers.insert(Addr::from(stream.local_addr().unwrap()));
            streams.push(stream);
        }
        let mut real = RealClient::connect(server.local_addr(), &client_tls).await;
        real.round().await;
        wait_for_handshake_errors(&recorder, 100).await;
        let reported: HashSet<Addr> = handshake_errors(&recorder)
            .into_iter()
            .map(|(peer, _)| peer)
            .collect();
        assert_eq!(reported, peers);
        let err = recorder
            .errors()
            .into_iter()
            .find(|e| matches!(e, ConnError::Handshake { .. }))
            .unwrap();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            err.to_string(),
            format!("handshake with {} failed: {cause}", err.addr())
        );
        assert_eq!(server.stats().errors.get(ConnErrorKind::Accept), 0);
        server.cut().await;
    });
}
