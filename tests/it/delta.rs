//! Delta updates (PROTOCOL.md, "Delta updates"): a file that replaces one
//! already at the target moves only its changed blocks, pushed and
//! pulled, plain and encrypted; an interrupted delta resumes and leaves
//! the old file whole until the rename; a hostile sender's SAME extents
//! are bounded, and the whole-file digest still decides.

use crate::common::raw::{file_offer, Raw};
use crate::common::*;
use ftx::protocol::frame::{error_code, result_status};
use ftx::protocol::Frame;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

const TOKEN: &str = "3f5e9c1a7b2d4e6f8091a2b3c4d5e6f7";
/// The file of these tests: 24 MiB, so 64 KiB blocks (the smallest).
const SIZE: u64 = 24 << 20;
const BLOCK: u64 = 64 << 10;

/// Writes `len` bytes of `byte` into `path` at `at`, in place.
fn scribble(path: &Path, at: u64, len: usize, byte: u8) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open to edit");
    f.write_all_at(&vec![byte; len], at).expect("edit in place");
}

/// Three small edits, far apart: at most six blocks differ.
fn edit(path: &Path) {
    scribble(path, 100_000, 1000, 0xa5);
    scribble(path, 10_000_000, 1000, 0x5a);
    scribble(path, SIZE - 10, 10, 0x11);
}

/// The JSON summary of a run (`--json`).
fn summary(out: &Output) -> Value {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary event\n{}", show(out)))
}

/// The bytes the summary says were matched and sent on the wire; checks
/// they are what a delta of [`edit`] should be.
fn assert_delta(sum: &Value, what: &str) {
    let matched = sum["bytes_matched"].as_u64().unwrap_or(0);
    assert!(
        matched >= SIZE - 6 * BLOCK,
        "{what}: only {matched} bytes matched: {sum}"
    );
    if let Some(wire) = sum["wire_bytes"].as_u64() {
        assert!(wire <= 6 * BLOCK, "{what}: {wire} bytes on the wire: {sum}");
    }
}

fn with_token(mut cmd: std::process::Command, token: Option<&str>) -> std::process::Command {
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd
}

#[test]
fn a_changed_file_moves_as_its_changed_blocks_pushed_and_pulled_plain_and_encrypted() {
    for token in [None, Some(TOKEN)] {
        // Push: ftx send to ftx recv --overwrite.
        let d = dirs();
        let file = d.src.join("disk.img");
        write_random(&file, SIZE, 71);
        let rx = Receiver::start_as(token, &d.out, &["--overwrite"]);
        let out = send_as(token, &["-q", s(&file)], rx.addr);
        assert_status(&out, 0, "first send");
        edit(&file);
        let proxy = Proxy::start(rx.addr, Mode::Pass);
        let mut cmd = with_token(send_cmd(), token);
        cmd.args(["--json", s(&file), &proxy.addr.to_string()]);
        let out = run_with_timeout(cmd, SEND_TIMEOUT);
        assert_status(&out, 0, "send of the edited file");
        assert_eq!(md5_hex(d.out.join("disk.img")), md5_hex(&file), "push");
        assert_eq!(names_in(&d.out), ["disk.img"], "no partial left");
        assert_delta(&summary(&out), "push");
        let wire = proxy.bytes_client_to_server();
        assert!(
            wire < SIZE / 20,
            "push: {wire} bytes crossed the proxy for a {SIZE}-byte file"
        );

        // Pull: ftx get --overwrite from ftx serve.
        let g = dirs();
        let root = g.src.join("root");
        fs::create_dir(&root).expect("mkdir");
        let served = root.join("disk.img");
        write_random(&served, SIZE, 72);
        let mut cmd = with_token(ftx_cmd(), token);
        cmd.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .arg(&root);
        let server = Receiver::spawn(cmd, &g.src);
        let proxy = Proxy::start(server.addr, Mode::Pass);
        let get = |json: bool| {
            let mut cmd = with_token(ftx_cmd(), token);
            cmd.args(["get", "--overwrite", "-o", s(&g.out)]);
            if json {
                cmd.arg("--json");
            }
            cmd.arg(format!("{}/root/disk.img", proxy.addr));
            run_with_timeout(cmd, SEND_TIMEOUT)
        };
        assert_status(&get(false), 0, "first get");
        edit(&served);
        let before = proxy.bytes_server_to_client();
        let out = get(true);
        assert_status(&out, 0, "get of the edited file");
        assert_eq!(md5_hex(g.out.join("disk.img")), md5_hex(&served), "pull");
        assert_eq!(names_in(&g.out), ["disk.img"], "no partial left");
        assert_delta(&summary(&out), "pull");
        let wire = proxy.bytes_server_to_client() - before;
        assert!(
            wire < SIZE / 20,
            "pull: {wire} bytes crossed the proxy for a {SIZE}-byte file"
        );
    }
}

#[test]
fn an_interrupted_delta_resumes_and_the_old_file_stays_whole_until_the_rename() {
    let d = dirs();
    let file = d.src.join("db.dump");
    let size = 48u64 << 20;
    write_random(&file, size, 81);
    let mut rx = Receiver::start(&d.out, &["--overwrite"]);
    let out = send(&["-q", s(&file)], rx.addr);
    assert_status(&out, 0, "first send");
    let target = d.out.join("db.dump");
    let old = md5_hex(&target);
    // 32 MiB of new content in the middle: the delta has a long BODY.
    let fresh = d.t().join("fresh");
    write_random(&fresh, 32 << 20, 82);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.write_all_at(&fs::read(&fresh).expect("read"), 8 << 20)
        .expect("edit");
    drop(f);
    let new = md5_hex(&file);

    // Cut after 20 MiB, no retry: the send fails, the receiver keeps
    // what arrived, and the old file is untouched.
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(20 << 20));
    let mut cmd = send_cmd();
    cmd.args(["-q", "--retry-for", "0", s(&file), &proxy.addr.to_string()]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a cut send fails\n{}",
        show(&out)
    );
    let kept = poll_until(SEND_TIMEOUT, || rx.stderr().contains("'db.dump' (kept "));
    assert!(kept, "the receiver kept nothing:\n{}", rx.stderr());
    assert_eq!(md5_hex(&target), old, "the old file is whole after the cut");
    assert!(
        d.out.join(".db.dump.ftx-part").exists(),
        "a partial to resume: {:?}",
        names_in(&d.out)
    );

    // The same command again: it resumes, moves the rest as a delta, and
    // the result verifies.
    let mut cmd = send_cmd();
    cmd.args(["--json", s(&file), &rx.addr.to_string()]);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_status(&out, 0, "the same send again");
    let started: Vec<Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "file_started")
        .collect();
    assert!(
        started.iter().any(|v| v["offset"].as_u64() > Some(0)),
        "the second send resumed: {started:?}"
    );
    let sum = summary(&out);
    assert!(
        sum["bytes_matched"].as_u64() > Some(0),
        "the rest moved as a delta: {sum}"
    );
    assert_eq!(md5_hex(&target), new, "verified and in place");
    assert_eq!(names_in(&d.out), ["db.dump"], "no partial left");
    rx.wait_line(|l| l.starts_with("received db.dump"), SEND_TIMEOUT)
        .expect("the receiver reports the file");
}

/// Reads BLOCKS frames up to the ACCEPT; returns (block, total, ACCEPT
/// offset).
fn blocks_then_accept(raw: &mut Raw) -> (u32, u32, u64) {
    let mut got = None;
    for _ in 0..100 {
        match raw.expect("BLOCKS or ACCEPT") {
            Frame::Blocks { block, total, .. } => got = Some((block, total)),
            Frame::Accept { offset, .. } => {
                let (block, total) = got.expect("BLOCKS before the ACCEPT");
                return (block, total, offset);
            }
            other => panic!("expected BLOCKS or ACCEPT, got {other:?}"),
        }
    }
    panic!("more than 100 BLOCKS frames");
}

/// A raw delta session: `data` offered as t.bin, SAME for its first 5 MiB
/// (the old file's), BODY for the rest; the RESULT's status.
fn delta_of_5_mib(addr: std::net::SocketAddr, id: u32, data: &[u8]) -> u8 {
    let mut raw = Raw::session(addr);
    raw.send(&file_offer(id, b"t.bin", data));
    blocks_then_accept(&mut raw);
    raw.send(&Frame::Same {
        id,
        offset: 0,
        length: 5 << 20,
    });
    raw.send(&Frame::Body {
        id,
        offset: 5 << 20,
        length: data.len() as u64 - (5 << 20),
    });
    raw.write(&data[5 << 20..]);
    match raw.expect("RESULT") {
        Frame::Result {
            id: got, status, ..
        } if got == id => status,
        other => panic!("expected RESULT {id}, got {other:?}"),
    }
}

#[test]
fn same_extents_are_bounded_and_the_whole_file_digest_still_decides() {
    let d = dirs();
    let old: Vec<u8> = (0..5u32 << 20).map(|i| (i % 253) as u8).collect();
    let target = d.out.join("t.bin");
    fs::write(&target, &old).expect("write target");
    let old_md5 = md5_hex(&target);
    let rx = Receiver::start(&d.out, &["--overwrite"]);

    // SAME without BLOCKS (no file to replace): ERROR 1.
    let new: Vec<u8> = vec![7u8; 8 << 20];
    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(1, b"n.bin", &new));
    assert!(matches!(
        raw.expect("ACCEPT"),
        Frame::Accept { id: 1, offset: 0 }
    ));
    raw.send(&Frame::Same {
        id: 1,
        offset: 0,
        length: 1 << 20,
    });
    raw.expect_error(error_code::PROTOCOL);

    // SAME beyond the blocks the list covered (5 MiB of an 8 MiB file).
    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(2, b"t.bin", &new));
    let (block, total, offset) = blocks_then_accept(&mut raw);
    assert_eq!((block, total, offset), (64 << 10, 80, 0));
    raw.send(&Frame::Same {
        id: 2,
        offset: 0,
        length: 6 << 20,
    });
    raw.expect_error(error_code::PROTOCOL);
    assert_eq!(md5_hex(&target), old_md5, "the old file is untouched");

    // A lying delta: SAME for blocks that differ from the offer's content.
    // The result does not match the FILE's digest: RESULT 1, the old file
    // stays, no partial is left.
    let status = delta_of_5_mib(rx.addr, 3, &new);
    assert_eq!(status, result_status::DIGEST_MISMATCH);
    assert_eq!(md5_hex(&target), old_md5, "the old file is untouched");
    assert_eq!(names_in(&d.out), ["t.bin"], "no partial left");

    // An honest one: SAME for the unchanged first 5 MiB, BODY for the rest.
    let mut honest = old.clone();
    honest.extend_from_slice(&new[5 << 20..]);
    let status = delta_of_5_mib(rx.addr, 4, &honest);
    assert_eq!(status, result_status::OK);
    assert_eq!(md5_hex(&target), md5_hex_bytes(&honest), "replaced");
}
