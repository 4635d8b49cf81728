//! Reporting: a file's RESULT, its `received` line or `--json` event, and
//! the log line when it fails or is refused; the ERROR that ends a session.

use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::digest::hex;
use crate::events::{mb_per_s, Event};
use crate::net::Deadlined;
use crate::protocol::frame::file_flags;
use crate::protocol::Frame;
use crate::protocol::{ErrorCode, Reject, Status};
use crate::sanitize::escape_bytes;
use anyhow::Result;
use std::net::SocketAddr;

/// Tells the peer why its session ends (best effort) and builds the error.
pub(super) fn fail_session(conn: &mut Conn<Deadlined>, e: ConnError, when: &str) -> anyhow::Error {
    let code = match e {
        ConnError::Timeout | ConnError::Stalled(_) => Some(ErrorCode::Timeout.code()),
        ConnError::Frame(_) => Some(ErrorCode::Protocol.code()),
        ConnError::Tampered(_) => Some(ErrorCode::Tampered.code()),
        _ => None,
    };
    if let Some(code) = code {
        let _ = conn.send(&Frame::Error {
            code,
            message: e.to_string(),
        });
    }
    anyhow::Error::new(e).context(format!("session ended {when}"))
}

/// An I/O failure of a verified file (its RESULT carries the MD5).
pub(super) fn io_failure(r: &Received<'_>, shown: String, message: String) -> Failure {
    Failure {
        id: r.h.id,
        shown,
        status: Status::IoError.code(),
        md5: r.h.md5,
        message,
    }
}

/// Counts and reports a file now in place (its line for stdout goes into
/// `lines`); its RESULT ok.
pub(super) fn done(
    sh: &Shared,
    peer: SocketAddr,
    stats: &mut Stats,
    v: &Received<'_>,
    shown: &str,
    lines: &mut String,
) -> Frame {
    let h = &v.h;
    stats.ok += 1;
    stats.bytes += h.size - v.offset;
    sh.to_manifest(&h.md5, v.name.as_bytes());
    let took = v.started.elapsed();
    let secs = took.as_secs_f64();
    if sh.events.enabled() {
        sh.events.emit(|| Event::FileDone {
            path: shown.to_owned(),
            bytes: h.size,
            md5: hex(&h.md5),
            hash: file_flags::algo(h.flags).name().into(),
            resumed_from: v.offset,
            seconds: secs,
            mb_per_s: mb_per_s(h.size - v.offset, secs),
            peer: Some(peer.to_string()),
        });
    } else {
        let line = crate::progress::DoneLine {
            verb: "received",
            shown,
            size: h.size,
            algo: file_flags::algo(h.flags).name(),
            digest: &h.md5,
            mb_per_s: mb_per_s(h.size - v.offset, secs),
            resumed_at: v.offset,
        };
        sh.progress
            .file_line_to(v.arriving, lines, |out| line.write(out));
    }
    Frame::Result {
        id: h.id,
        status: Status::Ok.code(),
        md5: h.md5,
        message: String::new(),
    }
}

/// Counts and reports a file that definitely failed; its RESULT.
pub(super) fn failed(sh: &Shared, peer: SocketAddr, stats: &mut Stats, f: Failure) -> Frame {
    stats.failed += 1;
    if f.status == Status::DigestMismatch.code() {
        stats.mismatched += 1;
    }
    sh.log(&format!("{peer}: {}", f.message));
    sh.events.emit(|| Event::FileFailed {
        path: f.shown,
        reason: Status::from_code(f.status)
            .map_or(Status::IoError.reason(), Status::reason)
            .into(),
        message: f.message.clone(),
        peer: Some(peer.to_string()),
    });
    Frame::Result {
        id: f.id,
        status: f.status,
        md5: f.md5,
        message: f.message,
    }
}

/// Refusals logged one by one per session; the rest are counted.
pub(super) const LOGGED_REFUSALS: u64 = 20;

/// A name as logged: at most 200 bytes of it.
fn truncated(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(200)]
}

impl<'a> Session<'a, '_> {
    pub(super) fn reject(&mut self, id: u32, raw_name: &[u8], r: Refusal) -> Result<()> {
        self.stats.failed += 1;
        if r.0 == Reject::NeedDigest {
            self.stats.asked_digest += 1;
        }
        // Logged with a limit: a peer can offer refusable names far
        // faster than anyone reads them. The rest are counted, and said
        // when the session ends ([`Session::log_quiet_refusals`]).
        if self.refusals < LOGGED_REFUSALS {
            self.sh.log(&format!(
                "{}: rejected '{}': {}",
                self.peer,
                escape_bytes(truncated(raw_name)),
                r.1
            ));
        }
        self.refusals += 1;
        self.sh.events.emit(|| Event::FileFailed {
            path: escape_bytes(raw_name),
            reason: r.0.reason().into(),
            message: r.1.clone(),
            peer: Some(self.peer.to_string()),
        });
        let io = matches!(r.0, Reject::Io | Reject::NoSpace);
        self.conn.queue(&Frame::Reject {
            id,
            code: r.0.code(),
            message: r.1,
        });
        if io {
            self.check_out();
        }
        Ok(())
    }

    /// After a write failed: if OUT itself is why (see
    /// [`Shared::out_unusable`]), the session stops at its next frame with
    /// one error (see `Session::serve`), instead of failing file after file.
    fn check_out(&self) {
        self.sh.stop_if_out_unusable(&self.commits.stop);
    }

    /// Ends the session because the output directory cannot take any more
    /// files (`cause`): one ERROR for the sender, one line in the log, and
    /// the partials kept (the session ends as any broken one does).
    pub(super) fn stop(&mut self, cause: &str) -> anyhow::Error {
        let failed = match self.stats.failed {
            1 => "1 entry of this session failed".to_owned(),
            n => format!("{n} entries of this session failed"),
        };
        let msg = format!("stopped receiving: {cause}; {failed}, the rest were not taken");
        self.conn.send_error(ErrorCode::Internal, msg.clone());
        anyhow::anyhow!(msg)
    }

    /// Says how many refusals were not logged, if any.
    pub(super) fn log_quiet_refusals(&self) {
        if self.refusals > LOGGED_REFUSALS {
            self.sh.log(&format!(
                "{}: ... and {} more refused (not logged one by one)",
                self.peer,
                self.refusals - LOGGED_REFUSALS
            ));
        }
    }

    /// Reports a file that definitely failed and queues its RESULT.
    pub(super) fn result_failed(&mut self, f: Failure) {
        let io = f.status == Status::IoError.code();
        let frame = failed(self.sh, self.peer, &mut self.stats, f);
        self.conn.queue(&frame);
        if io {
            self.check_out();
        }
    }
}
