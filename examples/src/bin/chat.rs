//! A line chat room: every line a peer sends goes to every other peer.
//!
//! ```text
//! cargo run --release -p chitchat-examples --bin chat -- --listen 127.0.0.1:7879
//! nc 127.0.0.1 7879      # in two or more terminals
//! ```
//!
//! The first line on stdout is `listening on ADDR`. A newcomer gets
//! `* welcome <addr>`, the others `* <addr> joined`; a line goes to the others as
//! `<name>: <line>`; `/nick NAME` renames you (`* you are now NAME`); `/quit` says
//! `* bye` and closes, and the others get `* <name> left`. SIGINT or SIGTERM shuts
//! the room down gracefully and exits 0. The room itself is
//! `chitchat_examples::chat::ChatRoom`.

use std::process::ExitCode;
use std::time::Duration;

use chitchat_core::Target;
use chitchat_examples::chat::{serve_until, ChatRoom};
use chitchat_tokio::Server;
use clap::Parser;

/// How long lines still queued may take to go out at shutdown.
const GRACE: Duration = Duration::from_secs(2);

/// Runs a chat room.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7879")]
    listen: String,
}

fn main() -> ExitCode {
    chitchat_examples::init_tracing();
    chitchat_examples::exit_code(run())
}

#[tokio::main]
async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // Installed before we say we listen, so an early signal is caught.
    let signal = chitchat_examples::stop_signal()?;
    let server = Server::builder(Target::from(args.listen))
        .handler(ChatRoom)
        .listen()
        .await?;
    println!("listening on {}", server.local_addr());
    let stop = async {
        let name = signal.await;
        eprintln!("{name}: shutting down");
    };
    let report = serve_until(&server, stop, GRACE).await;
    eprintln!(
        "stopped: {} connections closed in order, {} cut",
        report.drained, report.forced
    );
    Ok(ExitCode::SUCCESS)
}
