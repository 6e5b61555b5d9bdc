//! The heartbeat example, the project's main job: a master that probes its nodes
//! and tells who is alive, suspect, dead or gone (crate `chitchat-heartbeat`).
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin heartbeat
//! cargo run --release -p chitchat-examples --bin heartbeat -- master --listen 0.0.0.0:7000
//! cargo run --release -p chitchat-examples --bin heartbeat -- node --master 10.0.0.1:7000 --id web-1
//! ```
//!
//! - **No arguments: the demo.** A master and 5 nodes in this process, on loopback,
//!   probing every 500 ms (300 ms timeout, dead after 3 + 1 failed probes in a row,
//!   master lost after 2 s without a probe). Node `node-3` stops at 3 s, as if it
//!   crashed, and starts again at 8 s with a new incarnation; at 10 s every node
//!   leaves and a summary follows: each node's events and how long the master took
//!   to declare `node-3` dead. Exit code 1 if it was never declared dead or never
//!   came back.
//! - **`master`** and **`node`**: the same roles in separate processes, across
//!   machines. Each prints `listening on ADDR` first (the bound address: for a
//!   master, where nodes register; for a node, where it answers probes).
//!
//! On a terminal the demo and the master show a live table that redraws in place.
//! Otherwise every event is one line on stdout,
//! `event node=<id> state=<word> at_ms=<ms since the process started>`, the word
//! being `joined`, `suspect`, `alive`, `dead` or `left` (the master's view of a
//! node) or `master-lost` and `master-back` (a node's view of its master, printed
//! by the node with its own id; a node also prints `joined` when the master
//! accepts it). The demo ends with `summary ...` lines. Errors and warnings go to
//! stderr, each naming its peer. SIGINT or SIGTERM ends `master` and `node` with
//! exit code 0 (a registered node sends `leave` first), as does the end of
//! `--duration`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chitchat_core::Addr;
use chitchat_heartbeat::{
    Change, Events, HeartbeatConfig, Master, MasterEvent, MemberChange, MemberEvent, MemberStatus,
    Node, NodeEvent, NodeId, NodeSnapshot, NodeState,
};
use chitchat_tokio::Tcp;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The demo's settings: short enough that a crash is seen within seconds.
/// `master_timeout` 2 s is four intervals, near the defaults' ratio (10 s for 3 s):
/// a lost probe or two never makes a node give up on its master.
fn demo_config() -> HeartbeatConfig {
    let mut config = HeartbeatConfig::default();
    config.probe_interval = Duration::from_millis(500);
    config.probe_timeout = Duration::from_millis(300);
    config.max_failures = 3;
    config.master_timeout = Duration::from_secs(2);
    config
}

/// Nodes in the demo, `node-1` to `node-5`.
const DEMO_NODES: usize = 5;
/// The node the demo stops and starts again.
const DEMO_VICTIM: &str = "node-3";
/// When the demo stops it: a few rounds after everyone joined.
const DEMO_STOP_AT: Duration = Duration::from_secs(3);
/// When it starts again: the 2.3 s detection bound after the stop, and room to spare.
const DEMO_RESTART_AT: Duration = Duration::from_secs(8);
/// When every node leaves and the summary is printed: four rounds after the restart.
const DEMO_END_AT: Duration = Duration::from_secs(10);

/// Live-table refresh: smooth to the eye, a few snapshots a second.
const REDRAW: Duration = Duration::from_millis(200);
/// Terminal height assumed when the terminal does not tell.
const DEFAULT_HEIGHT: usize = 24;
/// Events listed under the live table.
const RECENT_EVENTS: usize = 8;

/// A master and nodes that probe each other; no arguments runs a 10-second demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Accept node registrations and probe every node.
    Master {
        /// Address to listen for registrations on (port 0 picks a free port).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7000")]
        listen: Addr,

        #[command(flatten)]
        timing: Timing,
    },
    /// Register with a master and answer its probes.
    Node {
        /// The master's registration address, IP:PORT or HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        master: String,

        /// Address to answer probes on [default: any address, a free port; the
        /// master is told the IP this host reaches it from].
        #[arg(long, value_name = "ADDR")]
        listen: Option<Addr>,

        /// This node's id, unique in the cluster (printable ASCII, no spaces)
        /// [default: node-PID].
        #[arg(long, value_name = "NAME")]
        id: Option<NodeId>,

        #[command(flatten)]
        timing: Timing,
    },
}

/// The settings every process of a cluster must share, and the run time.
#[derive(Debug, Args)]
struct Timing {
    /// Time between two probe rounds of the master.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.probe_interval),
          value_parser = clap::value_parser!(u64).range(1..))]
    probe_interval_ms: u64,

    /// How long the master waits for a probe's answer.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.probe_timeout))]
    probe_timeout_ms: u64,

    /// Failed probes in a row a node may have; the next one makes it dead.
    #[arg(long, value_name = "N", default_value_t = HeartbeatConfig::default().max_failures)]
    max_failures: u32,

    /// A node declares the master lost after this long without a probe.
    #[arg(long, value_name = "MS", default_value_t = default_ms(|c| c.master_timeout))]
    master_timeout_ms: u64,

    /// Exit (0) after this many seconds; 0 runs until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    duration: u64,
}

impl Timing {
    fn config(&self) -> HeartbeatConfig {
        let mut config = HeartbeatConfig::default();
        config.probe_interval = Duration::from_millis(self.probe_interval_ms);
        config.probe_timeout = Duration::from_millis(self.probe_timeout_ms);
        config.max_failures = self.max_failures;
        config.master_timeout = Duration::from_millis(self.master_timeout_ms);
        config
    }

    /// When to stop on our own, if ever.
    fn deadline(&self, start: Instant) -> Option<tokio::time::Instant> {
        (self.duration > 0).then(|| (start + Duration::from_secs(self.duration)).into())
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
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    // Event times count from here.
    let start = Instant::now();
    match Cli::parse().mode {
        None => demo(start).await,
        Some(Mode::Master { listen, timing }) => master(start, listen, &timing).await,
        Some(Mode::Node {
            master,
            listen,
            id,
            timing,
        }) => {
            let id = match id {
                Some(id) => id,
                None => NodeId::new(format!("node-{}", std::process::id()))?,
            };
            node(start, &master, listen, id, &timing).await
        }
    }
}

// ---------------------------------------------------------------------------------
// The three modes.

/// The self-contained demo (see the file docs).
async fn demo(start: Instant) -> anyhow::Result<ExitCode> {
    let config = demo_config();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let master = Master::builder(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .config(config.clone())
        .start(&Tcp, Tcp)
        .await?;
    let title = format!(
        "heartbeat demo: {DEMO_NODES} nodes; {DEMO_VICTIM} stops at {} s, starts again at {} s\n{}",
        DEMO_STOP_AT.as_secs(),
        DEMO_RESTART_AT.as_secs(),
        title(&master)
    );
    let mut out = Output::new(start, io::stdout().is_terminal(), title);
    let mut forwarders = vec![forward_master(master.events(), tx.clone())];
    let mut nodes = Vec::with_capacity(DEMO_NODES);
    for i in 1..=DEMO_NODES {
        let id = NodeId::new(format!("node-{i}"))?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let node = start_node(id, master.local_addr(), listen.into(), &config).await?;
        // The master says `joined`; the node's own "registered" would repeat it.
        forwarders.push(forward_node(node.events(), tx.clone(), false));
        nodes.push(node);
    }
    let victim = nodes
        .iter()
        .position(|node| node.id().as_str() == DEMO_VICTIM)
        .context("the demo's victim is one of its nodes")?;

    let mut log = Log::default();
    let (mut stopped_at, mut restarted_at) = (None, None);
    let mut redraw = tokio::time::interval(REDRAW);
    let mut steps = [DEMO_STOP_AT, DEMO_RESTART_AT, DEMO_END_AT].into_iter();
    let mut next_step = steps.next();
    while let Some(step) = next_step {
        let due = tokio::select! {
            Some(message) = rx.recv() => {
                out.show(message, &mut log)?;
                false
            }
            _ = redraw.tick(), if out.is_live() => {
                out.draw(&master.snapshot())?;
                false
            }
            () = tokio::time::sleep_until((start + step).into()) => true,
        };
        if !due {
            continue;
        }
        next_step = steps.next();
        if step == DEMO_STOP_AT {
            // A crash, as the master sees it: no `leave`, connections cut.
            stopped_at = Some(Instant::now());
            nodes[victim].stop().await;
        } else if step == DEMO_RESTART_AT {
            // Same id, same address, new incarnation (the library raises it on every
            // start). If the port was taken meanwhile, any free one.
            let (id, addr) = (nodes[victim].id().clone(), nodes[victim].local_addr());
            // Before the start: the node registers as soon as it is up.
            restarted_at = Some(Instant::now());
            let node = match start_node(id.clone(), master.local_addr(), addr, &config).await {
                Ok(node) => node,
                Err(_) => {
                    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    start_node(id, master.local_addr(), any.into(), &config).await?
                }
            };
            forwarders.push(forward_node(node.events(), tx.clone(), false));
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
    let snapshot = master.snapshot();
    master.shutdown().await;
    // Every stream has ended: the forwarders return and the channel closes.
    drop(tx);
    for forwarder in forwarders {
        forwarder.await?;
    }
    while let Some(message) = rx.recv().await {
        out.show(message, &mut log)?;
    }
    if out.is_live() {
        out.draw(&snapshot)?;
        println!();
    }

    let victim_id = nodes[victim].id().as_str();
    let outcome = summarize(
        start,
        &log,
        victim_id,
        stopped_at,
        restarted_at,
        config.detection_bound(),
    )?;
    Ok(outcome)
}

/// `heartbeat master`: serve registrations and probe until stopped.
async fn master(start: Instant, listen: Addr, timing: &Timing) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal sent as soon as `listening on` shows must not kill us.
    let stop = chitchat_examples::stop_signal()?;
    let master = Master::builder(listen)
        .config(timing.config())
        .start(&Tcp, Tcp)
        .await?;
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", master.local_addr())?;
    stdout.flush()?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let forwarder = forward_master(master.events(), tx);
    let mut out = Output::new(start, stdout.is_terminal(), title(&master));
    let mut log = Log::default();
    let mut redraw = tokio::time::interval(REDRAW);
    let deadline = timing.deadline(start);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = sleep_until(deadline) => break,
            Some(message) = rx.recv() => out.show(message, &mut log)?,
            _ = redraw.tick(), if out.is_live() => out.draw(&master.snapshot())?,
        }
    }
    master.shutdown().await;
    forwarder.await?;
    while let Some(message) = rx.recv().await {
        out.show(message, &mut log)?;
    }
    if out.is_live() {
        out.draw(&master.snapshot())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `heartbeat node`: answer probes, stay registered, leave when stopped.
async fn node(
    start: Instant,
    master: &str,
    listen: Option<Addr>,
    id: NodeId,
    timing: &Timing,
) -> anyhow::Result<ExitCode> {
    let stop = chitchat_examples::stop_signal()?;
    let master_addr = tokio::net::lookup_host(master)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("cannot resolve master address {master:?} (expected IP:PORT or HOST:PORT)")
        })?;
    let config = timing.config();
    let mut builder = Node::builder(id, master_addr).config(config.clone());
    if let Some(listen) = listen {
        builder = builder.listen(listen);
    }
    let node = builder.start(&Tcp, Tcp).await?;
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", node.local_addr())?;
    stdout.flush()?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let forwarder = forward_node(node.events(), tx, true);
    // A node has no table: its events are lines, on a terminal too.
    let mut out = Output::new(start, false, String::new());
    let mut log = Log::default();
    // The library retries a master that does not answer quietly, with backoff:
    // say so now and then, until the first registration goes through.
    let mut waiting = tokio::time::interval_at(
        (start + config.master_timeout).into(),
        config.master_timeout,
    );
    let deadline = timing.deadline(start);
    let mut code = ExitCode::SUCCESS;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = sleep_until(deadline) => break,
            Some(message) = rx.recv() => {
                let refused = matches!(message, Message::Refused(_));
                out.show(message, &mut log)?;
                if refused {
                    code = ExitCode::FAILURE;
                    break;
                }
            }
            _ = waiting.tick(), if node.status() == MemberStatus::Registering => {
                eprintln!(
                    "warning: master {master_addr} has not accepted node {} after {:.1} s; \
                     still trying",
                    node.id(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
    // `leave` only to a master that knows us: the others would not answer.
    if code == ExitCode::SUCCESS && node.status() == MemberStatus::Registered {
        if let Err(err) = node.leave().await {
            eprintln!("warning: node {}: {err}", node.id());
        }
    } else {
        node.stop().await;
    }
    forwarder.await?;
    while let Some(message) = rx.recv().await {
        out.show(message, &mut log)?;
    }
    Ok(code)
}

/// The demo's closing report: each node's events, and the detection latency of the
/// node that was stopped. Exit code 1 if it was not declared dead, or not back.
fn summarize(
    start: Instant,
    log: &Log,
    victim: &str,
    stopped_at: Option<Instant>,
    restarted_at: Option<Instant>,
    bound: Duration,
) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    for (node, events) in &log.nodes {
        let list: Vec<String> = events
            .iter()
            .map(|(state, at)| format!("{state}@{}", ms_since(start, *at)))
            .collect();
        writeln!(stdout, "summary node={node} events={}", list.join(","))?;
    }
    let events = log.nodes.get(victim).map(Vec::as_slice).unwrap_or_default();
    let first = |after: Option<Instant>, states: &[&str]| {
        let after = after?;
        events
            .iter()
            .find(|(state, at)| *at >= after && states.contains(state))
            .map(|(_, at)| *at)
    };
    let dead_at = first(stopped_at, &["dead"]);
    let back_at = first(restarted_at, &["alive", "joined"]);
    let show =
        |at: Option<Instant>| at.map_or("none".to_owned(), |at| ms_since(start, at).to_string());
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

// ---------------------------------------------------------------------------------
// Events, from the library's streams to one channel per process.

/// What the forwarders hand to the printing loop.
enum Message {
    /// A state change, printed as an `event ...` line.
    Event(Line),
    /// A peer broke the protocol, or the engine reported a connection error.
    Error(String),
    /// Worth knowing, not an error (a stall of the master, lost events).
    Warning(String),
    /// The master refused this node; the node gives up.
    Refused(String),
}

/// One `event ...` line, with what a person wants to read beside it on a terminal.
struct Line {
    node: String,
    state: &'static str,
    at: Instant,
    /// Evidence and context, shown on the live table only.
    detail: String,
}

/// Copies the master's events to `tx` until the master has shut down.
fn forward_master(
    mut events: Events<MasterEvent>,
    tx: mpsc::UnboundedSender<Message>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let message = match event {
                MasterEvent::Node(event) => Message::Event(master_line(&event)),
                MasterEvent::Stalled(stall) => Message::Warning(format!(
                    "the master ran {:.0} ms late (its runtime stalled); \
                     the probes it missed were not counted",
                    stall.drift.as_secs_f64() * 1e3
                )),
                MasterEvent::Error { error, .. } => Message::Error(chain(error)),
                MasterEvent::Connection { error, .. } => Message::Error(chain(error)),
                _ => continue,
            };
            let _ = tx.send(message);
        }
        if events.dropped() > 0 {
            let _ = tx.send(Message::Warning(format!(
                "{} master events were lost: they came faster than they were printed",
                events.dropped()
            )));
        }
    })
}

fn master_line(event: &NodeEvent) -> Line {
    let detail = match &event.change {
        Change::Dead(evidence) => {
            let last = evidence
                .last_success_age
                .map_or("never answered".to_owned(), |age| {
                    format!("last answer {:.1} s before", age.as_secs_f64())
                });
            format!("  ({} misses, {last})", evidence.failures)
        }
        Change::Alive { from } => format!("  (was {from})"),
        Change::Joined {
            replaced: Some(old),
        } => format!("  (replaced incarnation {old})"),
        _ => String::new(),
    };
    Line {
        node: event.node.to_string(),
        state: event.change.as_str(),
        at: event.at,
        detail: format!("  {}{detail}", event.addr),
    }
}

/// Copies a node's events to `tx` until it stops. With `registered`, the master's
/// acceptance is an event line too (`joined`, from the node's side).
fn forward_node(
    mut events: Events<MemberEvent>,
    tx: mpsc::UnboundedSender<Message>,
    registered: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let line = |state, detail| {
                Message::Event(Line {
                    node: event.node.to_string(),
                    state,
                    at: event.at,
                    detail,
                })
            };
            let message = match &event.change {
                MemberChange::Registered if registered => line("joined", String::new()),
                MemberChange::MasterLost { silent_for } => line(
                    "master-lost",
                    format!("  (no probe for {:.1} s)", silent_for.as_secs_f64()),
                ),
                MemberChange::MasterBack { lost_for } => line(
                    "master-back",
                    format!("  (after {:.1} s)", lost_for.as_secs_f64()),
                ),
                MemberChange::Refused { reason } => Message::Refused(format!(
                    "the master refused node {} (incarnation {}): {reason}",
                    event.node, event.incarnation
                )),
                MemberChange::Error(error) => {
                    Message::Error(format!("node {}: {error}", event.node))
                }
                _ => continue,
            };
            let _ = tx.send(message);
        }
    })
}

// ---------------------------------------------------------------------------------
// Output: event lines, or the live table.

/// Every node's state words and their times, for the demo's summary.
#[derive(Default)]
struct Log {
    nodes: BTreeMap<String, Vec<(&'static str, Instant)>>,
}

/// Where events go: one line each on stdout, or the live table on a terminal.
struct Output {
    start: Instant,
    screen: Option<Screen>,
}

impl Output {
    fn new(start: Instant, live: bool, title: String) -> Output {
        let screen = live.then(|| Screen {
            title,
            recent: VecDeque::new(),
            drawn: 0,
        });
        Output { start, screen }
    }

    fn is_live(&self) -> bool {
        self.screen.is_some()
    }

    fn show(&mut self, message: Message, log: &mut Log) -> io::Result<()> {
        match message {
            Message::Event(line) => {
                log.nodes
                    .entry(line.node.clone())
                    .or_default()
                    .push((line.state, line.at));
                let at_ms = ms_since(self.start, line.at);
                match &mut self.screen {
                    Some(screen) => screen.note(format!(
                        "{:>8.3} s  {:<14} {:<12}{}",
                        at_ms as f64 / 1e3,
                        line.node,
                        line.state,
                        line.detail
                    )),
                    None => {
                        let mut stdout = io::stdout().lock();
                        writeln!(
                            stdout,
                            "event node={} state={} at_ms={at_ms}",
                            line.node, line.state
                        )?;
                        stdout.flush()?;
                    }
                }
            }
            Message::Error(text) | Message::Refused(text) => self.stderr("error", &text),
            Message::Warning(text) => self.stderr("warning", &text),
        }
        Ok(())
    }

    fn stderr(&mut self, kind: &str, text: &str) {
        eprintln!("{kind}: {text}");
        if let Some(screen) = &mut self.screen {
            // The line went below the table: draw the next one below it.
            screen.drawn = 0;
        }
    }

    fn draw(&mut self, rows: &[NodeSnapshot]) -> io::Result<()> {
        match &mut self.screen {
            Some(screen) => screen.draw(rows, self.start.elapsed()),
            None => Ok(()),
        }
    }
}

/// The live table: membership rows and the latest events, redrawn in place with
/// ANSI escapes (cursor up, clear line).
struct Screen {
    title: String,
    recent: VecDeque<String>,
    /// Lines the last drawing took: how far up the next one starts.
    drawn: usize,
}

impl Screen {
    fn note(&mut self, line: String) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    fn draw(&mut self, rows: &[NodeSnapshot], elapsed: Duration) -> io::Result<()> {
        let count = |state| rows.iter().filter(|row| row.state == state).count();
        let mut lines: Vec<String> = self.title.lines().map(str::to_owned).collect();
        if let Some(first) = lines.first_mut() {
            let _ = write!(first, "  [{:.1} s]", elapsed.as_secs_f64());
        }
        lines.extend([
            format!(
                "members {}: {} alive, {} suspect, {} dead, {} left",
                rows.len(),
                count(NodeState::Alive),
                count(NodeState::Suspect),
                count(NodeState::Dead),
                count(NodeState::Left)
            ),
            String::new(),
            format!(
                "{:<14} {:<22} {:<8} {:>10} {:>8}",
                "NODE", "ADDRESS", "STATE", "LAST RTT", "FAILURES"
            ),
        ]);
        // Room for the rows: the table must fit the screen, or the cursor cannot
        // get back up to redraw it.
        let height = terminal_height().unwrap_or(DEFAULT_HEIGHT);
        let room = height
            .saturating_sub(lines.len() + RECENT_EVENTS + 4)
            .max(1);
        let shown = if rows.len() > room {
            room - 1
        } else {
            rows.len()
        };
        for row in &rows[..shown] {
            let rtt = row.last_rtt.map_or("-".to_owned(), |rtt| {
                format!("{:.2} ms", rtt.as_secs_f64() * 1e3)
            });
            lines.push(format!(
                "{:<14} {:<22} {} {:>10} {:>8}",
                row.node.as_str(),
                row.addr.to_string(),
                paint(row.state),
                rtt,
                row.failures
            ));
        }
        if shown < rows.len() {
            lines.push(format!("... and {} more", rows.len() - shown));
        }
        lines.push(String::new());
        lines.push("recent events:".to_owned());
        lines.extend(self.recent.iter().cloned());

        // Line wrap off while drawing: a line wider than the terminal is cut at its
        // edge instead of taking two lines, so that each takes exactly one.
        let mut frame = String::from("\x1b[?7l");
        if self.drawn > 0 {
            // To the start of the line the last drawing began on.
            let _ = write!(frame, "\x1b[{}F", self.drawn);
        }
        for line in &lines {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str("\x1b[J\x1b[?7h");
        self.drawn = lines.len();
        let mut stdout = io::stdout().lock();
        stdout.write_all(frame.as_bytes())?;
        stdout.flush()
    }
}

/// The state word, padded to its column and coloured.
fn paint(state: NodeState) -> String {
    let color = match state {
        NodeState::Alive => "32",   // green
        NodeState::Suspect => "33", // yellow
        NodeState::Dead => "31",    // red
        NodeState::Left => "2",     // dim
    };
    format!("\x1b[{color}m{:<8}\x1b[0m", state.as_str())
}

/// The live table's heading: where the master is and the timings in force.
fn title(master: &Master) -> String {
    let config = master.config();
    format!(
        "heartbeat master on {}\n\
         probe every {} ms, timeout {} ms, dead after {} failed probes (within {} ms)",
        master.local_addr(),
        millis(config.probe_interval),
        millis(config.probe_timeout),
        config.max_failures + 1,
        millis(config.detection_bound())
    )
}

/// The terminal's height in lines, if stdout is one that tells.
#[cfg(unix)]
fn terminal_height() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to
    // a live, writable one.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some(usize::from(size.ws_row))
}

#[cfg(not(unix))]
fn terminal_height() -> Option<usize> {
    None
}

// ---------------------------------------------------------------------------------
// Small helpers.

async fn start_node(
    id: NodeId,
    master: Addr,
    listen: Addr,
    config: &HeartbeatConfig,
) -> anyhow::Result<Node> {
    let node = Node::builder(id, master)
        .listen(listen)
        .config(config.clone())
        .start(&Tcp, Tcp)
        .await?;
    Ok(node)
}

/// An error and its causes, joined with `: `.
fn chain(error: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::from(error))
}

fn ms_since(start: Instant, at: Instant) -> u64 {
    millis(at.saturating_duration_since(start))
}

/// Resolves at `deadline`, or never.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
