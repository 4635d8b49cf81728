//! ftx: reliable file transfer over TCP. A sender offers files (name, size,
//! MD5) and streams their bodies; a receiver writes each into a partial
//! file while hashing it, and only a matching digest puts it in place.
//!
//! # Layout
//!
//! Dependencies point one way: `main` → [`run`] → [`cli`]/[`config`] →
//! [`send`], [`recv`] → [`store`], [`conn`], [`walk`], [`net`],
//! [`progress`], [`events`] → [`protocol`]. Neither role imports the other.
//!
//! - `main.rs`: parse, [`run`], print `ftx: {err:#}`, exit with the code.
//! - [`cli`]: clap definitions, turned into [`config`] structs (nothing
//!   below sees clap); [`config`]: `SendConfig`, `RecvConfig`, `BenchConfig`.
//! - [`exit`]: the exit-code contract.
//! - [`protocol`]: the wire (version 3), sans I/O. `frame.rs` (frame
//!   types), `codec.rs` (encode, decode; tests in `codec_tests.rs`),
//!   `codes.rs` (every ERROR/REJECT/RESULT/SKIP code with
//!   its JSON reason, exit code and message: the one table), `name.rs`
//!   (wire names), `limits.rs`.
//! - [`recv`]: the receiver, one file per stage or thread (its `mod.rs`
//!   draws the threads): `listen.rs` signals; `session.rs` the session thread's frame loop; `offer.rs` a
//!   FILE offer, decided by `admit.rs` (pure); `inflight.rs` claims across
//!   sessions; `dirs.rs` DIR entries; `stage.rs` new directories made
//!   under a working name and renamed into place with their files;
//!   `links.rs` SYMLINK and LINK entries;
//!   `intake.rs` bodies (extents, holes) and batch hashing; `commit.rs` the
//!   commit thread; `report.rs` RESULTs, lines, events; `types.rs` what
//!   they share.
//! - [`store`]: the receiver's file-system side, a partial's life
//!   (`mod.rs`): `resume.rs` (the resume decision, pure, and the block
//!   check), `state.rs` (checkpoint codec), `small.rs` (bodies under 4 MiB,
//!   on the session thread), `pipeline.rs` (bodies of 4 MiB and more:
//!   `Pipeline::new` starts an `ftx-hash` thread that runs MD5 and an
//!   `ftx-disk` thread, in `disk.rs`, that writes the bytes and
//!   checkpoints), `block.rs`, `attrs.rs` (modes, mtimes, digest record,
//!   syncs), `budget.rs` (the receiver-wide memory budget every held body
//!   byte is leased from), `types.rs`.
//! - [`send`]: the sender. `mod.rs` run and the `-j` split; `retry.rs`
//!   attempts and backoff; `window.rs` one session's window; `link.rs`
//!   the reader thread and the calls of `--listen`; `answer.rs` offers,
//!   bodies, answers; `stream.rs` bodies hashed while sent; `holes.rs`
//!   sparse files' extents; `verdict.rs` answer → action (pure);
//!   `prepare.rs` the look-ahead hashing thread, `lookahead.rs` its
//!   bounds and permits; `types.rs`; `check.rs`
//!   `ftx check` (offers without bodies; `recv/check.rs` answers them).
//! - [`front`]: what every listening command shares (`gate.rs`, where
//!   connections wait for their handshake, deciding with `handshake.rs`;
//!   the session slots and eviction in `mod.rs`) and the dialer's
//!   handshake and first frame (`dial.rs`): who dialed never decides who
//!   offers. [`serve`]: `ftx serve`, the sending side driven from a
//!   listener (`roots.rs`: roots confined with `openat2`; `http.rs`: the
//!   HTTP face, hyper, with `conns.rs` its connection caps and
//!   `digests.rs` the digests it knows); `recv/pull.rs` is `ftx
//!   get`, the receiving side driven from a dialer, `recv/list.rs` `ftx ls`.
//!   [`cache`] also holds [`cache::Version`], a file version's identity
//!   (the digest caches' key on both sides).
//! - [`conn`]: a framed connection over any `Read + Write`; [`net`]: sockets
//!   (the only user of socket2); [`auth`]: the token and the key derived
//!   from it; [`secure`]: sealed sessions, `mod.rs` the Noise handshake
//!   and the cipher choice, `wire.rs` [`secure::Wire`], the connection
//!   both roles use, plain or sealed into records.
//! - [`walk`]: the sender's list of entries; [`cache`]: the sender's digest
//!   cache.
//! - [`xattr`]: extended attributes and ACLs (`--xattrs`, `--acls`):
//!   read by the sender, set by the receiver.
//! - [`digest`], [`md5core`], [`md5multi`]: MD5 (one stream; many at once
//!   with SIMD).
//! - [`progress`]: bars (the only user of indicatif); [`events`]: `--json`;
//!   [`sanitize`]: escaping names for terminals and logs.
//! - [`man`]: `ftx man`, the manual page (options, exit codes, examples).
//! - [`manifest`]: manifests in `md5sum -c` form (`ftx manifest`,
//!   `--manifest`).
//! - [`bench`]: `ftx bench`: `data.rs` generated data, `proc.rs` child
//!   processes and their usage, `report.rs` the table.

pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod conn;
pub mod delta;
pub mod digest;
pub mod events;
pub mod exit;
pub mod front;
pub mod man;
pub mod manifest;
pub mod md5core;
pub mod md5multi;
pub mod net;
pub mod progress;
pub mod protocol;
pub mod recv;
pub mod sanitize;
pub mod secure;
pub mod send;
pub mod serve;
pub mod store;
pub mod walk;
pub mod xattr;

use exit::Exit;

/// Runs a parsed command line and returns the exit status.
pub fn run(cli: cli::Cli) -> anyhow::Result<Exit> {
    if matches!(
        cli.command,
        cli::Command::Completions { .. } | cli::Command::Man | cli::Command::Token { file: None }
    ) {
        // Commands that only print: a closed pipe (`ftx man | head`) ends
        // them quietly, as it ends cat or man, instead of an error.
        // SAFETY: setting a signal's disposition to its default, before
        // any other thread exists; no handler is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        cli::Command::Send(a) => {
            prepare_transfer();
            send::run(&a.into_config()?)
        }
        cli::Command::Recv(a) => {
            prepare_transfer();
            recv::run(&a.into_config()?)
        }
        cli::Command::Get(a) => {
            prepare_transfer();
            recv::run(&a.into_config()?)
        }
        cli::Command::Ls(a) => recv::list::run(&a.into_config()?),
        cli::Command::Check(a) => send::check::run(&a.into_config()?),
        cli::Command::Manifest(a) => manifest::run(
            &a.paths,
            a.out.as_deref(),
            match a.hash {
                cli::HashArg::Md5 => digest::Algo::Md5,
                cli::HashArg::Xxh3 => digest::Algo::Xxh3,
            },
            !a.no_cache,
        ),
        cli::Command::Serve(a) => {
            prepare_transfer();
            serve::run(&a.into_config()?)
        }
        cli::Command::Bench(a) => bench::run(&a.into_config()).map(|()| Exit::Success),
        cli::Command::Completions { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ftx", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        cli::Command::Token { file: None } => {
            println!("{}", *auth::fresh_token()?);
            Ok(Exit::Success)
        }
        cli::Command::Token { file: Some(path) } => {
            auth::write_token_file(&path)?;
            eprintln!(
                "ftx: wrote a fresh token to {} (mode 0600); give it to the other side with --token-file",
                sanitize::escape(&path.to_string_lossy())
            );
            Ok(Exit::Success)
        }
        cli::Command::Man => {
            man::render(&mut std::io::stdout().lock())
                .map_err(|e| anyhow::anyhow!("cannot write the man page: {e}"))?;
            Ok(Exit::Success)
        }
    }
}

/// A quarter of the open-file limit, within `min..=max`: what one
/// session may hold open (sessions and connections share the limit).
pub(crate) fn open_files_quarter(min: usize, max: usize) -> usize {
    let open = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(open / 4)
        .unwrap_or(usize::MAX)
        .clamp(min, max)
}

/// The descriptor table is sized for this many descriptors up front (or
/// the open-file limit, if lower): see [`prepare_transfer`].
const FD_TABLE: u64 = 16384;

/// Before a command that moves files starts any thread: batch scheduling
/// ([`batch_scheduling`]), the open-file limit raised
/// ([`raise_open_file_limit`]), and the descriptor table grown to
/// [`FD_TABLE`] entries now, while the process has one thread. Grown
/// later, with threads running, the kernel
/// waits for an RCU grace period on every doubling (`expand_files` calls
/// `synchronize_rcu`), during which the thread that opened the file,
/// and every other thread that opens one, sleeps: measured here, the
/// receiver's two threads 30-60 ms each in a run of 100,000 small files,
/// with both cores idle. The table costs 8 bytes an entry (128 KiB).
/// Best effort.
fn prepare_transfer() {
    batch_scheduling();
    raise_open_file_limit();
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(FD_TABLE);
    let Ok(highest) = i32::try_from(limit.saturating_sub(1)) else {
        return;
    };
    use rustix::fs::{Mode, OFlags};
    if let Ok(root) = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        // Dropped at once: the table keeps its size.
        let _ = rustix::io::fcntl_dupfd_cloexec(&root, highest);
    }
}

/// Asks the scheduler to treat this process's threads as batch work
/// (`SCHED_BATCH`, as `chrt -b 0` does; same share of CPU, same nice
/// value): a thread woken by its partner (a queue, a channel, a socket)
/// does not preempt the one running but waits for its turn. A transfer's
/// threads hand work to each other thousands of times a second; woken
/// threads preempting each other cost the sender 10,000 context switches
/// on 100,000 small files, 3,000 this way, and the run 4 % of its CPU and
/// 5 % of its time (nine rounds in turns). Best effort: called before any
/// thread starts, so that all of them inherit it.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's scheduling policy from a valid
    // parameter; no memory is shared with the kernel beyond the call.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// Raises the soft limit on open files to the hard limit (at most 65536),
/// as Go programs and many servers do. Each file in flight holds a
/// descriptor on both ends (a window of up to 4096 per connection, several
/// connections with `-j`, several senders on one receiver), and the usual
/// soft limit of 1024 is easily reached. Best effort.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.unwrap_or(u64::MAX).min(65536);
    if limit.current.is_some_and(|cur| cur < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        );
    }
}
