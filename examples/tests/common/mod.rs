//! What the black-box tests of the example binaries share: a child process whose
//! output is collected in the background and which is killed when the test ends
//! (failed or not), with bounded waits on what it prints and on its exit; and a
//! self-signed certificate for the TLS tests (`certificate`).

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod certificate;

/// Bound on a wait for something that takes well under a second, even on a
/// machine busy with other builds.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running binary with its output collected in the background; killed on drop.
pub struct Proc {
    pub child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The threads copying stdout and stderr; they end when the child exits.
    collectors: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `bin` with `args`, feeding it `stdin` (then closing it) if given.
    pub fn spawn(bin: &str, args: &[&str], stdin: Option<&[u8]>) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {bin}: {err}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_vec();
            // The child may exit without reading it all: a write error is fine.
            thread::spawn(move || pipe.write_all(&input));
        }
        let (stdout, out_thread) = collect(child.stdout.take().unwrap());
        let (stderr, err_thread) = collect(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
            collectors: vec![out_thread, err_thread],
        }
    }

    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    /// The complete lines of stdout so far.
    pub fn lines(&self) -> Vec<String> {
        let stdout = self.stdout.lock().unwrap();
        let end = stdout
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        String::from_utf8_lossy(&stdout[..end])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn stderr(&self) -> String {
        lossy(&self.stderr)
    }

    /// Waits until stderr contains `needle`; returns all of stderr.
    pub fn wait_stderr(&self, needle: &str) -> String {
        poll_until(
            TIMEOUT,
            || Some(self.stderr()).filter(|stderr| stderr.contains(needle)),
            || format!("no {needle:?} on stderr; stderr: {}", self.stderr()),
        )
    }

    /// Waits for the first line of stdout.
    pub fn first_line(&self) -> String {
        poll_until(
            TIMEOUT,
            || self.lines().into_iter().next(),
            || format!("no first line; stderr: {}", self.stderr()),
        )
    }

    /// Parses the first line, `listening on ADDR`, as a socket address.
    pub fn listening(&self) -> SocketAddr {
        let first = self.first_line();
        first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap()
    }

    /// Waits for the exit; returns the status once stdout and stderr are complete.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let stderr = Arc::clone(&self.stderr);
        let child = &mut self.child;
        let status = poll_until(
            within,
            || child.try_wait().unwrap(),
            || format!("still running; stderr: {}", lossy(&stderr)),
        );
        // The pipes closed at the exit: the copies end with all the output.
        for collector in self.collectors.drain(..) {
            collector.join().unwrap();
        }
        status
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `probe` every 10 ms until it returns something, and returns that; panics
/// with `failure()` once `within` has passed.
pub fn poll_until<T>(
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
    failure: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "after {within:?}: {}", failure());
        thread::sleep(Duration::from_millis(10));
    }
}

fn lossy(output: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&output.lock().unwrap()).into_owned()
}

/// Copies everything `pipe` yields into a shared buffer, on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let thread = thread::spawn(move || {
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, thread)
}
