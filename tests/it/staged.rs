//! Staged directories (`src/recv/stage.rs`): a directory a DIR entry makes
//! is created as `.NAME.ftx-dir` and renamed into place once its files are
//! durable. What a receiver must do with one it finds: left by a receiver
//! that ended (not locked), removed and made anew; held by another session
//! (locked), left alone while the directory is made at its final name; and
//! when something took the final name meanwhile, its files fail, named,
//! and nothing there is replaced. The order of the syncs around the rename
//! is checked in `durable.rs`.

use crate::common::raw::Raw;
use crate::common::{assert_status, assert_trees_equal, dirs, s, send, write_random, Receiver};
use std::fs;
use std::path::Path;

/// A tree of 50 small files in two directories, under `src/tree`.
fn small_tree(src: &Path) {
    for i in 0..50u64 {
        let dir = src.join("tree").join(format!("d{}", i % 2));
        fs::create_dir_all(&dir).expect("mkdir");
        write_random(dir.join(format!("f{i:02}")), 1 + i * 37, i);
    }
}

/// What is in `dir`, sorted (every name, dot names included).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_stage_left_by_a_receiver_that_ended_is_removed_and_the_tree_arrives_whole() {
    let d = dirs();
    small_tree(&d.src);
    // As a killed receiver leaves it: files never reported, a directory
    // of its own, nothing locked.
    let left = d.out.join(".tree.ftx-dir");
    fs::create_dir_all(left.join("d0")).expect("mkdir");
    fs::write(left.join("d0/f00"), b"half").expect("write");
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send");
    assert_trees_equal(d.src.join("tree"), d.out.join("tree"));
    assert_eq!(listing(&d.out), ["tree"], "the stage left over is gone");
}

#[test]
fn a_stage_another_session_holds_is_left_alone_and_the_directory_made_in_place() {
    let d = dirs();
    small_tree(&d.src);
    let held = d.out.join(".tree.ftx-dir");
    fs::create_dir(&held).expect("mkdir");
    fs::write(held.join("theirs"), b"in use").expect("write");
    // Locked as a live session's stage is (flock, held until dropped).
    let lock = fs::File::open(&held).expect("open the stage");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send");
    assert_trees_equal(d.src.join("tree"), d.out.join("tree"));
    assert_eq!(listing(&held), ["theirs"], "the held stage is untouched");
    assert_eq!(
        listing(&d.out),
        [".tree.ftx-dir", "tree"],
        "nothing else made (no working directory of this receiver left)"
    );
    drop(lock);
}

#[test]
fn a_file_whose_stage_cannot_go_in_place_fails_named_and_nothing_is_replaced() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    raw.make_dir(1, "x", 0o755);
    assert!(d.out.join(".x.ftx-dir").is_dir(), "x is made as a stage");
    // Another program makes x meanwhile.
    fs::create_dir(d.out.join("x")).expect("mkdir x");
    fs::write(d.out.join("x/theirs"), b"theirs").expect("write");
    let data = b"ours, verified";
    raw.start_body(2, b"x/a.bin", data);
    raw.write(data);
    let message = raw.expect_failed();
    assert!(
        message.contains("a.bin") && message.contains("'x'"),
        "names the file and its directory: {message}"
    );
    raw.end();
    assert_eq!(listing(&d.out.join("x")), ["theirs"], "nothing replaced");
    assert_eq!(
        fs::read(d.out.join(".x.ftx-dir/a.bin")).expect("kept under the stage's name"),
        data,
        "the verified file is not lost"
    );
}

#[test]
fn thousands_of_empty_directories_arrive_and_no_stage_is_left() {
    let d = dirs();
    // More directories than a session stages at once, nested and not.
    for i in 0..1500 {
        fs::create_dir_all(d.src.join(format!("tree/e{:02}/x{i:04}", i % 30))).expect("mkdir");
    }
    write_random(d.src.join("tree/e00/x0000/last"), 100, 1);
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send");
    assert_trees_equal(d.src.join("tree"), d.out.join("tree"));
    let left: Vec<_> = walkdir::WalkDir::new(&d.out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ftx-dir"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "stages left: {left:?}");
}
