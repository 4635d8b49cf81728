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
use crate::exit::{Exit, ExitError};
use crate::progress::{Bar, Progress};
use crate::protocol::codes::ErrorCode;
use crate::protocol::Frame;
use crate::sanitize::escape;
use crate::secure::Wire;
use crate::walk::Entry;
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
}

/// Counters for the final summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) files: u64,
    pub(super) skipped: u64,
    pub(super) bytes: u64,
    /// Body bytes that crossed the wire (less than `bytes` for sparse
    /// files, whose holes are sent as nothing).
    pub(super) wire: u64,
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
        self.attrs_left += o.attrs_left;
        self.attrs_unsent.0 += o.attrs_unsent.0;
        self.attrs_unsent.1 += o.attrs_unsent.1;
    }
}

/// Everything one run of `ftx send` shares across attempts.
pub(super) struct Sender<'a> {
    pub(super) cfg: &'a SendConfig,
    /// `--listen`: where receivers call in.
    pub(super) listener: Option<&'a std::net::TcpListener>,
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
    pub(super) items: Vec<Item>,
    pub(super) tally: Tally,
    pub(super) events: Events,
    /// Offers the receiver answered "digest needed" in this attempt.
    pub(super) asked_digest: usize,
    /// Standard input's first byte went out: no attempt can send it again.
    pub(super) stdin_sent: bool,
    /// PREFIX frames received, by offer id, for the ACCEPT that follows.
    pub(super) prefixes: std::collections::HashMap<u32, Md5Digest>,
}

/// An attempt that ended early, and whether trying again can help.
pub(super) struct Broken {
    pub(super) err: anyhow::Error,
    pub(super) retry: bool,
    /// A write found the connection reset: the receiver may have said why
    /// (an ERROR) just before it closed.
    pub(super) reset: bool,
}

impl<E: Into<anyhow::Error>> From<E> for Broken {
    fn from(e: E) -> Self {
        let err = e.into();
        let tampered = err
            .chain()
            .find_map(|c| match c.downcast_ref::<ConnError>() {
                Some(ConnError::Tampered(r)) => Some(r.to_string()),
                _ => None,
            });
        if let Some(why) = tampered {
            // Not a network fault: someone on the path is changing the
            // bytes. Trying again would only give them another go.
            let err = ExitError::new(Exit::Integrity, format!("{why}; not retrying"));
            return Broken {
                err: err.into(),
                retry: false,
                reset: false,
            };
        }
        let retry = transient(&err);
        let reset = err
            .chain()
            .any(|c| matches!(c.downcast_ref::<ConnError>(), Some(ConnError::Reset)));
        if reset {
            // Said the way a person asks about it, not as "Broken pipe".
            let err = anyhow::anyhow!(
                "connection reset by the receiver (it crashed, was stopped, or dropped the session)"
            );
            return Broken {
                err,
                retry,
                reset: true,
            };
        }
        Broken {
            err,
            retry,
            reset: false,
        }
    }
}

/// True when the error is about the connection, not about what was sent:
/// cannot connect, reset, EOF, timeout, receiver busy.
pub(super) fn transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        if let Some(c) = e.downcast_ref::<ConnError>() {
            return !matches!(c, ConnError::Frame(_));
        }
        if let Some(x) = e.downcast_ref::<ExitError>() {
            return x.exit == Exit::Connect && !x.lasting;
        }
        if let Some(p) = e.downcast_ref::<PeerError>() {
            return ErrorCode::from_code(p.code).is_some_and(ErrorCode::transient);
        }
        e.downcast_ref::<std::io::Error>().is_some()
    })
}

/// True when the receiver turned the session away as busy (every session
/// slot taken, or too many connections waiting to greet).
pub(super) fn busy(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<PeerError>()
            .is_some_and(|p| p.code == ErrorCode::Busy.code())
    })
}

/// The receiver ended the session with ERROR.
#[derive(Debug, thiserror::Error)]
#[error("receiver ended the session: {message} (code {code})")]
pub(super) struct PeerError {
    pub(super) code: u16,
    pub(super) message: String,
}

pub(super) fn peer_error(code: u16, message: &str) -> anyhow::Error {
    let e = PeerError {
        code,
        message: escape(message),
    };
    match ErrorCode::from_code(code) {
        Some(ErrorCode::Auth) => return ExitError::new(Exit::Auth, e.to_string()).into(),
        Some(ErrorCode::Tampered) => {
            let why = format!("{e}; not retrying");
            return ExitError::new(Exit::Integrity, why).into();
        }
        _ => {}
    }
    anyhow::Error::new(e)
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
    /// The look-ahead thread prepared entry `idx`.
    Ready(usize, Prepared),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_transient_protocol_errors_are_not() {
        let eof = anyhow::Error::new(ConnError::Eof("a frame")).context("x");
        assert!(transient(&eof));
        let conn = anyhow::Error::new(ExitError::new(Exit::Connect, "refused"));
        assert!(transient(&conn));
        let busy = peer_error(ErrorCode::Busy.code(), "busy");
        assert!(transient(&busy));
        let proto = anyhow::Error::new(ConnError::Frame(crate::protocol::FrameError::UnknownType(
            9,
        )));
        assert!(!transient(&proto));
        let auth = peer_error(ErrorCode::Auth.code(), "no");
        assert!(!transient(&auth));
        assert_eq!(crate::exit::for_error(&auth), Exit::Auth);
    }
}
