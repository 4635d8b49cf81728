//! The gate: every connection waits here, on one event-driven thread (the
//! caller of listening command), until its handshake is done (HELLO →
//! WELCOME, and NOISE when a token is set). Only then does it get a session
//! thread and count against `--max-sessions`, so connections that send
//! nothing, trickle, or replay a recorded handshake cost a descriptor and a
//! few hundred bytes each and lock nobody out. A sealed connection leaves
//! the gate only after its first record (READY) opened: the sender holds
//! the session's keys, and since WELCOME's nonce is fresh for every
//! connection, a recorded handshake never gets that far.
//!
//!
//! - a connection has [`HANDSHAKE_TIMEOUT`] from accept to finish its
//!   handshake, whatever it sends meanwhile;
//! - at most [`MAX_PENDING`] connections wait here at once, and at most
//!   [`MAX_PENDING_PER_ADDR`] from one address; beyond that the oldest
//!   waiting one (of that address) is told "busy" and closed, so a flood of
//!   idle connections cannot keep a new one out;
//! - a handshake is at most [`MAX_HANDSHAKE_BYTES`] long;
//! - addresses count by [`addr_key`] (an IPv6 address by its /64).
//!
//! The decisions (what to answer a HELLO, a NOISE) are pure functions in
//! [`super::handshake`]; failed handshakes are counted, logged as counts
//! and slowed down per address by [`super::handshake::Failures`].

use super::handshake::{addr_key, on_hello, on_noise, refused, session_cipher, Failures, Refused};
use super::Host;
use crate::auth;
use crate::protocol::limits::{AGENT, VERSION};
use crate::protocol::{decode, encode, ErrorCode, Frame};
use crate::secure::{self, Cipher, Keys};
use anyhow::{Context, Result};
use polling::{Event, Events, Poller};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a new connection has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections waiting for their handshake at once, in all.
pub const MAX_PENDING: usize = 1024;
/// ... and from one address.
pub const MAX_PENDING_PER_ADDR: usize = 256;
/// The longest handshake (HELLO and NOISE are a few dozen bytes).
pub const MAX_HANDSHAKE_BYTES: usize = 4096;
/// How often a waiting gate looks at its [`super::Shutdown`].
const STOP_POLL: Duration = Duration::from_millis(200);
/// The listener's key in the poller.
const LISTENER: usize = 0;

/// A connection whose handshake is done: its session can start.
pub struct Admitted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Bytes the peer sent after its handshake (its first offers, or
    /// records when sealed).
    pub leftover: Vec<u8>,
    /// The session's keys when it is sealed.
    pub keys: Option<Keys>,
}

/// Where a waiting connection's handshake stands.
enum Stage {
    /// Waiting for HELLO.
    Hello,
    /// WELCOME sent, the session sealed; waiting for NOISE. The
    /// handshake's prologue (HELLO and WELCOME) and cipher.
    Noise(Vec<u8>, Cipher),
    /// NOISE answered; waiting for the sender's first record (READY),
    /// which proves it holds the keys.
    Ready(Keys),
}

/// A connection waiting for its handshake.
struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    deadline: Instant,
    stage: Stage,
}

/// The gate: a poller over the listener and every waiting connection.
pub struct Gate<'a> {
    host: &'a (dyn Host + Sync),
    listener: &'a TcpListener,
    poller: Poller,
    events: Events,
    pending: HashMap<usize, Pending>,
    /// Keys in arrival order (so in deadline order), all and by address;
    /// keys of connections already gone are skipped lazily.
    order: VecDeque<usize>,
    by_addr: HashMap<IpAddr, VecDeque<usize>>,
    next_key: usize,
    admitted: VecDeque<Admitted>,
    /// When accept last failed (out of descriptors): wait before the next.
    accept_backoff: Option<Instant>,
    /// Failed handshakes by address.
    failures: Failures,
}

impl<'a> Gate<'a> {
    pub fn new(listener: &'a TcpListener, host: &'a (dyn Host + Sync)) -> Result<Gate<'a>> {
        let poller = Poller::new().context("cannot create a poller")?;
        listener
            .set_nonblocking(true)
            .context("cannot set up the listener")?;
        // SAFETY: the listener outlives the poller (both borrowed or
        // owned by this gate, the poller dropped first) and is deleted
        // from it in Drop.
        unsafe { poller.add(listener, Event::readable(LISTENER)) }
            .context("cannot watch the listener")?;
        Ok(Gate {
            host,
            listener,
            poller,
            events: Events::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            by_addr: HashMap::new(),
            next_key: LISTENER + 1,
            admitted: VecDeque::new(),
            accept_backoff: None,
            failures: Failures::default(),
        })
    }

    /// The next connection whose handshake is done, or `None` once the
    /// command is asked to stop.
    pub fn next_admitted(&mut self) -> Result<Option<Admitted>> {
        self.next_within(None)
    }

    /// [`Gate::next_admitted`], but `None` also once `wait` (if any) has passed
    /// without a connection done with its handshake.
    pub fn next_within(&mut self, wait: Option<Duration>) -> Result<Option<Admitted>> {
        let until = wait.map(|w| Instant::now() + w);
        loop {
            if self.host.stopping().is_set() {
                return Ok(None);
            }
            if let Some(a) = self.admitted.pop_front() {
                return Ok(Some(a));
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            let now = Instant::now();
            self.expire(now);
            for line in self.failures.due(now) {
                self.host.log(&line);
            }
            let mut wait = STOP_POLL;
            if let Some(d) = self.oldest_deadline() {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if let Some(u) = until {
                wait = wait.min(u.saturating_duration_since(now));
            }
            if let Some(t) = self.accept_backoff {
                let listener = self.listener;
                if now >= t {
                    self.accept_backoff = None;
                    self.poller
                        .modify(listener, Event::readable(LISTENER))
                        .context("cannot watch the listener")?;
                } else {
                    wait = wait.min(t - now);
                }
            }
            self.events.clear();
            match self.poller.wait(&mut self.events, Some(wait)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot wait for connections"),
            }
            let keys: Vec<usize> = self.events.iter().map(|e| e.key).collect();
            for key in keys {
                if key == LISTENER {
                    self.accept_all()?;
                } else {
                    self.readable(key);
                }
            }
        }
    }

    fn oldest_deadline(&mut self) -> Option<Instant> {
        while let Some(&k) = self.order.front() {
            match self.pending.get(&k) {
                Some(p) => return Some(p.deadline),
                None => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Ends every waiting connection past its deadline.
    fn expire(&mut self, now: Instant) {
        while let Some(&k) = self.order.front() {
            let Some(p) = self.pending.get(&k) else {
                self.order.pop_front();
                continue;
            };
            if p.deadline > now {
                break;
            }
            self.order.pop_front();
            let r = refused(
                ErrorCode::Timeout,
                format!(
                    "handshake not finished within {} s of connecting",
                    self.handshake_timeout().as_secs_f32()
                ),
            );
            self.close(k, Some(r), false);
        }
    }

    fn handshake_timeout(&self) -> Duration {
        HANDSHAKE_TIMEOUT.min(self.host.timeout())
    }

    /// Accepts every connection waiting on the listener (a bounded number
    /// per wake-up), then watches the listener again.
    fn accept_all(&mut self) -> Result<()> {
        let listener = self.listener;
        for _ in 0..256 {
            match listener.accept() {
                Ok((stream, peer)) => self.admit_pending(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: back off instead of
                    // spinning on a listener that stays readable.
                    self.host.log(&format!("accept failed: {e}; retrying"));
                    self.accept_backoff = Some(Instant::now() + Duration::from_millis(100));
                    return Ok(());
                }
            }
        }
        self.poller
            .modify(listener, Event::readable(LISTENER))
            .context("cannot watch the listener")
    }

    fn admit_pending(&mut self, stream: TcpStream, peer: SocketAddr) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        // SAFETY: the stream is owned by `self.pending` and deleted from
        // the poller before it is dropped (see `close`).
        if unsafe { self.poller.add(&stream, Event::readable(key)) }.is_err() {
            return;
        }
        let now = Instant::now();
        if let Some(wait) = self.failures.penalty(peer.ip(), now) {
            // An address that keeps failing the handshake waits before its
            // next guess; told so, once per connection, and not logged.
            let _ = self.poller.delete(&stream);
            let mut stream = stream;
            let _ = send_now(
                &mut stream,
                &Frame::Error {
                    code: ErrorCode::Busy.code(),
                    message: format!(
                        "too many failed handshakes from this address; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                },
            );
            return;
        }
        let deadline = now + self.handshake_timeout();
        self.pending.insert(
            key,
            Pending {
                stream,
                peer,
                buf: Vec::new(),
                deadline,
                stage: Stage::Hello,
            },
        );
        self.order.push_back(key);
        let mine = self.by_addr.entry(addr_key(peer.ip())).or_default();
        mine.push_back(key);
        // Caps: the oldest waiting connection (of this address, then of
        // all) makes room.
        if live_len(mine, &self.pending) > MAX_PENDING_PER_ADDR {
            if let Some(old) = oldest_live(mine, &self.pending) {
                self.close(old, Some(crowded()), false);
            }
        }
        if self.pending.len() > MAX_PENDING {
            if let Some(old) = oldest_live(&mut self.order, &self.pending) {
                self.close(old, Some(crowded()), false);
            }
        }
    }

    /// Reads what a waiting connection sent and moves its handshake on.
    fn readable(&mut self, key: usize) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let mut chunk = [0u8; 1024];
        let mut eof = false;
        loop {
            // Never more than one byte past the cap: what a sender sends
            // right after its handshake (a sealed one does not wait) stays
            // in the socket for the session.
            let room = (MAX_HANDSHAKE_BYTES + 1)
                .saturating_sub(p.buf.len())
                .min(chunk.len());
            if room == 0 {
                break;
            }
            match p.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(key, None, false);
                    return;
                }
            }
        }
        // What arrived before an EOF still counts (a HELLO, then the
        // sender's half-close).
        self.advance(key);
        if self
            .pending
            .get(&key)
            .is_some_and(|p| p.buf.len() > MAX_HANDSHAKE_BYTES)
        {
            let r = refused(ErrorCode::Protocol, "handshake too long");
            self.close(key, Some(r), true);
            return;
        }
        if eof {
            if let Some(p) = self.pending.get(&key) {
                let what = match p.stage {
                    Stage::Hello => "HELLO",
                    Stage::Noise(..) => "NOISE (a sender without the token?)",
                    Stage::Ready(..) => "its first encrypted record",
                };
                let line = format!("closed the connection before {what}");
                self.close_logged(key, None, &line);
            }
        }
    }

    /// Handles the frames buffered for a waiting connection.
    fn advance(&mut self, key: usize) {
        loop {
            let Some(p) = self.pending.get_mut(&key) else {
                return;
            };
            if let Stage::Ready(keys) = &p.stage {
                if p.buf.len() < secure::READY_RECORD_LEN {
                    break;
                }
                match keys.open_ready(&p.buf[..secure::READY_RECORD_LEN]) {
                    Ok(true) => {
                        p.buf.drain(..secure::READY_RECORD_LEN);
                        self.done(key);
                    }
                    Ok(false) => {
                        let r = refused(
                            ErrorCode::Protocol,
                            "protocol error: the first record is not READY alone",
                        );
                        self.close(key, Some(r), true);
                    }
                    Err(_) => {
                        let r = refused(
                            ErrorCode::Auth,
                            "authentication failed: the first record did not open",
                        );
                        self.auth_failed(key, r);
                    }
                }
                return;
            }
            let (frame, used) = match decode(&p.buf) {
                Ok(Some(pair)) => pair,
                Ok(None) => break,
                Err(e) => {
                    let r = refused(ErrorCode::Protocol, format!("protocol error: {e}"));
                    self.close(key, Some(r), true);
                    return;
                }
            };
            p.buf.drain(..used);
            let step = match &p.stage {
                Stage::Hello => {
                    let busy = self.host.slots().busy();
                    on_hello(&frame, busy).map(|()| None)
                }
                Stage::Noise(prologue, cipher) => match self.host.token() {
                    Some(token) => {
                        on_noise(&frame, |m| secure::respond(token, prologue, *cipher, m)).map(Some)
                    }
                    None => Err(refused(ErrorCode::Internal, "no token")),
                },
                Stage::Ready(_) => return,
            };
            match step {
                Err(r) if r.code == ErrorCode::Busy => {
                    let n = self.host.slots().active.load(Ordering::SeqCst);
                    let line = format!("refused: already serving {n} sessions (--max-sessions)");
                    self.close_logged(key, Some(r), &line);
                    return;
                }
                Err(r) if r.code == ErrorCode::Auth => {
                    self.auth_failed(key, r);
                    return;
                }
                Err(r) => {
                    self.close(key, Some(r), true);
                    return;
                }
                // HELLO accepted: WELCOME, then NOISE or the session.
                Ok(None) => {
                    let sealed = self.host.token().is_some();
                    let cipher = session_cipher(&frame, self.host.cipher());
                    let flags = match (sealed, cipher) {
                        (false, _) => 0,
                        (true, Cipher::AesGcm) => auth::FLAG_SEALED,
                        (true, Cipher::ChaChaPoly) => auth::FLAG_SEALED | secure::WELCOME_CHACHA,
                    };
                    let mut nonce = [0u8; 16];
                    if getrandom::fill(&mut nonce).is_err() {
                        let r = refused(ErrorCode::Internal, "no randomness from the system");
                        self.close(key, Some(r), true);
                        return;
                    }
                    let welcome = Frame::Welcome {
                        version: VERSION,
                        flags,
                        nonce,
                        agent: AGENT.into(),
                    };
                    if !send_now(&mut p.stream, &welcome) {
                        self.close(key, None, false);
                        return;
                    }
                    if sealed {
                        p.stage = Stage::Noise(secure::prologue(&frame, &welcome), cipher);
                    } else {
                        self.done(key);
                        return;
                    }
                }
                Ok(Some((keys, reply))) => {
                    if !send_now(&mut p.stream, &Frame::Noise { message: reply }) {
                        self.close(key, None, false);
                        return;
                    }
                    p.stage = Stage::Ready(keys);
                }
            }
        }
        if let Some(p) = self.pending.get(&key) {
            if self.poller.modify(&p.stream, Event::readable(key)).is_err() {
                self.close(key, None, false);
            }
        }
    }

    /// A failed handshake: counted against the address (whose first
    /// failure in a while is logged; the rest are logged as counts), then
    /// ERROR 3.
    fn auth_failed(&mut self, key: usize, r: Refused) {
        let Some(p) = self.pending.get(&key) else {
            return;
        };
        let peer = p.peer;
        match self.failures.failed(peer.ip(), Instant::now()) {
            Some(line) => {
                let line = format!("{}; {line}", r.message);
                self.close_logged(key, Some(r), &line);
            }
            None => self.close_quietly(key, Some(r)),
        }
    }

    /// The handshake is done: the connection leaves the gate (with its
    /// keys when sealed).
    fn done(&mut self, key: usize) {
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let keys = match p.stage {
            Stage::Ready(keys) => Some(keys),
            _ => None,
        };
        let _ = self.poller.delete(&p.stream);
        if p.stream.set_nonblocking(false).is_err() {
            return;
        }
        self.admitted.push_back(Admitted {
            stream: p.stream,
            peer: p.peer,
            leftover: p.buf,
            keys,
        });
    }

    /// Ends a waiting connection: the ERROR `r` if any (best effort), the
    /// log line when `log`.
    fn close(&mut self, key: usize, r: Option<Refused>, log: bool) {
        let line = r.as_ref().map(|r| r.message.clone());
        match (log, line) {
            (true, Some(line)) => self.close_logged(key, r, &line),
            _ => self.close_quietly(key, r),
        }
    }

    fn close_logged(&mut self, key: usize, r: Option<Refused>, line: &str) {
        if let Some(p) = self.pending.get(&key) {
            self.host.log(&format!("{}: {line}", p.peer));
        }
        self.close_quietly(key, r);
    }

    fn close_quietly(&mut self, key: usize, r: Option<Refused>) {
        let Some(mut p) = self.pending.remove(&key) else {
            return;
        };
        let _ = self.poller.delete(&p.stream);
        if let Some(r) = r {
            let _ = send_now(
                &mut p.stream,
                &Frame::Error {
                    code: r.code.code(),
                    message: r.message,
                },
            );
        }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let _ = self.poller.delete(self.listener);
        for p in self.pending.values() {
            let _ = self.poller.delete(&p.stream);
        }
    }
}

/// The refusal of a connection evicted to make room.
fn crowded() -> Refused {
    refused(
        ErrorCode::Busy,
        "busy: too many connections waiting to greet, try again later",
    )
}

/// The oldest key of `q` still pending (dropping gone ones from its front).
fn oldest_live(q: &mut VecDeque<usize>, pending: &HashMap<usize, Pending>) -> Option<usize> {
    while let Some(&k) = q.front() {
        if pending.contains_key(&k) {
            return Some(k);
        }
        q.pop_front();
    }
    None
}

/// Keys of `q` still pending (dropping gone ones from its front first).
fn live_len(q: &mut VecDeque<usize>, pending: &HashMap<usize, Pending>) -> usize {
    oldest_live(q, pending);
    if q.len() > 2 * MAX_PENDING_PER_ADDR {
        q.retain(|k| pending.contains_key(k));
    }
    q.iter().filter(|k| pending.contains_key(k)).count()
}

/// Writes a small frame to a non-blocking socket now; false if it did not
/// all go (a fresh connection's send buffer takes a WELCOME or an ERROR).
fn send_now(stream: &mut TcpStream, frame: &Frame) -> bool {
    let mut bytes = Vec::new();
    encode(frame, &mut bytes);
    matches!(stream.write(&bytes), Ok(n) if n == bytes.len())
}
