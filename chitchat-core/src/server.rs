//! The server contract: the Go library's Server operations, backend-independent.
//!
//! Building and listening are the backend's (`chitchat_tokio::Server::builder`); this
//! trait is what code that runs a server can rely on whatever the backend.

use std::time::Duration;

use async_trait::async_trait;

use crate::addr::Addr;
use crate::error::WriteError;
use crate::event::{EventStream, ShutdownReport};
use crate::stats::Stats;

/// A listening server: its connections, its output, its shutdown.
#[async_trait]
pub trait Server: Send + Sync {
    /// The user data handlers see through [`ReadContext::state`](crate::ReadContext::state).
    type State: ?Sized + Send + Sync;

    /// The bound address (with the real port when port 0 was asked for).
    fn local_addr(&self) -> Addr;

    /// The peers currently connected.
    fn remote_addrs(&self) -> Vec<Addr>;

    /// Closes the connection from `peer` once its queued output is written (bounded by
    /// the linger time).
    ///
    /// # Errors
    /// [`WriteError::UnknownPeer`] when no connection comes from `peer`.
    fn close_remote(&self, peer: &Addr) -> Result<(), WriteError>;

    /// Queues `payload` and the delimiter for one peer, from outside a handler.
    ///
    /// # Errors
    /// `UnknownPeer`, `Encode`, `Closed`, or `OutboundFull` (the peer does not read and
    /// is being dropped); nothing is queued then.
    fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError>;

    /// Queues `payload` for every connected peer; returns how many it was queued for.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed (then it is queued for nobody).
    /// Peers whose queue is full are dropped as with `write_to`, and not counted.
    fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError>;

    /// Changes the idle read timeout of every connection, present and future (the Go
    /// library's read deadline). Open connections count it from their last read.
    fn set_read_timeout(&self, timeout: Option<Duration>);

    /// Changes the write timeout of every connection, present and future.
    fn set_write_timeout(&self, timeout: Option<Duration>);

    /// The user data.
    fn state(&self) -> &Self::State;

    /// The stream of background errors and close events.
    fn events(&self) -> EventStream;

    /// The counters since the server started.
    fn stats(&self) -> Stats;

    /// Stops listening and drops every connection now (the Go library's `Cut`).
    /// Returns when every task has ended and the address is free again.
    async fn cut(&self) -> ShutdownReport;

    /// Stops listening and reading, lets connections write out what is queued for up
    /// to `grace`, then drops what is left. Returns when every task has ended.
    async fn shutdown(&self, grace: Duration) -> ShutdownReport;
}
