//! The node's membership with one master: register, stay registered (watch for
//! silence, check in when the master's probe connection closes), register again;
//! renew the incarnation when refused as stale or duplicate; and the `leave` sent
//! to every master at the end.

use std::sync::Arc;
use std::time::Duration;

use chitchat_core::{Addr, Connector, Frame, ReadContext};
use chitchat_tokio::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{advertised, passed, LeaveError, MemberStatus, NodeError, NodeEvent, NodeShared};
use crate::clock::{next_incarnation, now};
use crate::wire::{decode, Body, Message, RefuseReason, MAX_MESSAGE_LEN};

/// Replies buffered between a registration connection's handler and the task
/// waiting for one: one is expected, the rest are dropped.
const REPLY_QUEUE: usize = 4;

/// How one registration attempt ended.
enum Answer {
    Ack { epoch: u64 },
    Refused { reason: RefuseReason, known: u64 },
}

/// Keeps the node registered with master `index` until the node stops, or the
/// master refuses it for a final reason.
pub(super) async fn run<C: Connector>(shared: Arc<NodeShared>, index: usize, connector: Arc<C>) {
    let master = &shared.masters[index];
    let mut attempt = 0u32;
    // When the master was declared lost, while it is.
    let mut lost_at: Option<Instant> = None;
    loop {
        let answer = register_once(&shared, index, &*connector).await;
        match answer {
            None => {
                pause(&shared, index, shared.backoff(attempt), &mut lost_at).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
            Some(Answer::Refused { reason, known }) => {
                shared.emit(NodeEvent::Refused {
                    at: now(),
                    master: master.addr,
                    reason,
                });
                if reason.is_final() {
                    shared.set_status(index, MemberStatus::Refused(reason));
                    return;
                }
                if matches!(
                    reason,
                    RefuseReason::StaleIncarnation | RefuseReason::DuplicateId
                ) {
                    renew(&shared, index, known);
                }
                pause(&shared, index, shared.backoff(attempt), &mut lost_at).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
            Some(Answer::Ack { epoch }) => {
                shared.count(|c| &c.registrations);
                attempt = 0;
                let restarted = {
                    let mut view = master.view();
                    let restarted = view.epoch != epoch;
                    if restarted {
                        view.epoch = epoch;
                        view.probes = Default::default();
                    }
                    view.last_contact = Instant::now();
                    restarted
                };
                shared.set_status(index, MemberStatus::Registered);
                let at = now();
                let event = match lost_at.take() {
                    Some(lost) => Some(NodeEvent::MasterBack {
                        at,
                        master: master.addr,
                        lost_for: lost.elapsed(),
                    }),
                    None => restarted.then_some(NodeEvent::Registered {
                        at,
                        master: master.addr,
                        epoch,
                    }),
                };
                if let Some(event) = event {
                    shared.emit(event);
                }
            }
        }
        // Registered: wait for silence, or for a reason to check in.
        let timeout = shared.config.master_timeout;
        loop {
            let last = master.view().last_contact;
            tokio::select! {
                biased;
                () = master.check_in.notified() => {
                    // Spread the check-ins of the nodes a master dropped together.
                    let draw = shared.next_seq();
                    let delay = shared.jitter(shared.config.probe_interval / 2, draw);
                    pause(&shared, index, delay, &mut lost_at).await;
                    break;
                }
                () = tokio::time::sleep_until(last + timeout) => {
                    if passed(master.view().last_contact + timeout) {
                        declare_lost(&shared, index, &mut lost_at);
                        break;
                    }
                }
            }
        }
    }
}

/// Sleeps `duration`; declares the master lost if its silence reaches
/// `master_timeout` meanwhile.
async fn pause(
    shared: &NodeShared,
    index: usize,
    duration: Duration,
    lost_at: &mut Option<Instant>,
) {
    let end = Instant::now() + duration;
    let master = &shared.masters[index];
    loop {
        let lost_deadline = master.view().last_contact + shared.config.master_timeout;
        let registered_once = master.view().status != MemberStatus::Registering;
        if lost_at.is_none() && registered_once && lost_deadline < end {
            tokio::select! {
                biased;
                () = master.check_in.notified() => return,
                () = tokio::time::sleep_until(lost_deadline) => {
                    if passed(master.view().last_contact + shared.config.master_timeout) {
                        declare_lost(shared, index, lost_at);
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            () = master.check_in.notified() => return,
            () = tokio::time::sleep_until(end) => return,
        }
    }
}

fn declare_lost(shared: &NodeShared, index: usize, lost_at: &mut Option<Instant>) {
    if lost_at.is_some() {
        return;
    }
    let master = &shared.masters[index];
    let silent_for = master.view().last_contact.elapsed();
    *lost_at = Some(Instant::now());
    shared.set_status(index, MemberStatus::MasterLost);
    shared.emit(NodeEvent::MasterLost {
        at: now(),
        master: master.addr,
        silent_for,
    });
}

/// Takes an incarnation greater than the refused one and than `known` (what the
/// master holds), and makes every other master hear of it.
fn renew(shared: &NodeShared, index: usize, known: u64) {
    let from = shared.incarnation();
    let floor = known.max(from).saturating_add(1);
    let to = next_incarnation(floor);
    let previous = shared
        .incarnation
        .fetch_max(to, std::sync::atomic::Ordering::AcqRel);
    if previous >= to {
        // Another master's task renewed meanwhile, to at least as much.
        return;
    }
    shared.emit(NodeEvent::Renewed {
        at: now(),
        master: shared.masters[index].addr,
        from,
        to,
    });
    for (i, master) in shared.masters.iter().enumerate() {
        if i != index {
            master.check_in.notify_one();
        }
    }
}

/// The state of a registration connection's handler.
struct ReplySink {
    replies: mpsc::Sender<Message>,
    shared: Arc<NodeShared>,
}

/// The handler of a registration connection: forwards the master's answers.
fn on_reply(ctx: &mut dyn ReadContext<ReplySink>, frame: Frame<'_>) {
    let peer = ctx.peer_addr();
    let sink = ctx.state();
    let error = match decode(&frame, sink.shared.config.keys()) {
        Ok(reply) if matches!(reply.body, Body::RegisterAck | Body::Refuse { .. }) => {
            let _ = sink.replies.try_send(reply);
            return;
        }
        Ok(reply) => NodeError::Unexpected {
            peer,
            message: reply.body.name(),
        },
        Err(source) => NodeError::Wire { peer, source },
    };
    sink.shared.emit(NodeEvent::Error { at: now(), error });
    ctx.close();
}

/// One registration with master `index`: dial, `register`, wait for the answer to
/// it, all within `probe_timeout`. `None` when there was no answer.
async fn register_once<C: Connector>(
    shared: &Arc<NodeShared>,
    index: usize,
    connector: &C,
) -> Option<Answer> {
    let timeout = shared.config.probe_timeout;
    let master = &shared.masters[index];
    let attempt = async {
        let (replies, mut rx) = mpsc::channel(REPLY_QUEUE);
        let sink = ReplySink {
            replies,
            shared: shared.clone(),
        };
        let client = Client::with_state(master.addr, sink)
            .on_frame(on_reply)
            .max_frame_len(MAX_MESSAGE_LEN)
            .connect_timeout(timeout)
            .linger(timeout)
            .connect_with(connector)
            .await
            .ok()?;
        let bound = shared.bound.get().copied()?;
        let addr = advertised(bound, client.local_addr());
        let epoch = {
            let mut view = master.view();
            view.advertised = addr;
            view.epoch
        };
        let register = Message {
            cluster: shared.config.cluster.clone(),
            node: shared.id.clone(),
            incarnation: shared.incarnation(),
            epoch,
            seq: shared.next_seq(),
            body: Body::Register {
                addr,
                metadata: shared.metadata.clone(),
            },
        };
        client
            .try_write(&register.to_bytes(shared.config.keys()))
            .ok()?;
        loop {
            let reply = tokio::select! {
                biased;
                reply = rx.recv() => reply?,
                _ = client.closed() => return None,
            };
            let ours = reply.seq == register.seq
                && reply.node == register.node
                && reply.incarnation == register.incarnation
                && reply.cluster == register.cluster;
            match reply.body {
                Body::RegisterAck if ours => return Some(Answer::Ack { epoch: reply.epoch }),
                Body::Refuse { reason, known } if ours => {
                    return Some(Answer::Refused { reason, known })
                }
                _ => {}
            }
        }
        // The client is dropped here: it closes in the background.
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// Sends `leave` to every master that accepted the node, all at once; the first
/// error, if any.
pub(super) async fn leave_all<C: Connector>(
    shared: Arc<NodeShared>,
    connector: Arc<C>,
) -> Result<(), LeaveError> {
    let accepted: Vec<(Addr, u64)> = shared
        .masters
        .iter()
        .map(|master| (master.addr, master.view().epoch))
        .filter(|&(_, epoch)| epoch != 0)
        .collect();
    let sends = accepted
        .into_iter()
        .map(|(master, epoch)| send_leave(&shared, &*connector, master, epoch));
    let results = futures::future::join_all(sends).await;
    results.into_iter().collect()
}

async fn send_leave<C: Connector>(
    shared: &NodeShared,
    connector: &C,
    master: Addr,
    epoch: u64,
) -> Result<(), LeaveError> {
    let after = shared.config.probe_timeout;
    let attempt = async {
        let client = Client::builder(master)
            .max_frame_len(MAX_MESSAGE_LEN)
            .connect_timeout(after)
            .linger(after)
            .connect_with(connector)
            .await?;
        let leave = Message {
            cluster: shared.config.cluster.clone(),
            node: shared.id.clone(),
            incarnation: shared.incarnation(),
            epoch,
            seq: shared.next_seq(),
            body: Body::Leave,
        };
        client.try_write(&leave.to_bytes(shared.config.keys()))?;
        // The master handles `leave` before it answers our close with its own.
        client.close().await;
        Ok(())
    };
    tokio::time::timeout(after, attempt)
        .await
        .unwrap_or(Err(LeaveError::Timeout { master, after }))
}
