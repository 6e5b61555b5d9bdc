//! The node's probe port: its handler answers the masters' probes and, when the
//! connection that carried a master's probes closes, makes the node check in with
//! that master; its engine watcher forwards the engine's errors to the node's event
//! stream.

use std::sync::Arc;

use chitchat_core::{CloseEvent, ConnEvent, Events, Frame, Handler, ReadContext};
use futures::StreamExt;

use super::{MemberStatus, NodeError, NodeEvent, NodeShared};
use crate::clock::now;
use crate::wire::{decode, Body, Message};

/// What a verified probe for this node and run means to it.
enum Verdict {
    /// A fresh probe of a master that accepted this node: a sign of life.
    Counted,
    /// A probe of a master run the node does not know as registered (its ack got
    /// lost, or the node is registering again): answered, not counted.
    Answered,
    /// A seq already counted for that master run.
    Replay,
}

/// The probe server's handler.
pub(super) struct ProbePort;

impl Handler<Arc<NodeShared>> for ProbePort {
    type Conn = ();

    fn on_frame(&self, ctx: &mut dyn ReadContext<Arc<NodeShared>>, _: &mut (), frame: Frame<'_>) {
        answer(ctx, frame);
    }

    /// The connection that carried a master's probes closed (the master declared
    /// us dead, forgot us, or restarted): check in with it at once.
    fn on_close(&self, ctx: &mut dyn ReadContext<Arc<NodeShared>>, _: (), close: &CloseEvent) {
        for master in &ctx.state().masters {
            let mut view = master.view();
            if view.link_peer == Some(close.peer) {
                view.link_peer = None;
                drop(view);
                master.check_in.notify_one();
            }
        }
    }
}

/// Answers one probe, or closes the connection of a peer that sent anything else.
fn answer(ctx: &mut dyn ReadContext<Arc<NodeShared>>, frame: Frame<'_>) {
    let shared = ctx.state().clone();
    let peer = ctx.peer_addr();
    let error = match decode(&frame, shared.config.keys()) {
        Err(source) => NodeError::Wire { peer, source },
        Ok(probe) => match probe.check_cluster(&shared.config.cluster) {
            Err(source) => NodeError::WrongCluster { peer, source },
            Ok(()) if probe.body != Body::Probe => NodeError::Unexpected {
                peer,
                message: probe.body.name(),
            },
            Ok(()) if probe.node != shared.id || probe.incarnation != shared.incarnation() => {
                // No answer: a stranger learns neither who listens here nor its run.
                NodeError::NotThisNode { peer }
            }
            Ok(()) => match note(&shared, &probe, peer) {
                Verdict::Replay => NodeError::Replay {
                    peer,
                    epoch: probe.epoch,
                    seq: probe.seq,
                },
                Verdict::Counted | Verdict::Answered => {
                    let ack = probe.reply(Body::ProbeAck);
                    let _ = ctx.reply(&ack.to_bytes(shared.config.keys()));
                    shared.count(|c| &c.probes_answered);
                    return;
                }
            },
        },
    };
    shared.emit(NodeEvent::Error { at: now(), error });
    ctx.close();
}

/// Counts `probe` as a sign of life of the master run it names, once per seq, and
/// remembers the connection it came on.
fn note(shared: &NodeShared, probe: &Message, peer: chitchat_core::Addr) -> Verdict {
    let mut verdict = Verdict::Answered;
    for master in &shared.masters {
        let mut view = master.view();
        if view.epoch != probe.epoch || probe.epoch == 0 {
            continue;
        }
        if !view.probes.accept(probe.seq) {
            return Verdict::Replay;
        }
        if view.status == MemberStatus::Registered {
            view.last_contact = tokio::time::Instant::now();
            view.link_peer = Some(peer);
            verdict = Verdict::Counted;
        } else {
            // It probes us while we think it lost: check in to be sure.
            drop(view);
            master.check_in.notify_one();
        }
    }
    verdict
}

/// Reads the probe server's engine events until it stops: errors go to the node's
/// event stream.
pub(super) async fn watch_engine(shared: Arc<NodeShared>, mut events: Events<ConnEvent>) {
    while let Some(event) = events.next().await {
        if let Some(error) = event.as_error() {
            shared.emit(NodeEvent::Connection {
                at: now(),
                error: error.clone(),
            });
        }
    }
}
