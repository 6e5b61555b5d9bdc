//! Invariants of the failure detector under random sequences of inputs: a reference
//! model rebuilt from the detector's own events and return values must agree with its
//! table at every step, and every event must be a legal transition.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat_core::Addr;
use chitchat_heartbeat::{
    Change, Detector, DetectorEvent, HeartbeatConfig, NodeId, NodeState, RegisterError,
    Registration,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Tick,
    Register { node: u8, port: u16, inc: u64 },
    Leave { node: u8, inc: u64 },
    Succeed { node: u8, inc: u64 },
    Fail { node: u8, inc: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..3u8;
    let inc = 0..3u64;
    prop_oneof![
        4 => (0..4_000u64).prop_map(Op::Advance),
        1 => (8_000..30_000u64).prop_map(Op::Advance),
        3 => Just(Op::Tick),
        2 => (node.clone(), 1..3u16, inc.clone()).prop_map(|(node, port, inc)| Op::Register { node, port, inc }),
        1 => (node.clone(), inc.clone()).prop_map(|(node, inc)| Op::Leave { node, inc }),
        2 => (node.clone(), inc.clone()).prop_map(|(node, inc)| Op::Succeed { node, inc }),
        6 => (node, inc).prop_map(|(node, inc)| Op::Fail { node, inc }),
    ]
}

fn config() -> impl Strategy<Value = HeartbeatConfig> {
    (0..5u32, 1..5u64, 1..5u64).prop_map(|(max_failures, interval, timeout)| {
        let mut config = HeartbeatConfig::default();
        config.max_failures = max_failures;
        config.probe_interval = Duration::from_secs(interval);
        config.probe_timeout = Duration::from_secs(timeout);
        // Rows are never forgotten here: the model keeps every id.
        config.forget_after = None;
        config
    })
}

/// What the model knows of one node.
#[derive(Clone, Copy, Debug)]
struct Row {
    state: NodeState,
    inc: u64,
    addr: Addr,
    /// Failures counted in a row, from `probe_failed` returning true.
    failures: u32,
}

fn name(node: u8) -> String {
    format!("node-{node}")
}

fn addr(port: u16) -> Addr {
    SocketAddr::from(([10, 0, 0, 1], port)).into()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn table_and_events_follow_the_rules(config in config(), ops in prop::collection::vec(op(), 1..200)) {
        let max = config.max_failures;
        let interval = config.probe_interval;
        let mut detector: Detector = Detector::new(config);
        let mut now = Instant::now();
        // Every request a fresh seq: replays are the unit tests' business.
        let mut seq = 0;
        let wall_ms = 1_700_000_000_000;
        let mut model: BTreeMap<String, Row> = BTreeMap::new();
        let mut last_tick: Option<Instant> = None;

        for op in ops {
            let before = model.clone();
            match op {
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Tick => {
                    detector.tick(now);
                }
                Op::Register { node, port, inc } => {
                    seq += 1;
                    let mut registration = Registration::new(NodeId::new(name(node)).unwrap(), addr(port), inc);
                    registration.seq = seq;
                    let result = detector.register(now, wall_ms, registration);
                    let row = before.get(&name(node));
                    match (&result, row) {
                        (Err(RegisterError::StaleIncarnation { current, got, .. }), Some(row)) => {
                            prop_assert_eq!((*current, *got), (row.inc, inc));
                            prop_assert!(inc < row.inc);
                        }
                        (Err(RegisterError::DuplicateId { .. }), Some(row)) => {
                            prop_assert!(row.state.is_live() && row.inc == inc && row.addr != addr(port));
                        }
                        (Ok(()), row) => prop_assert!(row.is_none_or(|row| row.inc <= inc)),
                        (err, row) => prop_assert!(false, "unexpected {:?} for {:?}", err, row),
                    }
                }
                Op::Leave { node, inc } => {
                    seq += 1;
                    let applied = detector.leave(now, &name(node), inc, seq).is_ok();
                    let row = before.get(&name(node));
                    prop_assert_eq!(applied, row.is_some_and(|r| r.state != NodeState::Left && inc == r.inc));
                }
                Op::Succeed { node, inc } => {
                    let counted = detector.probe_succeeded(now, &name(node), inc, Duration::from_millis(1));
                    let row = before.get(&name(node));
                    prop_assert_eq!(counted, row.is_some_and(|r| r.state.is_live() && r.inc == inc));
                    if counted {
                        model.get_mut(&name(node)).unwrap().failures = 0;
                    }
                }
                Op::Fail { node, inc } => {
                    let counted = detector.probe_failed(now, &name(node), inc);
                    let row = before.get(&name(node));
                    if counted {
                        prop_assert!(row.is_some_and(|r| r.state.is_live() && r.inc == inc));
                        model.get_mut(&name(node)).unwrap().failures += 1;
                    }
                }
            }

            for event in detector.drain_events() {
                let event = match event {
                    DetectorEvent::Stalled(stall) => {
                        prop_assert!(matches!(op, Op::Tick), "op {:?}", op);
                        prop_assert_eq!(stall.actual, now);
                        prop_assert_eq!(Some(stall.expected), last_tick.map(|t| t + interval));
                        prop_assert!(stall.drift > interval);
                        continue;
                    }
                    DetectorEvent::Changed(event) => event,
                    other => panic!("unknown event {other:?}"),
                };
                prop_assert_eq!(event.at, now);
                let key = event.node.to_string();
                let prior = before.get(&key).copied();
                let row = model.entry(key).or_insert(Row { state: NodeState::Alive, inc: event.incarnation, addr: event.addr, failures: 0 });
                match &event.change {
                    Change::Joined { replaced } => {
                        prop_assert!(matches!(op, Op::Register { .. }), "op {:?}", op);
                        match prior {
                            None => prop_assert_eq!(replaced, &None),
                            Some(p) if p.state == NodeState::Left => prop_assert_eq!(replaced, &None),
                            Some(p) => {
                                prop_assert!(p.state.is_live() && p.inc < event.incarnation);
                                prop_assert_eq!(replaced, &Some(p.inc));
                            }
                        }
                        *row = Row { state: NodeState::Alive, inc: event.incarnation, addr: event.addr, failures: 0 };
                    }
                    Change::Alive { from } => {
                        prop_assert_eq!(Some(*from), prior.map(|p| p.state));
                        match from {
                            NodeState::Suspect => prop_assert!(matches!(op, Op::Succeed { .. }), "op {:?}", op),
                            NodeState::Dead => prop_assert!(matches!(op, Op::Register { .. }), "op {:?}", op),
                            other => prop_assert!(false, "alive from {:?}", other),
                        }
                        *row = Row { state: NodeState::Alive, inc: event.incarnation, addr: event.addr, failures: 0 };
                    }
                    Change::Suspect => {
                        prop_assert!(matches!(op, Op::Fail { .. }), "op {:?}", op);
                        prop_assert_eq!(prior.map(|p| p.state), Some(NodeState::Alive));
                        prop_assert_eq!(row.failures, 1);
                        row.state = NodeState::Suspect;
                    }
                    Change::Dead { evidence } => {
                        prop_assert!(matches!(op, Op::Fail { .. }), "op {:?}", op);
                        prop_assert!(prior.is_some_and(|p| p.state.is_live()));
                        // Dead only after more than max_failures counted failures in a row.
                        prop_assert_eq!(row.failures, max + 1);
                        prop_assert_eq!((evidence.failures, evidence.threshold), (max + 1, max));
                        row.state = NodeState::Dead;
                    }
                    Change::Left => {
                        prop_assert!(matches!(op, Op::Leave { .. }), "op {:?}", op);
                        prop_assert!(prior.is_some_and(|p| p.state != NodeState::Left));
                        row.state = NodeState::Left;
                        row.inc = event.incarnation;
                    }
                    other => prop_assert!(false, "unknown change {:?}", other),
                }
            }
            if matches!(op, Op::Tick) {
                last_tick = Some(now);
            }

            // The table is exactly the model: one row per id, same state and counts.
            let snapshot = detector.snapshot();
            let counts = detector.counts();
            for state in NodeState::ALL {
                let expected = model.values().filter(|row| row.state == state).count();
                prop_assert_eq!(counts.of(state), expected, "{:?}", state);
            }
            let ids: Vec<String> = snapshot.iter().map(|n| n.node.to_string()).collect();
            prop_assert_eq!(ids, model.keys().cloned().collect::<Vec<_>>());
            for node in &snapshot {
                let row = model[node.node.as_str()];
                prop_assert_eq!((node.state, node.incarnation, node.addr), (row.state, row.inc, row.addr));
                if let Some(p) = before.get(node.node.as_str()) {
                    prop_assert!(node.incarnation >= p.inc, "incarnation went back");
                }
                match node.state {
                    NodeState::Alive => prop_assert_eq!(node.failures, 0),
                    NodeState::Suspect => prop_assert!((1..=max).contains(&node.failures)),
                    NodeState::Dead => prop_assert!(node.failures > max),
                    NodeState::Left => {}
                }
                if node.state.is_live() {
                    prop_assert_eq!(node.failures, row.failures);
                    prop_assert!(detector.time_until_dead(node.node.as_str(), now).is_some());
                } else {
                    prop_assert_eq!(detector.time_until_dead(node.node.as_str(), now), None);
                }
            }
        }
    }
}
