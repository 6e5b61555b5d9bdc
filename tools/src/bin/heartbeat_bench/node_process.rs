//! A node process: the nodes of one range, started in waves, reporting a tally
//! line every second.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chitchat_heartbeat::{HeartbeatConfig, Node, NodeId};
use chitchat_tokio::Tcp;
use chitchat_tools::sockets;

use crate::tally::Tally;
use crate::worker::exit_when_stdin_closes;
use crate::{FDS_PER_NODE, NODES_PER_WAVE, NODE_PROCESS_RESERVE, STARTUP};

/// A node process: starts nodes `range`, prints `started N`, then a tally line
/// every second until its standard input closes.
pub(crate) async fn node_process(
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
