//! The heartbeat example, the project's main job: masters that probe their nodes
//! and tell who is alive, suspect, dead or gone (crate `chitchat-heartbeat`).
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin heartbeat
//! head -c 32 /dev/urandom | base64 > cluster.key
//! cargo run --release -p chitchat-examples --bin heartbeat -- master --listen 0.0.0.0:7000 --key-file cluster.key
//! cargo run --release -p chitchat-examples --bin heartbeat -- node --master 10.0.0.1:7000 --id web-1 --key-file cluster.key
//! ```
//!
//! - **No arguments: the demo** (`demo.rs`). A master and 5 nodes in this process,
//!   on loopback, with a fresh key; `node-3` stops at 3 s and starts again at 8 s;
//!   at 10 s every node leaves and a summary follows. Exit code 1 if `node-3` was
//!   never declared dead or never came back.
//! - **`master`** (`master.rs`) and **`node`** (`node.rs`): the same roles in
//!   separate processes, across machines. Each prints `listening on ADDR` first
//!   (for a master, where nodes register; for a node, where it answers probes). A
//!   node may name several masters (`--master A --master B`).
//!
//! On a terminal the demo and the master show a live table (`table.rs`) that
//! redraws from changes. Otherwise every event is one line on stdout (`lines.rs`),
//! `event node=<id> state=<word> at_ms=<ms since the process started>`, the word
//! being `joined`, `suspect`, `alive`, `dead`, `left` or `forgotten` (the master's
//! view of a node), or, printed by a node with ` master=<addr>` appended, `joined`,
//! `renewed`, `master-lost` and `master-back` (its view of that master). The demo
//! ends with `summary ...` lines. Errors and warnings go to stderr, one line each,
//! naming their peer. SIGINT or SIGTERM ends `master` and `node` with exit code 0
//! (a registered node sends `leave` first), as does the end of `--duration`.

mod demo;
mod lines;
mod master;
mod node;
mod table;

use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chitchat_core::Addr;
use chitchat_heartbeat::{HeartbeatConfig, Keyring, NodeId};
use clap::{Args, Parser, Subcommand};

/// Masters that probe their nodes; no arguments runs a 10-second demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Accept node registrations and probe every node.
    Master(master::MasterArgs),
    /// Register with one or more masters and answer their probes.
    Node(node::NodeArgs),
}

/// What every process of a cluster must agree on: the key and the timings.
#[derive(Debug, Args)]
struct Cluster {
    /// The cluster key file: one key per line, each the base64 or hex of at least
    /// 32 random bytes; the first line signs, every line verifies (add a new key
    /// second, then move it first, then drop the old one). Make one with
    /// `head -c 32 /dev/urandom | base64 > cluster.key` and give the same file to
    /// every master and node. Without it the cluster is unauthenticated.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Time between two probe rounds of a master.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.probe_interval),
          value_parser = clap::value_parser!(u64).range(1..))]
    probe_interval_ms: u64,

    /// How long a master waits for a probe's answer.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.probe_timeout))]
    probe_timeout_ms: u64,

    /// Failed probes in a row a node may have; the next one makes it dead.
    #[arg(long, value_name = "N", default_value_t = HeartbeatConfig::default().max_failures)]
    max_failures: u32,

    /// A node declares a master lost after this long without a probe from it.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.master_timeout))]
    master_timeout_ms: u64,

    /// Exit (0) after this many seconds; 0 runs until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    duration: u64,
}

impl Cluster {
    /// The library's settings from the flags; reads the key file.
    fn config(&self) -> anyhow::Result<HeartbeatConfig> {
        let mut config = HeartbeatConfig::default();
        config.probe_interval = Duration::from_millis(self.probe_interval_ms);
        config.probe_timeout = Duration::from_millis(self.probe_timeout_ms);
        config.max_failures = self.max_failures;
        config.master_timeout = Duration::from_millis(self.master_timeout_ms);
        if let Some(path) = &self.key_file {
            config.keyring = Some(Keyring::load(path)?);
        }
        Ok(config)
    }

    /// Resolves when `stop` does (a signal) or `--duration` after `start`,
    /// whichever comes first.
    async fn until_stopped(&self, start: Instant, stop: impl Future) {
        let deadline =
            (self.duration > 0).then(|| (start + Duration::from_secs(self.duration)).into());
        tokio::select! {
            biased;
            _ = stop => {}
            () = sleep_until(deadline) => {}
        }
    }
}

/// A default of the library, in milliseconds: the flags' defaults follow it.
fn default_ms(setting: fn(&HeartbeatConfig) -> Duration) -> u64 {
    millis(setting(&HeartbeatConfig::default()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", lines::sentence(&err));
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    // Event times count from here.
    let start = Instant::now();
    match Cli::parse().mode {
        None => demo::run(start).await,
        Some(Mode::Master(args)) => master::run(start, args).await,
        Some(Mode::Node(args)) => node::run(start, args).await,
    }
}

/// `node-PID`: a node id unique on this host.
fn default_node_id() -> anyhow::Result<NodeId> {
    Ok(NodeId::new(format!("node-{}", std::process::id()))?)
}

/// Prints `listening on ADDR`, the first line of `master` and `node`.
fn print_listening(addr: Addr) -> io::Result<()> {
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}

/// Resolves at `deadline`, or never.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Parses `IP:PORT` or `HOST:PORT` (name lookup) into an address.
async fn resolve(text: &str) -> anyhow::Result<Addr> {
    let found = tokio::net::lookup_host(text)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next());
    match found {
        Some(addr) => Ok(addr.into()),
        None => anyhow::bail!("cannot resolve address {text:?} (expected IP:PORT or HOST:PORT)"),
    }
}
