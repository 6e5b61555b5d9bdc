//! When connection tasks must look at their deadlines again: one timer for all the
//! connections of a server, instead of one per connection.
//!
//! A connection task arms the nearest of its deadlines (idle, frame, write, linger)
//! here. The index keeps `(deadline, accept sequence)` pairs in order and one tokio
//! timer for the earliest; the task that sweeps it (a server's sweeper task, or a
//! client's one connection task) wakes each connection whose deadline has come, in
//! deadline then accept order, so that what handlers see depends only on what
//! happened. The connection then checks its deadlines itself: the index only says
//! when to look.
//!
//! An idle connection costs an entry here (16 bytes in a B-tree) instead of a
//! boxed tokio timer (128 bytes with the allocator's share). As with one timer per
//! connection, a deadline that moves later (every read moves the idle deadline)
//! does not touch the index: the task is woken at the old deadline, finds nothing
//! due, and arms the new one.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use tokio::time::{sleep_until, Instant, Sleep};

use crate::clock::{Epoch, Stamp};

/// Who wakes the connections whose deadline has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sweeper {
    /// A task of its own: a server, with many connections.
    Task,
    /// The one connection's own task: a client.
    Connection,
}

pub(crate) struct Deadlines {
    epoch: Epoch,
    sweeper: Sweeper,
    inner: Mutex<Inner>,
}

/// Armed deadlines with the accept sequence of their connection, earliest first.
enum Armed {
    Many(BTreeSet<(Stamp, u64)>),
    /// A client's one connection: no tree node for a single entry.
    One(Option<(Stamp, u64)>),
}

impl Armed {
    fn insert(&mut self, entry: (Stamp, u64)) {
        match self {
            Armed::Many(set) => {
                set.insert(entry);
            }
            Armed::One(one) => *one = Some(entry),
        }
    }

    fn remove(&mut self, entry: (Stamp, u64)) {
        match self {
            Armed::Many(set) => {
                set.remove(&entry);
            }
            Armed::One(one) => {
                if *one == Some(entry) {
                    *one = None;
                }
            }
        }
    }

    fn first(&self) -> Option<(Stamp, u64)> {
        match self {
            Armed::Many(set) => set.first().copied(),
            Armed::One(one) => *one,
        }
    }

    fn pop_first(&mut self) {
        match self {
            Armed::Many(set) => {
                set.pop_first();
            }
            Armed::One(one) => *one = None,
        }
    }
}

struct Inner {
    armed: Armed,
    /// The timer for the earliest, once one was needed.
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline `timer` was last polled for; `None` while nothing is armed.
    timer_at: Option<Stamp>,
    /// The sweeping task, to wake when an earlier deadline is armed.
    waker: Option<Waker>,
}

impl Deadlines {
    pub(crate) fn new(epoch: Epoch, sweeper: Sweeper) -> Self {
        Deadlines {
            epoch,
            sweeper,
            inner: Mutex::new(Inner {
                armed: match sweeper {
                    Sweeper::Task => Armed::Many(BTreeSet::new()),
                    Sweeper::Connection => Armed::One(None),
                },
                timer: None,
                timer_at: None,
                waker: None,
            }),
        }
    }

    pub(crate) fn sweeper(&self) -> Sweeper {
        self.sweeper
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes sure connection `seq` is woken at `deadline` or before. `armed` is what
    /// the connection armed last (kept by its task). An armed deadline that is
    /// earlier and still ahead stays: the task is woken then and arms again.
    /// Returns true when `deadline` has already come.
    pub(crate) fn arm(
        &self,
        seq: u64,
        armed: &mut Option<Stamp>,
        deadline: Stamp,
        now: Stamp,
    ) -> bool {
        if deadline <= now {
            return true;
        }
        if armed.is_some_and(|at| at <= deadline && at > now) {
            return false;
        }
        let mut inner = self.lock();
        if let Some(old) = armed.take() {
            inner.armed.remove((old, seq));
        }
        inner.armed.insert((deadline, seq));
        *armed = Some(deadline);
        // The sweeper sleeps until later (or not at all): it must look again.
        let sooner = inner.timer_at.is_none_or(|at| deadline < at);
        let waker = if sooner { inner.waker.take() } else { None };
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        false
    }

    /// Forgets what connection `seq` armed (its task is ending).
    pub(crate) fn disarm(&self, seq: u64, armed: &mut Option<Stamp>) {
        if let Some(at) = armed.take() {
            self.lock().armed.remove((at, seq));
        }
    }

    /// For the sweeping task: takes the deadlines that have come and calls `due`
    /// with their connection's sequence, earliest first; arms the timer for the
    /// next and registers `cx`'s waker. Returns once the timer is pending.
    pub(crate) fn poll_sweep(&self, cx: &mut Context<'_>, mut due: impl FnMut(&[u64])) {
        let mut came = Vec::new();
        loop {
            let now = self.epoch.stamp(Instant::now());
            let mut inner = self.lock();
            while let Some((at, seq)) = inner.armed.first() {
                if at > now {
                    break;
                }
                inner.armed.pop_first();
                came.push(seq);
            }
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            let next = inner.armed.first().map(|(at, _)| at);
            inner.timer_at = next;
            let fired = match next {
                None => false,
                Some(at) => {
                    let at = self.epoch.instant(at);
                    let timer = inner.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    timer.as_mut().poll(cx).is_ready()
                }
            };
            drop(inner);
            if !came.is_empty() {
                due(&came);
                came.clear();
            }
            if !fired {
                return;
            }
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // The sweeper task holds the hub weakly: woken, it finds it gone and ends.
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn swept(deadlines: &Deadlines, waker: &Waker) -> Vec<u64> {
        let mut cx = Context::from_waker(waker);
        let mut came = Vec::new();
        deadlines.poll_sweep(&mut cx, |seqs| came.extend_from_slice(seqs));
        came
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_in_deadline_then_accept_order_and_keeps_an_earlier_deadline() {
        let epoch = Epoch::now();
        let deadlines = Deadlines::new(epoch, Sweeper::Task);
        let counter = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let now = epoch.stamp(Instant::now());
        let at = |ms| epoch.stamp(Instant::now() + Duration::from_millis(ms));
        let mut armed = [None; 4];
        assert!(!deadlines.arm(3, &mut armed[3], at(20), now));
        assert!(!deadlines.arm(1, &mut armed[1], at(20), now));
        assert!(!deadlines.arm(2, &mut armed[2], at(10), now));
        // Later than what is armed: nothing moves.
        assert!(!deadlines.arm(2, &mut armed[2], at(50), now));
        assert_eq!(armed[2], Some(at(10)));
        assert!(deadlines.arm(0, &mut armed[0], now, now), "due already");
        assert!(swept(&deadlines, &waker).is_empty());

        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(swept(&deadlines, &waker), [2, 1, 3]);
        // Nothing left: no timer, and arming again wakes the sweeper.
        let wakes = counter.0.load(Ordering::Relaxed);
        let now = epoch.stamp(Instant::now());
        assert!(!deadlines.arm(2, &mut armed[2], at(5), now));
        assert_eq!(counter.0.load(Ordering::Relaxed), wakes + 1);
        deadlines.disarm(2, &mut armed[2]);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(swept(&deadlines, &waker).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_sweeping_its_own_deadline_keeps_the_earliest() {
        let epoch = Epoch::now();
        let deadlines = Deadlines::new(epoch, Sweeper::Connection);
        let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
        let now = epoch.stamp(Instant::now());
        let at = |ms| epoch.stamp(Instant::now() + Duration::from_millis(ms));
        let mut armed = None;
        assert!(!deadlines.arm(0, &mut armed, at(30), now));
        assert!(!deadlines.arm(0, &mut armed, at(10), now));
        assert!(swept(&deadlines, &waker).is_empty());
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(swept(&deadlines, &waker), [0]);
        tokio::time::advance(Duration::from_millis(30)).await;
        assert!(
            swept(&deadlines, &waker).is_empty(),
            "the later one was replaced"
        );
    }
}
