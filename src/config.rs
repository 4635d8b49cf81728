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
    /// A receiver silent this long is given up on.
    pub timeout: Duration,
    /// How long to try to connect.
    pub connect_timeout: Duration,
    /// Attempts in a row without progress before giving up (0: fail at once).
    pub retries: u32,
    /// Use the digest cache.
    pub cache: bool,
    /// JSON events on stdout.
    pub json: bool,
    /// Follow symlinks inside directories.
    pub follow_links: bool,
    /// Parallel connections (files shared out between them).
    pub streams: usize,
    /// Shared token to prove to the receiver, if any.
    pub token: Option<Token>,
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
    /// No progress bar.
    pub quiet: bool,
    /// A sender silent this long is dropped.
    pub timeout: Duration,
    /// Sessions served at once; more are refused with ERROR busy.
    pub max_sessions: usize,
    /// JSON events on stdout.
    pub json: bool,
    /// Shared token senders must prove, if any.
    pub token: Option<Token>,
}
