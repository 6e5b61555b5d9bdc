//! What the suite needs of a transport: [`Harness`].

use std::any::Any;
use std::future::Future;

use chitchat_core::{Addr, Binder, Connector};

/// A transport the suite can run on.
pub trait Harness: Send + Sync + 'static {
    /// Binds the servers of the suite.
    type Binder: Binder;
    /// Dials the clients and raw peers of the suite.
    type Connector: Connector;

    /// Where servers bind; port 0, so that each case gets a free port.
    fn server_addr(&self) -> Addr;

    /// The server side of the transport.
    fn binder(&self) -> &Self::Binder;

    /// The client side of the transport.
    fn connector(&self) -> &Self::Connector;

    /// An address where connecting hangs (nobody answers), and a guard that keeps it
    /// so until dropped.
    fn black_hole(&self) -> impl Future<Output = (Addr, Box<dyn Any + Send>)> + Send;

    /// Drops a connection abortively: the other end sees a reset, not an EOF.
    /// Returns false when the transport has no abortive close (the connection is
    /// just dropped, and the case that needs a reset is skipped).
    fn abort(&self, conn: <Self::Connector as Connector>::Conn) -> bool;
}
