//! The client contract: one connection to a server, backend-independent.
//!
//! Dialing is the backend's (`chitchat_tokio::Client::builder`); this trait is what
//! code holding a connected client can rely on.

use async_trait::async_trait;

use crate::addr::Addr;
use crate::conn_event::{CloseEvent, ConnEvent};
use crate::error::WriteError;
use crate::event::Events;
use crate::stats::Stats;

/// A connected client.
///
/// ```
/// use chitchat_core::Client;
///
/// /// Sends every line, waiting for room when the server reads slowly.
/// async fn send_all(client: &impl Client, lines: &[&str]) -> Result<(), chitchat_core::WriteError> {
///     for line in lines {
///         client.send(line.as_bytes()).await?;
///     }
///     client.flush().await
/// }
/// ```
#[async_trait]
pub trait Client: Send + Sync {
    /// The user data its handler sees.
    type State: ?Sized + Send + Sync;

    /// The server's address.
    fn peer_addr(&self) -> Addr;

    /// Our end of the connection.
    fn local_addr(&self) -> Addr;

    /// Queues `payload` and the delimiter if there is room, without waiting; it is
    /// written in the background, in order.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` once the connection is
    /// closed or closing, `OutboundFull` when the outbound bound is reached (use
    /// [`send`](Self::send) to wait for room instead). Nothing is queued then.
    fn try_write(&self, payload: &[u8]) -> Result<(), WriteError>;

    /// Queues `payload` and the delimiter, waiting while the outbound queue is at its
    /// bound. The wait is bounded by the write timeout: a server that reads nothing
    /// for that long gets the connection closed, and this returns `Closed`.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` when the connection is or
    /// becomes closed first. Nothing is queued then.
    async fn send(&self, payload: &[u8]) -> Result<(), WriteError>;

    /// Waits until everything queued so far has been handed to the transport.
    ///
    /// # Errors
    /// `Closed` if the connection closed first.
    async fn flush(&self) -> Result<(), WriteError>;

    /// True once the connection is closed for the application, for any reason
    /// (including the server closing it).
    fn is_closed(&self) -> bool;

    /// Closes the connection after writing out what is queued, and waits until it is
    /// closed. From inside the client's own handler, use
    /// [`ReadContext::close`](crate::ReadContext::close) instead.
    async fn close(&self) -> CloseEvent;

    /// Waits until the connection is closed, by either side.
    async fn closed(&self) -> CloseEvent;

    /// The user data.
    fn state(&self) -> &Self::State;

    /// A new subscription to the client's errors and its close (see [`Events`]).
    fn events(&self) -> Events<ConnEvent>;

    /// The counters of the connection.
    fn stats(&self) -> Stats;
}
