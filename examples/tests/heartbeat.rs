//! The `heartbeat` binary as a black box, on loopback: the demo, and the master and
//! node processes of multi-process mode, killed with `kill -9`, paused with SIGSTOP,
//! restarted, run with two masters, and attacked with forged registrations. Every
//! wait is bounded, and a child still running when a test ends is killed.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{poll_until, Proc, TIMEOUT};

const HEARTBEAT: &str = env!("CARGO_BIN_EXE_heartbeat");

/// Short timings for multi-process tests: probe every 200 ms, 150 ms timeout, dead
/// at the 3rd failure in a row, master lost after 1.5 s without a probe.
const TIMING: [&str; 8] = [
    "--probe-interval-ms",
    "200",
    "--probe-timeout-ms",
    "150",
    "--max-failures",
    "2",
    "--master-timeout-ms",
    "1500",
];

/// `probe_interval × (max_failures + 1) + probe_timeout` for [`TIMING`].
const BOUND: Duration = Duration::from_millis(200 * 3 + 150);
/// `master_timeout` of [`TIMING`].
const MASTER_TIMEOUT: Duration = Duration::from_millis(1500);
/// `probe_interval` of [`TIMING`].
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Added to a protocol bound when the test measures it from outside: the start of
/// the processes, the pipe from the child, the 10 ms polling here, and a machine
/// busy with other builds. The demo measures its latency itself, with the same
/// slack for its own scheduling.
const SLACK: Duration = Duration::from_millis(500);

/// The words an event line may carry.
const STATES: [&str; 9] = [
    "joined",
    "suspect",
    "alive",
    "dead",
    "left",
    "forgotten",
    "renewed",
    "master-lost",
    "master-back",
];

/// The `heartbeat` roles and their events, on top of the shared process handle.
impl Proc {
    fn spawn_heartbeat(args: &[&str]) -> Proc {
        Proc::spawn(HEARTBEAT, args, None)
    }

    /// `heartbeat master --listen ADDR` with [`TIMING`] and `extra`; returns its
    /// address.
    fn master_with(listen: &str, extra: &[&str]) -> (Proc, SocketAddr) {
        let mut args = vec!["master", "--listen", listen];
        args.extend(TIMING);
        args.extend(extra);
        let master = Proc::spawn_heartbeat(&args);
        let addr = master.listening();
        (master, addr)
    }

    fn master(listen: &str) -> (Proc, SocketAddr) {
        Proc::master_with(listen, &[])
    }

    /// `heartbeat node --id ID` of the masters at `masters`, with [`TIMING`] and
    /// `extra`.
    fn node_of(id: &str, masters: &[SocketAddr], extra: &[&str]) -> Proc {
        let masters: Vec<String> = masters.iter().map(SocketAddr::to_string).collect();
        let mut args = vec!["node", "--listen", "127.0.0.1:0", "--id", id];
        for master in &masters {
            args.extend(["--master", master.as_str()]);
        }
        args.extend(TIMING);
        args.extend(extra);
        let node = Proc::spawn_heartbeat(&args);
        node.listening();
        node
    }

    fn node(id: &str, master: SocketAddr, extra: &[&str]) -> Proc {
        Proc::node_of(id, &[master], extra)
    }

    /// Waits for a line numbered `from` or later that equals `line` up to ` at_ms=`;
    /// returns its number. Panics after `within`.
    fn wait_event(&self, from: usize, node: &str, state: &str, within: Duration) -> usize {
        let prefix = format!("event node={node} state={state} at_ms=");
        poll_until(
            within,
            || {
                let lines = self.lines();
                let i = (from..lines.len()).find(|&i| lines[i].starts_with(&prefix))?;
                check_event_line(&lines[i]);
                Some(i)
            },
            || {
                format!(
                    "no {prefix:?}; stdout:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                )
            },
        )
    }

    /// `kill -9`: the process vanishes without a word, its sockets closed by the
    /// kernel. Returns when it is gone.
    fn kill_9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(TIMEOUT);
    }
}

/// Checks `event node=<id> state=<word> at_ms=<ms>` exactly (a node's line may add
/// ` master=<addr>`); returns the three.
fn check_event_line(line: &str) -> (String, String, u64) {
    let fields: Vec<&str> = line.split(' ').collect();
    let (event, node, state, at_ms) = match fields[..] {
        [event, node, state, at_ms] => (event, node, state, at_ms),
        [event, node, state, at_ms, master] => {
            let master = master.strip_prefix("master=").expect(line);
            master.parse::<SocketAddr>().expect(line);
            (event, node, state, at_ms)
        }
        _ => panic!("not four or five fields: {line:?}"),
    };
    assert_eq!(event, "event", "{line:?}");
    let node = node.strip_prefix("node=").expect(line);
    let state = state.strip_prefix("state=").expect(line);
    let at_ms = at_ms.strip_prefix("at_ms=").expect(line);
    assert!(!node.is_empty(), "{line:?}");
    assert!(STATES.contains(&state), "unknown state in {line:?}");
    let at_ms = at_ms.parse().unwrap_or_else(|_| panic!("{line:?}"));
    (node.to_owned(), state.to_owned(), at_ms)
}

/// The `key=value` fields of a summary line.
fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split(' ')
        .skip(1)
        .map(|field| field.split_once('=').expect(line))
        .collect()
}

#[test]
fn demo_runs_alone_and_shows_the_stopped_node_dead_then_back() {
    let started = Instant::now();
    let mut demo = Proc::spawn_heartbeat(&[]);
    let status = demo.wait_exit(Duration::from_secs(25));
    let took = started.elapsed();
    let lines = demo.lines();
    let output = lines.join("\n");
    assert!(status.success(), "{status}; stderr: {}", demo.stderr());
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // stdout is a pipe here: event lines, then the summary, nothing else.
    let (events, summary): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|line| line.starts_with("event "));
    let events: Vec<(String, String, u64)> =
        events.into_iter().map(|l| check_event_line(l)).collect();
    assert!(
        summary.iter().all(|line| line.starts_with("summary ")),
        "{output}"
    );
    let of = |node: &str| -> Vec<(&str, u64)> {
        events
            .iter()
            .filter(|(n, _, _)| n == node)
            .map(|(_, state, at)| (state.as_str(), *at))
            .collect()
    };
    for i in 1..=5 {
        let node = format!("node-{i}");
        let states: Vec<&str> = of(&node).into_iter().map(|(state, _)| state).collect();
        assert_eq!(states.first(), Some(&"joined"), "{node}: {output}");
        assert_eq!(states.last(), Some(&"left"), "{node}: {output}");
        if node != "node-3" {
            assert!(!states.contains(&"dead"), "{node}: {output}");
        }
        assert!(
            summary
                .iter()
                .any(|line| line.starts_with(&format!("summary node={node} events=joined@"))),
            "{output}"
        );
    }

    // node-3 stops at about 3 s: dead; starts again at about 8 s: alive again.
    let victim = of("node-3");
    let dead = victim
        .iter()
        .position(|&(state, at)| state == "dead" && at >= 3000)
        .unwrap_or_else(|| panic!("node-3 never dead after 3 s: {output}"));
    let (_, back_at) = victim[dead + 1..]
        .iter()
        .find(|(state, _)| *state == "alive" || *state == "joined")
        .unwrap_or_else(|| panic!("node-3 never back: {output}"));
    assert!(*back_at >= 8000, "{output}");

    let last = summary
        .iter()
        .find(|line| line.starts_with("summary stopped=node-3 "))
        .unwrap_or_else(|| panic!("no latency summary: {output}"));
    let fields = fields(last);
    let field = |key: &str| -> u64 {
        let (_, value) = fields.iter().find(|(k, _)| *k == key).expect(last);
        value.parse().expect(last)
    };
    let (latency, bound) = (field("detection_latency_ms"), field("bound_ms"));
    assert_eq!(bound, 500 * 4 + 300, "{last}");
    assert!(
        latency <= bound + millis(SLACK),
        "detected after {latency} ms: {last}"
    );
    assert_eq!(field("dead_at_ms"), victim[dead].1, "{last}");
}

#[test]
fn killed_node_is_dead_within_the_bound_and_comes_back_on_restart() {
    let (master, addr) = Proc::master("127.0.0.1:0");
    let _a = Proc::node("hb-a", addr, &[]);
    let mut b = Proc::node("hb-b", addr, &[]);
    let _c = Proc::node("hb-c", addr, &[]);
    for node in ["hb-a", "hb-b", "hb-c"] {
        master.wait_event(1, node, "joined", TIMEOUT);
    }
    // A probe round with everyone answering, so that hb-b dies after a success.
    thread::sleep(Duration::from_millis(300));

    let mark = master.lines().len();
    let killed = Instant::now();
    b.kill_9();
    let dead = master.wait_event(mark, "hb-b", "dead", BOUND + SLACK + TIMEOUT);
    let took = killed.elapsed();
    eprintln!("hb-b declared dead {took:?} after kill -9 (bound {BOUND:?})");
    assert!(
        took <= BOUND + SLACK,
        "hb-b declared dead {took:?} after kill -9; bound {BOUND:?} + slack {SLACK:?}"
    );

    // Same id, new process: a new incarnation, which the master takes back (a
    // registration after Dead is `alive`, the recovery event).
    let b = Proc::node("hb-b", addr, &[]);
    b.wait_event(1, "hb-b", "joined", TIMEOUT);
    master.wait_event(dead, "hb-b", "alive", TIMEOUT);

    // Nobody else died (a busy machine may make one Suspect for a round).
    let lines = master.lines();
    for line in &lines[1..] {
        let (node, state, _) = check_event_line(line);
        assert!(
            node == "hb-b" || state != "dead",
            "unexpected {line:?} in\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn nodes_rejoin_a_master_restarted_after_kill_9_within_a_round() {
    let (mut master, addr) = Proc::master("127.0.0.1:0");
    let nodes = [Proc::node("hb-x", addr, &[]), Proc::node("hb-y", addr, &[])];
    for (node, id) in nodes.iter().zip(["hb-x", "hb-y"]) {
        master.wait_event(1, id, "joined", TIMEOUT);
        node.wait_event(1, id, "joined", TIMEOUT);
    }
    // A round of probes, so that each node knows its master's connection.
    thread::sleep(Duration::from_millis(300));
    let marks: Vec<usize> = nodes.iter().map(|node| node.lines().len()).collect();

    master.kill_9();
    // A new master on the same port (the listener sets SO_REUSEADDR).
    let (master, again) = Proc::master(&addr.to_string());
    let restarted = Instant::now();
    assert_eq!(again, addr);
    for ((node, id), mark) in nodes.iter().zip(["hb-x", "hb-y"]).zip(marks) {
        // The old master's connections closed: each node checks in with the new
        // run at once (a second `joined`), never waiting for master_timeout.
        node.wait_event(mark, id, "joined", TIMEOUT);
        master.wait_event(1, id, "joined", TIMEOUT);
        let took = restarted.elapsed();
        eprintln!("{id} back with the restarted master {took:?} after it listened");
        assert!(
            took <= PROBE_INTERVAL * 2 + SLACK,
            "{id} back after {took:?}"
        );
    }
    for node in &nodes {
        assert!(!node.lines().iter().any(|line| line.contains("master-lost")));
    }
}

#[test]
fn node_leaves_on_sigint_or_at_the_end_of_its_duration_and_master_exits_0_on_sigterm() {
    let (mut master, addr) = Proc::master("127.0.0.1:0");
    let mut by_signal = Proc::node("hb-sig", addr, &[]);
    let mut by_time = Proc::node("hb-time", addr, &["--duration", "1"]);
    master.wait_event(1, "hb-sig", "joined", TIMEOUT);
    master.wait_event(1, "hb-time", "joined", TIMEOUT);

    by_signal.signal(libc::SIGINT);
    assert!(by_signal.wait_exit(TIMEOUT).success());
    master.wait_event(1, "hb-sig", "left", TIMEOUT);
    assert!(by_time.wait_exit(TIMEOUT).success());
    master.wait_event(1, "hb-time", "left", TIMEOUT);

    master.signal(libc::SIGTERM);
    let status = master.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}; stderr: {}", master.stderr());
}

#[test]
fn master_names_the_address_it_cannot_listen_on() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut master = Proc::spawn_heartbeat(&["master", "--listen", &addr]);
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let stderr = master.stderr();
    assert!(
        stderr.starts_with(&format!("error: cannot listen on {addr}")),
        "{stderr}"
    );
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}

/// A key file of 32 fixed bytes in hex, unique to this test; removed on drop.
struct KeyFile(PathBuf);

impl KeyFile {
    fn new(name: &str, byte: u8) -> KeyFile {
        use std::fmt::Write as _;
        let path = std::env::temp_dir().join(format!("hb-{name}-{}.key", std::process::id()));
        let mut hex = String::new();
        for _ in 0..32 {
            let _ = write!(hex, "{byte:02x}");
        }
        std::fs::write(&path, format!("# test key\n{hex}\n")).unwrap();
        KeyFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends `line` to `addr` over a fresh connection; returns what comes back before
/// the master closes it.
fn raw_exchange(addr: SocketAddr, line: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn without_a_key_the_master_warns_and_with_one_refuses_forged_registrations() {
    let (open, _) = Proc::master("127.0.0.1:0");
    let warning = open.wait_stderr("unauthenticated");
    assert!(
        warning.starts_with("warning: heartbeat cluster default on 127.0.0.1:"),
        "{warning}"
    );
    assert_eq!(warning.lines().count(), 1, "one line: {warning}");

    let key = KeyFile::new("forged", 0x42);
    let (master, addr) = Proc::master_with("127.0.0.1:0", &["--key-file", key.arg()]);
    let node = Proc::node("hb-k", addr, &["--key-file", key.arg()]);
    master.wait_event(1, "hb-k", "joined", TIMEOUT);
    node.wait_event(1, "hb-k", "joined", TIMEOUT);
    // A plain TCP client registers a fake node, and another claims hb-k: no answer,
    // the connection closed, an error naming the peer, nobody joined.
    for line in [
        "CHB 2 register default fake 1 0 1 127.0.0.1:9 -\n",
        "CHB 2 register default hb-k 99999999999999 0 1 127.0.0.1:9 -\n",
    ] {
        assert_eq!(raw_exchange(addr, line), b"", "{line}");
    }
    let stderr = master.wait_stderr("message without a mac");
    assert!(
        stderr.contains("error: invalid message from 127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("unauthenticated"), "{stderr}");
    thread::sleep(PROBE_INTERVAL * 3);
    let lines = master.lines();
    assert!(!lines.iter().any(|line| line.contains("fake")), "{lines:?}");
    let hb_k: Vec<&String> = lines.iter().filter(|l| l.contains("hb-k")).collect();
    assert_eq!(hb_k.len(), 1, "joined once, never replaced: {lines:?}");
}

#[test]
fn a_paused_node_is_alive_within_two_rounds_of_resuming() {
    // The demo's timings, the default master timeout: the node's own clock does
    // not decide; the master's closed connection does.
    let timing = [
        "--probe-interval-ms",
        "500",
        "--probe-timeout-ms",
        "300",
        "--max-failures",
        "3",
        "--master-timeout-ms",
        "10000",
    ];
    let interval = Duration::from_millis(500);
    let mut args = vec!["master", "--listen", "127.0.0.1:0"];
    args.extend(timing);
    let master = Proc::spawn_heartbeat(&args);
    let addr = master.listening().to_string();
    let mut args = vec![
        "node",
        "--master",
        &addr,
        "--listen",
        "127.0.0.1:0",
        "--id",
        "hb-p",
    ];
    args.extend(timing);
    let node = Proc::spawn_heartbeat(&args);
    node.listening();
    master.wait_event(1, "hb-p", "joined", TIMEOUT);
    thread::sleep(interval * 2);

    let mark = master.lines().len();
    node.signal(libc::SIGSTOP);
    // Long enough to be declared dead: 4 failed probes, 2.3 s at most.
    let dead = master.wait_event(
        mark,
        "hb-p",
        "dead",
        Duration::from_millis(2300) + SLACK + TIMEOUT,
    );
    thread::sleep(Duration::from_millis(500));
    node.signal(libc::SIGCONT);
    let resumed = Instant::now();
    master.wait_event(dead, "hb-p", "alive", TIMEOUT);
    let took = resumed.elapsed();
    eprintln!("hb-p alive again {took:?} after SIGCONT (probe interval {interval:?})");
    assert!(took <= interval * 2 + SLACK, "alive again after {took:?}");
    assert!(!node.lines().iter().any(|line| line.contains("master-lost")));
}

#[test]
fn with_two_masters_killing_one_leaves_the_other_reporting_every_node() {
    let (mut a, addr_a) = Proc::master("127.0.0.1:0");
    let (b, addr_b) = Proc::master("127.0.0.1:0");
    let ids = ["hb-m1", "hb-m2", "hb-m3"];
    let nodes: Vec<Proc> = ids
        .iter()
        .map(|id| Proc::node_of(id, &[addr_a, addr_b], &[]))
        .collect();
    for id in ids {
        a.wait_event(1, id, "joined", TIMEOUT);
        b.wait_event(1, id, "joined", TIMEOUT);
    }
    thread::sleep(PROBE_INTERVAL * 2);
    let mark_b = b.lines().len();
    let marks: Vec<usize> = nodes.iter().map(|node| node.lines().len()).collect();

    a.kill_9();
    let killed = Instant::now();
    for ((node, id), mark) in nodes.iter().zip(ids).zip(&marks) {
        let lost = node.wait_event(*mark, id, "master-lost", MASTER_TIMEOUT + SLACK + TIMEOUT);
        let line = &node.lines()[lost];
        assert!(line.ends_with(&format!(" master={addr_a}")), "{line}");
    }
    eprintln!(
        "every node declared A lost {:?} after kill -9",
        killed.elapsed()
    );
    thread::sleep(PROBE_INTERVAL * 3);
    // B saw nothing at all: no suspect, no dead.
    assert_eq!(b.lines().len(), mark_b, "{:?}", &b.lines()[mark_b..]);
    for (node, mark) in nodes.iter().zip(&marks) {
        let lines = node.lines();
        let lost: Vec<&String> = lines[*mark..]
            .iter()
            .filter(|line| line.contains("master-lost"))
            .collect();
        assert_eq!(lost.len(), 1, "one master-lost, for A only: {lost:?}");
    }

    // A comes back on its port: every node registers with it within a round.
    let (a, again) = Proc::master(&addr_a.to_string());
    assert_eq!(again, addr_a);
    let restarted = Instant::now();
    for id in ids {
        a.wait_event(1, id, "joined", TIMEOUT);
    }
    let took = restarted.elapsed();
    eprintln!("every node back with A {took:?} after it listened again");
    assert!(took <= PROBE_INTERVAL * 2 + SLACK, "{took:?}");
}

#[test]
fn a_dead_node_is_forgotten_after_forget_after() {
    let (master, addr) = Proc::master_with("127.0.0.1:0", &["--forget-after", "1"]);
    let mut node = Proc::node("hb-f", addr, &[]);
    master.wait_event(1, "hb-f", "joined", TIMEOUT);
    node.kill_9();
    let dead = master.wait_event(1, "hb-f", "dead", BOUND + SLACK + TIMEOUT);
    master.wait_event(
        dead,
        "hb-f",
        "forgotten",
        Duration::from_secs(1) + PROBE_INTERVAL + TIMEOUT,
    );
}
