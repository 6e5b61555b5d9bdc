//! The reliability suite on loopback TCP: hostile input, overload and faults thrown
//! at one server while well-behaved peers keep talking to it. Running out of file
//! descriptors runs in its own process (`reliability_fd_exhaustion.rs`); the cases
//! where time matters run on the in-memory network, in chitchat-testkit's
//! `reliability_sim.rs`.
//!
//! These tests run on real sockets on a machine that may be loaded: a time they
//! measure starts where the engine's clock starts, and only what cannot be late is
//! bounded (an early timeout is a bug, a late one is load); other bounds are
//! `PROMPT`, which only tells a hang from an answer.
//!
//! Each test states its pass criterion in its doc comment and asserts it; each is
//! bounded in count and time. The tests of this file run one at a time (see
//! `reliability_util`), because memory, fds and tasks are measured for the whole
//! process. Run with `--nocapture` to see the measured figures, one
//! `[reliability]` line each: RELIABILITY.md records them.

mod reliability_util;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chitchat_core::{
    Addr, CloseReason, ConnError, ConnErrorKind, ConnEvent, Delimiter, FrameConfig, FrameError,
    Framer, OversizePolicy, ReadContext,
};
use chitchat_tokio::{Client, Server};
use futures::StreamExt;
use reliability_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Reads until EOF or a reset; returns what arrived.
async fn drain(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = timeout(PROMPT, stream.read_to_end(&mut got))
        .await
        .expect("the server closes in time");
    got
}

/// Runs `clients` good peers against `addr`: each does one warm-up round, waits at
/// `start`, does `rounds` more, waits at `end`, then closes. Returns how many frames
/// each had echoed intact.
fn good_peers(
    set: &mut JoinSet<Result<usize, String>>,
    addr: SocketAddr,
    clients: usize,
    rounds: usize,
    start: Arc<Barrier>,
    end: Arc<Barrier>,
) {
    for id in 0..clients {
        let (start, end) = (start.clone(), end.clone());
        set.spawn(async move {
            let mut peer = GoodPeer::connect(addr, id).await;
            let warm = match &mut peer {
                Ok(peer) => peer.rounds(1).await,
                Err(err) => Err(err.clone()),
            };
            // Every peer reaches both barriers, whatever happened, so that the
            // test never waits for one that gave up.
            start.wait().await;
            let result = match (&mut peer, warm) {
                (Ok(peer), Ok(())) => peer.rounds(rounds).await.map(|()| peer.echoed()),
                (_, Err(err)) => Err(err),
                (Err(err), _) => Err(err.clone()),
            };
            end.wait().await;
            result
        });
    }
}

/// Collects the good peers' results; panics on the first loss.
async fn all_echoed(set: &mut JoinSet<Result<usize, String>>, each: usize) -> usize {
    let mut total = 0;
    while let Some(result) = set.join_next().await {
        let echoed = result
            .expect("good peer task")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(echoed, each, "a good peer lost frames");
        total += echoed;
    }
    total
}

/// Writes `total` bytes of `fill` (never the delimiter) in 16 KiB writes, stopping
/// early if the server closes; returns how many were written.
async fn write_flood(stream: &mut TcpStream, total: usize, fill: u8) -> usize {
    let chunk = vec![fill; 16 * KIB];
    let mut written = 0;
    while written < total {
        let n = chunk.len().min(total - written);
        if stream.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        written += n;
    }
    written
}

/// One peer sends 1 MiB without a delimiter to a server with a 64 KiB frame
/// limit while 100 others exchange frames.
///
/// Pass: that peer is closed with `FrameTooLong` naming it (close reason
/// `FrameTooLong`); the 100 others get every echo intact and in order and no error
/// names them; the process's resident memory grows by less than 1 MiB.
#[test]
fn oversized_frame_closes_only_its_sender() {
    run(|| async {
        let server = echo_server(|b| b.max_frame_len(64 * KIB)).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());
        let (start, end) = (Arc::new(Barrier::new(101)), Arc::new(Barrier::new(101)));
        let mut good = JoinSet::new();
        good_peers(&mut good, addr, 100, 50, start.clone(), end.clone());
        start.wait().await;

        let rss_before = rss_kib();
        reset_peak_rss();
        let began = Instant::now();
        let mut hostile = TcpStream::connect(addr).await.unwrap();
        let hostile_addr = Addr::from(hostile.local_addr().unwrap());
        let written = write_flood(&mut hostile, MIB, b'x').await;
        let got = drain(&mut hostile).await;
        drop(hostile);
        recorder
            .wait_for("the hostile peer's close", |events| {
                events
                    .iter()
                    .any(|(_, e)| e.as_closed().is_some_and(|c| c.peer == hostile_addr))
            })
            .await;
        let closed_after = began.elapsed();
        end.wait().await;
        let rss_after = rss_kib();
        let peak = peak_rss_kib();
        let echoed = all_echoed(&mut good, 51).await;

        assert!(got.is_empty(), "the hostile peer gets nothing back");
        let errors = recorder.errors();
        assert_eq!(
            errors.len(),
            1,
            "one error, for the hostile peer: {errors:?}"
        );
        assert!(
            matches!(errors[0], ConnError::FrameTooLong { peer, limit } if peer == hostile_addr && limit == 64 * KIB),
            "{}",
            errors[0]
        );
        assert!(errors[0].to_string().contains(&hostile_addr.to_string()));
        for (_, close) in recorder.closes() {
            let expected = if close.peer == hostile_addr {
                CloseReason::FrameTooLong
            } else {
                CloseReason::PeerEof // a good peer hanging up at the end
            };
            assert_eq!(close.reason, expected, "{close:?}");
        }
        let growth = rss_after as i64 - rss_before as i64;
        figure(
            "oversized frame",
            format_args!(
                "hostile wrote {written} B; closed after {closed_after:?}; 100 good peers echoed {echoed} frames, 0 lost; \
                 errors: 1 FrameTooLong naming {hostile_addr}; RSS {rss_before} -> {rss_after} KiB \
                 (growth {growth} KiB, peak +{} KiB)",
                peak as i64 - rss_before as i64
            ),
        );
        assert!(growth < 1024, "memory grew by {growth} KiB");
        server.cut().await;
    });
}

/// EOF mode (one message per connection, ended by the peer's shutdown): one
/// peer sends a 1 MiB message to a server with a 64 KiB limit while 100 others each
/// send 5 messages on 5 connections.
///
/// Pass: as for an oversized frame: `FrameTooLong` naming that peer, which gets nothing back; every
/// other message echoed whole; no error names anyone else; resident memory grows by
/// less than 1 MiB.
#[test]
fn oversized_eof_message_closes_only_its_sender() {
    run(|| async {
        let server = echo_server(|b| b.delimiter(Delimiter::Eof).max_frame_len(64 * KIB)).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());

        async fn one_message(addr: SocketAddr, id: usize, i: usize) -> Result<(), String> {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("client {id}: {e}"))?;
            // Lines inside: EOF mode does not split on them.
            let message = [payload(id, i), b"\nsecond line\r\n".to_vec()].concat();
            stream
                .write_all(&message)
                .await
                .map_err(|e| e.to_string())?;
            stream.shutdown().await.map_err(|e| e.to_string())?;
            let got = drain(&mut stream).await;
            if got != message {
                return Err(format!("client {id} message {i}: echo differs"));
            }
            Ok(())
        }

        // Warm-up: every good peer's first message, so that the baseline includes
        // what serving them costs.
        let mut warm = JoinSet::new();
        for id in 0..100 {
            warm.spawn(one_message(addr, id, 0));
        }
        while let Some(r) = warm.join_next().await {
            r.unwrap().unwrap();
        }
        let rss_before = rss_kib();
        reset_peak_rss();

        let mut good = JoinSet::new();
        for id in 0..100 {
            good.spawn(async move {
                for i in 1..=5 {
                    one_message(addr, id, i).await?;
                }
                Ok::<usize, String>(5)
            });
        }
        let began = Instant::now();
        let mut hostile = TcpStream::connect(addr).await.unwrap();
        let hostile_addr = Addr::from(hostile.local_addr().unwrap());
        let written = write_flood(&mut hostile, MIB, b'y').await;
        let _ = hostile.shutdown().await;
        let got = drain(&mut hostile).await;
        drop(hostile);
        recorder
            .wait_for("the hostile peer's close", |events| {
                events
                    .iter()
                    .any(|(_, e)| e.as_closed().is_some_and(|c| c.peer == hostile_addr))
            })
            .await;
        let closed_after = began.elapsed();
        let echoed = all_echoed(&mut good, 5).await;
        let rss_after = rss_kib();
        let peak = peak_rss_kib();

        assert!(got.is_empty(), "the hostile peer gets nothing back");
        let errors = recorder.errors();
        assert_eq!(
            errors.len(),
            1,
            "one error, for the hostile peer: {errors:?}"
        );
        assert!(
            matches!(errors[0], ConnError::FrameTooLong { peer, .. } if peer == hostile_addr),
            "{}",
            errors[0]
        );
        let hostile_close = recorder
            .closes()
            .into_iter()
            .find(|(_, c)| c.peer == hostile_addr)
            .unwrap();
        assert_eq!(hostile_close.1.reason, CloseReason::FrameTooLong);
        assert!(
            recorder
                .closes()
                .iter()
                .all(|(_, c)| c.peer == hostile_addr || c.reason == CloseReason::PeerEof),
            "every good connection ends with its peer's EOF"
        );
        let growth = rss_after as i64 - rss_before as i64;
        figure(
            "oversized EOF message",
            format_args!(
                "EOF mode: hostile wrote {written} B; closed after {closed_after:?}; 100 good peers echoed {} messages \
                 (500 connections), 0 lost; errors: 1 FrameTooLong naming {hostile_addr}; RSS {rss_before} -> {rss_after} KiB \
                 (growth {growth} KiB, peak +{} KiB)",
                echoed,
                peak as i64 - rss_before as i64
            ),
        );
        assert!(growth < 1024, "memory grew by {growth} KiB");
        server.cut().await;
    });
}

/// How a flood attempt ended.
enum Attempt {
    /// Echoed: the connection is served (kept open for later rounds).
    Served(GoodPeer),
    /// Closed without a byte; how long after the connect.
    Refused(Addr, Duration),
}

/// 300 connection attempts at once against `max_connections` 100.
///
/// Pass: exactly 100 are served; the other 200 are closed at once, with nothing
/// sent to them (not left open: each is closed in well under `PROMPT`, the time
/// after which a peer that was never answered gives up), each with a `Refused` error and a
/// `Refused` close event naming it; the server never runs more than 100 connection
/// tasks; the served peers then exchange 50 frames each and lose none; once they
/// leave, 100 new peers are all served.
#[test]
fn connection_flood_serves_exactly_the_limit_and_refuses_the_rest_at_once() {
    run(|| async {
        const MAX: usize = 100;
        let server = echo_server(|b| b.max_connections(MAX)).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());
        let tasks_before = alive_tasks();
        let began = Instant::now();

        let mut attempts = JoinSet::new();
        for id in 0..3 * MAX {
            attempts.spawn(async move {
                let mut peer = GoodPeer::connect(addr, id).await?;
                let local = peer.local_addr();
                let connected = Instant::now();
                match peer.rounds(1).await {
                    Ok(()) => Ok(Attempt::Served(peer)),
                    Err(_) => Ok::<_, String>(Attempt::Refused(local, connected.elapsed())),
                }
            });
        }
        let mut served = Vec::new();
        let mut refused = Vec::new();
        while let Some(attempt) = attempts.join_next().await {
            match attempt.unwrap().unwrap() {
                Attempt::Served(peer) => served.push(peer),
                Attempt::Refused(addr, after) => refused.push((addr, after)),
            }
        }
        let flood_took = began.elapsed();
        // Server side: one accept loop and one task per served connection, plus
        // the recorder; the refused cost no task. (A client task whose result was
        // just taken may take a moment to be counted as gone.)
        let settle = Instant::now() + PROMPT;
        while alive_tasks() > tasks_before + MAX && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tasks_during = alive_tasks();
        assert_eq!(served.len(), MAX, "exactly the limit is served");
        assert_eq!(refused.len(), 2 * MAX);
        assert!(
            tasks_during <= tasks_before + MAX,
            "{tasks_during} tasks alive, {tasks_before} before the flood"
        );
        let slowest_refusal = refused.iter().map(|&(_, d)| d).max().unwrap();
        assert!(slowest_refusal < PROMPT / 2, "{slowest_refusal:?}");

        let mut rounds = JoinSet::new();
        for mut peer in served {
            rounds.spawn(async move {
                peer.rounds(50).await?;
                Ok::<_, String>(peer.echoed())
            });
        }
        let echoed = all_echoed(&mut rounds, 51).await;

        let refused_addrs: HashSet<Addr> = refused.iter().map(|&(a, _)| a).collect();
        recorder
            .wait_for("200 refusals", |events| {
                events
                    .iter()
                    .filter(|(_, e)| matches!(e.as_error(), Some(ConnError::Refused { .. })))
                    .count()
                    >= 2 * MAX
            })
            .await;
        let errors = recorder.errors();
        let refusal_peers: HashSet<Addr> = errors
            .iter()
            .filter(|e| e.kind() == ConnErrorKind::Refused)
            .map(ConnError::addr)
            .collect();
        assert_eq!(
            refusal_peers, refused_addrs,
            "one refusal event per refused peer"
        );
        assert_eq!(errors.len(), 2 * MAX, "no other error: {errors:?}");
        let refused_closes = recorder
            .closes()
            .iter()
            .filter(|(_, c)| c.reason == CloseReason::Refused)
            .count();
        assert_eq!(refused_closes, 2 * MAX);
        let stats = server.stats();
        assert_eq!(
            (stats.accepted, stats.refused),
            (MAX as u64, 2 * MAX as u64)
        );

        // The served peers leave; the server accepts again.
        wait_until("the served peers to be gone", || {
            server.connection_count() == 0
        })
        .await;
        let mut again = JoinSet::new();
        for id in 0..MAX {
            again.spawn(async move {
                let mut peer = GoodPeer::connect(addr, 10_000 + id).await?;
                peer.rounds(5).await?;
                Ok::<_, String>(peer.echoed())
            });
        }
        let echoed_after = all_echoed(&mut again, 5).await;
        figure(
            "connection flood",
            format_args!(
                "300 attempts at once, max 100: served {MAX}, refused {} (slowest refusal {slowest_refusal:?} after connect), \
                 flood classified in {flood_took:?}; tasks {tasks_before} -> {tasks_during} during; served peers echoed {echoed} frames, 0 lost; \
                 events: {} Refused errors + {refused_closes} Refused closes; afterwards 100 new peers echoed {echoed_after} frames",
                refused.len(),
                refusal_peers.len()
            ),
        );
        server.cut().await;
    });
}

/// A peer sends requests and never reads the replies, against an echo server
/// with the default 256 KiB outbound bound and a 500 ms write timeout, while 10
/// good peers keep exchanging frames.
///
/// Pass: the server stops reading it (backpressure) so the process's resident
/// memory grows by less than the outbound bound plus one read buffer (256 + 64 KiB,
/// with 64 KiB for allocator rounding), however much the peer sends; the peer is
/// dropped with `WriteTimeout` naming it (close reason `WriteStalled`); the good
/// peers lose nothing. How long after its last accepted byte is reported, not
/// bounded: the server's write clock starts at its own last write, which this test
/// cannot see, and a late drop is load (the in-memory conformance case checks the
/// timeout's exact value).
#[test]
fn peer_that_never_reads_is_bounded_then_dropped_after_the_write_timeout() {
    run(|| async {
        let write_timeout = Duration::from_millis(500);
        let server = echo_server(|b| b.write_timeout(write_timeout)).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());
        let (start, end) = (Arc::new(Barrier::new(11)), Arc::new(Barrier::new(11)));
        let mut good = JoinSet::new();
        good_peers(&mut good, addr, 10, 300, start.clone(), end.clone());
        start.wait().await;
        let rss_before = rss_kib();
        reset_peak_rss();

        // A small receive buffer, so the kernel holds little for it: the test is
        // about what the server holds.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut sink = socket.connect(addr).await.unwrap();
        let sink_addr = Addr::from(sink.local_addr().unwrap());
        let request = [vec![b'r'; 1023], vec![b'\n']].concat();
        let mut sent = 0usize;
        let mut last_progress = Instant::now();
        // Bounded: at most 256 MiB, or until a write makes no progress for 250 ms.
        while sent < 256 * MIB {
            match timeout(Duration::from_millis(250), sink.write_all(&request)).await {
                Ok(Ok(())) => {
                    sent += request.len();
                    last_progress = Instant::now();
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        recorder
            .wait_for("the non-reader's close", |events| {
                events
                    .iter()
                    .any(|(_, e)| e.as_closed().is_some_and(|c| c.peer == sink_addr))
            })
            .await;
        let (closed_at, close) = recorder
            .closes()
            .into_iter()
            .find(|(_, c)| c.peer == sink_addr)
            .unwrap();
        let dropped_after = closed_at.saturating_duration_since(last_progress);
        let peak_growth = peak_rss_kib() as i64 - rss_before as i64;
        end.wait().await;
        let echoed = all_echoed(&mut good, 301).await;
        drop(sink);

        assert_eq!(close.reason, CloseReason::WriteStalled);
        let errors = recorder.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            matches!(errors[0], ConnError::WriteTimeout { peer, after } if peer == sink_addr && after == write_timeout),
            "{}",
            errors[0]
        );
        figure(
            "peer that never reads",
            format_args!(
                "non-reader sent {} KiB of requests and read nothing; server stopped reading it; peak RSS growth {peak_growth} KiB; \
                 dropped with WriteTimeout {dropped_after:?} after its last accepted byte \
                 (server had written {} KiB to it); 10 good peers echoed {echoed} frames, 0 lost",
                sent / KIB,
                close.stats.bytes_out / KIB as u64
            ),
        );
        // The outbound bound, one read buffer, and 64 KiB for allocator rounding.
        assert!(
            peak_growth < 256 + 64 + 64,
            "memory grew by {peak_growth} KiB"
        );
        server.cut().await;
    });
}

/// 1000 peers each send a frame, get its echo, send half a frame, and close
/// abortively (`SO_LINGER` 0: a reset instead of a FIN).
///
/// Pass: no panic; every connection ends with exactly one close event, with reason
/// `PeerReset` and one `Io` error naming the peer, or (a documented silent close)
/// with `PeerEof` and no error; afterwards the process has as many tasks and open
/// fds as before the peers came.
#[test]
fn thousand_resets_mid_frame_leak_no_task_and_no_fd() {
    run(|| async {
        const PEERS: usize = 1000;
        let server = echo_server(|b| b).await;
        let addr = inet(&server);
        let recorder = Recorder::start(server.events());
        let (tasks_before, fds_before) = (alive_tasks(), open_fds());
        let began = Instant::now();

        let mut peers = JoinSet::new();
        for id in 0..PEERS {
            peers.spawn(async move {
                let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let local = Addr::from(stream.local_addr().unwrap());
                let frame = [payload(id, 0), vec![b'\n']].concat();
                stream.write_all(&frame).await.map_err(|e| e.to_string())?;
                let mut echo = vec![0; frame.len()];
                timeout(PROMPT, stream.read_exact(&mut echo))
                    .await
                    .map_err(|_| "echo late".to_owned())?
                    .map_err(|e| e.to_string())?;
                stream
                    .write_all(b"half a frame, never fini")
                    .await
                    .map_err(|e| e.to_string())?;
                abort(stream);
                Ok::<_, String>(local)
            });
        }
        let mut addrs = HashSet::new();
        while let Some(r) = peers.join_next().await {
            addrs.insert(r.unwrap().unwrap());
        }
        recorder
            .wait_for("1000 close events", |events| {
                events
                    .iter()
                    .filter(|(_, e)| e.as_closed().is_some())
                    .count()
                    >= PEERS
            })
            .await;
        let took = began.elapsed();
        wait_until("every connection task to end", || {
            alive_tasks() <= tasks_before
        })
        .await;
        let (tasks_after, fds_after) = (alive_tasks(), open_fds());

        let closes = recorder.closes();
        let errors = recorder.errors();
        assert_eq!(closes.len(), PEERS, "one close event per connection");
        let closed: HashSet<Addr> = closes.iter().map(|(_, c)| c.peer).collect();
        assert_eq!(closed, addrs, "each peer closed once");
        // Counted per address, not as sets: a port freed by a reset may be given
        // to a later peer of the same run, so one address can stand for two
        // connections.
        let mut reset_errors: HashMap<Addr, usize> = HashMap::new();
        for error in &errors {
            assert!(
                matches!(error, ConnError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionReset),
                "only reset errors: {error:?}"
            );
            *reset_errors.entry(error.addr()).or_default() += 1;
        }
        let mut reset_closes: HashMap<Addr, usize> = HashMap::new();
        let mut resets = 0;
        let mut silent = 0;
        for (_, close) in &closes {
            match close.reason {
                CloseReason::PeerReset => {
                    *reset_closes.entry(close.peer).or_default() += 1;
                    resets += 1;
                }
                CloseReason::PeerEof => silent += 1,
                other => panic!("unexpected close reason {other:?}"),
            }
        }
        assert_eq!(
            reset_errors, reset_closes,
            "each reset close with exactly one reset error, silent closes with none"
        );
        figure(
            "resets mid-frame",
            format_args!(
                "{PEERS} peers reset mid-frame: {resets} PeerReset closes each with one Io(ConnectionReset) error, \
                 {silent} silent; all closed within {took:?}; tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}"
            ),
        );
        assert_eq!(server.stats().open, 0);
        assert_eq!(tasks_after, tasks_before, "no task leaked");
        assert_eq!(fds_after, fds_before, "no fd leaked");
        server.cut().await;
    });
}

/// 10 000 frames make the handler panic, one per connection, 100
/// connections at a time.
///
/// Pass: every panic is reported as a `HandlerPanic` error naming its peer and ends
/// only that connection (close reason `HandlerPanic`); the server still serves a
/// good peer afterwards; tasks and open fds are back to what they were, and the
/// heap holds fewer than 1000 blocks more than before (one per 10 connections: a
/// leak per connection would be 10 000). Resident memory is reported, not bounded:
/// how much of the 20 000 events' peak the allocator keeps depends on how far a
/// loaded machine let the event reader fall behind.
#[test]
fn ten_thousand_handler_panics_leave_the_server_serving_and_leak_nothing() {
    run(|| async {
        const PANICS: usize = 10_000;
        const AT_ONCE: usize = 100;
        let server = reliability_util::echo_server(|b| {
            b.on_frame(|ctx, frame| {
                if frame.starts_with(b"boom") {
                    panic!("{DELIBERATE}: {}", String::from_utf8_lossy(&frame));
                }
                let _ = ctx.reply(&frame);
            })
            // Room for every event: this case counts them.
            .config({
                let mut config = chitchat_core::ServerConfig::default();
                config.event_capacity = 4 * PANICS;
                config
            })
        })
        .await;
        let addr = inet(&server);
        // Counts instead of keeping the 20 000 events: memory is measured here.
        let tally = Arc::new(Mutex::new((0usize, HashMap::<CloseReason, usize>::new())));
        let counter = tally.clone();
        let mut events = server.events();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let mut tally = counter.lock().unwrap();
                match event {
                    ConnEvent::Error(ConnError::HandlerPanic { message, .. })
                        if message.contains(DELIBERATE) =>
                    {
                        tally.0 += 1
                    }
                    ConnEvent::Closed(close) => *tally.1.entry(close.reason).or_default() += 1,
                    _ => {}
                }
            }
        });
        /// `total` connections, `AT_ONCE` at a time, each sending one fatal frame.
        async fn panic_batch(addr: SocketAddr, total: usize, tag: &str) -> usize {
            let mut workers = JoinSet::new();
            for worker in 0..AT_ONCE {
                let tag = tag.to_owned();
                workers.spawn(async move {
                    for i in 0..total / AT_ONCE {
                        let mut stream =
                            TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                        stream
                            .write_all(format!("boom {tag} {worker}-{i}\n").as_bytes())
                            .await
                            .map_err(|e| e.to_string())?;
                        if !drain(&mut stream).await.is_empty() {
                            return Err("a panicking handler replied".to_owned());
                        }
                    }
                    Ok::<usize, String>(total / AT_ONCE)
                });
            }
            let mut done = 0;
            while let Some(r) = workers.join_next().await {
                done += r.unwrap().unwrap();
            }
            done
        }
        let closed = |tally: &Mutex<(usize, HashMap<CloseReason, usize>)>| {
            tally.lock().unwrap().1.values().sum::<usize>()
        };

        // Tasks and fds before any connection: a warm-up connection's task may still
        // be ending after its close event was counted.
        let (tasks_before, fds_before) = (alive_tasks(), open_fds());
        // Warm-up, so that the baseline includes the allocator's per-thread arenas.
        const WARM_UP: usize = 1000;
        panic_batch(addr, WARM_UP, "warm-up").await;
        wait_until("the warm-up's close events", || closed(&tally) >= WARM_UP).await;
        // A close is reported before its task ends (it may still drain): wait for
        // the connections too, so the heap baseline holds none of them.
        wait_until("the warm-up's connections to end", || {
            server.connection_count() == 0
        })
        .await;
        let (rss_before, blocks_before) = (rss_kib(), live_blocks());
        let began = Instant::now();
        let done = panic_batch(addr, PANICS, "run").await;
        wait_until("10 000 close events", || closed(&tally) >= WARM_UP + PANICS).await;
        let took = began.elapsed();
        let mut good = GoodPeer::connect(addr, 0).await.unwrap();
        good.rounds(10).await.unwrap();
        drop(good);
        // Until no more than before (the assertions below tell a difference).
        wait_until("every connection task to end", || {
            alive_tasks() <= tasks_before && server.connection_count() == 0
        })
        .await;
        let (tasks_after, fds_after, rss_after) = (alive_tasks(), open_fds(), rss_kib());
        let blocks_after = live_blocks();

        let stats = server.stats();
        let all = (WARM_UP + PANICS) as u64;
        assert_eq!(done, PANICS);
        assert_eq!(stats.errors.get(ConnErrorKind::HandlerPanic), all);
        assert_eq!(stats.errors.total(), all, "{:?}", stats.errors);
        let (panics, by_reason) = tally.lock().unwrap().clone();
        assert_eq!(panics, WARM_UP + PANICS);
        assert_eq!(
            by_reason.get(&CloseReason::HandlerPanic),
            Some(&(WARM_UP + PANICS))
        );
        figure(
            "handler panics",
            format_args!(
                "{PANICS} handler panics on {PANICS} connections ({AT_ONCE} at a time, after {WARM_UP} to warm up) in {took:?}: \
                 {panics} HandlerPanic errors in all, closes {by_reason:?}; then a good peer echoed 10/10; \
                 tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}, \
                 heap blocks {blocks_before} -> {blocks_after}, RSS {rss_before} -> {rss_after} KiB"
            ),
        );
        // Nothing per connection is kept.
        assert!(
            blocks_after - blocks_before < 1000,
            "heap blocks {blocks_before} -> {blocks_after}"
        );
        assert_eq!(tasks_after, tasks_before, "no task leaked");
        assert_eq!(fds_after, fds_before, "no fd leaked");
        server.cut().await;
    });
}

/// Nobody reads the event stream while one peer causes 1 000 000 errors (a
/// million one-byte frames against a frame limit of 0 with the skip policy), and a
/// good peer exchanges frames on another connection.
///
/// Pass: the server never blocks (the errant peer's final empty frame is echoed, and
/// the good peer is served throughout); `stats()` counts 1 000 000 `FrameTooLong`;
/// the unread subscription counts exactly 1 000 000 minus the 1024 events it keeps
/// as dropped, and holds exactly those 1024, the newest; resident memory grows by
/// less than 1 MiB.
#[test]
fn million_undrained_errors_never_block_and_are_counted_exactly() {
    run(|| async {
        const ERRORS: usize = 1_000_000;
        const CAPACITY: usize = 1024;
        let server = echo_server(|b| {
            let mut config = chitchat_core::ServerConfig::default();
            config.event_capacity = CAPACITY;
            config.conn.frame.max_frame_len = 0;
            config.conn.oversize = OversizePolicy::SkipFrame;
            b.config(config)
        })
        .await;
        let addr = inet(&server);
        let mut events = server.events(); // held, never read
                                          // The good peer sends empty frames, the only ones that fit the limit.
        let mut good = TcpStream::connect(addr).await.unwrap();
        let mut errant = TcpStream::connect(addr).await.unwrap();
        let errant_addr = Addr::from(errant.local_addr().unwrap());
        let rss_before = rss_kib();
        reset_peak_rss();
        let began = Instant::now();

        let pinger = tokio::spawn(async move {
            let mut rounds = 0;
            let mut byte = [0u8; 1];
            while rounds < 200 {
                good.write_all(b"\n").await.unwrap();
                timeout(PROMPT, good.read_exact(&mut byte))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(&byte, b"\n");
                rounds += 1;
            }
            // Kept open until the end: its close would be one more event.
            (rounds, good)
        });
        let chunk = b"x\n".repeat(32 * KIB);
        let mut sent = 0;
        while sent < ERRORS {
            let frames = (chunk.len() / 2).min(ERRORS - sent);
            errant.write_all(&chunk[..2 * frames]).await.unwrap();
            sent += frames;
        }
        errant.write_all(b"\n").await.unwrap();
        let mut byte = [0u8; 1];
        timeout(PROMPT, errant.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        let took = began.elapsed();
        let (pings, _good) = pinger.await.unwrap();
        let rss_after = rss_kib();
        let peak_growth = peak_rss_kib() as i64 - rss_before as i64;

        let stats = server.stats();
        let too_long = stats.errors.get(ConnErrorKind::FrameTooLong);
        assert_eq!(too_long, ERRORS as u64, "{stats:?}");
        let mut kept = 0;
        while let Some(event) = events.try_next() {
            match event {
                ConnEvent::Error(ConnError::FrameTooLong { peer, limit: 0 }) => {
                    assert_eq!(peer, errant_addr, "the newest events are the errant peer's")
                }
                other => panic!("unexpected {other:?}"),
            }
            kept += 1;
        }
        let dropped = events.dropped();
        figure(
            "undrained errors",
            format_args!(
                "{ERRORS} FrameTooLong errors from one peer ({} MB) with the event stream undrained, handled in {took:?} \
                 while a good peer made {pings} round trips; stats: FrameTooLong {too_long}, \
                 dropped {dropped}, kept {kept}; RSS growth {} KiB (peak +{peak_growth} KiB)",
                2 * ERRORS / 1_000_000,
                rss_after as i64 - rss_before as i64
            ),
        );
        assert_eq!(kept, CAPACITY);
        assert_eq!(dropped, (ERRORS - CAPACITY) as u64);
        assert!(peak_growth < 1024, "memory grew by {peak_growth} KiB");
        server.cut().await;
    });
}

/// One outcome of splitting a stream, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Split {
    Frame(Bytes),
    TooLong,
    Truncated(usize),
}

/// The framing contract written independently of the `Framer`, byte by byte: a
/// frame is the bytes before each `\n`, less one `\r` before it; a frame of more
/// than `limit` bytes (its `\r` counted) is one `TooLong`, reported as soon as it
/// passes the limit; bytes left at EOF are `Truncated` unless they passed it.
struct ReferenceSplit {
    limit: usize,
    frame: Vec<u8>,
    /// Bytes of the current frame, also past the limit (then `frame` stops growing).
    len: usize,
}

impl ReferenceSplit {
    fn new(limit: usize) -> Self {
        ReferenceSplit {
            limit,
            frame: Vec::new(),
            len: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8], out: &mut impl FnMut(Split)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (body, delimited) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            let room = (self.limit + 1).saturating_sub(self.frame.len());
            self.frame.extend_from_slice(&body[..body.len().min(room)]);
            let was_over = self.len > self.limit;
            self.len += body.len();
            rest = &rest[body.len()..];
            // Documented: the error comes as soon as the frame passes the limit,
            // before its delimiter is seen.
            if self.len > self.limit && !was_over {
                out(Split::TooLong);
            }
            if delimited {
                rest = &rest[1..];
                if self.len <= self.limit {
                    if self.frame.last() == Some(&b'\r') {
                        self.frame.pop();
                    }
                    out(Split::Frame(Bytes::from(std::mem::take(&mut self.frame))));
                }
                self.frame.clear();
                self.len = 0;
            }
        }
    }

    fn finish(&mut self, out: &mut impl FnMut(Split)) {
        if self.len > 0 && self.len <= self.limit {
            out(Split::Truncated(self.len));
        }
        self.frame.clear();
        self.len = 0;
    }
}

/// Seeded garbage: random bytes with `\n` at random, its density changing every few
/// KiB from one per 4 bytes to one per 100 000, so frames range from empty to far
/// over the limit; `\r\n` pairs and lone `\r` come up too.
struct Garbage {
    rng: Rng,
    /// Bytes left in the current stretch of this density.
    stretch: usize,
    /// Mean gap between delimiters in this stretch.
    mean_gap: u64,
}

impl Garbage {
    fn new(seed: u64) -> Self {
        Garbage {
            rng: Rng::new(seed),
            stretch: 0,
            mean_gap: 1,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        self.rng.fill(buf);
        let mut at = 0;
        while at < buf.len() {
            if self.stretch == 0 {
                self.stretch = self.rng.range(1, 64 * KIB as u64) as usize;
                self.mean_gap =
                    [4, 64, 512, 1000, 1025, 4096, 100_000][self.rng.range(0, 6) as usize];
            }
            let gap = self.rng.range(0, 2 * self.mean_gap) as usize;
            let end = (at + gap).min(buf.len());
            // Random bytes hold '\n' one time in 256; keep delimiters where we put them.
            for b in &mut buf[at..end] {
                if *b == b'\n' {
                    *b = b'.';
                }
            }
            if end < buf.len() {
                buf[end] = b'\n';
                if end > at && self.rng.range(0, 3) == 0 {
                    buf[end - 1] = b'\r';
                }
            }
            self.stretch = self.stretch.saturating_sub(end + 1 - at);
            at = end + 1;
        }
    }
}

/// Through the `Framer`: 100 MiB of seeded garbage, fed in random chunk
/// sizes (1 byte to 128 KiB), under a 1 KiB frame limit.
///
/// Pass: no panic, and the outcomes (frames, over-limit frames, truncation at EOF)
/// are exactly those of the independent reference split, in order.
#[test]
fn hundred_mib_of_garbage_split_exactly_as_the_reference() {
    // Alone in the process like the others: its buffers would blur their figures.
    run(|| async { split_hundred_mib_of_garbage() });
}

fn split_hundred_mib_of_garbage() {
    const TOTAL: usize = 100 * MIB;
    const LIMIT: usize = 1024;
    let seed = 9;
    let began = std::time::Instant::now();
    let mut garbage = Garbage::new(seed);
    let mut chunks = Rng::new(seed ^ 0xC0FFEE);
    let mut config = FrameConfig::new(Delimiter::Byte(b'\n'));
    config.max_frame_len = LIMIT;
    let mut framer = Framer::new(config);
    let mut reference = ReferenceSplit::new(LIMIT);
    let mut expected = std::collections::VecDeque::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 128 * KIB];
    let (mut fed, mut frames, mut too_long) = (0usize, 0u64, 0u64);
    let mut check = |got: Split, expected: &mut std::collections::VecDeque<Split>, fed: usize| {
        let want = expected.pop_front();
        assert_eq!(
            Some(&got),
            want.as_ref(),
            "seed {seed}: outcome differs near byte {fed}"
        );
        match got {
            Split::Frame(_) => frames += 1,
            Split::TooLong => too_long += 1,
            Split::Truncated(_) => {}
        }
    };
    while fed < TOTAL {
        // Log-uniform chunk sizes: as many tiny reads as large ones.
        let bits = chunks.range(0, 17) as u32;
        let len = (chunks.range(1, 1 << bits) as usize).min(TOTAL - fed);
        garbage.fill(&mut chunk[..len]);
        reference.feed(&chunk[..len], &mut |s| expected.push_back(s));
        buf.extend_from_slice(&chunk[..len]);
        fed += len;
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => check(Split::Frame(frame), &mut expected, fed),
                Ok(None) => break,
                Err(FrameError::TooLong { .. }) => check(Split::TooLong, &mut expected, fed),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    reference.finish(&mut |s| expected.push_back(s));
    loop {
        match framer.decode_eof(&mut buf) {
            Ok(Some(frame)) => check(Split::Frame(frame), &mut expected, fed),
            Ok(None) => break,
            Err(FrameError::TooLong { .. }) => check(Split::TooLong, &mut expected, fed),
            Err(FrameError::Truncated { len }) => check(Split::Truncated(len), &mut expected, fed),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        expected.is_empty(),
        "the framer missed {} outcomes",
        expected.len()
    );
    figure(
        "garbage through the framer",
        format_args!(
            "{} MiB of seeded garbage (seed {seed}) in random chunks: {frames} frames and {too_long} over-limit frames, \
             all exactly as the reference split, in {:?}",
            TOTAL / MIB,
            began.elapsed()
        ),
    );
}

/// Through the engine: 8 MiB of the same kind of garbage sent over loopback
/// TCP in random write sizes to a server with a 1 KiB limit and the skip policy.
///
/// Pass: the handler receives exactly the reference split's frames, in order;
/// `FrameTooLong` errors are as many as its over-limit frames, and the bytes left
/// at EOF are reported as one `TruncatedFrame` of the reference's length.
#[test]
fn garbage_over_tcp_is_delivered_exactly_as_the_reference_split() {
    run(|| async {
        const TOTAL: usize = 8 * MIB;
        const LIMIT: usize = 1024;
        let seed = 99;
        let received = Arc::new(Mutex::new(Vec::<Bytes>::new()));
        let sink = received.clone();
        let server = Server::builder(loopback())
            .max_frame_len(LIMIT)
            .oversize(OversizePolicy::SkipFrame)
            .on_frame(move |_ctx: &mut dyn ReadContext<()>, frame| {
                sink.lock().unwrap().push(frame.into_bytes());
            })
            .listen()
            .await
            .unwrap();
        let recorder = Recorder::start(server.events());
        let mut garbage = Garbage::new(seed);
        let mut sizes = Rng::new(seed);
        let mut reference = ReferenceSplit::new(LIMIT);
        let mut expected = Vec::new();
        let mut stream = TcpStream::connect(inet(&server)).await.unwrap();
        let peer = Addr::from(stream.local_addr().unwrap());
        let began = Instant::now();
        let mut chunk = vec![0u8; 64 * KIB];
        let mut sent = 0;
        while sent < TOTAL {
            let len = (sizes.range(1, 64 * KIB as u64) as usize).min(TOTAL - sent);
            garbage.fill(&mut chunk[..len]);
            reference.feed(&chunk[..len], &mut |s| expected.push(s));
            stream.write_all(&chunk[..len]).await.unwrap();
            sent += len;
        }
        reference.finish(&mut |s| expected.push(s));
        stream.shutdown().await.unwrap();
        drain(&mut stream).await;
        recorder
            .wait_for("the connection's close", |events| {
                events.iter().any(|(_, e)| e.as_closed().is_some())
            })
            .await;
        let took = began.elapsed();

        let frames: Vec<Bytes> = expected
            .iter()
            .filter_map(|s| match s {
                Split::Frame(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let too_long = expected.iter().filter(|s| **s == Split::TooLong).count();
        let truncated: Vec<usize> = expected
            .iter()
            .filter_map(|s| match s {
                Split::Truncated(len) => Some(*len),
                _ => None,
            })
            .collect();
        let got = received.lock().unwrap().clone();
        assert_eq!(got.len(), frames.len(), "frame count");
        for (i, (got, want)) in got.iter().zip(&frames).enumerate() {
            assert_eq!(got, want, "seed {seed}: frame {i} differs");
        }
        let errors = recorder.errors();
        let too_long_errors = errors
            .iter()
            .filter(|e| matches!(e, ConnError::FrameTooLong { peer: p, .. } if *p == peer))
            .count();
        let truncated_errors: Vec<usize> = errors
            .iter()
            .filter_map(|e| match e {
                ConnError::TruncatedFrame { len, .. } => Some(*len),
                _ => None,
            })
            .collect();
        assert_eq!(too_long_errors, too_long);
        assert_eq!(truncated_errors, truncated);
        assert_eq!(errors.len(), too_long + truncated.len(), "no other error");
        figure(
            "garbage over TCP",
            format_args!(
                "{} MiB of garbage (seed {seed}) over TCP in random writes: {} frames delivered exactly as the reference, \
                 {too_long_errors} FrameTooLong, truncated at EOF {truncated_errors:?}, in {took:?}",
                TOTAL / MIB,
                got.len()
            ),
        );
        server.cut().await;
    });
}

/// A client of `addr` that forwards every frame it receives to a channel.
async fn forwarding_client(
    addr: SocketAddr,
    configure: impl FnOnce(
        chitchat_tokio::ClientBuilder<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    )
        -> chitchat_tokio::ClientBuilder<tokio::sync::mpsc::UnboundedSender<Bytes>>,
) -> (
    Client<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    tokio::sync::mpsc::UnboundedReceiver<Bytes>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let builder = Client::with_state(Addr::from(addr), tx).on_frame(|ctx, frame| {
        let _ = ctx.state().send(frame.into_bytes());
    });
    let client = configure(builder).connect().await.expect("connect");
    (client, rx)
}

/// A server that accepts and never answers.
///
/// Pass: a client with a 300 ms idle timeout that sent a request is closed with
/// `IdleTimeout` naming the server, no earlier than 300 ms after it began to
/// connect (the client's idle clock starts when its connection is up; a later
/// close is load, not a bug); nothing was delivered to its handler.
#[test]
fn client_of_a_server_that_never_answers_times_out() {
    run(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let idle = Duration::from_millis(300);
        // Before the connect: the client's idle clock starts once it is connected.
        let began = Instant::now();
        let (client, mut inbox) = forwarding_client(addr, |b| b.idle_timeout(idle)).await;
        let (_held, _) = listener.accept().await.unwrap(); // accepted, never read
        client.try_write(b"anybody there?").unwrap();
        let mut events = client.events();
        let closed = timeout(PROMPT, client.closed()).await.unwrap();
        let after = began.elapsed();
        assert_eq!(closed.reason, CloseReason::IdleTimeout);
        let err = events.next().await.unwrap();
        assert!(
            matches!(err.as_error(), Some(ConnError::IdleTimeout { peer, after }) if *peer == Addr::from(addr) && *after == idle),
            "{err:?}"
        );
        assert!(inbox.try_recv().is_err(), "nothing delivered");
        figure(
            "client of a silent server (TCP)",
            format_args!("client with a 300 ms idle timeout closed with IdleTimeout {after:?} after it began to connect"),
        );
        assert!(
            after >= idle,
            "closed after {after:?}, before the idle timeout"
        );
    });
}

/// A server that closes in the middle of its reply,
/// once with a FIN and once with a reset.
///
/// Pass: after a FIN, the client reports `TruncatedFrame` naming the server with the
/// length of the partial reply and closes with `PeerEof`; after a reset, it reports
/// an `Io` error naming the server and closes with `PeerReset`; the handler gets
/// no partial frame either way (the time it took is reported).
#[test]
fn client_of_a_server_that_closes_mid_frame_reports_it() {
    run(|| async {
        for abortive in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 6];
                stream.read_exact(&mut request).await.unwrap();
                stream.write_all(b"whole\npartial rep").await.unwrap();
                if abortive {
                    abort(stream);
                } else {
                    stream.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                }
            });
            let (client, mut inbox) = forwarding_client(addr, |b| b).await;
            let mut events = client.events();
            let began = Instant::now();
            client.try_write(b"hello").unwrap();
            let closed = timeout(PROMPT, client.closed()).await.unwrap();
            let after = began.elapsed();
            server.await.unwrap();
            let first = inbox.recv().await;
            let server_addr = Addr::from(addr);
            let err = events.next().await.unwrap();
            let err = err.as_error().expect("an error first").clone();
            assert_eq!(err.addr(), server_addr);
            let what = if abortive {
                assert_eq!(closed.reason, CloseReason::PeerReset);
                assert_eq!(err.kind(), ConnErrorKind::Io, "{err}");
                "reset"
            } else {
                assert_eq!(closed.reason, CloseReason::PeerEof);
                assert!(
                    matches!(err, ConnError::TruncatedFrame { len: 11, .. }),
                    "{err}"
                );
                "FIN"
            };
            // The whole frame before the cut may or may not have been read before a
            // reset destroyed it; the partial one never reaches the handler.
            if let Some(frame) = first {
                assert_eq!(frame, "whole");
            }
            assert!(inbox.try_recv().is_err(), "no partial frame delivered");
            figure(
                "client of a server closing mid-frame (TCP)",
                format_args!(
                    "{what}: client reported {err} and closed with {:?} after {after:?}",
                    closed.reason
                ),
            );
        }
    });
}

/// The partial-frame budget's scenario: 2000 peers each send 60 KiB of a frame and never finish it,
/// under the default 64 MiB partial-frame budget (frame limit 64 KiB), while 50
/// good peers exchange 100 frames each (checked: none lost). Returns the figures.
struct BudgetOutcome {
    /// (peer, bytes held) of every `Shed` error, all naming holders.
    sheds: Vec<(Addr, usize)>,
    /// Close events with reason `Shed`.
    shed_closes: usize,
    /// Holders still connected once everything settled.
    kept: usize,
    /// Errors of any kind.
    errors: usize,
    /// Peak resident-memory growth of the process, KiB.
    peak_growth: i64,
}

const HOLDERS: usize = 2000;
const HELD: usize = 60 * KIB;
const BUDGET: usize = chitchat_core::DEFAULT_PARTIAL_FRAME_BUDGET;

async fn partial_frame_holders() -> BudgetOutcome {
    let server = echo_server(|b| {
        let mut config = chitchat_core::ServerConfig::default();
        config.event_capacity = 4 * HOLDERS;
        // Every peer of this test comes from 127.0.0.1.
        config.max_connections_per_ip = usize::MAX;
        b.config(config)
    })
    .await;
    let addr = inet(&server);
    let recorder = Recorder::start(server.events());
    let (start, end) = (Arc::new(Barrier::new(51)), Arc::new(Barrier::new(51)));
    let mut good = JoinSet::new();
    good_peers(&mut good, addr, 50, 100, start.clone(), end.clone());
    start.wait().await;
    let rss_before = rss_kib();
    reset_peak_rss();
    let began = Instant::now();

    let partial: Arc<[u8]> = vec![b'h'; HELD].into();
    let mut holders = JoinSet::new();
    for _ in 0..HOLDERS {
        let partial = partial.clone();
        holders.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let local = Addr::from(stream.local_addr().unwrap());
            // A shed peer may see its write cut short by the reset.
            let _ = stream.write_all(&partial).await;
            (local, stream)
        });
    }
    let mut streams = Vec::new();
    while let Some(r) = holders.join_next().await {
        streams.push(r.unwrap());
    }
    end.wait().await;
    let echoed = all_echoed(&mut good, 101).await;
    // Settled: every byte a holder sent was read, or its connection was shed. The
    // server's byte count tells, once the good peers' bytes are taken off: the kept
    // holders' 60 KiB each plus what the shed ones had sent when they were shed.
    let good_bytes: u64 = (0..50)
        .flat_map(|id| (0..=100).map(move |i| payload(id, i).len() as u64 + 1))
        .sum();
    let settled = Instant::now() + PROMPT;
    loop {
        let from_holders = server.stats().bytes_in - good_bytes;
        let shed: Vec<u64> = recorder
            .closes()
            .iter()
            .filter(|(_, c)| c.reason == CloseReason::Shed)
            .map(|(_, c)| c.stats.bytes_in)
            .collect();
        let kept = (HOLDERS - shed.len()) as u64;
        if from_holders == kept * HELD as u64 + shed.iter().sum::<u64>() {
            break;
        }
        assert!(Instant::now() < settled, "the holders never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_after = began.elapsed();
    let peak_growth = peak_rss_kib() as i64 - rss_before as i64;

    let sheds: Vec<(Addr, usize)> = recorder
        .errors()
        .iter()
        .filter_map(|e| match e {
            ConnError::Shed { peer, held, budget } => {
                assert_eq!(*budget, BUDGET);
                Some((*peer, *held))
            }
            _ => None,
        })
        .collect();
    let holder_addrs: HashSet<Addr> = streams.iter().map(|(a, _)| *a).collect();
    assert!(
        sheds
            .iter()
            .all(|(peer, held)| holder_addrs.contains(peer) && *held >= HELD),
        "only full holders are shed"
    );
    let shed_closes = recorder
        .closes()
        .iter()
        .filter(|(_, c)| c.reason == CloseReason::Shed)
        .count();
    assert_eq!(shed_closes, sheds.len());
    let kept = server
        .remote_addrs()
        .iter()
        .filter(|a| holder_addrs.contains(a))
        .count();
    let errors = recorder.errors();
    figure(
        "partial-frame budget",
        format_args!(
            "{HOLDERS} peers x {} KiB unfinished under a {} MiB budget: {} shed (each holding {} KiB, the most), \
             {kept} kept ({} KiB held), settled in {settled_after:?}; peak RSS growth {peak_growth} KiB; \
             50 good peers echoed {echoed} frames, 0 lost, none shed",
            HELD / KIB,
            BUDGET / MIB,
            sheds.len(),
            HELD / KIB,
            kept * HELD / KIB
        ),
    );
    server.cut().await;
    BudgetOutcome {
        sheds,
        shed_closes,
        kept,
        errors: errors.len(),
        peak_growth,
    }
}

/// Every peer shed held the most at the time (the read buffer of a
/// 60 KiB unfinished frame, the most any peer can hold here), got a `Shed` error naming it and the budget,
/// and closed with reason `Shed`; no other error; every holder is kept or shed;
/// the good peers lose nothing and none of them is shed.
#[test]
fn partial_frame_budget_sheds_the_largest_holders_only() {
    run(|| async {
        let outcome = partial_frame_holders().await;
        assert!(!outcome.sheds.is_empty(), "over budget, some are shed");
        assert_eq!(outcome.shed_closes, outcome.sheds.len());
        assert_eq!(outcome.errors, outcome.sheds.len(), "no other error");
        assert_eq!(outcome.kept + outcome.sheds.len(), HOLDERS);
    });
}

/// The partial-frame budget's bound, and its use: the peers kept hold at most the
/// budget together, and each is counted for no more buffer than a frame under the
/// 64 KiB limit needs (64 KiB and one byte), so the budget keeps at least
/// `budget / (64 KiB + 1)` of them (1 023); a read buffer that grew by doubling
/// was counted 120 KiB for such a frame, which kept about half as many. The
/// process's resident memory grows by less than 1.5 times the budget: beyond the
/// buffers the budget counts come those of peers being shed until their tasks
/// end, the allocator's free chunks, and 2 050 connections' own state.
#[test]
fn partial_frame_budget_keeps_held_bytes_and_memory_within_the_budget() {
    run(|| async {
        let BudgetOutcome {
            kept, peak_growth, ..
        } = partial_frame_holders().await;
        assert!(
            kept * HELD <= BUDGET,
            "{kept} holders kept: {} KiB held, over the {} KiB budget",
            kept * HELD / KIB,
            BUDGET / KIB
        );
        let frame_room = chitchat_core::DEFAULT_MAX_FRAME_LEN + 1;
        assert!(
            kept >= BUDGET / frame_room,
            "only {kept} holders kept: each counted for more than {frame_room} bytes"
        );
        assert!(
            peak_growth < (BUDGET / KIB * 3 / 2) as i64,
            "memory grew by {peak_growth} KiB"
        );
    });
}

/// 500 peers streaming frames at `addr` until the server ends their connection;
/// returns once all are streaming, with the number of frames echoed so far.
async fn streaming_peers(addr: SocketAddr, peers: usize) -> (JoinSet<usize>, Arc<Barrier>) {
    let streaming = Arc::new(Barrier::new(peers + 1));
    let mut set = JoinSet::new();
    for id in 0..peers {
        let streaming = streaming.clone();
        set.spawn(async move {
            let peer = match GoodPeer::connect(addr, id).await {
                Ok(mut peer) => peer.rounds(1).await.map(|()| peer),
                Err(err) => Err(err),
            };
            // Reached whatever happened, so that the test never waits for a peer
            // that gave up; a failed peer then fails the test.
            streaming.wait().await;
            let mut peer = peer.unwrap_or_else(|err| panic!("{err}"));
            // Until the server goes: a peer mid-stream, not idle. Bounded all the same.
            for _ in 0..100_000 {
                if peer.rounds(1).await.is_err() {
                    break;
                }
            }
            peer.echoed()
        });
    }
    streaming.wait().await;
    (set, streaming)
}

/// `cut` and graceful `shutdown` (1 s grace) while 500 peers are streaming
/// frames.
///
/// Pass: each returns (a hang fails after `PROMPT`, plus the grace for shutdown;
/// how long it took is reported) and reports all 500 connections (drained +
/// forced); no connection and no server task
/// is left (tasks and fds back to the count before the server started, once the
/// peers are gone); the port can be bound again at once.
#[test]
fn cut_and_graceful_shutdown_under_load_end_every_task_and_free_the_port() {
    run(|| async {
        const PEERS: usize = 500;
        let grace = Duration::from_secs(1);
        let mut lines = Vec::new();
        for graceful in [false, true] {
            let (tasks_before, fds_before) = (alive_tasks(), open_fds());
            let server = echo_server(|b| b).await;
            let addr = inet(&server);
            let (mut peers, _) = streaming_peers(addr, PEERS).await;
            let frames_before = server.stats().frames_in;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let began = Instant::now();
            let report = if graceful {
                timeout(grace + PROMPT, server.shutdown(grace))
                    .await
                    .expect("shutdown returns")
            } else {
                timeout(PROMPT, server.cut()).await.expect("cut returns")
            };
            let took = began.elapsed();
            let frames_during = server.stats().frames_in - frames_before;
            assert_eq!(report.drained + report.forced, PEERS, "{report:?}");
            assert_eq!(server.connection_count(), 0);
            assert_eq!(server.stats().open, 0);
            let mut echoed = 0;
            while let Some(r) = peers.join_next().await {
                echoed += r.unwrap();
            }
            // The address is free at once: rebind it, and serve on it.
            let rebound = Server::builder(Addr::from(addr))
                .on_frame(|ctx, frame| {
                    let _ = ctx.reply(&frame);
                })
                .listen()
                .await
                .expect("the port is free again");
            let mut peer = GoodPeer::connect(addr, 0).await.unwrap();
            peer.rounds(3).await.unwrap();
            drop(peer);
            rebound.cut().await;
            drop((server, rebound));
            wait_until("every task to end", || alive_tasks() <= tasks_before).await;
            let (tasks_after, fds_after) = (alive_tasks(), open_fds());
            let what = if graceful { "shutdown(1 s)" } else { "cut" };
            lines.push(format!(
                "{what} with {PEERS} peers streaming ({frames_during} frames in its last 100 ms) returned in {took:?}, \
                 drained {} forced {}; peers had {echoed} frames echoed; port rebound and served; \
                 tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}",
                report.drained, report.forced
            ));
            assert_eq!(tasks_after, tasks_before, "a task outlived the server");
            assert_eq!(fds_after, fds_before, "an fd outlived the server");
        }
        figure("cut and shutdown under load", lines.join("; "));
    });
}
