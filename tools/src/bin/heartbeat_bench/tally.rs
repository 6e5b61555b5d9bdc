//! The line a node process (or a floor's prober) prints every second: where its
//! nodes stand, and the probes they answered.

use chitchat_heartbeat::MemberStatus;

/// Where a node process's nodes stand, and the probes they answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) registered: u64,
    pub(crate) registering: u64,
    pub(crate) master_lost: u64,
    pub(crate) refused: u64,
    pub(crate) stopped: u64,
    pub(crate) probes_answered: u64,
}

impl Tally {
    pub(crate) fn count(&mut self, status: MemberStatus, probes_answered: u64) {
        match status {
            MemberStatus::Registered => self.registered += 1,
            MemberStatus::Registering => self.registering += 1,
            MemberStatus::MasterLost => self.master_lost += 1,
            MemberStatus::Refused(_) => self.refused += 1,
            // Stopped, or a state this tool does not know yet.
            _ => self.stopped += 1,
        }
        self.probes_answered += probes_answered;
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "tally registered={} registering={} master-lost={} refused={} stopped={} probes={}",
            self.registered,
            self.registering,
            self.master_lost,
            self.refused,
            self.stopped,
            self.probes_answered
        )
    }

    pub(crate) fn parse(line: &str) -> Option<Tally> {
        let mut tally = Tally::default();
        let mut fields = line.strip_prefix("tally ")?.split(' ');
        for (name, slot) in [
            ("registered", &mut tally.registered),
            ("registering", &mut tally.registering),
            ("master-lost", &mut tally.master_lost),
            ("refused", &mut tally.refused),
            ("stopped", &mut tally.stopped),
            ("probes", &mut tally.probes_answered),
        ] {
            *slot = fields
                .next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()?;
        }
        Some(tally)
    }
}

/// Tallies added up field by field: several node processes' as one.
impl std::iter::Sum for Tally {
    fn sum<I: Iterator<Item = Tally>>(tallies: I) -> Tally {
        tallies.fold(Tally::default(), |sum, last| Tally {
            registered: sum.registered + last.registered,
            registering: sum.registering + last.registering,
            master_lost: sum.master_lost + last.master_lost,
            refused: sum.refused + last.refused,
            stopped: sum.stopped + last.stopped,
            probes_answered: sum.probes_answered + last.probes_answered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_lines_round_trip() {
        let tally = Tally {
            registered: 5,
            registering: 1,
            master_lost: 2,
            refused: 0,
            stopped: 3,
            probes_answered: 123_456,
        };
        assert_eq!(Tally::parse(&tally.line()), Some(tally));
        assert_eq!(Tally::parse("started 6000"), None);
    }
}
