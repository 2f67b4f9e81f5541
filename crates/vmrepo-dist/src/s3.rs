//! An S3 bucket (AWS, Ceph RGW, MinIO, SeaweedFS) as `s3://bucket/prefix`,
//! for publish ([`crate::store`]) and pull ([`crate::fetch`]).
//!
//! The client is the `object_store` crate, which is async: every call here
//! runs it to completion on a small current-thread tokio runtime that the
//! [`Bucket`] owns, so that the library stays blocking like the rest of
//! vmrepo. Credentials, region and endpoint come from the standard AWS
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` or `AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`, and `AWS_CA_BUNDLE` for a CA to trust beside the
//! system's); requests are path-style (`endpoint/bucket/key`), as
//! MinIO, SeaweedFS and Ceph expect; plain `http://` only to an endpoint the
//! user gave as such (or with `AWS_ALLOW_HTTP=true`).
//!
//! Images are uploaded in parts of [`PART_SIZE`], [`PARTS_IN_FLIGHT`] at a
//! time (so at most that many parts in memory), read in order and hashed, and the upload is completed only when
//! the SHA-256 is the recorded one: until then no object exists under the
//! name. An object that already has the size and the SHA-256 (kept as the
//! object's metadata `x-amz-meta-sha256`) is not sent again. A multipart
//! upload under way is recorded in the repository (`.vmrepo/publish-s3/`):
//! a publish killed in the middle is resumed by the next one, part by part,
//! each kept part proved by its ETag (the MD5 of its bytes) against the
//! file read again.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{BoxStream, FuturesUnordered};
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, Certificate, ClientConfigKey, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vmrepo_repo::checksum::hex;
use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

use crate::place::Placed;

/// The scheme of a bucket's URL.
pub const SCHEME: &str = "s3://";
/// The size of each part of a multipart upload (S3 allows 5 MiB to 5 GiB,
/// and at most 10,000 parts: 64 MiB parts reach 625 GiB). An image smaller
/// than one part is sent by one PUT.
pub const PART_SIZE: u64 = 64 << 20;
/// The variable that sets another part size, in MiB (5 to 5120): for tests
/// and for links where a smaller retry unit pays.
pub const PART_SIZE_ENV: &str = "VMREPO_S3_PART_MIB";
/// The user metadata (`x-amz-meta-sha256`) that holds an image's SHA-256.
pub const SHA256_META: &str = "sha256";
/// How many parts of an image are sent at a time (and so, at most, held in
/// memory) unless [`PARTS_ENV`] says otherwise.
pub const PARTS_IN_FLIGHT: usize = 4;
/// The variable that sets how many parts are sent at a time (1 to 64).
pub const PARTS_ENV: &str = "VMREPO_S3_PARTS";
/// How often an upload under way looks for an interruption.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// The variable naming a PEM file of CA certificates to trust beside the
/// system's (the AWS CLI's and boto3's convention).
pub const CA_BUNDLE_ENV: &str = "AWS_CA_BUNDLE";
/// The largest CA bundle read (Mozilla's whole bundle is about 220 KB).
const MAX_CA_BUNDLE: u64 = 16 << 20;
/// The most parts S3 takes in one upload.
const MAX_PARTS: u64 = 10_000;
/// How long connecting may take, and a server may stay silent.
const CONNECT_TIMEOUT: &str = "30s";
const READ_TIMEOUT: &str = "60s";
/// A whole request's bound: a part or an image body, on a slow link.
const REQUEST_TIMEOUT: &str = "6h";
/// The largest upload record read back.
const MAX_STATE_FILE: u64 = 1 << 20;

/// A bucket and a prefix in it, with the client that reaches them.
pub struct Bucket {
    rt: tokio::runtime::Runtime,
    store: AmazonS3,
    bucket: String,
    /// Without a leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.url())
    }
}

/// What a HEAD says of an object.
#[derive(Clone, Debug)]
pub struct Head {
    pub size: u64,
    pub etag: Option<String>,
    /// `x-amz-meta-sha256`, when set.
    pub sha256: Option<String>,
}

/// An object opened for reading from some offset (see [`crate::fetch::Opened`]).
pub struct OpenedObject {
    pub start: u64,
    pub etag: Option<String>,
    pub body: ObjectReader,
}

/// `s3://bucket/prefix` split into the bucket and the prefix.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a bucket name S3 does not allow (3 to 63
/// lower-case letters, digits, `.` and `-`), or a prefix with an empty,
/// `.` or `..` segment.
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::new(ErrorKind::InvalidInput, format!("{url:?}: {why}"));
    let rest = url.strip_prefix(SCHEME).ok_or_else(|| bad("s3://bucket[/prefix] is expected"))?;
    if url.len() > 1024 || !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['?', '#', '\\']) {
        return Err(bad("s3://bucket[/prefix] of printable characters without spaces is expected"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(bad("not a bucket name (3 to 63 lower-case letters, digits, '.' and '-')"));
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() && !prefix.split('/').all(|p| !p.is_empty() && p != "." && p != "..") {
        return Err(bad("the prefix has an empty, '.' or '..' part"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl Bucket {
    /// The client for `url` (`s3://bucket[/prefix]`), from the AWS variables.
    /// Nothing is sent until the first request, except, to an `https://`
    /// endpoint, one handshake that proves its certificate trusted.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad URL, a bad variable, or an
    /// `http://` endpoint refused; [`ErrorKind::Io`] when no runtime can be
    /// made, or an `https://` endpoint's certificate is not trusted.
    pub fn open(url: &str) -> Result<Bucket> {
        let (bucket, prefix) = parse_url(url)?;
        // reqwest is built without a default crypto provider: rustls's ring one,
        // as ureq uses. An error only says one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()));
        // A private CA's certificates, trusted beside the system's, as the
        // AWS CLI and boto3 take them.
        let ca = ca_bundle()?;
        let mut options = ClientOptions::new();
        for c in ca.iter().flat_map(|(_, pem)| Certificate::from_pem_bundle(pem).unwrap_or_default()) {
            options = options.with_root_certificate(c);
        }
        // As AmazonS3Builder::from_env, over these client options.
        let mut builder = AmazonS3Builder::new().with_client_options(options);
        for (k, v) in std::env::vars_os() {
            if let (Some(k), Some(v)) = (k.to_str(), v.to_str())
                && k.starts_with("AWS_")
                && let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(key, v);
            }
        }
        let mut builder = builder
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), CONNECT_TIMEOUT)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout), READ_TIMEOUT)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), REQUEST_TIMEOUT)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::UserAgent),
                concat!("vmrepo/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e.trim_end_matches('/'));
            // Plain HTTP only where the user named it.
            if e.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder
            .build()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{url}: cannot reach S3: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the S3 client: {e}")))?;
        let b = Bucket { rt, store, bucket, prefix };
        if let Some(e) = endpoint.as_deref().filter(|e| e.starts_with("https://")) {
            b.check_tls(e, ca.as_ref().map(|(_, pem)| pem.as_slice()))?;
        }
        Ok(b)
    }

    /// Whether `endpoint`'s TLS certificate is trusted: one handshake, so
    /// that an untrusted one is refused at once with one clear line (the S3
    /// client would retry it for a minute, then say "error sending
    /// request"). Other failures are left to the first real request.
    fn check_tls(&self, endpoint: &str, ca: Option<&[u8]>) -> Result<()> {
        let certs = ca.map(|pem| reqwest::Certificate::from_pem_bundle(pem).unwrap_or_default());
        // The client's connector is made inside the runtime.
        let _in_rt = self.rt.enter();
        let client = reqwest::Client::builder()
            .tls_certs_merge(certs.unwrap_or_default())
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the S3 client: {e}")))?;
        let Err(e) = self.rt.block_on(client.head(endpoint).send()) else { return Ok(()) };
        let mut why = None;
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cause {
            let said = c.to_string();
            if said.contains("certificate") {
                why = Some(said);
            }
            cause = c.source();
        }
        match why {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{endpoint}: the server's TLS certificate is not trusted ({why}): add its CA to the \
                     system's trust store, or set {CA_BUNDLE_ENV} to the CA's PEM file"
                ),
            )),
        }
    }

    /// `s3://bucket/prefix`, as given without a trailing `/`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("{SCHEME}{}", self.bucket)
        } else {
            format!("{SCHEME}{}/{}", self.bucket, self.prefix)
        }
    }

    /// Where `rel` is, for messages.
    pub fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url())
    }

    /// The key of `rel` (a relative path of plain names).
    fn key(&self, rel: &str) -> Result<Path> {
        let full = if self.prefix.is_empty() { rel.to_string() } else { format!("{}/{rel}", self.prefix) };
        Path::parse(&full).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{full:?}: {e}")))
    }

    fn error(&self, rel: &str, what: &str, e: &object_store::Error) -> Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        // object_store's messages nest their sources; the first line says it.
        let said = e.to_string();
        Error::new(
            kind,
            format!("{}: cannot {what}: {}", self.location(rel), said.lines().next().unwrap_or("")),
        )
    }

    /// The object's size, ETag and recorded SHA-256; `None` when absent.
    ///
    /// # Errors
    /// A network or permission error naming the object.
    pub fn head(&self, rel: &str) -> Result<Option<Head>> {
        let key = self.key(rel)?;
        let got =
            self.rt.block_on(self.store.get_opts(&key, GetOptions { head: true, ..Default::default() }));
        match got {
            Ok(r) => Ok(Some(Head {
                size: r.meta.size,
                etag: r.meta.e_tag.clone(),
                sha256: r.attributes.get(&Attribute::Metadata(SHA256_META.into())).map(|v| v.to_string()),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(rel, "read", &e)),
        }
    }

    /// The whole object `rel`, at most `cap` bytes; `None` when absent.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when it is larger than `cap`; network errors.
    pub fn get_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel)?;
        let too_big = || {
            Error::new(ErrorKind::InvalidInput, format!("{}: larger than {cap} bytes", self.location(rel)))
        };
        self.rt.block_on(async {
            let r = match self.store.get_opts(&key, GetOptions::default()).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(rel, "read", &e)),
            };
            if r.meta.size > cap {
                return Err(too_big());
            }
            // The size is the server's word: a capacity from it is bounded.
            let mut out = Vec::with_capacity(usize::try_from(r.meta.size.min(1 << 20)).unwrap_or(0));
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error(rel, "read", &e))?;
                if (out.len() as u64).saturating_add(chunk.len() as u64) > cap {
                    return Err(too_big());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Some(out))
        })
    }

    /// Opens `rel` to read from `offset` if its ETag is still `etag`; else from 0.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when absent; network errors.
    pub fn open_from(self: &Arc<Self>, rel: &str, offset: u64, etag: Option<&str>) -> Result<OpenedObject> {
        let key = self.key(rel)?;
        if let Some(tag) = etag.filter(|_| offset > 0) {
            let opts = GetOptions {
                if_match: Some(tag.to_string()),
                range: Some(GetRange::Offset(offset)),
                ..Default::default()
            };
            match self.rt.block_on(self.store.get_opts(&key, opts)) {
                Ok(r) if r.range.start == offset => {
                    return Ok(OpenedObject {
                        start: offset,
                        etag: Some(tag.to_string()),
                        body: ObjectReader::new(self, r.into_stream()),
                    });
                }
                // Another object now, or a range the server would not give: from 0.
                Ok(_) | Err(_) => {}
            }
        }
        let r = self
            .rt
            .block_on(self.store.get_opts(&key, GetOptions::default()))
            .map_err(|e| self.error(rel, "read", &e))?;
        let etag = r.meta.e_tag.clone().map(|t| if t.starts_with('"') { t } else { format!("\"{t}\"") });
        Ok(OpenedObject { start: 0, etag, body: ObjectReader::new(self, r.into_stream()) })
    }

    /// Puts a small object (a catalog, a signature, a sidecar) by one PUT,
    /// which S3 makes visible whole or not at all, unless it already holds
    /// these bytes (its ETag is their MD5). Returns whether it was sent.
    ///
    /// # Errors
    /// A network or permission error naming the object.
    pub fn put_small(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let md5 = format!("\"{}\"", hex(&Md5::digest(bytes)));
        if let Some(h) = self.head(rel)?
            && h.size == bytes.len() as u64
            && h.etag.as_deref() == Some(md5.as_str())
        {
            return Ok(false);
        }
        let key = self.key(rel)?;
        self.rt
            .block_on(self.store.put(&key, PutPayload::from(bytes.to_vec())))
            .map_err(|e| self.error(rel, "write", &e))?;
        Ok(true)
    }

    /// Creates `rel` with `bytes` only if no object has that name
    /// (`If-None-Match: *`). Returns whether it was created.
    ///
    /// # Errors
    /// A network or permission error naming the object.
    pub fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let key = self.key(rel)?;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.rt.block_on(self.store.put_opts(&key, PutPayload::from(bytes.to_vec()), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(false)
            }
            Err(e) => Err(self.error(rel, "write", &e)),
        }
    }

    /// Deletes `rel` (absent is no error).
    ///
    /// # Errors
    /// A network or permission error naming the object.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel)?;
        match self.rt.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(rel, "delete", &e)),
        }
    }

    /// The objects under `rel` (a folder's relative path), relative to the
    /// prefix, at most `cap` of them.
    ///
    /// # Errors
    /// A network or permission error naming the folder; more than `cap` objects.
    pub fn list(&self, rel: &str, cap: usize) -> Result<BTreeSet<String>> {
        let key = self.key(rel)?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        self.rt.block_on(async {
            let mut out = BTreeSet::new();
            let mut stream = self.store.list(Some(&key));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.error(rel, "list", &e))?;
                if let Some(r) = meta.location.as_ref().strip_prefix(&strip) {
                    out.insert(r.to_string());
                }
                if out.len() > cap {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("{}: more than {cap} objects", self.location(rel)),
                    ));
                }
            }
            Ok(out)
        })
    }

    /// Deletes the objects `rels` (absent ones are no error), a thousand per
    /// request (S3's DeleteObjects).
    ///
    /// # Errors
    /// A network or permission error (object_store's message names the object).
    pub fn delete_all(&self, rels: &[&str]) -> Result<()> {
        let keys = rels.iter().map(|r| self.key(r)).collect::<Result<Vec<Path>>>()?;
        self.rt.block_on(async {
            let input = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
            let mut out = self.store.delete_stream(input);
            while let Some(r) = out.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        // object_store's message names the object.
                        let said = e.to_string();
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("{}: cannot delete: {}", self.url(), said.lines().next().unwrap_or("")),
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    /// Uploads the image `src` (of `size` bytes, SHA-256 `sha256` as
    /// recorded) as `rel`, unless an object of that size and SHA-256 is
    /// there. `state_dir` keeps the record of a multipart upload under way.
    ///
    /// # Errors
    /// [`ErrorKind::BadImage`] when the file no longer has its recorded
    /// SHA-256 (the upload is aborted: nothing appears); network and I/O
    /// errors (a multipart upload is kept, to be resumed); an interruption.
    pub fn upload(
        &self,
        src: &FsPath,
        rel: &str,
        size: u64,
        sha256: &str,
        state_dir: &FsPath,
        cancel: &AtomicBool,
    ) -> Result<Placed> {
        if let Some(h) = self.head(rel)?
            && h.size == size
            && h.sha256.as_deref() == Some(sha256)
        {
            return Ok(Placed::Skipped);
        }
        let part = part_size()?;
        let in_flight = parts_in_flight()?;
        let file = vmrepo_repo::hashing::open_nofollow(src)?;
        let len = file.metadata().map_err(|e| Error::io("read", src, e))?.len();
        if len != size {
            return Err(changed(src, &format!("its size is {len}, not the recorded {size}")));
        }
        if size < part {
            return self.upload_whole(file, src, rel, size, sha256);
        }
        let parts = size.div_ceil(part);
        if parts > MAX_PARTS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: {size} bytes need more than {MAX_PARTS} parts of {part}: set {PART_SIZE_ENV}",
                    src.display()
                ),
            ));
        }
        let upload =
            Upload { bucket: self, rel, key: self.key(rel)?, src, size, sha256, part, parts, in_flight };
        upload.run(file, state_dir, cancel)
    }

    /// One PUT of an image smaller than a part: read whole, proved, sent.
    fn upload_whole(
        &self,
        mut file: File,
        src: &FsPath,
        rel: &str,
        size: u64,
        sha256: &str,
    ) -> Result<Placed> {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut file)
            .take(size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", src, e))?;
        let got = hex(&Sha256::digest(&bytes));
        if bytes.len() as u64 != size || got != sha256 {
            return Err(changed(src, &format!("its SHA-256 is {got}, not the recorded {sha256}")));
        }
        let key = self.key(rel)?;
        let opts = PutOptions { attributes: sha256_attribute(sha256), ..Default::default() };
        self.rt
            .block_on(self.store.put_opts(&key, PutPayload::from(bytes), opts))
            .map_err(|e| self.error(rel, "write", &e))?;
        Ok(Placed::Copied)
    }

    /// Aborts the multipart uploads recorded in `state_dir` for objects under
    /// this bucket and prefix that `keep` does not name (what a killed publish
    /// of another selection left), and forgets them.
    pub fn abort_stale(&self, state_dir: &FsPath, keep: &[String]) {
        let Ok(entries) = fs::read_dir(state_dir) else { return };
        let mine = format!("{}/", self.url());
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if fsutil::is_temp_sibling(&name) {
                // A record being written when its publish was killed: dead
                // once old (a publish to another bucket may be writing one now).
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(3600)));
                if old {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let Some(state) = UploadState::read(&path) else { continue };
            let Some(rel) = state.object.strip_prefix(&mine) else { continue };
            if keep.iter().any(|k| k == rel) {
                continue;
            }
            if let Ok(key) = self.key(rel) {
                match self.rt.block_on(self.store.abort_multipart(&key, &state.upload_id)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(err) => tracing::warn!("{}: cannot abort an upload: {err}", state.object),
                }
            }
            let _ = fs::remove_file(&path);
        }
    }
}

/// The file [`CA_BUNDLE_ENV`] names and its bytes, checked to hold PEM
/// certificates; `None` when it is not set.
fn ca_bundle() -> Result<Option<(PathBuf, Vec<u8>)>> {
    let Some(path) = std::env::var_os(CA_BUNDLE_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Ok(None);
    };
    let bad = |why: String| {
        Error::new(ErrorKind::InvalidInput, format!("{CA_BUNDLE_ENV}={}: {why}", path.display()))
    };
    let pem = vmrepo_repo::catalog::read_capped(&path, MAX_CA_BUNDLE).map_err(|e| bad(e.to_string()))?;
    match Certificate::from_pem_bundle(&pem) {
        Ok(c) if !c.is_empty() => Ok(Some((path, pem))),
        Ok(_) => Err(bad("no PEM certificate in it".into())),
        Err(e) => Err(bad(format!("not PEM certificates: {e}"))),
    }
}

/// The part size: [`PART_SIZE`] unless [`PART_SIZE_ENV`] says otherwise.
fn part_size() -> Result<u64> {
    match std::env::var(PART_SIZE_ENV) {
        Err(_) => Ok(PART_SIZE),
        Ok(v) => match v.parse::<u64>() {
            Ok(mib @ 5..=5120) => Ok(mib << 20),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{PART_SIZE_ENV}={v:?}: a number of MiB from 5 to 5120 is expected"),
            )),
        },
    }
}

/// How many parts are sent at a time: [`PARTS_IN_FLIGHT`] unless [`PARTS_ENV`] says otherwise.
fn parts_in_flight() -> Result<usize> {
    match std::env::var(PARTS_ENV) {
        Err(_) => Ok(PARTS_IN_FLIGHT),
        Ok(v) => match v.parse::<usize>() {
            Ok(n @ 1..=64) => Ok(n),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{PARTS_ENV}={v:?}: a number of parts from 1 to 64 is expected"),
            )),
        },
    }
}

fn sha256_attribute(sha256: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::Metadata(SHA256_META.into()), sha256.to_string().into());
    a
}

fn changed(src: &FsPath, why: &str) -> Error {
    Error::new(ErrorKind::BadImage, format!("{}: {why}: the image changed; run vmrepo verify", src.display()))
}

/// The record of a multipart upload under way (`.vmrepo/publish-s3/*.json`).
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct UploadState {
    /// `s3://bucket/prefix/rel`.
    object: String,
    sha256: String,
    size: u64,
    part_size: u64,
    upload_id: String,
    /// The ETag of each part, by part number (from 1); `null` for a part
    /// not sent, or not answered yet (parts are sent several at a time and
    /// answered in any order).
    parts: Vec<Option<String>>,
}

impl UploadState {
    fn read(path: &FsPath) -> Option<UploadState> {
        let bytes = vmrepo_repo::catalog::read_capped(path, MAX_STATE_FILE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write(&self, path: &FsPath) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode an upload record: {e}")))?;
        fsutil::write_atomic(path, &json, 0o644)
    }
}

/// One multipart upload of an image.
struct Upload<'a> {
    bucket: &'a Bucket,
    rel: &'a str,
    key: Path,
    src: &'a FsPath,
    size: u64,
    sha256: &'a str,
    part: u64,
    parts: u64,
    /// How many parts are sent at a time ([`parts_in_flight`]).
    in_flight: usize,
}

impl Upload<'_> {
    fn run(&self, file: File, state_dir: &FsPath, cancel: &AtomicBool) -> Result<Placed> {
        fs::create_dir_all(state_dir).map_err(|e| Error::io("create the folder", state_dir, e))?;
        let object = self.bucket.location(self.rel);
        let state_path: PathBuf = state_dir.join(format!("{}.json", hex(&Sha256::digest(object.as_bytes()))));
        let b = self.bucket;
        let mut state = match UploadState::read(&state_path) {
            Some(s)
                if s.object == object
                    && s.sha256 == self.sha256
                    && s.size == self.size
                    && s.part_size == self.part =>
            {
                s
            }
            other => {
                if let Some(old) = other {
                    let _ = b.rt.block_on(b.store.abort_multipart(&self.key, &old.upload_id));
                }
                self.start(&state_path, object)?
            }
        };
        let file = Arc::new(file);
        let mut sent = self.send(&file, &mut state, &state_path, cancel);
        // The recorded upload is gone (aborted, or expired by a lifecycle rule): start again.
        if matches!(&sent, Err(e) if e.kind() == ErrorKind::NotFound) {
            state = self.start(&state_path, state.object.clone())?;
            sent = self.send(&file, &mut state, &state_path, cancel);
        }
        match sent {
            Ok(parts) => {
                b.rt.block_on(b.store.complete_multipart(&self.key, &state.upload_id, parts))
                    .map_err(|e| b.error(self.rel, "complete the upload of", &e))?;
                let _ = fs::remove_file(&state_path);
                Ok(Placed::Copied)
            }
            Err(e) if e.kind() == ErrorKind::BadImage => {
                let _ = b.rt.block_on(b.store.abort_multipart(&self.key, &state.upload_id));
                let _ = fs::remove_file(&state_path);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// A new multipart upload, recorded before any part is sent.
    fn start(&self, state_path: &FsPath, object: String) -> Result<UploadState> {
        let b = self.bucket;
        let opts = PutMultipartOptions { attributes: sha256_attribute(self.sha256), ..Default::default() };
        let upload_id =
            b.rt.block_on(b.store.create_multipart_opts(&self.key, opts))
                .map_err(|e| b.error(self.rel, "start an upload of", &e))?;
        let state = UploadState {
            object,
            sha256: self.sha256.to_string(),
            size: self.size,
            part_size: self.part,
            upload_id,
            parts: Vec::new(),
        };
        state.write(state_path)?;
        Ok(state)
    }

    /// Reads the file part by part in order, hashing all of it, and sends
    /// each part the record does not already hold with the same MD5, up to
    /// [`parts_in_flight`] at a time: at most that many parts are in memory
    /// (the one being read counts). Each part answered is recorded at once,
    /// in its place, whatever the order the answers come in: a record may
    /// have gaps, which the next publish fills. Returns every part's id.
    fn send(
        &self,
        file: &Arc<File>,
        state: &mut UploadState,
        state_path: &FsPath,
        cancel: &AtomicBool,
    ) -> Result<Vec<PartId>> {
        let b = self.bucket;
        let n = usize::try_from(self.parts).unwrap_or(usize::MAX);
        let in_flight = self.in_flight;
        state.parts.resize(n, None);
        let upload_id = state.upload_id.clone();
        let mut sha = Some(Sha256::new());
        let mut next = 0u64;
        let mut reading = false;
        let mut sending = 0usize;
        b.rt.block_on(async {
            let mut pending: FuturesUnordered<LocalBoxFuture<'_, Event>> = FuturesUnordered::new();
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::interrupted());
                }
                if !reading
                    && next < self.parts
                    && sending < in_flight
                    && let Some(hasher) = sha.take()
                {
                    let start = next.saturating_mul(self.part);
                    let len = self.part.min(self.size.saturating_sub(start));
                    let (file, src) = (Arc::clone(file), self.src.to_path_buf());
                    let idx = next;
                    pending.push(Box::pin(async move {
                        let read =
                            tokio::task::spawn_blocking(move || read_part(&file, &src, start, len, hasher));
                        match read.await {
                            Ok(r) => Event::Read(idx, r),
                            Err(e) => Event::Read(
                                idx,
                                Err(Error::new(ErrorKind::Io, format!("cannot read a part: {e}"))),
                            ),
                        }
                    }));
                    reading = true;
                    next += 1;
                }
                if pending.is_empty() {
                    break;
                }
                // Woken at least every 200 ms to see an interruption.
                let Ok(event) = tokio::time::timeout(CANCEL_POLL, pending.next()).await else { continue };
                match event {
                    None => break,
                    Some(Event::Read(idx, read)) => {
                        reading = false;
                        let (buf, hasher, md5) = read?;
                        sha = Some(hasher);
                        let i = usize::try_from(idx).unwrap_or(usize::MAX);
                        let kept = state.parts.get(i).and_then(Option::as_deref);
                        if kept.is_some_and(|k| k.trim_matches('"') == md5) {
                            continue;
                        }
                        sending += 1;
                        let (key, id) = (&self.key, &upload_id);
                        pending.push(Box::pin(async move {
                            let sent = b.store.put_part(key, id, i, PutPayload::from(Bytes::from(buf))).await;
                            Event::Sent(idx, sent)
                        }));
                    }
                    Some(Event::Sent(idx, sent)) => {
                        sending -= 1;
                        let id =
                            sent.map_err(|e| b.error(self.rel, &format!("send part {} of", idx + 1), &e))?;
                        if let Some(slot) = usize::try_from(idx).ok().and_then(|i| state.parts.get_mut(i)) {
                            *slot = Some(id.content_id);
                        }
                        state.write(state_path)?;
                    }
                }
            }
            Ok(())
        })?;
        let digest: [u8; 32] = sha.map(|s| s.finalize().into()).unwrap_or_default();
        let got = hex(&digest);
        if got != self.sha256 {
            return Err(changed(
                self.src,
                &format!("its SHA-256 is {got}, not the recorded {}", self.sha256),
            ));
        }
        state
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.clone().map(|content_id| PartId { content_id }).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Io,
                        format!("{}: part {} was not sent", b.location(self.rel), i + 1),
                    )
                })
            })
            .collect()
    }
}

/// What one of the futures of an upload gives: a part read (its bytes, the
/// SHA-256 of the file so far, the part's MD5 in hex), or a part sent.
enum Event {
    Read(u64, Result<(Vec<u8>, Sha256, String)>),
    Sent(u64, object_store::Result<PartId>),
}

/// Reads `len` bytes of `file` at `start` and hashes them.
fn read_part(
    file: &File,
    src: &FsPath,
    start: u64,
    len: u64,
    mut sha: Sha256,
) -> Result<(Vec<u8>, Sha256, String)> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| changed(src, "a part is too large"))?];
    file.read_exact_at(&mut buf, start).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            changed(src, "it is shorter than recorded")
        } else {
            Error::io("read", src, e)
        }
    })?;
    sha.update(&buf);
    let md5 = hex(&Md5::digest(&buf));
    Ok((buf, sha, md5))
}

/// The body of an object, read as a blocking [`Read`].
pub struct ObjectReader {
    bucket: Arc<Bucket>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    pending: Bytes,
}

impl ObjectReader {
    fn new(bucket: &Arc<Bucket>, stream: BoxStream<'static, object_store::Result<Bytes>>) -> ObjectReader {
        ObjectReader { bucket: Arc::clone(bucket), stream, pending: Bytes::new() }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.bucket.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.pending = b,
                Some(Err(e)) => {
                    let said = e.to_string();
                    return Err(std::io::Error::other(said.lines().next().unwrap_or("").to_string()));
                }
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_are_checked() {
        assert_eq!(parse_url("s3://star-vm").unwrap(), ("star-vm".into(), String::new()));
        assert_eq!(parse_url("s3://star-vm/pub/star/").unwrap(), ("star-vm".into(), "pub/star".into()));
        for bad in [
            "s3://",
            "s3://b",
            "s3://B-vm/x",
            "s3://star_vm",
            "s3://-star",
            "s3://star-vm/a//b",
            "s3://star-vm/../x",
            "s3://star-vm/a b",
            "s3://star-vm/x?y",
            "http://star-vm",
            "s3://star-vm/./x",
        ] {
            assert_eq!(parse_url(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn an_upload_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = UploadState {
            object: "s3://star-vm/pub/vm/kvm/a.img".into(),
            sha256: "ab".repeat(32),
            size: 10,
            part_size: 5 << 20,
            upload_id: "u1".into(),
            parts: vec![Some("\"e1\"".into()), None, Some("\"e3\"".into())],
        };
        let p = dir.path().join("x.json");
        s.write(&p).unwrap();
        assert_eq!(UploadState::read(&p), Some(s));
        fs::write(&p, b"{").unwrap();
        assert_eq!(UploadState::read(&p), None);
    }
}
