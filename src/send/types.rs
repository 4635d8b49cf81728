//! The sender's shared types: the run's state ([`Sender`], whose entries
//! in play are in [`super::items`]), what the helper threads tell the
//! session thread ([`Msg`]), an offer and a body in flight, and why an
//! attempt broke ([`Broken`]). Every stage of the sender depends on this
//! file; it depends on `items.rs` alone.

pub(super) use super::items::{Feed, Gone, Items, State};
use crate::cache::DigestCache;
use crate::config::SendConfig;
use crate::conn::{Conn, ConnError};
use crate::digest::Md5Digest;
use crate::events::Events;
use crate::progress::{Bar, Progress};
use crate::protocol::Frame;
use crate::secure::Wire;
use crate::walk::Entry;
use anyhow::Result;
use std::fs::File;
use std::sync::mpsc;
use std::time::Instant;

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
    /// [`super::items::Item::unsure`]).
    pub(super) unsure: Vec<usize>,
    pub(super) tally: Tally,
    pub(super) events: Events,
    /// Offers the receiver answered "digest needed" in this attempt.
    pub(super) asked_digest: usize,
    /// Standard input's first byte went out: no attempt can send it again.
    pub(super) stdin_sent: bool,
    /// PREFIX frames received, by offer id, for the ACCEPT that follows.
    pub(super) prefixes: ById<Md5Digest>,
    /// BLOCKS received, by offer id, for the ACCEPT that follows: the
    /// body goes as a delta.
    pub(super) blocks: ById<crate::delta::Remote>,
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

/// Offers in flight at most (offered and not settled): many small files
/// cost about one round trip, not one each. Deep enough that the sender
/// goes on offering while the receiver makes a group of files durable (at
/// 128, both sides idled a quarter of the time on 100,000 small files; at
/// 512 the sender still waited while the receiver placed a group of up to
/// 512: 16 % idle; 11 % at 1024, 8 % at 2048, 6 % at 4096). At most
/// [`AWAITING_MAX`] of them wait for their answer. A quarter of the
/// open-file limit where that is lower: see [`window`].
pub const WINDOW: usize = 4096;

/// Offers in flight at most here: [`WINDOW`], or a quarter of the
/// open-file limit where that is lower (a file too large to be held in
/// memory stays open until its RESULT, to check that it did not change).
pub(super) fn window() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| crate::open_files_quarter(16, WINDOW))
}

/// Offers waiting for their answer at most: as many as the receiver takes
/// accepted files without their body (a file it accepted has its body on
/// the way before any offer sent after the ACCEPT was read).
pub(super) const AWAITING_MAX: usize = crate::protocol::limits::MAX_AWAITING_BODIES;

/// Bytes of small files' bodies held by offers waiting for their answer:
/// no more offers while they hold this much (with
/// [`AHEAD_BYTES`](super::lookahead::AHEAD_BYTES) read ahead, this bounds
/// the bodies held).
pub(super) const HELD_MAX: u64 = 8 << 20;

/// Messages handled in a row before the session thread offers and writes
/// again.
pub(super) const DRAIN_MAX: usize = 256;

/// What the helper threads tell the session.
// Ready carries an entry's Source across the look-ahead channel, once per
// entry; boxing it would cost an allocation per file for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    /// The look-ahead thread prepared these entries, in order (a batch of
    /// small files in one message: each can cost the session thread a
    /// wake-up).
    Ready(Vec<Ready>),
    /// The look-ahead thread has prepared the last entry of the walk.
    Exhausted,
    /// The reader thread of session `gen` got a frame (or the connection
    /// failed).
    Answer(u64, Result<Frame, ConnError>),
}

/// What the helper threads send: [`Msg`]s, with the reader's frames in
/// batches (what one read brought: one message, one wake-up of the
/// session thread), handed out one at a time by [`Inbox`].
#[allow(clippy::large_enum_variant)]
pub(super) enum Mail {
    One(Msg),
    /// The reader thread of session `gen` got these, in order.
    Answers(u64, Vec<Result<Frame, ConnError>>),
}

/// The session thread's end of the helpers' channel: a batch of answers
/// comes out one [`Msg::Answer`] at a time.
pub(super) struct Inbox {
    rx: mpsc::Receiver<Mail>,
    queued: std::collections::VecDeque<Msg>,
    /// Messages set aside by [`Inbox::keep`].
    kept: Vec<Msg>,
}

impl Inbox {
    pub(super) fn new(rx: mpsc::Receiver<Mail>) -> Inbox {
        Inbox {
            rx,
            queued: Default::default(),
            kept: Vec::new(),
        }
    }

    /// Sets `m` aside, to come out again after [`Inbox::restore`].
    pub(super) fn keep(&mut self, m: Msg) {
        self.kept.push(m);
    }

    /// What was set aside comes out next, in its order.
    pub(super) fn restore(&mut self) {
        for m in self.kept.drain(..).rev() {
            self.queued.push_front(m);
        }
    }

    /// The next message, waiting up to `wait` for one.
    pub(super) fn recv_timeout(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Msg, mpsc::RecvTimeoutError> {
        // `--timeout` may be beyond what an Instant can hold: then no
        // deadline, as the channel's own recv_timeout does.
        let deadline = Instant::now().checked_add(wait);
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Ok(m);
            }
            let m = match deadline {
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))?,
                None => self
                    .rx
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)?,
            };
            self.unpack(m);
        }
    }

    /// The next message if one is there.
    pub(super) fn try_recv(&mut self) -> Option<Msg> {
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Some(m);
            }
            let m = self.rx.try_recv().ok()?;
            self.unpack(m);
        }
    }

    fn unpack(&mut self, m: Mail) {
        match m {
            Mail::Answers(gen, all) => self
                .queued
                .extend(all.into_iter().map(|a| Msg::Answer(gen, a))),
            Mail::One(m) => self.queued.push_back(m),
        }
    }
}

/// Entry `idx`, prepared; with the entry when it is new from the walk (it
/// comes into play when this arrives).
pub(super) type Ready = (usize, Option<std::sync::Arc<Entry>>, Prepared);

/// An entry ready to offer.
pub(super) enum Prepared {
    /// A directory, with its extended attributes and ACLs.
    Dir(Attrs),
    /// A symlink or a hard link (the entry holds what it needs).
    Link,
    /// An open file with its metadata and MD5. Boxed: it is moved from
    /// the look-ahead batch to the offer, the offers waiting for their
    /// answer and the body (about 300 bytes each time; boxed, the sender
    /// runs 4 % fewer instructions on small files, allocation included).
    File(Box<Source>),
    /// A file that cannot be read: the message says why.
    Unreadable(String),
}

impl Prepared {
    /// The bytes of its body read ahead (held in memory until sent).
    pub(super) fn read_ahead(&self) -> u64 {
        match self {
            Prepared::File(s) => s.data.as_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        }
    }
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
/// With [`AHEAD_BYTES`](super::lookahead::AHEAD_BYTES) of them read ahead
/// (and one file more) and [`HELD_MAX`] bytes of them offered, the memory
/// held for them stays under 16 MiB and a file.
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
    pub(super) file: Option<Box<Source>>,
}

impl Offer {
    /// Bytes of body it holds in memory (a small file read whole).
    fn held(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .map_or(0, |d| d.len() as u64)
    }
}

/// The offers waiting for their answer, oldest first, and the bytes of
/// body they hold.
#[derive(Default)]
pub(super) struct Answers {
    queue: std::collections::VecDeque<Offer>,
    held: u64,
}

impl Answers {
    pub(super) fn push_back(&mut self, o: Offer) {
        self.held += o.held();
        self.queue.push_back(o);
    }

    pub(super) fn pop_front(&mut self) -> Option<Offer> {
        let o = self.queue.pop_front()?;
        self.held -= o.held();
        Some(o)
    }

    pub(super) fn front(&self) -> Option<&Offer> {
        self.queue.front()
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether no more offers may wait for their answer: they hold
    /// [`HELD_MAX`] bytes of body or more, or they are [`AWAITING_MAX`].
    pub(super) fn full(&self) -> bool {
        self.held >= HELD_MAX || self.queue.len() >= AWAITING_MAX
    }
}

/// What the sender keeps by offer id (looked up for every file: a quick
/// hasher, randomly seeded since the ids come back from the peer).
pub(super) type ById<T> = std::collections::HashMap<u32, T, foldhash::fast::RandomState>;

/// The files whose body was sent, by id, waiting for their RESULT (a
/// window's thousands: an insert and a remove per file).
pub(super) type Flights = ById<Flight>;

/// A file whose body was sent, waiting for its RESULT.
pub(super) struct Flight {
    pub(super) idx: usize,
    /// The file as it was offered (the digest cache forgets it if the
    /// receiver's digest differs).
    pub(super) version: crate::cache::Version,
    /// The file's size (for standard input: what was sent).
    pub(super) size: u64,
    pub(super) md5: Md5Digest,
    pub(super) offset: u64,
    pub(super) started: Instant,
    /// How long its body took to send: whether its line goes on a
    /// terminal (not the wait for the receiver's sync of its group).
    pub(super) sending: std::time::Duration,
    /// How to tell, when the receiver has verified it, whether the file
    /// changed while it was sent.
    pub(super) watch: Watch,
}

/// How a file in flight is watched for changes.
pub(super) enum Watch {
    /// Open: it is checked when its RESULT comes, against its metadata
    /// when it was offered (boxed: a small file's flight, read whole, is
    /// a third the size without it, and thousands are in flight).
    File(File, Box<std::fs::Metadata>),
    /// Read whole already (or standard input): whether it had changed
    /// then.
    Known(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_hands_out_a_batch_of_answers_one_by_one_and_takes_any_wait() {
        let (tx, rx) = mpsc::channel();
        let mut inbox = Inbox::new(rx);
        let end = |flags| Ok(Frame::End { flags });
        tx.send(Mail::Answers(7, vec![end(1), end(2)]))
            .expect("send");
        tx.send(Mail::One(Msg::Exhausted)).expect("send");
        // A wait no Instant can hold (`--timeout` of u64::MAX seconds).
        let forever = std::time::Duration::from_secs(u64::MAX);
        for want in [1, 2] {
            match inbox.recv_timeout(forever) {
                Ok(Msg::Answer(7, Ok(Frame::End { flags }))) => assert_eq!(flags, want),
                _ => panic!("answer {want} in order"),
            }
        }
        // Set aside and given back in order, before what came after.
        inbox.keep(Msg::Exhausted);
        assert!(matches!(inbox.try_recv(), Some(Msg::Exhausted)));
        assert!(inbox.try_recv().is_none());
        inbox.restore();
        assert!(matches!(inbox.try_recv(), Some(Msg::Exhausted)));
        drop(tx);
        assert!(inbox.recv_timeout(forever).is_err(), "the senders are gone");
    }

    /// An offer of a small file read whole, holding `len` bytes.
    fn small(id: u32, len: usize) -> Offer {
        let file = tempfile::tempfile().expect("temp file");
        let md = file.metadata().expect("metadata");
        Offer {
            id,
            idx: id as usize,
            file: Some(Box::new(Source {
                file: None,
                data: Some(vec![0; len]),
                ..Source::hashed(file, md, [0; 16])
            })),
        }
    }

    #[test]
    fn offers_waiting_count_the_bodies_they_hold() {
        let mut a = Answers::default();
        let half = (HELD_MAX / 2) as usize;
        a.push_back(small(1, half));
        a.push_back(Offer {
            id: 2,
            idx: 2,
            file: None,
        });
        assert!(!a.full(), "half the bound");
        a.push_back(small(3, half));
        assert!(a.full(), "the bound reached");
        assert_eq!(a.pop_front().map(|o| o.id), Some(1));
        assert!(!a.full(), "given back with the answer");
        assert_eq!(a.len(), 2);
        a.pop_front();
        a.pop_front();
        assert!(a.is_empty() && a.held == 0);
    }
}
