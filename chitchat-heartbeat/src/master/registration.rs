//! The registration port's handler: one verified heartbeat message per frame,
//! `register` answered with `register-ack` or `refuse`, `leave` applied. Every
//! check that does not need the table (MAC, syntax, cluster, probe address) runs
//! before the table's lock is taken.

use std::sync::Arc;

use chitchat_core::{Addr, Frame, ReadContext};

use super::{bump, MasterError, Shared};
use crate::clock::unix_millis;
use crate::detector::{LeaveRefused, RegisterError, Registration};
use crate::policy::check_probe_addr;
use crate::wire::{decode, Body, Message, Metadata, RefuseReason};

/// The registration server's handler.
pub(super) fn on_frame(ctx: &mut dyn ReadContext<Arc<Shared>>, frame: Frame<'_>) {
    let shared = ctx.state().clone();
    let peer = ctx.peer_addr();
    let message = match decode(&frame, shared.config.keys()) {
        Ok(message) => message,
        Err(source) => {
            shared.error(MasterError::Wire { peer, source });
            ctx.close();
            return;
        }
    };
    if let Err(source) = message.check_cluster(&shared.config.cluster) {
        let reason = RefuseReason::WrongCluster;
        let _ = ctx.reply(&answer(
            &shared,
            &message,
            Body::Refuse { reason, known: 0 },
        ));
        let node = message.node;
        shared.error(MasterError::WrongCluster { peer, node, source });
        ctx.close();
        return;
    }
    match message.body {
        Body::Register {
            ref addr,
            ref metadata,
        } => register(&shared, ctx, peer, &message, *addr, metadata.clone()),
        Body::Leave => leave(&shared, ctx, peer, &message),
        ref other => {
            let message = other.name();
            shared.error(MasterError::Unexpected { peer, message });
            ctx.close();
        }
    }
}

// The detector's `register` result (see there) flows through a closure.
#[allow(clippy::result_large_err)]
fn register(
    shared: &Shared,
    ctx: &mut dyn ReadContext<Arc<Shared>>,
    peer: Addr,
    message: &Message,
    addr: Addr,
    metadata: Metadata,
) {
    let config = &shared.config;
    let node = message.node.clone();
    let result = match check_probe_addr(&addr, &peer, config.allow_foreign_probe_addrs) {
        Err(reason) => Err(RegisterError::BadAddress { node, addr, reason }),
        Ok(()) => shared.with_state(|state, now| {
            let repeat = state.detector.node(node.as_str()).is_some_and(|row| {
                row.incarnation == message.incarnation && row.addr == addr && row.state.is_live()
            });
            // A node checking in is not a newcomer: only what can change the table
            // is counted against its address.
            let ip = peer.as_inet().map(|peer| peer.ip());
            if let Some(ip) = ip.filter(|_| !repeat) {
                if !state.limiter.allow(ip, now) {
                    let limit = config.max_registrations_per_ip;
                    return Err(RegisterError::Busy { node, limit });
                }
            }
            let registration = Registration {
                node,
                addr,
                incarnation: message.incarnation,
                seq: message.seq,
                metadata,
            };
            state.detector.register(now, unix_millis(), registration)
        }),
    };
    match result {
        Ok(()) => {
            bump(&shared.counters.registrations, 1);
            let _ = ctx.reply(&answer(shared, message, Body::RegisterAck));
        }
        Err(source) => {
            // A replay is not answered: nothing the sender could not know already,
            // and no work for a flood of copies.
            if let Some(reason) = source.refuse_reason() {
                let known = source.known_incarnation();
                let _ = ctx.reply(&answer(shared, message, Body::Refuse { reason, known }));
            }
            shared.error(MasterError::Refused { peer, source });
            // One refusal ends the exchange: whatever else is queued on this
            // connection is dropped unread.
            ctx.close();
        }
    }
}

fn leave(shared: &Shared, ctx: &mut dyn ReadContext<Arc<Shared>>, peer: Addr, message: &Message) {
    let result = shared.with_state(|state, now| {
        let node = message.node.as_str();
        state
            .detector
            .leave(now, node, message.incarnation, message.seq)
    });
    match result {
        Ok(()) => bump(&shared.counters.leaves, 1),
        Err(source) => {
            if matches!(source, LeaveRefused::Replay { .. }) {
                ctx.close();
            }
            shared.error(MasterError::Leave { peer, source });
        }
    }
}

/// The master's answer to `message`: its header echoed, with this run's epoch,
/// signed.
fn answer(shared: &Shared, message: &Message, body: Body) -> bytes::BytesMut {
    let reply = Message {
        epoch: shared.epoch,
        ..message.reply(body)
    };
    reply.to_bytes(shared.config.keys())
}
