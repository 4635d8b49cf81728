//! Exit codes: the documented contract with scripts and CI (README, "Exit
//! codes"). The numbers never change once released; tests pin them.

/// Why ftx exits. `as i32` gives the process status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Exit {
    /// Every file verified (or skipped as identical).
    Success = 0,
    /// Something failed: a file could not be read or written, the
    /// connection broke, the peer broke the protocol, bad local input.
    Failure = 1,
    /// Bad command line (clap's own status).
    Usage = 2,
    /// Could not connect to the receiver, or could not listen.
    Connect = 3,
    /// A file arrived with a different MD5 than the sender's.
    Integrity = 4,
    /// The receiver refused a file (exists, unsafe name, no space, conflict).
    Refused = 5,
    /// Authentication failed (wrong or missing token).
    Auth = 6,
    /// `ftx check`: the two sides differ (and nothing failed).
    Differs = 7,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl Exit {
    /// The process status.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// One word for it, as `--json` says it (`reason` of an `error` event).
    pub fn word(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::Connect => "connect",
            Exit::Integrity => "integrity",
            Exit::Refused => "refused",
            Exit::Auth => "auth",
            Exit::Differs => "differs",
            Exit::Interrupted => "interrupted",
        }
    }

    /// How serious a failure is when several happen in one run: the most
    /// serious one decides the exit status.
    fn rank(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Differs => 1,
            Exit::Failure => 2,
            Exit::Refused => 3,
            Exit::Connect => 4,
            Exit::Integrity => 5,
            Exit::Auth => 6,
            Exit::Usage => 7,
            Exit::Interrupted => 8,
        }
    }

    /// The status of a run with these outcomes: the most serious of them,
    /// [`Exit::Success`] when there are none.
    pub fn worst_of(outcomes: impl IntoIterator<Item = Exit>) -> Exit {
        outcomes.into_iter().fold(Exit::Success, Exit::worst)
    }

    /// The more serious of two outcomes.
    pub fn worst(self, other: Exit) -> Exit {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// An error that carries the exit status it should end the process with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    /// The status.
    pub exit: Exit,
    /// What to print after "ftx: ".
    pub message: String,
    /// Trying again cannot help (a host name that does not resolve), even
    /// where this status is otherwise retried.
    pub lasting: bool,
}

impl ExitError {
    /// Builds an error with a status.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        ExitError {
            exit,
            message: message.into(),
            lasting: false,
        }
    }

    /// Builds an error that trying again cannot help.
    pub fn lasting(exit: Exit, message: impl Into<String>) -> Self {
        ExitError {
            lasting: true,
            ..ExitError::new(exit, message)
        }
    }
}

/// The status for an error chain: the first [`ExitError`] in it, else 1.
pub fn for_error(err: &anyhow::Error) -> Exit {
    // `downcast_ref` sees values attached with `.context(..)` too; `chain`
    // sees wrapped sources.
    err.downcast_ref::<ExitError>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<ExitError>()))
        .map_or(Exit::Failure, |e| e.exit)
}

/// Runs `then` on a background thread at the first SIGINT or SIGTERM, then
/// exits with [`Exit::Interrupted`] (130).
pub fn on_interrupt(then: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    use anyhow::Context;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                then();
                std::process::exit(Exit::Interrupted.code());
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pinned() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failure.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Connect.code(), 3);
        assert_eq!(Exit::Integrity.code(), 4);
        assert_eq!(Exit::Refused.code(), 5);
        assert_eq!(Exit::Auth.code(), 6);
        assert_eq!(Exit::Interrupted.code(), 130);
    }

    #[test]
    fn integrity_beats_refused_beats_failure() {
        assert_eq!(Exit::Failure.worst(Exit::Refused), Exit::Refused);
        assert_eq!(Exit::Refused.worst(Exit::Integrity), Exit::Integrity);
        assert_eq!(Exit::Integrity.worst(Exit::Failure), Exit::Integrity);
        assert_eq!(Exit::Success.worst(Exit::Failure), Exit::Failure);
    }

    #[test]
    fn a_set_of_outcomes_gives_its_most_serious() {
        use Exit::*;
        assert_eq!(Exit::worst_of([]), Success);
        assert_eq!(Exit::worst_of([Success, Success]), Success);
        // README: 6, then 4, then 3, then 5, then 1.
        assert_eq!(
            Exit::worst_of([Failure, Refused, Connect, Integrity, Auth]),
            Auth
        );
        assert_eq!(
            Exit::worst_of([Failure, Refused, Connect, Integrity]),
            Integrity
        );
        assert_eq!(Exit::worst_of([Failure, Refused, Connect]), Connect);
        assert_eq!(Exit::worst_of([Failure, Refused]), Refused);
        assert_eq!(Exit::worst_of([Success, Failure]), Failure);
    }

    #[test]
    fn error_chain_maps_to_status() {
        let e = anyhow::Error::new(ExitError::new(Exit::Connect, "x")).context("y");
        assert_eq!(for_error(&e), Exit::Connect);
        assert_eq!(for_error(&anyhow::anyhow!("plain")), Exit::Failure);
        let ctx = anyhow::anyhow!("root")
            .context(ExitError::new(Exit::Auth, "auth"))
            .context("outer");
        assert_eq!(for_error(&ctx), Exit::Auth);
    }
}
