//! The behaviour contract of chitchat's Server and Client, written once and run on
//! every transport: loopback TCP, Unix sockets, TLS and chitchat-testkit's
//! in-memory network (`tests/conformance.rs`). Not published: it is the
//! workspace's test suite, kept out of chitchat-testkit so that a user of the
//! simulated network does not get chitchat-tokio's TLS, rustls and rcgen.
//!
//! Each case is an `async fn` generic over a [`Harness`]: the transport under test.
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]` per case,
//! so the same suite runs on every harness, and on any transport you write yourself:
//!
//! ```text
//! mod conformance {
//!     mod my_transport {
//!         chitchat_conformance::conformance_tests!(MyHarness::new(), tokio::test);
//!     }
//! }
//! ```
//!
//! A case panics on failure, with a message naming what broke.
//!
//! # Layout
//! - `lib.rs`: the one list of cases
//!   ([`conformance_tests!`](crate::conformance_tests)), from which both [`Case`]
//!   and the tests are expanded.
//! - `harness.rs`: the [`Harness`] trait, what a transport gives the suite.
//! - `cases.rs`: the cases.
//! - `tcp.rs`, `unix.rs`, `tls.rs`, `sim.rs`: one harness per transport.
//!
//! # One list
//! The case names are written once, in the macro. A case function missing from it
//! is dead code, which this crate denies, so it does not build; a name without its
//! function does not build either; and `tests/conformance.rs` checks that every
//! `pub async fn` of `cases.rs` is run on every transport.
#![deny(missing_docs, dead_code)]

mod cases;
mod harness;
mod sim;
mod tcp;
mod tls;
mod unix;

pub use harness::Harness;
pub use sim::SimHarness;
pub use tcp::TcpHarness;
pub use tls::TlsHarness;
pub use unix::UnixHarness;

/// Expands to one test function per conformance case, each running the case on the
/// harness built by `$harness`, with `$attr` as its test attribute (for example
/// `tokio::test` or `tokio::test(start_paused = true)`), and to `CASES`, the list
/// of the cases it expanded.
///
/// It also holds the one list of the cases: the `@list` rule hands it to the
/// others (the tests here, [`Case`] in this crate).
#[macro_export]
macro_rules! conformance_tests {
    (@list $($then:tt)*) => {
        $crate::conformance_tests!(@with [
            echo_round_trip
            crlf_is_stripped
            replies_are_checked_wherever_they_come_from
            empty_frames_are_delivered
            custom_delimiter
            eof_mode_echoes_whole_message
            eof_mode_client_gets_whole_reply
            frames_keep_their_order_when_pipelined
            many_clients_at_once
            handler_sees_addresses_and_state
            frame_too_long_closes_and_names_peer
            oversized_frames_skipped_twice_then_recovers
            truncated_frame_at_eof_is_reported
            close_from_handler_flushes_reply_first
            frames_after_close_are_not_handled
            close_remote_closes_only_that_peer
            close_remote_of_unknown_peer_fails
            write_to_reaches_one_peer
            write_to_unknown_peer_fails
            write_refuses_payload_with_delimiter
            broadcast_reaches_every_peer
            remote_addrs_follow_connections
            bind_in_use_fails_with_address
            connect_refused_fails_with_address
            connect_times_out
            idle_timeout_closes_silent_peer
            idle_timeout_restarts_on_every_read
            frame_timeout_closes_slow_trickler
            partial_frame_budget_sheds_largest_holder
            read_timeout_can_change_while_running
            write_timeout_drops_peer_that_stops_reading
            outbound_bound_drops_slow_consumer
            client_write_refused_when_queue_full
            frame_larger_than_outbound_bound_fits_empty_queue
            max_connections_refuses_extra_peers
            handler_panic_closes_only_that_connection
            one_close_event_per_connection_with_counters
            stats_count_connections_traffic_and_errors
            undrained_events_never_block
            peer_reset_is_reported
            cut_frees_address_and_ends_everything
            graceful_shutdown_flushes_queued_replies
            client_notices_server_close
            client_closes_from_its_own_handler
            client_write_after_close_fails
            client_flush_waits_until_written
        ] $($then)*);
    };
    (@with [$($case:ident)*] tests [$harness:expr] [$attr:meta]) => {
        /// The cases expanded here, in order.
        #[allow(dead_code)]
        pub const CASES: &[$crate::Case] = &[$($crate::Case::$case),*];

        $(
            #[$attr]
            async fn $case() {
                let harness = $harness;
                $crate::Case::$case.run(&harness).await;
            }
        )*
    };
    (@with [$($case:ident)*] enum) => {
        /// One case of the suite; its name is the name of its test.
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Case {
            $($case),*
        }

        impl Case {
            /// Every case, in the order of the list.
            pub const ALL: &'static [Case] = &[$(Case::$case),*];

            /// The case's name, as its function and test are named.
            pub fn name(self) -> &'static str {
                match self {
                    $(Case::$case => stringify!($case)),*
                }
            }

            /// Runs the case on `harness`; panics, naming what broke, on failure.
            pub async fn run<H: Harness>(self, harness: &H) {
                match self {
                    $(Case::$case => cases::$case(harness).await),*
                }
            }
        }
    };
    ($harness:expr, $attr:meta) => {
        $crate::conformance_tests!(@list tests [$harness] [$attr]);
    };
}

conformance_tests!(@list enum);
