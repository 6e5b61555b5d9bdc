//! From the library's event streams to what a person reads: the streams of a
//! process merged into one channel, each event turned into an
//! `event node=.. state=.. at_ms=..` line (or a row change of the live table), and
//! errors and warnings as one stderr line each.

use std::io::{self, Write};
use std::time::Instant;

use chitchat_core::Addr;
use chitchat_heartbeat::{Change, Events, Master, MasterEvent, NodeChange, NodeEvent, NodeId};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::millis;
use crate::table::Table;

/// One event of any stream of the process, as the printing loop receives it.
pub enum Note {
    /// From the master.
    Master(MasterEvent),
    /// From the node `id`.
    Node { id: NodeId, event: NodeEvent },
    /// A stream read too slowly lost events.
    Lost(String),
}

/// Copies a master's events to `tx` until the master has shut down.
pub fn forward_master(
    mut events: Events<MasterEvent>,
    tx: mpsc::UnboundedSender<Note>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let _ = tx.send(Note::Master(event));
        }
        if events.dropped() > 0 {
            let lost = format!(
                "{} master events were lost: they came faster than they were printed",
                events.dropped()
            );
            let _ = tx.send(Note::Lost(lost));
        }
    })
}

/// Copies node `id`'s events to `tx` until it stops.
pub fn forward_node(
    id: NodeId,
    mut events: Events<NodeEvent>,
    tx: mpsc::UnboundedSender<Note>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let _ = tx.send(Note::Node {
                id: id.clone(),
                event,
            });
        }
    })
}

/// One state line, with what a person wants to read beside it on a terminal.
pub struct Line {
    pub node: String,
    pub state: &'static str,
    pub at: Instant,
    /// The master a node's line is about.
    pub master: Option<Addr>,
    /// Evidence and context, shown on the live table only.
    pub detail: String,
}

impl Line {
    /// `event node=<id> state=<word> at_ms=<ms>`, and ` master=<addr>` for a node's
    /// view of a master.
    pub fn text(&self, start: Instant) -> String {
        let at_ms = millis(self.at.saturating_duration_since(start));
        let mut text = format!(
            "event node={} state={} at_ms={at_ms}",
            self.node, self.state
        );
        if let Some(master) = self.master {
            text.push_str(&format!(" master={master}"));
        }
        text
    }
}

/// A master's view of a node, as a line.
fn change_line(change: &NodeChange) -> Line {
    let detail = match &change.change {
        Change::Dead { evidence } => {
            let last = evidence
                .last_success_age
                .map_or("never answered".to_owned(), |age| {
                    format!("last answer {:.1} s before", age.as_secs_f64())
                });
            format!("  ({} misses, {last})", evidence.failures)
        }
        Change::Alive { from } => format!("  (was {from})"),
        Change::Joined {
            replaced: Some(old),
        } => format!("  (replaced incarnation {old})"),
        Change::Forgotten { from, .. } => format!("  (was {from})"),
        _ => String::new(),
    };
    Line {
        node: change.node.to_string(),
        state: change.change.as_str(),
        at: change.at,
        master: None,
        detail: format!("  {}{detail}", change.addr),
    }
}

/// A node's view of one of its masters, as a line; `None` for what is not a state
/// (errors, refusals).
fn node_line(id: &NodeId, event: &NodeEvent) -> Option<Line> {
    let (state, detail) = match event {
        // The word a person reads: the master accepted us.
        NodeEvent::Registered { .. } => ("joined", String::new()),
        NodeEvent::Renewed { from, to, .. } => {
            ("renewed", format!("  (incarnation {from} -> {to})"))
        }
        NodeEvent::MasterLost { silent_for, .. } => (
            "master-lost",
            format!("  (no probe for {:.1} s)", silent_for.as_secs_f64()),
        ),
        NodeEvent::MasterBack { lost_for, .. } => (
            "master-back",
            format!("  (after {:.1} s)", lost_for.as_secs_f64()),
        ),
        _ => return None,
    };
    Some(Line {
        node: id.to_string(),
        state,
        at: event.at(),
        master: event.master(),
        detail,
    })
}

/// Where notes go: one line each on stdout, or the live table on a terminal; errors
/// and warnings to stderr.
pub struct Output {
    start: Instant,
    table: Option<Table>,
    /// Whether a node's acceptance is a line of its own (not when its master's
    /// `joined` is printed by the same process).
    node_joins: bool,
}

impl Output {
    pub fn new(start: Instant, table: Option<Table>, node_joins: bool) -> Output {
        Output {
            start,
            table,
            node_joins,
        }
    }

    pub fn is_live(&self) -> bool {
        self.table.is_some()
    }

    /// Shows `note`; returns its state line, if it has one.
    pub fn show(&mut self, note: Note) -> io::Result<Option<Line>> {
        let line = match note {
            Note::Master(MasterEvent::Changed(change)) => {
                if let Some(table) = &mut self.table {
                    table.apply(&change);
                }
                Some(change_line(&change))
            }
            Note::Master(MasterEvent::Stalled(stall)) => {
                self.stderr("warning", &format!(
                    "the master ran {:.0} ms late (its runtime stalled); the probes it missed were not counted",
                    stall.drift.as_secs_f64() * 1e3
                ));
                None
            }
            Note::Master(MasterEvent::Error { error, .. }) => {
                self.stderr("error", &error.to_string());
                None
            }
            Note::Master(MasterEvent::Connection { error, .. }) => {
                self.stderr("error", &sentence(&anyhow::Error::from(error)));
                None
            }
            Note::Master(_) => None,
            Note::Node { id, event } => match &event {
                NodeEvent::Registered { .. } if !self.node_joins => None,
                NodeEvent::Refused { master, reason, .. } => {
                    self.stderr(
                        "error",
                        &format!("master {master} refused node {id}: {reason}"),
                    );
                    None
                }
                NodeEvent::Error { error, .. } => {
                    self.stderr("error", &format!("node {id}: {error}"));
                    None
                }
                NodeEvent::Connection { error, .. } => {
                    let error = sentence(&anyhow::Error::from(error.clone()));
                    self.stderr("error", &format!("node {id}: {error}"));
                    None
                }
                _ => node_line(&id, &event),
            },
            Note::Lost(text) => {
                self.stderr("warning", &text);
                None
            }
        };
        if let Some(line) = &line {
            match &mut self.table {
                Some(table) => {
                    let secs = millis(line.at.saturating_duration_since(self.start)) as f64 / 1e3;
                    table.note(format!(
                        "{secs:>8.3} s  {:<14} {:<12}{}",
                        line.node, line.state, line.detail
                    ));
                }
                None => {
                    let mut stdout = io::stdout().lock();
                    writeln!(stdout, "{}", line.text(self.start))?;
                    stdout.flush()?;
                }
            }
        }
        Ok(line)
    }

    fn stderr(&mut self, kind: &str, text: &str) {
        eprintln!("{kind}: {text}");
        if let Some(table) = &mut self.table {
            table.below_a_line();
        }
    }

    /// Waits for `forwarder` to end, then shows the notes still in `rx`.
    pub async fn show_rest(
        &mut self,
        forwarder: JoinHandle<()>,
        rx: &mut mpsc::UnboundedReceiver<Note>,
    ) -> anyhow::Result<()> {
        forwarder.await?;
        while let Some(note) = rx.recv().await {
            self.show(note)?;
        }
        Ok(())
    }

    /// Redraws the live table if something changed (or its clock is due).
    pub fn draw(&mut self, master: &Master) -> io::Result<()> {
        match &mut self.table {
            Some(table) => table.draw_if_due(master, self.start.elapsed()),
            None => Ok(()),
        }
    }

    /// Draws the live table one last time, and leaves the cursor below it.
    pub fn finish(&mut self, master: &Master) -> io::Result<()> {
        if let Some(table) = &mut self.table {
            table.draw(master, self.start.elapsed())?;
            println!();
        }
        Ok(())
    }
}

/// An error and its causes, each said once: library errors already include their
/// cause in their message, others (the engine's, for now) leave it to `source()`.
pub fn sentence(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
