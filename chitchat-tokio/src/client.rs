//! The client: dial with a timeout (names looked up), then one connection driven by
//! the same task as every server connection (`conn`). Frames from the server go to
//! a handler, or, without one, to the client's `Stream`; sends wait for room
//! (`send`, the `Sink`) or refuse at once (`try_write`).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chitchat_core::{
    Addr, ClientConfig, CloseEvent, CloseReason, ConnEvent, ConnectError, Connection, Connector,
    Events, Frame, Framer, Handler, Peers, PeersHandle, ReadContext, Stats, Target, WriteError,
};
use futures::{Sink, Stream};
use tokio::time::Instant;

use crate::admission::Admission;
use crate::conn::{ConnParams, Driver};
use crate::erased::ErasedHandler;
use crate::handle::{CloseRequest, ConnHandle, ConnShared, OutboundBound};
use crate::hub::{ClientSignals, Hub, HubParts};
use crate::inbound::{Inbound, QueueFrames};
use crate::report::Reporter;
use crate::timeouts::LiveTimeouts;
use crate::transport::Tcp;

/// A connected client.
///
/// Without a handler, the server's frames are a [`Stream`] of `Bytes`; sends are
/// [`send`](Self::send) (waits for room) or [`try_write`](Self::try_write), and the
/// client is also a [`Sink`]. Dropping it closes the connection after writing out
/// what is queued.
///
/// ```
/// use chitchat_tokio::{Client, Server};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let server = Server::builder("127.0.0.1:0")
///     .on_frame(|ctx, frame| {
///         let _ = ctx.reply(&frame);
///     })
///     .listen()
///     .await?;
/// let mut client = Client::builder(server.local_addr()).connect().await?;
/// client.send(b"hello").await?;
/// assert_eq!(client.next().await.unwrap(), "hello");
/// client.close().await;
/// # Ok(())
/// # }
/// ```
///
/// Nobody listening is a typed error naming the address:
///
/// ```
/// use chitchat_core::{Addr, ConnectError};
/// use chitchat_tokio::Client;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let addr: Addr = "127.0.0.1:1".parse().unwrap();
/// let err = Client::builder(addr).connect().await.unwrap_err();
/// assert!(matches!(err, ConnectError::Refused { addr: a } if a == addr));
/// # }
/// ```
pub struct Client<S = ()> {
    hub: Arc<Hub>,
    conn: ConnHandle,
    state: Arc<S>,
    /// Frames for the stream, when there is no handler.
    inbound: Option<Arc<Inbound>>,
    /// Largest frame on the wire, for the `Sink`'s room check.
    max_wire_frame: usize,
}

/// Configures and connects a [`Client`].
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClientBuilder<S = ()> {
    target: Target,
    config: ClientConfig,
    /// `None`: frames go to the client's stream.
    handler: Option<Box<dyn ErasedHandler<S>>>,
    state: Arc<S>,
}

impl Client<()> {
    /// Starts building a client of the server at `target` (an address, or
    /// `"host:port"` to look up when connecting), with no user data.
    pub fn builder(target: impl Into<Target>) -> ClientBuilder<()> {
        Client::with_state(target, ())
    }
}

impl<S: Send + Sync + 'static> Client<S> {
    /// Starts building a client whose handler sees `state`.
    pub fn with_state(target: impl Into<Target>, state: S) -> ClientBuilder<S> {
        ClientBuilder {
            target: target.into(),
            config: ClientConfig::default(),
            handler: None,
            state: Arc::new(state),
        }
    }
}

impl<S: Send + Sync + 'static> ClientBuilder<S> {
    /// Sets the handler to a closure called with every frame from the server (the
    /// client's stream then stays empty).
    pub fn on_frame<F>(self, handler: F) -> Self
    where
        F: Fn(&mut dyn ReadContext<S>, Frame<'_>) + Send + Sync + 'static,
    {
        self.handler(handler)
    }

    /// Sets the handler: its hooks, per-connection state and frames (the client's
    /// stream then stays empty). [`IgnoreFrames`](chitchat_core::IgnoreFrames) makes a
    /// client that only writes.
    pub fn handler(mut self, handler: impl Handler<S>) -> Self {
        self.handler = Some(Box::new(handler));
        self
    }

    crate::builder::conn_setters!();

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// How long dialing may take, name lookup included (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Bytes of received frames kept for the stream before reading pauses.
    pub fn max_inbound(mut self, bytes: usize) -> Self {
        self.config.max_inbound = bytes;
        self
    }

    /// Dials over TCP.
    ///
    /// # Errors
    /// [`ConnectError`] naming the address (or the name): timeout, refused, lookup
    /// failure, or another failure.
    pub async fn connect(self) -> Result<Client<S>, ConnectError> {
        self.connect_with(&Tcp).await
    }

    /// Dials with another transport; the connection runs on the same engine.
    ///
    /// # Errors
    /// [`ConnectError`] naming the address (or the name): timeout, refused, lookup
    /// failure, or another failure.
    pub async fn connect_with<C: Connector>(
        self,
        connector: &C,
    ) -> Result<Client<S>, ConnectError> {
        let after = self.config.connect_timeout;
        let deadline = Instant::now() + after;
        let (conn, addr) = dial(connector, &self.target, deadline, after).await?;
        let local = conn
            .local_addr()
            .map_err(|source| ConnectError::Io { addr, source })?;
        let config = self.config;
        let inbound = self
            .handler
            .is_none()
            .then(|| Arc::new(Inbound::new(config.max_inbound)));
        let conn_config = config.conn;
        let hub = Hub::new(HubParts {
            local,
            framer: Framer::new(conn_config.frame),
            bound: OutboundBound {
                limit: conn_config.max_outbound,
                drop_when_full: false,
            },
            reporter: Reporter::new(config.event_capacity),
            timeouts: LiveTimeouts::new(conn_config.idle_timeout, conn_config.write_timeout),
            budget: None,
            admission: Admission::new(1, usize::MAX),
            client: Some(ClientSignals {
                inbound: inbound.clone(),
                ..ClientSignals::default()
            }),
        });
        let handle = Arc::new(ConnShared::new(addr));
        hub.registry.insert_within(handle.clone(), 1);
        hub.counters.opened();
        tracing::debug!(peer = %addr, %local, "connected");
        let max_wire_frame = conn_config.frame.max_frame_len + 2;
        let state = self.state;
        let handler = match (self.handler, &inbound) {
            (Some(handler), _) => handler,
            (None, Some(inbound)) => Box::new(QueueFrames(inbound.clone())),
            (None, None) => unreachable!("a client without a handler has an inbound queue"),
        };
        let params = Arc::new(ConnParams {
            config: conn_config,
            handler,
            state: state.clone(),
            hub: hub.clone(),
        });
        let driver = Driver::new(conn, handle.clone(), params);
        tokio::spawn(driver);
        Ok(Client {
            hub,
            conn: handle,
            state,
            inbound,
            max_wire_frame,
        })
    }
}

/// Dials `target`: an address as it is; a name at each of its addresses in turn,
/// until one answers, all within the connect timeout.
async fn dial<C: Connector>(
    connector: &C,
    target: &Target,
    deadline: Instant,
    after: Duration,
) -> Result<(C::Conn, Addr), ConnectError> {
    let addrs: Vec<Addr> = match (target.addr(), target.name()) {
        (Some(addr), _) => vec![addr],
        (None, name) => {
            let name = name.unwrap_or_default().to_owned();
            let looked = tokio::time::timeout_at(deadline, tokio::net::lookup_host(name.as_str()))
                .await
                .map(|found| found.map(|addrs| addrs.map(Addr::from).collect::<Vec<_>>()));
            match looked {
                Ok(Ok(found)) => found,
                Ok(Err(source)) => return Err(ConnectError::Resolve { name, source }),
                Err(_) => {
                    let source = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("lookup took longer than {after:?}"),
                    );
                    return Err(ConnectError::Resolve { name, source });
                }
            }
        }
    };
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, connector.connect(&addr)).await {
            Err(_) => return Err(ConnectError::Timeout { addr, after }),
            Ok(Ok(conn)) => return Ok((conn, addr)),
            Ok(Err(source)) => last = Some(ConnectError::from_io(addr, source)),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Resolve {
        name: target.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
    }))
}

impl<S: Send + Sync + 'static> Client<S> {
    fn signals(&self) -> &ClientSignals {
        self.hub
            .client
            .as_ref()
            .expect("a client's hub has client signals")
    }

    /// The server's address.
    pub fn peer_addr(&self) -> Addr {
        self.conn.peer()
    }

    /// Our end of the connection.
    pub fn local_addr(&self) -> Addr {
        self.hub.local
    }

    /// Queues `payload` and the delimiter if there is room, without waiting; it is
    /// written in the background, in order.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` once the connection is
    /// closed or closing, `OutboundFull` when the queue is at its bound (use
    /// [`send`](Self::send) to wait for room). Nothing is queued then.
    pub fn try_write(&self, payload: &[u8]) -> Result<(), WriteError> {
        self.hub.write(&self.conn, payload)
    }

    /// Queues `payload` and the delimiter, waiting while the outbound queue is at its
    /// bound. The wait is bounded by the write timeout: a server that reads nothing
    /// for that long gets the connection closed, and this returns `Closed`.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` when the connection is or
    /// becomes closed first. Nothing is queued then.
    pub async fn send(&self, payload: &[u8]) -> Result<(), WriteError> {
        let signals = self.signals();
        loop {
            let progress = signals.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            match self.try_write(payload) {
                Err(WriteError::OutboundFull { .. }) => progress.await,
                other => return other,
            }
        }
    }

    /// Waits until everything queued so far is handed to the transport.
    ///
    /// # Errors
    /// `Closed` if the connection closed first.
    pub async fn flush(&self) -> Result<(), WriteError> {
        let signals = self.signals();
        loop {
            let progress = signals.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.conn.queued() == 0 {
                return Ok(());
            }
            if self.is_closed() {
                return Err(WriteError::Closed {
                    peer: self.conn.peer(),
                });
            }
            progress.await;
        }
    }

    /// Shuts down our write side once the queue is written: the server reads EOF
    /// (in EOF mode, the end of our message). Frames from the server are still
    /// received until it closes.
    pub fn shutdown(&self) {
        self.conn.request_close(CloseRequest::ShutdownWrite);
    }

    /// True once the connection is closed for the application, by either side.
    pub fn is_closed(&self) -> bool {
        self.signals().closed.get().is_some()
    }

    /// Closes the connection after writing out what is queued, and waits until it is
    /// gone: the server has read everything and closed its side too (or the linger
    /// ran out). Inside the client's handler, use
    /// [`ReadContext::close`](chitchat_core::ReadContext::close) instead.
    pub async fn close(&self) -> CloseEvent {
        self.conn.request_close(CloseRequest::Graceful {
            reason: CloseReason::ClosedLocally,
            linger: None,
        });
        let signals = self.signals();
        loop {
            let progress = signals.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if signals.finished.load(Ordering::Acquire) {
                break;
            }
            progress.await;
        }
        self.closed().await
    }

    /// Waits until the connection is closed for the application, by either side
    /// (when the close is reported; see [`CloseEvent`]).
    pub async fn closed(&self) -> CloseEvent {
        let signals = self.signals();
        loop {
            let progress = signals.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if let Some(event) = signals.closed.get() {
                return event.clone();
            }
            progress.await;
        }
    }

    /// Changes the idle timeout of the connection.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.hub.timeouts.set_idle(timeout);
        self.conn.nudge();
    }

    /// Changes the write timeout of the connection.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.hub.timeouts.set_write(timeout);
        self.conn.nudge();
    }

    /// The user data.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// A new subscription to the client's errors and its close: every event from
    /// now on (see [`Events`]). It ends after the close.
    pub fn events(&self) -> Events<ConnEvent> {
        self.hub.reporter.subscribe()
    }

    /// The counters of the connection.
    pub fn stats(&self) -> Stats {
        self.hub.stats()
    }

    /// An owned handle on the connection, as the client's handler reaches it (see
    /// [`Peers::handle`]).
    pub fn peers(&self) -> PeersHandle {
        self.hub.handle()
    }

    /// Room for one more frame of any size: the `Sink`'s readiness.
    fn has_room(&self) -> bool {
        let queued = self.conn.queued();
        queued == 0 || queued + self.max_wire_frame <= self.hub.bound.limit
    }
}

/// The server's frames, in order, for a client built without a handler; the stream
/// ends once the connection is closed and every frame is read. A client with a
/// handler yields nothing.
impl<S: Send + Sync + 'static> Stream for Client<S> {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        let Some(inbound) = &this.inbound else {
            return Poll::Ready(None);
        };
        let take = |this: &Self| {
            let taken = inbound.take();
            if taken.resume {
                this.conn.nudge();
            }
            taken.frame
        };
        if let Some(frame) = take(this) {
            return Poll::Ready(Some(frame));
        }
        inbound.waker.register(cx.waker());
        if let Some(frame) = take(this) {
            return Poll::Ready(Some(frame));
        }
        if this.is_closed() {
            // Every frame was queued before the close was reported.
            return Poll::Ready(take(this));
        }
        Poll::Pending
    }
}

/// Sends frames, waiting for room as [`Client::send`] does; `poll_close` shuts down
/// our write side once everything is written (the end of the message in EOF mode).
impl<S: Send + Sync + 'static, B: AsRef<[u8]>> Sink<B> for Client<S> {
    type Error = WriteError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        let this = self.get_mut();
        let closed = || WriteError::Closed {
            peer: this.conn.peer(),
        };
        if this.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        if this.has_room() {
            return Poll::Ready(Ok(()));
        }
        this.signals().sink.register(cx.waker());
        if this.has_room() || this.is_closed() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, item: B) -> Result<(), WriteError> {
        self.try_write(item.as_ref())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        let this = self.get_mut();
        if this.conn.queued() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.is_closed() {
            return Poll::Ready(Err(WriteError::Closed {
                peer: this.conn.peer(),
            }));
        }
        this.signals().sink.register(cx.waker());
        if this.conn.queued() == 0 || this.is_closed() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        let this = self.get_mut();
        this.conn.request_close(CloseRequest::ShutdownWrite);
        <Self as Sink<B>>::poll_flush(Pin::new(this), cx)
    }
}

impl<S> Drop for Client<S> {
    fn drop(&mut self) {
        self.conn.request_close(CloseRequest::Graceful {
            reason: CloseReason::ClosedLocally,
            linger: None,
        });
    }
}

impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_addr", &self.conn.peer())
            .field("local_addr", &self.hub.local)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> chitchat_core::Client for Client<S> {
    type State = S;

    fn peer_addr(&self) -> Addr {
        Client::peer_addr(self)
    }
    fn local_addr(&self) -> Addr {
        Client::local_addr(self)
    }
    fn try_write(&self, payload: &[u8]) -> Result<(), WriteError> {
        Client::try_write(self, payload)
    }
    async fn send(&self, payload: &[u8]) -> Result<(), WriteError> {
        Client::send(self, payload).await
    }
    async fn flush(&self) -> Result<(), WriteError> {
        Client::flush(self).await
    }
    fn is_closed(&self) -> bool {
        Client::is_closed(self)
    }
    async fn close(&self) -> CloseEvent {
        Client::close(self).await
    }
    async fn closed(&self) -> CloseEvent {
        Client::closed(self).await
    }
    fn state(&self) -> &S {
        Client::state(self)
    }
    fn events(&self) -> Events<ConnEvent> {
        Client::events(self)
    }
    fn stats(&self) -> Stats {
        Client::stats(self)
    }
}
