//! The server: its builder, binding, and the user's handle on a running server. The
//! accept loop is in `accept`, each connection's task in `conn`, and what
//! connections share (registry, limits, events) in `hub`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitchat_core::{
    Addr, BindError, BindOptions, Binder, ConnEvent, Events, Frame, Framer, Handler, IgnoreFrames,
    Listener, Peers, PeersHandle, ReadContext, ServerConfig, ShutdownReport, Stats, Target,
    WriteError,
};

use crate::accept::accept_loop;
use crate::admission::Admission;
use crate::budget::PartialBudget;
use crate::conn::ConnParams;
use crate::erased::ErasedHandler;
use crate::handle::OutboundBound;
use crate::hub::{Hub, HubParts};
use crate::report::Reporter;
use crate::timeouts::LiveTimeouts;
use crate::transport::Tcp;

/// A listening server: a cheap handle (clone it for tasks) on the connections, the
/// settings, the events and the shutdown. The server runs until [`cut`](Self::cut)
/// or [`shutdown`](Self::shutdown), or until its last clone is dropped, which drops
/// every connection without waiting.
///
/// Its connections are reached as a handler reaches them through
/// [`ReadContext::peers`]: `remote_addrs`, `write_to`, `broadcast`,
/// `broadcast_except`, `close_remote` (it implements [`Peers`], so code written
/// against that trait takes a server as well).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use chitchat_core::{Delimiter, Peers};
/// use chitchat_tokio::Server;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// // A counter shared by every connection (the Go library's `additional`).
/// let server = Server::with_state("127.0.0.1:0", AtomicU64::new(0))
///     .delimiter(Delimiter::Byte(b';'))
///     .idle_timeout(Duration::from_secs(30))
///     .on_frame(|ctx, frame| {
///         let n = ctx.state().fetch_add(1, Ordering::Relaxed);
///         let _ = ctx.reply(format!("{n}: {}", String::from_utf8_lossy(&frame)).as_bytes());
///     })
///     .listen()
///     .await?;
/// println!("listening on {}", server.local_addr());
/// assert!(server.remote_addrs().is_empty());
/// let report = server.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.forced, 0);
/// # Ok(())
/// # }
/// ```
pub struct Server<S = ()> {
    hub: Arc<Hub>,
    state: Arc<S>,
    /// Shared by the clones the user holds; the last one dropped stops the server.
    owner: Arc<Owner>,
}

/// Stops the server when the last user handle goes.
struct Owner {
    hub: Arc<Hub>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.hub.shutdown.abandon(self.hub.registry.all());
    }
}

impl<S> Clone for Server<S> {
    fn clone(&self) -> Self {
        Server {
            hub: self.hub.clone(),
            state: self.state.clone(),
            owner: self.owner.clone(),
        }
    }
}

/// Configures and starts a [`Server`].
#[must_use = "a builder does nothing until `listen` is awaited"]
pub struct ServerBuilder<S = ()> {
    target: Target,
    config: ServerConfig,
    handler: Box<dyn ErasedHandler<S>>,
    state: Arc<S>,
}

impl Server<()> {
    /// Starts building a server for `target` (an address such as `"127.0.0.1:7878"`,
    /// or `"localhost:7878"` to look up; port 0 picks a free port), with no user data.
    pub fn builder(target: impl Into<Target>) -> ServerBuilder<()> {
        Server::with_state(target, ())
    }
}

impl<S: Send + Sync + 'static> Server<S> {
    /// Starts building a server whose handlers see `state` (the Go library's
    /// `additional`).
    pub fn with_state(target: impl Into<Target>, state: S) -> ServerBuilder<S> {
        ServerBuilder {
            target: target.into(),
            config: ServerConfig::default(),
            handler: Box::new(IgnoreFrames),
            state: Arc::new(state),
        }
    }
}

impl<S: Send + Sync + 'static> ServerBuilder<S> {
    /// Sets the handler to a closure called with every frame.
    pub fn on_frame<F>(self, handler: F) -> Self
    where
        F: Fn(&mut dyn ReadContext<S>, Frame<'_>) + Send + Sync + 'static,
    {
        self.handler(handler)
    }

    /// Sets the handler: its connection hooks, per-connection state and frames.
    pub fn handler(mut self, handler: impl Handler<S>) -> Self {
        self.handler = Box::new(handler);
        self
    }

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

    /// Connections one source IP may hold; more from it are refused at accept
    /// (`usize::MAX`: no per-IP limit).
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.config.max_connections_per_ip = max;
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Events kept for each subscriber of [`Server::events`] that lags.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// Binds over TCP and starts serving in the background.
    ///
    /// # Errors
    /// [`BindError`] naming the address when it cannot be bound (or the name does
    /// not resolve); nothing runs then.
    pub async fn listen(self) -> Result<Server<S>, BindError> {
        self.listen_on(&Tcp).await
    }

    /// Binds with another transport (the in-memory network, Unix sockets...) and
    /// starts serving in the background: the engine is the same.
    ///
    /// # Errors
    /// [`BindError`] naming the address when it cannot be bound (or the name does
    /// not resolve); nothing runs then.
    pub async fn listen_on<B: Binder>(self, binder: &B) -> Result<Server<S>, BindError> {
        let mut options = BindOptions::default();
        options.backlog = self.config.backlog;
        let (listener, addr) = bind(binder, &self.target, &options).await?;
        let local = listener
            .local_addr()
            .map_err(|source| BindError::Io { addr, source })?;
        let config = self.config;
        let conn = config.conn;
        let hub = Hub::new(HubParts {
            local,
            framer: Framer::new(conn.frame),
            bound: OutboundBound {
                limit: conn.max_outbound,
                drop_when_full: true,
            },
            reporter: Reporter::new(config.event_capacity),
            timeouts: LiveTimeouts::new(conn.idle_timeout, conn.write_timeout),
            budget: Some(PartialBudget::new(config.partial_frame_budget)),
            admission: Admission::new(config.max_connections, config.max_connections_per_ip),
            client: None,
        });
        let params = Arc::new(ConnParams {
            config: conn,
            handler: self.handler,
            state: self.state.clone(),
            hub: hub.clone(),
        });
        tokio::spawn(Hub::sweep_deadlines(Arc::downgrade(&hub)));
        let stop = hub.shutdown.stop_token();
        let task = tokio::spawn(accept_loop(listener, params, stop));
        hub.shutdown.set_accept_task(task);
        Ok(Server {
            owner: Arc::new(Owner { hub: hub.clone() }),
            hub,
            state: self.state,
        })
    }
}

/// Binds `target` with `binder`: an address as it is, a name at the first of its
/// addresses that binds.
async fn bind<B: Binder>(
    binder: &B,
    target: &Target,
    options: &BindOptions,
) -> Result<(B::Listener, Addr), BindError> {
    let addrs = match (target.addr(), target.name()) {
        (Some(addr), _) => vec![addr],
        (None, name) => {
            let name = name.unwrap_or_default().to_owned();
            let looked = tokio::net::lookup_host(name.as_str())
                .await
                .map(|found| found.map(Addr::from).collect::<Vec<_>>());
            match looked {
                Ok(found) => found,
                Err(source) => return Err(BindError::Resolve { name, source }),
            }
        }
    };
    let mut last = None;
    for addr in addrs {
        match binder.bind(&addr, options) {
            Ok(listener) => return Ok((listener, addr)),
            Err(source) => last = Some(BindError::Io { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| BindError::Resolve {
        name: target.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
    }))
}

impl<S: Send + Sync + 'static> Server<S> {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> Addr {
        self.hub.local
    }

    /// The peers connected now, in the order they connected (closing ones left out).
    pub fn remote_addrs(&self) -> Vec<Addr> {
        self.hub.remote_addrs()
    }

    /// Queues `payload` and the delimiter for `peer`.
    ///
    /// # Errors
    /// `UnknownPeer`, `Encode`, `Closed`, or `OutboundFull` (the peer is then dropped
    /// for not reading); nothing is queued then.
    pub fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError> {
        self.hub.write_to(peer, payload)
    }

    /// Queues `payload` for every connected peer, in the order they connected;
    /// returns how many it was queued for.
    ///
    /// # Errors
    /// `Encode` (naming our own address) when the payload cannot be framed; it is
    /// then queued for nobody.
    pub fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError> {
        self.hub.broadcast(payload)
    }

    /// [`broadcast`](Self::broadcast) to every peer but `except`.
    ///
    /// # Errors
    /// As `broadcast`.
    pub fn broadcast_except(&self, except: &Addr, payload: &[u8]) -> Result<usize, WriteError> {
        self.hub.broadcast_except(except, payload)
    }

    /// Closes the connection from `peer` once its queued output is written.
    ///
    /// # Errors
    /// [`WriteError::UnknownPeer`] when no connection comes from `peer`.
    pub fn close_remote(&self, peer: &Addr) -> Result<(), WriteError> {
        self.hub.close_remote(peer)
    }

    /// An owned handle on the connections that does not keep the server running
    /// (see [`Peers::handle`]).
    pub fn peers(&self) -> PeersHandle {
        self.hub.handle()
    }

    /// How many connections hold a socket (closing ones included).
    pub fn connection_count(&self) -> usize {
        self.hub.registry.len()
    }

    /// Changes the idle timeout of every connection, present and future. Open
    /// connections count it from their last read.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.hub.timeouts.set_idle(timeout);
        self.hub.nudge_all();
    }

    /// Changes the write timeout of every connection, present and future.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.hub.timeouts.set_write(timeout);
        self.hub.nudge_all();
    }

    /// The user data.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// A new subscription to the server's errors and closed connections: every
    /// event from now on, in order, bounded (a subscriber that lags loses its
    /// oldest events and counts them, see [`Events`]). Each subscription gets every
    /// event; subscribe before doing what you want to observe. It ends after a
    /// shutdown, once its events are read.
    pub fn events(&self) -> Events<ConnEvent> {
        self.hub.reporter.subscribe()
    }

    /// The counters since the server started.
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// Stops listening and drops every connection now (the Go library's `Cut`).
    /// Returns when every task has ended and the address can be bound again.
    pub async fn cut(&self) -> ShutdownReport {
        let hub = &self.hub;
        let report = hub.shutdown.cut(|| hub.registry.all()).await;
        hub.reporter.close();
        report
    }

    /// Stops listening and reading, lets connections write out what is queued for up
    /// to `grace`, then drops the rest. Returns when every task has ended.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let hub = &self.hub;
        let report = hub.shutdown.drain(grace, || hub.registry.all()).await;
        hub.reporter.close();
        report
    }
}

impl<S: Send + Sync + 'static> Peers for Server<S> {
    fn local_addr(&self) -> Addr {
        Server::local_addr(self)
    }
    fn remote_addrs(&self) -> Vec<Addr> {
        Server::remote_addrs(self)
    }
    fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError> {
        Server::write_to(self, peer, payload)
    }
    fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError> {
        Server::broadcast(self, payload)
    }
    fn broadcast_except(&self, except: &Addr, payload: &[u8]) -> Result<usize, WriteError> {
        Server::broadcast_except(self, except, payload)
    }
    fn close_remote(&self, peer: &Addr) -> Result<(), WriteError> {
        Server::close_remote(self, peer)
    }
    fn handle(&self) -> PeersHandle {
        self.peers()
    }
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.hub.local)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> chitchat_core::Server for Server<S> {
    type State = S;

    fn state(&self) -> &S {
        Server::state(self)
    }
    fn events(&self) -> Events<ConnEvent> {
        Server::events(self)
    }
    fn stats(&self) -> Stats {
        Server::stats(self)
    }
    fn set_idle_timeout(&self, timeout: Option<Duration>) {
        Server::set_idle_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) {
        Server::set_write_timeout(self, timeout)
    }
    async fn cut(&self) -> ShutdownReport {
        Server::cut(self).await
    }
    async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        Server::shutdown(self, grace).await
    }
}
