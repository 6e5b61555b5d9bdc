//! The chat room of the `chat` binary, as a handler any chitchat server can run:
//! each line a peer sends goes to every other peer as `<name>: <line>`.
//!
//! - A newcomer gets `* welcome <addr>` (its own address, as the server sees it),
//!   the others `* <addr> joined`.
//! - `/nick NAME` (one word) renames the sender: `* you are now NAME`.
//! - `/quit` answers `* bye` and closes that peer; the others get `* <name> left`,
//!   as they do when a peer closes by itself or is dropped.
//! - `<name>` is the nick, or the address until one is chosen. Empty lines are
//!   ignored.
//!
//! Written against chitchat-core's traits only (no tokio, no sockets): the hooks
//! keep the member list for us, so there is no map of members to clean up, and
//! lines go out in the order peers joined, the same on every run.
//!
//! ```
//! use chitchat_examples::chat::ChatRoom;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = chitchat_tokio::Server::builder("127.0.0.1:0")
//!     .handler(ChatRoom)
//!     .listen()
//!     .await?;
//! println!("listening on {}", server.local_addr());
//! # server.cut().await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use chitchat_core::{CloseEvent, Frame, Handler, ReadContext, Server, ShutdownReport};

/// The chat room's handler (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatRoom;

/// What the room keeps per connection: the member's nick, once chosen.
#[derive(Debug, Default)]
pub struct Member {
    nick: Option<String>,
}

impl Member {
    /// The nick, or the address the server sees.
    fn name(&self, ctx: &dyn ReadContext) -> String {
        self.nick
            .clone()
            .unwrap_or_else(|| ctx.peer_addr().to_string())
    }
}

/// One line from a member, as the room reads it.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Nick(&'a str),
    BadNick,
    Quit,
    Say(&'a [u8]),
    Nothing,
}

fn parse(frame: &[u8]) -> Line<'_> {
    if frame.is_empty() {
        return Line::Nothing;
    }
    if frame == b"/quit" {
        return Line::Quit;
    }
    let Some(rest) = frame.strip_prefix(b"/nick") else {
        return Line::Say(frame);
    };
    let name = std::str::from_utf8(rest).map(str::trim);
    match name {
        // One word: something, no space inside, and a space after `/nick`.
        Ok(name)
            if rest.first() == Some(&b' ')
                && !name.is_empty()
                && !name.contains(char::is_whitespace) =>
        {
            Line::Nick(name)
        }
        _ if rest.first().is_some_and(|b| !b.is_ascii_whitespace()) => Line::Say(frame),
        _ => Line::BadNick,
    }
}

impl Handler for ChatRoom {
    type Conn = Member;

    fn on_open(&self, ctx: &mut dyn ReadContext, _member: &mut Member) {
        let me = ctx.peer_addr();
        let _ = ctx.reply(format!("* welcome {me}").as_bytes());
        let _ = ctx
            .peers()
            .broadcast_except(&me, format!("* {me} joined").as_bytes());
    }

    fn on_frame(&self, ctx: &mut dyn ReadContext, member: &mut Member, frame: Frame<'_>) {
        match parse(&frame) {
            Line::Nick(name) => {
                member.nick = Some(name.to_owned());
                let _ = ctx.reply(format!("* you are now {name}").as_bytes());
            }
            Line::BadNick => {
                let _ = ctx.reply(b"* usage: /nick NAME (one word)");
            }
            Line::Quit => {
                let _ = ctx.reply(b"* bye");
                ctx.close();
            }
            Line::Say(text) => {
                let mut line = member.name(ctx).into_bytes();
                line.extend_from_slice(b": ");
                line.extend_from_slice(text);
                let me = ctx.peer_addr();
                // A line longer than the frame limit once prefixed is not sent.
                let _ = ctx.peers().broadcast_except(&me, &line);
            }
            Line::Nothing => {}
        }
    }

    fn on_close(&self, ctx: &mut dyn ReadContext, member: Member, close: &CloseEvent) {
        // This connection is no longer among the peers: the others get it.
        let line = format!("* {} left", member.name(ctx));
        let _ = ctx.peers().broadcast_except(&close.peer, line.as_bytes());
    }
}

/// Runs `server` until `stop` resolves, then shuts it down, letting queued lines go
/// out for up to `grace`. Works with any backend's server.
pub async fn serve_until(
    server: &impl Server,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> ShutdownReport {
    stop.await;
    server.shutdown(grace).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_lines_are_told_apart() {
        assert_eq!(parse(b"/nick ann"), Line::Nick("ann"));
        assert_eq!(parse(b"/nick   ann  "), Line::Nick("ann"));
        assert_eq!(parse(b"/nick"), Line::BadNick);
        assert_eq!(parse(b"/nick ann lee"), Line::BadNick);
        assert_eq!(parse(b"/nick \xff"), Line::BadNick);
        assert_eq!(parse(b"/nickname"), Line::Say(b"/nickname"));
        assert_eq!(parse(b"/quit"), Line::Quit);
        assert_eq!(parse(b"/quit now"), Line::Say(b"/quit now"));
        assert_eq!(parse(b"hello"), Line::Say(b"hello"));
        assert_eq!(parse(b""), Line::Nothing);
    }
}
