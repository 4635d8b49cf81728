//! `ftx man`: one manual page with every subcommand's options (and the
//! environment variables they read), the exit codes and examples.

use std::io::{self, Write};

/// The exit codes and examples, as the page's last sections (roff).
const EXTRA: &str = "\
.SH \"EXIT STATUS\"
.nf
  0    every file verified or skipped as identical
  1    a file unread or left out, a broken connection or protocol
  2    bad command line (a path, or HOST:PORT, that cannot be right)
  3    cannot connect (refused, timed out, unknown host) or listen
  4    a file arrived with another digest and was not kept, or an
       encrypted session was tampered with on the way (not retried)
  5    refused: exists, unsafe name or link, no space, conflict
  6    authentication failed: wrong or missing token, or a token on
       the sender and none on the receiver
  7    ftx check: the two sides differ
  130  interrupted; run the same command again to resume
The most serious decides: 6, then 4, 3, 5, 1, 7. recv --once: 0 only
if every file of its session was verified.
.fi
.SH EXAMPLES
.nf
  Receive into /srv/in, then send a file and a directory to it:
    ftx recv --port 6000 --out /srv/in
    ftx send disk.iso photos/ host:6000
  Send a stream from a pipe, checked with XXH3 on a fast link:
    tar c build | ftx send --hash xxh3 --name build.tar - host:6000
  Across a network you do not control: the same token on both sides
  encrypts and authenticates the whole session:
    ftx token ~/.ftx-token      (created 0600; copy it over)
    ftx recv --require-token --token-file ~/.ftx-token --out /srv/in
    ftx send --token-file ~/.ftx-token disk.iso host:6000
  In CI: a receiver on a free port, JSON events on stdout, and a token:
    ftx token token
    FTX_TOKEN=$(cat token) ftx recv --once --json --port 0 --out out
    FTX_TOKEN=$(cat token) ftx send --json dist/ 127.0.0.1:PORT
  Offer directories read-only; fetch or list from them elsewhere:
    ftx serve /srv/artifacts --port 6000
    ftx ls build-host:6000/artifacts
    ftx get build-host:6000/artifacts/app.tar --out .
  A receiver behind NAT calls a sender that waits:
    ftx send --listen 6000 dist/
    ftx recv --connect build-host:6000 --out in
.fi
";

/// Text made safe for roff: backslashes doubled, a leading dot or quote
/// escaped, hyphens as `\-`.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\\\").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// Renders the page to `out`.
pub fn render(out: &mut impl Write) -> io::Result<()> {
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command().long_about(
        "ftx moves files and trees between machines and proves they arrived whole: \
             a receiver (ftx recv, or ftx get pulling from ftx serve) writes what a sender \
             offers into its output directory, checks every file's digest, and puts it under \
             its final name only when it matches.",
    );
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    // The subcommands, pointing at their sections below (there are no
    // separate ftx-send(1) pages).
    writeln!(out, ".SH SUBCOMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let more = match name {
            "completions" | "man" | "token" => String::new(),
            _ => format!(" (see FTX {} below)", name.to_uppercase()),
        };
        writeln!(out, ".TP\n\\fBftx {name}\\fR\n{}{more}", roff(&about))?;
    }
    for sub in cmd.get_subcommands() {
        if matches!(sub.get_name(), "completions" | "man" | "token") {
            continue;
        }
        // Each role's synopsis and options, under a section of its own.
        writeln!(out, ".SH \"FTX {}\"", sub.get_name().to_uppercase())?;
        let sub = sub.clone().bin_name(format!("ftx {}", sub.get_name()));
        let page = clap_mangen::Man::new(sub);
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        page.render_options_section(&mut part)?;
        // Their own section titles become subsections.
        let part = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
        out.write_all(part.as_bytes())?;
    }
    out.write_all(EXTRA.as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}
