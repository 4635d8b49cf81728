//! What an answer means for an entry, as pure functions: no sockets, no
//! files.

use crate::exit::Exit;
use crate::protocol::frame::reject_code;
use crate::sanitize::escape;

/// The outcome of one entry that did not break the session.
pub(super) enum Verdict {
    /// Verified, created or skipped as identical.
    Done,
    /// Send it again in the next session (after a digest mismatch).
    Again,
    /// Refused or failed; the session goes on: status, reason code (see
    /// [`Event::FileFailed`]), message.
    Failed(Exit, &'static str, String),
}

pub(super) fn reject_verdict(shown: &str, code: u16, message: &str) -> Verdict {
    let what = match code {
        reject_code::UNSAFE_NAME => "unsafe name",
        reject_code::EXISTS => "exists with other content (use --overwrite on the receiver)",
        reject_code::NO_SPACE => "not enough space",
        reject_code::CONFLICT => "conflicts with what is there",
        reject_code::IO => "receiver i/o error",
        _ => "refused",
    };
    let reason = crate::events::reject_reason(code);
    Verdict::Failed(
        Exit::Refused,
        reason,
        format!("{shown}: refused by receiver: {what}: {}", escape(message)),
    )
}
