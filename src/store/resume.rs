//! Resuming a partial: read its state file, check the partial's blocks
//! against their XXH3 at disk speed, and restart at the first block that
//! does not match, with the MD5 state saved before it.

use super::state::*;
use super::types::*;
use crate::digest::{Hasher, Md5Digest};
use cap_std::fs::{Dir, OpenOptions};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use xxhash_rust::xxh3::Xxh3;

pub(super) type Resumed = (File, Start);

/// Where writing (re)starts: the offset, the MD5 state there, and the
/// records of the blocks before it.
pub(crate) struct Start {
    pub(super) pos: u64,
    pub(super) md5: Hasher,
    pub(super) blocks: Vec<BlockRec>,
}

impl Start {
    pub(super) fn fresh() -> Start {
        Start {
            pos: 0,
            md5: Hasher::new(),
            blocks: Vec::new(),
        }
    }
}

/// `Ok(None)`: nothing to resume; `Err(why)`: something was there but is
/// not usable.
pub(super) fn try_resume(
    dir: &Dir,
    names: &Names,
    size: u64,
    md5: &Md5Digest,
) -> Result<Option<Resumed>, String> {
    let state = match dir.open_with(&names.state, no_follow(OpenOptions::new().read(true))) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match dir.symlink_metadata(&names.part) {
                Ok(_) => Err("partial without a state file".into()),
                Err(_) => Ok(None),
            };
        }
        Err(e) => return Err(format!("cannot open state file: {e}")),
    };
    let mut bytes = Vec::new();
    let max = 64 + (size / BLOCK + 1) * 256;
    state
        .into_std()
        .take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read state file: {e}"))?;
    let (s_size, s_md5, blocks) = decode_state(&bytes).map_err(str::to_owned)?;
    if s_size != size || &s_md5 != md5 {
        return Err("partial belongs to other content".into());
    }
    let mut file = dir
        .open_with(
            &names.part,
            no_follow(OpenOptions::new().read(true).write(true)),
        )
        .map_err(|e| format!("cannot open partial: {e}"))?
        .into_std();
    // Check the prefix block by block; resume at the first bad block.
    let mut good = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    'blocks: for rec in &blocks {
        let mut h = Xxh3::new();
        let mut left = BLOCK;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => break 'blocks,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break 'blocks,
            };
            h.update(&buf[..n]);
            left -= n as u64;
        }
        if h.digest() != rec.xxh3 {
            break;
        }
        good += 1;
    }
    let hasher = if good == 0 {
        Hasher::new()
    } else {
        Hasher::restore(&blocks[good - 1].md5_state).ok_or("state file holds a bad MD5 state")?
    };
    let offset = good as u64 * BLOCK;
    file.set_len(offset)
        .and_then(|()| file.seek(SeekFrom::Start(offset)).map(|_| ()))
        .map_err(|e| format!("cannot truncate partial: {e}"))?;
    let mut blocks = blocks;
    blocks.truncate(good);
    Ok(Some((
        file,
        Start {
            pos: offset,
            md5: hasher,
            blocks,
        },
    )))
}
