//! A raw-bytes client for hostile-peer tests (`hostile.rs`, `security.rs`):
//! std `TcpStream` + the library's frame encoder and decoder, talking to a
//! real `ftx recv`. Also the offers it sends and the checks made after a
//! hostile session (nothing outside OUT, a clean log, still serving).
//!
//! Every read has a deadline ([`IO_TIMEOUT`]) and every loop is bounded.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ftx::protocol::frame::{decode, result_status, to_bytes, DirHeader, FileHeader, Frame};
use md5::{Digest, Md5};

use super::{md5_hex, s, send, text, write_random, Receiver};

/// Longest wait for one answer from the receiver.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// MD5 of `data` as raw bytes, as a FILE header and RESULT carry it.
pub fn md5_of(data: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&Md5::digest(data));
    a
}

/// A FILE offer for `data` with mode 0o644.
pub fn file_offer(id: u32, path: &[u8], data: &[u8]) -> Frame {
    file_offer_mode(id, path, data, 0o644)
}

/// A FILE offer for `data` with the given mode.
pub fn file_offer_mode(id: u32, path: &[u8], data: &[u8], mode: u32) -> Frame {
    Frame::File(FileHeader {
        id,
        size: data.len() as u64,
        mode,
        mtime_s: 1_600_000_000,
        mtime_ns: 0,
        flags: 0,
        md5: md5_of(data),
        path: path.to_vec(),
    })
}

/// A DIR offer.
pub fn dir_offer(id: u32, path: &[u8], mode: u32) -> Frame {
    Frame::Dir(DirHeader {
        id,
        mode,
        mtime_s: 1_600_000_000,
        mtime_ns: 0,
        path: path.to_vec(),
    })
}

/// A raw connection to the receiver with a frame decoder on the read side.
pub struct Raw {
    pub stream: TcpStream,
    /// Set once [`Raw::seal`] did the encrypted handshake.
    wire: Option<ftx::secure::Wire>,
    /// The flags of the WELCOME [`Raw::hello`] got.
    welcome_flags: u32,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects, with read and write timeouts of [`IO_TIMEOUT`].
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to receiver");
        Raw::from_stream(stream)
    }

    /// An accepted connection (a fake server's), with the same timeouts.
    pub fn from_stream(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        Raw {
            stream,
            wire: None,
            welcome_flags: 0,
            buf: Vec::new(),
        }
    }

    /// Connects and does HELLO (agent "evil") → WELCOME; returns the
    /// WELCOME flags and the prologue of a sealed session's handshake.
    pub fn hello(addr: SocketAddr) -> (Raw, u32, Vec<u8>) {
        Raw::hello_with(addr, 0)
    }

    /// [`Raw::hello`] with these HELLO flags.
    pub fn hello_with(addr: SocketAddr, flags: u32) -> (Raw, u32, Vec<u8>) {
        let mut raw = Raw::connect(addr);
        let hello = Frame::Hello {
            version: ftx::protocol::limits::VERSION,
            flags,
            agent: "evil".into(),
        };
        raw.send(&hello);
        match raw.expect("WELCOME") {
            welcome @ Frame::Welcome { version, flags, .. } => {
                assert_eq!(version, ftx::protocol::limits::VERSION, "WELCOME version");
                raw.welcome_flags = flags;
                (raw, flags, ftx::secure::prologue(&hello, &welcome))
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// The encrypted handshake with `token` (after [`Raw::hello`] with the
    /// sealed flag): from now on frames go through records.
    pub fn seal(&mut self, token: &str, prologue: &[u8]) {
        let token = ftx::auth::Token::new(token.as_bytes());
        let cipher = if self.welcome_flags & ftx::secure::WELCOME_CHACHA != 0 {
            ftx::secure::Cipher::ChaChaPoly
        } else {
            ftx::secure::Cipher::AesGcm
        };
        let (init, first) =
            ftx::secure::Initiator::start(&token, prologue, cipher).expect("NOISE 1");
        self.send(&Frame::Noise { message: first });
        let Frame::Noise { message } = self.expect("NOISE") else {
            panic!("expected NOISE");
        };
        let keys = init
            .finish(&message)
            .expect("the receiver proves the token");
        assert!(self.buf.is_empty(), "nothing after NOISE");
        let wire = ftx::secure::Wire::new(self.stream.try_clone().expect("clone"));
        wire.seal(keys, &[]);
        wire.send_ready().expect("READY");
        self.wire = Some(wire);
        // The dialer says it offers (it is a sender).
        self.send(&Frame::Push);
    }

    /// HELLO → WELCOME with no authentication asked (flags 0), then PUSH:
    /// a sender's session.
    pub fn session(addr: SocketAddr) -> Raw {
        let (mut raw, flags, _) = Raw::hello(addr);
        assert_eq!(flags, 0, "WELCOME flags");
        raw.send(&Frame::Push);
        raw
    }

    pub fn write(&mut self, bytes: &[u8]) {
        match &self.wire {
            Some(w) => w.send_all(bytes),
            None => self.stream.write_all(bytes),
        }
        .expect("write to receiver");
    }

    /// [`Raw::write`] that says whether it went, instead of panicking.
    pub fn try_write(&mut self, bytes: &[u8]) -> bool {
        match &self.wire {
            Some(w) => w.send_all(bytes),
            None => self.stream.write_all(bytes),
        }
        .is_ok()
    }

    pub fn send(&mut self, frame: &Frame) {
        self.write(&to_bytes(frame));
    }

    /// The next frame, or `None` once the receiver closed the connection
    /// (EOF or reset). Panics if nothing comes within [`IO_TIMEOUT`] or the
    /// bytes are not a frame.
    pub fn next(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut chunk = [0u8; 4096];
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("receiver sent bytes that are not a frame: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "no complete frame from the receiver within {IO_TIMEOUT:?}"
            );
            let got = match &mut self.wire {
                Some(w) => w.read(&mut chunk),
                None => self.stream.read(&mut chunk),
            };
            match got {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed in the middle of a frame: {:?}",
                        self.buf
                    );
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("receiver silent for {IO_TIMEOUT:?}")
                }
                Err(_) => return None, // reset: closed
            }
        }
    }

    /// The next frame; panics if the connection closed instead.
    pub fn expect(&mut self, what: &str) -> Frame {
        self.next()
            .unwrap_or_else(|| panic!("receiver closed the connection; expected {what}"))
    }

    /// Expects ERROR `code` and then the close; returns the message.
    pub fn expect_error(&mut self, code: u16) -> String {
        match self.next() {
            Some(Frame::Error { code: got, message }) => {
                assert_eq!(got, code, "ERROR code (message {message:?})");
                assert!(!message.is_empty(), "ERROR explains itself");
                assert!(self.next().is_none(), "the receiver closes after an ERROR");
                message
            }
            other => panic!("expected ERROR {code}, got {other:?}"),
        }
    }

    /// Expects a RESULT that is not OK; returns its message.
    pub fn expect_failed(&mut self) -> String {
        match self.expect("RESULT") {
            Frame::Result {
                status, message, ..
            } => {
                assert_ne!(status, result_status::OK, "{message}");
                message
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
    }

    /// Expects the session to end: an ERROR (code checked if given) and
    /// then the close, or the close right away.
    pub fn expect_error_or_close(&mut self, code: Option<u16>) {
        match self.next() {
            None => {}
            Some(Frame::Error { code: got, message }) => {
                if let Some(code) = code {
                    assert_eq!(got, code, "ERROR code (message {message:?})");
                }
                assert!(self.next().is_none(), "the receiver closes after an ERROR");
            }
            Some(other) => panic!("expected ERROR or a close, got {other:?}"),
        }
    }

    /// Offers `frame` and expects REJECT with `code` for `id`; returns the
    /// message.
    pub fn expect_reject(&mut self, frame: &Frame, id: u32, code: u16) -> String {
        self.send(frame);
        match self.expect("REJECT") {
            Frame::Reject {
                id: got,
                code: c,
                message,
            } => {
                assert_eq!(got, id, "REJECT id");
                assert_eq!(c, code, "REJECT code for {frame:?} (message {message:?})");
                assert!(!message.is_empty(), "REJECT explains itself");
                message
            }
            other => panic!("expected REJECT {code} for {frame:?}, got {other:?}"),
        }
    }

    /// Offers a DIR and expects RESULT ok.
    pub fn make_dir(&mut self, id: u32, path: &str, mode: u32) {
        self.send(&dir_offer(id, path.as_bytes(), mode));
        match self.expect("RESULT") {
            Frame::Result {
                id: got, status, ..
            } => {
                assert_eq!(got, id);
                assert_eq!(status, result_status::OK, "RESULT status for DIR {path}");
            }
            other => panic!("expected RESULT for DIR {path}, got {other:?}"),
        }
    }

    /// Sends the BODY of accepted file `id` from offset 0: all of `data`.
    /// Offers `data` as `name` (id `id`), expects ACCEPT at 0 and sends
    /// the BODY frame, leaving its bytes to the caller.
    pub fn start_body(&mut self, id: u32, name: &[u8], data: &[u8]) {
        self.send(&file_offer(id, name, data));
        match self.expect("ACCEPT") {
            Frame::Accept { id: got, offset: 0 } if got == id => {}
            other => panic!("expected ACCEPT {id} at 0, got {other:?}"),
        }
        self.send(&Frame::Body {
            id,
            offset: 0,
            length: data.len() as u64,
        });
    }

    pub fn send_body(&mut self, id: u32, data: &[u8]) {
        self.send(&Frame::Body {
            id,
            offset: 0,
            length: data.len() as u64,
        });
        self.write(data);
    }

    /// Offers a file and sends it completely; expects RESULT ok.
    pub fn send_file(&mut self, offer: &Frame, data: &[u8]) {
        let Frame::File(h) = offer else {
            panic!("not a FILE: {offer:?}")
        };
        let (id, name) = (h.id, String::from_utf8_lossy(&h.path).into_owned());
        self.send(offer);
        match self.expect("ACCEPT") {
            Frame::Accept { id: got, offset } => {
                assert_eq!((got, offset), (id, 0), "ACCEPT for {name}");
            }
            other => panic!("expected ACCEPT for {name}, got {other:?}"),
        }
        self.send_body(id, data);
        match self.expect("RESULT") {
            Frame::Result {
                id: got,
                status,
                md5,
                ..
            } => {
                assert_eq!(got, id);
                assert_eq!(status, result_status::OK, "RESULT status for {name}");
                assert_eq!(md5, md5_of(data), "RESULT md5 for {name}");
            }
            other => panic!("expected RESULT for {name}, got {other:?}"),
        }
    }

    /// Offers a good file (mode 0o644) and sends it completely; expects
    /// RESULT ok.
    pub fn send_good_file(&mut self, id: u32, name: &str, data: &[u8]) {
        self.send_file(&file_offer(id, name.as_bytes(), data), data);
    }

    /// END → SUMMARY; returns (files_ok, files_failed). Does not look at
    /// what follows (see [`Raw::end`]).
    pub fn summary(&mut self) -> (u32, u32) {
        self.send(&Frame::End { flags: 0 });
        match self.expect("SUMMARY") {
            Frame::Summary {
                files_ok,
                files_failed,
                ..
            } => (files_ok, files_failed),
            other => panic!("expected SUMMARY, got {other:?}"),
        }
    }

    /// END → SUMMARY, then the close; returns (files_ok, files_failed).
    pub fn end(&mut self) -> (u32, u32) {
        let r = self.summary();
        assert!(self.next().is_none(), "receiver closes after SUMMARY");
        r
    }
}

// ---------------------------------------------------------------------------
// Checks after a hostile session
// ---------------------------------------------------------------------------

/// Paths created under `$T` between two snapshots.
pub fn created(before: &BTreeSet<PathBuf>, after: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    after.difference(before).cloned().collect()
}

/// Asserts that everything new under `$T` lies inside `$T/out`, and that
/// nothing that was there before is gone.
pub fn assert_nothing_outside_out(before: &BTreeSet<PathBuf>, after: &BTreeSet<PathBuf>) {
    let stray: Vec<PathBuf> = created(before, after)
        .into_iter()
        .filter(|p| !p.starts_with("out"))
        .collect();
    assert!(stray.is_empty(), "created outside OUT: {stray:?}");
    let gone: Vec<&PathBuf> = before.difference(after).collect();
    assert!(gone.is_empty(), "removed by the receiver: {gone:?}");
}

/// No byte below 0x20 except '\n', no DEL, no C1 control in `text`.
pub fn assert_no_raw_controls(text: &str) {
    let bad: Vec<(usize, char)> = text
        .char_indices()
        .filter(|&(_, c)| {
            (c < ' ' && c != '\n') || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "raw control characters {bad:?} in receiver stderr:\n{}",
        text.escape_debug()
    );
}

/// A normal `ftx send` of a fresh file to `rx` succeeds: the receiver is
/// alive and serving. `tag` keeps the names of several calls apart.
pub fn assert_still_serves(rx: &mut Receiver, tag: &str) {
    assert!(rx.is_running(), "receiver died; stderr:\n{}", rx.stderr());
    let src = tempfile::tempdir().expect("tempdir");
    let name = format!("after-{tag}.bin");
    let file = src.path().join(&name);
    write_random(&file, 100_000, 5);
    let out = send(&[s(&file)], rx.addr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ftx send after the hostile session\n--- stderr ---\n{}\n--- receiver stderr ---\n{}",
        text(&out.stderr),
        rx.stderr()
    );
    assert_eq!(md5_hex(rx.out.join(&name)), md5_hex(&file));
}

/// A state file as the store writes it (see `src/store/state.rs`), for a
/// file of `size` bytes and digest `md5`, vouching that the partial's
/// first block hashes to `xxh3` and that the MD5 state after it is
/// `md5_state`.
pub fn forged_state(size: u64, md5: &[u8; 16], xxh3: u64, md5_state: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"FTXPART1");
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(md5);
    v.extend_from_slice(&ftx::store::BLOCK.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&(md5_state.len() as u16).to_be_bytes());
    v.extend_from_slice(&xxh3.to_be_bytes());
    v.extend_from_slice(md5_state);
    let trailer = xxhash_rust::xxh3::xxh3_64(&v);
    v.extend_from_slice(&trailer.to_be_bytes());
    v
}
