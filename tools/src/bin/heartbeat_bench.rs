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

use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_heartbeat::{HeartbeatConfig, MemberStatus, Node, NodeId};
use chitchat_tokio::Tcp;
use chitchat_tools::{probe_floor, procfs, sockets};
use clap::Parser;

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
        return floor_respond(transport, args.nodes).await;
    }
    if let (Some(transport), Some(target)) = (args.floor_probe, args.floor_target) {
        return floor_probe(transport, args.nodes, target, config.probe_interval).await;
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
    let tally_before = Tally::sum(&children);
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
    let tally = Tally::sum(&children);

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
    let mut floors = Vec::new();
    if !args.no_floor {
        floors.push(FloorTransport::Tcp);
    }
    if args.udp_floor {
        floors.push(FloorTransport::Udp);
    }
    for transport in floors {
        let floor = floor(transport, &args, config.probe_interval).await?;
        println!(
            "floor over {} ({}): cpu {:.2} % of one core ({:.2} s; {:.1} us per probe; acks in \
             the window: about {}); master / floor: {:.2}",
            transport.name(),
            transport.describe(args.nodes),
            100.0 * floor.cpu / floor.wall,
            floor.cpu,
            1e6 * floor.cpu / floor.probes,
            floor.acks,
            (master_cpu / probes) / (floor.cpu / floor.probes)
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {failed} suspect or dead events: the machine was too busy to measure");
        ExitCode::FAILURE
    })
}

/// How a floor moves its probes and acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FloorTransport {
    /// One loopback TCP connection per node, as the master holds.
    Tcp,
    /// One UDP socket for every node, datagrams sent and received in batches.
    Udp,
}

impl FloorTransport {
    fn name(self) -> &'static str {
        match self {
            FloorTransport::Tcp => "tcp",
            FloorTransport::Udp => "udp",
        }
    }

    fn describe(self, nodes: usize) -> String {
        match self {
            FloorTransport::Tcp => {
                format!("plain tokio, same probes and acks over {nodes} loopback connections")
            }
            FloorTransport::Udp => format!(
                "one socket to {nodes} node sockets, {} datagrams a sendmmsg or recvmmsg",
                probe_floor::udp::BATCH
            ),
        }
    }
}

/// What the floor's prober spent over its window.
struct FloorRun {
    wall: f64,
    cpu: f64,
    probes: f64,
    acks: u64,
}

/// A floor: a responder process and a prober process of this binary, with as
/// many nodes as the master had, measured over a window as long as the master's,
/// after one round to settle. The prober's CPU is its own process's, as the
/// master's is.
async fn floor(
    transport: FloorTransport,
    args: &Args,
    interval: Duration,
) -> anyhow::Result<FloorRun> {
    let nodes = args.nodes.to_string();
    let responder = Worker::spawn(
        format!("the {} floor's responder", transport.name()),
        [
            "--floor-respond".to_owned(),
            transport.name().to_owned(),
            "--nodes".to_owned(),
            nodes.clone(),
        ],
    )?;
    let target = responder.wait_listening(STARTUP).await?;
    let prober = Worker::spawn(
        format!("the {} floor's prober", transport.name()),
        [
            "--floor-probe".to_owned(),
            transport.name().to_owned(),
            "--nodes".to_owned(),
            nodes,
            "--floor-target".to_owned(),
            target.to_string(),
            "--probe-interval-ms".to_owned(),
            args.probe_interval_ms.to_string(),
        ],
    )?;
    let deadline = Instant::now() + STARTUP;
    while !prober.started() {
        responder.check_alive()?;
        prober.check_alive()?;
        if Instant::now() > deadline {
            bail!("the floor's prober did not start within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(interval + Duration::from_secs(1)).await;
    let start = (
        Instant::now(),
        procfs::cpu_time(prober.pid())?.as_secs_f64(),
    );
    let acks_before = prober.tally().probes_answered;
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    responder.check_alive()?;
    prober.check_alive()?;
    let wall = start.0.elapsed().as_secs_f64();
    let cpu = procfs::cpu_time(prober.pid())?.as_secs_f64() - start.1;
    Ok(FloorRun {
        wall,
        cpu,
        probes: wall / interval.as_secs_f64() * args.nodes as f64,
        acks: prober.tally().probes_answered - acks_before,
    })
}

/// A floor's responder for `nodes` nodes: prints `listening on ADDR` (over UDP,
/// the first node's), answers until its standard input closes.
async fn floor_respond(transport: FloorTransport, nodes: usize) -> anyhow::Result<ExitCode> {
    exit_when_stdin_closes();
    match transport {
        FloorTransport::Tcp => {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            println!("listening on {}", listener.local_addr()?);
            probe_floor::tcp::respond(listener).await?;
        }
        FloorTransport::Udp => {
            let first = probe_floor::udp::respond(nodes).await?;
            println!("listening on {first}");
            std::future::pending::<()>().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A floor's prober for `nodes` nodes of the responder at `target`: prints
/// `started N` once it can probe, then probes every `interval` and prints a tally
/// line every second, its acks counted as probes answered, until its standard
/// input closes.
async fn floor_probe(
    transport: FloorTransport,
    nodes: usize,
    target: SocketAddr,
    interval: Duration,
) -> anyhow::Result<ExitCode> {
    exit_when_stdin_closes();
    let (acks, rounds) = match transport {
        FloorTransport::Tcp => {
            let prober = probe_floor::tcp::Prober::connect(&[target], nodes)
                .await
                .context("the floor's prober cannot dial")?;
            (prober.acks(), tokio::spawn(prober.run(interval)))
        }
        FloorTransport::Udp => {
            let targets = probe_floor::udp::targets(target, nodes);
            let prober = probe_floor::udp::Prober::bind(&targets).await?;
            (prober.acks(), tokio::spawn(prober.run(interval)))
        }
    };
    let mut stdout = io::stdout();
    writeln!(stdout, "started {nodes}")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !rounds.is_finished() {
        tick.tick().await;
        let tally = Tally {
            probes_answered: acks.load(Ordering::Relaxed),
            ..Tally::default()
        };
        if writeln!(stdout, "{}", tally.line()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    rounds.await?.context("the floor's prober cannot send")?;
    Ok(ExitCode::FAILURE)
}

/// Exits this process when its standard input closes: the parent holds the other
/// end, so when it ends, however it ends, this read returns 0 (the parent also
/// asked the kernel for SIGKILL then).
fn exit_when_stdin_closes() {
    thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
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

/// A node process: starts nodes `range`, prints `started N`, then a tally line
/// every second until its standard input closes.
async fn node_process(
    range: Range<usize>,
    master: SocketAddr,
    config: HeartbeatConfig,
    fd_limit: usize,
) -> anyhow::Result<ExitCode> {
    exit_when_stdin_closes();
    let count = range.len();
    let needed = count * FDS_PER_NODE + NODE_PROCESS_RESERVE;
    if needed > fd_limit {
        bail!("{count} nodes need about {needed} file descriptors in one process; the limit is {fd_limit}");
    }
    let mut nodes = Vec::with_capacity(count);
    for wave_start in range.clone().step_by(NODES_PER_WAVE) {
        let wave = wave_start..(wave_start + NODES_PER_WAVE).min(range.end);
        let first = nodes.len();
        for i in wave {
            let node = Node::builder(NodeId::new(format!("bench-{i:05}"))?, master)
                .listen(SocketAddr::from((sockets::numbered_loopback(i), 0)))
                .config(config.clone())
                .start(&Tcp, Tcp)
                .await
                .with_context(|| format!("node {i} on {}", sockets::numbered_loopback(i)))?;
            nodes.push(node);
        }
        let settled = futures::future::join_all(nodes[first..].iter().map(Node::registered));
        tokio::time::timeout(STARTUP, settled)
            .await
            .with_context(|| {
                format!("nodes from {wave_start} not registered within {STARTUP:?}")
            })?;
    }
    let mut stdout = io::stdout();
    if writeln!(stdout, "started {count}").is_err() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut tally = Tally::default();
        for node in &nodes {
            tally.count(node.status(), node.stats().probes_answered);
        }
        // The parent is gone: so are we.
        if writeln!(stdout, "{}", tally.line()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Where a node process's nodes stand, and the probes they answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    registered: u64,
    registering: u64,
    master_lost: u64,
    refused: u64,
    stopped: u64,
    probes_answered: u64,
}

impl Tally {
    fn count(&mut self, status: MemberStatus, probes_answered: u64) {
        match status {
            MemberStatus::Registered => self.registered += 1,
            MemberStatus::Registering => self.registering += 1,
            MemberStatus::MasterLost => self.master_lost += 1,
            MemberStatus::Refused(_) => self.refused += 1,
            // Stopped, or a state this tool does not know yet.
            _ => self.stopped += 1,
        }
        self.probes_answered += probes_answered;
    }

    fn line(&self) -> String {
        format!(
            "tally registered={} registering={} master-lost={} refused={} stopped={} probes={}",
            self.registered,
            self.registering,
            self.master_lost,
            self.refused,
            self.stopped,
            self.probes_answered
        )
    }

    fn parse(line: &str) -> Option<Tally> {
        let mut tally = Tally::default();
        let mut fields = line.strip_prefix("tally ")?.split(' ');
        for (name, slot) in [
            ("registered", &mut tally.registered),
            ("registering", &mut tally.registering),
            ("master-lost", &mut tally.master_lost),
            ("refused", &mut tally.refused),
            ("stopped", &mut tally.stopped),
            ("probes", &mut tally.probes_answered),
        ] {
            *slot = fields
                .next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()?;
        }
        Some(tally)
    }

    /// The last tallies of `children`, added up.
    fn sum(children: &[Worker]) -> Tally {
        let mut sum = Tally::default();
        for child in children {
            let last = child.tally();
            sum.registered += last.registered;
            sum.registering += last.registering;
            sum.master_lost += last.master_lost;
            sum.refused += last.refused;
            sum.stopped += last.stopped;
            sum.probes_answered += last.probes_answered;
        }
        sum
    }
}

/// What a worker process said so far.
#[derive(Debug, Default)]
struct Report {
    started: bool,
    /// From a `listening on ADDR` line.
    listening: Option<SocketAddr>,
    /// Its stdout closed: it exited.
    ended: bool,
    tally: Tally,
}

/// A child process of this binary (a node process, or one side of the floor),
/// run with hidden flags and read line by line: killed when dropped.
struct Worker {
    child: Child,
    /// What it is, for errors: "the node process of nodes 0..100".
    what: String,
    /// Held open: the child exits when it closes.
    _stdin: ChildStdin,
    report: Arc<Mutex<Report>>,
}

impl Worker {
    fn node_process(
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

    fn spawn(what: String, flags: impl IntoIterator<Item = String>) -> anyhow::Result<Worker> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn started(&self) -> bool {
        self.report().started
    }

    fn tally(&self) -> Tally {
        self.report().tally
    }

    /// The address of its `listening on` line, once it has printed one.
    async fn wait_listening(&self, limit: Duration) -> anyhow::Result<SocketAddr> {
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
    fn check_alive(&self) -> anyhow::Result<()> {
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

/// The `heartbeat master` child and the counts of its event lines.
struct Master {
    child: Child,
    addr: SocketAddr,
    counts: Arc<[AtomicU64; STATES.len()]>,
}

impl Master {
    fn spawn(bin: &PathBuf, extra: &[String]) -> anyhow::Result<Master> {
        let mut command = Command::new(bin);
        command
            .args(["master", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let mut child = command
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

    #[test]
    fn tally_lines_round_trip() {
        let tally = Tally {
            registered: 5,
            registering: 1,
            master_lost: 2,
            refused: 0,
            stopped: 3,
            probes_answered: 123_456,
        };
        assert_eq!(Tally::parse(&tally.line()), Some(tally));
        assert_eq!(Tally::parse("started 6000"), None);
    }
}
