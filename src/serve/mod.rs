//! `ftx serve ROOT...`: the offering side driven from a listener. Every
//! connection goes through the same gate as `ftx recv`'s ([`crate::front`]:
//! handshake deadline, caps per address, token, encryption, busy and
//! flood behaviour); a getter's PULL names paths in the server's
//! namespace (a root's name, then a path inside it), each resolved
//! beneath its root without following a symlink or crossing a mount, and
//! what they name is offered as `ftx send` offers it ([`crate::send::offer_on`]).
//! Read-only: a PUSH is refused with ERROR 8, and nothing here writes.

mod conns;
mod digests;
mod http;
mod roots;

use crate::config::{SendConfig, ServeConfig};
use crate::conn::Conn;
use crate::exit::Exit;
use crate::front::{refuse_busy, Gate, Host, Listening, Opened};
use crate::protocol::frame::pull_flags;
use crate::protocol::limits::MAX_SESSION_ENTRIES;
use crate::protocol::{ErrorCode, Frame};
use crate::sanitize::{escape, escape_bytes};
use crate::secure::Wire;
use crate::walk::{self, Entry, Kind};
use anyhow::{bail, Context, Result};
use roots::{open_roots, resolve, Root};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Runs `ftx serve`: opens the roots, binds, says where it listens and
/// serves until killed.
pub fn run(cfg: &ServeConfig) -> Result<Exit> {
    let roots = Arc::new(open_roots(&cfg.roots)?);
    // One cache for every session and the HTTP face: its index of small
    // files is read once, not per session.
    let cache = crate::cache::DigestCache::open(cfg.cache);
    let listener = crate::net::listen(cfg.bind, cfg.port)?;
    let http = match cfg.http {
        Some((bind, port)) => Some(crate::net::listen(bind, port)?),
        None => None,
    };
    if cfg.token.is_none() {
        eprintln!(
            "ftx: warning: no token (see ftx token): anyone on the network can read what is served"
        );
    }
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let http_addr = match &http {
        Some(h) => Some(h.local_addr().context("cannot read the HTTP address")?),
        None => None,
    };
    if let Some(h) = http {
        let digests = Arc::new(digests::Digests::new(cache.clone()));
        index(Arc::clone(&roots), Arc::clone(&digests), cfg.quiet)?;
        http::spawn(
            h,
            http::Face {
                roots: Arc::clone(&roots),
                digests,
            },
        )?;
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}").context("cannot write to stdout")?;
        if let Some(h) = http_addr {
            writeln!(out, "http on {h}").context("cannot write to stdout")?;
        }
        out.flush().context("cannot write to stdout")?;
    }
    serve_on(listener, cfg, &roots, &cache)
}

/// In the background: the digest of every file under the roots (from the
/// digest cache, else hashed once), so that `/by-md5/HEX` finds a file
/// nobody asked for by name yet.
fn index(roots: Arc<Vec<Root>>, digests: Arc<digests::Digests>, quiet: bool) -> Result<()> {
    std::thread::Builder::new()
        .name("ftx-index".into())
        .spawn(move || {
            let started = Instant::now();
            for (idx, root) in roots.iter().enumerate() {
                let opts = walk::WalkOptions {
                    one_file_system: true,
                    ..walk::WalkOptions::default()
                };
                let Ok(w) = walk::walk(std::slice::from_ref(&root.path), opts, None) else {
                    continue;
                };
                for e in w.entries.iter().filter(|e| e.kind == Kind::File) {
                    let rel = e.local.strip_prefix(&root.path).unwrap_or(Path::new(""));
                    let Ok(f) = root.open(rel, rustix::fs::OFlags::NONBLOCK) else {
                        continue;
                    };
                    let Ok(md) = f.metadata() else { continue };
                    if !md.is_file() {
                        continue;
                    }
                    if let Ok(Some(d)) = digests.of(&f, &md) {
                        digests.note(d, idx, rel.to_owned());
                    }
                }
            }
            if !quiet {
                eprintln!(
                    "ftx: http: {} files indexed by MD5 in {:.1} s (/by-md5/HEX)",
                    digests.noted(),
                    started.elapsed().as_secs_f64()
                );
            }
        })
        .context("cannot start the indexing thread")?;
    Ok(())
}

/// Serves getters on `listener`, which the caller bound, until `shutdown`.
fn serve_on(
    listener: std::net::TcpListener,
    cfg: &ServeConfig,
    roots: &[Root],
    cache: &crate::cache::DigestCache,
) -> Result<Exit> {
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
                    match serve_one(a, cfg, roots, cache) {
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
fn serve_one(
    a: crate::front::Admitted,
    cfg: &ServeConfig,
    roots: &[Root],
    cache: &crate::cache::DigestCache,
) -> Result<String> {
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
    // Two walks, neither held: the first counts what this pull offers
    // (at most a session's worth) and collects what it leaves out, named
    // before any offer; the second feeds the session as it goes.
    let opts = walk::WalkOptions {
        one_file_system: true,
        ..walk::WalkOptions::default()
    };
    let mut count = 0usize;
    let mut left = Vec::new();
    for (root, local) in &sources {
        let walker = match walk::Walker::new(std::slice::from_ref(local), opts, None) {
            Ok(w) => w,
            Err(e) => refuse(&mut conn, ErrorCode::Refused, &format!("{e:#}"))?,
        };
        for found in walker {
            let l = match found {
                walk::Found::Entry(e) => {
                    count += usize::from(in_part(&e, part, parts));
                    continue;
                }
                walk::Found::Left(l) => l,
            };
            // Named by the getter's wire names, not this machine's paths.
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
    if count > MAX_SESSION_ENTRIES {
        refuse(
            &mut conn,
            ErrorCode::Refused,
            &format!(
                "{count} entries asked for, more than {MAX_SESSION_ENTRIES} in one pull: fetch parts of the tree, or use -j"
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
    let entries = sources
        .into_iter()
        .map(|(root, local)| (Arc::clone(&root.within), local))
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(move |(within, local)| {
            let walker = walk::Walker::new(std::slice::from_ref(&local), opts, None);
            // (A source gone since the first walk leaves it out, as one
            // read error: counted and logged, below.)
            let gone = walker.as_ref().err().map(|e| walk::Left {
                path: escape(&local.to_string_lossy()),
                reason: "read",
                message: format!("{e:#}"),
                asked: false,
            });
            let found = walker
                .into_iter()
                .flatten()
                .chain(gone.map(walk::Found::Left));
            found.filter_map(move |found| match found {
                walk::Found::Entry(mut e) if in_part(&e, part, parts) => {
                    e.follow = false;
                    e.within = Some(Arc::clone(&within));
                    Some(walk::Found::Entry(e))
                }
                walk::Found::Entry(_) => None,
                left => Some(left),
            })
        });
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
        manifest: None,
        session_entries: crate::protocol::limits::MAX_SESSION_ENTRIES,
    };
    let served = crate::send::offer_on(&send_cfg, conn, entries, list, cache)?;
    let what = if list { "listed" } else { "served" };
    // What the second walk could not offer beyond what the first named:
    // the tree changed in between (the getter is not told: a pull of a
    // tree being changed gets what is there when each entry is reached).
    let changed = match served.left.saturating_sub(left.len() as u64) {
        0 => String::new(),
        n => format!(", {n} gone or unreadable since the pull began"),
    };
    Ok(format!(
        "{what} {count} entries: {} file(s) sent, {} skipped, {} failed, {} bytes{changed}",
        served.files, served.skipped, served.failed, served.bytes
    ))
}

/// Answers ERROR and ends the session (the error is its log line).
fn refuse<T>(conn: &mut Conn<Wire>, code: ErrorCode, msg: &str) -> Result<T> {
    conn.send_error(code, msg.to_owned());
    bail!("refused: {msg}")
}

/// Whether `e` belongs to this part of a split pull (see PROTOCOL.md,
/// "Splitting a pull"): part `i < parts` holds the files and hard links
/// whose name (a hard link's target's) hashes to `i`; part `parts` the
/// directories and symlinks. `parts == 0`: everything.
fn in_part(e: &Entry, part: u16, parts: u16) -> bool {
    if parts == 0 {
        return true;
    }
    match e.kind {
        Kind::Dir | Kind::Symlink => part == parts,
        Kind::HardLink => {
            let to = e.link_to.as_ref().map_or(&[][..], |t| t.as_bytes());
            part < parts && fnv1a(to) % u64::from(parts) == u64::from(part)
        }
        Kind::File => {
            part < parts && fnv1a(e.name.as_bytes()) % u64::from(parts) == u64::from(part)
        }
    }
}

/// FNV-1a, 64 bits: which part of a split pull a name belongs to.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
