//! The body of a file offered without its digest: sent with `sendfile`
//! while a thread of its own (`ftx-md5`, with a reader ahead of it) hashes
//! the same bytes from the page cache, so the socket never waits for MD5;
//! the digest follows the body in a DIGEST frame. One MD5 pass on each
//! side, at the same time, where hashing first and then sending costs two
//! in series. On a sealed connection (no `sendfile`) each chunk is read
//! once, sealed and sent, then hashed from the same buffer.

use super::holes::{extents, sparse};
use super::types::*;
use crate::conn::Conn;
use crate::digest::{Hasher, Md5Digest};
use crate::protocol::Frame;
use crate::sanitize::escape;
use crate::secure::Wire;
use anyhow::Context;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// Bytes read, sent and hashed at a time.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader and the hash thread.
const DEPTH: usize = 4;

impl Sender<'_> {
    /// Sends the whole body of `file` (its data as BODY and its holes as
    /// HOLE extents when sparse) with `sendfile`, while a thread of its own
    /// reads the file again (from the page cache) and hashes it; then the
    /// DIGEST. Returns the digest.
    pub(super) fn body_hashing(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        (file, md): (&File, &std::fs::Metadata),
        remote: Option<&crate::delta::Remote>,
        from: (u64, Hasher),
    ) -> Result<Md5Digest, Broken> {
        let size = md.len();
        let local = escape(&self.items[idx].entry.local.to_string_lossy());
        let (offset, start) = from;
        let extents = if sparse(md) {
            extents(file, offset, size).with_context(|| format!("cannot read {local}"))?
        } else {
            vec![(offset, size - offset, false)]
        };
        let marks = Marks {
            cache: self.cache.clone(),
            version: crate::cache::Version::of(md),
        };
        if conn.get_ref().is_sealed() && remote.is_none() {
            let md5 = self
                .send_extents_sealed(conn, id, idx, file, &extents, (start, marks))?
                .with_context(|| format!("cannot read {local}"))?;
            conn.queue(&Frame::Digest { id, md5 });
            return Ok(md5);
        }
        let reader = file
            .try_clone()
            .with_context(|| format!("cannot read {local}"))?;
        let plan = extents.clone();
        let hasher = std::thread::Builder::new()
            .name("ftx-md5".into())
            .spawn(move || hash_extents(&reader, &plan, start, &marks))
            .context("cannot start the hashing thread")?;
        let sent = match remote {
            Some(r) => self.send_delta(conn, id, idx, file, &extents, r),
            None => self.send_extents(conn, id, idx, file, &extents),
        };
        let hashed = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("internal error: the hashing thread panicked"))?;
        sent?;
        let md5 = hashed.with_context(|| format!("cannot read {local}"))?;
        conn.queue(&Frame::Digest { id, md5 });
        Ok(md5)
    }

    /// Counts `n` bytes of entry `idx` as sent: on the bars, on the item,
    /// and, unless they are a hole's, on the wire.
    pub(super) fn moved(&mut self, idx: usize, n: u64, on_wire: bool) {
        if self.progress.shown() {
            self.sending.inc(n);
            self.total.inc(n);
        }
        self.items[idx].shown += n;
        if on_wire {
            self.tally.wire += n;
        }
    }

    /// Sends `extents` of `file` (`(offset, length, hole)`): BODY with
    /// `sendfile` (or sealed) for data, a HOLE frame for a hole; counts
    /// them on the bars, on the item and on the wire.
    pub(super) fn send_extents(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        file: &File,
        extents: &[(u64, u64, bool)],
    ) -> Result<(), Broken> {
        for &(at, len, hole) in extents {
            if hole {
                conn.queue(&Frame::Hole {
                    id,
                    offset: at,
                    length: len,
                });
                self.moved(idx, len, false);
                continue;
            }
            conn.queue(&Frame::Body {
                id,
                offset: at,
                length: len,
            });
            let (sending, total) = (&self.sending, &self.total);
            let mut counted = 0;
            let sent = conn.send_body(file, at, len, |n| {
                sending.inc(n);
                total.inc(n);
                counted += n;
            });
            self.items[idx].shown += counted;
            self.tally.wire += counted;
            sent?;
        }
        Ok(())
    }
}

/// What the session thread hands the hash thread of a sealed body.
enum Piece {
    /// Bytes it read (the buffer comes back hashed, to be sealed and sent).
    Data(Vec<u8>, usize),
    /// A hole of this many zero bytes.
    Zeros(u64),
}

impl Sender<'_> {
    /// [`Sender::body_hashing`] on a sealed connection, where the body
    /// cannot go by `sendfile` anyway: each chunk is read once, hashed by
    /// `ftx-md5`, then sealed in place and sent from the same buffer (a
    /// second read of the file, or a copy into the records, would cost one
    /// more pass over every byte). The inner result is the digest, or why
    /// the file could not be read.
    fn send_extents_sealed(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        file: &File,
        extents: &[(u64, u64, bool)],
        (start, marks): (Hasher, Marks),
    ) -> Result<std::io::Result<Md5Digest>, Broken> {
        let mut pos = extents.first().map_or(0, |e| e.0);
        let (to_hash, pieces) = mpsc::sync_channel::<Piece>(DEPTH);
        let (back, hashed) = mpsc::channel::<(Vec<u8>, usize)>();
        std::thread::scope(|sc| {
            let hasher = std::thread::Builder::new()
                .name("ftx-md5".into())
                .spawn_scoped(sc, move || {
                    let zeros = vec![0u8; CHUNK];
                    let mut h = start;
                    for piece in pieces {
                        match piece {
                            Piece::Data(buf, n) => {
                                h.update(&buf[..n]);
                                pos += n as u64;
                                let _ = back.send((buf, n));
                            }
                            Piece::Zeros(len) => {
                                let mut left = len;
                                while left > 0 {
                                    let k = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                                    h.update(&zeros[..k]);
                                    left -= k as u64;
                                }
                                pos += len;
                            }
                        }
                        marks.after(pos, &h);
                    }
                    h.finish()
                })
                .context("cannot start the hashing thread")?;
            let mut round = Round {
                hashed,
                free: Vec::new(),
                made: 0,
                early: None,
            };
            let sent = self.send_pieces(conn, (id, idx), file, extents, &to_hash, &mut round);
            drop(to_hash);
            let md5 = hasher
                .join()
                .map_err(|_| anyhow::anyhow!("internal error: the hashing thread panicked"))?;
            Ok(sent?.map(|()| md5))
        })
    }

    /// The session thread's half of [`Sender::send_extents_sealed`]: reads
    /// chunks ahead of the hash thread, and sends each one as it comes back
    /// hashed, in order; every byte of an extent is sent before the next
    /// extent's frame. An error of the connection is the outer one, a read
    /// error the inner one.
    fn send_pieces(
        &mut self,
        conn: &mut Conn<Wire>,
        (id, idx): (u32, usize),
        file: &File,
        extents: &[(u64, u64, bool)],
        to_hash: &mpsc::SyncSender<Piece>,
        round: &mut Round,
    ) -> Result<std::io::Result<()>, Broken> {
        for &(at, len, hole) in extents {
            self.send_all_hashed(conn, idx, round)?;
            let frame = if hole {
                Frame::Hole {
                    id,
                    offset: at,
                    length: len,
                }
            } else {
                Frame::Body {
                    id,
                    offset: at,
                    length: len,
                }
            };
            conn.queue(&frame);
            if hole {
                let _ = to_hash.send(Piece::Zeros(len));
                self.moved(idx, len, false);
                continue;
            }
            let mut pos = at;
            while pos < at + len {
                let mut buf = match round.free.pop() {
                    Some(b) => b,
                    None if round.made < DEPTH + 2 => {
                        round.made += 1;
                        vec![0u8; CHUNK]
                    }
                    None => {
                        self.send_hashed(conn, idx, round)?;
                        continue;
                    }
                };
                let k = usize::try_from(at + len - pos).unwrap_or(CHUNK).min(CHUNK);
                let n = match read_chunk(file, &mut buf[..k], pos) {
                    Ok(n) => n,
                    Err(e) => return Ok(Err(e)),
                };
                pos += n as u64;
                if to_hash.send(Piece::Data(buf, n)).is_err() {
                    return Err(
                        anyhow::anyhow!("internal error: the hashing thread stopped").into(),
                    );
                }
                while round.ready() {
                    self.send_hashed(conn, idx, round)?;
                }
            }
        }
        self.send_all_hashed(conn, idx, round)?;
        Ok(Ok(()))
    }

    /// Sends every chunk read so far, as each comes back hashed.
    fn send_all_hashed(
        &mut self,
        conn: &mut Conn<Wire>,
        idx: usize,
        round: &mut Round,
    ) -> Result<(), Broken> {
        while round.out() > 0 {
            self.send_hashed(conn, idx, round)?;
        }
        Ok(())
    }

    /// Seals and sends the next chunk the hash thread is done with
    /// (waiting for it), and keeps its buffer for the next read.
    fn send_hashed(
        &mut self,
        conn: &mut Conn<Wire>,
        idx: usize,
        round: &mut Round,
    ) -> Result<(), Broken> {
        let Some((mut buf, n)) = round.next() else {
            return Err(anyhow::anyhow!("internal error: the hashing thread stopped").into());
        };
        conn.write_consuming(&mut buf[..n])?;
        self.moved(idx, n as u64, true);
        round.free.push(buf);
        Ok(())
    }
}

/// The [`CHUNK`] buffers of a sealed body: read into by the session
/// thread, hashed by `ftx-md5`, handed back (in the order they were read)
/// to be sealed in place and sent, then read into again. At most
/// `DEPTH + 2` are made.
struct Round {
    hashed: mpsc::Receiver<(Vec<u8>, usize)>,
    /// Sent, ready for the next read.
    free: Vec<Vec<u8>>,
    made: usize,
    /// One the hash thread handed back before it was asked for.
    early: Option<(Vec<u8>, usize)>,
}

impl Round {
    /// Buffers with the hash thread, or hashed and not yet sent: every
    /// one made that is not free.
    fn out(&self) -> usize {
        self.made - self.free.len()
    }

    /// True when a hashed chunk can be sent without waiting.
    fn ready(&mut self) -> bool {
        if self.early.is_none() && self.out() > 0 {
            self.early = self.hashed.try_recv().ok();
        }
        self.early.is_some()
    }

    /// The next hashed chunk, waiting for it (`None` once the hash thread
    /// is gone).
    fn next(&mut self) -> Option<(Vec<u8>, usize)> {
        self.early.take().or_else(|| self.hashed.recv().ok())
    }
}

/// Buffers of [`CHUNK`] bytes going round between two threads: a returned
/// one if there is, a new one while fewer than `DEPTH + 2` were made, else
/// the next one returned (`None` once the other thread is gone).
struct Pool {
    free: mpsc::Receiver<Vec<u8>>,
    made: usize,
}

impl Pool {
    fn take(&mut self) -> Option<Vec<u8>> {
        match self.free.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.made < DEPTH + 2 => {
                self.made += 1;
                Some(vec![0u8; CHUNK])
            }
            Err(_) => self.free.recv().ok(),
        }
    }
}

/// Reads `buf.len()` bytes or fewer at `pos`; at least one, or an error
/// saying the file shrank.
fn read_chunk(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Where a sender keeps the MD5 states of a body it hashes while it sends
/// it, every [`crate::store::BLOCK`] (4 MiB, where a receiver's resume
/// starts): a resume after a kill continues from the state at the
/// receiver's offset instead of hashing the whole prefix again. Keyed by
/// the file's version, so any change to it discards them.
pub(super) struct Marks {
    pub(super) cache: crate::cache::DigestCache,
    pub(super) version: crate::cache::Version,
}

impl Marks {
    /// After the first `pos` bytes were hashed into `h`.
    fn after(&self, pos: u64, h: &Hasher) {
        if pos > 0
            && pos.is_multiple_of(crate::store::BLOCK)
            && h.algo() == crate::digest::Algo::Md5
        {
            self.cache.put_state(&self.version, pos, &h.save());
        }
    }
}

/// The MD5 of a file laid out as `extents` (holes as zeros), continuing
/// `start` (the state after the bytes before the first extent), read with
/// `pread` in 1 MiB chunks by a helper thread ahead of the hashing.
fn hash_extents(
    file: &File,
    extents: &[(u64, u64, bool)],
    start: Hasher,
    marks: &Marks,
) -> std::io::Result<Md5Digest> {
    let (full, chunks) = mpsc::sync_channel::<std::io::Result<(Vec<u8>, usize)>>(DEPTH);
    let (back, free) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let mut pool = Pool { free, made: 0 };
            for &(at, len, hole) in extents {
                let mut pos = at;
                while pos < at + len {
                    let Some(mut buf) = pool.take() else {
                        return;
                    };
                    let k = usize::try_from(at + len - pos)
                        .unwrap_or(usize::MAX)
                        .min(CHUNK);
                    let got = if hole {
                        buf[..k].fill(0);
                        Ok(k)
                    } else {
                        read_chunk(file, &mut buf[..k], pos)
                    };
                    let n = match got {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = full.send(Err(e));
                            return;
                        }
                    };
                    if full.send(Ok((buf, n))).is_err() {
                        return;
                    }
                    pos += n as u64;
                }
            }
        });
        let mut h = start;
        let mut pos = extents.first().map_or(0, |e| e.0);
        for chunk in chunks {
            let (buf, n) = chunk?;
            h.update(&buf[..n]);
            pos += n as u64;
            marks.after(pos, &h);
            let _ = back.send(buf);
        }
        Ok(h.finish())
    })
}

impl Sender<'_> {
    /// Sends standard input, whose size is not known: BODY extents as it is
    /// read, hashed as they go by a thread of its own (`ftx-md5`, from the
    /// same buffers: sending and hashing overlap), then the DIGEST.
    /// Returns the digest and the size. From the first byte on, a failure
    /// is final: what was read cannot be read again.
    pub(super) fn body_stdin(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        input: &File,
    ) -> Result<(Md5Digest, u64), Broken> {
        let algo = self.cfg.hash;
        // A pipe's 64 KiB buffer makes a read, a frame and a wake-up of
        // the writer for every 64 KiB: grown to a chunk, where the system
        // lets it (best effort; a file or a terminal is left as it is).
        let _ = rustix::pipe::fcntl_setpipe_size(input, CHUNK);
        let (to_hash, pieces) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
        let (back, free) = mpsc::channel::<Vec<u8>>();
        std::thread::scope(|sc| {
            let hasher = std::thread::Builder::new()
                .name("ftx-md5".into())
                .spawn_scoped(sc, move || {
                    let mut h = Hasher::with(algo);
                    for (buf, n) in pieces {
                        h.update(&buf[..n]);
                        let _ = back.send(buf);
                    }
                    h.finish()
                })
                .context("cannot start the hashing thread")?;
            let sent = self.send_stdin(conn, id, idx, input, &to_hash, Pool { free, made: 0 });
            drop(to_hash);
            let md5 = hasher
                .join()
                .map_err(|_| anyhow::anyhow!("internal error: the hashing thread panicked"))?;
            let size = sent?;
            conn.queue(&Frame::Digest { id, md5 });
            Ok((md5, size))
        })
    }

    /// The sending half of [`Sender::body_stdin`]: reads, sends and hands
    /// each chunk to the hash thread; returns the size.
    fn send_stdin(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        mut input: &File,
        to_hash: &mpsc::SyncSender<(Vec<u8>, usize)>,
        mut pool: Pool,
    ) -> Result<u64, Broken> {
        use std::io::Read;
        let mut pos = 0u64;
        loop {
            let Some(mut buf) = pool.take() else {
                return Err(anyhow::anyhow!("internal error: the hashing thread stopped").into());
            };
            let n = match input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::anyhow!("cannot read standard input: {e}").into()),
            };
            if n == 0 && pos > 0 {
                return Ok(pos);
            }
            self.stdin_sent = true;
            conn.queue(&Frame::Body {
                id,
                offset: pos,
                length: n as u64,
            });
            conn.write_raw(&buf[..n])?;
            pos += n as u64;
            self.moved(idx, n as u64, true);
            if to_hash.send((buf, n)).is_err() {
                return Err(anyhow::anyhow!("internal error: the hashing thread stopped").into());
            }
            if n == 0 {
                return Ok(pos); // empty input: one empty BODY
            }
        }
    }
}
