//! A large body (a block, 4 MiB, or more) as a pipeline of three threads:
//! the session thread fills buffers from the socket; [`Pipeline::new`]
//! starts `ftx-hash`, which runs MD5, and `ftx-disk` ([`super::disk`]),
//! which writes the bytes into the partial and checkpoints.

use super::block::*;
use super::budget::{Budget, Lease};
use super::disk::*;
use super::resume::*;
use super::types::*;
use crate::digest::{Hasher, Md5Digest};
use cap_std::fs::Dir;
use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::Arc;

/// What one pipeline buffer costs (it is over-allocated for alignment).
const BUF_COST: usize = PIPE_BUF + ALIGN;
/// How long a large body waits for its first buffers when the receiver's
/// memory budget is spent.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes a large file's body into its partial as a pipeline: the caller (the
/// socket reader) fills 1 MiB buffers, a hash thread runs MD5 and the
/// per-block XXH3, and a disk thread writes through a `BufWriter` and
/// checkpoints every 64 MiB. MD5, the slowest step, thus runs in parallel
/// with socket reads, disk writes and fsyncs.
pub struct Pipeline {
    pub(super) fill: Option<Buf>,
    pub(super) filled: usize,
    pub(super) pos: u64,
    pub(super) to_hash: Option<std::sync::mpsc::SyncSender<(Buf, usize, Fill)>>,
    pub(super) pool: std::sync::mpsc::Receiver<Buf>,
    pub(super) allocated: usize,
    /// The receiver's memory budget, and what this pipeline leased of it.
    pub(super) budget: Arc<Budget>,
    pub(super) leases: Vec<Lease>,
    pub(super) hash_thread: Option<std::thread::JoinHandle<Hasher>>,
    pub(super) disk_thread: Option<std::thread::JoinHandle<DiskEnd>>,
    pub(super) disk_ctl: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The check of a resumed prefix still running ([`Start::pending`]):
    /// the body is finished only if it passes.
    pub(super) prefix_check: Option<PrefixCheck>,
}

impl Pipeline {
    pub(super) fn new(
        dir: &Dir,
        names: &Names,
        file: File,
        size: u64,
        md5_expected: Md5Digest,
        start: Start,
        budget: &Arc<Budget>,
    ) -> io::Result<Self> {
        // The disk thread's write buffer and a first pipeline buffer: a
        // pipeline cannot run with less, so it waits for them.
        let first = budget
            .lease(WRITE_BUF + BUF_COST, BUDGET_WAIT)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the receiver's memory budget ({} MiB) stayed spent for {} s",
                    budget.total() >> 20,
                    BUDGET_WAIT.as_secs()
                ))
            })?;
        let Start {
            pos,
            mut md5,
            blocks,
            pending,
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
            reflink: true,
            delta: DeltaBlocks::new(size, pos),
        };
        let (to_hash, hash_rx) = sync_channel::<(Buf, usize, Fill)>(PIPE_DEPTH);
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
                for (buf, n, fill) in hash_rx {
                    let mut ended = Vec::new();
                    by_block(&mut at, &buf[..n], |piece, ends| {
                        md5.update(piece);
                        if ends {
                            ended.push(md5.save());
                        }
                    });
                    if to_disk.send(ToDisk::Data(buf, n, fill)).is_err() {
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
            budget: Arc::clone(budget),
            leases: vec![first],
            hash_thread: Some(hash_thread),
            disk_thread: Some(disk_thread),
            disk_ctl,
            prefix_check: pending,
        })
    }

    /// A free buffer: recycled, new while under the pipeline depth, else
    /// the next one the disk thread gives back.
    pub(super) fn next_buf(&mut self) -> io::Result<Buf> {
        if let Ok(b) = self.pool.try_recv() {
            return Ok(b);
        }
        if self.allocated == 0 {
            // Paid for by the lease taken when the pipeline started.
            self.allocated += 1;
            return Ok(Buf::new());
        }
        if self.allocated < PIPE_DEPTH {
            if let Some(lease) = self.budget.try_lease(BUF_COST) {
                self.leases.push(lease);
                self.allocated += 1;
                return Ok(Buf::new());
            }
        }
        self.pool.recv().map_err(|_| pipeline_broken())
    }

    pub(super) fn push(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let Some(buf) = self.fill.take() else {
            return Ok(());
        };
        let n = std::mem::replace(&mut self.filled, 0);
        match &self.to_hash {
            Some(tx) => tx.send((buf, n, Fill::Data)).map_err(|_| pipeline_broken()),
            None => Err(pipeline_broken()),
        }
    }

    /// Appends `n` zero bytes that are a hole: hashed like any bytes, never
    /// written (the disk thread seeks over them).
    pub fn hole(&mut self, mut n: u64) -> io::Result<()> {
        self.push()?;
        while n > 0 {
            let mut buf = self.next_buf()?;
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(PIPE_BUF);
            buf[..k].fill(0);
            self.pos += k as u64;
            n -= k as u64;
            match &self.to_hash {
                Some(tx) => tx
                    .send((buf, k, Fill::Hole))
                    .map_err(|_| pipeline_broken())?,
                None => return Err(pipeline_broken()),
            }
        }
        Ok(())
    }

    /// Appends `n` bytes of `old` read at the current position (a delta's
    /// SAME extent): read straight into pipeline buffers, hashed like any
    /// bytes, and cloned from `old` where the file system can.
    pub fn same(&mut self, old: &Arc<super::cold::ColdFile>, mut n: u64) -> io::Result<()> {
        self.push()?;
        while n > 0 {
            let mut buf = self.next_buf()?;
            let k = usize::try_from(n).unwrap_or(usize::MAX).min(PIPE_BUF);
            old.read_exact_at(&mut buf[..k], self.pos)?;
            self.pos += k as u64;
            n -= k as u64;
            match &self.to_hash {
                Some(tx) => tx
                    .send((buf, k, Fill::Old(Arc::clone(old))))
                    .map_err(|_| pipeline_broken())?,
                None => return Err(pipeline_broken()),
            }
        }
        Ok(())
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
    pub(super) fn close(&mut self, checkpoint: bool) -> (Option<Hasher>, DiskEnd) {
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
                blocks: None,
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

    /// Flushes and returns the file, the MD5 of the whole content and,
    /// for a file written from 0, its delta block digests.
    pub fn finish(mut self) -> io::Result<(File, Md5Digest, Option<super::Blocks>)> {
        let (md5, end) = self.close(false);
        if let Some(e) = end.err {
            return Err(e);
        }
        if let Some(check) = self.prefix_check.take() {
            if !check.join().unwrap_or(false) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the bytes kept from an earlier session no longer match their checksums on disk",
                ));
            }
        }
        match (end.file, md5) {
            (Some(f), Some(h)) => Ok((f, h.finish(), end.blocks)),
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
