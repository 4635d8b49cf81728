//! Bodies under one block, written by the session thread: up to
//! [`HOLD_MAX`] held in memory (hashed in batches, written by the commit
//! thread), larger ones written through a buffer and hashed as they arrive.

use super::budget::{BodyLease, Budget, HeldBody, Lease};
use crate::digest::Hasher;
use bytes::BytesMut;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::Arc;

/// Bodies up to this size are held in memory until whole, so that the
/// receiver can hash many of them together (their write waits too); a
/// larger one is written and hashed as it arrives. Bounds what a session
/// holds per file.
pub const HOLD_MAX: u64 = 256 << 10;

/// Small bodies are cut from shared buffers of this size (slabs), one
/// allocation for dozens of bodies instead of one each: a body is
/// allocated by the session thread and freed by the commit thread, the
/// allocator's dearest case (over 100,000 small files its functions took
/// 5.6-6.1 % of both sides' CPU, 4.5 % with these slabs). A slab is
/// reference-counted (`bytes`) and freed with its last body...
const SLAB: usize = 64 << 10;
/// ...and a body larger than this gets a buffer of its own.
const SLAB_BODY_MAX: usize = SLAB / 4;

/// The slab this session thread cuts from. The whole slab is leased from
/// the budget: it lives until its last body is dropped, so its lease is
/// shared by its bodies (and by the thread while it cuts from it) and
/// given back with the last of them. One body that outlives its
/// neighbours (which failed to verify, say) pins a whole slab, and the
/// budget counts it. The receiver's peak RSS over 100,000-300,000 small
/// files was 3-6 MiB higher with slabs: those freed by the other thread
/// are reused later than single bodies were.
struct Slab {
    rest: BytesMut,
    lease: Arc<Lease>,
}

thread_local! {
    static CURRENT: RefCell<Option<Slab>> = const { RefCell::new(None) };
}

/// A buffer for a body of `size` bytes held in memory, and what pays for
/// it in `budget`: `None` when it is over [`HOLD_MAX`] or the budget is
/// spent.
pub(super) fn hold(size: u64, budget: &Arc<Budget>) -> io::Result<Option<(BytesMut, BodyLease)>> {
    if size > HOLD_MAX {
        return Ok(None);
    }
    let size = usize::try_from(size).map_err(io::Error::other)?;
    if size > 0 && size <= SLAB_BODY_MAX {
        let cut = CURRENT.with_borrow_mut(|slot| {
            let usable = slot
                .as_ref()
                .is_some_and(|s| s.rest.capacity() >= size && s.lease.is_from(budget));
            if !usable {
                // The old slab's lease goes back with its last body.
                *slot = budget.try_lease(SLAB).map(|lease| Slab {
                    rest: BytesMut::with_capacity(SLAB),
                    lease: Arc::new(lease),
                });
            }
            let s = slot.as_mut()?;
            // `rest` keeps [size, capacity); the body gets [0, size).
            let after = s.rest.split_off(size);
            let body = std::mem::replace(&mut s.rest, after);
            Some((body, BodyLease::Slab(Arc::clone(&s.lease))))
        });
        if cut.is_some() {
            return Ok(cut);
        }
        // Not a whole slab left in the budget: maybe room for this body.
    }
    Ok(budget
        .try_lease(size)
        .map(|lease| (BytesMut::with_capacity(size), BodyLease::Own(lease))))
}

/// A small file's body, kept in memory until it is whole.
pub struct SmallWriter {
    /// Its partial; `None` for a file that gets one without a name
    /// (`O_TMPFILE`) once verified ([`super::small_file`]): a body on its
    /// way holds no descriptor and nothing open for writing.
    pub(super) file: Option<File>,
    pub(super) body: BytesMut,
    /// What pays for `body` in the receiver's memory budget.
    pub(super) lease: BodyLease,
}

/// A file under one block but over [`HOLD_MAX`]: written through a buffer
/// and hashed as it arrives. No block can complete, so there is nothing to
/// checkpoint.
pub struct StreamWriter {
    pub(super) out: BufWriter<File>,
    pub(super) md5: Hasher,
    pub(super) pos: u64,
    /// What pays for the buffer, if it is larger than the smallest.
    pub(super) _lease: Option<Lease>,
}

/// A small file's whole body, in memory.
pub struct Held {
    /// Its partial, if it has one yet (see [`SmallWriter`]).
    pub(super) file: Option<File>,
    pub(super) body: HeldBody,
}

impl Held {
    /// The partial, if it has one yet, and the body.
    pub fn into_parts(self) -> (Option<File>, HeldBody) {
        (self.file, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hold` on a thread of its own (its slab goes with the thread).
    fn on_a_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|sc| sc.spawn(f).join().expect("thread"))
    }

    #[test]
    fn a_slab_is_leased_whole_until_its_last_body_is_dropped() {
        let budget = Budget::new(1 << 20);
        let total = budget.total();
        on_a_thread(|| {
            let (a, _la) = hold(100, &budget).expect("hold").expect("room");
            assert_eq!(a.capacity(), 100);
            assert_eq!(budget.left(), total - SLAB, "the whole slab");
            let (b, lb) = hold(200, &budget).expect("hold").expect("room");
            assert_eq!(budget.left(), total - SLAB, "the same slab");
            assert_eq!(a.as_ptr().wrapping_add(100), b.as_ptr());
            // Fill the slab: the next body starts another, and a body of
            // the first one still held keeps the first one leased.
            let mut rest = Vec::new();
            while rest.len() < SLAB / SLAB_BODY_MAX + 1 {
                rest.push(
                    hold(SLAB_BODY_MAX as u64, &budget)
                        .expect("hold")
                        .expect("room"),
                );
            }
            drop(rest);
            drop((b, lb));
            assert_eq!(budget.left(), total - 2 * SLAB, "pinned by `a`");
        });
        assert_eq!(budget.left(), total, "all given back with the thread");
    }

    #[test]
    fn without_a_whole_slab_in_the_budget_a_body_pays_for_itself() {
        let budget = Budget::new(1000);
        on_a_thread(|| {
            let (body, lease) = hold(100, &budget).expect("hold").expect("room");
            assert!(matches!(lease, BodyLease::Own(_)));
            assert_eq!(budget.left(), 900);
            assert!(hold(901, &budget).expect("hold").is_none(), "spent");
            drop((body, lease));
            assert_eq!(budget.left(), 1000);
        });
        // A slab of one budget is never used for another's bodies.
        let other = Budget::new(1 << 20);
        on_a_thread(|| {
            let _a = hold(10, &other).expect("hold").expect("room");
            let big = Budget::new(1 << 20);
            let _b = hold(10, &big).expect("hold").expect("room");
            assert_eq!(other.left(), other.total() - SLAB);
            assert_eq!(big.left(), big.total() - SLAB);
        });
        assert!(hold(HOLD_MAX + 1, &other).expect("hold").is_none());
    }
}
