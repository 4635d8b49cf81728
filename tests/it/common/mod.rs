//! Shared harness for ftx's integration tests (`mod common;` in a test file).
//!
//! What is here:
//! - locating the built binary and the committed `fixtures/`;
//! - [`Receiver`]: a running `ftx recv` on 127.0.0.1 with an ephemeral port,
//!   its stdout lines and stderr captured, killed on drop;
//! - [`send`] / [`run_with_timeout`]: run `ftx send` (or any command) with a
//!   hard timeout;
//! - [`Proxy`]: a TCP proxy that can flip one byte or cut the connection
//!   after N bytes of the sender's stream;
//! - [`Bg`]: any child process run in the background, output collected,
//!   exit watched, killed on drop;
//! - [`Dirs`]: a temp dir with `src/` and `out/`; small output helpers
//!   ([`text`], [`show`], [`assert_status`]) and [`names_in`], [`free_port`];
//! - file helpers: MD5, deterministic random files, tree copy / comparison,
//!   mtimes, snapshots of a directory;
//! - [`raw`]: a raw-bytes protocol client for hostile-peer tests.
//!
//! Everything is bounded: waits use timeouts on channels, never sleeps as
//! synchronisation, and child processes are killed when their handle drops.
//! Process exit is observed by a thread blocked in `waitid(WNOWAIT)`, which
//! leaves the child unreaped, so `Child::kill` stays safe (no pid reuse).
//! Unix only.

pub mod raw;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::fs::{self, File, FileTimes};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use tempfile::TempDir;

/// How long [`Receiver::start`] waits for `listening on ADDR:PORT`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Hard limit for one [`send`].
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// After a process exited, how long to wait for its output pipes to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Locations and commands
// ---------------------------------------------------------------------------

/// Path of the `ftx` binary built by cargo for this test run.
pub fn ftx_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ftx"))
}

/// The committed test data directory, `<crate>/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `ftx` with stdin closed and no arguments yet.
/// True when the tests run as root (CI does).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// [`ftx_cmd`] run as the unprivileged user `nobody` (uid 65534, through
/// `setpriv`) when the tests run as root, so that permission rules are
/// tested there too; as the current user otherwise. What it reads or
/// writes must be reachable by `nobody`; it gets `--no-cache`-free
/// settings of its own (the digest cache under the system's temp dir).
pub fn ftx_cmd_unprivileged() -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(ftx_bin());
        c
    } else {
        Command::new(ftx_bin())
    };
    cmd.stdin(Stdio::null());
    cmd.env(
        "XDG_CACHE_HOME",
        std::env::temp_dir().join("ftx-test-cache-nobody"),
    );
    cmd.env_remove("FTX_TOKEN");
    cmd
}

/// A receiver into `d.out` run through [`ftx_cmd_unprivileged`]: as
/// `nobody` when the tests run as root (OUT is given to it and the test's
/// directory opened to it), as the current user otherwise.
pub fn unprivileged_receiver(d: &Dirs) -> Receiver {
    if is_root() {
        fs::set_permissions(d.t(), fs::Permissions::from_mode(0o755)).expect("chmod");
        rustix::fs::chown(
            &d.out,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .expect("chown OUT to nobody");
    }
    let mut cmd = ftx_cmd_unprivileged();
    cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
        .arg(&d.out);
    Receiver::spawn(cmd, &d.out)
}

/// `XDG_CACHE_HOME` of the `ftx` processes the tests start.
pub fn test_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ftx-test-cache")
}

pub fn ftx_cmd() -> Command {
    let mut cmd = Command::new(ftx_bin());
    cmd.stdin(Stdio::null());
    // Keep the digest cache out of the developer's home directory.
    cmd.env("XDG_CACHE_HOME", test_cache_dir());
    cmd.env_remove("FTX_TOKEN");
    cmd
}

/// `ftx send` with stdin closed; add options, paths and `HOST:PORT` yourself.
/// Run it with [`run_with_timeout`] to keep the test bounded.
pub fn send_cmd() -> Command {
    let mut cmd = ftx_cmd();
    cmd.arg("send");
    cmd
}

/// Runs `ftx send ARGS... ADDR` and returns its output (status, stdout,
/// stderr). Panics if it runs longer than [`SEND_TIMEOUT`] (it is killed).
pub fn send(args: &[&str], addr: impl Display) -> Output {
    send_as(None, args, addr)
}

/// [`send`] with `FTX_TOKEN` set to `token`, if given.
pub fn send_as(token: Option<&str>, args: &[&str], addr: impl Display) -> Output {
    let mut cmd = send_cmd();
    if let Some(t) = token {
        cmd.env("FTX_TOKEN", t);
    }
    cmd.args(args).arg(addr.to_string());
    run_with_timeout(cmd, SEND_TIMEOUT)
}

/// Runs `cmd` to completion with stdout/stderr captured. If it has not
/// exited after `timeout`, it is killed and this panics, showing the output
/// captured so far.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    Bg::start(cmd).finish(timeout)
}

/// Starts a thread that blocks until the child process `pid` has exited and
/// then sends `()`. It uses `waitid(..., WEXITED | WNOWAIT)`, so the child is
/// left as a zombie for `Child::wait`/`try_wait` to reap: until then its pid
/// cannot be reused and `Child::kill` is safe. If `waitid` fails (e.g. the
/// child was already reaped), the sender is dropped and the receiver reports
/// `Disconnected`.
pub fn watch_exit(pid: u32) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("exit-watch-{pid}"))
        .spawn(move || {
            // Bounded retry on EINTR only.
            for _ in 0..1000 {
                // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: `info` is a valid, writable siginfo_t.
                let rc = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    )
                };
                if rc == 0 {
                    let _ = tx.send(());
                    return;
                }
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
        })
        .expect("spawn exit watcher thread");
    rx
}

/// Reads a pipe to its end on a thread; the bytes arrive on the channel.
pub fn collect_pipe<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Output and directory helpers
// ---------------------------------------------------------------------------

/// Bytes as (lossy) UTF-8 text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as `&str` (temp paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Status, stdout and stderr of `out`, for failure messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Asserts exit code `code`; on failure shows the whole output.
pub fn assert_status(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: unexpected exit status\n{}",
        show(out)
    );
}

/// A temp dir `$T` holding `src/` (what is sent) and `out/` (the
/// receiver's --out). The directory is removed on drop.
pub struct Dirs {
    pub tmp: TempDir,
    pub src: PathBuf,
    pub out: PathBuf,
}

impl Dirs {
    /// `$T`.
    pub fn t(&self) -> &Path {
        self.tmp.path()
    }
}

/// A fresh [`Dirs`] with `src/` and `out/` created.
pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    fs::create_dir(&src).expect("mkdir src");
    fs::create_dir(&out).expect("mkdir out");
    Dirs { tmp, src, out }
}

/// Names directly inside `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// True if an executable file `name` is in a directory of `$PATH`.
pub fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(name);
            fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

// ---------------------------------------------------------------------------
// A child process watched in the background
// ---------------------------------------------------------------------------

/// A child with stdout/stderr collected on threads and its exit observed by
/// a thread blocked in `waitid(WNOWAIT)` (it stays unreaped, so signalling
/// it is safe from pid reuse). Killed on drop.
pub struct Bg {
    child: Child,
    what: String,
    exited: mpsc::Receiver<()>,
    done: bool,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

impl Bg {
    /// Spawns `cmd` with stdin closed and stdout/stderr piped.
    pub fn spawn(mut cmd: Command) -> Bg {
        cmd.stdin(Stdio::null());
        Bg::start(cmd)
    }

    /// Spawns `cmd` with stdout/stderr piped (stdin as the caller set it).
    fn start(mut cmd: Command) -> Bg {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let exited = watch_exit(child.id());
        let stdout = collect_pipe(child.stdout.take());
        let stderr = collect_pipe(child.stderr.take());
        Bg {
            child,
            what,
            exited,
            done: false,
            stdout,
            stderr,
        }
    }

    /// The command, as `{cmd:?}` printed it.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// True once the process has exited (it may still be unreaped).
    pub fn has_exited(&mut self) -> bool {
        if !self.done {
            self.done = !matches!(self.exited.try_recv(), Err(TryRecvError::Empty));
        }
        self.done
    }

    /// Sends `sig` if the process has not been reaped (safe: its pid is
    /// still ours).
    pub fn signal(&mut self, sig: i32) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain syscall on our own unreaped child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits at most `timeout` for the exit and returns status and output.
    /// If it does not exit, it is killed and this panics.
    pub fn finish(&mut self, timeout: Duration) -> Output {
        let finished = self.done
            || !matches!(
                self.exited.recv_timeout(timeout),
                Err(RecvTimeoutError::Timeout)
            );
        if !finished {
            let _ = self.child.kill();
        }
        self.done = true;
        let status = self.child.wait().expect("wait for child");
        let out = Output {
            status,
            stdout: self.stdout.recv_timeout(DRAIN_TIMEOUT).unwrap_or_default(),
            stderr: self.stderr.recv_timeout(DRAIN_TIMEOUT).unwrap_or_default(),
        };
        assert!(
            finished,
            "{} did not exit within {timeout:?}; killed\n{}",
            self.what,
            show(&out)
        );
        out
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------

/// A running `ftx recv` (or any process printing `listening on ADDR:PORT`).
/// Stdout is read line by line on a thread; stderr is accumulated on another.
/// Dropping it kills the process.
pub struct Receiver {
    child: Child,
    /// The address parsed from `listening on ADDR:PORT`.
    pub addr: SocketAddr,
    /// The `--out` directory.
    pub out: PathBuf,
    lines_rx: mpsc::Receiver<String>,
    /// Every stdout line received so far, in order.
    lines: Vec<String>,
    /// `claimed[i]`: `lines[i]` was already returned by `wait_line`.
    claimed: Vec<bool>,
    stderr: Arc<Mutex<Vec<u8>>>,
    exited: mpsc::Receiver<()>,
    /// One message per reader thread (stdout, stderr) when it hits EOF.
    readers_done: mpsc::Receiver<()>,
    readers_left: usize,
}

impl Receiver {
    /// Spawns `ftx recv --port 0 --bind 127.0.0.1 --out OUT EXTRA...` and
    /// waits (at most [`START_TIMEOUT`]) for `listening on ADDR:PORT`.
    /// Panics, with the process's output, if that line does not come.
    pub fn start(out: &Path, extra_args: &[&str]) -> Receiver {
        Receiver::start_as(None, out, extra_args)
    }

    /// [`Receiver::start`] with `FTX_TOKEN` set to `token`, if given (the
    /// sessions are then encrypted).
    pub fn start_as(token: Option<&str>, out: &Path, extra_args: &[&str]) -> Receiver {
        let mut cmd = ftx_cmd();
        if let Some(t) = token {
            cmd.env("FTX_TOKEN", t);
        }
        cmd.args(["recv", "--port", "0", "--bind", "127.0.0.1", "--out"])
            .arg(out)
            .args(extra_args);
        Receiver::spawn(cmd, out)
    }

    /// Like [`Receiver::start`] with a caller-built command (e.g. extra
    /// environment variables). Stdin is closed; stdout and stderr are pipes.
    pub fn spawn(mut cmd: Command, out: &Path) -> Receiver {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let exited = watch_exit(child.id());
        let (done_tx, readers_done) = mpsc::channel();

        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let done = done_tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while matches!(line.last(), Some(b'\n' | b'\r')) {
                            line.pop();
                        }
                        let text = String::from_utf8_lossy(&line).into_owned();
                        if lines_tx.send(text).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = done.send(());
        });

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => lock(&sink).extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(());
        });

        let mut rx = Receiver {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            out: out.to_path_buf(),
            lines_rx,
            lines: Vec::new(),
            claimed: Vec::new(),
            stderr,
            exited,
            readers_done,
            readers_left: 2,
        };
        // `listening on ADDR:PORT`, or with --json the `listening` event.
        let listening =
            |l: &str| l.starts_with("listening on ") || l.contains(r#""event":"listening""#);
        let Some(line) = rx.wait_line(listening, START_TIMEOUT) else {
            rx.kill();
            panic!(
                "receiver did not print `listening on ADDR:PORT` within {START_TIMEOUT:?}\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                rx.lines().join("\n"),
                rx.stderr()
            );
        };
        let text = match line.strip_prefix("listening on ") {
            Some(t) => t.trim().to_owned(),
            None => serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["address"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("no address in {line:?}")),
        };
        rx.addr = text
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse address in {line:?}: {e}"));
        rx
    }

    /// Process id of the receiver.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the first stdout line (received so far or arriving within
    /// `timeout`) that satisfies `pred` and was not returned by an earlier
    /// call. Lines that do not match stay available for later calls, so the
    /// order of calls need not match the order of lines. `None` on timeout
    /// or when stdout closed without such a line.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        self.drain_lines();
        for i in 0..self.lines.len() {
            if !self.claimed[i] && pred(&self.lines[i]) {
                self.claimed[i] = true;
                return Some(self.lines[i].clone());
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Each iteration consumes one line or returns.
            match self.lines_rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.lines.push(line.clone());
                    self.claimed.push(hit);
                    if hit {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// All stdout lines received so far (including claimed ones), in order.
    /// Does not wait.
    pub fn lines(&mut self) -> Vec<String> {
        self.drain_lines();
        self.lines.clone()
    }

    fn drain_lines(&mut self) {
        while let Ok(line) = self.lines_rx.try_recv() {
            self.lines.push(line);
            self.claimed.push(false);
        }
    }

    /// Everything the process wrote to stderr so far (lossy UTF-8). After
    /// [`Receiver::wait_exit`] returned `Some`, this is complete.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends signal `sig` (e.g. `libc::SIGINT`) if the process is still
    /// running. Safe against pid reuse: an unreaped child keeps its pid.
    pub fn signal(&mut self, sig: i32) {
        if self.is_running() {
            // SAFETY: plain syscall; the pid belongs to our unreaped child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// Sends SIGINT (Ctrl-C); ftx should exit with 130.
    pub fn interrupt(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// Kills the process (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain_readers();
    }

    /// Waits at most `timeout` for the process to exit by itself. On exit,
    /// also waits (bounded) for stdout/stderr to be fully read, so `lines()`
    /// and `stderr()` are complete. `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.drain_readers();
            return Some(status);
        }
        // Ok: exited (zombie, not reaped yet). Disconnected: the watcher
        // could not wait (already reaped); try_wait tells the truth.
        match self.exited.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => return None,
        }
        let status = self.child.try_wait().ok().flatten()?;
        self.drain_readers();
        Some(status)
    }

    /// Waits (bounded) for the reader threads to reach EOF.
    fn drain_readers(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.readers_left > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.readers_done.recv_timeout(left) {
                Ok(()) => self.readers_left -= 1,
                Err(_) => break,
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------

/// What the [`Proxy`] does to the client→server byte stream of a connection.
/// Byte positions are 0-based and count every byte of that direction of one
/// connection (frames and raw body bytes alike). Server→client passes
/// unchanged, except with [`Mode::Capture`] (kept too) and
/// [`Mode::RecordsBack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything unchanged.
    Pass,
    /// XOR 0x01 into byte number N (0-based); everything else unchanged.
    FlipByte(u64),
    /// Forward exactly the first N bytes, then shut down both sockets.
    CutAfter(u64),
    /// The same for the server→client direction (a sender that listens
    /// and a receiver that calls it: the body flows back).
    CutBackAfter(u64),
    /// Forward at most N bytes per second from client to server (a slow
    /// link for a push).
    Slow(u64),
    /// Forward everything and keep a copy of both directions
    /// ([`Proxy::captured`]).
    Capture,
    /// A sealed session: pass the handshake (HELLO, NOISE), then do this
    /// to the encrypted records that follow (counted from 0).
    Records(RecordOp),
    /// The same to the receiver's records (after WELCOME and NOISE);
    /// client→server passes unchanged.
    RecordsBack(RecordOp),
}

/// What [`Mode::Records`] does to the sender's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOp {
    /// XOR 0x01 into a byte in the middle of record N.
    Flip(u64),
    /// Leave record N out.
    Drop(u64),
    /// Send record N twice.
    Replay(u64),
    /// Send record N+1 before record N.
    Swap(u64),
}

/// A TCP proxy listening on 127.0.0.1 (ephemeral port) that forwards each
/// connection to `target`, applying a [`Mode`]. It serves connections until
/// dropped; dropping it also shuts down all connections it carried.
pub struct Proxy {
    /// Where clients (the sender) connect.
    pub addr: SocketAddr,
    /// Where connections are forwarded (the receiver).
    pub target: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
    /// Sockets of live connections, to shut down on Drop.
    conns: Arc<Mutex<Vec<Weak<TcpStream>>>>,
    accept_thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyStats {
    connections: AtomicUsize,
    client_to_server: AtomicU64,
    server_to_client: AtomicU64,
    /// [`Mode::Capture`]: client→server and server→client bytes.
    captured: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl Proxy {
    /// Starts the proxy. `mode` applies to every connection accepted until
    /// [`Proxy::set_mode`] changes it.
    pub fn start(target: SocketAddr, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local_addr");
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let conns = Arc::new(Mutex::new(Vec::new()));

        let accept_thread = {
            let (mode, stop, stats, conns) = (
                Arc::clone(&mode),
                Arc::clone(&stop),
                Arc::clone(&stats),
                Arc::clone(&conns),
            );
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || {
                    let mut errors = 0;
                    // Blocking accept; Drop wakes it with a connection to
                    // itself after setting `stop`.
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let client = match conn {
                            Ok(c) => c,
                            Err(_) => {
                                errors += 1;
                                if errors > 100 {
                                    break;
                                }
                                continue;
                            }
                        };
                        stats.connections.fetch_add(1, Ordering::SeqCst);
                        let mode = *lock(&mode);
                        let (stats, conns) = (Arc::clone(&stats), Arc::clone(&conns));
                        thread::spawn(move || serve(client, target, mode, &stats, &conns));
                    }
                })
                .expect("spawn proxy accept thread")
        };

        Proxy {
            addr,
            target,
            mode,
            stop,
            stats,
            conns,
            accept_thread: Some(accept_thread),
        }
    }

    /// Changes the mode for connections accepted from now on (e.g. cut the
    /// first connection, pass the retry).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.mode) = mode;
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Total client→server bytes forwarded, over all connections (after a
    /// cut, only the bytes actually forwarded). Useful to show a resume sent
    /// less than the whole file.
    pub fn bytes_client_to_server(&self) -> u64 {
        self.stats.client_to_server.load(Ordering::SeqCst)
    }

    /// Total server→client bytes forwarded, over all connections.
    pub fn bytes_server_to_client(&self) -> u64 {
        self.stats.server_to_client.load(Ordering::SeqCst)
    }

    /// What [`Mode::Capture`] kept: (client→server, server→client), over
    /// all connections.
    pub fn captured(&self) -> (Vec<u8>, Vec<u8>) {
        lock(&self.stats.captured).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept. Only join if the wake-up got through, so
        // Drop can never hang.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
        if let Some(handle) = self.accept_thread.take() {
            if woke {
                let _ = handle.join();
            }
        }
        for conn in lock(&self.conns).iter().filter_map(Weak::upgrade) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one proxied connection: connects to `target`, pumps server→client
/// on a new thread and client→server (with `mode`) on this one. Each socket
/// is one `Arc<TcpStream>` shared by both pumps (and weakly by the proxy for
/// Drop), so it is really closed as soon as both pumps are done: after a cut,
/// a peer that keeps writing gets a reset instead of filling a buffer.
fn serve(
    client: TcpStream,
    target: SocketAddr,
    mode: Mode,
    stats: &Arc<ProxyStats>,
    conns: &Mutex<Vec<Weak<TcpStream>>>,
) {
    let server = match TcpStream::connect_timeout(&target, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client, server) = (Arc::new(client), Arc::new(server));
    {
        let mut list = lock(conns);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&client));
        list.push(Arc::downgrade(&server));
    }
    let (c2, s2, back) = (Arc::clone(&client), Arc::clone(&server), Arc::clone(stats));
    let back_mode = match mode {
        Mode::Capture => mode,
        Mode::CutBackAfter(n) => Mode::CutAfter(n),
        _ => Mode::Pass,
    };
    thread::spawn(move || match mode {
        Mode::RecordsBack(op) => pump_records(&s2, &c2, op, &back.server_to_client),
        _ => pump(&s2, &c2, back_mode, &back, false),
    });
    match mode {
        Mode::Records(op) => pump_records(&client, &server, op, &stats.client_to_server),
        Mode::RecordsBack(_) | Mode::CutBackAfter(_) => {
            pump(&client, &server, Mode::Pass, stats, true)
        }
        _ => pump(&client, &server, mode, stats, true),
    }
}

/// The pump of [`Mode::Records`] (client→server) and [`Mode::RecordsBack`]
/// (server→client): frames of the handshake
/// pass; then each record (u16 length, that many bytes) is one unit that
/// `op` may change, drop, repeat or move.
fn pump_records(from: &TcpStream, to: &TcpStream, op: RecordOp, counter: &AtomicU64) {
    let (mut reader, mut writer) = (from, to);
    let mut pending: Vec<u8> = Vec::new();
    let mut frames_left = 2; // HELLO, NOISE
    let mut index = 0u64;
    let mut held: Option<Vec<u8>> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut forward = |bytes: &[u8]| {
        counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        writer.write_all(bytes).is_ok()
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => {
                let _ = forward(&pending);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            let len = if frames_left > 0 {
                if pending.len() < 5 {
                    break;
                }
                5 + u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize
            } else {
                if pending.len() < 2 {
                    break;
                }
                2 + u16::from_be_bytes([pending[0], pending[1]]) as usize
            };
            if pending.len() < len {
                break;
            }
            let mut unit: Vec<u8> = pending.drain(..len).collect();
            if frames_left > 0 {
                frames_left -= 1;
                if !forward(&unit) {
                    return;
                }
                continue;
            }
            let k = index;
            index += 1;
            let ok = match op {
                RecordOp::Flip(n) if n == k => {
                    let mid = 2 + (unit.len() - 2) / 2;
                    unit[mid] ^= 0x01;
                    forward(&unit)
                }
                RecordOp::Drop(n) if n == k => true,
                RecordOp::Replay(n) if n == k => forward(&unit) && forward(&unit),
                RecordOp::Swap(n) if n == k => {
                    held = Some(unit);
                    true
                }
                _ => forward(&unit) && held.take().is_none_or(|h| forward(&h)),
            };
            if !ok {
                return;
            }
        }
    }
}

/// Copies `from` → `to` until EOF or error, applying `mode`. On EOF the write
/// side of `to` is shut down (half-close); on error or cut both sockets are
/// shut down completely, which also ends the pump in the other direction.
fn pump(from: &TcpStream, to: &TcpStream, mode: Mode, stats: &ProxyStats, upstream: bool) {
    let counter = if upstream {
        &stats.client_to_server
    } else {
        &stats.server_to_client
    };
    let cut = || {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    };
    if mode == Mode::CutAfter(0) {
        cut();
        return;
    }
    let (mut reader, mut writer) = (from, to);
    let mut buf = vec![0u8; 16 * 1024];
    let mut pos: u64 = 0; // bytes forwarded so far in this direction
    let started = std::time::Instant::now();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                cut();
                return;
            }
        };
        let mut len = n;
        match mode {
            Mode::FlipByte(i) if i >= pos && i < pos + n as u64 => {
                buf[(i - pos) as usize] ^= 0x01;
            }
            Mode::CutAfter(limit) => {
                // pos < limit here, else we would have cut already.
                len = len.min((limit - pos) as usize);
            }
            _ => {}
        }
        if mode == Mode::Capture {
            let mut c = lock(&stats.captured);
            let side = if upstream { &mut c.0 } else { &mut c.1 };
            side.extend_from_slice(&buf[..len]);
        }
        if writer.write_all(&buf[..len]).is_err() {
            cut();
            return;
        }
        pos += len as u64;
        counter.fetch_add(len as u64, Ordering::SeqCst);
        if let Mode::Slow(rate) = mode {
            // Throttling, not synchronisation: hold the link to `rate`.
            let due = Duration::from_secs_f64(pos as f64 / rate.max(1) as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        if let Mode::CutAfter(limit) = mode {
            if pos >= limit {
                cut();
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Lower-case hex MD5 of a file's content. Panics if it cannot be read.
pub fn md5_hex(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut file =
        File::open(path).unwrap_or_else(|e| panic!("md5_hex: open {}: {e}", path.display()));
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("md5_hex: read {}: {e}", path.display()),
        }
    }
    to_hex(&hasher.finalize())
}

/// Lower-case hex MD5 of a byte slice.
pub fn md5_hex_bytes(data: &[u8]) -> String {
    to_hex(&Md5::digest(data))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `size` deterministic pseudo-random bytes (xorshift64* seeded with
/// `seed`) to `path`, replacing it. Same (size, seed) → same content.
pub fn write_random(path: impl AsRef<Path>, size: u64, seed: u64) {
    let path = path.as_ref();
    let file = File::create(path)
        .unwrap_or_else(|e| panic!("write_random: create {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    // Mix the seed so small seeds differ a lot; xorshift needs non-zero state.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if state == 0 {
        state = 0x9E37_79B9_7F4A_7C15;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write_random: write {}: {e}", path.display()));
        left -= n as u64;
    }
    out.flush()
        .unwrap_or_else(|e| panic!("write_random: flush {}: {e}", path.display()));
}

/// Sets the modification time of `path` (file or directory) to `secs`
/// seconds after the Unix epoch (negative: before). Access time is kept.
pub fn set_mtime(path: impl AsRef<Path>, secs: i64) {
    let time = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    set_modified(path.as_ref(), time);
}

fn set_modified(path: &Path, time: SystemTime) {
    // A read-only handle suffices for futimens; it also works for directories.
    let file =
        File::open(path).unwrap_or_else(|e| panic!("set_mtime: open {}: {e}", path.display()));
    file.set_times(FileTimes::new().set_modified(time))
        .unwrap_or_else(|e| panic!("set_mtime: {}: {e}", path.display()));
}

/// Sets the permission bits of `path` (`mode & 0o7777`).
pub fn set_mode(path: impl AsRef<Path>, mode: u32) {
    let path = path.as_ref();
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("set_mode: {}: {e}", path.display()));
}

/// Permission bits (`mode & 0o777`) of `path`, not following a symlink.
pub fn mode_of(path: impl AsRef<Path>) -> u32 {
    meta(path.as_ref()).mode() & 0o777
}

/// Modification time of `path` in whole seconds, not following a symlink.
pub fn mtime_of(path: impl AsRef<Path>) -> i64 {
    meta(path.as_ref()).mtime()
}

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
}

/// Metadata `copy_tree` gives a copy of `fixtures/tree`, so that tests see
/// non-default modes and distinct past mtimes: (relative path, mode, mtime).
/// Directories get their mtime too, applied after their content.
pub const FIXTURE_TREE_META: &[(&str, u32, i64)] = &[
    ("a.txt", 0o640, 1_600_000_000),
    ("sub/b.bin", 0o644, 1_600_000_100),
    ("sub/deeper/c.txt", 0o600, 1_500_000_000),
    ("with space.txt", 0o664, 1_700_000_000),
    ("ünïcødé/ファイル.txt", 0o644, 1_234_567_890),
    // directories, deepest first
    ("sub/deeper", 0o755, 1_400_000_000),
    ("sub", 0o750, 1_400_000_100),
    ("ünïcødé", 0o755, 1_400_000_200),
    ("empty", 0o700, 1_400_000_300),
    ("", 0o755, 1_400_000_400),
];

/// Copies the directory `src` to `dst` (created; its parent must exist),
/// recursively: file contents, permission bits and mtimes of files and
/// directories; symlinks are recreated, not followed.
///
/// If `src` is `fixtures/tree`, it also creates `dst/empty/` (git cannot
/// store the empty directory, see fixtures/README.md) and applies
/// [`FIXTURE_TREE_META`].
pub fn copy_tree(src: impl AsRef<Path>, dst: impl AsRef<Path>) {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    copy_dir(src, dst);
    let fixture_tree = fixtures().join("tree").canonicalize().ok();
    if fixture_tree.is_some() && src.canonicalize().ok() == fixture_tree {
        let empty = dst.join("empty");
        fs::create_dir_all(&empty)
            .unwrap_or_else(|e| panic!("copy_tree: mkdir {}: {e}", empty.display()));
        for (rel, mode, mtime) in FIXTURE_TREE_META {
            let path = if rel.is_empty() {
                dst.to_path_buf()
            } else {
                dst.join(rel)
            };
            set_mode(&path, *mode);
            set_mtime(&path, *mtime);
        }
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap_or_else(|e| panic!("copy_tree: mkdir {}: {e}", dst.display()));
    for (name, path) in sorted_entries(src) {
        let target = dst.join(&name);
        let md = meta(&path);
        let ft = md.file_type();
        if ft.is_dir() {
            copy_dir(&path, &target);
        } else if ft.is_symlink() {
            let link = fs::read_link(&path)
                .unwrap_or_else(|e| panic!("copy_tree: readlink {}: {e}", path.display()));
            std::os::unix::fs::symlink(&link, &target)
                .unwrap_or_else(|e| panic!("copy_tree: symlink {}: {e}", target.display()));
        } else {
            // fs::copy also copies the permission bits.
            fs::copy(&path, &target).unwrap_or_else(|e| {
                panic!("copy_tree: {} -> {}: {e}", path.display(), target.display())
            });
            set_modified(&target, md.modified().expect("mtime supported"));
        }
    }
    // Directory metadata last: writing the children changed its mtime.
    let md = meta(src);
    set_mode(dst, md.mode() & 0o7777);
    set_modified(dst, md.modified().expect("mtime supported"));
}

/// Directory entries of `dir` as (name, full path), sorted by name.
fn sorted_entries(dir: &Path) -> Vec<(std::ffi::OsString, PathBuf)> {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    let mut v: Vec<_> = rd
        .map(|e| {
            let e = e.unwrap_or_else(|err| panic!("read_dir {}: {err}", dir.display()));
            (e.file_name(), e.path())
        })
        .collect();
    v.sort();
    v
}

/// One entry of a scanned tree, for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: i64,
        size: u64,
        md5: String,
    },
    Symlink {
        target: PathBuf,
    },
    Other,
}

/// All entries under `root` (not `root` itself), keyed by relative path.
fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut map = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for (name, path) in sorted_entries(&root.join(&rel)) {
            let rel = rel.join(name);
            let md = meta(&path);
            let ft = md.file_type();
            let entry = if ft.is_dir() {
                stack.push(rel.clone());
                Entry::Dir {
                    mode: md.mode() & 0o777,
                }
            } else if ft.is_file() {
                Entry::File {
                    mode: md.mode() & 0o777,
                    mtime: md.mtime(),
                    size: md.len(),
                    md5: md5_hex(&path),
                }
            } else if ft.is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(&path).unwrap_or_default(),
                }
            } else {
                Entry::Other
            };
            map.insert(rel, entry);
        }
    }
    map
}

/// Asserts that the trees under `a` and `b` are equal: the same relative
/// paths (files, directories including empty ones, symlinks), the same file
/// contents, the same permission bits (`& 0o777`) for files and directories,
/// and the same file mtimes in whole seconds. The roots themselves are not
/// compared (check them with [`mode_of`] if needed). Panics listing every
/// difference.
pub fn assert_trees_equal(a: impl AsRef<Path>, b: impl AsRef<Path>) {
    let (a, b) = (a.as_ref(), b.as_ref());
    compare_trees(a, b, scan(a), scan(b));
}

/// Like [`assert_trees_equal`] for a tree `b` received from `a`: the
/// permission bits expected are those a receiver gives (README "Modes"):
/// the sender's less the receiver's umask (this process's, which the
/// receivers the tests start inherit), files always readable and
/// directories always enterable by the receiving user.
pub fn assert_trees_arrived(a: impl AsRef<Path>, b: impl AsRef<Path>) {
    let (a, b) = (a.as_ref(), b.as_ref());
    let umask = umask();
    let sent = scan(a)
        .into_iter()
        .map(|(p, e)| {
            let e = match e {
                Entry::Dir { mode } => Entry::Dir {
                    mode: (mode & !umask) | 0o700,
                },
                Entry::File {
                    mode,
                    mtime,
                    size,
                    md5,
                } => Entry::File {
                    mode: arrived_file_mode(mode),
                    mtime,
                    size,
                    md5,
                },
                other => other,
            };
            (p, e)
        })
        .collect();
    compare_trees(a, b, sent, scan(b));
}

/// This process's umask, from `/proc/self/status` (reading it with
/// umask(2) would change it for a moment under the other tests' feet).
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .expect("Umask in /proc/self/status")
}

/// The permission bits a file offered with `mode` arrives with.
pub fn arrived_file_mode(mode: u32) -> u32 {
    (mode & 0o777 & !umask()) | 0o400
}

fn compare_trees(a: &Path, b: &Path, ta: BTreeMap<PathBuf, Entry>, tb: BTreeMap<PathBuf, Entry>) {
    let mut diffs = Vec::new();
    for (path, ea) in &ta {
        match tb.get(path) {
            None => diffs.push(format!("only in a: {}", path.display())),
            Some(eb) if eb != ea => diffs.push(describe(path, ea, eb)),
            Some(_) => {}
        }
    }
    for path in tb.keys().filter(|p| !ta.contains_key(*p)) {
        diffs.push(format!("only in b: {}", path.display()));
    }
    assert!(
        diffs.is_empty(),
        "trees differ\n  a = {}\n  b = {}\n  {}",
        a.display(),
        b.display(),
        diffs.join("\n  ")
    );
}

fn describe(path: &Path, ea: &Entry, eb: &Entry) -> String {
    let p = path.display();
    match (ea, eb) {
        (Entry::Dir { mode: ma }, Entry::Dir { mode: mb }) => {
            format!("{p}/: dir mode {ma:o} vs {mb:o}")
        }
        (
            Entry::File {
                mode: ma,
                mtime: ta,
                size: sa,
                md5: ha,
            },
            Entry::File {
                mode: mb,
                mtime: tb,
                size: sb,
                md5: hb,
            },
        ) => {
            let mut parts = Vec::new();
            if sa != sb || ha != hb {
                parts.push(format!(
                    "content {sa} bytes md5 {ha} vs {sb} bytes md5 {hb}"
                ));
            }
            if ma != mb {
                parts.push(format!("mode {ma:o} vs {mb:o}"));
            }
            if ta != tb {
                parts.push(format!("mtime {ta} vs {tb}"));
            }
            format!("{p}: {}", parts.join(", "))
        }
        _ => format!("{p}: {ea:?} vs {eb:?}"),
    }
}

/// Every path under `root` (not `root` itself), relative to `root`, without
/// following symlinks. Take one before and one after a transfer to prove
/// nothing was created outside the output directory, e.g. with OUT inside a
/// temp dir: `after - before` must contain only paths under OUT.
pub fn snapshot_outside(root: impl AsRef<Path>) -> BTreeSet<PathBuf> {
    let root = root.as_ref();
    let mut set = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue; // unreadable directory: list it, not its content
        };
        for e in rd.flatten() {
            let rel = rel.join(e.file_name());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(rel.clone());
            }
            set.insert(rel);
        }
    }
    set
}

/// Calls `cond` every 2 ms until it is true (→ true) or `timeout` passed
/// (→ false). For observing progress (file sizes, log text), never as a
/// substitute for waiting on an event the harness can deliver.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Raises this process's soft limit on open files to at least `n` (within
/// the hard limit), for tests that hold many sockets.
pub fn raise_fd_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
