//! The child processes of this binary and how they end: each is read line by
//! line, killed when dropped, killed by the kernel when this process dies, and
//! exits by itself when its standard input closes.

use std::io::{self, BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::tally::Tally;
use crate::Args;

/// What a worker process said so far.
#[derive(Debug, Default)]
pub(crate) struct Report {
    started: bool,
    /// From a `listening on ADDR` line.
    listening: Option<SocketAddr>,
    /// Its stdout closed: it exited.
    ended: bool,
    tally: Tally,
}

/// A child process of this binary (a node process, or one side of the floor),
/// run with hidden flags and read line by line: killed when dropped.
pub(crate) struct Worker {
    child: Child,
    /// What it is, for errors: "the node process of nodes 0..100".
    what: String,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    report: Arc<Mutex<Report>>,
}

impl Worker {
    pub(crate) fn node_process(
        range: Range<usize>,
        master: SocketAddr,
        args: &Args,
    ) -> anyhow::Result<Worker> {
        let mut flags = vec![
            "--node-process".to_owned(),
            format!("{}..{}", range.start, range.end),
            "--master".to_owned(),
            master.to_string(),
            "--probe-interval-ms".to_owned(),
            args.probe_interval_ms.to_string(),
        ];
        if let Some(path) = &args.key_file {
            flags.extend(["--key-file".to_owned(), path.display().to_string()]);
        }
        Worker::spawn(
            format!("the node process of nodes {}..{}", range.start, range.end),
            flags,
        )
    }

    pub(crate) fn spawn(
        what: String,
        flags: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<Worker> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(flags).stdin(Stdio::piped());
        let (mut child, stdout) = start_child(&mut command, &what)?;
        let stdin = child.stdin.take().context("no stdin")?;
        let report = Arc::new(Mutex::new(Report::default()));
        let sink = report.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut report = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if line.starts_with("started ") {
                    report.started = true;
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    report.listening = addr.parse().ok();
                } else if let Some(tally) = Tally::parse(&line) {
                    report.tally = tally;
                }
            }
            sink.lock().unwrap_or_else(PoisonError::into_inner).ended = true;
        });
        Ok(Worker {
            child,
            what,
            _stdin: stdin,
            report,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn started(&self) -> bool {
        self.report().started
    }

    pub(crate) fn tally(&self) -> Tally {
        self.report().tally
    }

    /// The address of its `listening on` line, once it has printed one.
    pub(crate) async fn wait_listening(&self, limit: Duration) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(addr) = self.report().listening {
                return Ok(addr);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} printed no `listening on` line within {limit:?}",
                    self.what
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An error once the process has exited.
    pub(crate) fn check_alive(&self) -> anyhow::Result<()> {
        if self.report().ended {
            bail!("{} (pid {}) exited", self.what, self.pid());
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (its arguments and stdin set) as a child that dies with this
/// process, its stderr this process's; returns it and its stdout, to be read line
/// by line. `what` names it in the error.
pub(crate) fn start_child(
    command: &mut Command,
    what: &str,
) -> anyhow::Result<(Child, ChildStdout)> {
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    die_with_parent(command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    Ok((child, stdout))
}

/// Has the kernel send SIGKILL to `command`'s child when this process dies, however
/// it dies (the signal follows the thread that spawned the child: spawn from the
/// main thread, which `#[tokio::main]`'s future runs on).
fn die_with_parent(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: between fork and exec the closure only calls prctl and getppid, both
    // async-signal-safe, and allocates nothing (a raw OS error holds no box).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the prctl: no signal will come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Exits this process when its standard input closes: the parent holds the other
/// end, so when it ends, however it ends, this read returns 0 (the parent also
/// asked the kernel for SIGKILL then).
pub(crate) fn exit_when_stdin_closes() {
    thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}
