//! The HTTP face's open connections, so that idle ones cannot lock
//! anyone out: at most [`MAX_ALL`] in all and [`MAX_PER_ADDR`] from one
//! address (an IPv6 address by its /64). A newcomer over either cap
//! closes the oldest connection that is not answering a request (of its
//! own address first), as the ftx gate does with waiting handshakes; a
//! connection sending a body is never closed for a newcomer. (hyper closes
//! any connection that has not sent a whole request head within 10 s.)

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Open HTTP connections at most.
pub(crate) const MAX_ALL: usize = 16_384;
/// ... and from one address.
pub(crate) const MAX_PER_ADDR: usize = 1_024;

struct Entry {
    key: IpAddr,
    busy: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    live: HashMap<u64, Entry>,
    per_addr: HashMap<IpAddr, usize>,
    /// Ids in arrival order (ids of closed connections are skipped).
    order: VecDeque<u64>,
}

/// The registry.
#[derive(Default)]
pub(crate) struct Conns {
    inner: Mutex<Inner>,
}

/// A connection's place in the registry: requests in flight on it
/// (`busy`), the signal that closes it (`kill`); dropping it leaves.
pub(crate) struct Ticket {
    id: u64,
    conns: Arc<Conns>,
    /// Requests (and bodies) in flight on the connection.
    pub(crate) busy: Arc<AtomicUsize>,
    /// Notified when a newcomer needs its place.
    pub(crate) kill: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut i) = self.conns.inner.lock() {
            if let Some(e) = i.live.remove(&self.id) {
                i.forget(e.key);
            }
        }
    }
}

impl Inner {
    fn forget(&mut self, key: IpAddr) {
        if let Some(n) = self.per_addr.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&key);
            }
        }
    }

    /// Closes the oldest idle connection (of `key`, if given); false if
    /// there is none.
    fn evict(&mut self, key: Option<IpAddr>) -> bool {
        let mut i = 0;
        while i < self.order.len() {
            let id = self.order[i];
            let Some(e) = self.live.get(&id) else {
                // Gone already: drop its place in the order.
                self.order.remove(i);
                continue;
            };
            let idle = e.busy.load(Ordering::SeqCst) == 0;
            if idle && key.is_none_or(|k| k == e.key) {
                self.order.remove(i);
                if let Some(e) = self.live.remove(&id) {
                    e.kill.notify_one();
                    self.forget(e.key);
                }
                return true;
            }
            i += 1;
        }
        false
    }
}

impl Conns {
    /// Registers a connection from `ip`, closing idle ones over the caps.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Ticket {
        let key = crate::front::addr_key(ip);
        let busy = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        let mut id = 0;
        if let Ok(mut i) = self.inner.lock() {
            id = i.next;
            i.next += 1;
            while i.per_addr.get(&key).copied().unwrap_or(0) >= MAX_PER_ADDR {
                if !i.evict(Some(key)) {
                    break;
                }
            }
            while i.live.len() >= MAX_ALL {
                if !i.evict(None) {
                    break;
                }
            }
            i.live.insert(
                id,
                Entry {
                    key,
                    busy: Arc::clone(&busy),
                    kill: Arc::clone(&kill),
                },
            );
            *i.per_addr.entry(key).or_insert(0) += 1;
            i.order.push_back(id);
        }
        Ticket {
            id,
            conns: Arc::clone(self),
            busy,
            kill,
        }
    }

    /// Open connections now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.live.len())
    }
}

/// Counts a request (and its body) in flight while it lives.
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// One more in flight on the connection of `counter`.
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Busy {
        counter.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(counter))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_place_and_busy_ones_stay() {
        let conns = Arc::new(Conns::default());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let first = conns.admit(ip);
        let _working = Busy::new(&first.busy);
        let mut tickets = Vec::new();
        for _ in 0..MAX_PER_ADDR + 10 {
            tickets.push(conns.admit(ip));
        }
        assert_eq!(conns.len(), MAX_PER_ADDR);
        // The busy one was never closed; the ten oldest idle ones were.
        assert!(conns
            .inner
            .lock()
            .expect("lock")
            .live
            .contains_key(&first.id));
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let _o = conns.admit(other);
        assert_eq!(conns.len(), MAX_PER_ADDR + 1);
        drop(tickets);
        assert_eq!(conns.len(), 2);
    }
}
