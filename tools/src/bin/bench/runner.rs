//! How bench runs one measurement: a server and `loadgen` as child processes,
//! pinned to their cores, every child bounded by a deadline and killed when the
//! run ends; and iperf3 over loopback for the ceiling of the machine.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::scenarios::Scenario;

/// How long a server may take to print `listening on ADDR`.
pub const SERVER_START: Duration = Duration::from_secs(10);

/// Slack on top of a loadgen run's own bound (warm-up, duration, its 5 s drain),
/// before the run is killed and counted as failed.
pub const RUN_SLACK: Duration = Duration::from_secs(30);

/// Settings of this run, after `--quick` and the defaults.
pub struct Plan {
    pub reps: usize,
    pub duration: f64,
    pub warmup: f64,
    pub idle_clients: usize,
    pub bin_dir: PathBuf,
    pub target_dir: PathBuf,
    pub workspace: PathBuf,
    /// `taskset -c` core lists for the server and loadgen, or `None` without
    /// taskset.
    pub pin: Option<(String, String)>,
}

impl Plan {
    pub fn command(&self, program: &Path, core_of_loadgen: bool, same_core: bool) -> Command {
        match &self.pin {
            Some((server, loadgen)) => {
                let core = if core_of_loadgen && !same_core {
                    loadgen
                } else {
                    server
                };
                let mut command = Command::new("taskset");
                command.arg("-c").arg(core).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

/// One loadgen run against one server.
pub struct Run {
    pub scenario: &'static str,
    pub server: &'static str,
    pub rep: usize,
    /// loadgen's final JSON line, when it printed one.
    pub result: Option<Value>,
    /// Why the run does not count, if it does not.
    pub failure: Option<String>,
}

impl Run {
    pub fn value(&self, field: &str) -> Option<f64> {
        if self.failure.is_some() {
            return None;
        }
        self.result.as_ref()?.get(field)?.as_f64()
    }
}

/// Reads a child's stdout on a thread: the first line comes back on the channel
/// (for `listening on ADDR`), and the rest is collected so the child never blocks.
pub fn read_lines(child: &mut Child) -> (mpsc::Receiver<String>, thread::JoinHandle<String>) {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, reader)
}

/// Waits for `child` until `deadline`; kills it past that.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a child and reaps it.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run_one(plan: &Plan, scenario: &Scenario, server: &'static str, rep: usize) -> Run {
    let mut run = Run {
        scenario: scenario.key,
        server,
        rep,
        result: None,
        failure: None,
    };
    if let Err(err) = measure(plan, scenario, server, &mut run) {
        run.failure = Some(format!("{err:#}"));
    }
    run
}

pub fn measure(
    plan: &Plan,
    scenario: &Scenario,
    server: &str,
    run: &mut Run,
) -> anyhow::Result<()> {
    let mut child = plan
        .command(&plan.bin_dir.join(server), false, scenario.same_core)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {server}"))?;
    let (lines, _reader) = read_lines(&mut child);
    let first = lines.recv_timeout(SERVER_START);
    let addr = match first
        .as_deref()
        .ok()
        .and_then(|l| l.strip_prefix("listening on "))
    {
        Some(addr) => addr.to_owned(),
        None => {
            stop(child);
            bail!("{server} did not print `listening on ADDR`: {first:?}");
        }
    };
    let mut loadgen = plan.command(&plan.bin_dir.join("loadgen"), true, scenario.same_core);
    loadgen
        .args(["--addr", &addr, "--mode", scenario.mode])
        .args(["--clients", &scenario.clients.to_string()])
        .args(["--size", &scenario.size.to_string()])
        .args(["--depth", &scenario.depth.to_string()])
        .args(["--duration", &plan.duration.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--server-pid", &child.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let bound = Duration::from_secs_f64(plan.duration + plan.warmup)
        + RUN_SLACK
        + if scenario.mode == "idle" {
            Duration::from_secs(60)
        } else {
            Duration::ZERO
        };
    let outcome = (|| {
        let mut gen = loadgen.spawn().context("cannot start loadgen")?;
        let (_, reader) = read_lines(&mut gen);
        let mut stderr = gen.stderr.take().expect("stderr piped");
        let err_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let status = wait_until(&mut gen, Instant::now() + bound);
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let json = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str::<Value>(line).ok());
        anyhow::Ok((status, json, stderr))
    })();
    stop(child);
    let (status, json, stderr) = outcome?;
    run.result = json;
    match status {
        None => bail!("loadgen did not finish within {bound:?}"),
        Some(status) if !status.success() => {
            let why = run
                .result
                .as_ref()
                .and_then(|v| v.get("first_error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| stderr.trim().to_owned());
            bail!("loadgen failed ({status}): {why}")
        }
        Some(_) if run.result.is_none() => bail!("loadgen printed no JSON line"),
        Some(_) => Ok(()),
    }
}

pub fn describe(scenario: &Scenario, run: &Run) -> String {
    let head = format!(
        "{:<22} {:<16} rep {}",
        scenario.key,
        run.server,
        run.rep + 1
    );
    if let Some(failure) = &run.failure {
        return format!("{head}: FAILED: {failure}");
    }
    if scenario.mode == "idle" {
        format!(
            "{head}: {:.0} B/conn",
            run.value("rss_per_conn_bytes").unwrap_or(f64::NAN)
        )
    } else {
        format!(
            "{head}: {:>10.0} frames/s  p99 {:>8.1} µs  cpu (wait) server {:>3.0} ({:>3.0}) % \
             loadgen {:>3.0} ({:>3.0}) %",
            run.value("frames_per_sec").unwrap_or(f64::NAN),
            run.value("p99_us").unwrap_or(f64::NAN),
            run.value("server_cpu").unwrap_or(f64::NAN) * 100.0,
            run.value("server_wait").unwrap_or(f64::NAN) * 100.0,
            run.value("loadgen_cpu").unwrap_or(f64::NAN) * 100.0,
            run.value("loadgen_wait").unwrap_or(f64::NAN) * 100.0,
        )
    }
}

/// iperf3 over loopback, pinned like the servers: median Gbit/s of `plan.reps`.
pub fn run_iperf(plan: &Plan) -> Option<IperfResult> {
    let iperf = Path::new("iperf3");
    if Command::new(iperf).arg("--version").output().is_err() {
        eprintln!("iperf3 not installed: skipped (Debian: apt-get install iperf3)");
        return None;
    }
    let mut gbits = Vec::new();
    for _ in 0..plan.reps {
        // A free port: bind port 0, note it, let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let mut server = plan
            .command(iperf, false, false)
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let (lines, _reader) = read_lines(&mut server);
        let deadline = Instant::now() + SERVER_START;
        while Instant::now() < deadline {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("listening") => break,
                _ => {}
            }
        }
        let output = plan
            .command(iperf, true, false)
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J"])
            .args(["-t", &format!("{}", plan.duration.max(1.0).round())])
            .stderr(Stdio::null())
            .output();
        stop(server);
        let bits = output
            .ok()
            .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
            .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64());
        if let Some(bits) = bits {
            gbits.push(bits / 1e9);
        }
    }
    eprintln!("iperf3: {gbits:.2?} Gbit/s");
    Some(IperfResult {
        median_gbits: median(&gbits)?,
        runs: gbits.len(),
    })
}

pub struct IperfResult {
    pub median_gbits: f64,
    pub runs: usize,
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}
