//! Turns the sender's command-line paths into the list of entries to offer:
//! a file is offered under its own name, a directory recursively under its
//! own name (empty directories included). Symlinks inside a directory are
//! skipped with a warning unless `--follow-links` (loops are detected and
//! skipped); non-regular files are skipped with a warning; names that cannot be sent
//! (not UTF-8, control characters) likewise. Missing sources are errors.

use crate::protocol::WireName;
use crate::sanitize::escape;
use anyhow::{bail, Context, Result};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// Whether an entry is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
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
}

/// The result of walking the sources.
#[derive(Debug, Default)]
pub struct Walk {
    /// Entries in offer order (a directory before what it holds).
    pub entries: Vec<Entry>,
    /// Things skipped on purpose (symlinks, FIFOs...), already phrased.
    pub warnings: Vec<String>,
    /// Things that should have been sent but could not be read.
    pub errors: Vec<String>,
}

impl Walk {
    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum()
    }
}

/// The name a command-line path is offered under: its last component.
fn root_name(path: &Path) -> Result<String> {
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
    name.into_string().map_err(|n| {
        anyhow::anyhow!(
            "cannot send {}: its name is not valid UTF-8",
            escape(&n.to_string_lossy())
        )
    })
}

fn entry(kind: Kind, local: &Path, name: WireName, md: &Metadata) -> Entry {
    Entry {
        kind,
        local: local.to_owned(),
        name,
        size: if kind == Kind::File { md.len() } else { 0 },
        mode: md.mode(),
        mtime_s: md.mtime(),
        mtime_ns: md.mtime_nsec().clamp(0, 999_999_999) as u32,
    }
}

/// Walks every source. A missing or unreadable source given on the command
/// line is an error before anything is sent; problems deeper in a tree are
/// collected in [`Walk::errors`] and the rest still goes.
pub fn walk(sources: &[PathBuf], follow_links: bool) -> Result<Walk> {
    let mut w = Walk::default();
    for src in sources {
        let md = std::fs::metadata(src)
            .with_context(|| format!("cannot read source {}", escape(&src.to_string_lossy())))?;
        let base = root_name(src)?;
        if md.is_file() {
            // Fail early on an unreadable file, before connecting.
            std::fs::File::open(src).with_context(|| {
                format!("cannot read source {}", escape(&src.to_string_lossy()))
            })?;
            let name = WireName::parse(&base).with_context(|| {
                format!(
                    "cannot send {}: unsendable name",
                    escape(&src.to_string_lossy())
                )
            })?;
            w.entries.push(entry(Kind::File, src, name, &md));
        } else if md.is_dir() {
            walk_dir(src, &base, follow_links, &mut w)?;
        } else {
            bail!(
                "cannot send {}: not a regular file or directory",
                escape(&src.to_string_lossy())
            );
        }
    }
    Ok(w)
}

fn walk_dir(root: &Path, base: &str, follow_links: bool, w: &mut Walk) -> Result<()> {
    let mut it = WalkDir::new(root)
        .follow_links(follow_links)
        .sort_by_file_name()
        .into_iter();
    while let Some(next) = it.next() {
        let dent = match next {
            Ok(d) => d,
            Err(e) if e.loop_ancestor().is_some() => {
                let p = e
                    .path()
                    .map_or_else(String::new, |p| p.to_string_lossy().into_owned());
                w.warnings
                    .push(format!("skipping {}: symlink loop", escape(&p)));
                continue;
            }
            Err(e) => {
                let p = e.path().map(|p| p.to_string_lossy().into_owned());
                w.errors.push(format!(
                    "cannot read {}: {}",
                    escape(&p.unwrap_or_else(|| root.to_string_lossy().into_owned())),
                    e.io_error()
                        .map_or_else(|| e.to_string(), |io| io.to_string())
                ));
                continue;
            }
        };
        let shown = escape(&dent.path().to_string_lossy());
        let rel = dent.path().strip_prefix(root).unwrap_or(dent.path());
        let mut name = base.to_owned();
        let mut ok = true;
        for c in rel.components() {
            match c.as_os_str().to_str() {
                Some(s) => {
                    name.push('/');
                    name.push_str(s);
                }
                None => ok = false,
            }
        }
        let is_dir = dent.file_type().is_dir();
        let wire = if ok {
            WireName::parse(&name).ok()
        } else {
            None
        };
        let Some(wire) = wire else {
            w.warnings
                .push(format!("skipping {shown}: its name cannot be sent safely"));
            if is_dir {
                it.skip_current_dir();
            }
            continue;
        };
        let ft = dent.file_type();
        if ft.is_symlink() {
            w.warnings.push(format!(
                "skipping symlink {shown} (use --follow-links to send what it points to)"
            ));
            continue;
        }
        if !ft.is_file() && !ft.is_dir() {
            w.warnings
                .push(format!("skipping {shown}: not a regular file or directory"));
            continue;
        }
        let md = match dent.metadata() {
            Ok(m) => m,
            Err(e) => {
                w.errors.push(format!("cannot read {shown}: {e}"));
                continue;
            }
        };
        let kind = if is_dir { Kind::Dir } else { Kind::File };
        w.entries.push(entry(kind, dent.path(), wire, &md));
    }
    Ok(())
}
