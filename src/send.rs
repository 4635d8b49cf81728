//! The sender role: walk the sources, connect, and for each entry offer it,
//! hash it (before its FILE header, which carries the MD5), send the body
//! from the accepted offset and wait for the receiver's verdict.
//!
//! The exit status is 0 only when every file got RESULT ok or SKIP.

use crate::config::SendConfig;
use crate::conn::{Conn, ConnError};
use crate::digest::{hash_reader, hex};
use crate::exit::{Exit, ExitError};
use crate::net;
use crate::progress::{Layout, Progress};
use crate::protocol::frame::{error_code, reject_code, result_status, DirHeader, FileHeader};
use crate::protocol::limits::VERSION;
use crate::protocol::Frame;
use crate::sanitize::escape;
use crate::walk::{self, Entry, Kind};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::TcpStream;
use std::time::Instant;

/// Software name sent in HELLO.
pub const AGENT: &str = concat!("ftx/", env!("CARGO_PKG_VERSION"));

/// Counters for the final summary.
#[derive(Debug, Default)]
struct Tally {
    files: u64,
    skipped: u64,
    failed: u64,
    bytes: u64,
}

/// Runs `ftx send`. Returns the exit status; errors that end the run early
/// carry theirs (see [`crate::exit::for_error`]).
pub fn run(cfg: &SendConfig) -> Result<Exit> {
    let walk = walk::walk(&cfg.sources)?;
    for w in &walk.warnings {
        eprintln!("ftx: warning: {w}");
    }
    let mut outcome = Exit::Success;
    for e in &walk.errors {
        eprintln!("ftx: {e}");
        outcome = Exit::Failure;
    }

    let stream = net::connect(&cfg.target, cfg.connect_timeout)?;
    net::tune(&stream, cfg.timeout)
        .with_context(|| format!("cannot set up the connection to {}", cfg.target))?;
    let mut conn = Conn::new(stream);
    handshake(&mut conn, &cfg.target)?;

    let progress = Progress::new(crate::progress::enabled(cfg.quiet));
    let total = progress.bytes_bar(walk.total_bytes(), Layout::Total);
    total.set_prefix("total");
    let current = progress.bytes_bar(0, Layout::File);
    let started = Instant::now();
    let mut tally = Tally::default();

    for (i, entry) in walk.entries.iter().enumerate() {
        let id = u32::try_from(i + 1).context("too many entries for one session")?;
        let shown = escape(entry.name.as_str());
        let result = match entry.kind {
            Kind::Dir => send_dir(&mut conn, id, entry),
            Kind::File => send_file(&mut conn, id, entry, &current, &total, &mut tally),
        };
        match result {
            Ok(Verdict::Done) => {}
            Ok(Verdict::Failed(exit, msg)) => {
                progress.println(&format!("ftx: {msg}"));
                tally.failed += 1;
                outcome = outcome.worst(exit);
            }
            Err(e) => {
                current.finish_and_clear();
                total.finish_and_clear();
                return Err(e.context(format!("while sending {shown} to {}", cfg.target)));
            }
        }
    }
    current.finish_and_clear();

    conn.send(&Frame::End)
        .with_context(|| format!("cannot finish the session with {}", cfg.target))?;
    match conn.expect_frame() {
        Ok(Frame::Summary { .. }) => {}
        Ok(Frame::Error { code, message }) => {
            bail!(
                "receiver ended the session: {} (code {code})",
                escape(&message)
            )
        }
        Ok(other) => bail!("receiver answered END with {}", other.name()),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("no summary from {} after END", cfg.target))
            )
        }
    }
    total.finish_and_clear();

    if !cfg.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ftx: sent {} file(s), {} skipped, {} failed, {} bytes in {:.2} s ({:.1} MB/s)",
            tally.files,
            tally.skipped,
            tally.failed,
            tally.bytes,
            secs,
            tally.bytes as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Ok(outcome)
}

/// HELLO → WELCOME.
fn handshake(conn: &mut Conn<TcpStream>, target: &str) -> Result<()> {
    let hello = Frame::Hello {
        version: VERSION,
        flags: 0,
        agent: AGENT.into(),
    };
    conn.send(&hello)
        .with_context(|| format!("cannot greet {target}"))?;
    match conn.expect_frame() {
        Ok(Frame::Welcome { version, flags, .. }) => {
            if version != VERSION {
                bail!("{target} speaks protocol version {version}, this ftx speaks {VERSION}");
            }
            if flags & 1 != 0 {
                return Err(ExitError::new(
                    Exit::Auth,
                    format!("{target} requires a token, which this version of ftx cannot send"),
                )
                .into());
            }
            Ok(())
        }
        Ok(Frame::Error { code, message }) => {
            let exit = if code == error_code::AUTH {
                Exit::Auth
            } else {
                Exit::Failure
            };
            Err(ExitError::new(
                exit,
                format!(
                    "{target} refused the session: {} (code {code})",
                    escape(&message)
                ),
            )
            .into())
        }
        Ok(other) => bail!(
            "{target} answered HELLO with {}: not an ftx receiver?",
            other.name()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("no greeting from {target}"))),
    }
}

/// The outcome of one entry that did not break the session.
enum Verdict {
    /// Verified, created or skipped as identical.
    Done,
    /// Refused or failed; the session goes on.
    Failed(Exit, String),
}

fn reject_verdict(shown: &str, code: u16, message: &str) -> Verdict {
    let what = match code {
        reject_code::UNSAFE_NAME => "unsafe name",
        reject_code::EXISTS => "exists with other content (use --overwrite on the receiver)",
        reject_code::NO_SPACE => "not enough space",
        reject_code::CONFLICT => "conflicts with what is there",
        reject_code::IO => "receiver i/o error",
        _ => "refused",
    };
    Verdict::Failed(
        Exit::Refused,
        format!("{shown}: refused by receiver: {what}: {}", escape(message)),
    )
}

fn send_dir(conn: &mut Conn<TcpStream>, id: u32, e: &Entry) -> Result<Verdict> {
    let shown = escape(e.name.as_str());
    conn.send(&Frame::Dir(DirHeader {
        id,
        mode: e.mode,
        mtime_s: e.mtime_s,
        mtime_ns: e.mtime_ns,
        path: e.name.as_str().as_bytes().to_vec(),
    }))?;
    match answer(conn, id)? {
        Frame::Result {
            status: result_status::OK,
            ..
        } => Ok(Verdict::Done),
        Frame::Result { message, .. } => Ok(Verdict::Failed(
            Exit::Failure,
            format!(
                "{shown}: receiver could not create it: {}",
                escape(&message)
            ),
        )),
        Frame::Reject { code, message, .. } => Ok(reject_verdict(&shown, code, &message)),
        other => bail!("unexpected {} in answer to DIR", other.name()),
    }
}

fn send_file(
    conn: &mut Conn<TcpStream>,
    id: u32,
    e: &Entry,
    current: &indicatif::ProgressBar,
    total: &indicatif::ProgressBar,
    tally: &mut Tally,
) -> Result<Verdict> {
    let shown = escape(e.name.as_str());
    let local = escape(&e.local.to_string_lossy());
    let file = match File::open(&e.local) {
        Ok(f) => f,
        Err(err) => {
            return Ok(Verdict::Failed(
                Exit::Failure,
                format!("cannot read {local}: {err}"),
            ))
        }
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(err) => {
            return Ok(Verdict::Failed(
                Exit::Failure,
                format!("cannot read {local}: {err}"),
            ))
        }
    };
    // Keep the session total honest if the file changed since the walk.
    if size != e.size {
        total.set_length((total.length().unwrap_or(0) + size).saturating_sub(e.size));
    }

    current.set_prefix("hashing");
    current.set_message(shown.clone());
    current.set_length(size);
    current.set_position(0);
    let md5 = match hash_reader(&file, size, |n| current.inc(n)) {
        Ok(d) => d,
        Err(err) => {
            return Ok(Verdict::Failed(
                Exit::Failure,
                format!("cannot read {local}: {err}"),
            ))
        }
    };

    conn.send(&Frame::File(FileHeader {
        id,
        size,
        mode: e.mode,
        mtime_s: e.mtime_s,
        mtime_ns: e.mtime_ns,
        md5,
        path: e.name.as_str().as_bytes().to_vec(),
    }))?;
    let offset = match answer(conn, id)? {
        Frame::Accept { offset, .. } if offset <= size => offset,
        Frame::Accept { offset, .. } => {
            bail!("receiver accepted at offset {offset}, beyond the size {size}")
        }
        Frame::Skip { .. } => {
            total.inc(size);
            tally.skipped += 1;
            return Ok(Verdict::Done);
        }
        Frame::Reject { code, message, .. } => return Ok(reject_verdict(&shown, code, &message)),
        other => bail!("unexpected {} in answer to FILE", other.name()),
    };

    current.set_prefix("sending");
    current.set_position(offset);
    total.inc(offset);
    conn.queue(&Frame::Body {
        id,
        offset,
        length: size - offset,
    });
    conn.send_body(&file, offset, size - offset, |n| {
        current.inc(n);
        total.inc(n);
    })
    .map_err(|err| match err {
        ConnError::Shrank { sent, expected } => anyhow::anyhow!(
            "{local} shrank while it was sent ({sent} of {expected} bytes); the session cannot go on"
        ),
        other => anyhow::Error::new(other),
    })?;

    match answer(conn, id)? {
        Frame::Result {
            status: result_status::OK,
            md5: got,
            ..
        } if got == md5 => {
            tally.files += 1;
            tally.bytes += size - offset;
            Ok(Verdict::Done)
        }
        Frame::Result {
            status: result_status::OK,
            md5: got,
            ..
        } => Ok(Verdict::Failed(
            Exit::Integrity,
            format!(
                "{shown}: integrity failure: receiver reported ok with MD5 {}, sender has {}",
                hex(&got),
                hex(&md5)
            ),
        )),
        Frame::Result {
            status: result_status::DIGEST_MISMATCH,
            md5: got,
            ..
        } => Ok(Verdict::Failed(
            Exit::Integrity,
            format!(
                "{shown}: integrity failure: sender MD5 {}, receiver computed {}; the file was not kept",
                hex(&md5),
                hex(&got)
            ),
        )),
        Frame::Result { message, .. } => Ok(Verdict::Failed(
            Exit::Failure,
            format!("{shown}: receiver could not write it: {}", escape(&message)),
        )),
        other => bail!("unexpected {} in answer to BODY", other.name()),
    }
}

/// Reads the receiver's answer to entry `id`. ERROR ends the session.
fn answer(conn: &mut Conn<TcpStream>, id: u32) -> Result<Frame> {
    let f = conn.expect_frame()?;
    let got = match &f {
        Frame::Accept { id, .. }
        | Frame::Skip { id, .. }
        | Frame::Reject { id, .. }
        | Frame::Result { id, .. } => *id,
        Frame::Error { code, message } => {
            bail!(
                "receiver ended the session: {} (code {code})",
                escape(message)
            )
        }
        other => bail!("unexpected {} from receiver", other.name()),
    };
    if got != id {
        bail!("receiver answered entry {got} while entry {id} was pending");
    }
    Ok(f)
}
