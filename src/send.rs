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
use crate::digest::{hash_reader, hex, read_whole, Md5Digest};
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
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::net::TcpStream;
use std::sync::mpsc;
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
    /// Bytes of this entry counted on the total bar in this attempt.
    shown: u64,
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
    /// The file being hashed (look-ahead thread).
    hashing: ProgressBar,
    /// The file being sent.
    sending: ProgressBar,
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
    let events = Events::new(cfg.json);
    let walk = match walk::walk(&cfg.sources, cfg.follow_links) {
        Ok(w) => w,
        Err(e) => {
            events.emit(&Event::Summary {
                role: "send".into(),
                files_ok: 0,
                files_skipped: 0,
                files_failed: 0,
                bytes: 0,
                seconds: 0.0,
                exit_code: crate::exit::for_error(&e).code(),
                peer: None,
            });
            return Err(e);
        }
    };
    for w in &walk.warnings {
        eprintln!("ftx: warning: {w}");
    }
    let mut outcome = Exit::Success;
    for e in &walk.errors {
        eprintln!("ftx: {e}");
        outcome = Exit::Failure;
    }
    let progress = Progress::new(crate::progress::mode(cfg.quiet));
    let total = progress.bytes_bar(walk.total_bytes(), Layout::Total);
    total.set_prefix("total");
    let items: Vec<Item> = walk
        .entries
        .into_iter()
        .map(|entry| Item {
            entry,
            md5: None,
            state: State::Pending,
            resent: false,
            shown: 0,
        })
        .collect();
    let cache = DigestCache::open(cfg.cache);
    let started = Instant::now();
    let new_sender = |items: Vec<Item>| {
        let hashing = progress.bytes_bar(0, Layout::File);
        hashing.set_prefix("hashing");
        let sending = progress.bytes_bar(0, Layout::File);
        sending.set_prefix("sending");
        Sender {
            cfg,
            cache: cache.clone(),
            progress: progress.clone(),
            total: total.clone(),
            hashing,
            sending,
            items,
            tally: Tally::default(),
            events,
        }
    };
    let run_one = |items: Vec<Item>| {
        let mut s = new_sender(items);
        let r = s.run_attempts();
        s.hashing.finish_and_clear();
        s.sending.finish_and_clear();
        (s.items, s.tally, r)
    };
    let (streams, dirs) = plan(items, cfg.streams);
    let mut parts: Vec<(Vec<Item>, Tally, Result<()>)> = if streams.len() == 1 {
        streams.into_iter().map(run_one).collect()
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = streams
                .into_iter()
                .map(|group| sc.spawn(|| run_one(group)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (
                            Vec::new(),
                            Tally::default(),
                            Err(anyhow::anyhow!("a stream panicked")),
                        )
                    })
                })
                .collect()
        })
    };
    if !dirs.is_empty() {
        // Directories last, in one session: their modes and mtimes are set
        // at its END, after every stream wrote the files inside them.
        parts.push(run_one(dirs));
    }
    total.finish_and_clear();
    let mut s = new_sender(Vec::new());
    let mut result = Ok(());
    for (items, tally, r) in parts {
        s.items.extend(items);
        s.tally.files += tally.files;
        s.tally.skipped += tally.skipped;
        s.tally.bytes += tally.bytes;
        if let Err(e) = r {
            if result.is_ok() {
                result = Err(e);
            } else {
                eprintln!("ftx: {e:#}");
            }
        }
    }
    s.hashing.finish_and_clear();
    s.sending.finish_and_clear();
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
    if let Err(e) = result {
        // The most serious failure decides the status, as the summary says.
        eprintln!("ftx: {e:#}");
        return Ok(outcome);
    }
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
    crate::exit::on_interrupt(|| {
        eprintln!("\nftx: interrupted, run the same command again to resume");
    })
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
        let shown: u64 = self.items.iter().map(|i| i.shown).sum();
        (settled, shown)
    }

    fn fail_pending(&mut self, exit: Exit) {
        for i in &mut self.items {
            if i.state == State::Pending {
                i.state = State::Failed(exit);
            }
        }
    }

    /// One session: connect, greet, then keep up to [`WINDOW`] offers in
    /// flight: a look-ahead thread hashes the next files, a reader thread
    /// collects the receiver's answers, and this thread sends offers and,
    /// as ACCEPTs come back, bodies. END when every entry is settled.
    fn attempt(&mut self) -> Result<(), Broken> {
        let (tx, rx) = mpsc::channel::<Msg>();
        // Connect first: an unreachable receiver is reported before any
        // hashing.
        let mut link = Some(self.connect_link(&tx, 0)?);
        // Bytes counted for entries that were not confirmed are counted
        // again when they are sent again.
        for i in &mut self.items {
            if i.state == State::Pending {
                self.total.dec(std::mem::take(&mut i.shown));
            }
        }

        let pending: Vec<usize> = (0..self.items.len())
            .filter(|&i| self.items[i].state == State::Pending)
            .collect();
        let (permits, permit_rx) = mpsc::channel::<()>();
        for _ in 0..WINDOW {
            let _ = permits.send(());
        }
        let jobs: Vec<(usize, Entry, Option<Md5Digest>)> = pending
            .iter()
            .map(|&i| (i, self.items[i].entry.clone(), self.items[i].md5))
            .collect();
        let hasher = spawn_hasher(
            jobs,
            self.cache.clone(),
            self.hashing.clone(),
            tx.clone(),
            permit_rx,
        )?;

        let result = self.window(&mut link, &tx, &rx, &permits, &hasher, pending.len());
        // Unblock the reader thread whatever happened.
        if let Some(l) = &link {
            let _ = l.conn.get_ref().shutdown(std::net::Shutdown::Both);
        }
        result
    }

    /// Connects and greets; the reader thread tags what it reads with `gen`.
    fn connect_link(&self, tx: &mpsc::Sender<Msg>, gen: u64) -> Result<Link, Broken> {
        let target = &self.cfg.target;
        let stream = net::connect(target, self.cfg.connect_timeout)?;
        net::tune(&stream, self.cfg.timeout)
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        let mut conn = Conn::new(stream);
        handshake(&mut conn, target, self.cfg.token.as_ref())?;
        let reader = conn
            .get_ref()
            .try_clone()
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        // From here on only the reader thread reads, and it must not time
        // out while a long body is being sent (the receiver says nothing
        // until it has it all): the session thread enforces `--timeout`
        // where it waits for the receiver, and writes keep their timeout.
        reader
            .set_read_timeout(None)
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        spawn_reader(reader, tx.clone(), gen)?;
        Ok(Link { conn, gen })
    }

    /// The windowed exchange of one attempt. When nothing is in flight and
    /// the look-ahead thread is still hashing (a large file), the session
    /// is ended cleanly before the receiver's idle timeout would drop it,
    /// and a new one is opened once there is something to offer.
    fn window(
        &mut self,
        link: &mut Option<Link>,
        tx: &mpsc::Sender<Msg>,
        rx: &mpsc::Receiver<Msg>,
        permits: &mpsc::Sender<()>,
        hasher: &std::thread::JoinHandle<()>,
        count: usize,
    ) -> Result<(), Broken> {
        let mut ready: VecDeque<(usize, Prepared)> = VecDeque::new();
        let mut offered = 0usize;
        let mut answers: VecDeque<Offer> = VecDeque::new();
        let mut results: HashMap<u32, Flight> = HashMap::new();
        let mut next_gen = 1;
        let mut quiet = Quiet::new();
        loop {
            if !ready.is_empty() && link.is_none() {
                *link = Some(self.connect_link(tx, next_gen)?);
                next_gen += 1;
            }
            if let Some(l) = link.as_mut() {
                let mut sent = false;
                while answers.len() + results.len() < WINDOW {
                    let Some((idx, prep)) = ready.pop_front() else {
                        break;
                    };
                    offered += 1;
                    let _ = permits.send(());
                    if let Some(offer) = self.offer(&mut l.conn, idx, prep)? {
                        answers.push_back(offer);
                        sent = true;
                    }
                }
                if sent {
                    l.conn.flush()?;
                }
            }
            if offered == count && answers.is_empty() && results.is_empty() {
                break;
            }
            let idle = answers.is_empty() && results.is_empty();
            let wait = match (idle, link.is_some()) {
                // Waiting for the receiver: in slices, to watch our bytes
                // still draining towards it (see below).
                (false, _) => Duration::from_secs(1).min(self.cfg.timeout),
                // Waiting for the hasher with a session open: not so long
                // that the receiver's idle timeout ends it under us.
                (true, true) => (self.cfg.timeout / 2).max(Duration::from_secs(1)),
                // Waiting for the hasher alone: check now and then that it
                // is still there.
                (true, false) => Duration::from_secs(1),
            };
            let msg = match rx.recv_timeout(wait) {
                Ok(m) => {
                    quiet.reset();
                    m
                }
                Err(_) if idle && link.is_some() => {
                    if let Some(l) = link.take() {
                        self.end_session(l, rx)?;
                    }
                    continue;
                }
                Err(_) if idle && !hasher.is_finished() => continue,
                Err(_) if idle => {
                    return Err(Broken {
                        err: anyhow::anyhow!("internal error: the hashing thread stopped"),
                        retry: false,
                    })
                }
                Err(_) => {
                    // The receiver is silent until it has a whole body; that
                    // is fine as long as the bytes we sent are still being
                    // taken (a slow link). Only `--timeout` seconds without
                    // either is a stall.
                    let unsent = link.as_ref().and_then(|l| net::unsent(l.conn.get_ref()));
                    if quiet.stalled(unsent, self.cfg.timeout) {
                        return Err(ConnError::Timeout.into());
                    }
                    continue;
                }
            };
            // Handle what is already there as well (bounded), then write
            // out what that queued: one write for many small bodies.
            let mut next = Some(msg);
            let mut handled = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Ready(idx, prep) => ready.push_back((idx, prep)),
                    Msg::Answer(gen, _) if link.as_ref().is_none_or(|l| l.gen != gen) => {}
                    Msg::Answer(_, Err(e)) => return Err(e.into()),
                    Msg::Answer(_, Ok(frame)) => {
                        if let Some(l) = link.as_mut() {
                            self.on_answer(&mut l.conn, frame, &mut answers, &mut results)?;
                        }
                    }
                }
                handled += 1;
                if handled < DRAIN_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if let Some(l) = link.as_mut() {
                l.conn.flush()?;
            }
        }
        match link.take() {
            Some(l) => self.end_session(l, rx),
            None => Ok(()),
        }
    }

    /// END, then wait for SUMMARY.
    fn end_session(&mut self, mut l: Link, rx: &mpsc::Receiver<Msg>) -> Result<(), Broken> {
        self.sending.set_length(0);
        l.conn
            .send(&Frame::End)
            .with_context(|| format!("cannot finish the session with {}", self.cfg.target))?;
        let ended = loop {
            match rx.recv_timeout(self.cfg.timeout) {
                Ok(Msg::Ready(..)) => {}
                Ok(Msg::Answer(gen, _)) if gen != l.gen => {}
                Ok(Msg::Answer(_, Ok(Frame::Summary { .. }))) => break Ok(()),
                Ok(Msg::Answer(_, Ok(Frame::Error { code, message }))) => {
                    break Err(peer_error(code, &message).into())
                }
                Ok(Msg::Answer(_, Ok(other))) => {
                    break Err(
                        anyhow::anyhow!("receiver answered END with {}", other.name()).into(),
                    )
                }
                Ok(Msg::Answer(_, Err(e))) => break Err(e.into()),
                Err(_) => break Err(ConnError::Timeout.into()),
            }
        };
        let _ = l.conn.get_ref().shutdown(std::net::Shutdown::Both);
        ended
    }

    /// Sends the offer of a prepared entry; `None` when it cannot be offered
    /// (unreadable file: already reported).
    fn offer(
        &mut self,
        conn: &mut Conn<TcpStream>,
        idx: usize,
        prep: Prepared,
    ) -> Result<Option<Offer>, Broken> {
        let id = u32::try_from(idx + 1).context("too many entries for one session")?;
        let e = &self.items[idx].entry;
        let path = e.name.as_str().as_bytes().to_vec();
        match prep {
            Prepared::Dir => {
                conn.queue(&Frame::Dir(DirHeader {
                    id,
                    mode: e.mode,
                    mtime_s: e.mtime_s,
                    mtime_ns: e.mtime_ns,
                    path,
                }));
                Ok(Some(Offer {
                    id,
                    idx,
                    file: None,
                }))
            }
            Prepared::File(src) => {
                let size = src.md.len();
                if size != e.size {
                    // Keep the session total honest if the file changed.
                    let len = self.total.length().unwrap_or(0);
                    self.total.set_length((len + size).saturating_sub(e.size));
                }
                conn.queue(&Frame::File(FileHeader {
                    id,
                    size,
                    mode: e.mode,
                    mtime_s: e.mtime_s,
                    mtime_ns: e.mtime_ns,
                    md5: src.md5,
                    path,
                }));
                self.items[idx].entry.size = size;
                self.items[idx].md5 = Some(src.md5);
                Ok(Some(Offer {
                    id,
                    idx,
                    file: Some(src),
                }))
            }
            Prepared::Unreadable(msg) => {
                self.settle(idx, Verdict::Failed(Exit::Failure, "read", msg));
                Ok(None)
            }
        }
    }

    /// Records the outcome of an entry.
    fn settle(&mut self, idx: usize, v: Verdict) {
        match v {
            Verdict::Done => self.items[idx].state = State::Done,
            Verdict::Again => {}
            Verdict::Failed(exit, reason, msg) => {
                self.progress.println(&format!("ftx: {msg}"));
                self.events.emit(&Event::FileFailed {
                    path: escape(self.items[idx].entry.name.as_str()),
                    reason: reason.into(),
                    message: msg,
                    peer: None,
                });
                self.items[idx].state = State::Failed(exit);
            }
        }
    }

    /// Handles one frame from the receiver.
    fn on_answer(
        &mut self,
        conn: &mut Conn<TcpStream>,
        frame: Frame,
        answers: &mut VecDeque<Offer>,
        results: &mut HashMap<u32, Flight>,
    ) -> Result<(), Broken> {
        if let Frame::Error { code, message } = &frame {
            return Err(peer_error(*code, message).into());
        }
        // A RESULT for a file whose body was sent.
        if let Frame::Result {
            id,
            status,
            md5,
            message,
        } = &frame
        {
            if let Some(f) = results.remove(id) {
                let (verdict, idx) = self.file_result(f, *status, *md5, message);
                self.settle(idx, verdict);
                return Ok(());
            }
        }
        // Otherwise: the answer to the oldest offer.
        let Some(offer) = answers.pop_front() else {
            return Err(anyhow::anyhow!("unexpected {} from receiver", frame.name()).into());
        };
        let got = match &frame {
            Frame::Accept { id, .. }
            | Frame::Skip { id, .. }
            | Frame::Reject { id, .. }
            | Frame::Result { id, .. } => *id,
            other => {
                return Err(anyhow::anyhow!("unexpected {} from receiver", other.name()).into())
            }
        };
        if got != offer.id {
            return Err(anyhow::anyhow!(
                "receiver answered entry {got} while entry {} was next",
                offer.id
            )
            .into());
        }
        let idx = offer.idx;
        let shown = escape(self.items[idx].entry.name.as_str());
        let verdict = match (frame, offer.file) {
            (
                Frame::Result {
                    status, message, ..
                },
                None,
            ) => {
                if status == result_status::OK {
                    Verdict::Done
                } else {
                    Verdict::Failed(
                        Exit::Failure,
                        "io",
                        format!(
                            "{shown}: receiver could not create it: {}",
                            escape(&message)
                        ),
                    )
                }
            }
            (Frame::Reject { code, message, .. }, _) if code == reject_code::IN_PROGRESS => {
                // Most likely our own earlier connection, which the receiver
                // has not noticed dead yet: retry the session after a pause.
                return Err(Broken {
                    err: anyhow::anyhow!(
                        "{shown}: the receiver is still busy with it: {}",
                        escape(&message)
                    ),
                    retry: true,
                });
            }
            (Frame::Reject { code, message, .. }, _) => reject_verdict(&shown, code, &message),
            (Frame::Skip { .. }, Some(src)) => {
                self.total.inc(src.md.len());
                self.items[idx].shown = src.md.len();
                self.tally.skipped += 1;
                self.events.emit(&Event::FileSkipped {
                    path: shown,
                    bytes: src.md.len(),
                    reason: "identical".into(),
                    peer: None,
                });
                Verdict::Done
            }
            (Frame::Accept { offset, .. }, Some(src)) => {
                let size = src.md.len();
                if offset > size {
                    return Err(anyhow::anyhow!(
                        "receiver accepted {shown} at offset {offset}, beyond its size {size}"
                    )
                    .into());
                }
                let started = Instant::now();
                self.body(conn, offer.id, idx, &src, offset)?;
                results.insert(
                    offer.id,
                    Flight {
                        idx,
                        md: src.md,
                        md5: src.md5,
                        offset,
                        started,
                    },
                );
                return Ok(());
            }
            (other, _) => {
                return Err(anyhow::anyhow!(
                    "unexpected {} in answer to the offer of {shown}",
                    other.name()
                )
                .into())
            }
        };
        self.settle(idx, verdict);
        Ok(())
    }

    /// Streams the body of an accepted file (sendfile where possible).
    fn body(
        &mut self,
        conn: &mut Conn<TcpStream>,
        id: u32,
        idx: usize,
        src: &Source,
        offset: u64,
    ) -> Result<(), Broken> {
        let size = src.md.len();
        let shown = escape(self.items[idx].entry.name.as_str());
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
        self.sending.set_message(shown);
        self.sending.set_length(size);
        self.sending.set_position(offset);
        self.total.inc(offset);
        let frame = Frame::Body {
            id,
            offset,
            length: size - offset,
        };
        let from_memory = src
            .data
            .as_deref()
            .and_then(|d| d.get(usize::try_from(offset).ok()?..));
        if let Some(data) = from_memory {
            conn.queue_body(&frame, data)?;
            self.sending.inc(size - offset);
            self.total.inc(size - offset);
            self.items[idx].shown = size;
            return Ok(());
        }
        let Some(file) = &src.file else {
            let shown = escape(self.items[idx].entry.name.as_str());
            return Err(
                anyhow::anyhow!("internal error: '{shown}' has neither data nor a file").into(),
            );
        };
        conn.queue(&frame);
        let (sending, total) = (&self.sending, &self.total);
        let mut counted = offset;
        let sent = conn.send_body(file, offset, size - offset, |n| {
            sending.inc(n);
            total.inc(n);
            counted += n;
        });
        self.items[idx].shown = counted;
        sent?;
        Ok(())
    }

    /// The verdict on a file from its RESULT.
    fn file_result(
        &mut self,
        f: Flight,
        status: u8,
        got: Md5Digest,
        message: &str,
    ) -> (Verdict, usize) {
        let idx = f.idx;
        let shown = escape(self.items[idx].entry.name.as_str());
        let size = f.md.len();
        if status == result_status::OK && got == f.md5 {
            self.tally.files += 1;
            self.tally.bytes += size - f.offset;
            let seconds = f.started.elapsed().as_secs_f64();
            if !self.cfg.quiet && !self.events.enabled() {
                let line = format!(
                    "sent {shown} {size} bytes md5 {} ({:.1} MB/s{})",
                    hex(&f.md5),
                    mb_per_s(size - f.offset, seconds),
                    if f.offset > 0 {
                        format!(", resumed at {}", f.offset)
                    } else {
                        String::new()
                    }
                );
                self.progress.suspend(|| println!("{line}"));
            }
            self.events.emit(&Event::FileDone {
                path: shown,
                bytes: size,
                md5: hex(&f.md5),
                resumed_from: f.offset,
                seconds,
                mb_per_s: mb_per_s(size - f.offset, seconds),
                peer: None,
            });
            return (Verdict::Done, idx);
        }
        if status != result_status::OK && status != result_status::DIGEST_MISMATCH {
            return (
                Verdict::Failed(
                    Exit::Failure,
                    "io",
                    format!("{shown}: receiver could not write it: {}", escape(message)),
                ),
                idx,
            );
        }
        // Forget what we believed about the file: hash it afresh.
        self.cache.forget(&f.md);
        self.items[idx].md5 = None;
        self.total.dec(std::mem::take(&mut self.items[idx].shown));
        let what = if status == result_status::OK {
            "receiver reported ok with MD5"
        } else {
            "receiver computed"
        };
        let msg = format!(
            "{shown}: integrity failure: sender MD5 {}, {what} {}",
            hex(&f.md5),
            hex(&got)
        );
        if !self.items[idx].resent && self.cfg.retries > 0 {
            self.items[idx].resent = true;
            self.progress
                .println(&format!("ftx: {msg}; sending it again from 0"));
            (Verdict::Again, idx)
        } else {
            (
                Verdict::Failed(
                    Exit::Integrity,
                    "integrity",
                    format!("{msg}; the file was not kept"),
                ),
                idx,
            )
        }
    }
}

/// Splits the entries for `streams` parallel sessions: files are dealt to
/// the least loaded stream, largest first (so the streams finish together),
/// keeping walk order within each stream. With more than one stream the
/// directories are returned apart, to be sent after the files. With one
/// stream everything stays in one session, in walk order.
fn plan(items: Vec<Item>, streams: usize) -> (Vec<Vec<Item>>, Vec<Item>) {
    let files = items.iter().filter(|i| i.entry.kind == Kind::File).count();
    let n = streams.min(files);
    if n <= 1 {
        return (vec![items], Vec::new());
    }
    let (dirs, files): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| i.entry.kind == Kind::Dir);
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].entry.size));
    let mut load = vec![0u64; n];
    let mut owner = vec![0usize; files.len()];
    for i in order {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(_, l)| *l)
            .unwrap_or((0, &0));
        load[least] += files[i].entry.size.max(1);
        owner[i] = least;
    }
    let mut groups: Vec<Vec<Item>> = (0..n).map(|_| Vec::new()).collect();
    for (item, o) in files.into_iter().zip(owner) {
        groups[o].push(item);
    }
    (groups, dirs)
}

/// Offers in flight at most: many small files cost about one round trip,
/// not one each.
pub const WINDOW: usize = 128;

/// Messages handled in a row before the session thread offers and writes
/// again.
const DRAIN_MAX: usize = 256;

/// What the helper threads tell the session.
enum Msg {
    /// The look-ahead thread prepared entry `idx`.
    Ready(usize, Prepared),
    /// The reader thread of session `gen` got a frame (or the connection
    /// failed).
    Answer(u64, Result<Frame, ConnError>),
}

/// An entry ready to offer.
enum Prepared {
    /// A directory.
    Dir,
    /// An open file with its metadata and MD5.
    File(Source),
    /// A file that cannot be read: the message says why.
    Unreadable(String),
}

/// A file to send, with its metadata and MD5: open, or read whole.
struct Source {
    /// None once the whole content is in `data` (the descriptor is not
    /// kept: many small files are in flight at once).
    file: Option<File>,
    md: std::fs::Metadata,
    md5: Md5Digest,
    /// The whole content as it was hashed, for a file of at most
    /// [`INLINE_MAX`] bytes: its body is sent from memory, queued with
    /// other frames, instead of read again.
    data: Option<Vec<u8>>,
}

/// Files up to this size are read once, into memory, to be hashed and sent.
/// With [`WINDOW`] offers in flight and as many hashed ahead, this bounds
/// the memory held for them to 16 MiB.
const INLINE_MAX: u64 = 64 << 10;

/// Tracks how long the receiver has been silent *and* our socket has not
/// drained: only that counts against `--timeout`.
struct Quiet {
    since: Instant,
    unsent: Option<u32>,
}

impl Quiet {
    fn new() -> Self {
        Quiet {
            since: Instant::now(),
            unsent: None,
        }
    }

    /// Something arrived from the receiver.
    fn reset(&mut self) {
        self.since = Instant::now();
    }

    /// Given the bytes still queued on our socket, true when nothing has
    /// moved for `timeout`.
    fn stalled(&mut self, unsent: Option<u32>, timeout: Duration) -> bool {
        if unsent != self.unsent {
            self.unsent = unsent;
            self.since = Instant::now();
            return false;
        }
        self.since.elapsed() >= timeout
    }
}

/// A session of an attempt: the connection and the tag of its reader.
struct Link {
    conn: Conn<TcpStream>,
    gen: u64,
}

/// An offer waiting for its answer.
struct Offer {
    id: u32,
    idx: usize,
    file: Option<Source>,
}

/// A file whose body was sent, waiting for its RESULT.
struct Flight {
    idx: usize,
    md: std::fs::Metadata,
    md5: Md5Digest,
    offset: u64,
    started: Instant,
}

/// Reads the receiver's frames into the session's channel until the
/// connection ends.
fn spawn_reader(stream: TcpStream, tx: mpsc::Sender<Msg>, gen: u64) -> Result<()> {
    std::thread::Builder::new()
        .name("ftx-reader".into())
        .spawn(move || {
            let mut conn = Conn::new(stream);
            loop {
                let msg = match conn.read_frame() {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(ConnError::Eof("the session")),
                    Err(e) => Err(e),
                };
                let end = matches!(msg, Err(_) | Ok(Frame::Error { .. }));
                if end {
                    // The receiver is gone or giving up: unblock a body that
                    // is being sent at this moment instead of letting it
                    // wait for a window that will never open.
                    let _ = conn.get_ref().shutdown(std::net::Shutdown::Both);
                }
                if tx.send(Msg::Answer(gen, msg)).is_err() || end {
                    return;
                }
            }
        })
        .context("cannot start the reader thread")?;
    Ok(())
}

/// Small files read ahead are hashed together, this many at a time at
/// most (see [`crate::md5multi`]): several times faster than one by one.
const BATCH_FILES: usize = 64;

/// Hashes the entries to offer, in order, at most [`WINDOW`] ahead of the
/// offers (one permit per entry), using the digest cache and digests known
/// from earlier attempts. Small files are read and collected, and hashed
/// together when the batch is full, when a larger file or a directory
/// comes, or when the offers have caught up (no permit waiting).
fn spawn_hasher(
    jobs: Vec<(usize, Entry, Option<Md5Digest>)>,
    cache: DigestCache,
    bar: ProgressBar,
    tx: mpsc::Sender<Msg>,
    permits: mpsc::Receiver<()>,
) -> Result<std::thread::JoinHandle<()>> {
    let handle = std::thread::Builder::new()
        .name("ftx-hasher".into())
        .spawn(move || {
            let mut batch = Vec::new();
            for (idx, entry, known) in jobs {
                let permitted = match permits.try_recv() {
                    Ok(()) => true,
                    Err(mpsc::TryRecvError::Empty) => {
                        hash_batch(&mut batch, &tx) && permits.recv().is_ok()
                    }
                    Err(mpsc::TryRecvError::Disconnected) => false,
                };
                if !permitted {
                    return;
                }
                match prepare(&entry, known, &cache, &bar) {
                    Step::Read(r) => {
                        batch.push((idx, r));
                        if batch.len() >= BATCH_FILES && !hash_batch(&mut batch, &tx) {
                            return;
                        }
                    }
                    Step::Ready(p) => {
                        if !hash_batch(&mut batch, &tx) || tx.send(Msg::Ready(idx, p)).is_err() {
                            return;
                        }
                    }
                }
            }
            hash_batch(&mut batch, &tx);
        })
        .context("cannot start the hashing thread")?;
    Ok(handle)
}

/// A small file read whole, not hashed yet.
struct Unhashed {
    md: std::fs::Metadata,
    data: Vec<u8>,
}

/// What [`prepare`] made of an entry.
enum Step {
    Ready(Prepared),
    /// A small file, to be hashed with others.
    Read(Unhashed),
}

/// Hashes the batch's files together and hands them over in order; false
/// if the session is gone.
fn hash_batch(batch: &mut Vec<(usize, Unhashed)>, tx: &mpsc::Sender<Msg>) -> bool {
    let bodies: Vec<&[u8]> = batch.iter().map(|(_, r)| r.data.as_slice()).collect();
    let digests = crate::md5multi::digests(&bodies);
    for ((idx, r), md5) in batch.drain(..).zip(digests) {
        let source = Source {
            file: None,
            md: r.md,
            md5,
            data: Some(r.data),
        };
        if tx.send(Msg::Ready(idx, Prepared::File(source))).is_err() {
            return false;
        }
    }
    true
}

/// Opens a file and finds its digest: known, cached, or hashed now; or
/// reads it whole to be hashed with others, if small.
fn prepare(
    entry: &Entry,
    known: Option<Md5Digest>,
    cache: &DigestCache,
    bar: &ProgressBar,
) -> Step {
    if entry.kind == Kind::Dir {
        return Step::Ready(Prepared::Dir);
    }
    let local = escape(&entry.local.to_string_lossy());
    let unreadable =
        |e: std::io::Error| Step::Ready(Prepared::Unreadable(format!("cannot read {local}: {e}")));
    let opened = File::open(&entry.local).and_then(|f| {
        let md = f.metadata()?;
        Ok((f, md))
    });
    let (file, md) = match opened {
        Ok(pair) => pair,
        Err(e) => return unreadable(e),
    };
    if let Some(md5) = known.or_else(|| cache.get(&md)) {
        return Step::Ready(Prepared::File(Source {
            file: Some(file),
            md,
            md5,
            data: None,
        }));
    }
    if md.len() <= INLINE_MAX {
        // Hashed in microseconds: not worth a line on the hashing bar.
        return match read_whole(&file, md.len()) {
            Ok(data) => Step::Read(Unhashed { md, data }),
            Err(e) => unreadable(e),
        };
    }
    bar.set_message(escape(entry.name.as_str()));
    bar.set_length(md.len());
    bar.set_position(0);
    match hash_reader(&file, md.len(), |n| bar.inc(n)) {
        Ok(md5) => {
            cache.put(&md, &md5);
            Step::Ready(Prepared::File(Source {
                file: Some(file),
                md,
                md5,
                data: None,
            }))
        }
        Err(e) => unreadable(e),
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
    let what = match code {
        reject_code::UNSAFE_NAME => "unsafe name",
        reject_code::EXISTS => "exists with other content (use --overwrite on the receiver)",
        reject_code::NO_SPACE => "not enough space",
        reject_code::CONFLICT => "conflicts with what is there",
        reject_code::IO => "receiver i/o error",
        _ => "refused",
    };
    let reason = crate::events::reject_reason(code);
    Verdict::Failed(
        Exit::Refused,
        reason,
        format!("{shown}: refused by receiver: {what}: {}", escape(message)),
    )
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
