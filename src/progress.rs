//! Progress display: the only user of indicatif. Everything goes to stderr:
//!
//! - on a terminal: live bars (a total bar, the file being hashed and the
//!   file being sent; one bar per session on the receiver);
//! - not a terminal (CI logs, pipes): a plain line every few seconds for
//!   each running transfer, readable in a log;
//! - with `-q`: nothing.

use indicatif::style::ProgressTracker;
use indicatif::{
    DecimalBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};
use std::collections::VecDeque;
use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        .with_key("rate", Window::default())
        .with_key("eta", Eta(Window::default()))
        .with_key("sbytes", |s: &ProgressState, w: &mut dyn fmt::Write| {
            // SI units, as the lines and the summary; never past the total.
            let len = s.len().unwrap_or(0);
            let _ = write!(
                w,
                "{}/{}",
                DecimalBytes(s.pos().min(len)),
                DecimalBytes(len)
            );
        })
}

/// How far back a rate looks: the last few seconds of bytes, never the
/// idle or hashing time before them.
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// A rate is shown once bytes have moved over at least this long.
const RATE_MIN: Duration = Duration::from_millis(500);
/// An ETA is shown once bytes have moved over at least this long.
const ETA_MIN: Duration = Duration::from_secs(2);

/// Positions of a bar over the last [`RATE_WINDOW`].
#[derive(Debug, Clone, Default)]
struct Window {
    samples: VecDeque<(Instant, u64)>,
}

impl Window {
    fn add(&mut self, now: Instant, pos: u64) {
        if self.samples.back().is_some_and(|&(_, p)| p > pos) {
            // Moved back (a retry, a new file): the past says nothing.
            self.samples.clear();
        }
        self.samples.push_back((now, pos));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| now.duration_since(t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }
}

/// The rate over the moving window `samples` (oldest first) at `now`:
/// bytes per second since bytes were last seen starting to move within
/// the window, and how long that is; `None` when they have not moved for
/// [`RATE_MIN`] (hashing, waiting: the phase is not moving bytes). Pure.
fn window_rate(samples: &VecDeque<(Instant, u64)>, now: Instant) -> Option<(f64, Duration)> {
    let &(_, p0) = samples.front()?;
    let &(_, p1) = samples.back()?;
    if p1 <= p0 {
        return None;
    }
    // The last sample before the bytes started moving.
    let moving = samples.iter().position(|&(_, p)| p > p0)?;
    let start = samples[moving.saturating_sub(1)].0;
    let dt = now.duration_since(start);
    if dt < RATE_MIN {
        return None;
    }
    Some(((p1 - p0) as f64 / dt.as_secs_f64(), dt))
}

impl ProgressTracker for Window {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }
    fn tick(&mut self, state: &ProgressState, now: Instant) {
        self.add(now, state.pos());
    }
    fn reset(&mut self, _: &ProgressState, _: Instant) {
        self.samples.clear();
    }
    fn write(&self, _: &ProgressState, w: &mut dyn fmt::Write) {
        let _ = match window_rate(&self.samples, Instant::now()) {
            Some((r, _)) => write!(w, "{:.1} MB/s", r / 1e6),
            None => write!(w, "-- MB/s"),
        };
    }
}

/// The ETA from the same window, hidden until bytes moved for [`ETA_MIN`].
#[derive(Debug, Clone, Default)]
struct Eta(Window);

impl ProgressTracker for Eta {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }
    fn tick(&mut self, state: &ProgressState, now: Instant) {
        self.0.add(now, state.pos());
    }
    fn reset(&mut self, _: &ProgressState, _: Instant) {
        self.0.samples.clear();
    }
    fn write(&self, state: &ProgressState, w: &mut dyn fmt::Write) {
        let left = state.len().unwrap_or(0).saturating_sub(state.pos());
        if let Some((r, dt)) = window_rate(&self.0.samples, Instant::now()) {
            if dt >= ETA_MIN && r > 0.0 && left > 0 {
                let _ = write!(w, "ETA {}", eta_text(left, r));
            }
        }
    }
}

/// The time left for `left` bytes at `rate` bytes per second, in at most
/// 4 characters and as precise as it is short: tenths under 10 s (a whole
/// second is 30 % of 3 s), then seconds, minutes and hours, each rounded
/// to the nearest; never 0 while bytes are left.
fn eta_text(left: u64, rate: f64) -> String {
    let secs = left as f64 / rate;
    if secs < 9.95 {
        format!("{:.1}s", secs.max(0.1))
    } else if secs < 119.5 {
        format!("{:.0}s", secs)
    } else if secs < 119.5 * 60.0 {
        format!("{:.0}m", secs / 60.0)
    } else if secs < 99.5 * 3600.0 {
        format!("{:.0}h", secs / 3600.0)
    } else {
        format!("{:.0}d", (secs / 86400.0).min(999.0))
    }
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
    /// Which per-file lines are printed on stdout, and how wide.
    lines: FileLines,
    /// Files settled and files in all, for the total bar.
    files: Arc<(AtomicU64, AtomicU64)>,
}

/// Files this big have their phase on their line (sender: "waiting for
/// the receiver", "verifying"; receiver: "checking NAME"); smaller ones
/// pass too quickly to read it.
pub const PHASE_SHOWN_MIN: u64 = 8 << 20;

/// A file whose body took at least this long to send (or to arrive) gets
/// its line on a terminal. Not the time until its RESULT: a slow sync of a
/// group of thousands of small files (a disk, a deep queue) made every one
/// of them "take" a second, and flooded the screen.
pub const FILE_LINE_MIN: Duration = Duration::from_secs(1);

/// Per-file lines on stdout: always in logs and pipes; on a terminal only
/// with `-v` or for files that took [`FILE_LINE_MIN`] (a directory of small
/// files does not flood the screen), cut to the terminal's width.
#[derive(Debug, Clone, Copy)]
struct FileLines {
    /// The terminal's width when stdout is one.
    tty_width: Option<usize>,
    verbose: bool,
}

impl FileLines {
    /// The line to print for a file whose body took `took`, or `None`. Pure.
    fn line(&self, took: Duration, full: impl FnOnce() -> String) -> Option<String> {
        match self.tty_width {
            None => Some(full()),
            Some(_) if !self.verbose && took < FILE_LINE_MIN => None,
            Some(width) => Some(fit(&full(), width)),
        }
    }
}

/// `line` cut to `width` columns (characters), an ellipsis at the cut.
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A file done, as its line says it, the same on both sides:
/// `VERB NAME SIZE bytes ALGO DIGEST (R MB/s[, resumed at N])`.
pub struct DoneLine<'a> {
    /// "sent" or "received".
    pub verb: &'a str,
    /// The name, escaped for display.
    pub shown: &'a str,
    pub size: u64,
    /// The digest's algorithm and value.
    pub algo: &'a str,
    pub digest: &'a [u8],
    pub mb_per_s: f64,
    /// Where it resumed (0: from the start).
    pub resumed_at: u64,
}

impl DoneLine<'_> {
    /// Appends the line (without a newline) to `out`.
    /// (Written piece by piece: one per file, and `write!`'s machinery
    /// was a tenth of the receiver's instructions for small files.)
    pub fn write(&self, out: &mut String) {
        out.reserve(
            self.verb.len() + self.shown.len() + self.algo.len() + 2 * self.digest.len() + 64,
        );
        for piece in [self.verb, " ", self.shown, " "] {
            out.push_str(piece);
        }
        push_u64(out, self.size);
        out.push_str(" bytes ");
        out.push_str(self.algo);
        out.push(' ');
        crate::digest::push_hex(out, self.digest);
        out.push_str(" (");
        push_tenths(out, self.mb_per_s);
        out.push_str(" MB/s");
        if self.resumed_at > 0 {
            out.push_str(", resumed at ");
            push_u64(out, self.resumed_at);
        }
        out.push(')');
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit: n % 10 < 10.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// Appends `x` with one decimal, as `{:.1}` does. Without formatting when
/// `x` is finite, under 10^8 and not within a millionth of a tie (there
/// `{:.1}` rounds the exact binary value, which the product with 10 may
/// not keep).
fn push_tenths(out: &mut String, x: f64) {
    let tenths = x * 10.0;
    if x.is_sign_positive() && tenths < 1e9 && (tenths.fract() - 0.5).abs() > 1e-6 {
        // In range: 0 <= tenths < 10^9.
        let n = tenths.round() as u64;
        push_u64(out, n / 10);
        out.push('.');
        out.push(char::from(b'0' + (n % 10) as u8));
    } else {
        use std::fmt::Write as _;
        let _ = write!(out, "{x:.1}");
    }
}

/// The width of the terminal on stdout, or `None` when it is not one.
fn stdout_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which we own and
    // which outlives the call; fd 1 is open (it was just tested).
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    Some(if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    })
}

impl Progress {
    /// A display in `mode`; `verbose`: a line for every file on a
    /// terminal too.
    pub fn new(mode: Mode, verbose: bool) -> Self {
        let target = if mode == Mode::Bars {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let p = Progress {
            multi: MultiProgress::with_draw_target(target),
            mode,
            watched: Arc::new(Mutex::new(Vec::new())),
            lines: FileLines {
                tty_width: stdout_width(),
                verbose,
            },
            files: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
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
        let files = Arc::clone(&self.files);
        bar.set_style(
            style(match layout {
                // As rsync --info=progress2: one line for the whole run.
                Layout::Total => {
                    "{prefix:>5} {files:>13} [{wide_bar}] {sbytes:>19} {rate:>11} {eta:>8}"
                }
                Layout::File => "{prefix:>7} {wide_msg} {sbytes:>19} {rate:>11}",
                // Bytes received so far: a session's total is not known.
                Layout::Session => "{prefix:>7} {wide_msg} {rbytes:>9} {rate:>11}",
            })
            .with_key("files", move |_: &ProgressState, w: &mut dyn fmt::Write| {
                let (done, all) = (
                    files.0.load(Ordering::Relaxed),
                    files.1.load(Ordering::Relaxed),
                );
                let _ = write!(w, "{done}/{all} files");
            })
            .with_key("rbytes", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{}", DecimalBytes(s.pos()));
            }),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    /// False when nothing is ever shown (`-q`): no bar is drawn or read,
    /// so a caller may leave a bar's counts alone where they cost per file
    /// (each update reads the clock).
    pub fn shown(&self) -> bool {
        self.mode != Mode::Off
    }

    /// `n` more files for the total bar to count up to (the walk found
    /// them).
    pub fn add_files(&self, n: u64) {
        self.files.1.fetch_add(n, Ordering::Relaxed);
    }

    /// One more file settled (verified, skipped or failed).
    pub fn file_settled(&self) {
        self.files.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the per-file line for a file whose body took `took` (written by
    /// `full`) and a newline to `out`, if it is printed (see
    /// [`FILE_LINE_MIN`]); without a string of its own for each line when
    /// the output is not a terminal.
    pub fn file_line_to(&self, took: Duration, out: &mut String, full: impl FnOnce(&mut String)) {
        if self.lines.tty_width.is_none() {
            full(out);
            out.push('\n');
        } else if let Some(line) = self.lines.line(took, || {
            let mut line = String::new();
            full(&mut line);
            line
        }) {
            out.push_str(&line);
            out.push('\n');
        }
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
/// that moved, like `ftx: total 45% 480.0 MB/1.0 GB 120.3 MB/s ETA 5s`,
/// its rate that of the bytes moved since the previous line.
fn plain_lines(watched: &Mutex<Vec<(u64, ProgressBar)>>) {
    let mut last: Vec<(u64, u64, Instant)> = Vec::new();
    loop {
        std::thread::sleep(PLAIN_EVERY);
        let bars: Vec<(u64, ProgressBar)> = match watched.lock() {
            Ok(mut w) => {
                w.retain(|(_, b)| !b.is_finished());
                w.clone()
            }
            Err(_) => return,
        };
        let now = Instant::now();
        let mut seen = Vec::with_capacity(bars.len());
        for (id, bar) in bars {
            let pos = bar.position();
            seen.push((id, pos, now));
            let before = last.iter().find(|&&(i, _, _)| i == id);
            let idle = bar.length().unwrap_or(0) == 0 || pos == bar.length().unwrap_or(0);
            if idle || before.is_some_and(|&(_, p, _)| p == pos) {
                continue;
            }
            // A bar new since the last line has no interval to measure yet.
            let rate = before
                .filter(|&&(_, p, _)| p < pos)
                .map(|&(_, p, t)| (pos - p) as f64 / now.duration_since(t).as_secs_f64());
            eprintln!("ftx: {}", plain_line(&bar, rate));
        }
        last = seen;
    }
}

/// A byte count for people: SI units (`1.50 MB`), as the bars and lines.
pub fn si_bytes(n: u64) -> String {
    DecimalBytes(n).to_string()
}

/// One plain progress line for a bar moving at `rate` bytes per second
/// (unknown: no rate and no ETA). SI units, as everywhere.
pub fn plain_line(bar: &ProgressBar, rate: Option<f64>) -> String {
    let len = bar.length().unwrap_or(0);
    let pos = bar.position().min(len);
    let pct = if len > 0 {
        pos as f64 / len as f64 * 100.0
    } else {
        0.0
    };
    let speed = match rate {
        Some(r) if r > 0.0 => {
            format!(" {:.1} MB/s ETA {}", r / 1e6, eta_text(len - pos, r))
        }
        _ => String::new(),
    };
    let label = match (bar.prefix().as_str(), bar.message().as_str()) {
        (p, "") => p.to_string(),
        (p, m) => format!("{p} {m}"),
    };
    format!(
        "{label} {pct:.0}% {}/{}{speed}",
        DecimalBytes(pos),
        DecimalBytes(len)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_done_line_is_the_same_on_both_sides() {
        let line = |resumed_at| {
            let mut out = String::new();
            DoneLine {
                verb: "sent",
                shown: "d/f",
                size: 3,
                algo: "md5",
                digest: &[0x01, 0xab],
                mb_per_s: 1.25,
                resumed_at,
            }
            .write(&mut out);
            out
        };
        assert_eq!(line(0), "sent d/f 3 bytes md5 01ab (1.2 MB/s)");
        assert_eq!(
            line(2),
            "sent d/f 3 bytes md5 01ab (1.2 MB/s, resumed at 2)"
        );
    }

    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut x: f64 = 0.0;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut tried = vec![0.05, 0.15, 0.25, 0.95, 9.95, 1e8, 1e9, 1e12, -0.0, -1.5];
        tried.extend([f64::NAN, f64::INFINITY, 99_999_999.95, 0.049_999_999]);
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x = f64::from_bits(x.to_bits() ^ seed) % 2e8;
            tried.push(x.abs());
            tried.push((seed >> 40) as f64 / 20.0);
        }
        for x in tried {
            let mut out = String::new();
            push_tenths(&mut out, x);
            assert_eq!(out, format!("{x:.1}"), "{x:e}");
        }
    }

    fn samples(t0: Instant, points: &[(u64, u64)]) -> VecDeque<(Instant, u64)> {
        points
            .iter()
            .map(|&(ms, pos)| (t0 + Duration::from_millis(ms), pos))
            .collect()
    }

    #[test]
    fn the_rate_is_of_the_last_seconds_of_moving_bytes() {
        let t0 = Instant::now();
        // 100 MB/s for two seconds.
        let w = samples(t0, &[(0, 0), (1000, 100_000_000), (2000, 200_000_000)]);
        let (r, dt) = window_rate(&w, t0 + Duration::from_millis(2000)).expect("rate");
        assert!((r - 100e6).abs() < 1e3, "{r}");
        assert_eq!(dt, Duration::from_secs(2));
        // Idle (hashing) first, then 200 MB/s: the idle time does not count.
        let w = samples(t0, &[(0, 5), (1000, 5), (2000, 5), (2500, 100_000_005)]);
        let (r, _) = window_rate(&w, t0 + Duration::from_millis(2500)).expect("rate");
        assert!((r - 200e6).abs() < 1e3, "{r}");
        // Nothing moving: no rate.
        let w = samples(t0, &[(0, 5), (1000, 5)]);
        assert!(window_rate(&w, t0 + Duration::from_millis(1000)).is_none());
        // Too soon to tell.
        let w = samples(t0, &[(0, 0), (100, 1000)]);
        assert!(window_rate(&w, t0 + Duration::from_millis(100)).is_none());
    }

    #[test]
    fn a_window_forgets_what_is_older_than_it_and_a_move_back() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.add(t0, 0);
        w.add(t0 + Duration::from_secs(2), 10);
        w.add(t0 + Duration::from_secs(4), 20);
        assert_eq!(w.samples.len(), 2, "the sample from 4 s ago is gone");
        w.add(t0 + Duration::from_secs(5), 3);
        assert_eq!(w.samples.len(), 1, "a move back starts over");
    }

    #[test]
    fn file_lines_on_a_terminal_only_for_slow_files_or_verbose_and_fit() {
        let quick = Duration::from_millis(30);
        let slow = Duration::from_secs(2);
        let log = FileLines {
            tty_width: None,
            verbose: false,
        };
        let long =
            "sent a/very/long/name 123 bytes md5 0123456789abcdef0123456789abcdef (1.0 MB/s)";
        assert_eq!(log.line(quick, || long.into()).as_deref(), Some(long));
        let tty = FileLines {
            tty_width: Some(40),
            verbose: false,
        };
        assert_eq!(tty.line(quick, || long.into()), None);
        let shown = tty.line(slow, || long.into()).expect("a slow file");
        assert_eq!(shown.chars().count(), 40);
        assert!(shown.ends_with('…') && long.starts_with(&shown[..shown.len() - 3]));
        let verbose = FileLines {
            verbose: true,
            ..tty
        };
        assert!(verbose.line(quick, || "short".into()).is_some());
        assert_eq!(fit("short", 40), "short");
    }

    #[test]
    fn the_eta_is_as_precise_as_it_is_short_and_never_0() {
        assert_eq!(eta_text(1_440_000_000, 1e9), "1.4s");
        assert_eq!(eta_text(9_940_000_000, 1e9), "9.9s");
        assert_eq!(eta_text(9_960_000_000, 1e9), "10s");
        assert_eq!(eta_text(100, 1e9), "0.1s");
        assert_eq!(eta_text(119_000_000_000, 1e9), "119s");
        assert_eq!(eta_text(125_000_000_000, 1e9), "2m");
        assert_eq!(eta_text(7_200_000_000_000, 1e9), "2h");
        assert_eq!(eta_text(10_000_000_000_000_000, 1e9), "116d");
        for secs in [0.01, 5.0, 99.0, 150.0, 7000.0, 1e7, 1e12] {
            assert!(eta_text((secs * 1e9) as u64, 1e9).len() <= 4, "{secs}");
        }
    }

    #[test]
    fn plain_line_reads_well() {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::hidden());
        bar.set_prefix("total");
        bar.set_position(450);
        let line = plain_line(&bar, None);
        assert_eq!(line, "total 45% 450 B/1.00 kB");
        bar.set_position(2000);
        bar.set_length(4_000_000_000);
        let line = plain_line(&bar, Some(100e6));
        assert_eq!(line, "total 0% 2.00 kB/4.00 GB 100.0 MB/s ETA 40s");
        assert!(!line.chars().any(|c| c.is_control()));
    }
}
