//! [`Wire`]: a TCP connection, plain or sealed into records with a
//! session's [`Keys`] (see the module documentation of [`super`]).

use super::*;
use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A started frame or record gets a read timeout of its own only once
/// what is left of its deadline is this much shorter than the idle timeout
/// (so most reads cost no extra system call; a deadline is kept to within
/// this much).
const PACE_SLACK: Duration = Duration::from_millis(250);
/// A record may take, beyond the idle timeout, the time its length needs at
/// this slow a rate (a 64 KiB record of a body over a 2 KB/s link is not
/// a trickle): 2 ms a byte, 500 bytes a second.
const RECORD_ALLOWANCE_PER_BYTE: Duration = Duration::from_millis(2);

/// The sending direction.
#[derive(Default)]
struct Tx {
    keys: Option<Arc<Keys>>,
    next: u64,
    /// Sealed records waiting for one write.
    buf: Vec<u8>,
}

/// Called whenever bytes arrive from the socket.
pub type OnReceive = Arc<dyn Fn() + Send + Sync>;

/// The receiving direction.
#[derive(Default)]
struct Rx {
    /// Told of every arrival, a partial record's bytes too.
    on_receive: Option<OnReceive>,
    keys: Option<Arc<Keys>>,
    next: u64,
    /// Ciphertext received: `buf[pos..end]` is not opened yet.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// An opened record the caller had no room for: `plain[ppos..pend]`.
    plain: Vec<u8>,
    ppos: usize,
    pend: usize,
    /// The idle timeout, when a started frame or record must also complete
    /// within it ([`Wire::pace`]).
    pace: Option<Duration>,
    /// Since when the reader has been in the middle of a frame (told by
    /// [`Wire::mid_frame`]) and of a record.
    frame_since: Option<Instant>,
    record_since: Option<Instant>,
    /// The socket's read timeout is shorter than `pace` right now.
    armed: bool,
}

impl Rx {
    /// Before a read from the socket: a frame or record that has started
    /// must complete within the idle timeout, so the read waits at most for
    /// what is left of that (and fails once nothing is).
    fn before_read(&mut self, tcp: &TcpStream) -> io::Result<()> {
        let Some(idle) = self.pace else {
            return Ok(());
        };
        let now = Instant::now();
        if self.keys.is_some() && self.end > self.pos {
            self.record_since.get_or_insert(now);
        } else {
            self.record_since = None;
        }
        let len = u32::try_from(self.next_len().unwrap_or(0)).unwrap_or(u32::MAX);
        let record_end = self
            .record_since
            .map(|at| at + idle + RECORD_ALLOWANCE_PER_BYTE * len);
        let frame_end = self.frame_since.map(|at| at + idle);
        let end = match (frame_end, record_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(end) = end {
            let left = end.saturating_duration_since(now);
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    RecordError::Stalled(idle.as_secs()),
                ));
            }
            if left + PACE_SLACK < idle {
                tcp.set_read_timeout(Some(left))?;
                self.armed = true;
                return Ok(());
            }
        }
        if self.armed {
            tcp.set_read_timeout(Some(idle))?;
            self.armed = false;
        }
        Ok(())
    }

    /// What a read's timeout means: when the read waited only for what was
    /// left of a frame's (or record's) deadline, that deadline passed.
    fn stall(&self) -> impl Fn(io::Error) -> io::Error {
        let armed = self.armed;
        let secs = self.pace.map_or(0, |d| d.as_secs());
        move |e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if armed => {
                io::Error::new(io::ErrorKind::TimedOut, RecordError::Stalled(secs))
            }
            _ => e,
        }
    }

    /// The length of the next record, once its header arrived.
    fn next_len(&self) -> Option<usize> {
        (self.end - self.pos >= HEADER_LEN).then(|| {
            usize::from(u16::from_be_bytes([
                self.buf[self.pos],
                self.buf[self.pos + 1],
            ]))
        })
    }
}

/// A TCP connection, plain or sealed (see the module documentation).
pub struct Wire {
    tcp: TcpStream,
    tx: Arc<Mutex<Tx>>,
    rx: Arc<Mutex<Rx>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wire {
    /// A plain connection.
    pub fn new(tcp: TcpStream) -> Wire {
        Wire {
            tcp,
            tx: Arc::default(),
            rx: Arc::default(),
        }
    }

    /// From now on every byte either way is sealed with `keys`; `received`
    /// is ciphertext that already arrived after the handshake.
    pub fn seal(&self, keys: Keys, received: &[u8]) {
        self.seal_after(keys, received, 0);
    }

    /// [`Wire::seal`] on the receiving side, whose gate already opened the
    /// peer's first `opened` records (READY).
    pub fn seal_after(&self, keys: Keys, received: &[u8], opened: u64) {
        let keys = Arc::new(keys);
        lock(&self.tx).keys = Some(keys.clone());
        let mut rx = lock(&self.rx);
        rx.keys = Some(keys);
        rx.next = opened;
        rx.buf = vec![0u8; READ_RECORDS * (HEADER_LEN + MAX_RECORD)];
        rx.plain = vec![0u8; MAX_RECORD];
        // At most a handshake's worth (4 KiB): it fits the buffer.
        let n = received.len().min(rx.buf.len());
        rx.buf[..n].copy_from_slice(&received[..n]);
        rx.end = n;
    }

    /// The sealed sender's first record: READY alone (see
    /// [`Keys::open_ready`]). Sent right after [`Wire::seal`], before any
    /// other write.
    pub fn send_ready(&self) -> io::Result<()> {
        let mut ready = Vec::new();
        encode(&Frame::Ready, &mut ready);
        self.send_all(&ready)
    }

    /// From now on a frame or record that has started must complete within
    /// `idle` (the socket's read timeout), however its bytes trickle in.
    pub fn pace(&self, idle: Duration) {
        lock(&self.rx).pace = Some(idle);
    }

    /// The reader is in the middle of a frame (`true`: its deadline starts
    /// now, unless it already runs) or between frames (`false`).
    pub fn mid_frame(&self, on: bool) {
        let mut rx = lock(&self.rx);
        if rx.pace.is_some() {
            match (on, rx.frame_since) {
                (true, None) => rx.frame_since = Some(Instant::now()),
                (false, Some(_)) => rx.frame_since = None,
                _ => {}
            }
        }
    }

    /// Calls `f` whenever bytes arrive from the socket (for a watchdog: a
    /// record's bytes count as they come, not when the record is whole).
    pub fn on_receive(&self, f: OnReceive) {
        lock(&self.rx).on_receive = Some(f);
    }

    /// True when stream bytes can be read without waiting for the socket:
    /// an opened record not yet read, or a whole record received.
    pub fn has_buffered(&self) -> bool {
        let rx = lock(&self.rx);
        rx.ppos < rx.pend
            || rx
                .next_len()
                .is_some_and(|len| rx.end - rx.pos >= HEADER_LEN + len)
    }

    /// True once [`Wire::seal`] was called.
    pub fn is_sealed(&self) -> bool {
        lock(&self.tx).keys.is_some()
    }

    /// Another handle on the same connection (see the module
    /// documentation).
    pub fn try_clone(&self) -> io::Result<Wire> {
        Ok(Wire {
            tcp: self.tcp.try_clone()?,
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        })
    }

    /// The socket, for its options. Bytes written to it directly bypass
    /// the records: only [`Wire::plain_fd`] callers may do that.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, for writing to it directly (`sendfile`), if the
    /// connection is plain.
    pub fn plain_fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.is_sealed()).then(|| self.tcp.as_fd())
    }

    /// Shuts the connection down (unblocks every handle).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    /// Writes all of `data` with no other write in between, sealed into
    /// records if the connection is sealed.
    pub fn send_all(&self, data: &[u8]) -> io::Result<()> {
        let mut tx = lock(&self.tx);
        let Some(keys) = tx.keys.clone() else {
            return (&self.tcp).write_all(data);
        };
        let records = data.len().div_ceil(MAX_PLAIN);
        let need = data.len() + records * (HEADER_LEN + TAG_LEN);
        if tx.buf.len() < need {
            tx.buf.resize(need, 0);
        }
        let mut at = 0;
        for chunk in data.chunks(MAX_PLAIN) {
            let nonce = tx.next;
            let out = &mut tx.buf[at + HEADER_LEN..at + HEADER_LEN + chunk.len() + TAG_LEN];
            let n = keys
                .0
                .write_message(nonce, chunk, out)
                .map_err(|e| io::Error::other(format!("cannot seal a record: {e}")))?;
            tx.buf[at..at + HEADER_LEN].copy_from_slice(&len_prefix(n)?);
            tx.next += 1;
            at += HEADER_LEN + n;
        }
        (&self.tcp).write_all(&tx.buf[..at])
    }

    /// [`Wire::send_all`] for bytes the caller no longer needs (a body
    /// already hashed): on a sealed connection the records are sealed in
    /// `data` itself and written with their lengths and tags in one
    /// `writev`, so `data` holds ciphertext afterwards. The bytes on the
    /// wire are the same as [`Wire::send_all`]'s.
    pub fn send_consuming(&self, data: &mut [u8]) -> io::Result<()> {
        let mut tx = lock(&self.tx);
        let Some(keys) = tx.keys.clone() else {
            return (&self.tcp).write_all(data);
        };
        let records = data.len().div_ceil(MAX_PLAIN);
        let mut heads = Vec::with_capacity(records);
        let mut tags = Vec::with_capacity(records);
        for chunk in data.chunks_mut(MAX_PLAIN) {
            tags.push(keys.1.seal_in_place(tx.next, chunk)?);
            heads.push(len_prefix(chunk.len() + TAG_LEN)?);
            tx.next += 1;
        }
        let mut parts = Vec::with_capacity(3 * records);
        for ((head, chunk), tag) in heads.iter().zip(data.chunks(MAX_PLAIN)).zip(&tags) {
            parts.extend([IoSlice::new(head), IoSlice::new(chunk), IoSlice::new(tag)]);
        }
        write_all_vectored(&self.tcp, &mut parts)
    }

    /// Reads stream bytes: from the socket if plain; else opens as many
    /// whole records as arrived (waiting for one if none did).
    fn recv(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut rx = lock(&self.rx);
        let Some(keys) = rx.keys.clone() else {
            rx.before_read(&self.tcp)?;
            let seen = rx.on_receive.clone();
            let stall = rx.stall();
            drop(rx);
            let n = (&self.tcp).read(out).map_err(stall)?;
            if let (true, Some(f)) = (n > 0, seen) {
                f();
            }
            return Ok(n);
        };
        if out.is_empty() {
            return Ok(0);
        }
        let rx = &mut *rx;
        if rx.ppos < rx.pend {
            let n = (rx.pend - rx.ppos).min(out.len());
            out[..n].copy_from_slice(&rx.plain[rx.ppos..rx.ppos + n]);
            rx.ppos += n;
            return Ok(n);
        }
        let mut done = 0;
        loop {
            let have = rx.end - rx.pos;
            let len = rx.next_len();
            if len.is_some_and(|l| l <= TAG_LEN) {
                if done > 0 {
                    return Ok(done);
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    RecordError::Tampered(rx.next),
                ));
            }
            match len {
                Some(len) if have >= HEADER_LEN + len => {
                    let ct = rx.pos + HEADER_LEN..rx.pos + HEADER_LEN + len;
                    let room = out.len() - done;
                    if room < len && done > 0 {
                        return Ok(done);
                    }
                    // snow opens in place in `out` only if the whole
                    // ciphertext fits there; else it would allocate.
                    let direct = room >= len;
                    let target = if direct {
                        &mut out[done..]
                    } else {
                        &mut rx.plain[..]
                    };
                    let Ok(n) = keys.0.read_message(rx.next, &rx.buf[ct], target) else {
                        // What was opened before it goes up first; the
                        // next read fails here again.
                        if done > 0 {
                            return Ok(done);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            RecordError::Tampered(rx.next),
                        ));
                    };
                    rx.next += 1;
                    rx.pos += HEADER_LEN + len;
                    rx.record_since = None;
                    if direct {
                        done += n;
                        continue;
                    }
                    let m = n.min(room);
                    out[done..done + m].copy_from_slice(&rx.plain[..m]);
                    rx.ppos = m;
                    rx.pend = n;
                    return Ok(done + m);
                }
                _ if done > 0 => return Ok(done),
                _ => {
                    if rx.pos > 0 {
                        rx.buf.copy_within(rx.pos..rx.end, 0);
                        rx.end -= rx.pos;
                        rx.pos = 0;
                    }
                    rx.before_read(&self.tcp)?;
                    let stall = rx.stall();
                    let end = rx.end;
                    let n = (&self.tcp).read(&mut rx.buf[end..]).map_err(stall)?;
                    if let (true, Some(f)) = (n > 0, &rx.on_receive) {
                        f();
                    }
                    if n == 0 {
                        if rx.end == 0 {
                            return Ok(0);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            RecordError::Cut,
                        ));
                    }
                    rx.end += n;
                }
            }
        }
    }
}

/// A record's length prefix.
fn len_prefix(len: usize) -> io::Result<[u8; HEADER_LEN]> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| io::Error::other("record too long"))
}

/// Writes all of `parts` (`Write::write_all_vectored` is not stable yet).
fn write_all_vectored(mut tcp: &TcpStream, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        match tcp.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
}

impl Write for Wire {
    /// Writes all of `buf` (see [`Wire::send_all`]).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
