//! Whole or loud: a source that changes while it is sent is named and the
//! run exits non-zero; never exit 0 with a prefix.

use crate::common::*;
use std::fs;
use std::io::Write;
use std::time::Duration;

/// A file appended to while its body is on the way (a log being written):
/// the receiver verifies what was offered, the sender names the file as
/// changed and exits 1.
#[test]
fn a_file_that_grows_while_it_is_sent_is_named_and_the_run_fails() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let file = d.src.join("growing.log");
    write_random(&file, 1 << 20, 81);
    // 256 KiB/s: the body takes about 4 s.
    let proxy = Proxy::start(rx.addr, Mode::Slow(256 << 10));
    let mut cmd = send_cmd();
    cmd.arg(s(&file)).arg(proxy.addr.to_string());
    let mut child = Bg::spawn(cmd);
    // Once the body has started (its partial exists), append to it.
    let part = d.out.join(".growing.log.ftx-part");
    assert!(
        poll_until(Duration::from_secs(20), || part.exists()),
        "the body never started"
    );
    fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(&[b'x'; 1000]))
        .expect("append");
    let out = child.finish(SEND_TIMEOUT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("growing.log"), "named: {err}");
    assert!(
        err.contains("changed as we read it") && err.contains("grew from 1048576 to 1049576"),
        "{err}"
    );
}

/// A /proc file says it is empty and reads as text: not "verified" empty.
#[test]
fn a_proc_file_is_not_sent_as_an_empty_file() {
    let proc_file = std::path::Path::new("/proc/version");
    if !proc_file.exists() {
        eprintln!("no /proc/version on this system: nothing to test");
        return;
    }
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(proc_file)], rx.addr);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("version") && err.contains("reads more"),
        "{err}"
    );
}
