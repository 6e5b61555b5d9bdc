//! A fixed amount of echo work, for counting what a server spends on it rather
//! than timing it: `--clients` connections, then `--rounds` rounds in which each
//! connection sends `--depth` frames of `--size` bytes and reads them all back
//! (every byte checked) before the next connection's turn. One thread, blocking
//! sockets, no clock: the same run makes the server do the same work, so a server
//! under `valgrind --tool=callgrind` counts the same instructions whatever else
//! the machine is doing.
//!
//! ```text
//! valgrind --tool=callgrind target/release/echo_server --listen 127.0.0.1:7980 &
//! target/release/echo_rounds --connect 127.0.0.1:7980 --clients 20 --rounds 200 --depth 1
//! kill -INT %1
//! ```
//!
//! Between two turns a connection waits with nothing in flight, as a request and
//! response client does, so its server side rests once per round. Exit code 1 when
//! an echo differs or a connection fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The echo server (loopback only).
    #[arg(long, value_name = "ADDR")]
    connect: SocketAddr,

    /// Connections, opened before the first round.
    #[arg(long, value_name = "N", default_value_t = 20)]
    clients: usize,

    /// Rounds: each connection's turn once per round.
    #[arg(long, value_name = "N", default_value_t = 200)]
    rounds: usize,

    /// Frames a connection sends in its turn before reading the echoes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    depth: usize,

    /// Bytes per frame on the wire, the `\n` included.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
}

fn main() -> ExitCode {
    chitchat_examples::exit_code(run().map(|()| ExitCode::SUCCESS))
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.connect.ip().is_loopback() {
        bail!("{} is not a loopback address", args.connect);
    }
    if args.size == 0 || args.depth == 0 {
        bail!("--size and --depth must be at least 1");
    }
    let mut frame = vec![b'x'; args.size - 1];
    frame.push(b'\n');
    let turn = frame.repeat(args.depth);
    let mut conns = (0..args.clients)
        .map(|_| {
            let conn = TcpStream::connect(args.connect)?;
            conn.set_nodelay(true)?;
            Ok(conn)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("cannot connect to {}", args.connect))?;
    let mut echo = vec![0; turn.len()];
    for round in 0..args.rounds {
        for (client, conn) in conns.iter_mut().enumerate() {
            conn.write_all(&turn)?;
            conn.read_exact(&mut echo)
                .with_context(|| format!("client {client}, round {round}: no whole echo"))?;
            if echo != turn {
                bail!("client {client}, round {round}: the echo differs");
            }
        }
    }
    println!(
        "{} frames echoed on {} connections",
        args.clients * args.rounds * args.depth,
        args.clients
    );
    Ok(())
}
