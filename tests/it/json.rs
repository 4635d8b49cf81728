//! `--json`: both roles print one JSON object per line on stdout (schema in
//! src/events.rs and the README, "JSON events"), and nothing else: progress
//! and diagnostics go to stderr. Real receiver and sender over loopback.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::time::Duration;

use crate::common::{
    assert_status, copy_tree, dirs, fixtures, ftx_cmd, md5_hex, run_with_timeout, s, send, text,
    write_random, Mode, Proxy, Receiver,
};
use serde_json::Value;

/// How long a `--once` receiver may take to exit after its sender did.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Every event kind of src/events.rs.
const KINDS: &[&str] = &[
    "listening",
    "file_started",
    "file_done",
    "file_skipped",
    "file_failed",
    "retry",
    "error",
    "summary",
    "entry_left",
];

// ---------------------------------------------------------------------------
// Parsing events
// ---------------------------------------------------------------------------

/// Parses every line of a `--json` stdout. Panics, showing the line, if one
/// is not a JSON object with a known `"event"`.
fn parse_events(stdout: &str, who: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{who}: stdout line is not JSON ({e}): {line:?}\n--- stdout ---\n{stdout}")
            });
            let kind = v
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{who}: no \"event\" string in {line}"));
            assert!(KINDS.contains(&kind), "{who}: unknown event kind in {line}");
            v
        })
        .collect()
}

fn kind(e: &Value) -> &str {
    e["event"].as_str().unwrap_or("")
}

fn of_kind<'a>(events: &'a [Value], k: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| kind(e) == k).collect()
}

fn u(e: &Value, field: &str) -> u64 {
    e[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {e}"))
}

fn f(e: &Value, field: &str) -> f64 {
    e[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {e}"))
}

fn st<'a>(e: &'a Value, field: &str) -> &'a str {
    e[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {e}"))
}

/// The one summary, which must be the last event.
fn summary<'a>(events: &'a [Value], who: &str) -> &'a Value {
    let sums = of_kind(events, "summary");
    assert_eq!(sums.len(), 1, "{who}: exactly one summary: {events:#?}");
    let last = events.last().expect("at least one event");
    assert_eq!(kind(last), "summary", "{who}: the summary comes last");
    last
}

/// Checks a summary's role, counters and exit code.
fn assert_summary(sum: &Value, role: &str, (ok, skipped, failed): (u64, u64, u64), exit_code: i64) {
    assert_eq!(st(sum, "role"), role, "{sum}");
    assert_eq!(u(sum, "files_ok"), ok, "files_ok in {sum}");
    assert_eq!(u(sum, "files_skipped"), skipped, "files_skipped in {sum}");
    assert_eq!(u(sum, "files_failed"), failed, "files_failed in {sum}");
    assert_eq!(
        sum["exit_code"].as_i64(),
        Some(exit_code),
        "exit_code in {sum}"
    );
    assert!(f(sum, "seconds") >= 0.0, "{sum}");
    u(sum, "bytes");
    if role == "recv" {
        st(sum, "peer");
    } else {
        assert!(sum.get("peer").is_none(), "no peer on the sender: {sum}");
    }
}

/// The one event of kind `k` about `path`.
fn event_for<'a>(events: &'a [Value], k: &str, path: &str) -> &'a Value {
    let hits: Vec<_> = events
        .iter()
        .filter(|e| kind(e) == k && e["path"] == path)
        .collect();
    assert_eq!(hits.len(), 1, "one {k} for {path:?} in {events:#?}");
    hits[0]
}

fn position(events: &[Value], k: &str, path: &str) -> usize {
    events
        .iter()
        .position(|e| kind(e) == k && e["path"] == path)
        .unwrap_or_else(|| panic!("no {k} for {path:?}"))
}

// ---------------------------------------------------------------------------
// A `--json` receiver
// ---------------------------------------------------------------------------

/// A running `ftx recv --json --port 0 --bind 127.0.0.1 --out OUT ...`
/// (a [`Receiver`]) and its first stdout line, the `listening` event,
/// checked by [`start`]. Killed on drop.
///
/// [`start`]: JsonReceiver::start
struct JsonReceiver {
    rx: Receiver,
    addr: SocketAddr,
    /// The `listening` event.
    listening: Value,
}

impl JsonReceiver {
    fn start(out: &Path, extra: &[&str]) -> JsonReceiver {
        let mut cmd = ftx_cmd();
        cmd.args([
            "recv",
            "--json",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--out",
        ])
        .arg(out)
        .args(extra);
        let mut rx = Receiver::spawn(cmd, out);
        let first = rx.lines().first().cloned().unwrap_or_default();
        let ev = parse_events(&first, "receiver's first line")
            .pop()
            .expect("one event");
        assert_eq!(kind(&ev), "listening", "first line: {first}");
        let port = u(&ev, "port");
        assert!(port > 0 && port <= 65535, "a real port in {first}");
        let addr: SocketAddr = st(&ev, "address")
            .parse()
            .unwrap_or_else(|e| panic!("address in {first} is not ADDR:PORT: {e}"));
        assert_eq!(u64::from(addr.port()), port, "address and port agree");
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "the bound address");
        assert_eq!(addr, rx.addr);
        JsonReceiver {
            rx,
            addr,
            listening: ev,
        }
    }

    fn kill(&mut self) {
        self.rx.kill();
    }

    /// Waits (bounded) for a `--once` receiver to exit; returns its status
    /// and every stdout line after the `listening` one. Panics on timeout.
    fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let Some(status) = self.rx.wait_exit(EXIT_TIMEOUT) else {
            self.rx.kill();
            panic!(
                "receiver did not exit within {EXIT_TIMEOUT:?}\n--- stderr ---\n{}",
                self.rx.stderr()
            );
        };
        let lines = self.rx.lines().into_iter().skip(1).collect();
        (status, lines)
    }

    /// [`finish`](Self::finish), then the parsed events (after `listening`).
    fn finish_events(&mut self) -> (ExitStatus, Vec<Value>) {
        let (status, lines) = self.finish();
        let stdout = lines.join("\n");
        (status, parse_events(&stdout, "receiver"))
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `ftx send --json ARGS... ADDR`; returns the output and its events.
fn send_json(args: &[&str], addr: impl std::fmt::Display) -> (Output, Vec<Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = send(&all, addr);
    let events = parse_events(&text(&out.stdout), "sender");
    (out, events)
}

/// Regular files under `root`, as wire names (`prefix/rel/path`) → MD5 and size.
fn files_of(root: &Path, prefix: &str) -> BTreeMap<String, (String, u64)> {
    let mut map = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), prefix.to_string())];
    while let Some((dir, name)) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let child = format!("{name}/{}", e.file_name().to_string_lossy());
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push((e.path(), child));
            } else if ft.is_file() {
                let size = e.metadata().expect("metadata").len();
                map.insert(child, (md5_hex(e.path()), size));
            }
        }
    }
    map
}

/// Checks one side's events for a clean transfer of `files`.
fn assert_clean_transfer(events: &[Value], files: &BTreeMap<String, (String, u64)>, role: &str) {
    assert_eq!(
        of_kind(events, "file_done").len(),
        files.len(),
        "{role}: one file_done per file: {events:#?}"
    );
    assert_eq!(of_kind(events, "file_started").len(), files.len(), "{role}");
    assert!(of_kind(events, "file_failed").is_empty(), "{role}");
    assert!(of_kind(events, "file_skipped").is_empty(), "{role}");
    for (path, (md5, size)) in files {
        let started = event_for(events, "file_started", path);
        assert_eq!(u(started, "bytes"), *size, "{started}");
        assert_eq!(u(started, "offset"), 0, "{started}");
        let done = event_for(events, "file_done", path);
        assert_eq!(u(done, "bytes"), *size, "{done}");
        assert_eq!(st(done, "md5"), md5, "md5 of {path}: {done}");
        assert_eq!(u(done, "resumed_from"), 0, "{done}");
        assert!(f(done, "seconds") >= 0.0, "{done}");
        assert!(f(done, "mb_per_s") >= 0.0, "{done}");
        assert!(
            position(events, "file_started", path) < position(events, "file_done", path),
            "{role}: file_started before file_done for {path}"
        );
        if role == "recv" {
            st(started, "peer");
            st(done, "peer");
        } else {
            assert!(done.get("peer").is_none(), "no peer on the sender: {done}");
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn receiver_first_line_is_the_listening_event() {
    let d = dirs();
    let mut rx = JsonReceiver::start(&d.out, &[]);
    // start() checked the event; it has exactly these fields.
    let obj = rx.listening.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["address", "event", "port"], "{}", rx.listening);
    // And it really listens there.
    let (_, events) = {
        let file = d.src.join("one.bin");
        fs::copy(fixtures().join("one.bin"), &file).expect("copy");
        send_json(&[s(&file)], rx.addr)
    };
    assert_eq!(kind(summary(&events, "sender")), "summary");
    rx.kill();
}

#[test]
fn directory_send_reports_every_file_on_both_sides() {
    let d = dirs();
    let tree = d.src.join("tree");
    copy_tree(fixtures().join("tree"), &tree);
    let files = files_of(&tree, "tree");
    assert_eq!(files.len(), 5, "the fixture tree has 5 files: {files:?}");
    let total: u64 = files.values().map(|(_, n)| n).sum();

    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    let (out, events) = send_json(&[s(&tree)], rx.addr);
    assert_status(&out, 0, "send --json of the tree");
    assert_clean_transfer(&events, &files, "send");
    let sum = summary(&events, "sender");
    assert_summary(sum, "send", (5, 0, 0), 0);
    assert_eq!(u(sum, "bytes"), total, "{sum}");

    let (status, revents) = rx.finish_events();
    assert_eq!(status.code(), Some(0), "recv --once exit status");
    assert_clean_transfer(&revents, &files, "recv");
    let rsum = summary(&revents, "receiver");
    assert_summary(rsum, "recv", (5, 0, 0), 0);
    assert_eq!(u(rsum, "bytes"), total, "{rsum}");
    for (path, (md5, _)) in &files {
        let rel = path.strip_prefix("tree/").expect("under tree/");
        assert_eq!(&md5_hex(d.out.join("tree").join(rel)), md5, "{path}");
    }
    // Progress and diagnostics stay on stderr; the human summary line too.
    assert!(
        text(&out.stderr).contains("sent 5 file(s)"),
        "the human summary goes to stderr:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn identical_file_gives_file_skipped_on_both_sides() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    fs::copy(&file, d.out.join("one.bin")).expect("copy to out");
    let size = fs::metadata(&file).expect("stat").len();

    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    let (out, events) = send_json(&[s(&file)], rx.addr);
    assert_status(&out, 0, "send of an identical file");
    let skipped = event_for(&events, "file_skipped", "one.bin");
    assert_eq!(u(skipped, "bytes"), size, "{skipped}");
    assert_eq!(st(skipped, "reason"), "identical", "{skipped}");
    assert!(of_kind(&events, "file_started").is_empty(), "nothing sent");
    assert!(of_kind(&events, "file_done").is_empty());
    assert_summary(summary(&events, "sender"), "send", (0, 1, 0), 0);

    let (status, revents) = rx.finish_events();
    assert_eq!(status.code(), Some(0), "recv --once exit status");
    let rskipped = event_for(&revents, "file_skipped", "one.bin");
    assert_eq!(st(rskipped, "reason"), "identical", "{rskipped}");
    st(rskipped, "peer");
    assert_summary(summary(&revents, "receiver"), "recv", (0, 1, 0), 0);
}

#[test]
fn existing_different_file_gives_refused_exists_and_exit_5() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    fs::write(d.out.join("one.bin"), b"other content\n").expect("write existing");

    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    let (out, events) = send_json(&[s(&file)], rx.addr);
    assert_status(&out, 5, "send over an existing different file");
    let failed = event_for(&events, "file_failed", "one.bin");
    assert_eq!(st(failed, "reason"), "refused_exists", "{failed}");
    assert!(!st(failed, "message").is_empty(), "{failed}");
    assert!(failed.get("peer").is_none(), "{failed}");
    assert!(of_kind(&events, "file_done").is_empty());
    assert_summary(summary(&events, "sender"), "send", (0, 0, 1), 5);

    let (status, revents) = rx.finish_events();
    assert_eq!(
        status.code(),
        Some(1),
        "recv --once: 1 when a file of the session was not verified"
    );
    let rfailed = event_for(&revents, "file_failed", "one.bin");
    assert_eq!(st(rfailed, "reason"), "refused_exists", "{rfailed}");
    st(rfailed, "peer");
    assert_summary(summary(&revents, "receiver"), "recv", (0, 0, 1), 1);
    assert_eq!(
        fs::read(d.out.join("one.bin")).expect("read"),
        b"other content\n"
    );
}

#[test]
fn corrupted_transfer_gives_integrity_failure_and_exit_4() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, 2 << 20, 7);

    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    // Byte 1,000,000 of the sender's stream lies inside the 2 MiB body.
    let proxy = Proxy::start(rx.addr, Mode::FlipByte(1_000_000));
    let (out, events) = send_json(&["--retry-for", "0", s(&file)], proxy.addr);
    assert_status(&out, 4, "send through a bit-flipping proxy");
    let failed = event_for(&events, "file_failed", "big.bin");
    assert_eq!(st(failed, "reason"), "integrity", "{failed}");
    assert!(
        st(failed, "message").contains(&md5_hex(&file)),
        "the message names the sender's MD5: {failed}"
    );
    assert!(of_kind(&events, "file_done").is_empty(), "{events:#?}");
    let started = event_for(&events, "file_started", "big.bin");
    assert_eq!(u(started, "bytes"), 2 << 20);
    assert_summary(summary(&events, "sender"), "send", (0, 0, 1), 4);

    let (status, revents) = rx.finish_events();
    assert_eq!(status.code(), Some(1), "recv --once after a mismatch");
    let rfailed = event_for(&revents, "file_failed", "big.bin");
    assert_eq!(st(rfailed, "reason"), "integrity", "{rfailed}");
    assert!(of_kind(&revents, "file_done").is_empty(), "{revents:#?}");
    assert_summary(summary(&revents, "receiver"), "recv", (0, 0, 1), 1);
    assert!(!d.out.join("big.bin").exists(), "nothing kept");
}

#[test]
fn one_corrupted_file_among_many_small_ones_fails_alone() {
    // The receiver hashes small files together, many per batch: a flipped
    // byte must fail exactly the file it lands in.
    let d = dirs();
    let dir = d.src.join("many");
    fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..40u64 {
        write_random(dir.join(format!("f{i:03}.bin")), 15_000 + i * 301, 100 + i);
    }
    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    // Offers go first (about 4 KB for 40 files), then the bodies: byte
    // 300,000 of the stream lies in a body half way through.
    let proxy = Proxy::start(rx.addr, Mode::FlipByte(300_000));
    let (out, events) = send_json(&["--retry-for", "0", s(&dir)], proxy.addr);
    assert_status(&out, 4, "send through a bit-flipping proxy");
    assert_eq!(of_kind(&events, "file_done").len(), 39, "{events:#?}");
    let failed = of_kind(&events, "file_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(st(failed[0], "reason"), "integrity", "{}", failed[0]);
    let bad = st(failed[0], "path").to_owned();

    let (status, revents) = rx.finish_events();
    assert_eq!(status.code(), Some(1), "recv --once after a mismatch");
    assert_eq!(of_kind(&revents, "file_done").len(), 39, "{revents:#?}");
    let rfailed = event_for(&revents, "file_failed", &bad);
    assert_eq!(st(rfailed, "reason"), "integrity", "{rfailed}");
    for i in 0..40u64 {
        let name = format!("many/f{i:03}.bin");
        let got = d.out.join(&name);
        if name == bad {
            assert!(!got.exists(), "the corrupted file is not kept");
        } else {
            assert_eq!(md5_hex(&got), md5_hex(d.src.join(&name)), "{name}");
        }
    }
}

#[test]
fn nobody_listening_gives_retry_events_then_summary_with_exit_3() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local_addr").port()
    };
    let (out, events) = send_json(&["--retry-for", "1", s(&file)], format!("127.0.0.1:{port}"));
    assert_status(&out, 3, "send to a closed port");
    let retries = of_kind(&events, "retry");
    assert!(
        (1..=4).contains(&retries.len()),
        "a few retries in one second: {events:#?}"
    );
    let r = retries[0];
    assert!(f(r, "gives_up_in_s") <= 1.0, "{r}");
    assert!(f(r, "delay_s") > 0.0, "{r}");
    assert!(!st(r, "message").is_empty(), "{r}");
    assert_summary(summary(&events, "sender"), "send", (0, 0, 1), 3);
    assert!(
        text(&out.stderr).contains(&format!("127.0.0.1:{port}")),
        "the error is on stderr:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn without_json_stdout_has_human_lines_and_no_events() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let rx = crate::common::Receiver::start(&d.out, &[]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 0, "plain send");
    // Human lines (e.g. `sent one.bin ...`), never JSON events.
    let stdout = text(&out.stdout);
    for line in stdout.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "plain send prints no JSON on stdout: {line:?}"
        );
    }
    // With --json, those human lines are replaced by events.
    let (out, events) = send_json(&[s(&file)], rx.addr);
    assert_status(&out, 0, "send --json of an identical file");
    assert_eq!(of_kind(&events, "file_skipped").len(), 1, "{events:#?}");
}

#[test]
fn json_sender_with_a_missing_source_still_prints_only_json() {
    let d = dirs();
    let missing = d.src.join("missing.bin");
    let rx = crate::common::Receiver::start(&d.out, &[]);
    let mut cmd = crate::common::send_cmd();
    cmd.args(["--json", s(&missing)]).arg(rx.addr.to_string());
    let out = run_with_timeout(cmd, crate::common::SEND_TIMEOUT);
    assert_status(&out, 1, "send of a missing path");
    // Whatever it prints on stdout must be JSON events.
    parse_events(&text(&out.stdout), "sender");
    assert!(
        text(&out.stderr).contains("missing.bin"),
        "stderr names the path:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn receiver_events_are_json_while_it_keeps_serving() {
    // Without --once: two sessions, each ends with its own summary.
    let d = dirs();
    let a = d.src.join("a.bin");
    let b = d.src.join("b.bin");
    write_random(&a, 10_000, 1);
    write_random(&b, 20_000, 2);
    let mut rx = JsonReceiver::start(&d.out, &[]);
    let (out1, _) = send_json(&[s(&a)], rx.addr);
    assert_status(&out1, 0, "first send");
    let (out2, _) = send_json(&[s(&b)], rx.addr);
    assert_status(&out2, 0, "second send");
    // Both summaries (bounded).
    for n in 0..2 {
        if rx
            .rx
            .wait_line(|l| l.contains("\"summary\""), EXIT_TIMEOUT)
            .is_none()
        {
            panic!(
                "two summaries expected, got {n}:\n{}\n--- stderr ---\n{}",
                rx.rx.lines().join("\n"),
                rx.rx.stderr()
            );
        }
    }
    let lines: Vec<String> = rx.rx.lines().into_iter().skip(1).collect();
    let events = parse_events(&lines.join("\n"), "receiver");
    let sums = of_kind(&events, "summary");
    assert_eq!(sums.len(), 2);
    for sum in sums {
        assert_summary(sum, "recv", (1, 0, 0), 0);
    }
    event_for(&events, "file_done", "a.bin");
    event_for(&events, "file_done", "b.bin");
    rx.kill();
}

#[test]
fn summary_exit_code_is_the_process_exit_status_when_the_connection_breaks_after_a_refusal() {
    // First file refused (exists with other content: 5), then the
    // connection is cut in the middle of the second file's body with no
    // retries left (1). README: "the most serious decides the status: 4
    // beats 5, which beats 1"; events.rs: the summary's exit_code is "the
    // exit status it ends with". Both must say 5.
    let d = dirs();
    let first = d.src.join("a-first.bin");
    let second = d.src.join("b-second.bin");
    write_random(&first, 1000, 11);
    write_random(&second, 2 << 20, 12);
    fs::write(d.out.join("a-first.bin"), b"other content\n").expect("write existing");

    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    // Byte 1,000,000 of the sender's stream is inside the second body.
    let proxy = Proxy::start(rx.addr, Mode::CutAfter(1_000_000));
    let (out, events) = send_json(&["--retry-for", "0", s(&first), s(&second)], proxy.addr);
    let failed = event_for(&events, "file_failed", "a-first.bin");
    assert_eq!(st(failed, "reason"), "refused_exists", "{failed}");
    let sum = summary(&events, "sender");
    assert_eq!(
        sum["exit_code"].as_i64(),
        Some(5),
        "summary: refused (5) beats a broken connection (1): {sum}"
    );
    assert_status(&out, 5, "the process ends with the summary's exit_code");
    let _ = rx.finish();
}

/// A run that fails as a whole says why in `--json` too: an `error` event
/// (exit code, reason word, message) before the summary, on both sides.
#[test]
fn a_failed_run_has_an_error_event_before_its_summary_on_both_sides() {
    // The sender: a receiver with a token it does not hold (exit 6).
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let rx = Receiver::start_as(Some("5c1d0f6e8a2b47d3a9e0c4b1f7d26e83"), &d.out, &[]);
    let (out, events) = send_json(&[s(&file)], rx.addr);
    assert_status(&out, 6, "send without the token");
    let errors = of_kind(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let e = errors[0];
    assert_eq!(st(e, "role"), "send");
    assert_eq!(u(e, "exit_code"), 6);
    assert_eq!(st(e, "reason"), "auth");
    assert!(st(e, "message").contains("token"), "{e}");
    let at = events.iter().position(|x| kind(x) == "error");
    let sum = events.iter().position(|x| kind(x) == "summary");
    assert!(at < sum, "error before summary: {events:#?}");

    // The receiver: a session cut in the middle of a body.
    let d = dirs();
    let mut rx = JsonReceiver::start(&d.out, &["--once"]);
    let mut raw = crate::common::raw::Raw::session(rx.addr);
    raw.start_body(1, b"cut.bin", &[7u8; 5000]);
    raw.write(&[7u8; 100]);
    drop(raw);
    let (status, events) = rx.finish_events();
    assert_eq!(status.code(), Some(1));
    let errors = of_kind(&events, "error");
    assert_eq!(errors.len(), 1, "{events:#?}");
    let e = errors[0];
    assert_eq!(st(e, "role"), "recv");
    assert_eq!(st(e, "reason"), "failure");
    assert!(st(e, "message").contains("cut.bin"), "{e}");
    assert!(!st(e, "peer").is_empty(), "{e}");
    let at = events.iter().position(|x| kind(x) == "error");
    let sum = events.iter().position(|x| kind(x) == "summary");
    assert!(at < sum, "error before summary: {events:#?}");
}
