//! Checkpointed partial files on the receiver, so an interrupted transfer
//! resumes instead of restarting.
//!
//! Beside the target `NAME`, the receiver keeps the data in
//! `.NAME.ftx-part` and a small state file `.NAME.ftx-state`:
//!
//! ```text
//! magic "FTXPART2" | size:u64 | md5:[16] | block:u64 | nblocks:u32 | state_len:u16
//! written: 7 × u64 (the partial's dev, ino, size, mtime s/ns, ctime s/ns when written)
//! nblocks × ( xxh3:u64 | md5_state:[state_len] )     one per full block, in order
//! trailer: xxh3_64 of every byte before it
//! ```
//!
//! Each record holds the XXH3 of one 4 MiB block of the partial and the MD5
//! state after that block. A resume never trusts bytes it has not checked:
//! the partial's blocks are re-read and compared with their XXH3 (at disk
//! speed), and the transfer resumes at the first block that does not match,
//! continuing the MD5 from the state saved before it. A state file that is
//! garbage, truncated, for other content, or a partial shorter than its
//! records: everything is discarded and the file starts from 0.
//!
//! The state is replaced atomically (write a temporary, fsync, rename) at
//! least every 64 MiB, after the data it describes was flushed and fsynced.
//!
//! # A partial's life
//!
//! ```text
//! open ──> write ... ──> end ──> (verify) ──> place ([`place`], on the commit thread)
//!  │         │            │
//!  │         │            └─ held in memory (small.rs, ≤ 256 KiB: hashed by the session)
//!  │         └─ suspend: checkpoint what arrived (a later open resumes: resume.rs)
//!  └─ resume from a checked prefix, or start at 0      any failure: discard
//! ```
//!
//! Which thread writes a body's bytes depends on its size ([`PartialWriter`]):
//!
//! - up to [`HOLD_MAX`] (256 KiB): held in memory ([`small`]); the session
//!   thread hashes it in a batch, the receiver's commit thread writes it
//!   (an unnamed one gets its file only then, on that thread:
//!   [`create_small`], [`small_file`]);
//! - up to [`BLOCK`] (4 MiB): the session thread writes and hashes it as it
//!   arrives ([`small::StreamWriter`]);
//! - [`BLOCK`] and more: a [`pipeline`] of two threads started when the body
//!   starts: `ftx-hash` runs MD5 ([`pipeline`]), `ftx-disk` writes, keeps
//!   the per-block XXH3 and checkpoints ([`disk`]).

pub mod attrs;
mod block;
pub mod budget;
pub mod cold;
mod disk;
pub mod pipeline;
mod resume;
pub mod small;
mod state;
mod types;

use crate::digest::{Algo, Hasher, Md5Digest};
use budget::{Budget, HeldBody};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use pipeline::Pipeline;
use resume::{try_resume, Start};
pub use small::HOLD_MAX;
use small::{Held, SmallWriter, StreamWriter};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use types::WRITE_BUF;

/// A file's delta block size and block digests.
pub type Blocks = (u64, Vec<crate::delta::BlockDigest>);

/// The write buffer of a body streamed to disk when the memory budget is
/// spent (not counted in it: one per session at most).
const MIN_BUF: usize = 8192;
pub use types::{no_follow, FileId, Names, BLOCK, CHECKPOINT_BLOCKS};

/// Where a (re)started transfer begins.
pub struct Opened {
    /// The partial file, positioned at `offset`.
    pub writer: PartialWriter,
    /// Bytes already verified on disk; the sender sends from here.
    pub offset: u64,
    /// Why an earlier partial was discarded, if one was.
    pub discarded: Option<String>,
    /// Which inode the partial is: only this one is ever renamed into
    /// place or removed ([`Names::discard`]).
    pub id: FileId,
    /// The MD5 of the first `offset` bytes, when the partial was written
    /// while the file's digest was still to follow its body: the sender
    /// must confirm it (PREFIX) before the rest is trusted to complete it.
    pub prefix: Option<Md5Digest>,
}

/// What an offer's partial will be, decided when the offer is accepted.
pub enum Slot {
    /// Nothing to resume: the partial is created, exclusively, when the
    /// body starts ([`create`]), so an offer whose body never comes leaves
    /// nothing on disk and holds no descriptor.
    Fresh {
        /// Why an earlier partial was discarded, if one was.
        discarded: Option<String>,
    },
    /// An earlier partial of this very content, checked, locked and open.
    Resumed(Box<Opened>),
}

/// Decides where the body of a file of `size` bytes and MD5 `md5` starts:
/// from a checked prefix of an earlier partial of the same content, or
/// from 0. A partial is only ever written to if it is a regular file with
/// one link, owned by this user, and not locked by another process (every
/// partial is `flock`ed by the one writing it); anything else at its name
/// is removed (a name, never what it links to) and the file starts from 0.
/// A partial locked by another process is an error of kind
/// [`io::ErrorKind::ResourceBusy`]. Never follows a symlink.
pub fn prepare(
    dir: &Dir,
    names: &Names,
    size: u64,
    md5: Md5Digest,
    algo: Algo,
    budget: &Arc<Budget>,
) -> io::Result<Slot> {
    let file = match dir.open_with(
        names.part(),
        no_follow(OpenOptions::new().read(true).write(true)),
    ) {
        Ok(f) => f.into_std(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A state file without its partial describes nothing; it must
            // not be mistaken for a later partial's. (Only files of a block
            // or more ever checkpoint.)
            let orphan = size >= BLOCK && dir.remove_file(names.state()).is_ok();
            return Ok(Slot::Fresh {
                discarded: orphan.then(|| "a state file without its partial".to_owned()),
            });
        }
        // A symlink (ELOOP), a FIFO that cannot be opened for writing...
        Err(_) => {
            return Ok(Slot::Fresh {
                discarded: clear(dir, names)?,
            })
        }
    };
    if let Some(why) = untrusted(&file)? {
        drop(file);
        let _ = dir.remove_file(names.part());
        let _ = dir.remove_file(names.state());
        return Ok(Slot::Fresh {
            discarded: Some(why),
        });
    }
    lock(&file)?;
    let id = FileId::of(&file)?;
    match try_resume(dir, names, file, size, &md5, algo) {
        Ok((file, start, unknown)) => {
            let offset = start.pos;
            let prefix = (unknown && offset > 0).then(|| start.md5.clone().finish());
            Ok(Slot::Resumed(Box::new(Opened {
                writer: PartialWriter::new(dir, names, file, size, md5, start, budget)?,
                offset,
                discarded: None,
                id,
                prefix,
            })))
        }
        Err(why) => {
            // Ours now (locked, one link): it goes, by name and inode.
            names.discard(dir, id);
            Ok(Slot::Fresh {
                discarded: Some(why),
            })
        }
    }
}

/// True when the partial of a file of `size` bytes was written while its
/// digest was still to follow (its state file checks out, for that size,
/// with a zero digest): an offer of the file without its digest can then
/// resume it, the sender confirming the prefix (PREFIX) and hashing on.
pub fn unhashed_partial(dir: &Dir, names: &Names, size: u64) -> bool {
    use std::io::Read;
    let Ok(f) = dir.open_with(names.state(), no_follow(OpenOptions::new().read(true))) else {
        return false;
    };
    let mut bytes = Vec::new();
    let max = 64 + (size / BLOCK + 1) * 256;
    if f.into_std().take(max + 1).read_to_end(&mut bytes).is_err() || bytes.len() as u64 > max {
        return false;
    }
    matches!(state::decode_state(&bytes), Ok((s, md5, _)) if s == size && md5 == [0; 16])
}

/// Creates the partial of a [`Slot::Fresh`] file when its body starts:
/// one exclusive, no-follow create (`O_CREAT|O_EXCL|O_NOFOLLOW`), then
/// locked. Whatever appeared at the name since is never written to: the
/// create fails with [`io::ErrorKind::AlreadyExists`].
pub fn create(
    dir: &Dir,
    names: &Names,
    size: u64,
    md5: Md5Digest,
    algo: Algo,
    budget: &Arc<Budget>,
) -> io::Result<Opened> {
    let (file, id) = create_file(dir, names)?;
    Ok(Opened {
        writer: PartialWriter::new(dir, names, file, size, md5, Start::fresh(algo), budget)?,
        offset: 0,
        discarded: None,
        id,
        prefix: None,
    })
}

/// True for a file that never checkpoints, so that nothing of it can
/// resume: under a block, and not a stream (whose size is not known).
pub fn never_resumes(size: u64, stream: bool) -> bool {
    !stream && size < BLOCK
}

/// Starts the body of a file too small to have checkpoints (under
/// [`BLOCK`]) whose offer was accepted without looking for an earlier
/// partial: [`prepare`] could only have discarded one, and looking costs
/// a system call a file.
///
/// With `unnamed` (the receiver does not replace files, and its output
/// directory takes them: [`unnamed_works`]), a body the memory budget can
/// hold gets no file at all until it is verified: [`small_file`] then
/// makes it one without a name (the receiver's commit thread does, as it
/// writes it). Any other body gets its file now, from
/// [`small_file`].
pub fn create_small(
    dir: &Dir,
    names: &Names,
    size: u64,
    md5: Md5Digest,
    (algo, unnamed): (Algo, bool),
    budget: &Arc<Budget>,
) -> io::Result<(Opened, Option<String>)> {
    let fresh = |writer, id| Opened {
        writer,
        offset: 0,
        discarded: None,
        id,
        prefix: None,
    };
    if unnamed {
        if let Some((body, lease)) = small::hold(size, budget)? {
            let writer = PartialWriter::Small(SmallWriter {
                file: None,
                body,
                lease,
            });
            return Ok((fresh(writer, FileId::unnamed()), None));
        }
    }
    let how = (size, md5, algo, unnamed.then_some(0o600));
    let (file, id, discarded) = small_file(dir, names, how, budget)?;
    let writer = PartialWriter::new(dir, names, file, size, md5, Start::fresh(algo), budget)?;
    Ok((fresh(writer, id), discarded))
}

/// The partial of a file under [`BLOCK`] (of `size` bytes and digest
/// `md5`), created for its body, with its inode.
///
/// With `unnamed` (the mode to create it with), the file has no name at
/// all until it is placed (`O_TMPFILE`, linked into place by [`place`];
/// unnamed, its mode opens it to nobody): no partial's name to
/// create, lock, check and rename, and nothing left behind if the
/// receiver dies. Otherwise, or where the directory refuses `O_TMPFILE`
/// (another file system mounted inside the output directory), a named
/// partial ([`create_file`]): when something is at its name it is treated
/// as [`prepare`] treats it (removed, never written to or followed; a
/// partial locked by another process is [`io::ErrorKind::ResourceBusy`]),
/// and the create is tried once more. Returns why an earlier partial was
/// discarded, if one was.
pub fn small_file(
    dir: &Dir,
    names: &Names,
    (size, md5, algo, unnamed): (u64, Md5Digest, Algo, Option<u32>),
    budget: &Arc<Budget>,
) -> io::Result<(File, FileId, Option<String>)> {
    if let Some(mode) = unnamed {
        if let Ok(file) = open_unnamed(dir, mode) {
            return Ok((file, FileId::unnamed(), None));
        }
    }
    match create_file(dir, names) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let discarded = match prepare(dir, names, size, md5, algo, budget)? {
                Slot::Fresh { discarded } => discarded,
                Slot::Resumed(o) => {
                    // Nothing of a file this small is ever kept: an empty
                    // partial of it is made anew, any other is not its own.
                    let (id, offset) = (o.id, o.offset);
                    drop(o);
                    names.discard(dir, id);
                    (offset > 0).then(|| "a partial of another size".to_owned())
                }
            };
            let (file, id) = create_file(dir, names)?;
            Ok((file, id, discarded))
        }
        other => other.map(|(file, id)| (file, id, None)),
    }
}

/// A new file without a name in `dir` (`O_TMPFILE`), created with `mode`
/// (less the umask, or as a default ACL of `dir` says).
fn open_unnamed(dir: &Dir, mode: u32) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
    )?;
    Ok(File::from(fd))
}

/// Whether `dir` has a default ACL (which, not the umask, then decides
/// the mode of a file created in it). Yes when that cannot be told.
pub fn has_default_acl(dir: &Dir) -> bool {
    use rustix::fs::{Mode, OFlags};
    // `dir` may be open only as a path (`O_PATH`), which has no xattrs.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(readable) = rustix::fs::openat(dir, ".", flags, Mode::empty()) else {
        return true;
    };
    let mut none: [u8; 0] = [];
    let found = rustix::fs::fgetxattr(&readable, "system.posix_acl_default", &mut none);
    !matches!(
        found,
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP)
    )
}

/// Gives the unnamed `file` the name `last` in `dir`; fails if anything
/// has that name (never replaces). `AT_EMPTY_PATH` where the process may
/// (`CAP_DAC_READ_SEARCH`), else through `/proc/self/fd`.
fn link_unnamed(file: &File, dir: &Dir, last: &std::ffi::OsStr) -> io::Result<()> {
    use rustix::fs::{linkat, AtFlags, CWD};
    use std::os::fd::AsRawFd;
    match linkat(file, "", dir, last, AtFlags::EMPTY_PATH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::PERM => {
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            Ok(linkat(
                CWD,
                path.as_str(),
                dir,
                last,
                AtFlags::SYMLINK_FOLLOW,
            )?)
        }
        Err(e) => Err(e.into()),
    }
}

/// A working name of this process's own, `.ftx-KIND-PID-RANDOM` then
/// `suffix` (a reserved one: no peer can offer it).
pub fn own_name(kind: &str, suffix: &str) -> String {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    format!(
        ".ftx-{kind}-{}-{:x}{suffix}",
        std::process::id(),
        u64::from_ne_bytes(r)
    )
}

/// Whether files without a name can be made in `dir` and linked into
/// place (the file system has `O_TMPFILE`, and the process may link one:
/// as root, or with `/proc` mounted). Probed once, with the receiver's
/// own working name (a peer can never offer one), removed at once.
pub fn unnamed_works(dir: &Dir) -> bool {
    let Ok(file) = open_unnamed(dir, 0o600) else {
        return false;
    };
    let name = own_name("probe", ".ftx-part");
    let linked = link_unnamed(&file, dir, std::ffi::OsStr::new(&name)).is_ok();
    if linked {
        let _ = dir.remove_file(&name);
    }
    linked
}

/// The last step of a partial's life: puts the verified partial (inode
/// `id`, open as `file`, made durable by the caller) under its final name
/// `last`, only if the partial's name still holds that inode, then
/// removes its state file (only files of a block or more ever
/// checkpoint). An unnamed one is linked to `last`, never over anything
/// there. The caller syncs the directory.
pub fn place(
    dir: &Dir,
    names: &Names,
    (id, file): (FileId, &File),
    last: &std::ffi::OsStr,
    size: u64,
) -> io::Result<()> {
    if id.is_unnamed() {
        // Only this file can be linked: it has no name to be swapped.
        return link_unnamed(file, dir, last);
    }
    let part = names.part();
    if FileId::at(dir, &part) != Some(id) {
        use std::os::unix::ffi::OsStrExt;
        return Err(io::Error::other(format!(
            "'{}' was replaced while it was written",
            crate::sanitize::escape_bytes(part.as_bytes())
        )));
    }
    dir.rename(&part, dir, last)?;
    if size >= BLOCK {
        let _ = dir.remove_file(names.state());
    }
    Ok(())
}

/// The named partial of a file, created exclusively and without
/// following a symlink (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), locked,
/// with its inode. Whatever is at the name is never written to: the create
/// fails with [`io::ErrorKind::AlreadyExists`].
fn create_file(dir: &Dir, names: &Names) -> io::Result<(File, FileId)> {
    let file = dir
        .open_with(
            names.part(),
            no_follow(OpenOptions::new().write(true).read(true).create_new(true)).mode(0o600),
        )?
        .into_std();
    lock(&file)?;
    let id = FileId::of(&file)?;
    Ok((file, id))
}

/// [`prepare`], then [`create`] when there is nothing to resume.
pub fn open(
    dir: &Dir,
    names: &Names,
    size: u64,
    md5: Md5Digest,
    budget: &Arc<Budget>,
) -> io::Result<Opened> {
    let algo = Algo::Md5;
    match prepare(dir, names, size, md5, algo, budget)? {
        Slot::Resumed(o) => Ok(*o),
        Slot::Fresh { discarded } => {
            let mut o = create(dir, names, size, md5, algo, budget)?;
            o.discarded = discarded;
            Ok(o)
        }
    }
}

/// Removes whatever unusable thing sits at the partial's name (a symlink,
/// a FIFO...: the name only) and the state file.
fn clear(dir: &Dir, names: &Names) -> io::Result<Option<String>> {
    let part = names.part();
    let md = dir.symlink_metadata(&part)?;
    let what = if md.is_symlink() {
        "a symlink at the partial's name"
    } else {
        "something other than a file at the partial's name"
    };
    if md.is_dir() {
        return Err(io::Error::other(format!(
            "{what} (a directory): remove it by hand"
        )));
    }
    dir.remove_file(&part)?;
    let _ = dir.remove_file(names.state());
    Ok(Some(what.to_owned()))
}

/// Why an open partial must not be written to, if it must not: not a
/// regular file, more than one link (a hard link to a file elsewhere), or
/// owned by another user.
fn untrusted(file: &File) -> io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata()?;
    Ok(if !md.is_file() {
        Some("something other than a file at the partial's name".into())
    } else if md.nlink() != 1 {
        Some(format!(
            "the partial has {} links (a hard link to another file?); never written to",
            md.nlink()
        ))
    } else if md.uid() != rustix::process::geteuid().as_raw() {
        Some("the partial belongs to another user; never written to".into())
    } else {
        None
    })
}

/// Locks a partial for this process (`flock`, released when the file is
/// closed), so no other receiver on the same directory takes it over.
fn lock(file: &File) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "another process is writing this file's partial",
        )),
        Err(e) => Err(e.into()),
    }
}

/// How a body ended: written and hashed, or held in memory, not yet
/// written nor hashed.
pub enum Finished {
    /// Written: the file, its digest, and its delta block digests when
    /// they were computed as it was written ([`crate::delta`]).
    Ready(File, Md5Digest, Option<Blocks>),
    Held(Held),
}

/// Writes a file's body into its partial, hashing it; or holds it in
/// memory, for a small file.
pub enum PartialWriter {
    /// Up to [`HOLD_MAX`] bytes (so never resumed: it has no block).
    Small(SmallWriter),
    /// Over [`HOLD_MAX`], under [`BLOCK`] bytes (never resumed either).
    Streamed(StreamWriter),
    /// [`BLOCK`] bytes or more.
    Piped(Pipeline),
}

impl PartialWriter {
    pub(super) fn new(
        dir: &Dir,
        names: &Names,
        file: File,
        size: u64,
        md5_expected: Md5Digest,
        start: Start,
        budget: &Arc<Budget>,
    ) -> io::Result<Self> {
        // Every allocation is bounded whatever the peer announced, and
        // paid for from the receiver-wide budget.
        if start.pos == 0 {
            if let Some((body, lease)) = small::hold(size, budget)? {
                return Ok(PartialWriter::Small(SmallWriter {
                    file: Some(file),
                    body,
                    lease,
                }));
            }
            // Too large, or the budget is spent: this body goes to disk
            // as it arrives.
        }
        if size < BLOCK {
            let want = WRITE_BUF.min(size as usize).max(MIN_BUF);
            let lease = budget.try_lease(want);
            let cap = if lease.is_some() { want } else { MIN_BUF };
            return Ok(PartialWriter::Streamed(StreamWriter {
                out: BufWriter::with_capacity(cap, file),
                md5: start.md5,
                pos: start.pos,
                _lease: lease,
            }));
        }
        Pipeline::new(dir, names, file, size, md5_expected, start, budget).map(PartialWriter::Piped)
    }

    /// Appends body bytes.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            PartialWriter::Small(w) => {
                w.body.extend_from_slice(chunk);
                Ok(())
            }
            PartialWriter::Streamed(w) => {
                w.md5.update(chunk);
                w.pos += chunk.len() as u64;
                w.out.write_all(chunk)
            }
            PartialWriter::Piped(p) => p.write(chunk),
        }
    }

    /// Appends `n` zero bytes that are a hole in a sparse file: hashed,
    /// but not written (the partial stays sparse); held in memory for a
    /// small file.
    pub fn hole(&mut self, n: u64) -> io::Result<()> {
        match self {
            PartialWriter::Small(w) => {
                let n = usize::try_from(n).map_err(io::Error::other)?;
                // Within the file's size, checked by the caller: bounded.
                w.body.resize(w.body.len() + n, 0);
                Ok(())
            }
            PartialWriter::Streamed(w) => {
                use std::io::{Seek, SeekFrom};
                let zeros = [0u8; 8192];
                let mut left = n;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    w.md5.update(&zeros[..k]);
                    left -= k as u64;
                }
                w.pos += n;
                w.out.flush()?;
                let n = i64::try_from(n).map_err(io::Error::other)?;
                w.out.get_mut().seek(SeekFrom::Current(n)).map(|_| ())
            }
            PartialWriter::Piped(p) => p.hole(n),
        }
    }

    /// Appends `n` bytes of `old`, the file this one replaces, read at the
    /// same offset (a delta's SAME extent): hashed like received bytes,
    /// and cloned where the file system can ([`Pipeline::same`]). An
    /// error if `old` is shorter.
    pub fn same(&mut self, old: &Arc<cold::ColdFile>, n: u64) -> io::Result<()> {
        if let PartialWriter::Piped(p) = self {
            return p.same(old, n);
        }
        let mut buf = vec![0u8; usize::try_from(n.min(1 << 20)).map_err(io::Error::other)?];
        let mut left = n;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            old.read_exact_at(&mut buf[..k], self.position())?;
            self.write(&buf[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Bytes written so far (including a resumed prefix).
    pub fn position(&self) -> u64 {
        match self {
            PartialWriter::Small(w) => w.body.len() as u64,
            PartialWriter::Streamed(w) => w.pos,
            PartialWriter::Piped(p) => p.position(),
        }
    }

    /// Stops here and checkpoints what arrived, for a later resume. Returns
    /// the offset a resume will start from (0 for a file under a block).
    pub fn suspend(self) -> io::Result<u64> {
        match self {
            PartialWriter::Small(_) | PartialWriter::Streamed(_) => Ok(0),
            PartialWriter::Piped(p) => p.suspend(),
        }
    }

    /// Ends the body: a file over [`HOLD_MAX`] is flushed and its MD5
    /// known; a small file's body comes back held.
    pub fn end(self) -> io::Result<Finished> {
        match self {
            PartialWriter::Small(w) => Ok(Finished::Held(Held {
                file: w.file,
                body: HeldBody::new(w.body, w.lease),
            })),
            PartialWriter::Streamed(w) => {
                let file = w.out.into_inner().map_err(|e| e.into_error())?;
                // A file that ends in a hole: its length, nothing written.
                file.set_len(w.pos)?;
                Ok(Finished::Ready(file, w.md5.finish(), None))
            }
            PartialWriter::Piped(p) => p.finish().map(|(f, d, b)| Finished::Ready(f, d, b)),
        }
    }

    /// Flushes and returns the file and the MD5 of the whole content.
    pub fn finish(self) -> io::Result<(File, Md5Digest)> {
        match self.end()? {
            Finished::Ready(file, md5, _) => Ok((file, md5)),
            Finished::Held(held) => {
                let (file, body) = held.into_parts();
                let Some(mut file) = file else {
                    return Err(io::Error::other("a held body without its file"));
                };
                file.write_all(&body)?;
                let mut md5 = Hasher::new();
                md5.update(&body);
                Ok((file, md5.finish()))
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
