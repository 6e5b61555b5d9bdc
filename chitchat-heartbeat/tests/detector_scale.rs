//! The failure detector at the scale of 100 000 nodes, with the master's rounds
//! played exactly as the round driver plays them (tick, a probe to every live node,
//! the acks as they come back, one sweep at the deadline) and a seeded network under
//! it: each node answers after its own latency (up to 1.5 s, under the 2 s timeout),
//! and 1000 nodes crash at random moments. Every crash is declared dead within the
//! bound, and no other node is ever suspect. Sans-IO, so it runs in seconds; the
//! network stack at scale is `simulation.rs`'s (ignored) large-cluster test.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chitchat_heartbeat::{
    Change, Detector, DetectorEvent, HeartbeatConfig, NodeId, NodeState, Registration, Slot,
};
use common::SplitMix;

/// 100 000 rounds' worth of rows: `HEARTBEAT_SCALE_NODES` overrides it.
fn nodes() -> usize {
    std::env::var("HEARTBEAT_SCALE_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

#[test]
#[ignore = "100 000 nodes take a minute in a debug build; run it with --ignored (release: seconds)"]
fn a_hundred_thousand_nodes_crashes_dead_within_the_bound_and_no_false_suspect() {
    let n = nodes();
    let crashes = (n / 100).max(1);
    let mut config = HeartbeatConfig::default();
    config.max_nodes = n;
    config.forget_after = None;
    let (interval, timeout, bound) = (
        config.probe_interval,
        config.probe_timeout,
        config.detection_bound(),
    );
    let wall = Instant::now();
    let mut detector: Detector = Detector::new(config);
    let t0 = Instant::now();
    let wall_ms = 1_700_000_000_000;
    let mut rng = SplitMix(0x5ca1e);
    let ids: Vec<NodeId> = (0..n)
        .map(|i| NodeId::new(format!("n{i:06}")).unwrap())
        .collect();
    // Each node's one-way-and-back latency, 1 ms to 1.5 s.
    let latency: Vec<Duration> = (0..n)
        .map(|_| Duration::from_millis(1 + rng.below(1500)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i as u32), 7001)).into();
        detector
            .register(t0, wall_ms, Registration::new(id.clone(), addr, 1))
            .unwrap();
    }
    detector.drain_events().count();
    // Crash times: after two rounds, within 30 s.
    let mut crash_at: BTreeMap<usize, Instant> = BTreeMap::new();
    while crash_at.len() < crashes {
        let at = t0 + interval * 2 + Duration::from_millis(rng.below(30_000));
        crash_at.entry(rng.below(n as u64) as usize).or_insert(at);
    }
    let index: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    let mut seq = 0u64;
    let mut dead_at = BTreeMap::new();
    let mut false_alarms = Vec::new();
    let rounds = ((interval * 2 + Duration::from_secs(30) + bound).as_millis()
        / interval.as_millis()) as u32
        + 2;
    for round in 1..=rounds {
        let start = t0 + interval * round;
        detector.tick(start);
        let mut sent: Vec<(Slot, usize, u64)> = Vec::with_capacity(n);
        detector.send_probes(start, |slot, row, _| {
            seq += 1;
            sent.push((slot, index[row.node.as_str()], seq));
            Some(seq)
        });
        // The answers, in the order they arrive.
        let mut acks: Vec<(Instant, Slot, usize, u64)> = sent
            .into_iter()
            .filter_map(|(slot, i, seq)| {
                let back = start + latency[i];
                let alive = crash_at.get(&i).is_none_or(|&crash| back < crash);
                alive.then_some((back, slot, i, seq))
            })
            .collect();
        acks.sort_by_key(|&(at, _, i, _)| (at, i));
        for (at, slot, i, seq) in acks {
            assert!(detector.probe_acked(at, slot, ids[i].as_str(), 1, seq));
        }
        detector.sweep(start + timeout);
        for event in detector.drain_events() {
            let DetectorEvent::Changed(change) = event else {
                panic!("no stall in a simulation: {event:?}");
            };
            let i = index[change.node.as_str()];
            match (&change.change, crash_at.get(&i)) {
                (Change::Dead { .. }, Some(&crash)) => {
                    dead_at.insert(i, change.at - crash);
                }
                (Change::Suspect, Some(_)) => {}
                (other, _) => false_alarms.push((change.node.clone(), other.clone())),
            }
        }
    }
    assert!(
        false_alarms.is_empty(),
        "{:?}",
        &false_alarms[..false_alarms.len().min(5)]
    );
    assert_eq!(dead_at.len(), crashes, "every crash declared dead");
    let slowest = dead_at.values().max().copied().unwrap_or_default();
    assert!(
        slowest <= bound,
        "slowest detection {slowest:?}, bound {bound:?}"
    );
    let counts = detector.counts();
    assert_eq!((counts.alive, counts.dead), (n - crashes, crashes));
    assert!(detector
        .rows()
        .filter(|row| row.state == NodeState::Dead)
        .all(|row| crash_at.contains_key(&index[row.node.as_str()])));
    println!(
        "[heartbeat] detector, {n} nodes, {rounds} rounds: {crashes} crashes, slowest detection \
         {slowest:?} (bound {bound:?}), no false suspect or dead; {:?} of wall time",
        wall.elapsed()
    );
}
