//! Sealed sessions (issue 16): with a token, what crosses the network is
//! ciphertext, and a record changed, dropped, replayed, reordered or cut on
//! the way ends the session at that record with nothing unverified kept.
//! Real `ftx recv` and `ftx send` processes, a proxy in between that
//! records or tampers with the bytes.

use crate::common::raw::Raw;
use crate::common::*;
use ftx::protocol::frame::decode;
use ftx::protocol::Frame;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// 128 random bits, as `ftx token` prints them.
const TOKEN: &str = "5c1d0f6e8a2b47d3a9e0c4b1f7d26e83";

struct Sealed {
    rx: Receiver,
    _dirs: Dirs,
    src: PathBuf,
}

/// A receiver holding [`TOKEN`] and a source directory.
fn sealed_receiver(extra: &[&str]) -> Sealed {
    let dirs = dirs();
    let rx = Receiver::start_as(Some(TOKEN), &dirs.out, extra);
    let src = dirs.src.clone();
    Sealed {
        rx,
        _dirs: dirs,
        src,
    }
}

impl Sealed {
    /// Stops the receiver; its whole stderr.
    fn stop(&mut self) -> String {
        self.rx.interrupt();
        self.rx
            .wait_exit(Duration::from_secs(10))
            .expect("receiver exits");
        self.rx.stderr()
    }
}

/// Reads from `stream` until the peer closes it (at most 10 s, the read
/// timeout, per read); how long that took.
fn until_closed(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    for _ in 0..10_000 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    start.elapsed()
}

fn send_sealed(args: &[&str], addr: SocketAddr) -> Output {
    send_as(Some(TOKEN), args, addr)
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// How many of `data`'s 4 KiB blocks appear in `wire`.
fn blocks_seen(wire: &[u8], data: &[u8]) -> usize {
    data.chunks_exact(4096).filter(|b| find(wire, b)).count()
}

#[test]
fn a_sealed_session_shows_neither_names_nor_content_on_the_wire() {
    let name = "quarterly-secret-plans.txt";
    let run = |token: bool| -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let d = dirs();
        let file = d.src.join(name);
        write_random(&file, 256 * 1024, 7);
        let data = fs::read(&file).expect("read source");
        let token = token.then_some(TOKEN);
        let rx = Receiver::start_as(token, &d.out, &[]);
        let proxy = Proxy::start(rx.addr, Mode::Capture);
        let out = send_as(token, &["--json", s(&file)], proxy.addr);
        let token = token.is_some();
        assert_status(&out, 0, "send through the recording proxy");
        // The summary says whether it was encrypted.
        let summary = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .expect("a summary event");
        assert_eq!(summary["encrypted"], token, "{summary}");
        assert_eq!(
            text(&out.stderr).contains("MB/s, encrypted)"),
            token,
            "the summary line says whether it was encrypted:\n{}",
            show(&out)
        );
        assert_eq!(md5_hex(d.out.join(name)), md5_hex(&file), "arrived whole");
        let (up, down) = proxy.captured();
        drop(proxy);
        (up, down, data)
    };

    // Control: in the clear, the name and every block are there to read
    // (so the check below can see them).
    let (up, _, data) = run(false);
    assert!(find(&up, name.as_bytes()), "plain: the name is on the wire");
    assert_eq!(
        blocks_seen(&up, &data),
        64,
        "plain: the content is on the wire"
    );

    let (up, down, data) = run(true);
    assert!(up.len() > data.len(), "the body went through the proxy");
    for (dir, bytes) in [("sender → receiver", &up), ("receiver → sender", &down)] {
        assert!(
            !find(bytes, name.as_bytes()),
            "{dir}: the file's name is readable on the wire"
        );
        assert!(
            !find(bytes, TOKEN.as_bytes()),
            "{dir}: the token is on the wire"
        );
    }
    assert_eq!(
        blocks_seen(&up, &data),
        0,
        "a 4 KiB block of the content is readable on the wire"
    );
}

/// Names in `out` that are final (not ftx's hidden working files).
fn finals(out: &Path) -> Vec<String> {
    names_in(out)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn a_changed_dropped_replayed_or_reordered_record_ends_the_session_there() {
    let mut fx = sealed_receiver(&[]);
    // The record that fails: the changed one; the one after a dropped one
    // (it arrives fifth); the second copy of a replayed one; the sixth,
    // arriving fifth.
    let ops = [
        ("flip", RecordOp::Flip(5), 5),
        ("drop", RecordOp::Drop(5), 5),
        ("replay", RecordOp::Replay(5), 6),
        ("swap", RecordOp::Swap(5), 5),
    ];
    let mut files = Vec::new();
    for (tag, op, fails_at) in ops {
        // 2 MB: about 32 records of body; record 5 is inside it.
        let file = fx.src.join(format!("{tag}.bin"));
        write_random(&file, 2_000_000, 40);
        let proxy = Proxy::start(fx.rx.addr, Mode::Records(op));
        let out = send_sealed(&[s(&file)], proxy.addr);
        assert_status(&out, 4, &format!("{tag}: a tampered session"));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "record {fails_at} of the session failed authentication"
            )) && err.contains("not retrying"),
            "{tag}: the sender says where and why the session ended:\n{err}"
        );
        assert_eq!(proxy.connections(), 1, "{tag}: no retry after tampering");
        assert!(
            finals(&fx.rx.out).is_empty(),
            "{tag}: nothing unverified is kept under a final name: {:?}",
            names_in(&fx.rx.out)
        );
        files.push(file);
    }
    // The receiver says where it stopped, and goes on serving: the same
    // files sent directly arrive whole (resumed from what was verified).
    for f in &files {
        let out = send_sealed(&[s(f)], fx.rx.addr);
        assert_status(&out, 0, "the same file without the tampering proxy");
        let name = f.file_name().expect("name");
        assert_eq!(md5_hex(fx.rx.out.join(name)), md5_hex(f));
    }
    let log = fx.stop();
    assert!(
        log.matches("record 5 of the session failed authentication")
            .count()
            == 3
            && log
                .matches("record 6 of the session failed authentication")
                .count()
                == 1,
        "the receiver names the record each time:\n{log}"
    );
}

#[test]
fn a_record_cut_in_the_middle_is_a_connection_failure_and_resumes() {
    let mut fx = sealed_receiver(&[]);
    let file = fx.src.join("cut.bin");
    // 24 MiB; the cut comes after 3 of its 4 MiB blocks and a bit, inside
    // a record.
    write_random(&file, 24 << 20, 41);
    let proxy = Proxy::start(fx.rx.addr, Mode::CutAfter((13 << 20) + 1000));
    let out = send_sealed(&["--retry-for", "0", s(&file)], proxy.addr);
    // Exit 1: the connection broke (3 is for a receiver that cannot be
    // reached at all).
    assert_status(&out, 1, "a connection cut inside a record");
    assert!(
        text(&out.stderr).contains("again to resume"),
        "{}",
        show(&out)
    );
    assert!(finals(&fx.rx.out).is_empty(), "{:?}", names_in(&fx.rx.out));
    // The receiver kept what it verified (whole blocks).
    let kept = poll_until(Duration::from_secs(30), || {
        fx.rx.stderr().contains("'cut.bin' (kept ")
    });
    assert!(kept, "the receiver keeps the partial:\n{}", fx.rx.stderr());
    let out = send_sealed(&[s(&file)], fx.rx.addr);
    assert_status(&out, 0, "the same send again");
    assert!(
        text(&out.stderr).contains("resuming cut.bin at 12582912"),
        "it resumes after the 3 blocks:\n{}",
        show(&out)
    );
    assert_eq!(md5_hex(fx.rx.out.join("cut.bin")), md5_hex(&file));
    let log = fx.stop();
    assert!(
        log.contains("in the middle of an encrypted record"),
        "the receiver says where the connection ended:\n{log}"
    );
}

/// A recorded sender's handshake (HELLO and NOISE, the first two frames
/// of `bytes`) replayed to `addr` as a careful attacker would: HELLO, then
/// NOISE once WELCOME came, then the recorded records. Holds the connection
/// after WELCOME until `go` is called. Returns the frames the receiver
/// answered until it closed.
struct Replay {
    s: TcpStream,
    got: Vec<u8>,
    rest: Vec<u8>,
    noise: Vec<u8>,
}

impl Replay {
    fn start(addr: SocketAddr, bytes: &[u8]) -> Replay {
        // The recorded session may still be ending on the receiver (its
        // one slot taken a moment longer): a "busy" answer is tried again,
        // a bounded number of times.
        for _ in 0..100 {
            if let Some(r) = Replay::try_start(addr, bytes) {
                return r;
            }
        }
        panic!("no WELCOME to the replayed HELLO in 100 tries");
    }

    fn try_start(addr: SocketAddr, bytes: &[u8]) -> Option<Replay> {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut ends = [0usize; 2];
        let mut at = 0;
        for end in &mut ends {
            let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().expect("4 bytes"));
            at += 5 + len as usize;
            *end = at;
        }
        s.write_all(&bytes[..ends[0]]).expect("HELLO");
        let mut r = Replay {
            s,
            got: Vec::new(),
            rest: bytes[ends[1]..].to_vec(),
            noise: bytes[ends[0]..ends[1]].to_vec(),
        };
        match r.next_frame() {
            Some(Frame::Welcome { .. }) => Some(r),
            Some(Frame::Error { code: 4, .. }) => None,
            other => panic!("WELCOME to the replayed HELLO, got {other:?}"),
        }
    }

    fn next_frame(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 4096];
        for _ in 0..1000 {
            if let Some((f, used)) = decode(&self.got).expect("frames from the receiver") {
                self.got.drain(..used);
                return Some(f);
            }
            match self.s.read(&mut chunk) {
                Ok(n) if n > 0 => self.got.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
        None
    }

    /// Sends the recorded NOISE and records; the receiver's answer.
    fn go(mut self) -> Option<Frame> {
        self.s.write_all(&self.noise).expect("NOISE");
        let answer = self.next_frame();
        let _ = self.s.write_all(&self.rest);
        until_closed(&mut self.s);
        answer
    }
}

#[test]
fn a_recorded_handshake_replayed_never_reaches_a_session() {
    use ftx::protocol::codes::error_code;
    // One slot: connections that wait in the gate must not hold it.
    let mut fx = sealed_receiver(&["--max-sessions", "1"]);
    let file = fx.src.join("once.bin");
    write_random(&file, 300_000, 42);
    let proxy = Proxy::start(fx.rx.addr, Mode::Capture);
    let out = send_sealed(&[s(&file)], proxy.addr);
    assert_status(&out, 0, "the recorded session");
    let (up, _) = proxy.captured();
    drop(proxy);
    fs::remove_file(fx.rx.out.join("once.bin")).expect("remove");

    // Four replays wait with the handshake half done while a real sender
    // (default flags) sends: it gets the one slot at once.
    let held: Vec<Replay> = (0..4).map(|_| Replay::start(fx.rx.addr, &up)).collect();
    let other = fx.src.join("real.bin");
    write_random(&other, 50_000, 44);
    let out = send_sealed(&[s(&other)], fx.rx.addr);
    assert_status(&out, 0, "a real send beside four held replays");
    // Then each replayed NOISE is refused as a failed authentication: the
    // receiver's fresh nonce changed the prologue, so message 1 does not
    // decrypt. No NOISE answer, no session.
    for r in held {
        match r.go() {
            Some(Frame::Error { code, message }) => {
                assert_eq!(code, error_code::AUTH, "{message}");
            }
            other => panic!("a replayed NOISE must get ERROR 3, got {other:?}"),
        }
    }
    assert!(
        !fx.rx.out.join("once.bin").exists(),
        "the replayed session wrote {:?}",
        names_in(&fx.rx.out)
    );
    let log = fx.stop();
    assert_eq!(
        log.matches("authentication failed").count(),
        1,
        "replays are logged as failed authentication, once, then counted:\n{log}"
    );
    assert!(
        !log.contains("record 0") && !log.contains("closed the connection before END"),
        "no replay reached a session:\n{log}"
    );
}

#[test]
fn a_replayed_handshake_does_not_end_a_once_receiver() {
    let mut fx = sealed_receiver(&["--once"]);
    let file = fx.src.join("first.bin");
    write_random(&file, 20_000, 45);
    // Record a handshake against another receiver with the same token.
    let mut other = sealed_receiver(&[]);
    let proxy = Proxy::start(other.rx.addr, Mode::Capture);
    assert_status(&send_sealed(&[s(&file)], proxy.addr), 0, "recorded");
    let (up, _) = proxy.captured();
    drop(proxy);
    other.stop();
    // Replayed to the --once receiver: refused, and it keeps waiting.
    let answer = Replay::start(fx.rx.addr, &up).go();
    assert!(
        matches!(answer, Some(Frame::Error { code: 3, .. })),
        "{answer:?}"
    );
    let out = send_sealed(&[s(&file)], fx.rx.addr);
    assert_status(&out, 0, "the real send after the replay");
    let status = fx.rx.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "--once exits 0 after the real session"
    );
    assert_eq!(md5_hex(fx.rx.out.join("first.bin")), md5_hex(&file));
}

#[test]
fn garbage_records_after_a_good_handshake_are_refused_and_the_receiver_keeps_serving() {
    let mut fx = sealed_receiver(&[]);
    // Records of random bytes with plausible lengths.
    let mut garbage = Vec::new();
    for i in 0..40u32 {
        garbage.extend_from_slice(&[0xff, 0xff]);
        garbage.extend((0..65535u32).map(|j| (j.wrapping_mul(2_654_435_761) ^ i) as u8));
    }
    let (mut raw, flags, prologue) = Raw::hello(fx.rx.addr);
    assert_eq!(flags & 1, 1, "sealed");
    raw.seal(TOKEN, &prologue);
    let start = Instant::now();
    // The receiver gives up at the first record: the rest need not go in.
    let _ = raw.stream.write_all(&garbage);
    until_closed(&mut raw.stream);
    assert!(start.elapsed() < Duration::from_secs(10), "not ended");

    // A record too short to hold a tag.
    let (mut raw, _, prologue) = Raw::hello(fx.rx.addr);
    raw.seal(TOKEN, &prologue);
    let _ = raw.stream.write_all(&[0, 3, 1, 2, 3]);
    assert!(
        until_closed(&mut raw.stream) < Duration::from_secs(10),
        "not ended"
    );

    let file = fx.src.join("after.bin");
    write_random(&file, 100_000, 43);
    let out = send_sealed(&[s(&file)], fx.rx.addr);
    assert_status(&out, 0, "a real send after the garbage");
    assert_eq!(md5_hex(fx.rx.out.join("after.bin")), md5_hex(&file));
    let log = fx.stop();
    assert_eq!(
        // Record 0 is READY, record 1 PUSH: the garbage is record 2.
        log.matches("record 2 of the session failed authentication")
            .count(),
        2,
        "each garbage session ends at its first record:\n{log}"
    );
}

/// The WELCOME flags in what a receiver sent first (captured).
fn welcome_flags(down: &[u8]) -> u32 {
    match ftx::protocol::frame::decode(down).expect("a frame") {
        Some((ftx::protocol::Frame::Welcome { flags, .. }, _)) => flags,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn the_cipher_is_chacha20_when_either_side_asks_for_it() {
    use ftx::secure::{Cipher, HELLO_CHACHA, WELCOME_CHACHA};
    // What this machine picks by itself (AES-GCM where the CPU has AES).
    let own = if Cipher::preferred(None) == Cipher::ChaChaPoly {
        WELCOME_CHACHA
    } else {
        0
    };
    let mut fx = sealed_receiver(&[]);
    let (_, flags, _) = Raw::hello(fx.rx.addr);
    assert_eq!(flags, 1 | own, "a sender that asks for nothing");
    // A sender that asks for ChaCha20 gets it, and the session works.
    let (mut raw, flags, prologue) = Raw::hello_with(fx.rx.addr, HELLO_CHACHA);
    assert_eq!(flags, 1 | WELCOME_CHACHA, "a sender that asks for ChaCha20");
    raw.seal(TOKEN, &prologue);
    raw.send_good_file(1, "raw-chacha.txt", b"sealed with ChaCha20-Poly1305");
    assert_eq!(raw.end(), (1, 0));

    // The real sender with --cipher chacha20-poly1305.
    let file = fx.src.join("chacha.bin");
    write_random(&file, 3_000_000, 44);
    let proxy = Proxy::start(fx.rx.addr, Mode::Capture);
    let out = send_sealed(&["--cipher", "chacha20-poly1305", s(&file)], proxy.addr);
    assert_status(&out, 0, "send --cipher chacha20-poly1305");
    assert_eq!(md5_hex(fx.rx.out.join("chacha.bin")), md5_hex(&file));
    let (_, down) = proxy.captured();
    assert_eq!(welcome_flags(&down), 1 | WELCOME_CHACHA);
    drop(proxy);
    fx.stop();

    // A receiver with --cipher chacha20-poly1305, a default sender.
    let mut fx = sealed_receiver(&["--cipher", "chacha20-poly1305"]);
    let file = fx.src.join("chacha2.bin");
    write_random(&file, 3_000_000, 45);
    let proxy = Proxy::start(fx.rx.addr, Mode::Capture);
    let out = send_sealed(&[s(&file)], proxy.addr);
    assert_status(&out, 0, "send to a receiver asking for ChaCha20");
    assert_eq!(md5_hex(fx.rx.out.join("chacha2.bin")), md5_hex(&file));
    let (_, down) = proxy.captured();
    assert_eq!(welcome_flags(&down), 1 | WELCOME_CHACHA);
    drop(proxy);
    fx.stop();
}

#[test]
fn a_changed_record_from_the_receiver_ends_the_session_on_the_sender() {
    let mut fx = sealed_receiver(&[]);
    let file = fx.src.join("back.bin");
    write_random(&file, 100_000, 46);
    // Record 0 of the receiver's direction: its answer to the offer.
    let proxy = Proxy::start(fx.rx.addr, Mode::RecordsBack(RecordOp::Flip(0)));
    let out = send_sealed(&[s(&file)], proxy.addr);
    assert_status(&out, 4, "a tampered answer");
    let err = text(&out.stderr);
    assert!(
        err.contains("record 0 of the session failed authentication")
            && err.contains("not retrying"),
        "the sender says where and why the session ended:\n{err}"
    );
    assert_eq!(proxy.connections(), 1, "no retry after tampering");
    drop(proxy);
    fx.stop();
}
