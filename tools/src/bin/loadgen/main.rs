//! Load generator for newline-delimited echo servers: N clients over TCP, every
//! echoed byte checked. Used by `bench` (see BENCHMARKS.md) against `echo_server`
//! and the baselines, and handy on its own:
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin loadgen -- \
//!     --addr 127.0.0.1:7878 --mode pipeline --clients 100 --size 64 --depth 32
//! ```
//!
//! Modes:
//! - `pingpong`: one frame in flight per client; frames/s and p50/p99 latency.
//! - `pipeline`: up to `--depth` frames in flight per client, refilled as replies
//!   come in; frames/s, MB/s and latency (which then includes queueing).
//! - `idle`: every client sends one frame, checks its echo, then holds the
//!   connection open for `--duration`; with `--server-pid`, the server's resident
//!   memory per connection.
//!
//! Each frame is `--size` bytes on the wire, the `\n` included: a 16-digit hex
//! header (client and sequence number, so a lost, repeated or misrouted frame
//! shows) and pseudo-random letters. Replies are compared byte for byte with what
//! was sent; a frame with any wrong byte counts as one mismatch.
//!
//! The generator is built not to be the bottleneck: one thread (pin it to its own
//! core), plain tokio sockets driven by readiness, 64 KiB reads, buffers allocated
//! once per client, one clock read per read or write batch, no allocation per
//! frame. It reports its own CPU use and, with `--server-pid`, the server's: the
//! one near 100 % of a core is the one that saturates.
//!
//! Human-readable results go to stdout; the last line is one JSON object for
//! scripts. A progress bar shows on stderr when it is a terminal. The run stops by
//! itself after `--warmup` + `--duration` (plus at most `DRAIN` to collect replies
//! in flight). Exit code 1 on any mismatch, connection error or stalled client.
//!
//! # Layout
//! - `pattern.rs`: the frames sent (header + pseudo-random letters).
//! - `in_flight.rs`: one client's frames from queued to echoed; the byte check.
//! - `histogram.rs`: latency buckets and percentiles.
//! - `client.rs`: one connection driven by readiness; the counters clients share.
//! - `report.rs`: CPU snapshots and the printed and JSON results.

mod client;
mod histogram;
mod in_flight;
mod pattern;
mod report;

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_tools::{procfs, sockets};
use clap::Parser;
use futures::future::join_all;
use tokio::net::TcpStream;
use tokio::task::{spawn_local, JoinHandle, LocalSet};

use client::{Client, Mode, Shared};
use pattern::Pattern;
use report::{Report, Snapshot};

/// After the measured window, how long clients may take to collect the replies
/// still in flight before they count as stalled: far above any loopback round
/// trip, short enough to keep a benchmark run bounded.
const DRAIN: Duration = Duration::from_secs(5);

/// Idle mode: how long every connection may take to open and see its first echo.
/// 10 000 connections open in about a second here; a full listen backlog costs a
/// SYN retry (1 s, then 3 s).
const IDLE_SETUP: Duration = Duration::from_secs(60);

/// Idle mode: pause between the last first echo and the memory reading, so that
/// the server has finished its own work on the last connections.
const IDLE_SETTLE: Duration = Duration::from_millis(500);

/// Largest `--size`: chitchat's default frame limit (64 KiB payload) plus `\n`.
const MAX_SIZE: usize = 64 * 1024 + 1;

/// Drives N echo clients against a server and checks every byte that comes back.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    addr: SocketAddr,

    /// What the clients do.
    #[arg(long, value_enum, default_value_t = Mode::Pingpong)]
    mode: Mode,

    /// Concurrent connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    clients: usize,

    /// Bytes per frame on the wire, the `\n` included (1 = empty frames).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,

    /// Frames in flight per client in pipeline mode (pingpong and idle use 1).
    #[arg(long, value_name = "N", default_value_t = 32)]
    depth: usize,

    /// Measured time, in seconds (idle mode: how long connections are held).
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_secs_or_zero)]
    duration: Duration,

    /// Load before the measured time starts, in seconds.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs_or_zero)]
    warmup: Duration,

    /// The server's process id: report its CPU use over the measured time and, in
    /// idle mode, its resident memory per connection (Linux /proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Connection attempts in flight at once while connecting.
    #[arg(long, value_name = "N", default_value_t = 256)]
    connect_batch: usize,

    /// Against an IPv4 loopback server, connections per source address: clients
    /// dial from 127.0.0.1, then 127.0.0.2, … each holding at most this many, so a
    /// run stays under a server's per-IP connection limit (chitchat's default is
    /// 1 024) and its ephemeral ports.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    per_source_ip: usize,
}

/// Like `chitchat_examples::parse_secs`, zero allowed (no warm-up).
fn parse_secs_or_zero(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("expected a number of seconds, e.g. 3 or 0.5; got {text:?}"))
}

fn main() -> ExitCode {
    chitchat_examples::exit_code(run())
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if !(1..=MAX_SIZE).contains(&args.size) {
        bail!("--size must be 1..={MAX_SIZE} bytes, got {}", args.size);
    }
    if args.clients == 0 || args.depth == 0 || args.connect_batch == 0 || args.per_source_ip == 0 {
        bail!("--clients, --depth, --connect-batch and --per-source-ip must be at least 1");
    }
    check_fd_limit(args.clients)?;
    // One thread: pinned to one core, it is one core's worth of load, and shared
    // state needs no atomics.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = LocalSet::new().block_on(&runtime, drive(&args))?;
    report.print(args.addr);
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Refuses a client count the process cannot open, before any connection is made.
fn check_fd_limit(clients: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and keeps no pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    // Stdio, the runtime's epoll and wake-up descriptors, and some slack.
    let needed = clients as u64 + 32;
    if limit.rlim_cur < needed {
        bail!(
            "{clients} clients need about {needed} file descriptors; the limit is {} \
             (raise it with `ulimit -n`)",
            limit.rlim_cur
        );
    }
    Ok(())
}

/// Opens `count` connections, `batch` attempts at a time; to an IPv4 loopback
/// address, from `per_ip` connections per loopback source address.
async fn connect_all(
    addr: SocketAddr,
    count: usize,
    batch: usize,
    per_ip: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        let attempts = batch.min(count - streams.len());
        let first = streams.len();
        let results = join_all(
            (first..first + attempts).map(|client| sockets::connect_from(addr, client / per_ip)),
        )
        .await;
        for result in results {
            let stream = result.with_context(|| format!("cannot connect to {addr}"))?;
            // Frames are written whole, in batches: Nagle would only add latency.
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
    }
    Ok(streams)
}

/// A progress bar on stderr, when it is a terminal: phase, elapsed time, and the
/// current rate. Returns the bar, to clear it, and the task that updates it.
fn spawn_progress(
    shared: Rc<Shared>,
    total: Duration,
) -> Option<(indicatif::ProgressBar, JoinHandle<()>)> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed:>3} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let updated = bar.clone();
    let task = spawn_local(async move {
        let tick = Duration::from_millis(250);
        let started = Instant::now();
        let mut last = shared.progress.get();
        loop {
            tokio::time::sleep(tick).await;
            let now = shared.progress.get();
            let phase = if shared.stopping.get() {
                "draining"
            } else if shared.measuring.get() {
                "measuring"
            } else {
                "warming up"
            };
            updated.set_position(started.elapsed().as_millis() as u64);
            updated.set_message(format!(
                "{phase}: {:.0} frames/s, {} mismatches",
                (now - last) as f64 / tick.as_secs_f64(),
                shared.mismatches.get()
            ));
            last = now;
        }
    });
    Some((bar, task))
}

async fn drive(args: &Args) -> anyhow::Result<Report> {
    let shared = Rc::new(Shared::new());
    let pattern = Rc::new(Pattern::new(args.size));
    let depth = match args.mode {
        Mode::Pipeline => args.depth,
        Mode::Pingpong | Mode::Idle => 1,
    };
    let rss_before_kib = args
        .server_pid
        .and_then(|pid| procfs::status_kib(pid, "VmRSS").ok());

    let started = Instant::now();
    let streams = connect_all(
        args.addr,
        args.clients,
        args.connect_batch,
        args.per_source_ip,
    )
    .await?;
    let connect = started.elapsed();

    let progress = spawn_progress(shared.clone(), args.warmup + args.duration);
    let mut tasks = Vec::with_capacity(args.clients);
    for (id, stream) in streams.into_iter().enumerate() {
        let client = Client::new(id as u64, stream, depth, pattern.clone(), shared.clone());
        tasks.push(spawn_local(client.run(args.mode, depth)));
    }

    let mut rss_after_kib = None;
    let (start, end) = if args.mode == Mode::Idle {
        let deadline = Instant::now() + IDLE_SETUP;
        while shared.ready.get() + shared.finished.get() < args.clients && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(IDLE_SETTLE).await;
        rss_after_kib = args
            .server_pid
            .and_then(|pid| procfs::status_kib(pid, "VmRSS").ok());
        let start = Snapshot::take(args.server_pid);
        tokio::time::sleep(args.duration).await;
        let end = Snapshot::take(args.server_pid);
        shared.release.cancel();
        (start, end)
    } else {
        tokio::time::sleep(args.warmup).await;
        let start = Snapshot::take(args.server_pid);
        shared.measuring.set(true);
        tokio::time::sleep(args.duration).await;
        shared.measuring.set(false);
        let end = Snapshot::take(args.server_pid);
        (start, end)
    };
    shared.stopping.set(true);

    // Clients still waiting for replies after DRAIN are stalled; dropping the
    // LocalSet afterwards ends them.
    let _ = tokio::time::timeout(DRAIN, join_all(tasks)).await;
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let window = end.at - start.at;
    let cpu_share = |before: Duration, after: Duration| {
        after.saturating_sub(before).as_secs_f64() / window.as_secs_f64().max(1e-9)
    };
    let (p50_us, p99_us) = {
        let latency = shared.latency.borrow();
        (latency.quantile_us(0.50), latency.quantile_us(0.99))
    };
    let first_error = shared.first_error.borrow().clone();
    Ok(Report {
        mode: args.mode,
        clients: args.clients,
        size: args.size,
        depth,
        connect,
        window,
        frames: shared.frames.get(),
        bytes: shared.bytes.get(),
        p50_us,
        p99_us,
        mismatches: shared.mismatches.get(),
        errors: shared.errors.get(),
        first_error,
        stalled: args.clients - shared.finished.get(),
        fairness: {
            let mut counts = shared.per_client.borrow().clone();
            counts.sort_unstable();
            (!counts.is_empty() && args.mode != Mode::Idle).then(|| {
                (
                    counts[0],
                    counts[counts.len() / 2],
                    counts[counts.len() - 1],
                )
            })
        },
        own_cpu: cpu_share(start.own_cpu, end.own_cpu),
        own_wait: start
            .own_wait
            .zip(end.own_wait)
            .map(|(before, after)| cpu_share(before, after)),
        server_wait: start
            .server_wait
            .zip(end.server_wait)
            .map(|(before, after)| cpu_share(before, after)),
        server_cpu: start
            .server_cpu
            .zip(end.server_cpu)
            .map(|(before, after)| cpu_share(before, after)),
        rss_before_kib,
        rss_after_kib,
    })
}
