//! What a master costs: runs `heartbeat master` as a child process, registers N
//! nodes with it from child processes of this binary over loopback TCP, and
//! measures the master's CPU share and memory while it probes them at the default
//! 3 s interval, then the same probes sent by plain tokio code (the floor).
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
//! # Node processes
//!
//! The nodes run in `--node-processes` children of this binary, each started as
//! `heartbeat_bench --node-process FIRST..END --master ADDR` (hidden flags) with
//! nodes `FIRST` to `END - 1`. A node process raises its open-file soft limit to the
//! hard one and needs about 3 descriptors per node (its listener, the accepted probe
//! connection, a registration connection while it registers), so by default there
//! are as few processes as that limit allows: with the usual 20 000, one per 6 645
//! nodes. A master needs one descriptor per node, so this lets one master be
//! measured up to its own limit. A node process prints `started N` once its nodes
//! are up, then a `tally ...` line every second (how many nodes stand where, probes
//! answered); the parent sums them. It exits when its standard input closes (the
//! parent holds the other end), and the kernel kills it, and the master, when the
//! parent dies: no process outlives a run.
//!
//! # Addresses
//!
//! Node `i` listens on its own loopback address, `127.1.x.y` with `x = i / 254` and
//! `y = i % 254 + 1`: each has its own ports, so 20 000 listeners do not crowd
//! 127.0.0.1's ephemeral range, which the master's probe connections and the
//! registrations draw from. The nodes register from 127.0.0.1 (the system picks the
//! source), so the master is started with `--allow-foreign-probe-addrs` (the probe
//! address is not the registering host's), `--register-rate` at the node count
//! (its default, 100 a second per address, would make the start of a large run take
//! minutes) and `--max-nodes` at least the node count. `--key-file` gives master and
//! nodes one cluster key: every message signed and checked.
//!
//! # The floor
//!
//! After the master's window, unless `--no-floor`, the same exchange is measured
//! without the library, over as many loopback connections: a responder process
//! answers each probe line with an ack line of a real probe's and ack's length,
//! and a prober process sends one probe per connection per round from one task
//! and counts the acks (`chitchat_tools::probe_floor::tcp`). The prober's CPU per
//! probe, over a window as long as the master's, is what the kernel and tokio alone
//! cost; the line puts the master's next to it (`master / floor`).
//!
//! `--udp-floor` measures a second floor the same way, for a probe path the master
//! does not have: one UDP socket sending to a socket per node (`127.1.x.y`) and
//! receiving their acks, 64 datagrams a `sendmmsg` or `recvmmsg`
//! (`chitchat_tools::probe_floor::udp`).
//!
//! # File descriptors
//!
//! The master holds one probe connection per node, up to
//! `registration_connections` (1024) registration connections and a reserve of 64:
//! `heartbeat master` lowers `--max-nodes` to fit its limit, 18 912 under 20 000.
//! This binary refuses a node count the master would not take.
//!
//! # Files
//!
//! `main.rs` runs the master and measures it; `master.rs` is the master child and
//! the counts of its event lines; `node_process.rs` a node process; `tally.rs` the
//! line a node process prints every second; `floor.rs` the floors; `worker.rs` the
//! child processes of this binary and how they end.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_heartbeat::HeartbeatConfig;
use chitchat_tools::procfs;
use clap::Parser;

mod floor;
mod master;
mod node_process;
mod tally;
mod worker;

use node_process::node_process;

use floor::FloorTransport;
use master::Master;
use tally::Tally;
use worker::Worker;

/// Runs a `heartbeat master` child with N nodes and reports its CPU share and RSS,
/// then the same probes sent by plain tokio code over as many connections.
///
/// The nodes run in child processes of this binary (see `--node-processes`); every
/// child, master or nodes, is killed when this process ends.
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

    /// Child processes the nodes are spread over, in even ranges. Each re-runs this
    /// binary as `heartbeat_bench --node-process FIRST..END --master ADDR` (hidden
    /// flags), raises its open-file soft limit to the hard one and needs about 3
    /// descriptors per node; it exits when this process ends. [default: as few as
    /// the open-file limit allows, one per 6 645 nodes under 20 000]
    #[arg(long, value_name = "N")]
    node_processes: Option<usize>,

    /// Skip the floor: the same probes and acks over the same number of loopback
    /// connections, sent and counted by plain tokio code (see below).
    #[arg(long)]
    no_floor: bool,

    /// Also measure the floor of a datagram probe path: one UDP socket probing
    /// every node, `sendmmsg` and `recvmmsg` 64 datagrams a call (the master has no
    /// such path; this tells what one would cost).
    #[arg(long)]
    udp_floor: bool,

    /// Run as the floor's responder (`tcp` or `udp`), for `--nodes` nodes.
    #[arg(long, value_name = "TRANSPORT", hide = true)]
    floor_respond: Option<FloorTransport>,

    /// Run as the floor's prober (`tcp` or `udp`), for `--nodes` nodes of the
    /// responder at `--floor-target`.
    #[arg(long, value_name = "TRANSPORT", hide = true, requires = "floor_target")]
    floor_probe: Option<FloorTransport>,

    /// The responder the floor's prober probes (over UDP: its first node).
    #[arg(long, value_name = "ADDR", hide = true)]
    floor_target: Option<SocketAddr>,

    /// Run as a node process: nodes FIRST to END - 1, registering with `--master`.
    #[arg(long, value_name = "FIRST..END", hide = true, value_parser = parse_range, requires = "master")]
    node_process: Option<Range<usize>>,

    /// The master a node process registers with.
    #[arg(long, value_name = "ADDR", hide = true)]
    master: Option<SocketAddr>,
}

/// Bound on the start of the master, of the node processes, and on all nodes
/// joining.
const STARTUP: Duration = Duration::from_secs(60);

/// The states a master's event line may carry, counted as they come.
const STATES: [&str; 5] = ["joined", "suspect", "alive", "dead", "left"];

/// Descriptors a node takes in a node process: its listener, the accepted probe
/// connection, and a registration connection while it registers.
const FDS_PER_NODE: usize = 3;

/// Nodes a node process starts at once, waiting for them to be registered before
/// it starts more: three node processes (the largest run here) stay under the
/// master's 1 024 registration connections, so no registration is turned away and
/// the master's memory is not measured after a burst of refused connections.
const NODES_PER_WAVE: usize = 256;

/// Descriptors a node process keeps beyond its nodes': stdio, the runtime's own.
const NODE_PROCESS_RESERVE: usize = 64;

/// Descriptors `heartbeat master` keeps beyond its nodes' and its registrations'
/// (`FD_RESERVE` in `examples/src/bin/heartbeat/master.rs`).
const MASTER_FD_RESERVE: usize = 64;

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let fd_limit =
        chitchat_tools::sockets::raise_fd_limit().context("cannot raise the open-file limit")?;
    let mut config = HeartbeatConfig::default();
    config.probe_interval = Duration::from_millis(args.probe_interval_ms);
    if let Some(path) = &args.key_file {
        config.keyring = Some(
            chitchat_heartbeat::Keyring::load(path)
                .with_context(|| format!("cannot load the key file {}", path.display()))?,
        );
    }
    if let Some(transport) = args.floor_respond {
        return floor::floor_respond(transport, args.nodes).await;
    }
    if let (Some(transport), Some(target)) = (args.floor_probe, args.floor_target) {
        return floor::floor_probe(transport, args.nodes, target, config.probe_interval).await;
    }
    match (&args.node_process, args.master) {
        (Some(range), Some(master)) => node_process(range.clone(), master, config, fd_limit).await,
        _ => bench(args, config, fd_limit).await,
    }
}

/// The parent: the master, the node processes, the measurement.
async fn bench(args: Args, config: HeartbeatConfig, fd_limit: usize) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let master_room = fd_limit.saturating_sub(config.registration_connections + MASTER_FD_RESERVE);
    if args.nodes > master_room {
        bail!(
            "{} nodes do not fit one master: under the open-file limit {fd_limit} it takes \
             {master_room} (one probe connection per node, plus {} registration connections \
             and {MASTER_FD_RESERVE} in reserve)",
            args.nodes,
            config.registration_connections
        );
    }
    let per_process = nodes_per_process(fd_limit);
    let processes = args
        .node_processes
        .unwrap_or_else(|| default_processes(args.nodes, fd_limit));
    if processes == 0 || processes > args.nodes {
        bail!(
            "--node-processes must be from 1 to the node count ({})",
            args.nodes
        );
    }
    if args.nodes.div_ceil(processes) > per_process {
        bail!(
            "{} nodes in {processes} process(es): {} in one, but a process holds {per_process} \
             under the open-file limit {fd_limit} (about {FDS_PER_NODE} descriptors a node)",
            args.nodes,
            args.nodes.div_ceil(processes)
        );
    }
    let master_bin = match args.master_bin.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("heartbeat"),
    };
    if !master_bin.exists() {
        bail!(
            "no master binary at {} (build it: cargo build --release -p chitchat-examples --bin heartbeat)",
            master_bin.display()
        );
    }

    let mut master_args = vec![
        "--probe-interval-ms".to_owned(),
        args.probe_interval_ms.to_string(),
        "--register-rate".to_owned(),
        args.nodes.max(100).to_string(),
        "--max-nodes".to_owned(),
        args.nodes.max(config.max_nodes).to_string(),
        "--allow-foreign-probe-addrs".to_owned(),
    ];
    if let Some(path) = &args.key_file {
        master_args.extend(["--key-file".to_owned(), path.display().to_string()]);
    }
    println!(
        "load average: {}",
        procfs::load_average().unwrap_or_default()
    );
    let mut master = Master::spawn(&master_bin, &master_args)?;
    let addr = master.addr;

    let started = Instant::now();
    let mut children = Vec::with_capacity(processes);
    for k in 0..processes {
        let range = (k * args.nodes / processes)..((k + 1) * args.nodes / processes);
        children.push(Worker::node_process(range, addr, &args)?);
    }
    let pids: Vec<String> = children.iter().map(|c| c.pid().to_string()).collect();
    println!(
        "heartbeat_bench: master {} (pid {}) with {} nodes in {processes} node process(es) \
         (pids {}, up to {per_process} nodes each under the open-file limit {fd_limit}) on \
         loopback TCP, probe every {} ms, timeout {} ms",
        addr,
        master.child.id(),
        args.nodes,
        pids.join(" "),
        millis(config.probe_interval),
        millis(config.probe_timeout)
    );

    let deadline = Instant::now() + STARTUP;
    loop {
        for child in &children {
            child.check_alive()?;
        }
        if children.iter().all(Worker::started) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node processes did not start their nodes within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nodes_started_in = started.elapsed();
    let join_deadline = Instant::now() + STARTUP;
    while master.count("joined") < args.nodes as u64 {
        for child in &children {
            child.check_alive()?;
        }
        if Instant::now() > join_deadline {
            bail!(
                "only {} of {} nodes joined within {STARTUP:?} of their start",
                master.count("joined"),
                args.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let joined_in = started.elapsed();
    println!(
        "joined: {} nodes in {:.2} s (all started in {:.2} s)",
        args.nodes,
        joined_in.as_secs_f64(),
        nodes_started_in.as_secs_f64()
    );
    // One more round, so that every node has a prober and an open connection.
    tokio::time::sleep(config.probe_interval + config.probe_timeout).await;

    let pid = master.child.id();
    let nodes_cpu = || -> io::Result<f64> {
        let mut total = procfs::cpu_time(std::process::id())?.as_secs_f64();
        for child in &children {
            total += procfs::cpu_time(child.pid())?.as_secs_f64();
        }
        Ok(total)
    };
    let before = (
        Instant::now(),
        procfs::cpu_time(pid)?.as_secs_f64(),
        nodes_cpu()?,
    );
    let tally_before = children.iter().map(Worker::tally).sum::<Tally>();
    let counts_before: Vec<u64> = STATES.iter().map(|s| master.count(s)).collect();
    let mut peak_rss = 0;
    let window = Duration::from_secs(args.duration);
    let end = Instant::now() + window;
    while Instant::now() < end {
        peak_rss = peak_rss.max(procfs::status_kib(pid, "VmRSS")?);
        for child in &children {
            child.check_alive()?;
        }
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
    }
    let after = (
        Instant::now(),
        procfs::cpu_time(pid)?.as_secs_f64(),
        nodes_cpu()?,
    );
    let rss = procfs::status_kib(pid, "VmRSS")?;
    peak_rss = peak_rss.max(rss);
    let hwm = procfs::status_kib(pid, "VmHWM")?;
    let fds = procfs::open_fds(pid)?;
    let child_fds: Vec<String> = children
        .iter()
        .map(|c| procfs::open_fds(c.pid()).map_or_else(|_| "?".to_owned(), |n| n.to_string()))
        .collect();
    let child_rss: u64 = children
        .iter()
        .filter_map(|c| procfs::status_kib(c.pid(), "VmRSS").ok())
        .sum();
    let tally = children.iter().map(Worker::tally).sum::<Tally>();

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
        "nodes ({processes} node process(es) and this one): cpu {:.2} % of one core, rss {:.1} MiB, \
         open fds {}",
        100.0 * nodes_cpu / wall,
        child_rss as f64 / 1024.0,
        child_fds.join(" ")
    );
    println!(
        "nodes at the end: registered {}, registering {}, master-lost {}, refused {}, \
         stopped {}; probes answered in the window: about {} (tallies a second apart)",
        tally.registered,
        tally.registering,
        tally.master_lost,
        tally.refused,
        tally.stopped,
        tally.probes_answered - tally_before.probes_answered
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
    println!(
        "load average: {}",
        procfs::load_average().unwrap_or_default()
    );

    let failed = in_window("suspect") + in_window("dead");
    drop(children);
    master.stop();
    floor::measure(&args, config.probe_interval, master_cpu / probes).await?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {failed} suspect or dead events: the machine was too busy to measure");
        ExitCode::FAILURE
    })
}

/// Nodes one node process holds under the open-file limit.
fn nodes_per_process(fd_limit: usize) -> usize {
    fd_limit.saturating_sub(NODE_PROCESS_RESERVE) / FDS_PER_NODE
}

/// As few node processes as the open-file limit allows for `nodes`.
fn default_processes(nodes: usize, fd_limit: usize) -> usize {
    nodes.div_ceil(nodes_per_process(fd_limit).max(1)).max(1)
}

/// `FIRST..END`, `FIRST` < `END`.
fn parse_range(text: &str) -> Result<Range<usize>, String> {
    let (first, end) = text
        .split_once("..")
        .ok_or_else(|| format!("expected FIRST..END, got {text:?}"))?;
    let first: usize = first.parse().map_err(|e| format!("{first:?}: {e}"))?;
    let end: usize = end.parse().map_err(|e| format!("{end:?}: {e}"))?;
    if first >= end {
        return Err(format!("{text:?} holds no node"));
    }
    Ok(first..end)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_processes_fit_the_fd_limit() {
        assert_eq!(nodes_per_process(20_000), 6645);
        assert_eq!(default_processes(1, 20_000), 1);
        assert_eq!(default_processes(6645, 20_000), 1);
        assert_eq!(default_processes(6646, 20_000), 2);
        assert_eq!(default_processes(18_912, 20_000), 3);
        assert_eq!(default_processes(5000, 1024), 16);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("0..6000"), Ok(0..6000));
        assert!(parse_range("5..5").is_err());
        assert!(parse_range("5-9").is_err());
        assert!(parse_range("a..9").is_err());
    }
}
