//! The look-ahead's bounds: how many entries and how many bytes of small
//! bodies the look-ahead thread ([`super::prepare::spawn_hasher`]) may
//! prepare ahead of the offers, and the permits the session thread gives
//! back to it as it offers ([`Permits`]).

use std::sync::mpsc;

/// Entries prepared (opened, small ones read and hashed) ahead of the
/// offers: 512 (or a quarter of the open-file limit where that is lower,
/// as a larger file stays open from here to its RESULT), or fewer where
/// their bodies read ahead reach [`AHEAD_BYTES`]. At 128, the look-ahead
/// thread and the receiver's commit thread took turns rather than running
/// side by side (100,000 small files: 2 % slower in 15 rounds in turns).
pub(super) fn ahead() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| crate::open_files_quarter(16, 512))
}

/// Bytes of small files' bodies read ahead of the offers at most (the
/// look-ahead thread reads no further file while they hold this much).
pub(super) const AHEAD_BYTES: u64 = 8 << 20;

/// Permits go to the look-ahead thread this many at a time (one wake-up
/// of it each), unless it has caught up with the offers.
pub(super) const PERMIT_GROUP: usize = 32;

/// What the session gives back to the look-ahead thread: entries offered,
/// and the bytes of their bodies it had read ahead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Permit {
    pub(super) entries: usize,
    pub(super) bytes: u64,
}

/// The look-ahead thread's permits: one an entry offered, given in groups
/// of [`PERMIT_GROUP`] (one permit each woke that thread, which then read
/// and hashed one file at a time: 27,000 wake-ups for 100,000 small
/// files), or all at once when nothing prepared is left to offer.
pub(super) struct Permits {
    tx: mpsc::Sender<Permit>,
    owed: Permit,
}

impl Permits {
    /// The permits, with `first` entries given now.
    pub(super) fn new(first: usize) -> (Permits, mpsc::Receiver<Permit>) {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Permit {
            entries: first,
            bytes: 0,
        });
        (
            Permits {
                tx,
                owed: Permit::default(),
            },
            rx,
        )
    }

    /// One entry was taken to offer, holding `bytes` read ahead.
    pub(super) fn owe(&mut self, bytes: u64) {
        self.owed.entries += 1;
        self.owed.bytes += bytes;
    }

    /// Gives what is owed: a group, or whatever is owed when `caught_up`.
    pub(super) fn give(&mut self, caught_up: bool) {
        if self.owed.entries >= PERMIT_GROUP || (caught_up && self.owed.entries > 0) {
            let _ = self.tx.send(std::mem::take(&mut self.owed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_go_back_in_groups_with_the_bytes_their_entries_held() {
        let (mut permits, rx) = Permits::new(512);
        let first = rx.try_recv().expect("the first permits");
        assert_eq!((first.entries, first.bytes), (512, 0));
        for _ in 0..PERMIT_GROUP - 1 {
            permits.owe(1000);
            permits.give(false);
        }
        assert!(rx.try_recv().is_err(), "less than a group stays owed");
        permits.owe(24);
        permits.give(false);
        let group = rx.try_recv().expect("a group");
        let want = (PERMIT_GROUP, 1000 * (PERMIT_GROUP as u64 - 1) + 24);
        assert_eq!((group.entries, group.bytes), want);
        // Caught up: whatever is owed goes at once; nothing owed, nothing.
        permits.owe(7);
        permits.give(true);
        let rest = rx.try_recv().expect("the rest");
        assert_eq!((rest.entries, rest.bytes), (1, 7));
        permits.give(true);
        assert!(rx.try_recv().is_err());
    }
}
