//! Write tokens: who may upload and delete.
//!
//! Reads are public; every write (`PUT`, `POST`, `DELETE`) needs
//! `Authorization: Bearer <token>`. `vmrepo token add` makes a token from
//! the operating system's random source, `vmrepo_` and 32 bytes in
//! base64url ([`TOKEN_PREFIX`], [`TOKEN_BYTES`]), prints it once and keeps
//! only its SHA-256 in the repository's `.vmrepo/tokens.json` ([`TOKENS_FILE`]),
//! beside the token's name, the VM folders it may write to (none listed: all),
//! when it was made, when it expires and whether it was revoked. The file is
//! rewritten whole (a temporary file, fsynced, renamed) under the repository
//! lock, so that two `token` commands never lose each other's change, and
//! it is readable by its owner only.
//!
//! The server hashes the token presented and compares the digest with every
//! entry's in constant time ([`subtle::ConstantTimeEq`]), all of them
//! whatever matched, so that the time taken says nothing of the entries. It
//! stats the file at each write and reads it again when it changed, so that
//! a `token revoke` takes effect at once, without a restart. A token is never
//! logged, nor echoed in an answer: only its name is.
//!
//! Answers: no `Authorization`, another scheme or a malformed token is `401`
//! with `WWW-Authenticate: Bearer`; an unknown, revoked or expired token is
//! `401` too (the message says which, for the token's owner to act on); a
//! token for other VM folders is `403`, and so is any write to a server run
//! with `--read-only`. Each is the JSON error document (kinds
//! `unauthorized`, exit code 13, and `forbidden`, exit code 14).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vmrepo_name::Vm;
use vmrepo_repo::{Error, ErrorKind, Repository};

use crate::error::ApiError;

/// The token file, in the repository's metadata folder.
pub const TOKENS_FILE: &str = "tokens.json";
/// What every token starts with, so that a leaked one is recognised (secret scanners).
pub const TOKEN_PREFIX: &str = "vmrepo_";
/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// The largest token file read (thousands of tokens).
const MAX_TOKENS_FILE: u64 = 4 << 20;
/// The longest `Authorization` value looked at.
const MAX_AUTHORIZATION: usize = 512;
/// The longest token name.
pub const MAX_NAME: usize = 64;
/// The format version of the token file.
const FILE_VERSION: u32 = 1;

/// Exit code and kind of a write without a valid token.
pub const UNAUTHORIZED: (u8, &str) = (13, "unauthorized");
/// Exit code and kind of a write the token (or `--read-only`) does not allow.
pub const FORBIDDEN: (u8, &str) = (14, "forbidden");

/// One token as the file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    /// SHA-256 of the whole token, in hexadecimal.
    pub sha256: String,
    /// VM folders it may write to; empty: all.
    #[serde(default)]
    pub vms: Vec<String>,
    /// RFC 3339, UTC.
    pub created: String,
    /// RFC 3339, UTC: the token is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// RFC 3339, UTC: when it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// A token entry as `token list --json` prints it: never the hash.
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub vms: Vec<String>,
    pub created: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: &'static str,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    version: u32,
    tokens: Vec<TokenEntry>,
}

/// The token file of `repo`.
pub fn tokens_path(repo: &Repository) -> PathBuf {
    repo.meta_dir().join(TOKENS_FILE)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// When a token given `--expires value` stops working: a date means the end
/// of that day (UTC), a timestamp (RFC 3339) that moment. It must be later
/// than now.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for anything else, or a time already past.
pub fn parse_expiry(value: &str) -> Result<jiff::Timestamp, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--expires {value}: a date (2027-06-30) or a UTC time (2027-06-30T12:00:00Z) is expected"
            ),
        )
    };
    let t = if let Ok(d) = value.parse::<jiff::civil::Date>() {
        d.tomorrow()
            .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC))
            .map(|z| z.timestamp())
            .map_err(|_| bad())?
    } else {
        value.parse::<jiff::Timestamp>().map_err(|_| bad())?
    };
    if t <= now() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("--expires {value}: that time is past")));
    }
    Ok(t)
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "token name {name:?}: 1 to {MAX_NAME} letters, digits, '.', '_', '@' or '-', not starting with '.' or '-'"
            ),
        ))
    }
}

fn read_file(path: &Path) -> Result<TokensFile, Error> {
    use std::io::Read;
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TokensFile { version: FILE_VERSION, tokens: Vec::new() });
        }
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_TOKENS_FILE + 1).read_to_end(&mut bytes).map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > MAX_TOKENS_FILE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is larger than {MAX_TOKENS_FILE} bytes", path.display()),
        ));
    }
    let file: TokensFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, format!("{}: not a token file: {e}", path.display()))
    })?;
    if file.version != FILE_VERSION {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: token file version {} (this vmrepo reads {FILE_VERSION})",
                path.display(),
                file.version
            ),
        ));
    }
    Ok(file)
}

fn write_file(path: &Path, file: &TokensFile) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(file)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot write the token file: {e}")))?;
    bytes.push(b'\n');
    vmrepo_repo::fsutil::write_atomic(path, &bytes, 0o600)
}

/// Changes the token file under the repository lock.
fn edit<T>(
    repo: &Repository,
    cancel: &AtomicBool,
    f: impl FnOnce(&mut TokensFile) -> Result<T, Error>,
) -> Result<T, Error> {
    let _lock = vmrepo_repo::lock::RepoLock::acquire(&repo.meta_dir(), &|| {}, cancel)?;
    let path = tokens_path(repo);
    let mut file = read_file(&path)?;
    let out = f(&mut file)?;
    write_file(&path, &file)?;
    Ok(out)
}

/// A new token named `name` for the VM folders `vms` (empty: all), valid
/// until `expires`: the entry kept, and the token itself, which is nowhere
/// else and must be shown to the user once. A revoked token's name may be
/// given again; an active one's may not.
///
/// # Errors
/// A bad name, a name in use, the lock, or the file cannot be read or written.
pub fn add_token(
    repo: &Repository,
    name: &str,
    vms: &[Vm],
    expires: Option<jiff::Timestamp>,
    cancel: &AtomicBool,
) -> Result<(TokenEntry, String), Error> {
    check_name(name)?;
    let mut random = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut random)
        .map_err(|e| Error::new(ErrorKind::Io, format!("the system's random source failed: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    let mut vm_names: Vec<String> = vms.iter().map(|v| v.as_str().to_string()).collect();
    vm_names.sort();
    vm_names.dedup();
    let entry = TokenEntry {
        name: name.to_string(),
        sha256: vmrepo_repo::checksum::hex(&Sha256::digest(token.as_bytes())),
        vms: vm_names,
        created: stamp(now()),
        expires: expires.map(stamp),
        revoked: None,
    };
    let kept = entry.clone();
    edit(repo, cancel, move |file| {
        if file.tokens.iter().any(|t| t.name == name && t.revoked.is_none()) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "a token named {name} exists: revoke it first (vmrepo token revoke {name}) or choose another name"
                ),
            ));
        }
        file.tokens.retain(|t| t.name != name);
        file.tokens.push(kept);
        Ok(())
    })?;
    Ok((entry, token))
}

/// Revokes the token named `name`: from now on it is refused.
///
/// # Errors
/// No such token, or it is revoked already; the lock; the file.
pub fn revoke_token(repo: &Repository, name: &str, cancel: &AtomicBool) -> Result<TokenEntry, Error> {
    edit(repo, cancel, |file| {
        let t = file
            .tokens
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no token named {name}")))?;
        if t.revoked.is_some() {
            return Err(Error::new(ErrorKind::NotFound, format!("the token {name} is revoked already")));
        }
        t.revoked = Some(stamp(now()));
        Ok(t.clone())
    })
}

/// Every token, without its hash.
///
/// # Errors
/// The file cannot be read or parsed.
pub fn list_tokens(repo: &Repository) -> Result<Vec<TokenInfo>, Error> {
    let file = read_file(&tokens_path(repo))?;
    let now = now();
    Ok(file
        .tokens
        .into_iter()
        .map(|t| {
            let expired = t
                .expires
                .as_deref()
                .and_then(|e| e.parse::<jiff::Timestamp>().ok())
                .is_some_and(|e| e <= now);
            let state = if t.revoked.is_some() {
                "revoked"
            } else if expired {
                "expired"
            } else {
                "active"
            };
            TokenInfo {
                name: t.name,
                vms: t.vms,
                created: t.created,
                expires: t.expires,
                revoked: t.revoked,
                state,
            }
        })
        .collect())
}

/// A token entry ready to check against.
struct Known {
    name: String,
    hash: [u8; 32],
    /// `None`: every VM folder.
    vms: Option<Vec<Vm>>,
    expires: Option<jiff::Timestamp>,
    revoked: bool,
}

/// What identifies a version of the token file: a change to it changes one of these.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

/// The server's view of the token file, read again whenever it changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Option<Cached>>,
}

/// The entries read, with the version of the file (`None`: there was none).
type Cached = (Option<FileKey>, Arc<Vec<Known>>);

/// Who a write is from: the token's name (for the audit log).
#[derive(Clone, Debug)]
pub struct Grant {
    pub token: String,
}

/// A refusal, with the token's name when one was recognised (for the audit log).
#[derive(Debug)]
pub struct Refusal {
    pub token: Option<String>,
    pub error: ApiError,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED.1, UNAUTHORIZED.0, message)
}

/// `403` with the JSON error document.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, FORBIDDEN.1, FORBIDDEN.0, message)
}

/// The challenge sent with a `401`.
pub fn challenge() -> HeaderValue {
    HeaderValue::from_static("Bearer realm=\"vmrepo\"")
}

impl TokenStore {
    pub fn new(repo: &Repository) -> TokenStore {
        TokenStore { path: tokens_path(repo), cache: Mutex::new(None) }
    }

    /// The entries, read again if the file changed since last time.
    fn current(&self) -> Result<Arc<Vec<Known>>, ApiError> {
        let key = match fs::metadata(&self.path) {
            Ok(md) => Some(FileKey {
                dev: md.dev(),
                ino: md.ino(),
                len: md.len(),
                mtime_ns: vmrepo_repo::fsutil::mtime_ns(&md),
                ctime_ns: md.ctime().saturating_mul(1_000_000_000).saturating_add(md.ctime_nsec()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ApiError::internal(format!("cannot read the token file: {e}"))),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, known)) = cache.as_ref()
            && *k == key
        {
            return Ok(known.clone());
        }
        let file = read_file(&self.path).map_err(|e| {
            tracing::error!("{e}");
            ApiError::internal("the token file cannot be read: no write is accepted until it is fixed")
        })?;
        let known: Vec<Known> = file
            .tokens
            .into_iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                let raw = t.sha256.as_bytes();
                if raw.len() != 64 {
                    tracing::warn!("token {}: its hash is malformed; it is refused", t.name);
                    return None;
                }
                for (i, pair) in raw.chunks_exact(2).enumerate() {
                    let s = std::str::from_utf8(pair).ok()?;
                    hash[i] = u8::from_str_radix(s, 16).ok()?;
                }
                let vms = if t.vms.is_empty() {
                    None
                } else {
                    Some(t.vms.iter().filter_map(|v| Vm::from_user(v).ok()).collect())
                };
                let expires = match t.expires.as_deref().map(str::parse::<jiff::Timestamp>) {
                    None => None,
                    Some(Ok(e)) => Some(e),
                    Some(Err(_)) => {
                        tracing::warn!("token {}: its expiry is malformed; it is refused", t.name);
                        return None;
                    }
                };
                Some(Known { name: t.name, hash, vms, expires, revoked: t.revoked.is_some() })
            })
            .collect();
        let known = Arc::new(known);
        *cache = Some((key, known.clone()));
        Ok(known)
    }

    /// Whether the request's token may write to `vm`.
    ///
    /// # Errors
    /// `401` or `403` as the module documentation says; `500` when the token
    /// file cannot be read.
    pub fn authorize(&self, headers: &HeaderMap, vm: Vm) -> Result<Grant, Refusal> {
        let refuse =
            |token: Option<&str>, error: ApiError| Refusal { token: token.map(str::to_string), error };
        let presented = bearer(headers).map_err(|e| refuse(None, e))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let known = self.current().map_err(|e| refuse(None, e))?;
        let mut found: Option<&Known> = None;
        for k in known.iter() {
            // Every entry is compared, whatever matched before.
            let same: bool = k.hash.ct_eq(&digest).into();
            if same {
                found = Some(k);
            }
        }
        let Some(k) = found else {
            return Err(refuse(None, unauthorized("the token is not known to this server")));
        };
        if k.revoked {
            return Err(refuse(Some(&k.name), unauthorized(format!("the token {} is revoked", k.name))));
        }
        if k.expires.is_some_and(|e| e <= now()) {
            return Err(refuse(Some(&k.name), unauthorized(format!("the token {} has expired", k.name))));
        }
        if let Some(vms) = &k.vms
            && !vms.contains(&vm)
        {
            let names: Vec<&str> = vms.iter().map(|v| v.as_str()).collect();
            return Err(refuse(
                Some(&k.name),
                forbidden(format!(
                    "the token {} may write to {} only, not to {}",
                    k.name,
                    names.join(", "),
                    vm.as_str()
                )),
            ));
        }
        Ok(Grant { token: k.name.clone() })
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(unauthorized("a write needs a token: Authorization: Bearer <token> (vmrepo token add)"));
    };
    if values.next().is_some() {
        return Err(unauthorized("more than one Authorization header"));
    }
    let malformed = || unauthorized("the Authorization header is malformed: Bearer <token> is expected");
    if value.len() > MAX_AUTHORIZATION {
        return Err(malformed());
    }
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let token = token.trim();
    // RFC 6750's b64token.
    let b64token =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !b64token {
        return Err(malformed());
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&h("bearer  vmrepo_x-Y_z")).unwrap(), "vmrepo_x-Y_z");
        for bad in ["Basic abc", "Bearer", "Bearer a b", "Bearer a\"b", "abc"] {
            assert_eq!(bearer(&h(bad)).unwrap_err().status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert_eq!(bearer(&HeaderMap::new()).unwrap_err().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn expiry_forms() {
        assert!(parse_expiry("2999-01-01").is_ok());
        assert!(parse_expiry("2999-01-01T00:00:00Z").is_ok());
        assert!(parse_expiry("2000-01-01").is_err());
        assert!(parse_expiry("tomorrow").is_err());
        let t = parse_expiry("2999-06-30").unwrap();
        assert_eq!(stamp(t), "2999-07-01T00:00:00Z");
    }

    #[test]
    fn names() {
        assert!(check_name("ci-builder@star").is_ok());
        for bad in ["", ".x", "-x", "a b", "a/b", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
