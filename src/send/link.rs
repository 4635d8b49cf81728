//! A connection of one attempt: the handshake (HELLO, WELCOME, AUTH) and
//! the reader thread (`ftx-reader`) that passes the receiver's frames to
//! the session thread.

use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::exit::{Exit, ExitError};
use crate::protocol::limits::{AGENT, VERSION, WELCOME_FLAGS};
use crate::protocol::Frame;
use anyhow::{Context, Result};
use std::net::TcpStream;
use std::sync::mpsc;

/// Reads the receiver's frames into the session's channel until the
/// connection ends.
pub(super) fn spawn_reader(stream: TcpStream, tx: mpsc::Sender<Msg>, gen: u64) -> Result<()> {
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

/// HELLO → WELCOME.
pub(super) fn handshake(
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
            let unknown = flags & !WELCOME_FLAGS;
            if unknown != 0 {
                return Err(Broken {
                    err: anyhow::anyhow!(
                        "{target} asks for something this ftx does not do: unsupported WELCOME flags {unknown:#010x}"
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
