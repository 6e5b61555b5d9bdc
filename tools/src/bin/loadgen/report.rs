//! What a loadgen run measured, printed for people and as one JSON line for
//! scripts, and the CPU readings it is computed from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat_tools::procfs;

use crate::client::Mode;

/// CPU time of this process and, if known, of the server, at one instant, and how
/// long their threads waited for a CPU while runnable (other work on the cores).
pub struct Snapshot {
    pub at: Instant,
    pub own_cpu: Duration,
    pub own_wait: Option<Duration>,
    pub server_cpu: Option<Duration>,
    pub server_wait: Option<Duration>,
}

impl Snapshot {
    pub fn take(server_pid: Option<u32>) -> Self {
        Snapshot {
            at: Instant::now(),
            own_cpu: procfs::own_cpu_time(),
            own_wait: procfs::runqueue_wait(std::process::id()).ok(),
            server_cpu: server_pid.and_then(|pid| procfs::cpu_time(pid).ok()),
            server_wait: server_pid.and_then(|pid| procfs::runqueue_wait(pid).ok()),
        }
    }
}

/// What a run measured.
pub struct Report {
    pub mode: Mode,
    pub clients: usize,
    pub size: usize,
    pub depth: usize,
    pub connect: Duration,
    pub window: Duration,
    pub frames: u64,
    pub bytes: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mismatches: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub stalled: usize,
    /// Measured frames per client: fewest, median, most.
    pub fairness: Option<(u64, u64, u64)>,
    pub own_cpu: f64,
    pub own_wait: Option<f64>,
    pub server_cpu: Option<f64>,
    pub server_wait: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
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

    pub fn print(&self, addr: SocketAddr) {
        let opt = |value: Option<f64>, scale: f64, unit: &str| match value {
            Some(v) => format!("{:.1}{unit}", v * scale),
            None => "-".to_owned(),
        };
        println!(
            "{:?} against {}: {} clients, {} B frames, depth {}; connected in {:.2} s",
            self.mode,
            addr,
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
