//! Safe to leave listening: trickled frames and records are timed out,
//! session slots go to newcomers when their holders make no progress,
//! failed handshakes are slowed per address, and what comes before the
//! handshake is done is not believed by the sender.

use crate::common::raw::{assert_still_serves, file_offer, md5_of, Raw};
use crate::common::*;
use ftx::protocol::codec::to_bytes;
use ftx::protocol::codes::error_code;
use ftx::protocol::frame::decode;
use ftx::protocol::{encode, Frame};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "5c1d0f6e8a2b47d3a9e0c4b1f7d26e83";

/// Writes `bytes` one at a time, `gap` apart, with `write` (a raw socket
/// or a sealed wire), until the receiver closes the connection (the write
/// fails, or `closed` says so) or the bytes run out. How long after the
/// first byte the connection was found closed, if it was.
fn trickle(
    bytes: &[u8],
    gap: Duration,
    mut write: impl FnMut(u8) -> bool,
    mut closed: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    for &b in bytes {
        if !write(b) || closed() {
            return Some(start.elapsed());
        }
        std::thread::sleep(gap);
    }
    None
}

/// True once `s` reads EOF or an error (non-blocking peek; any bytes the
/// receiver sent, an ERROR, are left in the socket).
fn peer_closed(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let r = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => {
            // An ERROR is waiting: the receiver ended the session.
            true
        }
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    r
}

/// A started frame or record that trickles in is ended at `--timeout`
/// (2 s here), whatever else arrives: plain, sealed (the record itself
/// trickles), and sealed with the frame spread over one-byte records.
#[test]
fn a_trickled_frame_or_record_is_timed_out_plain_and_sealed() {
    let gap = Duration::from_millis(200);
    let offer = to_bytes(&file_offer(1, b"slow.txt", b"0123456789"));
    let bound = |took: Option<Duration>, what: &str| {
        let took = took.unwrap_or_else(|| panic!("{what}: the session was never ended"));
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
            "{what}: ended after {took:?}, expected about 2 s"
        );
    };
    // Plain: a FILE frame of 30 bytes one byte every 200 ms (6 s in all).
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &["--timeout", "2"]);
    let mut raw = Raw::session(rx.addr);
    let stream = raw.stream.try_clone().expect("clone");
    let took = trickle(
        &offer,
        gap,
        |b| raw.stream.write_all(&[b]).is_ok(),
        || peer_closed(&stream),
    );
    bound(took, "plain frame");
    raw.expect_error_or_close(Some(error_code::TIMEOUT));
    assert_still_serves(&mut rx, "trickled-frame");
    rx.interrupt();
    let log = rx.stderr();
    assert!(log.contains("trickles"), "the log says why:\n{log}");

    // Sealed: a record whose ciphertext trickles (its header says 64 bytes).
    let d = dirs();
    let rx = Receiver::start_as(Some(TOKEN), &d.out, &["--timeout", "2"]);
    let (mut raw, _, prologue) = Raw::hello(rx.addr);
    raw.seal(TOKEN, &prologue);
    let stream = raw.stream.try_clone().expect("clone");
    let mut record = vec![0u8, 64];
    record.extend([0x5a; 64]);
    let took = trickle(
        &record,
        gap,
        |b| raw.stream.write_all(&[b]).is_ok(),
        || peer_closed(&stream),
    );
    bound(took, "sealed record");

    // Sealed: every record whole, but the frame inside trickles, one byte
    // per record.
    let (mut raw, _, prologue) = Raw::hello(rx.addr);
    raw.seal(TOKEN, &prologue);
    let stream = raw.stream.try_clone().expect("clone");
    let took = trickle(
        &offer,
        gap,
        |b| raw.try_write(&[b]),
        || peer_closed(&stream),
    );
    bound(took, "sealed frame in one-byte records");
    let file = d.src.join("after.bin");
    write_random(&file, 10_000, 70);
    let out = send_as(Some(TOKEN), &[s(&file)], rx.addr);
    assert_status(&out, 0, "a sealed send after the trickled records");
}

/// A slow but steady sealed body still completes although each of its
/// records takes longer than `--timeout` to arrive (6 KiB over a 1 KiB/s
/// link, `--timeout 2`): a record may take the time its length needs at
/// 500 bytes a second on top of the timeout.
#[test]
fn a_slow_but_steady_sealed_body_completes() {
    let d = dirs();
    let rx = Receiver::start_as(Some(TOKEN), &d.out, &["--timeout", "2"]);
    let file = d.src.join("slow.bin");
    write_random(&file, 6 * 1024, 71);
    let proxy = Proxy::start(rx.addr, Mode::Slow(1024));
    let out = send_as(Some(TOKEN), &[s(&file), "--timeout", "10"], proxy.addr);
    assert_status(&out, 0, "a slow sealed send");
    assert_eq!(md5_hex(d.out.join("slow.bin")), md5_hex(&file));
}

/// Peers that complete a plain handshake and then only offer refused names
/// hold every slot; a sender with default flags still gets in (one of them
/// is evicted after 5 s without progress and told "busy"), well within
/// 10 s.
#[test]
fn a_newcomer_evicts_a_session_that_makes_no_progress() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &["--max-sessions", "2"]);
    let mut squatters: Vec<Raw> = (0..2)
        .map(|_| {
            let mut raw = Raw::session(rx.addr);
            let bad = file_offer(1, b"../escape", b"x");
            raw.expect_reject(&bad, 1, ftx::protocol::codes::reject_code::UNSAFE_NAME);
            raw
        })
        .collect();
    let file = d.src.join("newcomer.bin");
    write_random(&file, 100_000, 72);
    let start = Instant::now();
    let out = send(&[s(&file)], rx.addr);
    let took = start.elapsed();
    assert_status(&out, 0, "a default send while every slot is squatted");
    assert!(took < Duration::from_secs(10), "got in after {took:?}");
    assert_eq!(md5_hex(d.out.join("newcomer.bin")), md5_hex(&file));
    // One squatter was told why.
    let mut evicted = 0;
    for raw in &mut squatters {
        let _ = raw
            .stream
            .set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = raw.stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if let Ok(Some((Frame::Error { code, message }, _))) = decode(&got) {
            assert_eq!(code, error_code::BUSY, "{message}");
            assert!(message.contains("evicted"), "{message}");
            evicted += 1;
        }
    }
    assert!(evicted >= 1, "a squatter was evicted");
    rx.interrupt();
    let log = rx.stderr();
    assert!(log.contains("evicted after"), "{log}");
}

/// A session that is moving data (a slow body) is never evicted: with its
/// one slot taken for 7 s by a body that trickles in, a newcomer is told
/// "busy", and the body completes and is verified.
#[test]
fn a_session_moving_data_is_never_evicted() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &["--max-sessions", "1"]);
    let data: Vec<u8> = (0..3500u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut raw = Raw::session(rx.addr);
    raw.start_body(1, b"mover.bin", &data);
    // 100 bytes every 200 ms: 7 s for 3500 bytes; says when 6 s went by.
    let (tx, six_seconds) = std::sync::mpsc::channel();
    let mover = std::thread::spawn(move || {
        for (i, chunk) in data.chunks(100).enumerate() {
            raw.write(chunk);
            if i == 30 {
                let _ = tx.send(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let got = raw.expect("RESULT");
        (raw, got, md5_of(&data))
    });
    // The newcomer, after the mover has been at it for 6 s (past the 5 s
    // grace): busy, since the one session moves data. --retry-for 0: one
    // attempt.
    six_seconds
        .recv_timeout(Duration::from_secs(20))
        .expect("the mover sent for 6 s");
    let file = d.src.join("late.bin");
    write_random(&file, 1000, 73);
    let out = send(&[s(&file), "--retry-for", "0"], rx.addr);
    assert!(!out.status.success(), "the newcomer was told busy");
    assert!(text(&out.stderr).contains("busy"), "{}", text(&out.stderr));
    let (mut raw, got, md5) = mover.join().expect("mover");
    match got {
        Frame::Result {
            id: 1,
            status: 0,
            md5: m,
            ..
        } => assert_eq!(m, md5),
        other => panic!("the moving session's file: {other:?}"),
    }
    assert_eq!(raw.end(), (1, 0));
    rx.interrupt();
    assert!(!rx.stderr().contains("evicted"), "{}", rx.stderr());
}

/// Wrong tokens from one address: logged once, then counted; after 8 in a
/// row the address waits (ERROR 4 at once, no handshake), and a real
/// sender from it still gets in by retrying.
#[test]
fn failed_handshakes_are_slowed_per_address_and_logged_as_counts() {
    let d = dirs();
    let mut rx = Receiver::start_as(Some(TOKEN), &d.out, &[]);
    for _ in 0..8 {
        let (mut raw, _, _) = Raw::hello(rx.addr);
        raw.send(&Frame::Noise { message: [7; 48] });
        raw.expect_error(error_code::AUTH);
    }
    let mut raw = Raw::connect(rx.addr);
    let msg = raw.expect_error(error_code::BUSY);
    assert!(msg.contains("too many failed handshakes"), "{msg}");
    let file = d.src.join("real.bin");
    write_random(&file, 10_000, 74);
    let out = send_as(Some(TOKEN), &[s(&file)], rx.addr);
    assert_status(&out, 0, "the real sender from the same address");
    rx.interrupt();
    let log = rx.stderr();
    assert_eq!(log.matches("authentication failed").count(), 1, "{log}");
    assert!(log.contains("counted and logged once a minute"), "{log}");
}

/// A fake receiver on 127.0.0.1 that answers each connection's HELLO with
/// `answer` (frames in the clear) and closes; it counts connections.
fn fake_receiver(answer: Vec<Frame>) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(100) {
            let Ok(mut s) = s else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            let mut frames = 0;
            while frames < 1 {
                match decode(&buf) {
                    Ok(Some((_, used))) => {
                        buf.drain(..used);
                        frames += 1;
                    }
                    _ => match s.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    },
                }
            }
            let mut out = Vec::new();
            for f in &answer {
                encode(f, &mut out);
            }
            let _ = s.write_all(&out);
            // Read (and drop) whatever comes until the sender closes.
            while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
        }
    });
    (addr, n)
}

/// Before the handshake is done nothing is authenticated: a forged ERROR 7
/// ("tampered") or ERROR 5 in the clear, or a NOISE reply that does not
/// open, is retried within `--retry-for` and reported as not
/// authenticated; a forged ERROR 3 is final (exit 6) but says it was not
/// authenticated either.
#[test]
fn answers_before_the_handshake_are_not_believed() {
    let d = dirs();
    let file = d.src.join("f.bin");
    write_random(&file, 1000, 75);
    let welcome = Frame::Welcome {
        version: ftx::protocol::limits::VERSION,
        flags: 1,
        nonce: [3; 16],
        agent: "fake".into(),
    };
    let err = |code: u16| Frame::Error {
        code,
        message: "forged".into(),
    };
    let cases = [
        ("ERROR 7", vec![err(error_code::TAMPERED)], true),
        ("ERROR 5", vec![err(error_code::TIMEOUT)], true),
        (
            "a NOISE that does not open",
            vec![welcome.clone(), Frame::Noise { message: [9; 48] }],
            true,
        ),
        ("ERROR 3", vec![welcome, err(error_code::AUTH)], false),
    ];
    for (what, answer, retried) in cases {
        let (addr, conns) = fake_receiver(answer);
        let out = send_as(Some(TOKEN), &[s(&file), "--retry-for", "2"], addr);
        let e = text(&out.stderr);
        assert!(!out.status.success(), "{what}: {e}");
        assert_ne!(out.status.code(), Some(4), "{what}: never 'tampered': {e}");
        assert!(
            e.contains("not authenticated") || e.contains("did not authenticate"),
            "{what}: {e}"
        );
        let n = conns.load(Ordering::SeqCst);
        if retried {
            assert!(n >= 2, "{what}: retried ({n} connections): {e}");
        } else {
            assert_eq!(out.status.code(), Some(6), "{what}: {e}");
            assert_eq!(n, 1, "{what}: not retried: {e}");
        }
    }
}
