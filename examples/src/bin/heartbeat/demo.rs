//! The self-contained demo: a master and 5 nodes in this process, on loopback,
//! probing every 500 ms (300 ms timeout, dead after 3 + 1 failed probes in a row,
//! master lost after 2 s without a probe), every message signed with a fresh key.
//! Node `node-3` stops at 3 s, as if it crashed, and starts again at 8 s with a new
//! incarnation; at 10 s every node leaves and a summary follows: each node's events
//! and how long the master took to declare `node-3` dead.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chitchat_core::Addr;
use chitchat_heartbeat::{Events, HeartbeatConfig, Key, Keyring, Master, Node, NodeEvent, NodeId};
use chitchat_tokio::Tcp;
use tokio::sync::mpsc;

use crate::lines::{forward_master, forward_node, Output};
use crate::millis;
use crate::table::{title, Table};

/// Nodes in the demo, `node-1` to `node-5`.
const NODES: usize = 5;
/// The node the demo stops and starts again.
const VICTIM: &str = "node-3";
/// When the demo stops it: a few rounds after everyone joined.
const STOP_AT: Duration = Duration::from_secs(3);
/// When it starts again: the 2.3 s detection bound after the stop, and room to spare.
const RESTART_AT: Duration = Duration::from_secs(8);
/// When every node leaves and the summary is printed: four rounds after the restart.
const END_AT: Duration = Duration::from_secs(10);
/// Live-table refresh (a redraw only when something changed).
const REDRAW: Duration = Duration::from_millis(200);

/// The demo's settings: short enough that a crash is seen within seconds.
/// `master_timeout` 2 s is four intervals, near the defaults' ratio (10 s for 3 s):
/// a lost probe or two never makes a node give up on its master.
fn config() -> HeartbeatConfig {
    let mut config = HeartbeatConfig::default();
    config.probe_interval = Duration::from_millis(500);
    config.probe_timeout = Duration::from_millis(300);
    config.max_failures = 3;
    config.master_timeout = Duration::from_secs(2);
    config.keyring = fresh_key();
    config
}

/// 32 random bytes from the system, as the demo cluster's key; `None` (an
/// unauthenticated cluster, which the master warns about) where there is no
/// `/dev/urandom`.
fn fresh_key() -> Option<Keyring> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").ok()?;
    io::Read::read_exact(&mut urandom, &mut bytes).ok()?;
    Some(Keyring::single(Key::new(&bytes).ok()?))
}

/// Every node's state words and their times, for the summary.
type Log = BTreeMap<String, Vec<(&'static str, Instant)>>;

pub async fn run(start: Instant) -> anyhow::Result<ExitCode> {
    let config = config();
    let loopback = || Addr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let builder = Master::builder(loopback()).config(config.clone());
    let events = builder.events();
    let master = builder.start(&Tcp, Tcp).await?;
    if let Some(warning) = master.security_warning() {
        eprintln!("warning: {warning}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut forwarders = vec![forward_master(events, tx.clone())];
    let table = io::stdout().is_terminal().then(|| {
        Table::new(format!(
            "heartbeat demo: {NODES} nodes; {VICTIM} stops at {} s, starts again at {} s\n{}",
            STOP_AT.as_secs(),
            RESTART_AT.as_secs(),
            title(&master)
        ))
    });
    // The master says `joined`; the nodes' own acceptance would repeat it.
    let mut out = Output::new(start, table, false);
    let mut nodes = Vec::with_capacity(NODES);
    for i in 1..=NODES {
        let id = NodeId::new(format!("node-{i}"))?;
        let (node, events) = start_node(&id, master.local_addr(), loopback(), &config).await?;
        forwarders.push(forward_node(id, events, tx.clone()));
        nodes.push(node);
    }
    let victim = nodes
        .iter()
        .position(|node| node.id().as_str() == VICTIM)
        .context("the demo's victim is one of its nodes")?;

    let mut log = Log::new();
    let (mut stopped_at, mut restarted_at) = (None, None);
    let mut redraw = tokio::time::interval(REDRAW);
    let mut steps = [STOP_AT, RESTART_AT, END_AT].into_iter();
    let mut next_step = steps.next();
    while let Some(step) = next_step {
        let due = tokio::select! {
            biased;
            () = tokio::time::sleep_until((start + step).into()) => true,
            Some(note) = rx.recv() => {
                if let Some(line) = out.show(note)? {
                    log.entry(line.node).or_default().push((line.state, line.at));
                }
                false
            }
            _ = redraw.tick(), if out.is_live() => {
                out.draw(&master)?;
                false
            }
        };
        if !due {
            continue;
        }
        next_step = steps.next();
        if step == STOP_AT {
            // A crash, as the master sees it: no `leave`, connections cut.
            stopped_at = Some(Instant::now());
            nodes[victim].stop().await;
        } else if step == RESTART_AT {
            // Same id, same address, new incarnation (the library raises it on every
            // start). If the port was taken meanwhile, any free one.
            let (id, addr) = (nodes[victim].id().clone(), nodes[victim].local_addr());
            // Before the start: the node registers as soon as it is up.
            restarted_at = Some(Instant::now());
            let (node, events) = match start_node(&id, master.local_addr(), addr, &config).await {
                Ok(started) => started,
                Err(_) => start_node(&id, master.local_addr(), loopback(), &config).await?,
            };
            forwarders.push(forward_node(id, events, tx.clone()));
            nodes[victim] = node;
        }
    }

    // The end: every node says goodbye (the master marks each Left at once).
    let leaves = futures::future::join_all(nodes.iter().map(Node::leave)).await;
    for (node, result) in nodes.iter().zip(leaves) {
        if let Err(err) = result {
            eprintln!("warning: node {}: {err}", node.id());
        }
    }
    master.shutdown().await;
    // Every stream has ended: the forwarders return and the channel closes.
    drop(tx);
    for forwarder in forwarders {
        forwarder.await?;
    }
    while let Some(note) = rx.recv().await {
        if let Some(line) = out.show(note)? {
            log.entry(line.node)
                .or_default()
                .push((line.state, line.at));
        }
    }
    out.finish(&master)?;
    summarize(
        start,
        &log,
        VICTIM,
        stopped_at,
        restarted_at,
        config.detection_bound(),
    )
}

/// A node of the demo, and its events from its start.
async fn start_node(
    id: &NodeId,
    master: Addr,
    listen: Addr,
    config: &HeartbeatConfig,
) -> anyhow::Result<(Node, Events<NodeEvent>)> {
    let builder = Node::builder(id.clone(), master)
        .listen(listen)
        .config(config.clone());
    let events = builder.events();
    Ok((builder.start(&Tcp, Tcp).await?, events))
}

/// The closing report: each node's events, and the detection latency of the node
/// that was stopped. Exit code 1 if it was not declared dead, or not back.
fn summarize(
    start: Instant,
    log: &Log,
    victim: &str,
    stopped_at: Option<Instant>,
    restarted_at: Option<Instant>,
    bound: Duration,
) -> anyhow::Result<ExitCode> {
    let ms = |at: Instant| millis(at.saturating_duration_since(start));
    let mut stdout = io::stdout().lock();
    for (node, events) in log {
        let list: Vec<String> = events
            .iter()
            .map(|(state, at)| format!("{state}@{}", ms(*at)))
            .collect();
        writeln!(stdout, "summary node={node} events={}", list.join(","))?;
    }
    let events = log.get(victim).map(Vec::as_slice).unwrap_or_default();
    let first = |after: Option<Instant>, states: &[&str]| {
        let after = after?;
        events
            .iter()
            .find(|(state, at)| *at >= after && states.contains(state))
            .map(|(_, at)| *at)
    };
    let dead_at = first(stopped_at, &["dead"]);
    let back_at = first(restarted_at, &["alive", "joined"]);
    let show = |at: Option<Instant>| at.map_or("none".to_owned(), |at| ms(at).to_string());
    let latency = match (stopped_at, dead_at) {
        (Some(stop), Some(dead)) => millis(dead.saturating_duration_since(stop)).to_string(),
        _ => "none".to_owned(),
    };
    writeln!(
        stdout,
        "summary stopped={victim} stop_at_ms={} dead_at_ms={} detection_latency_ms={latency} \
         bound_ms={} restart_at_ms={} back_at_ms={}",
        show(stopped_at),
        show(dead_at),
        millis(bound),
        show(restarted_at),
        show(back_at),
    )?;
    stdout.flush()?;
    drop(stdout);
    if dead_at.is_none() {
        eprintln!("error: {victim} was stopped but the master never declared it dead");
        return Ok(ExitCode::FAILURE);
    }
    if back_at.is_none() {
        eprintln!("error: {victim} was started again but the master never saw it back");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
