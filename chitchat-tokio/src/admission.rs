//! Who may connect: the server's connection limits, checked at accept before any
//! allocation, in total and per source IP.
//!
//! A single source holding every slot (or thousands of slow-but-valid connections)
//! is the cheapest way to lock a server out; the per-IP share bounds what one
//! address can hold, the total bounds memory and file descriptors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chitchat_core::Addr;

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds `max_connections` already.
    Total(usize),
    /// The peer's IP holds `max_connections_per_ip` already.
    PerIp(usize),
}

#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_ip: usize,
    /// Connections held per source IP. Looked up, never iterated.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            max_total,
            max_per_ip,
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    fn per_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    /// Takes a slot for `peer` while `open` connections are held, or says which
    /// limit refuses it. Every admitted peer is [`release`](Self::release)d once.
    pub(crate) fn admit(&self, peer: &Addr, open: usize) -> Result<(), Refusal> {
        if open >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        let Some(ip) = peer.as_inet().map(|a| a.ip()) else {
            return Ok(());
        };
        let mut per_ip = self.per_ip();
        let held = per_ip.entry(ip).or_insert(0);
        if *held >= self.max_per_ip {
            return Err(Refusal::PerIp(self.max_per_ip));
        }
        *held += 1;
        Ok(())
    }

    /// Gives back the slot `peer` took.
    pub(crate) fn release(&self, peer: &Addr) {
        let Some(ip) = peer.as_inet().map(|a| a.ip()) else {
            return;
        };
        let mut per_ip = self.per_ip();
        if let Some(held) = per_ip.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ip_gets_its_share_and_gets_it_back() {
        let admission = Admission::new(10, 2);
        let a: Addr = "10.0.0.1:1".parse().unwrap();
        let a2: Addr = "10.0.0.1:2".parse().unwrap();
        let b: Addr = "10.0.0.2:1".parse().unwrap();
        assert_eq!(admission.admit(&a, 0), Ok(()));
        assert_eq!(admission.admit(&a2, 1), Ok(()));
        assert_eq!(admission.admit(&a, 2), Err(Refusal::PerIp(2)));
        assert_eq!(admission.admit(&b, 2), Ok(()));
        admission.release(&a);
        assert_eq!(admission.admit(&a, 3), Ok(()));
        assert_eq!(admission.admit(&b, 10), Err(Refusal::Total(10)));
        for peer in [a, a2, b] {
            admission.release(&peer);
        }
        assert!(admission.per_ip().is_empty());
    }

    #[test]
    fn unix_peers_count_only_in_the_total() {
        let admission = Admission::new(3, 1);
        let unix: Addr = "unix:@x".parse().unwrap();
        for open in 0..3 {
            assert_eq!(admission.admit(&unix, open), Ok(()));
        }
        assert_eq!(admission.admit(&unix, 3), Err(Refusal::Total(3)));
    }
}
