//! The shared state of one server's connections (or of a client's one connection):
//! the registry, limits, live timeouts, counters and the event queue — and the
//! [`Peers`] that handlers reach through their context and tasks keep as a handle.
//!
//! Connection tasks hold the hub; the user's `Server` and `Client` hold it too. It
//! holds no task and no handler, so nothing here keeps a server running.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;

use chitchat_core::{Addr, CloseEvent, ConnError, Framer, Peers, PeersHandle, Stats, WriteError};
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::admission::Admission;
use crate::budget::PartialBudget;
use crate::clock::Epoch;
use crate::deadlines::{Deadlines, Sweeper};
use crate::handle::{CloseRequest, ConnHandle, OutboundBound};
use crate::inbound::Inbound;
use crate::registry::Registry;
use crate::report::Reporter;
use crate::shutdown::{Finished, Shutdown};
use crate::stats::Counters;
use crate::timeouts::LiveTimeouts;

/// See the [module docs](self).
pub(crate) struct Hub {
    /// The listening address (server) or our end (client).
    pub(crate) local: Addr,
    /// Ourselves, for [`Peers::handle`].
    me: Weak<Hub>,
    pub(crate) registry: Registry,
    /// Encodes writes from outside the connection tasks, exactly as the tasks encode
    /// replies; checks a broadcast once before any peer gets it.
    pub(crate) framer: Framer,
    pub(crate) bound: OutboundBound,
    pub(crate) reporter: Reporter,
    pub(crate) counters: Counters,
    pub(crate) timeouts: LiveTimeouts,
    /// The reference instant of the connections' compact timestamps.
    pub(crate) epoch: Epoch,
    /// When each connection must look at its deadlines again.
    pub(crate) deadlines: Deadlines,
    /// The server's budget for unfinished frames (servers only).
    pub(crate) budget: Option<PartialBudget>,
    pub(crate) admission: Admission,
    pub(crate) shutdown: Shutdown,
    /// What a client's owner waits on (clients only).
    pub(crate) client: Option<ClientSignals>,
}

/// What a client's owner waits on; a server's connections have no single owner
/// waiting for them, so they skip this.
#[derive(Debug, Default)]
pub(crate) struct ClientSignals {
    /// The outbound queue emptied (`flush`) or shrank (`send` waiting for room),
    /// or the connection closed.
    pub(crate) progress: Notify,
    /// The same, for the client's `Sink` (one owner, polled).
    pub(crate) sink: AtomicWaker,
    /// The close, once reported.
    pub(crate) closed: OnceLock<CloseEvent>,
    /// The connection's task ended: the socket is released, the peer's close
    /// (or the linger's end) was seen.
    pub(crate) finished: AtomicBool,
    /// Frames kept for the client's `Stream` (clients without a handler).
    pub(crate) inbound: Option<Arc<Inbound>>,
}

/// How a hub is made.
pub(crate) struct HubParts {
    pub(crate) local: Addr,
    pub(crate) framer: Framer,
    pub(crate) bound: OutboundBound,
    pub(crate) reporter: Reporter,
    pub(crate) timeouts: LiveTimeouts,
    pub(crate) budget: Option<PartialBudget>,
    pub(crate) admission: Admission,
    pub(crate) client: Option<ClientSignals>,
}

impl Hub {
    pub(crate) fn new(parts: HubParts) -> Arc<Hub> {
        let epoch = Epoch::now();
        // A client has one connection: it sweeps its own deadlines and its registry
        // keeps no maps. A server's connections share a sweeper task.
        let one_connection = parts.client.is_some();
        let (sweeper, registry) = if one_connection {
            (Sweeper::Connection, Registry::single())
        } else {
            (Sweeper::Task, Registry::default())
        };
        Arc::new_cyclic(|me| Hub {
            local: parts.local,
            me: me.clone(),
            registry,
            framer: parts.framer,
            bound: parts.bound,
            reporter: parts.reporter,
            counters: Counters::default(),
            timeouts: parts.timeouts,
            epoch,
            deadlines: Deadlines::new(epoch, sweeper),
            budget: parts.budget,
            admission: parts.admission,
            shutdown: Shutdown::default(),
            client: parts.client,
        })
    }

    /// Queues a frame for `conn` from outside its task; a server reports a peer it
    /// drops for a full queue.
    pub(crate) fn write(&self, conn: &ConnHandle, payload: &[u8]) -> Result<(), WriteError> {
        let result = conn.write(payload, &self.framer, self.bound);
        if let Err(WriteError::OutboundFull { peer, limit }) = result {
            if self.bound.drop_when_full {
                self.reporter.error(ConnError::OutboundFull { peer, limit });
            }
        }
        result
    }

    fn lookup(&self, peer: &Addr) -> Result<ConnHandle, WriteError> {
        self.registry
            .get(peer)
            .ok_or(WriteError::UnknownPeer { peer: *peer })
    }

    fn broadcast_to(&self, except: Option<&Addr>, payload: &[u8]) -> Result<usize, WriteError> {
        self.framer
            .check_payload(payload)
            .map_err(|source| WriteError::Encode {
                peer: self.local,
                source,
            })?;
        let mut sent = 0;
        let mut dropped = Vec::new();
        self.registry.for_each_open(|conn| {
            if except.is_some_and(|except| *except == conn.peer()) {
                return;
            }
            match conn.write(payload, &self.framer, self.bound) {
                Ok(()) => sent += 1,
                Err(WriteError::OutboundFull { peer, limit }) if self.bound.drop_when_full => {
                    dropped.push(ConnError::OutboundFull { peer, limit });
                }
                Err(_) => {}
            }
        });
        for error in dropped {
            self.reporter.error(error);
        }
        Ok(sent)
    }

    /// The connection is closed for the application: it no longer counts as open;
    /// tell subscribers (and a client's owner).
    pub(crate) fn conn_closed(&self, event: CloseEvent) {
        self.counters.closed();
        let Some(client) = &self.client else {
            self.reporter.closed(event);
            return;
        };
        let _ = client.closed.set(event.clone());
        // A client's only connection is done: its event stream ends after this.
        self.reporter.closed(event);
        self.reporter.close();
        client.progress.notify_waiters();
        client.sink.wake();
        if let Some(inbound) = &client.inbound {
            inbound.waker.wake();
        }
    }

    /// The connection's task ended: its socket and slots are free.
    pub(crate) fn conn_finished(&self, conn: &ConnHandle, finished: &Finished) {
        self.registry.remove(conn);
        self.admission.release(&conn.peer());
        self.shutdown.record(finished);
        if let Some(client) = &self.client {
            client.finished.store(true, Ordering::Release);
            client.progress.notify_waiters();
        }
    }

    /// Output of a client's connection was written: wake `flush` and `send`.
    pub(crate) fn output_progressed(&self) {
        if let Some(client) = &self.client {
            client.progress.notify_waiters();
            client.sink.wake();
        }
    }

    /// A client's reader has not kept up: stop reading until it does.
    pub(crate) fn reads_paused(&self) -> bool {
        self.client
            .as_ref()
            .and_then(|client| client.inbound.as_ref())
            .is_some_and(|inbound| inbound.is_full())
    }

    /// Wakes every connection task so it re-reads its timeouts.
    pub(crate) fn nudge_all(&self) {
        for conn in self.registry.all() {
            conn.nudge();
        }
    }

    /// A server's sweeper task: wakes its connections as their deadlines come,
    /// until the hub is gone.
    pub(crate) fn sweep_deadlines(hub: Weak<Hub>) -> impl Future<Output = ()> {
        poll_fn(move |cx| {
            let Some(hub) = hub.upgrade() else {
                return Poll::Ready(());
            };
            hub.deadlines.poll_sweep(cx, |came| hub.registry.wake(came));
            Poll::Pending
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        stats.errors = self.reporter.error_counts();
        stats
    }
}

impl Peers for Hub {
    fn local_addr(&self) -> Addr {
        self.local
    }

    fn remote_addrs(&self) -> Vec<Addr> {
        self.registry.open_addrs()
    }

    fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError> {
        self.write(&self.lookup(peer)?, payload)
    }

    fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError> {
        self.broadcast_to(None, payload)
    }

    fn broadcast_except(&self, except: &Addr, payload: &[u8]) -> Result<usize, WriteError> {
        self.broadcast_to(Some(except), payload)
    }

    fn close_remote(&self, peer: &Addr) -> Result<(), WriteError> {
        self.lookup(peer)?.request_close(CloseRequest::Graceful {
            reason: chitchat_core::CloseReason::ClosedLocally,
            linger: None,
        });
        Ok(())
    }

    fn handle(&self) -> PeersHandle {
        // `self` is borrowed, so the hub is alive and `me` upgrades.
        self.me.upgrade().expect("a hub in use is alive")
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("local", &self.local)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
