//! The server contract: the Go library's Server operations, backend-independent.
//!
//! Building and listening are the backend's (`chitchat_tokio::Server::builder`);
//! this trait is what code that runs a server can rely on whatever the backend. It
//! extends [`Peers`], the part a handler reaches from inside.

use std::time::Duration;

use async_trait::async_trait;

use crate::conn_event::ConnEvent;
use crate::event::Events;
use crate::peers::Peers;
use crate::stats::Stats;

/// A listening server: its connections (through [`Peers`]), its settings, its
/// events, its shutdown.
///
/// Code written against this trait runs a server whatever the backend:
///
/// ```
/// use std::time::Duration;
/// use chitchat_core::{Peers, Server};
///
/// /// Tells everyone, then shuts down gracefully.
/// async fn announce_and_stop(server: &impl Server) {
///     let _ = server.broadcast(b"* server going down");
///     let report = server.shutdown(Duration::from_secs(5)).await;
///     println!("{} drained, {} forced", report.drained, report.forced);
/// }
/// ```
#[async_trait]
pub trait Server: Peers {
    /// The user data handlers see through [`ReadContext::state`](crate::ReadContext::state).
    type State: ?Sized + Send + Sync;

    /// The user data.
    fn state(&self) -> &Self::State;

    /// A new subscription to the server's errors and closed connections: every
    /// event from now on, bounded (see [`Events`]). Subscribe before doing what
    /// you want to observe.
    fn events(&self) -> Events<ConnEvent>;

    /// The counters since the server started.
    fn stats(&self) -> Stats;

    /// Changes the idle timeout of every connection, present and future (the Go
    /// library's read deadline). Open connections count it from their last read.
    fn set_idle_timeout(&self, timeout: Option<Duration>);

    /// Changes the write timeout of every connection, present and future.
    fn set_write_timeout(&self, timeout: Option<Duration>);

    /// Stops listening and drops every connection now (the Go library's `Cut`).
    /// Returns when every task has ended and the address is free again.
    async fn cut(&self) -> ShutdownReport;

    /// Stops listening and reading, lets connections write out what is queued for up
    /// to `grace`, then drops what is left. Returns when every task has ended.
    async fn shutdown(&self, grace: Duration) -> ShutdownReport;
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that wrote out their queued output and shut down in order.
    pub drained: usize,
    /// Connections closed with output still queued (cut, or the grace ran out).
    pub forced: usize,
}
