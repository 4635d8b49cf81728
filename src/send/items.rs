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

/// The entries in play (walked, not yet settled), by index, and what the
/// settled ones amounted to. Settled entries are counted and dropped as
/// the window moves on, so memory stays bounded by the window whatever
/// the size of the tree.
pub(super) struct Items {
    live: std::collections::BTreeMap<usize, Item>,
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
            live: std::collections::BTreeMap::new(),
            walked_since: 0,
            feed: Some(feed),
            gone: Gone::default(),
        }
    }

    /// Entry `idx`, if it is in play.
    pub(super) fn get(&self, idx: usize) -> Option<&Item> {
        self.live.get(&idx)
    }

    /// Entry `idx` comes into play (taken from the walk), pending.
    pub(super) fn walked(&mut self, idx: usize, entry: std::sync::Arc<Entry>) {
        self.live.entry(idx).or_insert_with(|| Item::new(entry));
        self.walked_since += 1;
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
        self.live.iter().map(|(i, item)| (*i, item))
    }

    /// The entries in play, in walk order, to change.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Item> {
        self.live.values_mut()
    }

    /// True while an entry is still to be offered or confirmed (a walk
    /// not given back counts as pending: never a success without it).
    pub(super) fn pending(&self) -> bool {
        self.feed.as_ref().is_none_or(|f| !f.done)
            || self.live.values().any(|i| i.state == State::Pending)
    }

    /// Counts and drops the settled entries (`manifest`: their lines go
    /// there, a hard link with the digest of the file it names).
    pub(super) fn retire(&mut self, manifest: Option<&crate::manifest::Writer>) {
        self.walked_since = 0;
        let gone = &mut self.gone;
        // A hard link's line needs the digest of the file it names, an
        // earlier entry: it waits until every entry before it is settled.
        let first_pending = self
            .live
            .iter()
            .find(|(_, i)| i.state == State::Pending)
            .map_or(usize::MAX, |(idx, _)| *idx);
        self.live.retain(|idx, i| {
            let exit = match i.state {
                State::Pending => return true,
                State::Done if i.unsure => return true,
                State::Done => None,
                State::Failed(exit) => Some(exit),
            };
            if manifest.is_some() && i.entry.kind == Kind::HardLink && *idx > first_pending {
                return true;
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
                        gone.manifest_error.get_or_insert_with(|| {
                            format!("cannot write the manifest {shown}: {e}")
                        });
                    }
                }
            }
            false
        });
    }

    /// The session ended (SUMMARY came): the links it accepted are made
    /// (those that could not be were said before SUMMARY).
    pub(super) fn links_made(&mut self, unsure: &mut Vec<usize>) {
        for idx in unsure.drain(..) {
            if let Some(i) = self.live.get_mut(&idx) {
                i.unsure = false;
            }
        }
    }

    /// The session broke before its END: the links it accepted were never
    /// made, and are offered again.
    pub(super) fn links_lost(&mut self, unsure: &mut Vec<usize>) {
        for idx in unsure.drain(..) {
            if let Some(i) = self.live.get_mut(&idx) {
                if i.unsure && i.state == State::Done {
                    i.state = State::Pending;
                }
                i.unsure = false;
            }
        }
    }

    /// Something that changes whenever an attempt moves the transfer on.
    pub(super) fn progress_mark(&self) -> (u64, u64) {
        let live = self.live.values();
        let settled = live.clone().filter(|i| i.state != State::Pending).count() as u64;
        let shown: u64 = live.map(|i| i.shown).sum();
        (self.gone.settled + settled, self.gone.shown + shown)
    }

    /// Every entry not confirmed yet, the rest of the walk included,
    /// fails with `exit` (counted, never offered).
    pub(super) fn fail_pending(&mut self, exit: Exit) {
        for i in self.live.values_mut() {
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

impl std::ops::Index<usize> for Items {
    type Output = Item;
    /// Entry `idx`, in play (the window only names entries it holds).
    fn index(&self, idx: usize) -> &Item {
        match self.live.get(&idx) {
            Some(i) => i,
            None => panic!("internal error: entry {idx} is not in play"),
        }
    }
}

impl std::ops::IndexMut<usize> for Items {
    fn index_mut(&mut self, idx: usize) -> &mut Item {
        match self.live.get_mut(&idx) {
            Some(i) => i,
            None => panic!("internal error: entry {idx} is not in play"),
        }
    }
}
