//! Accepting connections: admission (`--max-sessions`, busy refusals),
//! the handshake (HELLO, WELCOME, AUTH) with its deadline, and the signal
//! handler that ends every session.

use super::report::*;
use super::types::*;
use crate::auth;
use crate::conn::Conn;
use crate::net::{self, Deadlined};
use crate::protocol::limits::{HELLO_FLAGS, VERSION};
use crate::protocol::ErrorCode;
use crate::protocol::Frame;
use anyhow::{bail, Context, Result};
use std::io::{self};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a new connection has to send its HELLO.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Accepts one connection, backing off (not spinning) when out of file
/// descriptors or on other transient errors; `None` once the receiver is
/// asked to stop (checked at least every [`STOP_POLL`]).
pub(super) fn accept(
    listener: &TcpListener,
    shared: &Shared,
) -> Result<Option<(TcpStream, SocketAddr)>> {
    let mut backoff = Duration::from_millis(10);
    loop {
        if shared.stopping.is_set() {
            return Ok(None);
        }
        if !net::wait_readable(listener, STOP_POLL) {
            continue;
        }
        match listener.accept() {
            Ok(pair) => return Ok(Some(pair)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.log(&format!("accept failed: {e}; retrying"));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How often a waiting accept loop looks at its [`Shutdown`].
const STOP_POLL: Duration = Duration::from_millis(200);

/// Tells a connection over `--max-sessions` why it is turned away.
pub(super) fn refuse_busy(stream: TcpStream, n: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut conn = Conn::new(stream);
    let _ = conn.send(&Frame::Error {
        code: ErrorCode::Busy.code(),
        message: format!("receiver busy: {n} sessions already running, try again later"),
    });
}

/// HELLO → WELCOME (→ AUTH when a token is set).
pub(super) fn handshake(conn: &mut Conn<Deadlined>, sh: &Shared) -> Result<()> {
    let hello = match conn.read_frame() {
        Ok(Some(f)) => f,
        Ok(None) => bail!("closed the connection before HELLO"),
        Err(e) => return Err(fail_session(conn, e, "before HELLO")),
    };
    match hello {
        Frame::Hello { version, flags, .. } if version == VERSION => {
            let unknown = flags & !HELLO_FLAGS;
            if unknown != 0 {
                // Never ignored: a flag asks for something this receiver
                // does not do.
                let message = format!("unsupported HELLO flags {unknown:#010x}");
                let _ = conn.send(&Frame::Error {
                    code: ErrorCode::Protocol.code(),
                    message: message.clone(),
                });
                bail!("{message}");
            }
        }
        Frame::Hello { version, .. } => {
            let _ = conn.send(&Frame::Error {
                code: ErrorCode::Version.code(),
                message: format!(
                    "unsupported protocol version {version}, this receiver speaks {VERSION}"
                ),
            });
            bail!("unsupported protocol version {version}");
        }
        other => {
            let _ = conn.send(&Frame::Error {
                code: ErrorCode::Protocol.code(),
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
        agent: crate::protocol::limits::AGENT.into(),
    })
    .context("cannot answer HELLO")?;
    if let Some(token) = &sh.cfg.token {
        let proof = match conn.read_frame() {
            Ok(Some(Frame::Auth { mac })) => auth::verify(token, &nonce, &mac),
            Ok(Some(other)) => {
                let _ = conn.send(&Frame::Error {
                    code: ErrorCode::Auth.code(),
                    message: format!("authentication required, got {}", other.name()),
                });
                bail!(
                    "authentication failed: sender sent {} instead of AUTH (no token?)",
                    other.name()
                );
            }
            Ok(None) => bail!("closed the connection before AUTH"),
            Err(e) => return Err(fail_session(conn, e, "before AUTH")),
        };
        if !proof {
            let _ = conn.send(&Frame::Error {
                code: ErrorCode::Auth.code(),
                message: "authentication failed: wrong token".into(),
            });
            bail!("authentication failed: wrong token");
        }
    }
    Ok(())
}
