//! The benchmark suite: `echo_server` against three baseline echo servers, in the
//! same run, on the same cores, and the framer micro-benchmark, written up in
//! BENCHMARKS.md with a plot.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin bench            # about 21 minutes
//! cargo run --release -p chitchat-examples --bin bench -- --quick # about 4 minutes
//! ```
//!
//! What it does, in order:
//! 1. builds the example binaries in release (the target directory it runs from);
//! 2. for each scenario, for each repetition, runs every server in turn (the order
//!    rotates each repetition), pinned with `taskset` to core 0 and `loadgen` to
//!    core 1 (or both to core 0 for the same-core scenario, or on a one-core
//!    machine), and keeps the median of the repetitions (ratios: the median of the
//!    ratios within each repetition, so the machine's drift between repetitions
//!    cancels);
//! 3. runs `iperf3` over loopback with the same pinning, if it is installed;
//! 4. runs the criterion framer bench (`chitchat-tokio/benches/framer.rs`, first,
//!    so that a build failure shows early) and reads its estimates;
//! 5. writes the tables between the `bench:begin` and `bench:end` markers of
//!    BENCHMARKS.md (the text around them is kept), the plot to
//!    `benchmarks/frames.svg` and every single run to `benchmarks/runs.json`.
//!
//! It is a Rust binary rather than a shell script because it parses each run's
//! JSON, takes medians, draws the plot (plotters) and writes the tables: in shell
//! that would take jq, awk and gnuplot, none of which the project otherwise needs.
//! Every child process has a deadline and is killed when the run ends.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::Value;

/// The servers under test: the library first, then the baselines.
const SERVERS: [&str; 4] = [
    "echo_server",
    "baseline_lines",
    "baseline_memchr",
    "baseline_raw",
];

/// How long a server may take to print `listening on ADDR`.
const SERVER_START: Duration = Duration::from_secs(10);

/// Slack on top of a loadgen run's own bound (warm-up, duration, its 5 s drain),
/// before the run is killed and counted as failed.
const RUN_SLACK: Duration = Duration::from_secs(30);

/// Runs the benchmark suite and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
struct Args {
    /// One repetition, 1 s runs, 2000 idle connections, criterion's quick mode.
    #[arg(long)]
    quick: bool,

    /// Repetitions of every measurement (default 5, 1 with --quick). This VM's
    /// rates drift by up to 25 % within a minute; five pairs outvote one
    /// unlucky one.
    #[arg(long, value_name = "N")]
    reps: Option<usize>,

    /// Measured seconds per run (default 3, 1 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// Warm-up seconds per run (default 1, 0.5 with --quick).
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,

    /// Connections in the idle scenario (default 10000, 2000 with --quick).
    #[arg(long, value_name = "N")]
    idle_clients: Option<usize>,

    /// Only the scenarios whose key contains this text (e.g. `pipeline`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,

    /// Skip the criterion framer bench.
    #[arg(long)]
    no_framer: bool,

    /// Skip iperf3.
    #[arg(long)]
    no_iperf: bool,

    /// Do not run `cargo build` first (the binaries beside this one are used).
    #[arg(long)]
    no_build: bool,

    /// The Markdown file to update.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// What a scenario's figures are judged against.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// echo_server's frames/s at least `ratio` × the baseline's; with `p99`, its
    /// p99 latency no more than 1/`ratio` × the baseline's.
    Ratio {
        baseline: &'static str,
        ratio: f64,
        p99: bool,
    },
    /// Server memory per idle connection at most this many bytes.
    IdleBytes(f64),
    /// Measured and reported only.
    Report,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    key: &'static str,
    title: &'static str,
    mode: &'static str,
    clients: usize,
    size: usize,
    depth: usize,
    same_core: bool,
    target: Target,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario {
        key: "pingpong-1",
        title: "pingpong 1 × 64 B, separate cores",
        mode: "pingpong",
        clients: 1,
        size: 64,
        depth: 1,
        same_core: false,
        target: Target::Ratio {
            baseline: "baseline_lines",
            ratio: 0.95,
            p99: true,
        },
    },
    Scenario {
        key: "pingpong-1-same-core",
        title: "pingpong 1 × 64 B, same core",
        mode: "pingpong",
        clients: 1,
        size: 64,
        depth: 1,
        same_core: true,
        target: Target::Ratio {
            baseline: "baseline_lines",
            ratio: 0.95,
            p99: true,
        },
    },
    Scenario {
        key: "pingpong-100",
        title: "pingpong 100 × 64 B",
        mode: "pingpong",
        clients: 100,
        size: 64,
        depth: 1,
        same_core: false,
        target: Target::Ratio {
            baseline: "baseline_lines",
            ratio: 0.95,
            p99: true,
        },
    },
    Scenario {
        key: "pipeline-100x64",
        title: "pipeline 100 × 64 B, depth 32",
        mode: "pipeline",
        clients: 100,
        size: 64,
        depth: 32,
        same_core: false,
        target: Target::Ratio {
            baseline: "baseline_memchr",
            ratio: 0.9,
            p99: false,
        },
    },
    Scenario {
        key: "pipeline-10x16k",
        title: "pipeline 10 × 16 KiB, depth 8",
        mode: "pipeline",
        clients: 10,
        size: 16 * 1024,
        depth: 8,
        same_core: false,
        target: Target::Ratio {
            baseline: "baseline_memchr",
            ratio: 0.95,
            p99: false,
        },
    },
    Scenario {
        key: "pingpong-1000",
        title: "pingpong 1000 × 64 B",
        mode: "pingpong",
        clients: 1000,
        size: 64,
        depth: 1,
        same_core: false,
        target: Target::Report,
    },
    Scenario {
        key: "idle",
        title: "idle connections",
        mode: "idle",
        clients: 10_000,
        size: 64,
        depth: 1,
        same_core: false,
        target: Target::IdleBytes(4096.0),
    },
];

/// Settings of this run, after `--quick` and the defaults.
struct Plan {
    reps: usize,
    duration: f64,
    warmup: f64,
    idle_clients: usize,
    bin_dir: PathBuf,
    target_dir: PathBuf,
    workspace: PathBuf,
    /// `taskset -c` core lists for the server and loadgen, or `None` without
    /// taskset.
    pin: Option<(String, String)>,
}

impl Plan {
    fn command(&self, program: &Path, core_of_loadgen: bool, same_core: bool) -> Command {
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
struct Run {
    scenario: &'static str,
    server: &'static str,
    rep: usize,
    /// loadgen's final JSON line, when it printed one.
    result: Option<Value>,
    /// Why the run does not count, if it does not.
    failure: Option<String>,
}

impl Run {
    fn value(&self, field: &str) -> Option<f64> {
        if self.failure.is_some() {
            return None;
        }
        self.result.as_ref()?.get(field)?.as_f64()
    }
}

fn main() -> ExitCode {
    chitchat_examples::exit_code(run())
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let bin_dir = exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    let target_dir = bin_dir
        .parent()
        .context("binaries are not in <target>/<profile>")?
        .to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("examples has no parent directory")?
        .to_path_buf();
    if !args.no_build {
        build(&workspace)?;
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let pin = if Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        let loadgen_core = if cores >= 2 { "1" } else { "0" };
        Some(("0".to_owned(), loadgen_core.to_owned()))
    } else {
        eprintln!(
            "warning: taskset not found (Debian: apt-get install util-linux): \
             processes are not pinned"
        );
        None
    };
    let plan = Plan {
        reps: args.reps.unwrap_or(if args.quick { 1 } else { 5 }).max(1),
        duration: args.duration.unwrap_or(if args.quick { 1.0 } else { 3.0 }),
        warmup: args.warmup.unwrap_or(if args.quick { 0.5 } else { 1.0 }),
        idle_clients: args
            .idle_clients
            .unwrap_or(if args.quick { 2000 } else { 10_000 }),
        bin_dir,
        target_dir,
        workspace,
        pin,
    };

    let machine = Machine::read(cores);
    let started = Instant::now();
    let framer = if args.no_framer {
        None
    } else {
        Some(run_framer_bench(&plan, args.quick).map_err(|err| format!("{err:#}")))
    };
    let scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.only.as_ref().is_none_or(|only| s.key.contains(only)))
        .map(|mut s| {
            if s.mode == "idle" {
                s.clients = plan.idle_clients;
            }
            s
        })
        .collect();
    let mut runs = Vec::new();
    for scenario in &scenarios {
        for rep in 0..plan.reps {
            for i in 0..SERVERS.len() {
                let server = SERVERS[(i + rep) % SERVERS.len()];
                let run = run_one(&plan, scenario, server, rep);
                eprintln!("{}", describe(scenario, &run));
                runs.push(run);
            }
        }
    }
    let iperf = if args.no_iperf {
        None
    } else {
        run_iperf(&plan)
    };
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let elapsed = started.elapsed();

    let results = Results {
        plan: &plan,
        machine: &machine,
        load_after: load_after.trim(),
        elapsed,
        scenarios: &scenarios,
        runs: &runs,
        iperf,
        framer,
        quick: args.quick,
    };
    let out_path = args
        .out
        .unwrap_or_else(|| plan.workspace.join("BENCHMARKS.md"));
    let plot_dir = out_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("benchmarks");
    std::fs::create_dir_all(&plot_dir)?;
    draw_plot(&plot_dir.join("frames.svg"), &results)?;
    std::fs::write(plot_dir.join("runs.json"), results.runs_json())?;
    let section = results.markdown();
    update_markdown(&out_path, &section)?;
    println!("{section}");
    eprintln!(
        "wrote {} and {} in {:.0} s",
        out_path.display(),
        plot_dir.display(),
        elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn build(workspace: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "chitchat-examples", "--bins"])
        .current_dir(workspace)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(())
}

/// Reads a child's stdout on a thread: the first line comes back on the channel
/// (for `listening on ADDR`), and the rest is collected so the child never blocks.
fn read_lines(child: &mut Child) -> (mpsc::Receiver<String>, thread::JoinHandle<String>) {
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
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
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
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn run_one(plan: &Plan, scenario: &Scenario, server: &'static str, rep: usize) -> Run {
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

fn measure(plan: &Plan, scenario: &Scenario, server: &str, run: &mut Run) -> anyhow::Result<()> {
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

fn describe(scenario: &Scenario, run: &Run) -> String {
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
fn run_iperf(plan: &Plan) -> Option<IperfResult> {
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

struct IperfResult {
    median_gbits: f64,
    runs: usize,
}

/// One criterion estimate: median nanoseconds per iteration and input bytes.
struct Estimate {
    nanos: f64,
    bytes: f64,
}

struct FramerResults {
    command: String,
    /// (group, function, parameter) -> estimate.
    estimates: Vec<((String, String, String), Estimate)>,
}

impl FramerResults {
    fn get(&self, group: &str, function: &str, param: &str) -> Option<&Estimate> {
        self.estimates
            .iter()
            .find(|((g, f, p), _)| g == group && f == function && p == param)
            .map(|(_, e)| e)
    }
}

fn run_framer_bench(plan: &Plan, quick: bool) -> anyhow::Result<FramerResults> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["bench", "-p", "chitchat-tokio", "--bench", "framer"];
    if quick {
        args.extend(["--", "--quick"]);
    }
    eprintln!("running cargo {}", args.join(" "));
    // Pinned to the server's core: criterion measures one thread.
    let mut command = match &plan.pin {
        Some((core, _)) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core).arg(&cargo);
            c
        }
        None => Command::new(&cargo),
    };
    let status = command
        .args(&args)
        .current_dir(&plan.workspace)
        .env("CARGO_TARGET_DIR", &plan.target_dir)
        .stdout(Stdio::null())
        .status()
        .context("cannot run cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed: {status}");
    }
    let root = plan.target_dir.join("criterion");
    let mut estimates = Vec::new();
    for group in ["one_piece", "reads_1500", "reads_1", "single_64KiB_frame"] {
        for function in ["framer", "framer_decode", "any_delimiter", "lines", "floor"] {
            let dir = root.join(group).join(function);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let param = entry.file_name().to_string_lossy().into_owned();
                let read = |file: &str| -> Option<Value> {
                    let text = std::fs::read_to_string(entry.path().join("new").join(file)).ok()?;
                    serde_json::from_str(&text).ok()
                };
                let (Some(estimate), Some(meta)) = (read("estimates.json"), read("benchmark.json"))
                else {
                    continue;
                };
                let (Some(nanos), Some(bytes)) = (
                    estimate["median"]["point_estimate"].as_f64(),
                    meta["throughput"]["Bytes"].as_f64(),
                ) else {
                    continue;
                };
                estimates.push((
                    (group.to_owned(), function.to_owned(), param),
                    Estimate { nanos, bytes },
                ));
            }
        }
    }
    Ok(FramerResults {
        command: format!("cargo {}", args.join(" ")),
        estimates,
    })
}

/// What the machine is, read from /proc.
struct Machine {
    cores: usize,
    cpu: String,
    kernel: String,
    load_before: String,
    rustc: String,
}

impl Machine {
    fn read(cores: usize) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let load_before = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Machine {
            cores,
            cpu,
            kernel,
            load_before,
            rustc,
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
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

struct Results<'a> {
    plan: &'a Plan,
    machine: &'a Machine,
    load_after: &'a str,
    elapsed: Duration,
    scenarios: &'a [Scenario],
    runs: &'a [Run],
    iperf: Option<IperfResult>,
    /// `None` when skipped; the error when it did not run.
    framer: Option<Result<FramerResults, String>>,
    quick: bool,
}

/// Formats a number with thousands separators (frames/s are large).
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn fmt_opt(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), format)
}

impl Results<'_> {
    /// Median of `field` over the successful runs of `server` in `scenario`.
    fn median(&self, scenario: &str, server: &str, field: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.scenario == scenario && r.server == server)
            .filter_map(|r| r.value(field))
            .collect();
        median(&values)
    }

    fn ok_runs(&self, scenario: &str, server: &str) -> usize {
        self.runs
            .iter()
            .filter(|r| r.scenario == scenario && r.server == server && r.failure.is_none())
            .count()
    }

    /// `echo_server` over `baseline`, taken repetition by repetition, median. A
    /// repetition runs every server within a minute or two, so the machine's slow
    /// drift (other tenants; the 16 KiB scenario moves by 2x between minutes)
    /// cancels, which a ratio of the two medians would not do.
    fn ratio(&self, scenario: &str, field: &str, baseline: &str) -> Option<f64> {
        let value = |server: &str, rep: usize| {
            self.runs
                .iter()
                .find(|r| r.scenario == scenario && r.server == server && r.rep == rep)
                .filter(|r| r.failure.is_none())
                .and_then(|r| r.value(field))
        };
        let ratios: Vec<f64> = (0..self.plan.reps)
            .filter_map(|rep| Some(value("echo_server", rep)? / value(baseline, rep)?))
            .collect();
        median(&ratios)
    }

    fn runs_json(&self) -> String {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "scenario": r.scenario,
                    "server": r.server,
                    "rep": r.rep + 1,
                    "failure": r.failure,
                    "result": r.result,
                })
            })
            .collect();
        serde_json::to_string_pretty(&runs).unwrap_or_default()
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let plan = self.plan;
        let m = self.machine;
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "Generated by `cargo run --release -p chitchat-examples --bin bench{}` on {date}, \
             in {:.0} s.\n",
            if self.quick { " -- --quick" } else { "" },
            self.elapsed.as_secs_f64()
        );
        let pin = match &plan.pin {
            Some((s, l)) => format!("server on core {s}, loadgen on core {l} (`taskset`)"),
            None => "not pinned (no taskset)".to_owned(),
        };
        let _ = writeln!(
            md,
            "- Machine: {} cores ({}), kernel {}, {}.\n- Pinning: {pin}; every server runs \
             tokio's multi-thread runtime, which sees one core, so one worker thread; \
             loadgen runs one thread.\n- Load average (1, 5, 15 min) before: `{}`, after: \
             `{}` (other work shares this machine).\n- Each figure is the median of {} \
             runs of {} s after {} s of warm-up; the servers take turns, in an order that \
             rotates every repetition. Ratios (÷ columns, targets) are the median of the \
             ratios within each repetition. Every echoed byte was checked: {} mismatches, {} \
             connection errors, {} failed runs in total.\n",
            m.cores,
            m.cpu,
            m.kernel,
            m.rustc,
            m.load_before,
            self.load_after,
            plan.reps,
            plan.duration,
            plan.warmup,
            self.total("mismatches"),
            self.total("errors"),
            self.runs.iter().filter(|r| r.failure.is_some()).count(),
        );

        let throughput: Vec<&Scenario> =
            self.scenarios.iter().filter(|s| s.mode != "idle").collect();
        if !throughput.is_empty() {
            md.push_str("### Frames per second (median)\n\n");
            md.push_str(
                "| scenario | echo_server | baseline_lines | baseline_memchr | baseline_raw \
                 | ÷ lines | ÷ memchr | ÷ raw |\n|---|--:|--:|--:|--:|--:|--:|--:|\n",
            );
            for s in &throughput {
                let cell = |server| fmt_opt(self.median(s.key, server, "frames_per_sec"), grouped);
                let ratio = |baseline| {
                    fmt_opt(self.ratio(s.key, "frames_per_sec", baseline), |r| {
                        format!("{r:.2}")
                    })
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.title,
                    cell("echo_server"),
                    cell("baseline_lines"),
                    cell("baseline_memchr"),
                    cell("baseline_raw"),
                    ratio("baseline_lines"),
                    ratio("baseline_memchr"),
                    ratio("baseline_raw"),
                );
            }
            md.push_str("\n![frames/s per scenario and server](benchmarks/frames.svg)\n\n");

            md.push_str("### Latency p50 / p99 in µs (median)\n\n");
            md.push_str(
                "| scenario | echo_server | baseline_lines | baseline_memchr | baseline_raw \
                 |\n|---|--:|--:|--:|--:|\n",
            );
            for s in &throughput {
                let cell = |server| {
                    format!(
                        "{} / {}",
                        fmt_opt(self.median(s.key, server, "p50_us"), |v| format!("{v:.0}")),
                        fmt_opt(self.median(s.key, server, "p99_us"), |v| format!("{v:.0}"))
                    )
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    s.title,
                    cell("echo_server"),
                    cell("baseline_lines"),
                    cell("baseline_memchr"),
                    cell("baseline_raw"),
                );
            }

            md.push_str(
                "\n### CPU: server / loadgen, % of the window busy (and waiting for a core \
                 while runnable), median\n\n\
                 Busy near 100 % marks the side that saturates. Waiting is time the \
                 process was ready to run while other work held its core \
                 (/proc/PID/task/*/schedstat): busy + waiting near 100 % means it was \
                 starved, not idle.\n\n",
            );
            md.push_str(
                "| scenario | echo_server | baseline_lines | baseline_memchr | baseline_raw \
                 |\n|---|--:|--:|--:|--:|\n",
            );
            for s in &throughput {
                let pct = |server, field| {
                    fmt_opt(self.median(s.key, server, field), |v| {
                        format!("{:.0}", v * 100.0)
                    })
                };
                let cell = |server| {
                    format!(
                        "{} ({}) / {} ({})",
                        pct(server, "server_cpu"),
                        pct(server, "server_wait"),
                        pct(server, "loadgen_cpu"),
                        pct(server, "loadgen_wait"),
                    )
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    s.title,
                    cell("echo_server"),
                    cell("baseline_lines"),
                    cell("baseline_memchr"),
                    cell("baseline_raw"),
                );
            }
            if let Some(s) = throughput.iter().find(|s| s.key == "pipeline-10x16k") {
                let mb = |server| {
                    fmt_opt(self.median(s.key, server, "mb_per_sec"), |v| {
                        format!("{v:.0}")
                    })
                };
                let _ = writeln!(
                    md,
                    "\n{}: echoed MB/s (each direction) echo_server {}, baseline_lines {}, \
                     baseline_memchr {}, baseline_raw {}.",
                    s.title,
                    mb("echo_server"),
                    mb("baseline_lines"),
                    mb("baseline_memchr"),
                    mb("baseline_raw"),
                );
            }
            match &self.iperf {
                Some(iperf) => {
                    let _ = writeln!(
                        md,
                        "iperf3 over loopback, one stream, same pinning: {:.1} Gbit/s = {:.0} \
                         MB/s one way (median of {}).",
                        iperf.median_gbits,
                        iperf.median_gbits * 1e9 / 8.0 / 1e6,
                        iperf.runs
                    );
                }
                None => md.push_str("iperf3 was not run (not installed, or --no-iperf).\n"),
            }
        }

        if let Some(s) = self.scenarios.iter().find(|s| s.mode == "idle") {
            let _ = writeln!(
                md,
                "\n### Idle connections: server memory per connection (median)\n\n\
                 {} connections, each echoes one 64 B frame and is then held open; VmRSS of \
                 the server before connecting and {} ms after the last echo, divided by the \
                 connection count.\n\n| server | bytes per connection |\n|---|--:|",
                s.clients, 500
            );
            for server in SERVERS {
                let _ = writeln!(
                    md,
                    "| {server} | {} |",
                    fmt_opt(self.median(s.key, server, "rss_per_conn_bytes"), grouped)
                );
            }
        }

        match &self.framer {
            Some(Ok(framer)) => self.framer_markdown(&mut md, framer),
            Some(Err(err)) => {
                let _ = writeln!(md, "\nThe framer micro-benchmark failed: {err}");
            }
            None => {}
        }

        md.push_str("\n### Targets\n\n| target | measured | met |\n|---|---|---|\n");
        for s in self.scenarios {
            let (goal, measured, met) = match s.target {
                Target::Ratio {
                    baseline,
                    ratio,
                    p99,
                } => {
                    let frames = self.ratio(s.key, "frames_per_sec", baseline);
                    let latency = self.ratio(s.key, "p99_us", baseline);
                    let mut goal = format!("{}: ≥ {ratio}× {baseline} frames/s", s.title);
                    let mut measured = fmt_opt(frames, |r| format!("{r:.2}×"));
                    let mut met = frames.is_some_and(|r| r >= ratio);
                    if p99 {
                        goal.push_str(", p99 no worse");
                        let _ = write!(
                            measured,
                            ", p99 {}",
                            fmt_opt(latency, |r| format!("{r:.2}×"))
                        );
                        // "No worse" within the same 5 % the frame rate is allowed.
                        met &= latency.is_some_and(|r| r <= 1.0 / ratio);
                    }
                    (goal, measured, met)
                }
                Target::IdleBytes(max) => {
                    let bytes = self.median(s.key, "echo_server", "rss_per_conn_bytes");
                    (
                        format!(
                            "idle: ≤ {:.0} KiB server RSS per connection at {}",
                            max / 1024.0,
                            s.clients
                        ),
                        fmt_opt(bytes, |b| format!("{:.2} KiB", b / 1024.0)),
                        bytes.is_some_and(|b| b <= max),
                    )
                }
                Target::Report => continue,
            };
            let _ = writeln!(md, "| {goal} | {measured} | {} |", yes_no(met));
        }
        if let Some(Ok(framer)) = &self.framer {
            let ratio = framer_ratio(framer, "one_piece", "any_delimiter", "64B");
            let _ = writeln!(
                md,
                "| framer: ≥ 3× AnyDelimiterCodec, 64 B frames in one piece | {} | {} |",
                fmt_opt(ratio, |r| format!("{r:.2}×")),
                yes_no(ratio.is_some_and(|r| r >= 3.0)),
            );
            let trickle = trickle_ratio(framer, "framer");
            let floor = trickle_ratio(framer, "floor");
            let _ = writeln!(
                md,
                "| framer: one 64 KiB frame fed 1 byte at a time within 2× the time per byte \
                 of 1500-byte reads | {} (appending the byte alone, no splitting: {}) | \
                 **no**, out of reach for any splitter (below) |",
                fmt_opt(trickle, |r| format!("{r:.1}×")),
                fmt_opt(floor, |r| format!("{r:.1}×")),
            );
            let linear = linearity(framer);
            let _ = writeln!(
                md,
                "| framer: 1-byte feeding linear: time per byte on 64 KiB frames within 2× \
                 of that on 64 B frames | {} | {} |",
                fmt_opt(linear, |r| format!("{r:.2}×")),
                yes_no(linear.is_some_and(|r| r <= 2.0)),
            );
        }

        let failures: Vec<&Run> = self.runs.iter().filter(|r| r.failure.is_some()).collect();
        if !failures.is_empty() {
            md.push_str("\n### Failed runs (left out of the medians)\n\n");
            for r in failures {
                let _ = writeln!(
                    md,
                    "- {} {} rep {}: {}",
                    r.scenario,
                    r.server,
                    r.rep + 1,
                    r.failure.as_deref().unwrap_or("")
                );
            }
        }
        let short: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(|s| SERVERS.iter().map(move |server| (s, *server)))
            .filter(|(s, server)| self.ok_runs(s.key, server) < plan.reps)
            .map(|(s, server)| format!("{} {server}", s.key))
            .collect();
        if !short.is_empty() {
            let _ = writeln!(md, "\nMedians over fewer runs: {}.", short.join(", "));
        }
        md.push_str("\nEvery run's full result: [benchmarks/runs.json](benchmarks/runs.json).\n");
        md
    }

    /// A count summed over every run (mismatches, errors).
    fn total(&self, field: &str) -> u64 {
        self.runs
            .iter()
            .filter_map(|r| r.result.as_ref()?.get(field)?.as_u64())
            .sum()
    }

    fn framer_markdown(&self, md: &mut String, framer: &FramerResults) {
        let _ = writeln!(
            md,
            "\n### Framer micro-benchmark (criterion, median)\n\n`{}` \
             (chitchat-tokio/benches/framer.rs), pinned to core 0. GB/s of input; ratios are \
             the codec's time over the framer's. `framer` is the engine's path (each frame \
             located in place and lent to the handler); `framer, decode` hands out every \
             frame as its own `Bytes`, as the codecs do (and as `FrameCodec` does for \
             `Framed`).\n\n\
             | input | framer | framer, decode | AnyDelimiterCodec | LinesCodec | \
             framer ÷ AnyDelimiter | framer ÷ Lines | decode ÷ AnyDelimiter |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|",
            framer.command
        );
        let groups = [
            ("one_piece", ["64B", "1KiB", "64KiB"]),
            ("reads_1500", ["64B", "1KiB", "64KiB"]),
            ("reads_1", ["64B", "1KiB", "64KiB"]),
            ("single_64KiB_frame", ["whole", "reads_1500", "reads_1"]),
        ];
        for (group, params) in groups {
            for param in params {
                let gbs = |f| {
                    fmt_opt(
                        framer.get(group, f, param).map(|e| e.bytes / e.nanos),
                        |v| format!("{v:.3}"),
                    )
                };
                let ratio = |f| {
                    fmt_opt(framer_ratio(framer, group, f, param), |r| {
                        format!("{r:.2}×")
                    })
                };
                let decode_ratio = fmt_opt(
                    framer
                        .get(group, "any_delimiter", param)
                        .zip(framer.get(group, "framer_decode", param))
                        .map(|(codec, decode)| codec.nanos / decode.nanos),
                    |r| format!("{r:.2}×"),
                );
                let _ = writeln!(
                    md,
                    "| {group} / {param} | {} | {} | {} | {} | {} | {} | {decode_ratio} |",
                    gbs("framer"),
                    gbs("framer_decode"),
                    gbs("any_delimiter"),
                    gbs("lines"),
                    ratio("any_delimiter"),
                    ratio("lines"),
                );
            }
        }
        let per_byte = |param| {
            framer
                .get("reads_1", "framer", param)
                .map(|e| e.nanos / e.bytes)
        };
        let floor = framer
            .get("single_64KiB_frame", "floor", "reads_1")
            .map(|e| e.nanos / e.bytes);
        let _ = writeln!(
            md,
            "\nFed 1 byte at a time, the framer spends {} / {} / {} ns per byte on 64 B / \
             1 KiB / 64 KiB frames (constant per byte: linear in the frame length). \
             Appending one byte to the buffer and making the call, with no splitting at \
             all, costs {} ns (`floor`).",
            fmt_opt(per_byte("64B"), |v| format!("{v:.2}")),
            fmt_opt(per_byte("1KiB"), |v| format!("{v:.2}")),
            fmt_opt(per_byte("64KiB"), |v| format!("{v:.2}")),
            fmt_opt(floor, |v| format!("{v:.2}")),
        );
    }
}

/// The codec's time over the framer's for one input (above 1: the framer is faster).
fn framer_ratio(framer: &FramerResults, group: &str, codec: &str, param: &str) -> Option<f64> {
    Some(framer.get(group, codec, param)?.nanos / framer.get(group, "framer", param)?.nanos)
}

/// Time per byte of a 64 KiB frame fed 1 byte at a time (by `function`) over the
/// framer's fed in 1500-byte reads.
fn trickle_ratio(framer: &FramerResults, function: &str) -> Option<f64> {
    let one = framer.get("single_64KiB_frame", function, "reads_1")?;
    let mtu = framer.get("single_64KiB_frame", "framer", "reads_1500")?;
    Some((one.nanos / one.bytes) / (mtu.nanos / mtu.bytes))
}

/// Time per byte fed 1 byte at a time, 64 KiB frames over 64 B frames: near 1 when
/// the search never rescans.
fn linearity(framer: &FramerResults) -> Option<f64> {
    let large = framer.get("reads_1", "framer", "64KiB")?;
    let small = framer.get("reads_1", "framer", "64B")?;
    Some((large.nanos / large.bytes) / (small.nanos / small.bytes))
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

const BEGIN: &str = "<!-- bench:begin (generated by the bench binary; edits inside are lost) -->";
const END: &str = "<!-- bench:end -->";

/// Replaces the generated section of the Markdown file, keeping the text around it.
fn update_markdown(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{BEGIN}\n{section}{END}");
    let new = match (old.find("<!-- bench:begin"), old.find(END)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{generated}{}", &old[..start], &old[end + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{generated}\n{old}"),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// Frames/s per scenario per server (log scale), and idle memory per connection.
fn draw_plot(path: &Path, results: &Results) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let colors = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    let throughput: Vec<&Scenario> = results
        .scenarios
        .iter()
        .filter(|s| s.mode != "idle")
        .collect();
    let idle = results.scenarios.iter().find(|s| s.mode == "idle");
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(470);

    let values: Vec<f64> = throughput
        .iter()
        .flat_map(|s| {
            SERVERS
                .iter()
                .filter_map(|sv| results.median(s.key, sv, "frames_per_sec"))
        })
        .filter(|v| *v > 0.0)
        .collect();
    if !values.is_empty() {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
        // Headroom above the tallest bar for the legend.
        let hi = values.iter().copied().fold(0.0, f64::max) * 8.0;
        let n = throughput.len();
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("frames/s, median of {} (log scale)", results.plan.reps),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(0)
            .y_desc("frames/s")
            .y_label_formatter(&|v| grouped(*v))
            .draw()?;
        let width = 0.8 / SERVERS.len() as f64;
        for (k, server) in SERVERS.iter().enumerate() {
            let color = colors[k];
            let bars = throughput.iter().enumerate().filter_map(|(i, s)| {
                let v = results.median(s.key, server, "frames_per_sec")?;
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + width * 0.9, v)],
                    color.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(*server)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        for (i, s) in throughput.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, lo));
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            // Two lines: the title's part before and after the first comma.
            let (first, second) = s.title.split_once(", ").unwrap_or((s.title, ""));
            top.draw(&Text::new(first.to_owned(), (x, y + 8), style.clone()))?;
            top.draw(&Text::new(second.to_owned(), (x, y + 24), style))?;
        }
    }

    if let Some(s) = idle {
        let values: Vec<(usize, f64)> = SERVERS
            .iter()
            .enumerate()
            .filter_map(|(k, sv)| {
                Some((k, results.median(s.key, sv, "rss_per_conn_bytes")? / 1024.0))
            })
            .collect();
        let hi = values.iter().map(|(_, v)| *v).fold(4.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!(
                    "server RSS per idle connection, KiB ({} connections)",
                    s.clients
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(10)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..hi, 0f64..SERVERS.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(0)
            .x_desc("KiB per connection")
            .draw()?;
        chart.draw_series(values.iter().map(|&(k, v)| {
            let y0 = (SERVERS.len() - 1 - k) as f64 + 0.15;
            Rectangle::new([(0.0, y0), (v, y0 + 0.7)], colors[k].filled())
        }))?;
        // The 4 KiB target.
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(4.0, 0.0), (4.0, SERVERS.len() as f64)],
            BLACK.stroke_width(1),
        )))?;
        for (k, server) in SERVERS.iter().enumerate() {
            let y = (SERVERS.len() - 1 - k) as f64 + 0.5;
            let (px, py) = chart.backend_coord(&(0.0, y));
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            // Backend coordinates are the whole picture's: draw on the root area.
            root.draw(&Text::new((*server).to_owned(), (px - 8, py), style))?;
        }
    }
    root.present()?;
    Ok(())
}
