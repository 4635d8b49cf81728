//! A hostile client speaking raw bytes (std `TcpStream` + the library's
//! frame encoder) to a real `ftx recv`: unsafe names, symlinks planted in
//! OUT, non-ftx bytes, absurd frame lengths, lying BODY headers, EOF in the
//! middle of a body. Each must be answered (REJECT, ERROR or a close), must
//! write nothing outside OUT and nothing unverified inside it, and must
//! leave the receiver serving the next sender.

use std::fs;
use std::net::Shutdown;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::raw::{
    assert_no_raw_controls, assert_nothing_outside_out, assert_still_serves, created, dir_offer,
    file_offer, Raw,
};
use crate::common::{
    dirs, md5_hex, mtime_of, names_in, send, set_mtime, snapshot_outside, write_random, Receiver,
};
use ftx::protocol::frame::{error_code, kind, reject_code, to_bytes, Frame};

/// Asserts that `out` holds no file named `name` and nothing but the
/// hidden partial and state files the receiver keeps beside it for a
/// resume (`.NAME.ftx-part`, `.NAME.ftx-state`).
fn assert_only_partials_of(out: &Path, name: &str, rx: &Receiver) {
    let allowed = [format!(".{name}.ftx-part"), format!(".{name}.ftx-state")];
    let present = names_in(out);
    assert!(
        present.iter().all(|n| allowed.contains(n)),
        "no final '{name}' and nothing but its partial/state may be in OUT: {present:?}\n\
         --- receiver stderr ---\n{}",
        rx.stderr()
    );
}

/// Sends `data` as `out/name` with a normal `ftx send` and checks that it
/// arrives intact and that no partial or state file is left over.
fn assert_clean_send_replaces_leftovers(rx: &mut Receiver, name: &str, data: &[u8]) {
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join(name);
    fs::write(&file, data).expect("write source");
    let out = send(&[file.to_str().expect("UTF-8 temp path")], rx.addr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "ftx send of {name} over the leftovers\n--- stderr ---\n{}\n--- receiver stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        rx.stderr()
    );
    assert_eq!(
        md5_hex(rx.out.join(name)),
        md5_hex(&file),
        "content of {name}"
    );
    let stale: Vec<String> = names_in(&rx.out)
        .into_iter()
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect();
    assert!(stale.is_empty(), "partial and state cleaned up: {stale:?}");
}

#[test]
fn unsafe_names_are_rejected_one_by_one_and_the_session_goes_on() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());

    let data = b"payload";
    let bad_names: &[&[u8]] = &[
        b"../x",
        b"/abs",
        b"a/../../x",
        b"",
        b".",
        b"a//b",
        b"a/",
        b"nul\0byte",
        b"d/.x.ftx-part",
    ];
    let mut raw = Raw::session(rx.addr);
    let mut id = 0;
    for name in bad_names {
        id += 1;
        raw.expect_reject(&file_offer(id, name, data), id, reject_code::UNSAFE_NAME);
    }
    // Directories with unsafe names too.
    for name in [&b"../d"[..], b"/d", b"d/../../e"] {
        id += 1;
        raw.expect_reject(&dir_offer(id, name, 0o755), id, reject_code::UNSAFE_NAME);
    }
    // The session is still alive: a good file goes through.
    id += 1;
    raw.send_good_file(id, "ok.txt", data);
    let (ok, failed) = raw.summary();
    assert_eq!(ok, 1, "SUMMARY files_ok");
    assert_eq!(failed, id - 1, "SUMMARY files_failed counts the rejects");
    assert!(raw.next().is_none(), "receiver closes after SUMMARY");

    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    assert_eq!(
        created(&before, &after),
        [PathBuf::from("out/ok.txt")],
        "only the good file was written"
    );
    assert_eq!(fs::read(d.out.join("ok.txt")).expect("ok.txt"), data);

    assert_still_serves(&mut rx, "names");
    rx.kill();
    let err = rx.stderr();
    assert_no_raw_controls(&err);
}

/// Linux names are bytes: a newline, a tab, an ESC, a backslash, `C:` and
/// invalid UTF-8 all arrive byte for byte (as with rsync and tar), and
/// every line a person or a program reads shows them escaped, never raw,
/// on both sides, plain lines and `--json` alike.
#[test]
fn names_a_linux_disk_holds_arrive_byte_for_byte_and_are_shown_escaped() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let names: &[&[u8]] = &[
        b"line\nbreak.txt",
        b"tab\there.txt",
        b"esc\x1b[2Jname",
        b"back\\slash",
        b"C:drive",
        b"bad\xff\xfeutf8",
        "c1\u{9b}31m".as_bytes(),
        b"del\x7fchar",
    ];
    for json in [false, true] {
        let d = dirs();
        let tree = d.src.join("odd");
        fs::create_dir(&tree).expect("mkdir");
        for (i, n) in names.iter().enumerate() {
            fs::write(tree.join(OsStr::from_bytes(n)), format!("file {i}")).expect("write");
        }
        let sub = tree.join(OsStr::from_bytes(b"dir\nwith\xffnewline"));
        fs::create_dir(&sub).expect("mkdir");
        fs::write(sub.join(OsStr::from_bytes(b"in\tside")), b"inside").expect("write");
        std::os::unix::fs::symlink(
            OsStr::from_bytes(b"line\nbreak.txt"),
            tree.join(OsStr::from_bytes(b"link\x1b\xff")),
        )
        .expect("symlink");
        let flags: &[&str] = if json { &["--json"] } else { &[] };
        let mut rx = Receiver::start(&d.out, flags);
        let mut args = flags.to_vec();
        args.push(crate::common::s(&tree));
        let out = send(&args, rx.addr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            crate::common::text(&out.stderr)
        );
        rx.kill();
        let got = d.out.join("odd");
        for (i, n) in names.iter().enumerate() {
            let p = got.join(OsStr::from_bytes(n));
            assert_eq!(
                fs::read(&p).unwrap_or_else(|e| panic!("{:?}: {e}", p)),
                format!("file {i}").as_bytes()
            );
        }
        let inside = got
            .join(OsStr::from_bytes(b"dir\nwith\xffnewline"))
            .join(OsStr::from_bytes(b"in\tside"));
        assert_eq!(fs::read(inside).expect("inside"), b"inside");
        let link = fs::read_link(got.join(OsStr::from_bytes(b"link\x1b\xff"))).expect("link");
        assert_eq!(
            link.as_os_str().as_bytes(),
            b"line\nbreak.txt",
            "the target, byte for byte"
        );
        for (who, t) in [
            ("sender stdout", crate::common::text(&out.stdout)),
            ("sender stderr", crate::common::text(&out.stderr)),
            ("receiver stdout", rx.lines().join("\n")),
            ("receiver stderr", rx.stderr()),
        ] {
            assert_no_raw_controls(&t);
            assert!(!t.contains('\u{fffd}'), "{who}: no lossy U+FFFD: {t}");
        }
        let shown = if json {
            rx.lines().join("\n")
        } else {
            crate::common::text(&out.stdout) + &rx.lines().join("\n")
        };
        assert!(
            shown.contains("bad\\xff\\xfeutf8") || shown.contains("bad\\\\xff\\\\xfeutf8"),
            "{shown}"
        );
    }
}

#[test]
fn symlinks_planted_in_out_are_never_followed() {
    let d = dirs();
    let outside = d.t().join("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    let victim = outside.join("victim");
    fs::write(&victim, b"precious\n").expect("write victim");
    set_mtime(&victim, 1_300_000_000);
    symlink(&outside, d.out.join("link")).expect("symlink OUT/link");
    symlink(&victim, d.out.join("target")).expect("symlink OUT/target");

    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());
    let data = b"attacker data\n";

    let mut raw = Raw::session(rx.addr);
    // Through a symlinked directory.
    raw.expect_reject(&file_offer(1, b"link/x", data), 1, reject_code::CONFLICT);
    raw.expect_reject(
        &file_offer(2, b"link/deeper/x", data),
        2,
        reject_code::CONFLICT,
    );
    raw.expect_reject(&dir_offer(3, b"link/sub", 0o755), 3, reject_code::CONFLICT);
    raw.expect_reject(&dir_offer(4, b"link", 0o755), 4, reject_code::CONFLICT);
    // Onto a symlink as the target name.
    raw.expect_reject(&file_offer(5, b"target", data), 5, reject_code::CONFLICT);
    // The victim's own name through the link, same size as the victim.
    raw.expect_reject(
        &file_offer(6, b"link/victim", b"replaced\n"),
        6,
        reject_code::CONFLICT,
    );
    raw.send_good_file(7, "fine.txt", data);
    let (ok, failed) = raw.summary();
    assert_eq!((ok, failed), (1, 6), "SUMMARY files_ok, files_failed");

    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    assert_eq!(created(&before, &after), [PathBuf::from("out/fine.txt")]);
    assert_eq!(names_in(&outside), ["victim"], "nothing created outside");
    assert_eq!(fs::read(&victim).expect("victim"), b"precious\n");
    assert_eq!(mtime_of(&victim), 1_300_000_000, "victim not touched");
    assert_eq!(fs::read_link(d.out.join("link")).expect("link"), outside);
    assert_eq!(fs::read_link(d.out.join("target")).expect("target"), victim);

    assert_still_serves(&mut rx, "symlinks");
}

#[test]
fn http_request_gets_an_error_or_a_close_and_the_receiver_keeps_serving() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());

    let mut raw = Raw::connect(rx.addr);
    raw.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw.expect_error_or_close(Some(error_code::PROTOCOL));

    assert_eq!(snapshot_outside(d.t()), before, "nothing written");
    assert_still_serves(&mut rx, "http");
}

#[test]
fn four_gib_frame_length_is_refused_from_the_header_alone() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());

    let mut raw = Raw::session(rx.addr);
    // A FILE header claiming a 4 GiB payload; no payload follows. The
    // receiver must answer without waiting for (or allocating) it.
    raw.write(&[kind::FILE, 0xFF, 0xFF, 0xFF, 0xFF]);
    raw.expect_error_or_close(Some(error_code::PROTOCOL));

    // The same before HELLO.
    let mut raw = Raw::connect(rx.addr);
    raw.write(&[kind::HELLO, 0xFF, 0xFF, 0xFF, 0xFF]);
    raw.expect_error_or_close(Some(error_code::PROTOCOL));

    assert_eq!(snapshot_outside(d.t()), before, "nothing written");
    assert_still_serves(&mut rx, "4gib");
}

#[test]
fn body_that_does_not_match_the_accepted_offer_is_a_protocol_error() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());
    let data = vec![0xA5u8; 100];

    // (description, BODY id, offset, length) against FILE id 1, size 100.
    let cases: &[(&str, u32, u64, u64)] = &[
        ("shorter length", 1, 0, 50),
        ("longer length", 1, 0, 200),
        ("other id", 2, 0, 100),
        ("non-zero offset", 1, 10, 90),
    ];
    for (what, id, offset, length) in cases {
        let mut raw = Raw::session(rx.addr);
        raw.send(&file_offer(1, b"lying.bin", &data));
        match raw.expect("ACCEPT") {
            Frame::Accept { id: 1, offset: 0 } => {}
            other => panic!("{what}: expected ACCEPT at 0, got {other:?}"),
        }
        // Only the lying header: the receiver must judge it on its own.
        raw.send(&Frame::Body {
            id: *id,
            offset: *offset,
            length: *length,
        });
        raw.expect_error_or_close(Some(error_code::PROTOCOL));
        assert_only_partials_of(&d.out, "lying.bin", &rx);
    }

    // A frame other than BODY after ACCEPT.
    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(1, b"lying.bin", &data));
    assert!(matches!(raw.expect("ACCEPT"), Frame::Accept { .. }));
    raw.send(&Frame::End { flags: 0 });
    raw.expect_error_or_close(Some(error_code::PROTOCOL));
    assert_only_partials_of(&d.out, "lying.bin", &rx);

    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    // Whatever was kept does not get in the way of an honest sender.
    assert_clean_send_replaces_leftovers(&mut rx, "lying.bin", &data);
    assert_still_serves(&mut rx, "lying-body");
}

#[test]
fn eof_in_the_middle_of_a_body_never_leaves_the_final_name() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();

    let mut raw = Raw::session(rx.addr);
    raw.start_body(1, b"cut.bin", &data);
    raw.write(&data[..300_000]);
    raw.stream
        .shutdown(Shutdown::Write)
        .expect("half-close the connection");
    // The receiver gives up on the session and closes (after dealing with
    // the partial); an ERROR before the close is fine too.
    raw.expect_error_or_close(None);

    assert_only_partials_of(&d.out, "cut.bin", &rx);
    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    // An honest sender with other content under that name gets exactly its
    // own bytes: the hostile leftovers are never mixed in.
    let honest: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    assert_clean_send_replaces_leftovers(&mut rx, "cut.bin", &honest);
    assert_still_serves(&mut rx, "eof-body");
}

#[test]
fn eof_right_after_accept_never_leaves_the_final_name() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());

    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(1, b"never.bin", b"0123456789"));
    assert!(matches!(raw.expect("ACCEPT"), Frame::Accept { .. }));
    raw.stream
        .shutdown(Shutdown::Write)
        .expect("half-close the connection");
    raw.expect_error_or_close(None);

    assert_only_partials_of(&d.out, "never.bin", &rx);
    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    assert_clean_send_replaces_leftovers(&mut rx, "never.bin", b"0123456789");
    assert_still_serves(&mut rx, "eof-accept");
}

#[test]
fn offers_beyond_the_limit_without_bodies_end_the_session_and_leave_nothing() {
    // Each accepted file holds a descriptor and a partial until its BODY:
    // a sender may not pile up more than 1024 of them.
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());
    let mut raw = Raw::session(rx.addr);
    for id in 1..=1024u32 {
        raw.send(&file_offer(id, format!("f{id}.bin").as_bytes(), b"x"));
    }
    for id in 1..=1024u32 {
        match raw.expect("ACCEPT") {
            Frame::Accept { id: got, offset: 0 } => assert_eq!(got, id),
            other => panic!("offer {id}: expected ACCEPT, got {other:?}"),
        }
    }
    raw.send(&file_offer(1025, b"f1025.bin", b"x"));
    let message = raw.expect_error(error_code::PROTOCOL);
    assert!(message.contains("1024"), "{message}");
    // The bodies never came: no partial is left behind.
    assert!(names_in(&d.out).is_empty(), "{:?}", names_in(&d.out));
    let after = snapshot_outside(d.t());
    assert_nothing_outside_out(&before, &after);
    assert_still_serves(&mut rx, "after-too-many-offers");
}

#[test]
fn eof_in_the_middle_of_a_frame_ends_the_session_cleanly() {
    let d = dirs();
    let mut rx = Receiver::start(&d.out, &[]);
    let before = snapshot_outside(d.t());

    let mut raw = Raw::session(rx.addr);
    let offer = to_bytes(&file_offer(1, b"half.bin", b"abc"));
    raw.write(&offer[..offer.len() / 2]);
    raw.stream
        .shutdown(Shutdown::Write)
        .expect("half-close the connection");
    raw.expect_error_or_close(None);

    assert_eq!(snapshot_outside(d.t()), before, "nothing written");
    assert_still_serves(&mut rx, "eof-frame");
}

#[test]
fn hostile_partial_with_the_honest_digest_cannot_poison_a_later_send() {
    let d = dirs();
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("poison.bin");
    write_random(&file, 6 << 20, 11);
    let honest = fs::read(&file).expect("read source");
    let rx = Receiver::start(&d.out, &[]);

    // Offer the honest size and MD5, but send 5 MiB of zeros (more than
    // one 4 MiB resume block), then vanish.
    let mut raw = Raw::session(rx.addr);
    raw.send(&file_offer(1, b"poison.bin", &honest));
    assert!(matches!(
        raw.expect("ACCEPT"),
        Frame::Accept { id: 1, offset: 0 }
    ));
    raw.send(&Frame::Body {
        id: 1,
        offset: 0,
        length: honest.len() as u64,
    });
    raw.write(&vec![0u8; 5 << 20]);
    raw.stream
        .shutdown(Shutdown::Write)
        .expect("half-close the connection");
    raw.expect_error_or_close(None);
    assert_only_partials_of(&d.out, "poison.bin", &rx);

    // The honest sender ends up with exactly its own bytes (a resume onto
    // the zeros must fail verification and be redone from 0).
    let out = send(&[file.to_str().expect("UTF-8 temp path")], rx.addr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "honest send over a poisoned partial\n--- stderr ---\n{}\n--- receiver stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        rx.stderr()
    );
    assert_eq!(md5_hex(d.out.join("poison.bin")), md5_hex(&file));
    assert_eq!(names_in(&d.out), ["poison.bin"], "no partial or state left");
}
