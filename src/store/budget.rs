//! One memory budget for the whole receiver: every body byte held in
//! memory (small bodies waiting to be hashed and written, the write
//! buffers of larger ones, the buffers of a pipeline) is leased from it,
//! so many sessions together cannot hold more than it, whatever their
//! peers send. A body that finds the budget spent is streamed to disk
//! through a small buffer instead, or waits for buffers to come back.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The default budget: 32 MiB for all sessions together.
pub const DEFAULT_BYTES: usize = 32 << 20;

/// The receiver-wide budget.
#[derive(Debug)]
pub struct Budget {
    left: Mutex<Left>,
    returned: Condvar,
    total: usize,
}

/// Bytes not leased, and how many wait for some to come back (a lease
/// given back wakes them only when there are: a wake-up is a system call).
#[derive(Debug)]
struct Left {
    bytes: usize,
    waiting: usize,
}

/// Bytes leased from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            left: Mutex::new(Left { bytes, waiting: 0 }),
            returned: Condvar::new(),
            total: bytes,
        })
    }

    /// The whole budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not leased right now.
    pub fn left(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Left> {
        self.left.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leases `bytes` if they are free now.
    pub fn try_lease(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let mut left = self.lock();
        if left.bytes < bytes {
            return None;
        }
        left.bytes -= bytes;
        Some(Lease {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Leases `bytes`, waiting up to `wait` for them to be given back.
    /// `None` when they were not (or never can be: more than the whole).
    pub fn lease(self: &Arc<Self>, bytes: usize, wait: Duration) -> Option<Lease> {
        if bytes > self.total {
            return None;
        }
        let deadline = Instant::now() + wait;
        let mut left = self.lock();
        while left.bytes < bytes {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            left.waiting += 1;
            left = self
                .returned
                .wait_timeout(left, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            left.waiting -= 1;
        }
        left.bytes -= bytes;
        Some(Lease {
            budget: Arc::clone(self),
            bytes,
        })
    }
}

impl Lease {
    /// Bytes leased.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether it was leased from `budget`.
    pub fn is_from(&self, budget: &Arc<Budget>) -> bool {
        Arc::ptr_eq(&self.budget, budget)
    }
}

/// What pays for a body held in memory: a lease of its own, or a share of
/// the lease of the slab it was cut from (given back with the slab's last
/// body: see [`super::small`]).
#[derive(Debug, Default)]
pub enum BodyLease {
    #[default]
    None,
    Own(Lease),
    Slab(Arc<Lease>),
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut left = self.budget.lock();
        left.bytes += self.bytes;
        if left.waiting > 0 {
            self.budget.returned.notify_all();
        }
    }
}

/// A body held in memory, with the lease that pays for it.
#[derive(Debug, Default)]
pub struct HeldBody {
    bytes: bytes::BytesMut,
    _lease: BodyLease,
}

impl HeldBody {
    /// `bytes`, paid for by `lease`.
    pub fn new(bytes: bytes::BytesMut, lease: BodyLease) -> HeldBody {
        HeldBody {
            bytes,
            _lease: lease,
        }
    }
}

impl std::ops::Deref for HeldBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_come_back_when_dropped() {
        let b = Budget::new(100);
        let a = b.try_lease(60).expect("60 of 100");
        assert!(b.try_lease(41).is_none(), "only 40 left");
        let c = b.try_lease(40).expect("40 left");
        assert_eq!(b.left(), 0);
        drop(a);
        assert_eq!(b.left(), 60);
        drop(c);
        assert_eq!(b.left(), 100);
        assert!(
            b.lease(101, Duration::ZERO).is_none(),
            "more than the whole"
        );
    }

    #[test]
    fn a_waiting_lease_gets_what_another_thread_gives_back() {
        let b = Budget::new(10);
        let held = b.try_lease(10).expect("all of it");
        let b2 = Arc::clone(&b);
        let waiter = std::thread::spawn(move || b2.lease(5, Duration::from_secs(10)).is_some());
        drop(held);
        assert!(waiter.join().expect("waiter"), "the waiter got its lease");
        assert!(b.lease(11, Duration::from_millis(1)).is_none());
        let _all = b.try_lease(10).expect("all back");
        assert!(b.lease(1, Duration::from_millis(20)).is_none(), "times out");
    }
}
