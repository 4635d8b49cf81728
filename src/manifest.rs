//! Manifests: one line per file, `HEX  NAME`, in the format `md5sum -c`
//! reads (and `xxh128sum -c` for XXH3-128 digests), NAME being the name
//! a transfer gives the file (the source's last component, then the path
//! inside it), so that `cd OUT && md5sum -c MANIFEST` checks what
//! arrived. A name holding a backslash, a newline or a carriage return
//! is written as coreutils does: the line starts with `\` and those
//! characters are escaped (`\\`, `\n`, `\r`).
//!
//! `ftx manifest PATH...` writes one for files here; `ftx recv --manifest
//! FILE` (and `ftx get --manifest FILE`) one of what arrived verified or
//! was skipped as identical.

use crate::cache::DigestCache;
use crate::digest::{hex, Algo, Md5Digest};
use crate::exit::Exit;
use crate::sanitize::escape;
use crate::walk::{self, Kind};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// One line, newline included.
pub fn line(digest: &Md5Digest, name: &[u8]) -> Vec<u8> {
    let special = name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    let mut out = Vec::with_capacity(name.len() + 36);
    if special {
        out.push(b'\\');
    }
    out.extend_from_slice(hex(digest).as_bytes());
    out.extend_from_slice(b"  ");
    for &b in name {
        match b {
            b'\\' if special => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

/// A manifest being written as files arrive (`--manifest FILE`): lines
/// are written whole, one at a time, and flushed.
pub struct Writer {
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
    /// The digest of every name written, for the hard links to them.
    written: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Md5Digest>>,
}

impl Writer {
    /// Creates (or truncates) `path`.
    pub fn create(path: &std::path::Path) -> Result<Writer> {
        let file = std::fs::File::create(path).with_context(|| {
            format!(
                "cannot write the manifest {}",
                escape(&path.to_string_lossy())
            )
        })?;
        Ok(Writer {
            file: std::sync::Mutex::new(file),
            path: path.to_owned(),
            written: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Adds the line of a file. An error is said once per call, never
    /// hidden: the manifest would lack a file.
    pub fn add(&self, digest: &Md5Digest, name: &[u8]) -> std::io::Result<()> {
        if let Ok(mut w) = self.written.lock() {
            // Once per name: a later session (a retry, a pull's next
            // call) finds the file there again, identical.
            if w.insert(name.to_vec(), *digest) == Some(*digest) {
                return Ok(());
            }
        }
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("manifest lock poisoned"))?;
        f.write_all(&line(digest, name))
    }

    /// The digest written for `name`, if any (a hard link to it has it).
    pub fn digest_of(&self, name: &[u8]) -> Option<Md5Digest> {
        self.written.lock().ok().and_then(|w| w.get(name).copied())
    }

    /// Where it is written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// `ftx manifest PATH...`: the lines of every regular file (and hard
/// link) under the paths, on stdout or into `out`. Symlinks are left out
/// (a checker would follow them); anything that cannot be read is named
/// and makes the exit status 1.
pub fn run(
    paths: &[PathBuf],
    out: Option<&std::path::Path>,
    algo: Algo,
    cache: bool,
) -> Result<Exit> {
    let w = walk::walk(paths, walk::WalkOptions::default(), None)?;
    let cache = DigestCache::open(cache);
    let mut sink: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| {
                format!("cannot write the manifest {}", escape(&p.to_string_lossy()))
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut exit = Exit::Success;
    for l in &w.left {
        eprintln!("ftx: {}: {}", l.path, l.message);
        if !l.asked {
            exit = Exit::Failure;
        }
    }
    let mut digests = std::collections::HashMap::new();
    for e in &w.entries {
        let digest = match e.kind {
            Kind::File => {
                let d = std::fs::File::open(&e.local)
                    .and_then(|f| cache.digest_of(algo, &f, &f.metadata()?, true));
                match d {
                    Ok(d) => {
                        digests.insert(e.name.as_bytes().to_vec(), d);
                        d
                    }
                    Err(err) => {
                        eprintln!(
                            "ftx: cannot read {}: {err}",
                            escape(&e.local.to_string_lossy())
                        );
                        exit = Exit::Failure;
                        continue;
                    }
                }
            }
            Kind::HardLink => {
                let to = e.link_to.as_ref().map(|t| t.as_bytes().to_vec());
                match to.and_then(|t| digests.get(&t).copied()) {
                    Some(d) => d,
                    None => continue,
                }
            }
            Kind::Dir | Kind::Symlink => continue,
        };
        sink.write_all(&line(&digest, e.name.as_bytes()))
            .context("cannot write the manifest")?;
    }
    sink.flush().context("cannot write the manifest")?;
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_md5sum_writes() {
        let d = [0xab; 16];
        assert_eq!(
            line(&d, b"dir/a b.txt"),
            b"abababababababababababababababab  dir/a b.txt\n".to_vec()
        );
        assert_eq!(
            line(&d, b"x\\y\nz"),
            b"\\abababababababababababababababab  x\\\\y\\nz\n".to_vec()
        );
    }
}
