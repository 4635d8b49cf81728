//! Live connections: the registry of sessions being served (so an
//! interrupt can end them), busy refusals and eviction (a newcomer takes
//! the slot of the session that has made no progress for longest), and
//! the signal handler that ends every session. Connections before their
//! handshake are the gate's ([`super::gate`]).

use super::types::*;
use crate::conn::Conn;
use crate::net::{self};
use crate::protocol::ErrorCode;
use crate::protocol::Frame;
use anyhow::Result;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// On SIGINT or SIGTERM: stop accepting, end every session (each one
/// checkpoints the file it was receiving), wait for them, exit 130.
pub(super) fn watch_signals(shared: Arc<Shared>) -> Result<()> {
    crate::exit::on_interrupt(move || {
        shared.log("interrupted: checkpointing partial files, then exiting");
        shared.stopping.trigger();
        end_sessions(&shared);
    })
}

/// Ends every live connection (each session checkpoints the file it was
/// receiving) and waits, bounded, for the sessions to finish.
pub(super) fn end_sessions(shared: &Shared) {
    if let Ok(live) = shared.live.lock() {
        for l in live.values() {
            net::abort(&l.stream);
        }
    }
    // Bounded wait for the sessions to write their checkpoints.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session may be evicted for a newcomer only after this long without
/// progress (so two newcomers never evict each other).
pub(super) const EVICT_AFTER: Duration = Duration::from_secs(5);

/// The session to evict, of those `(peer, time without progress, already
/// evicted)`: the one without progress for longest, and for at least
/// [`EVICT_AFTER`]. Pure.
pub(super) fn pick_victim(
    sessions: impl IntoIterator<Item = (SocketAddr, Duration, bool)>,
) -> Option<(SocketAddr, Duration)> {
    sessions
        .into_iter()
        .filter(|(_, still, evicted)| !evicted && *still >= EVICT_AFTER)
        .max_by_key(|(_, still, _)| *still)
        .map(|(peer, still, _)| (peer, still))
}

impl Shared {
    /// `Some(sessions)` when every slot is taken and no session may be
    /// evicted: the answer to a HELLO is then "busy".
    pub(super) fn busy(&self) -> Option<usize> {
        let n = self.active.load(Ordering::SeqCst);
        (n >= self.cfg.max_sessions && self.victim().is_none()).then_some(n)
    }

    fn victim(&self) -> Option<(SocketAddr, Duration)> {
        let live = self.live.lock().ok()?;
        pick_victim(
            live.iter()
                .map(|(p, l)| (*p, l.moved.idle(), l.evicted.load(Ordering::SeqCst))),
        )
    }

    /// Ends the session without progress for longest (see [`pick_victim`])
    /// so that `newcomer` can have its slot; false if there is none. The
    /// evicted session tells its sender "busy" and keeps its partials.
    pub(super) fn evict_for(&self, newcomer: SocketAddr) -> bool {
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
        self.log(&format!(
            "{peer}: evicted after {} s without progress: every session slot was taken and {newcomer} asked for one",
            still.as_secs()
        ));
        true
    }
}

/// Registers a connection in [`Shared::live`] for as long as it lives.
pub(super) struct LiveGuard<'a> {
    pub(super) sh: &'a Shared,
    pub(super) peer: SocketAddr,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.sh.live.lock() {
            live.remove(&self.peer);
        }
    }
}

/// Tells a connection over `--max-sessions` why it is turned away.
pub(super) fn refuse_busy(stream: TcpStream, n: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut conn = Conn::new(stream);
    let _ = conn.send(&Frame::Error {
        code: ErrorCode::Busy.code(),
        message: format!("receiver busy: {n} sessions already running, try again later"),
    });
}
