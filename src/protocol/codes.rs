//! The one table of codes: every ERROR, REJECT, RESULT and SKIP code, with
//! what it means everywhere it shows: its `reason` in `--json` events, the
//! sender's exit status, and the words a person reads. Both roles and the
//! events use these enums; nothing else spells a code's meaning.
//!
//! The `*_code` modules below give the same numbers as plain `u16`/`u8`
//! constants, for frames (which carry the raw number, so an unknown code
//! from a newer peer still decodes) and for match patterns.

use crate::exit::Exit;

/// ERROR codes: fatal for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The peer broke the protocol (malformed frame, unexpected frame).
    Protocol = 1,
    /// The peer speaks a version we do not.
    Version = 2,
    /// Authentication failed.
    Auth = 3,
    /// The receiver serves too many sessions.
    Busy = 4,
    /// The peer was silent for too long.
    Timeout = 5,
    /// An internal error on the side that sends the ERROR.
    Internal = 6,
    /// A record of a sealed session failed to decrypt: changed, dropped,
    /// replayed or reordered on the way.
    Tampered = 7,
    /// The listener does not play the role the dialer's first frame asks
    /// for, or a PULL names a path the server does not offer.
    Refused = 8,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::Protocol,
        ErrorCode::Version,
        ErrorCode::Auth,
        ErrorCode::Busy,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Tampered,
        ErrorCode::Refused,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a wire number, if it is one this build knows.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// True when trying again later can help (the sender retries).
    pub fn transient(self) -> bool {
        matches!(self, ErrorCode::Busy | ErrorCode::Timeout)
    }

    /// The sender's exit status when a session ends with this ERROR.
    pub fn exit(self) -> Exit {
        match self {
            ErrorCode::Auth => Exit::Auth,
            ErrorCode::Busy | ErrorCode::Timeout => Exit::Connect,
            ErrorCode::Tampered => Exit::Integrity,
            ErrorCode::Protocol | ErrorCode::Version | ErrorCode::Internal | ErrorCode::Refused => {
                Exit::Failure
            }
        }
    }

    /// What it means, in words.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "protocol error",
            ErrorCode::Version => "unsupported protocol version",
            ErrorCode::Auth => "authentication failed",
            ErrorCode::Busy => "receiver busy",
            ErrorCode::Timeout => "timed out",
            ErrorCode::Internal => "internal error",
            ErrorCode::Tampered => "tampered with on the way",
            ErrorCode::Refused => "refused",
        }
    }
}

/// REJECT codes: the offer is refused; the session goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Reject {
    /// The name breaks the name rules (or is reserved for ftx's own files).
    UnsafeName = 10,
    /// Another file already sits under the name and `--overwrite` is off.
    Exists = 11,
    /// The file does not fit in the free space.
    NoSpace = 12,
    /// The name clashes: same target twice, file vs directory, a symlink.
    Conflict = 13,
    /// The receiver could not create or write the entry.
    Io = 14,
    /// Another session is receiving this file right now (perhaps the
    /// sender's own earlier connection, not yet noticed dead): try again
    /// later. Senders treat it as a transient failure.
    InProgress = 15,
    /// A symlink whose target is absolute or climbs out of the transferred
    /// tree (the receiver was not started with `--allow-unsafe-links`), or
    /// a LINK to something that is not an earlier file of the session.
    UnsafeLink = 16,
    /// The offer came without its digest (it was to follow the body), but
    /// something sits at the target or a partial for it: offer it again
    /// with the digest, so that skip, resume and the exists refusal can be
    /// decided. Not a failure.
    NeedDigest = 17,
}

impl Reject {
    /// Every code, in wire order.
    pub const ALL: [Reject; 8] = [
        Reject::UnsafeName,
        Reject::Exists,
        Reject::NoSpace,
        Reject::Conflict,
        Reject::Io,
        Reject::InProgress,
        Reject::UnsafeLink,
        Reject::NeedDigest,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a wire number, if it is one this build knows.
    pub fn from_code(code: u16) -> Option<Reject> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The `reason` of the `file_failed` event.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::UnsafeName => "refused_unsafe_name",
            Reject::Exists => "refused_exists",
            Reject::NoSpace => "refused_no_space",
            Reject::Conflict => "refused_conflict",
            Reject::Io => "io",
            Reject::InProgress => "refused_in_progress",
            Reject::UnsafeLink => "refused_unsafe_link",
            Reject::NeedDigest => "digest_needed",
        }
    }

    /// The `reason` for any wire number: `refused` for one this build does
    /// not know.
    pub fn reason_of(code: u16) -> &'static str {
        Reject::from_code(code).map_or("refused", Reject::reason)
    }

    /// The sender's exit status for a file refused with this code.
    pub fn exit(self) -> Exit {
        Exit::Refused
    }

    /// True when the sender should try the session again later instead of
    /// counting the file as refused.
    pub fn transient(self) -> bool {
        self == Reject::InProgress
    }

    /// What it means, in words, as the sender says it.
    pub fn message(self) -> &'static str {
        match self {
            Reject::UnsafeName => "unsafe name",
            Reject::Exists => "exists with other content (use --overwrite on the receiver)",
            Reject::NoSpace => "not enough space",
            Reject::Conflict => "conflicts with what is there",
            Reject::Io => "receiver i/o error",
            Reject::InProgress => "being received by another session",
            Reject::UnsafeLink => "unsafe link",
            Reject::NeedDigest => "digest needed first",
        }
    }

    /// The words for any wire number.
    pub fn message_of(code: u16) -> &'static str {
        Reject::from_code(code).map_or("refused", Reject::message)
    }
}

/// RESULT status values: the outcome of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Verified and in place under its final name.
    Ok = 0,
    /// The receiver's MD5 differs from the FILE header's.
    DigestMismatch = 1,
    /// The receiver failed to write the entry.
    IoError = 2,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 3] = [Status::Ok, Status::DigestMismatch, Status::IoError];

    /// The number on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The status for a wire number, if it is one this build knows.
    pub fn from_code(code: u8) -> Option<Status> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The `reason` of the `file_failed` event (empty for [`Status::Ok`]).
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "",
            Status::DigestMismatch => "integrity",
            Status::IoError => "io",
        }
    }

    /// The sender's exit status for a file with this outcome (when it is
    /// final: a mismatch is first sent again once).
    pub fn exit(self) -> Exit {
        match self {
            Status::Ok => Exit::Success,
            Status::DigestMismatch => Exit::Integrity,
            Status::IoError => Exit::Failure,
        }
    }

    /// What it means, in words.
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "verified",
            Status::DigestMismatch => "integrity failure",
            Status::IoError => "receiver could not write it",
        }
    }
}

/// SKIP reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SkipReason {
    /// The receiver already holds the same size and MD5.
    Identical = 1,
    /// Listed only (`ftx ls`): no body wanted.
    Listed = 2,
    /// `ftx check`: there, but different.
    Differs = 3,
    /// `ftx check`: not there.
    Missing = 4,
}

impl SkipReason {
    /// The number on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The `reason` of the `file_skipped` event.
    pub fn reason(self) -> &'static str {
        match self {
            SkipReason::Identical => "identical",
            SkipReason::Listed => "listed",
            SkipReason::Differs => "differs",
            SkipReason::Missing => "missing",
        }
    }
}

/// ERROR codes as numbers (see [`ErrorCode`]).
pub mod error_code {
    use super::ErrorCode;
    pub const PROTOCOL: u16 = ErrorCode::Protocol.code();
    pub const VERSION: u16 = ErrorCode::Version.code();
    pub const AUTH: u16 = ErrorCode::Auth.code();
    pub const BUSY: u16 = ErrorCode::Busy.code();
    pub const TIMEOUT: u16 = ErrorCode::Timeout.code();
    pub const INTERNAL: u16 = ErrorCode::Internal.code();
    pub const TAMPERED: u16 = ErrorCode::Tampered.code();
    pub const REFUSED: u16 = ErrorCode::Refused.code();
}

/// REJECT codes as numbers (see [`Reject`]).
pub mod reject_code {
    use super::Reject;
    pub const UNSAFE_NAME: u16 = Reject::UnsafeName.code();
    pub const EXISTS: u16 = Reject::Exists.code();
    pub const NO_SPACE: u16 = Reject::NoSpace.code();
    pub const CONFLICT: u16 = Reject::Conflict.code();
    pub const IO: u16 = Reject::Io.code();
    pub const IN_PROGRESS: u16 = Reject::InProgress.code();
    pub const UNSAFE_LINK: u16 = Reject::UnsafeLink.code();
    pub const NEED_DIGEST: u16 = Reject::NeedDigest.code();
}

/// RESULT status values as numbers (see [`Status`]).
pub mod result_status {
    use super::Status;
    pub const OK: u8 = Status::Ok.code();
    pub const DIGEST_MISMATCH: u8 = Status::DigestMismatch.code();
    pub const IO_ERROR: u8 = Status::IoError.code();
}

/// SKIP reasons as numbers (see [`SkipReason`]).
pub mod skip_reason {
    use super::SkipReason;
    pub const IDENTICAL: u8 = SkipReason::Identical.code();
    pub const LISTED: u8 = SkipReason::Listed.code();
    pub const DIFFERS: u8 = SkipReason::Differs.code();
    pub const MISSING: u8 = SkipReason::Missing.code();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pinned_and_round_trip() {
        let errors: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(errors, [1, 2, 3, 4, 5, 6, 7, 8]);
        let rejects: Vec<u16> = Reject::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(rejects, [10, 11, 12, 13, 14, 15, 16, 17]);
        let statuses: Vec<u8> = Status::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(statuses, [0, 1, 2]);
        assert_eq!(SkipReason::Identical.code(), 1);
        assert_eq!(SkipReason::Listed.code(), 2);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        for c in Reject::ALL {
            assert_eq!(Reject::from_code(c.code()), Some(c));
        }
        for c in Status::ALL {
            assert_eq!(Status::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(99), None);
        assert_eq!(Reject::from_code(9), None);
        assert_eq!(Status::from_code(3), None);
    }

    #[test]
    fn meanings_are_the_documented_ones() {
        // README "JSON events", `reason`.
        assert_eq!(Reject::reason_of(10), "refused_unsafe_name");
        assert_eq!(Reject::reason_of(11), "refused_exists");
        assert_eq!(Reject::reason_of(12), "refused_no_space");
        assert_eq!(Reject::reason_of(13), "refused_conflict");
        assert_eq!(Reject::reason_of(14), "io");
        assert_eq!(Reject::reason_of(15), "refused_in_progress");
        assert_eq!(Reject::reason_of(16), "refused_unsafe_link");
        assert_eq!(Reject::reason_of(999), "refused");
        assert_eq!(Status::DigestMismatch.reason(), "integrity");
        assert_eq!(Status::IoError.reason(), "io");
        assert_eq!(SkipReason::Identical.reason(), "identical");
        // README "Exit codes".
        assert!(Reject::ALL.iter().all(|r| r.exit() == Exit::Refused));
        assert_eq!(Status::DigestMismatch.exit(), Exit::Integrity);
        assert_eq!(Status::IoError.exit(), Exit::Failure);
        assert_eq!(ErrorCode::Auth.exit(), Exit::Auth);
        assert!(ErrorCode::Busy.transient() && ErrorCode::Timeout.transient());
        assert!(!ErrorCode::Protocol.transient() && !ErrorCode::Auth.transient());
        assert!(Reject::InProgress.transient() && !Reject::Exists.transient());
        assert_eq!(Reject::message_of(999), "refused");
    }
}
