//! The round driver: one task that probes the whole table. Each round it ticks the
//! detector, writes one `probe` on every live node's connection (kept in the node's
//! row as a [`Link`]), dials the nodes that have none, and `probe_timeout` later
//! sweeps the unanswered probes as failures. Acks are handled in each connection's
//! handler, straight into the detector: no task, channel or timer per node.
//!
//! At most `DIALS_AT_ONCE` dials run at a time; the rest wait their turn in
//! order. A master that starts (or comes back) with thousands of nodes to dial
//! would otherwise hold a dial task for each at once, and the allocator keeps that
//! peak long after the dials are done.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chitchat_core::{Addr, ClientConfig, Connector, Frame, ReadContext};
use chitchat_tokio::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{bump, MasterError, Shared, State};
use crate::detector::Slot;
use crate::wire::{decode, encode_probe, Body, NodeId, MAX_MESSAGE_LEN};

/// A node's probe connection, kept in its row of the detector, which drops it
/// (closing the connection) when the node's identity or address changes, a probe
/// fails, or the node turns Dead or Left.
#[derive(Default)]
pub(super) enum Link {
    /// No connection: the next round dials.
    #[default]
    Idle,
    /// A dial is under way.
    Dialing,
    /// Connected; probes are written here.
    Open(Client<ProbeConn>),
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Idle => "Idle",
            Link::Dialing => "Dialing",
            Link::Open(_) => "Open",
        })
    }
}

/// The state of a probe connection's handler: which row its acks answer for.
pub(super) struct ProbeConn {
    shared: Arc<Shared>,
    slot: Slot,
}

/// Dials in flight at once. On loopback a dial takes about 0.1 ms, so 18 000 nodes
/// are dialed in well under a round; a node that does not answer holds its turn
/// for up to `probe_timeout`, so there is room for hundreds of those before the
/// others wait.
const DIALS_AT_ONCE: usize = 512;

/// A dial to start once the table's lock is released.
struct Dial {
    slot: Slot,
    node: NodeId,
    incarnation: u64,
    addr: Addr,
    /// The round's probe, written as soon as the connection is up.
    probe: Bytes,
}

/// The round driver: runs until `stop` turns true, then drops every probe
/// connection.
pub(super) async fn run<C: Connector>(
    shared: Arc<Shared>,
    connector: Arc<C>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let mut ticks = tokio::time::interval(config.probe_interval);
    // After a stall, start the next round one interval later instead of bursting
    // the missed ones: the detector has reported the stall already.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline: Option<Instant> = None;
    let mut dials = JoinSet::new();
    let mut waiting: VecDeque<Dial> = VecDeque::new();
    let mut scratch = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            () = sleep_until(deadline) => {
                deadline = None;
                shared.with_state(|state, now| state.detector.sweep(now));
                continue;
            }
            _ = ticks.tick() => {}
            // A finished dial's task is freed only once joined: reap them as they
            // end, not a round later, and start the next waiting one.
            Some(_) = dials.join_next(), if !dials.is_empty() => {
                start_dials(&shared, &connector, &mut dials, &mut waiting);
                continue;
            }
        }
        if deadline.take().is_some() {
            // The tick came before the deadline: the runtime ran late. The last
            // round is decided first (the detector discounts a stall's failures).
            shared.with_state(|state, now| state.detector.sweep(now));
        }
        let to_dial =
            shared.with_state(|state, now| start_round(&shared, state, now, &mut scratch));
        waiting.extend(to_dial);
        start_dials(&shared, &connector, &mut dials, &mut waiting);
        deadline = Some(Instant::now() + config.probe_timeout);
    }
    dials.shutdown().await;
    shared.lock().detector.reset_links();
}

/// Starts waiting dials, in order, while fewer than `DIALS_AT_ONCE` run.
fn start_dials<C: Connector>(
    shared: &Arc<Shared>,
    connector: &Arc<C>,
    dials: &mut JoinSet<()>,
    waiting: &mut VecDeque<Dial>,
) {
    while dials.len() < DIALS_AT_ONCE {
        let Some(dial) = waiting.pop_front() else {
            return;
        };
        dials.spawn(open(shared.clone(), connector.clone(), dial));
    }
}

/// Ticks the detector and probes every live node; returns the dials to start.
fn start_round(
    shared: &Shared,
    state: &mut State,
    now: std::time::Instant,
    scratch: &mut BytesMut,
) -> Vec<Dial> {
    let (config, epoch, keys) = (&shared.config, shared.epoch, shared.config.keys());
    let State {
        detector,
        probe_seq,
        ..
    } = state;
    detector.tick(now);
    let mut to_dial = Vec::new();
    let mut sent = 0;
    detector.send_probes(now, |slot, row, link| {
        if matches!(link, Link::Dialing) {
            // Still dialing since last round (the runtime ran late): nothing to
            // decide this round.
            return None;
        }
        *probe_seq += 1;
        let seq = *probe_seq;
        scratch.clear();
        encode_probe(
            &config.cluster,
            &row.node,
            row.incarnation,
            epoch,
            seq,
            keys,
            scratch,
        );
        sent += 1;
        match link {
            Link::Open(client) if !client.is_closed() => {
                if client.try_write(scratch).is_err() {
                    // Not sent: it fails at the deadline, and the next round dials.
                    *link = Link::Idle;
                }
            }
            _ => {
                *link = Link::Dialing;
                to_dial.push(Dial {
                    slot,
                    node: row.node.clone(),
                    incarnation: row.incarnation,
                    addr: row.addr,
                    probe: Bytes::copy_from_slice(scratch),
                });
            }
        }
        Some(seq)
    });
    bump(&shared.counters.probes, sent);
    to_dial
}

/// Dials a node, and keeps the connection in its row if the row is still the node
/// it was dialed for (else drops it); writes the round's probe on it.
async fn open<C: Connector>(shared: Arc<Shared>, connector: Arc<C>, dial: Dial) {
    let timeout = shared.config.probe_timeout;
    let mut client_config = ClientConfig::default();
    // The client's own event stream is never read: one slot is enough.
    client_config.event_capacity = 1;
    let handler_state = ProbeConn {
        shared: shared.clone(),
        slot: dial.slot,
    };
    let result = Client::with_state(dial.addr, handler_state)
        .config(client_config)
        .on_frame(on_reply)
        .max_frame_len(MAX_MESSAGE_LEN)
        .frame_timeout(timeout)
        .connect_timeout(timeout)
        .linger(timeout)
        .connect_with(&*connector)
        .await;
    let mut state = shared.lock();
    let detector = &mut state.detector;
    let Some(link) = detector.link_mut(dial.slot, dial.node.as_str(), dial.incarnation, &dial.addr)
    else {
        // The node changed meanwhile; the client closes as it drops.
        return;
    };
    if !matches!(link, Link::Dialing) {
        return;
    }
    *link = match result {
        Ok(client) => {
            let _ = client.try_write(&dial.probe);
            Link::Open(client)
        }
        // The round's probe fails at its deadline; the next round dials again.
        Err(_) => Link::Idle,
    };
}

/// The handler of a probe connection: counts `probe-ack`s, closes the connection
/// on anything else.
fn on_reply(ctx: &mut dyn ReadContext<ProbeConn>, frame: Frame<'_>) {
    let peer = ctx.peer_addr();
    let ProbeConn { shared, slot } = ctx.state();
    let error = match decode(&frame, shared.config.keys()) {
        Err(source) => MasterError::Wire { peer, source },
        Ok(ack) => match ack.check_cluster(&shared.config.cluster) {
            Err(source) => MasterError::WrongCluster {
                peer,
                node: ack.node,
                source,
            },
            Ok(()) if ack.body == Body::ProbeAck && ack.epoch == shared.epoch => {
                let counted = shared.with_state(|state, now| {
                    let node = ack.node.as_str();
                    state
                        .detector
                        .probe_acked(now, *slot, node, ack.incarnation, ack.seq)
                });
                // An ack that answers nothing pending (late, repeated, of another
                // node or run) is not an error: it just does not count.
                bump(&shared.counters.acks, u64::from(counted));
                return;
            }
            Ok(()) => MasterError::Unexpected {
                peer,
                message: ack.body.name(),
            },
        },
    };
    shared.error(error);
    ctx.close();
}

/// Resolves at `deadline`, or never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
