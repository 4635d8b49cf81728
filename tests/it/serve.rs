//! `ftx::recv::serve`: a receiver run in-process on a listener the test
//! bound (port 0), a real `ftx send` process against it, and a shutdown
//! that ends the receiver.

use crate::common::{assert_status, dirs, md5_hex, send, write_random};
use ftx::config::RecvConfig;
use ftx::exit::Exit;
use ftx::recv::{serve, Shutdown};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

fn config(out: &std::path::Path) -> RecvConfig {
    RecvConfig {
        bind: "127.0.0.1".parse().expect("address"),
        port: 0,
        out: out.to_path_buf(),
        once: false,
        overwrite: false,
        allow_unsafe_links: false,
        fold_names: false,
        quiet: true,
        no_progress: false,
        verbose: false,
        timeout: Duration::from_secs(30),
        max_sessions: 64,
        json: false,
        token: None,
        cipher: None,
        connect: None,
        retry_for: std::time::Duration::from_secs(60),
        max_names: ftx::config::DEFAULT_MAX_NAMES,
        paths: Vec::new(),
        streams: 1,
        connect_timeout: Duration::from_secs(10),
        hash: ftx::digest::Algo::Md5,
        get: false,
        cache: true,
        manifest: None,
    }
}

#[test]
fn in_process_receiver_serves_a_real_sender_and_stops_on_shutdown() {
    let d = dirs();
    let file = d.src.join("data.bin");
    write_random(&file, 5 << 20, 7);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = listener.local_addr().expect("address");
    let shutdown = Shutdown::default();
    let (done_tx, done_rx) = mpsc::channel();
    let cfg = config(&d.out);
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let r = serve(listener, &cfg, stop);
        let _ = done_tx.send(());
        r
    });

    let out = send(&["-q", "--no-cache", file.to_str().expect("utf-8")], addr);
    assert_status(&out, 0, "send to the in-process receiver");
    assert_eq!(md5_hex(d.out.join("data.bin")), md5_hex(&file));

    shutdown.trigger();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("serve returns within 10 s of a shutdown");
    let exit = server
        .join()
        .expect("the receiver thread does not panic")
        .expect("serve ends without an error");
    assert_eq!(exit, Exit::Interrupted);
}

#[test]
fn in_process_receiver_refuses_a_missing_output_directory() {
    let d = dirs();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let missing = d.t().join("nope");
    let err = serve(listener, &config(&missing), Shutdown::default())
        .expect_err("a missing output directory is an error");
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

#[test]
fn names_remembered_across_sessions_are_capped_and_given_back() {
    use crate::common::raw::Raw;
    use ftx::protocol::frame::error_code;
    let d = dirs();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = listener.local_addr().expect("address");
    let shutdown = Shutdown::default();
    let cfg = RecvConfig {
        max_names: 5,
        ..config(&d.out)
    };
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || serve(listener, &cfg, stop));

    // One session holds 3 names; a second one gets 2 more, then busy.
    let mut first = Raw::session(addr);
    for i in 0..3 {
        first.make_dir(i + 1, &format!("a{i}"), 0o755);
    }
    let mut second = Raw::session(addr);
    second.make_dir(1, "b0", 0o755);
    second.make_dir(2, "b1", 0o755);
    second.send(&crate::common::raw::dir_offer(3, b"b2", 0o755));
    let msg = second.expect_error(error_code::BUSY);
    assert!(msg.contains("busy"), "{msg}");
    // The first one goes on and ends well; its names are given back.
    assert_eq!(first.end().1, 0, "no failure");
    let mut third = Raw::session(addr);
    for i in 0..5 {
        third.make_dir(i + 1, &format!("c{i}"), 0o755);
    }
    assert_eq!(third.end().1, 0, "no failure");
    for i in 0..5 {
        assert!(d.out.join(format!("c{i}")).is_dir());
    }

    shutdown.trigger();
    let exit = server
        .join()
        .expect("the receiver thread does not panic")
        .expect("serve ends without an error");
    assert_eq!(exit, Exit::Interrupted);
}
