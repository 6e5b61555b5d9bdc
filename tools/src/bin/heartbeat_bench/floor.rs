//! The floors under the master's CPU per probe (`main.rs`, "The floor"):
//! a responder and a prober process of this binary per transport, measured the
//! way the master is.

use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_tools::{probe_floor, procfs};

use crate::tally::Tally;
use crate::worker::{exit_when_stdin_closes, Worker};
use crate::{Args, STARTUP};

/// Measures the floors asked for, the TCP one unless `--no-floor` and the UDP one
/// with `--udp-floor`, and prints a line for each with the master's CPU per probe
/// (`master_per_probe`, in seconds) against it.
pub(crate) async fn measure(
    args: &Args,
    interval: Duration,
    master_per_probe: f64,
) -> anyhow::Result<()> {
    let mut transports = Vec::new();
    if !args.no_floor {
        transports.push(FloorTransport::Tcp);
    }
    if args.udp_floor {
        transports.push(FloorTransport::Udp);
    }
    for transport in transports {
        let run = floor(transport, args, interval).await?;
        // CPU time comes in 10 ms ticks: a short, small run may show none.
        let ratio = if run.cpu > 0.0 && master_per_probe > 0.0 {
            format!("{:.2}", master_per_probe / (run.cpu / run.probes))
        } else {
            "- (no CPU tick in the window: run longer or with more nodes)".to_owned()
        };
        println!(
            "floor over {} ({}): cpu {:.2} % of one core ({:.2} s; {:.1} us per probe; acks in \
             the window: about {}); master / floor: {ratio}",
            transport.name(),
            transport.describe(args.nodes),
            100.0 * run.cpu / run.wall,
            run.cpu,
            1e6 * run.cpu / run.probes,
            run.acks,
        );
    }
    Ok(())
}

/// How a floor moves its probes and acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FloorTransport {
    /// One loopback TCP connection per node, as the master holds.
    Tcp,
    /// One UDP socket for every node, datagrams sent and received in batches.
    Udp,
}

impl FloorTransport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FloorTransport::Tcp => "tcp",
            FloorTransport::Udp => "udp",
        }
    }

    pub(crate) fn describe(self, nodes: usize) -> String {
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
pub(crate) struct FloorRun {
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
pub(crate) async fn floor_respond(
    transport: FloorTransport,
    nodes: usize,
) -> anyhow::Result<ExitCode> {
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
pub(crate) async fn floor_probe(
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
