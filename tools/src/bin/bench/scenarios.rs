//! What bench measures: the servers it compares and the scenarios it runs each of
//! them through, with the target each scenario's figures are judged against.

/// The servers under test: the library first, then the baselines.
pub const SERVERS: [&str; 4] = [
    "echo_server",
    "baseline_lines",
    "baseline_memchr",
    "baseline_raw",
];

/// What a scenario's figures are judged against.
#[derive(Clone, Copy, Debug)]
pub enum Target {
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
pub struct Scenario {
    pub key: &'static str,
    pub title: &'static str,
    pub mode: &'static str,
    pub clients: usize,
    pub size: usize,
    pub depth: usize,
    pub same_core: bool,
    pub target: Target,
}

pub const SCENARIOS: [Scenario; 7] = [
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
