//! `ftx ls HOST:PORT[/PATH]`: asks a server for a listing (PULL with the
//! list flag) and prints each entry it offers: type, mode, size, time, the
//! digest where the server knows it, and the name. Every FILE is answered
//! SKIP (listed), every other entry RESULT ok; nothing is written.

use crate::config::ListConfig;
use crate::digest::hex;
use crate::exit::Exit;
use crate::front::dial;
use crate::protocol::frame::{end_flags, file_flags, pull_flags};
use crate::protocol::{ErrorCode, Frame, SkipReason};
use crate::sanitize::{escape, escape_bytes};
use anyhow::{bail, Context, Result};
use std::io::Write;

/// One entry of a listing, as `--json` prints it.
#[derive(serde::Serialize)]
struct Listed {
    #[serde(rename = "type")]
    kind: &'static str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

/// Runs `ftx ls`. 1 when the server named entries it does not offer.
pub fn run(cfg: &ListConfig) -> Result<Exit> {
    let first = Frame::Pull {
        flags: pull_flags::LIST,
        part: 0,
        parts: 0,
        paths: cfg.paths.clone(),
    };
    let target = &cfg.target;
    let mut conn = dial::dial(
        target,
        cfg.dialing.connect_timeout,
        cfg.dialing.timeout,
        cfg.dialing.token.as_ref(),
        cfg.dialing.cipher,
        &first,
    )
    .map_err(|b| b.err)?;
    let mut out = std::io::stdout().lock();
    let mut left = 0u64;
    let mut listed = 0u32;
    loop {
        let frame = conn
            .expect_frame()
            .with_context(|| format!("listing from {target}"))?;
        let (entry, answer) = match frame {
            Frame::File(h) => {
                let known = h.flags & file_flags::DIGEST_FOLLOWS == 0;
                let algo = file_flags::algo(h.flags);
                let entry = Listed {
                    kind: "file",
                    path: escape_bytes(&h.path),
                    size: Some(h.size),
                    mode: Some(format!("{:04o}", h.mode & 0o7777)),
                    mtime: Some(h.mtime_s),
                    digest: known.then(|| hex(&h.md5)),
                    hash: known.then(|| algo.name()),
                    target: None,
                };
                let skip = Frame::Skip {
                    id: h.id,
                    reason: SkipReason::Listed.code(),
                };
                (entry, skip)
            }
            Frame::Dir(h) => (
                Listed {
                    kind: "dir",
                    path: escape_bytes(&h.path),
                    size: None,
                    mode: Some(format!("{:04o}", h.mode & 0o7777)),
                    mtime: Some(h.mtime_s),
                    digest: None,
                    hash: None,
                    target: None,
                },
                ok(h.id),
            ),
            Frame::Symlink {
                id,
                mtime_s,
                path,
                target,
                ..
            } => (
                Listed {
                    kind: "symlink",
                    path: escape_bytes(&path),
                    size: None,
                    mode: None,
                    mtime: Some(mtime_s),
                    digest: None,
                    hash: None,
                    target: Some(escape_bytes(&target)),
                },
                ok(id),
            ),
            Frame::Link { id, path, target } => (
                Listed {
                    kind: "hardlink",
                    path: escape_bytes(&path),
                    size: None,
                    mode: None,
                    mtime: None,
                    digest: None,
                    hash: None,
                    target: Some(escape_bytes(&target)),
                },
                ok(id),
            ),
            Frame::Xattr { .. } => continue,
            Frame::Left { path, message } => {
                left += 1;
                eprintln!(
                    "ftx: {target}: not offered: {}: {}",
                    escape_bytes(&path),
                    escape(&message)
                );
                continue;
            }
            Frame::End { flags } => {
                conn.send(&Frame::Summary {
                    files_ok: listed,
                    files_failed: 0,
                    bytes: 0,
                })
                .with_context(|| format!("listing from {target}"))?;
                if flags & end_flags::MORE != 0 {
                    eprintln!("ftx: {target}: the listing stops after {listed} entries (one session's worth); list a part of the tree");
                    return Ok(Exit::Failure);
                }
                break;
            }
            Frame::Error { code, message } => {
                return Err(dial::peer_error(code, &message))
                    .with_context(|| format!("listing from {target}"))
            }
            other => {
                conn.send_error(
                    ErrorCode::Protocol,
                    format!("unexpected {} in a listing", other.name()),
                );
                bail!("{target} sent {} in a listing", other.name());
            }
        };
        listed += 1;
        conn.send(&answer)
            .with_context(|| format!("listing from {target}"))?;
        let line = if cfg.json {
            serde_json::to_string(&entry).context("cannot write the listing")?
        } else {
            text_line(&entry)
        };
        writeln!(out, "{line}").context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")?;
    Ok(if left > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// RESULT ok for a listed directory or link.
fn ok(id: u32) -> Frame {
    Frame::Result {
        id,
        status: 0,
        md5: [0; 16],
        message: String::new(),
    }
}

/// `TYPE MODE SIZE MTIME DIGEST NAME [-> TARGET]`, `-` where a field does
/// not apply or is not known.
fn text_line(e: &Listed) -> String {
    let kind = match e.kind {
        "file" => "f",
        "dir" => "d",
        "symlink" => "l",
        _ => "h",
    };
    let dash = || "-".to_owned();
    let digest = match (&e.digest, e.hash) {
        (Some(d), Some(h)) => format!("{h}:{d}"),
        _ => dash(),
    };
    let mut line = format!(
        "{kind} {} {:>12} {} {digest} {}",
        e.mode.clone().unwrap_or_else(dash),
        e.size.map_or_else(dash, |s| s.to_string()),
        e.mtime.map_or_else(dash, utc),
        e.path
    );
    if let Some(t) = &e.target {
        line.push_str(if e.kind == "symlink" { " -> " } else { " => " });
        line.push_str(t);
    }
    line
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_515_200), "2026-12-06T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
