//! Small bodies cut from shared buffers (slabs): one allocation for dozens
//! of small files instead of one each.
//!
//! A small file's body is made by one thread and dropped by another (on
//! the sender, read by the look-ahead thread and dropped by the session
//! thread once sent; on the receiver, held by the session thread and
//! dropped by the commit thread once written), the allocator's dearest
//! case: over 100,000 small files the allocator's functions took 6.1 %
//! of both sides' CPU, 3.4 % with slabs. A slab is reference-counted
//! ([`bytes`]) and freed with its last body; each thread keeps at most the
//! rest of one slab between bodies. The receiver cuts its own slabs and
//! leases each whole from its memory budget ([`crate::store::small`]): a
//! peer can make one body pin a whole slab (the bodies around it failing
//! to verify), and the budget must count what is really held. The
//! receiver's peak RSS over 100,000 to 300,000 small files was 3-6 MiB
//! higher with slabs: those freed by the other thread are reused later
//! than single bodies were.

use bytes::{Bytes, BytesMut};
use std::cell::RefCell;

/// The size of a slab...
pub const SLAB: usize = 64 << 10;
/// ...and of the largest body cut from one; a larger one gets a buffer of
/// its own.
pub const BODY_MAX: usize = SLAB / 4;

thread_local! {
    /// The rest of this thread's current slab: empty, with room.
    static REST: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// An empty buffer with room for `size` bytes, cut from this thread's slab
/// when it is at most [`BODY_MAX`].
pub fn buffer(size: usize) -> BytesMut {
    if size == 0 || size > BODY_MAX {
        return BytesMut::with_capacity(size);
    }
    REST.with_borrow_mut(|rest| {
        if rest.capacity() < size {
            *rest = BytesMut::with_capacity(SLAB);
        }
        // `rest` keeps [size, capacity); the body gets [0, size), empty.
        let after = rest.split_off(size);
        std::mem::replace(rest, after)
    })
}

/// A copy of `data`, cut from this thread's slab when small.
pub fn copy(data: &[u8]) -> Bytes {
    let mut b = buffer(data.len());
    b.extend_from_slice(data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_a_slab_and_keep_their_bytes() {
        let a = copy(b"first");
        let b = copy(b"second body");
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second body");
        // Cut from one allocation, one after the other.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        // A buffer never grows into the next body's bytes.
        let mut c = buffer(3);
        c.extend_from_slice(b"abc");
        let d = copy(b"xyz");
        c.extend_from_slice(b"defgh");
        assert_eq!(&c[..], b"abcdefgh");
        assert_eq!(&d[..], b"xyz");
        drop((a, b));
        assert_eq!(&d[..], b"xyz", "a slab lives while a body does");
    }

    #[test]
    fn large_and_empty_bodies_get_their_own_buffers() {
        let big = vec![7u8; BODY_MAX + 1];
        let a = copy(&big);
        assert_eq!(&a[..], &big[..]);
        let b = copy(b"small");
        assert_ne!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        assert!(copy(b"").is_empty());
        // A slab's rest too small for a body: a new slab.
        let many: Vec<Bytes> = (0..10).map(|i| copy(&[i as u8; BODY_MAX])).collect();
        for (i, m) in many.iter().enumerate() {
            assert!(m.iter().all(|&x| x == i as u8));
        }
    }
}
