//! Self-tests of the integration-test harness (`tests/common/mod.rs`) and of
//! the committed fixtures. They do not need a working `ftx`: the proxy runs
//! against an in-process server, and the `Receiver` plumbing is exercised
//! with a small `sh` stand-in.

use crate::common;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::{Mode, Proxy, Receiver};

const T: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 that accepts `conns` connections one after the
/// other; for each it reads until EOF (bounded by a read timeout), reports
/// what it got on the channel, echoes it back and closes.
fn collect_server(conns: usize) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(T)).expect("read timeout");
            s.set_write_timeout(Some(T)).expect("write timeout");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let _ = s.write_all(&got);
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Connects to `addr`, writes `data` in uneven chunks (so proxy reads split
/// across them), half-closes, and returns what comes back before EOF. Write
/// errors are ignored (a cut connection may reset).
fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, T).expect("connect");
    s.set_read_timeout(Some(T)).expect("read timeout");
    s.set_write_timeout(Some(T)).expect("write timeout");
    for chunk in data.chunks(3001) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn proxy_pass_forwards_both_ways() {
    let (server, got) = collect_server(1);
    let proxy = Proxy::start(server, Mode::Pass);
    let data = pattern(100_000);
    let back = exchange(proxy.addr, &data);
    let received = got.recv_timeout(T).expect("server got a connection");
    assert_eq!(received, data);
    assert_eq!(back, data);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.bytes_client_to_server(), data.len() as u64);
    assert_eq!(proxy.bytes_server_to_client(), data.len() as u64);
}

#[test]
fn proxy_flip_byte_flips_exactly_that_byte() {
    // 0, a position inside a later read, and the last byte.
    for n in [0u64, 45_678, 99_999] {
        let (server, got) = collect_server(1);
        let proxy = Proxy::start(server, Mode::FlipByte(n));
        let data = pattern(100_000);
        let back = exchange(proxy.addr, &data);
        let received = got.recv_timeout(T).expect("server got a connection");
        let mut expected = data.clone();
        expected[n as usize] ^= 0x01;
        assert_eq!(received.len(), data.len());
        let diff: Vec<usize> = (0..data.len())
            .filter(|&i| received[i] != data[i])
            .collect();
        assert_eq!(diff, vec![n as usize]);
        assert_eq!(received, expected);
        // Server→client is not modified: the echo is what the server got.
        assert_eq!(back, expected);
    }
}

#[test]
fn proxy_cut_after_forwards_exactly_n_then_closes() {
    for n in [0u64, 1, 20_000] {
        let (server, got) = collect_server(1);
        let proxy = Proxy::start(server, Mode::CutAfter(n));
        let data = pattern(100_000);
        let back = exchange(proxy.addr, &data);
        let received = got.recv_timeout(T).expect("server got a connection");
        assert_eq!(received, data[..n as usize]);
        assert!(back.is_empty(), "nothing comes back after the cut");
        assert_eq!(proxy.bytes_client_to_server(), n);
    }
}

#[test]
fn proxy_set_mode_applies_to_later_connections() {
    let (server, got) = collect_server(2);
    let proxy = Proxy::start(server, Mode::CutAfter(10));
    let data = pattern(5000);
    exchange(proxy.addr, &data);
    assert_eq!(got.recv_timeout(T).expect("first connection"), data[..10]);
    proxy.set_mode(Mode::Pass);
    assert_eq!(exchange(proxy.addr, &data), data);
    assert_eq!(got.recv_timeout(T).expect("second connection"), data);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.bytes_client_to_server(), 10 + 5000);
}

/// Relative paths of all files under `root`.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    common::snapshot_outside(root)
        .into_iter()
        .filter(|p| root.join(p).is_file())
        .collect()
}

#[test]
fn md5_hex_matches_md5sums_and_md5sums_is_complete() {
    let dir = common::fixtures();
    let sums = fs::read_to_string(dir.join("MD5SUMS")).expect("read MD5SUMS");
    let mut listed = BTreeSet::new();
    for line in sums.lines() {
        let (hex, path) = line.split_once("  ").expect("`md5  path` line");
        assert_eq!(common::md5_hex(dir.join(path)), hex, "md5 of {path}");
        listed.insert(PathBuf::from(path));
    }
    let mut on_disk = files_under(&dir);
    on_disk.remove(Path::new("MD5SUMS"));
    on_disk.remove(Path::new("README.md"));
    assert_eq!(listed, on_disk, "MD5SUMS lists exactly the fixture files");
    assert_eq!(
        common::md5_hex_bytes(b""),
        "d41d8cd98f00b204e9800998ecf8427e"
    );
}

#[test]
fn fixtures_have_the_documented_shape() {
    let dir = common::fixtures();
    assert_eq!(fs::read(dir.join("empty.bin")).expect("empty.bin"), b"");
    assert_eq!(fs::read(dir.join("one.bin")).expect("one.bin"), [0x42]);
    let bin = fs::read(dir.join("binary.bin")).expect("binary.bin");
    assert!(bin.len() >= 4096 && bin.contains(&0) && bin.contains(&0xFF));
    let tree = tempfile::tempdir().expect("tempdir");
    common::copy_tree(dir.join("tree"), tree.path().join("tree"));
    let names: BTreeSet<PathBuf> = common::snapshot_outside(tree.path().join("tree"));
    let expected: BTreeSet<PathBuf> = [
        "a.txt",
        "empty",
        "sub",
        "sub/b.bin",
        "sub/deeper",
        "sub/deeper/c.txt",
        "with space.txt",
        "ünïcødé",
        "ünïcødé/ファイル.txt",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn copy_tree_applies_fixture_metadata() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("tree");
    common::copy_tree(common::fixtures().join("tree"), &copy);
    for (rel, mode, mtime) in common::FIXTURE_TREE_META {
        let p = copy.join(rel);
        assert_eq!(common::mode_of(&p), *mode, "mode of {rel:?}");
        assert_eq!(common::mtime_of(&p), *mtime, "mtime of {rel:?}");
    }
    assert!(fs::read_dir(copy.join("empty"))
        .expect("empty/")
        .next()
        .is_none());
}

/// Asserts that `f` panics (and silences nothing: the message is printed).
fn assert_panics(what: &str, f: impl FnOnce()) {
    assert!(
        catch_unwind(AssertUnwindSafe(f)).is_err(),
        "expected a panic: {what}"
    );
}

#[test]
fn assert_trees_equal_accepts_copies_and_rejects_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    common::copy_tree(common::fixtures().join("tree"), &a);
    common::copy_tree(&a, &b); // a plain copy preserves everything
    common::assert_trees_equal(&a, &b);

    // Changed file mode.
    let f = b.join("sub/deeper/c.txt");
    common::set_mode(&f, 0o644);
    assert_panics("changed file mode", || common::assert_trees_equal(&a, &b));
    common::set_mode(&f, 0o600);
    common::assert_trees_equal(&a, &b);

    // Changed directory mode.
    common::set_mode(b.join("sub"), 0o755);
    assert_panics("changed dir mode", || common::assert_trees_equal(&a, &b));
    common::set_mode(b.join("sub"), 0o750);

    // Changed mtime.
    common::set_mtime(&f, 1);
    assert_panics("changed mtime", || common::assert_trees_equal(&a, &b));
    common::set_mtime(&f, common::mtime_of(a.join("sub/deeper/c.txt")));
    common::assert_trees_equal(&a, &b);

    // Same size, one byte different, same mode and mtime.
    let g = b.join("sub/b.bin");
    let mut bytes = fs::read(&g).expect("read b.bin");
    bytes[500] ^= 0x80;
    fs::write(&g, &bytes).expect("write b.bin");
    common::set_mtime(&g, common::mtime_of(a.join("sub/b.bin")));
    assert_panics("changed content", || common::assert_trees_equal(&a, &b));
    fs::copy(a.join("sub/b.bin"), &g).expect("restore b.bin");
    common::set_mtime(&g, common::mtime_of(a.join("sub/b.bin")));
    common::assert_trees_equal(&a, &b);

    // Missing empty directory / extra entry.
    fs::remove_dir(b.join("empty")).expect("rmdir");
    assert_panics("missing empty dir", || common::assert_trees_equal(&a, &b));
    fs::create_dir(b.join("empty")).expect("mkdir");
    common::set_mode(b.join("empty"), 0o700);
    common::assert_trees_equal(&a, &b);
    fs::write(b.join("extra"), b"x").expect("extra");
    assert_panics("extra file", || common::assert_trees_equal(&a, &b));
}

#[test]
fn write_random_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (p1, p2, p3) = (
        tmp.path().join("1"),
        tmp.path().join("2"),
        tmp.path().join("3"),
    );
    let size = 10 * 1024 * 1024 + 3; // not a multiple of the buffer or word
    common::write_random(&p1, size, 42);
    common::write_random(&p2, size, 42);
    common::write_random(&p3, size, 43);
    assert_eq!(fs::metadata(&p1).expect("stat").len(), size);
    assert_eq!(common::md5_hex(&p1), common::md5_hex(&p2));
    assert_ne!(common::md5_hex(&p1), common::md5_hex(&p3));
    common::write_random(&p1, 0, 42);
    assert_eq!(fs::metadata(&p1).expect("stat").len(), 0);
}

#[test]
fn snapshot_outside_lists_everything_without_following_symlinks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    fs::create_dir_all(root.join("out/x")).expect("mkdir");
    fs::write(root.join("out/x/f"), b"").expect("write");
    std::os::unix::fs::symlink("/", root.join("out/link")).expect("symlink");
    let before = common::snapshot_outside(root);
    let expected: BTreeSet<PathBuf> = ["out", "out/x", "out/x/f", "out/link"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(before, expected);
    fs::write(root.join("escaped"), b"").expect("write");
    let after = common::snapshot_outside(root);
    let new: Vec<_> = after.difference(&before).collect();
    assert_eq!(new, [Path::new("escaped")]);
}

/// A stand-in for `ftx recv`: prints the listening line and one received
/// line, writes to stderr, then either lingers or exits with `code`.
fn fake_receiver(script: &str) -> Receiver {
    let tmp = std::env::temp_dir();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    Receiver::spawn(cmd, &tmp)
}

#[test]
fn receiver_plumbing_lines_stderr_kill() {
    let mut rx = fake_receiver(
        "echo 'listening on 127.0.0.1:4321'; echo 'received a.txt 6 bytes md5 00'; \
         echo 'received b.txt 1 bytes md5 11'; echo 'ftx: hello' >&2; exec sleep 60",
    );
    assert_eq!(rx.addr, "127.0.0.1:4321".parse().expect("addr"));
    // Lines can be waited for out of order; each is returned once.
    let b = rx.wait_line(|l| l.starts_with("received b.txt"), T);
    assert_eq!(b.as_deref(), Some("received b.txt 1 bytes md5 11"));
    let a = rx.wait_line(|l| l.starts_with("received "), T);
    assert_eq!(a.as_deref(), Some("received a.txt 6 bytes md5 00"));
    assert_eq!(
        rx.wait_line(|l| l.starts_with("received "), Duration::from_millis(200)),
        None
    );
    assert_eq!(rx.lines().len(), 3);
    assert!(rx.is_running());
    assert_eq!(rx.wait_exit(Duration::from_millis(200)), None);
    rx.kill();
    assert!(!rx.is_running());
    assert!(
        rx.stderr().contains("ftx: hello"),
        "stderr: {:?}",
        rx.stderr()
    );
    let status = rx.wait_exit(T).expect("exited");
    assert!(!status.success());
}

#[test]
fn receiver_wait_exit_and_interrupt() {
    let mut rx = fake_receiver("echo 'listening on [::1]:7'; echo bye >&2; exit 7");
    assert_eq!(rx.addr, "[::1]:7".parse().expect("addr"));
    let status = rx.wait_exit(T).expect("exits by itself");
    assert_eq!(status.code(), Some(7));
    assert_eq!(rx.stderr(), "bye\n");
    assert_eq!(rx.wait_line(|_| true, T), None, "stdout closed");

    let mut rx = fake_receiver("echo 'listening on 127.0.0.1:1'; exec sleep 60");
    rx.interrupt();
    let status = rx.wait_exit(T).expect("SIGINT ends sleep");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT));
}

#[test]
fn receiver_start_panics_without_listening_line() {
    assert_panics("no listening line", || {
        fake_receiver("echo 'not it'; echo 'ftx: cannot bind' >&2; exit 1");
    });
}

#[test]
fn run_with_timeout_captures_and_bounds() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("echo out; echo err >&2; exit 3");
    let out = common::run_with_timeout(cmd, T);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("echo partial; exec sleep 60");
    assert_panics("timeout", || {
        common::run_with_timeout(cmd, Duration::from_millis(300));
    });
}
