//! The project's measuring tools, not published: what `BENCHMARKS.md` and
//! `RELIABILITY.md` are made with. The binaries are in `src/bin/`; this library
//! holds what several of them share.
//!
//! # Layout
//! - `src/bin/bench/`: the benchmark suite (scenarios, runner, criterion framer
//!   results, Markdown report, plot); writes `BENCHMARKS.md`.
//! - `src/bin/loadgen/`: the load generator bench drives (frame pattern, latency
//!   histogram, client, report).
//! - `src/bin/soak.rs`: good and hostile clients against one server, vital signs
//!   printed as it goes.
//! - `src/bin/heartbeat_bench/`: what a heartbeat master costs with N nodes, and
//!   the floors under its CPU per probe.
//! - `src/bin/baseline_*.rs`: the echo servers written without the library that
//!   bench compares `echo_server` with.
//! - [`baseline`]: the baselines' shared flag and accept loop.
//! - `src/bin/fanout.rs`: many idle connections on one server: accept time,
//!   memory per connection, and one broadcast to all of them.
//! - [`probe_floor`]: the floors `heartbeat_bench` puts under a master's CPU per
//!   probe: the same exchange in plain tokio code, over TCP as the master does it
//!   and over UDP in batches.
//! - [`procfs`]: the one reader of Linux's `/proc` (CPU time, run-queue wait,
//!   memory, open files, the machine).
//! - [`sockets`]: the open-file limit, dialing from many loopback addresses, and
//!   the numbered loopback hosts (`127.1.x.y`) nodes listen on.
#![deny(missing_docs)]

pub mod baseline;
pub mod probe_floor;
pub mod procfs;
pub mod sockets;
