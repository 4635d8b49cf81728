//! Attempts and retries: sessions are run until every entry is settled;
//! a broken one is retried with exponential backoff while attempts make
//! progress.

use super::types::*;
use crate::events::Event;
use crate::exit::Exit;
use crate::sanitize::escape;
use anyhow::Result;
use std::time::{Duration, Instant};

/// First pause before a retry; doubled each time up to [`BACKOFF_MAX`].
pub(super) const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest pause between two attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a busy receiver is tried again without counting against
/// `--retries` (it is up and answering; its slots are taken for now).
pub(super) const BUSY_PATIENCE: Duration = Duration::from_secs(60);

impl Sender<'_> {
    /// Runs sessions until every entry is confirmed or failed for good, or
    /// the retries are used up. The retry budget counts attempts in a row
    /// that made no progress, so a long transfer over a flaky link goes on
    /// as long as each attempt moves it forward.
    pub(super) fn run_attempts(&mut self) -> Result<()> {
        let mut left = self.cfg.retries;
        let mut backoff = BACKOFF_START;
        let mut busy_since: Option<Instant> = None;
        loop {
            if !self.items.iter().any(|i| i.state == State::Pending) {
                return Ok(());
            }
            let before = self.progress_mark();
            self.asked_digest = 0;
            let ended = self.attempt();
            let moved = self.progress_mark() != before;
            if moved {
                left = self.cfg.retries;
                backoff = BACKOFF_START;
                busy_since = None;
            }
            // A busy receiver is waited for (within BUSY_PATIENCE) without
            // using up retries; `--retries 0` still means no retry at all.
            let patient = match &ended {
                Err(b) if b.retry && self.cfg.retries > 0 && busy(&b.err) => {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    since.elapsed() < BUSY_PATIENCE
                }
                _ => false,
            };
            match ended {
                Ok(()) => {
                    // Pending entries left after a whole session are files
                    // to send again from 0 after a digest mismatch.
                    let pending = self
                        .items
                        .iter()
                        .filter(|i| i.state == State::Pending)
                        .count();
                    // Files the receiver asked to offer again with their
                    // digest are not a failure: the next session does.
                    if pending > self.asked_digest {
                        if left == 0 {
                            self.fail_pending(Exit::Integrity);
                            return Ok(());
                        }
                        left -= 1;
                    }
                }
                Err(b) if b.retry && (patient || left > 0) && !self.stdin_sent => {
                    if !patient {
                        left -= 1;
                    }
                    self.events.emit(&Event::Retry {
                        message: escape(&format!("{:#}", b.err)),
                        delay_s: backoff.as_secs_f64(),
                        retries_left: left,
                    });
                    self.progress.println(&format!(
                        "ftx: {}: {:#}; retrying in {:.1} s ({left} retries left)",
                        self.cfg.target,
                        b.err,
                        backoff.as_secs_f32()
                    ));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(b) if self.stdin_sent => {
                    // What was read of standard input cannot be sent again.
                    self.fail_pending(Exit::Failure);
                    return Err(b.err.context(format!(
                        "sending to {}: standard input broke off after its first byte; a stream cannot be read again, so this is final",
                        self.cfg.target
                    )));
                }
                Err(b) => {
                    let hint = if b.retry && self.cfg.retries > 0 {
                        "; giving up after retries, run the same command again to resume"
                    } else {
                        ""
                    };
                    return Err(b
                        .err
                        .context(format!("sending to {}{hint}", self.cfg.target)));
                }
            }
        }
    }

    /// Something that changes whenever an attempt moves the transfer on.
    pub(super) fn progress_mark(&self) -> (usize, u64) {
        let settled = self
            .items
            .iter()
            .filter(|i| i.state != State::Pending)
            .count();
        let shown: u64 = self.items.iter().map(|i| i.shown).sum();
        (settled, shown)
    }

    pub(super) fn fail_pending(&mut self, exit: Exit) {
        for i in &mut self.items {
            if i.state == State::Pending {
                i.state = State::Failed(exit);
            }
        }
    }
}
