//! Turns the sender's command-line paths into the list of entries to offer:
//! a file is offered under its own name, a directory recursively under its
//! own name (empty directories included). Inside a directory, a symlink is
//! offered as a symlink (or, with `--follow-links`, what it points to; loops
//! are detected), and a file that is a hard link to one offered earlier as
//! a hard link to it. Everything that cannot be offered (FIFOs, sockets and
//! devices, names that cannot be sent safely, trees deeper than the
//! protocol allows, unreadable entries) is listed in [`Walk::left`] with
//! its reason, never dropped silently. Missing sources are errors.

use crate::protocol::WireName;
use crate::sanitize::{escape, escape_bytes};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, offered as one ([`Entry::target`]).
    Symlink,
    /// A hard link to a file offered earlier ([`Entry::link_to`]).
    HardLink,
}

/// One thing to offer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File or directory.
    pub kind: Kind,
    /// Where it is on this machine.
    pub local: PathBuf,
    /// The name it is offered under.
    pub name: WireName,
    /// Size at walk time (files).
    pub size: u64,
    /// Unix mode.
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime_s: i64,
    /// Modification time, nanoseconds.
    pub mtime_ns: u32,
    /// A symlink's target, as stored in the link.
    pub target: Vec<u8>,
    /// A hard link's earlier entry.
    pub link_to: Option<WireName>,
    /// A file with other names, offered here first: later names are
    /// offered as hard links to it.
    pub linked: bool,
    /// The file is standard input (`-`): its size is not known.
    pub stdin: bool,
    /// `local` may be a symlink to follow (a command-line argument, or
    /// `--follow-links`); else a symlink found there when the file is
    /// opened replaced it after the walk, and is not followed.
    pub follow: bool,
    /// `ftx serve`: the root the entry was found under. The file is then
    /// opened only through it, never through a symlink and never on
    /// another file system, whatever changed since the walk.
    pub within: Option<std::sync::Arc<Within>>,
    /// The version of the file the walk saw (regular files).
    pub version: Option<crate::cache::Version>,
}

/// A served root, held open (see [`Entry::within`]).
#[derive(Debug)]
pub struct Within {
    /// The root, opened (`O_PATH`).
    pub fd: std::os::fd::OwnedFd,
    /// Its path: entries' `local` paths start with it.
    pub base: PathBuf,
}

impl Entry {
    /// Opens the entry for reading with `flags` (plus no-follow and
    /// close-on-exec): through its served root when it has one (every
    /// component beneath it, no symlink, no mount crossed: `openat2`
    /// with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`),
    /// else by its path.
    pub fn open(&self, flags: rustix::fs::OFlags) -> std::io::Result<std::fs::File> {
        use rustix::fs::{OFlags, ResolveFlags};
        let Some(w) = &self.within else {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = flags.bits() as i32;
            if !self.follow {
                f |= libc::O_NOFOLLOW;
            }
            return std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(f)
                .open(&self.local);
        };
        let rel = self.local.strip_prefix(&w.base).unwrap_or(Path::new(""));
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = rustix::fs::openat2(
            &w.fd,
            rel,
            flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// As [`Entry::open`], through `held` (the entry's directory, kept
    /// open for the next entries) when it has no served root.
    pub fn open_in(
        &self,
        held: &mut HeldDir,
        flags: rustix::fs::OFlags,
    ) -> std::io::Result<std::fs::File> {
        use rustix::fs::OFlags;
        if self.within.is_some() {
            return self.open(flags);
        }
        let (dir, name) = held.of(&self.local)?;
        let mut flags = flags | OFlags::RDONLY | OFlags::CLOEXEC;
        if !self.follow {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())?;
        Ok(std::fs::File::from(fd))
    }
}

/// How to walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// `--follow-links`: send what symlinks inside directories point to.
    pub follow_links: bool,
    /// `--no-links`: leave symlinks inside directories out (counted).
    pub no_links: bool,
    /// `--skip-special`: leave FIFOs, sockets and devices out (counted)
    /// without failing the run.
    pub skip_special: bool,
    /// Stay on the file system of each source: an entry on another one
    /// (a mount point) is left out, named (`ftx serve`).
    pub one_file_system: bool,
}

/// Something the walk could not offer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// The local path (escaped).
    pub path: String,
    /// Reason code, for `--json`: `special`, `symlink`, `symlink_loop`,
    /// `unsendable_name`, `too_deep`, `read`.
    pub reason: &'static str,
    /// What happened, in words (names the limit that stopped it).
    pub message: String,
    /// Left out because the user asked (`--no-links`, `--skip-special`):
    /// it does not fail the run.
    pub asked: bool,
}

/// The result of walking the sources.
#[derive(Debug, Default)]
pub struct Walk {
    /// Entries in offer order (a directory before what it holds).
    pub entries: Vec<Entry>,
    /// Everything that was not offered, with its reason.
    pub left: Vec<Left>,
}

/// The name a command-line path is offered under: its last component.
pub fn root_name(path: &Path) -> Result<Vec<u8>> {
    let name = match path.file_name() {
        Some(n) => n.to_owned(),
        None => {
            // ".", "..", "dir/..": use the real directory's name.
            let abs = path
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            match abs.file_name() {
                Some(n) => n.to_owned(),
                None => bail!("cannot send {}: it has no name", path.display()),
            }
        }
    };
    // Names are bytes: whatever the file system holds is sent.
    Ok(name.into_vec())
}

/// What the walk takes from an entry's stat.
struct Meta {
    mode: u32,
    nlink: u64,
    version: crate::cache::Version,
}

impl Meta {
    fn of(md: &Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            nlink: md.nlink(),
            version: crate::cache::Version::of(md),
        }
    }

    /// The stat of `name` in the directory `dir` (following a symlink
    /// there only if `follow`): no walk of the whole path, as a stat of
    /// the path would do for each entry.
    fn at(
        dir: &std::os::fd::OwnedFd,
        name: &std::ffi::OsStr,
        follow: bool,
    ) -> std::io::Result<Meta> {
        use rustix::fs::{AtFlags, StatxFlags};
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        let want = StatxFlags::TYPE
            | StatxFlags::MODE
            | StatxFlags::NLINK
            | StatxFlags::INO
            | StatxFlags::SIZE
            | StatxFlags::MTIME
            | StatxFlags::CTIME;
        let x = rustix::fs::statx(dir, name, flags, want)?;
        Ok(Meta {
            mode: u32::from(x.stx_mode),
            nlink: u64::from(x.stx_nlink),
            version: crate::cache::Version {
                dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
                ino: x.stx_ino,
                len: x.stx_size,
                mtime: (x.stx_mtime.tv_sec, i64::from(x.stx_mtime.tv_nsec)),
                ctime: (x.stx_ctime.tv_sec, i64::from(x.stx_ctime.tv_nsec)),
            },
        })
    }

    fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

fn entry(kind: Kind, local: PathBuf, name: WireName, md: &Meta) -> Entry {
    let v = &md.version;
    Entry {
        kind,
        local,
        name,
        size: if kind == Kind::File { v.len } else { 0 },
        mode: md.mode,
        mtime_s: v.mtime.0,
        mtime_ns: v.mtime.1.clamp(0, 999_999_999) as u32,
        target: Vec::new(),
        link_to: None,
        linked: false,
        stdin: false,
        follow: false,
        within: None,
        version: md.is_file().then_some(md.version),
    }
}

/// Why a name cannot be offered, and the reason code.
fn unsendable(e: &crate::protocol::NameError) -> (&'static str, String) {
    match e {
        crate::protocol::NameError::TooDeep(n) => (
            "too_deep",
            format!(
                "{n} levels deep, more than the protocol's limit of {}; left out with everything below it",
                crate::protocol::limits::MAX_DEPTH
            ),
        ),
        other => ("unsendable_name", format!("its name cannot be sent: {other}")),
    }
}

/// Walks every source into one list (see [`Walker`], which yields the
/// same entries one at a time).
pub fn walk(sources: &[PathBuf], opts: WalkOptions, stdin_name: Option<&str>) -> Result<Walk> {
    let mut w = Walk::default();
    for found in Walker::new(sources, opts, stdin_name)? {
        match found {
            Found::Entry(e) => w.entries.push(e),
            Found::Left(l) => w.left.push(l),
        }
    }
    Ok(w)
}

/// What the walk found next: an entry to offer, or one it cannot offer.
#[derive(Debug)]
pub enum Found {
    /// To offer.
    Entry(Entry),
    /// Not offered, with why.
    Left(Left),
}

/// Walks the sources as it is asked for entries: a directory's listing is
/// read when the walk reaches it (one listing per level of the current
/// path, as rsync's incremental recursion holds), so a tree of millions
/// of files is offered without being held. The order is that of
/// [`walk`]: sources in order, each tree depth first, names sorted.
///
/// A missing or unreadable source given on the command line is an error
/// of [`Walker::new`], before anything is sent; problems deeper in a tree
/// come as [`Found::Left`] and the rest still goes.
pub struct Walker {
    starts: std::vec::IntoIter<Start>,
    opts: WalkOptions,
    cur: Option<DirWalk>,
    /// Files with other names, seen so far (the only per-entry memory of
    /// the walk, as `rsync -H` keeps).
    links: Links,
}

/// A source, checked.
enum Start {
    /// A file (or standard input), offered as it is.
    Entry(Entry),
    /// A directory to walk, and the name it is offered under.
    Dir(PathBuf, Vec<u8>),
}

/// The walk of one directory source.
struct DirWalk {
    it: walkdir::IntoIter,
    root: PathBuf,
    base: Vec<u8>,
    root_dev: Option<u64>,
    /// The directory of the last entry stat'ed.
    parent: HeldDir,
    /// The wire names of the directories on the way to the current entry,
    /// by depth: an entry's name is its directory's and its own (no
    /// parse of its whole path for each).
    dirs: Vec<Vec<u8>>,
}

/// A directory held open (`O_PATH`) while the entries in it are reached
/// through it: one name to look up for each instead of its whole path.
#[derive(Default)]
pub struct HeldDir(Option<(PathBuf, std::os::fd::OwnedFd)>);

/// `path`'s directory ("." for a bare name) and last name, as
/// `Path::parent` and `Path::file_name` give them. A name that is neither
/// empty, "." nor ".." is split off at the last "/" without parsing the
/// whole path (this is asked twice for every file sent).
fn parent_and_name(path: &Path) -> Option<(&Path, &std::ffi::OsStr)> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (&b""[..], bytes),
    };
    let plain_dir = !dir.is_empty() && !dir.ends_with(b"/");
    if plain_dir && !matches!(name, b"" | b"." | b"..") {
        return Some((Path::new(OsStr::from_bytes(dir)), OsStr::from_bytes(name)));
    }
    let (dir, name) = (path.parent()?, path.file_name()?);
    Some(match dir.as_os_str().is_empty() {
        true => (Path::new("."), name),
        false => (dir, name),
    })
}

impl HeldDir {
    /// The directory `path` is in, open (the one held, if it is that one),
    /// and `path`'s last name. The directory's path is followed as a
    /// path to the entry would be.
    pub fn of<'p>(
        &mut self,
        path: &'p Path,
    ) -> std::io::Result<(&std::os::fd::OwnedFd, &'p std::ffi::OsStr)> {
        let Some((dir, name)) = parent_and_name(path) else {
            return Err(std::io::Error::other("no parent directory"));
        };
        if !matches!(&self.0, Some((p, _)) if p.as_os_str() == dir.as_os_str()) {
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.0 = Some((dir.to_owned(), fd));
        }
        match &self.0 {
            Some((_, fd)) => Ok((fd, name)),
            None => Err(std::io::Error::other("no parent directory")),
        }
    }
}

impl Walker {
    /// Checks every source (it exists, a file can be opened, its name can
    /// be sent) and returns the walk of them, not started yet.
    pub fn new(sources: &[PathBuf], opts: WalkOptions, stdin_name: Option<&str>) -> Result<Walker> {
        let mut starts = Vec::new();
        for src in sources {
            if src.as_os_str() == "-" {
                let name = stdin_name.unwrap_or_default();
                let name = WireName::parse(name)
                    .with_context(|| format!("cannot send standard input as '{}'", escape(name)))?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                starts.push(Start::Entry(Entry {
                    kind: Kind::File,
                    local: src.clone(),
                    name,
                    size: 0,
                    mode: 0o644,
                    mtime_s: i64::try_from(now.as_secs()).unwrap_or(0),
                    mtime_ns: now.subsec_nanos(),
                    target: Vec::new(),
                    link_to: None,
                    linked: false,
                    stdin: true,
                    follow: false,
                    within: None,
                    version: None,
                }));
                continue;
            }
            let md = std::fs::metadata(src).with_context(|| {
                format!("cannot read source {}", escape(&src.to_string_lossy()))
            })?;
            let base = root_name(src)?;
            if md.is_file() {
                // Fail early on an unreadable file, before connecting.
                std::fs::File::open(src).with_context(|| {
                    format!("cannot read source {}", escape(&src.to_string_lossy()))
                })?;
                let name = WireName::from_bytes(&base).with_context(|| {
                    format!(
                        "cannot send {}: unsendable name",
                        escape_bytes(src.as_os_str().as_bytes())
                    )
                })?;
                starts.push(Start::Entry(Entry {
                    follow: true,
                    ..entry(Kind::File, src.clone(), name, &Meta::of(&md))
                }));
            } else if md.is_dir() {
                starts.push(Start::Dir(src.clone(), base));
            } else {
                bail!(
                    "cannot send {}: not a regular file or directory",
                    escape(&src.to_string_lossy())
                );
            }
        }
        Ok(Walker {
            starts: starts.into_iter(),
            opts,
            cur: None,
            links: HashMap::new(),
        })
    }
}

impl Iterator for Walker {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        loop {
            if let Some(d) = &mut self.cur {
                match d.it.next() {
                    Some(next) => {
                        if let Some(found) = d.found(next, self.opts, &mut self.links) {
                            return Some(found);
                        }
                    }
                    None => self.cur = None,
                }
                continue;
            }
            match self.starts.next()? {
                Start::Entry(e) => return Some(Found::Entry(e)),
                Start::Dir(root, base) => {
                    let it = WalkDir::new(&root)
                        .follow_links(self.opts.follow_links)
                        .sort_by(crate::walk::by_name)
                        .into_iter();
                    let root_dev = std::fs::symlink_metadata(&root).map(|m| m.dev()).ok();
                    self.cur = Some(DirWalk {
                        it,
                        root,
                        base,
                        root_dev,
                        parent: HeldDir::default(),
                        dirs: Vec::new(),
                    });
                }
            }
        }
    }
}

/// Files with more than one link seen so far, by (device, inode): the
/// first one's wire name.
type Links = HashMap<(u64, u64), WireName>;

/// Orders the entries of one directory by name, as `sort_by_file_name`
/// does, comparing their whole paths as bytes: the same order (they share
/// the directory's path and its `/`), without parsing each path into
/// components at every comparison (a tenth of `ftx check`'s time on
/// 100,000 files).
pub fn by_name(a: &walkdir::DirEntry, b: &walkdir::DirEntry) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    a.path()
        .as_os_str()
        .as_bytes()
        .cmp(b.path().as_os_str().as_bytes())
}

impl DirWalk {
    /// The stat of `path` (an entry below the root) through its
    /// directory, held open while the walk stays in it.
    fn stat_in_parent(&mut self, path: &Path, follow: bool) -> std::io::Result<Meta> {
        let (dir, name) = self.parent.of(path)?;
        Meta::at(dir, name, follow)
    }

    /// What one step of walkdir amounts to: an entry, one left out, or
    /// nothing (a step into a directory already skipped).
    fn found(
        &mut self,
        next: walkdir::Result<walkdir::DirEntry>,
        opts: WalkOptions,
        links: &mut Links,
    ) -> Option<Found> {
        let leave = |path: String, reason: &'static str, message: String, asked: bool| {
            Some(Found::Left(Left {
                path,
                reason,
                message,
                asked,
            }))
        };
        let root = &self.root;
        let dent = match next {
            Ok(d) => d,
            Err(e) if e.loop_ancestor().is_some() => {
                let p = e
                    .path()
                    .map_or_else(String::new, |p| p.to_string_lossy().into_owned());
                return leave(
                    escape(&p),
                    "symlink_loop",
                    "a symlink loop (--follow-links)".into(),
                    false,
                );
            }
            Err(e) => {
                let p = e.path().map(|p| p.to_string_lossy().into_owned());
                let why = e
                    .io_error()
                    .map_or_else(|| e.to_string(), |io| io.to_string());
                return leave(
                    escape(&p.unwrap_or_else(|| root.to_string_lossy().into_owned())),
                    "read",
                    format!("cannot read it: {why}"),
                    false,
                );
            }
        };
        let shown = || escape_bytes(dent.path().as_os_str().as_bytes());
        let depth = dent.depth();
        let name = match depth.checked_sub(1).and_then(|d| self.dirs.get(d)) {
            Some(dir) => {
                let last = dent.file_name().as_bytes();
                let mut name = Vec::with_capacity(dir.len() + 1 + last.len());
                name.extend_from_slice(dir);
                name.push(b'/');
                name.extend_from_slice(last);
                name
            }
            None => {
                let rel = dent.path().strip_prefix(root).unwrap_or(dent.path());
                let mut name = self.base.clone();
                for c in rel.components() {
                    name.push(b'/');
                    name.extend_from_slice(c.as_os_str().as_bytes());
                }
                name
            }
        };
        // A source given on the command line is followed, whatever it is
        // (as for a file): a symlink to a directory is walked as that
        // directory, under the link's name.
        let root_link = depth == 0 && dent.path_is_symlink();
        let ft = dent.file_type();
        let is_dir = ft.is_dir() || root_link;
        if is_dir {
            // Whatever becomes of it: walkdir goes into it unless told not to.
            self.dirs.truncate(depth);
            self.dirs.push(name.clone());
        }
        let wire = WireName::from_bytes(&name).map_err(|e| unsendable(&e));
        let wire = match wire {
            Ok(n) => n,
            Err((reason, message)) => {
                if is_dir {
                    self.it.skip_current_dir();
                }
                return leave(shown(), reason, message, false);
            }
        };
        if ft.is_symlink() && !root_link {
            if opts.no_links {
                return leave(shown(), "symlink", "a symlink (--no-links)".into(), true);
            }
            let target = match std::fs::read_link(dent.path()) {
                Ok(t) => t.into_os_string().into_vec(),
                Err(e) => {
                    return leave(shown(), "read", format!("cannot read the link: {e}"), false)
                }
            };
            let md = match dent.path().symlink_metadata() {
                Ok(m) => Meta::of(&m),
                Err(e) => return leave(shown(), "read", format!("cannot read it: {e}"), false),
            };
            let mut e = entry(Kind::Symlink, dent.into_path(), wire, &md);
            e.target = target;
            return Some(Found::Entry(e));
        }
        if !ft.is_file() && !ft.is_dir() && !root_link {
            let what = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            let message = if opts.skip_special {
                format!("{what} (--skip-special)")
            } else {
                format!("{what}: not a regular file, directory or symlink (--skip-special leaves these out without failing)")
            };
            return leave(shown(), "special", message, opts.skip_special);
        }
        let md = if root_link {
            std::fs::metadata(dent.path()).map(|m| Meta::of(&m))
        } else if dent.depth() > 0 {
            self.stat_in_parent(dent.path(), opts.follow_links)
        } else {
            dent.metadata()
                .map(|m| Meta::of(&m))
                .map_err(std::io::Error::from)
        };
        let md = match md {
            Ok(m) => m,
            Err(e) => return leave(shown(), "read", format!("cannot read it: {e}"), false),
        };
        if opts.one_file_system && self.root_dev.is_some_and(|d| d != md.version.dev) {
            if is_dir {
                self.it.skip_current_dir();
            }
            return leave(
                shown(),
                "other_fs",
                "on another file system (a mount point): not offered".into(),
                false,
            );
        }
        let kind = if is_dir { Kind::Dir } else { Kind::File };
        // walkdir's path is taken, not copied.
        let mut e = entry(kind, dent.into_path(), wire, &md);
        e.follow = opts.follow_links;
        let (dev, ino) = (md.version.dev, md.version.ino);
        if kind == Kind::File && md.nlink > 1 {
            match links.get(&(dev, ino)) {
                Some(first) => {
                    e.kind = Kind::HardLink;
                    e.size = 0;
                    e.link_to = Some(first.clone());
                }
                None => {
                    e.linked = true;
                    links.insert((dev, ino), e.name.clone());
                }
            }
        }
        Some(Found::Entry(e))
    }
}

#[cfg(test)]
impl Entry {
    /// A regular file of `size` bytes at `local`, sent as `name` (for
    /// tests of what comes after the walk).
    pub fn test_file(local: &Path, name: &str, size: u64) -> Entry {
        let version = crate::cache::Version {
            dev: 0,
            ino: 0,
            len: size,
            mtime: (0, 0),
            ctime: (0, 0),
        };
        // Mode bits without a type: no version kept (a file never walked).
        let md = Meta {
            mode: 0o644,
            nlink: 1,
            version,
        };
        let name = WireName::parse(name).expect("a valid name");
        entry(Kind::File, local.to_owned(), name, &md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_splits_as_parent_and_file_name_split_it() {
        for p in [
            "a/b",
            "/a/b",
            "a",
            "/a",
            "a/b/",
            "a//b",
            "a/./b",
            "a/.",
            "a/..",
            "./a",
            "../a",
            "/",
            ".",
            "..",
            "",
            "a/b/c.txt",
            "//a",
            "a b/c d",
            "d/.hidden",
        ] {
            let path = Path::new(p);
            let want = match (path.parent(), path.file_name()) {
                (Some(d), Some(n)) if d.as_os_str().is_empty() => Some((Path::new("."), n)),
                (Some(d), Some(n)) => Some((d, n)),
                _ => None,
            };
            assert_eq!(parent_and_name(path), want, "{p:?}");
        }
    }

    #[test]
    fn each_entry_is_named_by_its_directory_and_its_own_name() {
        let t = tempfile::tempdir().expect("tempdir");
        let top = t.path().join("top");
        for d in ["top/a/deep/er", "top/b", "top/c d"] {
            std::fs::create_dir_all(t.path().join(d)).expect("mkdir");
        }
        for f in [
            "top/a/deep/er/x",
            "top/a/y",
            "top/b/z",
            "top/c d/w",
            "top/v",
        ] {
            std::fs::write(t.path().join(f), b"").expect("write");
        }
        let w = walk(&[top], WalkOptions::default(), None).expect("walk");
        let names: Vec<String> = w
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(e.name.as_bytes()).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "top",
                "top/a",
                "top/a/deep",
                "top/a/deep/er",
                "top/a/deep/er/x",
                "top/a/y",
                "top/b",
                "top/b/z",
                "top/c d",
                "top/c d/w",
                "top/v"
            ]
        );
        for e in &w.entries {
            let local = e.local.strip_prefix(t.path()).expect("under the root");
            assert_eq!(local.as_os_str().as_bytes(), e.name.as_bytes());
        }
    }
}
