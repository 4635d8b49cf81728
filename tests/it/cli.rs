//! The command line as a user and a script see it: help, version, usage
//! errors, shell completions, the man page, and the exit-code contract of
//! README "Exit codes" pinned with real scenarios (0, 2, 3, 4, 5).

use std::fs::{self, File};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{
    assert_status, command_exists, dirs, fixtures, free_port, ftx_cmd, md5_hex, run_with_timeout,
    s, send, text, write_random, Mode, Proxy, Receiver,
};

/// Hard limit for commands that do not transfer anything.
const QUICK: Duration = Duration::from_secs(30);

/// Runs `ftx ARGS...` (bounded) and returns its output.
fn ftx(args: &[&str]) -> Output {
    let mut cmd = ftx_cmd();
    cmd.args(args);
    run_with_timeout(cmd, QUICK)
}

// ---------------------------------------------------------------------------
// Help, version, usage errors
// ---------------------------------------------------------------------------

#[test]
fn help_lists_the_subcommands_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = ftx(&[flag]);
        assert_status(&out, 0, &format!("ftx {flag}"));
        let help = text(&out.stdout);
        for word in ["send", "recv", "bench", "completions", "man", "--version"] {
            assert!(help.contains(word), "ftx {flag} mentions {word}:\n{help}");
        }
    }
}

#[test]
fn version_matches_the_crate_version() {
    for flag in ["--version", "-V"] {
        let out = ftx(&[flag]);
        assert_status(&out, 0, &format!("ftx {flag}"));
        assert_eq!(
            text(&out.stdout).trim(),
            format!("ftx {}", env!("CARGO_PKG_VERSION")),
            "ftx {flag}"
        );
    }
}

#[test]
fn send_help_mentions_its_main_options() {
    let out = ftx(&["send", "--help"]);
    assert_status(&out, 0, "ftx send --help");
    let help = text(&out.stdout);
    for word in [
        "HOST:PORT",
        "PATH",
        "--timeout",
        "--connect-timeout",
        "--retry-for",
        "--json",
        "--quiet",
        "--no-cache",
        "--token-file",
    ] {
        assert!(help.contains(word), "send --help mentions {word}:\n{help}");
    }
}

#[test]
fn recv_help_mentions_its_main_options() {
    let out = ftx(&["recv", "--help"]);
    assert_status(&out, 0, "ftx recv --help");
    let help = text(&out.stdout);
    for word in [
        "--port",
        "--bind",
        "--out",
        "--once",
        "--overwrite",
        "--timeout",
        "--max-sessions",
        "--json",
        "--quiet",
        "--token-file",
        "FTX_OUT",
    ] {
        assert!(help.contains(word), "recv --help mentions {word}:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2_with_an_explanation() {
    for args in [
        &["--no-such-flag"][..],
        &["send", "--no-such-flag", "a", "127.0.0.1:1"][..],
        &["recv", "--no-such-flag"][..],
        &["recv", "--port", "65536"][..],
        &["send", "--timeout", "0", "a", "127.0.0.1:1"][..],
        &["completions", "no-such-shell"][..],
        &["no-such-command"][..],
        &[][..],
    ] {
        let out = ftx(args);
        assert_status(&out, 2, &format!("ftx {}", args.join(" ")));
        assert!(
            !out.stderr.is_empty(),
            "ftx {}: the usage error is explained on stderr",
            args.join(" ")
        );
        assert!(
            out.stdout.is_empty(),
            "ftx {}: nothing on stdout:\n{}",
            args.join(" "),
            text(&out.stdout)
        );
    }
}

#[test]
fn send_with_only_one_argument_exits_2() {
    for one in ["127.0.0.1:1", "some-file"] {
        let out = ftx(&["send", one]);
        assert_status(&out, 2, &format!("ftx send {one}"));
        let err = text(&out.stderr);
        assert!(err.contains("Usage"), "usage shown:\n{err}");
    }
    let out = ftx(&["send"]);
    assert_status(&out, 2, "ftx send (no arguments)");
}

// ---------------------------------------------------------------------------
// Completions and man page
// ---------------------------------------------------------------------------

#[test]
fn completions_for_bash_zsh_fish_mention_ftx_and_recv() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ftx(&["completions", shell]);
        assert_status(&out, 0, &format!("ftx completions {shell}"));
        let script = text(&out.stdout);
        assert!(!script.trim().is_empty(), "{shell}: non-empty output");
        for word in ["ftx", "recv", "send"] {
            assert!(
                script.contains(word),
                "{shell} completion mentions {word}:\n{script}"
            );
        }
    }
}

#[test]
fn bash_completion_is_valid_bash() {
    if !command_exists("bash") {
        eprintln!("skipped: no bash");
        return;
    }
    let out = ftx(&["completions", "bash"]);
    assert_status(&out, 0, "ftx completions bash");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("ftx.bash");
    fs::write(&path, &out.stdout).expect("write completion");
    let mut cmd = Command::new("bash");
    cmd.arg("-n").arg(&path).stdin(Stdio::null());
    let check = run_with_timeout(cmd, QUICK);
    assert_status(&check, 0, "bash -n on the completion script");
}

#[test]
fn man_renders_roff() {
    let out = ftx(&["man"]);
    assert_status(&out, 0, "ftx man");
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".TH") || page.contains(".TH ftx"),
        "roff with a .TH header:\n{page}"
    );
    for word in ["send", "recv"] {
        assert!(page.contains(word), "the man page mentions {word}");
    }
}

#[test]
fn man_page_renders_with_man() {
    if !command_exists("man") {
        eprintln!("skipped: no man");
        return;
    }
    let out = ftx(&["man"]);
    assert_status(&out, 0, "ftx man");
    let tmp = tempfile::tempdir().expect("tempdir");
    let page = tmp.path().join("ftx.1");
    fs::write(&page, &out.stdout).expect("write man page");

    // `ftx man | man -l -`, with the page on stdin from a file.
    let mut cmd = Command::new("man");
    cmd.args(["-l", "-"])
        .stdin(File::open(&page).expect("open man page"))
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8");
    let rendered = run_with_timeout(cmd, QUICK);
    let shown = text(&rendered.stdout);
    if rendered.status.code() == Some(0) && shown.trim().is_empty() {
        // Some minimal images ship a `man` that renders nothing.
        eprintln!("skipped: man rendered nothing:\n{}", text(&rendered.stderr));
        return;
    }
    assert_status(&rendered, 0, "man -l - on ftx's man page");
    // man may embolden with backspaces when not writing to a terminal.
    let plain: String = {
        let mut v: Vec<char> = Vec::new();
        for c in shown.chars() {
            if c == '\u{8}' {
                v.pop();
            } else {
                v.push(c);
            }
        }
        v.into_iter().collect()
    };
    assert!(plain.contains("NAME"), "rendered page has NAME:\n{plain}");
    assert!(plain.contains("ftx"), "rendered page names ftx:\n{plain}");
    let warnings = text(&rendered.stderr);
    assert!(
        !warnings.contains("warning"),
        "man/groff warnings:\n{warnings}"
    );
}

// ---------------------------------------------------------------------------
// Exit codes: real scenarios
// ---------------------------------------------------------------------------

#[test]
fn exit_0_when_every_file_is_verified() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let mut rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 0, "clean send");
    assert_eq!(md5_hex(d.out.join("one.bin")), md5_hex(&file));
    assert!(
        rx.wait_line(|l| l.starts_with("received one.bin "), QUICK)
            .is_some(),
        "receiver reports the file: {:?}",
        rx.lines()
    );
}

#[test]
fn exit_2_for_a_bad_command_line_before_doing_anything() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let rx = Receiver::start(&d.out, &[]);
    let proxy = Proxy::start(rx.addr, Mode::Pass);
    let out = send(&["--retry-for", "many", s(&file)], proxy.addr);
    assert_status(&out, 2, "send with a bad --retry-for");
    assert_eq!(proxy.connections(), 0, "a usage error does not connect");
}

#[test]
fn exit_3_when_nobody_listens() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let addr = format!("127.0.0.1:{}", free_port());
    let out = send(&["--retry-for", "0", s(&file)], &addr);
    assert_status(&out, 3, "send to a closed port");
    let err = text(&out.stderr);
    assert!(err.contains(&addr), "stderr names {addr}:\n{err}");
}

#[test]
fn exit_4_when_a_byte_is_flipped_on_the_wire() {
    let d = dirs();
    let file = d.src.join("big.bin");
    write_random(&file, 2 << 20, 4);
    let rx = Receiver::start(&d.out, &[]);
    // Byte 1,000,000 of the sender's stream is inside the 2 MiB body (the
    // frames before it are a few hundred bytes).
    let proxy = Proxy::start(rx.addr, Mode::FlipByte(1_000_000));
    let out = send(&["--retry-for", "0", s(&file)], proxy.addr);
    assert_status(&out, 4, "send through a bit-flipping proxy");
    let err = text(&out.stderr);
    assert!(
        err.to_lowercase().contains("integrity"),
        "stderr says integrity:\n{err}"
    );
    assert!(
        !d.out.join("big.bin").exists(),
        "the corrupted file was not kept"
    );
}

#[test]
fn exit_5_when_a_different_file_exists_without_overwrite() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let existing = d.out.join("one.bin");
    fs::write(&existing, b"something else\n").expect("write existing");
    let rx = Receiver::start(&d.out, &[]);
    let out = send(&[s(&file)], rx.addr);
    assert_status(&out, 5, "send over an existing different file");
    assert_eq!(
        fs::read(&existing).expect("read existing"),
        b"something else\n",
        "the existing file is untouched"
    );
    let err = text(&out.stderr);
    assert!(err.contains("one.bin"), "stderr names the file:\n{err}");
}

// ---------------------------------------------------------------------------
// The receiver's address
// ---------------------------------------------------------------------------

#[test]
fn a_forgotten_port_is_a_usage_error_at_once() {
    let d = crate::common::dirs();
    let file = d.src.join("f");
    fs::write(&file, b"f").expect("write");
    let started = std::time::Instant::now();
    let out = ftx(&["send", file.to_str().expect("utf-8"), "127.0.0.1"]);
    assert_status(&out, 2, "ftx send f 127.0.0.1");
    let err = text(&out.stderr);
    assert!(
        err.contains("HOST:PORT") && err.contains("no port"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not after retries"
    );
}

#[test]
fn an_unknown_host_is_said_at_once_and_not_retried() {
    let d = crate::common::dirs();
    let file = d.src.join("f");
    fs::write(&file, b"f").expect("write");
    let out = ftx(&[
        "send",
        file.to_str().expect("utf-8"),
        "no-such-host.invalid:6000",
    ]);
    assert_status(&out, 3, "an unknown host");
    let err = text(&out.stderr);
    assert!(err.contains("cannot resolve the host"), "{err}");
    assert!(!err.contains("retrying"), "not retried:\n{err}");
}

#[test]
fn a_receiver_with_the_default_bind_takes_ipv6_and_ipv4() {
    let d = crate::common::dirs();
    let mut cmd = crate::common::ftx_cmd();
    cmd.args(["recv", "--port", "0", "--out"]).arg(&d.out);
    let rx = crate::common::Receiver::spawn(cmd, &d.out);
    let port = rx.addr.port();
    let file = d.src.join("both.bin");
    for (i, target) in [format!("[::1]:{port}"), format!("127.0.0.1:{port}")]
        .iter()
        .enumerate()
    {
        fs::write(&file, format!("content {i}")).expect("write");
        let out = crate::common::send(&["-q", file.to_str().expect("utf-8")], target);
        if i == 0 && text(&out.stderr).contains("Address family not supported") {
            return; // no IPv6 on this machine: nothing to check
        }
        assert_status(&out, 0, target);
        fs::remove_file(d.out.join("both.bin")).expect("remove the received file");
    }
}

#[test]
fn the_man_page_has_every_roles_options_exit_codes_and_examples() {
    let out = ftx(&["man"]);
    assert_status(&out, 0, "ftx man");
    let page = text(&out.stdout);
    for needle in [
        "FTX SEND",
        "FTX RECV",
        "token\\-file",
        "FTX_TOKEN",
        "allow\\-unsafe\\-links",
        "EXIT STATUS",
        "EXAMPLES",
        "ftx send \\-\\-hash xxh3",
    ] {
        assert!(
            page.contains(needle) || page.contains(&needle.replace("\\-", "-")),
            "the man page has {needle}"
        );
    }
}

// ---------------------------------------------------------------------------
// On a terminal
// ---------------------------------------------------------------------------

/// A directory of 4,000 small files sent in an 80-column terminal (a pty
/// from `script`): the screen gets one status line, not a line per file,
/// under 100 KB in all and nothing wider than 80 columns. The files arrive
/// whole all the same.
#[test]
fn issue15_a_directory_on_an_80_column_terminal_is_one_status_line() {
    assert!(
        command_exists("script"),
        "util-linux `script` is needed to give ftx a terminal"
    );
    let d = dirs();
    let tree = d.src.join("tree");
    for i in 0..4000u64 {
        let dir = tree.join(format!("d{:02}", i % 40));
        fs::create_dir_all(&dir).expect("mkdir");
        write_random(dir.join(format!("f{i:04}")), 100 + (i * 37) % 4000, i);
    }
    let rx = Receiver::start(&d.out, &["-q"]);
    let screen = d.src.join("screen");
    let line = format!(
        "stty cols 80 rows 24; exec {} send --no-cache {} {}",
        crate::common::ftx_bin().display(),
        tree.display(),
        rx.addr
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line]).arg(&screen);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert_status(&out, 0, "send under script");
    let raw = fs::read(&screen).expect("the terminal's output");
    let shown = String::from_utf8_lossy(&raw);
    assert!(raw.len() < 100_000, "{} bytes to the terminal", raw.len());
    // Lines as the terminal shows them: escape sequences dropped, split at
    // carriage returns and newlines; script's own header and footer aside.
    let mut plain = String::new();
    let mut chars = shown.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    let wide: Vec<&str> = plain
        .split(['\r', '\n'])
        .filter(|l| !l.starts_with("Script "))
        .filter(|l| l.chars().count() > 80)
        .collect();
    assert!(wide.is_empty(), "lines over 80 columns: {wide:#?}");
    assert!(
        plain.contains("/4000 files"),
        "the status line counts files:\n{plain}"
    );
    assert!(plain.contains("sent 4000 file(s)"), "the summary:\n{plain}");
    let arrived = walkdir::WalkDir::new(d.out.join("tree"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(arrived, 4000);
}

/// `--no-progress` keeps the per-file lines and the summary.
#[test]
fn issue15_no_progress_keeps_the_lines_and_the_summary() {
    let d = dirs();
    let file = d.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let rx = Receiver::start(&d.out, &["-q"]);
    let out = send(&["--no-progress", s(&file)], rx.addr);
    assert_status(&out, 0, "send --no-progress");
    assert!(
        text(&out.stdout).contains("sent one.bin"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("ftx: sent 1 file(s)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(md5_hex(d.out.join("one.bin")), md5_hex(&file));
}

/// `ftx man | head` ends quietly (no "Broken pipe" error), and the page
/// points to its own sections, not to ftx-send(1) pages that do not exist.
#[test]
fn the_man_page_stops_quietly_on_a_closed_pipe_and_names_no_missing_pages() {
    let mut cmd = ftx_cmd();
    cmd.arg("man");
    let out = run_with_timeout(cmd, QUICK);
    assert_status(&out, 0, "ftx man");
    let page = text(&out.stdout);
    assert!(
        !page.contains("ftx\\-send(1)"),
        "no ftx-send(1) page: {page}"
    );
    assert!(page.contains("see FTX SEND below"), "{page}");

    use std::io::Read;
    let mut child = ftx_cmd()
        .arg("man")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ftx man");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("the page starts");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert!(
        text(&out.stderr).is_empty(),
        "nothing on stderr: {}",
        text(&out.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}

/// The summary counts the links it made, not only the files.
#[test]
fn the_summary_counts_links() {
    let d = dirs();
    let rx = Receiver::start(&d.out, &[]);
    let tree = d.src.join("t");
    std::fs::create_dir(&tree).expect("mkdir");
    std::fs::write(tree.join("a"), b"data").expect("write");
    for n in ["b", "c", "d"] {
        std::fs::hard_link(tree.join("a"), tree.join(n)).expect("link");
    }
    std::os::unix::fs::symlink("a", tree.join("l")).expect("symlink");
    let out = send(&[s(&tree)], rx.addr);
    assert_status(&out, 0, "a tree of links");
    let err = text(&out.stderr);
    assert!(err.contains("sent 1 file(s) and 4 link(s)"), "{err}");
}
