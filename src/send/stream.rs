//! The body of a file offered without its digest: read once, written to
//! the socket, and hashed on a thread of its own (`ftx-md5`) beside it, so
//! the socket never waits for MD5; the digest follows the body in a
//! DIGEST frame. One read of the file and one MD5 pass on each side, at
//! the same time, where hashing first and then sending costs two in
//! series.

use super::answer::{extents, sparse};
use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::digest::{Hasher, Md5Digest};
use crate::protocol::Frame;
use crate::sanitize::escape;
use anyhow::Context;
use std::fs::File;
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// Bytes read, sent and hashed at a time.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader and the hash thread.
const DEPTH: usize = 4;

impl Sender<'_> {
    /// Sends the whole body of `file` (`size` bytes; its data as BODY and
    /// its holes as HOLE extents when sparse) while hashing it, then its
    /// DIGEST. Returns the digest.
    pub(super) fn body_hashing(
        &mut self,
        conn: &mut Conn<TcpStream>,
        id: u32,
        idx: usize,
        file: &File,
        md: &std::fs::Metadata,
    ) -> Result<Md5Digest, Broken> {
        let size = md.len();
        let local = escape(&self.items[idx].entry.local.to_string_lossy());
        let extents = if sparse(md) {
            extents(file, 0, size).with_context(|| format!("cannot read {local}"))?
        } else {
            vec![(0, size, false)]
        };
        let (to_hash, chunks) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
        let (back, free) = mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::Builder::new()
            .name("ftx-md5".into())
            .spawn(move || {
                let mut h = Hasher::new();
                for (buf, n) in chunks {
                    h.update(&buf[..n]);
                    let _ = back.send(buf);
                }
                h.finish()
            })
            .context("cannot start the hashing thread")?;
        let sent = self.send_extents(conn, id, idx, file, &extents, &to_hash, &free, &local);
        drop(to_hash);
        let md5 = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("internal error: the hashing thread panicked"))?;
        sent?;
        conn.queue(&Frame::Digest { id, md5 });
        Ok(md5)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_extents(
        &mut self,
        conn: &mut Conn<TcpStream>,
        id: u32,
        idx: usize,
        file: &File,
        extents: &[(u64, u64, bool)],
        to_hash: &mpsc::SyncSender<(Vec<u8>, usize)>,
        free: &mpsc::Receiver<Vec<u8>>,
        local: &str,
    ) -> Result<(), Broken> {
        let mut made = 0;
        let mut next_buf = || -> Result<Vec<u8>, Broken> {
            if let Ok(b) = free.try_recv() {
                return Ok(b);
            }
            if made < DEPTH + 2 {
                made += 1;
                return Ok(vec![0u8; CHUNK]);
            }
            free.recv()
                .map_err(|_| anyhow::anyhow!("internal error: the hashing thread stopped").into())
        };
        let hash = |buf: Vec<u8>, n: usize| -> Result<(), Broken> {
            to_hash
                .send((buf, n))
                .map_err(|_| anyhow::anyhow!("internal error: the hashing thread stopped").into())
        };
        for &(at, len, hole) in extents {
            if hole {
                conn.queue(&Frame::Hole {
                    id,
                    offset: at,
                    length: len,
                });
                let mut left = len;
                while left > 0 {
                    let mut buf = next_buf()?;
                    let k = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
                    buf[..k].fill(0);
                    hash(buf, k)?;
                    left -= k as u64;
                }
                self.sending.inc(len);
                self.total.inc(len);
                self.items[idx].shown += len;
                continue;
            }
            conn.queue(&Frame::Body {
                id,
                offset: at,
                length: len,
            });
            let end = at + len;
            let mut pos = at;
            while pos < end {
                let mut buf = next_buf()?;
                let k = usize::try_from(end - pos).unwrap_or(usize::MAX).min(CHUNK);
                let n = file
                    .read_at(&mut buf[..k], pos)
                    .with_context(|| format!("cannot read {local}"))?;
                if n == 0 {
                    return Err(ConnError::Shrank {
                        sent: pos,
                        expected: end,
                    }
                    .into());
                }
                conn.write_raw(&buf[..n])?;
                hash(buf, n)?;
                pos += n as u64;
                self.sending.inc(n as u64);
                self.total.inc(n as u64);
                self.items[idx].shown += n as u64;
            }
            self.tally.wire += len;
        }
        Ok(())
    }
}
