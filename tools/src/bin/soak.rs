//! A bounded soak: good and hostile clients at once against one echo server, for
//! `--duration` seconds, with the process's vital signs printed every few seconds.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin soak -- --duration 20
//! ```
//!
//! Without `--connect` it starts its own echo server on loopback (with the defences
//! on: idle, frame and write timeouts) and the first stdout line is `listening on
//! ADDR`; with `--connect ADDR` it soaks an external server (for example
//! `echo_server`), and the server's own counters are not shown. The clients:
//! - good: send frames in bursts and check every echo (content and order);
//! - slowloris: one byte every half second, never a delimiter;
//! - oversize: 1 MiB without a delimiter;
//! - garbage: random bytes with delimiters at random, replies read and dropped;
//! - resets: half a frame, then an abortive close (`SO_LINGER` 0);
//! - non-readers: requests without end, replies never read.
//!
//! Hostile clients reconnect as soon as the server drops them. Every
//! `--interval` seconds one line shows RSS, open fds, live tasks (this process:
//! clients and server), frames echoed to good clients and lost, connections made by
//! each hostile kind, and the server's errors by kind. It stops by itself after
//! `--duration`, prints a summary, and exits 1 if any good client lost a frame.
//! Only loopback addresses are accepted: a soak is a local test.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chitchat_core::{Addr, ConnErrorKind, Stats};
use chitchat_examples::parse_secs;
use chitchat_tokio::Server;
use chitchat_tools::procfs;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};

/// How long a good client waits for an echo before counting its frames lost: far
/// above any echo's time on loopback, even under the soak's load.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// After `--duration`, how long clients get to finish what they are doing.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// Runs good and hostile clients against one echo server and reports its health.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How long to soak, in seconds.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_secs)]
    duration: Duration,

    /// Seconds between two report lines.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    interval: Duration,

    /// Soak this server (a loopback address) instead of starting one in process.
    #[arg(long, value_name = "ADDR")]
    connect: Option<SocketAddr>,

    /// Good clients (each checks every echo).
    #[arg(long, value_name = "N", default_value_t = 50)]
    good: usize,

    /// Clients of each hostile kind.
    #[arg(long, value_name = "N", default_value_t = 5)]
    hostile: usize,
}

/// What the clients did, shared by all of them.
#[derive(Debug, Default)]
struct Tally {
    echoed: AtomicU64,
    lost: AtomicU64,
    /// Connections made, by hostile kind.
    hostile: [AtomicU64; KINDS.len()],
}

/// The hostile kinds, in report order.
const KINDS: [&str; 5] = ["slowloris", "oversize", "garbage", "resets", "non-readers"];

fn main() -> ExitCode {
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    chitchat_examples::init_tracing();
    let args = Args::parse();
    let server = match args.connect {
        Some(addr) if !addr.ip().is_loopback() => {
            bail!("{addr} is not a loopback address: the soak only runs locally")
        }
        Some(_) => None,
        None => Some(start_server().await?),
    };
    let addr = match (&server, args.connect) {
        (Some(server), _) => server.local_addr().as_inet().context("an IP address")?,
        (None, Some(addr)) => addr,
        (None, None) => unreachable!("one of the two is set"),
    };
    let mut stdout = std::io::stdout();
    match &server {
        Some(_) => writeln!(stdout, "listening on {addr}")?,
        None => writeln!(stdout, "soaking {addr}")?,
    }

    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    let deadline = began + args.duration;
    let mut clients = JoinSet::new();
    for id in 0..args.good {
        clients.spawn(good(addr, id, deadline, tally.clone()));
    }
    for n in 0..args.hostile {
        clients.spawn(slowloris(addr, deadline, tally.clone()));
        clients.spawn(oversize(addr, deadline, tally.clone()));
        clients.spawn(garbage(addr, n as u64, deadline, tally.clone()));
        clients.spawn(resets(addr, deadline, tally.clone()));
        clients.spawn(non_reader(addr, deadline, tally.clone()));
    }

    let rss_start = rss_kib();
    let mut peak_rss = rss_start;
    let mut lines = 0;
    while Instant::now() < deadline {
        sleep(args.interval.min(deadline - Instant::now())).await;
        let rss = rss_kib();
        peak_rss = peak_rss.max(rss);
        lines += 1;
        writeln!(
            stdout,
            "{}",
            report(began, &tally, server.as_ref().map(Server::stats))
        )?;
        stdout.flush()?;
    }
    // Clients stop at the deadline; give them a bounded time to finish.
    let wound_down = timeout(WIND_DOWN, async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    clients.abort_all();

    let final_line = report(began, &tally, server.as_ref().map(Server::stats));
    if let Some(server) = &server {
        server.shutdown(Duration::from_secs(2)).await;
    }
    let lost = tally.lost.load(Ordering::Relaxed);
    writeln!(
        stdout,
        "summary: {lines} reports; RSS start {} MiB, peak {} MiB; {final_line}; clients {}",
        mib(rss_start),
        mib(peak_rss),
        if wound_down {
            "all stopped in time"
        } else {
            "still running after the wind-down (aborted)"
        }
    )?;
    if lost > 0 {
        eprintln!("error: good clients lost {lost} frames");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// An echo server with every defence on, as a server on an open network runs.
async fn start_server() -> anyhow::Result<Server> {
    let server = Server::builder("127.0.0.1:0".parse::<Addr>()?)
        .idle_timeout(Duration::from_secs(5))
        .frame_timeout(Duration::from_secs(3))
        .write_timeout(Duration::from_secs(2))
        .on_frame(|ctx, frame| {
            let _ = ctx.reply(&frame);
        })
        .listen()
        .await?;
    Ok(server)
}

/// One report line.
fn report(began: Instant, tally: &Tally, stats: Option<Stats>) -> String {
    let hostile: Vec<String> = KINDS
        .iter()
        .zip(&tally.hostile)
        .map(|(kind, n)| format!("{kind} {}", n.load(Ordering::Relaxed)))
        .collect();
    let server = match stats {
        Some(stats) => {
            let errors: BTreeMap<String, u64> = stats
                .errors
                .iter()
                .map(|(kind, n)| (short(kind), n))
                .collect();
            format!(
                "server: open {} accepted {} frames {} errors {errors:?}",
                stats.open, stats.accepted, stats.frames_in
            )
        }
        None => "server: external".to_owned(),
    };
    format!(
        "t={:>5.1}s rss={} MiB fds={} tasks={} | good: echoed {} lost {} | hostile conns: {} | {server}",
        began.elapsed().as_secs_f64(),
        mib(rss_kib()),
        open_fds(),
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tally.echoed.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
        hostile.join(", "),
    )
}

fn short(kind: ConnErrorKind) -> String {
    format!("{kind:?}")
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Resident memory of this process, in KiB (0 where /proc is missing).
fn rss_kib() -> u64 {
    procfs::status_kib(std::process::id(), "VmRSS").unwrap_or(0)
}

/// Open file descriptors of this process (0 where /proc is missing).
fn open_fds() -> usize {
    procfs::open_fds(std::process::id()).unwrap_or(0)
}

/// A good client: bursts of 10 frames, every echo checked; reconnects if the
/// server drops it (counting what was in flight as lost).
async fn good(addr: SocketAddr, id: usize, deadline: Instant, tally: Arc<Tally>) {
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(addr).await else {
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        'conn: while Instant::now() < deadline {
            let burst: Vec<Vec<u8>> = (0..10)
                .map(|i| {
                    format!(
                        "good {id} {} {}\n",
                        seq + i,
                        "g".repeat((seq + i) as usize % 100)
                    )
                    .into_bytes()
                })
                .collect();
            if writer.write_all(&burst.concat()).await.is_err() {
                tally.lost.fetch_add(10, Ordering::Relaxed);
                break;
            }
            for (i, frame) in burst.iter().enumerate() {
                line.clear();
                let read = timeout(ECHO_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
                if !matches!(read, Ok(Ok(n)) if n > 0) || line != *frame {
                    tally.lost.fetch_add(10 - i as u64, Ordering::Relaxed);
                    break 'conn;
                }
                tally.echoed.fetch_add(1, Ordering::Relaxed);
            }
            seq += 10;
        }
    }
}

fn count(tally: &Tally, kind: usize) {
    tally.hostile[kind].fetch_add(1, Ordering::Relaxed);
}

/// Connects, or waits a little and returns `None` (the server may be refusing).
async fn dial(addr: SocketAddr) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(stream) => Some(stream),
        Err(_) => {
            sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// One byte every half second, never a delimiter: only a frame deadline stops it.
async fn slowloris(addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) {
    while Instant::now() < deadline {
        let Some(mut stream) = dial(addr).await else {
            continue;
        };
        count(&tally, 0);
        while Instant::now() < deadline && stream.write_all(b"s").await.is_ok() {
            sleep(Duration::from_millis(500)).await;
        }
    }
}

/// 1 MiB without a delimiter, then waits to be closed.
async fn oversize(addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) {
    let chunk = vec![b'o'; 64 * 1024];
    while Instant::now() < deadline {
        let Some(mut stream) = dial(addr).await else {
            continue;
        };
        count(&tally, 1);
        for _ in 0..16 {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let mut sink = Vec::new();
        let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
    }
}

/// Random bytes with delimiters at random for a second per connection; replies are
/// read and dropped, so it is not also a non-reader.
async fn garbage(addr: SocketAddr, seed: u64, deadline: Instant, tally: Arc<Tally>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64: cheap, seeded, good enough for noise.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        let Some(stream) = dial(addr).await else {
            continue;
        };
        count(&tally, 2);
        let (mut reader, mut writer) = stream.into_split();
        let drain = tokio::spawn(async move {
            let mut sink = [0u8; 8192];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let until = (Instant::now() + Duration::from_secs(1)).min(deadline);
        while Instant::now() < until {
            let len = 1 + (next() % buf.len() as u64) as usize;
            for b in &mut buf[..len] {
                *b = next() as u8;
            }
            if writer.write_all(&buf[..len]).await.is_err() {
                break;
            }
            sleep(Duration::from_millis(next() % 20)).await;
        }
        drop(writer);
        drain.abort();
    }
}

/// Half a frame, then an abortive close; again and again.
async fn resets(addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) {
    while Instant::now() < deadline {
        let Some(mut stream) = dial(addr).await else {
            continue;
        };
        count(&tally, 3);
        let _ = stream.write_all(b"half a fra").await;
        // SO_LINGER 0: the close sends a reset. (tokio deprecates set_linger because
        // a non-zero linger blocks on drop; zero does not.)
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        drop(stream);
        sleep(Duration::from_millis(20)).await;
    }
}

/// Requests without end, replies never read: the server must bound what it holds
/// for it and drop it.
async fn non_reader(addr: SocketAddr, deadline: Instant, tally: Arc<Tally>) {
    let request = [vec![b'n'; 1023], vec![b'\n']].concat();
    while Instant::now() < deadline {
        let Some(mut stream) = dial(addr).await else {
            continue;
        };
        count(&tally, 4);
        // Bounded per connection: 64 MiB, or until the server stops taking them.
        for _ in 0..64 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left.min(Duration::from_secs(5)), stream.write_all(&request)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
}
