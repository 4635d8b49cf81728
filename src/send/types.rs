//! The sender's shared types: an entry and where it stands across
//! attempts ([`Item`]), the run's state ([`Sender`]), what the helper
//! threads tell the session thread ([`Msg`]), an offer and a body in
//! flight, and why an attempt broke ([`Broken`]). Every stage of the
//! sender depends on this file; it depends on none.

use crate::cache::DigestCache;
use crate::config::SendConfig;
use crate::conn::{Conn, ConnError};
use crate::digest::Md5Digest;
use crate::events::Events;
use crate::exit::Exit;
use crate::progress::{Bar, Progress};
use crate::protocol::Frame;
use crate::secure::Wire;
use crate::walk::{Entry, Found, Kind};
use anyhow::Result;
use std::fs::File;
use std::time::Instant;

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

/// The entries in play (walked, not yet settled), by index, and what the
/// settled ones amounted to. Settled entries are counted and dropped as
/// the window moves on, so memory stays bounded by the window whatever
/// the size of the tree.
pub(super) struct Items {
    live: std::collections::BTreeMap<usize, Item>,
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

/// Counters for the final summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) files: u64,
    pub(super) skipped: u64,
    pub(super) bytes: u64,
    /// Body bytes that crossed the wire (less than `bytes` for sparse
    /// files, whose holes are sent as nothing, and for delta updates).
    pub(super) wire: u64,
    /// Body bytes the receiver took from the files they replace (SAME).
    pub(super) matched: u64,
    /// Entries whose asked-for attributes could not all be sent.
    pub(super) attrs_left: u64,
    /// Entries with extended attributes (first) or ACLs (second) that
    /// were not asked for.
    pub(super) attrs_unsent: (u64, u64),
}

impl Tally {
    /// Adds what another stream (or the directories' session) counted.
    pub(super) fn add(&mut self, o: &Tally) {
        self.files += o.files;
        self.skipped += o.skipped;
        self.bytes += o.bytes;
        self.wire += o.wire;
        self.matched += o.matched;
        self.attrs_left += o.attrs_left;
        self.attrs_unsent.0 += o.attrs_unsent.0;
        self.attrs_unsent.1 += o.attrs_unsent.1;
    }
}

/// Everything one run of `ftx send` shares across attempts.
pub(super) struct Sender<'a> {
    pub(super) cfg: &'a SendConfig,
    /// Where this sender's sessions come from.
    pub(super) links: Links<'a>,
    /// `ftx serve`: one session on a getter's connection; files the
    /// getter asked the digest of are hashed (into the digest cache)
    /// before END, so that its next call finds them known.
    pub(super) serving: bool,
    /// A receiver has called in already (later calls are waited for
    /// within `--connect-timeout`, the first for as long as it takes).
    pub(super) called: std::cell::Cell<bool>,
    pub(super) cache: DigestCache,
    pub(super) progress: Progress,
    pub(super) total: Bar,
    /// The file being hashed (look-ahead thread).
    pub(super) hashing: Bar,
    /// The file being sent.
    pub(super) sending: Bar,
    pub(super) items: Items,
    /// The look-ahead thread has taken the last entry of the walk in
    /// this attempt.
    pub(super) walked_all: bool,
    /// `--manifest`: written as entries are confirmed.
    pub(super) manifest: Option<&'a crate::manifest::Writer>,
    /// Links the receiver accepted in the session under way (see
    /// [`Item::unsure`]).
    pub(super) unsure: Vec<usize>,
    pub(super) tally: Tally,
    pub(super) events: Events,
    /// Offers the receiver answered "digest needed" in this attempt.
    pub(super) asked_digest: usize,
    /// Standard input's first byte went out: no attempt can send it again.
    pub(super) stdin_sent: bool,
    /// PREFIX frames received, by offer id, for the ACCEPT that follows.
    pub(super) prefixes: std::collections::HashMap<u32, Md5Digest>,
    /// BLOCKS received, by offer id, for the ACCEPT that follows: the
    /// body goes as a delta.
    pub(super) blocks: std::collections::HashMap<u32, crate::delta::Remote>,
}

pub(super) use crate::front::dial::{busy, peer_error, Broken};

/// Calls of receivers, their handshake done: the listening gate, shared
/// by the streams of one `ftx send --listen`.
pub(super) trait Calls {
    /// The next one, or `None` after `wait` (if any).
    fn next_call(
        &self,
        wait: Option<std::time::Duration>,
    ) -> Result<Option<crate::front::Admitted>>;
}

impl Calls for std::sync::Mutex<crate::front::Gate<'_>> {
    fn next_call(
        &self,
        wait: Option<std::time::Duration>,
    ) -> Result<Option<crate::front::Admitted>> {
        let mut gate = self
            .lock()
            .map_err(|_| anyhow::anyhow!("internal error: the listening gate is poisoned"))?;
        gate.next_within(wait)
    }
}

/// Where a sender's sessions come from: it dials the receiver (`ftx
/// send`), takes the calls of receivers that dial it (`--listen`), or
/// serves the one connection it was given (`ftx serve`).
pub(super) enum Links<'a> {
    Dial,
    Calls(&'a (dyn Calls + Sync + 'a)),
    Given(std::cell::Cell<Option<Conn<Wire>>>),
}

/// Offers in flight at most: many small files cost about one round trip,
/// not one each.
pub const WINDOW: usize = 128;

/// Messages handled in a row before the session thread offers and writes
/// again.
pub(super) const DRAIN_MAX: usize = 256;

/// What the helper threads tell the session.
// Ready carries an entry's Source across the look-ahead channel, once per
// entry; boxing it would cost an allocation per file for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    /// The look-ahead thread prepared entry `idx`; with the entry when it
    /// is new from the walk (it comes into play when this arrives: one
    /// message an entry, since each can cost the session thread a
    /// wake-up).
    Ready(usize, Option<std::sync::Arc<Entry>>, Prepared),
    /// The look-ahead thread has prepared the last entry of the walk.
    Exhausted,
    /// The reader thread of session `gen` got a frame (or the connection
    /// failed).
    Answer(u64, Result<Frame, ConnError>),
}

/// An entry ready to offer.
// A file's Source is most of what goes through the look-ahead channel;
// boxing it would cost an allocation per file for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Prepared {
    /// A directory, with its extended attributes and ACLs.
    Dir(Attrs),
    /// A symlink or a hard link (the entry holds what it needs).
    Link,
    /// An open file with its metadata and MD5.
    File(Source),
    /// A file that cannot be read: the message says why.
    Unreadable(String),
}

/// A file to send, with its metadata and MD5: open, or read whole.
pub(super) struct Source {
    /// None once the whole content is in `data` (the descriptor is not
    /// kept: many small files are in flight at once).
    pub(super) file: Option<File>,
    pub(super) md: std::fs::Metadata,
    pub(super) md5: Md5Digest,
    /// The whole content as it was hashed, for a file of at most
    /// [`INLINE_MAX`] bytes: its body is sent from memory, queued with
    /// other frames, instead of read again.
    pub(super) data: Option<Vec<u8>>,
    /// The digest is not known yet (`md5` is zero): it is computed while
    /// the body is sent and follows it in a DIGEST frame.
    pub(super) digest_follows: bool,
    /// Standard input: its size is not known, it cannot be read twice.
    pub(super) stream: bool,
    /// Why the file is not what was offered any more, if it changed while
    /// it was read (an inline file: found when it was read whole).
    pub(super) changed: Option<Box<str>>,
    /// Its extended attributes and ACLs.
    pub(super) attrs: Attrs,
}

/// An entry's extended attributes and ACLs, as the look-ahead found them.
#[derive(Debug, Default)]
pub(super) struct Attrs {
    /// Those sent (`-X`, `-A`).
    pub(super) list: Vec<crate::xattr::Attr>,
    /// Those asked for that cannot be sent, named with why.
    pub(super) left: Vec<String>,
    /// It has attributes (first) or ACLs (second) that were not asked for.
    pub(super) unsent: (bool, bool),
}

impl Source {
    /// An open file whose digest is known.
    pub(super) fn hashed(file: File, md: std::fs::Metadata, md5: Md5Digest) -> Source {
        Source {
            file: Some(file),
            md,
            md5,
            data: None,
            digest_follows: false,
            stream: false,
            changed: None,
            attrs: Attrs::default(),
        }
    }

    /// An open file to be hashed while it is sent (its digest follows).
    pub(super) fn unhashed(file: File, md: std::fs::Metadata) -> Source {
        Source {
            md5: [0; 16],
            digest_follows: true,
            ..Source::hashed(file, md, [0; 16])
        }
    }
}

/// Files this large whose digest is not known are offered without it and
/// hashed while they are sent (one read, MD5 beside the socket), instead
/// of hashed first and then sent (two reads, two MD5 passes in series).
pub(super) const STREAM_DIGEST_MIN: u64 = 8 << 20;

/// Files up to this size are read once, into memory, to be hashed and sent.
/// With [`WINDOW`] offers in flight and as many hashed ahead, this bounds
/// the memory held for them to 16 MiB.
pub(super) const INLINE_MAX: u64 = 64 << 10;

/// A session of an attempt: the connection and the tag of its reader.
pub(super) struct Link {
    pub(super) conn: Conn<Wire>,
    pub(super) gen: u64,
    /// Offers sent on it (a session may carry
    /// [`crate::protocol::limits::MAX_SESSION_ENTRIES`]).
    pub(super) offers: usize,
}

/// An offer waiting for its answer.
pub(super) struct Offer {
    pub(super) id: u32,
    pub(super) idx: usize,
    pub(super) file: Option<Source>,
}

/// A file whose body was sent, waiting for its RESULT.
pub(super) struct Flight {
    pub(super) idx: usize,
    pub(super) md: std::fs::Metadata,
    /// The file's size (for standard input: what was sent).
    pub(super) size: u64,
    pub(super) md5: Md5Digest,
    pub(super) offset: u64,
    pub(super) started: Instant,
    /// How to tell, when the receiver has verified it, whether the file
    /// changed while it was sent.
    pub(super) watch: Watch,
}

/// How a file in flight is watched for changes.
pub(super) enum Watch {
    /// Open: it is checked when its RESULT comes.
    File(File),
    /// Read whole already (or standard input): whether it had changed
    /// then.
    Known(Option<String>),
}
