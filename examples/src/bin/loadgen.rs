//! Load generator for newline-delimited echo servers: N clients over TCP, every
//! echoed byte checked. Used by `bench` (see BENCHMARKS.md) against `echo_server`
//! and the baselines, and handy on its own:
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin loadgen -- \
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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use futures::future::join_all;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::{spawn_local, JoinHandle, LocalSet};
use tokio_util::sync::CancellationToken;

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

/// Bytes per read: enough for several 16 KiB frames, so large-frame pipelines are
/// not limited by the generator's reads.
const READ_SIZE: usize = 64 * 1024;

/// Largest `--size`: chitchat's default frame limit (64 KiB payload) plus `\n`.
const MAX_SIZE: usize = 64 * 1024 + 1;

/// Distinct frame bodies; the header makes every frame distinct anyway.
const VARIANTS: usize = 7;

/// Hex digits of the frame header (client << 40 | sequence number).
const HEADER_DIGITS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One frame in flight per client.
    Pingpong,
    /// Up to --depth frames in flight per client.
    Pipeline,
    /// Connections held open, one echo each.
    Idle,
}

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
    if args.clients == 0 || args.depth == 0 || args.connect_batch == 0 {
        bail!("--clients, --depth and --connect-batch must be at least 1");
    }
    check_fd_limit(args.clients)?;
    // One thread: pinned to one core, it is one core's worth of load, and shared
    // state needs no atomics.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = LocalSet::new().block_on(&runtime, drive(&args))?;
    report.print(&args);
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

/// The frames every client sends: `VARIANTS` bodies of `size` bytes each ending in
/// `\n`, with a per-frame header written over their first bytes.
struct Pattern {
    size: usize,
    header_len: usize,
    bodies: Vec<u8>,
}

impl Pattern {
    fn new(size: usize) -> Self {
        // xorshift64: printable letters, the same in every run.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut bodies = Vec::with_capacity(VARIANTS * size);
        for _ in 0..VARIANTS {
            for _ in 0..size - 1 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bodies.push(b'a' + (state % 26) as u8);
            }
            bodies.push(b'\n');
        }
        Pattern {
            size,
            header_len: (size - 1).min(HEADER_DIGITS),
            bodies,
        }
    }

    /// The body of frame `seq` of `client`: it depends on both, so that frames stay
    /// distinct when the header is cut short by a small `--size`.
    fn body(&self, client: u64, seq: u64) -> &[u8] {
        let start = (client.wrapping_add(seq) % VARIANTS as u64) as usize * self.size;
        &self.bodies[start..start + self.size]
    }

    /// The last `header_len` hex digits of `client << 40 | seq`.
    fn header(&self, client: u64, seq: u64) -> [u8; HEADER_DIGITS] {
        let value = client << 40 | seq;
        let mut out = [0; HEADER_DIGITS];
        out[..8].copy_from_slice(&hex8((value >> 32) as u32));
        out[8..].copy_from_slice(&hex8(value as u32));
        out
    }

    /// Appends frame `seq` of `client` to `out`.
    fn push(&self, client: u64, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.body(client, seq));
        let header = self.header(client, seq);
        out[start..start + self.header_len]
            .copy_from_slice(&header[HEADER_DIGITS - self.header_len..]);
    }
}

/// The 8 lowercase hex digits of `value`, computed in a register (this runs for
/// every frame; a digit-by-digit loop cost more than the rest of queueing it).
fn hex8(value: u32) -> [u8; 8] {
    // Spread the nibbles into bytes, most significant first: 0x0a0b0c0d0e0f0g0h.
    let mut x = u64::from(value);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // Bytes above 9 get 'a' - '0' - 10 = 0x27 more than '0'.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

/// Latencies in nanoseconds, in log-linear buckets: 32 per power of two, so a
/// percentile is within 3.2 % of the true value. Fixed size, no allocation per
/// sample.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 5;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 64 << SUB_BITS],
            total: 0,
        }
    }

    fn index(nanos: u64) -> usize {
        let msb = 63 - nanos.max(1).leading_zeros();
        if msb <= SUB_BITS {
            nanos as usize
        } else {
            let shift = msb - SUB_BITS;
            ((shift as u64) << SUB_BITS) as usize + (nanos >> shift) as usize
        }
    }

    /// The middle of bucket `index`, in nanoseconds.
    fn value(index: usize) -> f64 {
        let sub = 1 << SUB_BITS;
        if index < 2 * sub {
            return index as f64;
        }
        let shift = index / sub - 1;
        let mantissa = (index % sub + sub) as f64;
        (mantissa + 0.5) * (1u64 << shift) as f64
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0..=1) in microseconds; `None` without samples.
    fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value(index) / 1000.0);
            }
        }
        None
    }
}

/// What every client task shares (one thread: cells, no atomics).
struct Shared {
    /// Time zero for frame timestamps: they are plain nanosecond counts, cheaper to
    /// store and subtract than `Instant`s.
    epoch: Instant,
    /// Completed frames count toward the results only while this is set.
    measuring: Cell<bool>,
    /// Send no new frames; finish when the ones in flight are back.
    stopping: Cell<bool>,
    /// Idle mode: end the hold.
    release: CancellationToken,
    frames: Cell<u64>,
    /// Measured frames of each client that finished, for fairness.
    per_client: RefCell<Vec<u64>>,
    bytes: Cell<u64>,
    latency: RefCell<Histogram>,
    /// Every completed frame, measured or not, for the progress bar.
    progress: Cell<u64>,
    mismatches: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    /// Idle mode: connections that have seen their first echo.
    ready: Cell<usize>,
    /// Client tasks that ended (cleanly or not).
    finished: Cell<usize>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            epoch: Instant::now(),
            measuring: Cell::new(false),
            stopping: Cell::new(false),
            release: CancellationToken::new(),
            frames: Cell::new(0),
            per_client: RefCell::new(Vec::new()),
            bytes: Cell::new(0),
            latency: RefCell::new(Histogram::new()),
            progress: Cell::new(0),
            mismatches: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            ready: Cell::new(0),
            finished: Cell::new(0),
        }
    }

    /// Nanoseconds since `epoch`.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn error(&self, client: u64, err: &io::Error) {
        self.errors.set(self.errors.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| format!("client {client}: {err}"));
    }
}

/// The frames of one client from queued to echoed: replies are checked against the
/// bytes that were sent with one comparison per read, not one per frame.
struct InFlight {
    size: usize,
    /// Frames queued and not yet fully echoed, starting at a frame boundary.
    /// Capacity for twice the pipeline depth: compacted, never regrown.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already echoed and checked.
    checked: usize,
    /// Bytes at the front of `buf` already handed to the socket.
    written: usize,
    /// Sequence numbers: the next frame to queue, the next to complete.
    next_seq: u64,
    done_seq: u64,
    /// A byte of the frame being received differed from what was sent.
    bad: bool,
}

impl InFlight {
    fn new(size: usize, depth: usize) -> Self {
        InFlight {
            size,
            buf: Vec::with_capacity(2 * depth * size),
            checked: 0,
            written: 0,
            next_seq: 0,
            done_seq: 0,
            bad: false,
        }
    }

    fn count(&self) -> u64 {
        self.next_seq - self.done_seq
    }

    fn unsent(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    fn sent(&mut self, n: usize) {
        self.written += n;
    }

    /// Queues `count` more frames of `client`.
    fn push(&mut self, pattern: &Pattern, client: u64, count: usize) {
        if self.buf.len() + count * self.size > self.buf.capacity() {
            // Drop the whole frames already checked (at most `depth` frames stay).
            let drop = self.checked - self.checked % self.size;
            self.buf.drain(..drop);
            self.checked -= drop;
            self.written -= drop;
        }
        for _ in 0..count {
            pattern.push(client, self.next_seq, &mut self.buf);
            self.next_seq += 1;
        }
    }

    /// Checks bytes just read; returns how many frames they completed and how many
    /// of those differed from what was sent.
    fn check(&mut self, mut data: &[u8]) -> (usize, u64) {
        let mut mismatches = 0;
        if self.checked + data.len() > self.written {
            // More bytes than were sent: a mismatch, whatever they are.
            mismatches += 1;
            data = &data[..self.written - self.checked];
        }
        let size = self.size;
        let from = self.checked;
        let to = from + data.len();
        if data != &self.buf[from..to] {
            // Rare: find which frames differ.
            let mut pos = from;
            while pos < to {
                let end = (pos / size + 1) * size;
                let end = end.min(to);
                if data[pos - from..end - from] != self.buf[pos..end] {
                    self.bad = true;
                }
                if end.is_multiple_of(size) && std::mem::take(&mut self.bad) {
                    mismatches += 1;
                }
                pos = end;
            }
        } else if self.bad && to / size > from / size {
            // The frame that went wrong in an earlier read has ended.
            self.bad = false;
            mismatches += 1;
        }
        let done = to / size - from / size;
        self.checked = to;
        self.done_seq += done as u64;
        (done, mismatches)
    }
}

/// One connection and its frames in flight.
struct Client {
    id: u64,
    stream: TcpStream,
    pattern: Rc<Pattern>,
    shared: Rc<Shared>,
    read_buf: Box<[u8]>,
    frames: InFlight,
    /// When each frame in flight was queued (nanoseconds since `Shared::epoch`),
    /// oldest first.
    sent_at: VecDeque<u64>,
    /// Frames completed in the measured window.
    measured: u64,
}

impl Client {
    fn new(
        id: u64,
        stream: TcpStream,
        depth: usize,
        pattern: Rc<Pattern>,
        shared: Rc<Shared>,
    ) -> Self {
        let size = pattern.size;
        Client {
            id,
            stream,
            pattern,
            shared,
            read_buf: vec![0; READ_SIZE].into_boxed_slice(),
            frames: InFlight::new(size, depth),
            sent_at: VecDeque::with_capacity(depth),
            measured: 0,
        }
    }

    fn has_output(&self) -> bool {
        !self.frames.unsent().is_empty()
    }

    /// Queues `count` more frames.
    fn queue(&mut self, count: usize, now: u64) {
        self.frames.push(&self.pattern, self.id, count);
        self.sent_at.extend(std::iter::repeat_n(now, count));
    }

    /// Writes what the socket takes now.
    fn try_write(&mut self) -> io::Result<()> {
        match self.stream.try_write(self.frames.unsent()) {
            Ok(n) => {
                self.frames.sent(n);
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Reads what the socket has; returns how many frames completed (`None` when
    /// nothing was ready).
    fn try_read(&mut self) -> io::Result<Option<usize>> {
        match self.stream.try_read(&mut self.read_buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "server closed the connection with {} frames in flight",
                    self.frames.count()
                ),
            )),
            Ok(n) => Ok(Some(self.check(n))),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Checks the `n` bytes just read and records the frames they complete.
    fn check(&mut self, n: usize) -> usize {
        let shared = &*self.shared;
        let (done, mismatches) = self.frames.check(&self.read_buf[..n]);
        if mismatches > 0 {
            shared.mismatches.set(shared.mismatches.get() + mismatches);
        }
        if shared.measuring.get() {
            let now = shared.now();
            let mut latency = shared.latency.borrow_mut();
            for sent in self.sent_at.drain(..done) {
                latency.record(now.saturating_sub(sent));
            }
            shared.frames.set(shared.frames.get() + done as u64);
            self.measured += done as u64;
            shared.bytes.set(shared.bytes.get() + n as u64);
        } else {
            self.sent_at.drain(..done);
        }
        shared.progress.set(shared.progress.get() + done as u64);
        done
    }

    /// Pingpong and pipeline: keep `depth` frames in flight until told to stop, then
    /// collect the ones still in flight.
    async fn pump(&mut self, depth: usize) -> io::Result<()> {
        self.queue(depth, self.shared.now());
        loop {
            if self.has_output() {
                self.try_write()?;
            }
            if self.frames.count() == 0 {
                return Ok(());
            }
            let interest = if self.has_output() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let ready = self.stream.ready(interest).await?;
            if ready.is_readable() {
                if let Some(done) = self.try_read()? {
                    if !self.shared.stopping.get() {
                        self.queue(done, self.shared.now());
                    }
                }
            }
        }
    }

    /// Idle: one echo, then hold the connection until released.
    async fn hold(&mut self) -> io::Result<()> {
        self.queue(1, self.shared.now());
        while self.frames.count() > 0 {
            if self.has_output() {
                self.try_write()?;
            }
            let interest = if self.has_output() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self.stream.ready(interest).await?.is_readable() {
                self.try_read()?;
            }
        }
        self.shared.ready.set(self.shared.ready.get() + 1);
        let release = self.shared.release.clone();
        loop {
            tokio::select! {
                _ = release.cancelled() => return Ok(()),
                ready = self.stream.readable() => {
                    ready?;
                    // Nothing should come: anything read is a mismatch, EOF an error.
                    self.try_read()?;
                }
            }
        }
    }

    async fn run(mut self, mode: Mode, depth: usize) {
        let result = match mode {
            Mode::Pingpong => self.pump(1).await,
            Mode::Pipeline => self.pump(depth).await,
            Mode::Idle => self.hold().await,
        };
        if let Err(err) = result {
            self.shared.error(self.id, &err);
        }
        self.shared.per_client.borrow_mut().push(self.measured);
        self.shared.finished.set(self.shared.finished.get() + 1);
    }
}

/// CPU time of this process and, if known, of the server, at one instant, and how
/// long their threads waited for a CPU while runnable (other work on the cores).
struct Snapshot {
    at: Instant,
    own_cpu: Duration,
    own_wait: Option<Duration>,
    server_cpu: Option<Duration>,
    server_wait: Option<Duration>,
}

impl Snapshot {
    fn take(server_pid: Option<u32>) -> Self {
        Snapshot {
            at: Instant::now(),
            own_cpu: own_cpu(),
            own_wait: runqueue_wait(std::process::id()),
            server_cpu: server_pid.and_then(process_cpu),
            server_wait: server_pid.and_then(runqueue_wait),
        }
    }
}

/// Time the live threads of process `pid` spent runnable but waiting for a CPU
/// (second field of /proc/PID/task/TID/schedstat).
fn runqueue_wait(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_ascii_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// User + system time of this process.
fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer, kept by no one.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system time of process `pid`, from /proc/PID/stat (clock-tick resolution).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks,
    ))
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Opens `count` connections, `batch` attempts at a time.
async fn connect_all(
    addr: SocketAddr,
    count: usize,
    batch: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        let attempts = batch.min(count - streams.len());
        let results = join_all((0..attempts).map(|_| TcpStream::connect(addr))).await;
        for result in results {
            let stream = result.with_context(|| format!("cannot connect to {addr}"))?;
            // Frames are written whole, in batches: Nagle would only add latency.
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
    }
    Ok(streams)
}

/// What a run measured.
struct Report {
    mode: Mode,
    clients: usize,
    size: usize,
    depth: usize,
    connect: Duration,
    window: Duration,
    frames: u64,
    bytes: u64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    mismatches: u64,
    errors: u64,
    first_error: Option<String>,
    stalled: usize,
    /// Measured frames per client: fewest, median, most.
    fairness: Option<(u64, u64, u64)>,
    own_cpu: f64,
    own_wait: Option<f64>,
    server_cpu: Option<f64>,
    server_wait: Option<f64>,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
}

impl Report {
    fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.errors == 0 && self.stalled == 0
    }

    fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.window.as_secs_f64().max(1e-9)
    }

    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.window.as_secs_f64().max(1e-9)
    }

    /// Server memory per connection in bytes, idle mode with a server pid only.
    fn rss_per_conn(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        Some((after as f64 - before as f64) * 1024.0 / self.clients as f64)
    }

    fn print(&self, args: &Args) {
        let opt = |value: Option<f64>, scale: f64, unit: &str| match value {
            Some(v) => format!("{:.1}{unit}", v * scale),
            None => "-".to_owned(),
        };
        println!(
            "{:?} against {}: {} clients, {} B frames, depth {}; connected in {:.2} s",
            self.mode,
            args.addr,
            self.clients,
            self.size,
            self.depth,
            self.connect.as_secs_f64()
        );
        if self.mode == Mode::Idle {
            println!(
                "held {} connections for {:.1} s; server RSS {} KiB before, {} KiB after: \
                 {} per connection",
                self.clients,
                self.window.as_secs_f64(),
                self.rss_before_kib.map_or("-".into(), |v| v.to_string()),
                self.rss_after_kib.map_or("-".into(), |v| v.to_string()),
                opt(self.rss_per_conn(), 1.0, " B"),
            );
        } else {
            println!(
                "{:.0} frames/s, {:.2} MB/s echoed, latency p50 {} p99 {} over {:.2} s",
                self.frames_per_sec(),
                self.mb_per_sec(),
                opt(self.p50_us, 1.0, " µs"),
                opt(self.p99_us, 1.0, " µs"),
                self.window.as_secs_f64()
            );
            if let Some((min, median, max)) = self.fairness {
                println!("frames per client: fewest {min}, median {median}, most {max}");
            }
        }
        println!(
            "cpu: loadgen {:.0} %, server {} of one core; waiting for a core while \
             runnable: loadgen {}, server {}",
            self.own_cpu * 100.0,
            opt(self.server_cpu, 100.0, " %"),
            opt(self.own_wait, 100.0, " %"),
            opt(self.server_wait, 100.0, " %"),
        );
        println!(
            "mismatches {}, connection errors {}, stalled clients {}{}",
            self.mismatches,
            self.errors,
            self.stalled,
            self.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first error: {e})"))
        );
        let json = serde_json::json!({
            "mode": format!("{:?}", self.mode).to_lowercase(),
            "clients": self.clients,
            "size": self.size,
            "depth": self.depth,
            "connect_s": self.connect.as_secs_f64(),
            "window_s": self.window.as_secs_f64(),
            "frames": self.frames,
            "bytes": self.bytes,
            "frames_per_sec": self.frames_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "first_error": self.first_error,
            "stalled": self.stalled,
            "frames_per_client_min": self.fairness.map(|f| f.0),
            "frames_per_client_median": self.fairness.map(|f| f.1),
            "frames_per_client_max": self.fairness.map(|f| f.2),
            "loadgen_cpu": self.own_cpu,
            "loadgen_wait": self.own_wait,
            "server_cpu": self.server_cpu,
            "server_wait": self.server_wait,
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
            "rss_per_conn_bytes": self.rss_per_conn(),
        });
        println!("{json}");
    }
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
    let rss_before_kib = args.server_pid.and_then(vm_rss_kib);

    let started = Instant::now();
    let streams = connect_all(args.addr, args.clients, args.connect_batch).await?;
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
        rss_after_kib = args.server_pid.and_then(vm_rss_kib);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_bucket_precision() {
        let mut histogram = Histogram::new();
        for micros in 1..=1000 {
            histogram.record(micros * 1000);
        }
        let p50 = histogram.quantile_us(0.5).unwrap();
        let p99 = histogram.quantile_us(0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.04, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.04, "{p99}");
        assert_eq!(Histogram::new().quantile_us(0.5), None);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_ordered() {
        let mut last = 0;
        for nanos in [0, 1, 31, 32, 63, 64, 65, 1000, 1 << 20, u64::MAX] {
            let index = Histogram::index(nanos);
            assert!(index >= last && index < 64 << SUB_BITS, "{nanos}");
            last = index;
        }
        assert_eq!(Histogram::index(63) + 1, Histogram::index(64));
    }

    #[test]
    fn hex_digits_match_format() {
        for value in [0, 1, 9, 10, 15, 16, 0xdead_beef, u32::MAX, 0x0123_4567] {
            assert_eq!(hex8(value), format!("{value:08x}").as_bytes(), "{value:#x}");
        }
        let pattern = Pattern::new(64);
        assert_eq!(&pattern.header(0xab, 0x12)[..], b"0000ab0000000012");
    }

    #[test]
    fn frames_carry_their_header_and_end_in_the_delimiter() {
        for size in [1, 2, 10, 64, 16 * 1024] {
            let pattern = Pattern::new(size);
            let frame = |client, seq| {
                let mut out = Vec::new();
                pattern.push(client, seq, &mut out);
                out
            };
            let out = frame(3, 5);
            assert_eq!(out.len(), size);
            assert_eq!(out[size - 1], b'\n');
            assert!(!out[..size - 1].contains(&b'\n'));
            if size > 1 {
                // The last header digit is the sequence number's.
                assert_ne!(out, frame(3, 6), "size {size}");
            }
            if size > HEADER_DIGITS {
                assert_ne!(out, frame(4, 5), "size {size}");
            }
        }
    }

    /// Queues `count` frames of 10 bytes and marks them all written.
    fn in_flight(count: usize) -> (InFlight, Vec<u8>) {
        let pattern = Pattern::new(10);
        let mut frames = InFlight::new(10, count);
        frames.push(&pattern, 7, count);
        let sent = frames.unsent().to_vec();
        frames.sent(sent.len());
        (frames, sent)
    }

    #[test]
    fn echo_in_any_pieces_completes_every_frame() {
        for piece in [1, 3, 10, 17, 40] {
            let (mut frames, sent) = in_flight(4);
            let mut done = 0;
            for chunk in sent.chunks(piece) {
                let (completed, mismatches) = frames.check(chunk);
                assert_eq!(mismatches, 0, "pieces of {piece}");
                done += completed;
            }
            assert_eq!(done, 4, "pieces of {piece}");
            assert_eq!(frames.count(), 0);
        }
    }

    #[test]
    fn a_wrong_byte_is_one_mismatch_even_across_reads() {
        let (mut frames, mut echo) = in_flight(3);
        echo[12] ^= 1; // in the second frame, which arrives in two reads
        assert_eq!(frames.check(&echo[..15]), (1, 0));
        assert_eq!(frames.check(&echo[15..]), (2, 1));
    }

    #[test]
    fn bytes_beyond_what_was_sent_are_a_mismatch() {
        let (mut frames, mut echo) = in_flight(1);
        echo.extend_from_slice(b"extra\n");
        assert_eq!(frames.check(&echo), (1, 1));
    }

    #[test]
    fn queueing_past_the_first_capacity_compacts_instead_of_growing() {
        let pattern = Pattern::new(10);
        let mut frames = InFlight::new(10, 2);
        let capacity = frames.buf.capacity();
        for _ in 0..50 {
            frames.push(&pattern, 1, 2);
            let sent = frames.unsent().to_vec();
            frames.sent(sent.len());
            assert_eq!(frames.check(&sent), (2, 0));
        }
        assert_eq!(frames.buf.capacity(), capacity);
    }
}
