//! Issue 3: resume and retry, black-box, with real `ftx` processes over
//! loopback.
//!
//! Interruptions come in two kinds:
//! - deterministic: a [`Proxy`] that cuts the sender's stream after exactly
//!   N bytes (the receiver then checkpoints every full 4 MiB block it got);
//! - real signals (SIGKILL, SIGINT) at about 40% of a 160 MiB file, found by
//!   watching the receiver's `.NAME.ftx-part` grow. The first periodic
//!   checkpoint is at 64 MiB = 40% of 160 MiB, so the 96 MiB that follow
//!   leave a wide window to act in even on a loaded machine.
//!
//! Two tests look at failures on the wire more closely: a proxy that leaves
//! the connection half-open (the sender sees it die, the receiver does not),
//! and a receiver interrupted while its TCP window is shut (one of its
//! threads held with ptrace, the socket state read from `/proc/net/tcp`).
//!
//! After an interruption the tests wait for the receiver's own report
//! (`... (kept N bytes to resume)` on its stderr) before the next send, so a
//! re-send never races with the receiver still closing the old session.
//! Observing a file's size and a process's stderr is done by bounded polling
//! (every wait has a deadline); nothing sleeps in the hope that something
//! happened.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    assert_status, assert_trees_arrived, dirs, free_port, ftx_cmd, md5_hex, names_in, poll_until,
    run_with_timeout, send_cmd, show, text, write_random, Bg, Dirs, Mode, Proxy, Receiver,
    SEND_TIMEOUT,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// The receiver's checked block (`partial::BLOCK`): resume offsets are
/// multiples of it.
const BLOCK: u64 = 4 * MIB;
/// Bytes between two periodic checkpoints of the receiver.
const CHECKPOINT: u64 = 64 * MIB;
/// File for the tests that interrupt with a real signal.
const BIG: u64 = 160 * MIB;
/// File for the tests that interrupt deterministically with a proxy cut.
const MID: u64 = 24 * MIB;
/// Where the proxy cuts a MID transfer: 3 full blocks and a bit arrive.
const MID_CUT: u64 = 3 * BLOCK + MIB;
/// Bounded waits for lines, file sizes and process exits.
const WAIT: Duration = Duration::from_secs(30);
/// After a process exited, how long its pipes may take to drain.
const DRAIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

impl Dirs {
    fn part(&self, name: &str) -> PathBuf {
        self.out.join(format!(".{name}.ftx-part"))
    }
    fn state(&self, name: &str) -> PathBuf {
        self.out.join(format!(".{name}.ftx-state"))
    }
}

/// Size of `p`, 0 if it does not exist.
fn len_of(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The unsigned integer at the start of `s`.
fn leading_number(s: &str) -> Option<u64> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The offset of the sender's `ftx: resuming NAME at OFFSET` line, if any.
fn resumed_at(stderr: &str, name: &str) -> Option<u64> {
    let tag = format!("ftx: resuming {name} at ");
    let i = stderr.find(&tag)?;
    leading_number(&stderr[i + tag.len()..])
}

/// Waits for the receiver to report its `nth` (1-based) interrupted session
/// for `name` (`... '{name}' (kept N bytes to resume)`) and returns N.
fn wait_kept(rx: &Receiver, name: &str, nth: usize) -> u64 {
    let tag = format!("'{name}' (kept ");
    let found = poll_until(WAIT, || rx.stderr().matches(&tag).count() >= nth);
    let err = rx.stderr();
    assert!(
        found,
        "receiver did not report `{tag}N bytes to resume)` #{nth} within {WAIT:?}\n--- receiver stderr ---\n{err}"
    );
    let (i, _) = err.match_indices(&tag).nth(nth - 1).expect("counted above");
    let kept = leading_number(&err[i + tag.len()..])
        .unwrap_or_else(|| panic!("no byte count after {tag:?} in:\n{err}"));
    assert_eq!(kept % BLOCK, 0, "kept bytes are whole blocks: {kept}");
    kept
}

/// `ftx send ARGS... FILES... ADDR`.
fn sender(args: &[&str], files: &[&Path], addr: impl std::fmt::Display) -> Command {
    let mut cmd = send_cmd();
    cmd.args(args).args(files).arg(addr.to_string());
    cmd
}

/// `ftx recv --port PORT --bind 127.0.0.1 -q --out OUT`: a receiver on a
/// port chosen by the test (to restart one where the sender expects it).
fn receiver_on_port(out: &Path, port: u16) -> Receiver {
    let mut cmd = ftx_cmd();
    cmd.args([
        "recv",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "-q",
        "--out",
    ])
    .arg(out);
    Receiver::spawn(cmd, out)
}

/// Asserts that the receiver printed `received NAME SIZE bytes md5 MD5 ...`
/// and returns the line.
fn expect_received(rx: &mut Receiver, name: &str, size: u64, md5: &str) -> String {
    let prefix = format!("received {name} {size} bytes md5 {md5}");
    rx.wait_line(|l| l.starts_with(&prefix), WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no receiver line starting with {prefix:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                rx.lines().join("\n"),
                rx.stderr()
            )
        })
}

/// The target is in place with `md5`, and no partial or state is left.
fn assert_arrived(d: &Dirs, name: &str, md5: &str) {
    assert_eq!(md5_hex(d.out.join(name)), md5, "content of {name}");
    assert_eq!(names_in(&d.out), [name], "only the target is left in OUT");
}

/// Runs a send of `file` through a proxy that cuts after `cut` bytes, with
/// `--retry-for 0`: the sender fails (exit 1), and the receiver keeps the
/// full blocks it got. Returns the kept byte count (the `nth` report).
fn interrupt_with_cut(rx: &Receiver, file: &Path, cut: u64, nth: usize) -> u64 {
    let name = file
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(cut));
    let out = run_with_timeout(
        sender(&["-q", "--retry-for", "0"], &[file], proxy.addr),
        SEND_TIMEOUT,
    );
    assert_status(&out, 1, "send cut by the proxy with --retry-for 0");
    let kept = wait_kept(rx, &name, nth);
    assert!(
        kept > 0 && kept <= cut,
        "kept {kept} bytes after a cut at {cut}"
    );
    kept
}

/// A MID file `name` (random from `seed`) and a quiet receiver that kept
/// part of it: a first send was cut after [`MID_CUT`] bytes.
struct Interrupted {
    d: Dirs,
    file: PathBuf,
    md5: String,
    rx: Receiver,
    /// What the receiver kept (whole blocks).
    kept: u64,
}

fn interrupted(name: &str, seed: u64) -> Interrupted {
    let d = dirs();
    let file = d.src.join(name);
    write_random(&file, MID, seed);
    let md5 = md5_hex(&file);
    let rx = Receiver::start(&d.out, &["-q"]);
    let kept = interrupt_with_cut(&rx, &file, MID_CUT, 1);
    Interrupted {
        d,
        file,
        md5,
        rx,
        kept,
    }
}

/// Sends `paths` (default options) to `rx` through a proxy that cuts the
/// first connection after `cut` bytes and lets everything through once the
/// cut has happened; the sender's output, and the proxy for its counts.
fn send_through_a_cut(rx: &Receiver, paths: &[&Path], cut: u64) -> (Output, Proxy) {
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(cut));
    let mut tx = Bg::spawn(sender(&[], paths, proxy.addr));
    // The cut has happened once the proxy forwarded `cut` bytes.
    let cut_seen = poll_until(WAIT, || {
        proxy.bytes_client_to_server() >= cut || tx.has_exited()
    });
    assert!(cut_seen, "the proxy never forwarded {cut} bytes");
    proxy.set_mode(Mode::Pass);
    (tx.finish(SEND_TIMEOUT), proxy)
}

// ---------------------------------------------------------------------------
// A child process watched in the background
// ---------------------------------------------------------------------------

/// Resume-specific waits on a background process ([`Bg`] of common).
impl Bg {
    /// Waits until `path` is at least `at_least` bytes long. Panics (with
    /// the process's output) if the process exits first or after [`WAIT`].
    fn wait_file_reaches(&mut self, path: &Path, at_least: u64) {
        let reached = poll_until(WAIT, || len_of(path) >= at_least || self.has_exited());
        if reached && len_of(path) >= at_least {
            return;
        }
        let size = len_of(path);
        let what = self.what().to_string();
        let state = if reached {
            "exited"
        } else {
            "was still running"
        };
        let out = self.finish(DRAIN);
        panic!(
            "{} stayed at {size} bytes (< {at_least}) and {what} {state}\n{}",
            path.display(),
            show(&out)
        );
    }
}

// ---------------------------------------------------------------------------
// 1. kill -9 the sender at about 40%
// ---------------------------------------------------------------------------

#[test]
fn issue3_sender_killed_at_40_percent_resumes_and_sends_only_the_rest() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, BIG, 301);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);

    let mut tx = Bg::spawn(sender(&["-q"], &[&file], rx.addr));
    tx.wait_file_reaches(&d.part("big.bin"), BIG * 2 / 5);
    tx.kill();
    let first = tx.finish(WAIT);
    assert_eq!(
        first.status.signal(),
        Some(libc::SIGKILL),
        "the sender was killed mid-transfer, it did not finish first\n{}",
        show(&first)
    );
    let kept = wait_kept(&rx, "big.bin", 1);
    assert!(
        (BIG * 2 / 5..BIG).contains(&kept),
        "kept {kept} of {BIG} bytes"
    );
    assert!(d.state("big.bin").exists(), "the state file is kept");
    assert!(len_of(&d.part("big.bin")) >= kept, "the partial is kept");
    assert!(
        !d.out.join("big.bin").exists(),
        "no target before it is verified"
    );

    // The same command again (not -q, so it reports the resume), through a
    // proxy that counts what it sends.
    let proxy = Proxy::start(rx.addr, Mode::Pass);
    let again = run_with_timeout(sender(&[], &[&file], proxy.addr), SEND_TIMEOUT);
    assert_status(&again, 0, "the same send again");
    let err = text(&again.stderr);
    assert_eq!(
        resumed_at(&err, "big.bin"),
        Some(kept),
        "sender says `resuming big.bin at {kept}`:\n{err}"
    );
    let sent = proxy.bytes_client_to_server();
    assert!(
        sent >= BIG - kept && sent < BIG * 3 / 4,
        "second send carried {sent} bytes; expected the rest ({}) plus frames, well under 75% of {BIG}",
        BIG - kept
    );
    assert_arrived(&d, "big.bin", &md5);
    let line = expect_received(&mut rx, "big.bin", BIG, &md5);
    assert!(
        line.contains(&format!("resumed at {kept}")),
        "receiver line says where it resumed: {line}"
    );
}

// ---------------------------------------------------------------------------
// 2. kill -9 the receiver at about 40%, restart it on the same port
// ---------------------------------------------------------------------------

#[test]
fn issue3_receiver_killed_and_restarted_on_its_port_sender_retries_and_resumes() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, BIG, 302);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);
    let port = rx.addr.port();

    // Default retries; not -q, so the resume and the retries are reported.
    let mut tx = Bg::spawn(sender(&[], &[&file], rx.addr));
    // The first periodic checkpoint (64 MiB = 40%) is the only thing a
    // SIGKILLed receiver leaves to resume from: wait for its state file.
    let state = d.state("big.bin");
    tx.wait_file_reaches(&state, 1);
    rx.kill();
    let checkpointed = len_of(&d.part("big.bin"));
    assert!(
        checkpointed >= CHECKPOINT,
        "partial at kill: {checkpointed}"
    );
    assert!(!d.out.join("big.bin").exists(), "killed before the end");

    let mut rx2 = receiver_on_port(&d.out, port);
    let out = tx.finish(SEND_TIMEOUT);
    assert_status(&out, 0, "sender across a receiver restart");
    let err = text(&out.stderr);
    assert!(
        err.contains("retrying"),
        "sender reports its retries:\n{err}"
    );
    let offset = resumed_at(&err, "big.bin")
        .unwrap_or_else(|| panic!("sender says `resuming big.bin at N`:\n{err}"));
    assert!(
        (CHECKPOINT..BIG).contains(&offset) && offset.is_multiple_of(BLOCK),
        "resumed at {offset}: at or after the 64 MiB checkpoint, on a block boundary"
    );
    assert_arrived(&d, "big.bin", &md5);
    let line = expect_received(&mut rx2, "big.bin", BIG, &md5);
    assert!(line.contains(&format!("resumed at {offset}")), "{line}");
}

// ---------------------------------------------------------------------------
// 3. the connection is cut after 70 MiB, the retry passes
// ---------------------------------------------------------------------------

#[test]
fn issue3_connection_cut_after_70_mib_sender_reconnects_and_resumes() {
    let d = dirs();
    let size = 100 * MIB;
    let cut = 70 * MIB;
    let file = d.src.join("cut.bin");
    write_random(&file, size, 303);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);
    // The sender waits >= 200 ms before reconnecting; even if that
    // connection were still accepted in CutAfter mode, the rest (~32 MiB)
    // fits under the cut.
    let (out, proxy) = send_through_a_cut(&rx, &[&file], cut);
    assert_status(&out, 0, "sender through a cut connection");
    let err = text(&out.stderr);
    assert!(err.contains("retrying"), "sender reports the retry:\n{err}");
    let offset = resumed_at(&err, "cut.bin")
        .unwrap_or_else(|| panic!("sender says `resuming cut.bin at N`:\n{err}"));
    let kept = wait_kept(&rx, "cut.bin", 1);
    assert_eq!(offset, kept, "resumed where the receiver said it kept");
    assert!(offset >= CHECKPOINT && offset <= cut, "resumed at {offset}");
    assert!(proxy.connections() >= 2, "a second connection was made");
    let total = proxy.bytes_client_to_server();
    assert!(
        total < cut + (size - offset) + MIB,
        "{total} bytes sent in all: the retry did not start over"
    );
    assert_arrived(&d, "cut.bin", &md5);
    expect_received(&mut rx, "cut.bin", size, &md5);
}

// ---------------------------------------------------------------------------
// 4. the source changed (same size) between two attempts
// ---------------------------------------------------------------------------

#[test]
fn issue3_source_replaced_with_other_content_of_the_same_size_arrives_as_the_new_content() {
    let Interrupted {
        d,
        file,
        md5: old_md5,
        mut rx,
        kept,
    } = interrupted("moving.bin", 304);
    assert_eq!(kept, 3 * BLOCK);

    // Same path, same inode (truncated and rewritten), same size.
    write_random(&file, MID, 404);
    let new_md5 = md5_hex(&file);
    assert_ne!(old_md5, new_md5);

    let out = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&out, 0, "send of the new content");
    let err = text(&out.stderr);
    assert_eq!(
        resumed_at(&err, "moving.bin"),
        None,
        "no resume from a partial of other content:\n{err}"
    );
    assert_arrived(&d, "moving.bin", &new_md5);
    let line = expect_received(&mut rx, "moving.bin", MID, &new_md5);
    assert!(!line.contains("resumed"), "{line}");
    let rerr = rx.stderr();
    assert!(
        rerr.contains("starting over: partial belongs to other content")
            || rerr.contains("the sender did not confirm the partial; starting over"),
        "receiver says why it discarded the partial:\n{rerr}"
    );
}

// ---------------------------------------------------------------------------
// 5. a byte of the checkpointed partial changed on disk
// ---------------------------------------------------------------------------

/// XORs one byte of `path` at `at`.
fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        (at as usize) < bytes.len(),
        "{} is too short",
        path.display()
    );
    bytes[at as usize] ^= 0x20;
    fs::write(path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn issue3_flipped_byte_in_first_block_of_partial_is_not_trusted() {
    let Interrupted {
        d,
        file,
        md5,
        mut rx,
        ..
    } = interrupted("flip.bin", 305);

    flip_byte(&d.part("flip.bin"), 1000);
    let out = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&out, 0, "send after the partial was damaged");
    let err = text(&out.stderr);
    assert_eq!(
        resumed_at(&err, "flip.bin"),
        None,
        "a damaged first block means starting from 0:\n{err}"
    );
    assert_arrived(&d, "flip.bin", &md5);
    expect_received(&mut rx, "flip.bin", MID, &md5);
}

#[test]
fn issue3_flipped_byte_in_third_block_of_partial_resumes_before_that_block() {
    let Interrupted {
        d,
        file,
        md5,
        mut rx,
        ..
    } = interrupted("flip3.bin", 306);

    flip_byte(&d.part("flip3.bin"), 2 * BLOCK + 12345);
    let out = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&out, 0, "send after the partial was damaged");
    let err = text(&out.stderr);
    assert_eq!(
        resumed_at(&err, "flip3.bin"),
        Some(2 * BLOCK),
        "resumes at the damaged block:\n{err}"
    );
    assert_arrived(&d, "flip3.bin", &md5);
    expect_received(&mut rx, "flip3.bin", MID, &md5);
}

// ---------------------------------------------------------------------------
// 6. garbage, truncated or missing state / partial
// ---------------------------------------------------------------------------

/// Interrupts a MID send, lets `damage` spoil what the receiver kept, sends
/// again: a clean restart from 0 that ends verified.
fn clean_restart_after(seed: u64, damage: impl FnOnce(&Dirs, &str)) {
    let name = format!("damaged{seed}.bin");
    let Interrupted {
        d,
        file,
        md5,
        mut rx,
        ..
    } = interrupted(&name, seed);
    assert!(d.state(&name).exists() && d.part(&name).exists());

    damage(&d, &name);
    let out = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&out, 0, "send after the checkpoint was damaged");
    let err = text(&out.stderr);
    assert_eq!(
        resumed_at(&err, &name),
        None,
        "nothing damaged is resumed from:\n{err}"
    );
    assert_arrived(&d, &name, &md5);
    let line = expect_received(&mut rx, &name, MID, &md5);
    assert!(!line.contains("resumed"), "{line}");
    let rerr = rx.stderr();
    assert!(
        rerr.contains(&format!("'{name}': starting over: ")),
        "receiver says it starts over and why:\n{rerr}"
    );
}

#[test]
fn issue3_garbage_state_file_restarts_cleanly() {
    clean_restart_after(361, |d, name| {
        fs::write(d.state(name), b"this is not a state file, just garbage\n").expect("write");
    });
}

#[test]
fn issue3_truncated_state_file_restarts_cleanly() {
    clean_restart_after(362, |d, name| {
        let st = fs::read(d.state(name)).expect("read state");
        fs::write(d.state(name), &st[..st.len() / 2]).expect("truncate state");
    });
}

#[test]
fn issue3_empty_state_file_restarts_cleanly() {
    clean_restart_after(363, |d, name| {
        fs::write(d.state(name), b"").expect("empty state");
    });
}

#[test]
fn issue3_state_without_its_partial_restarts_cleanly() {
    clean_restart_after(364, |d, name| {
        fs::remove_file(d.part(name)).expect("remove partial");
    });
}

// ---------------------------------------------------------------------------
// 7. identical re-send: SKIP
// ---------------------------------------------------------------------------

/// (inode, mtime s, mtime ns) of `p`.
fn identity(p: &Path) -> (u64, i64, i64) {
    let m = fs::symlink_metadata(p).expect("stat");
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// The JSON events on stdout of a `--json` run.
fn events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}\n{}", show(out)))
        })
        .collect()
}

#[test]
fn issue3_identical_resend_is_skipped_by_rehash_and_reported_in_json() {
    let d = dirs();
    let file = d.src.join("same.bin");
    let size = 3 * MIB;
    write_random(&file, size, 307);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);
    let first = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&first, 0, "first send");
    expect_received(&mut rx, "same.bin", size, &md5);
    let target = d.out.join("same.bin");
    let before = identity(&target);

    // Again: skipped (the receiver hashes the target).
    let second = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&second, 0, "identical re-send");
    let err = text(&second.stderr);
    assert!(err.contains("sent 0 file(s), 1 skipped, 0 failed"), "{err}");
    assert_eq!(
        identity(&target),
        before,
        "target inode and mtime unchanged"
    );

    // With --json: a file_skipped event and a summary counting it.
    let third = run_with_timeout(sender(&["--json"], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&third, 0, "identical re-send with --json");
    let evs = events(&third);
    let skipped: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event"] == "file_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "one file_skipped event\n{}", show(&third));
    assert_eq!(skipped[0]["path"], "same.bin");
    assert_eq!(skipped[0]["bytes"], size);
    assert_eq!(skipped[0]["reason"], "identical");
    let summary = evs
        .iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("a summary event\n{}", show(&third)));
    assert_eq!(summary["files_skipped"], 1);
    assert_eq!(summary["files_ok"], 0);
    assert_eq!(summary["exit_code"], 0);
    assert!(
        evs.iter().all(|e| e["event"] != "file_started"),
        "nothing was sent\n{}",
        show(&third)
    );

    // Once more: the receiver re-hashes the target each time and skips.
    let fourth = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&fourth, 0, "identical re-send, once more");
    let err = text(&fourth.stderr);
    assert!(err.contains("1 skipped"), "{err}");
    assert_eq!(
        identity(&target),
        before,
        "target inode and mtime unchanged"
    );
    assert_arrived(&d, "same.bin", &md5);
    rx.kill();
    assert_eq!(
        rx.stderr().matches("skipped 'same.bin'").count(),
        3,
        "receiver logged three skips:\n{}",
        rx.stderr()
    );
}

// ---------------------------------------------------------------------------
// 8. the digest cache
// ---------------------------------------------------------------------------

/// Entries of the cache directory `XDG/ftx/md5` (empty if it is missing).
/// The cache's entry files of files of 1 MiB and more (smaller ones go
/// into one table, `index-v2`).
fn cache_entries(xdg: &Path) -> Vec<PathBuf> {
    let dir = xdg.join("ftx").join("md5");
    match fs::read_dir(&dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd
                .map(|e| e.expect("entry").path())
                .filter(|p| p.file_name().is_some_and(|n| n != "index-v2"))
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

fn cached_send(xdg: &Path, args: &[&str], file: &Path, addr: SocketAddr) -> Output {
    let mut cmd = sender(args, &[file], addr);
    cmd.env("XDG_CACHE_HOME", xdg);
    run_with_timeout(cmd, SEND_TIMEOUT)
}

const WRONG_MD5: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn issue3_digest_cache_is_written_and_a_stale_entry_costs_only_a_resend() {
    let d = dirs();
    let xdg = d.tmp.path().join("cache");
    let file = d.src.join("cached.bin");
    let size = 8 * MIB;
    write_random(&file, size, 308);
    let md5 = md5_hex(&file);
    let small = d.src.join("small.bin");
    write_random(&small, MIB - 1, 318);
    let mut rx = Receiver::start(&d.out, &["-q"]);

    // Below 1 MiB: no entry file (the index may hold it). --no-cache:
    // nothing cached.
    let out = cached_send(&xdg, &[], &small, rx.addr);
    assert_status(&out, 0, "small file");
    let out = cached_send(&xdg, &["--no-cache"], &file, rx.addr);
    assert_status(&out, 0, "--no-cache");
    assert_eq!(
        cache_entries(&xdg),
        Vec::<PathBuf>::new(),
        "nothing cached yet"
    );
    fs::remove_file(d.out.join("cached.bin")).expect("rm target");

    // >= 1 MiB: one entry holding the digest.
    let out = cached_send(&xdg, &[], &file, rx.addr);
    assert_status(&out, 0, "first cached send");
    let entries = cache_entries(&xdg);
    assert_eq!(entries.len(), 1, "one cache entry: {entries:?}");
    let entry = entries[0].clone();
    assert_eq!(fs::read_to_string(&entry).expect("read").trim(), md5);
    expect_received(&mut rx, "cached.bin", size, &md5);

    // A stale entry: the FILE header carries the wrong digest, the receiver
    // reports a mismatch, the sender re-hashes and sends again from 0.
    fs::remove_file(d.out.join("cached.bin")).expect("rm target");
    fs::write(&entry, WRONG_MD5).expect("spoil the cache entry");
    let out = cached_send(&xdg, &[], &file, rx.addr);
    assert_status(&out, 0, "send with a stale cache entry");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("sender MD5 {WRONG_MD5}")) && err.contains("sending it again from 0"),
        "sender reports the mismatch and the resend:\n{err}"
    );
    assert_eq!(md5_hex(d.out.join("cached.bin")), md5);
    expect_received(&mut rx, "cached.bin", size, &md5);
    assert_eq!(
        fs::read_to_string(&entry)
            .expect("cache entry rewritten")
            .trim(),
        md5,
        "the cache now holds the right digest"
    );
    assert_eq!(cache_entries(&xdg), std::slice::from_ref(&entry));

    // The same with --retry-for 0: no second chance, exit 4, nothing kept.
    fs::remove_file(d.out.join("cached.bin")).expect("rm target");
    fs::write(&entry, WRONG_MD5).expect("spoil the cache entry");
    let out = cached_send(&xdg, &["--retry-for", "0"], &file, rx.addr);
    assert_status(&out, 4, "stale cache entry with --retry-for 0");
    let err = text(&out.stderr);
    assert!(err.contains("integrity failure"), "{err}");
    assert!(!d.out.join("cached.bin").exists(), "no unverified target");
    let left: Vec<String> = names_in(&d.out)
        .into_iter()
        .filter(|n| n.contains("cached.bin"))
        .collect();
    assert!(left.is_empty(), "partial discarded: {left:?}");
    let stale_left = fs::read_to_string(&entry).map(|t| t.trim() == WRONG_MD5);
    assert!(
        !matches!(stale_left, Ok(true)),
        "the stale entry was forgotten"
    );
}

// ---------------------------------------------------------------------------
// 9. nobody listening
// ---------------------------------------------------------------------------

#[test]
fn issue3_nobody_listening_with_retry_for_0_exits_3_at_once() {
    let d = dirs();
    let file = d.src.join("f.bin");
    write_random(&file, 1000, 309);
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run_with_timeout(sender(&["--retry-for", "0"], &[&file], &addr), SEND_TIMEOUT);
    let took = started.elapsed();
    assert_status(&out, 3, "--retry-for 0 to a closed port");
    let err = text(&out.stderr);
    assert!(
        !err.contains("retrying"),
        "no retry with --retry-for 0:\n{err}"
    );
    assert!(err.contains(&addr), "names the address:\n{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn issue3_nobody_listening_backs_off_doubling_within_retry_for_then_exits_3() {
    let d = dirs();
    let file = d.src.join("f.bin");
    write_random(&file, 1000, 310);
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run_with_timeout(sender(&["--retry-for", "7"], &[&file], &addr), SEND_TIMEOUT);
    let took = started.elapsed();
    assert_status(&out, 3, "--retry-for 7 to a closed port");
    let err = text(&out.stderr);
    let retrying: Vec<&str> = err.lines().filter(|l| l.contains("retrying in")).collect();
    assert!(retrying.len() >= 5, "at least five retries in 7 s:\n{err}");
    for (i, delay) in ["0.2 s", "0.4 s", "0.8 s", "1.6 s", "3.2 s"]
        .iter()
        .enumerate()
    {
        assert!(
            retrying[i].contains(&format!("retrying in {delay} (giving up in ")),
            "retry {i} waits {delay}: {}",
            retrying[i]
        );
    }
    assert!(
        err.contains("gave up after 7 s without progress, run the same command again to resume"),
        "says how to go on:\n{err}"
    );
    // The window is used whole: the last pause ends at its end.
    assert!(took >= Duration::from_secs(7), "backed off: {took:?}");
}

#[test]
fn issue3_retries_are_json_events_with_their_delays() {
    let d = dirs();
    let file = d.src.join("f.bin");
    write_random(&file, 1000, 311);
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run_with_timeout(
        sender(&["--json", "--retry-for", "2"], &[&file], &addr),
        SEND_TIMEOUT,
    );
    assert_status(&out, 3, "--retry-for 2 to a closed port");
    let retries: Vec<(f64, f64)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "retry")
        .map(|e| {
            (
                e["delay_s"].as_f64().expect("delay_s"),
                e["gives_up_in_s"].as_f64().expect("gives_up_in_s"),
            )
        })
        .collect();
    assert!(retries.len() >= 3, "{}", show(&out));
    assert_eq!((retries[0].0, retries[1].0), (0.2, 0.4), "{}", show(&out));
    // The countdown goes down, and the pauses fit in the window.
    assert!(retries.windows(2).all(|w| w[1].1 <= w[0].1), "{retries:?}");
    let paused: f64 = retries.iter().map(|r| r.0).sum();
    assert!(paused <= 2.05, "{retries:?}");
}

/// Default flags: a receiver that comes back after longer than six
/// attempts' backoff (12.6 s; the old default gave up after 6.2 s) is
/// still reached. A listener the test holds refuses the first six
/// connections (accepts and closes them), then gives its port to a real
/// receiver.
#[test]
fn issue15_default_retry_window_outlasts_a_receiver_restart() {
    let d = dirs();
    let file = d.src.join("late.bin");
    write_random(&file, 100_000, 317);
    let md5 = md5_hex(&file);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    let (tx_conn, rx_conn) = std::sync::mpsc::channel();
    let refuser = std::thread::spawn(move || {
        for _ in 0..6 {
            match listener.accept() {
                // Dropped at once: the sender sees the connection end.
                Ok((conn, _)) => drop(conn),
                Err(_) => break,
            }
            if tx_conn.send(()).is_err() {
                break;
            }
        }
    });
    let mut tx = Bg::spawn(sender(&["-q"], &[&file], format!("127.0.0.1:{port}")));
    for i in 0..6 {
        rx_conn
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("connection {i} of the sender's retries did not come"));
    }
    refuser.join().expect("refuser");
    let mut rx = receiver_on_port(&d.out, port);
    let out = tx.finish(SEND_TIMEOUT);
    assert_status(
        &out,
        0,
        "sender with default flags reaches the late receiver",
    );
    assert_arrived(&d, "late.bin", &md5);
    expect_received(&mut rx, "late.bin", 100_000, &md5);
}

// ---------------------------------------------------------------------------
// 10. SIGINT
// ---------------------------------------------------------------------------

#[test]
fn issue3_sigint_to_sender_exits_130_saying_how_to_resume_and_the_rerun_resumes() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, BIG, 312);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);

    let mut tx = Bg::spawn(sender(&[], &[&file], rx.addr));
    tx.wait_file_reaches(&d.part("big.bin"), BIG * 2 / 5);
    tx.signal(libc::SIGINT);
    let out = tx.finish(WAIT);
    assert_status(&out, 130, "sender interrupted with SIGINT");
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted, run the same command again to resume"),
        "{err}"
    );
    let kept = wait_kept(&rx, "big.bin", 1);
    assert!((BIG * 2 / 5..BIG).contains(&kept), "kept {kept}");

    let again = run_with_timeout(sender(&[], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&again, 0, "the same command again");
    assert_eq!(resumed_at(&text(&again.stderr), "big.bin"), Some(kept));
    assert_arrived(&d, "big.bin", &md5);
    expect_received(&mut rx, "big.bin", BIG, &md5);
}

#[test]
fn issue3_sigint_to_receiver_exits_130_keeping_partial_and_state_then_resumes() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, BIG, 313);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, &["-q"]);

    let mut tx = Bg::spawn(sender(&["-q", "--retry-for", "0"], &[&file], rx.addr));
    tx.wait_file_reaches(&d.part("big.bin"), BIG * 2 / 5);
    rx.interrupt();
    let status = rx.wait_exit(WAIT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "receiver exits 130 on SIGINT\n--- stderr ---\n{}",
        rx.stderr()
    );
    let rerr = rx.stderr();
    assert!(rerr.contains("interrupted: checkpointing"), "{rerr}");
    let kept = wait_kept(&rx, "big.bin", 1);
    assert!((BIG * 2 / 5..BIG).contains(&kept), "kept {kept}");
    assert!(d.state("big.bin").exists(), "state file kept");
    assert!(len_of(&d.part("big.bin")) >= kept, "partial kept");
    assert!(!d.out.join("big.bin").exists());
    // How soon the sender notices is the subject of
    // issue3_sender_notices_at_once_when_the_receiver_is_interrupted_mid_body.
    tx.kill();
    let out = tx.finish(WAIT);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the sender did not complete without its receiver\n{}",
        show(&out)
    );

    let mut rx2 = Receiver::start(&d.out, &["-q"]);
    let again = run_with_timeout(sender(&[], &[&file], rx2.addr), SEND_TIMEOUT);
    assert_status(&again, 0, "send to the restarted receiver");
    assert_eq!(resumed_at(&text(&again.stderr), "big.bin"), Some(kept));
    assert_arrived(&d, "big.bin", &md5);
    let line = expect_received(&mut rx2, "big.bin", BIG, &md5);
    assert!(line.contains(&format!("resumed at {kept}")), "{line}");
}

/// True when this host's TCP socket connected to 127.0.0.1:`port` is in
/// zero-window probing and at least one probe found the window still shut
/// (`/proc/net/tcp`: timer kind 4, probes-out >= 1; a window that is merely
/// smaller than a segment also arms the probe timer, but then the probe
/// carries data and probes-out stays 0).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sender_sees_zero_window(port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        // sl local rem st tx:rx tr:when retrnsmt uid probes_out inode ...
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 8
            && f[2] == remote
            && f[3] == "01"
            && f[5].starts_with("04:")
            && f[8].parse::<u32>().is_ok_and(|n| n >= 1)
    })
}

/// State (`st`, hex: "01" ESTABLISHED, "08" CLOSE_WAIT, ...) of this
/// host's TCP socket connected to 127.0.0.1:`port`, per `/proc/net/tcp`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tcp_state_towards(port: u16) -> Option<String> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == remote).then(|| f[3].to_owned())
    })
}

/// One thread of a child process stopped with ptrace while the rest of the
/// process runs on. Resumed (detached) on drop.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
struct FrozenThread {
    tid: libc::pid_t,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl FrozenThread {
    /// Stops thread `tid` (bounded wait for the stop).
    fn freeze(tid: libc::pid_t) -> io::Result<FrozenThread> {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: plain ptrace calls on a thread of our own child.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let frozen = FrozenThread { tid };
        // SAFETY: as above; the thread is seized by this thread.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let mut status = 0;
            // SAFETY: waits for our tracee only.
            let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == tid {
                return Ok(frozen);
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "thread did not stop",
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Drop for FrozenThread {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching our stopped tracee lets it run on.
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, null, null) } == 0 {
            return;
        }
        // Not in a ptrace-stop: it was killed with its process. A traced
        // thread that exits waits for its tracer (this thread) to reap it,
        // and until then its process cannot be reaped either: reap it.
        let deadline = Instant::now() + DRAIN;
        loop {
            let mut status = 0;
            // SAFETY: waits for our tracee only.
            let r = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == self.tid
                || (r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted)
                || Instant::now() >= deadline
            {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The thread of process `pid` whose name starts with `prefix`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_named(pid: u32, prefix: &str) -> Option<libc::pid_t> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

/// A receiver interrupted while its receive window is closed (it is slower
/// than the sender, e.g. during the fsync of a checkpoint) must not leave
/// the sender hanging until its `--timeout`: the sender should see the
/// connection end at once (and, with retries, retry at once).
///
/// Made deterministic with ptrace: the receiver's session thread is stopped
/// until the sender's socket is in zero-window probing; SIGINT; once the
/// receiver has shut the connection down (the sender's socket is in
/// CLOSE_WAIT) the session thread runs on, drains, checkpoints, and the
/// receiver exits 130.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn issue3_sender_notices_at_once_when_the_receiver_is_interrupted_mid_body() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, BIG, 315);
    let mut rx = Receiver::start(&d.out, &["-q"]);
    let port = rx.addr.port();

    let mut tx = Bg::spawn(sender(
        &["-q", "--retry-for", "0", "--timeout", "10"],
        &[&file],
        rx.addr,
    ));
    tx.wait_file_reaches(&d.part("big.bin"), 16 * MIB);
    let tid = thread_named(rx.pid(), "session")
        .unwrap_or_else(|| panic!("no session thread in receiver {}", rx.pid()));
    let frozen = match FrozenThread::freeze(tid) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: cannot stop the receiver's session thread with ptrace: {e}");
            return;
        }
    };
    let closed = poll_until(WAIT, || sender_sees_zero_window(port));
    assert!(closed, "the receiver's window never closed");
    rx.interrupt();
    // The receiver's FIN reached the sender: its socket left ESTABLISHED
    // (CLOSE_WAIT, or closed if the sender reacted to it at once).
    let shut = poll_until(Duration::from_secs(8), || {
        tcp_state_towards(port).as_deref() != Some("01")
    });
    drop(frozen);
    assert!(
        shut,
        "the receiver did not shut the connection down on SIGINT; stderr:\n{}",
        rx.stderr()
    );
    let status = rx.wait_exit(WAIT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(130),
        "receiver exits 130 on SIGINT\n--- stderr ---\n{}",
        rx.stderr()
    );
    let kept = wait_kept(&rx, "big.bin", 1);
    assert!(kept >= 16 * MIB, "kept {kept}");

    let gone = Instant::now();
    let out = tx.finish(Duration::from_secs(40));
    let took = gone.elapsed();
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        took < Duration::from_secs(5),
        "the sender noticed the interrupted receiver only after {took:?} \
         (its --timeout is 10 s)\n{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// A connection that dies on the sender's side only
// ---------------------------------------------------------------------------

/// A proxy whose first connection goes half-open after `limit` bytes from
/// the sender: the sender's side is closed (it sees the break at once), the
/// receiver's side stays open and silent, as when a network path dies
/// without the receiver noticing. Later connections pass through.
struct HalfOpenProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<Arc<TcpStream>>>>,
}

impl HalfOpenProxy {
    fn start(target: SocketAddr, limit: u64) -> HalfOpenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<Arc<TcpStream>>>> = Arc::default();
        let (stop2, held2) = (Arc::clone(&stop), Arc::clone(&held));
        thread::spawn(move || {
            let n = AtomicUsize::new(0);
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (client, server) = (Arc::new(client), Arc::new(server));
                held2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::clone(&server));
                let limit = if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    limit
                } else {
                    u64::MAX
                };
                let cut = Arc::new(AtomicBool::new(false));
                let (c, s, cut2) = (Arc::clone(&client), Arc::clone(&server), Arc::clone(&cut));
                thread::spawn(move || backward(&s, &c, &cut2));
                thread::spawn(move || forward(&client, &server, limit, &cut));
            }
        });
        HalfOpenProxy { addr, stop, held }
    }
}

/// Sender → receiver, at most `limit` bytes. At the limit the sender's
/// socket is abandoned with SO_LINGER 0 (once `backward` lets go of it too,
/// it is closed with a reset); the receiver's stays open.
fn forward(client: &TcpStream, server: &TcpStream, limit: u64, cut: &AtomicBool) {
    let (mut r, mut w) = (client, server);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let want = (buf.len() as u64).min(limit - pos) as usize;
        if want == 0 {
            let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
            cut.store(true, Ordering::SeqCst);
            return;
        }
        match r.read(&mut buf[..want]) {
            Ok(0) => {
                let _ = server.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Receiver → sender until EOF, or until `cut` (checked every 20 ms), when
/// it lets go of the sender's socket without touching the receiver's.
fn backward(server: &TcpStream, client: &TcpStream, cut: &AtomicBool) {
    let _ = server.set_read_timeout(Some(Duration::from_millis(20)));
    let (mut r, mut w) = (server, client);
    let mut buf = vec![0u8; 64 * 1024];
    while !cut.load(Ordering::SeqCst) {
        match r.read(&mut buf) {
            Ok(0) => {
                let _ = client.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for HalfOpenProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        for s in self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Sends MID through a [`HalfOpenProxy`] cutting the first connection after
/// MID_CUT bytes, to a receiver started with `recv_args`: the sender (default
/// retries) must complete by itself, resuming.
fn half_open_break_is_survived(seed: u64, recv_args: &[&str]) {
    let d = dirs();
    let file = d.src.join("half.bin");
    write_random(&file, MID, seed);
    let md5 = md5_hex(&file);
    let mut rx = Receiver::start(&d.out, recv_args);
    let proxy = HalfOpenProxy::start(rx.addr, MID_CUT);

    let out = run_with_timeout(sender(&[], &[&file], proxy.addr), SEND_TIMEOUT);
    let err = text(&out.stderr);
    assert_status(&out, 0, "sender retrying past a half-open connection");
    assert!(err.contains("retrying"), "{err}");
    assert!(resumed_at(&err, "half.bin").is_some(), "resumed:\n{err}");
    assert_arrived(&d, "half.bin", &md5);
    expect_received(&mut rx, "half.bin", MID, &md5);
}

/// The sender sees its connection die, the receiver does not (yet): its
/// session still holds the file. The sender's retry must not turn that
/// into a final "refused" (exit 5): once the receiver drops the dead
/// session (here after its 2 s `--timeout`), the retry resumes.
#[test]
fn issue3_retry_while_receiver_still_holds_the_dead_session_resumes_instead_of_failing() {
    half_open_break_is_survived(314, &["-q", "--timeout", "2"]);
}

/// The same with default settings on both sides: the receiver would hold
/// the dead session for 30 s (`--timeout`), longer than the sender's five
/// retries wait (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s). The sender must still get
/// through by itself (e.g. the receiver hands the file over to the new
/// session of the same file, after checkpointing the old one).
#[test]
fn issue3_half_open_break_with_default_settings_resumes_within_the_retries() {
    half_open_break_is_survived(316, &["-q"]);
}

/// Regression: the sender's reader thread used the socket's read timeout,
/// so a body that took longer than `--timeout` to send (a big file, a slow
/// link) was cut off, although the receiver was working all along.
#[test]
fn issue3_body_that_takes_longer_than_the_timeout_is_not_cut_off() {
    let d = dirs();
    let file = d.src.join("slow.bin");
    write_random(&file, 3 * MIB, 316);
    let md5 = md5_hex(&file);
    let rx = Receiver::start(&d.out, &["-q"]);
    // 1 MiB/s: the body takes about 3 s, three times the sender's timeout.
    let proxy = Proxy::start(rx.addr, Mode::Slow(MIB));
    let out = run_with_timeout(
        sender(
            &["--timeout", "1", "--retry-for", "0"],
            &[&file],
            proxy.addr,
        ),
        SEND_TIMEOUT,
    );
    assert_status(&out, 0, "slow body with --timeout 1");
    assert!(!text(&out.stderr).contains("retrying"), "{}", show(&out));
    assert_eq!(md5_hex(d.out.join("slow.bin")), md5);
}

/// Many small files through a connection cut half way. The receiver's
/// commit thread still places the files verified before the cut (their
/// RESULTs may be lost with the connection); the retry finds them there,
/// identical, and sends the rest. The tree arrives whole, with no partial
/// or state file left.
#[test]
fn small_files_cut_half_way_arrive_whole_after_a_retry() {
    let d = dirs();
    let tree = d.src.join("many");
    let mut total = 0;
    for i in 0..300u64 {
        let dir = tree.join(format!("d{}", i % 6));
        fs::create_dir_all(&dir).expect("create a source directory");
        let size = 1 + (i * 7919) % 20_000;
        write_random(dir.join(format!("f{i:03}.bin")), size, 600 + i);
        total += size;
    }
    let rx = Receiver::start(&d.out, &["-q"]);
    let (out, _proxy) = send_through_a_cut(&rx, &[&tree], total / 2);
    assert_status(
        &out,
        0,
        "sender of 300 small files through a cut connection",
    );
    let err = text(&out.stderr);
    assert!(err.contains("retrying"), "sender reports the retry:\n{err}");
    assert_trees_arrived(&tree, d.out.join("many"));
    let mut left = Vec::new();
    for i in 0..6 {
        let dir = d.out.join("many").join(format!("d{i}"));
        left.extend(names_in(&dir).into_iter().filter(|n| n.contains(".ftx-")));
    }
    assert!(left.is_empty(), "partial or state files left: {left:?}");
}

// ---------------------------------------------------------------------------
// 8. a cold send cut midway: the next one resumes at once
// ---------------------------------------------------------------------------

#[test]
fn a_cold_send_cut_midway_resumes_at_once_without_asking_for_the_digest() {
    // MID is over 8 MiB: sent cold, its digest follows the body.
    let Interrupted {
        d,
        file,
        md5,
        mut rx,
        kept,
    } = interrupted("cold.bin", 333);

    let out = run_with_timeout(sender(&["--json"], &[&file], rx.addr), SEND_TIMEOUT);
    assert_status(&out, 0, "the same send again");
    let ev = events(&out);
    assert!(
        !ev.iter().any(|e| e["reason"] == "digest_needed"),
        "no round asking for the digest first: {ev:?}"
    );
    let started: Vec<&Value> = ev.iter().filter(|e| e["event"] == "file_started").collect();
    assert_eq!(started.len(), 1, "one start, resumed: {started:?}");
    assert_eq!(started[0]["offset"].as_u64(), Some(kept), "{started:?}");
    assert_arrived(&d, "cold.bin", &md5);
    expect_received(&mut rx, "cold.bin", MID, &md5);
}
