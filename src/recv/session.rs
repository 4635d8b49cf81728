//! One sender's session, on its own thread: the frame loop after the
//! handshake, with a commit thread beside it (see [`super::commit`]).

use super::admit;
use super::extents::Extent;
use super::report::*;
use super::types::*;
use crate::conn::Conn;
use crate::events::Event;
use crate::front::{Live, Opened};
use crate::net::{self, Activity, Deadlined};
use crate::progress::Layout;
use crate::protocol::frame::{end_flags, file_flags};
use crate::protocol::limits::MAX_AWAITING_BODIES;
use crate::protocol::ErrorCode;
use crate::protocol::Frame;
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a receiving session began: a sender dialed in (its first frame
/// must be PUSH), or this receiver dialed and asked for the files (PULL,
/// already sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Began {
    Listening,
    Pulled,
}

pub(super) fn session(o: Opened, sh: &Shared, began: Began) -> Result<Stats> {
    let peer = o.peer;
    if sh.stopping.is_set() {
        bail!("refused: the receiver is shutting down");
    }
    let activity = Activity::default();
    let moved = Activity::default();
    moved.touch();
    let evicted = Arc::new(AtomicBool::new(false));
    let _live = o.stream.try_clone().ok().map(|clone| {
        sh.slots.register(
            peer,
            Live {
                stream: clone,
                activity: activity.clone(),
                moved: moved.clone(),
                evicted: evicted.clone(),
            },
        )
    });
    net::tune(&o.stream, sh.cfg.timeout).context("cannot set up the connection")?;
    let encrypted = o.sealed;
    let mut conn = o.conn(sh.cfg.timeout, activity);
    if began == Began::Listening {
        if let First::Check(flags) = first_frame(&mut conn)? {
            // Nothing is written: the offers are compared with OUT.
            moved.touch();
            let deep = flags & crate::protocol::frame::check_flags::DEEP != 0;
            let st = super::check::check(&mut conn, sh, deep)?;
            sh.log(&format!(
                "{peer}: checked: {} the same, {} not",
                st.ok, st.failed
            ));
            return Ok(st);
        }
    }

    let writer = conn
        .get_ref()
        .frame_writer()
        .context("cannot set up the connection")?;
    let bar = sh.progress.bytes_bar(0, Layout::Session);
    // One line per session: the peer, files so far, the current one,
    // bytes received, rate.
    bar.set_prefix(peer.to_string());
    let commits = Commits::new();
    let started = Instant::now();
    let (result, st) = std::thread::scope(|sc| {
        let committer = std::thread::Builder::new()
            .name("ftx-commit".into())
            .spawn_scoped(sc, || commits.run(sh, peer, writer))
            .context("cannot start the commit thread")?;
        let mut s = Session {
            sh,
            conn,
            peer,
            pulled: began == Began::Pulled,
            seen: super::admit::SeenNames::new(sh.folds),
            refused_dirs: KeySet::default(),
            fresh_dirs: FreshDirs::default(),
            attrs: None,
            refusals: 0,
            links: Vec::new(),
            progress: Instant::now(),
            moved,
            dirs: Vec::new(),
            awaiting: VecDeque::new(),
            small: Vec::new(),
            small_bytes: 0,
            commits: &commits,
            stats: Stats::default(),
            bar,
            bodies: 0,
            parent: None,
            stages: std::collections::HashMap::new(),
            open_stages: Vec::new(),
        };
        // Files already received are verified and placed even if the
        // session breaks: the commit thread goes on with what is queued.
        let mut result = s.serve();
        if evicted.load(Ordering::SeqCst) {
            let msg = format!(
                "evicted: every session slot was taken and this session made no progress for {} s or more; try again",
                crate::front::EVICT_AFTER.as_secs()
            );
            s.conn.send_error(ErrorCode::Busy, msg.clone());
            result = Err(anyhow::anyhow!(msg));
        }
        sh.remembered.fetch_sub(s.seen.len(), Ordering::Relaxed);
        s.verify_small();
        s.drop_unstarted();
        s.log_quiet_refusals();
        s.bar.finish_and_clear();
        commits.close();
        if committer.join().is_err() {
            bail!("internal error: the commit thread panicked");
        }
        s.stats.add(commits.drain(true).0);
        Ok((result, s.stats))
    })?;
    // A pull's events are the run's (recv/pull.rs): retries, one error,
    // one summary.
    if began == Began::Pulled {
        return result.map(|()| st);
    }
    if let Err(e) = &result {
        sh.events.emit(|| Event::Error {
            role: "recv".into(),
            exit_code: 1,
            reason: crate::exit::for_error(e).word().into(),
            message: crate::sanitize::escape(&format!("{e:#}")),
            peer: Some(peer.to_string()),
        });
    }
    sh.events.emit(|| Event::Summary {
        role: "recv".into(),
        files_ok: u64::from(st.ok - st.skipped),
        files_skipped: u64::from(st.skipped),
        files_failed: u64::from(st.failed),
        entries_left: None,
        bytes: st.bytes,
        wire_bytes: None,
        bytes_matched: Some(st.matched),
        seconds: started.elapsed().as_secs_f64(),
        exit_code: i32::from(result.is_err() || st.failed > 0),
        peer: Some(peer.to_string()),
        encrypted,
    });
    result.map(|()| st)
}

impl Session<'_, '_> {
    /// An entry the server does not offer: said, counted (it fails the
    /// run), never silent.
    fn left(&mut self, raw: &[u8], message: &str) {
        self.stats.left += 1;
        let path = crate::sanitize::escape_bytes(raw);
        let message = crate::sanitize::escape(message);
        self.sh
            .log(&format!("{}: not offered: {path}: {message}", self.peer));
        self.sh.events.emit(|| Event::EntryLeft {
            path,
            reason: "not_offered".into(),
            message,
            asked: false,
        });
    }
}

/// What a dialer asked a listening receiver for.
enum First {
    Push,
    Check(u32),
}

/// The dialer's first frame: a receiver that listens only takes PUSH, or
/// CHECK (a peer asking it for files gets ERROR 8 and nothing of OUT).
fn first_frame(conn: &mut Conn<Deadlined>) -> Result<First> {
    let refuse = |conn: &mut Conn<Deadlined>, code: ErrorCode, msg: String| {
        conn.send_error(code, msg.clone());
        anyhow::anyhow!("refused: {msg}")
    };
    match conn.read_frame() {
        Ok(Some(Frame::Push)) => Ok(First::Push),
        Ok(Some(Frame::Check { flags })) if flags & !crate::protocol::frame::check_flags::KNOWN == 0 => {
            Ok(First::Check(flags))
        }
        Ok(Some(Frame::Check { flags })) => Err(refuse(
            conn,
            ErrorCode::Protocol,
            format!("unsupported CHECK flags {flags:#010x}"),
        )),
        Ok(Some(Frame::Pull { .. })) => Err(refuse(
            conn,
            ErrorCode::Refused,
            "this is `ftx recv`: it takes files and offers none (to fetch files, ask an `ftx serve`)"
                .into(),
        )),
        Ok(Some(other)) => Err(refuse(
            conn,
            ErrorCode::Protocol,
            format!("expected PUSH or PULL after the handshake, got {}", other.name()),
        )),
        Ok(None) => bail!("closed the connection after its handshake"),
        Err(e) => Err(fail_session(conn, e, "after the handshake")),
    }
}

impl<'a> Session<'a, '_> {
    /// The session moved file bytes or settled an entry other than by a
    /// refusal: it is not idle, and not to be evicted.
    pub(super) fn made_progress(&mut self) {
        self.progress = Instant::now();
        self.moved.touch();
    }

    /// The file whose name has the portable-form key `folded` was placed
    /// (or found identical): a LINK may name it.
    pub(super) fn mark_placed(&mut self, folded: u64) {
        self.seen.mark_placed(folded);
    }

    /// Waits until the commit thread has placed every verified file and
    /// answered for it (and, with `stages`, put every stage in place: END,
    /// where every accepted file is in; not when the session breaks off,
    /// with files whose bodies never came), and counts what it did.
    pub(super) fn drain_commits(&mut self, stages: bool) -> Result<()> {
        let (stats, broken, placed) = self.commits.drain(stages);
        for k in placed {
            self.mark_placed(k);
        }
        self.stats.add(stats);
        match broken {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    pub(super) fn serve(&mut self) -> Result<()> {
        loop {
            if let Some(cause) = self.commits.stop.get() {
                let cause = cause.clone();
                return Err(self.stop(&cause));
            }
            if self.conn.buffered() == 0 && !self.conn.get_ref().readable_now() {
                self.verify_small();
                self.commits.nudge();
            }
            let frame = match self.conn.read_frame() {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.verify_small();
                    let _ = self.drain_commits(false);
                    bail!(
                        "closed the connection before END ({} ok, {} failed)",
                        self.stats.ok,
                        self.stats.failed
                    )
                }
                Err(e) => return Err(fail_session(&mut self.conn, e, "mid-session")),
            };
            let idle = self.progress.elapsed();
            if idle >= self.sh.cfg.timeout {
                // Offers that are only ever refused hold a slot as well as
                // silence does.
                let msg = format!(
                    "no progress for {} s (no file bytes, no entry accepted): session ended",
                    idle.as_secs()
                );
                self.conn.send_error(ErrorCode::Timeout, msg.clone());
                bail!("{msg}");
            }
            match frame {
                Frame::File(_) if self.awaiting.len() >= MAX_AWAITING_BODIES => {
                    let msg = format!(
                        "more than {MAX_AWAITING_BODIES} accepted files without their BODY"
                    );
                    return Err(self.protocol_error(msg));
                }
                Frame::File(_) | Frame::Dir(_)
                    if self.sh.remembered.load(Ordering::Relaxed) >= self.sh.cfg.max_names =>
                {
                    let msg = format!(
                        "receiver busy: its sessions remember {} names already, try again later",
                        self.sh.cfg.max_names
                    );
                    self.conn.send_error(ErrorCode::Busy, msg.clone());
                    bail!("{msg}");
                }
                Frame::File(_) | Frame::Dir(_) if self.seen.len() >= admit::MAX_ENTRIES => {
                    let msg = format!(
                        "more than {} entries in one session; send the rest in another",
                        admit::MAX_ENTRIES
                    );
                    return Err(self.protocol_error(msg));
                }
                Frame::File(h)
                    if h.flags & file_flags::STREAM != 0
                        && h.flags & file_flags::DIGEST_FOLLOWS == 0 =>
                {
                    return Err(
                        self.protocol_error("a STREAM FILE without DIGEST_FOLLOWS".to_owned())
                    );
                }
                Frame::File(h) if h.flags & !file_flags::KNOWN != 0 => {
                    let unknown = h.flags & !file_flags::KNOWN;
                    return Err(
                        self.protocol_error(format!("unsupported FILE flags {unknown:#010x}"))
                    );
                }
                Frame::File(h) => {
                    let attrs = self.take_attrs(h.id)?;
                    self.file(h, attrs)?
                }
                Frame::Dir(h) => {
                    let attrs = self.take_attrs(h.id)?;
                    self.dir(h, attrs)?
                }
                _ if self.attrs.is_some() && !matches!(frame, Frame::Xattr { .. }) => {
                    let msg = format!(
                        "XATTR not followed by its FILE or DIR, but {}",
                        frame.name()
                    );
                    return Err(self.protocol_error(msg));
                }
                Frame::Symlink {
                    id,
                    mtime_s,
                    mtime_ns,
                    path,
                    target,
                } => self.symlink(id, (mtime_s, mtime_ns), &path, &target)?,
                Frame::Link { id, path, target } => self.hard_link(id, &path, &target)?,
                Frame::Left { path, message } if self.pulled => self.left(&path, &message),
                Frame::Error { code, message } => {
                    self.verify_small();
                    let _ = self.drain_commits(false);
                    return Err(crate::front::dial::peer_error(code, &message));
                }
                Frame::Xattr { id, name, value } => self.xattr(id, name, value)?,
                frame @ (Frame::Body { .. } | Frame::Hole { .. } | Frame::Same { .. }) => {
                    if let Some(e) = Extent::of(&frame) {
                        self.body(e)?
                    }
                }
                Frame::End { flags } if flags & !end_flags::KNOWN != 0 => {
                    let unknown = flags & !end_flags::KNOWN;
                    return Err(
                        self.protocol_error(format!("unsupported END flags {unknown:#010x}"))
                    );
                }
                Frame::End { flags } if self.awaiting.is_empty() => {
                    self.stats.more = flags & end_flags::MORE != 0;
                    self.verify_small();
                    if let Some(cause) = self.commits.stop.get() {
                        // Files left without a RESULT (see verify_small).
                        let cause = cause.clone();
                        return Err(self.stop(&cause));
                    }
                    self.drain_commits(true)?;
                    self.finish_links();
                    self.finish_dirs();
                    self.conn.send(&Frame::Summary {
                        files_ok: self.stats.ok,
                        files_failed: self.stats.failed,
                        bytes: self.stats.bytes,
                    })?;
                    return Ok(());
                }
                other => {
                    let msg = match other {
                        Frame::End { .. } => format!(
                            "END while {} accepted file bodies are outstanding",
                            self.awaiting.len()
                        ),
                        other => format!("unexpected {} frame", other.name()),
                    };
                    return Err(self.protocol_error(msg));
                }
            }
        }
    }

    /// An XATTR frame: kept for the FILE or DIR offer that follows it
    /// (same id), within [`crate::xattr::MAX_ENTRY_ATTRS`] and
    /// [`crate::xattr::MAX_ENTRY_BYTES`].
    fn xattr(&mut self, id: u32, name: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let (pending, list, bytes) = self.attrs.get_or_insert((id, Vec::new(), 0));
        let over = *pending != id
            || list.len() >= crate::xattr::MAX_ENTRY_ATTRS
            || *bytes + name.len() + value.len() > crate::xattr::MAX_ENTRY_BYTES;
        if over {
            let msg = format!(
                "XATTR for entry {id}: more than {} attributes or {} KiB for one entry, or those of entry {pending} still wait for their offer",
                crate::xattr::MAX_ENTRY_ATTRS,
                crate::xattr::MAX_ENTRY_BYTES >> 10
            );
            return Err(self.protocol_error(msg));
        }
        *bytes += name.len() + value.len();
        list.push((name, value));
        Ok(())
    }

    /// The attributes sent for offer `id` (none if none came).
    fn take_attrs(&mut self, id: u32) -> Result<Vec<crate::xattr::Attr>> {
        match self.attrs.take() {
            None => Ok(Vec::new()),
            Some((pending, list, _)) if pending == id => Ok(list),
            Some((pending, ..)) => {
                let msg = format!("XATTR for entry {pending}, then the offer of entry {id}");
                Err(self.protocol_error(msg))
            }
        }
    }

    /// The session is over: lets go of the accepted files whose body never
    /// started (a resumed partial stays, to resume again).
    pub(super) fn drop_unstarted(&mut self) {
        // A fresh file has nothing on disk yet (its partial is created when
        // its body starts); a resumed partial stays, to resume again.
        self.awaiting.clear();
    }
}
