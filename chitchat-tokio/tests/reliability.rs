//! The reliability suite on loopback TCP: hostile input, overload and faults thrown
//! at one server while well-behaved peers keep talking to it (issue 7, cases 1, 2,
//! 4-9, 10 on TCP, 14 and 15; case 12 runs in its own process, see
//! `reliability_fd_exhaustion.rs`; the cases where time matters run on the in-memory
//! network, in chitchat-testkit's `reliability_sim.rs`).
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
    Addr, CloseReason, ConnError, ConnErrorKind, Delimiter, Event, FrameConfig, FrameError,
    Framer, OversizePolicy, ReadContext,
};
use chitchat_tokio::{Client, Server};
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
            if let Ok(peer) = &mut peer {
                peer.rounds(1).await?;
            }
            start.wait().await;
            let mut peer = peer?;
            let result = peer.rounds(rounds).await;
            end.wait().await;
            result.map(|()| peer.echoed())
        });
    }
}

/// Collects the good peers' results; panics on the first loss.
async fn all_echoed(set: &mut JoinSet<Result<usize, String>>, each: usize) -> usize {
    let mut total = 0;
    while let Some(result) = set.join_next().await {
        let echoed = result.expect("good peer task").unwrap_or_else(|e| panic!("{e}"));
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

/// Case 1. One peer sends 1 MiB without a delimiter to a server with a 64 KiB frame
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
                events.iter().any(|(_, e)| {
                    e.as_closed().is_some_and(|c| c.peer == hostile_addr)
                })
            })
            .await;
        let closed_after = began.elapsed();
        end.wait().await;
        let rss_after = rss_kib();
        let peak = peak_rss_kib();
        let echoed = all_echoed(&mut good, 51).await;

        assert!(got.is_empty(), "the hostile peer gets nothing back");
        let errors = recorder.errors();
        assert_eq!(errors.len(), 1, "one error, for the hostile peer: {errors:?}");
        assert!(
            matches!(errors[0], ConnError::FrameTooLong { peer, limit } if peer == hostile_addr && limit == 64 * KIB),
            "{}",
            errors[0]
        );
        assert!(errors[0].to_string().contains(&hostile_addr.to_string()));
        let closes = recorder.closes();
        assert_eq!(closes.len(), 1, "only the hostile peer closed so far");
        assert_eq!(closes[0].1.reason, CloseReason::FrameTooLong);
        let growth = rss_after as i64 - rss_before as i64;
        figure(
            "case 1",
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

/// Case 2. EOF mode (one message per connection, ended by the peer's shutdown): one
/// peer sends a 1 MiB message to a server with a 64 KiB limit while 100 others each
/// send 5 messages on 5 connections.
///
/// Pass: as case 1: `FrameTooLong` naming that peer, which gets nothing back; every
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
            stream.write_all(&message).await.map_err(|e| e.to_string())?;
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
                events.iter().any(|(_, e)| {
                    e.as_closed().is_some_and(|c| c.peer == hostile_addr)
                })
            })
            .await;
        let closed_after = began.elapsed();
        let echoed = all_echoed(&mut good, 5).await;
        let rss_after = rss_kib();
        let peak = peak_rss_kib();

        assert!(got.is_empty(), "the hostile peer gets nothing back");
        let errors = recorder.errors();
        assert_eq!(errors.len(), 1, "one error, for the hostile peer: {errors:?}");
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
            "case 2",
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
