//! Progress display: the only user of indicatif. Everything goes to stderr:
//!
//! - on a terminal: live bars (a total bar, the file being hashed and the
//!   file being sent; one bar per session on the receiver);
//! - not a terminal (CI logs, pipes): a plain line every few seconds for
//!   each running transfer, readable in a log;
//! - with `-q`: nothing.

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A progress bar. Other modules name bars by this type only: indicatif is
/// used here and nowhere else.
pub type Bar = ProgressBar;

/// How often a plain progress line is printed when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars on a terminal.
    Bars,
    /// A plain line every [`PLAIN_EVERY`].
    Plain,
    /// Nothing (`-q`).
    Off,
}

/// The mode for this process: bars on a terminal, plain lines otherwise,
/// nothing when quiet.
pub fn mode(quiet: bool) -> Mode {
    if quiet {
        Mode::Off
    } else if std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::Plain
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// How a bar is laid out; every layout fits 80 columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The sender's whole session: bar, bytes, rate, ETA.
    Total,
    /// The sender's current file: phase, name, bytes, rate.
    File,
    /// One receiver session: current name, bar, bytes, rate.
    Session,
}

/// A set of bars sharing stderr.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    mode: Mode,
    /// Bars reported by the plain-line thread, with an id each.
    watched: Arc<Mutex<Vec<(u64, ProgressBar)>>>,
}

impl Progress {
    /// A display in `mode`.
    pub fn new(mode: Mode) -> Self {
        let target = if mode == Mode::Bars {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let p = Progress {
            multi: MultiProgress::with_draw_target(target),
            mode,
            watched: Arc::new(Mutex::new(Vec::new())),
        };
        if mode == Mode::Plain {
            let watched = Arc::clone(&p.watched);
            let _ = std::thread::Builder::new()
                .name("ftx-progress".into())
                .spawn(move || plain_lines(&watched));
        }
        p
    }

    /// A bar of `len` bytes in one of the layouts of [`Layout`]. In plain
    /// mode, bars that are moving are reported every few seconds.
    pub fn bytes_bar(&self, len: u64, layout: Layout) -> ProgressBar {
        if self.mode != Mode::Bars {
            // A hidden bar still counts, for plain lines and rates.
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
            if self.mode == Mode::Plain {
                if let Ok(mut w) = self.watched.lock() {
                    let id = w.last().map_or(0, |(id, _)| id + 1);
                    w.push((id, bar.clone()));
                }
            }
            return bar;
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
        if self.mode == Mode::Bars {
            self.multi.suspend(f)
        } else {
            f()
        }
    }

    /// Prints a line above the bars (or plainly on stderr).
    pub fn println(&self, line: &str) {
        if self.mode == Mode::Bars {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

/// The plain-line reporter: every [`PLAIN_EVERY`], one line per running bar
/// that moved, like `ftx: total 45% 480.0 MiB/1.0 GiB 120.3 MB/s ETA 5s`.
fn plain_lines(watched: &Mutex<Vec<(u64, ProgressBar)>>) {
    let mut last: Vec<(u64, u64)> = Vec::new();
    loop {
        std::thread::sleep(PLAIN_EVERY);
        let bars: Vec<(u64, ProgressBar)> = match watched.lock() {
            Ok(mut w) => {
                w.retain(|(_, b)| !b.is_finished());
                w.clone()
            }
            Err(_) => return,
        };
        let mut now = Vec::with_capacity(bars.len());
        for (id, bar) in bars {
            let pos = bar.position();
            now.push((id, pos));
            let idle = bar.length().unwrap_or(0) == 0 || pos == bar.length().unwrap_or(0);
            if idle || last.iter().any(|&(i, p)| i == id && p == pos) {
                continue;
            }
            eprintln!("ftx: {}", plain_line(&bar));
        }
        last = now;
    }
}

/// One plain progress line for a bar.
pub fn plain_line(bar: &ProgressBar) -> String {
    let pos = bar.position();
    let len = bar.length().unwrap_or(0);
    let pct = if len > 0 {
        (pos as f64 / len as f64 * 100.0).min(100.0)
    } else {
        0.0
    };
    let rate = bar.per_sec();
    let eta = if rate > 0.0 && len > pos {
        format!(" ETA {:.0}s", (len - pos) as f64 / rate)
    } else {
        String::new()
    };
    let label = match (bar.prefix().as_str(), bar.message().as_str()) {
        (p, "") => p.to_string(),
        (p, m) => format!("{p} {m}"),
    };
    format!(
        "{label} {pct:.0}% {}/{} {:.1} MB/s{eta}",
        HumanBytes(pos),
        HumanBytes(len),
        rate / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_reads_well() {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::hidden());
        bar.set_prefix("total");
        bar.set_position(450);
        let line = plain_line(&bar);
        assert!(line.starts_with("total 45% 450 B/1000 B"), "{line}");
        assert!(!line.chars().any(|c| c.is_control()));
    }
}
