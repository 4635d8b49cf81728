//! What `ftx bench` measured, and the table it prints.

use anyhow::{Context, Result};
use std::fs::{self};
use std::io::{self, Write};
use std::time::Duration;

/// CPU time and peak memory of one child process, from `wait4`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
}

/// One measured transfer.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Row label, e.g. "1 file 1.0 GiB" or "2000 small".
    pub name: String,
    /// Payload bytes transferred.
    pub bytes: u64,
    /// Files transferred.
    pub files: usize,
    /// Wall time of `ftx send`, from spawn to exit.
    pub wall: Duration,
    /// The sender's usage.
    pub send: Usage,
    /// The receiver's usage (its whole life, including startup).
    pub recv: Usage,
}

/// Everything [`super::run_with`] measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`, when available.
    pub cpu_model: Option<String>,
    /// In-process MD5 speed over the large file (MB/s), if there was one.
    pub md5_mb_s: Option<f64>,
    /// The cases, in the order they ran.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// The machine description printed above the table.
    pub(super) fn machine_line(&self, streams: usize) -> String {
        let model = self
            .cpu_model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!(", kernel {}", k.trim()))
            .unwrap_or_default();
        let md5 = match self.md5_mb_s {
            Some(v) => format!("{v:.1} MB/s (in-process MD5 of the large file)"),
            None => "n/a (no large file)".to_string(),
        };
        let streams = if streams > 1 {
            format!("\nstreams: {streams} (send -j {streams})")
        } else {
            String::new()
        };
        format!(
            "machine: {} CPUs{model}{kernel}\nmd5 reference: {md5}{streams}\n",
            self.cpus
        )
    }

    /// The whole report as text: machine lines, header and rows.
    pub fn to_table(&self, streams: usize) -> String {
        let mut s = self.machine_line(streams);
        s.push_str(&table_header());
        s.push('\n');
        for c in &self.cases {
            s.push_str(&table_row(c));
            s.push('\n');
        }
        s
    }
}

pub(super) fn table_header() -> String {
    format!(
        "{:<32}{:<13}{:<7}{:<8}{:<8}{:<9}{:<12}{:<12}{:<14}{}",
        "case",
        "bytes",
        "files",
        "wall s",
        "MB/s",
        "files/s",
        "send cpu s",
        "recv cpu s",
        "send RSS MiB",
        "recv RSS MiB"
    )
}

pub(super) fn table_row(c: &CaseResult) -> String {
    let secs = c.wall.as_secs_f64().max(1e-9);
    let cols = [
        format!("{} ", c.name),
        format!("{} ", c.bytes),
        format!("{} ", c.files),
        format!("{secs:.2} "),
        format!("{:.1} ", mb_per_s(c.bytes, c.wall)),
        format!("{:.1} ", c.files as f64 / secs),
        format!("{:.2} ", c.send.cpu.as_secs_f64()),
        format!("{:.2} ", c.recv.cpu.as_secs_f64()),
        format!("{:.1} ", c.send.max_rss_kib as f64 / 1024.0),
        format!("{:.1}", c.recv.max_rss_kib as f64 / 1024.0),
    ];
    let widths = [32, 13, 7, 8, 8, 9, 12, 12, 14, 0];
    cols.iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect()
}

pub(super) fn print_row(c: &CaseResult) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", table_row(c)).context("stdout")?;
    out.flush().context("stdout")
}

pub(super) fn status(msg: &str) {
    eprintln!("ftx bench: {msg}");
}

pub(super) fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// "1.0 GiB", "512.0 KiB", "100 B".
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

pub(super) fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(512 * 1024), "512.0 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
    }

    #[test]
    fn row_lines_up_with_header() {
        let c = CaseResult {
            name: "1 file 1.0 GiB (cached, token)".into(),
            bytes: 1 << 30,
            files: 1,
            wall: Duration::from_millis(4310),
            send: Usage {
                cpu: Duration::from_millis(2410),
                max_rss_kib: 4300,
            },
            recv: Usage {
                cpu: Duration::from_millis(3020),
                max_rss_kib: 5734,
            },
        };
        let row = table_row(&c);
        let head = table_header();
        assert!(
            row.starts_with(
                "1 file 1.0 GiB (cached, token)  1073741824   1      4.31    249.1   0.2"
            ),
            "{row}"
        );
        assert_eq!(head.find("MB/s"), row.find("249.1"));
        assert_eq!(head.find("recv RSS MiB"), row.find("5.6"));
    }
}
