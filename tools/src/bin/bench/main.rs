//! The benchmark suite: `echo_server` against three baseline echo servers, in the
//! same run, on the same cores, and the framer micro-benchmark, written up in
//! BENCHMARKS.md with a plot.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin bench            # about 21 minutes
//! cargo run --release -p chitchat-tools --bin bench -- --quick # about 4 minutes
//! ```
//!
//! What it does, in order:
//! 1. builds `echo_server` (chitchat-examples) and the tools (`loadgen`, the
//!    baselines) in release, in the target directory it runs from;
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
//!
//! # Layout
//! - `scenarios.rs`: the servers compared and the scenarios, with their targets.
//! - `runner.rs`: one server + loadgen run as child processes; iperf3.
//! - `framer.rs`: the criterion framer bench and its estimates.
//! - `report.rs`: the machine, medians and ratios, the Markdown section, runs.json.
//! - `plot.rs`: `benchmarks/frames.svg`.

mod framer;
mod plot;
mod report;
mod runner;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context as _};
use chitchat_tools::procfs;
use clap::Parser;

use framer::run_framer_bench;
use plot::draw_plot;
use report::{update_markdown, Machine, Results};
use runner::{describe, run_iperf, run_one, Plan};
use scenarios::{Scenario, SCENARIOS, SERVERS};

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
    let load_after = procfs::load_average().unwrap_or_default();
    let elapsed = started.elapsed();

    let results = Results {
        plan: &plan,
        machine: &machine,
        load_after: &load_after,
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
        .args(["build", "--release", "--bins"])
        .args(["-p", "chitchat-examples", "-p", "chitchat-tools"])
        .current_dir(workspace)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(())
}
