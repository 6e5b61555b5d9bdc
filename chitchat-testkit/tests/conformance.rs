//! The conformance suite on every transport: `cargo test --workspace conformance`
//! runs exactly these tests, named `conformance::<transport>::<case>`.

mod conformance {
    mod tcp {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::TcpHarness,
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }

    /// The in-memory network under paused time: timeouts cost no wall time.
    mod mem {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::SimHarness::new(0x5eed),
            tokio::test(start_paused = true)
        );
    }

    /// The in-memory network with latency, jitter and 1–7 byte pieces.
    mod mem_rough {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::SimHarness::rough(0x5eed),
            tokio::test(start_paused = true)
        );
    }

    mod unix {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::UnixHarness,
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }

    mod tls {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::TlsHarness::new(),
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }
}
