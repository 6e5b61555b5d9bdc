//! The client: dial with a timeout, then one connection driven by the same task as
//! every server connection (`conn`).

use std::sync::Arc;

use async_trait::async_trait;
use chitchat_core::{
    event_queue, Addr, ClientConfig, CloseEvent, CloseReason, ConnectError, Connection, Connector,
    Event, EventSink, EventStream, Framer, Handler, IgnoreFrames, Stats, WriteError,
};
use tracing::Instrument;

use crate::conn::{ConnParams, Driver};
use crate::handle::{CloseRequest, ConnHandle, ConnShared};
use crate::stats::Counters;
use crate::timeouts::LiveTimeouts;
use crate::transport::Tcp;

/// A connected client.
///
/// Dropping it closes the connection after writing out what is queued.
///
/// ```
/// use chitchat_core::{Addr, ConnectError};
/// use chitchat_tokio::Client;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nobody listens on port 1: a typed error naming the address.
/// let addr: Addr = "127.0.0.1:1".parse().unwrap();
/// let err = Client::builder(addr).connect().await.unwrap_err();
/// assert!(matches!(err, ConnectError::Refused { addr: a } if a == addr));
/// # }
/// ```
pub struct Client<S = ()> {
    shared: ConnHandle,
    params: Arc<ConnParams<S>>,
    /// Kept for `stats()`: the error counts live in the sink.
    sink: EventSink,
    events: EventStream,
}

/// Configures and connects a [`Client`].
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClientBuilder<S = ()> {
    addr: Addr,
    config: ClientConfig,
    handler: Arc<dyn Handler<S>>,
    state: Arc<S>,
}

impl Client<()> {
    /// Starts building a client of the server at `addr`, with no user data. Without
    /// a handler, frames from the server are dropped.
    pub fn builder(addr: impl Into<Addr>) -> ClientBuilder<()> {
        Client::with_state(addr, ())
    }
}

impl<S: Send + Sync + 'static> Client<S> {
    /// Starts building a client whose handler sees `state`.
    pub fn with_state(addr: impl Into<Addr>, state: S) -> ClientBuilder<S> {
        ClientBuilder {
            addr: addr.into(),
            config: ClientConfig::default(),
            handler: Arc::new(IgnoreFrames),
            state: Arc::new(state),
        }
    }
}

impl<S: Send + Sync + 'static> ClientBuilder<S> {
    crate::builder::conn_setters!();

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// How long dialing may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Dials over TCP.
    ///
    /// # Errors
    /// [`ConnectError`] naming the address: timeout, refused, or another failure.
    pub async fn connect(self) -> Result<Client<S>, ConnectError> {
        self.connect_with(&Tcp).await
    }

    /// Dials with another transport; the connection runs on the same engine.
    ///
    /// # Errors
    /// [`ConnectError`] naming the address: timeout, refused, or another failure.
    pub async fn connect_with<C: Connector>(
        self,
        connector: &C,
    ) -> Result<Client<S>, ConnectError> {
        let addr = self.addr;
        let after = self.config.connect_timeout;
        let conn = match tokio::time::timeout(after, connector.connect(&addr)).await {
            Err(_) => return Err(ConnectError::Timeout { addr, after }),
            Ok(Err(source)) => return Err(ConnectError::from_io(addr, source)),
            Ok(Ok(conn)) => conn,
        };
        let local = conn
            .local_addr()
            .map_err(|source| ConnectError::Io { addr, source })?;
        let (events, event_stream) = event_queue(self.config.event_capacity.max(1));
        let config = self.config.conn;
        let shared = Arc::new(ConnShared::new(
            addr,
            local,
            Framer::new(config.frame),
            config.max_outbound,
            false,
            events.clone(),
        ));
        let params = Arc::new(ConnParams {
            timeouts: Arc::new(LiveTimeouts::new(config.idle_timeout, config.write_timeout)),
            config,
            handler: self.handler,
            state: self.state,
            budget: None,
            counters: Arc::<Counters>::default(),
        });
        let driver = Driver::new(conn, shared.clone(), params.clone());
        let span = tracing::debug_span!("client", peer = %addr, %local);
        span.in_scope(|| tracing::debug!("connected"));
        params.counters.opened();
        let counters = params.counters.clone();
        let sink = events.clone();
        let task = async move {
            let finished = driver.await;
            counters.closed();
            events.emit(Event::Closed(finished.event));
            events.close();
        };
        tokio::spawn(task.instrument(span));
        Ok(Client {
            shared,
            params,
            sink,
            events: event_stream,
        })
    }
}

impl<S: Send + Sync + 'static> Client<S> {
    /// The server's address.
    pub fn peer_addr(&self) -> Addr {
        self.shared.peer
    }

    /// Our end of the connection.
    pub fn local_addr(&self) -> Addr {
        self.shared.local
    }

    /// Queues `payload` and the delimiter; it is written in the background, in order.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` once the connection is
    /// closed or closing, `OutboundFull` when the queue is at its bound (wait for
    /// [`flush`](Self::flush) and retry). Nothing is queued then.
    pub fn write(&self, payload: &[u8]) -> Result<(), WriteError> {
        self.shared.write(payload)
    }

    /// Waits until everything queued so far is handed to the transport.
    ///
    /// # Errors
    /// `Closed` if the connection closed first.
    pub async fn flush(&self) -> Result<(), WriteError> {
        self.shared.flush().await
    }

    /// Shuts down our write side once the queue is written: the server reads EOF
    /// (in EOF mode, the end of our message). Frames from the server are still
    /// handled until it closes.
    pub fn shutdown(&self) {
        self.shared.request_close(CloseRequest::ShutdownWrite);
    }

    /// True once the connection has closed, by either side.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the connection after writing out what is queued, and waits until it is
    /// closed. Inside the client's handler, use [`ReadContext::close`](chitchat_core::ReadContext::close) instead.
    pub async fn close(&self) -> CloseEvent {
        self.shared.request_close(CloseRequest::Graceful {
            reason: CloseReason::ClosedLocally,
            linger: None,
        });
        self.shared.closed().await
    }

    /// Waits until the connection is closed, by either side.
    pub async fn closed(&self) -> CloseEvent {
        self.shared.closed().await
    }

    /// Changes the idle timeout of the connection.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) {
        self.params.timeouts.set_idle(timeout);
        self.shared.nudge();
    }

    /// Changes the write timeout of the connection.
    pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) {
        self.params.timeouts.set_write(timeout);
        self.shared.nudge();
    }

    /// The user data.
    pub fn state(&self) -> &S {
        &self.params.state
    }

    /// The stream of background errors and the close event; it ends after the close.
    pub fn events(&self) -> EventStream {
        self.events.clone()
    }

    /// The counters of the connection.
    pub fn stats(&self) -> Stats {
        self.params.counters.snapshot(&self.sink)
    }
}

impl<S> Drop for Client<S> {
    fn drop(&mut self) {
        self.shared.request_close(CloseRequest::Graceful {
            reason: CloseReason::ClosedLocally,
            linger: None,
        });
    }
}

impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_addr", &self.shared.peer)
            .field("local_addr", &self.shared.local)
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
    fn write(&self, payload: &[u8]) -> Result<(), WriteError> {
        Client::write(self, payload)
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
    fn events(&self) -> EventStream {
        Client::events(self)
    }
    fn stats(&self) -> Stats {
        Client::stats(self)
    }
}
