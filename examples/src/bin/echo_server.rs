//! An echo server: every frame a client sends comes back to it, delimiter appended.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin echo_server -- --listen 127.0.0.1:7878
//! ```
//!
//! The first line on stdout is `listening on ADDR` (the bound address, so
//! `--listen 127.0.0.1:0` tells which port it got). Errors go to stderr, each naming
//! its peer, an echo that could not be queued included. Ctrl-C (SIGINT) or SIGTERM
//! lets queued replies go out, prints a one-line summary to stderr (frames received
//! and frames echoed, which differ when echoes were lost) and exits 0. Every
//! timeout is on by default (`0` turns one off); `--help` lists the flags and their
//! defaults.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chitchat_core::{
    Addr, ConnEvent, Delimiter, Events, ReceiveRate, UnixAddr, DEFAULT_MAX_FRAME_LEN,
    DEFAULT_MAX_OUTBOUND, DEFAULT_PARTIAL_FRAME_BUDGET,
};
use chitchat_examples::{
    parse_delimiter, parse_receive_rate, parse_timeout, Timeout, TimeoutFlags,
};
use chitchat_tokio::{Server, TlsBinder, Unix};
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

    #[command(flatten)]
    timeouts: TimeoutFlags,

    /// Connections served at once; more are closed as soon as they are accepted.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Connections one client IP may hold at once [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,

    /// Close a client that sends, but fewer than BYTES in a SECS-long window (one
    /// holding its connection by trickling complete frames) [default: off: no rate
    /// tells a trickler from an honest quiet client; --max-connections-per-ip bounds
    /// what tricklers hold].
    #[arg(long, value_name = "BYTES/SECS", value_parser = parse_receive_rate)]
    min_receive_rate: Option<ReceiveRate>,

    /// With TLS: close a connection whose handshake is not done this long after it
    /// was accepted; 0: never.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    handshake_timeout: Timeout,

    /// With TLS: handshakes in progress at once (at least 1); past it new
    /// connections wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = TlsBinder::DEFAULT_MAX_HANDSHAKES)]
    max_handshakes: usize,
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
        .idle_timeout(args.timeouts.read_timeout.0)
        .frame_timeout(args.timeouts.frame_timeout.0)
        .write_timeout(args.timeouts.write_timeout.0)
        .min_receive_rate(args.min_receive_rate)
        .on_frame(|ctx, frame| {
            // `reply` appends the delimiter, and writes any frame back byte for byte.
            // It fails when the client does not read its replies (the engine then
            // drops it) or the connection is closing: that echo is lost, say so.
            if let Err(err) = ctx.reply(&frame) {
                eprintln!("error: echo of {} bytes lost: {err}", frame.len());
            }
        });
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
            let tls = TlsBinder::from_pem(&read(cert)?, &read(key)?)
                .context("invalid TLS certificate or key")?
                .handshake_timeout(args.handshake_timeout.0)
                .max_handshakes(args.max_handshakes);
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
    // Frames echoed are the replies queued: the engine counts each `reply` that
    // succeeded, so a lost echo is not counted.
    eprintln!(
        "shut down on {signal}: connections accepted {}, refused {}, frames received {}, \
         echoed {}, errors {}; at shutdown drained {}, forced {}",
        stats.accepted,
        stats.refused,
        stats.frames_in,
        stats.frames_out,
        stats.errors.total(),
        report.drained,
        report.forced
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints every error to stderr; each names its peer. If the printing falls more
/// than the queue's capacity behind a flood, says how many it lost.
async fn log_errors(mut events: Events<ConnEvent>) {
    let mut lost = 0;
    while let Some(event) = events.next().await {
        // Read once: more may be dropped between two reads, and those would be
        // counted as reported without ever being printed.
        let dropped = events.dropped();
        if dropped > lost {
            eprintln!(
                "warning: {} events not printed: the log fell behind",
                dropped - lost
            );
            lost = dropped;
        }
        if let Some(err) = event.as_error() {
            eprintln!("error: {err}");
        }
    }
}
