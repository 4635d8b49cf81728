//! Sealed sessions (PROTOCOL.md, "Encrypted sessions"): the Noise handshake
//! keyed by the token, and [`Wire`], the connection both roles talk
//! through, plain or sealed.
//!
//! The cryptography is the `snow` crate's (Noise, revision 34) with ring's
//! ciphers: `Noise_NNpsk0_25519_AESGCM_BLAKE2s` where both CPUs have AES
//! instructions, else `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` ([`Cipher`]).
//! Nothing here encrypts or hashes by itself; this module frames snow's
//! messages into records and keeps one counter per direction.
//!
//! A [`Wire`]'s clones share its two directions: every write goes out
//! whole under one lock (two threads answering on one connection never
//! interleave their frames or reuse a nonce), and the read state travels
//! with whichever clone reads (the handshake on one thread, a reader
//! thread after it).

use crate::auth::Token;
use crate::protocol::frame::encode;
use crate::protocol::Frame;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

/// HELLO flags bit 0: the sender would rather have ChaCha20-Poly1305 (its
/// CPU has no AES instructions, or `--cipher` says so).
pub const HELLO_CHACHA: u32 = 1;
/// WELCOME flags bit 1 (with bit 0, sealed): the session uses
/// ChaCha20-Poly1305 instead of AES-256-GCM.
pub const WELCOME_CHACHA: u32 = 2;

/// The AEAD a sealed session's records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM: about 9 GB/s a core with AES instructions, slow
    /// without them.
    AesGcm,
    /// ChaCha20-Poly1305: about 2.6 GB/s a core here, and the fast one on
    /// CPUs without AES instructions.
    ChaChaPoly,
}

impl Cipher {
    /// The Noise protocol name with this cipher.
    pub fn pattern(self) -> &'static str {
        match self {
            Cipher::AesGcm => "Noise_NNpsk0_25519_AESGCM_BLAKE2s",
            Cipher::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        }
    }

    /// What this side asks for: `choice` if given, else AES-GCM where the
    /// CPU has AES instructions (with carry-less multiply, for GCM).
    pub fn preferred(choice: Option<Cipher>) -> Cipher {
        choice.unwrap_or(if has_aes() {
            Cipher::AesGcm
        } else {
            Cipher::ChaChaPoly
        })
    }
}

/// True when this CPU runs AES-GCM in hardware.
fn has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}
/// Both handshake messages: an ephemeral key (32) and an empty payload's
/// tag (16).
pub const MESSAGE_LEN: usize = 48;
/// The prologue's first bytes: they bind the handshake to this protocol.
const PROLOGUE_LABEL: &[u8] = b"ftx-noise-v2";
/// The AEAD tag of each record.
const TAG_LEN: usize = 16;
/// The largest record (ciphertext and tag): Noise's message limit.
pub const MAX_RECORD: usize = 65535;
/// The most stream bytes one record carries.
pub const MAX_PLAIN: usize = MAX_RECORD - TAG_LEN;
/// A record's length prefix.
const HEADER_LEN: usize = 2;
/// Received ciphertext is read into a buffer of this many records.
const READ_RECORDS: usize = 4;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's message does not decrypt under our token: the two tokens
    /// differ (or the HELLO/WELCOME were changed in flight).
    #[error("wrong token")]
    WrongToken,
    /// Anything else snow reports (no randomness, a bad parameter).
    #[error("the encrypted handshake failed: {0}")]
    Noise(#[from] snow::Error),
}

/// A record that cannot be opened: the session ends at it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// It failed authentication (or its length is impossible).
    #[error(
        "record {0} of the session failed authentication: it was changed, dropped, replayed or reordered on the way"
    )]
    Tampered(u64),
    /// The connection ended inside it.
    #[error("connection closed in the middle of an encrypted record")]
    Cut,
}

/// A session's keys, one per direction (snow's stateless transport: the
/// record number is the nonce, kept here).
pub struct Keys(snow::StatelessTransportState);

/// The prologue both sides feed the handshake: the label, then HELLO and
/// WELCOME as encoded on the wire.
pub fn prologue(hello: &Frame, welcome: &Frame) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    encode(hello, &mut p);
    encode(welcome, &mut p);
    p
}

fn builder<'a>(
    psk: &'a [u8; 32],
    prologue: &'a [u8],
    cipher: Cipher,
) -> Result<snow::Builder<'a>, snow::Error> {
    let params: snow::params::NoiseParams = cipher.pattern().parse()?;
    snow::Builder::new(params).psk(0, psk)?.prologue(prologue)
}

/// The sender's half of the handshake, between its message and the reply.
pub struct Initiator(snow::HandshakeState);

impl Initiator {
    /// Starts the handshake: message 1 (`psk, e`) to send in NOISE.
    pub fn start(
        token: &Token,
        prologue: &[u8],
        cipher: Cipher,
    ) -> Result<(Initiator, [u8; MESSAGE_LEN]), HandshakeError> {
        let psk = token.psk();
        let mut hs = builder(&psk, prologue, cipher)?.build_initiator()?;
        let mut msg = [0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg)?;
        if n != MESSAGE_LEN {
            return Err(snow::Error::Input.into());
        }
        Ok((Initiator(hs), msg))
    }

    /// Reads the receiver's message 2 (`e, ee`): the session's keys, or
    /// [`HandshakeError::WrongToken`] if the receiver does not hold ours.
    pub fn finish(mut self, reply: &[u8; MESSAGE_LEN]) -> Result<Keys, HandshakeError> {
        let mut payload = [0u8; MESSAGE_LEN];
        self.0
            .read_message(reply, &mut payload)
            .map_err(|_| HandshakeError::WrongToken)?;
        Ok(Keys(self.0.into_stateless_transport_mode()?))
    }
}

/// The receiver's half: checks message 1 and answers message 2.
pub fn respond(
    token: &Token,
    prologue: &[u8],
    cipher: Cipher,
    first: &[u8; MESSAGE_LEN],
) -> Result<(Keys, [u8; MESSAGE_LEN]), HandshakeError> {
    let psk = token.psk();
    let mut hs = builder(&psk, prologue, cipher)?.build_responder()?;
    let mut payload = [0u8; MESSAGE_LEN];
    hs.read_message(first, &mut payload)
        .map_err(|_| HandshakeError::WrongToken)?;
    let mut reply = [0u8; MESSAGE_LEN];
    let n = hs.write_message(&[], &mut reply)?;
    if n != MESSAGE_LEN {
        return Err(snow::Error::Input.into());
    }
    Ok((Keys(hs.into_stateless_transport_mode()?), reply))
}

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
}

impl Rx {
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
        let keys = Arc::new(keys);
        lock(&self.tx).keys = Some(keys.clone());
        let mut rx = lock(&self.rx);
        rx.keys = Some(keys);
        rx.buf = vec![0u8; READ_RECORDS * (HEADER_LEN + MAX_RECORD)];
        rx.plain = vec![0u8; MAX_RECORD];
        // At most a handshake's worth (4 KiB): it fits the buffer.
        let n = received.len().min(rx.buf.len());
        rx.buf[..n].copy_from_slice(&received[..n]);
        rx.end = n;
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
            let len = u16::try_from(n).map_err(|_| io::Error::other("record too long"))?;
            tx.buf[at..at + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            tx.next += 1;
            at += HEADER_LEN + n;
        }
        (&self.tcp).write_all(&tx.buf[..at])
    }

    /// Reads stream bytes: from the socket if plain; else opens as many
    /// whole records as arrived (waiting for one if none did).
    fn recv(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut rx = lock(&self.rx);
        let Some(keys) = rx.keys.clone() else {
            let seen = rx.on_receive.clone();
            drop(rx);
            let n = (&self.tcp).read(out)?;
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
                    let end = rx.end;
                    let n = (&self.tcp).read(&mut rx.buf[end..])?;
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

/// The [`RecordError`] inside an I/O error, if it is one.
pub fn record_error(e: &io::Error) -> Option<&RecordError> {
    e.get_ref().and_then(|i| i.downcast_ref::<RecordError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Wire, Wire) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (Wire::new(a), Wire::new(b))
    }

    fn keys(tok: &[u8], tok2: &[u8]) -> Result<(Keys, Keys), HandshakeError> {
        keys_with(tok, tok2, Cipher::AesGcm, Cipher::AesGcm)
    }

    fn keys_with(
        tok: &[u8],
        tok2: &[u8],
        c1: Cipher,
        c2: Cipher,
    ) -> Result<(Keys, Keys), HandshakeError> {
        let p = prologue(&Frame::End, &Frame::End);
        let (init, m1) = Initiator::start(&Token::new(tok), &p, c1)?;
        let (rk, m2) = respond(&Token::new(tok2), &p, c2, &m1)?;
        Ok((init.finish(&m2)?, rk))
    }

    #[test]
    fn either_cipher_works_and_both_sides_must_agree() {
        for c in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let (a, mut b) = pair();
            let (ka, kb) = keys_with(b"k", b"k", c, c).expect("keys");
            a.seal(ka, &[]);
            b.seal(kb, &[]);
            a.send_all(b"over the wire").expect("send");
            let mut got = [0u8; 13];
            b.read_exact(&mut got).expect("read");
            assert_eq!(&got, b"over the wire");
        }
        assert!(matches!(
            keys_with(b"k", b"k", Cipher::AesGcm, Cipher::ChaChaPoly),
            Err(HandshakeError::WrongToken)
        ));
        assert_eq!(
            Cipher::preferred(Some(Cipher::ChaChaPoly)),
            Cipher::ChaChaPoly
        );
    }

    #[test]
    fn a_wrong_token_or_prologue_fails_the_handshake() {
        assert!(keys(b"same", b"same").is_ok());
        assert!(matches!(
            keys(b"one", b"other"),
            Err(HandshakeError::WrongToken)
        ));
        let t = Token::new(*b"t");
        let (_, m1) = Initiator::start(&t, b"a", Cipher::AesGcm).expect("start");
        assert!(matches!(
            respond(&t, b"b", Cipher::AesGcm, &m1),
            Err(HandshakeError::WrongToken)
        ));
    }

    #[test]
    fn records_carry_any_sizes_and_reads_of_any_size() {
        let (a, mut b) = pair();
        let (ka, kb) = keys(b"k", b"k").expect("keys");
        a.seal(ka, &[]);
        b.seal(kb, &[]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sizes = [1usize, 100, MAX_PLAIN, MAX_PLAIN + 1, 200_000];
        let writer = {
            let a = a.try_clone().expect("clone");
            let data = data.clone();
            std::thread::spawn(move || {
                for s in sizes {
                    a.send_all(&data[..s]).expect("send");
                }
                a.shutdown(Shutdown::Write).expect("shutdown");
            })
        };
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_001];
        let mut step = 1;
        loop {
            let n = b.read(&mut buf[..step]).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            step = step * 3 % 70_001 + 1;
        }
        writer.join().expect("writer");
        let want: Vec<u8> = sizes.iter().flat_map(|&s| data[..s].to_vec()).collect();
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        assert!(a.is_sealed() && a.plain_fd().is_none());
    }

    #[test]
    fn part_of_a_record_counts_as_arrival() {
        let (a, b) = pair();
        let (ka, kb) = keys(b"k", b"k").expect("keys");
        a.seal(ka, &[]);
        a.send_all(&[7u8; 1000]).expect("send");
        let mut record = vec![0u8; 2 + 1000 + 16];
        Wire::new(b.tcp.try_clone().expect("clone"))
            .read_exact(&mut record)
            .expect("the sealed record");
        let (c, mut d) = pair();
        d.seal(kb, &[]);
        let (tx, arrivals) = std::sync::mpsc::channel();
        d.on_receive(Arc::new(move || {
            let _ = tx.send(());
        }));
        (&c.tcp).write_all(&record[..500]).expect("first half");
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 2000];
            d.read(&mut buf).map(|n| buf[..n].to_vec())
        });
        arrivals
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("half a record is an arrival");
        (&c.tcp).write_all(&record[500..]).expect("second half");
        let got = reader.join().expect("reader").expect("read");
        assert_eq!(got, vec![7u8; 1000]);
    }

    #[test]
    fn a_flipped_byte_is_refused_at_its_record() {
        let (a, b) = pair();
        let (ka, kb) = keys(b"k", b"k").expect("keys");
        a.seal(ka, &[]);
        // Seal three records on `a`'s side into memory by writing them to
        // the socket, then tamper with the second one on the way.
        let mut raw = Wire::new(b.tcp.try_clone().expect("clone"));
        a.send_all(&[1u8; 10]).expect("send");
        a.send_all(&[2u8; 10]).expect("send");
        a.shutdown(Shutdown::Write).expect("shutdown");
        let mut wire = Vec::new();
        raw.read_to_end(&mut wire).expect("read");
        assert_eq!(wire.len(), 2 * (2 + 10 + 16));
        wire[28 + 5] ^= 1;
        let (c, mut d) = pair();
        d.seal(kb, &[]);
        (&c.tcp).write_all(&wire).expect("write");
        c.shutdown(Shutdown::Write).expect("shutdown");
        let mut buf = [0u8; 64];
        assert_eq!(d.read(&mut buf).expect("first record"), 10);
        let e = d.read(&mut buf).expect_err("second record");
        assert!(
            matches!(record_error(&e), Some(RecordError::Tampered(1))),
            "{e}"
        );
    }
}
