//! Resuming a partial: read its state file, check the partial's blocks
//! against their XXH3 at disk speed, and restart at the first block that
//! does not match, with the MD5 state saved before it.

use super::state::*;
use super::types::*;
use crate::digest::{Algo, Hasher, Md5Digest};
use cap_std::fs::{Dir, OpenOptions};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use xxhash_rust::xxh3::Xxh3;

/// A resumed partial, where writing starts, and whether its state was
/// written without the file's digest (so the resume must be confirmed by
/// the sender: see [`super::Opened::prefix`]).
pub(super) type Resumed = (File, Start, bool);

/// Where writing (re)starts: the offset, the MD5 state there, and the
/// records of the blocks before it.
pub(crate) struct Start {
    pub(super) pos: u64,
    pub(super) md5: Hasher,
    pub(super) blocks: Vec<BlockRec>,
    /// The check of the blocks before `pos`, still running: a partial not
    /// written to since its last checkpoint is resumed at once, and the
    /// file is placed only if its blocks check out (see [`try_resume`]).
    pub(super) pending: Option<PrefixCheck>,
}

/// A check of a resumed partial's blocks that runs beside the transfer:
/// true when every block matched its record.
pub(super) type PrefixCheck = std::thread::JoinHandle<bool>;

impl Start {
    pub(super) fn fresh(algo: Algo) -> Start {
        Start {
            pos: 0,
            md5: Hasher::with(algo),
            blocks: Vec::new(),
            pending: None,
        }
    }
}

/// What lies beside a target whose partial exists (and may be written
/// to: see [`super::prepare`]), as far as resuming goes.
#[derive(Debug)]
pub(crate) enum Found {
    /// The partial without its state file.
    PartialOnly,
    /// A state file, decoded (or why it could not be).
    State(Result<(u64, Md5Digest, Vec<BlockRec>), &'static str>),
}

/// The resume decision before any byte of the partial is read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Something is there but cannot be trusted: discard it (why), start at 0.
    Discard(String),
    /// A state for this very content: check the partial's blocks against
    /// these records and resume after the good ones.
    Check(Vec<BlockRec>),
}

/// Decides whether what was found can resume a file of `size` bytes and
/// MD5 `md5`. Pure: the caller reads the state file.
pub(crate) fn decide(found: Found, size: u64, md5: &Md5Digest) -> Resume {
    match found {
        Found::PartialOnly => Resume::Discard("partial without a state file".into()),
        Found::State(Err(why)) => Resume::Discard(why.into()),
        // A state written while the digest was still to follow the body
        // (zero) is for whatever content has these blocks: they are checked
        // against the partial as always, and the whole file's digest,
        // checked at the end, decides (a mismatch discards it and the
        // sender sends it all again).
        Found::State(Ok((s_size, s_md5, _)))
            if s_size != size || (&s_md5 != md5 && s_md5 != [0; 16]) =>
        {
            Resume::Discard("partial belongs to other content".into())
        }
        Found::State(Ok((_, _, blocks))) => Resume::Check(blocks),
    }
}

/// How many of `blocks`, from the first, pass `check` (called in order,
/// and not again after the first that fails): the partial resumes at that
/// many blocks.
pub(crate) fn good_prefix(blocks: &[BlockRec], check: impl FnMut(&BlockRec) -> bool) -> usize {
    blocks.iter().map(check).take_while(|ok| *ok).count()
}

/// Resumes the partial `file` (open, checked and locked by the caller)
/// from its checked prefix; `Err(why)` when it cannot be trusted at all.
pub(super) fn try_resume(
    dir: &Dir,
    names: &Names,
    file: File,
    size: u64,
    md5: &Md5Digest,
    algo: Algo,
) -> Result<Resumed, String> {
    let mut unknown = false;
    let mut written = None;
    let found = match dir.open_with(names.state(), no_follow(OpenOptions::new().read(true))) {
        Ok(state) => {
            let mut bytes = Vec::new();
            let max = 64 + (size / BLOCK + 1) * 256;
            state
                .into_std()
                .take(max + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read state file: {e}"))?;
            // Longer than any state of a file of this size: it describes a
            // larger file (the source was truncated since, say).
            let decoded = if bytes.len() as u64 > max {
                Err("partial belongs to other content (its state is for a larger file)")
            } else {
                decode_state(&bytes)
            };
            unknown = matches!(&decoded, Ok((_, d, _)) if *d == [0; 16]);
            if decoded.is_ok() {
                written = super::state::written(&bytes);
            }
            Found::State(decoded)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::PartialOnly,
        Err(e) => return Err(format!("cannot open state file: {e}")),
    };
    let blocks = match decide(found, size, md5) {
        Resume::Discard(why) => return Err(why),
        Resume::Check(blocks) => blocks,
    };
    // Not written to since its last checkpoint (the same version: any
    // write changes the ctime, which cannot be set back): resumed after
    // all its blocks at once, and checked beside the transfer; the file
    // is placed only if they check out. (What only a check can find is
    // then damage below the file system, which costs a resend from 0.)
    let unchanged = algo == Algo::Md5
        && written.is_some()
        && file
            .metadata()
            .is_ok_and(|md| Some(crate::cache::Version::of(&md)) == written);
    if let (true, Some(last)) = (unchanged, blocks.last()) {
        let hasher = Hasher::restore(&last.md5_state).ok_or("state file holds a bad MD5 state")?;
        let offset = blocks.len() as u64 * BLOCK;
        let reader = file
            .try_clone()
            .map_err(|e| format!("cannot read partial: {e}"))?;
        let recs = blocks.clone();
        let pending = std::thread::Builder::new()
            .name("ftx-check".into())
            .spawn(move || checked_blocks(&super::cold::ColdFile::new(reader), &recs) == recs.len())
            .map_err(|e| format!("cannot start the check of the partial: {e}"))?;
        let mut file = file;
        file.set_len(offset)
            .and_then(|()| file.seek(SeekFrom::Start(offset)).map(|_| ()))
            .map_err(|e| format!("cannot truncate partial: {e}"))?;
        return Ok((
            file,
            Start {
                pos: offset,
                md5: hasher,
                blocks,
                pending: Some(pending),
            },
            unknown,
        ));
    }
    // Else the prefix is checked now, block by block; the transfer
    // resumes at the first bad block. (Read with O_DIRECT unless it is in
    // the page cache, which the receiver's writes bypass: through the
    // cache, reading costs more CPU than MD5 on the development VM.)
    let cold = super::cold::ColdFile::new(file);
    let good = checked_blocks(&cold, &blocks);
    let mut file = cold.into_inner();
    let mut buf = vec![0u8; 1 << 20];
    let hasher = if good == 0 {
        Hasher::with(algo)
    } else if algo == Algo::Md5 {
        Hasher::restore(&blocks[good - 1].md5_state).ok_or("state file holds a bad MD5 state")?
    } else {
        // An XXH3 state is not saved: it is rebuilt from the checked prefix.
        let mut h = Hasher::with(algo);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read partial: {e}"))?;
        let mut left = good as u64 * BLOCK;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = file
                .read(&mut buf[..want])
                .map_err(|e| format!("cannot read partial: {e}"))?;
            if n == 0 {
                return Err("the partial shrank while it was checked".into());
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        h
    };
    let offset = good as u64 * BLOCK;
    file.set_len(offset)
        .and_then(|()| file.seek(SeekFrom::Start(offset)).map(|_| ()))
        .map_err(|e| format!("cannot truncate partial: {e}"))?;
    let mut blocks = blocks;
    blocks.truncate(good);
    Ok((
        file,
        Start {
            pos: offset,
            md5: hasher,
            blocks,
            pending: None,
        },
        unknown,
    ))
}

/// How many of `blocks`, from the first, the partial read by `cold` holds
/// (see [`good_prefix`]); the two halves on two threads (the peer waits
/// for the answer, or the transfer runs beside).
fn checked_blocks(cold: &super::cold::ColdFile, blocks: &[BlockRec]) -> usize {
    let check = |first: usize, recs: &[BlockRec]| {
        let mut buf = super::block::Buf::new();
        let mut at = first as u64 * BLOCK;
        good_prefix(recs, |rec| {
            let mut h = Xxh3::new();
            let end = at + BLOCK;
            while at < end {
                let k = usize::try_from(end - at)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                if cold.read_exact_at(&mut buf[..k], at).is_err() {
                    return false;
                }
                h.update(&buf[..k]);
                at += k as u64;
            }
            h.digest() == rec.xxh3
        })
    };
    let half = blocks.len() / 2;
    if half < 4 {
        return check(0, blocks);
    }
    std::thread::scope(|s| {
        let second = s.spawn(|| check(half, &blocks[half..]));
        let first = check(0, &blocks[..half]);
        // A bad block in the first half decides; else the second's.
        match (first == half, second.join()) {
            (true, Ok(more)) => half + more,
            _ => first,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(x: u64) -> BlockRec {
        BlockRec {
            xxh3: x,
            md5_state: vec![0; 4],
        }
    }

    #[test]
    fn resume_decision_branches() {
        let md5 = [7; 16];
        assert_eq!(
            decide(Found::PartialOnly, 10, &md5),
            Resume::Discard("partial without a state file".into())
        );
        assert_eq!(
            decide(Found::State(Err("state file is corrupt")), 10, &md5),
            Resume::Discard("state file is corrupt".into())
        );
        let other = Resume::Discard("partial belongs to other content".into());
        let state = |size, md5| Found::State(Ok((size, md5, vec![rec(1)])));
        assert_eq!(decide(state(11, md5), 10, &md5), other, "other size");
        assert_eq!(decide(state(10, [8; 16]), 10, &md5), other, "other MD5");
        assert_eq!(
            decide(state(10, md5), 10, &md5),
            Resume::Check(vec![rec(1)])
        );
    }

    #[test]
    fn resumes_after_the_good_prefix_only() {
        let blocks = [rec(1), rec(2), rec(3)];
        assert_eq!(good_prefix(&blocks, |_| true), 3);
        assert_eq!(good_prefix(&blocks, |_| false), 0);
        assert_eq!(good_prefix(&[], |_| true), 0);
        // A bad block ends the prefix, even if later ones would match; and
        // nothing after it is read.
        let mut asked = Vec::new();
        let good = good_prefix(&blocks, |r| {
            asked.push(r.xxh3);
            r.xxh3 != 2
        });
        assert_eq!(good, 1);
        assert_eq!(asked, [1, 2]);
    }
}
