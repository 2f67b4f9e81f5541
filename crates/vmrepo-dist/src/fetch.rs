//! Where `pull` reads from: a published folder (`file://`), a web server
//! (`http://`, `https://`) or an S3 bucket (`s3://bucket/prefix`, [`crate::s3`]),
//! behind one interface that fetches a small file
//! whole, with a cap, or opens a large one from an offset.
//!
//! Resuming asks the server for `Range: bytes=N-` only `If-Range` the
//! entity is still the one the first attempt saw (its strong ETag); any
//! other answer than 206 for exactly that range starts again from zero. From
//! S3 the same: a ranged GET `If-Match` the ETag the first attempt saw.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may stay silent, before the answer or within the body:
/// a stalled transfer fails (and is resumed by the next pull) instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// or `s3://bucket[/prefix]` (the client's settings from the AWS variables).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for anything else.
    pub fn parse(source: &str) -> Result<Remote> {
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
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("pull source {e}")))?;
            return Ok(Remote::S3(Arc::new(bucket)));
        }
        let host = source.strip_prefix("http://").or_else(|| source.strip_prefix("https://"));
        match host {
            Some(h) if !h.is_empty() && !h.starts_with('/') && !source.contains(['?', '#']) => {
                let config = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_connect(Some(CONNECT_TIMEOUT))
                    .timeout_recv_response(Some(READ_TIMEOUT))
                    .timeout_recv_body(None)
                    .timeout_per_read(Some(READ_TIMEOUT))
                    .max_redirects(5)
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

    /// Opens `rel` to read from `offset`, if `etag` still names it; else from 0.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it is not there; [`ErrorKind::Io`] for a
    /// network error or an unexpected answer.
    pub fn open_from(&self, rel: &str, offset: u64, etag: Option<&str>) -> Result<Opened> {
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
                let resuming = match etag {
                    Some(tag) if offset > 0 => {
                        req = req.header("Range", format!("bytes={offset}-")).header("If-Range", tag);
                        true
                    }
                    _ => false,
                };
                let resp = req.call().map_err(|e| net_error(&at, &e))?;
                let header =
                    |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                // Only a strong validator may resume (RFC 9110, If-Range).
                let new_tag = header("etag").filter(|t| t.starts_with('"'));
                let start = match resp.status().as_u16() {
                    200 => 0,
                    206 if resuming => {
                        let range = header("content-range").unwrap_or_default();
                        if !range.starts_with(&format!("bytes {offset}-")) {
                            return Err(Error::new(
                                ErrorKind::Io,
                                format!("{at}: asked for bytes from {offset}, the server sent {range:?}"),
                            ));
                        }
                        offset
                    }
                    404 | 410 => {
                        return Err(Error::new(ErrorKind::NotFound, format!("{at}: not on the server")));
                    }
                    s => return Err(Error::new(ErrorKind::Io, format!("{at}: the server answered {s}"))),
                };
                let etag = if start > 0 { etag.map(str::to_string) } else { new_tag };
                Ok(Opened { start, etag, body: Box::new(resp.into_body().into_reader()) })
            }
            Remote::S3(b) => {
                let o = b.open_from(rel, offset, etag)?;
                Ok(Opened { start: o.start, etag: o.etag, body: Box::new(o.body) })
            }
        }
    }
}

fn net_error(at: &str, e: &ureq::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{at}: {e}"))
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
