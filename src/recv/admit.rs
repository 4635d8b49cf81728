//! The answer to an offer, as pure functions: no sockets, no files.
//! [`super::offer`] gathers the facts in this order, asking each function
//! as soon as it has the fact, and stops at the first refusal:
//!
//! 1. the name ([`name`]): unsafe or reserved for ftx's own files → REJECT
//!    unsafe name; offered before in this session, or the same as an
//!    earlier entry once case-folded and NFC-normalised (`README` and
//!    `readme`, the NFC and NFD forms of `é.txt`: one file on macOS or
//!    Windows) → REJECT conflict;
//! 2. the claim ([`claim`]): another session is receiving it → REJECT in
//!    progress (the sender retries later);
//! 3. what sits at the target ([`target`]): nothing → write; a symlink or
//!    a non-file → REJECT conflict; the same size and MD5 → SKIP; other
//!    content → REJECT exists, or write with `--overwrite`;
//! 4. the partial: whether it resumes and where is the store's decision
//!    ([`crate::store`], `resume.rs`);
//! 5. the space ([`space`]): the rest of the body must fit → else REJECT no
//!    space.

use super::types::{refusal, Refusal};
use crate::protocol::{NameError, Reject};
use std::time::Duration;

/// What sits at the target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// Nothing.
    Absent,
    /// A symlink (never followed or replaced).
    Symlink,
    /// A directory, a FIFO, a device...
    NotAFile,
    /// A regular file; `same_size` when it has the offered size.
    File { same_size: bool },
}

/// What to do about the target.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Receive the body (into a partial).
    Write,
    /// Answer SKIP: identical content is there.
    Skip,
    /// Answer REJECT.
    Refuse(Refusal),
}

/// Entries (FILE and DIR offers with valid names) one session may offer;
/// beyond that the session is ended as a protocol error. It bounds what a
/// session remembers of its names (two 64-bit hashes each, about 25 MiB at
/// most). The ftx sender opens a new session before it gets there.
pub(super) const MAX_ENTRIES: usize = crate::protocol::limits::MAX_SESSION_ENTRIES;

/// The keys a name is remembered by in a session: a hash of the name
/// itself, and, when the output file system folds names (`fold`), one of
/// its portable form (NFC, then lower case), under which names that such a
/// file system would take for the same file meet. On one that does not
/// fold (ext4, XFS, Btrfs), `README` and `readme` are two files, and both
/// keys are the name's own.
pub(super) fn keys(name: &[u8], fold: bool) -> (u64, u64) {
    use unicode_normalization::UnicodeNormalization;
    use xxhash_rust::xxh3::xxh3_64;
    let exact = xxh3_64(name);
    // A name that is not UTF-8 has no portable form: only itself meets it.
    let Some(text) = std::str::from_utf8(name).ok().filter(|_| fold) else {
        return (exact, exact);
    };
    let folded: String = text.nfc().collect::<String>().to_lowercase();
    (exact, xxh3_64(folded.as_bytes()))
}

/// The key a refused directory is remembered by: its wire path (see
/// [`inside_refused`]).
pub(super) fn dir_prefix_key(path: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(path);
    h.update(b"/");
    h.digest128()
}

/// The refused directory (of `refused`, keys of [`dir_prefix_key`]) that
/// `path` lies inside, as the length of its path; `None` if none.
pub(super) fn inside_refused(refused: &super::types::KeySet<u128>, path: &[u8]) -> Option<usize> {
    if refused.is_empty() {
        return None;
    }
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .find(|&i| refused.contains(&dir_prefix_key(&path[..i])))
}

/// What an earlier entry of the session has to do with this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Nothing: the name is new.
    New,
    /// The very same name was offered before.
    Again,
    /// Another name with the same portable form was offered before.
    Collides,
}

/// Bit 0 of a name key in a session's memory ([`SeenNames`]): the file
/// of that name was placed (or found identical) in the session, so a LINK
/// may name it.
pub(super) const PLACED: u64 = 1;

/// The names a session was offered (at most [`MAX_ENTRIES`]), to refuse
/// one offered twice, and which of them were placed. Where the output
/// directory tells names apart byte for byte (Linux file systems), a set
/// of name keys, bit 0 being [`PLACED`]: 9 bytes a slot, a session of a
/// million entries in 19 MB. Where it folds names, each name's
/// portable-form key to its own key (bit 0 [`PLACED`]), to tell the same
/// name from one that collides: 17 bytes a slot.
pub(super) enum SeenNames {
    Exact(super::types::KeySet<u64>),
    Folding(std::collections::HashMap<u64, u64, foldhash::quality::RandomState>),
}

impl SeenNames {
    /// An empty memory for a directory that folds names or not.
    pub(super) fn new(folds: bool) -> SeenNames {
        if folds {
            SeenNames::Folding(std::collections::HashMap::default())
        } else {
            SeenNames::Exact(super::types::KeySet::default())
        }
    }

    /// Names remembered.
    pub(super) fn len(&self) -> usize {
        match self {
            SeenNames::Exact(s) => s.len(),
            SeenNames::Folding(m) => m.len(),
        }
    }

    /// Whether the name with `keys` ([`keys`]) was seen before.
    pub(super) fn seen(&self, keys: (u64, u64)) -> Seen {
        match self {
            SeenNames::Exact(s) => {
                let k = keys.0 & !PLACED;
                if s.contains(&k) || s.contains(&(k | PLACED)) {
                    Seen::Again
                } else {
                    Seen::New
                }
            }
            SeenNames::Folding(m) => match m.get(&keys.1) {
                None => Seen::New,
                Some(&exact) if exact | PLACED == keys.0 | PLACED => Seen::Again,
                Some(_) => Seen::Collides,
            },
        }
    }

    /// Whether the name with `keys` was seen before; remembered if not.
    pub(super) fn claim(&mut self, keys: (u64, u64)) -> Seen {
        let seen = self.seen(keys);
        if seen == Seen::New {
            match self {
                SeenNames::Exact(s) => {
                    s.insert(keys.0 & !PLACED);
                }
                SeenNames::Folding(m) => {
                    m.insert(keys.1, keys.0 & !PLACED);
                }
            }
        }
        seen
    }

    /// The file whose name has the portable-form key `folded` (the
    /// second of [`keys`]) was placed.
    pub(super) fn mark_placed(&mut self, folded: u64) {
        match self {
            SeenNames::Exact(s) => {
                let k = folded & !PLACED;
                if s.remove(&k) {
                    s.insert(k | PLACED);
                }
            }
            SeenNames::Folding(m) => {
                if let Some(v) = m.get_mut(&folded) {
                    *v |= PLACED;
                }
            }
        }
    }

    /// Whether the file named with `keys` was placed in the session.
    pub(super) fn placed(&self, keys: (u64, u64)) -> bool {
        match self {
            SeenNames::Exact(s) => s.contains(&(keys.0 | PLACED)),
            SeenNames::Folding(m) => m
                .get(&keys.1)
                .is_some_and(|&v| v & PLACED != 0 && v | PLACED == keys.0 | PLACED),
        }
    }
}

/// Step 1: the name as validated ([`crate::protocol::WireName`]), and
/// what this session saw of it before.
pub(super) fn name(valid: Result<(), &NameError>, seen: Seen) -> Result<(), Refusal> {
    if let Err(e) = valid {
        return Err(refusal(Reject::UnsafeName, format!("unsafe name: {e}")));
    }
    match seen {
        Seen::New => Ok(()),
        Seen::Again => Err(refusal(Reject::Conflict, "offered twice in one session")),
        Seen::Collides => Err(refusal(
            Reject::Conflict,
            "differs from an earlier entry of this session only by case or Unicode \
             normalisation: the two would be one file on macOS or Windows",
        )),
    }
}

/// Step 2: whether this session could claim the target.
pub(super) fn claim(claimed: bool) -> Result<(), Refusal> {
    if claimed {
        return Ok(());
    }
    Err(refusal(
        Reject::InProgress,
        "another session is receiving this file right now; try again later",
    ))
}

/// Step 3: the answer given what sits at the target. `identical` is asked
/// only when a file of the same size is there (it may hash the file).
pub(super) fn target(t: Target, overwrite: bool, identical: impl FnOnce() -> bool) -> Answer {
    match t {
        Target::Absent => Answer::Write,
        Target::Symlink => Answer::Refuse(refusal(
            Reject::Conflict,
            "a symlink sits at the target name; it is never followed or replaced",
        )),
        Target::NotAFile => Answer::Refuse(refusal(
            Reject::Conflict,
            "something other than a regular file sits at the target name",
        )),
        Target::File { same_size } => {
            if same_size && identical() {
                Answer::Skip
            } else if overwrite {
                Answer::Write
            } else {
                Answer::Refuse(refusal(
                    Reject::Exists,
                    "a different file already exists there (receiver runs without --overwrite)",
                ))
            }
        }
    }
}

/// Step 5: whether `need` more bytes fit in `free`.
pub(super) fn space(need: u64, free: u64) -> Result<(), Refusal> {
    if need > free {
        return Err(refusal(
            Reject::NoSpace,
            format!("not enough space: need {need} bytes, have {free}"),
        ));
    }
    Ok(())
}

/// Whether the free space known from an earlier look (`known`, looked up
/// `age` ago, less what was accepted since) may be trusted for `need`:
/// only when the need is at most half of it and the look is under a second
/// old (other writers share the disk). `None`: ask the file system again.
pub(super) fn known_free(need: u64, known: Option<u64>, age: Duration) -> Option<u64> {
    known.filter(|&free| need <= free / 2 && age < Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WireName;

    fn code(r: Result<(), Refusal>) -> Option<Reject> {
        r.err().map(|r| r.0)
    }

    #[test]
    fn name_branches() {
        assert_eq!(code(name(Ok(()), Seen::New)), None);
        assert_eq!(code(name(Ok(()), Seen::Again)), Some(Reject::Conflict));
        let r = name(Ok(()), Seen::Collides).expect_err("collision");
        assert_eq!(r.0, Reject::Conflict);
        assert!(r.1.contains("case"), "{}", r.1);
        for bad in [&b"../x"[..], b"/etc/passwd", b"a/.b.ftx-part", b"a\0b"] {
            let e = WireName::from_bytes(bad).expect_err("refused");
            let r = name(Err(&e), Seen::New).expect_err("refused");
            assert_eq!(r.0, Reject::UnsafeName);
            assert!(r.1.starts_with("unsafe name: "), "{}", r.1);
        }
        // A reserved name (a partial's) is refused as unsafe.
        let e = WireName::from_bytes(b".x.iso.ftx-part").expect_err("reserved");
        assert_eq!(e, NameError::Reserved);
        assert_eq!(code(name(Err(&e), Seen::New)), Some(Reject::UnsafeName));
    }

    #[test]
    fn names_that_one_file_system_takes_for_one_file_collide() {
        let mut map = SeenNames::new(true);
        let remember = |map: &mut SeenNames, n: &str| {
            let k = keys(n.as_bytes(), true);
            let s = map.seen(k);
            assert_eq!(map.claim(k), s);
            assert_ne!(map.seen(k), Seen::New, "remembered");
            s
        };
        assert_eq!(remember(&mut map, "README"), Seen::New);
        assert_eq!(remember(&mut map, "README"), Seen::Again);
        assert_eq!(remember(&mut map, "readme"), Seen::Collides);
        assert_eq!(remember(&mut map, "Dir/a"), Seen::New);
        assert_eq!(remember(&mut map, "dir/A"), Seen::Collides);
        // é as one code point (NFC) and as e + combining acute (NFD).
        assert_eq!(remember(&mut map, "\u{e9}.txt"), Seen::New);
        assert_eq!(remember(&mut map, "e\u{301}.txt"), Seen::Collides);
        assert_eq!(remember(&mut map, "E\u{301}.TXT"), Seen::Collides);
        // Different names stay different.
        assert_eq!(remember(&mut map, "read.me"), Seen::New);
        assert_eq!(remember(&mut map, "e.txt"), Seen::New);
    }

    #[test]
    fn a_session_remembers_names_and_which_were_placed() {
        for folds in [false, true] {
            let mut m = SeenNames::new(folds);
            let a = keys(b"dir/a", folds);
            let b = keys(b"dir/b", folds);
            assert_eq!(m.claim(a), Seen::New);
            assert_eq!(m.claim(a), Seen::Again, "the same name twice");
            assert_eq!(m.seen(a), Seen::Again);
            assert!(!m.placed(a));
            m.mark_placed(a.1);
            assert!(m.placed(a), "placed ({folds})");
            // Placed, it is still the same name, once.
            assert_eq!(m.seen(a), Seen::Again);
            assert_eq!(m.claim(a), Seen::Again);
            assert_eq!(m.seen(b), Seen::New);
            assert!(!m.placed(b), "never offered");
            m.mark_placed(b.1);
            assert!(!m.placed(b), "not offered: not remembered as placed");
            assert_eq!(m.claim(b), Seen::New);
            assert_eq!(m.len(), 2);
            // Without folding, names that differ by case are two names.
            let upper = keys(b"DIR/A", folds);
            let expected = if folds { Seen::Collides } else { Seen::New };
            assert_eq!(m.seen(upper), expected);
        }
    }

    #[test]
    fn claim_branches() {
        assert_eq!(code(claim(true)), None);
        assert_eq!(code(claim(false)), Some(Reject::InProgress));
    }

    #[test]
    fn target_branches() {
        let never = || panic!("identical() must not be asked");
        assert_eq!(target(Target::Absent, false, never), Answer::Write);
        assert_eq!(target(Target::Absent, true, never), Answer::Write);
        for t in [Target::Symlink, Target::NotAFile] {
            for overwrite in [false, true] {
                let Answer::Refuse(r) = target(t, overwrite, never) else {
                    panic!("{t:?} is refused");
                };
                assert_eq!(r.0, Reject::Conflict);
            }
        }
        // Identical: skipped, with or without --overwrite.
        let same = Target::File { same_size: true };
        assert_eq!(target(same, false, || true), Answer::Skip);
        assert_eq!(target(same, true, || true), Answer::Skip);
        // Different content, same size or not.
        for t in [same, Target::File { same_size: false }] {
            let Answer::Refuse(r) = target(t, false, || false) else {
                panic!("different content is refused without --overwrite");
            };
            assert_eq!(r.0, Reject::Exists);
            assert_eq!(target(t, true, || false), Answer::Write);
        }
        // Another size is different without hashing anything.
        let other = Target::File { same_size: false };
        assert_eq!(target(other, true, never), Answer::Write);
    }

    #[test]
    fn space_branches() {
        assert_eq!(code(space(10, 10)), None);
        assert_eq!(code(space(0, 0)), None);
        let r = space(11, 10).expect_err("no space");
        assert_eq!(r.0, Reject::NoSpace);
        assert_eq!(r.1, "not enough space: need 11 bytes, have 10");
        let fresh = Duration::from_millis(10);
        assert_eq!(known_free(5, Some(10), fresh), Some(10));
        assert_eq!(known_free(6, Some(10), fresh), None, "a large part of it");
        assert_eq!(
            known_free(1, Some(10), Duration::from_secs(1)),
            None,
            "stale"
        );
        assert_eq!(known_free(1, None, fresh), None, "never asked");
    }
}
