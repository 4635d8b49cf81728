//! A connection of one attempt: the handshake (HELLO, WELCOME, NOISE) and
//! the reader thread (`ftx-reader`) that passes the receiver's frames to
//! the session thread.

use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::exit::{Exit, ExitError};
use crate::protocol::limits::{AGENT, VERSION, WELCOME_FLAGS};
use crate::protocol::{ErrorCode, Frame};
use crate::secure::{Cipher, Initiator, Wire, HELLO_CHACHA, WELCOME_CHACHA};
use anyhow::{Context, Result};
use std::sync::mpsc;

/// Reads the receiver's frames into the session's channel until the
/// connection ends.
pub(super) fn spawn_reader(stream: Wire, tx: mpsc::Sender<Msg>, gen: u64) -> Result<()> {
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

/// HELLO → WELCOME, then, when the receiver has a token, [`seal`].
pub(super) fn handshake(
    conn: &mut Conn<Wire>,
    target: &str,
    token: Option<&crate::auth::Token>,
    cipher: Option<Cipher>,
) -> Result<(), Broken> {
    // With a token, say whether this side would rather have ChaCha20 (no
    // AES instructions here); the receiver picks.
    let chacha = token.is_some() && Cipher::preferred(cipher) == Cipher::ChaChaPoly;
    let hello = Frame::Hello {
        version: VERSION,
        flags: if chacha { HELLO_CHACHA } else { 0 },
        agent: AGENT.into(),
    };
    conn.send(&hello)
        .with_context(|| format!("cannot greet {target}"))?;
    let welcome = conn
        .expect_frame()
        .with_context(|| format!("no greeting from {target}"))?;
    let flags = match &welcome {
        Frame::Welcome { version, .. } if *version != VERSION => {
            return Err(lasting(anyhow::anyhow!(
                "{target} speaks protocol version {version}, this ftx speaks {VERSION}"
            )))
        }
        Frame::Welcome { flags, .. } => *flags,
        Frame::Error { code, message } => {
            return Err(unauthenticated(target, token, *code, message))
        }
        other => {
            return Err(lasting(anyhow::anyhow!(
                "{target} answered HELLO with {}: not an ftx receiver?",
                other.name()
            )))
        }
    };
    let unknown = flags & !WELCOME_FLAGS;
    if unknown != 0 {
        return Err(lasting(anyhow::anyhow!(
            "{target} asks for something this ftx does not do: unsupported WELCOME flags {unknown:#010x}"
        )));
    }
    let sealed = flags & crate::auth::FLAG_SEALED != 0;
    let token = match (token, sealed) {
        (None, false) => return Ok(()),
        (Some(t), true) => t,
        (None, true) => {
            return Err(lasting(
                ExitError::new(
                    Exit::Auth,
                    "the receiver requires a token: set FTX_TOKEN or use --token-file",
                )
                .into(),
            ))
        }
        (Some(_), false) => {
            return Err(lasting(
                ExitError::new(
                    Exit::Auth,
                    format!(
                        "{target} has no token, so the session would not be encrypted: \
                         give the receiver the same token, or unset FTX_TOKEN / drop --token-file \
                         to send in the clear"
                    ),
                )
                .into(),
            ))
        }
    };
    seal(conn, target, token, &hello, &welcome, flags)
}

/// NOISE both ways, after HELLO and WELCOME (with `flags`): the session's
/// keys; from then on the connection is sealed.
fn seal(
    conn: &mut Conn<Wire>,
    target: &str,
    token: &crate::auth::Token,
    hello: &Frame,
    welcome: &Frame,
    flags: u32,
) -> Result<(), Broken> {
    let cipher = if flags & WELCOME_CHACHA != 0 {
        Cipher::ChaChaPoly
    } else {
        Cipher::AesGcm
    };
    let prologue = crate::secure::prologue(hello, welcome);
    let (init, first) =
        Initiator::start(token, &prologue, cipher).map_err(|e| lasting(anyhow::Error::new(e)))?;
    conn.send(&Frame::Noise { message: first })?;
    match conn
        .expect_frame()
        .with_context(|| format!("no answer to the encrypted handshake from {target}"))?
    {
        Frame::Noise { message } => {
            // A receiver with another token answers ERROR 3, never NOISE:
            // a reply that does not open was changed on the way (retried).
            let keys = init.finish(&message).map_err(|_| Broken {
                err: anyhow::anyhow!(
                    "the encrypted handshake with {target} failed: its reply did not authenticate \
                     (changed on the way?)"
                ),
                retry: true,
                reset: false,
            })?;
            if conn.buffered() != 0 {
                return Err(lasting(anyhow::anyhow!(
                    "{target} sent bytes before the encrypted session began"
                )));
            }
            conn.get_ref().seal(keys, &[]);
            // Key confirmation: READY alone in the first record; only then
            // does the receiver give this connection a session slot.
            conn.get_ref()
                .send_ready()
                .with_context(|| format!("cannot greet {target}"))?;
            Ok(())
        }
        Frame::Error { code, message } => Err(unauthenticated(target, Some(token), code, &message)),
        other => Err(lasting(anyhow::anyhow!(
            "{target} answered NOISE with {}: not an ftx receiver?",
            other.name()
        ))),
    }
}

/// An ERROR that came before the handshake was done. With a token it is
/// not authenticated (anyone on the path could have sent it), and said so:
/// "authentication failed" and "version" stay final (exit 6, exit 1), and
/// everything else, "tampered" included, is transient, retried within
/// `--retry-for`.
fn unauthenticated(
    target: &str,
    token: Option<&crate::auth::Token>,
    code: u16,
    message: &str,
) -> Broken {
    let shown = crate::sanitize::escape(message);
    let Some(_) = token else {
        return peer_error(code, message)
            .context(format!("{target} refused the session"))
            .into();
    };
    let note = "not authenticated: sent before the encrypted session began";
    match ErrorCode::from_code(code) {
        Some(ErrorCode::Auth) => {
            let why = format!(
                "{target} refused the token: it holds another one, or the handshake was changed on \
                 the way (it said: {shown}; {note})"
            );
            lasting(ExitError::new(Exit::Auth, why).into())
        }
        Some(ErrorCode::Version) => lasting(anyhow::anyhow!(
            "{target} refused the session: {shown} ({note})"
        )),
        Some(c) if c.transient() => peer_error(code, message)
            .context(format!("{target} refused the session ({note})"))
            .into(),
        _ => Broken {
            err: anyhow::anyhow!(
                "{target} ended the handshake with ERROR {code}: {shown} ({note}; retrying)"
            ),
            retry: true,
            reset: false,
        },
    }
}

/// A failure that trying again cannot help.
fn lasting(err: anyhow::Error) -> Broken {
    Broken {
        err,
        retry: false,
        reset: false,
    }
}
