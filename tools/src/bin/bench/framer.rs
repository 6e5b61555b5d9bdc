//! The framer micro-benchmark as bench runs it: `cargo bench -p chitchat-tokio
//! --bench framer`, pinned like the servers, and criterion's estimates read back.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::runner::Plan;

/// One criterion estimate: median nanoseconds per iteration and input bytes.
pub struct Estimate {
    pub nanos: f64,
    pub bytes: f64,
}

pub struct FramerResults {
    pub command: String,
    /// (group, function, parameter) -> estimate.
    pub estimates: Vec<((String, String, String), Estimate)>,
}

impl FramerResults {
    pub fn get(&self, group: &str, function: &str, param: &str) -> Option<&Estimate> {
        self.estimates
            .iter()
            .find(|((g, f, p), _)| g == group && f == function && p == param)
            .map(|(_, e)| e)
    }
}

pub fn run_framer_bench(plan: &Plan, quick: bool) -> anyhow::Result<FramerResults> {
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
