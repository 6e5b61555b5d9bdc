//! The server: binding, the accept loop and the registry of live connections. Each
//! accepted connection runs on its own task (`conn`), whatever the
//! transport: the accept loop is generic over chitchat-core's `Listener`.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitchat_core::{
    event_queue, Addr, BindError, BindOptions, Binder, CloseEvent, CloseReason, ConnError,
    ConnStats, Connection, Event, EventSink, EventStream, Framer, Handler, IgnoreFrames, Listener,
    ServerConfig, ShutdownReport, Stats, WriteError,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::PartialBudget;
use crate::conn::{ConnParams, Driver};
use crate::handle::{CloseRequest, ConnHandle, ConnShared};
use crate::registry::Registry;
use crate::report;
use crate::shutdown::Shutdown;
use crate::stats::Counters;
use crate::timeouts::LiveTimeouts;
use crate::transport::Tcp;

/// First pause after a failed accept (e.g. out of file descriptors): long enough
/// that a full fd table does not spin a core, short enough to notice freed fds soon.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between accept attempts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening server.
///
/// Dropping it stops listening and drops every connection without waiting; call
/// [`cut`](Server::cut) or [`shutdown`](Server::shutdown) to wait for that.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use chitchat_core::{Addr, Delimiter};
/// use chitchat_tokio::Server;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// // A counter shared by every connection (the Go library's `additional`).
/// let server = Server::with_state("127.0.0.1:0".parse::<Addr>()?, AtomicU64::new(0))
///     .delimiter(Delimiter::Byte(b';'))
///     .idle_timeout(Duration::from_secs(30))
///     .on_frame(|ctx, frame| {
///         let n = ctx.state().fetch_add(1, Ordering::Relaxed);
///         let _ = ctx.reply(format!("{n}: {}", String::from_utf8_lossy(&frame)).as_bytes());
///     })
///     .listen()
///     .await?;
/// println!("listening on {}", server.local_addr());
/// let report = server.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.forced, 0);
/// # Ok(())
/// # }
/// ```
pub struct Server<S = ()> {
    inner: Arc<ServerShared<S>>,
}

struct ServerShared<S> {
    local: Addr,
    registry: Arc<Registry>,
    params: Arc<ConnParams<S>>,
    /// Encodes broadcasts once, to check them before any peer gets one.
    framer: Framer,
    max_connections: usize,
    events: EventSink,
    event_stream: EventStream,
    shutdown: Shutdown,
}

/// Configures and starts a [`Server`].
#[must_use = "a builder does nothing until `listen` is awaited"]
pub struct ServerBuilder<S = ()> {
    addr: Addr,
    config: ServerConfig,
    handler: Arc<dyn Handler<S>>,
    state: Arc<S>,
}

impl Server<()> {
    /// Starts building a server for `addr` (port 0 picks a free port), with no user
    /// data.
    pub fn builder(addr: impl Into<Addr>) -> ServerBuilder<()> {
        Server::with_state(addr, ())
    }
}

impl<S: Send + Sync + 'static> Server<S> {
    /// Starts building a server whose handlers see `state` (the Go library's
    /// `additional`).
    pub fn with_state(addr: impl Into<Addr>, state: S) -> ServerBuilder<S> {
        ServerBuilder {
            addr: addr.into(),
            config: ServerConfig::default(),
            handler: Arc::new(IgnoreFrames),
            state: Arc::new(state),
        }
    }
}

impl<S: Send + Sync + 'static> ServerBuilder<S> {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    crate::builder::conn_setters!();

    /// Bytes of unfinished frames all connections may hold together; past it the
    /// connection holding the most is dropped.
    pub fn partial_frame_budget(mut self, bytes: usize) -> Self {
        self.config.partial_frame_budget = bytes;
        self
    }

    /// Connections served at once; more are refused at accept.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Binds over TCP and starts serving in the background.
    ///
    /// # Errors
    /// [`BindError`] naming the address when it cannot be bound; nothing runs then.
    pub async fn listen(self) -> Result<Server<S>, BindError> {
        self.listen_on(&Tcp).await
    }

    /// Binds with another transport (the in-memory network, Unix sockets...) and
    /// starts serving in the background: the engine is the same.
    ///
    /// # Errors
    /// [`BindError`] naming the address when it cannot be bound; nothing runs then.
    pub async fn listen_on<B: Binder>(self, binder: &B) -> Result<Server<S>, BindError> {
        let addr = self.addr;
        let bind_error = |source| BindError::Io { addr, source };
        let options = {
            let mut options = BindOptions::default();
            options.backlog = self.config.backlog;
            options
        };
        let listener = binder.bind(&addr, &options).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let (events, event_stream) = event_queue(self.config.event_capacity.max(1));
        let conn = self.config.conn;
        let registry = Arc::new(Registry::default());
        let budget = PartialBudget::new(
            self.config.partial_frame_budget,
            registry.clone(),
            events.clone(),
        );
        let inner = Arc::new(ServerShared {
            local,
            registry,
            framer: Framer::new(conn.frame),
            params: Arc::new(ConnParams {
                timeouts: Arc::new(LiveTimeouts::new(conn.idle_timeout, conn.write_timeout)),
                config: conn,
                handler: self.handler,
                state: self.state,
                budget: Some(Arc::new(budget)),
                counters: Arc::<Counters>::default(),
            }),
            max_connections: self.config.max_connections,
            events,
            event_stream,
            shutdown: Shutdown::default(),
        });
        let stop = inner.shutdown.stop_token();
        let task = tokio::spawn(accept_loop(listener, inner.clone(), stop));
        inner.shutdown.set_accept_task(task);
        Ok(Server { inner })
    }
}

async fn accept_loop<L: Listener, S: Send + Sync + 'static>(
    mut listener: L,
    server: Arc<ServerShared<S>>,
    stop: CancellationToken,
) {
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
                server.admit(conn, peer);
            }
            Err(err) if is_peer_gone(&err) => {}
            Err(err) => {
                report::error(
                    &server.events,
                    ConnError::Accept {
                        local: server.local,
                        source: Arc::new(err),
                    },
                );
                tokio::select! {
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

impl<S: Send + Sync + 'static> ServerShared<S> {
    /// Registers an accepted connection and starts its task, or refuses it at once.
    fn admit<C: Connection>(self: &Arc<Self>, conn: C, peer: Addr) {
        // Checked first so that a flood of refusals costs no allocation or syscall.
        if self.registry.len() >= self.max_connections {
            return self.refuse(conn, peer);
        }
        let local = conn.local_addr().unwrap_or(self.local);
        let config = &self.params.config;
        let handle = Arc::new(ConnShared::new(
            peer,
            local,
            Framer::new(config.frame),
            config.max_outbound,
            true,
            self.events.clone(),
        ));
        if !self
            .registry
            .insert_within(handle.clone(), self.max_connections)
        {
            return self.refuse(conn, peer);
        }
        let span = tracing::debug_span!("conn", %peer, %local);
        span.in_scope(|| tracing::debug!("accepted"));
        self.params.counters.opened();
        let driver = Driver::new(conn, handle.clone(), self.params.clone());
        let server = self.clone();
        let task = async move {
            let finished = driver.await;
            server.params.counters.closed();
            server.registry.remove(&handle);
            server.shutdown.record(&finished);
            server.events.emit(Event::Closed(finished.event));
        };
        self.shutdown.tracker.spawn(task.instrument(span));
    }

    /// Closes a connection over the limit: no task, no buffer, two events.
    fn refuse<C: Connection>(&self, conn: C, peer: Addr) {
        drop(conn);
        self.params.counters.refused();
        report::error(
            &self.events,
            ConnError::Refused {
                peer,
                limit: self.max_connections,
            },
        );
        self.events.emit(Event::Closed(CloseEvent::new(
            peer,
            CloseReason::Refused,
            ConnStats::default(),
        )));
    }

    fn handle(&self, peer: &Addr) -> Result<ConnHandle, WriteError> {
        self.registry
            .get(peer)
            .ok_or(WriteError::UnknownPeer { peer: *peer })
    }

    /// Wakes every connection task so it re-reads its timeouts.
    fn nudge_all(&self) {
        for conn in self.registry.all() {
            conn.nudge();
        }
    }
}

impl<S: Send + Sync + 'static> Server<S> {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> Addr {
        self.inner.local
    }

    /// The peers currently connected.
    pub fn remote_addrs(&self) -> Vec<Addr> {
        self.inner.registry.addrs()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// Closes the connection from `peer` once its queued output is written.
    ///
    /// # Errors
    /// [`WriteError::UnknownPeer`] when no connection comes from `peer`.
    pub fn close_remote(&self, peer: &Addr) -> Result<(), WriteError> {
        self.inner
            .handle(peer)?
            .request_close(CloseRequest::Graceful {
                reason: CloseReason::ClosedLocally,
                linger: None,
            });
        Ok(())
    }

    /// Queues `payload` and the delimiter for `peer`.
    ///
    /// # Errors
    /// `UnknownPeer`, `Encode`, `Closed`, or `OutboundFull` (the peer is then dropped
    /// for not reading); nothing is queued then.
    pub fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError> {
        self.inner.handle(peer)?.write(payload)
    }

    /// Queues `payload` for every connected peer; returns how many it was queued for.
    ///
    /// # Errors
    /// `Encode` (naming our own address) when the payload cannot be framed; it is
    /// then queued for nobody.
    pub fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError> {
        self.inner
            .framer
            .check_payload(payload)
            .map_err(|source| WriteError::Encode {
                peer: self.inner.local,
                source,
            })?;
        let sent = self
            .inner
            .registry
            .all()
            .iter()
            .filter(|conn| conn.write(payload).is_ok())
            .count();
        Ok(sent)
    }

    /// Changes the idle timeout of every connection, present and future. Open
    /// connections count it from their last read.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.inner.params.timeouts.set_idle(timeout);
        self.inner.nudge_all();
    }

    /// Changes the write timeout of every connection, present and future.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.inner.params.timeouts.set_write(timeout);
        self.inner.nudge_all();
    }

    /// The user data.
    pub fn state(&self) -> &S {
        &self.inner.params.state
    }

    /// The stream of background errors and close events. It ends after a shutdown,
    /// once every event is read.
    pub fn events(&self) -> EventStream {
        self.inner.event_stream.clone()
    }

    /// The counters since the server started.
    pub fn stats(&self) -> Stats {
        self.inner.params.counters.snapshot(&self.inner.events)
    }

    /// Stops listening and drops every connection now (the Go library's `Cut`).
    /// Returns when every task has ended and the address can be bound again.
    pub async fn cut(&self) -> ShutdownReport {
        let inner = &self.inner;
        let report = inner.shutdown.cut(|| inner.registry.all()).await;
        inner.events.close();
        report
    }

    /// Stops listening and reading, lets connections write out what is queued for up
    /// to `grace`, then drops the rest. Returns when every task has ended.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let report = inner.shutdown.drain(grace, || inner.registry.all()).await;
        inner.events.close();
        report
    }
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.inner.shutdown.abandon(self.inner.registry.all());
    }
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.inner.local)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> chitchat_core::Server for Server<S> {
    type State = S;

    fn local_addr(&self) -> Addr {
        Server::local_addr(self)
    }
    fn remote_addrs(&self) -> Vec<Addr> {
        Server::remote_addrs(self)
    }
    fn close_remote(&self, peer: &Addr) -> Result<(), WriteError> {
        Server::close_remote(self, peer)
    }
    fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError> {
        Server::write_to(self, peer, payload)
    }
    fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError> {
        Server::broadcast(self, payload)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) {
        Server::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) {
        Server::set_write_timeout(self, timeout)
    }
    fn state(&self) -> &S {
        Server::state(self)
    }
    fn events(&self) -> EventStream {
        Server::events(self)
    }
    fn stats(&self) -> Stats {
        Server::stats(self)
    }
    async fn cut(&self) -> ShutdownReport {
        Server::cut(self).await
    }
    async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        Server::shutdown(self, grace).await
    }
}
