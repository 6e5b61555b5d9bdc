//! `heartbeat master`: serve registrations and probe every node until stopped.
//!
//! Before it listens it raises the open-file limit and fits `--max-nodes` under
//! it: each node holds a probe connection, and registrations need their own, so a
//! full table can never leave the master without a descriptor to dial with.
//! SIGUSR1 forgets every dead and left node at once.

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chitchat_core::Addr;
use chitchat_heartbeat::{HeartbeatConfig, Master, NodeState};
use chitchat_tokio::Tcp;
use clap::Args;
use tokio::sync::mpsc;

use crate::lines::{forward_master, Output};
use crate::table::{title, Table};
use crate::{print_listening, Cluster};

/// Descriptors kept free beyond the nodes' and the registrations': stdio, the
/// listener, the runtime's own, a few dials in flight.
const FD_RESERVE: usize = 64;

/// Live-table refresh: smooth to the eye; a redraw only happens when something
/// changed (or once a second for the clock).
const REDRAW: Duration = Duration::from_millis(200);

/// The flags of `heartbeat master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Address to listen for registrations on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7000")]
    listen: Addr,

    /// Most nodes in the table, live or not; a new node is refused when it is full
    /// of live ones. Lowered to fit the open-file limit.
    #[arg(long, value_name = "N", default_value_t = HeartbeatConfig::default().max_nodes)]
    max_nodes: usize,

    /// Forget a dead or left node after this many seconds; 0 keeps them (SIGUSR1
    /// forgets them all at once).
    #[arg(long, value_name = "SECS", default_value_t = default_forget_after())]
    forget_after: u64,

    /// Registrations accepted per second from one IP address.
    #[arg(long, value_name = "N", default_value_t = HeartbeatConfig::default().max_registrations_per_ip)]
    register_rate: u32,

    /// Probe the address a node registers even when it is not on the host the
    /// registration came from (nodes behind NAT or a proxy). Off: the master dials
    /// only registering hosts.
    #[arg(long)]
    allow_foreign_probe_addrs: bool,

    #[command(flatten)]
    cluster: Cluster,
}

fn default_forget_after() -> u64 {
    HeartbeatConfig::default()
        .forget_after
        .map_or(0, |ttl| ttl.as_secs())
}

pub async fn run(start: Instant, args: MasterArgs) -> anyhow::Result<ExitCode> {
    // Handlers first: a signal sent as soon as `listening on` shows must not kill us.
    let stop = chitchat_examples::stop_signal()?;
    let mut forget = forget_signal()?;
    let mut config = args.cluster.config()?;
    config.max_nodes = args.max_nodes;
    config.forget_after = (args.forget_after > 0).then(|| Duration::from_secs(args.forget_after));
    config.max_registrations_per_ip = args.register_rate;
    config.allow_foreign_probe_addrs = args.allow_foreign_probe_addrs;
    fit_fd_limit(&mut config);
    let builder = Master::builder(args.listen).config(config);
    // From the builder: a node retrying may register the instant the port opens.
    let events = builder.events();
    let master = builder.start(&Tcp, Tcp).await?;
    print_listening(master.local_addr())?;
    if let Some(warning) = master.security_warning() {
        eprintln!("warning: {warning}");
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let forwarder = forward_master(events, tx);
    let table = io::stdout()
        .is_terminal()
        .then(|| Table::new(title(&master)));
    let mut out = Output::new(start, table, true);
    let mut redraw = tokio::time::interval(REDRAW);
    let stopped = args.cluster.until_stopped(start, stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            Some(note) = rx.recv() => {
                out.show(note)?;
            }
            Some(()) = forget.recv() => forget_gone(&master),
            _ = redraw.tick(), if out.is_live() => out.draw(&master)?,
        }
    }
    master.shutdown().await;
    out.show_rest(forwarder, &mut rx).await?;
    out.finish(&master)?;
    Ok(ExitCode::SUCCESS)
}

/// `Master::remove` of every dead and left node.
fn forget_gone(master: &Master) {
    let gone: Vec<_> = master
        .snapshot()
        .into_iter()
        .filter(|row| matches!(row.state, NodeState::Dead | NodeState::Left))
        .collect();
    for row in gone {
        master.remove(row.node.as_str());
    }
}

/// Raises the open-file soft limit to the hard one, and lowers `max_nodes` so that
/// the nodes' probe connections, the registration connections and a reserve fit.
fn fit_fd_limit(config: &mut HeartbeatConfig) {
    let Some(limit) = raise_fd_limit() else {
        return;
    };
    let room = limit.saturating_sub(config.registration_connections + FD_RESERVE);
    if config.max_nodes > room {
        eprintln!(
            "warning: the open-file limit is {limit}: --max-nodes lowered from {} to {room} \
             (raise `ulimit -n` for more)",
            config.max_nodes
        );
        config.max_nodes = room.max(1);
    }
}

/// The open-file limit after raising the soft one to the hard one.
#[cfg(unix)]
fn raise_fd_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one `rlimit` we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let mut raised = limit;
            raised.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<usize> {
    None
}

/// A channel that gets `()` on every SIGUSR1.
#[cfg(unix)]
fn forget_signal() -> io::Result<mpsc::UnboundedReceiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

#[cfg(not(unix))]
fn forget_signal() -> io::Result<mpsc::UnboundedReceiver<()>> {
    Ok(mpsc::unbounded_channel().1)
}
