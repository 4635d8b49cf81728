//! A connection of one attempt: the reader thread (`ftx-reader`) that passes the receiver's frames to
//! the session thread.

use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::protocol::Frame;
use crate::secure::Wire;
use anyhow::{Context, Result};
use std::sync::mpsc;

/// Frames passed on in one message at most.
const ANSWERS_MAX: usize = 256;

/// Reads the receiver's frames into the session's channel until the
/// connection ends.
pub(super) fn spawn_reader(stream: Wire, tx: mpsc::Sender<Mail>, gen: u64) -> Result<()> {
    std::thread::Builder::new()
        .name("ftx-reader".into())
        .spawn(move || {
            let mut conn = Conn::new(stream);
            loop {
                // A frame, and those that came with it (bounded).
                let mut batch = Vec::new();
                let mut end = false;
                while !end && batch.len() < ANSWERS_MAX {
                    let msg = if batch.is_empty() {
                        match conn.read_frame() {
                            Ok(Some(f)) => Ok(f),
                            Ok(None) => Err(ConnError::Eof("the session")),
                            Err(e) => Err(e),
                        }
                    } else {
                        match conn.buffered_frame() {
                            Ok(Some(f)) => Ok(f),
                            Ok(None) => break,
                            Err(e) => Err(e),
                        }
                    };
                    end = matches!(msg, Err(_) | Ok(Frame::Error { .. }));
                    if end {
                        // The receiver is gone or giving up: unblock a body
                        // that is being sent at this moment instead of
                        // letting it wait for a window that will never open.
                        let _ = conn.get_ref().shutdown(std::net::Shutdown::Both);
                    }
                    batch.push(msg);
                }
                if tx.send(Mail::Answers(gen, batch)).is_err() || end {
                    return;
                }
            }
        })
        .context("cannot start the reader thread")?;
    Ok(())
}

/// What a served session ends with when the sender would open another one
/// (to offer what is left): the getter calls again for it (END said
/// "more"). Not a failure.
#[derive(Debug, thiserror::Error)]
#[error("the rest is for the getter's next call")]
pub(crate) struct HandedOver;

pub(super) fn handed_over() -> Broken {
    Broken {
        err: HandedOver.into(),
        retry: false,
        reset: false,
    }
}

/// `--listen`: the next receiver that calls in, its handshake done (in
/// the gate, with its caps and deadline) and its first frame PULL without
/// paths. A caller that asks for anything else is told so (ERROR 8) and
/// the next call is taken; none within `wait` (the first call is waited
/// for without end) is exit 3.
pub(super) fn take_call(
    gate: &(dyn Calls + Sync + '_),
    wait: Option<std::time::Duration>,
    timeout: std::time::Duration,
    at: &str,
) -> Result<Conn<Wire>, Broken> {
    use crate::exit::{Exit, ExitError};
    use crate::protocol::ErrorCode;
    let until = wait.map(|w| std::time::Instant::now() + w);
    loop {
        let left = until.map(|u| u.saturating_duration_since(std::time::Instant::now()));
        let admitted = gate.next_call(left)?;
        let Some(a) = admitted else {
            return Err(Broken {
                err: ExitError::new(
                    Exit::Connect,
                    format!(
                        "no receiver called in on {at} within {} s",
                        wait.unwrap_or_default().as_secs()
                    ),
                )
                .into(),
                retry: false,
                reset: false,
            });
        };
        let o = crate::front::Opened::admitted(a)?;
        let peer = o.peer;
        crate::net::tune(&o.stream, timeout)?;
        let mut conn = Conn::with_buffered(o.wire, &o.leftover);
        let refuse = |conn: &mut Conn<Wire>, code: ErrorCode, msg: &str| {
            conn.send_error(code, msg.to_owned());
            eprintln!("ftx: the call from {peer}: refused: {msg}");
        };
        match conn.expect_frame() {
            Ok(Frame::Pull {
                flags: 0,
                parts: 0,
                paths,
                ..
            }) if paths.is_empty() && conn.buffered() == 0 => return Ok(conn),
            Ok(Frame::Pull { .. }) => refuse(
                &mut conn,
                ErrorCode::Refused,
                "this is `ftx send --listen`: it offers what it was started with, to `ftx recv --connect` (no paths, no listing, no -j)",
            ),
            Ok(Frame::Push) => refuse(
                &mut conn,
                ErrorCode::Refused,
                "this is `ftx send --listen`: it offers files and takes none",
            ),
            Ok(other) => refuse(
                &mut conn,
                ErrorCode::Protocol,
                &format!("expected PULL after the handshake, got {}", other.name()),
            ),
            Err(e) => eprintln!("ftx: the call from {peer}: {e}"),
        }
    }
}
