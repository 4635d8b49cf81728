//! `ftx check PATH... HOST:PORT`: does that receiver hold exactly these
//! files? The entries are offered as a push would offer them (with their
//! digests, from the digest cache where it knows them) but without
//! bodies, after a CHECK; the receiver answers each from its own cache or
//! by hashing, and names what only it has. One line per entry, in
//! rclone's `check --combined` form: `=` the same, `*` different, `+`
//! only here, `-` only there, `!` an error.

use crate::cache::DigestCache;
use crate::config::CheckConfig;
use crate::conn::Conn;
use crate::digest::Algo;
use crate::events::{Event, Events};
use crate::exit::{Exit, ExitError};
use crate::front::dial;
use crate::protocol::frame::{check_flags, file_flags};
use crate::protocol::{DirHeader, FileHeader, Frame, SkipReason};
use crate::sanitize::{escape, escape_bytes};
use crate::secure::Wire;
use crate::walk::{self, Entry, Kind};
use anyhow::{Context, Result};
use std::io::Write;

/// Offers in flight at most (they are small, and answered at once).
const WINDOW: usize = 1024;

/// Runs `ftx check`.
pub fn run(cfg: &CheckConfig) -> Result<Exit> {
    let w = walk::walk(&cfg.sources, walk::WalkOptions::default(), None)?;
    let cache = DigestCache::open(cfg.cache);
    let events = Events::new(cfg.json);
    let target = &cfg.target;
    let flags = if cfg.deep { check_flags::DEEP } else { 0 };
    let mut conn = dial::dial(
        target,
        cfg.dialing.connect_timeout,
        cfg.dialing.timeout,
        cfg.dialing.token.as_ref(),
        cfg.dialing.cipher,
        &Frame::Check { flags },
    )
    .map_err(|b| b.err)?;
    let entries = w.entries;
    // Each entry's verdict: its sign and, for an error, why.
    let mut states: Vec<Option<(char, String)>> = vec![None; entries.len()];
    let mut next = 0;
    let mut outstanding = 0usize;
    loop {
        while next < entries.len() && outstanding < WINDOW {
            let id = next as u32 + 1;
            match offer(&entries[next], id, cfg.hash, &cache) {
                Ok(f) => {
                    conn.queue(&f);
                    outstanding += 1;
                }
                Err(why) => states[next] = Some(('!', why)),
            }
            next += 1;
        }
        conn.flush()
            .with_context(|| format!("checking against {target}"))?;
        if outstanding == 0 {
            break;
        }
        let answer = conn
            .expect_frame()
            .with_context(|| format!("checking against {target}"))?;
        let (id, state) = match answer {
            Frame::Skip { id, reason } => {
                let sign = match reason {
                    r if r == SkipReason::Identical.code() => '=',
                    r if r == SkipReason::Missing.code() => '+',
                    _ => '*',
                };
                (id, (sign, String::new()))
            }
            Frame::Reject { id, message, .. } => (id, ('!', escape(&message))),
            other => return Err(unexpected(&mut conn, target, &other)),
        };
        let slot = (id as usize)
            .checked_sub(1)
            .and_then(|i| states.get_mut(i))
            .filter(|s| s.is_none());
        let Some(slot) = slot else {
            return Err(unexpected(
                &mut conn,
                target,
                &Frame::Skip { id, reason: 0 },
            ));
        };
        *slot = Some(state);
        outstanding -= 1;
    }
    conn.send(&Frame::End { flags: 0 })
        .with_context(|| format!("checking against {target}"))?;
    let mut only_there = Vec::new();
    loop {
        match conn
            .expect_frame()
            .with_context(|| format!("checking against {target}"))?
        {
            Frame::Left { path, .. } => only_there.push(path),
            Frame::Summary { .. } => break,
            other => return Err(unexpected(&mut conn, target, &other)),
        }
    }
    // The report: entries in walk order, then what only the receiver has.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut counts = [0u64; 5]; // = * + - !
    let mut print = |sign: char, name: &str, why: &str| -> Result<()> {
        let k = match sign {
            '=' => 0,
            '*' => 1,
            '+' => 2,
            '-' => 3,
            _ => 4,
        };
        counts[k] += 1;
        if sign == '!' && !why.is_empty() {
            eprintln!("ftx: {name}: {why}");
        }
        if events.enabled() {
            let state = ["same", "differs", "only_here", "only_there", "error"][k];
            events.emit(|| Event::Checked {
                path: name.to_owned(),
                state: state.into(),
            });
        } else {
            writeln!(out, "{sign} {name}").context("cannot write to stdout")?;
        }
        Ok(())
    };
    for l in &w.left {
        print('!', &l.path, &l.message)?;
    }
    for (e, s) in entries.iter().zip(&states) {
        let (sign, why) = s.clone().unwrap_or(('!', "no answer".into()));
        print(sign, &e.name.shown(), &why)?;
    }
    for p in &only_there {
        print('-', &escape_bytes(p), "")?;
    }
    out.flush().context("cannot write to stdout")?;
    let [same, differ, here, there, errors] = counts;
    let exit = if errors > 0 {
        Exit::Failure
    } else if differ + here + there > 0 {
        Exit::Differs
    } else {
        Exit::Success
    };
    if events.enabled() {
        events.emit(|| Event::CheckSummary {
            same,
            differs: differ,
            only_here: here,
            only_there: there,
            errors,
            exit_code: exit.code(),
        });
    } else if !cfg.quiet || exit != Exit::Success {
        eprintln!(
            "ftx: check against {target}: {same} the same, {differ} different, {here} only here, {there} only there, {errors} errors"
        );
    }
    Ok(exit)
}

fn unexpected(conn: &mut Conn<Wire>, target: &str, f: &Frame) -> anyhow::Error {
    if let Frame::Error { code, message } = f {
        return dial::peer_error(*code, message).context(format!("checking against {target}"));
    }
    conn.send_error(
        crate::protocol::ErrorCode::Protocol,
        format!("unexpected {} in a check", f.name()),
    );
    ExitError::new(
        Exit::Failure,
        format!(
            "{target} answered a check with {}: not an ftx receiver?",
            f.name()
        ),
    )
    .into()
}

/// The offer of one entry, without a body: a file with its digest (the
/// cache's, or hashed now), a directory, a symlink, a hard link.
fn offer(e: &Entry, id: u32, algo: Algo, cache: &DigestCache) -> Result<Frame, String> {
    let path = e.name.as_bytes().to_vec();
    match e.kind {
        Kind::Dir => Ok(Frame::Dir(DirHeader {
            id,
            mode: e.mode,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            path,
        })),
        Kind::Symlink => Ok(Frame::Symlink {
            id,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            path,
            target: e.target.clone(),
        }),
        Kind::HardLink => Ok(Frame::Link {
            id,
            path,
            target: e
                .link_to
                .as_ref()
                .map(|t| t.as_bytes().to_vec())
                .unwrap_or_default(),
        }),
        Kind::File => {
            let local = escape(&e.local.to_string_lossy());
            // The digest of the version the walk saw, known: no need to
            // open the file.
            let known = e
                .version
                .filter(|_| algo == Algo::Md5)
                .and_then(|v| cache.get_version(&v).map(|d| (v, d)));
            if let Some((v, d)) = known {
                return Ok(Frame::File(FileHeader {
                    id,
                    size: v.len,
                    mode: e.mode,
                    mtime_s: e.mtime_s,
                    mtime_ns: e.mtime_ns,
                    flags: 0,
                    md5: d,
                    path,
                }));
            }
            let file = e
                .open(rustix::fs::OFlags::NONBLOCK)
                .map_err(|err| format!("cannot read {local}: {err}"))?;
            let md = file
                .metadata()
                .map_err(|err| format!("cannot read {local}: {err}"))?;
            if !md.is_file() {
                return Err(format!("{local} is no longer a regular file"));
            }
            let md5 = cache
                .digest_of(algo, &file, &md, true)
                .map_err(|err| format!("cannot read {local}: {err}"))?;
            Ok(file_frame(id, &md, algo, md5, path))
        }
    }
}

fn file_frame(id: u32, md: &std::fs::Metadata, algo: Algo, md5: [u8; 16], path: Vec<u8>) -> Frame {
    use std::os::unix::fs::MetadataExt;
    Frame::File(FileHeader {
        id,
        size: md.len(),
        mode: md.mode(),
        mtime_s: md.mtime(),
        mtime_ns: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        flags: if algo == Algo::Xxh3 {
            file_flags::XXH3
        } else {
            0
        },
        md5,
        path,
    })
}
