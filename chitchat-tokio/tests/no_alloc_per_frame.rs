//! The per-frame hot path does not allocate: an echo server over loopback TCP, with a
//! counting global allocator that counts only the allocations made on the server's
//! runtime thread (the clients run on their own threads and are not counted).
//!
//! Pipelined frames arrive many per read; each frame is lent to the handler where it
//! lies in the one read buffer and the replies go into the one output buffer, so
//! allocations grow with the number of buffer (re)allocations, not with the number
//! of frames.
//!
//! A connection that goes idle gives back its work state (idle memory): the
//! framer and clocks, the read buffer and the output buffer. The thread keeps a
//! few such states for the next connection that wakes, so a client that waits
//! between frames, which makes its connection go idle after every frame, does not
//! make it allocate them again per frame either. Its allocations per frame are
//! printed (run with `--nocapture`) and bounded, as a regression guard.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use chitchat_core::Addr;
use chitchat_tokio::Server;

/// Counts allocations (and reallocations) made by threads that opted in.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the server's runtime thread only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // `try_with`: no panic while the thread-local is being torn down.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes per frame on the wire, the delimiter included.
const FRAME: usize = 64;

/// Pause between frames in `Pace::Paused`: the server finds its socket empty a few
/// microseconds after writing the echo, so this leaves a wide margin (without a
/// pause, a client on another core often sends the next frame before the server
/// looks, and the connection never goes idle).
const PAUSE: Duration = Duration::from_micros(200);

/// `count` frames of `FRAME` bytes: letters, then `\n`.
fn frames(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * FRAME);
    for i in 0..count {
        out.extend((0..FRAME - 1).map(|j| b'a' + ((i + j) % 26) as u8));
        out.push(b'\n');
    }
    out
}

/// How a client sends its frames.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// All at once, in 64 KiB writes, read back concurrently.
    Pipelined,
    /// One frame, wait for its echo, then pause long enough for the server to see
    /// its socket empty and go idle.
    Paused,
}

/// A client on its own threads: sends `count` frames at `pace`, checks the echo,
/// closes. Returns when every echoed byte is back.
fn client(addr: SocketAddr, count: usize, pace: Pace) {
    let input = frames(count);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut echoed = vec![0; input.len()];
    match pace {
        Pace::Pipelined => {
            let mut writer = stream.try_clone().unwrap();
            let sent = input.clone();
            let sender = thread::spawn(move || {
                for chunk in sent.chunks(64 * 1024) {
                    writer.write_all(chunk).expect("write");
                }
            });
            stream.read_exact(&mut echoed).expect("read echo");
            sender.join().unwrap();
        }
        Pace::Paused => {
            for (frame, echo) in input.chunks(FRAME).zip(echoed.chunks_mut(FRAME)) {
                stream.write_all(frame).expect("write");
                stream.read_exact(echo).expect("read echo");
                thread::sleep(PAUSE);
            }
        }
    }
    assert!(echoed == input, "echo differs from what was sent");
}

/// Server-thread allocations while one client sends `count` frames at `pace`
/// (connection setup and teardown included).
fn server_allocations(count: usize, pace: Pace) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = Server::builder("127.0.0.1:0".parse::<Addr>().unwrap())
            .on_frame(|ctx, frame| {
                let _ = ctx.reply(&frame);
            })
            .listen()
            .await
            .expect("bind loopback");
        let addr = server.local_addr().as_inet().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        COUNTED.with(|c| c.set(true));
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        thread::spawn(move || {
            client(addr, count, pace);
            let _ = done_tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(60), done_rx)
            .await
            .expect("client done in time")
            .expect("client thread finished");
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        COUNTED.with(|c| c.set(false));
        server.cut().await;
        allocations
    })
}

/// One test, so that the two measurements never run at the same time.
#[test]
fn echo_allocates_per_read_not_per_frame() {
    // Warm up lazily initialised statics (runtime, thread-locals, tracing) first.
    server_allocations(100, Pace::Pipelined);

    let few = server_allocations(1_000, Pace::Pipelined);
    let many = server_allocations(20_000, Pace::Pipelined);
    eprintln!(
        "pipelined: {few} allocations for 1 000 frames, {many} for 20 000 \
         ({:.4} per frame)",
        many as f64 / 20_000.0
    );
    // 20 000 frames are 1.25 MiB: at least 20 reads of 64 KiB, and far more in
    // practice. One allocation per frame would be 20 000; a handful per read, a
    // few hundred at most.
    assert!(
        many < 20_000 / 20,
        "{many} allocations for 20 000 pipelined frames: allocating per frame?"
    );
    assert!(
        many.saturating_sub(few) < 19_000 / 20,
        "allocations grow with frames: {few} for 1 000, {many} for 20 000"
    );

    let frames = 300;
    let paused = server_allocations(frames, Pace::Paused);
    let per_frame = paused as f64 / frames as f64;
    eprintln!(
        "idle between frames: {paused} allocations for {frames} frames ({per_frame:.2} per frame)"
    );
    // Each frame is read by a connection that had gone idle and given back its
    // work state: it takes it back from the thread's spares, buffers and all (the
    // frame is lent in place, so no shared header is made); connection setup adds
    // a constant. Without the spares it would be 3 per frame.
    assert!(
        paused <= frames as u64 / 10 + 40,
        "{paused} allocations for {frames} frames read after a pause each"
    );
}
