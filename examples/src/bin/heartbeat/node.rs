//! `heartbeat node`: answer the masters' probes, stay registered with each, leave
//! when stopped.

use std::process::ExitCode;
use std::time::Instant;

use chitchat_core::Addr;
use chitchat_heartbeat::{MemberStatus, Node, NodeId};
use chitchat_tokio::Tcp;
use clap::Args;
use tokio::sync::mpsc;

use crate::lines::{forward_node, Output};
use crate::{default_node_id, print_listening, resolve, Cluster};

/// The flags of `heartbeat node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A master's registration address, IP:PORT or HOST:PORT; repeat it for more
    /// masters: the node registers with each and answers each one's probes.
    #[arg(long, value_name = "ADDR", required = true)]
    master: Vec<String>,

    /// Address to answer probes on [default: any address, a free port; each master
    /// is told the IP this host reaches it from].
    #[arg(long, value_name = "ADDR")]
    listen: Option<Addr>,

    /// This node's id, unique in the cluster (printable ASCII, no spaces)
    /// [default: node-PID].
    #[arg(long, value_name = "NAME")]
    id: Option<NodeId>,

    #[command(flatten)]
    cluster: Cluster,
}

pub async fn run(start: Instant, args: NodeArgs) -> anyhow::Result<ExitCode> {
    let stop = chitchat_examples::stop_signal()?;
    let id = match args.id {
        Some(id) => id,
        None => default_node_id()?,
    };
    let mut masters = Vec::new();
    for master in &args.master {
        masters.push(resolve(master).await?);
    }
    let config = args.cluster.config()?;
    let mut builder = Node::builder(id.clone(), masters[0]).config(config.clone());
    for &master in &masters[1..] {
        builder = builder.master(master);
    }
    if let Some(listen) = args.listen {
        builder = builder.listen(listen);
    }
    // From the builder, so that the first registration is seen whatever the
    // threads do.
    let events = builder.events();
    let node = builder.start(&Tcp, Tcp).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forwarder = forward_node(id, events, tx);
    print_listening(node.local_addr())?;

    // A node has no table: its events are lines, on a terminal too.
    let mut out = Output::new(start, None, true);
    // The library retries masters that do not answer quietly, with backoff: say so
    // now and then, until one accepts the node.
    let mut waiting = tokio::time::interval_at(
        (start + config.master_timeout).into(),
        config.master_timeout,
    );
    let stopped = args.cluster.until_stopped(start, stop);
    let mut code = ExitCode::SUCCESS;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            Some(note) = rx.recv() => {
                out.show(note)?;
                if matches!(node.status(), MemberStatus::Refused(_)) {
                    // Every master refused the node for good.
                    code = ExitCode::FAILURE;
                    break;
                }
            }
            _ = waiting.tick(), if node.status() == MemberStatus::Registering => {
                eprintln!(
                    "warning: no master has accepted node {} after {:.1} s; still trying {}",
                    node.id(),
                    start.elapsed().as_secs_f64(),
                    args.master.join(", ")
                );
            }
        }
    }
    // `leave` only to masters that know us; `leave` skips the others.
    if code == ExitCode::SUCCESS {
        if let Err(err) = node.leave().await {
            eprintln!("warning: node {}: {err}", node.id());
        }
    } else {
        node.stop().await;
    }
    out.show_rest(forwarder, &mut rx).await?;
    Ok(code)
}
