//! `ftx check PATH... HOST:PORT` against a real `ftx recv`: nothing sent,
//! nothing written, one line per entry.

use crate::common::*;
use std::fs;
use std::path::Path;

const TOKEN: &str = "3f5e9c1a7b2d4e6f8091a2b3c4d5e6f7";

fn tree(src: &Path) -> std::path::PathBuf {
    let t = src.join("t");
    fs::create_dir_all(t.join("sub")).expect("mkdir");
    write_random(t.join("big.bin"), 2 << 20, 81);
    for i in 0..20 {
        fs::write(t.join(format!("sub/f{i}.txt")), format!("file {i}\n")).expect("write");
    }
    std::os::unix::fs::symlink("big.bin", t.join("link")).expect("symlink");
    fs::hard_link(t.join("big.bin"), t.join("sub/hard")).expect("hard link");
    t
}

fn check(token: Option<&str>, args: &[&str], addr: impl std::fmt::Display) -> std::process::Output {
    let mut cmd = ftx_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.arg("check").args(args).arg(addr.to_string());
    run_with_timeout(cmd, SEND_TIMEOUT)
}

#[test]
fn check_finds_exactly_what_differs_plain_and_encrypted() {
    for token in [None, Some(TOKEN)] {
        let d = dirs();
        let t = tree(&d.src);
        let rx = Receiver::start_as(token, &d.out, &[]);
        let out = send_as(token, &["-q", s(&t)], rx.addr);
        assert_status(&out, 0, "send");
        let out = check(token, &[s(&t)], rx.addr);
        assert_status(&out, 0, "check of an identical tree");
        let lines = text(&out.stdout);
        assert!(lines.lines().all(|l| l.starts_with("= ")), "{lines}");
        assert_eq!(lines.lines().count(), 25, "{lines}");
        // One changed byte (size and mtime put back), one file only here,
        // one only there.
        let there = d.out.join("t/sub/f3.txt");
        let mtime = fs::metadata(&there)
            .expect("stat")
            .modified()
            .expect("mtime");
        fs::write(&there, b"file X\n").expect("write");
        let f = fs::File::options().write(true).open(&there).expect("open");
        f.set_times(fs::FileTimes::new().set_modified(mtime))
            .expect("mtime");
        drop(f);
        fs::remove_file(d.out.join("t/sub/f7.txt")).expect("rm");
        fs::write(d.out.join("t/sub/extra.txt"), b"extra").expect("write");
        let before = snapshot_outside(d.t());
        let out = check(token, &[s(&t)], rx.addr);
        assert_eq!(out.status.code(), Some(7), "{}", show(&out));
        let lines = text(&out.stdout);
        let odd: Vec<&str> = lines.lines().filter(|l| !l.starts_with("= ")).collect();
        assert_eq!(
            odd,
            ["* t/sub/f3.txt", "+ t/sub/f7.txt", "- t/sub/extra.txt"],
            "{lines}"
        );
        // Nothing was written on either side.
        crate::common::raw::assert_nothing_outside_out(&before, &snapshot_outside(d.t()));
        assert!(!d.out.join("t/sub/f7.txt").exists());
        // --deep re-reads, and agrees.
        let out = check(token, &["--deep", "--json", s(&t)], rx.addr);
        assert_eq!(out.status.code(), Some(7), "{}", show(&out));
        let last = text(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        let v: serde_json::Value = serde_json::from_str(&last).expect("JSON");
        assert_eq!(v["event"], "check_summary", "{last}");
        assert_eq!(
            (
                v["differs"].as_u64(),
                v["only_here"].as_u64(),
                v["only_there"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
    }
}

/// A file where the tree has a directory: the directory and everything
/// offered under it differ; nothing is followed or written.
#[test]
fn check_reports_a_file_in_the_way_of_a_directory() {
    let d = dirs();
    let t = d.src.join("t");
    fs::create_dir_all(t.join("sub")).expect("mkdir");
    fs::write(t.join("sub/a.txt"), b"a").expect("write");
    fs::write(t.join("top.txt"), b"top").expect("write");
    let rx = Receiver::start(&d.out, &[]);
    fs::create_dir(d.out.join("t")).expect("mkdir");
    fs::write(d.out.join("t/sub"), b"a file, not a directory").expect("write");
    std::os::unix::fs::symlink("/etc", d.out.join("t/top.txt")).expect("symlink");
    let out = check(None, &[s(&t)], rx.addr);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let lines = text(&out.stdout);
    let mut got: Vec<&str> = lines.lines().collect();
    got.sort();
    assert_eq!(
        got,
        ["* t/sub", "* t/sub/a.txt", "* t/top.txt", "= t"],
        "{lines}"
    );
    assert_eq!(
        fs::read(d.out.join("t/sub")).expect("read"),
        b"a file, not a directory"
    );
}
