//! Plain configuration structs for the two roles. `cli` builds them from
//! flags; nothing below `cli` sees clap.

use crate::auth::Token;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `ftx send` does.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Files and directories to send.
    pub sources: Vec<PathBuf>,
    /// "HOST:PORT" of the receiver.
    pub target: String,
    /// No progress bar, no summary line.
    pub quiet: bool,
    /// No progress bar; lines and the summary stay.
    pub no_progress: bool,
    /// A line for every file on a terminal too.
    pub verbose: bool,
    /// A receiver silent this long is given up on.
    pub timeout: Duration,
    /// How long to try to connect.
    pub connect_timeout: Duration,
    /// How long to go on retrying without progress (zero: any failure is
    /// final at once).
    pub retry_for: Duration,
    /// Use the digest cache.
    pub cache: bool,
    /// JSON events on stdout.
    pub json: bool,
    /// How to walk the sources (links, special files).
    pub walk: crate::walk::WalkOptions,
    /// Parallel connections (files shared out between them).
    pub streams: usize,
    /// Shared token to prove to the receiver, if any.
    pub token: Option<Token>,
    /// The digest files are checked with.
    pub hash: crate::digest::Algo,
    /// The cipher asked for when sealed (`None`: by the CPU).
    pub cipher: Option<crate::secure::Cipher>,
    /// The name standard input (`-` among the sources) arrives under.
    pub stdin_name: Option<String>,
    /// Extended attributes and ACLs to send (`-X`, `-A`).
    pub attrs: crate::xattr::Selection,
    /// `--listen`: wait for receivers to call in on this address and port
    /// (`ftx recv --connect`) instead of calling `target`.
    pub listen: Option<(std::net::IpAddr, u16)>,
    /// `--manifest FILE`: a manifest of what the receiver confirmed.
    pub manifest: Option<PathBuf>,
    /// Entries offered in one session at most (at most the protocol's
    /// [`crate::protocol::limits::MAX_SESSION_ENTRIES`]).
    pub session_entries: usize,
}

/// What `ftx recv` does.
#[derive(Debug, Clone)]
pub struct RecvConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on (0 = any; the real one is printed).
    pub port: u16,
    /// Where received files go; nothing is written outside it.
    pub out: PathBuf,
    /// Serve one session, then exit with its outcome.
    pub once: bool,
    /// Replace existing files that differ.
    pub overwrite: bool,
    /// Create symlinks that are absolute or climb out of the tree.
    pub allow_unsafe_links: bool,
    /// `--fold-names`: refuse names that differ only by case or
    /// normalisation even where OUT's file system tells them apart.
    pub fold_names: bool,
    /// No progress bar.
    pub quiet: bool,
    /// No progress bar; lines stay.
    pub no_progress: bool,
    /// A line for every file on a terminal too.
    pub verbose: bool,
    /// A sender silent this long is dropped.
    pub timeout: Duration,
    /// Sessions served at once; more are refused with ERROR busy.
    pub max_sessions: usize,
    /// JSON events on stdout.
    pub json: bool,
    /// Shared token senders must prove, if any.
    pub token: Option<Token>,
    /// The cipher asked for when sealed (`None`: by the CPU).
    pub cipher: Option<crate::secure::Cipher>,
    /// Names of entries all live sessions together remember at most (each
    /// session remembers its own, to refuse duplicates); a session that
    /// would go beyond is told busy. [`DEFAULT_MAX_NAMES`] from the
    /// command line.
    pub max_names: usize,
    /// `--connect HOST:PORT`: dial a sender that listens (`ftx send
    /// --listen`) instead of listening.
    pub connect: Option<String>,
    /// With `--connect`: how long to keep dialing without a session that
    /// moved the transfer on.
    pub retry_for: Duration,
    /// With `--connect` (`ftx get`): the paths asked for, in the server's
    /// namespace (none: everything it offers).
    pub paths: Vec<Vec<u8>>,
    /// With `--connect` (`ftx get -j`): parallel sessions.
    pub streams: usize,
    /// With `--connect`: how long one dial may take.
    pub connect_timeout: Duration,
    /// With `--connect` (`ftx get --hash`): the digest asked for.
    pub hash: crate::digest::Algo,
    /// `ftx get` (not `ftx recv --connect`).
    pub get: bool,
    /// Use the digest cache for files in OUT (`--no-cache`: hash them).
    pub cache: bool,
    /// `--manifest FILE`: a manifest of what arrived.
    pub manifest: Option<PathBuf>,
}

/// What `ftx check` does.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// What to compare.
    pub sources: Vec<PathBuf>,
    /// The receiver, HOST:PORT.
    pub target: String,
    /// `--deep`: the receiver re-reads every file.
    pub deep: bool,
    /// The digest offered.
    pub hash: crate::digest::Algo,
    /// Use the digest cache.
    pub cache: bool,
    /// JSON events instead of lines.
    pub json: bool,
    /// No summary line when all is the same.
    pub quiet: bool,
    /// How to reach the receiver.
    pub dialing: Dialing,
}

/// What `ftx ls` does.
#[derive(Debug, Clone)]
pub struct ListConfig {
    /// The server, HOST:PORT.
    pub target: String,
    /// The paths to list (none: every root).
    pub paths: Vec<Vec<u8>>,
    /// One JSON object per entry.
    pub json: bool,
    /// How to reach the server.
    pub dialing: Dialing,
}

/// How a command that dials reaches its peer.
#[derive(Debug, Clone)]
pub struct Dialing {
    /// A peer silent this long is given up.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The shared token, if any.
    pub token: Option<Token>,
    /// The cipher asked for when sealed.
    pub cipher: Option<crate::secure::Cipher>,
}

/// What `ftx serve` does.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// What is offered, each under its last component.
    pub roots: Vec<PathBuf>,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// A getter silent this long is dropped.
    pub timeout: Duration,
    /// Sessions served at once.
    pub max_sessions: usize,
    /// No line per session.
    pub quiet: bool,
    /// Use the digest cache.
    pub cache: bool,
    /// Extended attributes and ACLs offered.
    pub attrs: crate::xattr::Selection,
    /// Shared token getters must prove, if any.
    pub token: Option<Token>,
    /// The cipher asked for when sealed.
    pub cipher: Option<crate::secure::Cipher>,
    /// `--http [ADDR:]PORT`: the HTTP face, beside the ftx port.
    pub http: Option<(IpAddr, u16)>,
}

/// Default of [`RecvConfig::max_names`]: two sessions of 2^20 entries,
/// under 100 MiB of names however many sessions run.
pub const DEFAULT_MAX_NAMES: usize = 1 << 21;

/// Default size of the single-file case (1 GiB).
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Default number of small files.
pub const DEFAULT_FILES: usize = 2000;
/// What `ftx bench` measures.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Bytes of the single-file case; 0 skips it.
    pub size: u64,
    /// Number of small files (1..=64 KiB each); 0 skips the case.
    pub files: usize,
    /// Passed to `ftx send` as `-j N`, only if greater than 1.
    pub streams: usize,
    /// Parent of the temporary working directory; default
    /// [`std::env::temp_dir`].
    pub dir: Option<PathBuf>,
    /// Keep the generated data and the received copies.
    pub keep: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            size: DEFAULT_SIZE,
            files: DEFAULT_FILES,
            streams: 1,
            dir: None,
            keep: false,
        }
    }
}

/// Parses a size: a number with an optional binary unit, e.g. "12345",
/// "512k", "100M", "1G", "1GiB", "1.5 GB". All units are powers of 1024;
/// "B" alone means bytes. Case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}: expected a number, e.g. 100M"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {:?} (use K, M, G or T)",
                unit.trim()
            ))
        }
    };
    let mult = 1u64 << shift;
    let too_big = || format!("invalid size {s:?}: too large");
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
        return Err(format!("invalid size {s:?}: not a number"));
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_big())?
    };
    let mut bytes = int.checked_mul(mult).ok_or_else(too_big)?;
    if !frac.is_empty() {
        // Exact decimal fraction of the unit, rounded down to whole bytes.
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
        let extra = u64::try_from(f * u128::from(mult) / scale).map_err(|_| too_big())?;
        bytes = bytes.checked_add(extra).ok_or_else(too_big)?;
    }
    Ok(bytes)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("12345b"), Ok(12345));
        assert_eq!(parse_size(" 7 "), Ok(7));
    }

    #[test]
    fn units_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("100mb"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5k"), Ok(512));
        assert_eq!(parse_size(".5k"), Ok(512));
        assert_eq!(parse_size("1.k"), Ok(1024));
        assert_eq!(parse_size("0.1k"), Ok(102));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", " ", "G", "abc", "-1", "1X", "1 GiBs", "1.2.3", ".", "1e6", "1 k b",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216T").is_err());
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }
}
