//! Transfers that should work: `ftx recv` and `ftx send` as two real
//! processes over loopback, real files in temporary directories.
//!
//! Every check compares what arrived with the source: content (MD5),
//! permission bits and mtime, the receiver's `received ...` lines, and the
//! exit statuses of both sides.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    assert_status, assert_trees_arrived, copy_tree, dirs, fixtures, ftx_bin, md5_hex, mode_of,
    mtime_of, names_in, run_with_timeout, s, send, send_cmd, set_mode, set_mtime, text,
    write_random, Receiver, FIXTURE_TREE_META, SEND_TIMEOUT,
};

/// How long to wait for a receiver's stdout line or exit.
const WAIT: Duration = Duration::from_secs(15);
/// An mtime well in the past (2017-07-14), so "now" is never mistaken for it.
const OLD_MTIME: i64 = 1_500_000_000;

/// Waits for the receiver's `received NAME SIZE bytes md5 HEX` line for
/// `name` and checks size and digest.
fn expect_received_line(rx: &mut Receiver, name: &str, size: u64, md5: &str) {
    let prefix = format!("received {name} {size} bytes md5 {md5}");
    let line = rx.wait_line(|l| l.starts_with(&prefix), WAIT);
    assert!(
        line.is_some(),
        "no stdout line starting with {prefix:?}; receiver stdout so far:\n{}\n--- stderr ---\n{}",
        rx.lines().join("\n"),
        rx.stderr()
    );
}

/// Sends one file created by `make` (then given mode 0o640 and an old mtime)
/// and checks that it arrives identical, with its mode and mtime, and that
/// the receiver reports it.
fn single_file_arrives_intact(name: &str, make: impl FnOnce(&Path)) {
    let d = dirs();
    let file = d.src.join(name);
    make(&file);
    set_mode(&file, 0o640);
    set_mtime(&file, OLD_MTIME);
    let md5 = md5_hex(&file);
    let size = fs::metadata(&file).expect("stat source").len();

    let mut rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 0, "ftx send");

    let got = d.out.join(name);
    assert_eq!(md5_hex(&got), md5, "content of {name}");
    assert_eq!(fs::metadata(&got).expect("stat").len(), size);
    assert_eq!(mode_of(&got), 0o640, "mode of {name}");
    assert_eq!(mtime_of(&got), OLD_MTIME, "mtime of {name}");
    assert_eq!(names_in(&d.out), [name], "only the file, no partial left");
    expect_received_line(&mut rx, name, size, &md5);
}

#[test]
fn empty_file_arrives_identical_with_mode_and_mtime() {
    single_file_arrives_intact("empty.bin", |p| {
        fs::copy(fixtures().join("empty.bin"), p).expect("copy empty.bin");
    });
}

#[test]
fn one_byte_file_arrives_identical_with_mode_and_mtime() {
    single_file_arrives_intact("one.bin", |p| {
        fs::copy(fixtures().join("one.bin"), p).expect("copy one.bin");
    });
}

#[test]
fn binary_fixture_arrives_identical_with_mode_and_mtime() {
    single_file_arrives_intact("binary.bin", |p| {
        fs::copy(fixtures().join("binary.bin"), p).expect("copy binary.bin");
    });
}

#[test]
fn ten_mib_file_arrives_identical_with_mode_and_mtime() {
    single_file_arrives_intact("big.bin", |p| write_random(p, 10 << 20, 42));
}

#[test]
fn directory_tree_arrives_with_empty_dirs_modes_and_mtimes() {
    let d = dirs();
    let tree = d.src.join("tree");
    copy_tree(fixtures().join("tree"), &tree);

    let mut rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&tree)], rx.addr);
    assert_status(&out, 0, "ftx send tree");

    let got = d.out.join("tree");
    assert_trees_arrived(&tree, &got);
    assert_eq!(names_in(&d.out), ["tree"]);
    assert!(got.join("empty").is_dir(), "empty/ was created");
    assert!(
        names_in(&got.join("empty")).is_empty(),
        "empty/ stays empty"
    );
    // Directory attributes (applied at END), root included, which
    // assert_trees_arrived does not cover.
    for (rel, mode, mtime) in FIXTURE_TREE_META {
        let p = if rel.is_empty() {
            got.clone()
        } else {
            got.join(rel)
        };
        // As the receiver's umask leaves them (README "Modes").
        let want = if p.is_dir() {
            (mode & !crate::common::umask()) | 0o700
        } else {
            crate::common::arrived_file_mode(*mode)
        };
        assert_eq!(mode_of(&p), want, "mode of tree/{rel}");
        assert_eq!(mtime_of(&p), *mtime, "mtime of tree/{rel}");
    }
    // One `received` line per file.
    for (rel, _, _) in FIXTURE_TREE_META {
        let p = tree.join(rel);
        if rel.is_empty() || !p.is_file() {
            continue;
        }
        let size = fs::metadata(&p).expect("stat").len();
        expect_received_line(&mut rx, &format!("tree/{rel}"), size, &md5_hex(&p));
    }
}

#[test]
fn a_file_and_a_directory_in_one_command_both_arrive() {
    let d = dirs();
    let file = d.src.join("binary.bin");
    fs::copy(fixtures().join("binary.bin"), &file).expect("copy");
    set_mode(&file, 0o600);
    set_mtime(&file, OLD_MTIME);
    let tree = d.src.join("tree");
    copy_tree(fixtures().join("tree"), &tree);

    let mut rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&file), s(&tree)], rx.addr);
    assert_status(&out, 0, "ftx send file dir");

    assert_eq!(names_in(&d.out), ["binary.bin", "tree"]);
    let got = d.out.join("binary.bin");
    assert_eq!(md5_hex(&got), md5_hex(&file));
    assert_eq!(mode_of(&got), 0o600);
    assert_eq!(mtime_of(&got), OLD_MTIME);
    assert_trees_arrived(&tree, d.out.join("tree"));
    expect_received_line(&mut rx, "binary.bin", 6144, &md5_hex(&file));
}

#[test]
fn recv_once_exits_0_after_a_good_session() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");

    let mut rx = Receiver::start(&d.out, &["--once"]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 0, "ftx send");
    let status = rx.wait_exit(WAIT);
    let Some(status) = status else {
        panic!("recv --once still running after the session");
    };
    assert_eq!(
        status.code(),
        Some(0),
        "recv --once status; stderr:\n{}",
        rx.stderr()
    );
    assert_eq!(md5_hex(d.out.join("one.bin")), md5_hex(&file));
    expect_received_line(&mut rx, "one.bin", 1, &md5_hex(&file));
}

#[test]
fn recv_once_exits_nonzero_when_a_file_of_the_session_was_refused() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    fs::write(d.out.join("one.bin"), b"other content").expect("pre-existing target");

    let mut rx = Receiver::start(&d.out, &["--once"]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 5, "ftx send to an existing different file");
    let Some(status) = rx.wait_exit(WAIT) else {
        panic!("recv --once still running after the session");
    };
    assert_eq!(status.code(), Some(1), "stderr:\n{}", rx.stderr());
}

/// Spawns `ftx send ARGS... ADDR` with captured output, without waiting.
fn spawn_send(args: &[&str], addr: impl std::fmt::Display) -> Child {
    let mut cmd = send_cmd();
    cmd.args(args)
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn ftx send")
}

/// Waits for every child, in any order, within `timeout` overall. On
/// timeout the children still running are killed and this panics.
fn wait_all(children: Vec<Child>, timeout: Duration) -> Vec<Output> {
    let (tx, rx) = mpsc::channel();
    let mut pids = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        pids.push(child.id());
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((i, child.wait_with_output()));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut outputs: Vec<Option<Output>> = pids.iter().map(|_| None).collect();
    for _ in 0..pids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, res)) => outputs[i] = Some(res.expect("wait for ftx send")),
            Err(_) => {
                for (i, pid) in pids.iter().enumerate() {
                    if outputs[i].is_none() {
                        // SAFETY: plain syscall. The child is unreaped while its
                        // waiting thread has not returned, so the pid is still ours.
                        unsafe {
                            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                        }
                    }
                }
                panic!("ftx send did not finish within {timeout:?}");
            }
        }
    }
    outputs
        .into_iter()
        .map(|o| o.expect("every child reported"))
        .collect()
}

#[test]
fn two_senders_at_once_to_one_receiver_both_succeed() {
    let d = dirs();
    let a = d.src.join("a.bin");
    let b = d.src.join("b.bin");
    write_random(&a, 8 << 20, 1);
    write_random(&b, 8 << 20, 2);

    let mut rx = Receiver::start(&d.out, &[]);
    // Both processes are started before either is waited for.
    let children = vec![spawn_send(&[s(&a)], rx.addr), spawn_send(&[s(&b)], rx.addr)];
    let outs = wait_all(children, SEND_TIMEOUT);
    assert_status(&outs[0], 0, "sender of a.bin");
    assert_status(&outs[1], 0, "sender of b.bin");

    assert_eq!(names_in(&d.out), ["a.bin", "b.bin"]);
    assert_eq!(md5_hex(d.out.join("a.bin")), md5_hex(&a));
    assert_eq!(md5_hex(d.out.join("b.bin")), md5_hex(&b));
    expect_received_line(&mut rx, "a.bin", 8 << 20, &md5_hex(&a));
    expect_received_line(&mut rx, "b.bin", 8 << 20, &md5_hex(&b));
}

#[test]
fn many_small_files_over_three_streams_with_a_low_open_file_limit() {
    // Each connection keeps up to 128 files in flight. A sender started
    // with a soft limit of 64 open files must still get them all there:
    // ftx raises its soft limit to the hard one, and does not keep a
    // small file open once it has read it.
    let d = dirs();
    let tree = d.src.join("many");
    for i in 0..600u64 {
        let sub = tree.join(format!("d{}", i / 50));
        fs::create_dir_all(&sub).expect("mkdir");
        write_random(sub.join(format!("f{i:03}.bin")), 1 + i * 37 % 9000, i);
    }
    let rx = Receiver::start(&d.out, &[]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 64 && exec \"$0\" \"$@\"")
        .arg(ftx_bin())
        .args(["send", "-q", "-j", "3", "--no-cache", s(&tree)])
        .arg(rx.addr.to_string())
        .stdin(Stdio::null())
        .env_remove("FTX_TOKEN");
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "send -j 3 with a soft limit of 64 open files");
    assert_trees_arrived(&tree, d.out.join("many"));
}

#[test]
fn a_receiver_runs_as_batch_work_with_its_descriptor_table_grown_up_front() {
    // Both are set before any thread starts (README: "Scheduling", and
    // "Stalls and preemption" under "Performance"): every thread is
    // SCHED_BATCH, and the table is not grown (which waits for an RCU
    // grace period once threads run) while files arrive.
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let pid = rx.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let fd_size: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize in /proc/PID/status");
    let limit = fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let soft: u64 = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("open-file limit in /proc/PID/limits");
    assert!(
        fd_size >= soft.min(16384),
        "descriptor table of {fd_size} entries, open-file limit {soft}"
    );
    let mut threads = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat = fs::read_to_string(task.expect("task").path().join("stat")).expect("stat");
        // Field 41 of proc_pid_stat(5) is the policy; fields 3 on follow
        // the command name's closing parenthesis. SCHED_BATCH is 3.
        let policy = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3));
        assert_eq!(policy, Some("3"), "a thread's policy (stat: {stat})");
        threads += 1;
    }
    assert!(threads >= 1);
    rx.kill();
}

/// (inode, mtime s, mtime ns, ctime s, ctime ns) of `p`.
fn identity(p: &Path) -> (u64, i64, i64, i64, i64) {
    let m = fs::symlink_metadata(p).expect("stat");
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

#[test]
fn sending_an_identical_file_again_is_skipped_and_leaves_the_target_untouched() {
    let d = dirs();
    let file = d.src.join("same.bin");
    write_random(&file, 300_000, 7);
    set_mode(&file, 0o640);
    set_mtime(&file, OLD_MTIME);

    let mut rx = Receiver::start(&d.out, &[]);
    let first = send(&[s(&file)], rx.addr);
    assert_status(&first, 0, "first send");
    let target = d.out.join("same.bin");
    let before = identity(&target);

    let second = send(&[s(&file)], rx.addr);
    assert_status(&second, 0, "second send of identical content");
    assert_eq!(
        identity(&target),
        before,
        "inode, mtime and ctime of the target are unchanged"
    );
    assert_eq!(md5_hex(&target), md5_hex(&file));
    assert_eq!(names_in(&d.out), ["same.bin"]);
    assert!(
        text(&second.stderr).contains("1 skipped"),
        "sender summary reports the skip:\n{}",
        text(&second.stderr)
    );
    // The receiver logged a SKIP, not a second reception.
    rx.kill();
    let err = rx.stderr();
    assert!(
        err.contains("skipped 'same.bin'"),
        "receiver stderr:\n{err}"
    );
    let received: Vec<String> = rx
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("received same.bin "))
        .collect();
    assert_eq!(received.len(), 1, "exactly one reception: {received:?}");
}

#[test]
fn different_existing_file_without_overwrite_is_refused_with_exit_5() {
    let d = dirs();
    let file = d.src.join("doc.txt");
    fs::write(&file, b"new content\n").expect("write source");
    let target = d.out.join("doc.txt");
    fs::write(&target, b"old content, longer than the new one\n").expect("write target");
    set_mtime(&target, OLD_MTIME);
    let old_md5 = md5_hex(&target);
    let before = identity(&target);

    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 5, "send onto a different existing file");
    assert!(
        text(&out.stderr).contains("doc.txt"),
        "stderr names the file:\n{}",
        text(&out.stderr)
    );
    assert_eq!(md5_hex(&target), old_md5, "target content unchanged");
    assert_eq!(identity(&target), before, "target not touched at all");
    assert_eq!(names_in(&d.out), ["doc.txt"], "no partial left");
}

#[test]
fn different_existing_file_with_overwrite_is_replaced() {
    let d = dirs();
    let file = d.src.join("doc.txt");
    fs::write(&file, b"new content\n").expect("write source");
    set_mode(&file, 0o640);
    set_mtime(&file, OLD_MTIME);
    let target = d.out.join("doc.txt");
    fs::write(&target, b"old content, longer than the new one\n").expect("write target");
    set_mode(&target, 0o600);

    let mut rx = Receiver::start(&d.out, &["--overwrite"]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 0, "send with receiver --overwrite");
    assert_eq!(md5_hex(&target), md5_hex(&file), "target replaced");
    assert_eq!(mode_of(&target), 0o640);
    assert_eq!(mtime_of(&target), OLD_MTIME);
    assert_eq!(names_in(&d.out), ["doc.txt"], "no partial left");
    expect_received_line(&mut rx, "doc.txt", 12, &md5_hex(&file));
}
