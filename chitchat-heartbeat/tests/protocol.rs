//! Misbehaving peers and identity conflicts, on the in-memory network under paused
//! time: each test drives the master or a node with raw bytes or conflicting nodes,
//! and checks the typed error, what was closed, and that nobody else noticed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chitchat_core::{Addr, ConnError};
use chitchat_heartbeat::wire::{WireError, WireField};
use chitchat_heartbeat::{
    Body, Change, ClusterId, HeartbeatConfig, MasterError, MasterEvent, MemberStatus, Message,
    Metadata, Node, NodeError, NodeId, NodeState, RefuseReason, RegisterError,
};
use chitchat_testkit::Host;
use common::*;

fn line(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

/// A `register` of `node` at `incarnation` from `host`, probe port 7001.
fn register(host: &Host, node: &str, incarnation: u64, seq: u64) -> Message {
    let addr = SocketAddr::new(host.ip(), 7001);
    message(node, incarnation, 0, seq, register_body(addr))
}

#[tokio::test(start_paused = true)]
async fn invalid_messages_get_a_typed_error_and_only_their_connection_closes() {
    let cluster = Cluster::start(10, HeartbeatConfig::default(), 3).await;
    let host = outsider(&cluster, 1);
    let cases = [
        ("hello", WireError::BadMagic),
        (
            "CHB 1 register default n 1 1 10.9.0.1:7001",
            WireError::OldVersion { version: 1 },
        ),
        (
            "CHB 3 register default n 1 1 1 10.9.0.1:7001 -",
            WireError::UnknownVersion { version: 3 },
        ),
        (
            "CHB 2 register default n x 0 1 10.9.0.1:7001 -",
            WireError::Malformed {
                field: WireField::Incarnation,
            },
        ),
        (
            "CHB 2 register default n 1 0 1 nowhere -",
            WireError::Malformed {
                field: WireField::Addr,
            },
        ),
        (
            "CHB 2 hello default n 1 0 1 -",
            WireError::UnknownType {
                name: "hello".into(),
            },
        ),
    ];
    for (frame, expected) in &cases {
        let mut peer = raw(&host, master_addr()).await;
        let local = peer.local_addr();
        assert_eq!(
            exchange(&mut peer, &line(frame)).await,
            None,
            "closed: {frame}"
        );
        let (rest, end) = peer.read_to_end().await;
        assert!(rest.is_empty() && end.is_ok(), "orderly close: {frame}");
        settle().await;
        assert_eq!(
            errors(&cluster).last(),
            Some(&MasterError::Wire {
                peer: local,
                source: expected.clone()
            })
        );
    }
    assert_eq!(errors(&cluster).len(), cases.len());
    let MasterError::Wire { peer, .. } = &errors(&cluster)[1] else {
        unreachable!()
    };
    assert_eq!(
        errors(&cluster)[1].to_string(),
        format!(
            "invalid message from {peer}: message of protocol version 1, older than this \
             side's 2: upgrade the peer"
        )
    );
    assert_eq!(
        cluster.master().stats().rejected_invalid,
        cases.len() as u64
    );
    assert_undisturbed(&cluster, 3).await;
}

#[tokio::test(start_paused = true)]
async fn an_oversized_frame_is_an_engine_error_naming_the_peer() {
    let cluster = Cluster::start(11, HeartbeatConfig::default(), 2).await;
    let mut peer = raw(&outsider(&cluster, 1), master_addr()).await;
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
    let mut peer = raw(&outsider(&cluster, 1), master_addr()).await;
    let local = peer.local_addr();
    let probe = line("CHB 2 probe default n 1 0 1 -");
    assert_eq!(exchange(&mut peer, &probe).await, None);
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
async fn a_node_of_another_cluster_is_refused_for_good() {
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
    settle().await;
    assert_eq!(events.words(), ["refused"]);
    events.finish().await;
    assert_eq!(
        cluster.master().stats().refused(RefuseReason::WrongCluster),
        1
    );
    assert_undisturbed(&cluster, 2).await;
}

#[tokio::test(start_paused = true)]
async fn registering_twice_is_acknowledged_twice_and_joins_once() {
    let cluster = Cluster::start(14, HeartbeatConfig::default(), 1).await;
    let host = outsider(&cluster, 2);
    // A probe server for the raw node, so that its probes succeed.
    let node = Node::builder(NodeId::new("twice").unwrap(), master_addr())
        .listen(SocketAddr::new(host.ip(), 7001))
        .incarnation(5)
        .start(&host, host.clone())
        .await
        .unwrap();
    assert_eq!(node.registered().await, MemberStatus::Registered);
    let mut peer = raw(&host, master_addr()).await;
    let epoch = cluster.master().epoch();
    for seq in [10, 11] {
        let mut message = register(&host, "twice", 5, seq);
        if let Body::Register { metadata, .. } = &mut message.body {
            metadata.insert("role", "x").unwrap();
        }
        let ack = exchange(&mut peer, &frame(&message, None)).await.unwrap();
        assert_eq!(
            ack,
            format!("CHB 2 register-ack default twice 5 {epoch} {seq} -")
        );
    }
    let joined: Vec<_> = cluster
        .master_events
        .joins()
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
async fn a_second_process_with_the_same_id_and_run_renews_its_incarnation() {
    let cluster = Cluster::start(15, HeartbeatConfig::default(), 2).await;
    // A round, so that node 0 knows its master's probe connection.
    tokio::time::sleep(cluster.config.probe_interval + Duration::from_millis(100)).await;
    // Node 0's id and incarnation, from another host.
    let host = outsider(&cluster, 3);
    let twin = Node::builder(node_id(0), master_addr())
        .listen(SocketAddr::new(host.ip(), NODE_PORT))
        .incarnation(1)
        .start(&host, host.clone())
        .await
        .unwrap();
    let events = Recorder::new(twin.events());
    assert_eq!(twin.registered().await, MemberStatus::Registered);
    settle().await;
    let [MasterError::Refused { peer, source }, ..] = &errors(&cluster)[..] else {
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
    // Refused, it did not give up: a new incarnation, and it is in.
    assert_eq!(events.words(), ["refused", "renewed", "registered"]);
    assert!(twin.incarnation() > 1);
    let row = cluster.master().node(node_id(0).as_str()).unwrap();
    assert_eq!((row.addr, row.incarnation), (claimed, twin.incarnation()));
    // Neither process stops: two live processes with one id keep taking it from
    // each other, and the master's events show it.
    tokio::time::sleep(cluster.config.probe_interval * 3).await;
    assert_eq!(twin.status(), MemberStatus::Registered);
    assert_ne!(
        cluster.nodes[0].as_ref().unwrap().status(),
        MemberStatus::Stopped
    );
    assert!(cluster.node_events[0].words().contains(&"renewed"));
}

#[tokio::test(start_paused = true)]
async fn a_node_restarted_on_another_host_replaces_its_crashed_run() {
    let mut cluster = Cluster::start(16, HeartbeatConfig::default(), 2).await;
    cluster.kill(0);
    let host = outsider(&cluster, 4);
    let new_run = Node::builder(node_id(0), master_addr())
        .listen(SocketAddr::new(host.ip(), NODE_PORT))
        .incarnation(2)
        .start(&host, host.clone())
        .await
        .unwrap();
    assert_eq!(new_run.registered().await, MemberStatus::Registered);
    let replaced = cluster.master_events.joins();
    assert_eq!(
        replaced.last().unwrap().change,
        Change::Joined { replaced: Some(1) }
    );
    let rows = cluster.master().snapshot();
    assert_eq!(rows.len(), 2, "never two entries for one id");
    assert_eq!(rows[0].incarnation, 2);
    assert_eq!(rows[0].addr, new_run.local_addr());
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    assert_eq!(
        cluster.master().node(node_id(0).as_str()).unwrap().state,
        NodeState::Alive
    );
    assert!(errors(&cluster).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_node_answers_only_probes_of_itself_and_closes_on_garbage() {
    let cluster = Cluster::start(17, HeartbeatConfig::default(), 1).await;
    let node_addr: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    let host = outsider(&cluster, 5);
    for probe in [
        "CHB 2 probe default someone-else 1 9 77 -",
        "CHB 2 probe default node-0000 2 9 77 -",
    ] {
        let mut peer = raw(&host, node_addr).await;
        // Nothing comes back: not the node's id, not its incarnation.
        assert_eq!(exchange(&mut peer, &line(probe)).await, None, "{probe}");
        let (rest, _) = peer.read_to_end().await;
        assert!(rest.is_empty());
        let local = peer.local_addr();
        assert_eq!(
            node_errors(&cluster.node_events[0]).last(),
            Some(&NodeError::NotThisNode { peer: local })
        );
    }
    let mut peer = raw(&host, node_addr).await;
    let local = peer.local_addr();
    assert_eq!(exchange(&mut peer, &line("CHB 9 probe")).await, None);
    assert_eq!(
        node_errors(&cluster.node_events[0]).last(),
        Some(&NodeError::Wire {
            peer: local,
            source: WireError::UnknownVersion { version: 9 }
        })
    );
    assert_undisturbed(&cluster, 1).await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_from_another_node_counts_as_a_failure() {
    // Foreign probe addresses allowed, so that "ghost" can claim node 0's.
    let mut config = HeartbeatConfig::default();
    config.allow_foreign_probe_addrs = true;
    let cluster = Cluster::start(18, config, 1).await;
    let host = outsider(&cluster, 6);
    let mut peer = raw(&host, master_addr()).await;
    let mut ghost = register(&host, "ghost", 1, 1);
    ghost.body = Body::Register {
        addr: SocketAddr::new(node_ip(0), NODE_PORT).into(),
        metadata: Metadata::new(),
    };
    let ack = exchange(&mut peer, &frame(&ghost, None)).await.unwrap();
    assert!(ack.starts_with(b"CHB 2 register-ack default ghost 1 "));
    let registered = now();
    tokio::time::sleep(cluster.config.detection_bound() + cluster.config.probe_interval).await;
    let dead = cluster.master_events.deaths();
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
    let dead = cluster.master_events.deaths();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].at <= predicted,
        "dead at {:?}, predicted {:?}",
        dead[0].at - died,
        predicted - died
    );
    let Change::Dead { evidence } = dead[0].change else {
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
