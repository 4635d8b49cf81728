//! The sender role: walk the sources, connect, and for each entry offer it
//! (the FILE header carries the MD5, computed before it or taken from the
//! digest cache), send the body from the accepted offset and wait for the
//! receiver's verdict.
//!
//! A session that breaks (refused, reset, EOF, timeout) is retried with
//! exponential backoff, re-offering every entry not yet confirmed; the
//! receiver resumes partial files where it stopped. A digest mismatch sends
//! the file again from 0, once. The exit status is 0 only when every file got
//! RESULT ok or SKIP.

mod answer;
pub mod check;
mod delta;
mod holes;
mod link;
mod prepare;
mod retry;
mod stream;
mod types;
mod verdict;
mod window;

use crate::cache::DigestCache;
use crate::config::SendConfig;
use crate::events::{Event, Events};
use crate::exit::Exit;
use crate::progress::{si_bytes, Layout, Progress};
use crate::walk::{self, Kind};
use anyhow::Result;
use std::time::Instant;
use types::*;

pub use types::WINDOW;

/// Runs `ftx send`. Returns the exit status; errors that end the run early
/// carry theirs (see [`crate::exit::for_error`]).
pub fn run(cfg: &SendConfig) -> Result<Exit> {
    exit_on_interrupt()?;
    let events = Events::new(cfg.json);
    let walk = match walk::walk(&cfg.sources, cfg.walk, cfg.stdin_name.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            events.emit(&error_event(&e));
            events.emit(&Event::Summary {
                role: "send".into(),
                files_ok: 0,
                files_skipped: 0,
                files_failed: 0,
                entries_left: None,
                bytes: 0,
                wire_bytes: None,
                bytes_matched: None,
                seconds: 0.0,
                exit_code: crate::exit::for_error(&e).code(),
                peer: None,
                encrypted: cfg.token.is_some(),
            });
            return Err(e);
        }
    };
    // Nothing is left behind silently: each entry not offered is named
    // with its reason, has an event, is counted in the summary, and fails
    // the run unless the user asked for it to be left out.
    let mut outcome = Exit::Success;
    for l in &walk.left {
        if l.asked {
            eprintln!("ftx: left out {}: {}", l.path, l.message);
        } else {
            eprintln!("ftx: {}: {}", l.path, l.message);
            outcome = Exit::Failure;
        }
        events.emit(&Event::EntryLeft {
            path: l.path.clone(),
            reason: l.reason.into(),
            message: l.message.clone(),
            asked: l.asked,
        });
    }
    let left = walk.left.len();
    let progress = Progress::new(
        crate::progress::mode(cfg.quiet || cfg.no_progress),
        cfg.verbose,
    );
    let files = walk.entries.iter().filter(|e| e.kind != Kind::Dir).count();
    progress.set_files(files as u64);
    let total = progress.bytes_bar(walk.total_bytes(), Layout::Total);
    total.set_prefix("total");
    let items = Item::all(walk.entries);
    let cache = DigestCache::open(cfg.cache);
    // `--listen`: receivers call in; each attempt takes the next call.
    let listener = match cfg.listen {
        Some((bind, port)) => {
            let l = crate::net::listen(bind, port)?;
            let addr = l
                .local_addr()
                .map_err(|e| anyhow::anyhow!("cannot read the listening address: {e}"))?;
            if events.enabled() {
                events.emit(&Event::Listening {
                    address: addr.to_string(),
                    port: addr.port(),
                });
            } else {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on {addr}");
                let _ = out.flush();
            }
            Some(l)
        }
        None => None,
    };
    let host = crate::front::Listening::new(cfg.timeout, cfg.token.clone(), cfg.cipher, 1);
    let gate = match &listener {
        Some(l) => Some(std::sync::Mutex::new(crate::front::Gate::new(l, &host)?)),
        None => None,
    };
    let started = Instant::now();
    let new_sender = |items: Vec<Item>| {
        let hashing = progress.bytes_bar(0, Layout::File);
        hashing.set_prefix("hashing");
        let sending = progress.bytes_bar(0, Layout::File);
        sending.set_prefix("sending");
        Sender {
            cfg,
            links: match &gate {
                Some(g) => Links::Calls(g),
                None => Links::Dial,
            },
            called: std::cell::Cell::new(false),
            serving: false,
            cache: cache.clone(),
            progress: progress.clone(),
            total: total.clone(),
            hashing,
            sending,
            items,
            tally: Tally::default(),
            asked_digest: 0,
            stdin_sent: false,
            prefixes: std::collections::HashMap::new(),
            blocks: std::collections::HashMap::new(),
            events,
        }
    };
    let run_one = |items: Vec<Item>| {
        let mut s = new_sender(items);
        let r = s.run_attempts();
        s.hashing.finish_and_clear();
        s.sending.finish_and_clear();
        (s.items, s.tally, r)
    };
    // A listening sender serves one call at a time: its END tells the
    // caller whether to call again, which parallel streams could not.
    let streams = if gate.is_some() { 1 } else { cfg.streams };
    let (streams, dirs) = plan(items, streams);
    let mut parts: Vec<(Vec<Item>, Tally, Result<()>)> = if streams.len() == 1 {
        streams.into_iter().map(run_one).collect()
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = streams
                .into_iter()
                .map(|group| sc.spawn(|| run_one(group)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (
                            Vec::new(),
                            Tally::default(),
                            Err(anyhow::anyhow!("a stream panicked")),
                        )
                    })
                })
                .collect()
        })
    };
    if !dirs.is_empty() {
        // Directories last, in one session: their modes and mtimes are set
        // at its END, after every stream wrote the files inside them.
        parts.push(run_one(dirs));
    }
    total.finish_and_clear();
    let mut s = new_sender(Vec::new());
    let mut result = Ok(());
    for (items, tally, r) in parts {
        s.items.extend(items);
        s.tally.add(&tally);
        if let Err(e) = r {
            if result.is_ok() {
                result = Err(e);
            } else {
                eprintln!("ftx: {e:#}");
            }
        }
    }
    s.hashing.finish_and_clear();
    s.sending.finish_and_clear();
    let failures = s.items.iter().filter_map(|i| match i.state {
        State::Failed(exit) => Some(exit),
        _ => None,
    });
    let broken = result.as_ref().err().map(crate::exit::for_error);
    // Attributes asked for that could not be sent were left behind.
    let attrs_left = (s.tally.attrs_left > 0).then_some(Exit::Failure);
    outcome = Exit::worst_of(failures.chain(broken).chain(attrs_left).chain([outcome]));
    if let Some(path) = &cfg.manifest {
        if let Err(e) = write_manifest(path, &s.items) {
            eprintln!("ftx: {e:#}");
            outcome = outcome.worst(Exit::Failure);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        s.events.emit(&error_event(e));
    }
    let failed = s
        .items
        .iter()
        .filter(|i| match i.state {
            // A refused directory is a failure like a refused file.
            State::Failed(_) => true,
            _ => i.state != State::Done && i.entry.kind != Kind::Dir,
        })
        .count();
    s.events.emit(&Event::Summary {
        role: "send".into(),
        files_ok: s.tally.files,
        files_skipped: s.tally.skipped,
        files_failed: failed as u64,
        entries_left: Some(left as u64),
        bytes: s.tally.bytes,
        wire_bytes: Some(s.tally.wire),
        bytes_matched: Some(s.tally.matched),
        seconds: secs,
        exit_code: outcome.code(),
        peer: None,
        // A sender with a token seals every session or none happens.
        encrypted: cfg.token.is_some(),
    });
    // Said once, as rsync users would want to know: what the copy lacks.
    let (x, acl) = s.tally.attrs_unsent;
    if x > 0 {
        eprintln!("ftx: {x} entries had extended attributes that were not sent; use --xattrs (-X)");
    }
    if acl > 0 {
        eprintln!("ftx: {acl} entries had POSIX ACLs that were not sent; use --acls (-A)");
    }
    if let Err(e) = result {
        // The most serious failure decides the status, as the summary says.
        eprintln!("ftx: {e:#}");
        return Ok(outcome);
    }
    if !cfg.quiet || left > 0 {
        let left = if left > 0 {
            format!(", {left} left out (listed above)")
        } else {
            String::new()
        };
        let wire = match (s.tally.wire < s.tally.bytes, s.tally.matched) {
            (false, _) => String::new(),
            (true, 0) => format!(" ({} on the wire)", si_bytes(s.tally.wire)),
            (true, m) => format!(
                " ({} on the wire, {} matched at the receiver)",
                si_bytes(s.tally.wire),
                si_bytes(m)
            ),
        };
        let sealed = if cfg.token.is_some() {
            ", encrypted"
        } else {
            ""
        };
        // Symlinks and hard links the receiver made (settled last, at END).
        let made = s
            .items
            .iter()
            .filter(|i| {
                i.state == State::Done && matches!(i.entry.kind, Kind::HardLink | Kind::Symlink)
            })
            .count();
        let links = match made {
            0 => String::new(),
            n => format!(" and {n} link(s)"),
        };
        eprintln!(
            "ftx: sent {} file(s){links}, {} skipped, {failed} failed{left}, {}{wire} in {secs:.1} s ({:.1} MB/s{sealed})",
            s.tally.files,
            s.tally.skipped,
            si_bytes(s.tally.bytes),
            crate::events::mb_per_s(s.tally.bytes, secs)
        );
    }
    Ok(outcome)
}

/// What one served session amounted to (`ftx serve` logs it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    /// Files verified by the getter.
    pub files: u64,
    /// Files the getter already had (or only listed).
    pub skipped: u64,
    /// Entries that failed or were refused.
    pub failed: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// `ftx serve`: offers `entries` on `conn`, the connection of a getter
/// that asked for them (PULL), in one session, as `ftx send` would
/// (look-ahead hashing, the digest cache, the window, holes, links). What
/// is left when the session ends (END said "more": entries past the
/// session's cap, files to offer again with their digest or after a
/// mismatch) the getter asks for in its next call. `cache` is the
/// server's, shared by its sessions.
pub fn offer_on(
    cfg: &SendConfig,
    conn: crate::conn::Conn<crate::secure::Wire>,
    entries: Vec<walk::Entry>,
    list: bool,
    cache: &DigestCache,
) -> Result<Served> {
    let progress = Progress::new(crate::progress::Mode::Off, false);
    let total = progress.bytes_bar(0, Layout::Total);
    let items = Item::all(entries);
    let mut s = Sender {
        cfg,
        links: Links::Given(std::cell::Cell::new(Some(conn))),
        serving: !list,
        called: std::cell::Cell::new(false),
        cache: cache.clone(),
        hashing: progress.bytes_bar(0, Layout::File),
        sending: progress.bytes_bar(0, Layout::File),
        progress,
        total,
        items,
        tally: Tally::default(),
        asked_digest: 0,
        stdin_sent: false,
        prefixes: std::collections::HashMap::new(),
        blocks: std::collections::HashMap::new(),
        events: Events::new(false),
    };
    let ended = match s.attempt() {
        Err(b) if !b.err.is::<link::HandedOver>() => Err(b.err),
        _ => Ok(()),
    };
    let failed = s
        .items
        .iter()
        .filter(|i| matches!(i.state, State::Failed(_)))
        .count() as u64;
    ended.map(|()| Served {
        files: s.tally.files,
        skipped: s.tally.skipped,
        failed,
        bytes: s.tally.bytes,
    })
}

/// `--manifest FILE`: a line for every file (and hard link to one) the
/// receiver confirmed, in walk order.
fn write_manifest(path: &std::path::Path, items: &[Item]) -> Result<()> {
    let m = crate::manifest::Writer::create(path)?;
    let shown = crate::sanitize::escape(&path.to_string_lossy());
    let mut by_name = std::collections::HashMap::new();
    for i in items.iter().filter(|i| i.state == State::Done) {
        let digest = match i.entry.kind {
            Kind::File => i.md5,
            Kind::HardLink => i
                .entry
                .link_to
                .as_ref()
                .and_then(|t| by_name.get(t.as_bytes()).copied()),
            Kind::Dir | Kind::Symlink => continue,
        };
        let Some(d) = digest else { continue };
        by_name.insert(i.entry.name.as_bytes().to_vec(), d);
        m.add(&d, i.entry.name.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write the manifest {shown}: {e}"))?;
    }
    Ok(())
}

/// The `error` event of a run that failed with `e`.
fn error_event(e: &anyhow::Error) -> Event {
    let exit = crate::exit::for_error(e);
    Event::Error {
        role: "send".into(),
        exit_code: exit.code(),
        reason: exit.word().into(),
        message: crate::sanitize::escape(&format!("{e:#}")),
        peer: None,
    }
}

/// On SIGINT or SIGTERM: say how to go on, exit 130. Nothing is lost: the
/// receiver keeps what it verified and checkpointed.
fn exit_on_interrupt() -> Result<()> {
    crate::exit::on_interrupt(|| {
        eprintln!("\nftx: interrupted, run the same command again to resume");
    })
}

/// Splits the entries for `streams` parallel sessions: files are dealt to
/// the least loaded stream, largest first (so the streams finish together),
/// keeping walk order within each stream. With more than one stream the
/// directories are returned apart, to be sent after the files. With one
/// stream everything stays in one session, in walk order.
fn plan(items: Vec<Item>, streams: usize) -> (Vec<Vec<Item>>, Vec<Item>) {
    let files = items.iter().filter(|i| i.entry.kind == Kind::File).count();
    let n = streams.min(files);
    if n <= 1 {
        return (vec![items], Vec::new());
    }
    // Directories and symlinks last, in a session of their own; a hard
    // link in the stream of the file it links to (the receiver links
    // within one session only), after it.
    let (dirs, rest): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|i| matches!(i.entry.kind, Kind::Dir | Kind::Symlink));
    let (links, files): (Vec<Item>, Vec<Item>) = rest
        .into_iter()
        .partition(|i| i.entry.kind == Kind::HardLink);
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].entry.size));
    let mut load = vec![0u64; n];
    let mut owner = vec![0usize; files.len()];
    for i in order {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(_, l)| *l)
            .unwrap_or((0, &0));
        load[least] += files[i].entry.size.max(1);
        owner[i] = least;
    }
    let mut groups: Vec<Vec<Item>> = (0..n).map(|_| Vec::new()).collect();
    let mut group_of = std::collections::HashMap::new();
    for (item, o) in files.into_iter().zip(owner) {
        group_of.insert(item.entry.name.as_bytes().to_vec(), o);
        groups[o].push(item);
    }
    for link in links {
        let to = link.entry.link_to.as_ref().map(|t| t.as_bytes());
        let o = to.and_then(|t| group_of.get(t)).copied().unwrap_or(0);
        groups[o].push(link);
    }
    (groups, dirs)
}
