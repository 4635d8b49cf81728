//! The roots of `ftx serve` and the one way into them: a path of the
//! server's namespace (a root's name, then components) is checked like a
//! receiver checks names and resolved beneath its root with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`): no symlink
//! is followed and no mount crossed, whatever the path says. Both faces
//! (the ftx port and HTTP) come in here.

use crate::protocol::limits::{MAX_COMPONENT_LEN, MAX_NAME_LEN};
use crate::sanitize::{escape, escape_bytes};
use crate::walk::{self, Within};
use anyhow::{bail, Context, Result};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One root offered, under its name.
pub(crate) struct Root {
    /// The last component of the ROOT given.
    pub(crate) name: Vec<u8>,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// Held open: everything offered is opened beneath it.
    pub(crate) within: Arc<Within>,
    pub(crate) is_dir: bool,
}

/// Opens the roots: each must exist, be a directory or a regular file,
/// live on a real file system (not /proc, /sys and the like), and have a
/// name no other root has.
pub(crate) fn open_roots(given: &[PathBuf]) -> Result<Vec<Root>> {
    use rustix::fs::{Mode, OFlags};
    let mut roots: Vec<Root> = Vec::new();
    for g in given {
        let shown = escape(&g.to_string_lossy());
        let path = std::fs::canonicalize(g).with_context(|| format!("cannot serve {shown}"))?;
        let name = walk::root_name(g).with_context(|| format!("cannot serve {shown}"))?;
        let fd: OwnedFd = rustix::fs::open(&path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot serve {shown}"))?;
        let md = std::fs::metadata(&path).with_context(|| format!("cannot serve {shown}"))?;
        if !md.is_dir() && !md.is_file() {
            bail!("cannot serve {shown}: not a directory or a regular file");
        }
        let real = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot serve {shown}"))?;
        if let Some(kind) = pseudo_fs(&real) {
            bail!(
                "cannot serve {shown}: it is on {kind}, whose files are not what their sizes say"
            );
        }
        if roots.iter().any(|r| r.name == name) {
            bail!(
                "cannot serve {shown}: another root is also named '{}' (getters ask for roots by their last component)",
                escape_bytes(&name)
            );
        }
        // A file root: opened beneath its directory, as its own name.
        let (within_fd, base) = if md.is_dir() {
            (fd, path.clone())
        } else {
            let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
            let dfd = rustix::fs::open(
                &dir,
                OFlags::PATH | OFlags::CLOEXEC | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot serve {shown}"))?;
            (dfd, dir)
        };
        roots.push(Root {
            name,
            path: path.clone(),
            within: Arc::new(Within {
                fd: within_fd,
                base,
            }),
            is_dir: md.is_dir(),
        });
    }
    Ok(roots)
}

/// The kind of pseudo file system `fd` is on, if it is one.
pub(crate) fn pseudo_fs(fd: &OwnedFd) -> Option<&'static str> {
    let st = rustix::fs::fstatfs(fd).ok()?;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64;
    let known: [(u64, &str); 11] = [
        (0x9fa0, "procfs"),
        (0x6265_6572, "sysfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x0027_e0eb, "cgroupfs"),
        (0x6367_7270, "cgroup2fs"),
        (0x1cd1, "devpts"),
        (0xcafe_4a11, "bpffs"),
        (0x6265_6570, "configfs"),
        (0xde5e_81e4, "efivarfs"),
    ];
    known.iter().find(|(m, _)| *m == magic).map(|(_, k)| *k)
}

/// Resolves a path of a PULL: its first component names a root, the rest
/// is looked up beneath it one component at a time, following no symlink
/// and crossing no mount. The root and the local path of what it names,
/// or why it is not offered.
pub(crate) fn resolve<'r>(roots: &'r [Root], raw: &[u8]) -> Result<(&'r Root, PathBuf), String> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Err("not a path this server offers (empty or too long)".into());
    }
    if raw[0] == b'/' {
        return Err(
            "an absolute path: ask for ROOT/PATH, ROOT being the name of a served root".into(),
        );
    }
    let mut parts = raw.split(|b| *b == b'/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&[u8]> = parts.collect();
    for c in std::iter::once(first).chain(rest.iter().copied()) {
        if c.is_empty() || c == b"." || c == b".." {
            return Err("has an empty, '.' or '..' component".into());
        }
        if c.contains(&0) || c.len() > MAX_COMPONENT_LEN {
            return Err("has a NUL byte or a component over 255 bytes".into());
        }
    }
    let root = roots
        .iter()
        .find(|r| r.name == first)
        .ok_or_else(|| "no such root on this server (see `ftx ls HOST:PORT`)".to_owned())?;
    if rest.is_empty() {
        return Ok((root, root.path.clone()));
    }
    if !root.is_dir {
        return Err("the root is a file: nothing is beneath it".into());
    }
    let rel: PathBuf = rest
        .iter()
        .map(|c| std::ffi::OsStr::from_bytes(c))
        .collect();
    let fd = rustix::fs::openat2(
        &root.within.fd,
        &rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => {
            "no such file or directory".to_owned()
        }
        rustix::io::Errno::LOOP => "goes through a symlink: not followed".to_owned(),
        rustix::io::Errno::XDEV => "leaves the root (a symlink, or another file system)".to_owned(),
        e => format!("cannot open it: {e}"),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot read it: {e}"))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Directory => {}
        FileType::Symlink => {
            return Err("a symlink: served only inside a tree; ask for what it points to".into())
        }
        _ => return Err("not a regular file or directory (a FIFO, socket or device)".into()),
    }
    if let Some(kind) = rustix::fs::openat2(
        &root.within.fd,
        &rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
    .ok()
    .and_then(|f| pseudo_fs(&f))
    {
        return Err(format!("on {kind}: not offered"));
    }
    Ok((root, root.path.join(rel)))
}

impl Root {
    /// Opens what `rel` (components beneath the root; none: the root
    /// itself) names, for reading, with `flags` added: beneath the root,
    /// no symlink followed (the last component included), no mount
    /// crossed.
    pub(crate) fn open(
        &self,
        rel: &Path,
        flags: rustix::fs::OFlags,
    ) -> std::io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let rel = if self.is_dir {
            if rel.as_os_str().is_empty() {
                Path::new(".").to_owned()
            } else {
                rel.to_owned()
            }
        } else if rel.as_os_str().is_empty() {
            // A file root: its own name beneath its directory.
            PathBuf::from(self.path.file_name().unwrap_or_default())
        } else {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        };
        let fd = rustix::fs::openat2(
            &self.within.fd,
            &rel,
            flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
        )?;
        Ok(std::fs::File::from(fd))
    }
}

/// Checks the components of a path asked for (after the root's name), as
/// raw bytes: none empty, `.` or `..`, none with a NUL or a `/`, none over
/// 255 bytes, at most 4096 bytes in all. The path beneath the root, or
/// why it is refused.
pub(crate) fn beneath(components: &[Vec<u8>]) -> Result<PathBuf, String> {
    let total: usize = components.iter().map(|c| c.len() + 1).sum();
    if total > MAX_NAME_LEN {
        return Err("too long".into());
    }
    let mut rel = PathBuf::new();
    for c in components {
        if c.is_empty() || c == b"." || c == b".." {
            return Err("has an empty, '.' or '..' component".into());
        }
        if c.contains(&0) || c.contains(&b'/') || c.len() > MAX_COMPONENT_LEN {
            return Err("has a NUL byte, a '/' or a component over 255 bytes".into());
        }
        rel.push(std::ffi::OsStr::from_bytes(c));
    }
    Ok(rel)
}
