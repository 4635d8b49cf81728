//! The sender role: walk the sources, connect, and for each entry offer it
//! (the FILE header carries the MD5, computed before it or taken from the
//! digest cache), send the body from the accepted offset and wait for the
//! receiver's verdict.
//!
//! A session that breaks (refused, reset, EOF, timeout) is retried with
//! exponential backoff, re-offering every entry not yet confirmed; the
//! receiver resumes partial files where it stopped. A digest mismatch sends
//! the file again from 0, once. The exit status is 0 only when every file got
//! RESULT ok or SKIP.

use crate::cache::DigestCache;
use crate::config::SendConfig;
use crate::conn::{Conn, ConnError};
use crate::digest::{hash_reader, hex, Md5Digest};
use crate::events::{mb_per_s, Event, Events};
use crate::exit::{Exit, ExitError};
use crate::net;
use crate::progress::{Layout, Progress};
use crate::protocol::frame::{error_code, reject_code, result_status, DirHeader, FileHeader};
use crate::protocol::limits::VERSION;
use crate::protocol::Frame;
use crate::sanitize::escape;
use crate::walk::{self, Entry, Kind};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::fs::File;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Software name sent in HELLO.
pub const AGENT: &str = concat!("ftx/", env!("CARGO_PKG_VERSION"));
/// First pause before a retry; doubled each time up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where an entry stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not confirmed yet: offered in the next attempt.
    Pending,
    /// Verified, created, or skipped as identical.
    Done,
    /// Refused or failed for good.
    Failed(Exit),
}

/// An entry and what the sender knows about it across attempts.
struct Item {
    entry: Entry,
    /// The digest once known (hashed or cached).
    md5: Option<Md5Digest>,
    state: State,
    /// The file was already sent again from 0 after a mismatch.
    resent: bool,
}

/// Counters for the final summary.
#[derive(Debug, Default)]
struct Tally {
    files: u64,
    skipped: u64,
    bytes: u64,
}

/// Everything one run of `ftx send` shares across attempts.
struct Sender<'a> {
    cfg: &'a SendConfig,
    cache: DigestCache,
    progress: Progress,
    total: ProgressBar,
    current: ProgressBar,
    items: Vec<Item>,
    tally: Tally,
    events: Events,
}

/// An attempt that ended early, and whether trying again can help.
struct Broken {
    err: anyhow::Error,
    retry: bool,
}

impl<E: Into<anyhow::Error>> From<E> for Broken {
    fn from(e: E) -> Self {
        let err = e.into();
        let retry = transient(&err);
        Broken { err, retry }
    }
}

/// True when the error is about the connection, not about what was sent:
/// cannot connect, reset, EOF, timeout, receiver busy.
fn transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        if let Some(c) = e.downcast_ref::<ConnError>() {
            return !matches!(c, ConnError::Frame(_));
        }
        if let Some(x) = e.downcast_ref::<ExitError>() {
            return x.exit == Exit::Connect;
        }
        if let Some(p) = e.downcast_ref::<PeerError>() {
            return p.code == error_code::BUSY || p.code == error_code::TIMEOUT;
        }
        e.downcast_ref::<std::io::Error>().is_some()
    })
}

/// The receiver ended the session with ERROR.
#[derive(Debug, thiserror::Error)]
#[error("receiver ended the session: {message} (code {code})")]
struct PeerError {
    code: u16,
    message: String,
}

fn peer_error(code: u16, message: &str) -> anyhow::Error {
    let e = PeerError {
        code,
        message: escape(message),
    };
    if code == error_code::AUTH {
        return ExitError::new(Exit::Auth, e.to_string()).into();
    }
    anyhow::Error::new(e)
}

/// Runs `ftx send`. Returns the exit status; errors that end the run early
/// carry theirs (see [`crate::exit::for_error`]).
pub fn run(cfg: &SendConfig) -> Result<Exit> {
    exit_on_interrupt()?;
    let walk = walk::walk(&cfg.sources, cfg.follow_links)?;
    for w in &walk.warnings {
        eprintln!("ftx: warning: {w}");
    }
    let mut outcome = Exit::Success;
    for e in &walk.errors {
        eprintln!("ftx: {e}");
        outcome = Exit::Failure;
    }
    let progress = Progress::new(crate::progress::enabled(cfg.quiet));
    let total = progress.bytes_bar(walk.total_bytes(), Layout::Total);
    total.set_prefix("total");
    let current = progress.bytes_bar(0, Layout::File);
    let mut s = Sender {
        cfg,
        cache: DigestCache::open(cfg.cache),
        progress,
        total,
        current,
        items: walk
            .entries
            .into_iter()
            .map(|entry| Item {
                entry,
                md5: None,
                state: State::Pending,
                resent: false,
            })
            .collect(),
        tally: Tally::default(),
        events: Events::new(cfg.json),
    };
    let started = Instant::now();
    let result = s.run_attempts();
    s.current.finish_and_clear();
    s.total.finish_and_clear();
    if let Err(e) = &result {
        outcome = outcome.worst(crate::exit::for_error(e));
    }
    for item in &s.items {
        if let State::Failed(exit) = item.state {
            outcome = outcome.worst(exit);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = s
        .items
        .iter()
        .filter(|i| i.state != State::Done && i.entry.kind == Kind::File)
        .count();
    s.events.emit(&Event::Summary {
        role: "send".into(),
        files_ok: s.tally.files,
        files_skipped: s.tally.skipped,
        files_failed: failed as u64,
        bytes: s.tally.bytes,
        seconds: secs,
        exit_code: outcome.code(),
        peer: None,
    });
    result?;
    if !cfg.quiet {
        eprintln!(
            "ftx: sent {} file(s), {} skipped, {failed} failed, {} bytes in {secs:.2} s ({:.1} MB/s)",
            s.tally.files,
            s.tally.skipped,
            s.tally.bytes,
            s.tally.bytes as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Ok(outcome)
}

/// On SIGINT or SIGTERM: say how to go on, exit 130. Nothing is lost: the
/// receiver keeps what it verified and checkpointed.
fn exit_on_interrupt() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                eprintln!("\nftx: interrupted, run the same command again to resume");
                std::process::exit(Exit::Interrupted.code());
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

impl Sender<'_> {
    /// Runs sessions until every entry is confirmed or failed for good, or
    /// the retries are used up. The retry budget counts attempts in a row
    /// that made no progress, so a long transfer over a flaky link goes on
    /// as long as each attempt moves it forward.
    fn run_attempts(&mut self) -> Result<()> {
        let mut left = self.cfg.retries;
        let mut backoff = BACKOFF_START;
        loop {
            if !self.items.iter().any(|i| i.state == State::Pending) {
                return Ok(());
            }
            let before = self.progress_mark();
            let ended = self.attempt();
            let moved = self.progress_mark() != before;
            if moved {
                left = self.cfg.retries;
                backoff = BACKOFF_START;
            }
            match ended {
                Ok(()) => {
                    // Pending entries left after a whole session are files
                    // to send again from 0 after a digest mismatch.
                    if self.items.iter().any(|i| i.state == State::Pending) {
                        if left == 0 {
                            self.fail_pending(Exit::Integrity);
                            return Ok(());
                        }
                        left -= 1;
                    }
                }
                Err(b) if b.retry && left > 0 => {
                    left -= 1;
                    self.events.emit(&Event::Retry {
                        message: escape(&format!("{:#}", b.err)),
                        delay_s: backoff.as_secs_f64(),
                        retries_left: left,
                    });
                    self.progress.println(&format!(
                        "ftx: {}: {:#}; retrying in {:.1} s ({left} retries left)",
                        self.cfg.target,
                        b.err,
                        backoff.as_secs_f32()
                    ));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(b) => {
                    let hint = if b.retry && self.cfg.retries > 0 {
                        "; giving up after retries, run the same command again to resume"
                    } else {
                        ""
                    };
                    return Err(b
                        .err
                        .context(format!("sending to {}{hint}", self.cfg.target)));
                }
            }
        }
    }

    /// Something that changes whenever an attempt moves the transfer on.
    fn progress_mark(&self) -> (usize, u64) {
        let settled = self
            .items
            .iter()
            .filter(|i| i.state != State::Pending)
            .count();
        (settled, self.total.position())
    }

    fn fail_pending(&mut self, exit: Exit) {
        for i in &mut self.items {
            if i.state == State::Pending {
                i.state = State::Failed(exit);
            }
        }
    }

    /// One session: connect, greet, offer every pending entry, END.
    fn attempt(&mut self) -> Result<(), Broken> {
        let target = self.cfg.target.clone();
        let stream = net::connect(&target, self.cfg.connect_timeout)?;
        net::tune(&stream, self.cfg.timeout)
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        let mut conn = Conn::new(stream);
        handshake(&mut conn, &target, self.cfg.token.as_ref())?;
        // The total bar restarts from what is confirmed.
        let done: u64 = self
            .items
            .iter()
            .filter(|i| i.state != State::Pending && i.entry.kind == Kind::File)
            .map(|i| i.entry.size)
            .sum();
        self.total.set_position(done);

        for idx in 0..self.items.len() {
            if self.items[idx].state != State::Pending {
                continue;
            }
            let id = u32::try_from(idx + 1).context("too many entries for one session")?;
            let shown = escape(self.items[idx].entry.name.as_str());
            let verdict = match self.items[idx].entry.kind {
                Kind::Dir => send_dir(&mut conn, id, &self.items[idx].entry),
                Kind::File => self.send_file(&mut conn, id, idx),
            };
            match verdict {
                Ok(Verdict::Done) => self.items[idx].state = State::Done,
                Ok(Verdict::Again) => {}
                Ok(Verdict::Failed(exit, reason, msg)) => {
                    self.progress.println(&format!("ftx: {msg}"));
                    self.events.emit(&Event::FileFailed {
                        path: shown.clone(),
                        reason: reason.into(),
                        message: msg,
                        peer: None,
                    });
                    self.items[idx].state = State::Failed(exit);
                }
                Err(mut b) => {
                    b.err = b.err.context(format!("while sending {shown}"));
                    return Err(b);
                }
            }
        }
        self.current.set_length(0);
        conn.send(&Frame::End)
            .with_context(|| format!("cannot finish the session with {target}"))?;
        match conn.expect_frame()? {
            Frame::Summary { .. } => Ok(()),
            Frame::Error { code, message } => Err(peer_error(code, &message).into()),
            other => Err(anyhow::anyhow!("receiver answered END with {}", other.name()).into()),
        }
    }

    /// The digest of a file: from memory, from the cache, or by hashing it.
    fn digest(
        &mut self,
        idx: usize,
        file: &File,
        md: &std::fs::Metadata,
    ) -> std::io::Result<Md5Digest> {
        if let Some(d) = self.items[idx].md5 {
            return Ok(d);
        }
        if let Some(d) = self.cache.get(md) {
            self.items[idx].md5 = Some(d);
            return Ok(d);
        }
        let size = md.len();
        self.current.set_prefix("hashing");
        self.current.set_length(size);
        self.current.set_position(0);
        let current = &self.current;
        let d = hash_reader(file, size, |n| current.inc(n))?;
        self.cache.put(md, &d);
        self.items[idx].md5 = Some(d);
        Ok(d)
    }

    fn send_file(
        &mut self,
        conn: &mut Conn<TcpStream>,
        id: u32,
        idx: usize,
    ) -> Result<Verdict, Broken> {
        let e = self.items[idx].entry.clone();
        let shown = escape(e.name.as_str());
        let local = escape(&e.local.to_string_lossy());
        let cant_read = |err: std::io::Error| {
            Ok(Verdict::Failed(
                Exit::Failure,
                "read",
                format!("cannot read {local}: {err}"),
            ))
        };
        let file = match File::open(&e.local) {
            Ok(f) => f,
            Err(err) => return cant_read(err),
        };
        let md = match file.metadata() {
            Ok(m) => m,
            Err(err) => return cant_read(err),
        };
        let size = md.len();
        if size != e.size {
            // Keep the session total honest if the file changed since the walk.
            let len = self.total.length().unwrap_or(0);
            self.total.set_length((len + size).saturating_sub(e.size));
            self.items[idx].entry.size = size;
        }
        self.current.set_message(shown.clone());
        let md5 = match self.digest(idx, &file, &md) {
            Ok(d) => d,
            Err(err) => return cant_read(err),
        };

        conn.send(&Frame::File(FileHeader {
            id,
            size,
            mode: e.mode,
            mtime_s: e.mtime_s,
            mtime_ns: e.mtime_ns,
            md5,
            path: e.name.as_str().as_bytes().to_vec(),
        }))?;
        let offset = match answer(conn, id)? {
            Frame::Accept { offset, .. } if offset <= size => offset,
            Frame::Accept { offset, .. } => {
                return Err(anyhow::anyhow!(
                    "receiver accepted at offset {offset}, beyond the size {size}"
                )
                .into())
            }
            Frame::Skip { .. } => {
                self.total.inc(size);
                self.tally.skipped += 1;
                self.events.emit(&Event::FileSkipped {
                    path: shown.clone(),
                    bytes: size,
                    reason: "identical".into(),
                    peer: None,
                });
                return Ok(Verdict::Done);
            }
            Frame::Reject { code, message, .. } => {
                return Ok(reject_verdict(&shown, code, &message))
            }
            other => {
                return Err(anyhow::anyhow!("unexpected {} in answer to FILE", other.name()).into())
            }
        };
        if offset > 0 && !self.cfg.quiet {
            self.progress
                .println(&format!("ftx: resuming {shown} at {offset}"));
        }

        self.events.emit(&Event::FileStarted {
            path: shown.clone(),
            bytes: size,
            offset,
            peer: None,
        });
        let started = Instant::now();
        self.current.set_prefix("sending");
        self.current.set_length(size);
        self.current.set_position(offset);
        self.total.inc(offset);
        conn.queue(&Frame::Body {
            id,
            offset,
            length: size - offset,
        });
        let (current, total) = (&self.current, &self.total);
        conn.send_body(&file, offset, size - offset, |n| {
            current.inc(n);
            total.inc(n);
        })?;

        match answer(conn, id)? {
            Frame::Result {
                status: result_status::OK,
                md5: got,
                ..
            } if got == md5 => {
                self.tally.files += 1;
                self.tally.bytes += size - offset;
                let seconds = started.elapsed().as_secs_f64();
                self.events.emit(&Event::FileDone {
                    path: shown.clone(),
                    bytes: size,
                    md5: hex(&md5),
                    resumed_from: offset,
                    seconds,
                    mb_per_s: mb_per_s(size - offset, seconds),
                    peer: None,
                });
                Ok(Verdict::Done)
            }
            Frame::Result {
                status: status @ (result_status::OK | result_status::DIGEST_MISMATCH),
                md5: got,
                ..
            } => {
                // Forget what we believed about the file: hash it afresh.
                self.cache.forget(&md);
                self.items[idx].md5 = None;
                self.total
                    .set_position(self.total.position().saturating_sub(size));
                let what = if status == result_status::OK {
                    "receiver reported ok with MD5"
                } else {
                    "receiver computed"
                };
                let msg = format!(
                    "{shown}: integrity failure: sender MD5 {}, {what} {}",
                    hex(&md5),
                    hex(&got)
                );
                if !self.items[idx].resent && self.cfg.retries > 0 {
                    self.items[idx].resent = true;
                    self.progress
                        .println(&format!("ftx: {msg}; sending it again from 0"));
                    Ok(Verdict::Again)
                } else {
                    Ok(Verdict::Failed(
                        Exit::Integrity,
                        "integrity",
                        format!("{msg}; the file was not kept"),
                    ))
                }
            }
            Frame::Result { message, .. } => Ok(Verdict::Failed(
                Exit::Failure,
                "io",
                format!("{shown}: receiver could not write it: {}", escape(&message)),
            )),
            other => Err(anyhow::anyhow!("unexpected {} in answer to BODY", other.name()).into()),
        }
    }
}

/// HELLO → WELCOME.
fn handshake(
    conn: &mut Conn<TcpStream>,
    target: &str,
    token: Option<&crate::auth::Token>,
) -> Result<(), Broken> {
    let hello = Frame::Hello {
        version: VERSION,
        flags: 0,
        agent: AGENT.into(),
    };
    conn.send(&hello)
        .with_context(|| format!("cannot greet {target}"))?;
    match conn
        .expect_frame()
        .with_context(|| format!("no greeting from {target}"))?
    {
        Frame::Welcome {
            version,
            flags,
            nonce,
            ..
        } => {
            if version != VERSION {
                return Err(Broken {
                    err: anyhow::anyhow!(
                        "{target} speaks protocol version {version}, this ftx speaks {VERSION}"
                    ),
                    retry: false,
                });
            }
            if flags & crate::auth::FLAG_AUTH_REQUIRED != 0 {
                let Some(token) = token else {
                    return Err(Broken {
                        err: ExitError::new(
                            Exit::Auth,
                            "the receiver requires a token: set FTX_TOKEN or use --token-file",
                        )
                        .into(),
                        retry: false,
                    });
                };
                conn.send(&Frame::Auth {
                    mac: crate::auth::mac(token, &nonce),
                })?;
            }
            Ok(())
        }
        Frame::Error { code, message } => Err(peer_error(code, &message)
            .context(format!("{target} refused the session"))
            .into()),
        other => Err(Broken {
            err: anyhow::anyhow!(
                "{target} answered HELLO with {}: not an ftx receiver?",
                other.name()
            ),
            retry: false,
        }),
    }
}

/// The outcome of one entry that did not break the session.
enum Verdict {
    /// Verified, created or skipped as identical.
    Done,
    /// Send it again in the next session (after a digest mismatch).
    Again,
    /// Refused or failed; the session goes on: status, reason code (see
    /// [`Event::FileFailed`]), message.
    Failed(Exit, &'static str, String),
}

fn reject_verdict(shown: &str, code: u16, message: &str) -> Verdict {
    let (reason, what) = match code {
        reject_code::UNSAFE_NAME => ("refused_unsafe_name", "unsafe name"),
        reject_code::EXISTS => (
            "refused_exists",
            "exists with other content (use --overwrite on the receiver)",
        ),
        reject_code::NO_SPACE => ("refused_no_space", "not enough space"),
        reject_code::CONFLICT => ("refused_conflict", "conflicts with what is there"),
        reject_code::IO => ("io", "receiver i/o error"),
        _ => ("refused", "refused"),
    };
    Verdict::Failed(
        Exit::Refused,
        reason,
        format!("{shown}: refused by receiver: {what}: {}", escape(message)),
    )
}

fn send_dir(conn: &mut Conn<TcpStream>, id: u32, e: &Entry) -> Result<Verdict, Broken> {
    let shown = escape(e.name.as_str());
    conn.send(&Frame::Dir(DirHeader {
        id,
        mode: e.mode,
        mtime_s: e.mtime_s,
        mtime_ns: e.mtime_ns,
        path: e.name.as_str().as_bytes().to_vec(),
    }))?;
    match answer(conn, id)? {
        Frame::Result {
            status: result_status::OK,
            ..
        } => Ok(Verdict::Done),
        Frame::Result { message, .. } => Ok(Verdict::Failed(
            Exit::Failure,
            "io",
            format!(
                "{shown}: receiver could not create it: {}",
                escape(&message)
            ),
        )),
        Frame::Reject { code, message, .. } => Ok(reject_verdict(&shown, code, &message)),
        other => Err(anyhow::anyhow!("unexpected {} in answer to DIR", other.name()).into()),
    }
}

/// Reads the receiver's answer to entry `id`. ERROR ends the session.
fn answer(conn: &mut Conn<TcpStream>, id: u32) -> Result<Frame, Broken> {
    let f = conn.expect_frame()?;
    let got = match &f {
        Frame::Accept { id, .. }
        | Frame::Skip { id, .. }
        | Frame::Reject { id, .. }
        | Frame::Result { id, .. } => *id,
        Frame::Error { code, message } => return Err(peer_error(*code, message).into()),
        other => return Err(anyhow::anyhow!("unexpected {} from receiver", other.name()).into()),
    };
    if got != id {
        return Err(
            anyhow::anyhow!("receiver answered entry {got} while entry {id} was pending").into(),
        );
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_transient_protocol_errors_are_not() {
        let eof = anyhow::Error::new(ConnError::Eof("a frame")).context("x");
        assert!(transient(&eof));
        let conn = anyhow::Error::new(ExitError::new(Exit::Connect, "refused"));
        assert!(transient(&conn));
        let busy = peer_error(error_code::BUSY, "busy");
        assert!(transient(&busy));
        let proto = anyhow::Error::new(ConnError::Frame(crate::protocol::FrameError::UnknownType(
            9,
        )));
        assert!(!transient(&proto));
        let auth = peer_error(error_code::AUTH, "no");
        assert!(!transient(&auth));
        assert_eq!(crate::exit::for_error(&auth), Exit::Auth);
    }
}
