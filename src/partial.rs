//! Checkpointed partial files on the receiver, so an interrupted transfer
//! resumes instead of restarting.
//!
//! Beside the target `NAME`, the receiver keeps the data in
//! `.NAME.ftx-part` and a small state file `.NAME.ftx-state`:
//!
//! ```text
//! magic "FTXPART1" | size:u64 | md5:[16] | block:u64 | nblocks:u32 | state_len:u16
//! nblocks × ( xxh3:u64 | md5_state:[state_len] )     one per full block, in order
//! trailer: xxh3_64 of every byte before it
//! ```
//!
//! Each record holds the XXH3 of one 4 MiB block of the partial and the MD5
//! state after that block. A resume never trusts bytes it has not checked:
//! the partial's blocks are re-read and compared with their XXH3 (at disk
//! speed), and the transfer resumes at the first block that does not match,
//! continuing the MD5 from the state saved before it. A state file that is
//! garbage, truncated, for other content, or a partial shorter than its
//! records: everything is discarded and the file starts from 0.
//!
//! The state is replaced atomically (write a temporary, fsync, rename) at
//! least every 64 MiB, after the data it describes was flushed and fsynced.

use crate::digest::{hex, Hasher, Md5Digest};
use crate::protocol::limits::MAX_COMPONENT_LEN;
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Bytes per checked block.
pub const BLOCK: u64 = 4 << 20;
/// Blocks between two checkpoints (64 MiB).
pub const CHECKPOINT_BLOCKS: usize = 16;
/// Write buffer in front of the partial file.
const WRITE_BUF: usize = 1 << 20;
const MAGIC: &[u8; 8] = b"FTXPART1";

/// Names of the partial and state files for target `last`. When
/// `.last.ftx-state.tmp` would not fit in a component, the MD5 of the name
/// stands in for it.
#[derive(Debug, Clone)]
pub struct Names {
    /// The data: `.NAME.ftx-part`.
    pub part: String,
    /// The state: `.NAME.ftx-state`.
    pub state: String,
    /// Temporary for atomic state replacement.
    pub state_tmp: String,
}

impl Names {
    /// The names beside target `last`.
    ///
    /// The hashed form uses other suffixes (`.ftx-hpart`, `.ftx-hstate`), so
    /// the partial of a long name can never be the partial of a short name
    /// that happens to be the hex digest. Names ending in any of these
    /// suffixes are refused on the wire ([`crate::protocol::name`]), so a
    /// peer cannot plant a partial or a state file either.
    pub fn for_target(last: &str) -> Names {
        if format!(".{last}.ftx-state.tmp").len() <= MAX_COMPONENT_LEN {
            return Names {
                part: format!(".{last}.ftx-part"),
                state: format!(".{last}.ftx-state"),
                state_tmp: format!(".{last}.ftx-state.tmp"),
            };
        }
        let mut h = Hasher::new();
        h.update(last.as_bytes());
        let stem = hex(&h.finish());
        Names {
            part: format!(".{stem}.ftx-hpart"),
            state: format!(".{stem}.ftx-hstate"),
            state_tmp: format!(".{stem}.ftx-hstate.tmp"),
        }
    }

    /// Removes the partial and its state (best effort).
    pub fn discard(&self, dir: &Dir) {
        let _ = dir.remove_file(&self.part);
        let _ = dir.remove_file(&self.state);
        let _ = dir.remove_file(&self.state_tmp);
    }
}

/// One checked block: its XXH3 and the MD5 state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockRec {
    xxh3: u64,
    md5_state: Vec<u8>,
}

fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.follow(FollowSymlinks::No)
}

/// Encodes a state file.
fn encode_state(size: u64, md5: &Md5Digest, blocks: &[BlockRec]) -> Vec<u8> {
    let state_len = blocks.first().map_or(0, |b| b.md5_state.len());
    let mut v = Vec::with_capacity(48 + blocks.len() * (8 + state_len));
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(md5);
    v.extend_from_slice(&BLOCK.to_be_bytes());
    v.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
    v.extend_from_slice(&(state_len as u16).to_be_bytes());
    for b in blocks {
        v.extend_from_slice(&b.xxh3.to_be_bytes());
        v.extend_from_slice(&b.md5_state);
    }
    let trailer = xxh3_64(&v);
    v.extend_from_slice(&trailer.to_be_bytes());
    v
}

/// Decodes a state file; `Err` says why it cannot be trusted.
fn decode_state(b: &[u8]) -> Result<(u64, Md5Digest, Vec<BlockRec>), &'static str> {
    const HEAD: usize = 8 + 8 + 16 + 8 + 4 + 2;
    if b.len() < HEAD + 8 {
        return Err("state file is truncated");
    }
    let (body, trailer) = b.split_at(b.len() - 8);
    let mut t = [0u8; 8];
    t.copy_from_slice(trailer);
    if xxh3_64(body) != u64::from_be_bytes(t) || &body[..8] != MAGIC {
        return Err("state file is corrupt");
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let size = u64_at(8);
    let mut md5 = [0u8; 16];
    md5.copy_from_slice(&body[16..32]);
    if u64_at(32) != BLOCK {
        return Err("state file uses another block size");
    }
    let n = u32::from_be_bytes([body[40], body[41], body[42], body[43]]) as usize;
    let state_len = u16::from_be_bytes([body[44], body[45]]) as usize;
    let rec = 8 + state_len;
    if (body.len() - HEAD) != n.saturating_mul(rec) {
        return Err("state file has the wrong length");
    }
    if (n as u64).saturating_mul(BLOCK) > size {
        return Err("state file covers more than the file");
    }
    let blocks = body[HEAD..]
        .chunks_exact(rec)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            BlockRec {
                xxh3: u64::from_be_bytes(a),
                md5_state: c[8..].to_vec(),
            }
        })
        .collect();
    Ok((size, md5, blocks))
}

/// Where a (re)started transfer begins.
pub struct Opened {
    /// The partial file, positioned at `offset`.
    pub writer: PartialWriter,
    /// Bytes already verified on disk; the sender sends from here.
    pub offset: u64,
    /// Why an earlier partial was discarded, if one was.
    pub discarded: Option<String>,
}

/// Opens the partial for a file of `size` bytes and MD5 `md5` in `dir`,
/// resuming from a checked prefix when an earlier partial for the same
/// content is there, else starting from 0. Never follows a symlink.
pub fn open(dir: &Dir, names: &Names, size: u64, md5: Md5Digest) -> io::Result<Opened> {
    // The usual case first: no partial there, so nothing to resume. One
    // exclusive create instead of looking for a state file and a partial.
    let fresh = dir.open_with(
        &names.part,
        no_follow(OpenOptions::new().write(true).read(true).create_new(true)).mode(0o600),
    );
    match fresh {
        Ok(file) => {
            // A state file without its partial describes nothing; it must
            // not be mistaken for this partial's. (Only files of a block or
            // more ever checkpoint.)
            let orphan = size >= BLOCK && dir.remove_file(&names.state).is_ok();
            return Ok(Opened {
                writer: PartialWriter::new(dir, names, file.into_std(), size, md5, Start::fresh())?,
                offset: 0,
                discarded: orphan.then(|| "a state file without its partial".to_owned()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut discarded = None;
    match try_resume(dir, names, size, &md5) {
        Ok(Some((file, start))) => {
            let offset = start.pos;
            return Ok(Opened {
                writer: PartialWriter::new(dir, names, file, size, md5, start)?,
                offset,
                discarded: None,
            });
        }
        // Nothing there: nothing to clear.
        Ok(None) => {}
        Err(why) => {
            discarded = Some(why);
            names.discard(dir);
        }
    }
    let file = dir
        .open_with(
            &names.part,
            no_follow(
                OpenOptions::new()
                    .write(true)
                    .read(true)
                    .create(true)
                    .truncate(true),
            )
            .mode(0o600),
        )?
        .into_std();
    Ok(Opened {
        writer: PartialWriter::new(dir, names, file, size, md5, Start::fresh())?,
        offset: 0,
        discarded,
    })
}

type Resumed = (File, Start);

/// Where writing (re)starts: the offset, the MD5 state there, and the
/// records of the blocks before it.
struct Start {
    pos: u64,
    md5: Hasher,
    blocks: Vec<BlockRec>,
}

impl Start {
    fn fresh() -> Start {
        Start {
            pos: 0,
            md5: Hasher::new(),
            blocks: Vec::new(),
        }
    }
}

/// `Ok(None)`: nothing to resume; `Err(why)`: something was there but is
/// not usable.
fn try_resume(
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

/// Bytes per pipeline buffer.
const PIPE_BUF: usize = 1 << 20;
/// Buffers in flight between the socket, the hasher and the disk: bounds the
/// memory of one transfer to `PIPE_DEPTH` MiB.
const PIPE_DEPTH: usize = 8;

/// Alignment of pipeline buffers, so the disk thread can write them with
/// `O_DIRECT`.
const ALIGN: usize = 4096;

/// A [`PIPE_BUF`]-byte buffer whose start is [`ALIGN`]-aligned.
pub struct Buf {
    raw: Vec<u8>,
    off: usize,
}

impl Buf {
    fn new() -> Buf {
        let raw = vec![0u8; PIPE_BUF + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Buf { raw, off }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + PIPE_BUF]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + PIPE_BUF]
    }
}

/// What the hash thread hands to the disk thread, in stream order.
enum ToDisk {
    /// Bytes to append (the buffer and how much of it is used).
    Data(Buf, usize),
    /// A block ended: its record, once the bytes before it are written.
    /// A block ended; its MD5 state (the disk thread has its XXH3).
    Block(Vec<u8>),
}

/// Writes a large file's body into its partial as a pipeline: the caller (the
/// socket reader) fills 1 MiB buffers, a hash thread runs MD5 and the
/// per-block XXH3, and a disk thread writes through a `BufWriter` and
/// checkpoints every 64 MiB. MD5, the slowest step, thus runs in parallel
/// with socket reads, disk writes and fsyncs.
pub struct Pipeline {
    fill: Option<Buf>,
    filled: usize,
    pos: u64,
    to_hash: Option<std::sync::mpsc::SyncSender<(Buf, usize)>>,
    pool: std::sync::mpsc::Receiver<Buf>,
    allocated: usize,
    hash_thread: Option<std::thread::JoinHandle<Hasher>>,
    disk_thread: Option<std::thread::JoinHandle<DiskEnd>>,
    disk_ctl: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What the disk thread ends with.
struct DiskEnd {
    file: Option<File>,
    err: Option<io::Error>,
    /// Bytes covered by the last state file written.
    kept: u64,
}

/// The disk side: file, records, checkpoints.
struct Disk {
    dir: Dir,
    names: Names,
    out: BufWriter<File>,
    size: u64,
    md5_expected: Md5Digest,
    blocks: Vec<BlockRec>,
    checkpointed: usize,
    /// Writes bypass the page cache (`O_DIRECT`).
    direct: bool,
}

/// Cuts `data`, which starts at stream offset `*at`, at block boundaries:
/// `piece(bytes, ends_a_block)` for each part, in order; advances `*at`.
/// The hash thread (MD5 states) and the disk thread (XXH3) must cut the
/// stream at exactly the same places, so both use this.
fn by_block(at: &mut u64, mut data: &[u8], mut piece: impl FnMut(&[u8], bool)) {
    while !data.is_empty() {
        let room = usize::try_from(BLOCK - *at % BLOCK).unwrap_or(usize::MAX);
        let (now, later) = data.split_at(room.min(data.len()));
        *at += now.len() as u64;
        piece(now, at.is_multiple_of(BLOCK));
        data = later;
    }
}

/// Turns `O_DIRECT` on or off for `file`; false if the system refuses.
fn set_direct(file: &File, on: bool) -> bool {
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
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
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

    fn checkpoint(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        let bytes = encode_state(self.size, &self.md5_expected, &self.blocks);
        let mut tmp = self
            .dir
            .open_with(
                &self.names.state_tmp,
                no_follow(OpenOptions::new().write(true).create(true).truncate(true)).mode(0o600),
            )?
            .into_std();
        tmp.write_all(&bytes)?;
        tmp.sync_data()?;
        self.dir
            .rename(&self.names.state_tmp, &self.dir, &self.names.state)?;
        self.checkpointed = self.blocks.len();
        Ok(())
    }

    /// Runs until the hash thread hangs up. `final_checkpoint` is read at
    /// the end: set when the transfer is being suspended, not finished.
    fn run(
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
                ToDisk::Data(buf, n) => {
                    if err.is_none() {
                        if let Err(e) = self.append(&buf[..n]) {
                            err = Some(e);
                        }
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
        let file = match self.out.into_inner() {
            Ok(f) => Some(f),
            Err(e) => {
                err.get_or_insert(e.into_error());
                None
            }
        };
        DiskEnd { file, err, kept }
    }
}

impl Pipeline {
    fn new(
        dir: &Dir,
        names: &Names,
        file: File,
        size: u64,
        md5_expected: Md5Digest,
        start: Start,
    ) -> io::Result<Self> {
        let Start {
            pos,
            mut md5,
            blocks,
        } = start;
        use std::sync::mpsc::sync_channel;
        let checkpointed = blocks.len();
        // O_DIRECT needs an aligned file offset: a resume starts at a block
        // boundary, a new partial at 0.
        let direct = pos.is_multiple_of(ALIGN as u64) && set_direct(&file, true);
        let disk = Disk {
            dir: dir.try_clone()?,
            names: names.clone(),
            out: BufWriter::with_capacity(WRITE_BUF, file),
            size,
            md5_expected,
            blocks,
            checkpointed,
            direct,
        };
        let (to_hash, hash_rx) = sync_channel::<(Buf, usize)>(PIPE_DEPTH);
        let (to_disk, disk_rx) = sync_channel::<ToDisk>(2 * PIPE_DEPTH);
        let (pool_tx, pool) = sync_channel::<Buf>(PIPE_DEPTH);
        let disk_ctl = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ctl = std::sync::Arc::clone(&disk_ctl);
        let disk_thread = std::thread::Builder::new()
            .name("ftx-disk".into())
            .spawn(move || disk.run(disk_rx, pool_tx, &ctl))?;
        let hash_thread = std::thread::Builder::new()
            .name("ftx-hash".into())
            .spawn(move || {
                let mut at = pos;
                for (buf, n) in hash_rx {
                    let mut ended = Vec::new();
                    by_block(&mut at, &buf[..n], |piece, ends| {
                        md5.update(piece);
                        if ends {
                            ended.push(md5.save());
                        }
                    });
                    if to_disk.send(ToDisk::Data(buf, n)).is_err() {
                        break;
                    }
                    for state in ended {
                        if to_disk.send(ToDisk::Block(state)).is_err() {
                            break;
                        }
                    }
                }
                md5
            })?;
        Ok(Pipeline {
            fill: None,
            filled: 0,
            pos,
            to_hash: Some(to_hash),
            pool,
            allocated: 0,
            hash_thread: Some(hash_thread),
            disk_thread: Some(disk_thread),
            disk_ctl,
        })
    }

    /// A free buffer: recycled, new while under the pipeline depth, else
    /// the next one the disk thread gives back.
    fn next_buf(&mut self) -> io::Result<Buf> {
        if let Ok(b) = self.pool.try_recv() {
            return Ok(b);
        }
        if self.allocated < PIPE_DEPTH {
            self.allocated += 1;
            return Ok(Buf::new());
        }
        self.pool.recv().map_err(|_| pipeline_broken())
    }

    fn push(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let Some(buf) = self.fill.take() else {
            return Ok(());
        };
        let n = std::mem::replace(&mut self.filled, 0);
        match &self.to_hash {
            Some(tx) => tx.send((buf, n)).map_err(|_| pipeline_broken()),
            None => Err(pipeline_broken()),
        }
    }

    /// Appends body bytes.
    pub fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            if self.fill.is_none() {
                self.fill = Some(self.next_buf()?);
            }
            let filled = self.filled;
            let Some(buf) = self.fill.as_mut() else {
                return Err(pipeline_broken());
            };
            let n = (PIPE_BUF - filled).min(chunk.len());
            buf[filled..filled + n].copy_from_slice(&chunk[..n]);
            self.filled += n;
            self.pos += n as u64;
            chunk = &chunk[n..];
            if self.filled == PIPE_BUF {
                self.push()?;
            }
        }
        Ok(())
    }

    /// Bytes written so far (including the resumed prefix).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Drains the pipeline; `checkpoint` asks the disk thread for a last
    /// checkpoint.
    fn close(&mut self, checkpoint: bool) -> (Option<Hasher>, DiskEnd) {
        let pushed = self.push();
        self.disk_ctl.store(
            checkpoint && pushed.is_ok(),
            std::sync::atomic::Ordering::SeqCst,
        );
        self.to_hash = None;
        let md5 = self.hash_thread.take().and_then(|t| t.join().ok());
        let end = self
            .disk_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(DiskEnd {
                file: None,
                err: Some(pipeline_broken()),
                kept: 0,
            });
        (md5, end)
    }

    /// Stops here and checkpoints what arrived, for a later resume. Returns
    /// the offset a resume will start from.
    pub fn suspend(mut self) -> io::Result<u64> {
        let (_, end) = self.close(true);
        match end.err {
            Some(e) => Err(e),
            None => Ok(end.kept),
        }
    }

    /// Flushes and returns the file and the MD5 of the whole content.
    pub fn finish(mut self) -> io::Result<(File, Md5Digest)> {
        let (md5, end) = self.close(false);
        if let Some(e) = end.err {
            return Err(e);
        }
        match (end.file, md5) {
            (Some(f), Some(h)) => Ok((f, h.finish())),
            _ => Err(pipeline_broken()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.hash_thread.is_some() {
            let _ = self.close(false);
        }
    }
}

/// Bodies up to this size are held in memory until whole, so that the
/// receiver can hash many of them together (their write waits too); a
/// larger one is written and hashed as it arrives. Bounds what a session
/// holds per file.
pub const HOLD_MAX: u64 = 256 << 10;

/// A small file's body, kept in memory until it is whole.
pub struct SmallWriter {
    file: File,
    body: Vec<u8>,
}

/// A file under one block but over [`HOLD_MAX`]: written through a buffer
/// and hashed as it arrives. No block can complete, so there is nothing to
/// checkpoint.
pub struct StreamWriter {
    out: BufWriter<File>,
    md5: Hasher,
    pos: u64,
}

/// A small file's whole body, in memory.
pub struct Held {
    file: File,
    body: Vec<u8>,
}

impl Held {
    /// Writes the body into the partial.
    pub fn write_out(&mut self) -> io::Result<()> {
        self.file.write_all(&self.body)
    }

    /// The partial and the body.
    pub fn into_parts(self) -> (File, Vec<u8>) {
        (self.file, self.body)
    }
}

/// How a body ended: written and hashed, or held in memory, not yet
/// written nor hashed.
pub enum Finished {
    Ready(File, Md5Digest),
    Held(Held),
}

/// Writes a file's body into its partial, hashing it; or holds it in
/// memory, for a small file.
pub enum PartialWriter {
    /// Up to [`HOLD_MAX`] bytes (so never resumed: it has no block).
    Small(SmallWriter),
    /// Over [`HOLD_MAX`], under [`BLOCK`] bytes (never resumed either).
    Streamed(StreamWriter),
    /// [`BLOCK`] bytes or more.
    Piped(Pipeline),
}

impl PartialWriter {
    fn new(
        dir: &Dir,
        names: &Names,
        file: File,
        size: u64,
        md5_expected: Md5Digest,
        start: Start,
    ) -> io::Result<Self> {
        if size <= HOLD_MAX && start.pos == 0 {
            // The allocation is bounded whatever the peer announced.
            let size = usize::try_from(size).map_err(io::Error::other)?;
            return Ok(PartialWriter::Small(SmallWriter {
                file,
                body: Vec::with_capacity(size),
            }));
        }
        if size < BLOCK {
            return Ok(PartialWriter::Streamed(StreamWriter {
                out: BufWriter::with_capacity(WRITE_BUF.min(size as usize).max(8192), file),
                md5: start.md5,
                pos: start.pos,
            }));
        }
        Pipeline::new(dir, names, file, size, md5_expected, start).map(PartialWriter::Piped)
    }

    /// Appends body bytes.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self {
            PartialWriter::Small(w) => {
                w.body.extend_from_slice(chunk);
                Ok(())
            }
            PartialWriter::Streamed(w) => {
                w.md5.update(chunk);
                w.pos += chunk.len() as u64;
                w.out.write_all(chunk)
            }
            PartialWriter::Piped(p) => p.write(chunk),
        }
    }

    /// Bytes written so far (including a resumed prefix).
    pub fn position(&self) -> u64 {
        match self {
            PartialWriter::Small(w) => w.body.len() as u64,
            PartialWriter::Streamed(w) => w.pos,
            PartialWriter::Piped(p) => p.position(),
        }
    }

    /// Stops here and checkpoints what arrived, for a later resume. Returns
    /// the offset a resume will start from (0 for a file under a block).
    pub fn suspend(self) -> io::Result<u64> {
        match self {
            PartialWriter::Small(_) | PartialWriter::Streamed(_) => Ok(0),
            PartialWriter::Piped(p) => p.suspend(),
        }
    }

    /// Ends the body: a file over [`HOLD_MAX`] is flushed and its MD5
    /// known; a small file's body comes back held.
    pub fn end(self) -> io::Result<Finished> {
        match self {
            PartialWriter::Small(w) => Ok(Finished::Held(Held {
                file: w.file,
                body: w.body,
            })),
            PartialWriter::Streamed(w) => {
                let file = w.out.into_inner().map_err(|e| e.into_error())?;
                Ok(Finished::Ready(file, w.md5.finish()))
            }
            PartialWriter::Piped(p) => p.finish().map(|(f, d)| Finished::Ready(f, d)),
        }
    }

    /// Flushes and returns the file and the MD5 of the whole content.
    pub fn finish(self) -> io::Result<(File, Md5Digest)> {
        match self.end()? {
            Finished::Ready(file, md5) => Ok((file, md5)),
            Finished::Held(mut held) => {
                held.write_out()?;
                let mut md5 = Hasher::new();
                md5.update(&held.body);
                Ok((held.file, md5.finish()))
            }
        }
    }
}

/// Asks the kernel to start writing a range of `file` back to disk without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Durability
/// still comes from the fsync at checkpoints and at the end; this only
/// spreads the disk work over the transfer. Best effort.
fn start_writeback(file: &File, offset: u64, len: u64) {
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

fn pipeline_broken() -> io::Error {
    io::Error::other("internal error: the write pipeline stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().expect("tempdir");
        let d = Dir::open_ambient_dir(t.path(), cap_std::ambient_authority()).expect("dir");
        (t, d)
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn md5_of(b: &[u8]) -> Md5Digest {
        let mut h = Hasher::new();
        h.update(b);
        h.finish()
    }

    /// Writes `upto` bytes of `all`, checkpoints, and drops the writer.
    fn interrupted(dir: &Dir, names: &Names, all: &[u8], upto: usize) {
        let o = open(dir, names, all.len() as u64, md5_of(all)).expect("open");
        let mut w = o.writer;
        let start = o.offset as usize;
        for c in all[start..upto].chunks(100_000) {
            w.write(c).expect("write");
        }
        w.suspend().expect("checkpoint");
    }

    #[test]
    fn resumes_at_last_full_block_and_digest_matches() {
        let (_t, dir) = tmpdir();
        let all = data(3 * BLOCK as usize + 12345);
        let names = Names::for_target("f.bin");
        interrupted(&dir, &names, &all, 2 * BLOCK as usize + 777);
        let o = open(&dir, &names, all.len() as u64, md5_of(&all)).expect("open");
        assert_eq!(o.offset, 2 * BLOCK);
        let mut w = o.writer;
        w.write(&all[o.offset as usize..]).expect("write");
        let (_, d) = w.finish().expect("finish");
        assert_eq!(d, md5_of(&all));
    }

    #[test]
    fn flipped_byte_in_partial_resumes_before_it() {
        let (t, dir) = tmpdir();
        let all = data(3 * BLOCK as usize);
        let names = Names::for_target("f.bin");
        interrupted(&dir, &names, &all, 3 * BLOCK as usize - 1);
        let p = t.path().join(&names.part);
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[BLOCK as usize + 5] ^= 1;
        std::fs::write(&p, &bytes).expect("write");
        let o = open(&dir, &names, all.len() as u64, md5_of(&all)).expect("open");
        assert_eq!(o.offset, BLOCK);
        let mut w = o.writer;
        w.write(&all[BLOCK as usize..]).expect("write");
        assert_eq!(w.finish().expect("finish").1, md5_of(&all));
    }

    #[test]
    fn garbage_truncated_or_foreign_state_starts_over() {
        let (t, dir) = tmpdir();
        let all = data(2 * BLOCK as usize);
        let names = Names::for_target("f.bin");
        let sp = t.path().join(&names.state);

        interrupted(&dir, &names, &all, BLOCK as usize + 1);
        std::fs::write(&sp, b"garbage").expect("write");
        let o = open(&dir, &names, all.len() as u64, md5_of(&all)).expect("open");
        assert_eq!(o.offset, 0);
        assert!(o.discarded.is_some());
        drop(o);

        interrupted(&dir, &names, &all, BLOCK as usize + 1);
        let st = std::fs::read(&sp).expect("read");
        std::fs::write(&sp, &st[..st.len() - 3]).expect("write");
        assert_eq!(
            open(&dir, &names, all.len() as u64, md5_of(&all))
                .expect("open")
                .offset,
            0
        );

        interrupted(&dir, &names, &all, BLOCK as usize + 1);
        let other = md5_of(b"other");
        let o = open(&dir, &names, all.len() as u64, other).expect("open");
        assert_eq!(o.offset, 0);
        assert_eq!(
            o.discarded.as_deref(),
            Some("partial belongs to other content")
        );
    }

    #[test]
    fn partial_shorter_than_its_records_resumes_at_what_is_there() {
        let (t, dir) = tmpdir();
        let all = data(3 * BLOCK as usize);
        let names = Names::for_target("f.bin");
        interrupted(&dir, &names, &all, 3 * BLOCK as usize - 1);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path().join(&names.part))
            .expect("open");
        f.set_len(BLOCK + 10).expect("truncate");
        let o = open(&dir, &names, all.len() as u64, md5_of(&all)).expect("open");
        assert_eq!(o.offset, BLOCK);
    }

    #[test]
    fn state_round_trips_and_rejects_tampering() {
        let blocks = vec![
            BlockRec {
                xxh3: 1,
                md5_state: vec![1, 2, 3],
            },
            BlockRec {
                xxh3: 2,
                md5_state: vec![4, 5, 6],
            },
        ];
        let enc = encode_state(3 * BLOCK, &[9; 16], &blocks);
        assert_eq!(decode_state(&enc), Ok((3 * BLOCK, [9; 16], blocks)));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(decode_state(&bad).is_err(), "byte {i}");
            assert!(decode_state(&enc[..i]).is_err(), "prefix {i}");
        }
    }

    #[test]
    fn long_names_fit() {
        let n = Names::for_target(&"x".repeat(255));
        assert!(n.state_tmp.len() <= MAX_COMPONENT_LEN);
        assert!(n.part.ends_with(".ftx-hpart"));
        assert_eq!(Names::for_target("a").part, ".a.ftx-part");
        // A short name equal to the digest of a long one gets other names.
        let hex_name = n
            .part
            .trim_start_matches('.')
            .trim_end_matches(".ftx-hpart");
        assert_ne!(Names::for_target(hex_name).part, n.part);
        // Every name ftx uses for itself is refused on the wire.
        for x in [&n.part, &n.state, &n.state_tmp] {
            assert!(crate::protocol::WireName::parse(x).is_err(), "{x}");
        }
        let a = Names::for_target("a");
        for x in [&a.part, &a.state, &a.state_tmp] {
            assert!(crate::protocol::WireName::parse(x).is_err(), "{x}");
        }
    }
}
