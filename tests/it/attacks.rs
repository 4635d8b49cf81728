//! The receiver under attack by what sits in its output directory or
//! shares it (issue: "a receiver that keeps its promises under attack"):
//! hard links planted at the working names of partials, a second receiver
//! on the same directory. Real receivers, real `ftx send` processes and a
//! raw-bytes peer over loopback.
//!
//! The invariant every case checks: a file outside OUT (the victim) keeps
//! its content, and what arrives under a final name is what was sent.

use crate::common::raw::{dir_offer, file_offer, forged_state, md5_of, Raw};
use crate::common::{
    assert_status, dirs, is_root, md5_hex, names_in, poll_until, s, send, write_random, Receiver,
};
use ftx::protocol::frame::{reject_code, result_status, Frame};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const ORIGINAL: &[u8] = b"ORIGINAL victim content, outside OUT\n";

/// A victim file outside OUT.
fn victim(t: &Path) -> std::path::PathBuf {
    let outside = t.join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    let v = outside.join("victim");
    fs::write(&v, ORIGINAL).expect("write victim");
    v
}

fn assert_victim_intact(v: &Path) {
    assert_eq!(
        fs::read(v).expect("read victim"),
        ORIGINAL,
        "the file outside OUT was written through a hard link"
    );
}

#[test]
fn a_hard_link_and_a_forged_state_at_the_partial_never_lead_to_writing_the_linked_file() {
    let d = dirs();
    let victim = d.t().join("outside/victim.img");
    fs::create_dir_all(d.t().join("outside")).expect("mkdir");
    // A victim a block and more long, so a forged state can vouch for it.
    write_random(&victim, 5 << 20, 3);
    let victim_before = fs::read(&victim).expect("read victim");
    let file = d.src.join("f.iso");
    write_random(&file, 6 << 20, 4);
    let honest = fs::read(&file).expect("read");
    let block = ftx::store::BLOCK as usize;
    let mut prefix = ftx::digest::Hasher::new();
    prefix.update(&honest[..block]);
    // The local attacker: the victim linked at the partial's name, and a
    // state that vouches for the victim's first block.
    fs::hard_link(&victim, d.out.join(".f.iso.ftx-part")).expect("ln");
    let state = forged_state(
        honest.len() as u64,
        &md5_of(&honest),
        xxhash_rust::xxh3::xxh3_64(&victim_before[..block]),
        &prefix.save(),
    );
    fs::write(d.out.join(".f.iso.ftx-state"), state).expect("write state");

    let rx = Receiver::start(&d.out, &[]);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send over a planted hard link");
    assert_eq!(
        fs::read(&victim).expect("read victim"),
        victim_before,
        "the receiver wrote into the file linked at the partial's name"
    );
    assert_eq!(md5_hex(d.out.join("f.iso")), md5_hex(&file));
    let log = rx.stderr();
    assert!(
        log.contains("links") && log.contains("starting over"),
        "the receiver says why it did not resume:\n{log}"
    );
}

#[test]
fn hard_links_recreated_at_the_partial_name_while_offers_arrive_never_reach_the_linked_file() {
    let d = dirs();
    let victim = victim(d.t());
    let rx = Receiver::start(&d.out, &["--overwrite"]);
    let part = d.out.join(".report.txt.ftx-part");
    let stop = Arc::new(AtomicBool::new(false));
    let planter = {
        let (stop, victim, part) = (Arc::clone(&stop), victim.clone(), part.clone());
        std::thread::spawn(move || {
            let mut planted = 0u64;
            // Bounded: stops when told, or after a million tries.
            for _ in 0..1_000_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let _ = fs::remove_file(&part);
                if fs::hard_link(&victim, &part).is_ok() {
                    planted += 1;
                }
            }
            planted
        })
    };
    let mut sent = 0;
    for i in 0..20u64 {
        let file = d.src.join("report.txt");
        write_random(&file, 100_000 + i * 1000, i);
        let out = send(
            &[
                "-q",
                "--no-cache",
                "--retry-for",
                "0",
                file.to_str().expect("utf-8"),
            ],
            rx.addr,
        );
        // The planter may make a send fail (the partial's name is taken);
        // what matters is where the bytes went.
        if out.status.success() {
            sent += 1;
            assert_eq!(md5_hex(d.out.join("report.txt")), md5_hex(&file));
        }
        assert_victim_intact(&victim);
    }
    stop.store(true, Ordering::SeqCst);
    let planted = planter.join().expect("planter");
    assert!(planted > 0, "the planter never managed to plant a link");
    assert_victim_intact(&victim);
    eprintln!("{sent} of 20 sends succeeded while {planted} links were planted");
}

#[test]
fn a_second_receiver_on_the_same_out_never_takes_over_a_live_partial() {
    let d = dirs();
    let rx1 = Receiver::start(&d.out, &[]);
    let rx2 = Receiver::start(&d.out, &[]);
    // A block or more: written under a partial's name (a smaller file
    // has no name until it is placed, see the test below).
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    let offer = file_offer(1, b"report.bin", &data);

    // Receiver 1 takes half of the body and holds the partial.
    let mut one = Raw::session(rx1.addr);
    one.start_body(1, b"report.bin", &data);
    let half = data.len() / 2;
    one.write(&data[..half]);
    let part = d.out.join(".report.bin.ftx-part");
    assert!(
        poll_until(WAIT, || part.exists()),
        "receiver 1 creates its partial when the body starts"
    );

    // Receiver 2 is offered the same file: it must not take the partial.
    let mut two = Raw::session(rx2.addr);
    two.send(&offer);
    match two.expect("REJECT or ACCEPT") {
        Frame::Reject { code, message, .. } => {
            assert_eq!(code, reject_code::IN_PROGRESS, "{message}");
        }
        Frame::Accept { .. } => {
            // Accepted as fresh: its body must not land on receiver 1's
            // partial (the exclusive create fails, the file fails).
            two.send_body(1, &data);
            match two.expect("RESULT") {
                Frame::Result { status, .. } => assert_ne!(status, result_status::OK),
                other => panic!("expected RESULT, got {other:?}"),
            }
        }
        other => panic!("expected REJECT or ACCEPT, got {other:?}"),
    }
    assert!(part.exists(), "receiver 1's partial is still there");

    // Receiver 1 finishes: its own bytes, verified, under the final name.
    one.write(&data[half..]);
    match one.expect("RESULT") {
        Frame::Result { status, .. } => assert_eq!(status, result_status::OK),
        other => panic!("expected RESULT, got {other:?}"),
    }
    one.end();
    assert_eq!(
        fs::read(d.out.join("report.bin")).expect("read"),
        data,
        "the final file is receiver 1's verified bytes"
    );
}

/// A small file is written without a name and linked into place once
/// verified and durable: nothing can be planted at a partial's name, and
/// what appears at the target's name while its body arrives is never
/// replaced (the file fails; a rename would have replaced it). As root
/// (linked with `AT_EMPTY_PATH`) and as `nobody` (through `/proc`).
#[test]
fn a_small_file_never_replaces_what_appeared_at_its_name_meanwhile() {
    for unprivileged in [false, true] {
        let d = dirs();
        let rx = if unprivileged {
            crate::common::unprivileged_receiver(&d)
        } else {
            Receiver::start(&d.out, &[])
        };
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
        let mut raw = Raw::session(rx.addr);
        // One that arrives, then one at whose name a file appears.
        raw.send_good_file(1, "first.bin", &data[..1000]);
        raw.start_body(2, b"late.bin", &data);
        let half = data.len() / 2;
        raw.write(&data[..half]);
        // Another program puts a file there meanwhile.
        fs::write(d.out.join("late.bin"), b"theirs").expect("plant");
        raw.write(&data[half..]);
        match raw.expect("RESULT") {
            Frame::Result {
                status, message, ..
            } => {
                assert_ne!(status, result_status::OK, "{message}");
                assert!(message.contains("late.bin"), "{message}");
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
        raw.end();
        assert_eq!(
            fs::read(d.out.join("first.bin")).expect("read"),
            &data[..1000]
        );
        assert_eq!(
            fs::read(d.out.join("late.bin")).expect("read"),
            b"theirs",
            "what appeared is untouched (unprivileged: {unprivileged})"
        );
        let mut names: Vec<_> = fs::read_dir(&d.out)
            .expect("out")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["first.bin", "late.bin"], "nothing else left");
    }
}

/// In a directory the session created, a small file's target is not
/// looked at before its ACCEPT (nothing can be there but what the session
/// put); what another program put there meanwhile still makes it fail,
/// named, and stays as it was. A directory that was there before is
/// looked at, as ever: the same file there is refused up front. (A
/// directory the session made is under its working name, `.made.ftx-dir`,
/// until its files are in: planted there.)
#[test]
fn a_file_planted_in_a_directory_the_session_made_is_never_replaced() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let data = b"ours, verified";
    let mut raw = Raw::session(rx.addr);
    raw.make_dir(1, "made", 0o755);
    let made = ["made", ".made.ftx-dir"]
        .iter()
        .map(|n| d.out.join(n))
        .find(|p| p.is_dir())
        .expect("the directory made, under one name or the other");
    fs::write(made.join("x.bin"), b"theirs").expect("plant");
    raw.start_body(2, b"made/x.bin", data);
    raw.write(data);
    let message = raw.expect_failed();
    assert!(message.contains("x.bin"), "{message}");
    raw.end();
    assert_eq!(fs::read(d.out.join("made/x.bin")).expect("read"), b"theirs");

    // The next session finds the directory there: looked at, refused.
    let mut raw = Raw::session(rx.addr);
    raw.make_dir(1, "made", 0o755);
    let offer = file_offer(2, b"made/x.bin", data);
    raw.expect_reject(&offer, 2, reject_code::EXISTS);
    raw.end();
    assert_eq!(fs::read(d.out.join("made/x.bin")).expect("read"), b"theirs");
    let names: Vec<_> = fs::read_dir(d.out.join("made"))
        .expect("made")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["x.bin"], "nothing else left");
}

// ---------------------------------------------------------------------------
// Modes and directories that were there before
// ---------------------------------------------------------------------------

/// `COMMAND...` as the unprivileged user `nobody` when running as root
/// (CI does), else as the current user; with umask 022 either way.
fn as_nobody(args: &[&std::ffi::OsStr]) -> std::process::Command {
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg("sh");
        c
    } else {
        std::process::Command::new("sh")
    };
    cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .args(args);
    cmd
}

#[test]
fn modes_follow_the_receivers_umask_and_the_receiving_user_can_always_read_and_enter() {
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    let d = dirs();
    // `nobody` must reach OUT through the temp dir.
    fs::set_permissions(d.t(), fs::Permissions::from_mode(0o755)).expect("chmod T");
    if is_root() {
        rustix::fs::chown(
            &d.out,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .expect("chown OUT to nobody");
    }
    let tree = d.src.join("tree");
    fs::create_dir_all(tree.join("locked")).expect("mkdir");
    fs::write(tree.join("open.bin"), b"open to all").expect("write");
    fs::write(tree.join("locked/inside.txt"), b"inside").expect("write");
    fs::set_permissions(tree.join("open.bin"), fs::Permissions::from_mode(0o777)).expect("chmod");
    // Unreadable sources can only be sent by root; the rule is the same.
    let closed = if is_root() { 0o000 } else { 0o444 };
    fs::write(tree.join("closed.bin"), b"closed").expect("write");
    fs::set_permissions(tree.join("closed.bin"), fs::Permissions::from_mode(closed))
        .expect("chmod");
    fs::set_permissions(
        tree.join("locked"),
        fs::Permissions::from_mode(closed | (0o100 * u32::from(!is_root()))),
    )
    .expect("chmod dir");

    let bin = crate::common::ftx_bin();
    let cmd = as_nobody(&[
        bin.as_os_str(),
        OsStr::new("recv"),
        OsStr::new("--port"),
        OsStr::new("0"),
        OsStr::new("--bind"),
        OsStr::new("127.0.0.1"),
        OsStr::new("--out"),
        d.out.as_os_str(),
    ]);
    let rx = Receiver::spawn(cmd, &d.out);
    let out = send(&["-q", tree.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send a tree with odd modes");
    let got = d.out.join("tree");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    // 0777 under umask 022 arrives 0755, as cp and scp do it.
    assert_eq!(mode(&got.join("open.bin")), 0o755);
    // Always readable, and directories always enterable, by the receiver.
    assert_eq!(mode(&got.join("closed.bin")) & 0o400, 0o400);
    assert_eq!(mode(&got.join("locked")) & 0o700, 0o700);
    let bin_cat = std::path::PathBuf::from("cat");
    let cat = as_nobody(&[
        bin_cat.as_os_str(),
        got.join("closed.bin").as_os_str(),
        got.join("locked/inside.txt").as_os_str(),
    ])
    .output()
    .expect("run cat as the receiving user");
    assert!(
        cat.status.success(),
        "the receiving user reads what it received: {cat:?}"
    );
    assert_eq!(cat.stdout, b"closedinside");
}

#[test]
fn a_dir_entry_never_changes_a_directory_that_was_there() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = dirs();
    let ssh = d.out.join(".ssh");
    fs::create_dir(&ssh).expect("mkdir .ssh");
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).expect("chmod");
    let before = fs::metadata(&ssh).expect("stat");
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    raw.make_dir(1, ".ssh", 0o777);
    raw.make_dir(2, "fresh", 0o750);
    raw.end();
    let after = fs::metadata(&ssh).expect("stat");
    assert_eq!(
        after.permissions().mode() & 0o7777,
        0o700,
        ".ssh keeps its mode"
    );
    assert_eq!(after.mtime(), before.mtime(), ".ssh keeps its mtime");
    // A directory the session created does get the entry's mode.
    let fresh = fs::metadata(d.out.join("fresh")).expect("stat fresh");
    assert_eq!(fresh.permissions().mode() & 0o7777, 0o750);
}

// ---------------------------------------------------------------------------
// What a peer may send
// ---------------------------------------------------------------------------

#[test]
fn unknown_hello_flags_are_refused_not_ignored() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::connect(rx.addr);
    raw.send(&Frame::Hello {
        version: ftx::protocol::limits::VERSION,
        flags: u32::MAX,
        agent: "evil".into(),
    });
    let msg = raw.expect_error(ftx::protocol::frame::error_code::PROTOCOL);
    assert!(msg.contains("unsupported HELLO flags"), "{msg}");
    assert!(
        crate::common::names_in(&d.out).is_empty(),
        "nothing written"
    );
}

/// Names that differ by case or Unicode normalisation alone are two files
/// on a file system that does not fold names (ext4, XFS, tmpfs): both
/// arrive, as with rsync. (On one that folds them, the second is refused
/// as a conflict: the rule is unit-tested in `recv/admit.rs`, since this
/// machine cannot mount a folding file system.)
#[test]
fn names_differing_by_case_both_arrive_where_the_file_system_does_not_fold() {
    let d = dirs();
    let out =
        cap_std::fs::Dir::open_ambient_dir(&d.out, cap_std::ambient_authority()).expect("open OUT");
    let folds = ftx::store::attrs::folds_names(&out);
    assert!(
        names_in(&d.out).is_empty(),
        "the probe leaves nothing behind"
    );
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    raw.send_good_file(1, "README", b"one");
    raw.send_good_file(3, "\u{e9}.txt", b"nfc");
    if folds {
        let why = raw.expect_reject(&file_offer(2, b"readme", b"two"), 2, reject_code::CONFLICT);
        assert!(why.contains("case"), "{why}");
        raw.end();
        return;
    }
    raw.send_good_file(2, "readme", b"two");
    raw.send_good_file(4, "e\u{301}.txt", b"nfd");
    // The very same name twice is still a conflict.
    raw.expect_reject(
        &file_offer(5, b"README", b"three"),
        5,
        reject_code::CONFLICT,
    );
    assert_eq!(raw.end(), (4, 1));
    assert_eq!(fs::read(d.out.join("README")).expect("read"), b"one");
    assert_eq!(fs::read(d.out.join("readme")).expect("read"), b"two");
    assert_eq!(fs::read(d.out.join("\u{e9}.txt")).expect("read"), b"nfc");
    assert_eq!(fs::read(d.out.join("e\u{301}.txt")).expect("read"), b"nfd");
}

/// `--fold-names` makes a receiver refuse them as one file whatever its file
/// system does (a tree bound for macOS or Windows): the rule a folding file
/// system gets, end to end.
#[test]
fn with_fold_names_names_one_file_elsewhere_are_refused() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &["--fold-names"]);
    let mut raw = Raw::session(rx.addr);
    raw.send_good_file(1, "README", b"one");
    let why = raw.expect_reject(&file_offer(2, b"readme", b"two"), 2, reject_code::CONFLICT);
    assert!(why.contains("case"), "{why}");
    raw.send_good_file(3, "\u{e9}.txt", b"nfc");
    raw.expect_reject(
        &file_offer(4, "e\u{301}.txt".as_bytes(), b"nfd"),
        4,
        reject_code::CONFLICT,
    );
    assert_eq!(raw.end(), (2, 2));
    assert_eq!(fs::read(d.out.join("README")).expect("read"), b"one");
    assert!(!d.out.join("readme").exists());
    assert!(!d.out.join("e\u{301}.txt").exists());
}

/// A directory that is refused (a file sits at its name) takes what is
/// offered inside it along: nothing arrives under it, each entry is
/// refused naming the directory, and the sender counts the directory as
/// failed.
#[test]
fn what_is_inside_a_refused_directory_is_refused_too() {
    let d = dirs();
    fs::write(d.out.join("sub"), b"a file in the way").expect("write");
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    raw.expect_reject(&dir_offer(1, b"sub", 0o755), 1, reject_code::CONFLICT);
    let why = raw.expect_reject(&file_offer(2, b"sub/x.txt", b"x"), 2, reject_code::CONFLICT);
    assert!(
        why.contains("inside 'sub'") && why.contains("refused"),
        "{why}"
    );
    raw.expect_reject(
        &dir_offer(3, b"sub/deeper", 0o755),
        3,
        reject_code::CONFLICT,
    );
    raw.send_good_file(4, "subway.txt", b"not inside");
    assert_eq!(raw.end(), (1, 3));
    assert_eq!(
        fs::read(d.out.join("sub")).expect("read"),
        b"a file in the way"
    );

    // The same with `ftx send`: the refused directory is counted.
    let tree = d.src.join("sub");
    fs::create_dir(&tree).expect("mkdir");
    fs::write(tree.join("x.txt"), b"x").expect("write");
    let out = send(&[s(&tree)], rx.addr);
    let err = crate::common::text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("2 failed"),
        "the directory and its file: {err}"
    );
    assert_eq!(
        fs::read(d.out.join("sub")).expect("read"),
        b"a file in the way"
    );
}

#[test]
fn a_flood_of_refused_offers_is_logged_with_a_limit() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    let n = 3000u32;
    let long = "x".repeat(200);
    for id in 1..=n {
        // Unsafe: it climbs out. Each one refused.
        let name = format!("{long}/../../{id}");
        raw.send(&file_offer(id, name.as_bytes(), b""));
    }
    for _ in 1..=n {
        match raw.expect("REJECT") {
            Frame::Reject { code, .. } => assert_eq!(code, reject_code::UNSAFE_NAME),
            other => panic!("expected REJECT, got {other:?}"),
        }
    }
    raw.end();
    let quiet = poll_until(WAIT, || rx.stderr().contains("more refused"));
    assert!(quiet, "the rest are counted in one line:\n{}", rx.stderr());
    let lines = rx
        .stderr()
        .lines()
        .filter(|l| l.contains("rejected"))
        .count();
    assert!(lines <= 20, "{lines} refusals logged one by one");
    assert!(rx
        .stderr()
        .contains(&format!("and {} more refused", n - 20)));
}

#[test]
fn a_body_cut_short_says_how_much_of_it_arrived() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let mut raw = Raw::session(rx.addr);
    let data = vec![7u8; 10_000];
    raw.send(&file_offer(1, b"cut.bin", &data));
    assert!(matches!(raw.expect("ACCEPT"), Frame::Accept { .. }));
    raw.send(&Frame::Body {
        id: 1,
        offset: 0,
        length: 10_000,
    });
    raw.write(&data[..1234]);
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let said = poll_until(WAIT, || {
        rx.stderr().contains("after 1234 of the body's 10000 bytes")
    });
    assert!(said, "the log says how much arrived:\n{}", rx.stderr());
    assert!(!d.out.join("cut.bin").exists());
}

// ---------------------------------------------------------------------------
// Slots: idle floods, slow offers, a busy receiver
// ---------------------------------------------------------------------------

#[test]
fn a_session_that_only_gets_refusals_is_ended_after_the_timeout() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &["--timeout", "2"]);
    let mut raw = Raw::session(rx.addr);
    let started = std::time::Instant::now();
    let mut ended = None;
    // The attack: one refused offer every 300 ms, never silent for long.
    for id in 1..=40u32 {
        raw.send(&file_offer(id, format!("../bad{id}").as_bytes(), b""));
        match raw.next() {
            Some(Frame::Reject { .. }) => {}
            Some(Frame::Error { code, message }) => {
                ended = Some((code, message));
                break;
            }
            other => panic!("expected REJECT or ERROR, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, message) = ended.expect("the session is ended");
    assert_eq!(code, ftx::protocol::frame::error_code::TIMEOUT, "{message}");
    assert!(message.contains("no progress"), "{message}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before --timeout"
    );
}

#[test]
fn a_busy_receiver_is_waited_for_with_default_flags() {
    // One slot, held by a session that greeted and then says nothing: it
    // is dropped after --timeout 8. The old default retry window (6.2 s)
    // gave up before that; a sender with default flags must wait.
    let d = dirs();
    let rx = Receiver::start(&d.out, &["--max-sessions", "1", "--timeout", "8"]);
    let holder = Raw::session(rx.addr);
    let file = d.src.join("patient.bin");
    write_random(&file, 100_000, 5);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send to a receiver busy for about 8 s");
    assert_eq!(md5_hex(d.out.join("patient.bin")), md5_hex(&file));
    drop(holder);
}

#[test]
fn a_flood_of_idle_connections_beyond_the_gates_caps_does_not_lock_out_a_sender() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    // More than the gate keeps waiting from one address (256): the oldest
    // are told busy to make room, the rest wait for their deadline.
    let idle: Vec<std::net::TcpStream> = (0..800)
        .map(|_| {
            std::net::TcpStream::connect_timeout(&rx.addr, Duration::from_secs(5)).expect("connect")
        })
        .collect();
    let file = d.src.join("real.bin");
    write_random(&file, 300_000, 6);
    let out = send(&["--no-cache", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send during an idle flood, default flags");
    assert_eq!(md5_hex(d.out.join("real.bin")), md5_hex(&file));
    drop(idle);
}

#[test]
fn a_receiver_that_resets_is_named_as_such() {
    use ftx::protocol::frame::{decode, encode};
    use std::io::{Read, Write};
    let d = dirs();
    let file = d.src.join("f.bin");
    write_random(&file, 4 << 20, 8);
    // A fake receiver: greets, accepts, reads a little of the body, then
    // resets the connection (as a receiver that crashed would).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut next = |s: &mut std::net::TcpStream, buf: &mut Vec<u8>| loop {
            if let Ok(Some((f, used))) = decode(buf) {
                buf.drain(..used);
                return f;
            }
            let n = s.read(&mut chunk).expect("read");
            assert!(n > 0, "sender closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(matches!(next(&mut s, &mut buf), Frame::Hello { .. }));
        let mut out = Vec::new();
        encode(
            &Frame::Welcome {
                version: ftx::protocol::limits::VERSION,
                flags: 0,
                nonce: [0; 16],
                agent: "fake".into(),
            },
            &mut out,
        );
        s.write_all(&out).expect("welcome");
        assert!(matches!(next(&mut s, &mut buf), Frame::Push));
        let Frame::File(h) = next(&mut s, &mut buf) else {
            panic!("expected FILE");
        };
        out.clear();
        encode(
            &Frame::Accept {
                id: h.id,
                offset: 0,
            },
            &mut out,
        );
        s.write_all(&out).expect("accept");
        let _ = s.read(&mut chunk);
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
    });
    let out = send(
        &[
            "--retry-for",
            "0",
            "--no-cache",
            file.to_str().expect("utf-8"),
        ],
        addr,
    );
    fake.join().expect("fake receiver");
    assert_ne!(out.status.code(), Some(0));
    let err = crate::common::text(&out.stderr);
    assert!(
        err.contains("connection reset by the receiver") && !err.contains("os error"),
        "the sender says the receiver reset the connection:\n{err}"
    );
}

#[test]
fn a_file_changed_in_place_keeping_size_and_mtime_is_not_answered_identical() {
    use std::io::{Seek, SeekFrom, Write};
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let file = d.src.join("two.bin");
    write_random(&file, 2 << 20, 9);
    let out = send(&["-q", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "first send");
    // Changed in place; size and mtime put back.
    let got = d.out.join("two.bin");
    let mtime = fs::metadata(&got).expect("stat").modified().expect("mtime");
    let mut f = fs::OpenOptions::new().write(true).open(&got).expect("open");
    f.seek(SeekFrom::Start(1000)).expect("seek");
    f.write_all(b"changed").expect("write");
    f.set_times(fs::FileTimes::new().set_modified(mtime))
        .expect("set mtime");
    drop(f);
    let out = send(&["-q", file.to_str().expect("utf-8")], rx.addr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "not identical: refused as different (no --overwrite)\n{}",
        crate::common::text(&out.stderr)
    );
}

/// The receiver keeps the digest of what it placed, keyed by the file's
/// version (device, inode, size, mtime and ctime in ns), outside OUT: an
/// identical re-send is answered from it; any write invalidates it (above).
#[test]
fn an_identical_resend_is_answered_from_the_receivers_cache() {
    use std::os::unix::fs::MetadataExt;
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let file = d.src.join("same.bin");
    write_random(&file, 3 << 20, 10);
    let out = send(&["-q", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "first send");
    let md = fs::metadata(d.out.join("same.bin")).expect("stat");
    let key = format!(
        "{:x}-{:x}-{:x}-{}.{:09}-{}.{:09}",
        md.dev(),
        md.ino(),
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    let entry = crate::common::test_cache_dir().join("ftx/md5").join(key);
    assert_eq!(
        fs::read_to_string(&entry)
            .expect("the receiver's cache entry")
            .trim(),
        md5_hex(&file)
    );
    let out = send(&["--json", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "identical re-send");
    assert!(
        crate::common::text(&out.stdout).contains("\"event\":\"file_skipped\""),
        "{}",
        crate::common::text(&out.stdout)
    );
}

/// A digest cache inside OUT (where a sender could write entries) is not
/// used: said at start, and an identical file is hashed instead.
#[test]
fn a_digest_cache_inside_out_is_not_used() {
    let d = dirs();
    let mut cmd = crate::common::ftx_cmd();
    cmd.env("XDG_CACHE_HOME", d.out.join(".cache"))
        .args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&d.out);
    let mut rx = Receiver::spawn(cmd, &d.out);
    let file = d.src.join("f.bin");
    write_random(&file, 2 << 20, 11);
    let out = send(&["-q", file.to_str().expect("utf-8")], rx.addr);
    assert_status(&out, 0, "send");
    assert!(
        !d.out.join(".cache/ftx/md5").exists()
            || names_in(&d.out.join(".cache/ftx/md5")).is_empty()
    );
    rx.interrupt();
    let _ = rx.wait_exit(std::time::Duration::from_secs(10));
    assert!(
        rx.stderr().contains("inside the output directory"),
        "{}",
        rx.stderr()
    );
}
