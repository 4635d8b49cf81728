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
    // A block or more: the receiver gives its partial a name (a smaller
    // file has none until it is placed). 1 MiB/s: about 5 s.
    write_random(&file, 5 << 20, 81);
    let proxy = Proxy::start(rx.addr, Mode::Slow(1 << 20));
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
        err.contains("changed as we read it") && err.contains("grew from 5242880 to 5243880"),
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

/// A receiver into `out` in a mount namespace of its own (as root), where
/// `mount` (a shell command; `$0` is OUT) ran first.
fn receiver_in_own_mount(mount: &str, out: &std::path::Path) -> Receiver {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{mount} && exec \"$1\" recv --port 0 --bind 127.0.0.1 --out \"$0\""
        ))
        .arg(out)
        .arg(ftx_bin());
    Receiver::spawn(cmd, out)
}

/// OUT turns read-only in the middle of a tree: the receiver ends the
/// session with one error naming the cause, the sender says it once and
/// exits 1, a few dozen lines at most on each side; once OUT is writable
/// again, the same command finishes the tree. (As root, in a mount
/// namespace of the receiver's own: a read-only bind mount of OUT.)
#[test]
fn a_read_only_out_stops_the_session_with_one_error() {
    if !is_root() {
        eprintln!("not root: cannot remount OUT read-only in a mount namespace; skipped");
        return;
    }
    let d = dirs();
    let tree = d.src.join("tree");
    fs::create_dir(&tree).expect("mkdir");
    for i in 0..3000 {
        fs::write(
            tree.join(format!("f{i:04}.txt")),
            format!("file {i}\n").repeat(100),
        )
        .expect("write");
    }
    let rx = receiver_in_own_mount("mount --bind \"$0\" \"$0\"", &d.out);
    // A 512 KiB/s link: about 6 s for the tree, time to turn OUT
    // read-only in the middle.
    let proxy = Proxy::start(rx.addr, Mode::Slow(512 << 10));
    let mut sender = Bg::spawn({
        let mut c = send_cmd();
        c.arg(s(&tree)).arg(proxy.addr.to_string());
        c
    });
    let got = d.out.join("tree");
    assert!(
        poll_until(Duration::from_secs(30), || {
            fs::read_dir(&got).map(|r| r.count()).unwrap_or(0) >= 200
        }),
        "files never started to arrive"
    );
    // A bind mount turns read-only only between two writes (EBUSY while a
    // file is open for writing): tried until it takes, for at most 20 s
    // (a count of 500 tries once ran out on a loaded machine while files
    // were still arriving).
    let pid = rx.pid().to_string();
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut took = false;
    while !took && std::time::Instant::now() < deadline {
        let r = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-m", "mount", "-o", "remount,bind,ro"])
            .arg(&d.out)
            .output()
            .expect("nsenter");
        last = text(&r.stderr);
        took = r.status.success();
    }
    assert!(took, "remount read-only within 20 s: {last}");
    let out = sender.finish(SEND_TIMEOUT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = err.lines().count();
    assert!(lines <= 40, "{lines} lines from the sender:\n{err}");
    assert!(err.contains("read-only"), "the cause is named: {err}");
    // The receiver logs the end of the session as it closes it.
    poll_until(Duration::from_secs(10), || {
        rx.stderr().contains("stopped receiving")
    });
    let rx_log = rx.stderr();
    assert!(
        rx_log.lines().count() <= 40,
        "{} lines from the receiver:\n{rx_log}",
        rx_log.lines().count()
    );
    assert!(
        rx_log.contains("stopped receiving") && rx_log.contains("read-only"),
        "{rx_log}"
    );
    // Writable again: the same command finishes the tree.
    let rw = std::process::Command::new("nsenter")
        .args([
            "-t",
            &rx.pid().to_string(),
            "-m",
            "mount",
            "-o",
            "remount,bind,rw",
        ])
        .arg(&d.out)
        .output()
        .expect("nsenter");
    assert!(
        rw.status.success(),
        "remount read-write: {}",
        text(&rw.stderr)
    );
    let again = send(&[s(&tree)], rx.addr);
    assert_status(&again, 0, "the same send once OUT is writable");
    assert_eq!(fs::read_dir(&got).expect("tree").count(), 3000);
}

/// OUT runs out of inodes in the middle of a tree (a small tmpfs in a
/// mount namespace of the receiver's own, as root): one error naming the
/// cause on each side, exit 1, not a line for every file after it.
#[test]
fn an_out_without_free_inodes_stops_the_session_with_one_error() {
    if !is_root() {
        eprintln!("not root: cannot mount a small tmpfs in a mount namespace; skipped");
        return;
    }
    let d = dirs();
    let tree = d.src.join("tree");
    fs::create_dir(&tree).expect("mkdir");
    for i in 0..1000 {
        fs::write(tree.join(format!("f{i:04}.txt")), format!("file {i}\n")).expect("write");
    }
    let rx = receiver_in_own_mount(
        "mount -t tmpfs -o size=64m,nr_inodes=300 tmpfs \"$0\"",
        &d.out,
    );
    let out = send(&[s(&tree)], rx.addr);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().count() <= 40,
        "{} lines:\n{err}",
        err.lines().count()
    );
    assert!(err.contains("no free inodes"), "the cause is named: {err}");
    assert!(
        poll_until(Duration::from_secs(10), || rx
            .stderr()
            .contains("stopped receiving")),
        "{}",
        rx.stderr()
    );
    assert!(rx.stderr().lines().count() <= 40, "{}", rx.stderr());
}

/// A source truncated between two sends: the receiver's partial of the
/// larger file is set aside as other content, and says so (not "state
/// file is corrupt").
#[test]
fn a_partial_of_a_larger_file_is_discarded_as_other_content() {
    use crate::common::raw::{file_offer, Raw};
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let big: Vec<u8> = (0..(24u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut raw = Raw::session(rx.addr);
    raw.start_body(1, b"t.bin", &big);
    raw.write(&big[..21 << 20]);
    drop(raw);
    let state = d.out.join(".t.bin.ftx-state");
    assert!(
        poll_until(Duration::from_secs(10), || state.exists()),
        "the cut body was checkpointed"
    );
    // A file of a block or more looks at its partial when it is offered
    // (a smaller one never has one: it is written without a name).
    let other = &big[..5 << 20];
    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(1, b"t.bin", other));
    assert!(matches!(
        raw.expect("ACCEPT"),
        ftx::protocol::Frame::Accept { id: 1, offset: 0 }
    ));
    drop(raw);
    assert!(
        poll_until(Duration::from_secs(10), || rx
            .stderr()
            .contains("partial belongs to other content")),
        "{}",
        rx.stderr()
    );
    rx.interrupt();
    assert!(!rx.stderr().contains("corrupt"), "{}", rx.stderr());
}
