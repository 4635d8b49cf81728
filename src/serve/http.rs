//! The HTTP face of `ftx serve` (`--http [ADDR:]PORT`): `GET` and `HEAD`
//! of the files under the roots, for clients without ftx (curl, wget,
//! aria2c, browsers) and for distributors that use ftx as their origin.
//!
//! HTTP/1.1 is hyper's (parsing, keep-alive, pipelining, limits), on a
//! tokio runtime of its own beside the ftx port: its connections never
//! wait in the ftx gate, whose handshake is ftx's. Bounds: 16 KiB of
//! request head, 10 s to send it, `--max-sessions`-independent.
//!
//! - `/ROOT/PATH`: a file, with `Content-Length`, a strong `ETag` and
//!   `Last-Modified` from the file as it is, `Accept-Ranges: bytes`, one
//!   `Range` (several: the whole file), `If-Range`, `If-None-Match`, and
//!   its digest: `Repr-Digest: md5=:BASE64:` (RFC 9530), `Digest:
//!   md5=BASE64` (RFC 3230) and, on a whole body, `Content-MD5`. A digest
//!   not known yet is computed before the headers go (once per version of
//!   the file, kept in the digest cache). A file that changes while it is
//!   sent is cut off before its last chunk: the client gets an error,
//!   never a body that does not match the digest it was given.
//! - `/ROOT/DIR/`: an HTML listing (names, sizes, dates, digests, links;
//!   no script), `?json` for programs; `/` lists the roots.
//! - `/by-md5/HEX`: the file with that MD5 (a content-addressed URL).
//! - Anything else: 405 (methods), 404, 400.

use super::digests::Digests;
use super::roots::{beneath, Root};
use crate::cache::Version;
use crate::digest::{hex, Md5Digest};
use crate::sanitize::escape_bytes;
use base64::Engine;
use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfNoneMatch, IfRange, LastModified};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::fs::{File, Metadata};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

type Body = BoxBody<Bytes, io::Error>;

/// Bytes read from the file per chunk of a body.
const CHUNK: usize = 1 << 20;
/// Entries shown in one directory listing at most.
const MAX_LISTED: usize = 100_000;

/// What every request sees.
pub(crate) struct Face {
    pub(crate) roots: Arc<Vec<Root>>,
    pub(crate) digests: Arc<Digests>,
}

/// Serves HTTP on `listener` (bound by the caller) on threads of its own;
/// returns at once. Errors of one connection end only that connection.
pub(crate) fn spawn(listener: std::net::TcpListener, face: Face) -> anyhow::Result<()> {
    use anyhow::Context;
    listener
        .set_nonblocking(true)
        .context("cannot set up the HTTP listener")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ftx-http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let face = Arc::new(face);
    std::thread::Builder::new()
        .name("ftx-http-accept".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("ftx: http: cannot listen: {e}");
                        return;
                    }
                };
                let conns = Arc::new(super::conns::Conns::default());
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(s) => s,
                        Err(e) => {
                            // Out of descriptors, most likely: wait a little.
                            eprintln!("ftx: http: accept failed: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let face = Arc::clone(&face);
                    let ticket = conns.admit(peer.ip());
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let busy = Arc::clone(&ticket.busy);
                        let svc = hyper::service::service_fn(move |req| {
                            let face = Arc::clone(&face);
                            let working = super::conns::Busy::new(&busy);
                            async move {
                                Ok::<_, std::convert::Infallible>(handle(req, face, working).await)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .max_buf_size(16 * 1024)
                            .writev(true)
                            .serve_connection(io, svc);
                        // Closed for a newcomer (it was idle) or done.
                        tokio::select! {
                            _ = conn => {}
                            _ = ticket.kill.notified() => {}
                        }
                        drop(ticket);
                    });
                }
            });
        })
        .context("cannot start the HTTP thread")?;
    Ok(())
}

fn full(status: StatusCode, kind: &'static str, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{text}\n"))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    face: Arc<Face>,
    working: super::conns::Busy,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD: read-only",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = req.method() == Method::HEAD;
    let json = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "json"));
    let raw = req.uri().path().to_owned();
    let face2 = Arc::clone(&face);
    let headers = req.headers().clone();
    // File-system work on the blocking pool.
    let found = tokio::task::spawn_blocking(move || locate(&face2, &raw, json)).await;
    let found = match found {
        Ok(f) => f,
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    match found {
        Found::Response(r) => r,
        Found::File(file, md, digest) => file_response(file, md, digest, &headers, head, working),
    }
}

/// What a path names.
enum Found {
    Response(Response<Body>),
    File(File, Metadata, Option<Md5Digest>),
}

fn locate(face: &Face, raw: &str, json: bool) -> Found {
    let not_found = || Found::Response(plain(StatusCode::NOT_FOUND, "not found"));
    let bad = |why: &str| Found::Response(plain(StatusCode::BAD_REQUEST, why));
    if raw == "/" {
        return Found::Response(root_listing(face, json));
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return bad("a path starts with /");
    };
    let dir_asked = rest.ends_with('/');
    let mut parts: Vec<Vec<u8>> = rest
        .trim_end_matches('/')
        .split('/')
        .map(|c| percent_encoding::percent_decode_str(c).collect())
        .collect();
    if parts.first().is_some_and(|p| p == b"by-md5") && parts.len() == 2 {
        return by_md5(face, &parts[1]);
    }
    let first = parts.remove(0);
    let Some((idx, root)) = face.roots.iter().enumerate().find(|(_, r)| r.name == first) else {
        return not_found();
    };
    let rel = match beneath(&parts) {
        Ok(r) => r,
        Err(why) => return bad(&format!("refused: the path {why}")),
    };
    let file = match root.open(&rel, rustix::fs::OFlags::NONBLOCK) {
        Ok(f) => f,
        // A symlink on the way, another file system, or nothing there.
        Err(_) => return not_found(),
    };
    let Ok(md) = file.metadata() else {
        return not_found();
    };
    if md.is_dir() {
        if !dir_asked {
            let mut r = plain(StatusCode::MOVED_PERMANENTLY, "a directory");
            if let Ok(v) = HeaderValue::from_str(&format!("{raw}/")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Found::Response(r);
        }
        return Found::Response(dir_listing(face, root, idx, &rel, &file, raw, json));
    }
    if !md.is_file() {
        return Found::Response(plain(
            StatusCode::FORBIDDEN,
            "not a regular file or directory: not served",
        ));
    }
    let digest = face.digests.of(&file, &md).ok().flatten();
    if let Some(d) = digest {
        face.digests.note(d, idx, rel);
    }
    Found::File(file, md, digest)
}

fn by_md5(face: &Face, hexd: &[u8]) -> Found {
    let not_found = || {
        Found::Response(plain(
            StatusCode::NOT_FOUND,
            "no file with that MD5 here (yet)",
        ))
    };
    let Some(d) = parse_hex(hexd) else {
        return Found::Response(plain(
            StatusCode::BAD_REQUEST,
            "/by-md5/ takes 32 hex digits",
        ));
    };
    let Some((idx, rel)) = face.digests.locate(&d) else {
        return not_found();
    };
    let Some(root) = face.roots.get(idx) else {
        return not_found();
    };
    let Ok(file) = root.open(&rel, rustix::fs::OFlags::NONBLOCK) else {
        return not_found();
    };
    let Ok(md) = file.metadata() else {
        return not_found();
    };
    if !md.is_file() {
        return not_found();
    }
    // Served only while it still has that digest.
    match face.digests.of(&file, &md) {
        Ok(Some(now)) if now == d => Found::File(file, md, Some(d)),
        _ => not_found(),
    }
}

fn parse_hex(h: &[u8]) -> Option<Md5Digest> {
    if h.len() != 32 {
        return None;
    }
    let mut d = [0u8; 16];
    for (i, b) in d.iter_mut().enumerate() {
        let s = std::str::from_utf8(&h[2 * i..2 * i + 2]).ok()?;
        *b = u8::from_str_radix(s, 16).ok()?;
    }
    Some(d)
}

/// A strong validator of this version of the file: identity, size and
/// times to the nanosecond.
fn etag(md: &Metadata) -> Option<ETag> {
    let v = Version::of(md);
    format!(
        "\"{:x}-{:x}-{:x}.{:x}-{:x}.{:x}\"",
        v.ino, v.len, v.mtime.0, v.mtime.1, v.ctime.0, v.ctime.1
    )
    .parse()
    .ok()
}

fn file_response(
    file: File,
    md: Metadata,
    digest: Option<Md5Digest>,
    req: &hyper::HeaderMap,
    head: bool,
    working: super::conns::Busy,
) -> Response<Body> {
    let len = md.len();
    let Some(tag) = etag(&md) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: no validator",
        );
    };
    let modified = md.modified().ok().map(LastModified::from);
    let base = |status: StatusCode| {
        let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.typed_insert(tag.clone());
        if let Some(m) = modified {
            h.typed_insert(m);
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(d) = digest {
            let b64 = base64::engine::general_purpose::STANDARD.encode(d);
            if let Ok(v) = HeaderValue::from_str(&format!("md5=:{b64}:")) {
                h.insert("repr-digest", v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("md5={b64}")) {
                h.insert("digest", v);
            }
        }
        r
    };
    if let Some(inm) = req.typed_get::<IfNoneMatch>() {
        if !inm.precondition_passes(&tag) {
            return base(StatusCode::NOT_MODIFIED);
        }
    }
    // One satisfiable range, unless If-Range says the file changed.
    let wanted = req
        .typed_get::<headers::Range>()
        .filter(|_| {
            req.typed_get::<IfRange>()
                .is_none_or(|ir| !ir.is_modified(Some(&tag), modified.as_ref()))
        })
        .map(|r| r.satisfiable_ranges(len).collect::<Vec<_>>());
    let span = match wanted.as_deref() {
        Some([one]) => match span_of(*one, len) {
            Some(s) => Some(s),
            None => {
                let mut r = base(StatusCode::RANGE_NOT_SATISFIABLE);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        },
        Some([]) if len > 0 => {
            let mut r = base(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        // None, or several ranges: the whole file.
        _ => None,
    };
    let (start, end, mut r) = match span {
        Some((s, e)) => {
            let mut r = base(StatusCode::PARTIAL_CONTENT);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{len}", e - 1)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (s, e, r)
        }
        None => {
            let mut r = base(StatusCode::OK);
            if let Some(d) = digest {
                let b64 = base64::engine::general_purpose::STANDARD.encode(d);
                if let Ok(v) = HeaderValue::from_str(&b64) {
                    r.headers_mut().insert("content-md5", v);
                }
            }
            (0, len, r)
        }
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if !head && end > start {
        *r.body_mut() = body(file, md, start, end, working);
    }
    r
}

/// `[start, end)` of a satisfiable range of a file of `len` bytes.
fn span_of((a, b): (Bound<u64>, Bound<u64>), len: u64) -> Option<(u64, u64)> {
    let start = match a {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match b {
        Bound::Included(e) => e.saturating_add(1).min(len),
        Bound::Excluded(e) => e.min(len),
        Bound::Unbounded => len,
    };
    (start < end && start < len).then_some((start, end))
}

/// The bytes `[start, end)` of `file`, read a chunk at a time. Before the
/// last chunk goes, the file must still be the version `md` describes
/// (same size, mtime and ctime): else the body ends in an error and the
/// client never gets a whole body under a digest it does not have.
fn body(file: File, md: Metadata, start: u64, end: u64, working: super::conns::Busy) -> Body {
    let file = Arc::new(file);
    // The connection counts as busy for as long as the body is sent.
    let working = Arc::new(working);
    let state = (file, start);
    let stream = futures_util::stream::unfold(state, move |(file, at)| {
        let md = md.clone();
        let _working = Arc::clone(&working);
        async move {
            if at >= end {
                return None;
            }
            let n = ((end - at) as usize).min(CHUNK);
            let f = Arc::clone(&file);
            // On the worker itself (the file is most often in the page
            // cache), telling the runtime that it may block.
            let read = tokio::task::block_in_place(|| read_chunk(&f, &md, at, n, end));
            let chunk = read.map(Frame::data);
            let failed = chunk.is_err();
            // After an error the stream ends (the connection is cut).
            let next_at = if failed { end } else { at + n as u64 };
            Some((chunk, (file, next_at)))
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// `n` bytes of `file` at `at`; before the last chunk of the body (which
/// ends at `end`), the file must still be the version `md` describes.
fn read_chunk(file: &File, md: &Metadata, at: u64, n: usize, end: u64) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = bytes::BytesMut::with_capacity(n);
    while buf.len() < n {
        let filled = buf.len();
        let off = libc::off_t::try_from(at + filled as u64).map_err(io::Error::other)?;
        let spare = buf.spare_capacity_mut();
        let want = (n - filled).min(spare.len());
        // SAFETY: pread writes at most `want` bytes into the spare capacity
        // of `buf` (at least `want` bytes long), a valid, writable region
        // owned by `buf`; the descriptor is open for as long as `file`.
        let k = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, off) };
        if k < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if k == 0 {
            return Err(io::Error::other("the file shrank while it was sent"));
        }
        // SAFETY: pread initialised the first `k` bytes of the spare
        // capacity (`k` <= `want` <= what is left of the capacity).
        unsafe { buf.set_len(filled + k as usize) };
    }
    if at + n as u64 >= end {
        let same = Version::of(&file.metadata()?) == Version::of(md);
        if !same {
            return Err(io::Error::other("the file changed while it was sent"));
        }
    }
    Ok(buf.freeze())
}

/// One row of a listing.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(skip)]
    href: String,
}

fn root_listing(face: &Face, json: bool) -> Response<Body> {
    let rows: Vec<Row> = face
        .roots
        .iter()
        .filter_map(|r| {
            let f = r
                .open(std::path::Path::new(""), rustix::fs::OFlags::NONBLOCK)
                .ok()?;
            let md = f.metadata().ok()?;
            let name = String::from_utf8_lossy(&r.name).into_owned();
            let href = encode(&r.name) + if md.is_dir() { "/" } else { "" };
            Some(row(name, href, &md, known(face, &md)))
        })
        .collect();
    listing("/", rows, json)
}

/// The row of an entry, with the digest the server knows of it.
fn row(name: String, href: String, md: &Metadata, known: Option<Md5Digest>) -> Row {
    Row {
        name,
        kind: if md.is_dir() {
            "dir"
        } else if md.is_file() {
            "file"
        } else if md.file_type().is_symlink() {
            "symlink"
        } else {
            "other"
        },
        size: md.is_file().then_some(md.len()),
        mtime: md.mtime(),
        md5: known.map(|d| hex(&d)),
        href,
    }
}

/// The digest the server knows of a regular file (none is computed for
/// a listing).
fn known(face: &Face, md: &Metadata) -> Option<Md5Digest> {
    md.is_file().then(|| face.digests.known(md)).flatten()
}

fn encode(name: &[u8]) -> String {
    percent_encoding::percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn dir_listing(
    face: &Face,
    root: &Root,
    idx: usize,
    rel: &std::path::Path,
    dir: &File,
    raw: &str,
    json: bool,
) -> Response<Body> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return plain(StatusCode::FORBIDDEN, "cannot list it");
    };
    let mut rows = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        if rows.len() >= MAX_LISTED {
            break;
        }
        let path: PathBuf = rel.join(std::ffi::OsStr::from_bytes(&name));
        let shown = String::from_utf8_lossy(&name).into_owned();
        // Opened beneath the root like anything served (a symlink is
        // listed as one, never followed).
        match root.open(&path, rustix::fs::OFlags::NONBLOCK) {
            Ok(f) => {
                let Ok(md) = f.metadata() else { continue };
                let href = encode(&name) + if md.is_dir() { "/" } else { "" };
                let digest = known(face, &md);
                if let Some(d) = digest {
                    face.digests.note(d, idx, path);
                }
                rows.push(row(shown, href, &md, digest));
            }
            Err(_) => {
                let md =
                    rustix::fs::statat(dir, e.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
                let Ok(st) = md else { continue };
                let kind = if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Symlink
                {
                    "symlink"
                } else {
                    "other"
                };
                rows.push(Row {
                    name: shown,
                    kind,
                    size: None,
                    mtime: st.st_mtime,
                    md5: None,
                    href: String::new(),
                });
            }
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let shown = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    listing(&escape_bytes(&shown), rows, json)
}

fn listing(title: &str, rows: Vec<Row>, json: bool) -> Response<Body> {
    if json {
        let body = serde_json::json!({ "path": title, "entries": rows });
        return full(StatusCode::OK, "application/json", body.to_string());
    }
    let mut html = String::new();
    html.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str(&format!("<title>{}</title>\n", esc(title)));
    html.push_str(
        "<style>body{font-family:system-ui,sans-serif;margin:1em;max-width:60em}\
         table{border-collapse:collapse;width:100%}td,th{padding:.3em .5em;text-align:left;\
         border-bottom:1px solid #ddd;vertical-align:top}td.n{word-break:break-all}\
         code{font-size:.8em;word-break:break-all}</style>\n</head><body>\n",
    );
    html.push_str(&format!("<h1>{}</h1>\n", esc(title)));
    if title != "/" {
        html.push_str("<p><a href=\"../\">up</a></p>\n");
    }
    html.push_str("<table><thead><tr><th>name</th><th>size</th><th>modified (UTC)</th><th>md5</th></tr></thead><tbody>\n");
    for r in &rows {
        let name = if r.href.is_empty() {
            esc(&r.name)
        } else {
            format!("<a href=\"{}\">{}</a>", esc(&r.href), esc(&r.name))
        };
        let kind = match r.kind {
            "dir" => "/",
            "symlink" => " (symlink)",
            "other" => " (not served)",
            _ => "",
        };
        html.push_str(&format!(
            "<tr><td class=\"n\">{name}{kind}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
            r.size.map_or_else(String::new, |s| s.to_string()),
            utc(r.mtime),
            r.md5.as_deref().unwrap_or(""),
        ));
    }
    html.push_str("</tbody></table>\n<p><a href=\"?json\">as JSON</a></p>\n</body></html>\n");
    full(StatusCode::OK, "text/html; charset=utf-8", html)
}

/// Text for HTML: every character that could start markup or end an
/// attribute is an entity.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn utc(secs: i64) -> String {
    crate::recv::list::utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounded_by_the_file() {
        use Bound::*;
        assert_eq!(span_of((Included(0), Included(9)), 100), Some((0, 10)));
        assert_eq!(span_of((Included(90), Unbounded), 100), Some((90, 100)));
        assert_eq!(span_of((Included(90), Included(500)), 100), Some((90, 100)));
        assert_eq!(span_of((Included(100), Unbounded), 100), None);
        assert_eq!(
            span_of((Included(5), Included(u64::MAX)), 100),
            Some((5, 100))
        );
    }

    #[test]
    fn markup_in_names_is_text() {
        assert_eq!(esc("<script>\"x'&"), "&lt;script&gt;&quot;x&#39;&amp;");
    }

    #[test]
    fn md5_paths_take_32_hex_digits() {
        assert!(parse_hex(b"00112233445566778899aabbccddeeff").is_some());
        assert!(parse_hex(b"0011").is_none());
        assert!(parse_hex(b"zz112233445566778899aabbccddeeff").is_none());
    }
}
