//! The live connections of a server, by peer address: what `remote_addrs`,
//! `write_to`, `close_remote`, shutdown and the partial-frame budget look through.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use chitchat_core::Addr;

use crate::handle::ConnHandle;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<HashMap<Addr, ConnHandle>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<Addr, ConnHandle>> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `conn` unless `max` connections are already registered.
    pub(crate) fn insert_within(&self, conn: ConnHandle, max: usize) -> bool {
        let mut conns = self.lock();
        if conns.len() >= max {
            return false;
        }
        conns.insert(conn.peer, conn);
        true
    }

    /// Unregisters `conn` (and not a newer connection from the same address).
    pub(crate) fn remove(&self, conn: &ConnHandle) {
        let mut conns = self.lock();
        if conns
            .get(&conn.peer)
            .is_some_and(|c| std::sync::Arc::ptr_eq(c, conn))
        {
            conns.remove(&conn.peer);
        }
    }

    pub(crate) fn get(&self, peer: &Addr) -> Option<ConnHandle> {
        self.lock().get(peer).cloned()
    }

    pub(crate) fn all(&self) -> Vec<ConnHandle> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn addrs(&self) -> Vec<Addr> {
        self.lock().keys().copied().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The connection holding the most for an unfinished frame, if any holds some,
    /// leaving out those `skip` names.
    pub(crate) fn largest_partial(
        &self,
        skip: impl Fn(&ConnHandle) -> bool,
    ) -> Option<(ConnHandle, usize)> {
        self.lock()
            .values()
            .filter(|c| !skip(c))
            .map(|c| (c, c.partial.load(Ordering::Relaxed)))
            .filter(|&(_, held)| held > 0)
            .max_by_key(|&(_, held)| held)
            .map(|(c, held)| (c.clone(), held))
    }
}
