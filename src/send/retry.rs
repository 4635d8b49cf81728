//! Attempts and retries: sessions are run until every entry is settled;
//! a broken one is retried with exponential backoff for as long as
//! attempts make progress, and for `--retry-for` after the last progress.

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
/// How long a busy receiver is tried again, however short `--retry-for`
/// is (it is up and answering; its slots are taken for now).
pub(super) const BUSY_PATIENCE: Duration = Duration::from_secs(60);

/// The pause before the next attempt: the backoff, but never past the end
/// of the retry window (`left`), so the last attempt is made at its end
/// rather than after it. `None` when the window is over.
pub(super) fn pause(backoff: Duration, left: Duration) -> Option<Duration> {
    if left.is_zero() {
        None
    } else {
        Some(backoff.min(left))
    }
}

impl Sender<'_> {
    /// Runs sessions until every entry is confirmed or failed for good, or
    /// `--retry-for` has passed since the last attempt that moved the
    /// transfer on, so a long transfer over a flaky link goes on as long
    /// as each attempt moves it forward.
    pub(super) fn run_attempts(&mut self) -> Result<()> {
        let window = self.cfg.retry_for;
        let mut last_progress = Instant::now();
        let mut backoff = BACKOFF_START;
        let mut busy_since: Option<Instant> = None;
        loop {
            if !self.items.pending() {
                return Ok(());
            }
            let before = self.progress_mark();
            self.asked_digest = 0;
            let ended = self.attempt();
            let moved = self.progress_mark() != before;
            if moved {
                last_progress = Instant::now();
                backoff = BACKOFF_START;
                busy_since = None;
            }
            let mut left = window.saturating_sub(last_progress.elapsed());
            // A busy receiver is waited for (within BUSY_PATIENCE) even
            // past the window; `--retry-for 0` still means no retry at all.
            if let Err(b) = &ended {
                if b.retry && !window.is_zero() && busy(&b.err) {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    left = left.max(BUSY_PATIENCE.saturating_sub(since.elapsed()));
                }
            }
            match (ended, pause(backoff, left)) {
                (Ok(()), _) => {
                    // Pending entries left after a whole session are files
                    // to send again from 0 after a digest mismatch (each
                    // one once), or files the receiver asked to offer again
                    // with their digest: neither is a failure while the
                    // window lasts.
                    let pending = self
                        .items
                        .iter()
                        .filter(|(_, i)| i.state == State::Pending)
                        .count();
                    if pending > self.asked_digest && left.is_zero() {
                        self.fail_pending(Exit::Integrity);
                        return Ok(());
                    }
                }
                (Err(b), Some(wait)) if b.retry && !self.stdin_sent => {
                    let gives_up_in = left.saturating_sub(wait);
                    self.events.emit(|| Event::Retry {
                        message: escape(&format!("{:#}", b.err)),
                        delay_s: wait.as_secs_f64(),
                        gives_up_in_s: gives_up_in.as_secs_f64().round(),
                    });
                    self.progress.println(&format!(
                        "ftx: {}: {:#}; retrying in {:.1} s (giving up in {:.0} s without progress)",
                        self.cfg.target,
                        b.err,
                        wait.as_secs_f32(),
                        gives_up_in.as_secs_f32()
                    ));
                    std::thread::sleep(wait);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                (Err(b), _) if self.stdin_sent => {
                    // What was read of standard input cannot be sent again.
                    self.fail_pending(Exit::Failure);
                    return Err(b.err.context(format!(
                        "sending to {}: standard input broke off after its first byte; a stream cannot be read again, so this is final",
                        self.cfg.target
                    )));
                }
                (Err(b), _) => {
                    let hint = match (b.retry, window.is_zero()) {
                        (true, false) => format!(
                            "; gave up after {} s without progress, run the same command again to resume",
                            window.as_secs()
                        ),
                        (true, true) => "; run the same command again to resume".into(),
                        (false, _) => String::new(),
                    };
                    return Err(b
                        .err
                        .context(format!("sending to {}{hint}", self.cfg.target)));
                }
            }
        }
    }

    /// Something that changes whenever an attempt moves the transfer on.
    pub(super) fn progress_mark(&self) -> (u64, u64) {
        self.items.progress_mark()
    }

    /// Every entry not confirmed yet fails with `exit`.
    pub(super) fn fail_pending(&mut self, exit: Exit) {
        self.items.fail_pending(exit);
        self.items.retire(self.manifest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_never_outlast_the_window() {
        let s = Duration::from_secs;
        assert_eq!(pause(BACKOFF_START, s(60)), Some(BACKOFF_START));
        assert_eq!(pause(BACKOFF_MAX, s(3)), Some(s(3)));
        assert_eq!(pause(BACKOFF_MAX, Duration::ZERO), None);
    }

    #[test]
    fn the_backoff_reaches_its_cap_within_the_default_window() {
        // 0.2, 0.4, ... doubling: the cap of 10 s is reached after 6 pauses
        // (12.6 s), well inside the default 60 s.
        let mut b = BACKOFF_START;
        let mut spent = Duration::ZERO;
        let mut n = 0;
        while b < BACKOFF_MAX && n < 100 {
            spent += b;
            b = (b * 2).min(BACKOFF_MAX);
            n += 1;
        }
        assert_eq!(b, BACKOFF_MAX);
        assert!(spent < Duration::from_secs(60), "{spent:?}");
    }
}
