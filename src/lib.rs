//! ftx: reliable file transfer over TCP. A sender offers files (name, size,
//! MD5) and streams their bodies; a receiver writes each into a partial
//! file while hashing it, and only a matching digest puts it in place.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions, turned into [`config`] structs.
//! - [`send`], [`recv`]: the two roles.
//! - [`conn`]: a framed connection over any `Read + Write`.
//! - [`net`]: sockets (listen, connect with timeout, tuning).
//! - [`walk`]: the sender's list of entries.
//! - [`protocol`]: the wire format, sans I/O (frames, names, limits).
//! - [`auth`]: the shared token and the AUTH HMAC.
//! - [`digest`], [`progress`], [`sanitize`]: MD5, bars, escaping.
//! - [`exit`]: the exit-code contract.
//! - [`bench`]: `ftx bench`, real sender and receiver over loopback, measured.

pub mod auth;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod conn;
pub mod digest;
pub mod events;
pub mod exit;
pub mod md5core;
pub mod md5multi;
pub mod net;
pub mod progress;
pub mod protocol;
pub mod recv;
pub mod sanitize;
pub mod send;
pub mod store;
pub mod walk;

use exit::Exit;

/// Runs a parsed command line and returns the exit status.
pub fn run(cli: cli::Cli) -> anyhow::Result<Exit> {
    match cli.command {
        cli::Command::Send(a) => {
            raise_open_file_limit();
            send::run(&a.into_config()?)
        }
        cli::Command::Recv(a) => {
            raise_open_file_limit();
            recv::run(&a.into_config()?)
        }
        cli::Command::Bench(a) => bench::run(&a.into_config()).map(|()| Exit::Success),
        cli::Command::Completions { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ftx", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        cli::Command::Man => {
            let cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| anyhow::anyhow!("cannot write the man page: {e}"))?;
            Ok(Exit::Success)
        }
    }
}

/// Raises the soft limit on open files to the hard limit (at most 65536),
/// as Go programs and many servers do. Each file in flight holds a
/// descriptor on both ends (a window of 128 per connection, several
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
