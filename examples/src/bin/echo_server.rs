//! An echo server: every frame a client sends comes back to it, delimiter appended.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin echo_server -- --listen 127.0.0.1:7878
//! ```
//!
//! The first line on stdout is `listening on ADDR` (the bound address, so
//! `--listen 127.0.0.1:0` tells which port it got). Errors go to stderr, each naming
//! its peer. Ctrl-C (SIGINT) or SIGTERM lets queued replies go out, prints a one-line
//! summary to stderr and exits 0. `--help` lists the flags.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chitchat_core::{
    Addr, ConnEvent, Delimiter, Events, UnixAddr, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_OUTBOUND,
    DEFAULT_PARTIAL_FRAME_BUDGET,
};
use chitchat_examples::{parse_delimiter, parse_secs};
use chitchat_tokio::{Server, TlsServer, Unix};
use clap::Parser;
use futures::StreamExt;

/// How long queued replies may take to go out at shutdown before the connections
/// still open are dropped: long enough for any reply on a live network, short enough
/// that Ctrl-C feels immediate.
const GRACE: Duration = Duration::from_secs(5);

/// Echoes every frame back to its sender.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: Addr,

    /// Listen on this Unix socket path instead (removed again at shutdown).
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    unix: Option<String>,

    /// Speak TLS with this PEM certificate chain (needs --tls-key).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "unix"
    )]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Frame delimiter: one character, `\n` (a CR before it is dropped too), `\t`,
    /// `\0`, or `0`/`eof` for EOF mode (one frame per connection, ended when the
    /// client shuts down its side; the echo is followed by our close).
    #[arg(long, value_name = "CHAR", default_value = r"\n", value_parser = parse_delimiter)]
    delim: Delimiter,

    /// Largest frame accepted, in bytes; a client sending a longer one is
    /// disconnected.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,

    /// Close a connection that sends nothing for this long (restarts on every read).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    read_timeout: Option<Duration>,

    /// Close a connection whose frame, once begun, is not finished within this long
    /// (a client trickling bytes just inside the read timeout).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    frame_timeout: Option<Duration>,

    /// Drop a client that takes none of its replies for this long.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    write_timeout: Option<Duration>,

    /// Connections served at once; more are closed as soon as they are accepted.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Connections one client IP may hold at once [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
}

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();

    // Signal handlers first: a SIGINT sent as soon as "listening on" shows must not
    // meet the default action (kill, exit code 130).
    let stop = chitchat_examples::stop_signal()?;

    let addr = match &args.unix {
        Some(path) => Addr::Unix(UnixAddr::path_name(path)?),
        None => args.listen,
    };
    let mut builder = Server::builder(addr)
        .delimiter(args.delim)
        .max_frame_len(args.max_frame)
        // Replies queued for one client: four frames, as the engine's default is for
        // the default frame size, so that the echo of a largest frame always fits.
        .max_outbound(DEFAULT_MAX_OUTBOUND.max(args.max_frame.saturating_mul(4)))
        // Unfinished frames of all clients together: room for one largest frame at
        // least, however large `--max-frame` is.
        .partial_frame_budget(DEFAULT_PARTIAL_FRAME_BUDGET.max(args.max_frame))
        .on_frame(|ctx, frame| {
            // `reply` appends the delimiter. It fails only when the connection is
            // going away, and the engine reports why on the event stream.
            let _ = ctx.reply(&frame);
        });
    if let Some(timeout) = args.read_timeout {
        builder = builder.idle_timeout(timeout);
    }
    if let Some(timeout) = args.frame_timeout {
        builder = builder.frame_timeout(timeout);
    }
    if let Some(timeout) = args.write_timeout {
        builder = builder.write_timeout(timeout);
    }
    if let Some(max) = args.max_connections {
        builder = builder.max_connections(max);
    }
    if let Some(max) = args.max_connections_per_ip {
        builder = builder.max_connections_per_ip(max);
    }
    // Bound when this returns; a bind error names the address.
    // The same engine on every transport.
    let server = match (&args.unix, &args.tls_cert, &args.tls_key) {
        (Some(_), _, _) => builder.listen_on(&Unix).await?,
        (None, Some(cert), Some(key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let tls = TlsServer::from_pem(&read(cert)?, &read(key)?)
                .context("invalid TLS certificate or key")?;
            builder.listen_on(&tls).await?
        }
        _ => builder.listen().await?,
    };

    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;

    // Errors happen in the background, each on the event stream. The stream never
    // blocks the server, even unread (it drops its oldest events, and counts them).
    let log = tokio::spawn(log_errors(server.events()));

    let signal = stop.await;
    let report = server.shutdown(GRACE).await;
    // The event stream ends after the shutdown, so the log task finishes too.
    log.await?;
    let stats = server.stats();
    eprintln!(
        "shut down on {signal}: connections accepted {}, refused {}, frames echoed {}, \
         errors {}; at shutdown drained {}, forced {}",
        stats.accepted,
        stats.refused,
        stats.frames_in,
        stats.errors.total(),
        report.drained,
        report.forced
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints every error to stderr; each names its peer.
async fn log_errors(mut events: Events<ConnEvent>) {
    while let Some(event) = events.next().await {
        if let Some(err) = event.as_error() {
            eprintln!("error: {err}");
        }
    }
}
