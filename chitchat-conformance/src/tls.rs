//! The suite's harness for TLS over loopback TCP.

use std::any::Any;

use chitchat_core::Addr;
use chitchat_tokio::{TlsBinder, TlsConn, TlsConnector};

use crate::harness::Harness;
use crate::tcp::TcpHarness;

/// Runs the suite over TLS on 127.0.0.1, with a certificate for `localhost`
/// generated when the harness is made.
#[derive(Clone)]
pub struct TlsHarness {
    server: TlsBinder,
    client: TlsConnector,
}

impl TlsHarness {
    /// A harness with a fresh self-signed certificate that its client trusts.
    ///
    /// # Panics
    /// If the certificate cannot be generated (it always can).
    pub fn new() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate a certificate");
        let cert_pem = cert.cert.pem();
        let server = TlsBinder::from_pem(
            cert_pem.as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .expect("server configuration");
        let client = TlsConnector::from_ca_pem(cert_pem.as_bytes(), "localhost")
            .expect("client configuration");
        TlsHarness { server, client }
    }
}

impl Default for TlsHarness {
    fn default() -> Self {
        TlsHarness::new()
    }
}

impl Harness for TlsHarness {
    type Binder = TlsBinder;
    type Connector = TlsConnector;

    fn server_addr(&self) -> Addr {
        TcpHarness.server_addr()
    }

    fn binder(&self) -> &TlsBinder {
        &self.server
    }

    fn connector(&self) -> &TlsConnector {
        &self.client
    }

    /// TCP's black hole: the handshake never starts.
    async fn black_hole(&self) -> (Addr, Box<dyn Any + Send>) {
        TcpHarness.black_hole().await
    }

    fn abort(&self, conn: TlsConn) -> bool {
        let tcp = conn.tcp().expect("an established connection");
        // As for TCP: SO_LINGER 0 makes the close a reset.
        #[allow(deprecated)]
        tcp.set_linger(Some(std::time::Duration::ZERO))
            .expect("set SO_LINGER");
        drop(conn);
        true
    }
}
