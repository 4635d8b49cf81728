//! Child processes of the benchmark: spawned, reaped exactly once with
//! `wait4` (which gives their CPU time and peak RSS), killed on drop.

use super::report::Usage;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A child process that is reaped exactly once, with `wait4`. Until then its
/// pid cannot be reused, so killing it is safe; dropping an unreaped child
/// kills and reaps it.
pub(super) struct Proc {
    pub(super) pid: libc::pid_t,
    pub(super) what: &'static str,
    pub(super) reaped: bool,
    pub(super) stdout: Option<JoinHandle<()>>,
    pub(super) stderr: Option<JoinHandle<String>>,
}

/// How a reaped child ended.
pub(super) struct Ended {
    /// The raw wait status.
    pub(super) status: libc::c_int,
    pub(super) usage: Usage,
    pub(super) stderr: String,
}

impl Ended {
    pub(super) fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub(super) fn describe(&self) -> String {
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
    pub(super) fn spawn(
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
    pub(super) fn wait(mut self, limit: Duration) -> Result<Ended> {
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
    pub(super) fn reap(&mut self) -> Result<(libc::c_int, Usage)> {
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
    pub(super) fn join_output(&mut self) -> String {
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
pub(super) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits up to `limit` for child `pid` to exit, without reaping it: a thread
/// blocks in `waitid(WEXITED | WNOWAIT)`. True if it exited (or cannot be
/// waited for at all, which the following `wait4` will report).
pub(super) fn wait_exited(pid: libc::pid_t, limit: Duration) -> bool {
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

pub(super) fn stderr_note(stderr: &str) -> String {
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
pub(super) fn send_limit(bytes: u64, files: usize) -> Duration {
    Duration::from_secs(120 + bytes / 2_000_000 + files as u64 / 20)
}
