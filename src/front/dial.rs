//! The dialer's side of the handshake (HELLO, WELCOME, then NOISE and
//! READY when sealed) and its first frame (PUSH or PULL), whoever will
//! offer files afterwards; and how a broken attempt is judged (retry or
//! not), which every dialer shares.

use crate::conn::{Conn, ConnError};
use crate::exit::{Exit, ExitError};
use crate::protocol::limits::{AGENT, VERSION, WELCOME_FLAGS};
use crate::protocol::{ErrorCode, Frame};
use crate::sanitize::escape;
use crate::secure::{Cipher, Initiator, Wire, HELLO_CHACHA, WELCOME_CHACHA};
use anyhow::Context;

/// An attempt that ended early, and whether trying again can help.
pub struct Broken {
    /// What happened.
    pub err: anyhow::Error,
    /// Trying again can help.
    pub retry: bool,
    /// A write found the connection reset: the receiver may have said why
    /// (an ERROR) just before it closed.
    pub reset: bool,
}

impl<E: Into<anyhow::Error>> From<E> for Broken {
    fn from(e: E) -> Self {
        let err = e.into();
        let tampered = err
            .chain()
            .find_map(|c| match c.downcast_ref::<ConnError>() {
                Some(ConnError::Tampered(r)) => Some(r.to_string()),
                _ => None,
            });
        if let Some(why) = tampered {
            // Not a network fault: someone on the path is changing the
            // bytes. Trying again would only give them another go.
            let err = ExitError::new(Exit::Integrity, format!("{why}; not retrying"));
            return Broken {
                err: err.into(),
                retry: false,
                reset: false,
            };
        }
        let retry = transient(&err);
        let reset = err
            .chain()
            .any(|c| matches!(c.downcast_ref::<ConnError>(), Some(ConnError::Reset)));
        if reset {
            // Said the way a person asks about it, not as "Broken pipe".
            let err = anyhow::anyhow!(
                "connection reset by the receiver (it crashed, was stopped, or dropped the session)"
            );
            return Broken {
                err,
                retry,
                reset: true,
            };
        }
        Broken {
            err,
            retry,
            reset: false,
        }
    }
}

/// True when the error is about the connection, not about what was sent:
/// cannot connect, reset, EOF, timeout, receiver busy.
pub fn transient(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        if let Some(c) = e.downcast_ref::<ConnError>() {
            return !matches!(c, ConnError::Frame(_));
        }
        if let Some(x) = e.downcast_ref::<ExitError>() {
            return x.exit == Exit::Connect && !x.lasting;
        }
        if let Some(p) = e.downcast_ref::<PeerError>() {
            return ErrorCode::from_code(p.code).is_some_and(ErrorCode::transient);
        }
        e.downcast_ref::<std::io::Error>().is_some()
    })
}

/// True when the receiver turned the session away as busy (every session
/// slot taken, or too many connections waiting to greet).
pub fn busy(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<PeerError>()
            .is_some_and(|p| p.code == ErrorCode::Busy.code())
    })
}

/// The peer ended the session with ERROR.
#[derive(Debug, thiserror::Error)]
#[error("peer ended the session: {message} (code {code})")]
pub struct PeerError {
    /// The ERROR code.
    pub code: u16,
    /// Its message, escaped.
    pub message: String,
}

/// The error for an ERROR frame from the peer (with the exit status its
/// code calls for).
pub fn peer_error(code: u16, message: &str) -> anyhow::Error {
    let e = PeerError {
        code,
        message: escape(message),
    };
    match ErrorCode::from_code(code) {
        Some(ErrorCode::Auth) => return ExitError::new(Exit::Auth, e.to_string()).into(),
        Some(ErrorCode::Tampered) => {
            let why = format!("{e}; not retrying");
            return ExitError::new(Exit::Integrity, why).into();
        }
        _ => {}
    }
    anyhow::Error::new(e)
}

/// HELLO → WELCOME, then, when the listener has a token, [`seal`].
pub fn handshake(
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

/// Dials `target`, greets (see [`handshake`]) and sends the first frame,
/// `first` (PUSH or PULL). The connection is tuned for `timeout`; a
/// failure says whether trying again can help.
pub fn dial(
    target: &str,
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
    token: Option<&crate::auth::Token>,
    cipher: Option<Cipher>,
    first: &Frame,
) -> Result<Conn<Wire>, Broken> {
    let hint = match first {
        Frame::Push => "is `ftx recv` running there?",
        _ => "is `ftx serve` (or `ftx send --listen`) running there?",
    };
    let stream = crate::net::connect_to(target, connect_timeout, hint)?;
    crate::net::tune(&stream, timeout)
        .with_context(|| format!("cannot set up the connection to {target}"))?;
    let mut conn = Conn::new(Wire::new(stream));
    handshake(&mut conn, target, token, cipher)?;
    conn.send(first)
        .with_context(|| format!("cannot greet {target}"))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn connection_errors_are_transient_protocol_errors_are_not() {
        let eof = anyhow::Error::new(ConnError::Eof("a frame")).context("x");
        assert!(transient(&eof));
        let conn = anyhow::Error::new(ExitError::new(Exit::Connect, "refused"));
        assert!(transient(&conn));
        let busy = peer_error(ErrorCode::Busy.code(), "busy");
        assert!(transient(&busy));
        let proto = anyhow::Error::new(ConnError::Frame(crate::protocol::FrameError::UnknownType(
            9,
        )));
        assert!(!transient(&proto));
        let auth = peer_error(ErrorCode::Auth.code(), "no");
        assert!(!transient(&auth));
        assert_eq!(crate::exit::for_error(&auth), Exit::Auth);
    }
}
