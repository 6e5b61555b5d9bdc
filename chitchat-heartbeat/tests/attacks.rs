//! Attacks on the heartbeat, each played on the in-memory network under paused time
//! by a peer that speaks the protocol with raw bytes: forged, replayed or spoofed
//! identities, reflection, floods and trickles, and the recovery of a node that was
//! paused or lost a master. Each test checks the typed refusal, and that the honest
//! nodes and the table are unharmed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat_core::{Addr, ConnError};
use chitchat_heartbeat::wire::WireError;
use chitchat_heartbeat::{
    AddrError, Body, Change, HeartbeatConfig, Key, Keyring, LeaveRefused, Master, MasterError,
    MemberStatus, Node, NodeError, NodeEvent, NodeId, NodeState, RefuseReason, RegisterError,
};
use chitchat_testkit::RawPeer;
use chitchat_testkit::TraceEvent;
use common::*;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(start_paused = true)]
async fn with_a_key_forged_registrations_leaves_and_zombies_change_nothing() {
    let mut cluster = Cluster::start(30, keyed(HeartbeatConfig::default()), 3).await;
    let host = outsider(&cluster, 1);
    let wrong = Keyring::single(Key::new(&[0x11; 32]).unwrap());
    let own: Addr = SocketAddr::new(host.ip(), 7001).into();
    // Hijack: node 0's id, a newer run, the attacker's address; unsigned, then
    // signed with another key.
    let hijack = message("node-0000", 2, 0, 1, register_body(own));
    // Spoofed leave of node 1 at its own incarnation.
    let leave = message("node-0001", 1, 0, 7, Body::Leave);
    for (frame, expected) in [
        (frame(&hijack, None), WireError::Unauthenticated),
        (frame(&hijack, Some(&wrong)), WireError::BadMac),
        (frame(&leave, None), WireError::Unauthenticated),
    ] {
        let mut peer = raw(&host, master_addr()).await;
        let local = peer.local_addr();
        assert_eq!(exchange(&mut peer, &frame).await, None, "closed, no answer");
        settle().await;
        assert_eq!(
            errors(&cluster).last(),
            Some(&MasterError::Wire {
                peer: local,
                source: expected
            })
        );
    }
    assert_eq!(cluster.master().stats().rejected_unauthenticated, 3);
    assert_undisturbed(&cluster, cluster.nodes.len()).await;

    // Zombie: node 2 dies; its id registered again by the attacker stays dead.
    cluster.kill(2);
    tokio::time::sleep(cluster.config.detection_bound() + cluster.config.probe_interval).await;
    let zombie = message("node-0002", 1, 0, 9, register_body(own));
    let mut peer = raw(&host, master_addr()).await;
    assert_eq!(exchange(&mut peer, &frame(&zombie, None)).await, None);
    tokio::time::sleep(cluster.config.probe_interval * 3).await;
    assert_eq!(
        cluster.master().node("node-0002").unwrap().state,
        NodeState::Dead
    );
    assert_eq!(cluster.master().stats().rejected_unauthenticated, 4);
}

#[tokio::test(start_paused = true)]
async fn without_a_key_a_hijacked_node_takes_its_id_back_and_never_gives_up() {
    let cluster = Cluster::start(31, HeartbeatConfig::default(), 2).await;
    // A round, so that each node's probe connection is known to it.
    tokio::time::sleep(cluster.config.probe_interval + Duration::from_millis(100)).await;
    let host = outsider(&cluster, 2);
    let own: Addr = SocketAddr::new(host.ip(), 7001).into();
    // The attacker claims node 0 with a newer run at its own address (the master
    // dials no one else's): the master takes it, as it must take a restart.
    let hijack = message("node-0000", now_ms(), 0, 1, register_body(own));
    let mut peer = raw(&host, master_addr()).await;
    let ack = exchange(&mut peer, &frame(&hijack, None)).await.unwrap();
    assert!(ack.starts_with(b"CHB 2 register-ack "), "{ack:?}");
    let hijacked_at = now();

    // Its probe connection closed, node 0 checks in, is refused as stale, takes a
    // newer incarnation and registers it: the row is its own again.
    let node = cluster.nodes[0].as_ref().unwrap();
    let back = cluster
        .wait_until(
            cluster.config.probe_interval * 2,
            Duration::from_millis(10),
            |c| {
                c.master()
                    .node("node-0000")
                    .is_some_and(|row| row.addr.as_inet().unwrap().ip() == node_ip(0))
            },
        )
        .await;
    assert!(back, "node 0 took its id back");
    println!(
        "[heartbeat] refuted {:?} after the hijack",
        now() - hijacked_at
    );
    assert!(node.incarnation() > hijack.incarnation);
    assert_eq!(node.status(), MemberStatus::Registered);
    let words = cluster.node_events[0].words();
    assert_eq!(words, ["registered", "refused", "renewed"], "{words:?}");
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    let row = cluster.master().node("node-0000").unwrap();
    assert_eq!(
        (row.state, row.incarnation),
        (NodeState::Alive, node.incarnation())
    );
}

#[tokio::test(start_paused = true)]
async fn a_spoofed_leave_at_another_incarnation_changes_nothing_and_locks_nobody_out() {
    let cluster = Cluster::start(32, HeartbeatConfig::default(), 2).await;
    let host = outsider(&cluster, 3);
    for (seq, incarnation) in [(1, u64::MAX), (2, 2), (3, 0)] {
        let mut peer = raw(&host, master_addr()).await;
        let leave = message("node-0000", incarnation, 0, seq, Body::Leave);
        peer.write_all(&frame(&leave, None)).await.unwrap();
        peer.shutdown().await.unwrap();
        let _ = peer.read_to_end().await;
        settle().await;
        let local = peer.local_addr();
        assert_eq!(
            errors(&cluster).last(),
            Some(&MasterError::Leave {
                peer: local,
                source: LeaveRefused::Incarnation {
                    node: node_id(0),
                    current: 1,
                    got: incarnation
                }
            })
        );
    }
    let row = cluster.master().node("node-0000").unwrap();
    assert_eq!((row.state, row.incarnation), (NodeState::Alive, 1));
    assert_undisturbed(&cluster, cluster.nodes.len()).await;
}

#[tokio::test(start_paused = true)]
async fn an_incarnation_at_u64_max_is_refused_and_the_id_stays_free() {
    let cluster = Cluster::start(33, HeartbeatConfig::default(), 1).await;
    let host = outsider(&cluster, 4);
    let own = SocketAddr::new(host.ip(), 7001);
    let lockout = message("web-9", u64::MAX, 0, 1, register_body(own));
    let mut peer = raw(&host, master_addr()).await;
    let refuse = exchange(&mut peer, &frame(&lockout, None)).await.unwrap();
    let refuse = std::str::from_utf8(&refuse).unwrap();
    assert!(
        refuse.starts_with("CHB 2 refuse default web-9 18446744073709551615 ")
            && refuse.ends_with(" 1 too-far-ahead 0 -"),
        "{refuse}"
    );
    settle().await;
    assert!(matches!(
        errors(&cluster).last(),
        Some(MasterError::Refused {
            source: RegisterError::TooFarAhead { .. },
            ..
        })
    ));
    assert!(cluster.master().node("web-9").is_none());
    // The real web-9 starts, with a clock incarnation, and is in.
    let web9 = cluster.net.host(IpAddr::from(Ipv4Addr::new(10, 2, 0, 9)));
    let node = Node::builder(NodeId::new("web-9").unwrap(), master_addr())
        .listen(SocketAddr::new(web9.ip(), 7001))
        .start(&web9, web9.clone())
        .await
        .unwrap();
    assert_eq!(node.registered().await, MemberStatus::Registered);
}

#[tokio::test(start_paused = true)]
async fn a_squatted_id_is_taken_back_by_its_node() {
    let cluster = Cluster::start(34, HeartbeatConfig::default(), 1).await;
    let host = outsider(&cluster, 5);
    // Within the skew: four minutes ahead.
    let squat_incarnation = now_ms() + 4 * 60 * 1000;
    let squat = message(
        "web-7",
        squat_incarnation,
        0,
        1,
        register_body(SocketAddr::new(host.ip(), 7001)),
    );
    let mut peer = raw(&host, master_addr()).await;
    let ack = exchange(&mut peer, &frame(&squat, None)).await.unwrap();
    assert!(ack.starts_with(b"CHB 2 register-ack default web-7 "));
    let web7 = cluster.net.host(IpAddr::from(Ipv4Addr::new(10, 2, 0, 7)));
    let node = Node::builder(NodeId::new("web-7").unwrap(), master_addr())
        .listen(SocketAddr::new(web7.ip(), 7001))
        .start(&web7, web7.clone())
        .await
        .unwrap();
    let events = Recorder::new(node.events());
    assert_eq!(node.registered().await, MemberStatus::Registered);
    settle().await;
    assert_eq!(events.words(), ["refused", "renewed", "registered"]);
    assert!(node.incarnation() > squat_incarnation);
    let row = cluster.master().node("web-7").unwrap();
    assert_eq!(row.addr, node.local_addr());
}

#[tokio::test(start_paused = true)]
async fn with_a_key_forged_probes_keep_no_node_believing_its_master_lives() {
    let mut cluster = Cluster::start(35, keyed(HeartbeatConfig::default()), 1).await;
    let master_timeout = cluster.config.master_timeout;
    // The master is gone; an attacker probes node 0 every second, as if it were
    // the master, without the key.
    cluster.net.kill(master_ip());
    drop(cluster.master.take());
    let gone = now();
    let host = outsider(&cluster, 6);
    let node_addr: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    for seq in 1..=12u64 {
        let mut peer = raw(&host, node_addr).await;
        let probe = message("node-0000", 1, 1, 1000 + seq, Body::Probe);
        assert_eq!(exchange(&mut peer, &frame(&probe, None)).await, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let lost: Vec<_> = cluster.node_events[0]
        .snapshot()
        .into_iter()
        .filter(|e| matches!(e, NodeEvent::MasterLost { .. }))
        .collect();
    assert_eq!(lost.len(), 1, "the node noticed the silence");
    assert!(lost[0].at() - gone <= master_timeout);
    assert!(node_errors(&cluster.node_events[0])
        .iter()
        .all(|e| matches!(
            e,
            NodeError::Wire {
                source: WireError::Unauthenticated,
                ..
            }
        )));
}

#[tokio::test(start_paused = true)]
async fn a_replayed_registration_leave_or_probe_is_refused_once_seen() {
    let keys = cluster_keys();
    let cluster = Cluster::start(36, keyed(HeartbeatConfig::default()), 1).await;
    tokio::time::sleep(cluster.config.probe_interval * 3).await;
    let host = cluster.net.host(IpAddr::from(Ipv4Addr::new(10, 2, 0, 1)));
    let epoch = cluster.master().epoch();

    // A valid registration of "web-1" (a member holding the key sent it once);
    // the copy is refused, unanswered.
    let register = message(
        "web-1",
        5,
        0,
        1,
        register_body(SocketAddr::new(host.ip(), 7001)),
    );
    let bytes = frame(&register, Some(&keys));
    let mut peer = raw(&host, master_addr()).await;
    assert!(exchange(&mut peer, &bytes).await.is_some(), "ack");
    let mut copy = raw(&host, master_addr()).await;
    assert_eq!(exchange(&mut copy, &bytes).await, None);
    settle().await;
    assert!(matches!(
        errors(&cluster).last(),
        Some(MasterError::Refused {
            source: RegisterError::Replay { seq: 1, .. },
            ..
        })
    ));
    // A valid leave, then its copy after web-1 registered again.
    let leave = frame(&message("web-1", 5, epoch, 2, Body::Leave), Some(&keys));
    let mut peer = raw(&host, master_addr()).await;
    peer.write_all(&leave).await.unwrap();
    peer.shutdown().await.unwrap();
    let _ = peer.read_to_end().await;
    assert_eq!(
        cluster.master().node("web-1").unwrap().state,
        NodeState::Left
    );
    let again = message(
        "web-1",
        5,
        epoch,
        3,
        register_body(SocketAddr::new(host.ip(), 7001)),
    );
    let mut peer = raw(&host, master_addr()).await;
    assert!(exchange(&mut peer, &frame(&again, Some(&keys)))
        .await
        .is_some());
    let mut copy = raw(&host, master_addr()).await;
    copy.write_all(&leave).await.unwrap();
    copy.shutdown().await.unwrap();
    let _ = copy.read_to_end().await;
    assert_ne!(
        cluster.master().node("web-1").unwrap().state,
        NodeState::Left
    );
    assert_eq!(cluster.master().stats().rejected_replays, 2);

    // A copy of a probe node 0 has already counted (the master's first probes went
    // to it): refused, no ack.
    let node_addr: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    let probe = message("node-0000", 1, epoch, 1, Body::Probe);
    let mut peer = raw(&host, node_addr).await;
    assert_eq!(exchange(&mut peer, &frame(&probe, Some(&keys))).await, None);
    settle().await;
    assert!(matches!(
        node_errors(&cluster.node_events[0]).last(),
        Some(NodeError::Replay { seq: 1, .. })
    ));
    assert_eq!(
        cluster.nodes[0].as_ref().unwrap().stats().rejected_replays,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn registrations_naming_a_third_host_or_the_master_itself_are_refused_without_a_dial() {
    let cluster = Cluster::start(37, HeartbeatConfig::default(), 1).await;
    let host = outsider(&cluster, 7);
    let cases: [(&str, AddrError); 6] = [
        (
            "10.1.0.1:7001",
            AddrError::Foreign {
                source_ip: host.ip(),
            },
        ),
        (
            "10.0.0.1:7000",
            AddrError::Foreign {
                source_ip: host.ip(),
            },
        ),
        ("127.0.0.1:22", AddrError::Loopback),
        ("0.0.0.0:7001", AddrError::Unspecified),
        ("224.0.0.1:7001", AddrError::Multicast),
        ("255.255.255.255:7001", AddrError::Broadcast),
    ];
    cluster.net.take_trace();
    for (i, (addr, reason)) in cases.iter().enumerate() {
        let victim: Addr = addr.parse().unwrap();
        let register = message(&format!("fake-{i}"), 1, 0, 1, register_body(victim));
        let mut peer = raw(&host, master_addr()).await;
        let refuse = exchange(&mut peer, &frame(&register, None)).await.unwrap();
        assert!(refuse.ends_with(b" bad-address 0 -"), "{refuse:?}");
        settle().await;
        assert_eq!(
            errors(&cluster).last(),
            Some(&MasterError::Refused {
                peer: peer.local_addr(),
                source: RegisterError::BadAddress {
                    node: NodeId::new(format!("fake-{i}")).unwrap(),
                    addr: victim,
                    reason: *reason
                }
            })
        );
    }
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    // The master dialed no one but node 0.
    let dialed: Vec<SocketAddr> = cluster
        .net
        .trace()
        .into_iter()
        .filter_map(|entry| match entry.event {
            TraceEvent::Connect { from, to } if from.ip() == master_ip() => Some(to),
            _ => None,
        })
        .collect();
    assert!(dialed.iter().all(|to| to.ip() == node_ip(0)), "{dialed:?}");
    println!(
        "[heartbeat] {} registrations naming other hosts refused; the master dialed {} times, \
         node 0 only",
        cases.len(),
        dialed.len()
    );
    assert_eq!(
        cluster.master().stats().refused(RefuseReason::BadAddress),
        cases.len() as u64
    );
    assert_eq!(cluster.master().snapshot().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_registrations_fill_the_table_and_nothing_more() {
    let mut config = HeartbeatConfig::default();
    config.max_nodes = 2000;
    let cluster = Cluster::start(38, config, 2).await;
    let max_nodes = cluster.config.max_nodes;
    // A thousand hosts, each pipelining a hundred registrations of fresh ids on one
    // connection: 100 000 in all, within a second.
    let mut peers = Vec::new();
    for h in 0..1000u32 {
        let ip = IpAddr::from(Ipv4Addr::new(10, 70, (h / 250) as u8, (h % 250 + 1) as u8));
        let host = cluster.net.host(ip);
        let mut burst = Vec::new();
        for k in 0..100 {
            let id = format!("fake-{h}-{k}");
            let register = message(&id, 1, 0, 1, register_body(SocketAddr::new(ip, 7001)));
            burst.extend_from_slice(&frame(&register, None));
        }
        let mut peer = raw(&host, master_addr()).await;
        peer.write_all(&burst).await.unwrap();
        peers.push(peer);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = cluster.master().counts();
    assert_eq!(counts.total(), max_nodes, "{counts:?}");
    let stats = cluster.master().stats();
    println!(
        "[heartbeat] {} registrations accepted, {} refused as table-full",
        stats.registrations,
        stats.refused(RefuseReason::TableFull)
    );
    assert!(stats.refused(RefuseReason::TableFull) > 0);
    // The two honest nodes are still in, and probed.
    drop(peers);
    tokio::time::sleep(cluster.config.probe_interval * 2).await;
    for i in 0..2 {
        let row = cluster.master().node(node_id(i).as_str()).unwrap();
        assert_eq!((row.state, row.failures), (NodeState::Alive, 0));
    }
    // The fakes answer no probe: Dead within the bound, then forgotten to make room
    // for a real newcomer, the oldest first.
    tokio::time::sleep(cluster.config.detection_bound()).await;
    assert_eq!(cluster.master().counts().dead, max_nodes - 2);
    let newcomer = start_node(&cluster.net, &cluster.config, 7).await;
    assert_eq!(newcomer.registered().await, MemberStatus::Registered);
    assert_eq!(cluster.master().counts().total(), max_nodes);
}

#[tokio::test(start_paused = true)]
async fn registrations_from_one_address_are_limited_per_second() {
    let cluster = Cluster::start(39, HeartbeatConfig::default(), 1).await;
    let host = outsider(&cluster, 8);
    let mut burst = Vec::new();
    for k in 0..150 {
        let register = message(
            &format!("burst-{k}"),
            1,
            0,
            1,
            register_body(SocketAddr::new(host.ip(), 7001)),
        );
        burst.extend_from_slice(&frame(&register, None));
    }
    let mut peer = raw(&host, master_addr()).await;
    peer.write_all(&burst).await.unwrap();
    let (answers, _) = peer.read_to_end().await;
    let answers = String::from_utf8(answers.to_vec()).unwrap();
    let lines: Vec<&str> = answers.lines().collect();
    println!(
        "[heartbeat] 150 registrations in one burst from one address: {} answers",
        lines.len()
    );
    assert_eq!(lines.len(), 101, "100 acks, then one refusal and the close");
    assert!(lines[100].ends_with(" busy 0 -"), "{}", lines[100]);
    assert_eq!(cluster.master().stats().refused(RefuseReason::Busy), 1);
    assert_eq!(cluster.master().counts().total(), 101);
    // The honest node's repeats are not counted against anyone.
    assert_eq!(
        cluster.master().node("node-0000").unwrap().state,
        NodeState::Alive
    );
}

#[tokio::test(start_paused = true)]
async fn trickling_connections_on_both_ports_cost_only_themselves() {
    let cluster = Cluster::start(40, HeartbeatConfig::default(), 3).await;
    tokio::time::sleep(cluster.config.probe_interval + Duration::from_millis(100)).await;
    let node_addr: Addr = SocketAddr::new(node_ip(0), NODE_PORT).into();
    // 300 connections to the master and 80 to node 0, each sending one byte every
    // 1.5 s, reconnecting when closed, for 30 s.
    let mut trickles = tokio::task::JoinSet::new();
    for t in 0..380u32 {
        let ip = IpAddr::from(Ipv4Addr::new(10, 80, (t / 250) as u8, (t % 250 + 1) as u8));
        let host = cluster.net.host(ip);
        let target = if t < 300 { master_addr() } else { node_addr };
        trickles.spawn(async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            while tokio::time::Instant::now() < end {
                let Ok(mut peer) = RawPeer::connect(&host, &target).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                while tokio::time::Instant::now() < end {
                    if peer.write_all(b"C").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    // A newcomer joins meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = now();
    let newcomer = start_node(&cluster.net, &cluster.config, 9).await;
    assert_eq!(newcomer.registered().await, MemberStatus::Registered);
    let joined_in = now() - started;
    while trickles.join_next().await.is_some() {}
    // Nobody turned suspect, let alone dead.
    let changes: Vec<_> = cluster
        .master_events
        .node_events()
        .into_iter()
        .filter(|e| !matches!(e.change, Change::Joined { .. }))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    // The engine's errors reached the master's and node 0's event streams.
    let deadlines = |recorder: &Recorder<NodeEvent>| {
        recorder
            .snapshot()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    NodeEvent::Connection {
                        error: ConnError::FrameTimeout { .. } | ConnError::Refused { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let at_node = deadlines(&cluster.node_events[0]);
    assert!(at_node > 0);
    let stats = cluster.master().stats();
    assert_eq!(stats.rejected_invalid, 0);
    println!(
        "[heartbeat] 30 s of trickles: node 0 closed or refused {at_node} of them, the master \
         served {} registrations; no suspect, no dead; the newcomer joined {:?} after it started",
        stats.registrations, joined_in
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_long_enough_to_be_declared_dead_is_alive_within_a_round_of_returning() {
    // The node's own clock must not notice (as when its process is paused): a
    // master timeout longer than the cut.
    let mut config = HeartbeatConfig::default();
    config.master_timeout = Duration::from_secs(60);
    let cluster = Cluster::start(41, config, 2).await;
    let interval = cluster.config.probe_interval;
    // Past the first round's probes.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    cluster.net.partition(master_ip(), node_ip(0));
    tokio::time::sleep(cluster.config.detection_bound() + interval).await;
    assert_eq!(
        cluster.master().node("node-0000").unwrap().state,
        NodeState::Dead
    );
    // Back: the probes that queued up arrive, then the close of the connection
    // the master dropped when it declared the node dead.
    cluster.net.heal(master_ip(), node_ip(0));
    let healed = now();
    let alive = cluster
        .wait_until(2 * interval, Duration::from_millis(10), |c| {
            c.master().node("node-0000").unwrap().state == NodeState::Alive
        })
        .await;
    assert!(alive, "alive again within two rounds");
    println!(
        "[heartbeat] alive again {:?} after returning",
        now() - healed
    );
    // The node never thought it had lost the master.
    assert_eq!(cluster.node_events[0].words(), ["registered"]);
    assert_eq!(
        cluster.master().node("node-0001").unwrap().state,
        NodeState::Alive
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_node_checks_in_and_is_back() {
    let cluster = Cluster::start(42, HeartbeatConfig::default(), 2).await;
    // Past the first round's probes.
    tokio::time::sleep(cluster.config.probe_interval + Duration::from_millis(100)).await;
    let removed = cluster.master().remove("node-0001").unwrap();
    assert_eq!(removed.state, NodeState::Alive);
    let back = cluster
        .wait_until(
            cluster.config.probe_interval,
            Duration::from_millis(10),
            |c| c.master().node("node-0001").is_some(),
        )
        .await;
    assert!(back);
    let words: Vec<_> = cluster
        .master_events
        .node_events()
        .iter()
        .filter(|e| e.node == "node-0001")
        .map(|e| e.change.as_str())
        .collect();
    assert_eq!(words, ["joined", "forgotten", "joined"]);
}

/// Two masters and their nodes: each node registers with both.
async fn two_masters(
    net: &chitchat_testkit::Network,
    config: &HeartbeatConfig,
    n: usize,
) -> (Vec<Master>, Vec<Node>, Vec<Recorder<NodeEvent>>) {
    let addrs = [master_addr(), second_master_addr()];
    let mut masters = Vec::new();
    for addr in addrs {
        let host = net.host(addr.as_inet().unwrap().ip());
        masters.push(
            Master::builder(addr)
                .config(config.clone())
                .event_capacity(16 * n)
                .start(&host, host.clone())
                .await
                .unwrap(),
        );
    }
    let mut nodes = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let host = net.host(node_ip(i));
        let node = Node::builder(node_id(i), addrs[0])
            .master(addrs[1])
            .listen(SocketAddr::new(node_ip(i), NODE_PORT))
            .config(config.clone())
            .start(&host, host.clone())
            .await
            .unwrap();
        events.push(Recorder::new(node.events()));
        nodes.push(node);
    }
    (masters, nodes, events)
}

fn second_master_addr() -> Addr {
    SocketAddr::new(IpAddr::from(Ipv4Addr::new(10, 0, 0, 2)), MASTER_PORT).into()
}

#[tokio::test(start_paused = true)]
async fn with_two_masters_losing_one_changes_nothing_for_the_other() {
    const N: usize = 100;
    let net = chitchat_testkit::Network::new(43);
    let config = HeartbeatConfig::default();
    let (mut masters, nodes, node_events) = two_masters(&net, &config, N).await;
    let survivor = Recorder::new(masters[1].events());
    let wait = |masters: &[Master], i: usize| masters[i].counts().alive;
    tokio::time::sleep(config.probe_interval * 2).await;
    assert_eq!((wait(&masters, 0), wait(&masters, 1)), (N, N));
    for node in &nodes {
        assert_eq!(node.status(), MemberStatus::Registered);
    }

    // Master A's machine dies.
    net.kill(master_addr().as_inet().unwrap().ip());
    drop(masters.remove(0));
    let killed = now();
    tokio::time::sleep(config.master_timeout + config.probe_interval * 2).await;
    // B saw every node alive all along.
    assert_eq!(masters[0].counts().alive, N);
    let trouble: Vec<_> = survivor
        .node_events()
        .into_iter()
        .filter(|e| !matches!(e.change, Change::Joined { .. }))
        .collect();
    assert!(trouble.is_empty(), "{trouble:?}");
    // Each node lost A, once, and only A.
    for (i, recorder) in node_events.iter().enumerate() {
        let lost: Vec<_> = recorder
            .snapshot()
            .into_iter()
            .filter(|e| matches!(e, NodeEvent::MasterLost { .. }))
            .collect();
        assert_eq!(lost.len(), 1, "node {i}");
        assert_eq!(lost[0].master(), Some(master_addr()));
        assert!(lost[0].at() - killed <= config.master_timeout);
        assert_eq!(nodes[i].status(), MemberStatus::Registered, "still B's");
    }

    // A comes back: every node is in its table within a round.
    let host = net.host(master_addr().as_inet().unwrap().ip());
    let restarted = Master::builder(master_addr())
        .config(config.clone())
        .start(&host, host.clone())
        .await
        .unwrap();
    let started = now();
    let deadline = started + config.probe_interval * 2;
    while restarted.counts().alive < N && now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(restarted.counts().alive, N);
    println!(
        "[heartbeat] every node back with A {:?} after it restarted",
        now() - started
    );
    for recorder in &node_events {
        assert!(recorder.words().ends_with(&["master-lost", "master-back"]));
    }
}
