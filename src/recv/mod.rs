//! The receiver role: listen, serve each sender in its own session, and
//! place only verified files, never outside the output directory.
//!
//! All file-system access goes through a held handle on the output
//! directory (cap-std), one component at a time with no-follow semantics,
//! so no symlink inside OUT is ever followed and nothing is written outside
//! (the file-system side is [`crate::store`]).
//!
//! # Threads, and what each owns
//!
//! ```text
//! serve (caller's thread)        the gate: accepts, holds every connection
//!                                until its handshake is done (polling),
//!                                then starts its session       gate.rs, handshake.rs
//!  └─ "session PEER" (one each)  the frame loop, after the handshake     session.rs
//!      │                         FILE → offer.rs (asks admit.rs, claims inflight.rs)
//!      │                         DIR  → dirs.rs      BODY, HOLE → intake.rs
//!      │                         SYMLINK, LINK → links.rs (created at END)
//!      │                         bodies ≤ 256 KiB: held, hashed here in batches
//!      │                         bodies < 4 MiB: written and hashed here
//!      ├─ "ftx-hash", "ftx-disk" one pair per body of 4 MiB or more, started
//!      │                         when the body starts (store/pipeline.rs,
//!      │                         store/disk.rs): MD5 / writes + checkpoints
//!      └─ "ftx-commit"           writes held bodies, applies attributes,
//!                                syncs in groups, renames into place,
//!                                sends RESULTs, prints lines    commit.rs, report.rs
//! "signals" (ftx recv only)      Ctrl-C: end sessions (they checkpoint), exit 130
//! ```
//!
//! Shared across sessions ([`types::Shared`]): the output directory handle,
//! the targets in flight (inflight.rs), the live connections, the bars and
//! the `--json` stream. Each session owns its accepted files, its held
//! bodies and its commit queue.

mod admit;
mod commit;
mod dirs;
mod extents;
mod gate;
mod handshake;
mod inflight;
mod intake;
mod links;
mod listen;
mod offer;
mod report;
mod session;
mod types;

use crate::config::RecvConfig;
use crate::events::{Event, Events};
use crate::exit::Exit;
use crate::net::{self};
use crate::progress::Progress;
use crate::sanitize::escape;
use anyhow::{Context, Result};
use cap_std::fs::Dir;
use listen::*;
use session::*;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use types::*;

pub use types::Shutdown;

/// Runs `ftx recv`: checks the output directory, binds, says where it
/// listens, and serves until killed (or, with `--once`, until the first
/// session ends: 0 only if every file in it was verified).
pub fn run(cfg: &RecvConfig) -> Result<Exit> {
    // The output directory first: a bad one is exit 1 whatever the port.
    let (root, folds) = open_out(cfg)?;
    if let Some(target) = &cfg.connect {
        return dial_out(target, cfg, (root, folds));
    }
    let listener = net::listen(cfg.bind, cfg.port)?;
    if cfg.token.is_none() {
        eprintln!(
            "ftx: warning: no token (see ftx token): anyone on the network can write into {}",
            escape(&cfg.out.to_string_lossy())
        );
    }
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let events = Events::new(cfg.json);
    if events.enabled() {
        events.emit(&Event::Listening {
            address: addr.to_string(),
            port: addr.port(),
        });
    } else {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    serve_in(listener, cfg, (root, folds), Shutdown::default(), true)
}

/// Serves senders on `listener`, which the caller bound, into `cfg.out`
/// until `shutdown` is triggered (then it ends every session, each one
/// checkpointing what it holds, and returns [`Exit::Interrupted`]) or, with
/// `--once`, until the first session ends. Tests and `ftx bench` run a
/// receiver in-process this way, on port 0.
pub fn serve(listener: TcpListener, cfg: &RecvConfig, shutdown: Shutdown) -> Result<Exit> {
    let out = open_out(cfg)?;
    serve_in(listener, cfg, out, shutdown, false)
}

/// Opens the output directory, checks it can be written, and probes
/// whether its file system folds names (before anyone is told the
/// receiver listens: the probe's file is gone by then).
fn open_out(cfg: &RecvConfig) -> Result<(Dir, bool)> {
    let out = escape(&cfg.out.to_string_lossy());
    let root = Dir::open_ambient_dir(&cfg.out, cap_std::ambient_authority())
        .with_context(|| format!("cannot use output directory {out}"))?;
    rustix::fs::accessat(
        &root,
        ".",
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .map_err(io::Error::from)
    .with_context(|| format!("cannot write into output directory {out}"))?;
    let folds = cfg.fold_names || crate::store::attrs::folds_names(&root);
    Ok((root, folds))
}

/// What every session of one receiver shares.
fn shared(cfg: &RecvConfig, (root, folds): (Dir, bool), shutdown: Shutdown) -> Arc<Shared> {
    Arc::new(Shared {
        cfg: cfg.clone(),
        umask: crate::store::attrs::umask(),
        folds,
        budget: crate::store::budget::Budget::new(crate::store::budget::DEFAULT_BYTES),
        created_dirs: Mutex::new(CreatedDirs::default()),
        root,
        progress: Progress::new(
            crate::progress::mode(cfg.quiet || cfg.no_progress),
            cfg.verbose,
        ),
        active: AtomicUsize::new(0),
        remembered: AtomicUsize::new(0),
        inflight: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
        stopping: shutdown,
        events: Events::new(cfg.json),
    })
}

/// `ftx recv --connect HOST:PORT`: dials a sender that listens (`ftx send
/// --listen`) and serves its sessions one after another, each dialed
/// afresh (a broken one is retried by the sender, who waits for the next
/// call), until the sender is gone: a refused call after a session ends
/// the run. Before the first session, calls are repeated within
/// `--retry-for` (the sender may not be up yet). The connection goes
/// through the same gate as an accepted one (handshake deadline, token,
/// encryption); only its direction differs. 0 only if every file of every
/// session was verified.
fn dial_out(target: &str, cfg: &RecvConfig, out: (Dir, bool)) -> Result<Exit> {
    if cfg.token.is_none() {
        eprintln!(
            "ftx: warning: no token (see ftx token): whoever answers at {target} can write into {}",
            escape(&cfg.out.to_string_lossy())
        );
    }
    let shared = shared(cfg, out, Shutdown::default());
    watch_signals(Arc::clone(&shared))?;
    let mut gate = gate::Gate::new(None, &shared)?;
    let mut sessions = 0u32;
    let mut outcome = Exit::Success;
    // The last session ended with SUMMARY (a broken one is the sender's to
    // retry: if it never calls back, the run failed).
    let mut last_whole = true;
    let mut last_progress = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(200);
    // Waits before calling again, a little longer each time.
    let pause = |backoff: &mut std::time::Duration| {
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(std::time::Duration::from_secs(5));
    };
    loop {
        if shared.stopping.is_set() {
            return Ok(Exit::Interrupted);
        }
        let hint = "is `ftx send --listen` running there?";
        let stream = match net::connect_to(target, std::time::Duration::from_secs(10), hint) {
            Ok(s) => s,
            // The sender is done (or gone) after serving at least once.
            Err(_) if sessions > 0 && last_whole => return Ok(outcome),
            Err(_) if sessions > 0 && last_progress.elapsed() >= cfg.retry_for => {
                return Ok(outcome.worst(Exit::Failure))
            }
            Err(e) if last_progress.elapsed() >= cfg.retry_for => {
                return Err(anyhow::Error::new(e).context(format!(
                    "no sender answered at {target} within {} s (--retry-for)",
                    cfg.retry_for.as_secs()
                )))
            }
            Err(_) => {
                pause(&mut backoff);
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        gate.adopt(stream, peer);
        let Some(a) = gate.next()? else {
            // Closed before its handshake was done. After a whole session
            // that is the sender being done (behind a proxy or a NAT the
            // call is taken and dropped instead of refused); before, or
            // after a broken one, call again within --retry-for.
            if sessions > 0 && last_whole {
                return Ok(outcome);
            }
            if last_progress.elapsed() >= cfg.retry_for {
                return Ok(outcome.worst(if sessions > 0 {
                    Exit::Failure
                } else {
                    Exit::Connect
                }));
            }
            pause(&mut backoff);
            continue;
        };
        shared.active.fetch_add(1, Ordering::SeqCst);
        let result = session(a, &shared);
        shared.active.fetch_sub(1, Ordering::SeqCst);
        sessions += 1;
        match result {
            Ok(s) => {
                last_whole = true;
                if s.ok > 0 || s.failed > 0 {
                    last_progress = std::time::Instant::now();
                }
                if s.failed > 0 {
                    outcome = outcome.worst(Exit::Failure);
                }
            }
            Err(e) => {
                shared.log(&format!("{peer}: {e:#}"));
                // A broken session: the sender waits for the next call,
                // which resumes it.
                last_whole = false;
                last_progress = std::time::Instant::now();
            }
        }
        backoff = std::time::Duration::from_millis(200);
    }
}

fn serve_in(
    listener: TcpListener,
    cfg: &RecvConfig,
    out: (Dir, bool),
    shutdown: Shutdown,
    signals: bool,
) -> Result<Exit> {
    let shared = shared(cfg, out, shutdown);
    if signals {
        watch_signals(Arc::clone(&shared))?;
    }

    let mut gate = gate::Gate::new(Some(&listener), &shared)?;
    if cfg.once {
        let Some(a) = gate.next()? else {
            return Ok(Exit::Interrupted);
        };
        let peer = a.peer;
        shared.active.fetch_add(1, Ordering::SeqCst);
        let result = session(a, &shared);
        shared.active.fetch_sub(1, Ordering::SeqCst);
        return Ok(match result {
            Ok(s) if s.failed == 0 => Exit::Success,
            Ok(_) => Exit::Failure,
            Err(e) => {
                shared.log(&format!("{peer}: {e:#}"));
                Exit::Failure
            }
        });
    }
    while let Some(a) = gate.next()? {
        let peer = a.peer;
        // Only a connection whose handshake is done takes a slot. (The
        // gate answers a HELLO "busy" when every slot is taken; this is
        // for one that raced with it.)
        let n = shared.active.fetch_add(1, Ordering::SeqCst);
        // Every slot taken: the session without progress for longest (5 s
        // at least) makes room; it ends on its own thread.
        if n >= cfg.max_sessions && !shared.evict_for(peer) {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.log(&format!(
                "{peer}: refused: already serving {n} sessions (--max-sessions)"
            ));
            refuse_busy(a.stream, n);
            continue;
        }
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("session {peer}"))
            .spawn(move || {
                if let Err(e) = session(a, &sh) {
                    sh.log(&format!("{peer}: {e:#}"));
                }
                sh.active.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            shared.log(&format!("{peer}: cannot start a session thread: {e}"));
        }
    }
    drop(gate);
    end_sessions(&shared);
    Ok(Exit::Interrupted)
}
