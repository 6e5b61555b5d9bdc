//! A line client, usable like `nc`: each line of stdin goes to the server as one
//! frame (line ending stripped), each frame from the server is printed as a line.
//!
//! ```text
//! printf 'hello\nworld\n' | cargo run --release -p chitchat-examples --bin echo_client
//! ```
//!
//! At the end of stdin it shuts down its write side, waits (a few seconds at most)
//! for the server to close, and exits 0. In EOF mode (`--delim eof`) stdin is sent
//! as it is, as one message, streamed as it is read, and the reply is printed as it
//! is; `--max-frame` bounds the whole message. A connection error, a message or
//! line the client or the server refuses, or a server that closes before the end of
//! stdin is reported on stderr with the address, exit code 1. Timeouts are on by
//! default (`0` turns one off); `--help` lists the flags and their defaults.

use std::future::Future;
use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use chitchat_core::{
    Addr, CloseReason, ConnEvent, Connector, Delimiter, Events, UnixAddr, WriteError,
    DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_OUTBOUND,
};
use chitchat_examples::{parse_delimiter, parse_secs, TimeoutFlags};
use chitchat_tokio::{Client, Tcp, TcpConn, TlsConn, TlsConnector, Unix};
use clap::Parser;
use futures::StreamExt;
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long to wait, once stdin is done, for the server to close: an echo server
/// closes as soon as it has replied, so this only bounds a server that does not.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Largest piece of stdin read at once in EOF mode, where the pieces are sent back
/// to back as one message: one full-size read of the engine. `--max-frame` is
/// checked on the message, not on each piece.
const EOF_PIECE: usize = 64 * 1024;

/// Pieces of stdin queued between the reading thread and the sender: enough to keep
/// the socket busy, few enough that a fast stdin waits for a slow server.
const STDIN_QUEUE: usize = 64;

/// Sends stdin line by line to a chitchat server and prints its replies.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server address: IP:PORT or HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    connect: String,

    /// Connect to this Unix socket path instead.
    #[arg(long, value_name = "PATH", conflicts_with = "connect")]
    unix: Option<String>,

    /// Speak TLS, trusting the PEM certificate authorities in this file.
    #[arg(long, value_name = "FILE", conflicts_with = "unix")]
    tls_ca: Option<std::path::PathBuf>,

    /// The name the server's certificate must carry (default: the host of
    /// --connect).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_name: Option<String>,

    /// Frame delimiter, as for echo_server: one character, `\n`, `\t`, `\0`, or
    /// `0`/`eof` for EOF mode (stdin is one message, ended by closing our side).
    #[arg(long, value_name = "CHAR", default_value = r"\n", value_parser = parse_delimiter)]
    delim: Delimiter,

    /// Give up connecting after this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    connect_timeout: Duration,

    /// Largest frame sent or accepted, in bytes (in EOF mode: the whole message).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,

    #[command(flatten)]
    timeouts: TimeoutFlags,
}

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let eof_mode = args.delim == Delimiter::Eof;

    let addr = match &args.unix {
        Some(path) => Addr::Unix(UnixAddr::path_name(path)?),
        None => resolve(&args.connect).await?,
    };

    // Stdin is read on a plain thread: a blocked read there cannot hold up the exit
    // (tokio's stdin would make the runtime wait for the user to press enter).
    let (pieces_tx, mut pieces) = mpsc::channel(STDIN_QUEUE);
    std::thread::spawn(move || read_stdin(pieces_tx, eof_mode));

    // A Unix socket cannot abandon a message halfway (it has no reset: closing it
    // ends the message), so there the message is read whole before we connect.
    let held = match eof_mode && args.unix.is_some() {
        true => Some(read_message(&mut pieces, args.max_frame).await?),
        false => None,
    };

    // A refusal or a timeout names the address; `exit_code` prints it, exit code 1.
    let builder = Client::builder(addr)
        .delimiter(args.delim)
        .max_frame_len(args.max_frame)
        // Room for a largest frame and more: a frame bigger than the queue bound
        // could never be queued.
        .max_outbound(DEFAULT_MAX_OUTBOUND.max(args.max_frame.saturating_mul(4)))
        .connect_timeout(args.connect_timeout)
        .idle_timeout(args.timeouts.read_timeout.0)
        .frame_timeout(args.timeouts.frame_timeout.0)
        .write_timeout(args.timeouts.write_timeout.0)
        .on_frame(move |_ctx, frame| print_frame(&frame, eof_mode));
    let reset = Reset::default();
    let client = match (&args.unix, &args.tls_ca) {
        (Some(_), _) => builder.connect_with(&Unix).await?,
        (None, Some(ca)) => {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let host = args
                .connect
                .rsplit_once(':')
                .map_or(&*args.connect, |(h, _)| h);
            let name = args.tls_name.as_deref().unwrap_or(host);
            let tls = TlsConnector::from_ca_pem(&pem, name).context("invalid TLS CA file")?;
            builder.connect_with(&reset.wrap(tls)).await?
        }
        (None, None) => builder.connect_with(&reset.wrap(Tcp)).await?,
    };
    let log = tokio::spawn(log_errors(client.events()));

    // EOF mode: bytes of the message so far.
    let mut message_len = 0;
    let early_close = match held {
        Some(message) => {
            message_len = message.len();
            send_all(&client, &message).await?
        }
        None => loop {
            tokio::select! {
                piece = pieces.recv() => match piece {
                    Some(Ok(payload)) => {
                        message_len += payload.len();
                        if eof_mode && message_len > args.max_frame {
                            // Part of the message is on its way: make sure the server
                            // never takes it for the whole one. Dropping the client
                            // would close it in order, which ends the message.
                            reset.arm();
                            std::mem::forget(client);
                            bail!(
                                "the message on stdin is longer than the {}-byte frame \
                                 limit (--max-frame): connection to {addr} reset, nothing \
                                 delivered",
                                args.max_frame
                            );
                        }
                        if !send(&client, &payload).await? {
                            break true;
                        }
                    }
                    Some(Err(err)) => return Err(err).context("cannot read stdin"),
                    None => break false,
                },
                // The server may close first (idle timeout, its own shutdown, a
                // frame over its limit...).
                _ = client.closed() => break true,
            }
        },
    };

    let close = if early_close {
        Some(client.closed().await)
    } else {
        // End of stdin: write out what is queued, then shut down our side, so the
        // server reads EOF (in EOF mode, the end of the message) and closes.
        let _ = client.flush().await;
        client.shutdown();
        let close = tokio::time::timeout(CLOSE_WAIT, client.closed()).await.ok();
        if close.is_none() {
            eprintln!("{addr} did not close within {CLOSE_WAIT:?}; leaving");
        }
        close
    };
    std::io::stdout().flush()?;

    // The log task ends with the event stream, right after the close event.
    let errors = if close.is_some() { log.await? } else { 0 };
    let replied = client.stats().bytes_in > 0;
    match close {
        Some(close) if close.reason != CloseReason::PeerEof => {
            eprintln!("error: connection to {addr} ended: {:?}", close.reason);
            Ok(ExitCode::FAILURE)
        }
        _ if early_close && eof_mode => {
            eprintln!(
                "error: {addr} closed the connection before the end of the message: it \
                 refused it (longer than its frame limit?)"
            );
            Ok(ExitCode::FAILURE)
        }
        _ if early_close => {
            eprintln!("error: {addr} closed the connection before the end of stdin");
            Ok(ExitCode::FAILURE)
        }
        // An EOF-mode server replies to a message once it has it whole; one that
        // closes without a word to a non-empty message did not take it.
        Some(_) if eof_mode && message_len > 0 && !replied => {
            eprintln!(
                "error: {addr} closed the connection without replying to the {message_len}-byte \
                 message: it refused it (longer than its frame limit?)"
            );
            Ok(ExitCode::FAILURE)
        }
        _ if errors > 0 => Ok(ExitCode::FAILURE),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Collects the whole EOF-mode message from stdin.
///
/// # Errors
/// When stdin cannot be read, or the message passes `limit` (nothing is sent then).
async fn read_message(
    pieces: &mut mpsc::Receiver<io::Result<Vec<u8>>>,
    limit: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut message = Vec::new();
    while let Some(piece) = pieces.recv().await {
        message.extend_from_slice(&piece.context("cannot read stdin")?);
        if message.len() > limit {
            bail!("the message on stdin is longer than the {limit}-byte frame limit (--max-frame): not sent");
        }
    }
    Ok(message)
}

/// Sends a message read whole, in pieces. `Ok(true)` when the connection closed
/// first.
async fn send_all(client: &Client, message: &[u8]) -> anyhow::Result<bool> {
    for piece in message.chunks(EOF_PIECE) {
        if !send(client, piece).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A second handle on the TCP socket under the client (plain or TLS), taken as it
/// connects: through it a connection can be made to end with a reset instead of an
/// end of stream, which a server in EOF mode would take for the end of a message.
#[derive(Clone, Default)]
struct Reset(Arc<Mutex<Option<socket2::Socket>>>);

/// A connector that hands the socket of what it dials to a [`Reset`].
struct Resettable<C> {
    inner: C,
    reset: Reset,
}

impl Reset {
    fn wrap<C>(&self, inner: C) -> Resettable<C> {
        Resettable {
            inner,
            reset: self.clone(),
        }
    }

    fn keep(&self, socket: &TcpStream) -> io::Result<()> {
        let handle = SockRef::from(socket).try_clone()?;
        *self.0.lock().unwrap() = Some(handle);
        Ok(())
    }

    /// From now on, closing the connection resets it (`SO_LINGER` 0).
    fn arm(&self) {
        if let Some(socket) = &*self.0.lock().unwrap() {
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
    }
}

/// The TCP socket under a connection, if there is one.
trait TcpSocket {
    fn tcp(&self) -> Option<&TcpStream>;
}

impl TcpSocket for TcpConn {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.stream())
    }
}

impl TcpSocket for TlsConn {
    fn tcp(&self) -> Option<&TcpStream> {
        TlsConn::tcp(self)
    }
}

impl<C: Connector> Connector for Resettable<C>
where
    C::Conn: TcpSocket,
{
    type Conn = C::Conn;

    fn connect(&self, addr: &Addr) -> impl Future<Output = io::Result<C::Conn>> + Send {
        let (dial, reset) = (self.inner.connect(addr), self.reset.clone());
        async move {
            let conn = dial.await?;
            if let Some(tcp) = conn.tcp() {
                reset.keep(tcp)?;
            }
            Ok(conn)
        }
    }
}

/// Resolves `IP:PORT` or `HOST:PORT` to the first address found.
async fn resolve(text: &str) -> anyhow::Result<Addr> {
    let mut addrs = tokio::net::lookup_host(text)
        .await
        .with_context(|| format!("cannot resolve {text}"))?;
    let addr = addrs
        .next()
        .with_context(|| format!("no address found for {text}"))?;
    Ok(addr.into())
}

/// Queues one frame, waiting for room when the outbound queue is full. `Ok(false)`
/// when the connection is closed.
async fn send(client: &Client, payload: &[u8]) -> anyhow::Result<bool> {
    loop {
        match client.try_write(payload) {
            Ok(()) => return Ok(true),
            // The socket is behind: let it take what is queued, then retry.
            Err(WriteError::OutboundFull { .. }) => {
                if client.flush().await.is_err() {
                    return Ok(false);
                }
            }
            Err(WriteError::Closed { .. }) => return Ok(false),
            // A line holding the delimiter, or longer than --max-frame: it cannot
            // be sent as one frame, and sending it in pieces would change its meaning.
            Err(err) => return Err(err.into()),
        }
    }
}

/// Prints a frame from the server: as a line, or in EOF mode as it came.
fn print_frame(frame: &[u8], eof_mode: bool) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head -1`) only means nobody wants the rest.
    let _ = stdout.write_all(frame);
    if !eof_mode {
        let _ = stdout.write_all(b"\n");
    }
}

/// Sends stdin to `pieces`: one line at a time without its `\n` or `\r\n`, or in EOF
/// mode in pieces of at most [`EOF_PIECE`] bytes, as they are.
fn read_stdin(pieces: mpsc::Sender<io::Result<Vec<u8>>>, eof_mode: bool) {
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut piece = Vec::new();
        let read = if eof_mode {
            (&mut stdin).take(EOF_PIECE as u64).read_to_end(&mut piece)
        } else {
            stdin.read_until(b'\n', &mut piece)
        };
        match read {
            Ok(0) => return,
            Ok(_) => {
                if !eof_mode {
                    strip_line_ending(&mut piece);
                }
            }
            Err(err) => {
                let _ = pieces.blocking_send(Err(err));
                return;
            }
        }
        if pieces.blocking_send(Ok(piece)).is_err() {
            return;
        }
    }
}

fn strip_line_ending(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Prints every error of the connection to stderr; returns how many there were.
async fn log_errors(mut events: Events<ConnEvent>) -> usize {
    let mut errors = 0;
    while let Some(event) = events.next().await {
        if let Some(err) = event.as_error() {
            eprintln!("error: {err}");
            errors += 1;
        }
    }
    errors
}
