//! Failures a user meets: nobody listening, missing source, bad flags, a
//! bad output directory, a port in use, and a bit flipped on the wire. Each
//! must give the documented exit status and a message that says what went
//! wrong, and must leave nothing unverified behind.

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::{
    assert_status, dirs, fixtures, free_port, ftx_cmd, md5_hex, md5_hex_bytes, names_in,
    run_with_timeout, s, send, text, write_random, Mode, Proxy, Receiver,
};
use ftx::protocol::frame::{to_bytes, FileHeader, Frame};

/// Hard limit for commands expected to fail at once.
const QUICK: Duration = Duration::from_secs(20);

#[test]
fn send_to_a_port_nobody_listens_on_exits_3_naming_the_address() {
    let addr = format!("127.0.0.1:{}", free_port());
    let file = fixtures().join("one.bin");
    // No retries: the default window (60 s) is tested in resume.rs.
    let out = send(&["--retry-for", "0", s(&file)], &addr);
    assert_status(&out, 3, "send to a closed port");
    let err = text(&out.stderr);
    assert!(err.contains(&addr), "stderr names {addr}:\n{err}");
    assert!(
        err.to_lowercase().contains("refused"),
        "stderr says refused:\n{err}"
    );
}

#[test]
fn missing_source_exits_1_naming_it_and_sends_nothing() {
    let d = dirs();
    let missing = d.src.join("no-such-file.bin");
    let present = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &present).expect("copy");

    let rx = Receiver::start(&d.out, &[]);
    // Through a proxy, to see whether the sender even connected.
    let proxy = Proxy::start(rx.addr, Mode::Pass);
    let out = send(&[s(&present), s(&missing)], proxy.addr);
    assert_status(&out, 1, "send with a missing source");
    let err = text(&out.stderr);
    assert!(err.contains(s(&missing)), "stderr names the path:\n{err}");
    assert!(names_in(&d.out).is_empty(), "nothing arrived");
    assert_eq!(proxy.connections(), 0, "the sender did not connect at all");
}

#[test]
fn unknown_flag_exits_2() {
    for args in [
        &["send", "--no-such-flag", "a", "127.0.0.1:1"][..],
        &["recv", "--no-such-flag"][..],
        &["send", "127.0.0.1:1"][..], // a target but no path
        &["recv", "--port", "not-a-number"][..],
        &["no-such-command"][..],
    ] {
        let mut cmd = ftx_cmd();
        cmd.args(args);
        let out = run_with_timeout(cmd, QUICK);
        assert_status(&out, 2, &format!("ftx {}", args.join(" ")));
        assert!(!out.stderr.is_empty(), "usage error is explained");
    }
}

#[test]
fn recv_into_a_missing_directory_fails_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("does-not-exist");
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&missing);
    let out = run_with_timeout(cmd, QUICK);
    assert!(
        !out.status.success(),
        "recv into a missing dir must fail, got {:?}",
        out.status
    );
    assert!(
        !text(&out.stdout).contains("listening on"),
        "it must not listen:\n{}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(s(&missing)),
        "stderr names the directory:\n{err}"
    );
    assert!(!missing.exists(), "recv did not create it");
}

#[test]
fn recv_on_a_port_in_use_exits_3_naming_the_port() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("local_addr").port();
    let mut cmd = ftx_cmd();
    cmd.args(["recv", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--out")
        .arg(tmp.path());
    let out = run_with_timeout(cmd, QUICK);
    assert_status(&out, 3, "recv on a port in use");
    let err = text(&out.stderr);
    assert!(
        err.contains(&port.to_string()),
        "stderr names port {port}:\n{err}"
    );
    drop(busy);
}

#[test]
fn flipped_bit_in_flight_exits_4_and_keeps_nothing_then_a_clean_send_works() {
    const SIZE: u64 = 4 << 20;
    const FLIP_AT: u64 = 1_000_000; // position in the sender's byte stream
    let d = dirs();
    let name = "big.bin";
    let file = d.src.join(name);
    write_random(&file, SIZE, 99);
    let good_md5 = md5_hex(&file);

    // The sender's stream: HELLO, PUSH, FILE, BODY header, then the raw
    // bytes.
    // Work out which byte of the file the proxy flips, and so the digest
    // the receiver will compute.
    let hello = to_bytes(&Frame::Hello {
        version: ftx::protocol::limits::VERSION,
        flags: 0,
        agent: ftx::protocol::limits::AGENT.into(),
    });
    let offer = to_bytes(&Frame::File(FileHeader {
        id: 1,
        size: SIZE,
        mode: 0,
        mtime_s: 0,
        mtime_ns: 0,
        flags: 0,
        md5: [0; 16],
        path: name.as_bytes().to_vec(),
    }));
    let body = to_bytes(&Frame::Body {
        id: 1,
        offset: 0,
        length: SIZE,
    });
    let push = to_bytes(&Frame::Push);
    let body_start = (hello.len() + push.len() + offer.len() + body.len()) as u64;
    assert!(FLIP_AT > body_start && FLIP_AT < body_start + SIZE);
    let mut flipped = fs::read(&file).expect("read source");
    flipped[(FLIP_AT - body_start) as usize] ^= 0x01;
    let bad_md5 = md5_hex_bytes(&flipped);

    let mut rx = Receiver::start(&d.out, &[]);
    let proxy = Proxy::start(rx.addr, Mode::FlipByte(FLIP_AT));
    let out = send(&[s(&file)], proxy.addr);
    assert_status(&out, 4, "send through a bit-flipping proxy");
    let err = text(&out.stderr);
    assert!(
        err.to_lowercase().contains("integrity"),
        "stderr says integrity:\n{err}"
    );
    assert!(
        err.contains(&good_md5),
        "stderr shows the sender's MD5 {good_md5}:\n{err}"
    );
    assert!(
        err.contains(&bad_md5),
        "stderr shows the receiver's MD5 {bad_md5}:\n{err}"
    );
    assert!(
        names_in(&d.out).is_empty(),
        "neither {name} nor a .ftx-part is left: {:?}",
        names_in(&d.out)
    );
    assert!(
        !rx.lines().iter().any(|l| l.starts_with("received ")),
        "receiver reported no reception: {:?}",
        rx.lines()
    );

    // The receiver goes on serving: a clean send of the same file works.
    assert!(rx.is_running(), "receiver still running");
    let again = send(&[s(&file)], rx.addr);
    assert_status(&again, 0, "clean send after the integrity failure");
    assert_eq!(md5_hex(d.out.join(name)), good_md5);
    assert_eq!(names_in(&d.out), [name]);
}
