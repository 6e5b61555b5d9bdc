//! The suite's harness for loopback TCP.

use std::any::Any;
use std::time::Duration;

use chitchat_core::Addr;
use chitchat_tokio::{Tcp, TcpConn};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::Harness;

/// Runs the suite over TCP on 127.0.0.1.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpHarness;

impl Harness for TcpHarness {
    type Binder = Tcp;
    type Connector = Tcp;

    fn server_addr(&self) -> Addr {
        "127.0.0.1:0".parse().expect("valid address")
    }

    fn binder(&self) -> &Tcp {
        &Tcp
    }

    fn connector(&self) -> &Tcp {
        &Tcp
    }

    /// A listener that never accepts, with its backlog filled: the kernel drops
    /// further SYNs, so a connect hangs until its timeout.
    async fn black_hole(&self) -> (Addr, Box<dyn Any + Send>) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("valid address"))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local address");
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => fillers.push(stream),
                _ => break,
            }
        }
        let guard: Box<dyn Any + Send> = Box::new((listener, fillers));
        (Addr::from(addr), guard)
    }

    fn abort(&self, conn: TcpConn) -> bool {
        // SO_LINGER 0: close sends RST instead of FIN. (tokio deprecates set_linger
        // because a non-zero linger blocks the thread on drop; zero does not.)
        #[allow(deprecated)]
        conn.stream()
            .set_linger(Some(Duration::ZERO))
            .expect("set SO_LINGER");
        drop(conn);
        true
    }
}
