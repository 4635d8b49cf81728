//! The command line (clap derive). Turns flags into the plain config
//! structs of [`crate::config`]; nothing below this module sees clap.

use crate::config::{RecvConfig, SendConfig};
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Reliable file transfer: fast, verified (MD5), safe to leave listening.
#[derive(Debug, Parser)]
#[command(name = "ftx", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, exiting with status 2 (clap's usage error)
    /// on bad usage, including `ftx send` without both a path and a target.
    pub fn parse_checked() -> Cli {
        Self::check(<Cli as Parser>::parse()).unwrap_or_else(|e| e.exit())
    }

    /// Checks what clap cannot express: `ftx send` needs a path and a target.
    pub fn check(cli: Cli) -> Result<Cli, clap::Error> {
        if let Command::Send(a) = &cli.command {
            let needed = if a.listen.is_some() { 1 } else { 2 };
            if a.args.len() < needed {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut send = cmd.find_subcommand_mut("send").cloned().unwrap_or_default();
                return Err(send.error(
                    clap::error::ErrorKind::TooFewValues,
                    "ftx send needs at least one PATH and then HOST:PORT (or --listen PORT and a PATH)",
                ));
            }
        }
        Ok(cli)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send files and directories to a receiver.
    Send(SendArgs),
    /// Receive files into a directory.
    Recv(RecvArgs),
    /// Fetch files and trees from an `ftx serve` (HOST:PORT/PATH).
    Get(GetArgs),
    /// List what an `ftx serve` offers (HOST:PORT[/PATH]).
    Ls(LsArgs),
    /// Offer directories and files, read-only, to `ftx get` and `ftx ls`.
    Serve(ServeArgs),
    /// Write a manifest (`HEX  NAME` lines, as `md5sum -c` reads them) of
    /// the files under PATH..., named as a transfer names them.
    Manifest(ManifestArgs),
    /// Does a receiver hold exactly these files? Compares digests, sends
    /// no file (`=` same, `*` different, `+` only here, `-` only there).
    Check(CheckArgs),
    /// Measure a real receiver and sender over loopback on generated files.
    Bench(BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
    /// Make a fresh token (128 random bits as 32 hex digits) for
    /// --token-file or FTX_TOKEN on both sides: into FILE, created with
    /// mode 0600 (never over an existing file), or on stdout.
    Token {
        /// Write the token here instead of printing it.
        file: Option<std::path::PathBuf>,
    },
}

/// `ftx bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Size of the single-file case (e.g. 1G, 100M; 0 skips it).
    #[arg(long, default_value = "1G", value_parser = crate::config::parse_size)]
    pub size: u64,
    /// Number of small files (1..64 KiB) in the many-files case (0 skips it).
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    /// Parallel connections for the sender.
    #[arg(long, short = 'j', default_value_t = 1)]
    pub streams: usize,
    /// Directory for the generated data (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the generated data.
    #[arg(long)]
    pub keep: bool,
}

/// `ftx send`.
#[derive(Debug, Args)]
#[command(
    override_usage = "ftx send [OPTIONS] PATH... HOST:PORT",
    after_help = "Example: ftx send file.iso host:6000\n         ftx send dir1 file2 127.0.0.1:6000"
)]
pub struct SendArgs {
    /// Files and directories to send, then the receiver as HOST:PORT.
    #[arg(required = true, num_args = 1.., value_name = "PATH")]
    pub args: Vec<String>,
    /// No progress bar, no summary line.
    #[arg(short, long)]
    pub quiet: bool,
    /// No progress bars; the per-file lines and the summary stay.
    #[arg(long)]
    pub no_progress: bool,
    /// On a terminal, a line for every file (else only for files that
    /// took a second or more to move; always when stdout is not a terminal).
    #[arg(short, long)]
    pub verbose: bool,
    /// Give up on a receiver silent for this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// How long to try to connect, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Wait for a receiver to call in (`ftx recv --connect HOST:PORT`)
    /// on [ADDR:]PORT instead of calling one: every argument is then a
    /// path. For a receiver behind NAT or a firewall.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub listen: Option<String>,
    /// Reconnect and resume for this many seconds without progress before
    /// giving up (0: any failure is final).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub retry_for: u64,
    /// Do not use or update the digest cache (~/.cache/ftx): hash every file.
    #[arg(long)]
    pub no_cache: bool,
    /// Newline-delimited JSON events on stdout (see README).
    #[arg(long)]
    pub json: bool,
    /// Send what symlinks inside directories point to (loops are skipped),
    /// instead of the links themselves.
    #[arg(long, short = 'L', conflicts_with = "no_links")]
    pub follow_links: bool,
    /// Leave symlinks inside directories out (each one counted and listed)
    /// without failing the run.
    #[arg(long)]
    pub no_links: bool,
    /// Leave FIFOs, sockets and devices out (each one counted and listed)
    /// without failing the run; without it, they fail it (exit 1).
    #[arg(long)]
    pub skip_special: bool,
    /// Send extended attributes (user.*, and security.* and trusted.*
    /// where readable: file capabilities too), as rsync -X; the receiver
    /// sets what it may and names what it may not.
    #[arg(long, short = 'X')]
    pub xattrs: bool,
    /// Send POSIX ACLs (the system.posix_acl_* attributes), as rsync -A.
    #[arg(long, short = 'A')]
    pub acls: bool,
    /// Parallel connections: files are shared out between them, so hashing
    /// runs on several cores when there are many files.
    #[arg(long, short = 'j', default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub streams: u64,
    /// File holding the shared token (else $FTX_TOKEN; never on the command
    /// line). With a token the session is encrypted, and a receiver without
    /// one is refused.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The digest each file is checked with: md5, or xxh3 (XXH3-128) for
    /// links faster than one core's MD5.
    #[arg(long, value_enum, default_value_t = HashArg::Md5, value_name = "ALGO")]
    pub hash: HashArg,
    /// The name standard input (`-` as PATH) arrives under.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The cipher of an encrypted session: auto (AES-256-GCM where both
    /// CPUs have AES instructions, else ChaCha20-Poly1305), or one of them
    /// (ChaCha20-Poly1305 wins if either side asks for it).
    #[arg(long, value_enum, default_value_t = CipherArg::Auto, value_name = "CIPHER", env = "FTX_CIPHER")]
    pub cipher: CipherArg,
    /// Write a manifest of every file the receiver confirmed (verified or
    /// already there, identical) into FILE, as `md5sum -c` reads it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Entries offered in one session at most before the sender ends it
    /// and opens the next (the protocol's cap; lower only to test the
    /// change of sessions).
    #[arg(long, hide = true, default_value_t = crate::protocol::limits::MAX_SESSION_ENTRIES as u32,
          value_parser = clap::value_parser!(u32).range(1..=crate::protocol::limits::MAX_SESSION_ENTRIES as i64))]
    pub session_entries: u32,
}

/// `--cipher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CipherArg {
    /// By the CPU.
    Auto,
    /// AES-256-GCM.
    AesGcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl CipherArg {
    fn choice(self) -> Option<crate::secure::Cipher> {
        match self {
            CipherArg::Auto => None,
            CipherArg::AesGcm => Some(crate::secure::Cipher::AesGcm),
            CipherArg::Chacha20Poly1305 => Some(crate::secure::Cipher::ChaChaPoly),
        }
    }
}

/// `--hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashArg {
    /// MD5 (the default).
    Md5,
    /// XXH3-128.
    Xxh3,
}

/// What `ftx recv` and `ftx get` share: how received files are written
/// and reported.
#[derive(Debug, Args)]
pub struct Writing {
    /// Replace existing files whose content differs.
    #[arg(long)]
    pub overwrite: bool,
    /// Create symlinks whose target is absolute or climbs out of the
    /// transferred tree (refused by default, like rsync --safe-links).
    #[arg(long)]
    pub allow_unsafe_links: bool,
    /// Refuse names that differ from another of the transfer only by case
    /// or Unicode normalisation, as if OUT folded names (for a tree that
    /// will be copied to macOS or Windows); automatic where OUT's file
    /// system folds them.
    #[arg(long)]
    pub fold_names: bool,
    /// No progress bar (`ftx get`: no summary line either).
    #[arg(short, long)]
    pub quiet: bool,
    /// No progress bars; the per-file lines stay.
    #[arg(long)]
    pub no_progress: bool,
    /// On a terminal, a line for every file (else only for files that
    /// took a second or more to move; always when stdout is not a terminal).
    #[arg(short, long)]
    pub verbose: bool,
    /// Do not use or update the digest cache (~/.cache/ftx) for files
    /// already in OUT: hash each one offered again.
    #[arg(long)]
    pub no_cache: bool,
    /// Write a manifest of every file verified (or skipped as identical)
    /// into FILE, as `md5sum -c` reads it (names relative to OUT).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// `ftx get`.
#[derive(Debug, Args)]
#[command(after_help = "Example: ftx get buildhost:6000/artifacts/app.tar --out ./downloads")]
pub struct GetArgs {
    /// What to fetch: HOST:PORT/PATH, where PATH starts with the name of
    /// one of the server's roots (see `ftx ls HOST:PORT`); HOST:PORT alone
    /// fetches everything the server offers. All from the same server.
    #[arg(required = true, num_args = 1.., value_name = "HOST:PORT[/PATH]")]
    pub sources: Vec<String>,
    /// Directory to fetch into; must exist. Nothing is written outside it.
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Parallel sessions (files split between them by name).
    #[arg(long = "streams", short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub streams: u16,
    /// How files are written and reported.
    #[command(flatten)]
    pub writing: Writing,
    /// How to reach the server.
    #[command(flatten)]
    pub dialing: Dialing,
    /// Keep trying for this many seconds without progress (0: no retry).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub retry_for: u64,
    /// Newline-delimited JSON events on stdout (see README).
    #[arg(long)]
    pub json: bool,
    /// The digest the server offers files with (xxh3: faster, not
    /// cryptographic).
    #[arg(long, value_enum, default_value_t = HashArg::Md5)]
    pub hash: HashArg,
}

/// How a command that dials reaches its peer (`ftx get`, `ftx ls`, `ftx check`).
#[derive(Debug, Args)]
pub struct Dialing {
    /// Give up on a peer silent for this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// File holding the shared token (else $FTX_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The cipher of an encrypted session.
    #[arg(long, value_enum, default_value_t = CipherArg::Auto, value_name = "CIPHER", env = "FTX_CIPHER")]
    pub cipher: CipherArg,
}

impl Dialing {
    /// The plain config; reads the token.
    fn into_config(self) -> anyhow::Result<crate::config::Dialing> {
        Ok(crate::config::Dialing {
            timeout: Duration::from_secs(self.timeout),
            connect_timeout: Duration::from_secs(self.connect_timeout),
            token: crate::auth::load_token(self.token_file.as_deref())?,
            cipher: self.cipher.choice(),
        })
    }
}

/// `ftx check`.
#[derive(Debug, Args)]
#[command(after_help = "Example: ftx check dist/ ci-host:6000 (exit 0: the same; 7: they differ)")]
pub struct CheckArgs {
    /// Files and directories to compare, then the receiver as HOST:PORT.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub args: Vec<String>,
    /// The receiver re-reads every file instead of trusting its digest
    /// cache (to catch bit rot).
    #[arg(long)]
    pub deep: bool,
    /// The digest compared: md5 or xxh3 (XXH3-128).
    #[arg(long, value_enum, default_value_t = HashArg::Md5)]
    pub hash: HashArg,
    /// Do not use or update the digest cache here: hash every file.
    #[arg(long)]
    pub no_cache: bool,
    /// JSON events on stdout (`checked`, `check_summary`).
    #[arg(long)]
    pub json: bool,
    /// No summary line when everything is the same.
    #[arg(short, long)]
    pub quiet: bool,
    /// How to reach the receiver.
    #[command(flatten)]
    pub dialing: Dialing,
}

impl CheckArgs {
    /// The check's config; the last argument is the receiver.
    pub fn into_config(mut self) -> anyhow::Result<crate::config::CheckConfig> {
        let target = self.args.pop().unwrap_or_default();
        let target = parse_target(&target).map_err(usage)?;
        if self.args.iter().any(|a| a == "-") {
            return Err(usage(
                "ftx check compares files; standard input (-) cannot be checked",
            ));
        }
        Ok(crate::config::CheckConfig {
            sources: self.args.into_iter().map(PathBuf::from).collect(),
            target,
            deep: self.deep,
            hash: match self.hash {
                HashArg::Md5 => crate::digest::Algo::Md5,
                HashArg::Xxh3 => crate::digest::Algo::Xxh3,
            },
            cache: !self.no_cache,
            json: self.json,
            quiet: self.quiet,
            dialing: self.dialing.into_config()?,
        })
    }
}

/// `ftx manifest`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: ftx manifest dist > dist.md5; later, in the receiving directory: md5sum -c dist.md5"
)]
pub struct ManifestArgs {
    /// Files and directories (each named by its last component).
    #[arg(required = true, num_args = 1.., value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Write it into FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The digest: md5 (`md5sum -c`) or xxh3 (XXH3-128, `xxh128sum -c`).
    #[arg(long, value_enum, default_value_t = HashArg::Md5)]
    pub hash: HashArg,
    /// Do not use or update the digest cache: hash every file.
    #[arg(long)]
    pub no_cache: bool,
}

/// `ftx ls`.
#[derive(Debug, Args)]
#[command(after_help = "Example: ftx ls buildhost:6000/artifacts")]
pub struct LsArgs {
    /// The server, and what to list (HOST:PORT alone: every root).
    #[arg(value_name = "HOST:PORT[/PATH]")]
    pub source: String,
    /// One JSON object per entry on stdout.
    #[arg(long)]
    pub json: bool,
    /// How to reach the server.
    #[command(flatten)]
    pub dialing: Dialing,
}

/// `ftx serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: ftx serve /srv/artifacts /srv/isos --port 6000 --token-file ~/.ftx-token"
)]
pub struct ServeArgs {
    /// Directories (or files) to offer, each under its last component.
    #[arg(required = true, num_args = 1.., value_name = "ROOT")]
    pub roots: Vec<PathBuf>,
    /// Port to listen on (0 picks a free one; the real one is printed).
    #[arg(long, short, default_value_t = 6000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "::", value_name = "ADDR")]
    pub bind: IpAddr,
    /// Drop a getter silent for this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Most sessions served at once; more are refused as busy.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    /// A line for every session on stderr (it is the default), or none.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not use or update the digest cache (~/.cache/ftx).
    #[arg(long)]
    pub no_cache: bool,
    /// Offer extended attributes too (as `ftx send -X`).
    #[arg(long, short = 'X')]
    pub xattrs: bool,
    /// Offer POSIX ACLs too (as `ftx send -A`).
    #[arg(long, short = 'A')]
    pub acls: bool,
    /// File holding the shared token (else $FTX_TOKEN): getters must hold
    /// it, and every session is encrypted with it.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Refuse to start without a token.
    #[arg(long)]
    pub require_token: bool,
    /// The cipher of an encrypted session.
    #[arg(long, value_enum, default_value_t = CipherArg::Auto, value_name = "CIPHER", env = "FTX_CIPHER")]
    pub cipher: CipherArg,
    /// Also serve the files over HTTP on [ADDR:]PORT (GET and HEAD, ranges,
    /// digests, listings): for curl, wget, aria2c, browsers. Plain HTTP,
    /// so not with a token.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub http: Option<String>,
}

/// `ftx recv`.
#[derive(Debug, Args)]
#[command(after_help = "Example: ftx recv --port 6000 --out /srv/incoming")]
pub struct RecvArgs {
    /// Port to listen on (0 picks a free one; the real one is printed).
    #[arg(long, short, default_value_t = 6000)]
    pub port: u16,
    /// Address to listen on; the default takes IPv6 and IPv4 (IPv4 alone
    /// where the system has no IPv6).
    #[arg(long, default_value = "::", value_name = "ADDR")]
    pub bind: IpAddr,
    /// Directory to receive into; must exist. Nothing is written outside it.
    #[arg(long, short, default_value = ".", value_name = "DIR", env = "FTX_OUT")]
    pub out: PathBuf,
    /// Serve one transfer, then exit: 0 only if every file was verified (a
    /// tree of more than 1,048,576 entries comes in several sessions; the
    /// sender says when more follow)
    #[arg(long)]
    pub once: bool,
    /// How files are written and reported.
    #[command(flatten)]
    pub writing: Writing,
    /// Drop a sender silent for this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Most sessions served at once; more are refused as busy.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,
    /// Dial a sender that waits with `ftx send --listen` (HOST:PORT)
    /// instead of listening: a receiver behind NAT or a firewall needs
    /// only an outbound connection. Sessions are taken one after another
    /// until the sender is gone.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// With --connect: keep dialing for this many seconds without a
    /// session that moved the transfer on (the sender may not be up yet).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub retry_for: u64,
    /// Newline-delimited JSON events on stdout (see README).
    #[arg(long)]
    pub json: bool,
    /// File holding the shared token (else $FTX_TOKEN): senders must hold
    /// it, and every session is encrypted with it.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Refuse to start without a token (--token-file or FTX_TOKEN), for a
    /// receiver left listening on a network.
    #[arg(long)]
    pub require_token: bool,
    /// The cipher of an encrypted session: auto (AES-256-GCM where both
    /// CPUs have AES instructions, else ChaCha20-Poly1305), or one of them
    /// (ChaCha20-Poly1305 wins if either side asks for it).
    #[arg(long, value_enum, default_value_t = CipherArg::Auto, value_name = "CIPHER", env = "FTX_CIPHER")]
    pub cipher: CipherArg,
}

impl BenchArgs {
    /// The plain config.
    pub fn into_config(self) -> crate::config::BenchConfig {
        crate::config::BenchConfig {
            size: self.size,
            files: self.files,
            streams: self.streams,
            dir: self.dir,
            keep: self.keep,
        }
    }
}

/// Checks the receiver's address: `HOST:PORT`, an IPv6 address in
/// brackets (`[::1]:6000`), a port from 1 to 65535. Returns it as given, or
/// what is wrong with it. Pure.
pub fn parse_target(s: &str) -> Result<String, String> {
    let wrong = |why: &str| {
        format!(
            "the receiver must be the last argument, as HOST:PORT (for example myhost:6000 or [::1]:6000); '{}' {why}",
            crate::sanitize::escape(s)
        )
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(wrong("has no port"));
    };
    if host.is_empty() {
        return Err(wrong("has no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(wrong("is an IPv6 address without brackets, or has no port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_owned()),
        _ => Err(wrong("has no valid port (1 to 65535)")),
    }
}

/// `--listen [ADDR:]PORT`: the address (all of IPv6 and IPv4 when only
/// a port is given) and the port.
pub fn parse_listen(s: &str) -> Result<(std::net::IpAddr, u16), String> {
    let wrong = |why: &str| format!("--listen {s:?} {why}: give a PORT, or ADDR:PORT");
    if let Ok(port) = s.parse::<u16>() {
        return Ok((std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse::<std::net::SocketAddr>()
        .map(|a| (a.ip(), a.port()))
        .map_err(|_| wrong("is not a port or an address with a port"))
}

impl SendArgs {
    /// The plain config; the last positional argument is the receiver.
    /// Reads the token (from `--token-file` or `$FTX_TOKEN`).
    pub fn into_config(mut self) -> anyhow::Result<SendConfig> {
        let listen = self
            .listen
            .as_deref()
            .map(parse_listen)
            .transpose()
            .map_err(|m| crate::exit::ExitError::new(crate::exit::Exit::Usage, m))?;
        let target = match listen {
            Some(at) => format!("the receivers calling in on port {}", at.1),
            None => {
                let target = self.args.pop().unwrap_or_default();
                // Checked before anything else: a forgotten port is a
                // typo, not a network fault to retry.
                parse_target(&target)
                    .map_err(|m| crate::exit::ExitError::new(crate::exit::Exit::Usage, m))?
            }
        };
        if listen.is_some() && self.args.is_empty() {
            return Err(crate::exit::ExitError::new(
                crate::exit::Exit::Usage,
                "ftx send --listen PORT needs at least one path",
            )
            .into());
        }
        if listen.is_some() && self.streams > 1 {
            return Err(crate::exit::ExitError::new(
                crate::exit::Exit::Usage,
                "--listen takes one receiver's calls at a time: -j needs the receiver to be called",
            )
            .into());
        }
        let dashes = self.args.iter().filter(|a| *a == "-").count();
        let usage = |m: &str| -> anyhow::Error {
            crate::exit::ExitError::new(crate::exit::Exit::Usage, m).into()
        };
        if dashes > 1 {
            return Err(usage("standard input (-) can be sent once per run"));
        }
        if dashes == 1 && self.name.is_none() {
            return Err(usage(
                "sending standard input (-) needs --name NAME: the name it arrives under",
            ));
        }
        if dashes == 0 && self.name.is_some() {
            return Err(usage(
                "--name names standard input (-), which is not among the paths",
            ));
        }
        Ok(SendConfig {
            sources: self.args.into_iter().map(PathBuf::from).collect(),
            target,
            quiet: self.quiet,
            no_progress: self.no_progress,
            verbose: self.verbose,
            timeout: Duration::from_secs(self.timeout),
            connect_timeout: Duration::from_secs(self.connect_timeout),
            retry_for: Duration::from_secs(self.retry_for),
            cache: !self.no_cache,
            json: self.json,
            walk: crate::walk::WalkOptions {
                follow_links: self.follow_links,
                no_links: self.no_links,
                skip_special: self.skip_special,
                one_file_system: false,
            },
            streams: usize::try_from(self.streams).unwrap_or(1),
            token: crate::auth::load_token(self.token_file.as_deref())?,
            stdin_name: self.name,
            hash: match self.hash {
                HashArg::Md5 => crate::digest::Algo::Md5,
                HashArg::Xxh3 => crate::digest::Algo::Xxh3,
            },
            cipher: self.cipher.choice(),
            attrs: crate::xattr::Selection {
                xattrs: self.xattrs,
                acls: self.acls,
            },
            listen,
            manifest: self.manifest,
            session_entries: self.session_entries as usize,
        })
    }
}

impl RecvArgs {
    /// The plain config. Reads the token (from `--token-file` or
    /// `$FTX_TOKEN`).
    pub fn into_config(self) -> anyhow::Result<RecvConfig> {
        let token = crate::auth::load_token(self.token_file.as_deref())?;
        if self.require_token && token.is_none() {
            return Err(crate::exit::ExitError::new(
                crate::exit::Exit::Usage,
                "--require-token: no token set; give --token-file FILE or set FTX_TOKEN (make one with `ftx token`)",
            )
            .into());
        }
        Ok(RecvConfig {
            bind: self.bind,
            port: self.port,
            out: self.out,
            once: self.once,
            overwrite: self.writing.overwrite,
            allow_unsafe_links: self.writing.allow_unsafe_links,
            fold_names: self.writing.fold_names,
            quiet: self.writing.quiet,
            no_progress: self.writing.no_progress,
            verbose: self.writing.verbose,
            cache: !self.writing.no_cache,
            manifest: self.writing.manifest.clone(),
            timeout: Duration::from_secs(self.timeout),
            max_sessions: usize::try_from(self.max_sessions).unwrap_or(usize::MAX),
            json: self.json,
            token,
            cipher: self.cipher.choice(),
            max_names: crate::config::DEFAULT_MAX_NAMES,
            connect: self
                .connect
                .map(|c| parse_target(&c))
                .transpose()
                .map_err(|m| crate::exit::ExitError::new(crate::exit::Exit::Usage, m))?,
            retry_for: Duration::from_secs(self.retry_for),
            paths: Vec::new(),
            streams: 1,
            connect_timeout: Duration::from_secs(10),
            hash: crate::digest::Algo::Md5,
            get: false,
        })
    }
}

/// `HOST:PORT/PATH` (or `[V6]:PORT/PATH`, or without `/PATH`): the server
/// and the path asked for (`None`: everything). Pure.
pub fn parse_source(s: &str) -> Result<(String, Option<Vec<u8>>), String> {
    let split = if s.starts_with('[') {
        s.find(']')
            .and_then(|end| s[end..].find('/').map(|i| end + i))
    } else {
        s.find('/')
    };
    let (addr, path) = match split {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let target = parse_target(addr).map_err(|_| {
        format!(
            "'{}' is not HOST:PORT or HOST:PORT/PATH (for example buildhost:6000/artifacts/app.tar)",
            crate::sanitize::escape(s)
        )
    })?;
    let path = path
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| p.as_bytes().to_vec());
    Ok((target, path))
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    crate::exit::ExitError::new(crate::exit::Exit::Usage, msg.into()).into()
}

impl GetArgs {
    /// The receiver's config, dialing the one server named.
    pub fn into_config(self) -> anyhow::Result<RecvConfig> {
        let mut target = None;
        let mut paths = Vec::new();
        for s in &self.sources {
            let (t, p) = parse_source(s).map_err(usage)?;
            if target.as_ref().is_some_and(|x| *x != t) {
                return Err(usage(
                    "every HOST:PORT/PATH of one `ftx get` must name the same server; run one get per server",
                ));
            }
            target = Some(t);
            match p {
                Some(p) => paths.push(p),
                // HOST:PORT alone: everything, whatever else is named.
                None => {
                    paths.clear();
                    break;
                }
            }
        }
        let dialing = self.dialing.into_config()?;
        Ok(RecvConfig {
            bind: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            port: 0,
            out: self.out,
            once: false,
            overwrite: self.writing.overwrite,
            allow_unsafe_links: self.writing.allow_unsafe_links,
            fold_names: self.writing.fold_names,
            quiet: self.writing.quiet,
            no_progress: self.writing.no_progress,
            verbose: self.writing.verbose,
            cache: !self.writing.no_cache,
            manifest: self.writing.manifest.clone(),
            timeout: dialing.timeout,
            max_sessions: usize::from(self.streams) + 1,
            json: self.json,
            token: dialing.token,
            cipher: dialing.cipher,
            max_names: crate::config::DEFAULT_MAX_NAMES,
            connect: target,
            retry_for: Duration::from_secs(self.retry_for),
            paths,
            streams: usize::from(self.streams),
            connect_timeout: dialing.connect_timeout,
            hash: match self.hash {
                HashArg::Md5 => crate::digest::Algo::Md5,
                HashArg::Xxh3 => crate::digest::Algo::Xxh3,
            },
            get: true,
        })
    }
}

impl LsArgs {
    /// The listing's config.
    pub fn into_config(self) -> anyhow::Result<crate::config::ListConfig> {
        let (target, path) = parse_source(&self.source).map_err(usage)?;
        Ok(crate::config::ListConfig {
            target,
            paths: path.into_iter().collect(),
            json: self.json,
            dialing: self.dialing.into_config()?,
        })
    }
}

impl ServeArgs {
    /// The server's config.
    pub fn into_config(self) -> anyhow::Result<crate::config::ServeConfig> {
        let token = crate::auth::load_token(self.token_file.as_deref())?;
        if self.require_token && token.is_none() {
            return Err(usage(
                "--require-token: no token set; give --token-file FILE or set FTX_TOKEN (make one with `ftx token`)",
            ));
        }
        let http = self
            .http
            .as_deref()
            .map(parse_listen)
            .transpose()
            .map_err(|m| usage(m.replace("--listen", "--http")))?;
        if http.is_some() && token.is_some() {
            return Err(usage(
                "--http serves files in the clear to anyone who can reach it, and a token is there to keep them from strangers: give one or the other",
            ));
        }
        Ok(crate::config::ServeConfig {
            http,
            roots: self.roots,
            bind: self.bind,
            port: self.port,
            timeout: Duration::from_secs(self.timeout),
            max_sessions: usize::try_from(self.max_sessions).unwrap_or(usize::MAX),
            quiet: self.quiet,
            cache: !self.no_cache,
            attrs: crate::xattr::Selection {
                xattrs: self.xattrs,
                acls: self.acls,
            },
            token,
            cipher: self.cipher.choice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn targets_are_host_and_port() {
        for ok in ["host:6000", "127.0.0.1:1", "[::1]:6000", "a.b.c:65535"] {
            assert_eq!(parse_target(ok).as_deref(), Ok(ok), "{ok}");
        }
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("host", "no port"),
            (":6000", "no host"),
            ("::1:6000", "without brackets"),
            ("host:0", "valid port"),
            ("host:70000", "valid port"),
            ("host:x", "valid port"),
            ("host:", "valid port"),
        ] {
            let e = parse_target(bad).expect_err(bad);
            assert!(e.contains(why) && e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn send_splits_sources_and_target() {
        let cli = Cli::try_parse_from(["ftx", "send", "a", "b/c", "host:6000"]).expect("parse");
        let Command::Send(args) = cli.command else {
            panic!("not send")
        };
        let cfg = args.into_config().expect("config");
        assert_eq!(cfg.target, "host:6000");
        assert_eq!(cfg.sources, vec![PathBuf::from("a"), PathBuf::from("b/c")]);
    }

    #[test]
    fn send_needs_a_path_and_a_target() {
        let one = Cli::try_parse_from(["ftx", "send", "host:6000"]).expect("clap accepts it");
        assert!(Cli::check(one).is_err());
        // Options may come between the paths and the target.
        let mixed =
            Cli::try_parse_from(["ftx", "send", "a", "--retry-for", "0", "h:1"]).expect("parse");
        assert!(Cli::check(mixed).is_ok());
    }
}
