//! The conformance suite on every transport: `cargo test --workspace conformance`
//! runs exactly these tests, named `conformance::<transport>::<case>`, and
//! `every_case_runs_on_every_transport` checks that none is left out.

use std::collections::BTreeSet;

use chitchat_conformance::Case;

mod conformance {
    pub mod tcp {
        chitchat_conformance::conformance_tests!(
            chitchat_conformance::TcpHarness,
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }

    /// The in-memory network under paused time: timeouts cost no wall time.
    pub mod mem {
        chitchat_conformance::conformance_tests!(
            chitchat_conformance::SimHarness::new(0x5eed),
            tokio::test(start_paused = true)
        );
    }

    /// The in-memory network with latency, jitter and 1–7 byte pieces.
    pub mod mem_rough {
        chitchat_conformance::conformance_tests!(
            chitchat_conformance::SimHarness::rough(0x5eed),
            tokio::test(start_paused = true)
        );
    }

    pub mod unix {
        chitchat_conformance::conformance_tests!(
            chitchat_conformance::UnixHarness,
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }

    pub mod tls {
        chitchat_conformance::conformance_tests!(
            chitchat_conformance::TlsHarness::new(),
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }
}

/// Every `pub async fn` of `cases.rs` is a case of the list, and every transport
/// runs every case of the list: a case written but not listed, or left out of a
/// transport, fails here.
#[test]
fn every_case_runs_on_every_transport() {
    let written: BTreeSet<&str> = include_str!("../src/cases.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .map(|rest| rest.split(['<', '(']).next().unwrap_or(rest))
        .collect();
    let listed: BTreeSet<&str> = Case::ALL.iter().map(|case| case.name()).collect();
    assert_eq!(written, listed, "cases written vs cases in the list");
    let transports = [
        ("tcp", conformance::tcp::CASES),
        ("mem", conformance::mem::CASES),
        ("mem_rough", conformance::mem_rough::CASES),
        ("unix", conformance::unix::CASES),
        ("tls", conformance::tls::CASES),
    ];
    for (transport, cases) in transports {
        assert_eq!(cases, Case::ALL, "the cases run on {transport}");
    }
}
