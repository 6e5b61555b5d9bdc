//! Many idle connections on one chitchat server with its default settings: how
//! long the server takes to accept them all, what each costs it in resident memory,
//! and how long one broadcast of a 64 B frame takes to reach every one of them,
//! every byte checked.
//!
//! ```text
//! cargo run --release -p chitchat-tools --bin fanout -- --connections 19000
//! ```
//!
//! The server runs in a child process (this binary with `--serve`), so that its
//! memory is its own; the parent drives it over the child's stdin and stdout (never
//! over one of the measured connections) and opens the connections from 127.0.0.1,
//! 127.0.0.2, … at most `--per-source-ip` each, under the server's per-IP limit.
//! Both processes raise their open-file limit to the hard limit, which bounds
//! `--connections` (each side needs one descriptor per connection).
//!
//! Phases, each bounded in time:
//! 1. accept: from the first connect to the server counting every connection;
//! 2. memory: the server's VmRSS before any connection and 500 ms after the
//!    last, divided by the count; with glibc also the heap's bytes in use and free
//!    but held by the allocator (`mallinfo2`), which tell what the connections
//!    use from what fragmentation costs;
//! 3. broadcast: from the command to the last client holding the whole frame.
//!
//! Each run measures two servers the same way, one after the other: `chitchat`
//! (a `chitchat_tokio::Server` with its defaults; the broadcast is
//! `Peers::broadcast`) and `raw`, the floor: a tokio accept loop that keeps each
//! `TcpStream` in a `Vec` and broadcasts with one `try_write` per stream, nothing
//! else (no timeouts, no limits, no registry, no per-connection task).
//!
//! The last line of output is one JSON object. Exit code 1 when any connection
//! fails, a byte differs, or a phase runs out of time.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chitchat_tools::{procfs, sockets};
use clap::Parser;
use futures::future::join_all;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The broadcast frame: 63 bytes and the delimiter, 64 B on the wire.
const PAYLOAD: &[u8; 63] = b"fanout-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST";

/// How long each phase may take before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Pause between the last accept and the memory reading, so that the server has
/// finished its work on the last connections.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Connections to open and hold.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    connections: usize,

    /// Connections per loopback source address (127.0.0.1, 127.0.0.2, …); under
    /// the server's per-IP limit (1 024 by default).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    per_source_ip: usize,

    /// Connection attempts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 512)]
    connect_batch: usize,

    /// Run as a server (`chitchat` or `raw`): listen on 127.0.0.1, take commands
    /// on stdin.
    #[arg(long, hide = true, value_name = "KIND")]
    serve: Option<String>,
}

fn main() -> ExitCode {
    chitchat_examples::exit_code(run())
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let fd_limit = sockets::raise_fd_limit().context("cannot raise the open-file limit")?;
    match args.serve.as_deref() {
        Some("chitchat") => return serve_chitchat().map(|()| ExitCode::SUCCESS),
        Some("raw") => return serve_raw().map(|()| ExitCode::SUCCESS),
        Some(other) => bail!("unknown server kind {other:?}"),
        None => {}
    }
    if args.connections == 0 || args.per_source_ip == 0 || args.connect_batch == 0 {
        bail!("--connections, --per-source-ip and --connect-batch must be at least 1");
    }
    // Stdio, the runtime and some slack, on either side.
    let needed = args.connections + 64;
    if fd_limit < needed {
        bail!(
            "{} connections need about {needed} file descriptors per process; the hard \
             limit is {fd_limit}",
            args.connections
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut clean = true;
    let mut json = Vec::new();
    for kind in ["chitchat", "raw"] {
        let report = runtime.block_on(drive(&args, kind))?;
        report.print();
        clean &= report.is_clean();
        json.push(report.json());
    }
    println!("{{\"runs\":[{}]}}", json.join(","));
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads the parent's commands from stdin, one per line, into a channel.
fn commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The child: a chitchat server with its defaults and no handler work, driven by
/// lines on stdin: `count` answers `count N`, `heap` answers as [`heap_answer`]
/// says, `broadcast` sends the frame to every connection and answers
/// `broadcast N` (connections it was queued for).
fn serve_chitchat() -> anyhow::Result<()> {
    server_runtime()?.block_on(async {
        let server = chitchat_tokio::Server::builder("127.0.0.1:0")
            .on_frame(|_ctx, _frame| {})
            .listen()
            .await?;
        println!("listening on {}", server.local_addr());
        let mut lines = commands();
        while let Some(line) = lines.recv().await {
            let answer = match line.trim() {
                "count" => format!("count {}", server.connection_count()),
                "heap" => heap_answer(),
                "broadcast" => {
                    let queued = chitchat_core::Peers::broadcast(&server, PAYLOAD)?;
                    format!("broadcast {queued}")
                }
                other => bail!("unknown command {other:?}"),
            };
            println!("{answer}");
        }
        server.cut().await;
        Ok(())
    })
}

/// The floor: accepted streams in a `Vec`, the broadcast one `try_write` each.
fn serve_raw() -> anyhow::Result<()> {
    server_runtime()?.block_on(async {
        // The same backlog as chitchat's default, so both accept alike.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(chitchat_core::DEFAULT_BACKLOG)?;
        println!("listening on {}", listener.local_addr()?);
        let streams = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = streams.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => accepted.lock().unwrap().push(stream),
                    Err(err) => {
                        eprintln!("raw server: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        let mut frame = PAYLOAD.to_vec();
        frame.push(b'\n');
        let mut lines = commands();
        while let Some(line) = lines.recv().await {
            let streams = streams.lock().unwrap();
            let answer = match line.trim() {
                "count" => format!("count {}", streams.len()),
                "heap" => heap_answer(),
                "broadcast" => {
                    // An idle socket's send buffer takes 64 B whole.
                    let sent = streams
                        .iter()
                        .filter(|stream| stream.try_write(&frame).ok() == Some(frame.len()))
                        .count();
                    format!("broadcast {sent}")
                }
                other => bail!("unknown command {other:?}"),
            };
            println!("{answer}");
        }
        Ok(())
    })
}

/// The answer to `heap`: `heap IN_USE FREE`, the bytes of the heap in use and
/// free but held by glibc's allocator, or `heap` alone where that is not known.
fn heap_answer() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        format!("heap {} {}", info.uordblks + info.hblkhd, info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        "heap".to_owned()
    }
}

/// Bytes of the server's heap, from its allocator.
#[derive(Clone, Copy)]
struct Heap {
    in_use: usize,
    free_held: usize,
}

/// The child server and the lines it prints.
struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    fn start(kind: &str) -> anyhow::Result<(ServerProcess, SocketAddr)> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve", kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the server")?;
        let stdin = child.stdin.take().expect("stdin piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            stdin,
            lines,
        };
        let first = server.line()?;
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("the server printed {first:?}"))?;
        Ok((server, addr))
    }

    fn line(&mut self) -> anyhow::Result<String> {
        self.lines
            .recv_timeout(PHASE_LIMIT)
            .context("the server stopped answering")
    }

    /// Sends `command`, returns the number in the answer `command N`.
    fn ask(&mut self, command: &str) -> anyhow::Result<usize> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let answer = self.line()?;
        answer
            .strip_prefix(command)
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("the server answered {command:?} with {answer:?}"))
    }

    /// The server's heap, when its allocator tells.
    fn heap(&mut self) -> anyhow::Result<Option<Heap>> {
        writeln!(self.stdin, "heap")?;
        self.stdin.flush()?;
        let answer = self.line()?;
        let mut words = answer.split(' ').skip(1).map(str::parse);
        Ok(match (words.next(), words.next()) {
            (Some(Ok(in_use)), Some(Ok(free_held))) => Some(Heap { in_use, free_held }),
            _ => None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Report {
    server: &'static str,
    connections: usize,
    source_ips: usize,
    accept: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    heap: Option<(Heap, Heap)>,
    queued: usize,
    delivered: usize,
    mismatches: usize,
    broadcast: Duration,
    server_cpu_broadcast: Duration,
}

impl Report {
    fn per_connection_bytes(&self) -> f64 {
        let grown = self.rss_after_kib.saturating_sub(self.rss_before_kib);
        (grown * 1024) as f64 / self.connections as f64
    }

    /// Heap bytes in use and free but held, per connection.
    fn heap_per_connection(&self) -> Option<(f64, f64)> {
        let (before, after) = self.heap?;
        let per =
            |before: usize, after: usize| (after as f64 - before as f64) / self.connections as f64;
        Some((
            per(before.in_use, after.in_use),
            per(before.free_held, after.free_held),
        ))
    }

    fn is_clean(&self) -> bool {
        self.mismatches == 0
            && self.delivered == self.connections
            && self.queued == self.connections
    }

    fn print(&self) {
        println!(
            "{}: {} connections from {} loopback source addresses: all accepted in {:.3} s",
            self.server,
            self.connections,
            self.source_ips,
            self.accept.as_secs_f64()
        );
        println!(
            "server RSS {} KiB before, {} KiB after: {:.0} B per connection",
            self.rss_before_kib,
            self.rss_after_kib,
            self.per_connection_bytes()
        );
        if let Some((in_use, free_held)) = self.heap_per_connection() {
            println!(
                "server heap per connection: {in_use:.0} B in use, {free_held:.0} B free but \
                 held by the allocator"
            );
        }
        println!(
            "broadcast of one 64 B frame: queued for {}, delivered whole to {} in {:.3} s \
             (server CPU {:.3} s), {} mismatches",
            self.queued,
            self.delivered,
            self.broadcast.as_secs_f64(),
            self.server_cpu_broadcast.as_secs_f64(),
            self.mismatches
        );
    }

    fn json(&self) -> String {
        let (in_use, free_held) = self.heap_per_connection().map_or_else(
            || ("null".to_owned(), "null".to_owned()),
            |(in_use, free)| (format!("{in_use:.1}"), format!("{free:.1}")),
        );
        format!(
            "{{\"server\":\"{}\",\"connections\":{},\"source_ips\":{},\"accept_s\":{:.6},\"rss_before_kib\":{},\
             \"rss_after_kib\":{},\"rss_per_conn_bytes\":{:.1},\"heap_in_use_per_conn_bytes\":{},\
             \"heap_free_held_per_conn_bytes\":{},\"broadcast_queued\":{},\
             \"broadcast_delivered\":{},\"broadcast_s\":{:.6},\"server_cpu_broadcast_s\":{:.6},\
             \"mismatches\":{}}}",
            self.server,
            self.connections,
            self.source_ips,
            self.accept.as_secs_f64(),
            self.rss_before_kib,
            self.rss_after_kib,
            self.per_connection_bytes(),
            in_use,
            free_held,
            self.queued,
            self.delivered,
            self.broadcast.as_secs_f64(),
            self.server_cpu_broadcast.as_secs_f64(),
            self.mismatches
        )
    }
}

async fn drive(args: &Args, kind: &'static str) -> anyhow::Result<Report> {
    let (mut server, addr) = ServerProcess::start(kind)?;
    let pid = server.pid();
    let rss_before_kib = procfs::status_kib(pid, "VmRSS")?;
    let heap_before = server.heap()?;

    // Accept: from the first connect to the server counting them all.
    let began = Instant::now();
    let mut streams = Vec::with_capacity(args.connections);
    while streams.len() < args.connections {
        let first = streams.len();
        let batch = args.connect_batch.min(args.connections - first);
        let dials = (first..first + batch)
            .map(|client| sockets::connect_from(addr, client / args.per_source_ip));
        for (client, result) in (first..).zip(join_all(dials).await) {
            let stream =
                result.with_context(|| format!("client {client} cannot connect to {addr}"))?;
            streams.push(stream);
        }
        if began.elapsed() > PHASE_LIMIT {
            bail!(
                "{} connections not open after {PHASE_LIMIT:?}",
                args.connections
            );
        }
    }
    let accept = loop {
        let count = server.ask("count")?;
        if count >= args.connections {
            break began.elapsed();
        }
        if began.elapsed() > PHASE_LIMIT {
            bail!("the server accepted {count} connections in {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };

    tokio::time::sleep(SETTLE).await;
    let rss_after_kib = procfs::status_kib(pid, "VmRSS")?;
    let heap = heap_before.zip(server.heap()?);

    // Broadcast: every client waits for exactly the frame.
    let readers: Vec<_> = streams.into_iter().map(receive_frame).collect();
    let cpu_before = procfs::cpu_time(pid)?;
    let sent = Instant::now();
    let queued = server.ask("broadcast")?;
    let results = tokio::time::timeout(PHASE_LIMIT, join_all(readers))
        .await
        .context("the broadcast did not reach every connection in time")?;
    let server_cpu_broadcast = procfs::cpu_time(pid)?.saturating_sub(cpu_before);
    let mut delivered = 0;
    let mut mismatches = 0;
    let mut last = sent;
    for result in &results {
        match result {
            Ok((at, _)) => {
                delivered += 1;
                last = last.max(*at);
            }
            Err(_) => mismatches += 1,
        }
    }
    // The connections close only now: their closes are not the broadcast's cost.
    drop(results);
    Ok(Report {
        server: kind,
        connections: args.connections,
        source_ips: args.connections.div_ceil(args.per_source_ip),
        accept,
        rss_before_kib,
        rss_after_kib,
        heap,
        queued,
        delivered,
        mismatches,
        broadcast: last - sent,
        server_cpu_broadcast,
    })
}

/// Reads exactly the broadcast frame; returns when it was complete, and the
/// stream, still open.
async fn receive_frame(mut stream: TcpStream) -> anyhow::Result<(Instant, TcpStream)> {
    let mut frame = [0u8; PAYLOAD.len() + 1];
    stream.read_exact(&mut frame).await?;
    let at = Instant::now();
    if &frame[..PAYLOAD.len()] != PAYLOAD || frame[PAYLOAD.len()] != b'\n' {
        bail!("received {:?}", String::from_utf8_lossy(&frame));
    }
    Ok((at, stream))
}
