//! [`Peers`]: the connections of a server (or the one of a client) as handlers and
//! other tasks reach them — the Go library's read callback got the server itself.
//!
//! A handler gets it from [`ReadContext::peers`](crate::ReadContext::peers) from its
//! very first call; a task that answers later keeps a [`PeersHandle`]. Every list
//! and every broadcast follows accept order, so a program that writes to several
//! peers writes them in the same order on every run.

use std::sync::Arc;

use crate::addr::Addr;
use crate::error::WriteError;

/// Reaching every connection of a server (or, for a client, its one connection to
/// the server) from a handler or a task.
///
/// ```
/// use chitchat_core::{Frame, Peers, ReadContext};
///
/// /// A line from one peer goes to every other peer.
/// fn relay(ctx: &mut dyn ReadContext<()>, frame: Frame<'_>) {
///     let me = ctx.peer_addr();
///     let _ = ctx.peers().broadcast_except(&me, &frame);
/// }
/// ```
pub trait Peers: Send + Sync {
    /// Our own address (the listening address of a server, our end for a client).
    fn local_addr(&self) -> Addr;

    /// The peers connected now, in the order they connected.
    fn remote_addrs(&self) -> Vec<Addr>;

    /// Queues `payload` and the delimiter for one peer. From inside a handler, use
    /// [`ReadContext::reply`](crate::ReadContext::reply) for the handler's own peer:
    /// replies and writes from here travel separately, so their relative order is
    /// not kept.
    ///
    /// # Errors
    /// `UnknownPeer`, `Encode`, `Closed`, or `OutboundFull` (on a server the peer is
    /// then dropped for not reading); nothing is queued then.
    fn write_to(&self, peer: &Addr, payload: &[u8]) -> Result<(), WriteError>;

    /// Queues `payload` for every connected peer, in the order they connected;
    /// returns how many it was queued for.
    ///
    /// # Errors
    /// `Encode` (naming our own address) when the payload cannot be framed; it is
    /// then queued for nobody. A peer whose queue is full is dropped as with
    /// `write_to` and not counted.
    fn broadcast(&self, payload: &[u8]) -> Result<usize, WriteError>;

    /// [`broadcast`](Self::broadcast) to every peer but `except` (typically the
    /// sender of the frame being handled).
    ///
    /// # Errors
    /// As `broadcast`.
    fn broadcast_except(&self, except: &Addr, payload: &[u8]) -> Result<usize, WriteError>;

    /// Closes the connection from `peer` once its queued output is written.
    ///
    /// # Errors
    /// [`WriteError::UnknownPeer`] when no connection comes from `peer`.
    fn close_remote(&self, peer: &Addr) -> Result<(), WriteError>;

    /// An owned handle on the same connections, for a task that writes later. It
    /// does not keep the server running: once the server stops, its lists are empty
    /// and writes fail with `UnknownPeer`.
    fn handle(&self) -> PeersHandle;
}

/// An owned, cloneable [`Peers`]: what a spawned task keeps to write to peers later.
pub type PeersHandle = Arc<dyn Peers>;
