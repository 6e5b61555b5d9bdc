//! The `heartbeat master` child and the counts of its event lines.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use anyhow::Context as _;

use crate::worker::start_child;
use crate::{STARTUP, STATES};

/// The `heartbeat master` child and the counts of its event lines.
pub(crate) struct Master {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    counts: Arc<[AtomicU64; STATES.len()]>,
}

impl Master {
    pub(crate) fn spawn(bin: &PathBuf, extra: &[String]) -> anyhow::Result<Master> {
        let mut command = Command::new(bin);
        command
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null());
        let (child, stdout) = start_child(&mut command, &bin.display().to_string())?;
        let counts: Arc<[AtomicU64; STATES.len()]> = Arc::default();
        let (first_line, first) = mpsc::channel();
        let sink = counts.clone();
        // Reads every line, or the master would block on a full pipe.
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = first_line.send(line);
            }
            for line in lines.map_while(Result::ok) {
                let state = line.split(' ').find_map(|f| f.strip_prefix("state="));
                if let Some(i) = STATES.iter().position(|s| Some(*s) == state) {
                    sink[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut master = Master {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            counts,
        };
        let line = first
            .recv_timeout(STARTUP)
            .context("the master printed no `listening on` line")?;
        master.addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("unexpected first line from the master: {line:?}"))?;
        Ok(master)
    }

    pub(crate) fn count(&self, state: &str) -> u64 {
        STATES
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// SIGTERM, then wait: the master exits 0 once it has shut down.
    pub(crate) fn stop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
