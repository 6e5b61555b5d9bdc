//! Helpers of the reliability suite (`tests/reliability*.rs`): one runtime per test,
//! run one test at a time, process-wide gauges (RSS, peak RSS, open fds, CPU time)
//! read from `/proc/self` and live heap blocks counted by the allocator, an echo server on loopback, well-behaved clients that
//! check every echo, and a recorder of the server's events.
//!
//! The gauges are process-wide, so the tests of one binary take a lock and run one
//! after another: a neighbour's connections would otherwise show up in our figures.
//!
//! The `/proc` reader here is the tests' own, a few lines that panic when a file is
//! missing, rather than chitchat-tools' `procfs`: that crate depends on this one,
//! and a test of a published crate cannot depend on an unpublished one.
#![allow(dead_code)] // each test binary uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use chitchat_core::{Addr, ConnError, ConnEvent, Events};
use chitchat_tokio::{Server, ServerBuilder};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Longest wait for anything that should happen promptly on loopback, generous for
/// a loaded two-core CI machine.
pub const PROMPT: Duration = Duration::from_secs(20);

/// One test at a time: the gauges below are the whole process's.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Longest a test of the suite may take: a hang fails the test instead of the CI
/// run. Every case takes a few seconds at most.
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `test` alone in the process, on a fresh two-worker runtime, as the engine
/// runs in production, and fails it if it takes longer than `TEST_DEADLINE`.
pub fn run<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let _alone = serial();
    silence_deliberate_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(async { timeout(TEST_DEADLINE, test()).await })
        .unwrap_or_else(|_| panic!("the test took longer than {TEST_DEADLINE:?}"));
    // Dropping the runtime here, still holding the lock, ends what the test left.
    drop(runtime);
}

/// Marker in the message of the panics handlers raise on purpose.
pub const DELIBERATE: &str = "deliberate panic";

/// Keeps thousands of deliberate handler panics off stderr; any other panic is
/// printed as usual.
fn silence_deliberate_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !text.is_some_and(|t| t.contains(DELIBERATE)) {
                default(info);
            }
        }));
    });
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Counts the heap blocks alive in the process: what a leak per connection shows
/// as, whatever the load did to the allocator's peak (which resident memory
/// keeps, and which depends on how far behind a loaded machine let the event
/// readers fall).
struct CountingAlloc;

static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counter
// is only a side effect.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Heap blocks allocated and not yet freed, in the whole process.
pub fn live_blocks() -> isize {
    LIVE_BLOCKS.load(Ordering::Relaxed)
}

/// Resident memory of the process now, in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// Highest resident memory since the last [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// Starts a new peak-RSS window (writes 5 to `/proc/self/clear_refs`).
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

/// File descriptors open in the process.
pub fn open_fds() -> usize {
    // Less the one listing the directory.
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        - 1
}

/// Tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// CPU time the process used so far (user + system), from `/proc/self/stat`.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may contain spaces, so split after ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux ABI that exposes /proc.
    Duration::from_millis(ticks * 10)
}

/// Prints a measured figure for RELIABILITY.md (`--nocapture` shows it).
pub fn figure(what: &str, text: impl std::fmt::Display) {
    println!("[reliability] {what}: {text}");
}

/// Where a loopback server listens.
pub fn loopback() -> Addr {
    "127.0.0.1:0".parse().expect("valid address")
}

/// An echo server on loopback, configured by `configure`.
pub async fn echo_server(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Server {
    configure(Server::builder(loopback()).on_frame(|ctx, frame| {
        let _ = ctx.reply(&frame);
    }))
    .listen()
    .await
    .expect("bind loopback")
}

/// The server's address as a std socket address.
pub fn inet<S: Send + Sync + 'static>(server: &Server<S>) -> SocketAddr {
    server.local_addr().as_inet().expect("loopback is IP")
}

/// Everything the server reports, with the time it was seen.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<(Instant, ConnEvent)>>>,
}

impl Recorder {
    /// Drains `stream` in the background until it ends (after a cut or shutdown).
    pub fn start(mut stream: Events<ConnEvent>) -> Recorder {
        let recorder = Recorder::default();
        let events = recorder.events.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                events.lock().unwrap().push((Instant::now(), event));
            }
        });
        recorder
    }

    /// A copy of what was recorded so far.
    pub fn events(&self) -> Vec<(Instant, ConnEvent)> {
        self.events.lock().unwrap().clone()
    }

    /// The errors recorded so far.
    pub fn errors(&self) -> Vec<ConnError> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| e.as_error().cloned())
            .collect()
    }

    /// The close events recorded so far, with their times.
    pub fn closes(&self) -> Vec<(Instant, chitchat_core::CloseEvent)> {
        self.events()
            .into_iter()
            .filter_map(|(at, e)| e.as_closed().cloned().map(|c| (at, c)))
            .collect()
    }

    /// Waits until `done` holds for the recorded events, or panics after `PROMPT`.
    pub async fn wait_for(
        &self,
        what: &str,
        mut done: impl FnMut(&[(Instant, ConnEvent)]) -> bool,
    ) {
        let deadline = Instant::now() + PROMPT;
        loop {
            if done(&self.events.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits until `cond` holds, polling every 5 ms, or panics after `PROMPT`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The payload a well-behaved client sends as its frame `i`: distinct per client and
/// frame, of varying length, never containing the delimiter.
pub fn payload(client: usize, i: usize) -> Vec<u8> {
    let pad = (client * 31 + i * 7) % 200;
    format!("client {client} frame {i} {}", "p".repeat(pad)).into_bytes()
}

/// A well-behaved peer on a raw TCP stream: sends frames one at a time and checks
/// that each echo comes back whole and in order.
pub struct GoodPeer {
    id: usize,
    sent: usize,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: Vec<u8>,
}

impl GoodPeer {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// A description of what failed.
    pub async fn connect(addr: SocketAddr, id: usize) -> Result<GoodPeer, String> {
        let stream = timeout(PROMPT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("client {id}: connect timed out"))?
            .map_err(|e| format!("client {id}: connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(GoodPeer {
            id,
            sent: 0,
            reader: BufReader::new(reader),
            writer,
            line: Vec::new(),
        })
    }

    /// Our end's address.
    pub fn local_addr(&self) -> Addr {
        Addr::from(self.writer.local_addr().expect("local address"))
    }

    /// Frames sent and echoed so far.
    pub fn echoed(&self) -> usize {
        self.sent
    }

    /// Sends `n` frames, one round trip each, checking every echo.
    ///
    /// # Errors
    /// The first frame lost, altered or late.
    pub async fn rounds(&mut self, n: usize) -> Result<(), String> {
        for _ in 0..n {
            let mut frame = payload(self.id, self.sent);
            frame.push(b'\n');
            self.writer
                .write_all(&frame)
                .await
                .map_err(|e| format!("client {}: write {}: {e}", self.id, self.sent))?;
            self.line.clear();
            let read = timeout(PROMPT, self.reader.read_until(b'\n', &mut self.line))
                .await
                .map_err(|_| format!("client {}: echo {} late", self.id, self.sent))?
                .map_err(|e| format!("client {}: read {}: {e}", self.id, self.sent))?;
            if read == 0 {
                return Err(format!("client {}: EOF at frame {}", self.id, self.sent));
            }
            if self.line != frame {
                return Err(format!("client {}: frame {} altered", self.id, self.sent));
            }
            self.sent += 1;
        }
        Ok(())
    }
}

/// Closes `stream` abortively: `SO_LINGER` 0 makes the close send a reset.
pub fn abort(stream: TcpStream) {
    // tokio deprecates set_linger because a non-zero linger blocks on drop; zero
    // does not block.
    #[allow(deprecated)]
    stream
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER");
    drop(stream);
}

/// A small seeded generator (SplitMix64): the suite's random choices, replayable
/// from the seed, with no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}
