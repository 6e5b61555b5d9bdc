//! What a master costs: runs `heartbeat master` as a child process, registers N
//! nodes with it from this process over loopback TCP, and measures the master's CPU
//! share and memory while it probes them at the default 3 s interval.
//!
//! ```text
//! cargo build --release -p chitchat-examples --bin heartbeat -p chitchat-tools --bin heartbeat_bench
//! target/release/heartbeat_bench --nodes 1000 --duration 60
//! ```
//!
//! The master runs alone in its process, so `/proc/<pid>/stat` (user + system time)
//! and `/proc/<pid>/status` (`VmRSS`, `VmHWM`) are its own figures: the CPU share is
//! the CPU time it used over the measurement window divided by the window's wall
//! time (100 % = one core busy). The window opens once every node has joined and
//! one more probe round has passed (every probe connection is open by then), and
//! lasts `--duration` seconds. The master's event lines are counted: any `suspect`
//! or `dead` during the window is reported, since it would mean the machine, not
//! the nodes, failed.
//!
//! The nodes all register from 127.0.0.1, so the master is started with
//! `--register-rate` at the node count (its default, 100 a second per address, would
//! make the start of a large run take minutes) and `--max-nodes` at least the node
//! count. `--key-file` gives master and nodes one cluster key: every message signed
//! and checked.
//!
//! File descriptors: the master holds one probe connection per node, this process
//! a listener and the accepted probe connection per node, plus short-lived
//! registration connections. Both raise their soft limit to the hard one; with the
//! usual 20 000, 1000 nodes take about 3000 here and 1000 in the master.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_heartbeat::{HeartbeatConfig, Node, NodeId};
use chitchat_tokio::Tcp;
use chitchat_tools::procfs;
use clap::Parser;

/// Runs a `heartbeat master` child with N nodes and reports its CPU share and RSS.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Nodes registered with the master.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    nodes: usize,

    /// Length of the measurement window, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    duration: u64,

    /// The `heartbeat` binary to run as the master [default: the one beside this
    /// binary].
    #[arg(long, value_name = "PATH")]
    master_bin: Option<PathBuf>,

    /// Time between two probe rounds (the master's and the nodes' setting).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    probe_interval_ms: u64,

    /// A cluster key file for the master and every node (see `heartbeat master
    /// --help` for how to make one).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

/// Bound on the start of the master and on all nodes joining.
const STARTUP: Duration = Duration::from_secs(60);

/// The states a master's event line may carry, counted as they come.
const STATES: [&str; 5] = ["joined", "suspect", "alive", "dead", "left"];

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let fd_limit =
        chitchat_tools::sockets::raise_fd_limit().context("cannot raise the open-file limit")?;
    // A listener and an accepted probe connection per node, a registration
    // connection per node at startup, and some room.
    let needed = args.nodes * 3 + 64;
    if needed > fd_limit {
        bail!(
            "{} nodes need about {needed} file descriptors in this process; the limit is {fd_limit}",
            args.nodes
        );
    }
    let master_bin = match args.master_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("heartbeat"),
    };
    if !master_bin.exists() {
        bail!(
            "no master binary at {} (build it: cargo build --release -p chitchat-examples --bin heartbeat)",
            master_bin.display()
        );
    }
    let mut config = HeartbeatConfig::default();
    config.probe_interval = Duration::from_millis(args.probe_interval_ms);
    if let Some(path) = &args.key_file {
        config.keyring = Some(
            chitchat_heartbeat::Keyring::load(path)
                .with_context(|| format!("cannot load the key file {}", path.display()))?,
        );
    }

    let mut master_args = vec![
        "--probe-interval-ms".to_owned(),
        args.probe_interval_ms.to_string(),
        "--register-rate".to_owned(),
        args.nodes.max(100).to_string(),
        "--max-nodes".to_owned(),
        args.nodes.max(config.max_nodes).to_string(),
    ];
    if let Some(path) = &args.key_file {
        master_args.extend(["--key-file".to_owned(), path.display().to_string()]);
    }
    let mut master = Master::spawn(&master_bin, &master_args)?;
    let addr = master.addr;
    println!(
        "heartbeat_bench: master {} (pid {}) with {} nodes on loopback TCP, probe every {} ms, timeout {} ms",
        addr,
        master.child.id(),
        args.nodes,
        millis(config.probe_interval),
        millis(config.probe_timeout)
    );

    let started = Instant::now();
    let mut nodes = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let node = Node::builder(NodeId::new(format!("bench-{i:05}"))?, addr)
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .config(config.clone())
            .start(&Tcp, Tcp)
            .await?;
        nodes.push(node);
    }
    let join_deadline = Instant::now() + STARTUP;
    while master.count("joined") < args.nodes as u64 {
        if Instant::now() > join_deadline {
            bail!(
                "only {} of {} nodes joined within {STARTUP:?}",
                master.count("joined"),
                args.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let joined_in = started.elapsed();
    println!(
        "joined: {} nodes in {:.2} s",
        args.nodes,
        joined_in.as_secs_f64()
    );
    // One more round, so that every node has a prober and an open connection.
    tokio::time::sleep(config.probe_interval + config.probe_timeout).await;

    let pid = master.child.id();
    let before = (
        Instant::now(),
        procfs::cpu_time(pid)?.as_secs_f64(),
        procfs::cpu_time(std::process::id())?.as_secs_f64(),
    );
    let counts_before: Vec<u64> = STATES.iter().map(|s| master.count(s)).collect();
    let mut peak_rss = 0;
    let window = Duration::from_secs(args.duration);
    let end = Instant::now() + window;
    while Instant::now() < end {
        peak_rss = peak_rss.max(procfs::status_kib(pid, "VmRSS")?);
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
    }
    let after = (
        Instant::now(),
        procfs::cpu_time(pid)?.as_secs_f64(),
        procfs::cpu_time(std::process::id())?.as_secs_f64(),
    );
    let rss = procfs::status_kib(pid, "VmRSS")?;
    peak_rss = peak_rss.max(rss);
    let hwm = procfs::status_kib(pid, "VmHWM")?;
    let fds = procfs::open_fds(pid)?;

    let wall = (after.0 - before.0).as_secs_f64();
    let master_cpu = after.1 - before.1;
    let nodes_cpu = after.2 - before.2;
    let rounds = wall / config.probe_interval.as_secs_f64();
    let probes = rounds * args.nodes as f64;
    println!("window: {wall:.1} s, about {rounds:.0} rounds, {probes:.0} probes");
    println!(
        "master: cpu {:.2} % of one core ({master_cpu:.2} s user+system; {:.1} us per probe), \
         rss {:.1} MiB (max sampled {:.1} MiB, high-water {:.1} MiB), {fds} open fds",
        100.0 * master_cpu / wall,
        1e6 * master_cpu / probes,
        rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "nodes (this process): cpu {:.2} % of one core",
        100.0 * nodes_cpu / wall
    );
    let in_window = |state: &str| {
        let i = STATES.iter().position(|s| *s == state).unwrap_or(0);
        master.count(state) - counts_before[i]
    };
    let changes: Vec<String> = STATES
        .iter()
        .map(|state| format!("{state} {}", in_window(state)))
        .collect();
    println!("master events in the window: {}", changes.join(", "));

    let failed = in_window("suspect") + in_window("dead");
    drop(nodes);
    master.stop();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {failed} suspect or dead events: the machine was too busy to measure");
        ExitCode::FAILURE
    })
}

/// The `heartbeat master` child and the counts of its event lines.
struct Master {
    child: Child,
    addr: SocketAddr,
    counts: Arc<[AtomicU64; STATES.len()]>,
}

impl Master {
    fn spawn(bin: &PathBuf, extra: &[String]) -> anyhow::Result<Master> {
        let mut child = Command::new(bin)
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
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

    fn count(&self, state: &str) -> u64 {
        STATES
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// SIGTERM, then wait: the master exits 0 once it has shut down.
    fn stop(&mut self) {
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
