//! The accepting side driven from a dialer: `ftx get` (and `ftx recv
//! --connect`) dials, greets, asks with PULL, and then receives exactly as
//! a listening receiver does ([`super::session`]). A session the server
//! ends with "more" is followed by the next one at once; a broken one is
//! dialed again within `--retry-for` of the last progress. With `-j N`,
//! N parts run side by side, then the part with the directories.

use super::session::{session, Began};
use super::types::*;
use crate::events::Event;
use crate::exit::{Exit, ExitError};
use crate::front::dial::{self, Broken};
use crate::front::Opened;
use crate::protocol::Frame;
use crate::sanitize::escape;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Sessions in a row that end with "more" and verify nothing: the server
/// is offering the same things again (a file whose digest never matches);
/// the pull stops there.
const STALE_SESSIONS: u32 = 3;

/// What one part of a pull amounted to.
#[derive(Debug, Default)]
pub(super) struct Pulled {
    pub(super) stats: Stats,
    /// Sessions served.
    pub(super) sessions: u32,
    pub(super) exit: Option<Exit>,
}

/// Pulls `cfg.paths` from `target` into OUT: every part, then the
/// directories' part. The exit status is the worst of the parts'.
pub(super) fn pull(target: &str, sh: &Shared) -> Pulled {
    let n = sh.cfg.streams.max(1);
    if n == 1 {
        return pull_part(target, sh, 0, 0);
    }
    let parts: Vec<Pulled> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|i| sc.spawn(move || pull_part(target, sh, i as u16, n as u16)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Pulled {
                    exit: Some(Exit::Failure),
                    ..Pulled::default()
                })
            })
            .collect()
    });
    // Directories (and symlinks) last, so their times are set after the
    // files inside them arrived.
    let dirs = pull_part(target, sh, n as u16, n as u16);
    let mut all = Pulled::default();
    for p in parts.into_iter().chain([dirs]) {
        all.stats.add(p.stats);
        all.sessions += p.sessions;
        all.exit = Some(
            all.exit
                .unwrap_or(Exit::Success)
                .worst(p.exit.unwrap_or(Exit::Success)),
        );
    }
    all
}

/// One part: sessions until the server has nothing more for it.
fn pull_part(target: &str, sh: &Shared, part: u16, parts: u16) -> Pulled {
    let cfg = &sh.cfg;
    let flags = if cfg.hash == crate::digest::Algo::Xxh3 {
        crate::protocol::frame::pull_flags::XXH3
    } else {
        0
    };
    let first = Frame::Pull {
        flags,
        part,
        parts,
        paths: cfg.paths.clone(),
    };
    let mut out = Pulled::default();
    let mut last_progress = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut stale = 0u32;
    let finish = |mut out: Pulled, exit: Exit| {
        out.exit = Some(exit);
        out
    };
    loop {
        if sh.stopping.is_set() {
            return finish(out, Exit::Interrupted);
        }
        let opened = dial::dial(
            target,
            cfg.connect_timeout,
            cfg.timeout,
            cfg.token.as_ref(),
            cfg.cipher,
            &first,
        )
        .and_then(|conn| opened(conn, target));
        let result = match opened {
            Ok(o) => {
                sh.slots
                    .active
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = session(o, sh, Began::Pulled);
                sh.slots.release();
                out.sessions += 1;
                r.map_err(Broken::from)
            }
            Err(b) => Err(b),
        };
        match result {
            Ok(st) => {
                let moved = st.ok > st.skipped || st.bytes > 0;
                if moved {
                    last_progress = Instant::now();
                    backoff = Duration::from_millis(200);
                }
                let more = st.more;
                // Each session offers the whole request again (the
                // server's walk is fresh): the last one tells the state.
                out.stats.add(Stats { more: false, ..st });
                if !more {
                    return finish(out, outcome(&st));
                }
                stale = if st.ok > st.skipped { 0 } else { stale + 1 };
                if stale >= STALE_SESSIONS {
                    sh.log(&format!(
                        "{target}: {stale} sessions in a row verified nothing new; giving up"
                    ));
                    let exit = if st.mismatched > 0 {
                        Exit::Integrity
                    } else {
                        Exit::Failure
                    };
                    return finish(out, exit);
                }
            }
            Err(b) if !b.retry => {
                sh.log(&format!("{:#}", b.err));
                let exit = crate::exit::for_error(&b.err);
                error_event(sh, target, exit, &b.err);
                return finish(out, exit);
            }
            Err(b) => {
                let left = cfg.retry_for.saturating_sub(last_progress.elapsed());
                if left.is_zero() {
                    let why = format!(
                        "{:#}; gave up after {} s without progress, run the same command again to resume",
                        b.err,
                        cfg.retry_for.as_secs()
                    );
                    sh.log(&why);
                    let exit = crate::exit::for_error(&b.err).worst(Exit::Connect);
                    error_event(sh, target, exit, &b.err);
                    return finish(out, exit);
                }
                let wait = backoff.min(left);
                sh.events.emit(|| Event::Retry {
                    message: escape(&format!("{:#}", b.err)),
                    delay_s: wait.as_secs_f64(),
                    gives_up_in_s: left.saturating_sub(wait).as_secs_f64().round(),
                });
                sh.log(&format!(
                    "{target}: {:#}; retrying in {:.1} s (giving up in {:.0} s without progress)",
                    b.err,
                    wait.as_secs_f32(),
                    left.saturating_sub(wait).as_secs_f32()
                ));
                std::thread::sleep(wait);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The `error` event of a pull that ended with `exit` because of `e`.
fn error_event(sh: &Shared, target: &str, exit: Exit, e: &anyhow::Error) {
    sh.events.emit(|| Event::Error {
        role: "get".into(),
        exit_code: exit.code(),
        reason: exit.word().into(),
        message: escape(&format!("{e:#}")),
        peer: Some(target.to_owned()),
    });
}

/// The exit status of a pull whose last session was whole.
fn outcome(st: &Stats) -> Exit {
    if st.mismatched > 0 {
        Exit::Integrity
    } else if st.failed > st.asked_digest + st.mismatched || st.left > 0 {
        Exit::Failure
    } else {
        Exit::Success
    }
}

/// The dialed connection, as a session takes it.
fn opened(conn: crate::conn::Conn<crate::secure::Wire>, target: &str) -> Result<Opened, Broken> {
    let (wire, leftover) = conn.into_parts();
    let stream = wire.tcp().try_clone()?;
    let peer = stream.peer_addr()?;
    if !leftover.is_empty() {
        return Err(Broken {
            err: ExitError::new(
                Exit::Failure,
                format!("{}: sent frames before it was asked", escape(target)),
            )
            .into(),
            retry: false,
            reset: false,
        });
    }
    Ok(Opened {
        peer,
        stream,
        sealed: wire.is_sealed(),
        wire,
        leftover,
    })
}
