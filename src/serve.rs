//! `ftx serve ROOT...`: the offering side driven from a listener. Every
//! connection goes through the same gate as `ftx recv`'s ([`crate::front`]:
//! handshake deadline, caps per address, token, encryption, busy and
//! flood behaviour); a getter's PULL names paths in the server's
//! namespace (a root's name, then a path inside it), each resolved
//! beneath its root without following a symlink or crossing a mount, and
//! what they name is offered as `ftx send` offers it ([`crate::send::offer_on`]).
//! Read-only: a PUSH is refused with ERROR 8, and nothing here writes.

use crate::config::{SendConfig, ServeConfig};
use crate::conn::Conn;
use crate::exit::Exit;
use crate::front::{refuse_busy, Gate, Host, Listening, Opened};
use crate::protocol::frame::pull_flags;
use crate::protocol::limits::{MAX_COMPONENT_LEN, MAX_NAME_LEN, MAX_SESSION_ENTRIES};
use crate::protocol::{ErrorCode, Frame};
use crate::sanitize::{escape, escape_bytes};
use crate::secure::Wire;
use crate::walk::{self, Entry, Kind, Within};
use anyhow::{bail, Context, Result};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One root offered, under its name.
struct Root {
    /// The last component of the ROOT given.
    name: Vec<u8>,
    /// Where it is.
    path: PathBuf,
    /// Held open: everything offered is opened beneath it.
    within: Arc<Within>,
    is_dir: bool,
}

/// Runs `ftx serve`: opens the roots, binds, says where it listens and
/// serves until killed.
pub fn run(cfg: &ServeConfig) -> Result<Exit> {
    let roots = open_roots(&cfg.roots)?;
    let listener = crate::net::listen(cfg.bind, cfg.port)?;
    if cfg.token.is_none() {
        eprintln!(
            "ftx: warning: no token (see ftx token): anyone on the network can read what is served"
        );
    }
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    serve_on(listener, cfg, &roots)
}

/// Serves getters on `listener`, which the caller bound, until `shutdown`.
fn serve_on(listener: std::net::TcpListener, cfg: &ServeConfig, roots: &[Root]) -> Result<Exit> {
    let host = Listening::new(cfg.timeout, cfg.token.clone(), cfg.cipher, cfg.max_sessions);
    let mut gate = Gate::new(&listener, &host)?;
    std::thread::scope(|sc| -> Result<()> {
        while let Some(a) = gate.next_admitted()? {
            let peer = a.peer;
            if let Err(n) = host.slots.take(peer, |l| host.log(l)) {
                host.log(&format!(
                    "{peer}: refused: already serving {n} sessions (--max-sessions)"
                ));
                refuse_busy(a.stream, n);
                continue;
            }
            let host = &host;
            let spawned = std::thread::Builder::new()
                .name(format!("serve {peer}"))
                .spawn_scoped(sc, move || {
                    let started = Instant::now();
                    match serve_one(a, cfg, roots) {
                        Ok(line) if !cfg.quiet => host.log(&format!(
                            "{peer}: {line} in {:.1} s",
                            started.elapsed().as_secs_f64()
                        )),
                        Ok(_) => {}
                        Err(e) => host.log(&format!("{peer}: {e:#}")),
                    }
                    host.slots.release();
                });
            if let Err(e) = spawned {
                host.slots.release();
                host.log(&format!("{peer}: cannot start a session thread: {e}"));
            }
        }
        Ok(())
    })?;
    Ok(Exit::Interrupted)
}

/// One getter's session: its PULL, then the offers. A line for the log.
fn serve_one(a: crate::front::Admitted, cfg: &ServeConfig, roots: &[Root]) -> Result<String> {
    let o = Opened::admitted(a).context("cannot set up the connection")?;
    let peer = o.peer;
    crate::net::tune(&o.stream, cfg.timeout).context("cannot set up the connection")?;
    o.wire.pace(cfg.timeout);
    let mut conn = Conn::with_buffered(o.wire, &o.leftover);
    let first = conn
        .expect_frame()
        .context("no request after the handshake")?;
    let (flags, part, parts, paths) = match first {
        Frame::Pull {
            flags,
            part,
            parts,
            paths,
        } => (flags, part, parts, paths),
        Frame::Push => refuse(
            &mut conn,
            ErrorCode::Refused,
            "this is `ftx serve`: it is read-only and takes no files (send them to an `ftx recv`)",
        )?,
        other => refuse(
            &mut conn,
            ErrorCode::Protocol,
            &format!("expected PULL after the handshake, got {}", other.name()),
        )?,
    };
    if flags & !pull_flags::KNOWN != 0 {
        let unknown = flags & !pull_flags::KNOWN;
        refuse(
            &mut conn,
            ErrorCode::Protocol,
            &format!("unsupported PULL flags {unknown:#010x}"),
        )?;
    }
    if part > parts {
        refuse(
            &mut conn,
            ErrorCode::Protocol,
            &format!("PULL part {part} of {parts}"),
        )?;
    }
    if conn.buffered() != 0 {
        refuse(
            &mut conn,
            ErrorCode::Protocol,
            "frames after PULL before an offer",
        )?;
    }
    // Every path first: one the server does not offer refuses the
    // request before anything is offered.
    let mut sources = Vec::new();
    if paths.is_empty() {
        sources.extend(roots.iter().map(|r| (r, r.path.clone())));
    }
    for p in &paths {
        match resolve(roots, p) {
            Ok(found) => sources.push(found),
            Err(why) => refuse(
                &mut conn,
                ErrorCode::Refused,
                &format!("{}: {why}", escape_bytes(p)),
            )?,
        }
    }
    let mut entries = Vec::new();
    let mut left = Vec::new();
    for (root, local) in sources {
        let opts = walk::WalkOptions {
            one_file_system: true,
            ..walk::WalkOptions::default()
        };
        let w = match walk::walk(std::slice::from_ref(&local), opts, None) {
            Ok(w) => w,
            Err(e) => refuse(&mut conn, ErrorCode::Refused, &format!("{e:#}"))?,
        };
        for mut e in w.entries {
            e.follow = false;
            e.within = Some(Arc::clone(&root.within));
            entries.push(e);
        }
        // Named by the getter's wire names, not this machine's paths.
        for l in w.left {
            let shown = l
                .path
                .strip_prefix(&escape(&root.path.to_string_lossy()))
                .map(|rest| format!("{}{rest}", escape_bytes(&root.name)))
                .unwrap_or(l.path);
            // The sender's hint (--skip-special) means nothing to a getter.
            let message = l
                .message
                .split(" (--")
                .next()
                .unwrap_or_default()
                .to_owned();
            left.push((shown, format!("{message}: not offered")));
        }
    }
    let entries = split(entries, part, parts);
    if entries.len() > MAX_SESSION_ENTRIES {
        refuse(
            &mut conn,
            ErrorCode::Refused,
            &format!(
                "{} entries asked for, more than {MAX_SESSION_ENTRIES} in one pull: fetch parts of the tree, or use -j",
                entries.len()
            ),
        )?;
    }
    // Leftovers of parts other than the last are named by the last part
    // only (each once).
    if parts == 0 || part == parts {
        for (path, message) in &left {
            conn.send(&Frame::Left {
                path: path.as_bytes().to_vec(),
                message: message.clone(),
            })
            .context("cannot answer")?;
        }
    }
    let list = flags & pull_flags::LIST != 0;
    let send_cfg = SendConfig {
        sources: Vec::new(),
        target: peer.to_string(),
        quiet: true,
        no_progress: true,
        verbose: false,
        timeout: cfg.timeout,
        connect_timeout: cfg.timeout,
        retry_for: std::time::Duration::ZERO,
        cache: cfg.cache,
        json: false,
        walk: walk::WalkOptions::default(),
        streams: 1,
        token: None,
        hash: if flags & pull_flags::XXH3 != 0 {
            crate::digest::Algo::Xxh3
        } else {
            crate::digest::Algo::Md5
        },
        cipher: None,
        stdin_name: None,
        attrs: if list {
            crate::xattr::Selection::default()
        } else {
            cfg.attrs
        },
        listen: None,
    };
    let n = entries.len();
    let served = crate::send::offer_on(&send_cfg, conn, entries, list)?;
    let what = if list { "listed" } else { "served" };
    Ok(format!(
        "{what} {n} entries: {} file(s) sent, {} skipped, {} failed, {} bytes",
        served.files, served.skipped, served.failed, served.bytes
    ))
}

/// Answers ERROR and ends the session (the error is its log line).
fn refuse<T>(conn: &mut Conn<Wire>, code: ErrorCode, msg: &str) -> Result<T> {
    let _ = conn.send(&Frame::Error {
        code: code.code(),
        message: msg.to_owned(),
    });
    bail!("refused: {msg}")
}

/// The entries of one part of a split pull (see PROTOCOL.md, "Splitting a
/// pull"): part `i < parts` holds the files and hard links whose name
/// (a hard link's target's) hashes to `i`; part `parts` the directories
/// and symlinks. `parts == 0`: everything.
fn split(entries: Vec<Entry>, part: u16, parts: u16) -> Vec<Entry> {
    if parts == 0 {
        return entries;
    }
    entries
        .into_iter()
        .filter(|e| match e.kind {
            Kind::Dir | Kind::Symlink => part == parts,
            Kind::HardLink => {
                let to = e.link_to.as_ref().map_or(&[][..], |t| t.as_bytes());
                part < parts && fnv1a(to) % u64::from(parts) == u64::from(part)
            }
            Kind::File => {
                part < parts && fnv1a(e.name.as_bytes()) % u64::from(parts) == u64::from(part)
            }
        })
        .collect()
}

/// FNV-1a, 64 bits: which part of a split pull a name belongs to.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Opens the roots: each must exist, be a directory or a regular file,
/// live on a real file system (not /proc, /sys and the like), and have a
/// name no other root has.
fn open_roots(given: &[PathBuf]) -> Result<Vec<Root>> {
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
fn pseudo_fs(fd: &OwnedFd) -> Option<&'static str> {
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
fn resolve<'r>(roots: &'r [Root], raw: &[u8]) -> Result<(&'r Root, PathBuf), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_entry_once() {
        let names: Vec<Vec<u8>> = (0..500).map(|i| format!("r/f{i}").into_bytes()).collect();
        let parts = 4u16;
        let mut seen = std::collections::HashMap::new();
        for n in &names {
            let hits = (0..parts)
                .filter(|&p| fnv1a(n) % u64::from(parts) == u64::from(p))
                .count();
            *seen.entry(hits).or_insert(0) += 1;
        }
        assert_eq!(seen.get(&1), Some(&500));
    }
}
