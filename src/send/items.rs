//! The entries of a run in play: where each stands ([`Item`]), the walk
//! that feeds the window ([`Feed`]), the entries walked and not settled
//! yet, by index ([`Items`]), and what the settled ones amounted to
//! ([`Gone`]). The sender never holds the whole tree: settled entries are
//! counted and dropped as the window moves. Depends on no other stage of
//! the sender.

use crate::digest::Md5Digest;
use crate::exit::Exit;
use crate::walk::{Entry, Found, Kind};

/// Where an entry stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Not confirmed yet: offered in the next attempt.
    Pending,
    /// Verified, created, or skipped as identical.
    Done,
    /// Refused or failed for good.
    Failed(Exit),
}

/// An entry and what the sender knows about it across attempts.
pub(super) struct Item {
    /// Shared with the look-ahead thread's job for it (not copied: a tree
    /// of a million files would hold every name twice).
    pub(super) entry: std::sync::Arc<Entry>,
    /// The digest once known (hashed or cached).
    pub(super) md5: Option<Md5Digest>,
    pub(super) state: State,
    /// The file was already sent again from 0 after a mismatch.
    pub(super) resent: bool,
    /// Bytes of this entry counted on the total bar in this attempt.
    pub(super) shown: u64,
    /// The receiver asked for the digest first (REJECT 17): hash the file
    /// before offering it again.
    pub(super) need_digest: bool,
    /// A link the receiver accepted in the session under way: it creates
    /// links at END, so until then it is neither counted nor dropped, and
    /// if the session breaks first it is offered again.
    pub(super) unsure: bool,
}

impl Item {
    /// A walked entry, pending.
    pub(super) fn new(entry: std::sync::Arc<Entry>) -> Item {
        Item {
            entry,
            md5: None,
            state: State::Pending,
            resent: false,
            shown: 0,
            need_digest: false,
            unsure: false,
        }
    }
}

/// What the walk has not yielded yet, and what it left out so far. The
/// look-ahead thread holds it during an attempt and takes entries from it
/// as the window moves on: the sender never holds the whole tree.
pub(super) struct Feed {
    walk: Box<dyn Iterator<Item = Found> + Send>,
    /// The index of the next entry (its offer id is one more).
    pub(super) next: usize,
    /// The walk is over.
    pub(super) done: bool,
    /// Entries it could not offer (each named when found).
    pub(super) left: u64,
    /// One of them was not left out by the user's choice: the run fails.
    pub(super) left_fails: bool,
    /// Told of every entry and every one left out, as they are found
    /// (progress, messages, events).
    seen: Box<dyn FnMut(&Found) + Send>,
}

impl Feed {
    /// A walk to take entries from; `seen` is told of each find.
    pub(super) fn new(
        walk: impl Iterator<Item = Found> + Send + 'static,
        seen: impl FnMut(&Found) + Send + 'static,
    ) -> Feed {
        Feed {
            walk: Box::new(walk),
            next: 0,
            done: false,
            left: 0,
            left_fails: false,
            seen: Box::new(seen),
        }
    }

    /// Entries already walked, quietly.
    pub(super) fn of(entries: Vec<Entry>) -> Feed {
        Feed::new(entries.into_iter().map(Found::Entry), |_| {})
    }

    /// The next entry to offer, with its index; `None` at the end.
    pub(super) fn take(&mut self) -> Option<(usize, std::sync::Arc<Entry>)> {
        while !self.done {
            let Some(found) = self.walk.next() else {
                self.done = true;
                break;
            };
            (self.seen)(&found);
            match found {
                Found::Entry(e) => {
                    let idx = self.next;
                    self.next += 1;
                    return Some((idx, std::sync::Arc::new(e)));
                }
                Found::Left(l) => {
                    self.left += 1;
                    self.left_fails |= !l.asked;
                }
            }
        }
        None
    }
}

/// Entries taken from the walk between two looks for settled ones to drop.
const RETIRE_EVERY: usize = 256;

/// Slots kept from the oldest entry in play to the newest: beyond, the
/// oldest entries still in play (a file waiting for its digest to be
/// asked again, say) move aside to [`Items::aside`], so that thousands of
/// settled entries behind one that waits are not kept as empty slots.
const SPAN_MAX: usize = 1 << 16;

/// The entries in play (walked, not yet settled), by index, and what the
/// settled ones amounted to. Settled entries are counted and dropped as
/// the window moves on, so memory stays bounded by the window whatever
/// the size of the tree.
pub(super) struct Items {
    /// Entry `base + i` in slot `i` (`None`: settled and dropped, or
    /// moved aside): the window looks entries up several times per file,
    /// and a slot is found without a search (an ordered map's search was
    /// a tenth of the sender's instructions for small files).
    live: std::collections::VecDeque<Option<Item>>,
    base: usize,
    /// Entries in play from before `base`, by index.
    aside: std::collections::BTreeMap<usize, Item>,
    /// Entries that came into play since the settled ones were last
    /// dropped (see [`Items::retire_due`]).
    walked_since: usize,
    /// The rest of the walk; `None` while the look-ahead thread has it.
    pub(super) feed: Option<Feed>,
    /// What the settled entries amounted to.
    pub(super) gone: Gone,
}

/// The settled entries, counted.
#[derive(Debug, Default, Clone)]
pub(super) struct Gone {
    /// Entries settled (verified, created, skipped or failed).
    pub(super) settled: u64,
    /// Bytes they counted on the total bar.
    pub(super) shown: u64,
    /// Entries failed or refused.
    pub(super) failed: u64,
    /// The most serious failure among them.
    pub(super) worst: Option<Exit>,
    /// Symlinks and hard links the receiver made.
    pub(super) links: u64,
    /// Lines that could not be written to `--manifest`.
    pub(super) manifest_error: Option<String>,
}

impl Gone {
    /// Adds what another stream counted.
    pub(super) fn add(&mut self, o: &Gone) {
        self.settled += o.settled;
        self.shown += o.shown;
        self.failed += o.failed;
        self.worst = match (self.worst, o.worst) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
        self.links += o.links;
        if self.manifest_error.is_none() {
            self.manifest_error.clone_from(&o.manifest_error);
        }
    }
}

impl Items {
    /// Entries to take from `feed`.
    pub(super) fn new(feed: Feed) -> Items {
        Items {
            live: std::collections::VecDeque::new(),
            base: 0,
            aside: std::collections::BTreeMap::new(),
            walked_since: 0,
            feed: Some(feed),
            gone: Gone::default(),
        }
    }

    /// Entry `idx`, if it is in play.
    pub(super) fn get(&self, idx: usize) -> Option<&Item> {
        match idx.checked_sub(self.base) {
            Some(slot) => self.live.get(slot)?.as_ref(),
            None => self.aside.get(&idx),
        }
    }

    fn get_mut(&mut self, idx: usize) -> Option<&mut Item> {
        match idx.checked_sub(self.base) {
            Some(slot) => self.live.get_mut(slot)?.as_mut(),
            None => self.aside.get_mut(&idx),
        }
    }

    /// Entry `idx` comes into play (taken from the walk), pending.
    pub(super) fn walked(&mut self, idx: usize, entry: std::sync::Arc<Entry>) {
        self.walked_since += 1;
        let Some(slot) = idx.checked_sub(self.base) else {
            self.aside.entry(idx).or_insert_with(|| Item::new(entry));
            return;
        };
        // Indices come in order from the walk: a gap is never left.
        while self.live.len() <= slot {
            self.live.push_back(None);
        }
        self.live[slot].get_or_insert_with(|| Item::new(entry));
    }

    /// [`Items::retire`], once [`RETIRE_EVERY`] entries came into play
    /// since it last ran: it looks at every entry in play (the window's
    /// thousands), so running it at every turn of the window cost more
    /// than anything else the sender does per file. A settled entry
    /// waits for at most that many more, so what is held stays bounded by
    /// the window and them (and the end of an attempt retires the rest).
    pub(super) fn retire_due(&mut self, manifest: Option<&crate::manifest::Writer>) {
        if self.walked_since >= RETIRE_EVERY {
            self.retire(manifest);
        }
    }

    /// The entries in play, in walk order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Item)> {
        let base = self.base;
        let live = self.live.iter().enumerate();
        let live = live.filter_map(move |(slot, i)| Some((base + slot, i.as_ref()?)));
        self.aside.iter().map(|(idx, i)| (*idx, i)).chain(live)
    }

    /// The entries in play, in walk order, to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Item> {
        let live = self.live.iter_mut().filter_map(Option::as_mut);
        self.aside.values_mut().chain(live)
    }

    /// True while an entry is still to be offered or confirmed (a walk
    /// not given back counts as pending: never a success without it).
    pub(super) fn pending(&self) -> bool {
        self.feed.as_ref().is_none_or(|f| !f.done)
            || self.iter().any(|(_, i)| i.state == State::Pending)
    }

    /// Counts and drops the settled entries (`manifest`: their lines go
    /// there, a hard link with the digest of the file it names).
    pub(super) fn retire(&mut self, manifest: Option<&crate::manifest::Writer>) {
        self.walked_since = 0;
        // A hard link's line needs the digest of the file it names, an
        // earlier entry: it waits until every entry before it is settled.
        let first_pending = self
            .iter()
            .find(|(_, i)| i.state == State::Pending)
            .map_or(usize::MAX, |(idx, _)| idx);
        let gone = &mut self.gone;
        self.aside
            .retain(|idx, i| !settle(gone, manifest, first_pending, *idx, i));
        for (slot, i) in self.live.iter_mut().enumerate() {
            if i.as_ref()
                .is_some_and(|i| settle(gone, manifest, first_pending, self.base + slot, i))
            {
                *i = None;
            }
        }
        while let Some(front) = self.live.front() {
            if front.is_some() && self.live.len() <= SPAN_MAX {
                break;
            }
            if let Some(Some(i)) = self.live.pop_front() {
                self.aside.insert(self.base, i);
            }
            self.base += 1;
        }
    }

    /// The session ended (SUMMARY came): the links it accepted are made
    /// (those that could not be were said before SUMMARY).
    pub(super) fn links_made(&mut self, unsure: &mut Vec<usize>) {
        for idx in unsure.drain(..) {
            if let Some(i) = self.get_mut(idx) {
                i.unsure = false;
            }
        }
    }

    /// The session broke before its END: the links it accepted were never
    /// made, and are offered again.
    pub(super) fn links_lost(&mut self, unsure: &mut Vec<usize>) {
        for idx in unsure.drain(..) {
            if let Some(i) = self.get_mut(idx) {
                if i.unsure && i.state == State::Done {
                    i.state = State::Pending;
                }
                i.unsure = false;
            }
        }
    }

    /// Something that changes whenever an attempt moves the transfer on.
    pub(super) fn progress_mark(&self) -> (u64, u64) {
        let (mut settled, mut shown) = (0, 0);
        for (_, i) in self.iter() {
            settled += u64::from(i.state != State::Pending);
            shown += i.shown;
        }
        (self.gone.settled + settled, self.gone.shown + shown)
    }

    /// Every entry not confirmed yet, the rest of the walk included,
    /// fails with `exit` (counted, never offered).
    pub(super) fn fail_pending(&mut self, exit: Exit) {
        for i in self.iter_mut() {
            if i.state == State::Pending {
                i.state = State::Failed(exit);
            }
        }
        if let Some(feed) = &mut self.feed {
            let mut n = 0u64;
            while feed.take().is_some() {
                n += 1;
            }
            if n > 0 {
                self.gone.settled += n;
                self.gone.failed += n;
                self.gone.worst = Some(self.gone.worst.map_or(exit, |w| w.worst(exit)));
            }
        }
    }
}

/// Counts entry `idx` into `gone` if it is settled (its manifest line
/// written), and says so; false for one still in play (pending, a link
/// not made yet, or a hard link whose file's digest may not be known yet:
/// some entry before it, `first_pending`, is pending).
fn settle(
    gone: &mut Gone,
    manifest: Option<&crate::manifest::Writer>,
    first_pending: usize,
    idx: usize,
    i: &Item,
) -> bool {
    let exit = match i.state {
        State::Pending => return false,
        State::Done if i.unsure => return false,
        State::Done => None,
        State::Failed(exit) => Some(exit),
    };
    if manifest.is_some() && i.entry.kind == Kind::HardLink && idx > first_pending {
        return false;
    }
    gone.settled += 1;
    gone.shown += i.shown;
    match exit {
        Some(exit) => {
            gone.failed += 1;
            gone.worst = Some(gone.worst.map_or(exit, |w| w.worst(exit)));
        }
        None if matches!(i.entry.kind, Kind::Symlink | Kind::HardLink) => {
            gone.links += 1;
        }
        None => {}
    }
    if let (None, Some(m)) = (exit, manifest) {
        let digest = match (&i.entry.kind, &i.entry.link_to) {
            (Kind::File, _) => i.md5,
            (Kind::HardLink, Some(to)) => m.digest_of(to.as_bytes()),
            _ => None,
        };
        if let Some(d) = digest {
            if let Err(e) = m.add(&d, i.entry.name.as_bytes()) {
                let shown = crate::sanitize::escape(&m.path().to_string_lossy());
                gone.manifest_error
                    .get_or_insert_with(|| format!("cannot write the manifest {shown}: {e}"));
            }
        }
    }
    true
}

impl std::ops::Index<usize> for Items {
    type Output = Item;
    /// Entry `idx`, in play (the window only names entries it holds).
    fn index(&self, idx: usize) -> &Item {
        match self.get(idx) {
            Some(i) => i,
            None => panic!("internal error: entry {idx} is not in play"),
        }
    }
}

impl std::ops::IndexMut<usize> for Items {
    fn index_mut(&mut self, idx: usize) -> &mut Item {
        match self.get_mut(idx) {
            Some(i) => i,
            None => panic!("internal error: entry {idx} is not in play"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(n: usize) -> Arc<Entry> {
        let name = format!("f{n}");
        Arc::new(Entry::test_file(name.as_ref(), &name, 0))
    }

    #[test]
    fn entries_are_found_by_index_and_kept_in_walk_order_as_settled_ones_go() {
        let mut items = Items::new(Feed::of(Vec::new()));
        for n in 0..10 {
            items.walked(n, entry(n));
        }
        // Walked again, or out of order: in play once, in its place.
        items.walked(3, entry(99));
        items.walked(12, entry(12));
        items.walked(11, entry(11));
        for n in [1, 2, 5, 6, 9, 11] {
            items[n].state = State::Done;
        }
        items[7].state = State::Failed(Exit::Refused);
        items.retire(None);
        let left: Vec<usize> = items.iter().map(|(n, _)| n).collect();
        assert_eq!(left, [0, 3, 4, 8, 12]);
        for n in 0..14 {
            assert_eq!(items.get(n).is_some(), left.contains(&n), "entry {n}");
        }
        assert_eq!(items[3].entry.local, std::path::Path::new("f3"));
        assert_eq!((items.gone.settled, items.gone.failed), (7, 1));
        items[0].state = State::Done;
        items.retire(None);
        assert_eq!(
            items.get(3).map(|i| i.entry.name.shown()),
            Some("f3".into())
        );
        assert!(items.get(0).is_none());
    }

    #[test]
    fn an_entry_that_waits_long_moves_aside_and_is_still_found_in_order() {
        let mut items = Items::new(Feed::of(Vec::new()));
        let n = SPAN_MAX + 1000;
        for idx in 0..n {
            items.walked(idx, entry(idx));
            if idx != 5 && idx < n - 3 {
                items[idx].state = State::Done;
            }
        }
        items.retire(None);
        // Entry 5 waits; those behind it are dropped, not kept as slots.
        assert!(items.live.len() <= 3, "{} slots", items.live.len());
        let left: Vec<usize> = items.iter().map(|(idx, _)| idx).collect();
        assert_eq!(left, [5, n - 3, n - 2, n - 1]);
        assert_eq!(items[5].entry.local, std::path::Path::new("f5"));
        items.walked(n, entry(n));
        assert!(items.get(n).is_some() && items.get(6).is_none());
        items[5].state = State::Done;
        items.retire(None);
        assert_eq!(items.iter().next().map(|(idx, _)| idx), Some(n - 3));
        assert_eq!(items.gone.settled, n as u64 - 3);
    }
}
