//! What a flood of registrations costs the master, measured: a counting allocator
//! (this test binary's own) gives the heap held once 100 000 fake registrations
//! from 1 000 addresses, each with the most metadata a row may keep, have hit a
//! master on the in-memory network. The table stops at `max_nodes`, and the heap at
//! `max_nodes` times a per-row bound.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chitchat_heartbeat::{
    Body, ClusterId, HeartbeatConfig, Message, Metadata, NodeId, RefuseReason,
};
use chitchat_testkit::Network;
use chitchat_testkit::RawPeer;
use common::*;

/// Heap bytes a row may take beyond its metadata: the row, its place in the id
/// index, the id's copies, and the map that holds metadata (a B-tree node).
const PER_ROW: usize = 2048;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter
// is only arithmetic on the sizes it is given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_registrations_cost_at_most_max_nodes_rows() {
    let net = Network::new(50);
    let config = HeartbeatConfig::default();
    let (max_nodes, max_metadata) = (config.max_nodes, config.max_metadata_len);
    let master = start_master(&net, &config, 16).await;
    let before = LIVE.load(Ordering::Relaxed);

    // 1 000 hosts, each sending 100 registrations of fresh ids with 1 000 bytes
    // of metadata, pipelined on one connection: 100 000 within a second.
    let value = "v".repeat(250);
    for h in 0..1000u32 {
        let ip = IpAddr::from(Ipv4Addr::new(10, 70, (h / 250) as u8, (h % 250 + 1) as u8));
        let host = net.host(ip);
        let mut burst = Vec::new();
        for k in 0..100 {
            let mut metadata = Metadata::new();
            for key in ["a", "b", "c", "d"] {
                metadata.insert(key, value.as_str()).unwrap();
            }
            let register = Message {
                cluster: ClusterId::new("default").unwrap(),
                node: NodeId::new(format!("fake-{h}-{k}")).unwrap(),
                incarnation: 1,
                epoch: 0,
                seq: 1,
                body: Body::Register {
                    addr: SocketAddr::new(ip, 7001).into(),
                    metadata,
                },
            };
            burst.extend_from_slice(&frame(&register, None));
        }
        let mut peer = RawPeer::connect(&host, &master_addr()).await.unwrap();
        // Cut short when the master closes the connection at its first refusal.
        let _ = peer.write_all(&burst).await;
    }
    // Refused connections close at once, accepted ones at the idle timeout; every
    // round dials every fake (and fails) until they are dead, 14 s later.
    let bound = max_nodes * (PER_ROW + max_metadata);
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.take_trace();
        peak = peak.max(LIVE.load(Ordering::Relaxed).saturating_sub(before));
    }
    let stats = master.stats();
    assert_eq!(stats.nodes.total(), max_nodes);
    assert_eq!(stats.nodes.dead, max_nodes, "no fake answers probes");
    assert_eq!(stats.registrations, max_nodes as u64);
    assert!(stats.refused(RefuseReason::TableFull) > 0);
    println!(
        "[heartbeat] {max_nodes} rows held at most {:.1} MiB, {} bytes a row (bound {} = {PER_ROW} + {max_metadata} of metadata)",
        peak as f64 / (1 << 20) as f64,
        peak / max_nodes,
        PER_ROW + max_metadata
    );
    assert!(peak <= bound, "{peak} bytes held, bound {bound}");
    master.shutdown().await;
}
