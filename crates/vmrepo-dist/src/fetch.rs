//! Where `pull` reads from: a published folder (`file://`), a web server
//! (`http://`, `https://`) or an S3 bucket (`s3://bucket/prefix`, [`crate::s3`]),
//! behind one interface that fetches a small file
//! whole, with a cap, or opens a large one from an offset.
//!
//! Resuming asks the server for `Range: bytes=N-`, `If-Range` the entity
//! is still the one an earlier attempt on the same server saw (its strong
//! ETag); a 200 starts again from zero, a 206 for any other range than the
//! one asked, or a `Content-Length` other than what the catalog's size
//! leaves, is refused. From S3 the same: a ranged GET `If-Match` the ETag
//! the first attempt saw. Bytes resumed from another server are spliced: the
//! SHA-256 of the whole file proves them at the end.
//!
//! Redirects are followed (at most [`MAX_REDIRECTS`]), to any host, since
//! nothing a server says is trusted, only the signed catalog's sizes and
//! digests; from an `https://` source never to plain `http://`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may stay silent by default, before the answer or within
/// the body: a stalled transfer fails (and goes to the next mirror, or is
/// resumed by the next pull) instead of hanging.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most redirects followed for one request.
pub const MAX_REDIRECTS: u32 = 5;
/// The longest URL accepted as a source.
const MAX_URL: usize = 2048;

/// A published tree.
#[derive(Clone, Debug)]
pub enum Remote {
    /// A folder on this machine.
    Folder(PathBuf),
    /// A web server; the URL of the tree, without its trailing `/`.
    Web { base: String, agent: ureq::Agent },
    /// A bucket and prefix.
    S3(Arc<crate::s3::Bucket>),
}

/// A file opened for reading from some offset.
pub struct Opened {
    /// Where the bytes given start: the offset asked for, or 0 when the
    /// source could not (or would not) continue.
    pub start: u64,
    /// The entity's strong validator, to resume a later attempt with.
    pub etag: Option<String>,
    pub body: Box<dyn Read>,
}

impl Remote {
    /// Parses `file:///path`, `http://host[:port][/prefix]`, `https://...`
    /// or `s3://bucket[/prefix]` (the client's settings from the AWS
    /// variables), with the default stall time-out.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for anything else.
    pub fn parse(source: &str) -> Result<Remote> {
        Remote::parse_with(source, STALL_TIMEOUT)
    }

    /// [`Remote::parse`], failing a request when the server sends nothing for `stall`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a source of another form.
    pub fn parse_with(source: &str, stall: Duration) -> Result<Remote> {
        let bad = |why: &str| Error::new(ErrorKind::InvalidInput, format!("pull source {source:?}: {why}"));
        if source.len() > MAX_URL || !source.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("a URL of printable characters without spaces is expected"));
        }
        if let Some(path) = source.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("file:// takes an absolute path (file:///srv/vm)"));
            }
            return Ok(Remote::Folder(PathBuf::from(path)));
        }
        if source.starts_with(crate::s3::SCHEME) {
            let bucket = crate::s3::Bucket::open(source)
                .map_err(|e| Error::new(e.kind(), format!("pull source {e}")))?;
            return Ok(Remote::S3(Arc::new(bucket)));
        }
        let host = source.strip_prefix("http://").or_else(|| source.strip_prefix("https://"));
        match host {
            Some(h) if !h.is_empty() && !h.starts_with('/') && !source.contains(['?', '#']) => {
                let config = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_connect(Some(CONNECT_TIMEOUT))
                    .timeout_recv_response(Some(stall))
                    .timeout_recv_body(None)
                    .timeout_per_read(Some(stall))
                    .max_redirects(MAX_REDIRECTS)
                    .https_only(source.starts_with("https://"))
                    .user_agent(concat!("vmrepo/", env!("CARGO_PKG_VERSION")))
                    .build();
                Ok(Remote::Web { base: source.trim_end_matches('/').to_string(), agent: config.into() })
            }
            _ => Err(bad(
                "file:///path, http://host[:port][/prefix], https://... or s3://bucket/prefix is expected",
            )),
        }
    }

    /// The source as recorded in `.vmrepo/sources.json`.
    pub fn key(&self) -> String {
        match self {
            Remote::Folder(p) => format!("file://{}", p.display()),
            Remote::Web { base, .. } => base.clone(),
            Remote::S3(b) => b.url(),
        }
    }

    /// Where `rel` (a checked relative path) is.
    pub fn location(&self, rel: &str) -> String {
        match self {
            Remote::Folder(p) => p.join(rel).display().to_string(),
            Remote::Web { base, .. } => format!("{base}/{rel}"),
            Remote::S3(b) => b.location(rel),
        }
    }

    /// The whole of `rel`, at most `cap` bytes; `None` when it does not exist.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when it is larger than `cap`; [`ErrorKind::Io`]
    /// for a network error or an answer other than 200 and 404.
    pub fn fetch_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let at = self.location(rel);
        let too_big = || Error::new(ErrorKind::InvalidInput, format!("{at}: larger than {cap} bytes"));
        match self {
            Remote::Folder(p) => {
                let path = p.join(rel);
                match std::fs::symlink_metadata(&path) {
                    Err(e) if fsutil::is_not_found(&e) => return Ok(None),
                    // A link, a FIFO, a device: not a file a publish writes,
                    // and not followed or opened (a FIFO would block).
                    Ok(md) if !md.file_type().is_file() => {
                        let what = fsutil::describe_type(md.file_type());
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!("{at}: {what}, not a regular file"),
                        ));
                    }
                    Ok(md) if md.len() > cap => return Err(too_big()),
                    _ => {}
                }
                vmrepo_repo::catalog::read_capped(&path, cap)
                    .map(Some)
                    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {at}: {e}")))
            }
            Remote::Web { agent, .. } => {
                let mut resp = agent.get(&at).call().map_err(|e| net_error(&at, &e))?;
                match resp.status().as_u16() {
                    200 => {}
                    404 | 410 => return Ok(None),
                    s => return Err(Error::new(ErrorKind::Io, format!("{at}: the server answered {s}"))),
                }
                resp.body_mut().with_config().limit(cap).read_to_vec().map(Some).map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => too_big(),
                    e => net_error(&at, &e),
                })
            }
            Remote::S3(b) => b.get_small(rel, cap),
        }
    }

    /// Opens `rel`, a file of `size` bytes, to read from `offset` (`If-Range`
    /// `etag` when given); from 0 when the source cannot or will not continue.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it is not there; [`ErrorKind::BadImage`]
    /// when the server states another length than `size` leaves or answers
    /// another range than the one asked; [`ErrorKind::Io`] for a network
    /// error or another answer.
    pub fn open_from(&self, rel: &str, size: u64, offset: u64, etag: Option<&str>) -> Result<Opened> {
        let at = self.location(rel);
        match self {
            Remote::Folder(p) => {
                let path = p.join(rel);
                let mut f: File = fsutil::open_regular(&path, false)?;
                let md = f.metadata().map_err(|e| Error::io("read", &path, e))?;
                // A file's validator: the same inode, length and modification time.
                let tag = format!("\"{:x}-{:x}-{:x}\"", md.ino(), md.len(), fsutil::mtime_ns(&md));
                let start =
                    if offset > 0 && etag == Some(tag.as_str()) && offset <= md.len() { offset } else { 0 };
                f.seek(SeekFrom::Start(start)).map_err(|e| Error::io("read", &path, e))?;
                Ok(Opened { start, etag: Some(tag), body: Box::new(f) })
            }
            Remote::Web { agent, .. } => {
                let mut req = agent.get(&at);
                if offset > 0 {
                    req = req.header("Range", format!("bytes={offset}-"));
                    if let Some(tag) = etag {
                        req = req.header("If-Range", tag);
                    }
                }
                let resp = req.call().map_err(|e| net_error(&at, &e))?;
                let header =
                    |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let bad = |why: String| Error::new(ErrorKind::BadImage, format!("{at}: {why}"));
                // Only a strong validator may resume (RFC 9110, If-Range).
                let new_tag = header("etag").filter(|t| t.starts_with('"') && t.len() < MAX_ETAG);
                let start = match resp.status().as_u16() {
                    200 => 0,
                    206 if offset > 0 => {
                        let range = header("content-range").unwrap_or_default();
                        let last = size.saturating_sub(1);
                        let fits = matches!(content_range(&range),
                            Some((f, l, c)) if f == offset && l == last && (c == size || c == u64::MAX));
                        if !fits {
                            return Err(bad(format!(
                                "asked for bytes {offset}-{} of {size}, the server sent the range {range:?}",
                                size.saturating_sub(1)
                            )));
                        }
                        offset
                    }
                    404 | 410 => {
                        return Err(Error::new(ErrorKind::NotFound, format!("{at}: not on the server")));
                    }
                    s => return Err(Error::new(ErrorKind::Io, format!("{at}: the server answered {s}"))),
                };
                let left = size.saturating_sub(start);
                if let Some(len) = header("content-length") {
                    match len.trim().parse::<u64>() {
                        Ok(n) if n == left => {}
                        _ => {
                            return Err(bad(format!(
                                "the server states a length of {len} bytes where {left} are due \
                                 (the catalog's size {size}, from byte {start})"
                            )));
                        }
                    }
                }
                let etag = match (start, etag) {
                    (0, _) => new_tag,
                    (_, Some(t)) => Some(t.to_string()),
                    (_, None) => new_tag,
                };
                Ok(Opened { start, etag, body: Box::new(resp.into_body().into_reader()) })
            }
            Remote::S3(b) => {
                let o = b.open_from(rel, offset, etag)?;
                Ok(Opened { start: o.start, etag: o.etag, body: Box::new(o.body) })
            }
        }
    }
}

/// The longest ETag kept.
const MAX_ETAG: usize = 256;

/// `bytes FIRST-LAST/COMPLETE` (a complete length `*` is taken as unknown: `u64::MAX`).
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, complete) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let complete = if complete == "*" { u64::MAX } else { complete.parse().ok()? };
    Some((first.parse().ok()?, last.parse().ok()?, complete))
}

fn net_error(at: &str, e: &ureq::Error) -> Error {
    match e {
        ureq::Error::Timeout(_) => Error::new(ErrorKind::Io, format!("{at}: the server stalled ({e})")),
        _ => Error::new(ErrorKind::Io, format!("{at}: {e}")),
    }
}

/// A read error from a body, said plainly: a stall is named as one.
pub fn body_error(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
    {
        format!("the server stalled: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sources_are_file_or_http() {
        assert!(
            matches!(Remote::parse("file:///srv/vm").unwrap(), Remote::Folder(p) if p == Path::new("/srv/vm"))
        );
        let web = Remote::parse("http://127.0.0.1:8080/star/").unwrap();
        assert_eq!(web.key(), "http://127.0.0.1:8080/star");
        assert_eq!(web.location("catalog.json"), "http://127.0.0.1:8080/star/catalog.json");
        assert!(Remote::parse("https://vm.example.org").is_ok());
        assert_eq!(content_range("bytes 10-99/100"), Some((10, 99, 100)));
        assert_eq!(content_range("bytes 10-99/*"), Some((10, 99, u64::MAX)));
        for bad in ["bytes 10-99", "bytes=10-99/100", "bytes a-99/100", "", "bytes 10-/100"] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
        for bad in [
            "",
            "/srv/vm",
            "file://srv",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
            "http://h/?q",
            "s3://b/p",
            "s3://star-vm/../x",
        ] {
            assert_eq!(Remote::parse(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }
}
