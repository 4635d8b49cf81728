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
use std::collections::{BTreeSet, HashMap, HashSet};
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
    let comps: Vec<&OsStr> = name.components().collect();
    let Some((last, parents)) = comps.split_last() else {
        return Found::Missing;
    };
    let parent_key = name.as_bytes()[..name.as_bytes().len() - last.len()].to_vec();
    if let Some((k, d)) = last_dir.as_ref() {
        if *k == parent_key {
            return look_in(d, last);
        }
    }
    let Ok(mut dir) = root.try_clone() else {
        return Found::Blocked;
    };
    for c in parents {
        dir = match dir.open_dir_nofollow(c) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
            Err(_) => return Found::Blocked,
        };
    }
    let found = look_in(&dir, last);
    *last_dir = Some((parent_key, dir));
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
    let mut tops: BTreeSet<Vec<u8>> = BTreeSet::new();
    // Files answered "same", by name: a LINK to one of them is the same
    // when it is that very file.
    let mut files: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    let mut last_dir: LastDir = None;
    loop {
        let frame = match conn.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => bail!("closed the connection before END"),
            Err(e) => return Err(super::report::fail_session(conn, e, "mid-check")),
        };
        let (id, path) = match &frame {
            Frame::File(h) => (h.id, h.path.clone()),
            Frame::Dir(h) => (h.id, h.path.clone()),
            Frame::Symlink { id, path, .. } | Frame::Link { id, path, .. } => (*id, path.clone()),
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
        let name = match WireName::from_bytes(&path) {
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
            tops.insert(top.to_vec());
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
    for top in &tops {
        let base = sh.cfg.out.join(OsStr::from_bytes(top));
        let is_dir = std::fs::symlink_metadata(&base).is_ok_and(|m| m.is_dir());
        if !is_dir {
            continue;
        }
        for e in walkdir::WalkDir::new(&base)
            .follow_links(false)
            .sort_by(crate::walk::by_name)
            .into_iter()
            .flatten()
        {
            let Ok(rel) = e.path().strip_prefix(&base) else {
                continue;
            };
            if rel.as_os_str().is_empty()
                || crate::protocol::name::reserved(e.file_name().as_bytes())
            {
                continue;
            }
            let mut name = top.clone();
            name.push(b'/');
            name.extend_from_slice(rel.as_os_str().as_bytes());
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

/// The state of an offered file that OUT holds something at.
#[allow(clippy::too_many_arguments)]
fn file_state(
    sh: &Shared,
    h: &FileHeader,
    dir: &Dir,
    last: &OsStr,
    md: &cap_std::fs::Metadata,
    deep: bool,
    files: &mut HashMap<Vec<u8>, (u64, u64)>,
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
        files.insert(name.as_bytes().to_vec(), (md.dev(), md.ino()));
        SkipReason::Identical
    } else {
        SkipReason::Differs
    }
}
