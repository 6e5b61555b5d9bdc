//! A connection that waits for its peer gives back its work state (framer,
//! buffers, clocks of work in progress) and takes a fresh one when input comes:
//! over loopback TCP, what it must keep across such rests (its handler state,
//! its counters, an oversized frame being skipped) is kept.

use std::time::Duration;

use chitchat_core::{CloseReason, ConnEvent, Frame, Handler, OversizePolicy, ReadContext};
use chitchat_tokio::Server;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

/// Longest wait for something that should happen promptly, on a loaded machine.
const PROMPT: Duration = Duration::from_secs(10);

/// Long enough for the server to read what was sent and wait again: the
/// connection rests. Nothing is asserted about this time.
const REST: Duration = Duration::from_millis(30);

/// Numbers the frames of each connection.
struct Numbering;

impl Handler for Numbering {
    type Conn = u32;

    fn on_frame(&self, ctx: &mut dyn ReadContext, seen: &mut u32, frame: Frame<'_>) {
        *seen += 1;
        let _ = ctx.reply(format!("{seen} {}", String::from_utf8_lossy(&frame)).as_bytes());
    }
}

async fn next_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    timeout(PROMPT, reader.read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("still connected");
    line
}

#[tokio::test]
async fn a_connection_resting_between_frames_keeps_its_state_and_its_counts() {
    let server = Server::builder("127.0.0.1:0")
        .handler(Numbering)
        .listen()
        .await
        .unwrap();
    let mut events = server.events();
    let stream = TcpStream::connect(server.local_addr().as_inet().unwrap())
        .await
        .unwrap();
    let mut peer = BufReader::new(stream);
    for (seen, word) in (1..).zip(["one", "two", "three", "four", "five"]) {
        peer.get_mut()
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(next_line(&mut peer).await, format!("{seen} {word}\n"));
        sleep(REST).await;
    }
    drop(peer);
    let closed = loop {
        match timeout(PROMPT, events.next()).await.unwrap().unwrap() {
            ConnEvent::Closed(close) => break close,
            _ => continue,
        }
    };
    assert_eq!(closed.reason, CloseReason::PeerEof);
    assert_eq!((closed.stats.frames_in, closed.stats.frames_out), (5, 5));
    let totals = server.stats();
    assert_eq!((totals.frames_in, totals.frames_out), (5, 5));
    assert_eq!(totals.bytes_in, closed.stats.bytes_in);
    assert_eq!(totals.bytes_out, closed.stats.bytes_out);
    server.cut().await;
}

#[tokio::test]
async fn an_oversized_frame_is_skipped_to_its_end_across_a_rest() {
    let server = Server::builder("127.0.0.1:0")
        .max_frame_len(8)
        .oversize(OversizePolicy::SkipFrame)
        .handler(Numbering)
        .listen()
        .await
        .unwrap();
    let stream = TcpStream::connect(server.local_addr().as_inet().unwrap())
        .await
        .unwrap();
    let mut peer = BufReader::new(stream);
    // Past the limit with no delimiter yet: the server drops it and skips the
    // rest of it, whenever that comes.
    peer.get_mut().write_all(b"0123456789abcdef").await.unwrap();
    sleep(REST).await;
    peer.get_mut().write_all(b"ghij").await.unwrap();
    sleep(REST).await;
    peer.get_mut().write_all(b"klm\nnext\n").await.unwrap();
    assert_eq!(next_line(&mut peer).await, "1 next\n");
    server.cut().await;
}
