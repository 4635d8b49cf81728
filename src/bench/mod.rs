//! `ftx bench`: measures real transfers over loopback.
//!
//! [`run`] generates test data in a fresh directory (one large random file
//! and/or a tree of small random files), then for each case starts a real
//! receiver (`ftx recv --once`) and a real sender (`ftx send`) as child
//! processes of the `ftx` executable and reports wall time, throughput, and
//! each child's CPU time and peak RSS. Children are reaped with `wait4`,
//! which returns their resource usage. Every transfer is checked afterwards
//! (exit codes 0, output identical to the source), and a failed check is an
//! error.
//!
//! Unix only, like the rest of ftx's process handling.

mod data;
mod proc;
mod report;

use crate::config::BenchConfig;
use crate::digest::{self, Md5Digest};
use anyhow::{bail, Context, Result};
use data::*;
use proc::*;
use report::*;
pub use report::{CaseResult, Report, Usage};
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self};
use std::time::{Duration, Instant};

/// How long the receiver may take to print `listening on ADDR:PORT`.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the receiver may take to exit once the sender has.
const RECV_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child that has failed or is not needed any more gets to exit
/// before it is killed.
const SHORT_WAIT: Duration = Duration::from_secs(2);

/// Runs the benchmark with the current executable as `ftx` and prints the
/// table on stdout.
pub fn run(cfg: &BenchConfig) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the ftx executable")?;
    run_with(cfg, &exe).map(|_| ())
}

/// Runs the benchmark with `exe` as the `ftx` binary, prints the table on
/// stdout (status lines on stderr) and returns what was measured.
pub fn run_with(cfg: &BenchConfig, exe: &Path) -> Result<Report> {
    if cfg.size == 0 && cfg.files == 0 {
        bail!("nothing to measure: both the file size and the number of files are 0");
    }
    let parent = cfg.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir::create(&parent, cfg.keep)?;
    let src = work.path.join("src");
    fs::create_dir(&src).with_context(|| format!("cannot create {}", src.display()))?;
    let mut rng = XorShift::seeded();

    let mut big: Option<(PathBuf, Md5Digest)> = None;
    let mut md5_mb_s = None;
    if cfg.size > 0 {
        let path = src.join("big.bin");
        status(&format!(
            "generating {} in {}",
            human_bytes(cfg.size),
            path.display()
        ));
        write_random_file(&path, cfg.size, &mut rng)?;
        let start = Instant::now();
        let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let d = digest::hash_reader(f, cfg.size, |_| {})
            .with_context(|| format!("cannot hash {}", path.display()))?;
        md5_mb_s = Some(mb_per_s(cfg.size, start.elapsed()));
        big = Some((path, d));
    }
    let mut small: Option<(PathBuf, u64)> = None;
    if cfg.files > 0 {
        let dir = src.join("small");
        status(&format!(
            "generating {} small files in {}",
            cfg.files,
            dir.display()
        ));
        let bytes = write_small_tree(&dir, cfg.files, &mut rng)?;
        small = Some((dir, bytes));
    }
    // Flush the generated data so that its writeback does not compete with
    // the measured transfers.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };

    let report_head = Report {
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(),
        md5_mb_s,
        cases: Vec::new(),
    };
    let mut out = io::stdout().lock();
    write!(out, "{}", report_head.machine_line(cfg.streams)).context("stdout")?;
    writeln!(out, "{}", table_header()).context("stdout")?;
    out.flush().context("stdout")?;
    drop(out);

    let mut report = report_head;
    if let Some((path, d)) = &big {
        // A cold send (MD5, digest after the body), the same with XXH3,
        // again with its digest cached (one untimed send first puts it
        // there), through standard input, and encrypted (a token), cold
        // and cached.
        for how in [
            How::Cold,
            How::Xxh3,
            How::Cached,
            How::Stdin,
            How::Sealed,
            How::SealedCached,
        ] {
            let name = format!("1 file {} ({})", human_bytes(cfg.size), how.label());
            status(&format!("measuring {name}"));
            let case = |how| {
                run_case(
                    exe,
                    &work,
                    "big",
                    &name,
                    path,
                    cfg.size,
                    1,
                    cfg.streams,
                    how,
                    |o: &Path| check_big(&o.join("big.bin"), cfg.size, d),
                )
            };
            if matches!(how, How::Cached | How::SealedCached) {
                case(how)?;
            }
            let r = case(how)?;
            print_row(&r)?;
            report.cases.push(r);
        }
    }
    if let Some((dir, bytes)) = &small {
        let name = format!("{} small", cfg.files);
        status(&format!("measuring {name}"));
        let r = run_case(
            exe,
            &work,
            "small",
            &name,
            dir,
            *bytes,
            cfg.files,
            cfg.streams,
            How::Cold,
            |o| check_tree(dir, &o.join("small"), cfg.files),
        )?;
        print_row(&r)?;
        report.cases.push(r);
    }
    if cfg.keep {
        status(&format!("kept {}", work.path.display()));
    }
    Ok(report)
}

/// How the sender is run for a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// A first send: MD5, the digest computed while sending.
    Cold,
    /// A first send checked with XXH3-128.
    Xxh3,
    /// The digest is in the sender's cache.
    Cached,
    /// The file through standard input.
    Stdin,
    /// A first send, encrypted (a token on both sides).
    Sealed,
    /// Encrypted, the digest in the sender's cache.
    SealedCached,
}

impl How {
    fn label(self) -> &'static str {
        match self {
            How::Cold => "md5",
            How::Xxh3 => "xxh3",
            How::Cached => "cached",
            How::Stdin => "stdin",
            How::Sealed => "md5, token",
            How::SealedCached => "cached, token",
        }
    }
}

/// Runs one case: a fresh output directory, a receiver, a sender, checks.
#[allow(clippy::too_many_arguments)]
fn run_case(
    exe: &Path,
    work: &WorkDir,
    tag: &str,
    name: &str,
    src: &Path,
    bytes: u64,
    files: usize,
    streams: usize,
    how: How,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<CaseResult> {
    let out = work.path.join(format!("out-{tag}"));
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot clean {}", out.display()))?;
    }
    fs::create_dir(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // A token on both sides (the session encrypted) for the sealed cases;
    // none for the others, whatever the environment holds.
    let token = match how {
        How::Sealed | How::SealedCached => Some(crate::auth::fresh_token()?),
        _ => None,
    };
    let with_token = |cmd: &mut Command| {
        match &token {
            Some(t) => cmd.env(crate::auth::TOKEN_ENV, t),
            None => cmd.env_remove(crate::auth::TOKEN_ENV),
        };
    };
    let (tx, rx) = mpsc::channel();
    let mut cmd = Command::new(exe);
    with_token(&mut cmd);
    cmd.arg("recv")
        .args(["--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&out)
        .args(["--once", "-q"]);
    let receiver = Proc::spawn(cmd, "receiver", Some(tx))?;
    let addr = match wait_listening(&rx) {
        Ok(a) => a,
        Err(e) => {
            // Reap it (killing it if it is still there) to report its stderr.
            let note = match receiver.wait(SHORT_WAIT) {
                Ok(x) => stderr_note(&x.stderr),
                Err(e2) => format!("; {e2:#}"),
            };
            bail!("{name}: {e}{note}");
        }
    };

    let mut cmd = Command::new(exe);
    // --no-cache: measure a first transfer (every file hashed) and leave
    // the user's digest cache alone; the cached case has a cache of its own.
    cmd.args(["send", "-q"]);
    match how {
        How::Cold | How::Sealed => {
            cmd.arg("--no-cache");
        }
        How::Xxh3 => {
            cmd.args(["--no-cache", "--hash", "xxh3"]);
        }
        How::Cached | How::SealedCached => {
            cmd.env("XDG_CACHE_HOME", work.path.join("cache"));
        }
        How::Stdin => {
            // `exec ftx send --name NAME - ADDR < SRC`: the measured
            // process is ftx itself, reading standard input.
            cmd = Command::new("sh");
            cmd.arg("-c")
                .arg("exec \"$0\" send -q --name \"$1\" - \"$2\" < \"$3\"")
                .arg(exe)
                .arg(src.file_name().unwrap_or_default())
                .arg(addr.to_string())
                .arg(src);
        }
    }
    with_token(&mut cmd);
    if how != How::Stdin {
        if streams > 1 {
            cmd.arg("-j").arg(streams.to_string());
        }
        cmd.arg(src).arg(addr.to_string());
    }
    let start = Instant::now();
    let sender = Proc::spawn(cmd, "sender", None)?;
    let sent = sender.wait(send_limit(bytes, files));
    let wall = start.elapsed();
    let sent = sent.with_context(|| name.to_string())?;
    if !sent.success() {
        // A receiver that was never connected to would wait for ever: give
        // it a moment to finish, then kill it and report the sender first.
        let recv_note = match receiver.wait(SHORT_WAIT) {
            Ok(r) => format!(
                "receiver {}{}",
                r.describe(),
                stderr_note(&r.stderr).replace("its stderr", "receiver stderr")
            ),
            Err(e) => format!("{e:#}"),
        };
        bail!(
            "{name}: transfer failed: sender {}{}\n{recv_note}",
            sent.describe(),
            stderr_note(&sent.stderr).replace("its stderr", "sender stderr"),
        );
    }
    let received = receiver
        .wait(RECV_EXIT_TIMEOUT)
        .with_context(|| name.to_string())?;
    drop(rx);

    if !sent.success() || !received.success() {
        bail!(
            "{name}: transfer failed: sender {}, receiver {}{}{}",
            sent.describe(),
            received.describe(),
            stderr_note(&sent.stderr).replace("its stderr", "sender stderr"),
            stderr_note(&received.stderr).replace("its stderr", "receiver stderr"),
        );
    }
    check(&out).with_context(|| format!("{name}: received data differs from the source"))?;
    if !work.keep {
        fs::remove_dir_all(&out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    Ok(CaseResult {
        name: name.to_string(),
        bytes,
        files,
        wall,
        send: sent.usage,
        recv: received.usage,
    })
}

/// Reads receiver stdout lines until `listening on ADDR:PORT`.
fn wait_listening(rx: &mpsc::Receiver<String>) -> Result<SocketAddr> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening on ") {
                    return a
                        .trim()
                        .parse()
                        .with_context(|| format!("receiver printed a bad address: {line:?}"));
                }
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "the receiver did not print `listening on` within {} s",
                LISTEN_TIMEOUT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the receiver exited before printing `listening on`")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

fn check_big(out: &Path, size: u64, want: &Md5Digest) -> Result<()> {
    let f = File::open(out).with_context(|| format!("cannot open {}", out.display()))?;
    let len = f.metadata()?.len();
    if len != size {
        bail!("{} has {len} bytes, expected {size}", out.display());
    }
    let got = digest::hash_reader(f, size, |_| {})
        .with_context(|| format!("cannot hash {}", out.display()))?;
    if &got != want {
        bail!(
            "{}: md5 {} differs from the source's {}",
            out.display(),
            digest::hex(&got),
            digest::hex(want)
        );
    }
    Ok(())
}

/// Every file under `src` has a byte-identical copy at the same place under
/// `out`, and `out` holds exactly `files` files (nothing extra, no partials).
fn check_tree(src: &Path, out: &Path, files: usize) -> Result<()> {
    let mut seen = 0usize;
    for e in walkdir::WalkDir::new(src) {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(src)?;
        let copy = out.join(rel);
        let a =
            fs::read(e.path()).with_context(|| format!("cannot read {}", e.path().display()))?;
        let b = fs::read(&copy).with_context(|| format!("cannot read {}", copy.display()))?;
        if a != b {
            bail!("{} differs from {}", copy.display(), e.path().display());
        }
        seen += 1;
    }
    if seen != files {
        bail!("the source holds {seen} files, expected {files}");
    }
    let mut got = 0usize;
    for e in walkdir::WalkDir::new(out) {
        if !e?.file_type().is_dir() {
            got += 1;
        }
    }
    if got != files {
        bail!("{} holds {got} entries, expected {files}", out.display());
    }
    Ok(())
}
