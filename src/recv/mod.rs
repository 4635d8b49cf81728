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
//!                                then starts its session       front/gate.rs
//!  └─ "session PEER" (one each)  the frame loop, after the handshake     session.rs
//!      │                         FILE → offer.rs (asks admit.rs, claims inflight.rs)
//!      │                         DIR  → dirs.rs (a new one staged: stage.rs)
//!      │                         BODY, HOLE → intake.rs
//!      │                         SYMLINK, LINK → links.rs (created at END)
//!      │                         bodies ≤ 256 KiB: held, hashed here in batches
//!      │                         bodies < 4 MiB: written and hashed here
//!      ├─ "ftx-hash", "ftx-disk" one pair per body of 4 MiB or more, started
//!      │                         when the body starts (store/pipeline.rs,
//!      │                         store/disk.rs): MD5 / writes + checkpoints
//!      └─ "ftx-commit"           writes held bodies, applies attributes,
//!          │                     renames into place (or, in a stage,
//!          │                     puts the stage in place) after the sync
//!          │                     of their data, sends RESULTs after the sync
//!          │                     of their names, prints lines  commit.rs, report.rs
//!          └─ "ftx-sync"         the syncs, one at a time, while the commit
//!                                thread writes the next files    commit.rs
//! "signals" (ftx recv only)      Ctrl-C: end sessions (they checkpoint), exit 130
//! ```
//!
//! Shared across sessions ([`types::Shared`]): the output directory handle,
//! the targets in flight (inflight.rs), the live connections, the bars and
//! the `--json` stream. Each session owns its accepted files, its held
//! bodies and its commit queue.

mod admit;
mod check;
mod commit;
mod dirs;
mod extents;
mod inflight;
mod intake;
mod links;
pub mod list;
mod listen;
mod offer;
mod pull;
mod report;
mod session;
mod stage;
mod types;

use crate::config::RecvConfig;
use crate::events::{Event, Events};
use crate::exit::Exit;
use crate::front::{refuse_busy, Gate, Opened};
use crate::net::{self};
use crate::progress::Progress;
use crate::sanitize::escape;
use anyhow::{Context, Result};
use cap_std::fs::Dir;
use listen::*;
use session::*;
use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use types::*;

pub use types::Shutdown;

/// Runs `ftx recv`: checks the output directory, binds, says where it
/// listens, and serves until killed (or, with `--once`, until one
/// transfer ends: its sessions, each but the last ended with END "more";
/// 0 only if every file in them was verified).
pub fn run(cfg: &RecvConfig) -> Result<Exit> {
    // The output directory first: a bad one is exit 1 whatever the port.
    let (root, fs) = open_out(cfg)?;
    if let Some(target) = &cfg.connect {
        return dial_out(target, cfg, (root, fs));
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
        events.emit(|| Event::Listening {
            address: addr.to_string(),
            port: addr.port(),
        });
    } else {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    serve_in(listener, cfg, (root, fs), Shutdown::default(), true)
}

/// Serves senders on `listener`, which the caller bound, into `cfg.out`
/// until `shutdown` is triggered (then it ends every session, each one
/// checkpointing what it holds, and returns [`Exit::Interrupted`]) or, with
/// `--once`, until one transfer ends (see [`run`]). Tests and `ftx bench` run a
/// receiver in-process this way, on port 0.
pub fn serve(listener: TcpListener, cfg: &RecvConfig, shutdown: Shutdown) -> Result<Exit> {
    let out = open_out(cfg)?;
    serve_in(listener, cfg, out, shutdown, false)
}

/// What the output directory's file system does, probed at start.
#[derive(Debug, Clone, Copy)]
struct OutFs {
    /// It folds names (case, Unicode normalisation).
    folds: bool,
    /// Small files are written without a name and linked into place:
    /// the receiver does not replace files (`--overwrite` renames over the
    /// target) and the file system and the process allow it
    /// ([`crate::store::unnamed_works`]).
    unnamed: bool,
}

/// Opens the output directory, checks it can be written, and probes its
/// file system ([`OutFs`]) before anyone is told the receiver listens:
/// the probes' files are gone by then.
fn open_out(cfg: &RecvConfig) -> Result<(Dir, OutFs)> {
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
    let unnamed = !cfg.overwrite && crate::store::unnamed_works(&root);
    Ok((root, OutFs { folds, unnamed }))
}

/// The receiver's digest cache: the user's (shared with the sender: a
/// digest of a version of a file is the same whoever asks), unless it
/// lies inside OUT, where a sender could write entries into it.
fn out_cache(cfg: &RecvConfig) -> crate::cache::DigestCache {
    if !cfg.cache {
        return crate::cache::DigestCache::at(None);
    }
    // Its nearest existing ancestor, resolved, against OUT resolved.
    let inside = match (
        crate::cache::DigestCache::default_location(),
        std::fs::canonicalize(&cfg.out),
    ) {
        (Some(d), Ok(out)) => d
            .ancestors()
            .find_map(|a| std::fs::canonicalize(a).ok())
            .is_some_and(|d| d.starts_with(out)),
        _ => false,
    };
    if inside {
        eprintln!(
            "ftx: the digest cache lies inside the output directory: not used (identical files are hashed every time)"
        );
        return crate::cache::DigestCache::at(None);
    }
    crate::cache::DigestCache::open(true)
}

/// What every session of one receiver shares.
fn shared(cfg: &RecvConfig, (root, fs): (Dir, OutFs), shutdown: Shutdown) -> Result<Arc<Shared>> {
    let manifest = match &cfg.manifest {
        Some(p) => Some(crate::manifest::Writer::create(p)?),
        None => None,
    };
    Ok(Arc::new(Shared {
        cfg: cfg.clone(),
        umask: crate::store::attrs::umask(),
        folds: fs.folds,
        unnamed: fs.unnamed,
        budget: crate::store::budget::Budget::new(crate::store::budget::DEFAULT_BYTES),
        created_dirs: Mutex::new(CreatedDirs::default()),
        root,
        progress: Progress::new(
            crate::progress::mode(cfg.quiet || cfg.no_progress),
            cfg.verbose,
        ),
        slots: crate::front::Slots::new(cfg.max_sessions),
        digests: out_cache(cfg),
        manifest,
        remembered: AtomicUsize::new(0),
        inflight: Mutex::new(Inflight::default()),
        stopping: shutdown,
        events: Events::new(cfg.json),
    }))
}

/// `ftx recv --connect HOST:PORT` and `ftx get`: dials a server (`ftx
/// serve`) or a sender that listens (`ftx send --listen`), asks for
/// `cfg.paths` (PULL) and receives them into OUT (see [`pull`]). 0 only if
/// everything asked for arrived verified.
fn dial_out(target: &str, cfg: &RecvConfig, out: (Dir, OutFs)) -> Result<Exit> {
    if cfg.token.is_none() && !cfg.get {
        eprintln!(
            "ftx: warning: no token (see ftx token): whoever answers at {target} can write into {}",
            escape(&cfg.out.to_string_lossy())
        );
    }
    let shared = shared(cfg, out, Shutdown::default())?;
    watch_signals(Arc::clone(&shared))?;
    let started = std::time::Instant::now();
    let p = pull::pull(target, &shared);
    let exit = p.exit.unwrap_or(Exit::Success);
    let st = p.stats;
    let secs = started.elapsed().as_secs_f64();
    if shared.events.enabled() {
        shared.events.emit(|| Event::Summary {
            role: "get".into(),
            files_ok: u64::from(st.ok.saturating_sub(st.skipped)),
            files_skipped: u64::from(st.skipped),
            files_failed: u64::from(st.failed.saturating_sub(st.asked_digest)),
            entries_left: Some(u64::from(st.left)),
            bytes: st.bytes,
            wire_bytes: None,
            bytes_matched: Some(st.matched),
            seconds: secs,
            exit_code: exit.code(),
            peer: Some(target.to_owned()),
            encrypted: cfg.token.is_some(),
        });
    } else if !cfg.quiet || exit != Exit::Success {
        let left = if st.left > 0 {
            format!(", {} not offered (listed above)", st.left)
        } else {
            String::new()
        };
        let matched = if st.matched > 0 {
            format!(
                " ({} of it matched here)",
                crate::progress::si_bytes(st.matched)
            )
        } else {
            String::new()
        };
        eprintln!(
            "ftx: got {} file(s), {} skipped, {} failed{left}, {}{matched} in {secs:.1} s ({:.1} MB/s{})",
            st.ok.saturating_sub(st.skipped),
            st.skipped,
            st.failed.saturating_sub(st.asked_digest),
            crate::progress::si_bytes(st.bytes),
            crate::events::mb_per_s(st.bytes, secs),
            if cfg.token.is_some() {
                ", encrypted"
            } else {
                ""
            }
        );
    }
    Ok(exit)
}

fn serve_in(
    listener: TcpListener,
    cfg: &RecvConfig,
    out: (Dir, OutFs),
    shutdown: Shutdown,
    signals: bool,
) -> Result<Exit> {
    let shared = shared(cfg, out, shutdown)?;
    if signals {
        watch_signals(Arc::clone(&shared))?;
    }

    let mut gate = Gate::new(&listener, shared.as_ref())?;
    if cfg.once {
        // One transfer: a tree larger than a session's cap comes in
        // several, each ended with END "more" but the last.
        let mut failed = 0;
        loop {
            let Some(a) = gate.next_admitted()? else {
                return Ok(Exit::Interrupted);
            };
            let peer = a.peer;
            shared.slots.active.fetch_add(1, Ordering::SeqCst);
            let result = Opened::admitted(a)
                .map_err(anyhow::Error::from)
                .and_then(|o| session(o, &shared, Began::Listening));
            shared.slots.release();
            match result {
                Ok(s) => {
                    failed += s.failed;
                    if !s.more {
                        break;
                    }
                }
                Err(e) => {
                    shared.log(&format!("{peer}: {e:#}"));
                    return Ok(Exit::Failure);
                }
            }
        }
        return Ok(if failed == 0 {
            Exit::Success
        } else {
            Exit::Failure
        });
    }
    while let Some(a) = gate.next_admitted()? {
        let peer = a.peer;
        // Only a connection whose handshake is done takes a slot. (The
        // gate answers a HELLO "busy" when every slot is taken; this is
        // for one that raced with it.) Every slot taken: the session
        // without progress for longest (5 s at least) makes room; it ends
        // on its own thread.
        if let Err(n) = shared.slots.take(peer, |l| shared.log(l)) {
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
                let result = Opened::admitted(a)
                    .map_err(anyhow::Error::from)
                    .and_then(|o| session(o, &sh, Began::Listening));
                if let Err(e) = result {
                    sh.log(&format!("{peer}: {e:#}"));
                }
                sh.slots.release();
            });
        if let Err(e) = spawned {
            shared.slots.release();
            shared.log(&format!("{peer}: cannot start a session thread: {e}"));
        }
    }
    drop(gate);
    shared.slots.end_all();
    Ok(Exit::Interrupted)
}
