//! Pulls: `ftx serve ROOT` and `ftx get HOST:PORT/PATH`, `ftx ls`, as real
//! processes over loopback; hostile getters (paths out of the roots, a
//! PUSH to a server) and a lying server (names, digests) against them.

use crate::common::raw::{file_offer, md5_of, Raw};
use crate::common::*;
use ftx::protocol::frame::{error_code, pull_flags};
use ftx::protocol::Frame;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "3f5e9c1a7b2d4e6f8091a2b3c4d5e6f7";

/// A tree with a file of several MiB, a small one, a symlink, a hard link
/// and a sparse file.
fn tree(src: &Path) -> std::path::PathBuf {
    let t = src.join("tree");
    fs::create_dir_all(t.join("sub")).expect("mkdir");
    write_random(t.join("big.bin"), 9 << 20, 31);
    fs::write(t.join("sub/small.txt"), b"small\n").expect("write");
    std::os::unix::fs::symlink("big.bin", t.join("link")).expect("symlink");
    fs::hard_link(t.join("sub/small.txt"), t.join("sub/hard.txt")).expect("hard link");
    let sparse = fs::File::create(t.join("sparse.img")).expect("create");
    sparse.set_len(32 << 20).expect("set_len");
    drop(sparse);
    t
}

/// `ftx serve --port 0 --bind 127.0.0.1 ROOTS...` (with `token`).
fn server(roots: &[&Path], scratch: &Path, token: Option<&str>, extra: &[&str]) -> Receiver {
    let mut cmd = ftx_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .args(extra)
        .args(roots);
    Receiver::spawn(cmd, scratch)
}

fn get(token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = ftx_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.arg("get").args(args);
    run_with_timeout(cmd, SEND_TIMEOUT)
}

fn at(rx: &Receiver, path: &str) -> String {
    format!("{}/{path}", rx.addr)
}

#[test]
fn get_pulls_a_tree_and_a_single_file_plain_and_encrypted() {
    for token in [None, Some(TOKEN)] {
        let d = dirs();
        let t = tree(&d.src);
        let srv = server(&[&t], &d.out, token, &[]);
        let out = get(token, &[&at(&srv, "tree"), "--out", s(&d.out)]);
        assert_status(&out, 0, "get a tree");
        assert_trees_arrived(&t, d.out.join("tree"));
        // The sparse file arrived sparse, the hard link as a link.
        let md = fs::metadata(d.out.join("tree/sparse.img")).expect("sparse");
        use std::os::unix::fs::MetadataExt;
        assert!(
            md.blocks() * 512 < md.len() / 2,
            "sparse: {} blocks",
            md.blocks()
        );
        assert_eq!(
            fs::metadata(d.out.join("tree/sub/hard.txt"))
                .expect("hard")
                .nlink(),
            2
        );
        if token.is_some() {
            assert!(text(&out.stderr).contains("encrypted"), "{}", show(&out));
        }
        // One file from inside the tree lands under its own name.
        let one = d.t().join("one");
        fs::create_dir(&one).expect("mkdir");
        let out = get(token, &[&at(&srv, "tree/sub/small.txt"), "--out", s(&one)]);
        assert_status(&out, 0, "get one file");
        assert_eq!(fs::read(one.join("small.txt")).expect("read"), b"small\n");
        // Again: everything is there already.
        let out = get(token, &[&at(&srv, "tree"), "--out", s(&d.out)]);
        assert_status(&out, 0, "get again");
        let said = text(&out.stderr);
        assert!(said.contains("3 skipped, 0 failed, 0 B"), "{}", show(&out));
    }
}

#[test]
fn get_with_several_streams_pulls_the_same_tree() {
    let d = dirs();
    let t = d.src.join("many");
    for i in 0..40 {
        let dir = t.join(format!("d{}", i % 5));
        fs::create_dir_all(&dir).expect("mkdir");
        write_random(dir.join(format!("f{i}.bin")), 1000 + i * 4000, i);
    }
    set_mtime(t.join("d1"), 1_600_000_000);
    let srv = server(&[&t], &d.out, None, &[]);
    let out = get(None, &[&at(&srv, "many"), "-j", "3", "--out", s(&d.out)]);
    assert_status(&out, 0, "get -j 3");
    assert_trees_arrived(&t, d.out.join("many"));
}

#[test]
fn ls_lists_entries_with_types_and_known_digests() {
    let d = dirs();
    let t = tree(&d.src);
    let srv = server(&[&t], &d.out, None, &[]);
    let mut cmd = ftx_cmd();
    cmd.args(["ls", "--json", &at(&srv, "tree")]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "ls --json");
    let entries: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let find = |p: &str| {
        entries
            .iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} listed: {entries:?}"))
    };
    assert_eq!(find("tree")["type"], "dir");
    assert_eq!(find("tree/big.bin")["size"], 9 << 20);
    assert_eq!(find("tree/link")["type"], "symlink");
    assert_eq!(find("tree/link")["target"], "big.bin");
    // The first of two hard links is a file, the second a link to it.
    assert_eq!(find("tree/sub/small.txt")["type"], "hardlink");
    assert_eq!(find("tree/sub/small.txt")["target"], "tree/sub/hard.txt");
    // A small file's digest is known (hashed as it is listed).
    assert_eq!(
        find("tree/sub/hard.txt")["digest"],
        md5_hex(t.join("sub/small.txt"))
    );
    // Nothing was written anywhere by listing.
    assert!(names_in(&d.out).is_empty(), "{:?}", names_in(&d.out));
    let mut cmd = ftx_cmd();
    cmd.args(["ls", &srv.addr.to_string()]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "ls");
    assert!(text(&out.stdout).contains("d 0"), "{}", show(&out));
}

/// Paths that leave the roots, name what is not offered, or are not
/// paths: each refused with ERROR 8 naming it; nothing outside is read.
#[test]
fn a_getter_cannot_reach_outside_the_roots() {
    let d = dirs();
    let t = tree(&d.src);
    let secret = d.t().join("secret");
    fs::create_dir(&secret).expect("mkdir");
    fs::write(secret.join("key"), b"do not serve").expect("write");
    std::os::unix::fs::symlink(&secret, t.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("../..", t.join("sub/up")).expect("symlink");
    let fifo = t.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let srv = server(&[&t], &d.out, None, &[]);
    let refused: [&[u8]; 10] = [
        b"../etc/passwd",
        b"/etc/passwd",
        b"tree/../../secret/key",
        b"tree/escape/key",
        b"tree/sub/up/secret/key",
        b"tree/fifo",
        b"tree/./big.bin",
        b"tree//big.bin",
        b"tree/nothing",
        b"other",
    ];
    for p in refused {
        let (mut raw, _, _) = Raw::hello(srv.addr);
        raw.send(&Frame::Pull {
            flags: 0,
            part: 0,
            parts: 0,
            paths: vec![p.to_vec()],
        });
        let said = raw.expect_error(error_code::REFUSED);
        assert!(!said.is_empty(), "{}", String::from_utf8_lossy(p));
    }
    // A NUL inside a path.
    let (mut raw, _, _) = Raw::hello(srv.addr);
    raw.send(&Frame::Pull {
        flags: 0,
        part: 0,
        parts: 0,
        paths: vec![b"tree/big.bin\0x".to_vec()],
    });
    raw.expect_error(error_code::REFUSED);
    // An unknown PULL flag, a part beyond the parts.
    let (mut raw, _, _) = Raw::hello(srv.addr);
    raw.send(&Frame::Pull {
        flags: 0x80,
        part: 0,
        parts: 0,
        paths: Vec::new(),
    });
    raw.expect_error(error_code::PROTOCOL);
    // A PUSH: the server is read-only.
    let (mut raw, _, _) = Raw::hello(srv.addr);
    raw.send(&Frame::Push);
    raw.send(&file_offer(1, b"planted.txt", b"x"));
    let said = raw.expect_error(error_code::REFUSED);
    assert!(said.contains("read-only"), "{said}");
    assert!(!t.join("planted.txt").exists());
    // `ftx get` through the symlink: exit 1 and the reason.
    let out = get(None, &[&at(&srv, "tree/escape/key"), "--out", s(&d.out)]);
    assert_status(&out, 1, "get through a symlink out of the root");
    assert!(text(&out.stderr).contains("symlink"), "{}", show(&out));
    assert!(!d.out.join("key").exists());
    // In a whole-tree pull, the FIFO is named, and the symlinks come as
    // symlinks (never followed on the server).
    let out = get(None, &[&at(&srv, "tree"), "--out", s(&d.out)]);
    assert_status(&out, 1, "get a tree with a FIFO");
    assert!(text(&out.stderr).contains("tree/fifo"), "{}", show(&out));
    // Both symlinks out of the tree (absolute, and climbing out) were
    // offered as symlinks, never followed, and refused by the getter as
    // unsafe (it has no --allow-unsafe-links); the one inside arrived.
    assert!(!d.out.join("tree/escape").is_symlink());
    assert!(!d.out.join("tree/sub/up").is_symlink());
    assert!(d.out.join("tree/link").is_symlink());
    assert!(!d.out.join("tree/escape/key").exists());
    assert!(!d.out.join("tree/fifo").exists());
}

#[test]
fn a_receiver_refuses_to_be_pulled_from() {
    let d = dirs();
    fs::write(d.out.join("private.txt"), b"mine").expect("write");
    let rx = Receiver::start(&d.out, &[]);
    let (mut raw, _, _) = Raw::hello(rx.addr);
    raw.send(&Frame::Pull {
        flags: pull_flags::LIST,
        part: 0,
        parts: 0,
        paths: Vec::new(),
    });
    let said = raw.expect_error(error_code::REFUSED);
    assert!(said.contains("offers none"), "{said}");
}

/// A server that lies: a name climbing out, an absolute name, and a body
/// that does not match its digest. The getter writes nothing outside OUT,
/// keeps nothing unverified, and exits 4.
#[test]
fn a_lying_server_gets_nothing_written_outside_and_exit_4() {
    use std::io::Write;
    let d = dirs();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        let mut raw = Raw::from_stream(s);
        assert!(matches!(raw.expect("HELLO"), Frame::Hello { .. }));
        raw.send(&Frame::Welcome {
            version: ftx::protocol::limits::VERSION,
            flags: 0,
            nonce: [1; 16],
            agent: "liar".into(),
        });
        assert!(matches!(raw.expect("PULL"), Frame::Pull { .. }));
        for (id, name) in [(1u32, &b"../escape.txt"[..]), (2, b"/abs.txt")] {
            raw.send(&file_offer(id, name, b"x"));
            assert!(matches!(raw.expect("REJECT"), Frame::Reject { .. }));
        }
        let data = vec![7u8; 5000];
        let mut offer = file_offer(3, b"ok.txt", &data);
        if let Frame::File(h) = &mut offer {
            h.md5 = md5_of(b"something else");
        }
        raw.send(&offer);
        assert!(matches!(raw.expect("ACCEPT"), Frame::Accept { .. }));
        raw.send(&Frame::Body {
            id: 3,
            offset: 0,
            length: data.len() as u64,
        });
        raw.stream.write_all(&data).expect("body");
        assert!(matches!(
            raw.expect("RESULT"),
            Frame::Result { status: 1, .. }
        ));
        raw.send(&Frame::End { flags: 0 });
        assert!(matches!(raw.expect("SUMMARY"), Frame::Summary { .. }));
    });
    let before = snapshot_outside(d.t());
    let out = get(
        None,
        &[&format!("{addr}/x"), "--out", s(&d.out), "--retry-for", "0"],
    );
    fake.join().expect("fake server");
    assert_status(&out, 4, "get from a lying server");
    assert!(names_in(&d.out).is_empty(), "{:?}", names_in(&d.out));
    crate::common::raw::assert_nothing_outside_out(&before, &snapshot_outside(d.t()));
}

/// The link cut every 4 MiB: one `ftx get` with default flags resumes
/// over several calls and verifies.
#[test]
fn a_pull_cut_in_the_middle_resumes_on_the_next_call() {
    let d = dirs();
    let file = d.src.join("resume.bin");
    write_random(&file, 24 << 20, 93);
    let srv = server(&[&file], &d.t().join("x"), None, &[]);
    let proxy = Proxy::start(srv.addr, Mode::CutBackAfter(10 << 20));
    let out = get(
        None,
        &[
            &format!("{}/resume.bin", proxy.addr),
            "--out",
            s(&d.out),
            "-v",
        ],
    );
    assert_status(&out, 0, "get over a link cut every 10 MiB");
    assert!(text(&out.stdout).contains("resumed at"), "{}", show(&out));
    assert_eq!(md5_hex(d.out.join("resume.bin")), md5_hex(&file));
}

/// 10,000 idle connections to a server do not keep a getter out.
#[test]
fn idle_connections_do_not_lock_a_getter_out() {
    let d = dirs();
    let t = tree(&d.src);
    let srv = server(&[&t], &d.out, None, &[]);
    raise_fd_limit(10_500);
    let mut idle = Vec::new();
    for _ in 0..10_000 {
        match std::net::TcpStream::connect_timeout(&srv.addr, Duration::from_secs(5)) {
            Ok(c) => idle.push(c),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 2000, "only {} idle connections", idle.len());
    let out = get(None, &[&at(&srv, "tree/big.bin"), "--out", s(&d.out)]);
    assert_status(&out, 0, "get while 10,000 connections sit idle");
    assert_eq!(md5_hex(d.out.join("big.bin")), md5_hex(t.join("big.bin")));
    drop(idle);
}

/// The server killed in the middle of a file and started again on its
/// port: a getter with default flags waits, resumes and verifies.
#[test]
fn a_getter_waits_for_a_restarted_server_and_resumes() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, 512 << 20, 94);
    let scratch = d.t().join("x");
    let mut srv = server(&[&file], &scratch, None, &[]);
    let port = srv.addr.port().to_string();
    let mut cmd = ftx_cmd();
    cmd.args(["get", &at(&srv, "big.bin"), "-v", "--out", s(&d.out)]);
    let mut getter = Bg::spawn(cmd);
    let part = d.out.join(".big.bin.ftx-part");
    let started = poll_until(Duration::from_secs(30), || {
        fs::metadata(&part).is_ok_and(|m| m.len() >= 64 << 20)
    });
    assert!(started, "the pull never started");
    srv.kill();
    let mut cmd = ftx_cmd();
    cmd.args(["serve", "--port", &port, "--bind", "127.0.0.1"])
        .arg(&file);
    let _again = Receiver::spawn(cmd, &scratch);
    let out = getter.finish(SEND_TIMEOUT);
    assert_status(&out, 0, "get across a server restart");
    assert!(text(&out.stdout).contains("resumed at"), "{}", show(&out));
    assert!(text(&out.stderr).contains("retrying"), "{}", show(&out));
    assert_eq!(md5_hex(d.out.join("big.bin")), md5_hex(&file));
}

/// A root on a pseudo file system (sizes that lie) is refused at start.
#[test]
fn a_server_refuses_a_root_on_proc() {
    let mut cmd = ftx_cmd();
    cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1", "/proc/self"]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("procfs"), "{}", show(&out));
}

/// `ftx get --json`: one summary, role "get", with the command's exit
/// code; a refused path gives one error event before it.
#[test]
fn get_json_has_one_summary_and_an_error_when_refused() {
    let d = dirs();
    let t = tree(&d.src);
    let srv = server(&[&t], &d.out, None, &[]);
    let events = |out: &std::process::Output| -> Vec<serde_json::Value> {
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let out = get(None, &["--json", &at(&srv, "tree"), "--out", s(&d.out)]);
    assert_status(&out, 0, "get --json");
    let ev = events(&out);
    let summaries: Vec<_> = ev.iter().filter(|e| e["event"] == "summary").collect();
    assert_eq!(summaries.len(), 1, "{ev:?}");
    assert_eq!(summaries[0]["role"], "get");
    assert_eq!(summaries[0]["exit_code"], 0);
    assert!(ev.iter().any(|e| e["event"] == "file_done"), "{ev:?}");
    let out = get(None, &["--json", &at(&srv, "nothing"), "--out", s(&d.out)]);
    assert_status(&out, 1, "get --json of a path the server does not have");
    let ev = events(&out);
    let kinds: Vec<_> = ev
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["error", "summary"], "{ev:?}");
    assert_eq!(ev[0]["role"], "get");
    assert_eq!(ev[1]["exit_code"], 1);
}

/// `ftx get --hash xxh3`: the server offers XXH3-128 digests, the getter
/// checks with them.
#[test]
fn get_with_xxh3_digests() {
    let d = dirs();
    let t = tree(&d.src);
    let srv = server(&[&t], &d.out, None, &[]);
    let out = get(
        None,
        &[
            "--hash",
            "xxh3",
            "--json",
            &at(&srv, "tree"),
            "--out",
            s(&d.out),
        ],
    );
    assert_status(&out, 0, "get --hash xxh3");
    assert_trees_arrived(&t, d.out.join("tree"));
    assert!(
        text(&out.stdout).contains("\"hash\":\"xxh3\""),
        "{}",
        show(&out)
    );
}
