//! Live connections: the registry of sessions being served (so an
//! interrupt can end them), busy refusals, and the signal handler that
//! ends every session. Connections before their handshake are the
//! gate's ([`super::gate`]).

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
        for (s, _) in live.values() {
            net::abort(s);
        }
    }
    // Bounded wait for the sessions to write their checkpoints.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
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
