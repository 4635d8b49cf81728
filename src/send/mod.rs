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
mod items;
mod link;
mod lookahead;
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
    let walker = match walk::Walker::new(&cfg.sources, cfg.walk, cfg.stdin_name.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            events.emit(|| error_event(&e));
            events.emit(|| Event::Summary {
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
    let progress = Progress::new(
        crate::progress::mode(cfg.quiet || cfg.no_progress),
        cfg.verbose,
    );
    // The total grows as the walk goes (as rsync's incremental
    // recursion's does): the tree is never listed whole first.
    let total = progress.bytes_bar(0, Layout::Total);
    total.set_prefix("total");
    let manifest = match &cfg.manifest {
        Some(path) => Some(crate::manifest::Writer::create(path)?),
        None => None,
    };
    let cache = DigestCache::open(cfg.cache);
    // `--listen`: receivers call in; each attempt takes the next call.
    let listener = match cfg.listen {
        Some((bind, port)) => {
            let l = crate::net::listen(bind, port)?;
            let addr = l
                .local_addr()
                .map_err(|e| anyhow::anyhow!("cannot read the listening address: {e}"))?;
            if events.enabled() {
                events.emit(|| Event::Listening {
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
    let new_sender = |items: Items| {
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
            walked_all: false,
            manifest: manifest.as_ref(),
            unsure: Vec::new(),
            tally: Tally::default(),
            asked_digest: 0,
            stdin_sent: false,
            prefixes: ById::default(),
            blocks: ById::default(),
            events,
        }
    };
    let run_one = |feed: Feed| {
        let mut s = new_sender(Items::new(feed));
        let r = s.run_attempts();
        if let Err(e) = &r {
            // What was not confirmed, the rest of the walk included,
            // is counted as failed.
            s.items.fail_pending(crate::exit::for_error(e));
        }
        s.items.retire(s.manifest);
        s.hashing.finish_and_clear();
        s.sending.finish_and_clear();
        let left = s
            .items
            .feed
            .as_ref()
            .map_or((0, false), |f| (f.left, f.left_fails));
        (s.items.gone, s.tally, r, left)
    };
    // Every find is counted on the bars as the walk makes it; what cannot
    // be offered is named with its reason and has an event, and fails the
    // run unless the user asked for it to be left out.
    let seen = {
        let progress = progress.clone();
        let total = total.clone();
        move |found: &walk::Found| match found {
            walk::Found::Entry(e) => {
                if e.kind != Kind::Dir {
                    progress.add_files(1);
                }
                if progress.shown() {
                    total.inc_length(e.size);
                }
            }
            walk::Found::Left(l) => {
                if l.asked {
                    progress.println(&format!("ftx: left out {}: {}", l.path, l.message));
                } else {
                    progress.println(&format!("ftx: {}: {}", l.path, l.message));
                }
                events.emit(|| Event::EntryLeft {
                    path: l.path.clone(),
                    reason: l.reason.into(),
                    message: l.message.clone(),
                    asked: l.asked,
                });
            }
        }
    };
    let feed = Feed::new(walker, seen);
    // A listening sender serves one call at a time: its END tells the
    // caller whether to call again, which parallel streams could not.
    let streams = if gate.is_some() { 1 } else { cfg.streams };
    type Part = (Gone, Tally, Result<()>, (u64, bool));
    let mut parts: Vec<Part> = if streams <= 1 {
        // One stream (the default): the walk feeds the window as it goes.
        vec![run_one(feed)]
    } else {
        // Several: the files are dealt out by size, which needs them all.
        let mut feed = feed;
        let mut entries = Vec::new();
        while let Some((_, e)) = feed.take() {
            entries.push(std::sync::Arc::unwrap_or_clone(e));
        }
        let walk_left = (feed.left, feed.left_fails);
        let (groups, dirs) = plan(entries, streams);
        let mut parts: Vec<Part> = if groups.len() == 1 {
            groups.into_iter().map(|g| run_one(Feed::of(g))).collect()
        } else {
            std::thread::scope(|sc| {
                let handles: Vec<_> = groups
                    .into_iter()
                    .map(|group| sc.spawn(|| run_one(Feed::of(group))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (
                                Gone::default(),
                                Tally::default(),
                                Err(anyhow::anyhow!("a stream panicked")),
                                (0, false),
                            )
                        })
                    })
                    .collect()
            })
        };
        if !dirs.is_empty() {
            // Directories last, in one session: their modes and mtimes are
            // set at its END, after every stream wrote the files inside
            // them.
            parts.push(run_one(Feed::of(dirs)));
        }
        parts.push((Gone::default(), Tally::default(), Ok(()), walk_left));
        parts
    };
    total.finish_and_clear();
    let mut gone = Gone::default();
    let mut tally = Tally::default();
    let (mut left, mut left_fails) = (0u64, false);
    let mut result = Ok(());
    for (g, t, r, (l, fails)) in parts.drain(..) {
        gone.add(&g);
        tally.add(&t);
        left += l;
        left_fails |= fails;
        if let Err(e) = r {
            if result.is_ok() {
                result = Err(e);
            } else {
                eprintln!("ftx: {e:#}");
            }
        }
    }
    let mut outcome = if left_fails {
        Exit::Failure
    } else {
        Exit::Success
    };
    let broken = result.as_ref().err().map(crate::exit::for_error);
    // Attributes asked for that could not be sent were left behind.
    let attrs_left = (tally.attrs_left > 0).then_some(Exit::Failure);
    outcome = Exit::worst_of(
        gone.worst
            .into_iter()
            .chain(broken)
            .chain(attrs_left)
            .chain([outcome]),
    );
    if let Some(e) = &gone.manifest_error {
        eprintln!("ftx: {e}");
        outcome = outcome.worst(Exit::Failure);
    }
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        events.emit(|| error_event(e));
    }
    // A refused directory is a failure like a refused file.
    let failed = gone.failed;
    events.emit(|| Event::Summary {
        role: "send".into(),
        files_ok: tally.files,
        files_skipped: tally.skipped,
        files_failed: failed,
        entries_left: Some(left),
        bytes: tally.bytes,
        wire_bytes: Some(tally.wire),
        bytes_matched: Some(tally.matched),
        seconds: secs,
        exit_code: outcome.code(),
        peer: None,
        // A sender with a token seals every session or none happens.
        encrypted: cfg.token.is_some(),
    });
    // Said once, as rsync users would want to know: what the copy lacks.
    let (x, acl) = tally.attrs_unsent;
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
        let wire = match (tally.wire < tally.bytes, tally.matched) {
            (false, _) => String::new(),
            (true, 0) => format!(" ({} on the wire)", si_bytes(tally.wire)),
            (true, m) => format!(
                " ({} on the wire, {} matched at the receiver)",
                si_bytes(tally.wire),
                si_bytes(m)
            ),
        };
        let sealed = if cfg.token.is_some() {
            ", encrypted"
        } else {
            ""
        };
        // Symlinks and hard links the receiver made (settled last, at END).
        let links = match gone.links {
            0 => String::new(),
            n => format!(" and {n} link(s)"),
        };
        eprintln!(
            "ftx: sent {} file(s){links}, {} skipped, {failed} failed{left}, {}{wire} in {secs:.1} s ({:.1} MB/s{sealed})",
            tally.files,
            tally.skipped,
            si_bytes(tally.bytes),
            crate::events::mb_per_s(tally.bytes, secs)
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
    /// Entries the walk found and could not offer.
    pub left: u64,
}

/// `ftx serve`: offers `entries` on `conn`, the connection of a getter
/// that asked for them (PULL), in one session, as `ftx send` would
/// (look-ahead hashing, the digest cache, the window, holes, links),
/// taking them from the walk as the window moves (what it leaves out is
/// counted in [`Served::left`]). What
/// is left when the session ends (END said "more": entries past the
/// session's cap, files to offer again with their digest or after a
/// mismatch) the getter asks for in its next call. `cache` is the
/// server's, shared by its sessions.
pub fn offer_on(
    cfg: &SendConfig,
    conn: crate::conn::Conn<crate::secure::Wire>,
    entries: impl Iterator<Item = walk::Found> + Send + 'static,
    list: bool,
    cache: &DigestCache,
) -> Result<Served> {
    let progress = Progress::new(crate::progress::Mode::Off, false);
    let total = progress.bytes_bar(0, Layout::Total);
    let items = Items::new(Feed::new(entries, |_| {}));
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
        walked_all: false,
        manifest: None,
        unsure: Vec::new(),
        tally: Tally::default(),
        asked_digest: 0,
        stdin_sent: false,
        prefixes: ById::default(),
        blocks: ById::default(),
        events: Events::new(false),
    };
    let ended = match s.attempt() {
        Err(b) if !b.err.is::<link::HandedOver>() => Err(b.err),
        _ => Ok(()),
    };
    s.items.retire(None);
    let failed = s.items.gone.failed;
    let left = s.items.feed.as_ref().map_or(0, |f| f.left);
    ended.map(|()| Served {
        files: s.tally.files,
        skipped: s.tally.skipped,
        failed,
        bytes: s.tally.bytes,
        left,
    })
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
fn plan(entries: Vec<walk::Entry>, streams: usize) -> (Vec<Vec<walk::Entry>>, Vec<walk::Entry>) {
    let files = entries.iter().filter(|e| e.kind == Kind::File).count();
    let n = streams.min(files);
    if n <= 1 {
        return (vec![entries], Vec::new());
    }
    // Directories and symlinks last, in a session of their own; a hard
    // link in the stream of the file it links to (the receiver links
    // within one session only), after it.
    let (dirs, rest): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| matches!(e.kind, Kind::Dir | Kind::Symlink));
    let (links, files): (Vec<_>, Vec<_>) = rest.into_iter().partition(|e| e.kind == Kind::HardLink);
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
    let mut load = vec![0u64; n];
    let mut owner = vec![0usize; files.len()];
    for i in order {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(_, l)| *l)
            .unwrap_or((0, &0));
        load[least] += files[i].size.max(1);
        owner[i] = least;
    }
    let mut groups: Vec<Vec<walk::Entry>> = (0..n).map(|_| Vec::new()).collect();
    let mut group_of = std::collections::HashMap::new();
    for (e, o) in files.into_iter().zip(owner) {
        group_of.insert(e.name.as_bytes().to_vec(), o);
        groups[o].push(e);
    }
    for link in links {
        let to = link.link_to.as_ref().map(|t| t.as_bytes());
        let o = to.and_then(|t| group_of.get(t)).copied().unwrap_or(0);
        groups[o].push(link);
    }
    (groups, dirs)
}
