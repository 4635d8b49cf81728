//! Offers and answers on the session thread: the FILE or DIR offer of a
//! prepared entry, the body of an accepted file, and what each answer or
//! RESULT does to the entry (the decisions are in [`super::verdict`]).

use super::holes::{extents, sparse};
use super::types::*;
use super::verdict::*;
use crate::conn::Conn;
use crate::digest::Hasher;
use crate::digest::{hex, Md5Digest};
use crate::events::{mb_per_s, Event};
use crate::exit::Exit;
use crate::protocol::frame::file_flags;
use crate::protocol::frame::{DirHeader, FileHeader};
use crate::protocol::Frame;
use crate::protocol::{SkipReason, Status};
use crate::sanitize::escape;
use crate::secure::Wire;
use crate::walk::Kind;
use anyhow::{Context, Result};
use std::time::Instant;

impl Sender<'_> {
    /// Sends the offer of a prepared entry; `None` when it cannot be offered
    /// (unreadable file: already reported).
    pub(super) fn offer(
        &mut self,
        conn: &mut Conn<Wire>,
        idx: usize,
        prep: Prepared,
    ) -> Result<Option<Offer>, Broken> {
        let id = u32::try_from(idx + 1).context("too many entries for one session")?;
        let e = &self.items[idx].entry;
        let path = e.name.as_bytes().to_vec();
        match prep {
            Prepared::Link => {
                let frame = match (&e.kind, &e.link_to) {
                    (Kind::HardLink, Some(to)) => Frame::Link {
                        id,
                        path,
                        target: to.as_bytes().to_vec(),
                    },
                    _ => Frame::Symlink {
                        id,
                        mtime_s: e.mtime_s,
                        mtime_ns: e.mtime_ns,
                        path,
                        target: e.target.clone(),
                    },
                };
                conn.queue(&frame);
                Ok(Some(Offer {
                    id,
                    idx,
                    file: None,
                }))
            }
            Prepared::Dir(attrs) => {
                self.queue_attrs(conn, id, idx, attrs);
                let e = &self.items[idx].entry;
                conn.queue(&Frame::Dir(DirHeader {
                    id,
                    mode: e.mode,
                    mtime_s: e.mtime_s,
                    mtime_ns: e.mtime_ns,
                    path,
                }));
                Ok(Some(Offer {
                    id,
                    idx,
                    file: None,
                }))
            }
            Prepared::File(mut src) => {
                self.queue_attrs(conn, id, idx, std::mem::take(&mut src.attrs));
                let e = &self.items[idx].entry;
                let size = src.md.len();
                if size != e.size {
                    // Keep the session total honest if the file changed.
                    let len = self.total.length().unwrap_or(0);
                    self.total.set_length((len + size).saturating_sub(e.size));
                }
                let mut flags = if sparse(&src.md) {
                    file_flags::SPARSE
                } else {
                    0
                };
                if src.digest_follows {
                    flags |= file_flags::DIGEST_FOLLOWS;
                }
                if self.cfg.hash == crate::digest::Algo::Xxh3 {
                    flags |= file_flags::XXH3;
                }
                if src.stream {
                    flags |= file_flags::STREAM;
                }
                conn.queue(&Frame::File(FileHeader {
                    id,
                    size,
                    mode: e.mode,
                    mtime_s: e.mtime_s,
                    mtime_ns: e.mtime_ns,
                    flags,
                    md5: src.md5,
                    path,
                }));
                std::sync::Arc::make_mut(&mut self.items[idx].entry).size = size;
                self.items[idx].md5 = (!src.digest_follows).then_some(src.md5);
                if size >= crate::progress::PHASE_SHOWN_MIN {
                    // The receiver may check a partial before it answers.
                    let shown = self.items[idx].entry.name.shown();
                    self.phase(&shown, "waiting for the receiver", size);
                    self.sending.set_position(0);
                }
                Ok(Some(Offer {
                    id,
                    idx,
                    file: Some(src),
                }))
            }
            Prepared::Unreadable(msg) => {
                self.settle(idx, Verdict::Failed(Exit::Failure, "read", msg));
                Ok(None)
            }
        }
    }

    /// Queues the XATTR frames of entry `idx` (they go before its offer),
    /// says which asked-for ones cannot be sent, and counts what it has
    /// that was not asked for (the summary's hint).
    fn queue_attrs(&mut self, conn: &mut Conn<Wire>, id: u32, idx: usize, attrs: Attrs) {
        for (name, value) in attrs.list {
            conn.queue(&Frame::Xattr { id, name, value });
        }
        if !attrs.left.is_empty() {
            let msg = format!(
                "{}: extended attributes not sent: {}",
                self.items[idx].entry.name.shown(),
                attrs.left.join(", ")
            );
            self.progress.println(&format!("ftx: {msg}"));
            self.tally.attrs_left += 1;
        }
        self.tally.attrs_unsent.0 += u64::from(attrs.unsent.0);
        self.tally.attrs_unsent.1 += u64::from(attrs.unsent.1);
    }

    /// Records the outcome of an entry.
    pub(super) fn settle(&mut self, idx: usize, v: Verdict) {
        if !matches!(v, Verdict::Again) && self.items[idx].entry.kind != Kind::Dir {
            self.progress.file_settled();
        }
        match v {
            Verdict::Done => {
                let item = &mut self.items[idx];
                item.state = State::Done;
                if matches!(item.entry.kind, Kind::Symlink | Kind::HardLink) {
                    item.unsure = true;
                    self.unsure.push(idx);
                }
            }
            Verdict::Again => {}
            Verdict::Failed(exit, reason, msg) => {
                self.progress.println(&format!("ftx: {msg}"));
                self.events.emit(|| Event::FileFailed {
                    path: self.items[idx].entry.name.shown(),
                    reason: reason.into(),
                    message: msg,
                    peer: None,
                });
                self.items[idx].state = State::Failed(exit);
                self.items[idx].unsure = false;
            }
        }
    }

    /// Handles one frame from the receiver.
    pub(super) fn on_answer(
        &mut self,
        conn: &mut Conn<Wire>,
        frame: Frame,
        answers: &mut Answers,
        results: &mut Flights,
    ) -> Result<(), Broken> {
        if let Frame::Error { code, message } = &frame {
            return Err(peer_error(*code, message).into());
        }
        // The MD5 of the prefix the next ACCEPT resumes after.
        if let Frame::Prefix { id, md5 } = frame {
            self.prefixes.insert(id, md5);
            return Ok(());
        }
        // The old file's block digests, for a delta of the next ACCEPT.
        if let Frame::Blocks {
            id,
            block,
            first,
            total,
            digests,
        } = frame
        {
            let known = answers.front().is_some_and(|o| o.id == id);
            let added = self
                .blocks
                .entry(id)
                .or_default()
                .add(block, first, total, digests);
            return match added {
                Ok(()) if known => Ok(()),
                Ok(()) => {
                    Err(anyhow::anyhow!("BLOCKS for id={id}, which is not the next offer").into())
                }
                Err(why) => Err(anyhow::anyhow!("{why}").into()),
            };
        }
        // A RESULT for a file whose body was sent.
        if let Frame::Result {
            id,
            status,
            md5,
            message,
        } = &frame
        {
            if let Some(f) = results.remove(id) {
                let (verdict, idx) = self.file_result(f, *status, *md5, message);
                self.settle(idx, verdict);
                return Ok(());
            }
        }
        // Otherwise: the answer to the oldest offer.
        let Some(offer) = answers.pop_front() else {
            return Err(anyhow::anyhow!("unexpected {} from receiver", frame.name()).into());
        };
        let got = match &frame {
            Frame::Accept { id, .. }
            | Frame::Skip { id, .. }
            | Frame::Reject { id, .. }
            | Frame::Result { id, .. } => *id,
            other => {
                return Err(anyhow::anyhow!("unexpected {} from receiver", other.name()).into())
            }
        };
        if got != offer.id {
            return Err(anyhow::anyhow!(
                "receiver answered entry {got} while entry {} was next",
                offer.id
            )
            .into());
        }
        let idx = offer.idx;
        // Used by an ACCEPT (unless the file was resent whole once
        // already: a delta that did not verify is not tried again).
        let remote = self
            .blocks
            .remove(&got)
            .filter(|r| r.complete() && !self.items[idx].resent);
        // The name as shown is made only where a message needs it (once
        // per file it cost more than hashing a small one).
        let entry = std::sync::Arc::clone(&self.items[idx].entry);
        let shown = || entry.name.shown();
        let size = offer.file.as_ref().map(|src| src.md.len());
        let verdict = match answer(&frame, size, &shown) {
            Action::Settle(v) => v,
            Action::Retry(why) => {
                return Err(Broken {
                    err: anyhow::anyhow!("{why}"),
                    retry: true,
                    reset: false,
                })
            }
            Action::Broken(why) => return Err(anyhow::anyhow!("{why}").into()),
            // Asked for the digest of an offer that carried it: a receiver
            // that would ask for ever. The file fails.
            Action::NeedDigest if !offer.file.as_ref().is_some_and(|f| f.digest_follows) => {
                Verdict::Failed(
                    Exit::Failure,
                    "refused",
                    format!(
                        "{}: the receiver asked for a digest the offer carried",
                        shown()
                    ),
                )
            }
            Action::NeedDigest => {
                self.items[idx].need_digest = true;
                self.asked_digest += 1;
                Verdict::Again
            }
            Action::Skipped => {
                let size = size.unwrap_or(0);
                self.total.inc(size);
                self.items[idx].shown = size;
                self.tally.skipped += 1;
                self.events.emit(|| Event::FileSkipped {
                    path: shown(),
                    bytes: size,
                    reason: SkipReason::Identical.reason().into(),
                    peer: None,
                });
                Verdict::Done
            }
            Action::Send(offset) => {
                let Some(src) = offer.file else {
                    return Err(anyhow::anyhow!("internal error: no file for {}", shown()).into());
                };
                let (offset, prefix) = match self.prefixes.remove(&offer.id) {
                    Some(theirs) if offset > 0 => {
                        self.confirm_prefix(&src, offset, theirs, &shown())
                    }
                    _ => (offset, None),
                };
                let started = Instant::now();
                let md5 =
                    self.body(conn, offer.id, idx, &src, (offset, prefix), remote.as_ref())?;
                let sending = started.elapsed();
                // Standard input is what was read; a file must still be
                // what was offered when the receiver has verified it, or
                // the run says so (the file stays open until then).
                let version = crate::cache::Version::of(&src.md);
                let watch = match src.file {
                    Some(file) if !src.stream => Watch::File(file, Box::new(src.md)),
                    _ => Watch::Known(src.changed.map(String::from)),
                };
                let size = self.items[idx].entry.size;
                if size >= crate::progress::PHASE_SHOWN_MIN {
                    self.phase(&shown(), "verifying", size);
                }
                results.insert(
                    offer.id,
                    Flight {
                        idx,
                        version,
                        size,
                        md5,
                        offset,
                        started,
                        sending,
                        watch,
                    },
                );
                return Ok(());
            }
        };
        self.settle(idx, verdict);
        Ok(())
    }

    /// Says on the sending bar what a big file is waiting for (`what`);
    /// the bar's position is left as it is.
    fn phase(&self, shown: &str, what: &str, size: u64) {
        self.sending.set_message(format!("{shown} ({what})"));
        self.sending.set_length(size);
    }

    /// Streams the body of an accepted file (sendfile where possible).
    pub(super) fn body(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        src: &Source,
        (offset, prefix): (u64, Option<Hasher>),
        remote: Option<&crate::delta::Remote>,
    ) -> Result<Md5Digest, Broken> {
        let size = src.md.len();
        // A body hashed as it goes starts at 0, or where a confirmed
        // prefix (PREFIX) ends, its hash continued.
        let from = match prefix {
            Some(h) => (offset, h),
            None if offset == 0 => (0, Hasher::with(self.cfg.hash)),
            None if src.digest_follows => {
                return Err(anyhow::anyhow!(
                    "receiver accepted a file sent without its digest at offset {offset}, without PREFIX"
                )
                .into())
            }
            None => (offset, Hasher::with(self.cfg.hash)),
        };
        let entry = std::sync::Arc::clone(&self.items[idx].entry);
        let shown = || entry.name.shown();
        if offset > 0 && !self.cfg.quiet {
            self.progress
                .println(&format!("ftx: resuming {} at {offset}", shown()));
        }
        self.events.emit(|| Event::FileStarted {
            path: shown(),
            bytes: size,
            offset,
            peer: None,
        });
        if !self.sending.is_hidden() {
            self.sending.set_message(shown());
        }
        if self.progress.shown() {
            self.sending.set_length(size);
            self.sending.set_position(offset);
            self.total.inc(offset);
        }
        let frame = Frame::Body {
            id,
            offset,
            length: size - offset,
        };
        let from_memory = src
            .data
            .as_deref()
            .and_then(|d| d.get(usize::try_from(offset).ok()?..));
        if let Some(data) = from_memory {
            conn.queue_body(&frame, data)?;
            self.items[idx].shown = offset;
            self.moved(idx, size - offset, true);
            return Ok(src.md5);
        }
        let Some(file) = &src.file else {
            let shown = self.items[idx].entry.name.shown();
            return Err(
                anyhow::anyhow!("internal error: '{shown}' has neither data nor a file").into(),
            );
        };
        if src.stream {
            let (md5, size) = self.body_stdin(conn, id, idx, file)?;
            std::sync::Arc::make_mut(&mut self.items[idx].entry).size = size;
            self.items[idx].md5 = Some(md5);
            return Ok(md5);
        }
        if src.digest_follows {
            let md5 = self.body_hashing(conn, id, idx, (file, &src.md), remote, from)?;
            self.items[idx].md5 = Some(md5);
            if self.cfg.hash == crate::digest::Algo::Md5 {
                self.cache.put(&src.md, &md5);
            }
            return Ok(md5);
        }
        // A sparse file's data as BODY extents, its holes as HOLE frames
        // (nothing on the wire but the frame); any other as one BODY.
        let extents = if sparse(&src.md) {
            extents(file, offset, size).with_context(|| {
                format!(
                    "cannot read {}",
                    escape(&self.items[idx].entry.local.to_string_lossy())
                )
            })?
        } else {
            vec![(offset, size - offset, false)]
        };
        self.items[idx].shown = offset;
        match remote {
            Some(r) => self.send_delta(conn, id, idx, file, &extents, r)?,
            None => self.send_extents(conn, id, idx, file, &extents)?,
        }
        Ok(src.md5)
    }

    /// A resume from a partial written while the digest was unknown: the
    /// receiver sent the MD5 of its first `offset` bytes; the rest is sent
    /// from there only if that is the MD5 of this file's first `offset`
    /// bytes, else the whole file from 0. The hash state after the prefix
    /// comes with the offset: from the checkpoint this sender kept while
    /// it last sent this very version of the file, else hashed now (one
    /// read of the prefix).
    fn confirm_prefix(
        &self,
        src: &Source,
        offset: u64,
        theirs: Md5Digest,
        shown: &str,
    ) -> (u64, Option<Hasher>) {
        let version = crate::cache::Version::of(&src.md);
        // The latest checkpoint at or before the offset; the bytes from it
        // to the offset (none, or what the hash had not reached when the
        // last send stopped) are hashed now.
        let kept = (self.cfg.hash == crate::digest::Algo::Md5)
            .then(|| self.cache.state_before(&version, offset))
            .flatten()
            .and_then(|(at, state)| Some((at, Hasher::restore(&state)?)));
        let (from, start) = kept.unwrap_or((0, Hasher::with(self.cfg.hash)));
        let ours = {
            let f = src.file.as_ref();
            let mut h = start;
            let mut buf =
                vec![0u8; (1 << 20).min(usize::try_from(offset - from).unwrap_or(1 << 20))];
            let mut at = from;
            let mut ok = f.is_some();
            while ok && at < offset {
                let k = usize::try_from(offset - at)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                ok = f.is_some_and(|f| {
                    std::os::unix::fs::FileExt::read_exact_at(f, &mut buf[..k], at).is_ok()
                });
                h.update(&buf[..k]);
                at += k as u64;
            }
            ok.then_some(h)
        };
        if let Some(h) = ours {
            if h.clone().finish() == theirs {
                return (offset, Some(h));
            }
        }
        self.progress.println(&format!(
            "ftx: {shown}: the receiver's partial is not a prefix of this file; sending it all"
        ));
        (0, None)
    }

    /// The verdict on a file from its RESULT.
    pub(super) fn file_result(
        &mut self,
        f: Flight,
        status: u8,
        got: Md5Digest,
        message: &str,
    ) -> (Verdict, usize) {
        let idx = f.idx;
        let entry = std::sync::Arc::clone(&self.items[idx].entry);
        let shown = || entry.name.shown();
        let size = f.size;
        // Standard input cannot be read again.
        let may_resend = !self.items[idx].resent
            && !self.cfg.retry_for.is_zero()
            && !self.items[idx].entry.stdin;
        let changed = match &f.watch {
            Watch::File(file, md) => super::prepare::changed_since(file, md),
            Watch::Known(why) => why.clone(),
        };
        let verdict = match (
            result(status, &f.md5, &got, may_resend, &shown, message),
            changed,
        ) {
            // Verified, but not the file as it is now: named, exit 1 (as
            // GNU tar's "file changed as we read it").
            (Verdict::Done, Some(why)) => {
                Verdict::Failed(Exit::Failure, "changed", format!("{}: {why}", shown()))
            }
            // In place, verified, but without some attributes it was sent
            // with (the receiver may not set them): asked for, left behind.
            (Verdict::Done, None) if !message.is_empty() => Verdict::Failed(
                Exit::Failure,
                "attributes",
                format!("{}: {}", shown(), escape(message)),
            ),
            (v, _) => v,
        };
        match &verdict {
            Verdict::Done => {
                self.tally.files += 1;
                self.tally.bytes += size - f.offset;
                let took = f.started.elapsed();
                let seconds = took.as_secs_f64();
                if !self.cfg.quiet && !self.events.enabled() {
                    let mut line = String::new();
                    self.progress.file_line_to(f.sending, &mut line, |out| {
                        crate::progress::DoneLine {
                            verb: "sent",
                            shown: &shown(),
                            size,
                            algo: self.cfg.hash.name(),
                            digest: &f.md5,
                            mb_per_s: mb_per_s(size - f.offset, seconds),
                            resumed_at: f.offset,
                        }
                        .write(out)
                    });
                    if !line.is_empty() {
                        self.progress.suspend(|| print!("{line}"));
                    }
                }
                self.events.emit(|| Event::FileDone {
                    path: shown(),
                    bytes: size,
                    md5: hex(&f.md5),
                    hash: self.cfg.hash.name().into(),
                    resumed_from: f.offset,
                    seconds,
                    mb_per_s: mb_per_s(size - f.offset, seconds),
                    peer: None,
                });
            }
            Verdict::Failed(Exit::Failure, ..) => {}
            Verdict::Again | Verdict::Failed(..) => {
                // Forget what we believed about the file: hash it afresh.
                self.cache.forget(&f.version);
                self.items[idx].md5 = None;
                self.total.dec(std::mem::take(&mut self.items[idx].shown));
                if verdict == Verdict::Again {
                    self.items[idx].resent = true;
                    let ok = status == Status::Ok.code();
                    let note = mismatch(&shown(), &f.md5, &got, ok);
                    self.progress
                        .println(&format!("ftx: {note}; sending it again from 0"));
                }
            }
        }
        (verdict, idx)
    }
}
