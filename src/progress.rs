//! Progress display: the only user of indicatif. Bars go to stderr and are
//! hidden when stderr is not a terminal or with `-q`, so scripts and CI logs
//! stay clean.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Whether bars should be drawn.
pub fn enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// How a bar is laid out; every layout fits 80 columns.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// The sender's whole session: bar, bytes, rate, ETA.
    Total,
    /// The sender's current file: phase, name, bytes, rate.
    File,
    /// One receiver session: current name, bar, bytes, rate.
    Session,
}

/// A set of bars sharing stderr (one per receiver session, or the sender's
/// total and current-file bars).
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    on: bool,
}

impl Progress {
    /// A display that draws only when `on`.
    pub fn new(on: bool) -> Self {
        let target = if on {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            on,
        }
    }

    /// A bar of `len` bytes in one of the layouts of [`Layout`].
    pub fn bytes_bar(&self, len: u64, layout: Layout) -> ProgressBar {
        if !self.on {
            return ProgressBar::hidden();
        }
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(style(match layout {
            Layout::Total => {
                "{prefix:>7} [{wide_bar}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta:>3}"
            }
            Layout::File => "{prefix:>7} {wide_msg} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
            Layout::Session => {
                "{prefix:>7} {msg:20!} [{wide_bar}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}"
            }
        }));
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    /// Runs `f` (which prints to stdout) with the bars cleared.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.on {
            self.multi.suspend(f)
        } else {
            f()
        }
    }

    /// Prints a line above the bars (or plainly on stderr when hidden).
    pub fn println(&self, line: &str) {
        if self.on {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}
