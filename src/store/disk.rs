//! The disk thread (`ftx-disk`) of a [`super::pipeline`]: appends to the
//! partial (with `O_DIRECT` for full buffers), keeps each block's XXH3 and
//! writes a checkpoint every 64 MiB and when the transfer is suspended.

use super::block::*;
use super::state::*;
use super::types::*;
use crate::delta::BlockDigest;
use crate::digest::Md5Digest;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use xxhash_rust::xxh3::Xxh3;

/// What the disk thread ends with.
pub(super) struct DiskEnd {
    pub(super) file: Option<File>,
    pub(super) err: Option<io::Error>,
    /// Bytes covered by the last state file written.
    pub(super) kept: u64,
    /// The delta block digests of the whole file, when it was written
    /// from 0 (see [`DeltaBlocks`]).
    pub(super) blocks: Option<(u64, Vec<BlockDigest>)>,
}

/// The digests a receiver sends in BLOCKS ([`crate::delta`]), computed
/// as a file is written from its first byte, so that a later delta
/// update of it finds them in the digest cache instead of reading it.
pub(super) struct DeltaBlocks {
    block: u64,
    total: u32,
    h: Xxh3,
    /// Bytes fed since the last whole block.
    fed: u64,
    digests: Vec<BlockDigest>,
}

impl DeltaBlocks {
    /// For a file of `size` bytes written from `pos`: only from 0, and
    /// only for a size a delta applies to.
    pub(super) fn new(size: u64, pos: u64) -> Option<DeltaBlocks> {
        let (block, total) = crate::delta::cut(size).filter(|_| pos == 0)?;
        Some(DeltaBlocks {
            block,
            total,
            h: Xxh3::new(),
            fed: 0,
            digests: Vec::with_capacity(total as usize),
        })
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.digests.len() < self.total as usize {
            let room = usize::try_from(self.block - self.fed).unwrap_or(usize::MAX);
            let (now, later) = data.split_at(room.min(data.len()));
            self.h.update(now);
            self.fed += now.len() as u64;
            if self.fed == self.block {
                self.digests.push(self.h.digest128().to_be_bytes());
                self.h.reset();
                self.fed = 0;
            }
            data = later;
        }
    }

    fn done(self) -> Option<(u64, Vec<BlockDigest>)> {
        (self.digests.len() == self.total as usize).then_some((self.block, self.digests))
    }
}

/// The disk side: file, records, checkpoints.
pub(super) struct Disk {
    pub(super) dir: Dir,
    pub(super) names: Names,
    pub(super) out: BufWriter<File>,
    pub(super) size: u64,
    pub(super) md5_expected: Md5Digest,
    pub(super) blocks: Vec<BlockRec>,
    pub(super) checkpointed: usize,
    /// Writes bypass the page cache (`O_DIRECT`).
    pub(super) direct: bool,
    /// A delta's unchanged bytes are cloned (until a clone fails).
    pub(super) reflink: bool,
    /// The file's delta block digests, as it is written.
    pub(super) delta: Option<DeltaBlocks>,
}

/// Clones `len` bytes of `src` at `at` into `dst` at the same offset
/// (`ioctl(FICLONERANGE)`): the two files share those extents until one
/// of them is written (Btrfs, XFS with reflink, bcachefs...).
fn clone_range(src: &File, dst: &File, at: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct FileCloneRange {
        src_fd: i64,
        src_offset: u64,
        src_length: u64,
        dest_offset: u64,
    }
    // _IOW(0x94, 13, struct file_clone_range)
    const FICLONERANGE: libc::c_ulong = 0x4020_940d;
    let arg = FileCloneRange {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: at,
        src_length: len,
        dest_offset: at,
    };
    // SAFETY: FICLONERANGE reads a `struct file_clone_range`, which `arg`
    // is (same layout, `repr(C)`), and which outlives the call; both
    // descriptors are owned by live `File`s.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONERANGE as _, &arg) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns `O_DIRECT` on or off for `file`; false if the system refuses.
pub(super) fn set_direct(file: &File, on: bool) -> bool {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let Ok(flags) = fcntl_getfl(file) else {
        return false;
    };
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    fcntl_setfl(file, flags).is_ok()
}

impl Disk {
    /// Appends `data` to the partial. Full, aligned buffers are written
    /// with `O_DIRECT`: on a virtual disk, copying into the page cache costs
    /// more CPU than MD5 (measured: 1 GiB in 3.9 s buffered + fdatasync, 1.1 s
    /// direct), and durability comes from the fsyncs all the same. The last,
    /// short buffer (and any system that refuses) goes through the
    /// `BufWriter` as usual.
    pub(super) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let aligned =
            data.len().is_multiple_of(ALIGN) && (data.as_ptr() as usize).is_multiple_of(ALIGN);
        if self.direct && !aligned {
            self.direct = !set_direct(self.out.get_ref(), false);
        }
        if !self.direct {
            return self.out.write_all(data);
        }
        self.out.flush()?;
        let mut done = 0;
        while done < data.len() {
            match self.out.get_mut().write(&data[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n % ALIGN == 0 => done += n,
                Ok(n) => {
                    // A short, unaligned write: finish without O_DIRECT.
                    done += n;
                    self.direct = !set_direct(self.out.get_ref(), false);
                    return self.out.write_all(&data[done..]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct = !set_direct(self.out.get_ref(), false);
                    return self.out.write_all(&data[done..]);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Puts `data`, read from `old` at `at` (the same offset as here), in
    /// the partial: a clone of `old`'s extents (`FICLONERANGE`, a reflink:
    /// no bytes written, none stored twice) where the file system can,
    /// else written like received bytes. Tried until it fails once.
    pub(super) fn same(&mut self, old: &File, at: u64, data: &[u8]) -> io::Result<()> {
        if self.reflink && data.len().is_multiple_of(ALIGN) && at.is_multiple_of(ALIGN as u64) {
            use std::io::{Seek, SeekFrom};
            self.out.flush()?;
            if clone_range(old, self.out.get_ref(), at, data.len() as u64).is_ok() {
                self.out
                    .get_mut()
                    .seek(SeekFrom::Current(data.len() as i64))?;
                return Ok(());
            }
            // Not here (ext4, another file system, a device): written.
            self.reflink = false;
        }
        self.append(data)
    }

    /// Skips `n` bytes of the partial (a hole): nothing is written there.
    pub(super) fn skip(&mut self, n: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.out.flush()?;
        let n = i64::try_from(n).map_err(io::Error::other)?;
        self.out.get_mut().seek(SeekFrom::Current(n))?;
        if self.direct && n % (ALIGN as i64) != 0 {
            // O_DIRECT needs aligned offsets from here on.
            self.direct = !set_direct(self.out.get_ref(), false);
        }
        Ok(())
    }

    pub(super) fn checkpoint(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        // What the partial is now: unchanged at a resume, it was not
        // written to since (see `resume.rs`).
        let written = self
            .out
            .get_ref()
            .metadata()
            .ok()
            .map(|m| crate::cache::Version::of(&m));
        let bytes = encode_state(
            self.size,
            &self.md5_expected,
            &self.blocks,
            written.as_ref(),
        );
        // A fresh, exclusive temporary: whatever sits at its name (a hard
        // link to a file elsewhere, say) is unlinked, never written to.
        match self.dir.remove_file(self.names.state_tmp()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut tmp = self
            .dir
            .open_with(
                self.names.state_tmp(),
                no_follow(OpenOptions::new().write(true).create_new(true)).mode(0o600),
            )?
            .into_std();
        tmp.write_all(&bytes)?;
        tmp.sync_data()?;
        self.dir
            .rename(self.names.state_tmp(), &self.dir, self.names.state())?;
        self.checkpointed = self.blocks.len();
        Ok(())
    }

    /// Runs until the hash thread hangs up. `final_checkpoint` is read at
    /// the end: set when the transfer is being suspended, not finished.
    pub(super) fn run(
        mut self,
        rx: std::sync::mpsc::Receiver<ToDisk>,
        pool: std::sync::mpsc::SyncSender<Buf>,
        final_checkpoint: &std::sync::atomic::AtomicBool,
    ) -> DiskEnd {
        let mut err: Option<io::Error> = None;
        // XXH3 of the blocks runs here, beside the disk writes, so the hash
        // thread only runs MD5, the slowest step.
        let mut xxh = Xxh3::new();
        let mut at = self.blocks.len() as u64 * BLOCK;
        let mut digests: VecDeque<u64> = VecDeque::new();
        for msg in rx {
            match msg {
                ToDisk::Data(buf, n, fill) => {
                    if err.is_none() {
                        let wrote = match fill {
                            Fill::Hole => self.skip(n as u64),
                            Fill::Data => self.append(&buf[..n]),
                            Fill::Old(old) => self.same(old.file(), at, &buf[..n]),
                        };
                        if let Err(e) = wrote {
                            err = Some(e);
                        }
                    }
                    if let Some(d) = self.delta.as_mut() {
                        d.feed(&buf[..n]);
                    }
                    by_block(&mut at, &buf[..n], |piece, ends| {
                        xxh.update(piece);
                        if ends {
                            digests.push_back(xxh.digest());
                            xxh.reset();
                        }
                    });
                    let _ = pool.send(buf);
                }
                ToDisk::Block(md5_state) => {
                    let Some(xxh3) = digests.pop_front() else {
                        err.get_or_insert_with(pipeline_broken);
                        continue;
                    };
                    let rec = BlockRec { xxh3, md5_state };
                    self.blocks.push(rec);
                    if err.is_none() {
                        // Start writing this block to disk now, so the
                        // checkpoint's fsync finds little left to do.
                        let start = (self.blocks.len() as u64 - 1) * BLOCK;
                        if let Err(e) = self.out.flush() {
                            err = Some(e);
                        } else if !self.direct {
                            start_writeback(self.out.get_ref(), start, BLOCK);
                        }
                    }
                    if err.is_none() && self.blocks.len() - self.checkpointed >= CHECKPOINT_BLOCKS {
                        if let Err(e) = self.checkpoint() {
                            err = Some(e);
                        }
                    }
                }
            }
        }
        if err.is_none() && final_checkpoint.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = self.checkpoint() {
                err = Some(e);
            }
        }
        let kept = self.checkpointed as u64 * BLOCK;
        if err.is_none() && !final_checkpoint.load(std::sync::atomic::Ordering::SeqCst) {
            // A file that ends in a hole: its length, without writing it.
            if let Err(e) = self
                .out
                .flush()
                .and_then(|()| self.out.get_ref().set_len(at))
            {
                err = Some(e);
            }
        }
        let blocks = self.delta.take().and_then(DeltaBlocks::done);
        let file = match self.out.into_inner() {
            Ok(f) => Some(f),
            Err(e) => {
                err.get_or_insert(e.into_error());
                None
            }
        };
        DiskEnd {
            file,
            err,
            kept,
            blocks,
        }
    }
}

/// Asks the kernel to start writing a range of `file` back to disk without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Durability
/// still comes from the fsync at checkpoints and at the end; this only
/// spreads the disk work over the transfer. Best effort.
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // owned by `file`, which outlives the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
    }
}
