//! The order that makes a received file durable before anyone is told of
//! it, read from the system calls of a real receiver (`strace -f`), pushed
//! to and pulling, plain and with a token: a file without a name
//! (`O_TMPFILE`) gets its name only after a sync that began once its data
//! was written, and its line is printed (its RESULT sent with it) only
//! after a sync that began once the name was made. A file created at its
//! name in a staged directory (`.NAME.ftx-dir`, see `src/recv/stage.rs`)
//! is under its final path once that directory is renamed into place:
//! the rename comes only after a sync that began once the file's data was
//! written, and the line after a sync that began once the rename was done.
//! The syncs run on a thread of their own while the commit thread writes
//! the next files: this is what keeps them in order.

use crate::common::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// 300 files of 1-2,000 bytes in three directories, named `u0000` to
/// `u0299`, and `u0300` beside them, after them in the walk (no name is
/// part of another); with the name of the directory each is in.
fn tree(src: &Path) -> Vec<(String, String)> {
    let mut names = Vec::new();
    for i in 0..301u64 {
        let under = if i < 300 {
            format!("d{}", i / 100)
        } else {
            String::new()
        };
        let dir = src.join("tree").join(&under);
        fs::create_dir_all(&dir).expect("mkdir");
        let name = format!("u{i:04}");
        write_random(dir.join(&name), 1 + (i * 7919) % 2000, i);
        let under = if under.is_empty() {
            "tree".into()
        } else {
            under
        };
        names.push((name, under));
    }
    names
}

/// `ftx ARGS` under `strace -f`, its calls written to `trace`.
fn traced(trace: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-ttt", "-T", "-qq", "-s", "65536", "-o"])
        .arg(trace)
        .args([
            "-e",
            "trace=openat,write,writev,linkat,renameat2,syncfs,fsync,fdatasync,close",
            "--",
        ])
        .arg(ftx_bin())
        .args(args)
        .stdin(Stdio::null())
        .env("XDG_CACHE_HOME", test_cache_dir())
        .env_remove("FTX_TOKEN");
    cmd
}

/// Why strace cannot trace here, if it cannot.
fn no_strace() -> Option<String> {
    if !command_exists("strace") {
        return Some("strace is not installed".into());
    }
    let ok = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| "strace cannot trace processes here (ptrace refused)".into())
}

/// One system call: when it began and ended (seconds), its name,
/// arguments and result.
#[derive(Debug, Clone)]
struct Call {
    start: f64,
    end: f64,
    name: String,
    args: String,
}

/// The calls of an `strace -f -ttt -T` log, in the order they began (a
/// call another thread interrupted is joined with its resumption).
fn calls(log: &str) -> Vec<Call> {
    let mut open: HashMap<String, (f64, String, String)> = HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        // `PID TIME CALL`, the PID padded with spaces to five places.
        let Some((pid, line)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            let Some((name, args)) = head.split_once('(') else {
                continue;
            };
            open.insert(pid.to_owned(), (ts, name.to_owned(), args.to_owned()));
            continue;
        }
        // `... ) = RET <DURATION>`
        let Some((body, dur)) = rest.rsplit_once(" <") else {
            continue;
        };
        let Ok(dur) = dur.trim_end_matches('>').parse::<f64>() else {
            continue;
        };
        let (start, name, args) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((start, name, head)) = open.remove(pid) else {
                continue;
            };
            let tail = tail.rsplit_once(" <").map_or(tail, |(t, _)| t);
            (start, name, format!("{head}{tail}"))
        } else {
            let Some((name, args)) = body.split_once('(') else {
                continue;
            };
            (ts, name.to_owned(), args.to_owned())
        };
        out.push(Call {
            start,
            end: start + dur,
            name,
            args,
        });
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

/// The first argument (a file descriptor) and the return value of a call.
fn fd_arg(c: &Call) -> Option<i32> {
    c.args.split(',').next()?.trim().parse().ok()
}

fn ret(c: &Call) -> Option<i32> {
    c.args.rsplit_once(" = ")?.1.split(' ').next()?.parse().ok()
}

/// The quoted strings among a call's arguments.
fn quoted(c: &Call) -> Vec<&str> {
    c.args.split('"').skip(1).step_by(2).collect()
}

/// Checks the order in a receiver's calls for every name in `names` (each
/// with the name of its directory); panics with what was out of order.
fn assert_durable_before_told(log: &str, names: &[(String, String)]) {
    let calls = calls(log);
    let dir_of: HashMap<&str, &str> = names
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .collect();
    let names: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    // Syncs: (start, end, the descriptor synced or None for the whole
    // file system).
    let syncs: Vec<(f64, f64, Option<i32>)> = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "syncfs" | "fsync" | "fdatasync"))
        .filter(|c| ret(c) == Some(0))
        .map(|c| {
            (
                c.start,
                c.end,
                (c.name != "syncfs").then(|| fd_arg(c)).flatten(),
            )
        })
        .collect();
    let synced_between = |after: f64, before: f64, fd: Option<i32>| {
        syncs
            .iter()
            .any(|&(s, e, what)| s >= after && e <= before && (what.is_none() || what == fd))
    };
    // Unnamed files by descriptor: when their data was last written.
    let mut unnamed: HashMap<i32, f64> = HashMap::new();
    // Files created at their names, open: descriptor -> name.
    let mut at_name: HashMap<i32, String> = HashMap::new();
    // Files created at their names: when their data was last written,
    // through which descriptor.
    let mut created: HashMap<String, (f64, i32)> = HashMap::new();
    // Directories renamed into place (from `.NAME.ftx-dir`): when the
    // rename began and ended, in which directory (descriptor).
    let mut placed: HashMap<String, (f64, f64, i32)> = HashMap::new();
    // Names given: when, and in which directory (descriptor).
    let mut linked: HashMap<String, (f64, i32)> = HashMap::new();
    let mut told: HashMap<String, f64> = HashMap::new();
    for c in &calls {
        match c.name.as_str() {
            "openat" if c.args.contains("O_TMPFILE") => {
                if let Some(fd) = ret(c) {
                    unnamed.insert(fd, c.end);
                }
            }
            "openat" if c.args.contains("O_CREAT") => {
                let name = quoted(c).first().map(|n| n.to_string());
                if let (Some(fd), Some(name)) = (ret(c), name) {
                    if names.contains(&name) {
                        created.insert(name.clone(), (c.end, fd));
                        at_name.insert(fd, name);
                    }
                }
            }
            "renameat2" => {
                // renameat2(DIRFD, ".NAME.ftx-dir", DIRFD, "NAME", RENAME_NOREPLACE) = 0
                let q = quoted(c);
                let dir = fd_arg(c);
                if let ([from, to], Some(dir), Some(0)) = (q.as_slice(), dir, ret(c)) {
                    if from.ends_with(".ftx-dir") && !to.ends_with(".ftx-dir") {
                        placed.insert((*to).to_owned(), (c.start, c.end, dir));
                    }
                }
            }
            "write" | "writev" => {
                let Some(fd) = fd_arg(c) else { continue };
                if let Some(written) = unnamed.get_mut(&fd) {
                    *written = c.end;
                } else if let Some(name) = at_name.get(&fd) {
                    if let Some((written, _)) = created.get_mut(name) {
                        *written = c.end;
                    }
                } else if fd == 1 {
                    for n in &names {
                        if c.args.contains(n.as_str()) {
                            told.entry(n.clone()).or_insert(c.start);
                        }
                    }
                }
            }
            "linkat" => {
                // linkat(FD, "", DIRFD, "NAME", AT_EMPTY_PATH) = 0
                let a: Vec<&str> = c.args.split(", ").collect();
                let (Some(fd), Some(dir), Some(name)) = (
                    a.first().and_then(|x| x.parse::<i32>().ok()),
                    a.get(2).and_then(|x| x.parse::<i32>().ok()),
                    a.get(3).map(|x| x.trim_matches('"').to_owned()),
                ) else {
                    continue;
                };
                // (The receiver's own probe of `O_TMPFILE` is linked and
                // removed at once: not a received file.)
                let Some(&written) = unnamed.get(&fd).filter(|_| names.contains(&name)) else {
                    continue;
                };
                assert!(
                    synced_between(written, c.start, Some(fd)),
                    "'{name}' was linked at {} with no sync between its last write ({written}) and the link",
                    c.start
                );
                linked.insert(name, (c.end, dir));
            }
            "close" => {
                if let Some(fd) = fd_arg(c) {
                    unnamed.remove(&fd);
                    at_name.remove(&fd);
                }
            }
            _ => {}
        }
    }
    // Both ways were taken: files created at their names in the staged
    // directories d0-d2, and u0300, offered in `tree` after a directory
    // was made inside it (which closes its stage), linked.
    assert!(
        created.len() >= 300 && linked.contains_key("u0300"),
        "{} files created at their names, u0300 linked: {}",
        created.len(),
        linked.contains_key("u0300")
    );
    for n in &names {
        let (at, dir) = match (linked.get(n), created.get(n)) {
            (Some(&l), _) => l,
            (None, Some(&(written, fd))) => {
                // Created at its name in a stage: in place with it.
                let d = dir_of[n.as_str()];
                let Some(&(start, end, parent)) = placed.get(d) else {
                    panic!("'{n}' was created at its name, and its directory '{d}' was never renamed into place");
                };
                assert!(
                    synced_between(written, start, Some(fd)),
                    "'{d}' was renamed into place at {start} with no sync between the last write of '{n}' ({written}) and the rename"
                );
                (end, parent)
            }
            (None, None) => {
                panic!("'{n}' was neither linked from an unnamed file nor created at its name")
            }
        };
        let Some(&line) = told.get(n) else {
            panic!("no line was printed for '{n}'");
        };
        assert!(
            synced_between(at, line, Some(dir)),
            "the line for '{n}' was printed at {line} with no sync between its name ({at}) and the line"
        );
    }
}

const TOKEN: &str = "9d2c7e41a0b35f86c1e4d7a92b06f3e5";

#[test]
fn a_received_file_is_named_after_its_data_is_durable_and_reported_after_its_name_is() {
    if let Some(why) = no_strace() {
        eprintln!("skipped: {why}");
        return;
    }
    for token in [None, Some(TOKEN)] {
        pushed(token);
        pulled(token);
    }
}

/// `ftx recv` traced, `ftx send` pushing to it.
fn pushed(token: Option<&str>) {
    let d = dirs();
    let names = tree(&d.src);
    let trace = d.t().join("recv.trace");
    let mut cmd = traced(
        &trace,
        &[
            "recv",
            "--once",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--out",
            s(&d.out),
        ],
    );
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    let mut rx = Receiver::spawn(cmd, &d.out);
    let out = send_as(token, &[s(&d.src.join("tree"))], rx.addr);
    assert_status(&out, 0, "send");
    assert!(
        rx.wait_exit(SEND_TIMEOUT).is_some_and(|st| st.success()),
        "the traced receiver did not end well: {}",
        rx.stderr()
    );
    let log = fs::read_to_string(&trace).expect("trace");
    assert_durable_before_told(&log, &names);
    assert_eq!(
        md5_hex(d.src.join("tree/d2/u0299")),
        md5_hex(d.out.join("tree/d2/u0299"))
    );
}

/// `ftx get` traced, pulling from `ftx serve`.
fn pulled(token: Option<&str>) {
    let d = dirs();
    let names = tree(&d.src);
    let mut srv = ftx_cmd();
    if let Some(t) = token {
        srv.env("FTX_TOKEN", t);
    }
    srv.args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .arg(d.src.join("tree"));
    let srv = Receiver::spawn(srv, &d.out);
    let trace = d.t().join("get.trace");
    let mut get = traced(
        &trace,
        &["get", &format!("{}/tree", srv.addr), "--out", s(&d.out)],
    );
    if let Some(t) = token {
        get.env("FTX_TOKEN", t);
    }
    let out = run_with_timeout(get, SEND_TIMEOUT);
    assert_status(&out, 0, "get");
    let log = fs::read_to_string(&trace).expect("trace");
    assert_durable_before_told(&log, &names);
    assert_eq!(
        md5_hex(d.src.join("tree/d0/u0000")),
        md5_hex(d.out.join("tree/d0/u0000"))
    );
}
