//! The HTTP face of `ftx serve --http`, with real clients: curl, wget,
//! aria2c and a headless Chromium (each test skips, saying why, where
//! the client is missing; `.ci/run` installs them), and raw sockets for
//! what clients would not send.

use crate::common::*;
use base64::Engine;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `ftx serve --http 127.0.0.1:0 ROOTS...`, and its HTTP address.
fn server(roots: &[&Path], scratch: &Path) -> (Receiver, SocketAddr) {
    let mut cmd = ftx_cmd();
    cmd.args([
        "serve",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--http",
        "127.0.0.1:0",
    ])
    .args(roots);
    let mut srv = Receiver::spawn(cmd, scratch);
    let line = srv
        .wait_line(|l| l.starts_with("http on "), Duration::from_secs(10))
        .expect("http on ADDR");
    let addr = line["http on ".len()..].parse().expect("an address");
    (srv, addr)
}

/// Skips (saying why) when `tool` is missing.
fn have(tool: &str) -> bool {
    let ok = command_exists(tool);
    if !ok {
        eprintln!("{tool} is not installed here (.ci/run installs it): skipped");
    }
    ok
}

/// One raw request; the whole answer (the server closes after it).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get_raw(addr: SocketAddr, path: &str, headers: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").as_bytes(),
    )
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The MD5 a `Repr-Digest: md5=:BASE64:` header names, as hex.
fn repr_md5(headers: &str) -> Option<String> {
    let line = headers.lines().find(|l| {
        l.trim_start()
            .to_ascii_lowercase()
            .starts_with("repr-digest:")
    })?;
    let b64 = line[line.find("md5=:")? + 5..].trim().trim_end_matches(':');
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

#[test]
fn curl_wget_and_aria2c_download_and_check_the_served_digest() {
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir(&root).expect("mkdir");
    let file = root.join("big.bin");
    write_random(&file, 48 << 20, 61);
    let want = md5_hex(&file);
    let (_srv, addr) = server(&[&root], &d.out);
    let url = format!("http://{addr}/pub/big.bin");
    if have("curl") {
        let out = Command::new("curl")
            .args(["-sSf", "-D", "-", "-o"])
            .arg(d.out.join("curl.bin"))
            .arg(&url)
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", show(&out));
        let headers = text(&out.stdout);
        assert_eq!(
            repr_md5(&headers).as_deref(),
            Some(want.as_str()),
            "{headers}"
        );
        assert_eq!(md5_hex(d.out.join("curl.bin")), want);
        // Resumed with -C - from a third of the file.
        let part = d.out.join("curl-c.bin");
        let data = fs::read(&file).expect("read");
        fs::write(&part, &data[..16 << 20]).expect("write");
        let out = Command::new("curl")
            .args(["-sSf", "-C", "-", "-o"])
            .arg(&part)
            .arg(&url)
            .output()
            .expect("curl -C -");
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(md5_hex(&part), want);
    }
    if have("wget") {
        // Interrupted (killed half way through a slow download), then
        // resumed with -c.
        let target = d.out.join("wget.bin");
        let mut slow = Command::new("wget");
        slow.args(["-q", "--limit-rate=8m", "-O"])
            .arg(&target)
            .arg(&url);
        let mut bg = Bg::spawn(slow);
        let started = poll_until(Duration::from_secs(30), || {
            fs::metadata(&target).is_ok_and(|m| m.len() >= 8 << 20)
        });
        assert!(started, "wget never got going");
        bg.kill();
        let _ = bg.finish(Duration::from_secs(10));
        let got = fs::metadata(&target).expect("partial").len();
        assert!(got < 48 << 20, "wget finished before it was interrupted");
        let out = Command::new("wget")
            .args(["-c", "-S", "-O"])
            .arg(&target)
            .arg(&url)
            .output()
            .expect("wget -c");
        assert!(out.status.success(), "{}", show(&out));
        let said = text(&out.stderr);
        assert!(said.contains("206 Partial Content"), "{said}");
        assert_eq!(repr_md5(&said).as_deref(), Some(want.as_str()), "{said}");
        assert_eq!(md5_hex(&target), want);
    }
    if have("aria2c") {
        let out = Command::new("aria2c")
            .args([
                "-q",
                "-x",
                "8",
                "-s",
                "8",
                "-k",
                "1M",
                "--allow-overwrite=true",
            ])
            .arg(format!("--checksum=md5={want}"))
            .arg("-d")
            .arg(&d.out)
            .args(["-o", "aria.bin"])
            .arg(&url)
            .output()
            .expect("aria2c");
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(md5_hex(d.out.join("aria.bin")), want);
    }
}

#[test]
fn http_answers_methods_conditions_and_ranges() {
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir(&root).expect("mkdir");
    fs::write(root.join("f.txt"), b"0123456789").expect("write");
    let (_srv, addr) = server(&[&root], &d.out);
    let a = get_raw(addr, "/pub/f.txt", "");
    assert_eq!(status(&a), 200, "{a}");
    assert!(a.ends_with("0123456789"), "{a}");
    let etag = a
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag")
        .to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");
    assert!(a.contains("content-md5: "), "{a}");
    // HEAD: the headers, no body.
    let h = raw(
        addr,
        b"HEAD /pub/f.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&h), 200);
    assert!(h.contains("content-length: 10"), "{h}");
    assert!(!h.contains("0123456789"), "{h}");
    // Conditions.
    let nm = get_raw(addr, "/pub/f.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status(&nm), 304, "{nm}");
    let r = get_raw(addr, "/pub/f.txt", "Range: bytes=2-4\r\n");
    assert_eq!(status(&r), 206, "{r}");
    assert!(
        r.contains("content-range: bytes 2-4/10") && r.ends_with("234"),
        "{r}"
    );
    let r = get_raw(addr, "/pub/f.txt", "Range: bytes=-3\r\n");
    assert!(r.ends_with("789"), "{r}");
    let r = get_raw(
        addr,
        "/pub/f.txt",
        &format!("Range: bytes=2-4\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(status(&r), 206, "{r}");
    let r = get_raw(
        addr,
        "/pub/f.txt",
        "Range: bytes=2-4\r\nIf-Range: \"other\"\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    // Several ranges: the whole file.
    let r = get_raw(addr, "/pub/f.txt", "Range: bytes=0-1,4-5\r\n");
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.ends_with("0123456789"), "{r}");
    let r = get_raw(addr, "/pub/f.txt", "Range: bytes=50-60\r\n");
    assert_eq!(status(&r), 416, "{r}");
    assert!(r.contains("content-range: bytes */10"), "{r}");
    // Read-only.
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let a = raw(
            addr,
            format!("{m} /pub/f.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(status(&a), 405, "{m}: {a}");
        assert!(a.contains("allow: GET, HEAD"), "{a}");
    }
    // Bounded heads: 64 KiB of header is refused, and the server goes on.
    let big = format!("X-Big: {}\r\n", "a".repeat(64 << 10));
    let a = get_raw(addr, "/pub/f.txt", &big);
    assert!(
        status(&a) == 431 || a.is_empty(),
        "{}",
        &a[..a.len().min(200)]
    );
    assert_eq!(status(&get_raw(addr, "/pub/f.txt", "")), 200);
    // By digest.
    let md5 = md5_hex(root.join("f.txt"));
    let a = get_raw(addr, &format!("/by-md5/{md5}"), "");
    assert_eq!(status(&a), 200, "{a}");
    assert!(a.ends_with("0123456789"));
    let a = get_raw(addr, "/by-md5/00000000000000000000000000000000", "");
    assert_eq!(status(&a), 404, "{a}");
}

#[test]
fn http_paths_never_leave_the_roots() {
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir(&root).expect("mkdir");
    fs::write(root.join("ok.txt"), b"fine").expect("write");
    let secret = d.t().join("secret.txt");
    fs::write(&secret, b"TOP-SECRET").expect("write");
    std::os::unix::fs::symlink(&secret, root.join("out")).expect("symlink");
    std::os::unix::fs::symlink(d.t(), root.join("outdir")).expect("symlink");
    let (_srv, addr) = server(&[&root], &d.out);
    for p in [
        "/pub/../secret.txt",
        "/pub/%2e%2e/secret.txt",
        "/pub/%2E%2E%2Fsecret.txt",
        "/pub/..%2fsecret.txt",
        "/pub/..%5csecret.txt",
        "/pub/..\\secret.txt",
        "/pub/%c0%ae%c0%ae/secret.txt",
        "/pub/%00/../secret.txt",
        "/pub/ok.txt%00",
        "/pub/out",
        "/pub/outdir/secret.txt",
        "/pub/outdir/",
        "/../../../../etc/passwd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/pub//ok.txt",
    ] {
        let a = get_raw(addr, p, "");
        assert!(
            matches!(status(&a), 400 | 403 | 404),
            "{p}: {}",
            &a[..a.len().min(300)]
        );
        assert!(
            !a.contains("TOP-SECRET") && !a.contains("root:"),
            "{p}: {a}"
        );
    }
    assert_eq!(status(&get_raw(addr, "/pub/ok.txt", "")), 200);
}

/// The listing in a real browser: it renders, a name with markup and
/// quotes is text, and the links lead to the files.
#[test]
fn the_listing_renders_in_a_headless_browser_with_names_as_text() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| command_exists(b));
    let Some(browser) = browser else {
        eprintln!("no chromium here (.ci/run installs it): skipped");
        return;
    };
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    let evil = "<script>alert(1)<script>\"q'.txt";
    fs::write(root.join(evil), b"evil name, plain content").expect("write");
    fs::write(root.join("sub/plain.txt"), b"plain").expect("write");
    let (_srv, addr) = server(&[&root], &d.out);
    let profile = d.t().join("profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("http://{addr}/pub/"))
        .output()
        .expect("chromium");
    let dom = text(&out.stdout);
    assert!(
        dom.contains("<table>"),
        "rendered: {}\n{}",
        dom,
        text(&out.stderr)
    );
    // The name is text: escaped in the DOM, never an element.
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;script&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert"), "{dom}");
    // Every link works.
    let hrefs: Vec<&str> = dom
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| !h.starts_with("..") && !h.starts_with('?'))
        .collect();
    assert!(hrefs.len() >= 2, "{dom}");
    for h in hrefs {
        let a = get_raw(addr, &format!("/pub/{}", h.replace("&amp;", "&")), "");
        assert_eq!(status(&a), 200, "{h}: {a}");
    }
    // JSON for programs.
    let a = get_raw(addr, "/pub/?json", "");
    let body = &a[a.find("\r\n\r\n").expect("body") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert!(v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .any(|e| e["name"] == evil));
}

/// A file rewritten while curl downloads it: curl fails, or what it got
/// matches the digest it was given; never a success with a wrong digest.
#[test]
fn a_file_changed_during_a_download_never_passes_under_a_wrong_digest() {
    if !have("curl") {
        return;
    }
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir(&root).expect("mkdir");
    let file = root.join("moving.bin");
    write_random(&file, 32 << 20, 62);
    let (_srv, addr) = server(&[&root], &d.out);
    let target = d.out.join("moving.bin");
    let headers = d.out.join("headers.txt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sSf", "--limit-rate", "8M", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&target)
        .arg(format!("http://{addr}/pub/moving.bin"));
    let mut bg = Bg::spawn(cmd);
    let started = poll_until(Duration::from_secs(30), || {
        fs::metadata(&target).is_ok_and(|m| m.len() >= 4 << 20)
    });
    assert!(started, "the download never started");
    // Rewritten in place, half way.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.write_all(&vec![0x5a; 1 << 20]).expect("rewrite");
    drop(f);
    let out = bg.finish(Duration::from_secs(60));
    let said = fs::read_to_string(&headers).unwrap_or_default();
    if out.status.success() {
        assert_eq!(
            repr_md5(&said).as_deref(),
            Some(md5_hex(&target).as_str()),
            "success with a digest that does not match: {said}"
        );
    } else {
        assert_ne!(out.status.code(), Some(0));
    }
}

/// 10,000 idle connections and 500 clients trickling their headers do
/// not keep curl (default settings) from its file.
#[test]
fn idle_and_trickling_clients_do_not_stop_a_download() {
    if !have("curl") {
        return;
    }
    let d = dirs();
    let root = d.src.join("pub");
    fs::create_dir(&root).expect("mkdir");
    let file = root.join("big.bin");
    write_random(&file, 64 << 20, 63);
    let (_srv, addr) = server(&[&root], &d.out);
    raise_fd_limit(11_000);
    let mut idle = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(c) => idle.push(c),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 2000, "only {} idle connections", idle.len());
    let mut trickle = Vec::new();
    for _ in 0..500 {
        if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            let _ = c.write_all(b"GET /pub/big.bin HTTP/1.1\r\nX-Slow: ");
            let _ = c.set_nonblocking(true);
            trickle.push(c);
        }
    }
    // The trickle goes on beside the download, a byte a second each.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let trickler = std::thread::spawn(move || {
        for _ in 0..60 {
            if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            for c in &mut trickle {
                let _ = c.write(b"a");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let out = Command::new("curl")
        .args(["-sSf", "-o"])
        .arg(d.out.join("big.bin"))
        .arg(format!("http://{addr}/pub/big.bin"))
        .output()
        .expect("curl");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = trickler.join();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(md5_hex(d.out.join("big.bin")), md5_hex(&file));
    drop(idle);
}

#[test]
fn http_is_refused_with_a_token() {
    let d = dirs();
    let mut cmd = ftx_cmd();
    cmd.env("FTX_TOKEN", "3f5e9c1a7b2d4e6f8091a2b3c4d5e6f7")
        .args(["serve", "--port", "0", "--http", "0"])
        .arg(&d.src);
    let out = run_with_timeout(cmd, SEND_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("--http"), "{}", show(&out));
}
