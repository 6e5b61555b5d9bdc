//! Misbehaving peers and identity conflicts, on the in-memory network under paused
//! time: each test drives the master or a node with raw bytes or conflicting nodes,
//! and checks the typed error, what was closed, and that nobody else noticed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use chitchat_core::{Addr, ConnError};
use chitchat_heartbeat::wire::{WireError, WireField};
use chitchat_heartbeat::{
    Change, ClusterId, HeartbeatConfig, MasterError, MasterEvent, MemberChange, MemberStatus, Node,
    NodeState, RefuseReason, RegisterError,
};
use chitchat_testkit::conformance::RawPeer;
use chitchat_testkit::{Host, SimConn};
use common::*;

/// A host that is none of the cluster's, for raw peers.
fn stranger(cluster: &Cluster, last: u8) -> Host {
    cluster
        .net
        .host(IpAddr::from(Ipv4Addr::new(10, 9, 0, last)))
}

async fn raw(host: &Host, addr: Addr) -> RawPeer<SimConn> {
    RawPeer::connect(host, &addr).await.expect("connects")
}

/// Sends one frame and returns the first frame of the answer, if any.
async fn exchange(peer: &mut RawPeer<SimConn>, frame: &str) -> Option<Bytes> {
    peer.write_all(format!("{frame}\n").as_bytes())
        .await
        .unwrap();
    peer.read_frame(b'\n').await.unwrap()
}

fn errors(cluster: &Cluster) -> Vec<MasterError> {
    cluster
        .master_events
        .snapshot()
        .iter()
        .filter_map(|e| e.as_error().cloned())
        .collect()
}

/// The rest of the cluster saw nothing: every node Alive and probed, and no event
/// but the joins.
async fn assert_undisturbed(cluster: &Cluster, nodes: usize) {
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    let rows = cluster.master().snapshot();
    assert_eq!(rows.len(), nodes);
    assert!(rows
        .iter()
        .all(|r| r.state == NodeState::Alive && r.failures == 0));
    let words: Vec<_> = cluster
        .master_events
        .node_events()
        .iter()
        .map(|e| e.change.as_str())
        .collect();
    assert_eq!(words, vec!["joined"; nodes]);
}

#[tokio::test(start_paused = true)]
async fn invalid_messages_get_a_typed_error_and_only_their_connection_closes() {
    let cluster = Cluster::start(10, HeartbeatConfig::default(), 3).await;
    let host = stranger(&cluster, 1);
    let cases = [
        ("hello", WireError::BadMagic),
        (
            "CHB 2 register default n 1 1 10.9.0.1:7001",
            WireError::UnknownVersion { version: 2 },
        ),
        (
            "CHB 1 register default n x 1 10.9.0.1:7001",
            WireError::Malformed {
                field: WireField::Incarnation,
            },
        ),
        (
            "CHB 1 register default n 1 1 nowhere",
            WireError::Malformed {
                field: WireField::Addr,
            },
        ),
        (
            "CHB 1 hello default n 1 1",
            WireError::UnknownType {
                name: "hello".into(),
            },
        ),
    ];
    for (frame, expected) in cases {
        let mut peer = raw(&host, master_addr()).await;
        let local = peer.local_addr();
        assert_eq!(exchange(&mut peer, frame).await, None, "closed: {frame}");
        let (rest, end) = peer.read_to_end().await;
        assert!(rest.is_empty() && end.is_ok(), "orderly close: {frame}");
        assert_eq!(
            errors(&cluster).last(),
            Some(&MasterError::Wire {
                peer: local,
                source: expected
            })
        );
    }
    assert_eq!(errors(&cluster).len(), 5);
    assert_eq!(
        errors(&cluster)[1].to_string(),
        format!(
            "invalid message from {}: unknown protocol version 2 (this side speaks 1)",
            match &errors(&cluster)[1] {
                MasterError::Wire { peer, .. } => *peer,
                _ => unreachable!(),
            }
        )
    );
    assert_undisturbed(&cluster, 3).await;
}

#[tokio::test(start_paused = true)]
async fn an_oversized_frame_is_an_engine_error_naming_the_peer() {
    let cluster = Cluster::start(11, HeartbeatConfig::default(), 2).await;
    let mut peer = raw(&stranger(&cluster, 1), master_addr()).await;
    let local = peer.local_addr();
    peer.write_all(&vec![b'x'; 20_000]).await.unwrap();
    let (_, end) = peer.read_to_end().await;
    assert!(end.is_ok());
    let engine_errors: Vec<ConnError> = cluster
        .master_events
        .snapshot()
        .into_iter()
        .filter_map(|e| match e {
            MasterEvent::Connection { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert!(
        matches!(engine_errors[..], [ConnError::FrameTooLong { peer, limit: 16384 }] if peer == local),
        "{engine_errors:?}"
    );
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_on_the_registration_port_is_unexpected() {
    let cluster = Cluster::start(12, HeartbeatConfig::default(), 2).await;
    let mut peer = raw(&stranger(&cluster, 1), master_addr()).await;
    let local = peer.local_addr();
    assert_eq!(exchange(&mut peer, "CHB 1 probe default n 1 1").await, None);
    assert_eq!(
        errors(&cluster),
        [MasterError::Unexpected {
            peer: local,
            message: "probe"
        }]
    );
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_of_another_cluster_is_refused() {
    let cluster = Cluster::start(13, HeartbeatConfig::default(), 2).await;
    let mut config = HeartbeatConfig::new(ClusterId::new("staging").unwrap());
    config.probe_interval = cluster.config.probe_interval;
    let intruder = start_node(&cluster.net, &config, 5).await;
    let events = Recorder::new(intruder.events());
    assert_eq!(
        intruder.registered().await,
        MemberStatus::Refused(RefuseReason::WrongCluster)
    );
    let [MasterError::WrongCluster { peer, node, source }] = &errors(&cluster)[..] else {
        panic!("{:?}", errors(&cluster));
    };
    assert_eq!(peer.as_inet().unwrap().ip(), node_ip(5));
    assert_eq!(
        (node, &source.expected, &source.found),
        (&node_id(5), &cluster.config.cluster, &config.cluster)
    );
    intruder.stop().await;
    let events = events.finish().await;
    let words: Vec<_> = events.iter().map(|e| e.change.as_str()).collect();
    assert_eq!(words, ["refused"]);
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn registering_twice_is_acknowledged_twice_and_joins_once() {
    let cluster = Cluster::start(14, HeartbeatConfig::default(), 1).await;
    let host = stranger(&cluster, 2);
    // A probe server for the raw node, so that its probes succeed.
    let node = Node::builder(
        chitchat_heartbeat::NodeId::new("twice").unwrap(),
        master_addr(),
    )
    .listen(SocketAddr::new(host.ip(), 7001))
    .incarnation(5)
    .start(&host, host.clone())
    .await
    .unwrap();
    assert_eq!(node.registered().await, MemberStatus::Registered);
    let mut peer = raw(&host, master_addr()).await;
    for seq in [10, 11] {
        let register = format!("CHB 1 register default twice 5 {seq} 10.9.0.2:7001 role=x");
        let ack = exchange(&mut peer, &register).await.unwrap();
        assert_eq!(ack, format!("CHB 1 register-ack default twice 5 {seq}"));
    }
    let joined: Vec<_> = cluster
        .master_events
        .changes("joined")
        .into_iter()
        .filter(|e| e.node == "twice")
        .collect();
    assert_eq!(joined.len(), 1);
    let row = cluster.master().node("twice").unwrap();
    assert_eq!(row.metadata.get("role"), Some("x"), "metadata updated");
    assert!(errors(&cluster).is_empty());
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_second_node_with_the_same_id_and_incarnation_is_refused_as_duplicate() {
    let cluster = Cluster::start(15, HeartbeatConfig::default(), 2).await;
    // Node 0's id and incarnation, from another host.
    let host = stranger(&cluster, 3);
    let twin = Node::builder(node_id(0), master_addr())
        .listen(SocketAddr::new(host.ip(), NODE_PORT))
        .incarnation(1)
        .start(&host, host.clone())
        .await
        .unwrap();
    assert_eq!(
        twin.registered().await,
        MemberStatus::Refused(RefuseReason::DuplicateId)
    );
    let [MasterError::Refused { peer, source }] = &errors(&cluster)[..] else {
        panic!("{:?}", errors(&cluster));
    };
    assert_eq!(peer.as_inet().unwrap().ip(), host.ip());
    let existing: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    let claimed: Addr = SocketAddr::new(host.ip(), NODE_PORT).into();
    assert_eq!(
        source,
        &RegisterError::DuplicateId {
            node: node_id(0),
            existing,
            claimed
        }
    );
    // The first one keeps its id and its address.
    assert_eq!(
        cluster.master().node(node_id(0).as_str()).unwrap().addr,
        existing
    );
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_replaces_its_old_run_which_is_then_refused_as_stale() {
    let cluster = Cluster::start(16, HeartbeatConfig::default(), 2).await;
    let host = stranger(&cluster, 4);
    let new_run = Node::builder(node_id(0), master_addr())
        .listen(SocketAddr::new(host.ip(), NODE_PORT))
        .incarnation(2)
        .start(&host, host.clone())
        .await
        .unwrap();
    assert_eq!(new_run.registered().await, MemberStatus::Registered);
    let replaced = cluster.master_events.changes("joined");
    assert_eq!(
        replaced.last().unwrap().change,
        Change::Joined { replaced: Some(1) }
    );
    let rows = cluster.master().snapshot();
    assert_eq!(rows.len(), 2, "never two entries for one id");
    assert_eq!(rows[0].incarnation, 2);
    assert_eq!(rows[0].addr, new_run.local_addr());

    // The old run is no longer probed: it loses the master, registers again, and
    // is refused for good.
    let old_run = cluster.nodes[0].as_ref().unwrap();
    tokio::time::sleep(cluster.config.master_timeout + cluster.config.probe_timeout).await;
    assert_eq!(
        old_run.status(),
        MemberStatus::Refused(RefuseReason::StaleIncarnation)
    );
    let words: Vec<_> = cluster.node_events[0]
        .snapshot()
        .iter()
        .map(|e| e.change.as_str())
        .collect();
    assert_eq!(words, ["registered", "master-lost", "refused"]);
    assert!(matches!(
        &errors(&cluster)[..],
        [MasterError::Refused {
            source: RegisterError::StaleIncarnation {
                current: 2,
                got: 1,
                ..
            },
            ..
        }]
    ));
    assert_eq!(
        cluster.master().node(node_id(0).as_str()).unwrap().state,
        NodeState::Alive
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_answers_probes_with_its_own_identity_and_closes_on_garbage() {
    let cluster = Cluster::start(17, HeartbeatConfig::default(), 1).await;
    let node_addr: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    let mut peer = raw(&stranger(&cluster, 5), node_addr).await;
    // Whatever the probe says of the node, the ack tells who answers.
    let ack = exchange(&mut peer, "CHB 1 probe default someone-else 9 77").await;
    assert_eq!(ack.unwrap(), "CHB 1 probe-ack default node-0000 1 77");
    let local = peer.local_addr();
    assert_eq!(exchange(&mut peer, "CHB 9 probe").await, None);
    let events = cluster.node_events[0].snapshot();
    assert_eq!(
        events.last().unwrap().change,
        MemberChange::Error(chitchat_heartbeat::NodeError::Wire {
            peer: local,
            source: WireError::UnknownVersion { version: 9 }
        })
    );
    assert_undisturbed(&cluster, 1).await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_from_another_node_counts_as_a_failure() {
    let cluster = Cluster::start(18, HeartbeatConfig::default(), 1).await;
    // "ghost" claims node 0's probe address: node 0 answers the probes, as itself.
    let mut peer = raw(&stranger(&cluster, 6), master_addr()).await;
    let ack = exchange(&mut peer, "CHB 1 register default ghost 1 1 10.1.0.1:7001").await;
    assert_eq!(ack.unwrap(), "CHB 1 register-ack default ghost 1 1");
    let registered = now();
    tokio::time::sleep(cluster.config.detection_bound() + cluster.config.probe_interval).await;
    let dead = cluster.master_events.changes("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].node, "ghost");
    assert!(
        dead[0].at - registered <= cluster.config.detection_bound() + cluster.config.probe_interval
    );
    assert_eq!(
        cluster.master().node("node-0000").unwrap().state,
        NodeState::Alive
    );
}

#[tokio::test(start_paused = true)]
async fn leave_makes_a_node_left_at_once_and_it_is_no_longer_probed() {
    let cluster = Cluster::start(19, HeartbeatConfig::default(), 2).await;
    let node = cluster.nodes[1].as_ref().unwrap();
    node.leave().await.unwrap();
    assert_eq!(node.status(), MemberStatus::Stopped);
    let row = cluster.master().node(node_id(1).as_str()).unwrap();
    assert_eq!(row.state, NodeState::Left);
    assert_eq!(cluster.master().time_until_dead(node_id(1).as_str()), None);
    assert!(node.leave().await.is_err(), "only once");
    tokio::time::sleep(cluster.config.detection_bound() * 2).await;
    let words: Vec<_> = cluster
        .master_events
        .node_events()
        .iter()
        .map(|e| e.change.as_str())
        .collect();
    assert_eq!(words, ["joined", "joined", "left"]);
    assert!(errors(&cluster).is_empty());
}

#[tokio::test(start_paused = true)]
async fn time_until_dead_counts_down_to_the_dead_event() {
    let mut cluster = Cluster::start(20, HeartbeatConfig::default(), 2).await;
    let bound = cluster.config.detection_bound();
    // Just after a round's probes were answered.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let left = cluster
        .master()
        .time_until_dead(node_id(0).as_str())
        .unwrap();
    assert!(
        left <= bound && left > bound - cluster.config.probe_interval,
        "{left:?}"
    );
    let died = cluster.kill(0);
    let predicted = died
        + cluster
            .master()
            .time_until_dead(node_id(0).as_str())
            .unwrap();
    tokio::time::sleep(bound + Duration::from_secs(1)).await;
    let dead = cluster.master_events.changes("dead");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].at <= predicted,
        "dead at {:?}, predicted {:?}",
        dead[0].at - died,
        predicted - died
    );
    let Change::Dead(evidence) = dead[0].change else {
        unreachable!()
    };
    assert_eq!((evidence.failures, evidence.threshold), (4, 3));
    assert_eq!(cluster.master().time_until_dead(node_id(0).as_str()), None);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_master_reports_the_stall_and_kills_nobody() {
    let cluster = Cluster::start(21, HeartbeatConfig::default(), 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The runtime freezes for 7 s: every timer fires late at once.
    tokio::time::advance(Duration::from_secs(7)).await;
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    let stalls: Vec<_> = cluster
        .master_events
        .snapshot()
        .into_iter()
        .filter(|e| matches!(e, MasterEvent::Stalled(_)))
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    let MasterEvent::Stalled(stall) = &stalls[0] else {
        unreachable!()
    };
    assert!(stall.drift > cluster.config.probe_interval);
    assert_undisturbed(&cluster, 3).await;
}
