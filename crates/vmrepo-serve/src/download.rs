//! Downloads: `GET`/`HEAD /vm/<VM>/<file>` for an image or a sidecar,
//! `/vm/<VM>/<folder>/<part>` for one part of a multi-file image, and
//! `/vm/<VM>/<folder>.tar` for the whole folder as a streamed tar.
//!
//! Only what the catalog knows is served: an image's file, its parts and its
//! two sidecars. Answers carry a strong `ETag` (the recorded SHA-256 while
//! the file is the one recorded, else its inode, size and modification
//! time), `Last-Modified`, `Repr-Digest` (RFC 9530) and `Content-MD5` for a
//! whole image whose digests are recorded, and honour `If-None-Match`,
//! `If-Modified-Since`, a single byte `Range` and `If-Range`: a range asked
//! with a validator that no longer matches (or with a date, which cannot
//! tell two files written in the same second apart) gets the whole new
//! file, so that a download resumed across a `--replace` never splices two
//! versions.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;
use vmrepo_repo::ImageRecord;

use crate::api::if_none_match;
use crate::error::ApiError;
use crate::paths;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/vm/{*rest}", get(download))
}

/// What a download path names.
#[derive(Debug)]
enum Target {
    /// One file: `components` from `vm/`.
    File { components: Vec<String>, record: Option<ImageRecord>, text: bool },
    /// A folder image as a tar: its parts and its sidecars.
    Tar { record: ImageRecord, members: Vec<(String, Vec<String>)> },
}

/// The handler (axum answers `HEAD` through it, without the body).
async fn download(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let segments = paths::vm_segments(uri.path())?;
    let target = state.with_catalog(move |catalog| locate(catalog, &segments)).await?;
    let root = state.repo.root().to_path_buf();
    let state2 = state.clone();
    match target {
        Target::File { components, record, text } => {
            let (file, md) = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = components.iter().map(String::as_str).collect();
                paths::open_beneath(&root, &refs).map(|(f, m)| (f, m, components))
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map(|(f, m, c)| ((f, c), m))?;
            Ok(serve_file(&state2, &method, &headers, file, &md, record.as_ref(), text))
        }
        Target::Tar { record, members } => {
            serve_tar(&state2, &method, &headers, &root, record, members).await
        }
    }
}

/// Finds what `segments` (`[vm, file]` or `[vm, folder, part]`) name in the catalog.
fn locate(catalog: &mut vmrepo_repo::Catalog, segments: &[String]) -> Result<Target, ApiError> {
    let vm =
        vmrepo_name::Vm::from_user(&segments[0]).map_err(|_| ApiError::not_found("no such VM folder"))?;
    let folder = catalog.folder_of(vm)?.ok_or_else(|| ApiError::not_found("no such VM folder"))?;
    let by = |spec: &str| -> Result<Option<ImageRecord>, ApiError> {
        match catalog.resolve(&format!("{}/{spec}", vm.as_str())) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == vmrepo_repo::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == vmrepo_repo::ErrorKind::InvalidInput => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let not_found = || {
        ApiError::not_found(format!(
            "vm/{}/{}: no such image or sidecar",
            segments[0],
            segments[1..].join("/")
        ))
    };
    let dir = catalog.repo().vm_root().join(&folder);
    let name = &segments[1];
    if segments.len() == 3 {
        // A part of a folder image, or a sidecar kept inside it.
        let rec = by(name)?.filter(|r| r.file == *name && r.kind == "folder").ok_or_else(not_found)?;
        let part = &segments[2];
        let (parts, _) = vmrepo_repo::layout::folder_parts(&dir.join(&rec.file))?;
        let sidecars = vmrepo_repo::layout::Sidecars::of(&dir, &rec.file, &rec.name, rec.image_kind());
        let inside = |p: &std::path::Path| {
            p.parent() == Some(&dir.join(&rec.file)) && p.file_name().is_some_and(|f| f == part.as_str())
        };
        let text = inside(&sidecars.checksum) || inside(&sidecars.description);
        if !text && !parts.iter().any(|p| p.0 == *part) {
            return Err(not_found());
        }
        return Ok(Target::File { components: vec![folder, rec.file, part.clone()], record: None, text });
    }
    if let Some(rec) = by(name)?.filter(|r| r.file == *name) {
        return match rec.kind.as_str() {
            "file" => Ok(Target::File {
                components: vec![folder, rec.file.clone()],
                record: Some(rec),
                text: false,
            }),
            "folder" => Err(ApiError::not_found(format!(
                "vm/{}/{name} is an image of several files: its parts are under /vm/{}/{name}/, the whole at /vm/{}/{name}.tar",
                segments[0], segments[0], segments[0]
            ))),
            _ => Err(ApiError::not_found(format!(
                "vm/{}/{name}: the image is missing; only its sidecars remain",
                segments[0]
            ))),
        };
    }
    if let Some(stem) = name.strip_suffix(".tar")
        && let Some(rec) = by(stem)?.filter(|r| r.file == stem && r.kind == "folder")
    {
        let members = tar_members(&dir, &folder, &rec)?;
        return Ok(Target::Tar { record: rec, members });
    }
    for suffix in [".checksum", ".txt"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            let rec = by(stem)?.filter(|r| r.name == stem).ok_or_else(not_found)?;
            let sidecars = vmrepo_repo::layout::Sidecars::of(&dir, &rec.file, &rec.name, rec.image_kind());
            let path = if suffix == ".txt" { &sidecars.description } else { &sidecars.checksum };
            if path.parent() != Some(dir.as_path()) {
                // Kept inside the image folder: served there.
                return Err(not_found());
            }
            return Ok(Target::File { components: vec![folder, name.clone()], record: None, text: true });
        }
    }
    Err(not_found())
}

/// The members of a folder image's tar: `(name in the tar, components from vm/)`.
fn tar_members(
    dir: &std::path::Path,
    folder: &str,
    rec: &ImageRecord,
) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let sidecars = vmrepo_repo::layout::Sidecars::of(dir, &rec.file, &rec.name, rec.image_kind());
    let mut members = Vec::new();
    for s in [&sidecars.checksum, &sidecars.description] {
        if s.parent() == Some(dir) && s.is_file() {
            let n = s.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            members.push((n.clone(), vec![folder.to_string(), n]));
        }
    }
    let (parts, _) = vmrepo_repo::layout::folder_parts(&dir.join(&rec.file))?;
    let mut inside = Vec::new();
    for s in [&sidecars.checksum, &sidecars.description] {
        if s.parent() == Some(dir.join(&rec.file).as_path()) {
            inside.push(s.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    for p in parts.iter().map(|p| p.0.clone()).chain(inside) {
        members.push((format!("{}/{p}", rec.file), vec![folder.to_string(), rec.file.clone(), p]));
    }
    Ok(members)
}

/// The strong validator of a file: the recorded SHA-256 while the file is
/// the one it was recorded for, else its inode, size and modification time.
fn etag_of<'r>(md: &std::fs::Metadata, record: Option<&'r ImageRecord>) -> (String, Option<&'r str>) {
    let mtime_ns = vmrepo_repo::fsutil::mtime_ns(md);
    if let Some(r) = record
        && let Some(sha) = r.sha256.as_deref()
        && r.ino == Some(md.ino())
        && r.size == Some(md.len())
        && r.mtime_ns == Some(mtime_ns)
    {
        return (format!("\"{sha}\""), Some(sha));
    }
    (format!("\"{:x}-{:x}-{:x}\"", md.ino(), md.len(), mtime_ns), None)
}

/// A byte range asked for, resolved against the length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range, or one to ignore (several ranges, an unknown unit): the whole.
    Whole,
    /// `start..=end`.
    Part(u64, u64),
    /// Cannot be satisfied: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header against a representation of `len` bytes (RFC 9110 14.2).
pub fn parse_range(value: &str, len: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeAsk::Whole };
    if spec.contains(',') {
        // Several ranges: answered with the whole (allowed, and what clients resume with).
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Whole };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(n) if len == 0 => {
                let _ = n;
                RangeAsk::Unsatisfiable
            }
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
            None => RangeAsk::Whole,
        },
        (first, "") => match num(first) {
            Some(f) if f < len => RangeAsk::Part(f, len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (first, last) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f > l => RangeAsk::Whole,
            (Some(f), Some(l)) if f < len => RangeAsk::Part(f, l.min(len - 1)),
            (Some(_), Some(_)) => RangeAsk::Unsatisfiable,
            _ => RangeAsk::Whole,
        },
    }
}

/// Whether `If-Range` lets the range apply: it must name the current strong
/// ETag exactly.
///
/// A date is never taken (RFC 9110 13.1.5 asks for a strong validator, and
/// a `Last-Modified` date is strong only when the file cannot have changed
/// within that second): a `vmrepo add --replace` in the same second as the
/// import it replaces leaves the same date on other bytes, and a range
/// honoured on it would splice the two. A client that resumes with a date
/// gets the whole new file, which is always safe.
fn if_range_holds(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == etag,
    }
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn serve_file(
    state: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    (file, components): (File, Vec<String>),
    md: &std::fs::Metadata,
    record: Option<&ImageRecord>,
    text: bool,
) -> Response {
    let len = md.len();
    let (etag, sha) = etag_of(md, record);
    let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let last_modified = http_date(modified);
    let file_name = components.last().cloned().unwrap_or_default();

    let mut h = HeaderMap::new();
    let put = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(&mut h, header::ETAG, &etag);
    put(&mut h, header::LAST_MODIFIED, &last_modified);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if text { "text/plain; charset=utf-8" } else { "application/octet-stream" }),
    );
    if !text {
        put(&mut h, header::CONTENT_DISPOSITION, &format!("attachment; filename=\"{file_name}\""));
    }
    let b64 = |hexdigest: &str| -> Option<String> {
        let bytes: Option<Vec<u8>> = (0..hexdigest.len() / 2)
            .map(|i| u8::from_str_radix(hexdigest.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    if let Some(sha) = sha {
        let mut digest = String::new();
        if let Some(s) = b64(sha) {
            digest.push_str(&format!("sha-256=:{s}:"));
        }
        if let Some(m) = record.and_then(|r| r.md5.as_deref()).and_then(b64) {
            digest.push_str(&format!(", md5=:{m}:"));
        }
        put(&mut h, header::HeaderName::from_static("repr-digest"), &digest);
        // RFC 3230's instance digest, for clients that ask for it (aria2c sends
        // `Want-Digest` and checks the whole file against it once it has it,
        // so a resume spliced across a replacement is caught there too).
        if headers.contains_key("want-digest")
            && let Some(s) = b64(sha)
        {
            put(&mut h, header::HeaderName::from_static("digest"), &format!("SHA-256={s}"));
        }
    }

    // Conditional requests (RFC 9110 13.2.2): If-None-Match, else If-Modified-Since.
    let not_modified = if headers.contains_key(header::IF_NONE_MATCH) {
        if_none_match(headers, &etag)
    } else {
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| modified.duration_since(since).map_or(true, |d| d < Duration::from_secs(1)))
    };
    if not_modified {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().extend(h);
        return r;
    }

    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_holds(headers, &etag) => parse_range(v, len),
        _ => RangeAsk::Whole,
    };
    let (status, start, count) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(a, b) => {
            put(&mut h, header::CONTENT_RANGE, &format!("bytes {a}-{b}/{len}"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        RangeAsk::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            put(&mut h, header::CONTENT_RANGE, &format!("bytes */{len}"));
            r.headers_mut().extend(h);
            return r;
        }
    };
    if status == StatusCode::OK
        && let Some(m) = record.filter(|_| sha.is_some()).and_then(|r| r.md5.as_deref()).and_then(b64)
    {
        put(&mut h, header::HeaderName::from_static("content-md5"), &m);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(file_stream(
            state.clone(),
            vec![Piece::File { file: Arc::new(file), start, len: count }],
        ))
    };
    let mut r = (status, body).into_response();
    r.headers_mut().extend(h);
    r
}

/// A piece of a streamed body.
enum Piece {
    File { file: Arc<File>, start: u64, len: u64 },
    Bytes(Bytes),
}

/// The smallest chunk read, however many downloads run: at the default
/// budget it is reached only past [`crate::Limits::max_connections`]
/// downloads, so that the budget holds.
const MIN_CHUNK: usize = 16 * 1024;

/// Counts a download while it runs (its share of the read buffers).
struct Active(Arc<AppState>);

impl Active {
    fn new(state: Arc<AppState>) -> Active {
        state.metrics.downloads_in_flight.fetch_add(1, Ordering::Relaxed);
        Active(state)
    }

    /// Bytes to read in one go: the buffers' budget shared among the downloads running.
    fn chunk(&self) -> usize {
        let n = self.0.metrics.downloads_in_flight.load(Ordering::Relaxed).max(1);
        let share = self.0.limits.download_buffers / usize::try_from(n).unwrap_or(usize::MAX);
        share.clamp(MIN_CHUNK, self.0.limits.max_chunk.max(MIN_CHUNK))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.metrics.downloads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pieces as a stream of chunks, each file read on the blocking pool.
/// A file that has shrunk since it was opened ends the stream with an error
/// (the client sees a short body, never other bytes).
fn file_stream(
    state: Arc<AppState>,
    pieces: Vec<Piece>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    let active = Active::new(state);
    let mut queue: std::collections::VecDeque<Piece> = pieces.into();
    futures_util::stream::unfold(
        (active, queue.pop_front(), queue),
        |(active, current, mut queue)| async move {
            let mut current = current?;
            loop {
                match current {
                    Piece::Bytes(b) => return Some((Ok(b), (active, queue.pop_front(), queue))),
                    Piece::File { len: 0, .. } => match queue.pop_front() {
                        Some(next) => current = next,
                        None => return None,
                    },
                    Piece::File { file, start, len } => {
                        let want = usize::try_from(len).unwrap_or(usize::MAX).min(active.chunk());
                        let f = file.clone();
                        let read = tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0u8; want];
                            let mut got = 0;
                            while got < want {
                                match f.read_at(&mut buf[got..], start + got as u64) {
                                    Ok(0) => break,
                                    Ok(n) => got += n,
                                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                    Err(e) => return Err(e),
                                }
                            }
                            buf.truncate(got);
                            Ok(buf)
                        })
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                        return match read {
                            Ok(buf) if buf.is_empty() => Some((
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "the file shrank while it was sent",
                                )),
                                (active, None, std::collections::VecDeque::new()),
                            )),
                            Ok(buf) => {
                                let n = buf.len() as u64;
                                active.0.metrics.bytes_sent.fetch_add(n, Ordering::Relaxed);
                                let rest = Piece::File { file, start: start + n, len: len - n };
                                Some((Ok(Bytes::from(buf)), (active, Some(rest), queue)))
                            }
                            Err(e) => Some((Err(e), (active, None, std::collections::VecDeque::new()))),
                        };
                    }
                }
            }
        },
    )
}

/// A ustar header for a member of `size` bytes (sizes of 8 GiB and more in
/// the base-256 form GNU tar and bsdtar read).
fn tar_header(name: &str, size: u64, mtime: u64) -> Result<[u8; 512], ApiError> {
    let mut h = [0u8; 512];
    let (prefix, base) = if name.len() <= 100 {
        ("", name)
    } else {
        match name.rsplit_once('/') {
            Some((p, b)) if p.len() <= 155 && b.len() <= 100 => (p, b),
            _ => return Err(ApiError::internal(format!("{name}: too long a name for a tar member"))),
        }
    };
    h[..base.len()].copy_from_slice(base.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 8 << 30 {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], mtime.min(0o77777777777));
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

async fn serve_tar(
    state: &Arc<AppState>,
    method: &Method,
    _headers: &HeaderMap,
    root: &std::path::Path,
    record: ImageRecord,
    members: Vec<(String, Vec<String>)>,
) -> Result<Response, ApiError> {
    let root = root.to_path_buf();
    let pieces = tokio::task::spawn_blocking(move || -> Result<(Vec<Piece>, u64), ApiError> {
        let mut pieces = Vec::new();
        let mut total: u64 = 1024;
        for (name, comps) in &members {
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            let (file, md) = paths::open_beneath(&root, &refs)?;
            let len = md.len();
            let mtime = u64::try_from(md.mtime()).unwrap_or(0);
            pieces.push(Piece::Bytes(Bytes::copy_from_slice(&tar_header(name, len, mtime)?)));
            pieces.push(Piece::File { file: Arc::new(file), start: 0, len });
            let pad = (512 - len % 512) % 512;
            if pad > 0 {
                pieces.push(Piece::Bytes(Bytes::from(vec![0u8; usize::try_from(pad).unwrap_or(0)])));
            }
            total = total.saturating_add(512 + len + pad);
        }
        pieces.push(Piece::Bytes(Bytes::from(vec![0u8; 1024])));
        Ok((pieces, total))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (pieces, total) = pieces;
    let mut r = if method == Method::HEAD {
        Body::empty().into_response()
    } else {
        Body::from_stream(file_stream(state.clone(), pieces)).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.tar\"", record.file)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeAsk::Part(0, 99));
        assert_eq!(parse_range("bytes=90-1000", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=a-b", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=0-", 0), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), RangeAsk::Whole);
    }

    #[test]
    fn tar_header_checksum_is_what_tar_computes() {
        let h = tar_header("x/part.vmdk", 1234, 0).unwrap();
        let mut copy = h;
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(std::str::from_utf8(&h[148..154]).unwrap(), format!("{sum:06o}"));
    }
}
