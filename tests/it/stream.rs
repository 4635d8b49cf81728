//! Files sent without their digest known beforehand: read once, hashed
//! while they cross, the digest after the body. Everything the header
//! digest guaranteed still holds: corruption is caught, resumes are
//! checked, an existing target is judged with the digest.

use crate::common::{
    assert_status, dirs, md5_hex, send, text, write_random, Mode, Proxy, Receiver,
};
use std::fs;

/// Over the 8 MiB from which a cold file is streamed.
const SIZE: u64 = 12 << 20;

#[test]
fn a_cold_file_is_streamed_with_its_digest_after_the_body() {
    let d = dirs();
    let file = d.src.join("cold.bin");
    write_random(&file, SIZE, 41);
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "a cold send");
    assert_eq!(md5_hex(d.out.join("cold.bin")), md5_hex(&file));
    assert!(
        text(&out.stdout).contains(&md5_hex(&file)),
        "the sent line names the MD5"
    );
}

#[test]
fn a_byte_flipped_in_a_streamed_body_is_caught_and_the_file_sent_again() {
    let d = dirs();
    let file = d.src.join("flip.bin");
    write_random(&file, SIZE, 42);
    let rx = Receiver::start(&d.out, &[]);
    let proxy = Proxy::start(rx.addr, Mode::FlipByte(5_000_000));
    // With --retry-for 0 the mismatch is final: exit 4, nothing kept.
    let out = send(
        &[
            "--no-cache",
            "--retry-for",
            "0",
            file.to_str().expect("utf-8"),
        ],
        proxy.addr,
    );
    assert_status(&out, 4, "a streamed body corrupted on the wire");
    assert!(!d.out.join("flip.bin").exists(), "nothing unverified kept");
    // With the default retries the file is sent again from 0, once; the
    // proxy flips the same byte of every connection, so the resend is
    // caught as well and the run still fails.
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], proxy.addr);
    assert_status(&out, 4, "caught twice");
    let err = text(&out.stderr);
    assert!(err.contains("sending it again from 0"), "{err}");
    assert!(!d.out.join("flip.bin").exists(), "nothing unverified kept");
    // Directly, it arrives.
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "sent directly");
    assert_eq!(md5_hex(d.out.join("flip.bin")), md5_hex(&file));
}

#[test]
fn an_existing_target_is_judged_with_the_digest() {
    let d = dirs();
    let file = d.src.join("there.bin");
    write_random(&file, SIZE, 43);
    let rx = Receiver::start(&d.out, &[]);
    // Identical: skipped, no body sent (the receiver asks for the digest).
    fs::copy(&file, d.out.join("there.bin")).expect("copy");
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "identical target");
    let err = text(&out.stderr);
    assert!(
        err.contains("1 skipped") && err.contains(", 0 B in"),
        "{err}"
    );
    // Different, no --overwrite: still refused.
    write_random(d.out.join("there.bin"), SIZE, 44);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 5, "different target, no --overwrite");
}

#[test]
fn xxh3_checks_every_kind_of_file_and_resumes() {
    use crate::common::write_random as w;
    let d = dirs();
    let t = d.src.join("t");
    fs::create_dir(&t).expect("mkdir");
    w(t.join("small.bin"), 3000, 51); // held and hashed in a batch
    w(t.join("mid.bin"), 1 << 20, 52); // streamed by the session thread
    w(t.join("big.bin"), 6 << 20, 53); // a pipeline, digest in the header
    w(t.join("cold.bin"), SIZE, 54); // digest after the body
    let rx = Receiver::start(&d.out, &[]);
    let out = send(
        &[
            "--hash",
            "xxh3",
            "--json",
            "--no-cache",
            t.to_str().expect("utf-8"),
        ],
        rx.addr,
    );
    assert_status(&out, 0, "a tree with --hash xxh3");
    for f in ["small.bin", "mid.bin", "big.bin", "cold.bin"] {
        assert_eq!(md5_hex(d.out.join("t").join(f)), md5_hex(t.join(f)), "{f}");
    }
    let done: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "file_done")
        .collect();
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|e| e["hash"] == "xxh3"), "{done:?}");

    // Cut twice on the way: it resumes (the XXH3 of the prefix is rebuilt
    // from the partial) and arrives whole.
    let file = d.src.join("again.bin");
    w(&file, 3 * SIZE, 55);
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(14 << 20));
    let out = send(
        &[
            "--hash",
            "xxh3",
            "--no-cache",
            file.to_str().expect("utf-8"),
        ],
        proxy.addr,
    );
    assert_status(&out, 0, "a cut transfer with --hash xxh3");
    assert!(
        text(&out.stderr).contains("resuming again.bin"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(md5_hex(d.out.join("again.bin")), md5_hex(&file));
}

/// `cat SRC | ftx send ARGS... - ADDR` through a real pipe.
fn send_piped(
    src: &std::path::Path,
    args: &[&str],
    addr: impl std::fmt::Display,
) -> std::process::Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("f=$1; shift; cat \"$0\" | \"$f\" send \"$@\"")
        .arg(src)
        .arg(crate::common::ftx_bin())
        .args(args)
        .arg("-")
        .arg(addr.to_string());
    crate::common::run_with_timeout(cmd, crate::common::SEND_TIMEOUT)
}

#[test]
fn standard_input_arrives_under_its_name_with_the_digest_of_what_was_piped() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    for (name, size) in [
        ("small.tar", 100_000u64),
        ("big.tar", 20 << 20),
        ("empty", 0),
    ] {
        let src = d.src.join(name);
        write_random(&src, size, 61);
        let out = send_piped(&src, &["--name", name], rx.addr);
        assert_status(&out, 0, "send standard input");
        assert_eq!(md5_hex(d.out.join(name)), md5_hex(&src), "{name}");
        assert!(
            text(&out.stdout).contains(&md5_hex(&src)),
            "the line names the md5"
        );
    }
    // A file is there already, no --overwrite: refused, as for any file.
    let src = d.src.join("small.tar");
    write_random(&src, 5000, 62);
    let out = send_piped(&src, &["--name", "small.tar"], rx.addr);
    assert_status(&out, 5, "a stream onto an existing file");
}

#[test]
fn standard_input_needs_a_name_and_a_broken_stream_is_final() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let src = d.src.join("s.bin");
    write_random(&src, 16 << 20, 63);
    let out = send_piped(&src, &[], rx.addr);
    assert_status(&out, 2, "standard input without --name");
    assert!(
        text(&out.stderr).contains("--name"),
        "{}",
        text(&out.stderr)
    );
    // Cut after 4 MiB: no retry can send it again, and the message says so.
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(4 << 20));
    let out = send_piped(&src, &["--name", "s.bin"], proxy.addr);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("cannot be read again"), "{err}");
    assert!(!err.contains("retrying"), "no retry:\n{err}");
    assert!(!d.out.join("s.bin").exists());
}

#[test]
fn a_receiver_that_keeps_asking_for_the_digest_does_not_hold_the_sender_for_ever() {
    use ftx::protocol::frame::{decode, encode, reject_code, Frame};
    use std::io::{Read, Write};
    let d = dirs();
    let file = d.src.join("asked.bin");
    write_random(&file, SIZE, 71);
    // A fake receiver: answers every FILE "digest needed", whether or not
    // the offer carried its digest.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
                .expect("timeout");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let frame = loop {
                    if let Ok(Some((f, used))) = decode(&buf) {
                        buf.drain(..used);
                        break Some(f);
                    }
                    match s.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break None,
                    }
                };
                let answer = match frame {
                    Some(Frame::Hello { .. }) => Frame::Welcome {
                        version: ftx::protocol::limits::VERSION,
                        flags: 0,
                        nonce: [0; 16],
                        agent: "fake".into(),
                    },
                    Some(Frame::Push) => continue,
                    Some(Frame::File(h)) => Frame::Reject {
                        id: h.id,
                        code: reject_code::NEED_DIGEST,
                        message: "again".into(),
                    },
                    Some(Frame::End { .. }) => Frame::Summary {
                        files_ok: 0,
                        files_failed: 0,
                        bytes: 0,
                    },
                    _ => break,
                };
                let mut out = Vec::new();
                encode(&answer, &mut out);
                if s.write_all(&out).is_err() {
                    break;
                }
            }
        }
    });
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], addr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("asked for a digest the offer carried"),
        "{}",
        text(&out.stderr)
    );
    drop(fake);
}
