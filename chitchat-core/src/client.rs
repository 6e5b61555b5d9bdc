//! The client contract: one connection to a server, backend-independent.
//!
//! Dialing is the backend's (`chitchat_tokio::Client::builder`); this trait is what
//! code holding a connected client can rely on.

use async_trait::async_trait;

use crate::addr::Addr;
use crate::error::WriteError;
use crate::event::{CloseEvent, EventStream};
use crate::stats::Stats;

/// A connected client.
#[async_trait]
pub trait Client: Send + Sync {
    /// The user data its handler sees.
    type State: ?Sized + Send + Sync;

    /// The server's address.
    fn peer_addr(&self) -> Addr;

    /// Our end of the connection.
    fn local_addr(&self) -> Addr;

    /// Queues `payload` and the delimiter; it is written in the background, in order.
    ///
    /// # Errors
    /// `Encode` when the payload cannot be framed, `Closed` once the connection is
    /// closed or closing, `OutboundFull` when more than the outbound bound is queued
    /// (wait for [`flush`](Self::flush) and retry). Nothing is queued then.
    fn write(&self, payload: &[u8]) -> Result<(), WriteError>;

    /// Waits until everything queued so far has been handed to the transport.
    ///
    /// # Errors
    /// `Closed` if the connection closed first.
    async fn flush(&self) -> Result<(), WriteError>;

    /// True once the connection has closed, for any reason (including the server
    /// closing it).
    fn is_closed(&self) -> bool;

    /// Closes the connection after writing out what is queued, and waits until it is
    /// closed. From inside the client's own handler, use
    /// [`ReadContext::close`](crate::ReadContext::close) instead.
    async fn close(&self) -> CloseEvent;

    /// Waits until the connection is closed, by either side.
    async fn closed(&self) -> CloseEvent;

    /// The user data.
    fn state(&self) -> &Self::State;

    /// The stream of background errors and the close event.
    fn events(&self) -> EventStream;

    /// The counters of the connection.
    fn stats(&self) -> Stats;
}
