//! Trees as `rsync -aH` delivers them: symlinks arrive as symlinks, hard
//! links as hard links, and what cannot be sent (FIFOs, trees deeper than
//! the protocol allows) is named, counted and fails the run unless the
//! user asked for it to be left out. Real `ftx recv` and `ftx send`.

use crate::common::raw::{file_offer, Raw};
use crate::common::{assert_status, dirs, send, send_as, text, Mode, Proxy, Receiver};
use ftx::protocol::frame::{reject_code, result_status, Frame};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

#[test]
fn links_arrive_as_links_and_hard_links_as_one_file() {
    for streams in ["1", "2"] {
        let d = dirs();
        let t = d.src.join("tree");
        fs::create_dir_all(t.join("a/deep")).expect("mkdir");
        fs::create_dir_all(t.join("b")).expect("mkdir");
        fs::write(t.join("a/x.bin"), vec![7u8; 100_000]).expect("write");
        fs::write(t.join("b/other.bin"), vec![8u8; 50_000]).expect("write");
        fs::hard_link(t.join("a/x.bin"), t.join("b/y.bin")).expect("ln");
        fs::hard_link(t.join("a/x.bin"), t.join("a/deep/z.bin")).expect("ln");
        symlink("x.bin", t.join("a/libx.so")).expect("symlink");
        symlink("../b", t.join("a/up")).expect("symlink to a dir");
        symlink("nowhere", t.join("b/dangling")).expect("dangling symlink");
        mkfifo(&t.join("b/pipe"));

        let rx = Receiver::start(&d.out, &[]);
        let out = send(
            &["-j", streams, "--skip-special", t.to_str().expect("utf-8")],
            rx.addr,
        );
        assert_status(&out, 0, "send a tree of links with --skip-special");
        let err = text(&out.stderr);
        assert!(err.contains("pipe") && err.contains("1 left out"), "{err}");

        let g = d.out.join("tree");
        assert_eq!(
            fs::read_link(g.join("a/libx.so")).expect("link"),
            Path::new("x.bin")
        );
        assert_eq!(
            fs::read_link(g.join("a/up")).expect("link"),
            Path::new("../b")
        );
        assert_eq!(
            fs::read_link(g.join("b/dangling")).expect("link"),
            Path::new("nowhere")
        );
        let x = fs::metadata(g.join("a/x.bin")).expect("x");
        let y = fs::metadata(g.join("b/y.bin")).expect("y");
        let z = fs::metadata(g.join("a/deep/z.bin")).expect("z");
        assert_eq!(
            (x.ino(), x.nlink()),
            (y.ino(), 3),
            "-j {streams}: one file, three names"
        );
        assert_eq!(x.ino(), z.ino());
        assert_eq!(
            fs::read(g.join("b/y.bin")).expect("read"),
            vec![7u8; 100_000]
        );
        assert!(!g.join("b/pipe").exists());
    }
}

#[test]
fn a_fifo_fails_the_run_naming_it_and_json_has_an_event_for_it() {
    let d = dirs();
    let t = d.src.join("tree");
    fs::create_dir_all(&t).expect("mkdir");
    fs::write(t.join("f"), b"f").expect("write");
    mkfifo(&t.join("pipe"));
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&["--json", t.to_str().expect("utf-8")], rx.addr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let left: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "entry_left")
        .collect();
    assert_eq!(left.len(), 1, "{events:?}");
    assert_eq!(left[0]["reason"], "special");
    assert!(left[0]["path"].as_str().expect("path").ends_with("pipe"));
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("summary");
    assert_eq!(summary["entries_left"], 1);
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(fs::read(d.out.join("tree/f")).expect("f"), b"f");
}

#[test]
fn a_tree_deeper_than_the_protocol_allows_is_named_with_the_limit() {
    let d = dirs();
    let mut deep = d.src.join("deep");
    for _ in 0..200 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).expect("mkdir 200 levels");
    fs::write(deep.join("bottom.txt"), b"b").expect("write");
    fs::write(d.src.join("deep/top.txt"), b"t").expect("write");
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[d.src.join("deep").to_str().expect("utf-8")], rx.addr);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("limit of 128"), "the limit is named:\n{err}");
    assert!(
        err.contains("1 left out"),
        "the subtree is counted once:\n{err}"
    );
    assert_eq!(fs::read(d.out.join("deep/top.txt")).expect("top"), b"t");
}

#[test]
fn a_hostile_symlink_then_a_file_through_it_writes_nothing_outside() {
    let d = dirs();
    let outside = d.t().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    // Even a receiver that allows unsafe links creates them only at END,
    // after the files: nothing is written through one.
    let rx = Receiver::start(&d.out, &["--allow-unsafe-links"]);
    let mut raw = Raw::session(rx.addr);
    raw.send(&Frame::Symlink {
        id: 1,
        mtime_s: 0,
        mtime_ns: 0,
        path: b"evil".to_vec(),
        target: outside.to_str().expect("utf-8").as_bytes().to_vec(),
    });
    assert!(matches!(raw.expect("RESULT"), Frame::Result { id: 1, .. }));
    raw.send_file(&file_offer(2, b"evil/pwn", b"owned"), b"owned");
    raw.send(&Frame::End { flags: 0 });
    // The link cannot be made at END (a directory is in its way): a
    // second RESULT says so, then SUMMARY.
    match raw.expect("late RESULT") {
        Frame::Result { id: 1, status, .. } => assert_eq!(status, result_status::IO_ERROR),
        other => panic!("expected a late RESULT for the link, got {other:?}"),
    }
    assert!(matches!(raw.expect("SUMMARY"), Frame::Summary { .. }));
    assert!(
        fs::read_dir(&outside)
            .expect("read outside")
            .next()
            .is_none(),
        "nothing was written outside OUT"
    );
    assert_eq!(fs::read(d.out.join("evil/pwn")).expect("inside"), b"owned");

    // Without --allow-unsafe-links an absolute target is refused at once.
    let d2 = dirs();
    let rx2 = Receiver::start(&d2.out, &[]);
    let mut raw = Raw::session(rx2.addr);
    let offer = Frame::Symlink {
        id: 1,
        mtime_s: 0,
        mtime_ns: 0,
        path: b"evil".to_vec(),
        target: b"/etc".to_vec(),
    };
    let why = raw.expect_reject(&offer, 1, reject_code::UNSAFE_LINK);
    assert!(why.contains("absolute"), "{why}");
    // A LINK to anything but an earlier file of the session is refused.
    let link = Frame::Link {
        id: 2,
        path: b"l".to_vec(),
        target: b"etc/passwd".to_vec(),
    };
    raw.expect_reject(&link, 2, reject_code::UNSAFE_LINK);
    raw.end();
}

/// Writes `data` at `at` in `path` (the rest stays a hole).
fn write_at(path: &Path, at: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.write_all_at(data, at).expect("write_at");
}

fn sparse_file(path: &Path, size: u64, data: &[(u64, usize)]) {
    fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("create sparse");
    for (i, (at, len)) in data.iter().enumerate() {
        write_at(path, *at, &vec![i as u8 + 1; *len]);
    }
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn sparse_files_cross_as_their_data_and_land_sparse() {
    sparse_case(None);
}

#[test]
fn sparse_files_cross_as_their_data_and_land_sparse_in_an_encrypted_session() {
    sparse_case(Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
}

/// Sparse files, plain or (with a token) encrypted.
fn sparse_case(token: Option<&str>) {
    let d = dirs();
    let t = d.src.join("vm");
    fs::create_dir(&t).expect("mkdir");
    // Holes at the start, in the middle and at the end; and a file that
    // is all hole. Sizes over 4 MiB go through the receiver's pipeline,
    // the one of 3 MiB is streamed.
    sparse_file(
        &t.join("disk.img"),
        64 << 20,
        &[(8 << 20, 1 << 20), (40 << 20, 65536)],
    );
    sparse_file(&t.join("empty.img"), 32 << 20, &[]);
    sparse_file(&t.join("small.img"), 3 << 20, &[(1 << 20, 4096)]);
    let data_bytes = (1u64 << 20) + 65536 + 4096;
    let rx = Receiver::start_as(token, &d.out, &[]);
    let out = send_as(
        token,
        &["--json", "--no-cache", t.to_str().expect("utf-8")],
        rx.addr,
    );
    assert_status(&out, 0, "send sparse files");
    let err = text(&out.stderr);
    assert!(err.contains(" on the wire)"), "the summary says so:\n{err}");
    let summary: serde_json::Value = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|e: &serde_json::Value| e["event"] == "summary")
        .unwrap_or_else(|| panic!("a summary event:\n{}", text(&out.stdout)));
    assert_eq!(
        summary["wire_bytes"].as_u64(),
        Some(data_bytes),
        "only the data crosses the wire: {summary}"
    );
    for name in ["disk.img", "empty.img", "small.img"] {
        let (a, b) = (t.join(name), d.out.join("vm").join(name));
        assert_eq!(
            crate::common::md5_hex(&a),
            crate::common::md5_hex(&b),
            "{name} arrives with the same content"
        );
        assert_eq!(
            fs::metadata(&b).expect("stat").len(),
            fs::metadata(&a).expect("stat").len()
        );
        assert!(
            allocated(&b) <= allocated(&a) + (1 << 20),
            "{name} lands sparse: {} allocated for {} at the source",
            allocated(&b),
            allocated(&a)
        );
    }
}

/// `dirs` directories of `per` files each (0 to 8 KiB, random), under
/// `root`: the tree is returned.
fn many_files(root: &Path, dirs: usize, per: usize) -> std::path::PathBuf {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..per {
            let n = (d * per + f) as u64;
            crate::common::write_random(dir.join(format!("f{f:03}")), n * 131 % 8192, n);
        }
    }
    root.to_owned()
}

/// A tree of more entries than one session may carry arrives whole over
/// several sessions, with one summary and one exit code, plain and
/// sealed. The sender's cap (a million entries) is lowered for the test
/// with the hidden `--session-entries`.
#[test]
fn a_tree_larger_than_a_session_arrives_whole_with_one_summary() {
    for token in [None, Some("5c1d0f6e8a2b47d3a9e0c4b1f7d26e83")] {
        let d = dirs();
        let t = many_files(&d.src.join("many"), 5, 60);
        let rx = Receiver::start_as(token, &d.out, &[]);
        let proxy = Proxy::start(rx.addr, Mode::Pass);
        let t_arg = t.to_str().expect("utf-8");
        let out = send_as(
            token,
            &["--json", "--session-entries", "64", t_arg],
            proxy.addr,
        );
        assert_status(&out, 0, "a tree over several sessions");
        let summaries: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "summary")
            .collect();
        assert_eq!(summaries.len(), 1, "one summary: {}", text(&out.stdout));
        let sum = &summaries[0];
        assert_eq!(sum["files_ok"], 300, "{sum}");
        assert_eq!(sum["files_failed"], 0, "{sum}");
        assert_eq!(sum["exit_code"], 0, "{sum}");
        // 306 entries (the root, 5 directories, 300 files), 64 a session.
        assert!(proxy.connections() >= 5, "{} sessions", proxy.connections());
        crate::common::assert_trees_equal(&t, d.out.join("many"));
    }
}

/// The walk goes on where it was after each break: a tree whose
/// connection is cut every 150 kB arrives whole.
#[test]
fn a_tree_cut_again_and_again_arrives_whole() {
    let d = dirs();
    let t = many_files(&d.src.join("many"), 5, 60);
    let rx = Receiver::start(&d.out, &[]);
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(150_000));
    let out = send(&["--json", t.to_str().expect("utf-8")], proxy.addr);
    assert_status(&out, 0, "a tree cut every 150 kB");
    assert!(proxy.connections() >= 5, "{} sessions", proxy.connections());
    let retries = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"retry\""))
        .count();
    assert!(retries >= 4, "{retries} retries:\n{}", text(&out.stdout));
    crate::common::assert_trees_equal(&t, d.out.join("many"));
}

/// A source given on the command line is followed: a symlink to a
/// directory is walked as that directory, under the link's name (as
/// `scp -r` and `cp -r` do), not offered as a link with its tree after it.
#[test]
fn a_symlink_to_a_directory_given_as_a_source_is_walked_as_the_directory() {
    let d = dirs();
    let real = d.src.join("real");
    fs::create_dir_all(real.join("sub")).expect("mkdir");
    fs::write(real.join("sub/a"), b"hi\n").expect("write");
    symlink(&real, d.src.join("link")).expect("symlink");
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[d.src.join("link").to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "a symlink to a directory as the source");
    let got = d.out.join("link");
    assert!(
        fs::symlink_metadata(&got).expect("arrived").is_dir(),
        "a directory"
    );
    assert_eq!(fs::read(got.join("sub/a")).expect("file"), b"hi\n");
}

/// Links are created by the receiver at the end of a session: when a
/// session breaks before it, the links it had accepted are offered again
/// in the next one, never taken as made.
#[test]
fn links_accepted_in_a_broken_session_are_offered_again() {
    let d = dirs();
    let t = many_files(&d.src.join("many"), 4, 40);
    for i in 0..160 {
        symlink(format!("d00/f{:03}", i % 40), t.join(format!("l{i:03}"))).expect("symlink");
    }

    let rx = Receiver::start(&d.out, &[]);
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(60_000));
    let out = send(&[t.to_str().expect("utf-8")], proxy.addr);
    assert_status(&out, 0, "a tree of files and links cut every 60 kB");
    assert!(proxy.connections() >= 3, "{} sessions", proxy.connections());
    crate::common::assert_trees_equal(&t, d.out.join("many"));
}

/// `ftx recv --once` serves one transfer: a tree over a session's cap
/// comes in several sessions (each but the last ends with END "more"),
/// and the receiver exits 0 after the last, not after the first.
#[test]
fn a_once_receiver_takes_a_tree_larger_than_a_session() {
    let d = dirs();
    let t = many_files(&d.src.join("many"), 3, 40);
    let mut rx = Receiver::start(&d.out, &["--once"]);
    let out = send(
        &["--session-entries", "32", t.to_str().expect("utf-8")],
        rx.addr,
    );
    assert_status(&out, 0, "a tree over several sessions to a --once receiver");
    let status = rx
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("the receiver exits after the transfer");
    assert!(status.success(), "receiver: {status:?}");
    crate::common::assert_trees_equal(&t, d.out.join("many"));
}
