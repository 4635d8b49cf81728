//! Machine-readable output: with `--json`, both roles print one JSON object
//! per line on stdout, each with an `"event"` field naming its kind. The
//! schema is documented in the README ("JSON events"); fields are only ever
//! added, never renamed or removed.

use serde::Serialize;
use std::io::Write;

/// One event. Serialized as `{"event":"file_done", ...}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The receiver listens.
    Listening {
        /// Address as printed in `listening on ADDR:PORT`.
        address: String,
        /// The real port (useful with `--port 0`).
        port: u16,
    },
    /// A file transfer starts (after the receiver accepted it).
    FileStarted {
        /// Wire name (escaped).
        path: String,
        /// Size of the whole file.
        bytes: u64,
        /// Offset the body starts at (non-zero: resumed).
        offset: u64,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// A file was verified and is in place.
    FileDone {
        /// Wire name (escaped).
        path: String,
        /// Size of the whole file.
        bytes: u64,
        /// The file's digest, lower-case hex (MD5 unless `hash` says).
        md5: String,
        /// The digest's algorithm: "md5" or "xxh3".
        hash: String,
        /// Offset the transfer resumed from (0: whole file sent).
        resumed_from: u64,
        /// Time spent on the body.
        seconds: f64,
        /// Body bytes per second / 1e6.
        mb_per_s: f64,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// The receiver already held identical content; nothing was sent.
    FileSkipped {
        /// Wire name (escaped).
        path: String,
        /// Size of the file.
        bytes: u64,
        /// Why: "identical".
        reason: String,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// A file failed or was refused.
    FileFailed {
        /// Wire name or local path (escaped).
        path: String,
        /// Reason code: "integrity", "refused_exists", "refused_unsafe_name",
        /// "refused_no_space", "refused_conflict", "refused", "io", "read".
        reason: String,
        /// Human-readable message (escaped).
        message: String,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// An entry the sender did not offer (a FIFO, a name that cannot be
    /// sent, a tree too deep, an unreadable entry, a link left out).
    EntryLeft {
        /// Local path (escaped).
        path: String,
        /// Reason code: "special", "symlink", "symlink_loop",
        /// "unsendable_name", "too_deep", "read".
        reason: String,
        /// Human-readable message.
        message: String,
        /// Left out because the user asked (`--no-links`,
        /// `--skip-special`): does not fail the run.
        asked: bool,
    },
    /// The sender lost the connection and tries again.
    Retry {
        /// What went wrong.
        message: String,
        /// Seconds until the next attempt.
        delay_s: f64,
        /// Seconds the sender goes on retrying without progress
        /// (`--retry-for`) after this pause.
        gives_up_in_s: f64,
    },
    /// Why a run (sender) or a session (receiver) failed as a whole (the
    /// connection, the peer, authentication, the command): the reason
    /// stderr gives, before the summary.
    Error {
        /// "send" or "recv".
        role: String,
        /// The exit status it means (receiver: 1 for a failed session).
        exit_code: i32,
        /// One word for it: "failure", "connect", "integrity", "refused",
        /// "auth", "interrupted".
        reason: String,
        /// Human-readable message (escaped).
        message: String,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// `ftx check`: one entry's verdict.
    Checked {
        /// The entry's name (escaped).
        path: String,
        /// `same`, `differs`, `only_here`, `only_there` or `error`.
        state: String,
    },
    /// `ftx check`: the last line.
    CheckSummary {
        /// Entries the same on both sides.
        same: u64,
        /// Entries on both sides, different.
        differs: u64,
        /// Entries only on this side.
        only_here: u64,
        /// Entries only on the receiver.
        only_there: u64,
        /// Entries that could not be compared.
        errors: u64,
        /// The exit status (0 the same, 7 differs, else an error).
        exit_code: i32,
    },
    /// End of a run (sender) or of a session (receiver).
    Summary {
        /// "send" or "recv".
        role: String,
        /// Files verified.
        files_ok: u64,
        /// Files skipped as identical.
        files_skipped: u64,
        /// Files failed or refused.
        files_failed: u64,
        /// Sender: entries not offered at all (see `entry_left`).
        #[serde(skip_serializing_if = "Option::is_none")]
        entries_left: Option<u64>,
        /// Body bytes transferred.
        bytes: u64,
        /// Sender: bytes of file data that crossed the wire (less than
        /// `bytes` when the holes of sparse files were skipped).
        #[serde(skip_serializing_if = "Option::is_none")]
        wire_bytes: Option<u64>,
        /// Bytes of delta updates taken from the files they replaced
        /// (never on the wire).
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_matched: Option<u64>,
        /// Wall time.
        seconds: f64,
        /// Sender: the exit status it ends with. Receiver: 0 if every file
        /// of the session was verified, else 1.
        exit_code: i32,
        /// The sender's address (receiver side only).
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
        /// The session was encrypted (a token on both sides).
        encrypted: bool,
    },
}

/// Where events go: stdout as JSON lines, or nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    on: bool,
}

impl Events {
    /// Emits only when `on` (`--json`).
    pub fn new(on: bool) -> Self {
        Events { on }
    }

    /// Whether events are printed (human lines on stdout are not, then).
    pub fn enabled(&self) -> bool {
        self.on
    }

    /// Prints one event as a line (best effort: a closed stdout is ignored).
    pub fn emit(&self, e: impl FnOnce() -> Event) {
        if !self.on {
            return;
        }
        // Built only when it is printed: an event names its file and peer,
        // and a tree of small files would pay for formatting them anyway.
        if let Ok(line) = serde_json::to_string(&e()) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Rate in MB/s, safe for tiny durations.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (bytes as f64 / 1e6 / seconds * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_kind() {
        let e = Event::FileDone {
            path: "a b.txt".into(),
            bytes: 3,
            md5: "900150983cd24fb0d6963f7d28e17f72".into(),
            hash: "md5".into(),
            resumed_from: 0,
            seconds: 0.5,
            mb_per_s: 0.0,
            peer: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&e).expect("json")).expect("parse");
        assert_eq!(v["event"], "file_done");
        assert_eq!(v["path"], "a b.txt");
        assert_eq!(v["bytes"], 3);
        assert!(v.get("peer").is_none());
        let l = Event::Listening {
            address: "127.0.0.1:5".into(),
            port: 5,
        };
        assert_eq!(
            serde_json::to_string(&l).expect("json"),
            r#"{"event":"listening","address":"127.0.0.1:5","port":5}"#
        );
    }
}
