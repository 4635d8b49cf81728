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

use crate::digest::{self, Md5Digest};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default size of the single-file case (1 GiB).
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Default number of small files.
pub const DEFAULT_FILES: usize = 2000;
/// Small files are 1..=SMALL_MAX bytes.
const SMALL_MAX: u64 = 64 * 1024;
/// Small files per generated subdirectory.
const FILES_PER_DIR: usize = 20;
/// Write buffer for generating the large file.
const GEN_CHUNK: usize = 4 << 20;
/// How long the receiver may take to print `listening on ADDR:PORT`.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the receiver may take to exit once the sender has.
const RECV_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child that has failed or is not needed any more gets to exit
/// before it is killed.
const SHORT_WAIT: Duration = Duration::from_secs(2);

/// What `ftx bench` measures.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Bytes of the single-file case; 0 skips it.
    pub size: u64,
    /// Number of small files (1..=64 KiB each); 0 skips the case.
    pub files: usize,
    /// Passed to `ftx send` as `-j N`, only if greater than 1.
    pub streams: usize,
    /// Parent of the temporary working directory; default
    /// [`std::env::temp_dir`].
    pub dir: Option<PathBuf>,
    /// Keep the generated data and the received copies.
    pub keep: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            size: DEFAULT_SIZE,
            files: DEFAULT_FILES,
            streams: 1,
            dir: None,
            keep: false,
        }
    }
}

/// CPU time and peak memory of one child process, from `wait4`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
}

/// One measured transfer.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Row label, e.g. "1 file 1.0 GiB" or "2000 small".
    pub name: String,
    /// Payload bytes transferred.
    pub bytes: u64,
    /// Files transferred.
    pub files: usize,
    /// Wall time of `ftx send`, from spawn to exit.
    pub wall: Duration,
    /// The sender's usage.
    pub send: Usage,
    /// The receiver's usage (its whole life, including startup).
    pub recv: Usage,
}

/// Everything [`run_with`] measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`, when available.
    pub cpu_model: Option<String>,
    /// In-process MD5 speed over the large file (MB/s), if there was one.
    pub md5_mb_s: Option<f64>,
    /// The cases, in the order they ran.
    pub cases: Vec<CaseResult>,
}

/// Parses a size: a number with an optional binary unit, e.g. "12345",
/// "512k", "100M", "1G", "1GiB", "1.5 GB". All units are powers of 1024;
/// "B" alone means bytes. Case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: expected a number, e.g. 100M"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {:?} (use K, M, G or T)",
                unit.trim()
            ))
        }
    };
    let mult = 1u64 << shift;
    let too_big = || format!("invalid size {s:?}: too large");
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
        return Err(format!("invalid size {s:?}: not a number"));
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_big())?
    };
    let mut bytes = int.checked_mul(mult).ok_or_else(too_big)?;
    if !frac.is_empty() {
        // Exact decimal fraction of the unit, rounded down to whole bytes.
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
        let extra = u64::try_from(f * u128::from(mult) / scale).map_err(|_| too_big())?;
        bytes = bytes.checked_add(extra).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

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
        let name = format!("1 file {}", human_bytes(cfg.size));
        status(&format!("measuring {name}"));
        let r = run_case(
            exe,
            &work,
            "big",
            &name,
            path,
            cfg.size,
            1,
            cfg.streams,
            |o| check_big(&o.join("big.bin"), cfg.size, d),
        )?;
        print_row(&r)?;
        report.cases.push(r);
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

impl Report {
    /// The machine description printed above the table.
    fn machine_line(&self, streams: usize) -> String {
        let model = self
            .cpu_model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!(", kernel {}", k.trim()))
            .unwrap_or_default();
        let md5 = match self.md5_mb_s {
            Some(v) => format!("{v:.1} MB/s (in-process MD5 of the large file)"),
            None => "n/a (no large file)".to_string(),
        };
        let streams = if streams > 1 {
            format!("\nstreams: {streams} (send -j {streams})")
        } else {
            String::new()
        };
        format!(
            "machine: {} CPUs{model}{kernel}\nmd5 reference: {md5}{streams}\n",
            self.cpus
        )
    }

    /// The whole report as text: machine lines, header and rows.
    pub fn to_table(&self, streams: usize) -> String {
        let mut s = self.machine_line(streams);
        s.push_str(&table_header());
        s.push('\n');
        for c in &self.cases {
            s.push_str(&table_row(c));
            s.push('\n');
        }
        s
    }
}

fn table_header() -> String {
    format!(
        "{:<18}{:<13}{:<7}{:<8}{:<8}{:<9}{:<12}{:<12}{:<14}{}",
        "case",
        "bytes",
        "files",
        "wall s",
        "MB/s",
        "files/s",
        "send cpu s",
        "recv cpu s",
        "send RSS MiB",
        "recv RSS MiB"
    )
}

fn table_row(c: &CaseResult) -> String {
    let secs = c.wall.as_secs_f64().max(1e-9);
    let cols = [
        format!("{} ", c.name),
        format!("{} ", c.bytes),
        format!("{} ", c.files),
        format!("{secs:.2} "),
        format!("{:.1} ", mb_per_s(c.bytes, c.wall)),
        format!("{:.1} ", c.files as f64 / secs),
        format!("{:.2} ", c.send.cpu.as_secs_f64()),
        format!("{:.2} ", c.recv.cpu.as_secs_f64()),
        format!("{:.1} ", c.send.max_rss_kib as f64 / 1024.0),
        format!("{:.1}", c.recv.max_rss_kib as f64 / 1024.0),
    ];
    let widths = [18, 13, 7, 8, 8, 9, 12, 12, 14, 0];
    cols.iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect()
}

fn print_row(c: &CaseResult) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", table_row(c)).context("stdout")?;
    out.flush().context("stdout")
}

fn status(msg: &str) {
    eprintln!("ftx bench: {msg}");
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// "1.0 GiB", "512.0 KiB", "100 B".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
}

// ---------------------------------------------------------------------------
// Working directory and data
// ---------------------------------------------------------------------------

/// The temporary working directory, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(parent: &Path, keep: bool) -> Result<WorkDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("ftx-bench-{}-{nanos}", std::process::id()));
        fs::create_dir(&path)
            .with_context(|| format!("cannot create work directory {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                status(&format!("cannot remove {}: {e}", self.path.display()));
            }
        }
    }
}

/// xorshift64*: fast, not cryptographic; enough for incompressible data.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            seed = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
        }
        XorShift(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// A value in `1..=max`.
    fn one_to(&mut self, max: u64) -> u64 {
        self.next() % max + 1
    }
}

fn write_random_file(path: &Path, size: u64, rng: &mut XorShift) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut f = File::create(path).with_context(ctx)?;
    let mut buf = vec![0u8; GEN_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(GEN_CHUNK);
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).with_context(ctx)?;
        left -= n as u64;
    }
    f.sync_all().with_context(ctx)
}

/// Writes `files` random files of 1..=64 KiB as `dir/dNNNN/fNNNNNN.bin`,
/// [`FILES_PER_DIR`] per subdirectory. Returns the total bytes.
fn write_small_tree(dir: &Path, files: usize, rng: &mut XorShift) -> Result<u64> {
    fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut buf = vec![0u8; SMALL_MAX as usize];
    let mut total = 0;
    let mut sub = PathBuf::new();
    for i in 0..files {
        if i % FILES_PER_DIR == 0 {
            sub = dir.join(format!("d{:04}", i / FILES_PER_DIR));
            fs::create_dir(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
        }
        let len = rng.one_to(SMALL_MAX);
        let b = &mut buf[..len as usize];
        rng.fill(b);
        let p = sub.join(format!("f{i:06}.bin"));
        fs::write(&p, b).with_context(|| format!("cannot write {}", p.display()))?;
        total += len;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// A child process that is reaped exactly once, with `wait4`. Until then its
/// pid cannot be reused, so killing it is safe; dropping an unreaped child
/// kills and reaps it.
struct Proc {
    pid: libc::pid_t,
    what: &'static str,
    reaped: bool,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a reaped child ended.
struct Ended {
    /// The raw wait status.
    status: libc::c_int,
    usage: Usage,
    stderr: String,
}

impl Ended {
    fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr piped. Each stdout
    /// line goes to `lines` (the pipe is drained until EOF even if nobody
    /// listens any more); stderr is collected.
    fn spawn(
        mut cmd: Command,
        what: &'static str,
        lines: Option<mpsc::Sender<String>>,
    ) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The kernel folds the pre-exec address space's peak RSS into the
        // child's ru_maxrss. With std's default posix_spawn (vfork) that is
        // this process's own peak, buffers included; with fork it is only
        // this process's current anonymous RSS, which `trim_heap` keeps
        // small. A pre_exec hook makes std fork.
        // SAFETY: the hook does nothing, so it is async-signal-safe.
        unsafe { cmd.pre_exec(|| Ok(())) };
        trim_heap();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {what} ({cmd:?})"))?;
        let pid = libc::pid_t::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
        // From here on the child is ours to reap; `child` (std) is dropped
        // without waiting, and std never reaps on its own.
        let mut p = Proc {
            pid,
            what,
            reaped: false,
            stdout: None,
            stderr: None,
        };
        if let Some(out) = child.stdout.take() {
            p.stdout = Some(thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if let Some(tx) = &lines {
                                let _ = tx.send(line.trim_end().to_string());
                            }
                        }
                    }
                }
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            p.stderr = Some(thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            }));
        }
        Ok(p)
    }

    /// Waits up to `limit` for the child to exit (killing it after that),
    /// then reaps it with `wait4` and joins its output threads.
    fn wait(mut self, limit: Duration) -> Result<Ended> {
        let timed_out = !wait_exited(self.pid, limit);
        if timed_out {
            // SAFETY: the child is not reaped yet, so `pid` is still ours.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let (status, usage) = self.reap()?;
        let stderr = self.join_output();
        if timed_out {
            bail!(
                "the {} did not finish within {} s and was killed{}",
                self.what,
                limit.as_secs(),
                stderr_note(&stderr)
            );
        }
        Ok(Ended {
            status,
            usage,
            stderr,
        })
    }

    /// `wait4(pid, 0)`: blocks until the child has exited, reaps it and
    /// returns its wait status and resource usage. Called at most once.
    fn reap(&mut self) -> Result<(libc::c_int, Usage)> {
        debug_assert!(!self.reaped);
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals; `pid` is our unreaped child.
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut ru) };
            if r == self.pid {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Whatever happened, do not try again (the pid may be gone).
            self.reaped = true;
            return Err(e).with_context(|| format!("wait4 on the {} failed", self.what));
        }
        self.reaped = true;
        let tv = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        let maxrss = u64::try_from(ru.ru_maxrss).unwrap_or(0);
        // Linux reports ru_maxrss in KiB, macOS in bytes.
        let max_rss_kib = if cfg!(target_os = "macos") {
            maxrss / 1024
        } else {
            maxrss
        };
        Ok((
            status,
            Usage {
                cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
                max_rss_kib,
            },
        ))
    }

    /// Joins the output threads (they end at EOF, i.e. once the child has
    /// exited) and returns the collected stderr.
    fn join_output(&mut self) -> String {
        if let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: the child is not reaped yet, so `pid` is still ours.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.reap();
            self.join_output();
        }
    }
}

/// Returns freed heap memory to the kernel, so that a forked child starts
/// with as little of this process's RSS as possible (see [`Proc::spawn`]).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits up to `limit` for child `pid` to exit, without reaping it: a thread
/// blocks in `waitid(WEXITED | WNOWAIT)`. True if it exited (or cannot be
/// waited for at all, which the following `wait4` will report).
fn wait_exited(pid: libc::pid_t, limit: Duration) -> bool {
    let (tx, rx) = mpsc::channel::<()>();
    let spawned = thread::Builder::new()
        .name(format!("wait {pid}"))
        .spawn(move || {
            loop {
                // SAFETY: siginfo_t is plain old data; zero is a valid value.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: valid pointer to a local; WNOWAIT leaves the child
                // unreaped, so this never races with `wait4` for the status.
                let r = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    )
                };
                if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            let _ = tx.send(());
        });
    if spawned.is_err() {
        // No thread: fall back to a blocking wait4 by the caller.
        return true;
    }
    !matches!(rx.recv_timeout(limit), Err(RecvTimeoutError::Timeout))
}

fn stderr_note(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        let tail: Vec<&str> = s.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("; its stderr:\n{}", tail.join("\n"))
    }
}

/// Hard limit for one send: generous, scaled with the payload.
fn send_limit(bytes: u64, files: usize) -> Duration {
    Duration::from_secs(120 + bytes / 2_000_000 + files as u64 / 20)
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
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<CaseResult> {
    let out = work.path.join(format!("out-{tag}"));
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot clean {}", out.display()))?;
    }
    fs::create_dir(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let (tx, rx) = mpsc::channel();
    let mut cmd = Command::new(exe);
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
    // the user's digest cache alone.
    cmd.args(["send", "-q", "--no-cache"]);
    if streams > 1 {
        cmd.arg("-j").arg(streams.to_string());
    }
    cmd.arg(src).arg(addr.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("12345b"), Ok(12345));
        assert_eq!(parse_size(" 7 "), Ok(7));
    }

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("100mb"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5k"), Ok(512));
        assert_eq!(parse_size(".5k"), Ok(512));
        assert_eq!(parse_size("1.k"), Ok(1024));
        assert_eq!(parse_size("0.1k"), Ok(102));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", " ", "G", "abc", "-1", "1X", "1 GiBs", "1.2.3", ".", "1e6", "1 k b",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").is_err());
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(512 * 1024), "512.0 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
    }

    #[test]
    fn random_fill_covers_odd_lengths() {
        let mut r = XorShift(1);
        let mut b = [0u8; 13];
        r.fill(&mut b);
        assert!(b.iter().any(|&x| x != 0));
        for _ in 0..1000 {
            let v = r.one_to(SMALL_MAX);
            assert!((1..=SMALL_MAX).contains(&v));
        }
    }

    #[test]
    fn row_lines_up_with_header() {
        let c = CaseResult {
            name: "1 file 1.0 GiB".into(),
            bytes: 1 << 30,
            files: 1,
            wall: Duration::from_millis(4310),
            send: Usage {
                cpu: Duration::from_millis(2410),
                max_rss_kib: 4300,
            },
            recv: Usage {
                cpu: Duration::from_millis(3020),
                max_rss_kib: 5734,
            },
        };
        let row = table_row(&c);
        let head = table_header();
        assert!(row.starts_with("1 file 1.0 GiB    1073741824   1      4.31    249.1   0.2"));
        assert_eq!(head.find("MB/s"), row.find("249.1"));
        assert_eq!(head.find("recv RSS MiB"), row.find("5.6"));
    }
}
