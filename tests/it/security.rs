//! Security tests (issue 4), beyond what `hostile.rs` already covers: every
//! strict prefix of a session followed by EOF, random bytes as a greeting,
//! absurd sizes, connection floods, trickling clients, `--max-sessions`,
//! token authentication, bad output directories, what the sender skips,
//! name-length limits, conflicting entries, special mode bits, and peers
//! reaching into the receiver's own partial and state files.
//!
//! After each hostile case the same invariants are checked: nothing new
//! outside OUT, no final-named file without verified content, the receiver
//! still serves a normal `ftx send`, and its stderr holds no raw control
//! character and no panic.
//!
//! No sleeps are used to synchronise: every wait is a blocking read or a
//! process wait with a deadline, and every loop is bounded.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::raw::{
    assert_no_raw_controls, assert_nothing_outside_out, assert_still_serves, dir_offer, file_offer,
    file_offer_mode, forged_state, md5_of, Raw, IO_TIMEOUT,
};
use crate::common::{
    assert_status, assert_trees_arrived, dirs, ftx_cmd, ftx_cmd_unprivileged, md5_hex,
    md5_hex_bytes, names_in, run_with_timeout, s, send, send_as, send_cmd, snapshot_outside, text,
    write_random, Dirs, Receiver, SEND_TIMEOUT,
};
use ftx::protocol::frame::{
    decode, error_code, kind, reject_code, result_status, to_bytes, FileHeader, Frame,
};

/// Hard limit for commands expected to end at once (usage errors, bad OUT).
const QUICK: Duration = Duration::from_secs(20);
/// A token nobody would write by accident, so a leak is unmistakable.
const TOKEN: &str = "s3cret-Zq81xP-7hWm2kRv0nTe";
/// A wrong token, also never to be printed.
const WRONG_TOKEN: &str = "wr0ng-Vb27kQ-4pLs9dXc1uYa";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// True for the hidden files the receiver keeps beside a target while it
/// is being received: `.X.ftx-part`, `.X.ftx-state`, `.X.ftx-state.tmp`
/// (and their hashed forms for long names, `.HEX.ftx-hpart` ...).
fn is_partial_name(name: &str) -> bool {
    name.starts_with('.')
        && ftx::protocol::name::RESERVED_SUFFIXES
            .iter()
            .any(|s| name.ends_with(s))
}

/// Asserts that every regular file under `out` whose name is not a partial
/// or state name is one of `verified` (path relative to `out`, content),
/// with exactly that content; and that there is nothing but directories,
/// such files and partials (no symlink, FIFO, device...).
fn assert_only_verified_finals(out: &Path, verified: &[(&str, &[u8])], rx: &Receiver) {
    let mut stack = vec![PathBuf::new()];
    let mut problems = Vec::new();
    // Bounded: each directory is visited once (symlinks are not followed).
    while let Some(rel) = stack.pop() {
        let rd = fs::read_dir(out.join(&rel))
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", out.join(&rel).display()));
        for e in rd {
            let e = e.expect("dir entry");
            let rel = rel.join(e.file_name());
            let ft = e.file_type().expect("file type");
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_file() {
                if is_partial_name(&name) {
                    continue;
                }
                match verified.iter().find(|(p, _)| Path::new(p) == rel) {
                    None => problems.push(format!("unexpected final file {}", rel.display())),
                    Some((_, data)) => {
                        let got = md5_hex(out.join(&rel));
                        if got != md5_hex_bytes(data) {
                            problems.push(format!(
                                "{} holds unverified content (md5 {got})",
                                rel.display()
                            ));
                        }
                    }
                }
            } else {
                problems.push(format!("{} is neither a file nor a dir", rel.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "OUT must hold only verified files:\n  {}\n--- receiver stderr ---\n{}",
        problems.join("\n  "),
        rx.stderr()
    );
}

/// The receiver has not panicked and logged nothing raw.
fn assert_log_clean(rx: &Receiver) {
    let err = rx.stderr();
    assert!(!err.contains("panicked"), "receiver panicked:\n{err}");
    assert_no_raw_controls(&err);
}

/// A receiver on `$T/out` and a snapshot of `$T` taken when it started.
struct Fixture {
    d: Dirs,
    rx: Receiver,
    before: BTreeSet<PathBuf>,
}

impl Fixture {
    fn start(extra: &[&str]) -> Fixture {
        let d = dirs();
        let rx = Receiver::start(&d.out, extra);
        let before = snapshot_outside(d.t());
        Fixture { d, rx, before }
    }

    fn addr(&self) -> SocketAddr {
        self.rx.addr
    }

    fn out(&self) -> &Path {
        &self.d.out
    }

    /// The invariants after a hostile case: OUT holds only `verified`
    /// files (besides partials), nothing new outside OUT, the receiver still
    /// serves a normal send, and its log is clean. Then the receiver is
    /// stopped, so its complete stderr can be checked, and returned.
    fn finish(mut self, tag: &str, verified: &[(&str, &[u8])]) -> Receiver {
        assert_only_verified_finals(&self.d.out, verified, &self.rx);
        let after = snapshot_outside(self.d.t());
        assert_nothing_outside_out(&self.before, &after);
        assert_log_clean(&self.rx);
        assert_still_serves(&mut self.rx, tag);
        self.stop()
    }

    /// Kills the receiver (which also waits for its output to be read to
    /// the end), checks the whole log, and returns it.
    fn stop(mut self) -> Receiver {
        self.rx.kill();
        assert_log_clean(&self.rx);
        self.rx
    }
}

// ---------------------------------------------------------------------------
// Raw reads (the client itself is crate::common::raw::Raw)
// ---------------------------------------------------------------------------

/// Decodes a complete byte string into frames; panics if the receiver
/// sent anything that is not whole frames.
fn frames_of(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    // Bounded: every iteration consumes at least one byte or returns.
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Ok(Some((f, used))) => {
                assert!(used > 0);
                at += used;
                frames.push(f);
            }
            Ok(None) => panic!(
                "receiver closed in the middle of a frame: {:?}",
                &bytes[at..]
            ),
            Err(e) => panic!("receiver sent bytes that are not a frame: {e}"),
        }
    }
    frames
}

/// Reads until the peer closes (EOF or reset) and returns what came.
/// Panics if the connection is still open after `limit`.
fn read_until_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the receiver did not close the connection within {limit:?} (got {got:?})"
        );
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return got, // reset: closed
        }
    }
}

/// Writes what it can; a receiver that already closed is not an error here.
fn write_lenient(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

// ---------------------------------------------------------------------------
// Truncated sessions and garbage
// ---------------------------------------------------------------------------

#[test]
fn every_strict_prefix_of_a_session_then_eof_leaves_nothing_unverified() {
    let fx = Fixture::start(&[]);
    let name = "prefix.bin";
    let data = random_bytes(3000, 42);

    let mut session = to_bytes(&Frame::Hello {
        version: ftx::protocol::limits::VERSION,
        flags: 0,
        agent: "prefix".into(),
    });
    let hello_end = session.len();
    session.extend(to_bytes(&Frame::Push));
    session.extend(to_bytes(&file_offer(1, name.as_bytes(), &data)));
    let file_end = session.len();
    session.extend(to_bytes(&Frame::Body {
        id: 1,
        offset: 0,
        length: data.len() as u64,
    }));
    let body_start = session.len();
    session.extend_from_slice(&data);
    let body_end = session.len();
    session.extend(to_bytes(&Frame::End { flags: 0 }));

    // Every prefix of the control frames (HELLO, FILE, BODY header), a
    // handful inside the body, and every strict prefix ending inside END.
    let mut cuts: Vec<usize> = (0..=body_start).collect();
    cuts.extend([1, 2, 1499, 2048, data.len() - 1].map(|k| body_start + k));
    cuts.extend(body_end..session.len());

    let final_path = fx.out().join(name);
    for &cut in &cuts {
        let mut stream =
            TcpStream::connect_timeout(&fx.addr(), IO_TIMEOUT).expect("connect to receiver");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        write_lenient(&mut stream, &session[..cut]);
        let _ = stream.shutdown(Shutdown::Write);
        let answers = frames_of(&read_until_close(&mut stream, IO_TIMEOUT));
        let ctx = || format!("prefix of {cut} bytes: answers {answers:?}");

        if cut >= hello_end {
            assert!(
                matches!(answers.first(), Some(Frame::Welcome { .. })),
                "{}",
                ctx()
            );
        }
        if cut >= file_end {
            assert!(
                matches!(answers.get(1), Some(Frame::Accept { id: 1, offset: 0 })),
                "{}",
                ctx()
            );
        }
        if cut >= body_end {
            // The whole body arrived: the file is verified and in place.
            assert!(
                matches!(
                    answers.get(2),
                    Some(Frame::Result {
                        id: 1,
                        status: result_status::OK,
                        ..
                    })
                ),
                "{}",
                ctx()
            );
            assert_eq!(
                md5_hex(&final_path),
                md5_hex_bytes(&data),
                "verified content, {}",
                ctx()
            );
            fs::remove_file(&final_path).expect("remove the verified file for the next round");
        } else {
            assert!(
                fs::symlink_metadata(&final_path).is_err(),
                "final name exists without the whole body: {}\n--- receiver stderr ---\n{}",
                ctx(),
                fx.rx.stderr()
            );
        }
        for f in &answers {
            if let Frame::Error { code, .. } = f {
                assert_ne!(*code, error_code::INTERNAL, "{}", ctx());
            }
        }
        assert_only_verified_finals(fx.out(), &[], &fx.rx);
        assert_log_clean(&fx.rx);
    }
    fx.finish("prefixes", &[]);
}

#[test]
fn random_bytes_and_foreign_protocols_as_first_bytes_get_an_error_or_a_close() {
    let mut fx = Fixture::start(&[]);
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, len) in [1usize, 4, 5, 13, 64, 1000, 65_541, 200_000]
        .into_iter()
        .enumerate()
    {
        inputs.push((
            format!("{len} random bytes"),
            random_bytes(len, 1000 + i as u64),
        ));
    }
    // Random payloads behind every valid type byte, so the decoder gets
    // past the type check.
    let types = [
        kind::HELLO,
        kind::WELCOME,
        kind::NOISE,
        kind::FILE,
        kind::DIR,
        kind::BODY,
        kind::END,
        kind::ACCEPT,
        kind::SKIP,
        kind::REJECT,
        kind::RESULT,
        kind::SUMMARY,
        kind::ERROR,
    ];
    for (i, t) in types.into_iter().enumerate() {
        let mut b = vec![t, 0, 0];
        b.extend(random_bytes(60, 2000 + i as u64));
        inputs.push((format!("type 0x{t:02x} with a random payload"), b));
    }
    inputs.push((
        "HTTP POST".into(),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
    ));
    inputs.push(("SSH banner".into(), b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()));
    inputs.push((
        "TLS ClientHello header".into(),
        vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
    ));

    for (what, bytes) in &inputs {
        let mut stream =
            TcpStream::connect_timeout(&fx.addr(), IO_TIMEOUT).expect("connect to receiver");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        write_lenient(&mut stream, bytes);
        let _ = stream.shutdown(Shutdown::Write);
        let answers = frames_of(&read_until_close(&mut stream, IO_TIMEOUT));
        match answers.as_slice() {
            [] => {}
            [Frame::Error { code, message }] => {
                assert_eq!(
                    *code,
                    error_code::PROTOCOL,
                    "{what}: ERROR code (message {message:?})"
                );
                assert!(!message.is_empty(), "{what}: ERROR explains itself");
            }
            other => panic!("{what}: expected one ERROR or a close, got {other:?}"),
        }
        assert!(fx.rx.is_running(), "receiver died after {what}");
        assert_log_clean(&fx.rx);
    }
    let entries = names_in(fx.out());
    assert!(entries.is_empty(), "nothing written: {entries:?}");
    fx.finish("garbage", &[]);
}

#[test]
fn file_of_size_2_pow_64_minus_1_is_rejected_for_space_with_figures() {
    let fx = Fixture::start(&[]);
    let mut raw = Raw::session(fx.addr());
    for (id, size, name) in [
        (1u32, u64::MAX, &b"huge.bin"[..]),
        (2, 1 << 63, b"sub/huge2.bin"),
    ] {
        let offer = Frame::File(FileHeader {
            id,
            size,
            mode: 0o644,
            mtime_s: 1_600_000_000,
            mtime_ns: 0,
            flags: 0,
            md5: [0x11; 16],
            path: name.to_vec(),
        });
        let msg = raw.expect_reject(&offer, id, reject_code::NO_SPACE);
        assert!(
            msg.contains("need") && msg.contains("have"),
            "REJECT 12 names what is needed and what is free: {msg:?}"
        );
        assert!(
            msg.contains(&size.to_string()),
            "REJECT 12 gives the size needed ({size}): {msg:?}"
        );
    }
    // The session goes on.
    raw.send_good_file(3, "small.txt", b"small");
    assert_eq!(raw.end(), (1, 2), "SUMMARY files_ok, files_failed");

    // Nothing at all was created for the refused offers: no final name, no
    // partial, no state file.
    let top = names_in(fx.out());
    let sub = if fx.out().join("sub").is_dir() {
        names_in(&fx.out().join("sub"))
    } else {
        Vec::new()
    };
    assert!(
        top.iter().all(|n| n == "small.txt" || n == "sub") && sub.is_empty(),
        "a REJECT 12 must leave nothing behind; OUT holds {top:?}, OUT/sub holds {sub:?}"
    );
    fx.finish("huge", &[("small.txt", b"small")]);
}

// ---------------------------------------------------------------------------
// Floods, trickles, --max-sessions
// ---------------------------------------------------------------------------

/// Opens `n` connections that send nothing.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect()
}

fn source_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    let p = dir.join(name);
    write_random(&p, size, seed);
    p
}

#[test]
fn two_hundred_idle_connections_with_default_max_sessions_do_not_lock_out_a_sender() {
    // --timeout 2 makes the handshake deadline 2 s. Connections that have
    // not greeted take no session slot (they wait at the gate), so the
    // real sender gets in at once; the idle ones are dropped at the
    // deadline.
    let fx = Fixture::start(&["--timeout", "2"]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "real.bin", 500_000, 3);
    let mut idle = open_idle(fx.addr(), 200);

    let t0 = Instant::now();
    let out = send(&[s(&file)], fx.addr());
    let took = t0.elapsed();
    assert_status(&out, 0, "send while 200 idle connections are open");
    assert!(took < Duration::from_secs(30), "send took {took:?}");
    assert_eq!(md5_hex(fx.out().join("real.bin")), md5_hex(&file));

    // Every idle connection was ended by the receiver: refused as busy
    // (ERROR 4) or dropped at the handshake deadline (ERROR 5).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut busy, mut timed_out) = (0, 0);
    for (i, conn) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let answers = frames_of(&read_until_close(conn, left.max(Duration::from_millis(1))));
        match answers.as_slice() {
            [Frame::Error { code, message }] if *code == error_code::BUSY => {
                assert!(message.contains("busy"), "busy message: {message:?}");
                busy += 1;
            }
            [Frame::Error { code, .. }] if *code == error_code::TIMEOUT => timed_out += 1,
            other => panic!("idle connection {i}: expected ERROR 4 or 5, got {other:?}"),
        }
    }
    assert_eq!(busy + timed_out, 200);
    assert_eq!(
        timed_out, 200,
        "idle connections wait at the gate until the handshake deadline"
    );
    drop(idle);
    fx.finish(
        "idle-default",
        &[("real.bin", &fs::read(&file).expect("read"))],
    );
}

#[test]
fn two_hundred_idle_connections_under_max_sessions_300_do_not_delay_a_sender() {
    let fx = Fixture::start(&["--max-sessions", "300"]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "real.bin", 500_000, 4);
    let opened = Instant::now();
    let mut idle = open_idle(fx.addr(), 200);

    let out = send(&["--retry-for", "0", s(&file)], fx.addr());
    assert_status(&out, 0, "send while 200 idle connections are open");
    assert!(
        !text(&out.stderr).contains("retrying"),
        "no retry was needed:\n{}",
        text(&out.stderr)
    );
    assert_eq!(md5_hex(fx.out().join("real.bin")), md5_hex(&file));

    // The idle connections really were open all along (the handshake
    // deadline is 10 s; only checked if we are well inside it).
    if opened.elapsed() < Duration::from_secs(8) {
        for (i, conn) in idle.iter_mut().enumerate() {
            conn.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 1];
            match conn.read(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("idle connection {i} was not open during the send: {other:?}"),
            }
        }
    }
    drop(idle);
    fx.finish("idle-300", &[("real.bin", &fs::read(&file).expect("read"))]);
}

/// Sends `bytes` one at a time, waiting up to 500 ms after each for the
/// receiver to react. Returns when the receiver closes the connection: the
/// time since connecting, what it sent, and how many bytes went out.
fn trickle(addr: SocketAddr, bytes: &[u8]) -> (Duration, Vec<u8>, usize) {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(&[*b]).is_err() {
            return (start.elapsed(), got, i);
        }
        // The pacing: wait for an answer, at most until the slot ends.
        let slot_end = Instant::now() + Duration::from_millis(500);
        loop {
            let left = slot_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_read_timeout(Some(left)).expect("read timeout");
            match stream.read(&mut chunk) {
                Ok(0) => return (start.elapsed(), got, i + 1),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => return (start.elapsed(), got, i + 1),
            }
        }
    }
    panic!(
        "the receiver never closed a connection trickling {} bytes at 2 bytes/s",
        bytes.len()
    );
}

fn assert_dropped_at_deadline(what: &str, took: Duration, got: &[u8], sent: usize, total: usize) {
    assert!(
        took >= Duration::from_millis(1900),
        "{what}: dropped after {took:?}, before the 2 s handshake deadline"
    );
    assert!(
        took <= Duration::from_secs(6),
        "{what}: still open after {took:?}; the 2 s handshake deadline must hold even though bytes keep coming"
    );
    assert!(sent < total, "{what}: the trickle was still going");
    match frames_of(got).as_slice() {
        [] => {}
        [Frame::Error { code, .. }] => assert_eq!(*code, error_code::TIMEOUT, "{what}"),
        other => panic!("{what}: expected ERROR 5 or a close, got {other:?}"),
    }
}

#[test]
fn trickling_client_is_dropped_at_the_handshake_deadline() {
    let tok = tempfile::tempdir().expect("tempdir");
    let token_file = tok.path().join("token");
    write_secret(&token_file, format!("{TOKEN}\n").as_bytes());
    let fx = Fixture::start(&["--timeout", "2", "--token-file", s(&token_file)]);

    // One byte of HELLO every 500 ms.
    let hello = to_bytes(&Frame::Hello {
        version: ftx::protocol::limits::VERSION,
        flags: 0,
        agent: "t".repeat(100),
    });
    let (took, got, sent) = trickle(fx.addr(), &hello);
    assert_dropped_at_deadline("trickled HELLO", took, &got, sent, hello.len());

    // HELLO at once, then NOISE one byte at a time: the deadline covers the
    // whole handshake, NOISE included.
    let (mut raw, flags, _) = Raw::hello(fx.addr());
    assert_eq!(flags & 1, 1, "WELCOME says the session is sealed");
    let start = Instant::now();
    let auth = to_bytes(&Frame::Noise { message: [7; 48] });
    let mut closed_after = None;
    let mut chunk = [0u8; 256];
    let mut got = Vec::new();
    'bytes: for (i, b) in auth.iter().enumerate().take(auth.len() - 1) {
        if raw.stream.write_all(&[*b]).is_err() {
            closed_after = Some((start.elapsed(), i));
            break;
        }
        let slot_end = Instant::now() + Duration::from_millis(500);
        loop {
            let left = slot_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            raw.stream.set_read_timeout(Some(left)).expect("timeout");
            match raw.stream.read(&mut chunk) {
                Ok(0) => {
                    closed_after = Some((start.elapsed(), i + 1));
                    break 'bytes;
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {
                    closed_after = Some((start.elapsed(), i + 1));
                    break 'bytes;
                }
            }
        }
    }
    let (took, sent) = closed_after.expect("the receiver closed during a trickled AUTH");
    // The deadline counts from accept, before HELLO: at most ~2 s here.
    assert!(
        took <= Duration::from_secs(6),
        "trickled AUTH: still open after {took:?}"
    );
    assert!(sent < auth.len(), "the trickle was still going");
    match frames_of(&got).as_slice() {
        [] => {}
        [Frame::Error { code, .. }] => assert_eq!(*code, error_code::TIMEOUT),
        other => panic!("trickled AUTH: expected ERROR 5 or a close, got {other:?}"),
    }
    drop(raw);

    // The real sender with the token still gets through.
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "after-trickle.bin", 10_000, 8);
    let mut cmd = send_cmd();
    cmd.env("FTX_TOKEN", TOKEN)
        .arg(&file)
        .arg(fx.addr().to_string());
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "send with the token after the trickles");
    assert_only_verified_finals(
        fx.out(),
        &[("after-trickle.bin", &fs::read(&file).expect("read"))],
        &fx.rx,
    );
    let after = snapshot_outside(fx.d.t());
    assert_nothing_outside_out(&fx.before, &after);
    check_token_receiver_log(&mut fx.stop());
}

#[test]
fn max_sessions_1_refuses_a_second_connection_as_busy() {
    let fx = Fixture::start(&["--max-sessions", "1"]);
    // A connection that greets and then sends nothing holds the one slot
    // (after WELCOME only the 30 s idle timeout applies to it).
    let idle = Raw::session(fx.addr());
    // The busy refusal answers the second connection's HELLO: until it
    // greets, a connection takes no slot and is told nothing.
    let mut second = Raw::connect(fx.addr());
    second.send(&Frame::Hello {
        version: ftx::protocol::limits::VERSION,
        flags: 0,
        agent: "second".into(),
    });
    let msg = second.expect_error(error_code::BUSY);
    assert!(
        msg.contains("busy") && msg.contains("try again"),
        "the busy refusal says what happened and what to do: {msg:?}"
    );

    // A sender that may not retry fails, and says the receiver is busy.
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "busy.bin", 10_000, 9);
    let out = send(&["--retry-for", "0", s(&file)], fx.addr());
    assert_ne!(out.status.code(), Some(0), "send to a full receiver fails");
    assert!(
        text(&out.stderr).contains("busy"),
        "the sender says the receiver is busy:\n{}",
        text(&out.stderr)
    );
    assert!(!fx.out().join("busy.bin").exists());

    // Once the slot is free, a sender with retries gets in.
    drop(idle);
    let out = send(&[s(&file)], fx.addr());
    assert_status(&out, 0, "send once the idle connection is gone");
    let data = fs::read(&file).expect("read");
    let rx = fx.finish("busy", &[("busy.bin", &data)]);
    assert!(
        rx.stderr().contains("refused") && rx.stderr().contains("--max-sessions"),
        "refusals are logged:\n{}",
        rx.stderr()
    );
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

fn send_with_env(file: &Path, addr: SocketAddr, token: Option<&str>, extra: &[&str]) -> Output {
    let mut args = extra.to_vec();
    args.push(s(file));
    send_as(token, &args, addr)
}

fn assert_no_secret(what: &str, haystack: &str) {
    for secret in [TOKEN, WRONG_TOKEN] {
        assert!(
            !haystack.contains(secret),
            "{what} leaks a token:\n{haystack}"
        );
    }
}

/// The argv of a process, from /proc (what `ps` shows).
fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Runs the token checks against a receiver that requires [`TOKEN`].
fn check_token_receiver(fx: &mut Fixture, tag: &str) {
    let src = tempfile::tempdir().expect("tempdir");
    let mut outputs = Vec::new();

    // The right token: accepted.
    let good = source_file(src.path(), &format!("good-{tag}.bin"), 50_000, 10);
    let out = send_with_env(&good, fx.addr(), Some(TOKEN), &[]);
    assert_status(&out, 0, "send with the right token");
    assert_eq!(
        md5_hex(fx.out().join(good.file_name().expect("name"))),
        md5_hex(&good)
    );
    outputs.push(out);

    // The right token from a file on the sender's side too.
    let tok = tempfile::tempdir().expect("tempdir");
    let token_file = tok.path().join("t");
    write_secret(&token_file, format!("{TOKEN}\n").as_bytes());
    let good2 = source_file(src.path(), &format!("good2-{tag}.bin"), 5_000, 11);
    let out = send_with_env(&good2, fx.addr(), None, &["--token-file", s(&token_file)]);
    assert_status(&out, 0, "send with --token-file");
    outputs.push(out);

    // A wrong token: exit 6, nothing written.
    let wrong = source_file(src.path(), &format!("wrong-{tag}.bin"), 5_000, 12);
    let out = send_with_env(&wrong, fx.addr(), Some(WRONG_TOKEN), &[]);
    assert_status(&out, 6, "send with a wrong token");
    assert!(
        text(&out.stderr).contains("authentication"),
        "the sender says authentication failed:\n{}",
        text(&out.stderr)
    );
    outputs.push(out);

    // No token: exit 6, and the sender says how to give one.
    let none = source_file(src.path(), &format!("none-{tag}.bin"), 5_000, 13);
    let out = send_with_env(&none, fx.addr(), None, &[]);
    assert_status(&out, 6, "send without a token");
    assert!(
        text(&out.stderr).contains("FTX_TOKEN"),
        "the sender mentions FTX_TOKEN:\n{}",
        text(&out.stderr)
    );
    outputs.push(out);

    for out in &outputs {
        assert_no_secret("sender stdout", &text(&out.stdout));
        assert_no_secret("sender stderr", &text(&out.stderr));
    }
    for f in [&wrong, &none] {
        let name = f.file_name().expect("name");
        assert!(
            !fx.out().join(name).exists(),
            "nothing is written without the right token"
        );
    }

    // Raw: a NOISE message that is not from the token gets ERROR 3.
    let (mut raw, flags, _) = Raw::hello(fx.addr());
    assert_eq!(flags & 1, 1, "WELCOME flag bit0: sealed");
    raw.send(&Frame::Noise { message: [0u8; 48] });
    let msg = raw.expect_error(error_code::AUTH);
    assert_no_secret("ERROR 3 message", &msg);

    // Raw: skipping NOISE and offering a file gets ERROR 3.
    let (mut raw, _, _) = Raw::hello(fx.addr());
    raw.send(&file_offer(1, b"sneaky.txt", b"x"));
    raw.expect_error(error_code::AUTH);

    // Raw: the handshake with another session's prologue (a WELCOME of
    // another receiver, say) fails like a wrong token.
    let (mut raw, _, prologue) = Raw::hello(fx.addr());
    let mut other = prologue.clone();
    other.push(0);
    let token = ftx::auth::Token::new(TOKEN.as_bytes());
    let cipher = ftx::secure::Cipher::preferred(None);
    let (_, first) = ftx::secure::Initiator::start(&token, &other, cipher).expect("NOISE 1");
    raw.send(&Frame::Noise { message: first });
    raw.expect_error(error_code::AUTH);

    // Raw: the right token opens a sealed session (the checks above are
    // not just refusing everything).
    let (mut first, _, prologue) = Raw::hello(fx.addr());
    first.seal(TOKEN, &prologue);
    let name = format!("raw-{tag}.txt");
    first.send_good_file(1, &name, b"authenticated");
    assert_eq!(first.end(), (1, 0));

    let entries = names_in(fx.out());
    assert!(
        !entries.iter().any(|n| n.contains("sneaky")),
        "nothing from unauthenticated sessions: {entries:?}"
    );
    assert_no_secret("receiver argv", &cmdline(fx.rx.pid()));
}

/// After the receiver was stopped: its whole output holds no token and no
/// "no token" warning.
fn check_token_receiver_log(rx: &mut Receiver) {
    let err = rx.stderr();
    assert!(
        !err.contains("anyone"),
        "no 'no token' warning when a token is set:\n{err}"
    );
    assert_no_secret("receiver stderr", &err);
    assert_no_secret("receiver stdout", &rx.lines().join("\n"));
}

/// The token checks made several failed handshakes from 127.0.0.1 (a
/// wrong token, raw NOISE messages): the first is logged, the rest are
/// counted (a line a minute), not one line each.
fn check_failures_logged_once(rx: &Receiver) {
    let err = rx.stderr();
    assert_eq!(
        err.matches("authentication failed").count(),
        1,
        "failed handshakes are logged once, then counted:\n{err}"
    );
    assert!(
        err.contains("further failed handshakes from 127.0.0.1 are counted"),
        "{err}"
    );
}

/// Writes a secret file readable by its owner only (as a token file must
/// be).
fn write_secret(path: &Path, contents: &[u8]) {
    fs::write(path, contents).expect("write token");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

#[test]
fn token_file_on_the_receiver_admits_only_senders_with_the_token() {
    let tok = tempfile::tempdir().expect("tempdir");
    let token_file = tok.path().join("token");
    write_secret(&token_file, format!("{TOKEN}\n").as_bytes());
    let mut fx = Fixture::start(&["--token-file", s(&token_file)]);
    check_token_receiver(&mut fx, "file");
    check_failures_logged_once(&fx.rx);
    let after = snapshot_outside(fx.d.t());
    assert_nothing_outside_out(&fx.before, &after);
    check_token_receiver_log(&mut fx.stop());
}

#[test]
fn ftx_token_env_on_the_receiver_works_the_same() {
    let d = dirs();
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&d.out)
        .env("FTX_TOKEN", TOKEN);
    let rx = Receiver::spawn(cmd, &d.out);
    let before = snapshot_outside(d.t());
    let mut fx = Fixture { d, rx, before };
    check_token_receiver(&mut fx, "env");
    check_failures_logged_once(&fx.rx);
    let after = snapshot_outside(fx.d.t());
    assert_nothing_outside_out(&fx.before, &after);
    check_token_receiver_log(&mut fx.stop());
}

#[test]
fn the_token_is_never_accepted_on_the_command_line() {
    let inline = format!("--token={TOKEN}");
    for args in [
        vec!["send", "--token", TOKEN, "some-file", "127.0.0.1:9"],
        vec!["send", &inline, "some-file", "127.0.0.1:9"],
        vec!["recv", "--token", TOKEN, "--port", "0"],
    ] {
        let mut cmd = ftx_cmd();
        cmd.args(&args);
        let out = run_with_timeout(cmd, QUICK);
        assert_status(&out, 2, &format!("ftx {}", args.join(" ")));
    }
}

#[test]
fn unreadable_or_empty_token_file_stops_the_receiver_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).expect("mkdir");
    let empty = tmp.path().join("empty-token");
    write_secret(&empty, b"\n");
    for tf in [tmp.path().join("missing-token"), empty] {
        let mut cmd = ftx_cmd();
        cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
            .arg(&out_dir)
            .arg("--token-file")
            .arg(&tf);
        let out = run_with_timeout(cmd, QUICK);
        assert!(
            !out.status.success(),
            "recv with {} must fail",
            tf.display()
        );
        assert!(!text(&out.stdout).contains("listening on"));
        assert!(
            text(&out.stderr).contains(s(&tf)),
            "the error names the token file:\n{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn receiver_without_a_token_warns_and_a_sender_with_one_will_not_send_in_the_clear() {
    let fx = Fixture::start(&[]);
    // NOISE that was not asked for is a protocol error.
    let mut raw = Raw::session(fx.addr());
    raw.send(&Frame::Noise { message: [1; 48] });
    raw.expect_error(error_code::PROTOCOL);
    // A sender with a token refuses to send unencrypted: exit 6, it says
    // why, and nothing arrives.
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "with-token.bin", 1000, 14);
    let out = send_with_env(&file, fx.addr(), Some(TOKEN), &[]);
    assert_status(&out, 6, "send with a token to a receiver without one");
    assert!(
        text(&out.stderr).contains("would not be encrypted"),
        "{}",
        text(&out.stderr)
    );
    assert_no_secret("sender stderr", &text(&out.stderr));
    // Without the token, the same send goes through in the clear.
    let out = send_with_env(&file, fx.addr(), None, &[]);
    assert_status(&out, 0, "send without a token to a receiver without one");
    let data = fs::read(&file).expect("read");
    let rx = fx.finish("no-token", &[("with-token.bin", &data)]);
    // Complete stderr (the receiver has been stopped).
    let err = rx.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains("anyone")),
        "a receiver without a token warns that anyone can write:\n{err}"
    );
}

// ---------------------------------------------------------------------------
// Bad output directories
// ---------------------------------------------------------------------------

fn assert_recv_refuses_out(out_dir: &Path, what: &str) {
    assert_recv_refuses_out_as(ftx_cmd(), out_dir, what);
}

fn assert_recv_refuses_out_as(mut cmd: std::process::Command, out_dir: &Path, what: &str) {
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(out_dir);
    let out = run_with_timeout(cmd, QUICK);
    assert!(
        !out.status.success(),
        "{what}: recv must fail, got {:?}",
        out.status
    );
    assert!(
        !text(&out.stdout).contains("listening on"),
        "{what}: it must not listen:\n{}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(s(out_dir)) && err.contains("output directory"),
        "{what}: the error names the output directory:\n{err}"
    );
}

#[test]
fn receiver_refuses_a_missing_or_unwritable_output_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let missing = tmp.path().join("does-not-exist");
    assert_recv_refuses_out(&missing, "missing OUT");
    assert!(!missing.exists(), "recv did not create it");

    let file = tmp.path().join("a-file");
    fs::write(&file, b"not a dir").expect("write");
    let before = snapshot_outside(tmp.path());
    assert_recv_refuses_out(&file, "OUT is a regular file");
    assert_eq!(fs::read(&file).expect("read"), b"not a dir");

    // Even root cannot create entries in /proc/self.
    let proc_self = Path::new("/proc/self");
    if proc_self.is_dir() {
        assert_recv_refuses_out(proc_self, "OUT is /proc/self");
    }

    // Root ignores permission bits: as root (CI), the receiver runs as
    // `nobody`, for whom a mode-0555 directory is read-only.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod T");
    let ro = tmp.path().join("read-only");
    fs::create_dir(&ro).expect("mkdir");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
    assert_recv_refuses_out_as(ftx_cmd_unprivileged(), &ro, "OUT is mode 0555");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).expect("chmod back");
    let after = snapshot_outside(tmp.path());
    let mut expected = before;
    expected.insert(PathBuf::from("read-only"));
    assert_eq!(after, expected, "recv created nothing");
}

// ---------------------------------------------------------------------------
// What the sender skips
// ---------------------------------------------------------------------------

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

#[test]
fn symlinks_arrive_as_links_unsafe_ones_are_refused_and_a_fifo_fails_the_run() {
    let fx = Fixture::start(&[]);
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join("sub")).expect("mkdir");
    fs::write(tree.join("a.txt"), b"alpha\n").expect("write");
    fs::write(tree.join("sub/b.txt"), b"beta\n").expect("write");
    mkfifo(&tree.join("pipe"));
    // Symlinks to a file inside, to a secret outside, to a directory
    // outside, and a dangling one.
    let secret_dir = src.path().join("secret");
    fs::create_dir(&secret_dir).expect("mkdir");
    fs::write(secret_dir.join("key"), b"do not send\n").expect("write");
    symlink("a.txt", tree.join("link-inside")).expect("symlink");
    symlink(secret_dir.join("key"), tree.join("link-secret")).expect("symlink");
    symlink(&secret_dir, tree.join("link-dir")).expect("symlink");
    symlink("/nonexistent/nowhere", tree.join("link-dangling")).expect("symlink");

    let out = send(&[s(&tree)], fx.addr());
    // The absolute links are refused by the receiver (5, which outranks
    // the FIFO left behind, 1).
    assert_status(&out, 5, "send a tree with a FIFO and symlinks");
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("pipe") && l.contains("FIFO")),
        "the FIFO is named:\n{err}"
    );
    assert!(err.contains("1 left out"), "and counted:\n{err}");
    for name in ["link-secret", "link-dir", "link-dangling"] {
        assert!(
            err.lines()
                .any(|l| l.contains(name) && l.contains("unsafe link")),
            "{name} is refused as an unsafe link:\n{err}"
        );
    }
    let got = fx.out().join("tree");
    assert_eq!(fs::read(got.join("a.txt")).expect("a.txt"), b"alpha\n");
    assert_eq!(fs::read(got.join("sub/b.txt")).expect("b.txt"), b"beta\n");
    assert_eq!(
        fs::read_link(got.join("link-inside")).expect("a symlink"),
        Path::new("a.txt"),
        "the link inside the tree arrives as a link"
    );
    assert_eq!(
        names_in(&got),
        ["a.txt", "link-inside", "sub"],
        "no FIFO and no unsafe link was created on the receiver"
    );

    // Asked to leave them out: nothing fails, each is still listed.
    let again = send(&["--skip-special", "--no-links", s(&tree)], fx.addr());
    assert_status(&again, 0, "with --skip-special --no-links");
    let err = text(&again.stderr);
    assert!(
        err.contains("left out") && err.contains("5 left out"),
        "{err}"
    );
    // The fixture's final check admits files and directories only.
    fs::remove_file(got.join("link-inside")).expect("remove the link");
    fx.finish(
        "fifo",
        &[("tree/a.txt", b"alpha\n"), ("tree/sub/b.txt", b"beta\n")],
    );
}

#[test]
fn sender_reports_an_unreadable_file_by_name_and_sends_the_rest() {
    // Root reads a mode-000 file anyway: as root (CI) the sender runs as
    // `nobody`, for whom it is unreadable.
    let fx = Fixture::start(&[]);
    let src = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).expect("chmod T");
    let tree = src.path().join("tree");
    fs::create_dir(&tree).expect("mkdir");
    fs::write(tree.join("ok.txt"), b"fine\n").expect("write");
    let locked = tree.join("locked.txt");
    fs::write(&locked, b"secret\n").expect("write");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");

    let mut cmd = ftx_cmd_unprivileged();
    cmd.args(["send", s(&tree), &fx.addr().to_string()]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).expect("chmod back");
    assert_status(&out, 1, "send a tree with an unreadable file");
    assert!(
        text(&out.stderr).contains("locked.txt"),
        "the unreadable file is named:\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(fx.out().join("tree/ok.txt")).expect("ok.txt"),
        b"fine\n"
    );
    assert!(!fx.out().join("tree/locked.txt").exists());
    fx.finish("unreadable", &[("tree/ok.txt", b"fine\n")]);
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

#[test]
fn names_at_the_255_byte_component_limit_work_end_to_end() {
    let fx = Fixture::start(&[]);
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("long");
    fs::create_dir(&tree).expect("mkdir");
    // 240: the longest name whose `.NAME.ftx-state.tmp` fits in 255 bytes;
    // 241, 246, 247: just over the partial/state limits; 255: the maximum.
    for (len, c) in [(240, 'a'), (241, 'b'), (246, 'c'), (247, 'd'), (255, 'e')] {
        let name = c.to_string().repeat(len);
        write_random(tree.join(&name), 1000 + len as u64, len as u64);
    }
    let sub: String = "s".repeat(255);
    fs::create_dir(tree.join(&sub)).expect("mkdir 255");
    write_random(tree.join(&sub).join("f".repeat(255)), 4096, 1);

    let out = send(&[s(&tree)], fx.addr());
    assert_status(&out, 0, "send names of 240..=255 bytes");
    assert_trees_arrived(&tree, fx.out().join("long"));

    // Interrupted transfers of a 240- and a 255-byte name leave partial and
    // state files whose names fit; the next send resumes from them.
    let data = random_bytes(6 << 20, 77);
    let mut verified: Vec<(String, Vec<u8>)> = Vec::new();
    for (len, c) in [(240usize, 'x'), (255, 'y')] {
        let name = c.to_string().repeat(len);
        let mut raw = Raw::session(fx.addr());
        raw.send(&file_offer(1, name.as_bytes(), &data));
        match raw.expect("ACCEPT") {
            Frame::Accept { id: 1, offset: 0 } => {}
            other => panic!("{len}-byte name: expected ACCEPT at 0, got {other:?}"),
        }
        raw.send(&Frame::Body {
            id: 1,
            offset: 0,
            length: data.len() as u64,
        });
        raw.write(&data[..5 << 20]);
        raw.stream.shutdown(Shutdown::Write).expect("half-close");
        let _ = read_until_close(&mut raw.stream, IO_TIMEOUT);
        let present = names_in(fx.out());
        assert!(
            !present.contains(&name),
            "{len}-byte name: no final name yet"
        );
        assert!(
            present.iter().any(
                |n| (n.ends_with(".ftx-state") || n.ends_with(".ftx-hstate")) && n.len() <= 255
            ),
            "{len}-byte name: a state file was kept: {present:?}"
        );

        let file = src.path().join(&name);
        fs::write(&file, &data).expect("write source");
        let out = send(&[s(&file)], fx.addr());
        assert_status(&out, 0, &format!("resume of a {len}-byte name"));
        assert!(
            text(&out.stderr).contains("resuming"),
            "{len}-byte name: the send resumed from the kept state:\n{}",
            text(&out.stderr)
        );
        assert_eq!(md5_hex(fx.out().join(&name)), md5_hex_bytes(&data));
        let left: Vec<String> = names_in(fx.out())
            .into_iter()
            .filter(|n| is_partial_name(n))
            .collect();
        assert!(left.is_empty(), "{len}-byte name: leftovers {left:?}");
        verified.push((name, data.clone()));
    }

    let mut expected: Vec<(String, Vec<u8>)> = verified;
    for e in walk_files(&tree) {
        let rel = Path::new("long").join(e.strip_prefix(&tree).expect("under tree"));
        expected.push((s(&rel).to_owned(), fs::read(&e).expect("read")));
    }
    let refs: Vec<(&str, &[u8])> = expected
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    fx.finish("long-names", &refs);
}

/// Regular files under `root`, recursively.
fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    files
}

#[test]
fn names_over_the_limits_are_rejected_as_unsafe() {
    let fx = Fixture::start(&[]);
    let mut raw = Raw::session(fx.addr());
    let data = b"x";

    // A 256-byte component, alone and as a directory on the way.
    let c256 = "a".repeat(256);
    raw.expect_reject(
        &file_offer(1, c256.as_bytes(), data),
        1,
        reject_code::UNSAFE_NAME,
    );
    raw.expect_reject(
        &file_offer(2, format!("{c256}/f").as_bytes(), data),
        2,
        reject_code::UNSAFE_NAME,
    );
    raw.expect_reject(
        &dir_offer(3, c256.as_bytes(), 0o755),
        3,
        reject_code::UNSAFE_NAME,
    );

    // 129 components; 128 is still fine.
    let deep129 = vec!["d"; 129].join("/");
    raw.expect_reject(
        &file_offer(4, deep129.as_bytes(), data),
        4,
        reject_code::UNSAFE_NAME,
    );
    raw.expect_reject(
        &dir_offer(5, deep129.as_bytes(), 0o755),
        5,
        reject_code::UNSAFE_NAME,
    );
    let mut deep128 = vec!["d"; 127];
    deep128.push("f");
    let deep128 = deep128.join("/");
    raw.send_good_file(6, &deep128, data);

    // 4097 bytes made of valid components (16 × 255 + "/b" + slashes): only
    // the total length is over. The frame stays under the 64 KiB cap.
    let long = format!("{}/b", vec!["l".repeat(255); 16].join("/"));
    assert_eq!(long.len(), 4097);
    let offer = file_offer(7, long.as_bytes(), data);
    assert!(
        to_bytes(&offer).len() - 5 <= 65_536,
        "the frame is a legal control frame"
    );
    raw.expect_reject(&offer, 7, reject_code::UNSAFE_NAME);
    raw.expect_reject(
        &dir_offer(8, long.as_bytes(), 0o755),
        8,
        reject_code::UNSAFE_NAME,
    );
    assert_eq!(raw.end(), (1, 7), "SUMMARY files_ok, files_failed");

    assert!(!fx.out().join(&c256[..255]).exists());
    assert!(
        !fx.out().join("l".repeat(255)).exists(),
        "no part of the 4097-byte name"
    );
    assert_eq!(
        fs::read(fx.out().join(&deep128)).expect("128-deep file"),
        data
    );
    fx.finish("limits", &[(deep128.as_str(), data)]);
}

// ---------------------------------------------------------------------------
// Conflicts and modes
// ---------------------------------------------------------------------------

#[test]
fn entries_that_map_to_the_same_target_or_clash_in_type_are_rejected_13() {
    let fx = Fixture::start(&[]);
    let mut raw = Raw::session(fx.addr());
    let (first, second) = (&b"first version\n"[..], &b"second\n"[..]);

    // The same file name twice in one session: the second is a conflict
    // (not "exists", and never a replacement of the first).
    raw.send_good_file(1, "dup.txt", first);
    raw.expect_reject(&file_offer(2, b"dup.txt", second), 2, reject_code::CONFLICT);
    // The same directory twice.
    raw.make_dir(3, "dd", 0o755);
    raw.expect_reject(&dir_offer(4, b"dd", 0o755), 4, reject_code::CONFLICT);
    // A file, then an entry that needs it to be a directory.
    raw.send_good_file(5, "a", b"plain file");
    raw.expect_reject(&file_offer(6, b"a/b", b"x"), 6, reject_code::CONFLICT);
    raw.expect_reject(&dir_offer(7, b"a/c", 0o755), 7, reject_code::CONFLICT);
    // A directory, then a file with its name.
    raw.make_dir(8, "e/f", 0o755);
    raw.expect_reject(&file_offer(9, b"e", b"x"), 9, reject_code::CONFLICT);
    raw.expect_reject(&file_offer(10, b"e/f", b"x"), 10, reject_code::CONFLICT);
    let (ok, failed) = raw.end();
    assert_eq!(failed, 6, "SUMMARY files_failed");
    assert!(
        ok >= 2,
        "SUMMARY files_ok counts at least the two files: {ok}"
    );

    // Two sessions at once on the same target: the second is refused while
    // the first is receiving it.
    let data = random_bytes(100_000, 5);
    let mut a = Raw::session(fx.addr());
    a.send(&file_offer(1, b"race.bin", &data));
    assert!(matches!(a.expect("ACCEPT"), Frame::Accept { id: 1, .. }));
    a.send(&Frame::Body {
        id: 1,
        offset: 0,
        length: data.len() as u64,
    });
    a.write(&data[..10_000]);
    let mut b = Raw::session(fx.addr());
    b.expect_reject(
        &file_offer(1, b"race.bin", b"other"),
        1,
        reject_code::IN_PROGRESS,
    );
    assert_eq!(b.end(), (0, 1));
    a.write(&data[10_000..]);
    match a.expect("RESULT") {
        Frame::Result { status, .. } => assert_eq!(status, result_status::OK),
        other => panic!("expected RESULT, got {other:?}"),
    }
    assert_eq!(a.end(), (1, 0));

    assert_eq!(fs::read(fx.out().join("dup.txt")).expect("dup"), first);
    assert!(fx.out().join("dd").is_dir());
    assert!(fx.out().join("e/f").is_dir());
    assert!(!fx.out().join("a").is_dir());
    fx.finish(
        "conflicts",
        &[
            ("dup.txt", first),
            ("a", b"plain file"),
            ("race.bin", &data),
        ],
    );
}

#[test]
fn setuid_setgid_and_sticky_bits_are_never_applied() {
    let fx = Fixture::start(&[]);
    let mut raw = Raw::session(fx.addr());
    let cases: &[(&str, u32)] = &[
        ("suid", 0o4755),
        ("sgid", 0o2755),
        ("sticky", 0o1777),
        ("all", 0o7777),
        ("type-bits", 0o100_4755),
        ("garbage", u32::MAX),
    ];
    let mut id = 0;
    for (name, mode) in cases {
        id += 1;
        raw.send_file(&file_offer_mode(id, name.as_bytes(), b"m", *mode), b"m");
    }
    id += 1;
    raw.make_dir(id, "sdir", 0o7755);
    assert_eq!(raw.end().1, 0, "SUMMARY files_failed");
    for (name, mode) in cases {
        let got = fs::symlink_metadata(fx.out().join(name))
            .expect("stat")
            .mode();
        assert_eq!(
            got & 0o7777,
            crate::common::arrived_file_mode(*mode),
            "{name}: offered mode {mode:o}, got {got:o}"
        );
        assert_eq!(got & 0o7000, 0, "{name}: never setuid, setgid or sticky");
    }
    let dir_mode = fs::metadata(fx.out().join("sdir")).expect("stat").mode();
    assert_eq!(dir_mode & 0o7777, 0o755, "directory mode {dir_mode:o}");

    // The same through a real sender: a local setuid file arrives 0o755.
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("tool");
    fs::write(&file, b"#!/bin/sh\n").expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4755)).expect("chmod");
    let out = send(&[s(&file)], fx.addr());
    assert_status(&out, 0, "send a setuid file");
    let got = fs::metadata(fx.out().join("tool")).expect("stat").mode();
    assert_eq!(got & 0o7777, 0o755, "received setuid file mode {got:o}");

    let mut verified: Vec<(&str, &[u8])> = cases.iter().map(|(n, _)| (*n, &b"m"[..])).collect();
    verified.push(("tool", b"#!/bin/sh\n"));
    fx.finish("modes", &verified);
}

// ---------------------------------------------------------------------------
// The receiver's own partial and state names
// ---------------------------------------------------------------------------

/// Offers a file; if the receiver accepts it, sends it whole. Returns
/// whether the file was accepted and verified (a REJECT is fine too).
fn offer_or_refused(raw: &mut Raw, id: u32, name: &str, data: &[u8]) -> bool {
    raw.send(&file_offer(id, name.as_bytes(), data));
    match raw.expect("ACCEPT or REJECT") {
        Frame::Reject { .. } => false,
        Frame::Accept { offset: 0, .. } => {
            raw.send_body(id, data);
            match raw.expect("RESULT") {
                Frame::Result { status, .. } => status == result_status::OK,
                other => panic!("expected RESULT for {name}, got {other:?}"),
            }
        }
        other => panic!("expected ACCEPT at 0 or REJECT for {name}, got {other:?}"),
    }
}

#[test]
fn a_peer_cannot_plant_the_partial_and_state_of_a_later_transfer() {
    // The receiver keeps `.NAME.ftx-part` and `.NAME.ftx-state` beside a
    // target for a resume. If a peer may write files under those names, it
    // can forge a partial (its own bytes) and a state that vouches for them
    // (their XXH3, and the MD5 state of the *honest* prefix, computable by
    // anyone who knows the public file being sent). The next honest send
    // then resumes after the forged block, the MD5 over "honest prefix +
    // honest rest" matches, and the forged bytes end up under the final
    // name as verified.
    let fx = Fixture::start(&[]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = source_file(src.path(), "victim.iso", 6 << 20, 21);
    let honest = fs::read(&file).expect("read");
    let block = ftx::store::BLOCK as usize;
    let evil = vec![0xEEu8; block];
    let mut prefix = ftx::digest::Hasher::new();
    prefix.update(&honest[..block]);
    let state = forged_state(
        honest.len() as u64,
        &md5_of(&honest),
        xxhash_rust::xxh3::xxh3_64(&evil),
        &prefix.save(),
    );

    let mut raw = Raw::session(fx.addr());
    let planted_part = offer_or_refused(&mut raw, 1, ".victim.iso.ftx-part", &evil);
    let planted_state = offer_or_refused(&mut raw, 2, ".victim.iso.ftx-state", &state);
    raw.end();

    let out = send(&[s(&file)], fx.addr());
    assert_status(&out, 0, "honest send after the planting session");
    assert_eq!(
        md5_hex(fx.out().join("victim.iso")),
        md5_hex_bytes(&honest),
        "the honest file arrived with forged content under its final name \
         (peer planted partial: {planted_part}, state: {planted_state})\n\
         --- sender stderr ---\n{}",
        text(&out.stderr)
    );
    let mut verified: Vec<(&str, &[u8])> = vec![("victim.iso", &honest)];
    if planted_part && fx.out().join(".victim.iso.ftx-part").exists() {
        verified.push((".victim.iso.ftx-part", &evil));
    }
    fx.finish("planted", &verified);
}

#[test]
fn two_targets_sharing_a_hashed_partial_name_cannot_swap_content() {
    // A name over 240 bytes gets the partial `.HEX.ftx-part`, HEX being the
    // MD5 of the name; a target literally named HEX gets the same partial.
    // Two sessions receiving both at once must not write into, delete or
    // rename each other's partial.
    let fx = Fixture::start(&[]);
    let long = "q".repeat(255);
    let hex = md5_hex_bytes(long.as_bytes());
    let data_long = random_bytes(2 << 20, 31);
    let data_hex = random_bytes(2 << 20, 32);
    let half = 1 << 20;

    let mut a = Raw::session(fx.addr());
    a.send(&file_offer(1, long.as_bytes(), &data_long));
    assert!(matches!(
        a.expect("ACCEPT"),
        Frame::Accept { id: 1, offset: 0 }
    ));
    a.send(&Frame::Body {
        id: 1,
        offset: 0,
        length: data_long.len() as u64,
    });
    a.write(&data_long[..half]);

    // While A is half-way, B offers the name whose partial is A's.
    let mut b = Raw::session(fx.addr());
    b.send(&file_offer(1, hex.as_bytes(), &data_hex));
    let b_accepted = match b.expect("ACCEPT or REJECT") {
        Frame::Accept { id: 1, offset: 0 } => true,
        Frame::Reject { id: 1, .. } => false,
        other => panic!("expected ACCEPT or REJECT for B, got {other:?}"),
    };
    if b_accepted {
        b.send(&Frame::Body {
            id: 1,
            offset: 0,
            length: data_hex.len() as u64,
        });
        b.write(&data_hex[..half]);
    }

    // A finishes first, then B.
    a.write(&data_long[half..]);
    let a_ok = match a.expect("RESULT") {
        Frame::Result { id: 1, status, .. } => status == result_status::OK,
        other => panic!("expected RESULT for A, got {other:?}"),
    };
    a.end();
    let mut b_ok = false;
    if b_accepted {
        b.write(&data_hex[half..]);
        b_ok = match b.expect("RESULT") {
            Frame::Result { id: 1, status, .. } => status == result_status::OK,
            other => panic!("expected RESULT for B, got {other:?}"),
        };
    }
    b.end();

    // Whatever was answered ok holds exactly its own bytes; nothing else
    // appears under either final name.
    for (name, data, ok) in [(&long, &data_long, a_ok), (&hex, &data_hex, b_ok)] {
        let path = fx.out().join(name);
        if ok {
            assert_eq!(
                md5_hex(&path),
                md5_hex_bytes(data),
                "RESULT ok for {}… but its final name holds other bytes \
                 (A ok: {a_ok}, B accepted: {b_accepted}, B ok: {b_ok})",
                &name[..8]
            );
        } else {
            assert!(
                fs::symlink_metadata(&path).is_err() || md5_hex(&path) == md5_hex_bytes(data),
                "{}… failed but something else sits under its name",
                &name[..8]
            );
        }
    }
    assert!(
        a_ok,
        "the first transfer (no conflict when it started) succeeds"
    );
    let mut verified: Vec<(&str, &[u8])> = vec![(&long, &data_long)];
    if b_ok {
        verified.push((&hex, &data_hex));
    }
    fx.finish("hex-collision", &verified);
}

/// `ftx token` makes a token that both sides take (no warning); a short
/// token works but is warned about on both sides.
#[test]
fn ftx_token_makes_a_token_both_sides_take_and_weak_or_exposed_tokens_are_refused() {
    let mut cmd = ftx_cmd();
    cmd.arg("token");
    let out = run_with_timeout(cmd, QUICK);
    assert_status(&out, 0, "ftx token");
    let token = text(&out.stdout).trim().to_string();
    assert!(
        token.len() == 32 && token.bytes().all(|c| c.is_ascii_hexdigit()),
        "32 hex digits: {token:?}"
    );
    // `ftx token FILE`: created 0600, never over an existing file.
    let tok = tempfile::tempdir().expect("tempdir");
    let token_file = tok.path().join("token");
    let mut cmd = ftx_cmd();
    cmd.arg("token").arg(&token_file);
    let out = run_with_timeout(cmd, QUICK);
    assert_status(&out, 0, "ftx token FILE");
    let meta = fs::metadata(&token_file).expect("token file");
    assert_eq!(meta.mode() & 0o777, 0o600, "created 0600");
    let written = fs::read_to_string(&token_file).expect("read");
    let mut cmd = ftx_cmd();
    cmd.arg("token").arg(&token_file);
    let out = run_with_timeout(cmd, QUICK);
    assert!(!out.status.success(), "an existing file is not overwritten");
    assert_eq!(fs::read_to_string(&token_file).expect("read"), written);

    // Both tokens work end to end: the printed one in FTX_TOKEN, the
    // file's with --token-file on both sides.
    let d = dirs();
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&d.out)
        .env("FTX_TOKEN", &token);
    let mut rx = Receiver::spawn(cmd, &d.out);
    let file = source_file(&d.src, "tok.bin", 10_000, 9);
    let out = send_with_env(&file, rx.addr, Some(&token), &["-q"]);
    assert_status(&out, 0, "send with the printed token");
    assert_eq!(md5_hex(d.out.join("tok.bin")), md5_hex(&file));
    rx.kill();
    assert_no_secret("receiver log", &rx.stderr());

    let d = dirs();
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&d.out)
        .arg("--token-file")
        .arg(&token_file);
    let mut rx = Receiver::spawn(cmd, &d.out);
    let file = source_file(&d.src, "tok2.bin", 10_000, 10);
    let out = send(&["-q", "--token-file", s(&token_file), s(&file)], rx.addr);
    assert_status(&out, 0, "send with the token file");
    assert_eq!(md5_hex(d.out.join("tok2.bin")), md5_hex(&file));
    rx.kill();

    // Refused at start, on both sides, saying why and never quoting the
    // token: a weak one, a non-UTF-8 FTX_TOKEN, a file others can read.
    let open_file = tok.path().join("open-token");
    fs::write(&open_file, format!("{TOKEN}\n")).expect("write");
    fs::set_permissions(&open_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let weak = std::ffi::OsString::from("short-1");
    let not_text = std::ffi::OsStr::from_bytes(b"5c1d0f6e8a2b47d3\xff9e0c4b1f7d26e83").to_owned();
    let cases: [(&str, Option<&std::ffi::OsStr>, Option<&Path>, &str); 3] = [
        ("weak", Some(&weak), None, "too weak"),
        ("not UTF-8", Some(&not_text), None, "not valid text"),
        ("mode 0644", None, Some(&open_file), "chmod 600"),
    ];
    for (what, env, file, says) in cases {
        for role in ["recv", "send"] {
            let mut cmd = ftx_cmd();
            match role {
                "recv" => cmd
                    .args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
                    .arg(&d.out),
                _ => cmd.args(["send", s(&d.src), "127.0.0.1:9"]),
            };
            if let Some(v) = env {
                cmd.env("FTX_TOKEN", v);
            }
            if let Some(f) = file {
                cmd.arg("--token-file").arg(f);
            }
            let out = run_with_timeout(cmd, QUICK);
            let err = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{role} with a {what} token must not start"
            );
            assert!(!text(&out.stdout).contains("listening"), "{role}, {what}");
            assert!(err.contains(says), "{role}, {what}: {err}");
            assert!(
                !err.contains("short-1") && !err.contains(TOKEN),
                "{role}, {what}: {err}"
            );
            if let Some(f) = file {
                assert!(err.contains(s(f)), "names the file: {err}");
            }
        }
    }
}

/// `ftx recv --require-token` without a token does not start (exit 2,
/// naming the option); with one it serves as usual.
#[test]
fn require_token_refuses_to_start_without_a_token() {
    let d = dirs();
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--require-token", "--port", "0", "--out"])
        .arg(&d.out)
        .env_remove("FTX_TOKEN");
    let out = run_with_timeout(cmd, QUICK);
    assert_status(&out, 2, "recv --require-token without a token");
    let err = text(&out.stderr);
    assert!(
        err.contains("--require-token") && err.contains("ftx token"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("listening"), "did not listen");

    let mut cmd = ftx_cmd();
    cmd.args([
        "recv",
        "--require-token",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--out",
    ])
    .arg(&d.out)
    .env("FTX_TOKEN", TOKEN);
    let rx = Receiver::spawn(cmd, &d.out);
    let file = source_file(&d.src, "req.bin", 10_000, 10);
    let out = send_with_env(&file, rx.addr, Some(TOKEN), &["-q"]);
    assert_status(&out, 0, "send to a receiver requiring the token");
    let out = send_with_env(&file, rx.addr, None, &["-q", "--retry-for", "0"]);
    assert_status(&out, 6, "send without the token");
}
