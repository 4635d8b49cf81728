//! The answer to an offer, as pure functions: no sockets, no files.
//! [`super::offer`] gathers the facts in this order, asking each function
//! as soon as it has the fact, and stops at the first refusal:
//!
//! 1. the name ([`name`]): unsafe or reserved for ftx's own files → REJECT
//!    unsafe name; offered before in this session → REJECT conflict;
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

/// Step 1: the name as validated ([`crate::protocol::WireName`]), and
/// whether this session saw it before.
pub(super) fn name(valid: Result<(), &NameError>, seen_before: bool) -> Result<(), Refusal> {
    if let Err(e) = valid {
        return Err(refusal(Reject::UnsafeName, format!("unsafe name: {e}")));
    }
    if seen_before {
        return Err(refusal(Reject::Conflict, "offered twice in one session"));
    }
    Ok(())
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
        assert_eq!(code(name(Ok(()), false)), None);
        assert_eq!(code(name(Ok(()), true)), Some(Reject::Conflict));
        for bad in [&b"../x"[..], b"/etc/passwd", b"a/.b.ftx-part", b"a\x1bb"] {
            let e = WireName::from_bytes(bad).expect_err("refused");
            let r = name(Err(&e), false).expect_err("refused");
            assert_eq!(r.0, Reject::UnsafeName);
            assert!(r.1.starts_with("unsafe name: "), "{}", r.1);
        }
        // A reserved name (a partial's) is refused as unsafe.
        let e = WireName::from_bytes(b".x.iso.ftx-part").expect_err("reserved");
        assert_eq!(e, NameError::Reserved);
        assert_eq!(code(name(Err(&e), false)), Some(Reject::UnsafeName));
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
