//! The conformance suite on every transport: `cargo test --workspace conformance`
//! runs exactly these tests, named `conformance::<transport>::<case>`.

mod conformance {
    mod tcp {
        chitchat_testkit::conformance_tests!(
            chitchat_testkit::conformance::TcpHarness,
            tokio::test(flavor = "multi_thread", worker_threads = 2)
        );
    }
}
