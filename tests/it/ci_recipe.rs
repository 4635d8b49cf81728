//! The CI recipe of the README ("Using ftx in CI") works: tests/ci_recipe.sh
//! is that recipe, byte for byte, and here it runs with bash against the
//! ftx built for this test run, once with jq and once with the python3
//! fallback (whichever of them exist). A success delivers the files and
//! exits 0; a refused file makes it exit with the sender's code 5 and show
//! the failure.

use crate::common;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use crate::common::{
    assert_trees_arrived, collect_pipe, command_exists, copy_tree, fixtures, ftx_bin, show, text,
    watch_exit,
};
use serde_json::Value;
use tempfile::TempDir;

/// Hard limit for one run of the script (it waits at most ~10 s for the
/// receiver to start and ~10 s for it to exit).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// After the script exited, how long to wait for its output pipes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ci_recipe.sh")
}

/// The ways the script can read JSON here: `JQ=jq` if jq exists, and
/// `JQ=` (python3 fallback) if python3 exists.
fn json_tools() -> Vec<&'static str> {
    let mut tools = Vec::new();
    if command_exists("jq") {
        tools.push("jq");
    }
    if command_exists("python3") {
        tools.push("");
    }
    tools
}

fn tool_name(jq: &str) -> &str {
    if jq.is_empty() {
        "python3"
    } else {
        jq
    }
}

/// Runs `bash tests/ci_recipe.sh` in `cwd` with FTX (this build), SRC, OUT
/// and JQ set, in its own process group. Returns its output. If it runs
/// longer than [`SCRIPT_TIMEOUT`], the whole group is killed and this
/// panics. Anything the script left running in its group (a receiver) is
/// killed once it exits.
fn run_recipe(cwd: &Path, src: &Path, out: &Path, jq: &str) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .current_dir(cwd)
        .env("FTX", ftx_bin())
        .env("SRC", src)
        .env("OUT", out)
        .env("JQ", jq)
        // Keep the sender's digest cache out of the home directory.
        .env(
            "XDG_CACHE_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("ftx-test-cache"),
        )
        .env_remove("FTX_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pgid = child.id() as libc::pid_t;
    let exited = watch_exit(child.id());
    let stdout = collect_pipe(child.stdout.take());
    let stderr = collect_pipe(child.stderr.take());
    let finished = matches!(
        exited.recv_timeout(SCRIPT_TIMEOUT),
        Ok(()) | Err(RecvTimeoutError::Disconnected)
    );
    // The leader is not reaped yet, so the group id cannot have been reused.
    // SAFETY: plain syscall on our own process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let status = child.wait().expect("wait for bash");
    let stdout = stdout.recv_timeout(DRAIN_TIMEOUT).unwrap_or_default();
    let stderr = stderr.recv_timeout(DRAIN_TIMEOUT).unwrap_or_default();
    assert!(
        finished,
        "the recipe did not finish within {SCRIPT_TIMEOUT:?}; killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        text(&stdout),
        text(&stderr)
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The events of a JSON-lines file the script wrote.
fn events_in(path: &Path) -> Vec<Value> {
    let body = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    body.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l:?}: {e}", path.display()))
        })
        .collect()
}

fn summary_of(events: &[Value]) -> &Value {
    let sums: Vec<_> = events.iter().filter(|e| e["event"] == "summary").collect();
    assert_eq!(sums.len(), 1, "one summary: {events:#?}");
    sums[0]
}

/// A work dir (the script's cwd) with `src/` inside.
struct Work {
    _tmp: TempDir,
    dir: PathBuf,
    src: PathBuf,
}

fn work() -> Work {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("job");
    let src = tmp.path().join("src");
    fs::create_dir(&dir).expect("mkdir job");
    fs::create_dir(&src).expect("mkdir src");
    Work {
        _tmp: tmp,
        dir,
        src,
    }
}

#[test]
fn recipe_delivers_a_directory_and_exits_0() {
    let tools = json_tools();
    if tools.is_empty() {
        eprintln!("skipped: neither jq nor python3 on PATH");
        return;
    }
    for jq in tools {
        let w = work();
        let tree = w.src.join("tree");
        copy_tree(fixtures().join("tree"), &tree);
        // OUT does not exist yet: the recipe creates it.
        let out_dir = w.dir.join("incoming/files");
        let out = run_recipe(&w.dir, &tree, &out_dir, jq);
        let what = format!("recipe with {}: {}", tool_name(jq), show(&out));
        assert_eq!(out.status.code(), Some(0), "{what}");
        assert_trees_arrived(&tree, out_dir.join("tree"));

        let sent = events_in(&w.dir.join("send.jsonl"));
        let sum = summary_of(&sent);
        assert_eq!(sum["role"], "send", "{what}");
        assert_eq!(sum["files_ok"], 5, "{what}");
        assert_eq!(sum["files_failed"], 0, "{what}");
        assert_eq!(sum["exit_code"], 0, "{what}");
        let received = events_in(&w.dir.join("recv.jsonl"));
        assert_eq!(received[0]["event"], "listening", "{what}");
        let rsum = summary_of(&received);
        assert_eq!(rsum["role"], "recv", "{what}");
        assert_eq!(rsum["files_ok"], 5, "{what}");
        assert_eq!(rsum["exit_code"], 0, "{what}");

        // Its stdout is the sender's summary, as one JSON line.
        let stdout = text(&out.stdout);
        let shown: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is one JSON line ({e}): {what}"));
        assert_eq!(&shown, sum, "{what}");
        assert!(
            text(&out.stderr).contains("ci: send exit 0, recv exit 0"),
            "{what}"
        );
    }
}

#[test]
fn recipe_delivers_a_single_file() {
    let Some(jq) = json_tools().into_iter().next() else {
        eprintln!("skipped: neither jq nor python3 on PATH");
        return;
    };
    let w = work();
    let file = w.src.join("one.bin");
    fs::copy(fixtures().join("one.bin"), &file).expect("copy");
    let out_dir = w.dir.join("out");
    let out = run_recipe(&w.dir, &file, &out_dir, jq);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        common::md5_hex(out_dir.join("one.bin")),
        common::md5_hex(&file)
    );
}

#[test]
fn recipe_exits_5_and_shows_the_failure_when_a_different_file_exists() {
    let tools = json_tools();
    if tools.is_empty() {
        eprintln!("skipped: neither jq nor python3 on PATH");
        return;
    }
    for jq in tools {
        let w = work();
        let file = w.src.join("report.txt");
        fs::write(&file, b"new report\n").expect("write source");
        let out_dir = w.dir.join("out");
        fs::create_dir(&out_dir).expect("mkdir out");
        let existing = out_dir.join("report.txt");
        fs::write(&existing, b"old report\n").expect("write existing");

        let out = run_recipe(&w.dir, &file, &out_dir, jq);
        let what = format!("recipe with {}: {}", tool_name(jq), show(&out));
        assert_eq!(out.status.code(), Some(5), "the sender's code: {what}");
        assert_eq!(
            fs::read(&existing).expect("read existing"),
            b"old report\n",
            "untouched: {what}"
        );

        let sent = events_in(&w.dir.join("send.jsonl"));
        let sum = summary_of(&sent);
        assert_eq!(sum["files_failed"], 1, "{what}");
        assert_eq!(sum["exit_code"], 5, "{what}");
        let received = events_in(&w.dir.join("recv.jsonl"));
        let rsum = summary_of(&received);
        assert_eq!(rsum["files_failed"], 1, "{what}");
        assert_eq!(rsum["exit_code"], 1, "{what}");

        // The log shows both exit codes, the failed file from both sides
        // and the sender's summary, each event as one JSON line.
        let err = text(&out.stderr);
        assert!(err.contains("ci: send exit 5, recv exit 1"), "{what}");
        assert!(err.contains("ci: transfer failed"), "{what}");
        let shown: Vec<Value> = err
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}: {what}")))
            .collect();
        let failed: Vec<_> = shown
            .iter()
            .filter(|e| e["event"] == "file_failed")
            .collect();
        assert_eq!(failed.len(), 2, "one per side: {what}");
        for f in failed {
            assert_eq!(f["path"], "report.txt", "{what}");
            assert_eq!(f["reason"], "refused_exists", "{what}");
        }
        assert!(
            shown.iter().any(|e| e == sum),
            "the sender's summary is shown: {what}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {what}");
    }
}

#[test]
fn recipe_does_not_hang_when_the_sender_fails_before_connecting() {
    let Some(jq) = json_tools().into_iter().next() else {
        eprintln!("skipped: neither jq nor python3 on PATH");
        return;
    };
    let w = work();
    let missing = w.src.join("no-such-file");
    let out_dir = w.dir.join("out");
    // The --once receiver never gets a session: the recipe stops it after
    // its bounded wait and exits with the sender's code.
    let out = run_recipe(&w.dir, &missing, &out_dir, jq);
    let what = show(&out);
    assert_eq!(out.status.code(), Some(1), "{what}");
    assert!(text(&out.stderr).contains("no-such-file"), "{what}");
    assert!(text(&out.stderr).contains("ci: send exit 1"), "{what}");
}

/// Once the lead merged the README section, its recipe block must be this
/// script byte for byte.
#[test]
fn readme_recipe_block_is_identical_to_the_script() {
    let readme = fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    if !readme.contains("## Using ftx in CI") {
        eprintln!("README has no \"Using ftx in CI\" section yet: nothing to compare");
        return;
    }
    let script = fs::read_to_string(script()).expect("read tests/ci_recipe.sh");
    let blocks = fenced_blocks(&readme);
    assert!(
        blocks.contains(&script),
        "README \"Using ftx in CI\" must contain tests/ci_recipe.sh verbatim in a ```bash block"
    );
}

/// The contents of the ```bash fenced blocks of a Markdown text.
fn fenced_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match current.as_mut() {
            None if line.trim_end() == "```bash" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}
