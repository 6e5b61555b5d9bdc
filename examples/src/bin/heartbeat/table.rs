//! The live table of a master on a terminal: member counts, the first rows that
//! fit the screen, and the latest events, redrawn in place with ANSI escapes.
//!
//! It is kept from the master's membership changes, never by copying the master's
//! table: a change updates one entry here, and a redraw reads the master only for
//! the rows on screen (their round-trip times). So it costs nothing while nothing
//! happens (a redraw a second for the clock), whatever the cluster's size.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use chitchat_core::Addr;
use chitchat_heartbeat::{Change, Master, NodeChange, NodeId, NodeState};

/// Terminal height assumed when the terminal does not tell.
const DEFAULT_HEIGHT: usize = 24;
/// Events listed under the table.
const RECENT_EVENTS: usize = 8;
/// Redraw at least this often, for the clock in the title.
const CLOCK: Duration = Duration::from_secs(1);

/// The table, as changes made it.
pub struct Table {
    title: String,
    /// Every node the master reported, in id order, with what changes tell.
    rows: BTreeMap<NodeId, (Addr, NodeState)>,
    recent: VecDeque<String>,
    /// Something changed since the last drawing.
    dirty: bool,
    last_draw: Option<Instant>,
    /// Lines the last drawing took: how far up the next one starts.
    drawn: usize,
}

impl Table {
    pub fn new(title: String) -> Table {
        Table {
            title,
            rows: BTreeMap::new(),
            recent: VecDeque::new(),
            dirty: true,
            last_draw: None,
            drawn: 0,
        }
    }

    /// A membership change: one row moves, appears or goes.
    pub fn apply(&mut self, change: &NodeChange) {
        match &change.change {
            Change::Forgotten { .. } => {
                self.rows.remove(&change.node);
            }
            other => {
                let state = match other {
                    Change::Suspect => NodeState::Suspect,
                    Change::Dead { .. } => NodeState::Dead,
                    Change::Left => NodeState::Left,
                    _ => NodeState::Alive,
                };
                self.rows.insert(change.node.clone(), (change.addr, state));
            }
        }
        self.dirty = true;
    }

    /// An event line for the list under the table.
    pub fn note(&mut self, line: String) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
        self.dirty = true;
    }

    /// A line went to the terminal below the table: draw the next one below it.
    pub fn below_a_line(&mut self) {
        self.drawn = 0;
    }

    /// Draws if something changed, or the clock is a second old.
    pub fn draw_if_due(&mut self, master: &Master, elapsed: Duration) -> io::Result<()> {
        let clock_due = self.last_draw.is_none_or(|at| at.elapsed() >= CLOCK);
        if self.dirty || clock_due {
            self.draw(master, elapsed)?;
        }
        Ok(())
    }

    pub fn draw(&mut self, master: &Master, elapsed: Duration) -> io::Result<()> {
        let mut lines: Vec<String> = self.title.lines().map(str::to_owned).collect();
        if let Some(first) = lines.first_mut() {
            let _ = write!(first, "  [{:.1} s]", elapsed.as_secs_f64());
        }
        let counts = master.counts();
        lines.extend([
            format!(
                "members {}: {} alive, {} suspect, {} dead, {} left",
                counts.total(),
                counts.alive,
                counts.suspect,
                counts.dead,
                counts.left
            ),
            String::new(),
            format!(
                "{:<14} {:<22} {:<8} {:>10} {:>8}",
                "NODE", "ADDRESS", "STATE", "LAST RTT", "FAILURES"
            ),
        ]);
        // Room for the rows: the table must fit the screen, or the cursor cannot
        // get back up to redraw it.
        let height = terminal_height().unwrap_or(DEFAULT_HEIGHT);
        let room = height
            .saturating_sub(lines.len() + RECENT_EVENTS + 4)
            .max(1);
        let shown = if self.rows.len() > room {
            room - 1
        } else {
            self.rows.len()
        };
        for (node, (addr, state)) in self.rows.iter().take(shown) {
            // Only the rows on screen are read from the master.
            let row = master.node(node.as_str());
            let rtt = row
                .as_ref()
                .and_then(|row| row.last_rtt)
                .map_or("-".to_owned(), |rtt| {
                    format!("{:.2} ms", rtt.as_secs_f64() * 1e3)
                });
            let failures = row.as_ref().map_or(0, |row| row.failures);
            let state = row.as_ref().map_or(*state, |row| row.state);
            lines.push(format!(
                "{:<14} {:<22} {} {:>10} {:>8}",
                node.as_str(),
                addr.to_string(),
                paint(state),
                rtt,
                failures
            ));
        }
        if shown < self.rows.len() {
            lines.push(format!("... and {} more", self.rows.len() - shown));
        }
        lines.push(String::new());
        lines.push("recent events:".to_owned());
        lines.extend(self.recent.iter().cloned());

        // Line wrap off while drawing: a line wider than the terminal is cut at its
        // edge instead of taking two lines, so that each takes exactly one.
        let mut frame = String::from("\x1b[?7l");
        if self.drawn > 0 {
            // To the start of the line the last drawing began on.
            let _ = write!(frame, "\x1b[{}F", self.drawn);
        }
        for line in &lines {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str("\x1b[J\x1b[?7h");
        self.drawn = lines.len();
        self.dirty = false;
        self.last_draw = Some(Instant::now());
        let mut stdout = io::stdout().lock();
        stdout.write_all(frame.as_bytes())?;
        stdout.flush()
    }
}

/// The state word, padded to its column and coloured.
fn paint(state: NodeState) -> String {
    let color = match state {
        NodeState::Alive => "32",   // green
        NodeState::Suspect => "33", // yellow
        NodeState::Dead => "31",    // red
        NodeState::Left => "2",     // dim
    };
    format!("\x1b[{color}m{:<8}\x1b[0m", state.as_str())
}

/// The table's heading: where the master is and the timings in force.
pub fn title(master: &Master) -> String {
    let config = master.config();
    let key = if config.keyring.is_some() {
        "signed"
    } else {
        "unauthenticated"
    };
    format!(
        "heartbeat master on {} ({key})\n\
         probe every {} ms, timeout {} ms, dead after {} failed probes (within {} ms)",
        master.local_addr(),
        crate::millis(config.probe_interval),
        crate::millis(config.probe_timeout),
        config.max_failures + 1,
        crate::millis(config.detection_bound())
    )
}

/// The terminal's height in lines, if stdout is one that tells.
#[cfg(unix)]
fn terminal_height() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to
    // a live, writable one.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some(usize::from(size.ws_row))
}

#[cfg(not(unix))]
fn terminal_height() -> Option<usize> {
    None
}
