//! The chat room on the in-memory network under paused time: five members on five
//! hosts over links with latency and jitter, one of them cut off for a while and
//! plugged back in. A seed is a run: the same seed gives the same transcripts, to
//! the microsecond, and the same network trace; another seed gives another trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat_examples::chat::ChatRoom;
use chitchat_testkit::{LinkConfig, Network};
use chitchat_tokio::{Client, Server};
use futures::StreamExt;
use tokio::time::{sleep, Instant};

const SERVER: [u8; 4] = [10, 0, 0, 1];
const MEMBERS: u8 = 5;
/// The member that is cut off from the server for a while.
const CUT_OFF: usize = 3;

fn member_ip(i: usize) -> [u8; 4] {
    [10, 0, 0, 10 + i as u8]
}

/// What one run produced: each member's lines with the virtual time they arrived,
/// and the network's trace.
#[derive(Debug, PartialEq)]
struct Run {
    transcripts: Vec<Vec<(Duration, String)>>,
    trace: Vec<String>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// One chat session: members join 10 ms apart, talk over each other, one renames,
/// one is partitioned from the server for 500 ms, one quits, then everyone leaves.
async fn session(seed: u64) -> Run {
    let net = Network::new(seed);
    net.set_default_link(
        LinkConfig::default()
            .latency(Duration::from_millis(2))
            .jitter(Duration::from_millis(3)),
    );
    let server_host = net.host(SERVER);
    let server = Server::builder("10.0.0.1:7879")
        .handler(ChatRoom)
        .listen_on(&server_host)
        .await
        .unwrap();
    let start = Instant::now();

    let mut members = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..usize::from(MEMBERS) {
        let host = net.host(member_ip(i));
        let mut client = Client::builder(server.local_addr())
            .connect_with(&host)
            .await
            .unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (sink, peers) = (heard.clone(), client.peers());
        listeners.push(heard);
        // Each member hears on its own task; its handle writes for the script.
        tokio::spawn(async move {
            while let Some(line) = client.next().await {
                let text = String::from_utf8_lossy(&line).into_owned();
                sink.lock().unwrap().push((start.elapsed(), text));
            }
            drop(client);
        });
        members.push(peers);
        sleep(Duration::from_millis(10)).await;
    }
    let server_addr = server.local_addr();
    let say = |i: usize, line: &str| {
        let _ = members[i].write_to(&server_addr, line.as_bytes());
    };

    say(4, "/nick eve");
    sleep(Duration::from_millis(20)).await;
    for round in 0..3 {
        for i in 0..usize::from(MEMBERS) {
            say(i, &format!("line {round} from {i}"));
            // Less than the link's delay: lines cross on the way.
            sleep(Duration::from_micros(700)).await;
        }
        if round == 0 {
            net.partition(SERVER, member_ip(CUT_OFF));
        }
        sleep(Duration::from_millis(250)).await;
    }
    net.heal(SERVER, member_ip(CUT_OFF));
    sleep(Duration::from_millis(100)).await;
    say(1, "/quit");
    sleep(Duration::from_millis(100)).await;
    for i in (0..usize::from(MEMBERS)).filter(|&i| i != 1) {
        let _ = members[i].close_remote(&server_addr);
    }
    sleep(Duration::from_millis(100)).await;
    server.cut().await;

    Run {
        transcripts: listeners
            .iter()
            .map(|heard| heard.lock().unwrap().clone())
            .collect(),
        trace: net.trace().iter().map(ToString::to_string).collect(),
    }
}

fn run(seed: u64) -> Run {
    runtime().block_on(session(seed))
}

#[test]
fn one_seed_gives_the_same_transcripts_and_trace_every_time() {
    let first = run(7);
    for _ in 1..20 {
        assert_eq!(run(7), first, "a run with the same seed differed");
    }
    let other = run(8);
    assert_ne!(other.trace, first.trace, "another seed, another network");
}

#[test]
fn the_room_works_across_latency_jitter_and_a_partition() {
    let Run { transcripts, .. } = run(7);
    let lines =
        |i: usize| -> Vec<&str> { transcripts[i].iter().map(|(_, l)| l.as_str()).collect() };
    // Everyone hears every line of the others, in each sender's order, the cut-off
    // member included once the partition heals.
    for listener in 0..usize::from(MEMBERS) {
        let heard = lines(listener);
        for speaker in (0..usize::from(MEMBERS)).filter(|&s| s != listener) {
            let name = if speaker == 4 {
                "eve".to_owned()
            } else {
                String::new()
            };
            let from: Vec<&&str> = heard
                .iter()
                .filter(|l| l.ends_with(&format!(" from {speaker}")))
                .collect();
            assert_eq!(from.len(), 3, "member {listener} heard {heard:?}");
            if !name.is_empty() {
                assert!(from.iter().all(|l| l.starts_with("eve: ")), "{from:?}");
            }
            for (round, line) in from.iter().enumerate() {
                assert!(
                    line.ends_with(&format!("line {round} from {speaker}")),
                    "{from:?}"
                );
            }
        }
    }
    // The one who quits gets a goodbye; the others hear of it within 100 ms.
    let quitter = &transcripts[1];
    let bye_at = quitter
        .iter()
        .find(|(_, l)| l == "* bye")
        .expect("a goodbye")
        .0;
    for listener in [0, 2, 3, 4] {
        let left = transcripts[listener]
            .iter()
            .find(|(_, l)| l.ends_with(" left") && l.starts_with("* 10.0.0.11:"))
            .unwrap_or_else(|| panic!("member {listener} heard no leave: {:?}", lines(listener)));
        assert!(
            left.0 <= bye_at + Duration::from_millis(100),
            "{left:?} after bye at {bye_at:?}"
        );
    }
}
