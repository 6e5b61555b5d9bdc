//! The two roles over real loopback TCP (127.0.0.1 only), in one process, with
//! short intervals: a stopped node is declared Dead within the bound, and its
//! restart (a new incarnation on the same address) brings it back.

use std::time::{Duration, Instant};

use chitchat_core::Addr;
use chitchat_heartbeat::{
    Change, HeartbeatConfig, Master, MasterEvent, MemberStatus, Node, NodeId, NodeState,
};
use chitchat_tokio::Tcp;
use futures::StreamExt;

fn config() -> HeartbeatConfig {
    let mut config = HeartbeatConfig::default();
    config.probe_interval = Duration::from_millis(200);
    config.probe_timeout = Duration::from_millis(150);
    config.max_failures = 3;
    config.master_timeout = Duration::from_millis(700);
    config
}

async fn start_node(master: Addr, id: &str, listen: Addr) -> Node {
    Node::builder(NodeId::new(id).unwrap(), master)
        .listen(listen)
        .config(config())
        .start(&Tcp, Tcp)
        .await
        .expect("node binds")
}

/// Reads events until one satisfies `pick`, for at most `limit`.
async fn wait_for(
    events: &mut chitchat_heartbeat::Events<MasterEvent>,
    limit: Duration,
    mut pick: impl FnMut(&MasterEvent) -> bool,
) -> MasterEvent {
    tokio::time::timeout(limit, async {
        loop {
            let event = events.next().await.expect("stream open");
            if pick(&event) {
                return event;
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_is_dead_within_the_bound_and_its_restart_recovers_it() {
    let loopback: Addr = "127.0.0.1:0".parse().unwrap();
    let master = Master::builder(loopback)
        .config(config())
        .start(&Tcp, Tcp)
        .await
        .expect("master binds");
    let mut events = master.events();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let node = start_node(master.local_addr(), &format!("node-{i}"), loopback).await;
        assert_eq!(node.registered().await, MemberStatus::Registered);
        nodes.push(node);
    }
    // Let a few rounds of probes succeed.
    tokio::time::sleep(config().probe_interval * 3).await;
    assert!(master
        .snapshot()
        .iter()
        .all(|row| row.state == NodeState::Alive && row.last_rtt.is_some()));

    let victim = nodes.remove(2);
    let addr = victim.local_addr();
    let old_incarnation = victim.incarnation();
    victim.stop().await;
    let stopped = Instant::now();
    let bound = config().detection_bound();
    let dead = wait_for(&mut events, bound * 3, |e| {
        e.as_change()
            .is_some_and(|e| matches!(e.change, Change::Dead { .. }))
    })
    .await;
    let dead = dead.as_change().unwrap();
    let latency = dead.at.saturating_duration_since(stopped);
    println!("detected after {latency:?} (bound {bound:?})");
    assert_eq!(dead.node, "node-2");
    // Timers on a busy machine may run a little late: allow one scheduling slack.
    assert!(latency <= bound + Duration::from_millis(100), "{latency:?}");

    // Restart on the same address: a new run, a greater incarnation.
    let restarted = start_node(master.local_addr(), "node-2", addr).await;
    assert!(restarted.incarnation() > old_incarnation);
    assert_eq!(restarted.registered().await, MemberStatus::Registered);
    let back = wait_for(&mut events, bound, |e| {
        e.as_change().is_some_and(|e| e.node == "node-2")
    })
    .await;
    let back = back.as_change().unwrap();
    assert_eq!(back.node, "node-2");
    assert_eq!(
        back.change,
        Change::Alive {
            from: NodeState::Dead
        }
    );
    tokio::time::sleep(config().probe_interval * 3).await;
    let rows = master.snapshot();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|row| row.state == NodeState::Alive),
        "{rows:?}"
    );
    assert_eq!(rows[2].incarnation, restarted.incarnation());

    restarted.leave().await.expect("master reachable");
    assert_eq!(master.node("node-2").unwrap().state, NodeState::Left);
    for node in &nodes {
        node.stop().await;
    }
    master.shutdown().await;
    // Shut down means the port is free.
    let again = Master::builder(master.local_addr())
        .config(config())
        .start(&Tcp, Tcp)
        .await
        .expect("address free after shutdown");
    again.shutdown().await;
    // The stream of the stopped master ends after its last events.
    let rest = tokio::time::timeout(Duration::from_secs(1), events.collect::<Vec<_>>()).await;
    assert!(rest.is_ok(), "event stream ended");
}
