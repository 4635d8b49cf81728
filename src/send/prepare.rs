//! The look-ahead thread (`ftx-hasher`): opens the next entries and finds
//! their digests (known, cached, or hashed now), reading small files whole
//! and hashing them many at a time.

use super::lookahead::*;
use super::types::*;
use crate::cache::DigestCache;
use crate::digest::{digest_of, hash_reader_as, read_whole, Algo, Md5Digest};
use crate::progress::Bar;
use crate::sanitize::escape;
use crate::walk::{Entry, Kind};
use anyhow::{Context, Result};
use std::fs::File;
use std::sync::mpsc;

/// Small files read ahead are hashed together, this many at a time at
/// most (see [`crate::md5multi`]): several times faster than one by one.
pub(super) const BATCH_FILES: usize = 64;

/// An entry for the look-ahead thread to offer again.
pub(super) struct Job {
    pub(super) idx: usize,
    pub(super) entry: std::sync::Arc<Entry>,
    /// Its digest, if known from an earlier attempt.
    pub(super) known: Option<Md5Digest>,
    /// It may be offered without its digest (hashed while sent).
    pub(super) stream_ok: bool,
}

/// Prepares the entries to offer, in order: first `again` (entries of
/// earlier attempts not settled yet), then the rest of the walk, taken
/// from `feed` as it goes (each new one sent with its Ready), at most
/// [`ahead`] entries and [`AHEAD_BYTES`] of bodies ahead of the offers (a
/// permit per entry, given back with its bytes in groups: see [`Permits`]). Digests come
/// from earlier attempts, the digest cache, or are computed now (`run`:
/// the algorithm and the attributes sent). Small files are read and
/// collected, and hashed together when the batch is full, when a larger
/// file or a directory comes, or when the offers have caught up (no permit
/// waiting). [`Msg::Exhausted`] follows the last. Returns the feed when
/// the walk is over or the attempt ended (its permits gone).
pub(super) fn spawn_hasher(
    again: Vec<Job>,
    mut feed: Feed,
    run: (Algo, crate::xattr::Selection),
    cache: DigestCache,
    bar: Bar,
    tx: mpsc::Sender<Mail>,
    permits: mpsc::Receiver<Permit>,
) -> Result<std::thread::JoinHandle<Feed>> {
    let handle = std::thread::Builder::new()
        .name("ftx-hasher".into())
        .spawn(move || {
            let mut batch = Vec::new();
            let mut again = again.into_iter();
            let mut allowed = 0;
            let mut read_ahead = 0u64;
            let mut held = crate::walk::HeldDir::default();
            loop {
                // Every entry taken from the walk goes out in a Ready
                // (the batch is sent before any return): the session
                // outlives this thread, so none is lost when it stops.
                // Permits are looked for before each entry, so that the
                // end of the attempt (the permits dropped) stops it at
                // once, whatever it was allowed.
                let may_go = allowed > 0 && read_ahead < AHEAD_BYTES;
                let permitted = match permits.try_recv() {
                    Ok(p) => Some(p),
                    Err(mpsc::TryRecvError::Disconnected) => None,
                    Err(mpsc::TryRecvError::Empty) if may_go => Some(Permit::default()),
                    Err(mpsc::TryRecvError::Empty) => {
                        if hash_batch(&mut batch, &tx) {
                            permits.recv().ok()
                        } else {
                            None
                        }
                    }
                };
                let Some(p) = permitted else {
                    hash_batch(&mut batch, &tx);
                    return feed;
                };
                allowed += p.entries;
                read_ahead = read_ahead.saturating_sub(p.bytes);
                if allowed == 0 || read_ahead >= AHEAD_BYTES {
                    continue;
                }
                allowed -= 1;
                let (job, new) = match again.next() {
                    Some(job) => (job, false),
                    None => match feed.take() {
                        Some((idx, entry)) => {
                            let job = Job {
                                idx,
                                entry,
                                known: None,
                                stream_ok: true,
                            };
                            (job, true)
                        }
                        None => break,
                    },
                };
                let entry = new.then(|| job.entry.clone());
                let prepared = prepare(
                    &job.entry,
                    (job.known, job.stream_ok),
                    run,
                    &cache,
                    &bar,
                    &mut held,
                );
                match prepared {
                    Step::Read(r) => {
                        read_ahead += r.data.len() as u64;
                        batch.push((job.idx, entry, r));
                        if batch.len() >= BATCH_FILES && !hash_batch(&mut batch, &tx) {
                            return feed;
                        }
                    }
                    Step::Ready(p) => {
                        read_ahead += p.read_ahead();
                        if !hash_batch(&mut batch, &tx)
                            || tx
                                .send(Mail::One(Msg::Ready(vec![(job.idx, entry, p)])))
                                .is_err()
                        {
                            return feed;
                        }
                    }
                }
            }
            if hash_batch(&mut batch, &tx) {
                let _ = tx.send(Mail::One(Msg::Exhausted));
            }
            feed
        })
        .context("cannot start the hashing thread")?;
    Ok(handle)
}

/// A small file read whole, not hashed yet.
pub(super) struct Unhashed {
    pub(super) md: std::fs::Metadata,
    pub(super) data: Vec<u8>,
    /// Its extended attributes and ACLs.
    pub(super) attrs: Attrs,
    /// It changed while it was read (why).
    pub(super) changed: Option<Box<str>>,
}

/// What [`prepare`] made of an entry.
// The large variant is the common one (a small file, moved once into the
// batch); boxing it would add an allocation per small file.
#[allow(clippy::large_enum_variant)]
pub(super) enum Step {
    Ready(Prepared),
    /// A small file, to be hashed with others.
    Read(Unhashed),
}

/// A small file read whole, waiting to be hashed with others: its index,
/// the entry if it is new from the walk, the content.
pub(super) type Batched = (usize, Option<std::sync::Arc<Entry>>, Unhashed);

/// Hashes the batch's files together and hands them over in order, in
/// one message; false if the session is gone.
pub(super) fn hash_batch(batch: &mut Vec<Batched>, tx: &mpsc::Sender<Mail>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let bodies: Vec<&[u8]> = batch.iter().map(|(_, _, r)| r.data.as_slice()).collect();
    let digests = crate::md5multi::digests(&bodies);
    let mut ready = Vec::with_capacity(batch.len());
    for ((idx, entry, r), md5) in batch.drain(..).zip(digests) {
        let source = Source {
            file: None,
            md: r.md,
            md5,
            data: Some(r.data),
            digest_follows: false,
            stream: false,
            changed: r.changed,
            attrs: r.attrs,
        };
        ready.push((idx, entry, Prepared::File(Box::new(source))));
    }
    tx.send(Mail::One(Msg::Ready(ready))).is_ok()
}

/// Why `file` is not what `md` (taken when it was offered) described any
/// more, if it changed: it reads past the size it had, or its size or
/// mtime differ now (see [`super::verdict::change`]).
pub(super) fn changed_since(file: &File, md: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let mut one = [0u8; 1];
    let reads_more = matches!(file.read_at(&mut one, md.len()), Ok(n) if n > 0);
    let now = file.metadata().ok()?;
    let modified = (now.mtime(), now.mtime_nsec()) != (md.mtime(), md.mtime_nsec());
    super::verdict::change(md.len(), now.len(), reads_more, modified)
}

/// Opens a file entry for reading, as it is now: never blocking (a FIFO
/// put in its place since the walk), never through a symlink put there
/// since (unless the entry may be followed), and only a regular file.
fn open_source(entry: &Entry) -> std::io::Result<(File, std::fs::Metadata)> {
    let file = entry
        .open(rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                std::io::Error::other("it became a symlink since it was listed; not followed")
            }
            Some(libc::EXDEV) => std::io::Error::other(
                "it is on another file system (or beneath a symlink) since it was listed; not offered",
            ),
            _ => e,
        })?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::other(
            "it is no longer a regular file since it was listed",
        ));
    }
    Ok((file, md))
}

/// Opens a file and finds its digest: known, cached, or hashed now; or
/// reads it whole to be hashed with others, if small.
/// `held`: the directory of the last small file read, kept open.
pub(super) fn prepare(
    entry: &Entry,
    (known, stream_ok): (Option<Md5Digest>, bool),
    (algo, sel): (Algo, crate::xattr::Selection),
    cache: &DigestCache,
    bar: &Bar,
    held: &mut crate::walk::HeldDir,
) -> Step {
    if entry.kind == Kind::Dir {
        // A served directory only through its root; else by its path (a
        // directory named on the command line may be a symlink to one).
        let dir = match entry.within {
            Some(_) => entry.open(rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NONBLOCK),
            None => File::open(&entry.local),
        };
        let attrs = dir.map(|d| attrs_of(&d, sel)).unwrap_or_default();
        return Step::Ready(Prepared::Dir(attrs));
    }
    if matches!(entry.kind, Kind::Symlink | Kind::HardLink) {
        return Step::Ready(Prepared::Link);
    }
    if entry.stdin {
        // Standard input: read as it is sent, hashed as it goes.
        use std::os::fd::AsFd;
        let opened = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .and_then(|f| Ok((f.metadata()?, f)));
        return match opened {
            Ok((md, file)) => Step::Ready(Prepared::File(Box::new(Source {
                stream: true,
                ..Source::unhashed(file, md)
            }))),
            Err(e) => Step::Ready(Prepared::Unreadable(format!(
                "cannot read standard input: {e}"
            ))),
        };
    }
    if let Some(step) = read_small(entry, known, (algo, sel), cache, held) {
        return step;
    }
    let unreadable = |e: std::io::Error| {
        let local = escape(&entry.local.to_string_lossy());
        Step::Ready(Prepared::Unreadable(format!("cannot read {local}: {e}")))
    };
    let (file, md) = match open_source(entry) {
        Ok(pair) => pair,
        Err(e) => return unreadable(e),
    };
    let attrs = attrs_of(&file, sel);
    // The cache keeps MD5s only (XXH3 costs less than looking it up).
    let cached = || (algo == Algo::Md5).then(|| cache.get(&md)).flatten();
    if let Some(md5) = known.or_else(cached) {
        return Step::Ready(Prepared::File(Box::new(Source {
            attrs,
            ..Source::hashed(file, md, md5)
        })));
    }
    if stream_ok && md.len() >= STREAM_DIGEST_MIN {
        // Hashed while it is sent: no pass over it now.
        return Step::Ready(Prepared::File(Box::new(Source {
            attrs,
            ..Source::unhashed(file, md)
        })));
    }
    if md.len() <= INLINE_MAX {
        // Hashed in microseconds: not worth a line on the hashing bar.
        return match read_whole(&file, md.len()) {
            Ok(data) => {
                let changed = changed_since(&file, &md).map(Into::into);
                read_whole_step(
                    algo,
                    Unhashed {
                        md,
                        data,
                        attrs,
                        changed,
                    },
                )
            }
            Err(e) => unreadable(e),
        };
    }
    bar.set_message(entry.name.shown());
    bar.set_length(md.len());
    bar.set_position(0);
    match hash_reader_as(algo, &file, md.len(), |n| bar.inc(n)) {
        Ok(md5) => {
            if algo == Algo::Md5 {
                cache.put(&md, &md5);
            }
            Step::Ready(Prepared::File(Box::new(Source {
                attrs,
                ..Source::hashed(file, md, md5)
            })))
        }
        Err(e) => unreadable(e),
    }
}

/// A small file read in the fewest calls (open, one `read` with room for
/// one more byte, a stat, the attributes' listing, close) when it is
/// still what the walk saw: same device, inode, size, mtime and ctime
/// after the read (any write since the walk changes the ctime), and
/// nothing past that size. `None` for anything else (a digest known or
/// possibly cached, a change since the walk, an error, not a regular file
/// any more): [`prepare`] then opens it again, stats before and after
/// the read, and says what happened.
fn read_small(
    entry: &Entry,
    known: Option<Md5Digest>,
    (algo, sel): (Algo, crate::xattr::Selection),
    cache: &DigestCache,
    held: &mut crate::walk::HeldDir,
) -> Option<Step> {
    let walked = entry.version?;
    let cacheable = algo == Algo::Md5 && walked.len >= crate::cache::PUT_MIN && cache.is_on();
    if known.is_some() || walked.len > INLINE_MAX || cacheable {
        return None;
    }
    let file = entry.open_in(held, rustix::fs::OFlags::NONBLOCK).ok()?;
    let (data, more) = crate::digest::read_whole_or_more(&file, walked.len).ok()?;
    let md = file.metadata().ok()?;
    if more || !md.is_file() || crate::cache::Version::of(&md) != walked {
        return None;
    }
    let attrs = attrs_of(&file, sel);
    Some(read_whole_step(
        algo,
        Unhashed {
            md,
            data,
            attrs,
            changed: None,
        },
    ))
}

/// A small file read whole: with MD5, to be hashed with others; with
/// another algorithm (hashed one at a time: only MD5 has a batched form),
/// hashed now.
fn read_whole_step(algo: Algo, r: Unhashed) -> Step {
    if algo == Algo::Md5 {
        return Step::Read(r);
    }
    Step::Ready(Prepared::File(Box::new(Source {
        file: None,
        md5: digest_of(algo, &r.data),
        changed: r.changed,
        md: r.md,
        data: Some(r.data),
        digest_follows: false,
        stream: false,
        attrs: r.attrs,
    })))
}

/// The extended attributes and ACLs of an open file or directory: those
/// `sel` sends, read now, and whether it has any that are not sent (for
/// the summary's hint).
fn attrs_of(fd: &File, sel: crate::xattr::Selection) -> Attrs {
    // One listing serves the hint and the reading.
    let names = match crate::xattr::names(fd) {
        Ok(n) => n,
        Err(e) => {
            return Attrs {
                left: if sel.any() {
                    vec![e.to_string()]
                } else {
                    Vec::new()
                },
                ..Attrs::default()
            }
        }
    };
    let (has_x, has_acl) = crate::xattr::kinds(&names);
    let (list, left) = if sel.any() {
        crate::xattr::read(fd, &names, sel)
    } else {
        (Vec::new(), Vec::new())
    };
    Attrs {
        list,
        left,
        unsent: (has_x && !sel.xattrs, has_acl && !sel.acls),
    }
}

impl Sender<'_> {
    /// `ftx serve`: hashes, into the digest cache, the files the getter
    /// asked the digest of (REJECT 17) in this session, so that its next
    /// call is offered them with it (a served session cannot open another
    /// one itself). Bounded by those files' sizes; a file that cannot be
    /// read is left to that next offer to report.
    pub(super) fn cache_asked_digests(&self) {
        for (_, i) in self.items.iter() {
            if i.state != State::Pending || !i.need_digest {
                continue;
            }
            if let Ok((file, md)) = open_source(&i.entry) {
                // Into the cache (a fresh hash: the getter's partial is
                // what asked for it).
                let _ = self.cache.digest_of(Algo::Md5, &file, &md, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_entry(local: &std::path::Path, follow: bool) -> Entry {
        Entry {
            follow,
            ..Entry::test_file(local, "f", 3)
        }
    }

    #[test]
    fn a_file_replaced_after_the_walk_is_not_followed_or_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("secret");
        std::fs::write(&target, b"abc").expect("write");
        let link = dir.path().join("f");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        // A file inside a tree that became a symlink: not followed.
        let e = open_source(&file_entry(&link, false)).expect_err("a symlink");
        assert!(e.to_string().contains("became a symlink"), "{e}");
        // A command-line argument (or --follow-links) is followed.
        let (_, md) = open_source(&file_entry(&link, true)).expect("followed");
        assert_eq!(md.len(), 3);
        // A FIFO in its place: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path that lives until the
        // call returns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_source(&file_entry(&fifo, false)).expect_err("a FIFO");
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
    }

    /// The walk's entry for `tree/f`.
    fn walked(tree: &std::path::Path) -> Entry {
        let w = crate::walk::walk(&[tree.to_owned()], Default::default(), None).expect("walk");
        w.entries
            .into_iter()
            .find(|e| e.kind == Kind::File)
            .expect("the file")
    }

    fn quick(e: &Entry) -> Option<Step> {
        let run = (Algo::Md5, crate::xattr::Selection::default());
        let cache = DigestCache::open(false);
        read_small(e, None, run, &cache, &mut crate::walk::HeldDir::default())
    }

    #[test]
    fn a_small_file_is_read_the_quick_way_only_while_it_is_what_the_walk_saw() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        let f = tree.join("f");
        std::fs::write(&f, b"abc").expect("write");
        let e = walked(&tree);
        match quick(&e) {
            Some(Step::Read(u)) => {
                assert_eq!(u.data, b"abc");
                assert!(u.changed.is_none());
            }
            _ => panic!("an unchanged small file is read the quick way"),
        }
        // Rewritten in place, same size, its mtime put back: the ctime
        // says so, and the careful path reads what it holds now.
        let before = std::fs::metadata(&f).expect("stat");
        std::fs::write(&f, b"xyz").expect("rewrite");
        let mtime = before.modified().expect("mtime");
        std::fs::File::options()
            .write(true)
            .open(&f)
            .and_then(|h| h.set_modified(mtime))
            .expect("mtime back");
        assert_eq!(std::fs::metadata(&f).expect("stat").mtime(), before.mtime());
        assert!(quick(&e).is_none(), "changed since the walk: not quick");
        let cache = DigestCache::open(false);
        let run = (Algo::Md5, crate::xattr::Selection::default());
        let mut held = crate::walk::HeldDir::default();
        match prepare(&e, (None, false), run, &cache, &Bar::hidden(), &mut held) {
            Step::Read(u) => assert_eq!(u.data, b"xyz"),
            _ => panic!("a small file is read whole"),
        }
        // Grown since the walk: the read shows more than the walk saw.
        let e = walked(&tree);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| std::io::Write::write_all(&mut h, b"d"))
            .expect("append");
        assert!(quick(&e).is_none(), "grown since the walk: not quick");
        // A symlink in its place: not followed.
        let e = walked(&tree);
        std::fs::remove_file(&f).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", &f).expect("symlink");
        assert!(quick(&e).is_none(), "a symlink now: not quick");
    }
}
