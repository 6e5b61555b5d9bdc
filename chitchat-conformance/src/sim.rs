//! The suite's harness for the in-memory network.

use std::any::Any;
use std::time::Duration;

use chitchat_core::{Addr, BindOptions, Binder};
use chitchat_testkit::{Host, LinkConfig, NetConfig, Network, SimConn};

use crate::harness::Harness;

/// Runs the suite on a fresh in-memory [`Network`]: the server on 10.0.0.1, clients
/// on 10.0.0.2. Use it under paused time (`tokio::test(start_paused = true)`), so
/// that the timeout cases take no wall time.
#[derive(Clone, Debug)]
pub struct SimHarness {
    net: Network,
    server: Host,
    client: Host,
}

impl SimHarness {
    /// A harness on a network seeded with `seed`, with default links.
    pub fn new(seed: u64) -> Self {
        SimHarness::on(Network::new(seed))
    }

    /// A harness on a network whose every link delays by 2 ms ± 3 ms and delivers
    /// writes in pieces of 1 to 7 bytes: frames straddle every read boundary.
    pub fn rough(seed: u64) -> Self {
        let link = LinkConfig::default()
            .latency(Duration::from_millis(2))
            .jitter(Duration::from_millis(3))
            .chunking(7);
        let mut config = NetConfig::default();
        config.link = link;
        SimHarness::on(Network::with_config(seed, config))
    }

    /// A harness on `net`, for running the suite with faults configured on it (the
    /// server host is 10.0.0.1, the client host 10.0.0.2).
    pub fn on(net: Network) -> Self {
        let server = net.host([10, 0, 0, 1]);
        let client = net.host([10, 0, 0, 2]);
        SimHarness {
            net,
            server,
            client,
        }
    }

    /// The network, to inject faults or read the trace.
    pub fn network(&self) -> &Network {
        &self.net
    }
}

impl Harness for SimHarness {
    type Binder = Host;
    type Connector = Host;

    fn server_addr(&self) -> Addr {
        "10.0.0.1:0".parse().expect("valid address")
    }

    fn binder(&self) -> &Host {
        &self.server
    }

    fn connector(&self) -> &Host {
        &self.client
    }

    /// A listener on a host cut off from the client: connects hang.
    async fn black_hole(&self) -> (Addr, Box<dyn Any + Send>) {
        let hole = self.net.host([10, 0, 0, 99]);
        self.net.partition(&self.client, &hole);
        let addr: Addr = "10.0.0.99:7000".parse().expect("valid address");
        let listener = hole
            .bind(&addr, &BindOptions::default())
            .expect("bind on the black hole");
        (addr, Box::new(listener))
    }

    fn abort(&self, conn: SimConn) -> bool {
        conn.abort();
        true
    }
}
