//! Writes: uploads and deletions, each with a token ([`crate::auth`]) and
//! each recorded in the audit log ([`crate::audit`]).
//!
//! * `PUT /vm/<VM>/<file>`: the body is the image, stored as `<file>` (a
//!   convention name with an extension) in the VM's folder.
//! * `POST /api/v1/images?vm=VM&os=..&arch=..&bits=..&lib=..&max_size=..&detail=..&ext=..`:
//!   the same, named from the fields given and the content, as `vmrepo add`
//!   names an image from its flags and its file.
//! * `DELETE /vm/<VM>/<file>` and `DELETE /api/v1/images/<VM>/<name>`: `vmrepo rm`.
//!
//! An upload that replaces an image says so: `?replace=1`, or `If-Match`
//! (`*`, or the stored image's `ETag`, its SHA-256, else `412`). Success is
//! `201 Created` with `vmrepo add --json`'s document and a `Location`;
//! deletion `200` with `vmrepo rm --json`'s. Only an image of one file can
//! be uploaded.
//!
//! # How an upload is received
//! Refused before a byte is read (the client's `Expect: 100-continue` is
//! answered with the refusal): a `--read-only` server, a bad path or name,
//! a bad token, a `Content-Encoding`, a malformed digest header, a
//! `Content-Length` over [`crate::Limits::max_upload`] (`413`) or over the
//! free space less what the other uploads announced (`507`), and more
//! uploads at once than [`crate::Limits::max_uploads`] (`503`).
//!
//! The body is then streamed into a new file under `.vmrepo/uploads/`, on
//! the same filesystem as `vm/`: one thread writes it and computes its
//! SHA-256, another its MD5, while the request's task receives the next
//! bytes; memory stays bounded by [`QUEUE`] batches of [`BATCH`] bytes. Once
//! the body is complete the file is fsynced and the digests are checked
//! against `Repr-Digest` or `Content-Digest` (`sha-256=:base64:`, RFC 9530)
//! and `Content-MD5` when the client sent them (a mismatch is `400`). The
//! import is then `vmrepo add --move` of that file ([`vmrepo_repo::add()`]):
//! the content is read and must agree with the name, the file is linked into
//! the transaction's staging folder, and the digests computed on arrival are
//! handed over ([`vmrepo_repo::Prehashed`]) so that the bytes are not read a
//! second time, with the crash-safety of every import.
//!
//! Rolled back, leaving nothing in `vm/` nor under `.vmrepo/`: a body that
//! ends early or fails (the client went away), one over the limit, a body
//! that sends nothing for [`crate::Limits::body_timeout`] (slowloris), a full
//! disk (`507`), a body slower on average than [`crate::Limits::min_rate`]
//! over a period of `body_timeout`, a digest mismatch, a content the import refuses, and the
//! server's shutdown (SIGTERM), which stops the receiving at once and undoes
//! an import not yet committed. A guard removes the file on every path out,
//! a panic included; files left by a crash are removed when the server
//! starts ([`remove_leftovers`]).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::hashing::StreamMd5;
use vmrepo_repo::naming::{NameFields, SourceInfo, build_name};
use vmrepo_repo::{AddOutcome, ErrorKind, Facts, NoProgress, Prehashed};

use crate::audit;
use crate::auth::{self, Grant};
use crate::error::ApiError;
use crate::metrics::Peer;
use crate::paths;
use crate::state::AppState;
use vmrepo_repo::checksum::hex;

/// The folder under `.vmrepo/` that receives uploads.
pub const UPLOADS_DIR: &str = "uploads";
/// Bytes gathered from the body before they are handed to the writing and
/// hashing threads (fewer wake-ups than one hand-over per network read).
pub const BATCH: usize = 1 << 20;
/// Batches queued for each thread at most.
pub const QUEUE: usize = 8;
/// The upload's file starts write-back every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/vm/{*rest}", put(put_file).delete(delete_file))
        .route("/api/v1/images", post(post_image))
        .route("/api/v1/images/{vm}/{name}", delete(delete_image))
}

/// What the audit line of a write says, filled in as the request goes.
struct Audit {
    action: &'static str,
    path: String,
    token: Option<String>,
    /// Whether the request named a token at all (no line for one without).
    presented: bool,
    sha256: Option<String>,
    bytes: Option<u64>,
}

impl Audit {
    fn new(action: &'static str, parts: &Parts) -> Audit {
        let shown: String = parts.uri.path().chars().take(512).filter(|c| !c.is_control()).collect();
        Audit {
            action,
            path: shown,
            token: None,
            presented: parts.headers.contains_key(header::AUTHORIZATION),
            sha256: None,
            bytes: None,
        }
    }
}

/// Runs a write: answers its result, with the challenge on a `401`, after
/// the audit line is written.
async fn answer(
    state: Arc<AppState>,
    parts: &Parts,
    audit: Audit,
    result: Result<Response, ApiError>,
) -> Response {
    let (status, message, mut response) = match result {
        Ok(r) => (r.status(), "ok".to_string(), r),
        Err(e) => (e.status, e.message.clone(), e.into_response()),
    };
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, auth::challenge());
    }
    if audit.presented || audit.token.is_some() {
        let entry = audit::Entry {
            time: audit::now(),
            token: audit.token,
            peer: parts.extensions.get::<Peer>().map_or_else(|| "-".to_string(), |p| p.0.to_string()),
            action: audit.action,
            path: audit.path,
            sha256: audit.sha256,
            bytes: audit.bytes,
            status: status.as_u16(),
            message,
        };
        let log = state.repo.meta_dir().join(audit::AUDIT_FILE);
        let durable = status.is_success();
        let _ = tokio::task::spawn_blocking(move || audit::append(log, &entry, durable)).await;
    }
    response
}

fn read_only() -> ApiError {
    auth::forbidden("this server is read-only (--read-only): it accepts no upload or deletion")
}

/// Checks the token against `vm`, recording who it is.
async fn authorize(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    vm: Vm,
    audit: &mut Audit,
) -> Result<Grant, ApiError> {
    let st = state.clone();
    let headers = headers.clone();
    let r = tokio::task::spawn_blocking(move || st.tokens.authorize(&headers, vm))
        .await
        .map_err(|e| ApiError::internal(format!("a request's task failed: {e}")))?;
    match r {
        Ok(g) => {
            audit.token = Some(g.token.clone());
            Ok(g)
        }
        Err(refusal) => {
            audit.token = refusal.token;
            Err(refusal.error)
        }
    }
}

/// `PUT /vm/<VM>/<file>`.
async fn put_file(State(state): State<Arc<AppState>>, req: Request) -> Response {
    detached(async move {
        let (parts, body) = req.into_parts();
        let mut audit = Audit::new("put", &parts);
        let result = put_inner(&state, &parts, body, &mut audit).await;
        answer(state, &parts, audit, result).await
    })
    .await
}

/// Runs a write in a task of its own: a client that goes away drops the
/// request's future, not the write, which ends (rolled back or committed)
/// and writes its audit line all the same.
async fn detached(write: impl std::future::Future<Output = Response> + Send + 'static) -> Response {
    match tokio::spawn(write).await {
        Ok(r) => r,
        Err(e) => ApiError::internal(format!("a write's task failed: {e}")).into_response(),
    }
}

async fn put_inner(
    state: &Arc<AppState>,
    parts: &Parts,
    body: Body,
    audit: &mut Audit,
) -> Result<Response, ApiError> {
    if state.read_only {
        return Err(read_only());
    }
    let segments = paths::vm_segments(parts.uri.path())?;
    let [vm, file] = segments.as_slice() else {
        return Err(ApiError::bad_request(
            "PUT /vm/VM/FILE is expected: an image of several files cannot be uploaded",
        ));
    };
    let vm = Vm::from_user(vm)?;
    let name = ImageName::parse_file(file)?;
    audit.path = format!("vm/{}/{name}", vm.as_str());
    authorize(state, &parts.headers, vm, audit).await?;
    let replace = replace_asked(parts)?;
    if replace == Replace::No {
        refuse_taken(state, vm, &name).await?;
    }
    let received = receive(state, &parts.headers, body, audit).await?;
    let out = import(state, received, vm, Naming::Given(name), replace).await?;
    Ok(created(&out))
}

/// A name already taken is said before the body is received (the import
/// checks again under the lock).
async fn refuse_taken(state: &Arc<AppState>, vm: Vm, name: &ImageName) -> Result<(), ApiError> {
    let spec = format!("{}/{}", vm.as_str(), name.stem());
    let taken = state
        .with_catalog(move |catalog| match catalog.resolve(&spec) {
            Ok(r) => Ok(Some(r.path)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await?;
    match taken {
        None => Ok(()),
        Some(path) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already-exists",
            5,
            format!("{path} is stored under that name: add ?replace=1 (or If-Match) to replace it"),
        )),
    }
}

/// `POST /api/v1/images?vm=..&os=..`: named from the fields and the content.
async fn post_image(State(state): State<Arc<AppState>>, req: Request) -> Response {
    detached(async move {
        let (parts, body) = req.into_parts();
        let mut audit = Audit::new("post", &parts);
        let result = post_inner(&state, &parts, body, &mut audit).await;
        answer(state, &parts, audit, result).await
    })
    .await
}

async fn post_inner(
    state: &Arc<AppState>,
    parts: &Parts,
    body: Body,
    audit: &mut Audit,
) -> Result<Response, ApiError> {
    if state.read_only {
        return Err(read_only());
    }
    let (vm, fields) = post_params(parts.uri.query().unwrap_or(""))?;
    audit.path = format!("vm/{}/", vm.as_str());
    authorize(state, &parts.headers, vm, audit).await?;
    let replace = replace_asked(parts)?;
    let received = receive(state, &parts.headers, body, audit).await?;
    let out = import(state, received, vm, Naming::Fields(Box::new(fields)), replace).await?;
    audit.path = out.image.path.clone();
    Ok(created(&out))
}

/// The VM and the name fields of a `POST`'s query string.
fn post_params(query: &str) -> Result<(Vm, NameFields), ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded_pairs(query)?;
    let mut vm = None;
    let mut f = NameFields::default();
    for (k, v) in params {
        let slot = match k.as_str() {
            "vm" => {
                vm = Some(Vm::from_user(&v)?);
                continue;
            }
            "replace" => continue,
            "bits" => {
                f.bits = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request(format!("bits={v}: 32 or 64 is expected")))?,
                );
                continue;
            }
            "os" => &mut f.os,
            "arch" => &mut f.arch,
            "lib" => &mut f.lib,
            "max_size" | "max-size" | "maxsize" => &mut f.max_size,
            "detail" => &mut f.detail,
            "ext" => &mut f.ext,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}: vm, os, arch, bits, lib, max_size, detail, ext and replace are known"
                )));
            }
        };
        *slot = Some(v);
    }
    let vm =
        vm.ok_or_else(|| ApiError::bad_request("the vm parameter is required (vm=kvm, vm=vmware ...)"))?;
    Ok((vm, f))
}

/// The pairs of a query string, percent-decoded (`+` is a space).
fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| -> Result<String, ApiError> {
        let s = s.replace('+', " ");
        String::from_utf8(percent_encoding::percent_decode_str(&s).collect())
            .map_err(|_| ApiError::bad_request("the query string is not UTF-8"))
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Whether the client asks to replace an image stored under the name, and
/// on what condition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Replace {
    No,
    /// `?replace=1` or `If-Match: *`.
    Any,
    /// `If-Match: "<sha256>"`: only the image with that SHA-256.
    IfSha(Vec<String>),
}

fn replace_asked(parts: &Parts) -> Result<Replace, ApiError> {
    if let Some(v) = parts.headers.get(header::IF_MATCH) {
        let v = v.to_str().map_err(|_| ApiError::bad_request("If-Match is not text"))?;
        let tags: Vec<String> =
            v.split(',').map(|t| t.trim().trim_matches('"').to_ascii_lowercase()).collect();
        if tags.iter().any(|t| t == "*") {
            return Ok(Replace::Any);
        }
        return Ok(Replace::IfSha(tags));
    }
    let pairs = serde_urlencoded_pairs(parts.uri.query().unwrap_or(""))?;
    match pairs.iter().rev().find(|(k, _)| k == "replace").map(|(_, v)| v.as_str()) {
        None | Some("0" | "false" | "no") => Ok(Replace::No),
        Some("" | "1" | "true" | "yes") => Ok(Replace::Any),
        Some(v) => Err(ApiError::bad_request(format!("replace={v}: 1 or 0 is expected"))),
    }
}

fn created(out: &AddOutcome) -> Response {
    let mut r = crate::api::json_response(&HeaderMap::new(), StatusCode::CREATED, out);
    let location = format!("/{}", out.image.path);
    let location = percent_encoding::utf8_percent_encode(&location, LOCATION_SET).to_string();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Bytes escaped in a `Location`: controls, space and what a URL reserves, not `/`.
const LOCATION_SET: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'?').add(b'<').add(b'>');

/// `DELETE /vm/<VM>/<file>`: the image whose file that is.
async fn delete_file(State(state): State<Arc<AppState>>, req: Request) -> Response {
    detached(async move {
        let (parts, _body) = req.into_parts();
        let mut audit = Audit::new("delete", &parts);
        let result = async {
            if state.read_only {
                return Err(read_only());
            }
            let segments = paths::vm_segments(parts.uri.path())?;
            let [vm, file] = segments.as_slice() else {
                return Err(ApiError::bad_request("DELETE /vm/VM/FILE is expected"));
            };
            let vm = Vm::from_user(vm)?;
            delete_inner(&state, &parts, vm, file.clone(), true, &mut audit).await
        }
        .await;
        answer(state, &parts, audit, result).await
    })
    .await
}

/// `DELETE /api/v1/images/<VM>/<name>`: as `vmrepo rm VM/NAME`.
async fn delete_image(
    State(state): State<Arc<AppState>>,
    UrlPath((vm, name)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    detached(async move {
        let (parts, _body) = req.into_parts();
        let mut audit = Audit::new("delete", &parts);
        let result = async {
            if state.read_only {
                return Err(read_only());
            }
            if vm.contains('/') || name.contains('/') || vm.starts_with('.') || name.starts_with('.') {
                return Err(ApiError::bad_request("a VM and an image name are expected"));
            }
            let vm = Vm::from_user(&vm)?;
            delete_inner(&state, &parts, vm, name.clone(), false, &mut audit).await
        }
        .await;
        answer(state, &parts, audit, result).await
    })
    .await
}

async fn delete_inner(
    state: &Arc<AppState>,
    parts: &Parts,
    vm: Vm,
    name: String,
    file_only: bool,
    audit: &mut Audit,
) -> Result<Response, ApiError> {
    audit.path = format!("vm/{}/{name}", vm.as_str());
    authorize(state, &parts.headers, vm, audit).await?;
    let st = state.clone();
    let (out, sha) = state
        .with_catalog(move |catalog| {
            let spec = format!("{}/{name}", vm.as_str());
            let rec = catalog.resolve(&spec)?;
            if file_only && rec.file != name {
                return Err(ApiError::not_found(format!("vm/{}/{name}: no such image file", vm.as_str())));
            }
            let out = vmrepo_repo::remove(
                catalog,
                &format!("{}/{}", vm.as_str(), rec.file),
                &NoProgress,
                &st.stopping,
            )?;
            Ok((out, rec.sha256))
        })
        .await?;
    audit.sha256 = sha;
    Ok(crate::api::json_response(&HeaderMap::new(), StatusCode::OK, &out))
}

/// Digests the client says the body has.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    sha256: Option<[u8; 32]>,
    md5: Option<[u8; 16]>,
}

impl Expected {
    /// From `Repr-Digest`, `Content-Digest` (RFC 9530; other algorithms are
    /// ignored, as it allows) and `Content-MD5` (RFC 1864).
    fn from_headers(headers: &HeaderMap) -> Result<Expected, ApiError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Expected::default();
        for h in ["repr-digest", "content-digest"] {
            for v in headers.get_all(h) {
                let v = v.to_str().map_err(|_| ApiError::bad_request(format!("{h} is not text")))?;
                for member in v.split(',') {
                    let Some((alg, value)) = member.split_once('=') else {
                        return Err(ApiError::bad_request(format!("{h}: alg=:base64: is expected")));
                    };
                    if !alg.trim().eq_ignore_ascii_case("sha-256") {
                        continue;
                    }
                    let value = value.trim().strip_prefix(':').and_then(|s| s.strip_suffix(':'));
                    let digest = value
                        .and_then(|s| b64.decode(s).ok())
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .ok_or_else(|| {
                            ApiError::bad_request(format!("{h}: sha-256=:<32 bytes in base64>: is expected"))
                        })?;
                    if out.sha256.is_some_and(|s| s != digest) {
                        return Err(ApiError::bad_request(format!("{h}: two different SHA-256 digests")));
                    }
                    out.sha256 = Some(digest);
                }
            }
        }
        if let Some(v) = headers.get("content-md5") {
            let digest = v
                .to_str()
                .ok()
                .and_then(|s| b64.decode(s.trim()).ok())
                .and_then(|d| <[u8; 16]>::try_from(d).ok())
                .ok_or_else(|| ApiError::bad_request("Content-MD5: 16 bytes in base64 are expected"))?;
            out.md5 = Some(digest);
        }
        Ok(out)
    }
}

/// The upload's file under `.vmrepo/uploads/`: removed when this is dropped,
/// whatever happened (the import, when it succeeds, has linked it into place).
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(dir: &Path) -> Result<(TempFile, File), ApiError> {
        fs::create_dir_all(dir)
            .map_err(|e| ApiError::internal(format!("cannot create the uploads folder: {e}")))?;
        let path = dir.join(format!("upload-{}.part", vmrepo_repo::fsutil::unique_id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| ApiError::internal(format!("cannot create an upload file: {e}")))?;
        Ok((TempFile { path }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", self.path.display()),
        }
    }
}

/// Removes the upload files a crashed server left: those of a process that
/// no longer runs (the file name holds the process id).
pub fn remove_leftovers(repo: &vmrepo_repo::Repository) {
    let dir = repo.meta_dir().join(UPLOADS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else { return };
    let id = vmrepo_repo::fsutil::unique_id();
    let host = id.split('-').next().unwrap_or("").to_string();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // upload-<host hash>-<pid>-<nanos>-<counter>.part: only this host's
        // processes can be asked whether they live (the tree may be shared).
        let mut fields = name.strip_prefix("upload-").unwrap_or("").split('-');
        if fields.next() != Some(host.as_str()) {
            continue;
        }
        let pid = fields.next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| {
            p == std::process::id() as i32
                || rustix::process::Pid::from_raw(p)
                    .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
        });
        if name.ends_with(".part") && !alive {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Counts an upload in flight and keeps its announced bytes reserved.
struct InFlight {
    state: Arc<AppState>,
    reserved: u64,
}

impl InFlight {
    fn new(state: &Arc<AppState>, reserved: u64) -> InFlight {
        state.metrics.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        state.reserved.fetch_add(reserved, Ordering::Relaxed);
        InFlight { state: state.clone(), reserved }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.metrics.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state.reserved.fetch_sub(self.reserved, Ordering::Relaxed);
    }
}

/// A body received whole: its file and its digests.
struct Received {
    temp: TempFile,
    prehashed: Prehashed,
    /// Held until the import ends: the upload still counts.
    _slot: tokio::sync::OwnedSemaphorePermit,
    _in_flight: InFlight,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid-input",
        6,
        format!("the upload is larger than this server accepts ({max} bytes)"),
    )
}

fn no_space(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "no-space", 8, message)
}

fn write_failed(e: &std::io::Error) -> ApiError {
    let full = e.raw_os_error().is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT || c == libc::EFBIG);
    if full {
        no_space("the disk is full: the upload was rolled back")
    } else {
        ApiError::internal(format!("cannot write the upload: {e}"))
    }
}

/// Receives the body into a file under `.vmrepo/uploads/`, hashing it as it
/// arrives, and checks it against the digests the client sent.
async fn receive(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    audit: &mut Audit,
) -> Result<Received, ApiError> {
    if let Some(ce) = headers.get(header::CONTENT_ENCODING)
        && !ce.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid-input",
            6,
            "a Content-Encoding: send the image's bytes as they are",
        ));
    }
    let expected = Expected::from_headers(headers)?;
    let max = state.limits.max_upload;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?,
        ),
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let slot = state.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            9,
            format!(
                "{} uploads are under way, as many as this server takes: try again later",
                state.limits.max_uploads
            ),
        )
    })?;
    let in_flight = InFlight::new(state, declared.unwrap_or(0));
    let vm_root = state.repo.vm_root();
    let uploads = state.repo.meta_dir().join(UPLOADS_DIR);
    let (free, created) = tokio::task::spawn_blocking(move || {
        let free = vmrepo_repo::fsutil::free_space(&vm_root);
        (free, TempFile::create(&uploads))
    })
    .await
    .map_err(|e| ApiError::internal(format!("a request's task failed: {e}")))?;
    let free = free?;
    if let Some(n) = declared {
        // The others' announced bytes, this one's excluded (it is counted in `reserved`).
        let others = state.reserved.load(Ordering::Relaxed).saturating_sub(n);
        if n.saturating_add(others) > free {
            return Err(no_space(format!(
                "the upload ({n} bytes) does not fit: {free} bytes are free, {others} of them promised to other uploads"
            )));
        }
    }
    let (temp, file) = created?;

    let aborted = Arc::new(AtomicBool::new(false));
    let (to_writer, mut writer_rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(QUEUE);
    let (to_md5, mut md5_rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(QUEUE);
    let stop_writing = aborted.clone();
    // Write-back is started as the file grows, from a thread of its own (on
    // a busy disk the call blocks), so that the final fsync has little left.
    let (to_writeback, writeback_rx) = std::sync::mpsc::channel::<(Arc<File>, u64, u64)>();
    tokio::task::spawn_blocking(move || {
        while let Ok((f, offset, len)) = writeback_rx.recv() {
            vmrepo_repo::hashing::start_writeback(&f, offset, len);
        }
    });
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(Arc<File>, [u8; 32])> {
        let file = Arc::new(file);
        let mut sha = Sha256::new();
        let (mut written, mut flushed) = (0u64, 0u64);
        while let Some(batch) = writer_rx.blocking_recv() {
            for b in batch.iter() {
                (&*file).write_all(b)?;
                sha.update(b);
                written = written.saturating_add(u64::try_from(b.len()).unwrap_or(u64::MAX));
            }
            if written - flushed >= WRITEBACK_STEP {
                let _ = to_writeback.send((file.clone(), flushed, written - flushed));
                flushed = written;
            }
        }
        drop(to_writeback);
        if !stop_writing.load(Ordering::Relaxed) {
            file.sync_all()?;
        }
        Ok((file, sha.finalize().into()))
    });
    let md5 = tokio::task::spawn_blocking(move || {
        let mut md5 = StreamMd5::new();
        while let Some(batch) = md5_rx.blocking_recv() {
            for b in batch.iter() {
                md5.update(b);
            }
        }
        md5.finalize()
    });

    let streamed = stream_body(state, body, declared, &to_writer, &to_md5).await;
    drop(to_writer);
    drop(to_md5);
    if streamed.is_err() {
        aborted.store(true, Ordering::Relaxed);
    }
    let written = writer.await.map_err(|e| ApiError::internal(format!("the upload's writer failed: {e}")));
    let md5 = md5.await.map_err(|e| ApiError::internal(format!("the upload's hasher failed: {e}")));
    let total = match streamed {
        Err(e) => {
            // A write error is the cause when the writer stopped first.
            if let Ok(Err(we)) = &written {
                return Err(write_failed(we));
            }
            return Err(e);
        }
        Ok(n) => n,
    };
    let (file, sha256) = written?.map_err(|e| write_failed(&e))?;
    let md5 = md5?;
    // What arrived, in the audit line whether or not it is stored.
    audit.sha256 = Some(hex(&sha256));
    audit.bytes = Some(total);
    if let Some(want) = expected.sha256
        && want != sha256
    {
        return Err(ApiError::bad_request(format!(
            "the body's SHA-256 is {}, the digest header says {}: nothing was stored",
            hex(&sha256),
            hex(&want)
        )));
    }
    if let Some(want) = expected.md5
        && want != md5
    {
        return Err(ApiError::bad_request(format!(
            "the body's MD5 is {}, Content-MD5 says {}: nothing was stored",
            hex(&md5),
            hex(&want)
        )));
    }
    let md = file.metadata().map_err(|e| ApiError::internal(format!("cannot stat the upload: {e}")))?;
    if md.len() != total {
        return Err(ApiError::internal("the upload's file is not the length received"));
    }
    let prehashed =
        Prehashed { md5, sha256, ino: md.ino(), len: md.len(), mtime_ns: vmrepo_repo::fsutil::mtime_ns(&md) };
    Ok(Received { temp, prehashed, _slot: slot, _in_flight: in_flight })
}

/// Hands the body's bytes to the writer and the MD5 thread in batches.
/// Returns the bytes received.
async fn stream_body(
    state: &Arc<AppState>,
    mut body: Body,
    declared: Option<u64>,
    to_writer: &tokio::sync::mpsc::Sender<Arc<Vec<Bytes>>>,
    to_md5: &tokio::sync::mpsc::Sender<Arc<Vec<Bytes>>>,
) -> Result<u64, ApiError> {
    let max = state.limits.max_upload;
    let idle = state.limits.body_timeout;
    let mut stop = state.stop.subscribe();
    let mut total: u64 = 0;
    // Bytes since the current window of `idle` began: at least `min_rate`
    // bytes a second on average over each, or the upload is a slowloris.
    let mut window = (tokio::time::Instant::now(), 0u64);
    let window_min = u64::try_from(u128::from(state.limits.min_rate).saturating_mul(idle.as_millis()) / 1000)
        .unwrap_or(u64::MAX);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0usize;
    let gone = || ApiError::internal("the writer stopped");
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(idle, body.frame()) => match f {
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "interrupted",
                        130,
                        format!("no byte of the upload arrived for {} s: it was rolled back", idle.as_secs()),
                    ));
                }
                Ok(f) => f,
            },
            _ = stop.wait_for(|s| *s) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "interrupted",
                    130,
                    "the server is shutting down: the upload was rolled back",
                ));
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("the upload ended early: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
        total = total.checked_add(n).ok_or_else(|| too_large(max))?;
        if total > max {
            return Err(too_large(max));
        }
        if declared.is_some_and(|d| total > d) {
            return Err(ApiError::bad_request("the body is longer than its Content-Length"));
        }
        state.metrics.bytes_received.fetch_add(n, Ordering::Relaxed);
        window.1 = window.1.saturating_add(n);
        if window.0.elapsed() >= idle {
            if window.1 < window_min {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "interrupted",
                    130,
                    format!(
                        "the upload arrives at less than {} bytes a second: it was rolled back",
                        state.limits.min_rate
                    ),
                ));
            }
            window = (tokio::time::Instant::now(), 0);
        }
        batch_len = batch_len.saturating_add(data.len());
        batch.push(data);
        if batch_len >= BATCH {
            let b = Arc::new(std::mem::take(&mut batch));
            batch_len = 0;
            to_md5.send(b.clone()).await.map_err(|_| gone())?;
            to_writer.send(b).await.map_err(|_| gone())?;
        }
    }
    if declared.is_some_and(|d| total != d) {
        return Err(ApiError::bad_request("the body is shorter than its Content-Length"));
    }
    if !batch.is_empty() {
        let b = Arc::new(batch);
        to_md5.send(b.clone()).await.map_err(|_| gone())?;
        to_writer.send(b).await.map_err(|_| gone())?;
    }
    Ok(total)
}

/// How the upload is named.
enum Naming {
    /// By the request's path.
    Given(ImageName),
    /// From these fields and the content (`POST`).
    Fields(Box<NameFields>),
}

/// `vmrepo add --move` of the received file.
async fn import(
    state: &Arc<AppState>,
    received: Received,
    vm: Vm,
    naming: Naming,
    replace: Replace,
) -> Result<AddOutcome, ApiError> {
    let st = state.clone();
    state
        .with_catalog(move |catalog| {
            // Dropped when the import ends, whatever the client does meanwhile.
            let received = received;
            let path = received.temp.path().to_path_buf();
            let shown = path.display().to_string();
            let scrub = |e: vmrepo_repo::Error| -> ApiError {
                let mut a = ApiError::from(e);
                a.message =
                    a.message.replace(&shown, "the upload").replace("pass --replace", "add ?replace=1");
                a
            };
            let content = vmrepo_repo::content::read(&path).map_err(scrub)?;
            let name = match naming {
                Naming::Given(n) => n,
                Naming::Fields(f) => {
                    let info =
                        SourceInfo { path: &path, is_folder: false, content: Some(&content), force: false };
                    build_name(&f, Some(&info)).map_err(scrub)?
                }
            };
            let replace = match &replace {
                Replace::No => false,
                Replace::Any => true,
                Replace::IfSha(tags) => {
                    let spec = format!("{}/{name}", vm.as_str());
                    let current = match catalog.resolve(&spec) {
                        Ok(r) => r.sha256,
                        Err(e) if e.kind() == ErrorKind::NotFound => None,
                        Err(e) => return Err(e.into()),
                    };
                    if !current.is_some_and(|c| tags.contains(&c)) {
                        return Err(ApiError::new(
                            StatusCode::PRECONDITION_FAILED,
                            "already-exists",
                            5,
                            format!(
                                "vm/{}/{name} is not the image If-Match names: nothing was stored",
                                vm.as_str()
                            ),
                        ));
                    }
                    true
                }
            };
            vmrepo_repo::add(
                catalog,
                vmrepo_repo::AddRequest {
                    source: &path,
                    vm,
                    name,
                    facts: Facts::default(),
                    notes: None,
                    replace,
                    move_source: true,
                    content: Some(content),
                    force: false,
                    prehashed: Some(received.prehashed),
                    progress: &NoProgress,
                    cancel: &st.stopping,
                },
            )
            .map_err(scrub)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_headers() {
        let mut h = HeaderMap::new();
        let sha = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD;
        h.insert(
            "repr-digest",
            HeaderValue::from_str(&format!("sha-512=:AAAA:, sha-256=:{}:", b64.encode(sha))).unwrap(),
        );
        h.insert("content-md5", HeaderValue::from_str(&b64.encode([1u8; 16])).unwrap());
        let e = Expected::from_headers(&h).unwrap();
        assert_eq!(e.sha256, Some(sha));
        assert_eq!(e.md5, Some([1u8; 16]));
        for bad in ["sha-256=abc", "sha-256=:AAAA:", "nonsense"] {
            let mut h = HeaderMap::new();
            h.insert("content-digest", HeaderValue::from_static(bad));
            assert!(Expected::from_headers(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn post_parameters() {
        let (vm, f) = post_params("vm=kvm&os=sl5.3&bits=64&max-size=8GB&detail=a%20b").unwrap();
        assert_eq!(vm, Vm::Kvm);
        assert_eq!(f.os.as_deref(), Some("sl5.3"));
        assert_eq!(f.bits, Some(64));
        assert_eq!(f.max_size.as_deref(), Some("8GB"));
        assert_eq!(f.detail.as_deref(), Some("a b"));
        assert!(post_params("os=sl5.3").is_err());
        assert!(post_params("vm=kvm&colour=red").is_err());
        assert!(post_params("vm=kvm&bits=lots").is_err());
    }
}
