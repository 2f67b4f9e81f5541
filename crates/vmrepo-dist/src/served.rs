//! The signed catalog a running `vmrepo serve --sign-key` answers: the same
//! `catalog.json` and signature publish writes ([`crate::export::catalog`]),
//! with a serial that only grows across restarts and across several servers
//! on one repository.
//!
//! The serial and what it was given for are kept in the repository's
//! `.vmrepo/serve-catalog.json` ([`STATE_FILE`]): the last serial, a digest
//! of the catalog's content (its base URL and entries, not its times), and
//! the times it was signed with. Under an exclusive lock
//! (`.vmrepo/serve-catalog.lock`), a catalog whose content has that digest
//! keeps its serial (and its times while less than half of its validity has
//! passed, so that every server and every restart answers the same catalog);
//! other content takes the next serial. The file is written whole
//! (temporary file, fsync, rename) before the new catalog is answered. A
//! file that cannot be read stops the catalog from being signed, rather
//! than start again from serial 1 (sites would refuse every later catalog
//! as a rollback).

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use jiff::{SignedDuration, Timestamp, Unit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vmrepo_repo::checksum::hex;
use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

use crate::export::{self, Signers};
use crate::schema::{self, CATALOG_FILE, CatalogDoc, CatalogImage, SIGNATURE_FILE};

/// The serial's record, in the repository's `.vmrepo/`.
pub const STATE_FILE: &str = "serve-catalog.json";
/// The lock that keeps two servers from choosing a serial at once.
pub const LOCK_FILE: &str = "serve-catalog.lock";
/// The largest state file read: it holds four short fields.
const MAX_STATE_FILE: u64 = 4096;

/// What [`STATE_FILE`] holds.
#[derive(Clone, Debug, PartialEq)]
struct State {
    serial: u64,
    /// SHA-256 (hex) of the catalog's base URL and entries.
    content: String,
    generated: Timestamp,
    expires: Timestamp,
}

/// [`State`] as written (times in RFC 3339).
#[derive(Serialize, Deserialize)]
struct StateFile {
    serial: u64,
    content: String,
    generated: String,
    expires: String,
}

/// A signed catalog, ready to answer.
#[derive(Clone, Debug)]
pub struct Signed {
    pub serial: u64,
    /// `catalog.json`'s bytes.
    pub catalog: Vec<u8>,
    /// `catalog.json.minisig`'s bytes.
    pub signature: Vec<u8>,
    pub expires: Timestamp,
    /// When to sign it again: half of its validity before it expires.
    pub renew_at: Timestamp,
    /// The state file as it was left ([`state_mark`]): another server that
    /// writes it changes this.
    pub mark: Option<(u64, i64, u64)>,
}

/// The state file's inode, modification time and length, if it exists:
/// what tells a server that another one chose a serial.
pub fn state_mark(meta_dir: &Path) -> Option<(u64, i64, u64)> {
    let md = fs::symlink_metadata(meta_dir.join(STATE_FILE)).ok()?;
    Some((md.ino(), fsutil::mtime_ns(&md), md.len()))
}

/// Signs the catalog of `images` (served from `base_url`, if known), valid
/// for `validity` from `now`, with the serial [`STATE_FILE`] in `meta_dir`
/// calls for, recording it there first when it is new.
///
/// # Errors
/// [`ErrorKind::BadSidecar`] when the state file cannot be read (the serial
/// cannot be known), [`ErrorKind::InvalidInput`] when the serial cannot grow
/// any more or the times overflow, I/O errors writing the state, and
/// signing errors.
pub fn sign(
    meta_dir: &Path,
    signers: &Signers,
    base_url: Option<String>,
    images: Vec<CatalogImage>,
    validity: SignedDuration,
    now: Timestamp,
) -> Result<Signed> {
    let now = now.round(Unit::Second).map_err(time_error)?;
    let content = content_digest(base_url.as_deref(), &images)?;
    let half = validity.checked_div(2).ok_or_else(|| time_error("no validity"))?;
    let _lock = lock(meta_dir)?;
    let path = meta_dir.join(STATE_FILE);
    let previous = read_state(&path)?;
    let fresh_times =
        || -> Result<(Timestamp, Timestamp)> { Ok((now, now.checked_add(validity).map_err(time_error)?)) };
    let state = match previous {
        Some(p) if p.content == content => {
            let remaining = p.expires.duration_since(now);
            let still_good = remaining > half && remaining <= validity && p.generated <= now;
            if still_good {
                p
            } else {
                let (generated, expires) = fresh_times()?;
                State { generated, expires, ..p }
            }
        }
        other => {
            let serial = schema::next_serial(other.map(|p| p.serial)).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{}: the serial cannot grow any more", path.display()),
                )
            })?;
            let (generated, expires) = fresh_times()?;
            State { serial, content, generated, expires }
        }
    };
    if read_state(&path)?.as_ref() != Some(&state) {
        let file = StateFile {
            serial: state.serial,
            content: state.content.clone(),
            generated: state.generated.to_string(),
            expires: state.expires.to_string(),
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode {}: {e}", path.display())))?;
        json.push(b'\n');
        fsutil::write_atomic(&path, &json, 0o644)?;
    }
    let mark = state_mark(meta_dir);
    let doc = CatalogDoc {
        format: schema::FORMAT.into(),
        version: schema::VERSION,
        serial: state.serial,
        generated: state.generated.to_string(),
        expires: state.expires.to_string(),
        base_url: base_url.clone(),
        images,
        // The server's downloads are of single files: image folders are not listed.
        folders: Vec::new(),
    };
    let ctx = export::Context {
        doc: &doc,
        base_urls: &[],
        generated: state.generated,
        expires: state.expires,
        sha512: &Default::default(),
        signers,
        files: &Default::default(),
    };
    let mut catalog = None;
    let mut signature = None;
    for f in export::catalog::render(&ctx)? {
        match f.path.as_str() {
            CATALOG_FILE => catalog = Some(f.bytes),
            SIGNATURE_FILE => signature = Some(f.bytes),
            _ => {}
        }
    }
    let (Some(catalog), Some(signature)) = (catalog, signature) else {
        return Err(Error::new(ErrorKind::Io, "the catalog export made no catalog or no signature"));
    };
    let renew_at = state.expires.checked_sub(half).map_err(time_error)?;
    Ok(Signed { serial: state.serial, catalog, signature, expires: state.expires, renew_at, mark })
}

/// SHA-256 of what the catalog says apart from its serial and times.
fn content_digest(base_url: Option<&str>, images: &[CatalogImage]) -> Result<String> {
    let bytes = serde_json::to_vec(&(base_url, images))
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the catalog: {e}")))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// The state, or `None` when there is none yet.
fn read_state(path: &Path) -> Result<Option<State>> {
    match fs::symlink_metadata(path) {
        Err(e) if fsutil::is_not_found(&e) => return Ok(None),
        _ => {}
    }
    let unreadable = |why: String| {
        Error::new(
            ErrorKind::BadSidecar,
            format!(
                "{}: {why}; the served catalog's serial cannot be known, so no catalog is signed",
                path.display()
            ),
        )
    };
    let bytes =
        vmrepo_repo::catalog::read_capped(path, MAX_STATE_FILE).map_err(|e| unreadable(e.to_string()))?;
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not readable: {e}")))?;
    let time = |t: &str| t.parse::<Timestamp>().map_err(|_| unreadable(format!("{t:?} is not a time")));
    let state = State {
        serial: file.serial,
        generated: time(&file.generated)?,
        expires: time(&file.expires)?,
        content: file.content,
    };
    if state.serial == 0 || state.serial > schema::MAX_SERIAL {
        return Err(unreadable(format!("serial {} is out of range", state.serial)));
    }
    if state.content.len() != 64 || !state.content.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unreadable("its content digest is not 64 hex digits".into()));
    }
    Ok(Some(state))
}

/// Holds the serial's lock until dropped (waiting for another server's turn).
fn lock(meta_dir: &Path) -> Result<File> {
    let path = meta_dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::new(ErrorKind::Locked, format!("{}: cannot lock it: {e}", path.display())))?;
    Ok(f)
}

fn time_error(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("cannot compute the catalog's times: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key;

    fn signers(dir: &Path, name: &str) -> Signers {
        let k = key::generate_key(dir, name, None).unwrap();
        let (minisign_secret, minisign_public) = key::load_secret_key(&k.secret, None).unwrap();
        Signers::minisign(minisign_secret, minisign_public)
    }

    fn image(n: u8) -> CatalogImage {
        serde_json::from_value(serde_json::json!({
            "vm": "kvm", "name": format!("sl5.3_x86_64_sl08e_{n}GB"), "file": format!("sl5.3_x86_64_sl08e_{n}GB.img"),
            "path": format!("vm/kvm/sl5.3_x86_64_sl08e_{n}GB.img"), "size": 10, "sha256": "ab".repeat(32),
            "md5": "cd".repeat(16), "format": "raw", "virtual_size": 10, "storage": null, "os": "sl5.3",
            "osinfo": null, "arch": "x86", "bits": 64, "lib": "sl08e", "maxsize": format!("{n}GB"),
            "maxsize_bytes": 1, "detail": null, "kernel": null, "added": null, "description": {}
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_serial_grows_only_with_the_content_and_the_times_are_kept_while_young() {
        let keys = tempfile::tempdir().unwrap();
        let meta = tempfile::tempdir().unwrap();
        let s = signers(keys.path(), "k");
        let week = SignedDuration::from_hours(24 * 7);
        let t0 = at("2026-12-01T00:00:00Z");
        let a = sign(meta.path(), &s, None, vec![image(1)], week, t0).unwrap();
        assert_eq!(a.serial, 1);
        assert_eq!(a.renew_at, at("2026-12-04T12:00:00Z"));
        // The same content a day later: the same catalog (its signature is
        // made again, with other random noise, and verifies).
        let b = sign(meta.path(), &s, None, vec![image(1)], week, at("2026-12-02T00:00:00Z")).unwrap();
        assert_eq!((b.serial, &b.catalog), (1, &a.catalog));
        let sig = minisign::SignatureBox::from_string(std::str::from_utf8(&b.signature).unwrap()).unwrap();
        minisign::verify(&s.minisign_public, &sig, std::io::Cursor::new(&b.catalog), true, false, false)
            .unwrap();
        // Past half its validity: signed again, same serial, new times.
        let c = sign(meta.path(), &s, None, vec![image(1)], week, at("2026-12-05T00:00:00Z")).unwrap();
        assert_eq!(c.serial, 1);
        assert_eq!(c.expires, at("2026-12-12T00:00:00Z"));
        assert_ne!(c.catalog, a.catalog);
        // Other content: the next serial; and back again: the one after.
        let d =
            sign(meta.path(), &s, None, vec![image(1), image(2)], week, at("2026-12-05T00:00:00Z")).unwrap();
        assert_eq!(d.serial, 2);
        let e = sign(meta.path(), &s, None, vec![image(1)], week, at("2026-12-05T00:00:00Z")).unwrap();
        assert_eq!(e.serial, 3);
        // A base URL is content too.
        let f =
            sign(meta.path(), &s, Some("https://x".into()), vec![image(1)], week, at("2026-12-05T00:00:00Z"))
                .unwrap();
        assert_eq!(f.serial, 4);
        let doc: CatalogDoc = serde_json::from_slice(&f.catalog).unwrap();
        assert_eq!((doc.serial, doc.base_url.as_deref()), (4, Some("https://x")));
        // A shorter validity than the one signed: signed again.
        let g = sign(
            meta.path(),
            &s,
            Some("https://x".into()),
            vec![image(1)],
            SignedDuration::from_hours(2),
            at("2026-12-05T00:00:00Z"),
        )
        .unwrap();
        assert_eq!((g.serial, g.expires), (4, at("2026-12-05T02:00:00Z")));
    }

    #[test]
    fn an_unreadable_state_stops_the_signing() {
        let keys = tempfile::tempdir().unwrap();
        let meta = tempfile::tempdir().unwrap();
        let s = signers(keys.path(), "k");
        let week = SignedDuration::from_hours(24 * 7);
        let now = at("2026-12-01T00:00:00Z");
        for junk in [&b"{"[..], b"{\"serial\":0,\"content\":\"\"}", &[b'x'; 5000]] {
            fs::write(meta.path().join(STATE_FILE), junk).unwrap();
            let err = sign(meta.path(), &s, None, vec![image(1)], week, now).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadSidecar, "{err}");
            assert!(err.to_string().contains(STATE_FILE), "{err}");
        }
        let state = serde_json::json!({"serial": schema::MAX_SERIAL, "content": "00".repeat(32),
            "generated": "2026-12-01T00:00:00Z", "expires": "2026-12-02T00:00:00Z"});
        fs::write(meta.path().join(STATE_FILE), state.to_string()).unwrap();
        let err = sign(meta.path(), &s, None, vec![image(1)], week, now).unwrap_err();
        assert!(err.to_string().contains("cannot grow"), "{err}");
    }
}
