//! The receiver role: listen, serve each sender in its own thread, and own
//! the partial-file discipline: every offer is checked against the safety
//! rules, bodies are written through a `BufWriter` into `.NAME.ftx-part`
//! beside the target while being hashed, and only a matching digest leads to
//! fsync, rename into place, mode and mtime, and an fsync of the directory.
//!
//! All file-system access goes through a held handle on the output
//! directory (cap-std), one component at a time with no-follow semantics,
//! so no symlink inside OUT is ever followed and nothing is written outside.

use crate::auth;
use crate::config::RecvConfig;
use crate::conn::{Conn, ConnError};
use crate::digest::{hash_reader, hex, Md5Digest};
use crate::events::{mb_per_s, reject_reason, Event, Events};
use crate::exit::Exit;
use crate::net::{self, Activity, Deadlined, FrameWriter};
use crate::partial;
use crate::progress::{Layout, Progress};
use crate::protocol::frame::{encode, error_code, reject_code, result_status, skip_reason};
use crate::protocol::limits::VERSION;
use crate::protocol::{DirHeader, FileHeader, Frame, WireName};
use crate::sanitize::{escape, escape_bytes};
use anyhow::{bail, Context, Result};
use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a new connection has to send its HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every session of one receiver.
struct Shared {
    cfg: RecvConfig,
    root: Dir,
    progress: Progress,
    active: AtomicUsize,
    /// Targets being written right now, by wire name, across sessions.
    inflight: Mutex<HashMap<String, SocketAddr>>,
    /// The connections being served, so an interrupt can end them.
    live: Mutex<HashMap<SocketAddr, (TcpStream, Activity)>>,
    /// Set on SIGINT/SIGTERM: no new session starts.
    stopping: AtomicBool,
    /// `--json` output.
    events: Events,
}

impl Shared {
    /// A line on stderr, above the bars.
    fn log(&self, line: &str) {
        self.progress.println(&format!("ftx: {line}"));
    }
}

/// What a finished session amounted to.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    ok: u32,
    skipped: u32,
    failed: u32,
    bytes: u64,
}

/// Runs `ftx recv` until killed (or, with `--once`, until the first session
/// ends: 0 only if every file in it was verified).
pub fn run(cfg: &RecvConfig) -> Result<Exit> {
    let out = escape(&cfg.out.to_string_lossy());
    let root = Dir::open_ambient_dir(&cfg.out, cap_std::ambient_authority())
        .with_context(|| format!("cannot use output directory {out}"))?;
    rustix::fs::accessat(
        &root,
        ".",
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .map_err(io::Error::from)
    .with_context(|| format!("cannot write into output directory {out}"))?;

    let listener = net::listen(cfg.bind, cfg.port)?;
    if cfg.token.is_none() {
        eprintln!(
            "ftx: warning: no token set (--token-file or FTX_TOKEN): anyone who can reach this port can write new files into {out}"
        );
    }
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let events = Events::new(cfg.json);
    if events.enabled() {
        events.emit(&Event::Listening {
            address: addr.to_string(),
            port: addr.port(),
        });
    } else {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        root,
        progress: Progress::new(crate::progress::mode(cfg.quiet)),
        active: AtomicUsize::new(0),
        inflight: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        events,
    });
    watch_signals(Arc::clone(&shared))?;

    if cfg.once {
        let (stream, peer) = accept(&listener, &shared)?;
        shared.active.fetch_add(1, Ordering::SeqCst);
        let result = session(stream, peer, &shared);
        shared.active.fetch_sub(1, Ordering::SeqCst);
        return Ok(match result {
            Ok(s) if s.failed == 0 => Exit::Success,
            Ok(_) => Exit::Failure,
            Err(e) => {
                shared.log(&format!("{peer}: {e:#}"));
                Exit::Failure
            }
        });
    }
    loop {
        let (stream, peer) = accept(&listener, &shared)?;
        let n = shared.active.fetch_add(1, Ordering::SeqCst);
        if n >= cfg.max_sessions {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.log(&format!(
                "{peer}: refused: already serving {n} sessions (--max-sessions)"
            ));
            refuse_busy(stream, n);
            continue;
        }
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("session {peer}"))
            .spawn(move || {
                if let Err(e) = session(stream, peer, &sh) {
                    sh.log(&format!("{peer}: {e:#}"));
                }
                sh.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.log(&format!("{peer}: cannot start a session thread: {e}"));
        }
    }
}

/// On SIGINT or SIGTERM: stop accepting, end every session (each one
/// checkpoints the file it was receiving), wait for them, exit 130.
fn watch_signals(shared: Arc<Shared>) -> Result<()> {
    crate::exit::on_interrupt(move || {
        shared.log("interrupted: checkpointing partial files, then exiting");
        shared.stopping.store(true, Ordering::SeqCst);
        if let Ok(live) = shared.live.lock() {
            for (s, _) in live.values() {
                abort(s);
            }
        }
        // Bounded wait for the sessions to write their checkpoints.
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Registers a connection in [`Shared::live`] for as long as it lives.
struct LiveGuard<'a> {
    sh: &'a Shared,
    peer: SocketAddr,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.sh.live.lock() {
            live.remove(&self.peer);
        }
    }
}

/// Accepts one connection, backing off (not spinning) when out of file
/// descriptors or on other transient errors.
fn accept(listener: &TcpListener, shared: &Shared) -> Result<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept() {
            Ok(pair) => return Ok(pair),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.log(&format!("accept failed: {e}; retrying"));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Tells a connection over `--max-sessions` why it is turned away.
fn refuse_busy(stream: TcpStream, n: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut conn = Conn::new(stream);
    let _ = conn.send(&Frame::Error {
        code: error_code::BUSY,
        message: format!("receiver busy: {n} sessions already running, try again later"),
    });
}

/// A refusal of one offer: REJECT code and message.
struct Refusal(u16, String);

fn refusal(code: u16, msg: impl Into<String>) -> Refusal {
    Refusal(code, msg.into())
}

/// Maps an I/O error met while walking to a target into a refusal.
fn io_refusal(what: &str, e: &io::Error) -> Refusal {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => refusal(
            reject_code::CONFLICT,
            format!("{what}: a symlink or a file is in the way"),
        ),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            refusal(reject_code::NO_SPACE, format!("{what}: {e}"))
        }
        _ => refusal(reject_code::IO, format!("{what}: {e}")),
    }
}

/// Opens (creating when missing) each directory of `comps` below `root`,
/// never following a symlink.
fn open_dirs(root: &Dir, comps: &[&str]) -> Result<Dir, Refusal> {
    let mut dir = root
        .try_clone()
        .map_err(|e| io_refusal("output directory", &e))?;
    for (i, c) in comps.iter().enumerate() {
        let what = || comps[..=i].join("/");
        let next = match dir.open_dir_nofollow(c) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match dir.create_dir(c) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_refusal(&what(), &e)),
                }
                dir.open_dir_nofollow(c)
                    .map_err(|e| io_refusal(&what(), &e))?
            }
            Err(e) => return Err(io_refusal(&what(), &e)),
        };
        dir = next;
    }
    Ok(dir)
}

/// Ends a connection at once with a reset (linger 0), so a peer blocked on
/// a closed window notices now rather than after minutes of probes. The
/// session reading from it sees an error and checkpoints what it holds.
fn abort(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Removes a wire name from the in-flight map when dropped (if this
/// session still holds it).
struct InflightGuard<'a> {
    map: &'a Mutex<HashMap<String, SocketAddr>>,
    name: String,
    holder: SocketAddr,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            if m.get(&self.name) == Some(&self.holder) {
                m.remove(&self.name);
            }
        }
    }
}

/// How long a session waits for another session it took a file over from
/// to checkpoint and let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// How long a session must have received nothing before another session
/// from the same host may take its file over.
const TAKEOVER_IDLE: Duration = Duration::from_secs(2);

/// One sender's session.
struct Session<'a, 'c> {
    sh: &'a Shared,
    conn: Conn<Deadlined>,
    peer: SocketAddr,
    /// Wire names already offered in this session.
    seen: HashSet<String>,
    /// Directories whose attributes are applied at END.
    dirs: Vec<(WireName, DirHeader)>,
    /// Accepted files whose BODY has not arrived yet, in acceptance order.
    awaiting: VecDeque<Awaiting<'a>>,
    /// Small files received, their bodies in memory, not yet hashed.
    small: Vec<Unhashed<'a>>,
    /// Body bytes in `small`.
    small_bytes: usize,
    /// Verified files go to the session's commit thread through this.
    commits: &'c Commits<'a>,
    stats: Stats,
    bar: indicatif::ProgressBar,
    /// The directory the last file went into (a walk sends a directory's
    /// files together), so the next file there costs no path walk.
    parent: Option<Parent>,
}

/// An open directory below OUT, by its wire path components.
struct Parent {
    comps: Vec<String>,
    dir: Arc<Dir>,
    /// Free bytes there as last asked of the file system, less what was
    /// accepted since.
    free: Option<u64>,
    asked: Instant,
}

/// The session thread waits before queueing another verified file while
/// this many wait for the commit thread...
const COMMIT_FILES: usize = 256;
/// ...or while they hold this many bytes...
const COMMIT_BYTES: u64 = 64 << 20;
/// ...or while this many of those bytes are small files' bodies, held in
/// memory for the commit thread to write.
const HELD_BYTES: usize = 4 << 20;
/// The commit thread waits for this many verified files...
const GROUP_FILES: usize = 16;
/// ...or this many bytes before it syncs, unless the session is about to
/// wait for the sender (who may be waiting for these RESULTs).
const GROUP_BYTES: u64 = 4 << 20;

/// A session may have this many accepted files waiting for their BODY (each
/// holds a descriptor and a partial); an offer beyond that is a protocol
/// error. The ftx sender keeps at most [`crate::send::WINDOW`].
const MAX_AWAITING: usize = 1024;

/// Small files received (up to [`partial::HOLD_MAX`]) are hashed together
/// (see [`crate::md5multi`]) once this many wait...
const SMALL_FILES: usize = 64;
/// ...or once their bodies take this many bytes, and whenever the session
/// is about to wait for the sender.
const SMALL_BYTES: usize = 4 << 20;

/// Verified files on their way from a session thread to its commit thread,
/// which writes out the bodies held in memory, applies modes and mtimes,
/// makes the files durable and puts them in place in batches (group
/// commit): while it syncs one batch, the session keeps receiving the next.
struct Commits<'a> {
    state: Mutex<CommitState<'a>>,
    changed: Condvar,
}

#[derive(Default)]
struct CommitState<'a> {
    queue: Vec<Verified<'a>>,
    /// Body bytes in `queue`.
    queued_bytes: u64,
    /// Bytes of the bodies in `queue` held in memory.
    held_bytes: usize,
    /// The commit thread is working on a batch.
    busy: bool,
    /// Commit what is queued now, without waiting for a full group.
    urgent: bool,
    /// The session is over: the commit thread ends once the queue is empty.
    closed: bool,
    /// What committed batches amounted to, not yet collected by the session.
    stats: Stats,
    /// Why RESULTs could not be written, if they could not.
    broken: Option<String>,
}

impl<'a> Commits<'a> {
    fn new() -> Self {
        Commits {
            state: Mutex::new(CommitState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CommitState<'a>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'g>(
        &self,
        g: std::sync::MutexGuard<'g, CommitState<'a>>,
    ) -> std::sync::MutexGuard<'g, CommitState<'a>> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a verified file, first waiting while too much is queued.
    fn push(&self, v: Verified<'a>) {
        let mut st = self.lock();
        while !st.closed
            && (st.queue.len() >= COMMIT_FILES
                || st.queued_bytes >= COMMIT_BYTES
                || st.held_bytes >= HELD_BYTES)
        {
            st = self.wait(st);
        }
        st.queued_bytes += v.r.h.size - v.r.offset;
        st.held_bytes += v.body.len();
        st.queue.push(v);
        self.changed.notify_all();
    }

    /// Waits until every queued file is committed and its RESULT written;
    /// returns what that amounted to since the last call.
    fn drain(&self) -> (Stats, Option<String>) {
        let mut st = self.lock();
        st.urgent = true;
        self.changed.notify_all();
        while !st.queue.is_empty() || st.busy {
            st = self.wait(st);
        }
        (std::mem::take(&mut st.stats), st.broken.clone())
    }

    /// Asks for what is queued to be committed now: the session is about
    /// to wait for the sender, who may be waiting for these RESULTs.
    fn nudge(&self) {
        let mut st = self.lock();
        if !st.queue.is_empty() && !st.urgent {
            st.urgent = true;
            self.changed.notify_all();
        }
    }

    /// No more files: the commit thread ends when it has committed the rest.
    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The commit thread: takes whatever is queued, commits it, writes the
    /// RESULTs, until closed.
    fn run(&self, sh: &Shared, peer: SocketAddr, out: FrameWriter) {
        loop {
            let batch = {
                let mut st = self.lock();
                while !st.closed
                    && (st.queue.is_empty()
                        || (!st.urgent
                            && st.queue.len() < GROUP_FILES
                            && st.queued_bytes < GROUP_BYTES))
                {
                    st = self.wait(st);
                }
                if st.queue.is_empty() {
                    return;
                }
                st.busy = true;
                st.urgent = false;
                st.queued_bytes = 0;
                st.held_bytes = 0;
                std::mem::take(&mut st.queue)
            };
            self.changed.notify_all();
            let mut stats = Stats::default();
            let mut frames = Vec::new();
            commit(sh, peer, batch, &mut stats, &mut frames);
            let wrote = out.write_all(&frames);
            let mut st = self.lock();
            st.busy = false;
            st.stats.add(stats);
            if let Err(e) = wrote {
                st.broken
                    .get_or_insert_with(|| format!("cannot send results: {e}"));
            }
            self.changed.notify_all();
        }
    }
}

/// An accepted file whose body has not arrived yet.
struct Awaiting<'a> {
    h: FileHeader,
    name: WireName,
    last: String,
    dir: Arc<Dir>,
    names: partial::Names,
    writer: partial::PartialWriter,
    offset: u64,
    _guard: InflightGuard<'a>,
}

/// A file whose whole body arrived, on its way to being verified and
/// committed.
struct Received<'a> {
    h: FileHeader,
    name: WireName,
    last: String,
    dir: Arc<Dir>,
    names: partial::Names,
    offset: u64,
    started: Instant,
    _guard: InflightGuard<'a>,
}

/// A verified file waiting to be written out (if small), given its mode,
/// mtime and digest record, made durable and renamed into place: all of
/// it on the commit thread.
struct Verified<'a> {
    r: Received<'a>,
    file: std::fs::File,
    /// The body, if not written to `file` yet (a small file).
    body: Vec<u8>,
}

/// A small file received, its body in memory to be hashed with others
/// (see [`crate::md5multi`]).
struct Unhashed<'a> {
    r: Received<'a>,
    file: std::fs::File,
    body: Vec<u8>,
}

/// Why a file failed, for its RESULT and the log.
struct Failure {
    id: u32,
    /// The name as shown (escaped).
    shown: String,
    status: u8,
    md5: Md5Digest,
    message: String,
}

/// Checks a received file's content against the offer. On failure the
/// partial is discarded.
fn verify<'a>(
    r: Received<'a>,
    file: std::fs::File,
    body: Vec<u8>,
    got: Md5Digest,
) -> Result<Verified<'a>, Failure> {
    let h = &r.h;
    if got == h.md5 {
        return Ok(Verified { r, file, body });
    }
    r.names.discard(&r.dir);
    let shown = escape(r.name.as_str());
    Err(Failure {
        id: h.id,
        status: result_status::DIGEST_MISMATCH,
        md5: got,
        message: format!(
            "integrity failure for '{shown}': header MD5 {}, received data MD5 {}{}; discarded",
            hex(&h.md5),
            hex(&got),
            if r.offset > 0 {
                " (after a resume)"
            } else {
                ""
            }
        ),
        shown,
    })
}

/// Writes out a verified file's body if it is held, and applies its mode,
/// mtime and digest record.
fn write_verified(v: &Verified<'_>) -> Result<(), String> {
    let shown = || escape(v.r.name.as_str());
    if !v.body.is_empty() {
        (&v.file)
            .write_all(&v.body)
            .map_err(|e| format!("cannot write '{}': {e}", shown()))?;
    }
    let h = &v.r.h;
    apply_attrs(&v.file, h.mode, h.mtime_s, h.mtime_ns)
        .map_err(|e| format!("cannot set mode/mtime of '{}': {e}", shown()))?;
    if h.size >= RECORD_MIN_SIZE {
        write_record(&v.file, &h.md5);
    }
    Ok(())
}

fn session(stream: TcpStream, peer: SocketAddr, sh: &Shared) -> Result<Stats> {
    if sh.stopping.load(Ordering::SeqCst) {
        bail!("refused: the receiver is shutting down");
    }
    let activity = Activity::default();
    if let (Ok(clone), Ok(mut live)) = (stream.try_clone(), sh.live.lock()) {
        live.insert(peer, (clone, activity.clone()));
    }
    let _live = LiveGuard { sh, peer };
    net::tune(&stream, sh.cfg.timeout).context("cannot set up the connection")?;
    let mut stream = Deadlined::new(stream, sh.cfg.timeout, activity);
    stream
        .set_deadline(Some(Instant::now() + HANDSHAKE_TIMEOUT.min(sh.cfg.timeout)))
        .context("cannot set up the connection")?;
    let mut conn = Conn::new(stream);
    let hello = match conn.read_frame() {
        Ok(Some(f)) => f,
        Ok(None) => bail!("closed the connection before HELLO"),
        Err(e) => return Err(fail_session(&mut conn, e, "before HELLO")),
    };
    match hello {
        Frame::Hello { version, .. } if version == VERSION => {}
        Frame::Hello { version, .. } => {
            let _ = conn.send(&Frame::Error {
                code: error_code::VERSION,
                message: format!(
                    "unsupported protocol version {version}, this receiver speaks {VERSION}"
                ),
            });
            bail!("unsupported protocol version {version}");
        }
        other => {
            let _ = conn.send(&Frame::Error {
                code: error_code::PROTOCOL,
                message: format!("expected HELLO, got {}", other.name()),
            });
            bail!("protocol error: expected HELLO, got {}", other.name());
        }
    }
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    conn.send(&Frame::Welcome {
        version: VERSION,
        flags: if sh.cfg.token.is_some() {
            auth::FLAG_AUTH_REQUIRED
        } else {
            0
        },
        nonce,
        agent: crate::send::AGENT.into(),
    })
    .context("cannot answer HELLO")?;
    if let Some(token) = &sh.cfg.token {
        let proof = match conn.read_frame() {
            Ok(Some(Frame::Auth { mac })) => auth::verify(token, &nonce, &mac),
            Ok(Some(other)) => {
                let _ = conn.send(&Frame::Error {
                    code: error_code::AUTH,
                    message: format!("authentication required, got {}", other.name()),
                });
                bail!(
                    "authentication failed: sender sent {} instead of AUTH (no token?)",
                    other.name()
                );
            }
            Ok(None) => bail!("closed the connection before AUTH"),
            Err(e) => return Err(fail_session(&mut conn, e, "before AUTH")),
        };
        if !proof {
            let _ = conn.send(&Frame::Error {
                code: error_code::AUTH,
                message: "authentication failed: wrong token".into(),
            });
            bail!("authentication failed: wrong token");
        }
    }
    conn.get_mut()
        .set_deadline(None)
        .context("cannot set up the connection")?;

    let writer = conn
        .get_ref()
        .frame_writer()
        .context("cannot set up the connection")?;
    let bar = sh.progress.bytes_bar(0, Layout::Session);
    bar.set_prefix("recv");
    let commits = Commits::new();
    let started = Instant::now();
    let (result, st) = std::thread::scope(|sc| {
        let committer = std::thread::Builder::new()
            .name("ftx-commit".into())
            .spawn_scoped(sc, || commits.run(sh, peer, writer))
            .context("cannot start the commit thread")?;
        let mut s = Session {
            sh,
            conn,
            peer,
            seen: HashSet::new(),
            dirs: Vec::new(),
            awaiting: VecDeque::new(),
            small: Vec::new(),
            small_bytes: 0,
            commits: &commits,
            stats: Stats::default(),
            bar,
            parent: None,
        };
        // Files already received are verified and placed even if the
        // session breaks: the commit thread goes on with what is queued.
        let result = s.serve();
        s.verify_small();
        s.drop_unstarted();
        s.bar.finish_and_clear();
        commits.close();
        if committer.join().is_err() {
            bail!("internal error: the commit thread panicked");
        }
        s.stats.add(commits.drain().0);
        Ok((result, s.stats))
    })?;
    sh.events.emit(&Event::Summary {
        role: "recv".into(),
        files_ok: u64::from(st.ok - st.skipped),
        files_skipped: u64::from(st.skipped),
        files_failed: u64::from(st.failed),
        bytes: st.bytes,
        seconds: started.elapsed().as_secs_f64(),
        exit_code: i32::from(result.is_err() || st.failed > 0),
        peer: Some(peer.to_string()),
    });
    result.map(|()| st)
}

/// Tells the peer why its session ends (best effort) and builds the error.
fn fail_session(conn: &mut Conn<Deadlined>, e: ConnError, when: &str) -> anyhow::Error {
    let code = match e {
        ConnError::Timeout => Some(error_code::TIMEOUT),
        ConnError::Frame(_) => Some(error_code::PROTOCOL),
        _ => None,
    };
    if let Some(code) = code {
        let _ = conn.send(&Frame::Error {
            code,
            message: e.to_string(),
        });
    }
    anyhow::Error::new(e).context(format!("session ended {when}"))
}

impl<'a> Session<'a, '_> {
    /// Waits until the commit thread has placed every verified file and
    /// answered for it, and counts what it did.
    fn drain_commits(&mut self) -> Result<()> {
        let (stats, broken) = self.commits.drain();
        self.stats.add(stats);
        match broken {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    fn serve(&mut self) -> Result<()> {
        loop {
            if self.conn.buffered() == 0 && !self.conn.get_ref().readable_now() {
                self.verify_small();
                self.commits.nudge();
            }
            let frame = match self.conn.read_frame() {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.verify_small();
                    let _ = self.drain_commits();
                    bail!(
                        "closed the connection before END ({} ok, {} failed)",
                        self.stats.ok,
                        self.stats.failed
                    )
                }
                Err(e) => return Err(fail_session(&mut self.conn, e, "mid-session")),
            };
            match frame {
                Frame::File(_) if self.awaiting.len() >= MAX_AWAITING => {
                    let msg = format!("more than {MAX_AWAITING} accepted files without their BODY");
                    let _ = self.conn.send(&Frame::Error {
                        code: error_code::PROTOCOL,
                        message: msg.clone(),
                    });
                    bail!("protocol error: {msg}");
                }
                Frame::File(h) => self.file(h)?,
                Frame::Dir(h) => self.dir(h)?,
                Frame::Body { id, offset, length } => self.body(id, offset, length)?,
                Frame::End if self.awaiting.is_empty() => {
                    self.verify_small();
                    self.drain_commits()?;
                    self.finish_dirs();
                    self.conn.send(&Frame::Summary {
                        files_ok: self.stats.ok,
                        files_failed: self.stats.failed,
                        bytes: self.stats.bytes,
                    })?;
                    return Ok(());
                }
                other => {
                    let msg = match other {
                        Frame::End => format!(
                            "END while {} accepted file bodies are outstanding",
                            self.awaiting.len()
                        ),
                        other => format!("unexpected {} frame", other.name()),
                    };
                    let _ = self.conn.send(&Frame::Error {
                        code: error_code::PROTOCOL,
                        message: msg.clone(),
                    });
                    bail!("protocol error: {msg}");
                }
            }
        }
    }

    /// The session is over: removes the partials of accepted files whose
    /// body never started (a resumed partial stays, to resume again).
    fn drop_unstarted(&mut self) {
        for a in self.awaiting.drain(..) {
            if a.offset == 0 {
                a.names.discard(&a.dir);
            }
        }
    }

    fn reject(&mut self, id: u32, raw_name: &[u8], r: Refusal) -> Result<()> {
        self.stats.failed += 1;
        self.sh.log(&format!(
            "{}: rejected '{}': {}",
            self.peer,
            escape_bytes(raw_name),
            r.1
        ));
        self.sh.events.emit(&Event::FileFailed {
            path: escape_bytes(raw_name),
            reason: reject_reason(r.0).into(),
            message: r.1.clone(),
            peer: Some(self.peer.to_string()),
        });
        self.conn.queue(&Frame::Reject {
            id,
            code: r.0,
            message: r.1,
        });
        Ok(())
    }

    /// Marks `key` as being received by this session. When another session
    /// from the same host holds it, that is most likely the sender's own
    /// earlier connection, broken without the receiver noticing (a
    /// half-open TCP connection): it is ended, and this session waits
    /// (bounded) for it to checkpoint and let go, then takes over, so the
    /// retry resumes instead of being refused until the old one times out.
    fn claim_inflight(&self, key: &str) -> bool {
        let deadline = Instant::now() + TAKEOVER_WAIT;
        let mut aborted = false;
        loop {
            let holder = match self.sh.inflight.lock() {
                Ok(mut m) => match m.get(key) {
                    None => {
                        m.insert(key.to_owned(), self.peer);
                        return true;
                    }
                    Some(h) => *h,
                },
                Err(_) => return false,
            };
            if !aborted {
                // Only a session from the same host that has received
                // nothing for a while is presumed dead; a live one keeps
                // the file and this offer is refused as "in progress".
                let stale = holder.ip() == self.peer.ip()
                    && self.sh.live.lock().is_ok_and(|live| {
                        live.get(&holder).is_some_and(|(s, act)| {
                            let dead = act.idle() >= TAKEOVER_IDLE;
                            if dead {
                                abort(s);
                            }
                            dead
                        })
                    });
                if !stale {
                    return false;
                }
                aborted = true;
                self.sh.log(&format!(
                    "{}: '{}' was held by {holder} from the same host, silent for {} s or more; ended that connection to take over",
                    self.peer,
                    escape(key),
                    TAKEOVER_IDLE.as_secs()
                ));
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Bounded wait for the old session to checkpoint and let go.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Validates a name and checks it was not offered before in this session.
    fn claim_name(&mut self, raw: &[u8]) -> Result<WireName, Refusal> {
        let name = WireName::from_bytes(raw)
            .map_err(|e| refusal(reject_code::UNSAFE_NAME, format!("unsafe name: {e}")))?;
        if !self.seen.insert(name.as_str().to_owned()) {
            return Err(refusal(
                reject_code::CONFLICT,
                "offered twice in one session",
            ));
        }
        Ok(name)
    }

    fn dir(&mut self, h: DirHeader) -> Result<()> {
        let name = match self.claim_name(&h.path) {
            Ok(n) => n,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        let comps: Vec<&str> = name.components().collect();
        match open_dirs(&self.sh.root, &comps) {
            Ok(_) => {
                self.dirs.push((name, h.clone()));
                self.conn.queue(&Frame::Result {
                    id: h.id,
                    status: result_status::OK,
                    md5: [0; 16],
                    message: String::new(),
                });
                Ok(())
            }
            Err(r) => self.reject(h.id, &h.path, r),
        }
    }

    /// Applies directory modes and mtimes, deepest first, so writing into a
    /// directory no longer changes its mtime afterwards.
    fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(n, _)| std::cmp::Reverse(n.depth()));
        for (name, h) in dirs {
            let comps: Vec<&str> = name.components().collect();
            let applied = open_dirs(&self.sh.root, &comps)
                .map_err(|r| r.1)
                .and_then(|d| {
                    readable_fd(&d)
                        .and_then(|fd| apply_attrs(&fd, h.mode, h.mtime_s, h.mtime_ns))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                self.sh.log(&format!(
                    "{}: cannot set mode/mtime of '{}': {e}",
                    self.peer,
                    escape(name.as_str())
                ));
            }
        }
    }

    fn file(&mut self, h: FileHeader) -> Result<()> {
        let name = match self.claim_name(&h.path) {
            Ok(n) => n,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        let key = name.as_str().to_owned();
        if !self.claim_inflight(&key) {
            return self.reject(
                h.id,
                &h.path,
                refusal(
                    reject_code::IN_PROGRESS,
                    "another session is receiving this file right now; try again later",
                ),
            );
        }
        let guard = InflightGuard {
            map: &self.sh.inflight,
            name: key,
            holder: self.peer,
        };
        let (parents, last) = name.split_last();
        let dir = match self.parent_dir(&parents) {
            Ok(d) => d,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        match self.check_target(&dir, last, &h) {
            Ok(Some(())) => {}
            Ok(None) => {
                self.stats.ok += 1;
                self.stats.skipped += 1;
                self.sh.events.emit(&Event::FileSkipped {
                    path: escape(name.as_str()),
                    bytes: h.size,
                    reason: "identical".into(),
                    peer: Some(self.peer.to_string()),
                });
                self.conn.queue(&Frame::Skip {
                    id: h.id,
                    reason: skip_reason::IDENTICAL,
                });
                self.sh.log(&format!(
                    "{}: skipped '{}': identical content already there",
                    self.peer,
                    escape(name.as_str())
                ));
                return Ok(());
            }
            Err(r) => return self.reject(h.id, &h.path, r),
        }
        let names = partial::Names::for_target(last);
        let opened = match partial::open(&dir, &names, h.size, h.md5) {
            Ok(o) => o,
            Err(e) => return self.reject(h.id, &h.path, io_refusal(&names.part, &e)),
        };
        if let Some(why) = &opened.discarded {
            self.sh.log(&format!(
                "{}: '{}': starting over: {why}",
                self.peer,
                escape(name.as_str())
            ));
        }
        if let Err(r) = self.check_space(h.size - opened.offset) {
            if opened.offset == 0 {
                drop(opened);
                names.discard(&dir);
            }
            return self.reject(h.id, &h.path, r);
        }
        self.conn.queue(&Frame::Accept {
            id: h.id,
            offset: opened.offset,
        });
        self.sh.events.emit(&Event::FileStarted {
            path: escape(name.as_str()),
            bytes: h.size,
            offset: opened.offset,
            peer: Some(self.peer.to_string()),
        });
        self.bar.set_length(self.bar.length().unwrap_or(0) + h.size);
        self.bar.inc(opened.offset);
        let last = last.to_owned();
        self.awaiting.push_back(Awaiting {
            h,
            name,
            last,
            dir,
            names,
            writer: opened.writer,
            offset: opened.offset,
            _guard: guard,
        });
        Ok(())
    }

    /// Opens (creating when missing) the directory `comps` below OUT, or
    /// reuses the one the previous file went into.
    fn parent_dir(&mut self, comps: &[&str]) -> Result<Arc<Dir>, Refusal> {
        if let Some(p) = &self.parent {
            if p.comps.iter().map(String::as_str).eq(comps.iter().copied()) {
                return Ok(p.dir.clone());
            }
        }
        let dir = Arc::new(open_dirs(&self.sh.root, comps)?);
        self.parent = Some(Parent {
            comps: comps.iter().map(|c| (*c).to_owned()).collect(),
            dir: dir.clone(),
            free: None,
            asked: Instant::now(),
        });
        Ok(dir)
    }

    /// Refuses a body of `need` bytes that cannot fit in the directory of
    /// [`Session::parent_dir`]. Asks the file system again when the need is
    /// a large part of what was free, or after a second: other writers
    /// share the disk. Best effort: a full disk while writing is still
    /// reported as such.
    fn check_space(&mut self, need: u64) -> Result<(), Refusal> {
        let Some(p) = self.parent.as_mut() else {
            return Ok(());
        };
        let known = p
            .free
            .filter(|&free| need <= free / 2 && p.asked.elapsed() < Duration::from_secs(1));
        let free = match known {
            Some(free) => free,
            None => {
                let vfs = rustix::fs::fstatvfs(&*p.dir)
                    .map_err(|e| io_refusal("free space", &e.into()))?;
                p.asked = Instant::now();
                vfs.f_bavail.saturating_mul(vfs.f_frsize)
            }
        };
        if need > free {
            p.free = Some(free);
            return Err(refusal(
                reject_code::NO_SPACE,
                format!("not enough space: need {need} bytes, have {free}"),
            ));
        }
        p.free = Some(free - need);
        Ok(())
    }

    /// Decides what to do about whatever sits at the target name:
    /// `Ok(Some(()))` write it, `Ok(None)` skip (identical), `Err` refuse.
    fn check_target(&self, dir: &Dir, last: &str, h: &FileHeader) -> Result<Option<()>, Refusal> {
        match dir.symlink_metadata(last) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_refusal(last, &e)),
            Ok(md) if md.is_symlink() => {
                return Err(refusal(
                    reject_code::CONFLICT,
                    "a symlink sits at the target name; it is never followed or replaced",
                ))
            }
            Ok(md) if !md.is_file() => {
                return Err(refusal(
                    reject_code::CONFLICT,
                    "something other than a regular file sits at the target name",
                ))
            }
            Ok(md) => {
                if md.len() == h.size && self.same_content(dir, last, h) {
                    return Ok(None);
                }
                if !self.sh.cfg.overwrite {
                    return Err(refusal(
                        reject_code::EXISTS,
                        "a different file already exists there (receiver runs without --overwrite)",
                    ));
                }
            }
        }
        Ok(Some(()))
    }

    /// True if the existing file `last` has the MD5 of the offer.
    /// Uses the verified-digest record kept with the file when it is still
    /// current, and hashes the file only when it is not.
    fn same_content(&self, dir: &Dir, last: &str, h: &FileHeader) -> bool {
        let opened = dir.open_with(
            last,
            OpenOptions::new().read(true).follow(FollowSymlinks::No),
        );
        let Ok(file) = opened.map(|f| f.into_std()) else {
            return false;
        };
        if let Some(d) = read_record(&file) {
            return d == h.md5;
        }
        hash_reader(file, h.size, |_| {}).is_ok_and(|d| d == h.md5)
    }

    /// Receives the BODY of the first accepted file and verifies it.
    fn body(&mut self, id: u32, offset: u64, length: u64) -> Result<()> {
        let expected = self
            .awaiting
            .front()
            .map(|a| (a.h.id, a.offset, a.h.size - a.offset));
        if expected != Some((id, offset, length)) {
            let msg = match expected {
                Some((i, o, l)) => format!(
                    "expected BODY id={i} offset={o} length={l}, got BODY id={id} offset={offset} length={length}"
                ),
                None => format!("BODY id={id} without an accepted FILE"),
            };
            let _ = self.conn.send(&Frame::Error {
                code: error_code::PROTOCOL,
                message: msg.clone(),
            });
            bail!("protocol error: {msg}");
        }
        let Some(a) = self.awaiting.pop_front() else {
            bail!("internal error: no accepted file");
        };
        let Awaiting {
            h,
            name,
            last,
            dir,
            names,
            mut writer,
            offset,
            _guard,
        } = a;
        let started = Instant::now();
        let shown = escape(name.as_str());
        self.bar.set_message(shown.clone());
        let mut write_err: Option<io::Error> = None;
        if length >= partial::BLOCK {
            // This body takes a while: what is received goes in place now.
            self.verify_small();
            self.commits.nudge();
        }
        let bar = &self.bar;
        let read = self.conn.read_body(length, |chunk| {
            if write_err.is_none() {
                if let Err(e) = writer.write(chunk) {
                    write_err = Some(e);
                }
            }
            bar.inc(chunk.len() as u64);
            Ok(())
        });
        if let Err(e) = read {
            // Keep what arrived: checkpoint it so the next send resumes.
            let kept = match write_err {
                None => writer.suspend().ok(),
                Some(_) => None,
            };
            let kept = match kept {
                Some(n) => format!("kept {n} bytes to resume"),
                None => {
                    names.discard(&dir);
                    "partial discarded".to_string()
                }
            };
            return Err(fail_session(&mut self.conn, e, "in the middle of a body")
                .context(format!("receiving '{shown}' ({kept})")));
        }
        let ended = match write_err {
            Some(e) => Err(e),
            None => writer.end(),
        };
        let r = Received {
            h,
            name,
            last,
            dir,
            names,
            offset,
            started,
            _guard,
        };
        let failure = match ended {
            Ok(partial::Finished::Held(held)) => {
                let (file, body) = held.into_parts();
                self.small_bytes += body.len();
                self.small.push(Unhashed { r, file, body });
                if self.small.len() >= SMALL_FILES || self.small_bytes >= SMALL_BYTES {
                    self.verify_small();
                }
                return Ok(());
            }
            Ok(partial::Finished::Ready(file, got)) => {
                match verify(r, file, Vec::new(), got) {
                    Ok(v) => self.commits.push(v),
                    Err(f) => self.result_failed(f),
                }
                return Ok(());
            }
            Err(e) => e,
        };
        r.names.discard(&r.dir);
        let message = format!("cannot write '{shown}': {failure}");
        self.result_failed(Failure {
            id: r.h.id,
            shown,
            status: result_status::IO_ERROR,
            md5: [0; 16],
            message,
        });
        Ok(())
    }

    /// Hashes the small files received since the last call, together, and
    /// hands those that check out to the commit thread.
    fn verify_small(&mut self) {
        if self.small.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.small);
        self.small_bytes = 0;
        let bodies: Vec<&[u8]> = batch.iter().map(|u| u.body.as_slice()).collect();
        let digests = crate::md5multi::digests(&bodies);
        for (u, got) in batch.into_iter().zip(digests) {
            match verify(u.r, u.file, u.body, got) {
                Ok(v) => self.commits.push(v),
                Err(f) => self.result_failed(f),
            }
        }
    }

    /// Reports a file that definitely failed and queues its RESULT.
    fn result_failed(&mut self, f: Failure) {
        let frame = failed(self.sh, self.peer, &mut self.stats, f);
        self.conn.queue(&frame);
    }
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.ok += o.ok;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.bytes += o.bytes;
    }
}

/// Writes out the bodies a batch of verified files holds, applies their
/// modes, mtimes and records, makes them durable and puts them in place,
/// and encodes a RESULT for each into `frames`: one fsync for a lone file,
/// else one `syncfs` for the data of the whole batch and one for the
/// renames.
fn commit(
    sh: &Shared,
    peer: SocketAddr,
    mut batch: Vec<Verified<'_>>,
    stats: &mut Stats,
    frames: &mut Vec<u8>,
) {
    let mut answer = |f: Frame| encode(&f, frames);
    batch.retain(|v| match write_verified(v) {
        Ok(()) => true,
        Err(message) => {
            v.r.names.discard(&v.r.dir);
            let shown = escape(v.r.name.as_str());
            answer(failed(sh, peer, stats, io_failure(&v.r, shown, message)));
            false
        }
    });
    if batch.is_empty() {
        return;
    }
    let lone = batch.len() == 1;
    let synced = if lone {
        batch[0].file.sync_all()
    } else {
        syncfs(&sh.root)
    };
    let mut placed = Vec::with_capacity(batch.len());
    let mut lines = String::new();
    for Verified { r: v, file, .. } in batch {
        drop(file);
        let renamed = synced
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
            .and_then(|()| v.dir.rename(&v.names.part, &v.dir, &v.last));
        match renamed {
            Ok(()) => {
                if v.h.size >= partial::BLOCK {
                    // Only files of a block or more ever checkpoint.
                    let _ = v.dir.remove_file(&v.names.state);
                }
                placed.push(v);
            }
            Err(e) => {
                v.names.discard(&v.dir);
                let shown = escape(v.name.as_str());
                let message = format!("cannot place '{shown}': {e}");
                answer(failed(sh, peer, stats, io_failure(&v, shown, message)));
            }
        }
    }
    let dirs_synced = match placed.first() {
        Some(v) if lone => sync_dir(&v.dir),
        Some(_) => syncfs(&sh.root),
        None => Ok(()),
    };
    for v in placed {
        let shown = escape(v.name.as_str());
        if let Err(e) = &dirs_synced {
            // The file is in place with verified content, but the rename
            // may not survive a crash: say so rather than claim success.
            let message = format!("cannot make '{shown}' durable: {e}");
            answer(failed(sh, peer, stats, io_failure(&v, shown, message)));
            continue;
        }
        answer(done(sh, peer, stats, &v, &shown, &mut lines));
    }
    if !lines.is_empty() {
        // One write for the batch's lines.
        sh.progress.suspend(|| print!("{lines}"));
    }
}

/// An I/O failure of a verified file (its RESULT carries the MD5).
fn io_failure(r: &Received<'_>, shown: String, message: String) -> Failure {
    Failure {
        id: r.h.id,
        shown,
        status: result_status::IO_ERROR,
        md5: r.h.md5,
        message,
    }
}

/// Counts and reports a file now in place (its line for stdout goes into
/// `lines`); its RESULT ok.
fn done(
    sh: &Shared,
    peer: SocketAddr,
    stats: &mut Stats,
    v: &Received<'_>,
    shown: &str,
    lines: &mut String,
) -> Frame {
    let h = &v.h;
    stats.ok += 1;
    stats.bytes += h.size - v.offset;
    let secs = v.started.elapsed().as_secs_f64();
    if sh.events.enabled() {
        sh.events.emit(&Event::FileDone {
            path: shown.to_owned(),
            bytes: h.size,
            md5: hex(&h.md5),
            resumed_from: v.offset,
            seconds: secs,
            mb_per_s: mb_per_s(h.size - v.offset, secs),
            peer: Some(peer.to_string()),
        });
    } else {
        let resumed = if v.offset > 0 {
            format!(", resumed at {}", v.offset)
        } else {
            String::new()
        };
        let _ = writeln!(
            lines,
            "received {shown} {} bytes md5 {} ({:.1} MB/s{resumed})",
            h.size,
            hex(&h.md5),
            (h.size - v.offset) as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Frame::Result {
        id: h.id,
        status: result_status::OK,
        md5: h.md5,
        message: String::new(),
    }
}

/// Counts and reports a file that definitely failed; its RESULT.
fn failed(sh: &Shared, peer: SocketAddr, stats: &mut Stats, f: Failure) -> Frame {
    stats.failed += 1;
    sh.log(&format!("{peer}: {}", f.message));
    sh.events.emit(&Event::FileFailed {
        path: f.shown,
        reason: if f.status == result_status::DIGEST_MISMATCH {
            "integrity"
        } else {
            "io"
        }
        .into(),
        message: f.message.clone(),
        peer: Some(peer.to_string()),
    });
    Frame::Result {
        id: f.id,
        status: f.status,
        md5: f.md5,
        message: f.message,
    }
}

/// Files smaller than this get no verified-digest record: re-hashing them
/// when they are offered again costs less than keeping the record.
const RECORD_MIN_SIZE: u64 = crate::cache::MIN_SIZE;

/// Extended attribute holding the digest ftx verified for a file, with the
/// size and mtime it had then: `v1 SIZE MTIME_S.MTIME_NS MD5HEX`.
const RECORD_XATTR: &str = "user.ftx.verified";

/// The record's text for the file's current size and mtime.
fn record_text(md: &std::fs::Metadata, md5: &Md5Digest) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "v1 {} {}.{:09} {}",
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        hex(md5)
    )
}

/// Keeps the verified digest with the file (best effort: a file system
/// without user xattrs just means a re-hash when the file is offered again).
fn write_record(file: &std::fs::File, md5: &Md5Digest) {
    if let Ok(md) = file.metadata() {
        let text = record_text(&md, md5);
        let _ = rustix::fs::fsetxattr(
            file,
            RECORD_XATTR,
            text.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        );
    }
}

/// The digest recorded with the file, if the record matches the file's
/// current size and mtime (any write since changes the mtime).
fn read_record(file: &std::fs::File) -> Option<Md5Digest> {
    let md = file.metadata().ok()?;
    let mut buf = [0u8; 128];
    let n = rustix::fs::fgetxattr(file, RECORD_XATTR, &mut buf).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    let hex_md5 = text.rsplit(' ').next()?;
    let mut d = [0u8; 16];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex_md5.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (record_text(&md, &d) == text).then_some(d)
}

/// A real (not `O_PATH`) descriptor of the directory `dir` itself, for
/// fsync, fchmod and futimens. "." cannot name anything but `dir`.
fn readable_fd(dir: &Dir) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Makes everything written to the file system holding `dir` durable.
fn syncfs(dir: &Dir) -> io::Result<()> {
    Ok(rustix::fs::syncfs(readable_fd(dir)?)?)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Dir) -> io::Result<()> {
    Ok(rustix::fs::fsync(readable_fd(dir)?)?)
}

/// Applies permission bits (0o777 only: never setuid, setgid or sticky) and
/// the modification time to an open file or directory.
fn apply_attrs(
    fd: impl std::os::fd::AsFd,
    mode: u32,
    mtime_s: i64,
    mtime_ns: u32,
) -> io::Result<()> {
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode & 0o777))?;
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: mtime_s,
            tv_nsec: i64::from(mtime_ns.min(999_999_999)),
        },
    };
    rustix::fs::futimens(&fd, &times)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_record_round_trips_and_goes_stale() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        let f = std::fs::File::open(&p).expect("open");
        write_record(&f, &[5; 16]);
        if rustix::fs::fgetxattr(&f, RECORD_XATTR, &mut [0u8; 128]).is_err() {
            return; // no user xattrs on this file system: nothing to check
        }
        assert_eq!(read_record(&f), Some([5; 16]));
        drop(f);
        std::fs::write(&p, b"abd").expect("write");
        let f = std::fs::File::open(&p).expect("open");
        let times = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(5));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|w| w.set_times(times))
            .expect("set mtime");
        assert_eq!(read_record(&f), None);
    }

    #[test]
    fn refusals_classify_errors() {
        let e = io::Error::from_raw_os_error(libc::ELOOP);
        assert_eq!(io_refusal("x", &e).0, reject_code::CONFLICT);
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_refusal("x", &e).0, reject_code::NO_SPACE);
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_refusal("x", &e).0, reject_code::IO);
    }
}
