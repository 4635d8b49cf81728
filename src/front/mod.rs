//! The listening front every listening command shares (`ftx recv`, `ftx
//! serve`, `ftx send --listen`), and the dialer's side of the same
//! handshake: who dialed decides only the handshake (the dialer greets),
//! never who offers files (see PROTOCOL.md, "Who dials and who offers").
//!
//! - `gate.rs`: every accepted connection waits there until its handshake
//!   is done (deadline, caps, token, encryption); `handshake.rs` its
//!   decisions, pure.
//! - `dial.rs`: the dialer's handshake (HELLO, WELCOME, NOISE, READY) and
//!   its first frame, PUSH or PULL.
//! - this file: [`Host`] (what the gate asks of the command it serves),
//!   [`Slots`] (live sessions, `--max-sessions`, eviction), [`Shutdown`],
//!   and [`Opened`], a connection whose handshake is done, whichever way
//!   it was dialed.

pub mod dial;
mod gate;
mod handshake;

pub use gate::{Admitted, Gate};
pub(crate) use handshake::addr_key;

use crate::auth::Token;
use crate::conn::Conn;
use crate::net::{self, Activity, Deadlined};
use crate::protocol::ErrorCode;
use crate::secure::{Cipher, Wire};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Asks a listening command (or one started with [`crate::recv::serve`])
/// to stop: it stops accepting, ends its sessions (each checkpoints what
/// it holds) and returns. Clones share the same flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Asks the command to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the gate needs of the command it admits connections for.
pub trait Host {
    /// Set when the command stops: the gate returns.
    fn stopping(&self) -> &Shutdown;
    /// A line for the command's log (stderr, beside any progress bars).
    fn log(&self, line: &str);
    /// `--timeout`: the handshake gets at most this (and at most 10 s).
    fn timeout(&self) -> Duration;
    /// The token: with one, every session is sealed.
    fn token(&self) -> Option<&Token>;
    /// `--cipher`, if given.
    fn cipher(&self) -> Option<Cipher>;
    /// The live sessions.
    fn slots(&self) -> &Slots;
}

/// The [`Host`] of a listening command that logs to stderr (`ftx serve`,
/// `ftx send --listen`).
pub struct Listening {
    timeout: Duration,
    token: Option<Token>,
    cipher: Option<Cipher>,
    stopping: Shutdown,
    /// The live sessions.
    pub slots: Slots,
}

impl Listening {
    /// With `--timeout`, the token, `--cipher` and `--max-sessions`.
    pub fn new(
        timeout: Duration,
        token: Option<Token>,
        cipher: Option<Cipher>,
        max_sessions: usize,
    ) -> Listening {
        Listening {
            timeout,
            token,
            cipher,
            stopping: Shutdown::default(),
            slots: Slots::new(max_sessions),
        }
    }
}

impl Host for Listening {
    fn stopping(&self) -> &Shutdown {
        &self.stopping
    }
    fn log(&self, line: &str) {
        eprintln!("ftx: {line}");
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }
    fn cipher(&self) -> Option<Cipher> {
        self.cipher
    }
    fn slots(&self) -> &Slots {
        &self.slots
    }
}

/// A session being served, as the others see it.
pub struct Live {
    /// The socket (a clone of the session's), to end it.
    pub stream: TcpStream,
    /// When bytes last arrived.
    pub activity: Activity,
    /// When the session last made progress: file bytes, or an entry
    /// accepted, skipped, verified or created.
    pub moved: Activity,
    /// Set when a newcomer took its slot.
    pub evicted: Arc<AtomicBool>,
}

/// A session may be evicted for a newcomer only after this long without
/// progress (so two newcomers never evict each other).
pub const EVICT_AFTER: Duration = Duration::from_secs(5);

/// The live sessions of one listening command: how many, which, and who
/// gives up its slot when all are taken (`--max-sessions`).
pub struct Slots {
    /// `--max-sessions`.
    pub max: usize,
    /// Sessions running (their handshake done).
    pub active: AtomicUsize,
    /// The connections being served, so an interrupt can end them and a
    /// newcomer can evict one that makes no progress.
    pub live: Mutex<HashMap<SocketAddr, Live>>,
}

/// The session to evict, of those `(peer, time without progress, already
/// evicted)`: the one without progress for longest, and for at least
/// [`EVICT_AFTER`]. Pure.
pub fn pick_victim(
    sessions: impl IntoIterator<Item = (SocketAddr, Duration, bool)>,
) -> Option<(SocketAddr, Duration)> {
    sessions
        .into_iter()
        .filter(|(_, still, evicted)| !evicted && *still >= EVICT_AFTER)
        .max_by_key(|(_, still, _)| *still)
        .map(|(peer, still, _)| (peer, still))
}

impl Slots {
    /// No session yet, at most `max`.
    pub fn new(max: usize) -> Slots {
        Slots {
            max,
            active: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(sessions)` when every slot is taken and no session may be
    /// evicted: the answer to a HELLO is then "busy".
    pub fn busy(&self) -> Option<usize> {
        let n = self.active.load(Ordering::SeqCst);
        (n >= self.max && self.victim().is_none()).then_some(n)
    }

    fn victim(&self) -> Option<(SocketAddr, Duration)> {
        let live = self.live.lock().ok()?;
        pick_victim(
            live.iter()
                .map(|(p, l)| (*p, l.moved.idle(), l.evicted.load(Ordering::SeqCst))),
        )
    }

    /// Takes a slot for `peer`, evicting the session without progress for
    /// longest (see [`pick_victim`]) when all are taken; `Err(sessions)`
    /// when none may be evicted. The evicted session tells its peer
    /// "busy" and keeps its partials. A taken slot is given back with
    /// [`Slots::release`].
    pub fn take(&self, peer: SocketAddr, log: impl Fn(&str)) -> Result<(), usize> {
        let n = self.active.fetch_add(1, Ordering::SeqCst);
        if n >= self.max && !self.evict_for(peer, log) {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return Err(n);
        }
        Ok(())
    }

    /// Gives a slot back.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    fn evict_for(&self, newcomer: SocketAddr, log: impl Fn(&str)) -> bool {
        let Ok(live) = self.live.lock() else {
            return false;
        };
        let Some((peer, still)) = pick_victim(
            live.iter()
                .map(|(p, l)| (*p, l.moved.idle(), l.evicted.load(Ordering::SeqCst))),
        ) else {
            return false;
        };
        let Some(l) = live.get(&peer) else {
            return false;
        };
        l.evicted.store(true, Ordering::SeqCst);
        // Its reads end (EOF); it answers ERROR 4 and closes.
        let _ = l.stream.shutdown(std::net::Shutdown::Read);
        drop(live);
        log(&format!(
            "{peer}: evicted after {} s without progress: every session slot was taken and {newcomer} asked for one",
            still.as_secs()
        ));
        true
    }

    /// Registers a session in [`Slots::live`] for as long as the guard
    /// lives; its clone of the socket ends it on an interrupt or an
    /// eviction.
    pub fn register(&self, peer: SocketAddr, live: Live) -> LiveGuard<'_> {
        if let Ok(mut map) = self.live.lock() {
            map.insert(peer, live);
        }
        LiveGuard { slots: self, peer }
    }

    /// Ends every live connection (each session checkpoints the file it
    /// was receiving) and waits, bounded, for the sessions to finish.
    pub fn end_all(&self) {
        if let Ok(live) = self.live.lock() {
            for l in live.values() {
                net::abort(&l.stream);
            }
        }
        // Bounded wait for the sessions to write their checkpoints.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Keeps a connection in [`Slots::live`] for as long as it lives.
pub struct LiveGuard<'a> {
    slots: &'a Slots,
    peer: SocketAddr,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.slots.live.lock() {
            live.remove(&self.peer);
        }
    }
}

/// Tells a connection over `--max-sessions` why it is turned away.
pub fn refuse_busy(stream: TcpStream, n: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut conn = Conn::new(stream);
    conn.send_error(
        ErrorCode::Busy,
        format!("busy: {n} sessions already running, try again later"),
    );
}

/// A connection whose handshake is done, whichever side dialed: the
/// socket (for the live registry), the connection (sealed or plain) and
/// the bytes the peer sent after its handshake that were read already.
pub struct Opened {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The socket.
    pub stream: TcpStream,
    /// The connection: sealed when the session is.
    pub wire: Wire,
    /// Frames (of a plain session) read past the handshake.
    pub leftover: Vec<u8>,
    /// Sealed.
    pub sealed: bool,
}

impl Opened {
    /// A connection the gate admitted.
    pub fn admitted(a: Admitted) -> std::io::Result<Opened> {
        let Admitted {
            stream,
            peer,
            leftover,
            keys,
        } = a;
        let wire = Wire::new(stream.try_clone()?);
        let sealed = keys.is_some();
        let leftover = match keys {
            Some(keys) => {
                // The gate opened the dialer's record 0 (READY).
                wire.seal_after(keys, &leftover, 1);
                Vec::new()
            }
            None => leftover,
        };
        Ok(Opened {
            peer,
            stream,
            wire,
            leftover,
            sealed,
        })
    }

    /// The framed connection, with `--timeout` on every read (stamping
    /// `activity`) and the frame deadline.
    pub fn conn(self, timeout: Duration, activity: Activity) -> Conn<Deadlined> {
        Conn::with_buffered(Deadlined::new(self.wire, timeout, activity), &self.leftover)
    }
}
