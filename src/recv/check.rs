//! A check session (`ftx check`, first frame CHECK): the dialer offers
//! its entries without bodies and the receiver says, for each, whether OUT
//! holds the same (SKIP 1), something different (SKIP 3) or nothing (SKIP
//! 4); at END it names what it holds under the offered trees that was not
//! offered (LEFT). Nothing is written, nothing is created; every lookup
//! goes one component at a time without following a symlink.

use super::offer::same_content;
use super::types::*;
use crate::conn::Conn;
use crate::net::Deadlined;
use crate::protocol::frame::file_flags;
use crate::protocol::limits::MAX_SESSION_ENTRIES;
use crate::protocol::{ErrorCode, FileHeader, Frame, Reject, SkipReason, WireName};
use anyhow::{bail, Result};
use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Where an offered name stands in OUT.
enum Found {
    /// Nothing there.
    Missing,
    /// A component on the way is not a directory (a file or a symlink).
    Blocked,
    /// Something there: its name and what it is (its directory is the
    /// one [`lookup`] left in [`LastDir`]).
    At(OsString, Box<cap_std::fs::Metadata>),
}

/// The directory an entry was last found in, by its wire path: entries
/// come in walk order, so most share their parent with the one before.
type LastDir = Option<(Vec<u8>, Dir)>;

fn lookup(root: &Dir, name: &WireName, last_dir: &mut LastDir) -> Found {
    let bytes = name.as_bytes();
    // The parent's wire path (with its `/`), and the last component.
    let cut = bytes.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    let (parent_key, last) = (&bytes[..cut], OsStr::from_bytes(&bytes[cut..]));
    if let Some((k, d)) = last_dir.as_ref() {
        if k.as_slice() == parent_key {
            return look_in(d, last);
        }
    }
    let Ok(mut dir) = root.try_clone() else {
        return Found::Blocked;
    };
    let parents = parent_key.split(|b| *b == b'/').filter(|c| !c.is_empty());
    for c in parents {
        dir = match dir.open_dir_nofollow(OsStr::from_bytes(c)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
            Err(_) => return Found::Blocked,
        };
    }
    let found = look_in(&dir, last);
    *last_dir = Some((parent_key.to_vec(), dir));
    found
}

fn look_in(dir: &Dir, last: &OsStr) -> Found {
    match dir.symlink_metadata(last) {
        Ok(md) => Found::At(last.to_os_string(), Box::new(md)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Missing,
        Err(_) => Found::Blocked,
    }
}

/// Serves one check session on `conn`.
pub(super) fn check(conn: &mut Conn<Deadlined>, sh: &Shared, deep: bool) -> Result<Stats> {
    let mut stats = Stats::default();
    // Names from the peer, so a randomly seeded hasher; foldhash's, as
    // hashbrown's default (SipHash cost a tenth of the session here).
    let mut offered: HashSet<Vec<u8>, foldhash::quality::RandomState> = HashSet::default();
    // The top-level names offered, with the listing of what OUT holds
    // under each, being made.
    let mut tops: BTreeMap<Vec<u8>, Option<Walker>> = BTreeMap::new();
    // Files answered "same", by name: a LINK to one of them is the same
    // when it is that very file.
    let mut files: Files = HashMap::default();
    let mut last_dir: LastDir = None;
    loop {
        let frame = match conn.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => bail!("closed the connection before END"),
            Err(e) => return Err(super::report::fail_session(conn, e, "mid-check")),
        };
        let (id, path) = match &frame {
            Frame::File(h) => (h.id, h.path.as_slice()),
            Frame::Dir(h) => (h.id, h.path.as_slice()),
            Frame::Symlink { id, path, .. } | Frame::Link { id, path, .. } => {
                (*id, path.as_slice())
            }
            Frame::Xattr { .. } => continue,
            Frame::End { .. } => break,
            other => {
                let msg = format!("unexpected {} in a check", other.name());
                conn.send_error(ErrorCode::Protocol, msg.clone());
                bail!("{msg}");
            }
        };
        if offered.len() >= MAX_SESSION_ENTRIES {
            let msg = format!("more than {MAX_SESSION_ENTRIES} entries in one check");
            conn.send_error(ErrorCode::Protocol, msg.clone());
            bail!("{msg}");
        }
        let name = match WireName::from_bytes(path) {
            Ok(n) => n,
            Err(e) => {
                stats.failed += 1;
                conn.queue(&Frame::Reject {
                    id,
                    code: Reject::UnsafeName.code(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        offered.insert(name.as_bytes().to_vec());
        if let Some(top) = name.as_bytes().split(|b| *b == b'/').next() {
            if !tops.contains_key(top) {
                // What OUT holds under it is listed meanwhile, on a thread
                // of its own (a few at a time), for the END.
                let walk = (tops.len() < WALKERS).then(|| {
                    let (base, top) = (sh.cfg.out.join(OsStr::from_bytes(top)), top.to_vec());
                    std::thread::Builder::new()
                        .name("ftx-check-walk".into())
                        .spawn(move || held_under(&base, &top))
                        .ok()
                });
                tops.insert(top.to_vec(), walk.flatten());
            }
        }
        let found = lookup(&sh.root, &name, &mut last_dir);
        // With `At`, the entry's directory is the one lookup left.
        let dir = last_dir.as_ref().map(|(_, d)| d);
        let reason = match (&frame, found, dir) {
            (_, Found::Missing, _) => SkipReason::Missing,
            (_, Found::Blocked, _) | (_, Found::At(..), None) => SkipReason::Differs,
            (Frame::File(h), Found::At(last, md), Some(dir)) => {
                file_state(sh, h, dir, &last, &md, deep, &mut files, &name)
            }
            (Frame::Dir(_), Found::At(_, md), _) if md.is_dir() => SkipReason::Identical,
            (Frame::Symlink { target, .. }, Found::At(last, md), Some(dir)) if md.is_symlink() => {
                match dir.read_link_contents(&last) {
                    Ok(t) if t.as_os_str().as_bytes() == target.as_slice() => SkipReason::Identical,
                    _ => SkipReason::Differs,
                }
            }
            (Frame::Link { target, .. }, Found::At(_, md), _) if md.is_file() => {
                use cap_std::fs::MetadataExt;
                match files.get(target.as_slice()) {
                    Some(&(dev, ino)) if (md.dev(), md.ino()) == (dev, ino) => {
                        SkipReason::Identical
                    }
                    _ => SkipReason::Differs,
                }
            }
            _ => SkipReason::Differs,
        };
        if reason == SkipReason::Identical {
            stats.ok += 1;
        } else {
            stats.failed += 1;
        }
        conn.queue(&Frame::Skip {
            id,
            reason: reason.code(),
        });
        if conn.buffered() == 0 {
            conn.flush()?;
        }
    }
    conn.flush()?;
    // What only this side has, under the trees offered.
    for (top, walker) in tops {
        let held = match walker.map(|w| w.join()) {
            Some(Ok(held)) => held,
            // Not started (too many tops), or the thread failed: now.
            _ => held_under(&sh.cfg.out.join(OsStr::from_bytes(&top)), &top),
        };
        for name in held {
            if !offered.contains(&name) {
                stats.failed += 1;
                conn.queue(&Frame::Left {
                    path: name,
                    message: "only on the receiver".into(),
                });
                // Bounded memory however much only this side has.
                if stats.failed % 256 == 0 {
                    conn.flush()?;
                }
            }
        }
    }
    conn.send(&Frame::Summary {
        files_ok: stats.ok,
        files_failed: stats.failed,
        bytes: 0,
    })?;
    Ok(stats)
}

/// Top-level names whose listing runs on a thread of its own at once; any
/// more are listed at END.
const WALKERS: usize = 4;

/// A listing of what OUT holds under a top-level name, being made.
type Walker = std::thread::JoinHandle<Vec<Vec<u8>>>;

/// Files answered "same" that have other names (hard links), by name.
type Files = HashMap<Vec<u8>, (u64, u64), foldhash::quality::RandomState>;

/// The wire names of everything under `base` (OUT's `top`), in walk
/// order, without following a symlink and without the receiver's own
/// working files; nothing if `base` is not a directory.
fn held_under(base: &std::path::Path, top: &[u8]) -> Vec<Vec<u8>> {
    let is_dir = std::fs::symlink_metadata(base).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Vec::new();
    }
    let mut held = Vec::new();
    for e in walkdir::WalkDir::new(base)
        .follow_links(false)
        .sort_by(crate::walk::by_name)
        .into_iter()
        .flatten()
    {
        let Ok(rel) = e.path().strip_prefix(base) else {
            continue;
        };
        if rel.as_os_str().is_empty() || crate::protocol::name::reserved(e.file_name().as_bytes()) {
            continue;
        }
        let rel = rel.as_os_str().as_bytes();
        let mut name = Vec::with_capacity(top.len() + 1 + rel.len());
        name.extend_from_slice(top);
        name.push(b'/');
        name.extend_from_slice(rel);
        held.push(name);
    }
    held
}

/// The state of an offered file that OUT holds something at.
#[allow(clippy::too_many_arguments)]
fn file_state(
    sh: &Shared,
    h: &FileHeader,
    dir: &Dir,
    last: &OsStr,
    md: &cap_std::fs::Metadata,
    deep: bool,
    files: &mut Files,
    name: &WireName,
) -> SkipReason {
    use cap_std::fs::MetadataExt;
    if !md.is_file() || md.len() != h.size || h.flags & file_flags::DIGEST_FOLLOWS != 0 {
        return SkipReason::Differs;
    }
    // This very version's digest, known: no need to open the file.
    let known = (!deep && file_flags::algo(h.flags) == crate::digest::Algo::Md5)
        .then(|| sh.digests.get_version(&crate::cache::Version::of_cap(md)))
        .flatten();
    let same = match known {
        Some(d) => d == h.md5,
        None => same_content(sh, dir, last, h, !deep),
    };
    if same {
        // Only a file with other names can be the target of a LINK that
        // is the same here.
        if md.nlink() > 1 {
            files.insert(name.as_bytes().to_vec(), (md.dev(), md.ino()));
        }
        SkipReason::Identical
    } else {
        SkipReason::Differs
    }
}
