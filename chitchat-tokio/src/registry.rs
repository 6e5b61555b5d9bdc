//! The live connections of a server (or the one of a client), in accept order: what
//! `remote_addrs`, `write_to`, `broadcast`, `close_remote`, shutdown and the
//! partial-frame budget look through.
//!
//! Order is the accept order, kept by a sequence number, so that everything that
//! walks the connections (a broadcast, a peer list) does so in an order that depends
//! only on what happened, never on a hash seed. Lookups by peer address go through
//! a hash table that is never iterated. A connection stays registered until its task
//! ends (a closing connection still holds a socket and counts against the limits),
//! but once it is closed for the application it is no longer a peer: lists, lookups
//! and broadcasts skip it.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chitchat_core::Addr;
use hashbrown::HashTable;

use crate::handle::ConnHandle;

#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every registered connection, by accept sequence number.
    by_seq: BTreeMap<u64, ConnHandle>,
    /// The same connections, found by peer address. Never iterated: its order,
    /// which depends on a random seed, reaches nobody.
    by_peer: HashTable<ConnHandle>,
    /// A client's one connection, kept here instead of in the maps above: a tree
    /// node and a hash table for one entry would cost every client connection
    /// about 250 bytes.
    only: Option<ConnHandle>,
    /// This registry holds at most one connection, in `only`.
    single: bool,
    hasher: RandomState,
    next_seq: u64,
}

impl Inner {
    fn hash(&self, peer: &Addr) -> u64 {
        self.hasher.hash_one(peer)
    }

    /// Every registered connection, in accept order.
    fn conns(&self) -> impl Iterator<Item = &ConnHandle> {
        self.by_seq.values().chain(self.only.iter())
    }
}

impl Registry {
    /// The registry of a client: one connection at most.
    pub(crate) fn single() -> Self {
        Registry {
            inner: Mutex::new(Inner {
                single: true,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `conn` unless `max` connections are already registered.
    pub(crate) fn insert_within(&self, conn: ConnHandle, max: usize) -> bool {
        let mut inner = self.lock();
        if inner.by_seq.len() + usize::from(inner.only.is_some()) >= max {
            return false;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        conn.set_seq(seq);
        if inner.single {
            if inner.only.is_some() {
                return false;
            }
            inner.only = Some(conn);
            return true;
        }
        let hash = inner.hash(&conn.peer());
        let Inner {
            by_peer, hasher, ..
        } = &mut *inner;
        by_peer.insert_unique(hash, conn.clone(), |c| hasher.hash_one(c.peer()));
        inner.by_seq.insert(seq, conn);
        true
    }

    /// Unregisters `conn` (its task ended).
    pub(crate) fn remove(&self, conn: &ConnHandle) {
        let mut inner = self.lock();
        if inner
            .only
            .as_ref()
            .is_some_and(|only| Arc::ptr_eq(only, conn))
        {
            inner.only = None;
            return;
        }
        inner.by_seq.remove(&conn.seq());
        let hash = inner.hash(&conn.peer());
        if let Ok(entry) = inner.by_peer.find_entry(hash, |c| Arc::ptr_eq(c, conn)) {
            entry.remove();
        }
    }

    /// The open (not closing) connection from `peer`.
    pub(crate) fn get(&self, peer: &Addr) -> Option<ConnHandle> {
        let inner = self.lock();
        let usable = |c: &&ConnHandle| c.peer() == *peer && !c.is_closing();
        if inner.single {
            return inner.only.as_ref().filter(usable).cloned();
        }
        let hash = inner.hash(peer);
        inner.by_peer.find(hash, |c| usable(&c)).cloned()
    }

    /// Calls `f` with every open connection, in accept order, under the registry's
    /// lock: `f` must not call back into the registry.
    pub(crate) fn for_each_open(&self, mut f: impl FnMut(&ConnHandle)) {
        let inner = self.lock();
        for conn in inner.conns().filter(|c| !c.is_closing()) {
            f(conn);
        }
    }

    /// The peers of the open connections, in accept order.
    pub(crate) fn open_addrs(&self) -> Vec<Addr> {
        let mut addrs = Vec::new();
        self.for_each_open(|c| addrs.push(c.peer()));
        addrs
    }

    /// Wakes the tasks of the connections with these sequence numbers (their
    /// deadline has come), in the order given; gone ones are skipped.
    pub(crate) fn wake(&self, seqs: &[u64]) {
        let inner = self.lock();
        for seq in seqs {
            let only = inner.only.as_ref().filter(|c| c.seq() == *seq);
            if let Some(conn) = inner.by_seq.get(seq).or(only) {
                conn.wake_task();
            }
        }
    }

    /// Every registered connection, closing ones included, in accept order.
    pub(crate) fn all(&self) -> Vec<ConnHandle> {
        self.lock().conns().cloned().collect()
    }

    /// Registered connections, closing ones included: what holds a socket.
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.by_seq.len() + usize::from(inner.only.is_some())
    }

    /// The connection holding the most for an unfinished frame, if any holds some,
    /// leaving out those `skip` names; the earliest accepted wins a tie. `skip` is
    /// asked only about a connection that would be the largest so far, not about
    /// every connection.
    pub(crate) fn largest_partial(
        &self,
        mut skip: impl FnMut(&ConnHandle) -> bool,
    ) -> Option<(ConnHandle, usize)> {
        let inner = self.lock();
        let mut best: Option<(&ConnHandle, usize)> = None;
        for conn in inner.conns() {
            let held = conn.partial();
            if held > 0 && best.is_none_or(|(_, most)| held > most) && !skip(conn) {
                best = Some((conn, held));
            }
        }
        best.map(|(c, held)| (c.clone(), held))
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::ConnShared;

    fn conn(port: u16) -> ConnHandle {
        Arc::new(ConnShared::new(Addr::from(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            port,
        )))))
    }

    #[test]
    fn a_single_registry_holds_one_connection_and_finds_it_like_a_server_registry() {
        for registry in [Registry::single(), Registry::default()] {
            let first = conn(1);
            assert!(registry.insert_within(first.clone(), 1));
            assert!(!registry.insert_within(conn(2), 1), "over the limit");
            assert_eq!(registry.len(), 1);
            assert!(registry.get(&first.peer()).is_some());
            assert!(registry.get(&conn(2).peer()).is_none());
            assert_eq!(registry.open_addrs(), [first.peer()]);
            registry.remove(&first);
            assert_eq!(registry.len(), 0);
            assert!(registry.get(&first.peer()).is_none());
            assert!(registry.insert_within(conn(3), 1), "room again");
        }
    }

    /// Shedding asks, for each candidate, whether it is being shed already: asked
    /// about every connection, a server with many peers and a few being shed would
    /// pay for each pair on every shed.
    #[test]
    fn the_largest_holder_is_found_asking_only_about_holders_that_lead() {
        let registry = Registry::default();
        let conns: Vec<ConnHandle> = (1..=1000).map(conn).collect();
        for c in &conns {
            assert!(registry.insert_within(c.clone(), usize::MAX));
        }
        conns[10].set_partial(100);
        conns[20].set_partial(300);
        conns[30].set_partial(300);
        conns[40].set_partial(200);
        let mut asked = Vec::new();
        let (largest, held) = registry
            .largest_partial(|c| {
                asked.push(c.peer());
                Arc::ptr_eq(c, &conns[20])
            })
            .unwrap();
        // conns[20] is skipped; conns[30] ties it and is next in accept order.
        assert!(Arc::ptr_eq(&largest, &conns[30]));
        assert_eq!(held, 300);
        assert_eq!(asked.len(), 3, "asked about {} connections", asked.len());
        let expected: Vec<_> = [10, 20, 30].iter().map(|&i| conns[i].peer()).collect();
        assert_eq!(asked, expected);
        assert!(registry.largest_partial(|_| true).is_none());
    }
}
