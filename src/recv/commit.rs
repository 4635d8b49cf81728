//! The commit thread (`ftx-commit`, one per session): writes out the small
//! bodies held in memory, applies modes and mtimes, makes
//! verified files durable in groups (one `syncfs` for the data, the
//! renames, one more `syncfs`; the syncs on its own `ftx-sync` thread,
//! while it writes the next group) and puts them in place (a file created
//! at its name in a staged directory goes in place with the directory:
//! [`super::stage`]), then writes their RESULTs, while the session thread
//! goes on receiving.

use super::report::*;
use super::stage::Stage;
use super::types::*;
use crate::protocol::frame::{encode, file_flags};
use crate::protocol::Frame;
use crate::secure::Wire;
use crate::store;
use anyhow::Result;
use cap_std::fs::Dir;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use store::attrs::*;

/// The session thread waits before queueing another verified file while
/// this many wait for the commit thread or, written, for the sync that
/// makes their data durable (fewer where the open-file limit
/// is low: see [`commit_files`]; at 1024, about 9 ms of the commit
/// thread's work on small files, it ran dry while the sender caught up)...
pub(super) const COMMIT_FILES: usize = 4096;
/// ...or while they hold this many bytes...
pub(super) const COMMIT_BYTES: u64 = 64 << 20;
/// ...or while this many of those bytes are small files' bodies, held in
/// memory for the commit thread to write.
pub(super) const HELD_BYTES: usize = 4 << 20;
/// The commit thread waits for this many verified files...
pub(super) const GROUP_FILES: usize = 16;
/// ...or this many bytes before it syncs, unless the session is about to
/// wait for the sender (who may be waiting for these RESULTs).
pub(super) const GROUP_BYTES: u64 = 4 << 20;
/// With nothing else to do, the commit thread puts an open stage that
/// holds RESULTs back in place after this long: the sender may be waiting
/// for them (its last files, or its window full).
const STAGE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

impl<'a> Commits<'a> {
    pub(super) fn new() -> Self {
        Commits {
            state: Mutex::new(CommitState::default()),
            changed: Condvar::new(),
            sync_asked: Condvar::new(),
            stop: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CommitState<'a>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn wait<'g>(
        &self,
        g: std::sync::MutexGuard<'g, CommitState<'a>>,
    ) -> std::sync::MutexGuard<'g, CommitState<'a>> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a verified file, first waiting while too much is queued.
    pub(super) fn push(&self, v: Verified<'a>) {
        let mut st = self.lock();
        let max = commit_files();
        while !st.closed
            && queue_full(
                st.queue.len() + st.written,
                st.queued_bytes,
                st.held_bytes,
                max,
            )
        {
            st.session_waits = true;
            st = self.wait(st);
        }
        st.session_waits = false;
        let was_due = group_due(st.queue.len(), st.queued_bytes, st.urgent);
        st.queued_bytes += v.r.h.size - v.r.offset;
        st.held_bytes += v.body.len();
        st.queue.push(v);
        // The commit thread waits for a whole group: woken once, when
        // this file completes one (a wake-up per file cost two system
        // calls and a context switch each).
        if !was_due && group_due(st.queue.len(), st.queued_bytes, st.urgent) {
            self.changed.notify_all();
        }
    }

    /// The files placed since the last call (portable-form keys of their
    /// names).
    pub(super) fn take_placed(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().placed)
    }

    /// Waits until every queued file is committed and its RESULT written,
    /// and, with `stages` (the session's files are all in: END), until
    /// every stage is in place; returns what that amounted to since the
    /// last call. Every stage is closed from now on.
    pub(super) fn drain(&self, stages: bool) -> (Stats, Option<String>, Vec<u64>) {
        let mut st = self.lock();
        st.urgent = true;
        st.drained = true;
        self.changed.notify_all();
        while !st.queue.is_empty() || st.busy || (stages && st.staged > 0) {
            st.session_waits = true;
            st = self.wait(st);
        }
        st.session_waits = false;
        (
            std::mem::take(&mut st.stats),
            st.broken.clone(),
            std::mem::take(&mut st.placed),
        )
    }

    /// Asks for what is queued to be committed now: the session is about
    /// to wait for the sender, who may be waiting for these RESULTs.
    pub(super) fn nudge(&self) {
        let mut st = self.lock();
        if !st.queue.is_empty() && !st.urgent {
            st.urgent = true;
            self.changed.notify_all();
        }
    }

    /// A stage the session made: the commit thread puts it in place once
    /// it is closed (see [`super::stage`]).
    pub(super) fn add_stage(&self, stage: std::sync::Arc<super::stage::Stage>) {
        let mut st = self.lock();
        st.staged += 1;
        st.new_stages.push(stage);
    }

    /// Stages of the session not in place yet.
    pub(super) fn stages_out(&self) -> usize {
        self.lock().staged
    }

    /// The session closed a stage.
    pub(super) fn stage_closed(&self) {
        self.lock().stage_closed = true;
        self.changed.notify_all();
    }

    /// No more files: the commit thread ends when it has committed the rest.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The commit thread: takes whatever is queued, writes it out, has it
    /// made durable and puts it in place, writes the RESULTs, until closed.
    ///
    /// Syncs run on a thread of their own (`ftx-sync`), one at a time, while
    /// this one goes on writing: on a disk each `syncfs` waits for the
    /// journal and the device (tens of milliseconds), and 100,000 small
    /// files spent a third of their time waiting for them. A file is linked
    /// (or renamed) into place only after a sync that began once its data
    /// was written, and reported only after a sync that began once it was
    /// linked: each sync serves the data written since the last one and the
    /// names linked since. A sync is asked for as soon as the last one is
    /// done and anything waits for one, so no RESULT waits for files that
    /// have not arrived.
    pub(super) fn run(&self, sh: &Shared, peer: SocketAddr, out: Wire) {
        std::thread::scope(|sc| {
            // Dropped when this thread is done, or panics: the sync thread
            // ends, and the scope can end.
            let _quit = QuitSyncs(self);
            let syncer = std::thread::Builder::new()
                .name("ftx-sync".into())
                .spawn_scoped(sc, || self.sync_thread(sh));
            // Without a sync thread, this one syncs.
            self.commit_thread(sh, peer, &out, syncer.is_err());
        });
    }

    /// The sync thread: runs the syncs asked of it, one at a time.
    fn sync_thread(&self, sh: &Shared) {
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if st.sync_quit {
                        return;
                    }
                    match std::mem::take(&mut st.sync) {
                        SyncSlot::Asked(job) => break job,
                        other => st.sync = other,
                    }
                    st = self.sync_asked.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let synced = job.sync(sh);
            self.lock().sync = SyncSlot::Done(job, synced);
            self.changed.notify_all();
        }
    }

    fn commit_thread(&self, sh: &Shared, peer: SocketAddr, out: &Wire, inline: bool) {
        // Written, waiting for a sync to begin; linked, the same.
        let mut written: Vec<(Verified<'a>, std::fs::File)> = Vec::new();
        let mut linked: Linked<'a> = Vec::new();
        // A sync was asked for and its outcome not taken yet.
        let mut syncing = false;
        // Stages not in place yet, in the order they were made (a stage
        // after the one it is in), each with the files placed in it,
        // waiting for it.
        let mut stages: Vec<(Arc<Stage>, Linked<'a>)> = Vec::new();
        // A stage went in place since the last sync was asked for.
        let mut renamed = false;
        loop {
            let (batch, synced) = {
                let mut st = self.lock();
                // Stages closed here, after a wait.
                let mut closed_here = false;
                loop {
                    stages.extend(st.new_stages.drain(..).map(|s| (s, Vec::new())));
                    if st.closed || st.drained {
                        // The session is over: every stage goes in place.
                        for (s, _) in &stages {
                            s.close();
                        }
                    }
                    let take = st.batch_due();
                    let done = matches!(st.sync, SyncSlot::Done(..));
                    let ask = !syncing && (!written.is_empty() || !linked.is_empty());
                    let woken = std::mem::take(&mut st.stage_closed)
                        || closed_here
                        || st.closed
                        || st.drained;
                    closed_here = false;
                    let place = woken && stages.iter().any(|(s, _)| s.ready());
                    if take || done || ask || place {
                        break;
                    }
                    if st.closed && st.queue.is_empty() && !syncing && stages.is_empty() {
                        return;
                    }
                    // A stage closed and waiting for tickets (one given
                    // back by the session wakes no one), or holding
                    // RESULTs back while open.
                    if !syncing
                        && stages
                            .iter()
                            .any(|(s, held)| s.is_closed() || !held.is_empty())
                    {
                        // Nothing else to do (no sync in flight either)
                        // while a stage holds RESULTs back: the sender may
                        // be waiting for them. After a moment the stage
                        // closes, and whether it can go in place is looked
                        // at again.
                        let (g, waited) = self
                            .changed
                            .wait_timeout(st, STAGE_WAIT)
                            .unwrap_or_else(|e| e.into_inner());
                        st = g;
                        if waited.timed_out() {
                            for (s, held) in &stages {
                                if !held.is_empty() {
                                    s.close();
                                }
                            }
                            closed_here = true;
                        }
                        continue;
                    }
                    st = self.wait(st);
                }
                st.busy = true;
                let synced = match std::mem::take(&mut st.sync) {
                    SyncSlot::Done(job, synced) => Some((job, synced)),
                    other => {
                        st.sync = other;
                        None
                    }
                };
                let batch = st.batch_due().then(|| {
                    st.urgent = false;
                    st.queued_bytes = 0;
                    st.held_bytes = 0;
                    // They stay open: counted as written from now on.
                    st.written += st.queue.len();
                    if st.session_waits {
                        self.changed.notify_all();
                    }
                    // With room for as many (a queue grown from nothing
                    // moved its files ten times).
                    let room = st.queue.capacity();
                    std::mem::replace(&mut st.queue, Vec::with_capacity(room))
                });
                (batch, synced)
            };
            let mut stats = Stats::default();
            let mut frames = Vec::new();
            let mut placed = Vec::new();
            let mut done = Done {
                sh,
                peer,
                stats: &mut stats,
                frames: &mut frames,
                placed: &mut placed,
            };
            let mut closed_files = 0;
            let mut settled = 0;
            if let Some((job, synced)) = synced {
                syncing = false;
                closed_files += job.written.len();
                // The names linked before this sync began are durable (or
                // not); the data written before it began is, so those
                // files go into place (or, in a stage, wait for it).
                done.report(job.linked, &synced);
                for (v, note) in place(&mut done, job.written, &synced) {
                    hold(&mut done, &mut stages, &mut linked, v, note);
                }
            }
            // Stages ready go in place, the one a stage is in first.
            for (stage, held) in stages.iter_mut().filter(|(s, _)| s.ready()) {
                let held = std::mem::take(held);
                match stage.place() {
                    Ok(()) => {
                        renamed = true;
                        linked.extend(held);
                    }
                    Err(e) => {
                        for (v, _) in held {
                            let message = format!(
                                "cannot place '{}': cannot put its directory '{}' in place: {e}",
                                v.name.shown(),
                                stage.shown
                            );
                            done.fail(&v, message);
                        }
                    }
                }
                settled += 1;
            }
            if settled > 0 {
                stages.retain(|(s, _)| !s.settled());
            }
            if let Some(batch) = batch {
                let (taken, before) = (batch.len(), written.len());
                written.extend(write(&mut done, batch, &self.stop));
                closed_files += taken - (written.len() - before);
            }
            let ask = (!syncing && (!written.is_empty() || !linked.is_empty())).then(|| {
                syncing = true;
                let job = SyncJob {
                    written: std::mem::take(&mut written),
                    linked: std::mem::take(&mut linked),
                    staged: std::mem::take(&mut renamed),
                };
                if inline {
                    let synced = job.sync(sh);
                    SyncSlot::Done(job, synced)
                } else {
                    SyncSlot::Asked(job)
                }
            });
            if stats.failed > 0 {
                sh.stop_if_out_unusable(&self.stop);
            }
            let wrote = if frames.is_empty() {
                Ok(())
            } else {
                out.send_all(&frames)
            };
            let mut st = self.lock();
            if let Some(slot) = ask {
                let asked = matches!(slot, SyncSlot::Asked(_));
                st.sync = slot;
                if asked {
                    self.sync_asked.notify_all();
                }
            }
            st.written -= closed_files;
            st.staged -= settled;
            st.busy = syncing;
            st.stats.add(stats);
            st.placed.extend(placed);
            if let Err(e) = wrote {
                st.broken
                    .get_or_insert_with(|| format!("cannot send results: {e}"));
            }
            if st.session_waits {
                self.changed.notify_all();
            }
        }
    }
}

/// Ends the sync thread of a commit thread when dropped.
struct QuitSyncs<'c, 'a>(&'c Commits<'a>);

impl Drop for QuitSyncs<'_, '_> {
    fn drop(&mut self) {
        self.0.lock().sync_quit = true;
        self.0.sync_asked.notify_all();
    }
}

impl SyncJob<'_> {
    /// One `fsync` for a lone file written (or a lone name linked: its
    /// directory's), else (or after a stage went in place) one `syncfs`.
    fn sync(&self, sh: &Shared) -> io::Result<()> {
        match (self.written.as_slice(), self.linked.as_slice(), self.staged) {
            ([(_, file)], [], false) => file.sync_all(),
            ([], [(v, _)], false) => sync_dir(&v.dir),
            _ => syncfs(&sh.root),
        }
    }
}

/// The file of a verified body that was held without one: at its own
/// name in its directory's open stage, else unnamed where its directory
/// allows, else a named partial (`r.id` then says which inode it is);
/// whether it was created with its final mode, and at its name.
pub(super) fn held_file(
    sh: &Shared,
    peer: SocketAddr,
    r: &mut Received<'_>,
) -> Result<(std::fs::File, bool, bool), String> {
    let h = &r.h;
    // Its final mode from the start where the umask alone makes it what
    // `fchmod` would (no default ACL there, no attributes to set after
    // the mode, the owner's read bit not masked): one system call less a
    // file.
    let plain = r.dir.plain_modes && r.attrs.is_empty() && sh.umask & 0o400 == 0;
    let mode = plain.then(|| file_mode(h.mode, sh.umask));
    let unnamed = sh.unnamed.then(|| mode.unwrap_or(0o600));
    if r.ticket.is_some() {
        // In its stage, at its own name: the stage is out of sight.
        if let Ok(file) = create_at_name(&r.dir, &r.last, mode.unwrap_or(0o600)) {
            return Ok((file, mode.is_some(), true));
        }
    }
    let how = (h.size, h.md5, file_flags::algo(h.flags), unnamed);
    match store::small_file(&r.dir, &r.names, how, &sh.budget) {
        Ok((file, id, discarded)) => {
            let mode_set = mode.is_some() && id.is_unnamed();
            r.id = id;
            if let Some(why) = discarded {
                let shown = r.name.shown();
                sh.log(&format!("{peer}: '{shown}': starting over: {why}"));
            }
            Ok((file, mode_set, false))
        }
        Err(e) => Err(super::intake::not_created(
            &r.name.shown(),
            &r.names.part(),
            &e,
        )),
    }
}

/// Writes out a verified file's body if it is held (creating its file
/// first if it has none), and applies its mode (see [`file_mode`]) and
/// mtime; the file, ready to be made durable and placed. On a failure
/// the file stays in `v`, open (and a named partial locked) until `v`'s
/// partial is discarded.
pub(super) fn write_verified(
    v: &mut Verified<'_>,
    sh: &Shared,
    peer: SocketAddr,
) -> Result<std::fs::File, String> {
    let (file, mode_set, direct) = match v.file.take() {
        Some(file) => (file, false, false),
        None => held_file(sh, peer, &mut v.r)?,
    };
    let mode = (!mode_set).then(|| file_mode(v.r.h.mode, sh.umask));
    match finish_file(v, &file, mode) {
        Ok(()) => {
            v.direct = direct;
            Ok(file)
        }
        Err(message) if direct => {
            // Never in place half written.
            let _ = v.r.dir.remove_file(&v.r.last);
            v.r.ticket = None;
            Err(message)
        }
        Err(message) => {
            v.file = Some(file);
            Err(message)
        }
    }
}

/// A new file at `last` in `dir` (`O_CREAT|O_EXCL`: nothing there is
/// ever written to, a symlink is never followed), created with `mode`.
fn create_at_name(dir: &Dir, last: &std::ffi::OsStr, mode: u32) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rustix::fs::openat(dir, last, flags, Mode::from_raw_mode(mode & 0o777))?;
    Ok(std::fs::File::from(fd))
}

/// Where a file placed after its data sync goes: reported after the next
/// sync, or, in a stage not in place yet, kept with it until it is (and
/// failed with it if it cannot be).
fn hold<'a>(
    out: &mut Done<'_, '_>,
    stages: &mut [(Arc<Stage>, Linked<'a>)],
    linked: &mut Linked<'a>,
    v: Box<Received<'a>>,
    note: Option<String>,
) {
    let Some(stage) = v.dir.stage.clone() else {
        linked.push((v, note));
        return;
    };
    if stage.failed() {
        let message = format!(
            "cannot place '{}': its directory '{}' could not be put in place",
            v.name.shown(),
            stage.shown
        );
        out.fail(&v, message);
        return;
    }
    match stages.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &stage)) {
        Some((_, held)) if !stage.settled() => held.push((v, note)),
        _ => linked.push((v, note)),
    }
}

/// [`write_verified`]'s steps on the open `file` (`mode`: to set, unless
/// it was created with it).
fn finish_file(
    v: &mut Verified<'_>,
    file: &std::fs::File,
    mode: Option<u32>,
) -> Result<(), String> {
    let shown = || v.r.name.shown();
    if !v.body.is_empty() {
        (&*file)
            .write_all(&v.body)
            .map_err(|e| format!("cannot write '{}': {e}", shown()))?;
    }
    let h = &v.r.h;
    apply_attrs(file, mode, h.mtime_s, h.mtime_ns)
        .map_err(|e| format!("cannot set mode/mtime of '{}': {e}", shown()))?;
    // Extended attributes and ACLs after the mode (an ACL's mask is the
    // group bits); one that may not be set is named, and the file still
    // goes into place.
    let unset = crate::xattr::apply(file, &v.r.attrs);
    if !unset.is_empty() {
        v.note = Some(format!(
            "placed, but these extended attributes could not be set: {}",
            unset.join(", ")
        ));
    }
    Ok(())
}

/// Files linked (or renamed) into place, each with what its RESULT must
/// add, waiting for a sync to make their names durable.
pub(super) type Linked<'a> = Vec<(Box<Received<'a>>, Option<String>)>;

/// Where the commit thread's outcomes go: counts, RESULT frames, and the
/// keys of the names placed.
pub(super) struct Done<'s, 'x> {
    sh: &'s Shared,
    peer: SocketAddr,
    stats: &'x mut Stats,
    frames: &'x mut Vec<u8>,
    placed: &'x mut Vec<u64>,
}

impl Done<'_, '_> {
    fn fail(&mut self, r: &Received<'_>, message: String) {
        let shown = r.name.shown();
        let f = failed(
            self.sh,
            self.peer,
            self.stats,
            io_failure(r, shown, message),
        );
        encode(&f, self.frames);
    }

    /// Counts and answers for files whose names `synced` (a sync that ran
    /// after they were linked) made durable, or failed to.
    fn report(&mut self, linked: Linked<'_>, synced: &io::Result<()>) {
        let mut lines = String::new();
        for (v, note) in linked {
            let shown = v.name.shown();
            if let Err(e) = synced {
                // The file is in place with verified content, but the
                // link may not survive a crash: say so rather than claim
                // success.
                self.fail(&v, format!("cannot make '{shown}' durable: {e}"));
                continue;
            }
            let mut result = done(self.sh, self.peer, self.stats, &v, &shown, &mut lines);
            if let (Some(note), Frame::Result { message, .. }) = (note, &mut result) {
                // Verified and in place; what is missing is said, on both
                // sides (the sender counts the file as failed: asked for
                // and left behind).
                self.sh.log(&format!("{}: '{shown}': {note}", self.peer));
                *message = note;
            }
            encode(&result, self.frames);
            self.placed
                .push(super::admit::keys(v.name.as_bytes(), self.sh.folds).1);
        }
        if !lines.is_empty() {
            // One write for the batch's lines.
            self.sh.progress.suspend(|| print!("{lines}"));
        }
    }
}

/// Writes out the bodies a batch of verified files holds (and lets go
/// of them) and applies their modes and mtimes. Answers for the files
/// that failed; returns the files written, open, to be made durable.
fn write<'a>(
    out: &mut Done<'_, '_>,
    batch: Vec<Verified<'a>>,
    stop: &std::sync::OnceLock<String>,
) -> Vec<(Verified<'a>, std::fs::File)> {
    let sh = out.sh;
    let mut written = Vec::with_capacity(batch.len());
    for mut v in batch {
        if v.file.is_none() && stop.get().is_some() {
            // OUT cannot take files (a create just failed for it): the
            // session ends with one error, not one for each of these.
            continue;
        }
        match write_verified(&mut v, sh, out.peer) {
            Ok(file) => {
                v.body = Default::default();
                written.push((v, file));
            }
            Err(message) => {
                v.r.names.discard(&v.r.dir, v.r.id);
                out.fail(&v.r, message);
                sh.stop_if_out_unusable(stop);
            }
        }
    }
    written
}

/// Puts files written into place after `synced`, the sync that made their
/// data durable (or failed to). Answers for the files that failed; returns
/// the files linked.
fn place<'a>(
    out: &mut Done<'_, '_>,
    written: Vec<(Verified<'a>, std::fs::File)>,
    synced: &io::Result<()>,
) -> Linked<'a> {
    let sh = out.sh;
    let mut placed = Vec::with_capacity(written.len());
    for (
        Verified {
            r: v,
            note,
            blocks,
            direct,
            ..
        },
        file,
    ) in written
    {
        // Only the inode that was verified goes into place: the partial's
        // name must still be it (the file stays open, and locked, until
        // after the rename). One created at its name in a stage is there
        // already, and goes in place with the stage.
        let renamed = synced
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
            .and_then(|()| match direct {
                true => Ok(()),
                false => store::place(&v.dir, &v.names, (v.id, &file), &v.last, v.h.size),
            });
        if direct && renamed.is_err() {
            let _ = v.dir.remove_file(&v.last);
        }
        // Its data is durable (or it is gone): its stage need not wait.
        let mut v = v;
        v.ticket = None;
        if renamed.is_ok()
            && crate::protocol::frame::file_flags::algo(v.h.flags) == crate::digest::Algo::Md5
            && v.h.size >= crate::cache::PUT_MIN
        {
            // The file as placed (the rename changed its ctime): an
            // identical re-send is answered from the cache.
            if let Ok(md) = file.metadata() {
                sh.digests.put(&md, &v.h.md5);
                // And the block digests a delta update of it will need.
                if let Some((block, d)) = &blocks {
                    sh.digests
                        .put_blocks(&crate::cache::Version::of(&md), *block, d);
                }
            }
        }
        drop(file);
        match renamed {
            Ok(()) => placed.push((v, note)),
            Err(e) => {
                v.names.discard(&v.dir, v.id);
                let message = format!("cannot place '{}': {e}", v.name.shown());
                out.fail(&v, message);
            }
        }
    }
    placed
}

/// How many verified files may wait for the commit thread (or, written
/// and open, for a sync):
/// [`COMMIT_FILES`], or a quarter of the open-file limit where that is
/// lower (each holds its file open; several sessions share the limit).
fn commit_files() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| crate::open_files_quarter(16, COMMIT_FILES))
}

/// True when the session thread must wait before queueing another file:
/// `files` verified files wait for the commit thread (at most `max`),
/// holding `bytes` of body, `held` of them in memory.
pub(super) fn queue_full(files: usize, bytes: u64, held: usize, max: usize) -> bool {
    files >= max || bytes >= COMMIT_BYTES || held >= HELD_BYTES
}

impl CommitState<'_> {
    /// Whether the commit thread takes what is queued now: a group is
    /// due ([`group_due`]), or the session is over and anything is left.
    fn batch_due(&self) -> bool {
        !self.queue.is_empty()
            && (self.closed || group_due(self.queue.len(), self.queued_bytes, self.urgent))
    }
}

/// True when the commit thread commits what is queued now: a whole group
/// (by count or by bytes), or anything at all when it is `urgent` (the
/// session is about to wait for the sender, who may wait for the RESULTs).
pub(super) fn group_due(files: usize, bytes: u64, urgent: bool) -> bool {
    files > 0 && (urgent || files >= GROUP_FILES || bytes >= GROUP_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_a_group_is_committed() {
        assert!(!group_due(0, 0, true), "nothing to commit");
        assert!(!group_due(1, 1, false), "wait for more");
        assert!(group_due(1, 1, true), "urgent");
        assert!(group_due(GROUP_FILES, 0, false), "a group by count");
        assert!(group_due(1, GROUP_BYTES, false), "a group by bytes");
    }

    #[test]
    fn when_the_session_waits_for_the_commit_thread() {
        assert!(!queue_full(0, 0, 0, COMMIT_FILES));
        assert!(!queue_full(
            COMMIT_FILES - 1,
            COMMIT_BYTES - 1,
            HELD_BYTES - 1,
            COMMIT_FILES
        ));
        assert!(queue_full(COMMIT_FILES, 0, 0, COMMIT_FILES));
        assert!(queue_full(1, COMMIT_BYTES, 0, COMMIT_FILES));
        assert!(queue_full(1, 1, HELD_BYTES, COMMIT_FILES));
        assert!(queue_full(16, 0, 0, 16), "a low open-file limit");
    }
}
