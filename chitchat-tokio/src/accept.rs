//! The accept loop and admission: every accepted connection is checked against the
//! server's limits before anything is allocated for it, then registered and handed
//! to its own task (`conn`). Generic over chitchat-core's `Listener`, so the same
//! loop serves every transport.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use chitchat_core::backend::close_event;
use chitchat_core::{Addr, CloseReason, ConnError, ConnStats, Connection, Listener, PeerFailed};
use tokio_util::sync::CancellationToken;

use crate::admission::Refusal;
use crate::conn::{ConnParams, Driver};
use crate::handle::ConnShared;
use crate::hub::Hub;

/// First pause after a failed accept (e.g. out of file descriptors): long enough
/// that a full fd table does not spin a core, short enough to notice freed fds soon.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between accept attempts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) async fn accept_loop<L, S>(
    mut listener: L,
    params: Arc<ConnParams<S>>,
    stop: CancellationToken,
) where
    L: Listener,
    S: Send + Sync + 'static,
{
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = poll_fn(|cx| listener.poll_accept(cx)) => accepted,
        };
        match accepted {
            Ok((conn, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(&params, conn, peer);
            }
            Err(err) if is_peer_gone(&err) => report_peer_failed(&params.hub, err),
            Err(err) => {
                let hub = &params.hub;
                hub.reporter.error(ConnError::Accept {
                    local: hub.local,
                    source: Arc::new(err),
                });
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Accept failures that concern one peer that already left, not the listener.
fn is_peer_gone(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(err.kind(), ConnectionAborted | ConnectionReset)
}

/// Reports a peer whose connection failed before it was established (a listener's
/// `PeerFailed`, such as a failed TLS handshake); one that merely left is not
/// worth an event. Either way the loop accepts on at once.
fn report_peer_failed(hub: &Hub, err: std::io::Error) {
    if let Ok(failed) = PeerFailed::from_io_error(err) {
        hub.reporter.error(failed.into());
    }
}

/// Registers an accepted connection and starts its task, or refuses it at once.
fn admit<C, S>(params: &Arc<ConnParams<S>>, conn: C, peer: Addr)
where
    C: Connection,
    S: Send + Sync + 'static,
{
    let hub = &params.hub;
    // Checked first so that a flood of refusals costs no allocation or syscall.
    if let Err(refusal) = hub.admission.admit(&peer, hub.registry.len()) {
        return refuse(hub, conn, peer, refusal);
    }
    let handle = Arc::new(ConnShared::new(peer));
    if !hub
        .registry
        .insert_within(handle.clone(), hub.admission.max_total())
    {
        hub.admission.release(&peer);
        return refuse(hub, conn, peer, Refusal::Total(hub.admission.max_total()));
    }
    // No span per connection: it would cost every idle connection its size. The
    // peer is a field of every event instead.
    tracing::debug!(%peer, "accepted");
    hub.counters.opened();
    let driver = Driver::new(conn, handle, params.clone());
    tokio::spawn(driver);
}

/// Closes a connection over a limit: no task, no buffer, two events.
fn refuse<C: Connection>(hub: &Hub, conn: C, peer: Addr, refusal: Refusal) {
    drop(conn);
    hub.counters.refused();
    let error = match refusal {
        Refusal::Total(limit) => ConnError::Refused { peer, limit },
        Refusal::PerIp(limit) => ConnError::RefusedPerIp { peer, limit },
    };
    hub.reporter.error(error);
    hub.reporter.closed(close_event(
        peer,
        CloseReason::Refused,
        ConnStats::default(),
    ));
}
