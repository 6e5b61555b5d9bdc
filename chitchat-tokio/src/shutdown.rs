//! Cut and graceful drain as a type: stops the accept loop, asks every connection to
//! end, and waits until every task is gone, so that "shut down" means the port is
//! free and nothing of the server still runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chitchat_core::{CloseReason, ShutdownReport};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handle::{CloseRequest, ConnHandle};

/// How a connection's task ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    /// The last reason: a lingering connection cut by a shutdown ends with
    /// `Shutdown`, whatever closed it for the application.
    pub(crate) reason: CloseReason,
    /// Everything queued was written and our side shut down in order.
    pub(crate) flushed: bool,
}

/// The shutdown state of one server.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    /// Cancelled to stop the accept loop; made when the accept loop starts (a
    /// client has none, and the token is an allocation).
    stop: OnceLock<CancellationToken>,
    /// Connection tasks not yet ended, so we can wait for all of them. Counted by
    /// the tasks themselves (not by wrapping them: every idle connection's task
    /// would carry the wrapper).
    tasks: AtomicUsize,
    /// Notified when `tasks` reaches zero.
    all_ended: Notify,
    /// The accept loop; awaited so the listener is dropped before we return.
    accept_task: Mutex<Option<JoinHandle<()>>>,
    drained: AtomicUsize,
    forced: AtomicUsize,
}

impl Shutdown {
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop.get_or_init(CancellationToken::new).clone()
    }

    pub(crate) fn set_accept_task(&self, task: JoinHandle<()>) {
        *self.accept_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// A connection task was made (counted until it is dropped).
    pub(crate) fn task_started(&self) {
        self.tasks.fetch_add(1, Ordering::AcqRel);
    }

    /// A connection task was dropped: its socket is closed.
    pub(crate) fn task_ended(&self) {
        if self.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_ended.notify_waiters();
        }
    }

    /// Returns once no connection task is left.
    async fn tasks_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            tokio::pin!(notified);
            // Registered before the check: an end between the two is not missed.
            notified.as_mut().enable();
            if self.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a connection that ended because of the shutdown.
    pub(crate) fn record(&self, finished: &Finished) {
        if finished.reason != CloseReason::Shutdown {
            return;
        }
        let counter = if finished.flushed {
            &self.drained
        } else {
            &self.forced
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops accepting: returns once the listener is closed.
    async fn stop_accepting(&self) {
        if let Some(stop) = self.stop.get() {
            stop.cancel();
        }
        let task = self
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            // The accept loop never panics; a cancelled or failed join has nothing to report.
            let _ = task.await;
        }
    }

    /// Drops every connection and waits for all tasks to end.
    pub(crate) async fn cut(&self, connections: impl Fn() -> Vec<ConnHandle>) -> ShutdownReport {
        self.stop_accepting().await;
        for conn in connections() {
            conn.request_close(CloseRequest::Abort(CloseReason::Shutdown));
        }
        self.tasks_ended().await;
        self.report()
    }

    /// Lets connections write out their queue for up to `grace`, then cuts.
    pub(crate) async fn drain(
        &self,
        grace: Duration,
        connections: impl Fn() -> Vec<ConnHandle>,
    ) -> ShutdownReport {
        self.stop_accepting().await;
        for conn in connections() {
            conn.request_close(CloseRequest::Graceful {
                reason: CloseReason::Shutdown,
                linger: Some(grace),
            });
        }
        if tokio::time::timeout(grace, self.tasks_ended())
            .await
            .is_err()
        {
            for conn in connections() {
                conn.request_close(CloseRequest::Abort(CloseReason::Shutdown));
            }
            self.tasks_ended().await;
        }
        self.report()
    }

    /// Without waiting: what dropping the server does.
    pub(crate) fn abandon(&self, connections: Vec<ConnHandle>) {
        if let Some(stop) = self.stop.get() {
            stop.cancel();
        }
        for conn in connections {
            conn.request_close(CloseRequest::Abort(CloseReason::Shutdown));
        }
    }

    fn report(&self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        report.drained = self.drained.load(Ordering::Relaxed);
        report.forced = self.forced.load(Ordering::Relaxed);
        report
    }
}
