//! What an answer means for an entry, as pure functions: no sockets, no
//! files. The session thread ([`super::answer`]) does what they decide.

use crate::digest::{hex, Md5Digest};
use crate::exit::Exit;
use crate::protocol::{Frame, Reject, Status};
use crate::sanitize::escape;

/// The outcome of one entry that did not break the session.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Verified, created or skipped as identical.
    Done,
    /// Send it again in the next session (after a digest mismatch).
    Again,
    /// Refused or failed; the session goes on: status, reason code (see
    /// [`crate::events::Event::FileFailed`]), message.
    Failed(Exit, &'static str, String),
}

/// What the sender does about the answer to an offer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// ACCEPT: send the body from this offset.
    Send(u64),
    /// SKIP: the receiver has it already; the entry is done.
    Skipped,
    /// The entry is settled (a directory's RESULT, a REJECT).
    Settle(Verdict),
    /// End this attempt and try the session again after a pause (the file
    /// is being received by another session, most likely our own earlier
    /// connection that the receiver has not noticed dead yet).
    Retry(String),
    /// The answer makes no sense: the attempt ends, as a protocol error.
    Broken(String),
    /// The receiver needs the digest first (REJECT 17): offer the file
    /// again, hashed, in the next session.
    NeedDigest,
}

/// The action for `frame`, the answer to the offer of the entry `shown`
/// names (made only for a message): a file of `file_size` bytes, or a
/// directory (`None`).
pub(super) fn answer(frame: &Frame, file_size: Option<u64>, shown: &dyn Fn() -> String) -> Action {
    match (frame, file_size) {
        (
            Frame::Result {
                status, message, ..
            },
            None,
        ) => {
            if *status == Status::Ok.code() {
                Action::Settle(Verdict::Done)
            } else {
                Action::Settle(Verdict::Failed(
                    Exit::Failure,
                    Status::IoError.reason(),
                    format!(
                        "{}: receiver could not create it: {}",
                        shown(),
                        escape(message)
                    ),
                ))
            }
        }
        (Frame::Reject { code, .. }, Some(_)) if *code == Reject::NeedDigest.code() => {
            Action::NeedDigest
        }
        (Frame::Reject { code, message, .. }, _)
            if Reject::from_code(*code).is_some_and(Reject::transient) =>
        {
            Action::Retry(format!(
                "{}: the receiver is still busy with it: {}",
                shown(),
                escape(message)
            ))
        }
        (Frame::Reject { code, message, .. }, _) => {
            Action::Settle(reject_verdict(&shown(), *code, message))
        }
        (Frame::Skip { .. }, Some(_)) => Action::Skipped,
        (Frame::Accept { offset, .. }, Some(size)) if *offset > size => Action::Broken(format!(
            "receiver accepted {} at offset {offset}, beyond its size {size}",
            shown()
        )),
        (Frame::Accept { offset, .. }, Some(_)) => Action::Send(*offset),
        (other, _) => Action::Broken(format!(
            "unexpected {} in answer to the offer of {}",
            other.name(),
            shown()
        )),
    }
}

/// A REJECT of the offer of `shown`, as a verdict.
pub(super) fn reject_verdict(shown: &str, code: u16, message: &str) -> Verdict {
    let exit = Reject::from_code(code).map_or(Exit::Refused, Reject::exit);
    let what = Reject::message_of(code);
    let message = escape(message);
    // The receiver's message may already say what the code means.
    let why = if message.starts_with(what) {
        message
    } else {
        format!("{what}: {message}")
    };
    Verdict::Failed(
        exit,
        Reject::reason_of(code),
        format!("{shown}: refused by receiver: {why}"),
    )
}

/// The verdict on a file whose body was sent, from its RESULT: `status`
/// and the receiver's digest `got`, against the digest `sent` in the
/// offer. A mismatch is sent again from 0 when `may_resend` (once, and not
/// with `--retry-for 0`), else it fails as an integrity failure.
pub(super) fn result(
    status: u8,
    sent: &Md5Digest,
    got: &Md5Digest,
    may_resend: bool,
    shown: &dyn Fn() -> String,
    message: &str,
) -> Verdict {
    let ok = status == Status::Ok.code();
    if ok && got == sent {
        return Verdict::Done;
    }
    let shown = shown();
    if !ok && status != Status::DigestMismatch.code() {
        return Verdict::Failed(
            Status::IoError.exit(),
            Status::IoError.reason(),
            format!(
                "{shown}: {}: {}",
                Status::IoError.message(),
                escape(message)
            ),
        );
    }
    let msg = mismatch(&shown, sent, got, ok);
    if may_resend {
        Verdict::Again
    } else {
        Verdict::Failed(
            Status::DigestMismatch.exit(),
            Status::DigestMismatch.reason(),
            format!("{msg}; the file was not kept"),
        )
    }
}

/// Says that `shown` arrived with another digest.
pub(super) fn mismatch(shown: &str, sent: &Md5Digest, got: &Md5Digest, ok: bool) -> String {
    let what = if ok {
        "receiver reported ok with MD5"
    } else {
        "receiver computed"
    };
    format!(
        "{shown}: integrity failure: sender MD5 {}, {what} {}",
        hex(sent),
        hex(got)
    )
}

/// Whether a file changed while it was read, and why (for a person): it
/// was offered with `offered` bytes, has `now` bytes, reads past `offered`
/// (`reads_more`), or has another mtime (`modified`). `None`: unchanged.
pub(super) fn change(offered: u64, now: u64, reads_more: bool, modified: bool) -> Option<String> {
    if now > offered {
        Some(format!(
            "file changed as we read it: it grew from {offered} to {now} bytes while it was sent \
             (what arrived is its first {offered} bytes)"
        ))
    } else if reads_more {
        Some(format!(
            "its size says {offered} bytes but it reads more (a /proc or /sys file?): not sent whole"
        ))
    } else if modified {
        Some("file changed as we read it: it was modified while it was sent".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> String {
        "f".into()
    }

    fn d() -> String {
        "d".into()
    }

    #[test]
    fn a_file_that_grew_reads_more_or_was_modified_has_changed() {
        assert_eq!(change(10, 10, false, false), None);
        let grew = change(326, 358, true, true).expect("grew");
        assert!(grew.contains("grew from 326 to 358 bytes"), "{grew}");
        let proc_file = change(0, 0, true, false).expect("reads more");
        assert!(proc_file.contains("reads more"), "{proc_file}");
        let touched = change(10, 10, false, true).expect("modified");
        assert!(touched.contains("modified while it was sent"), "{touched}");
    }
    use crate::protocol::codes::{reject_code, result_status, skip_reason};

    fn reject(code: u16) -> Frame {
        Frame::Reject {
            id: 1,
            code,
            message: "why".into(),
        }
    }

    #[test]
    fn every_answer_to_a_file_offer() {
        let accept = |offset| Frame::Accept { id: 1, offset };
        assert_eq!(answer(&accept(0), Some(10), &f), Action::Send(0));
        assert_eq!(answer(&accept(10), Some(10), &f), Action::Send(10));
        assert!(
            matches!(answer(&accept(11), Some(10), &f), Action::Broken(m) if m.contains("beyond its size"))
        );
        let skip = Frame::Skip {
            id: 1,
            reason: skip_reason::IDENTICAL,
        };
        assert_eq!(answer(&skip, Some(10), &f), Action::Skipped);
        assert!(matches!(
            answer(&reject(reject_code::IN_PROGRESS), Some(10), &f),
            Action::Retry(m) if m.contains("still busy")
        ));
        for code in [
            reject_code::UNSAFE_NAME,
            reject_code::EXISTS,
            reject_code::NO_SPACE,
            reject_code::CONFLICT,
            reject_code::IO,
            99,
        ] {
            let Action::Settle(Verdict::Failed(exit, reason, msg)) =
                answer(&reject(code), Some(10), &f)
            else {
                panic!("REJECT {code} settles the entry as failed");
            };
            assert_eq!(exit, Exit::Refused);
            assert_eq!(reason, Reject::reason_of(code));
            assert!(msg.starts_with("f: refused by receiver: "), "{msg}");
        }
        // What the code means is said once, not twice.
        let no_space = Frame::Reject {
            id: 1,
            code: reject_code::NO_SPACE,
            message: "not enough space: need 10 bytes, have 5".into(),
        };
        let Action::Settle(Verdict::Failed(_, _, msg)) = answer(&no_space, Some(10), &f) else {
            panic!("REJECT settles");
        };
        assert_eq!(
            msg,
            "f: refused by receiver: not enough space: need 10 bytes, have 5"
        );
        // A RESULT where an answer to an offer is due, SUMMARY, WELCOME...
        let result = Frame::Result {
            id: 1,
            status: result_status::OK,
            md5: [0; 16],
            message: String::new(),
        };
        assert!(matches!(answer(&result, Some(10), &f), Action::Broken(_)));
        assert!(matches!(
            answer(&Frame::End { flags: 0 }, Some(10), &f),
            Action::Broken(_)
        ));
    }

    #[test]
    fn every_answer_to_a_directory_offer() {
        let result = |status| Frame::Result {
            id: 1,
            status,
            md5: [0; 16],
            message: "no room".into(),
        };
        assert_eq!(
            answer(&result(result_status::OK), None, &d),
            Action::Settle(Verdict::Done)
        );
        assert!(matches!(
            answer(&result(result_status::IO_ERROR), None, &d),
            Action::Settle(Verdict::Failed(Exit::Failure, "io", m)) if m.contains("could not create it: no room")
        ));
        let skip = Frame::Skip { id: 1, reason: 1 };
        assert!(matches!(answer(&skip, None, &d), Action::Broken(_)));
        assert!(matches!(
            answer(&Frame::Accept { id: 1, offset: 0 }, None, &d),
            Action::Broken(_)
        ));
        assert!(matches!(
            answer(&reject(reject_code::CONFLICT), None, &d),
            Action::Settle(Verdict::Failed(Exit::Refused, "refused_conflict", _))
        ));
    }

    #[test]
    fn every_result_of_a_sent_file() {
        let (a, b) = ([1; 16], [2; 16]);
        let ok = result_status::OK;
        let bad = result_status::DIGEST_MISMATCH;
        assert_eq!(result(ok, &a, &a, true, &f, ""), Verdict::Done);
        // "ok" with another digest is not believed.
        assert_eq!(result(ok, &a, &b, true, &f, ""), Verdict::Again);
        assert_eq!(result(bad, &a, &b, true, &f, ""), Verdict::Again);
        assert!(matches!(
            result(bad, &a, &b, false, &f, ""),
            Verdict::Failed(Exit::Integrity, "integrity", m) if m.ends_with("the file was not kept")
        ));
        assert!(matches!(
            result(result_status::IO_ERROR, &a, &a, true, &f, "disk full"),
            Verdict::Failed(Exit::Failure, "io", m) if m.contains("disk full")
        ));
        assert!(matches!(
            result(77, &a, &a, true, &f, "?"),
            Verdict::Failed(Exit::Failure, "io", _)
        ));
    }
}
