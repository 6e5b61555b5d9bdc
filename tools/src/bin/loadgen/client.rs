//! One loadgen client: a connection driven by readiness with its frames in flight,
//! and the counters every client of a run shares.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Instant;

use clap::ValueEnum;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::histogram::Histogram;
use crate::in_flight::InFlight;
use crate::pattern::Pattern;

/// Bytes per read: enough for several 16 KiB frames, so large-frame pipelines are
/// not limited by the generator's reads.
const READ_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One frame in flight per client.
    Pingpong,
    /// Up to --depth frames in flight per client.
    Pipeline,
    /// Connections held open, one echo each.
    Idle,
}

/// What every client task shares (one thread: cells, no atomics).
pub struct Shared {
    /// Time zero for frame timestamps: they are plain nanosecond counts, cheaper to
    /// store and subtract than `Instant`s.
    pub epoch: Instant,
    /// Completed frames count toward the results only while this is set.
    pub measuring: Cell<bool>,
    /// Send no new frames; finish when the ones in flight are back.
    pub stopping: Cell<bool>,
    /// Idle mode: end the hold.
    pub release: CancellationToken,
    pub frames: Cell<u64>,
    /// Measured frames of each client that finished, for fairness.
    pub per_client: RefCell<Vec<u64>>,
    pub bytes: Cell<u64>,
    pub latency: RefCell<Histogram>,
    /// Every completed frame, measured or not, for the progress bar.
    pub progress: Cell<u64>,
    pub mismatches: Cell<u64>,
    pub errors: Cell<u64>,
    pub first_error: RefCell<Option<String>>,
    /// Idle mode: connections that have seen their first echo.
    pub ready: Cell<usize>,
    /// Client tasks that ended (cleanly or not).
    pub finished: Cell<usize>,
}

impl Shared {
    pub fn new() -> Self {
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
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn error(&self, client: u64, err: &io::Error) {
        self.errors.set(self.errors.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| format!("client {client}: {err}"));
    }
}

/// One connection and its frames in flight.
pub struct Client {
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
    pub fn new(
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

    pub async fn run(mut self, mode: Mode, depth: usize) {
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
