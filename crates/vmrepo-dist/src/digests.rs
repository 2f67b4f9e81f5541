//! The SHA-512 of published images, for the formats that name an image by
//! it (the virt-builder index, the HEPiX image list). The repository records
//! SHA-256 and MD5 only; the SHA-512 is computed once, in the same read that
//! proves the file still has its recorded SHA-256, and kept in
//! `.vmrepo/sha512.json` keyed by that SHA-256: content never changes its
//! digests, so the cache cannot go stale, only grow.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256, Sha512};
use vmrepo_repo::checksum::{hex, parse_hex};
use vmrepo_repo::layout::META_DIR;
use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

/// The cache file under the repository's `.vmrepo/`.
pub const CACHE_FILE: &str = "sha512.json";
/// The largest cache read (about 5 million images).
const MAX_CACHE_FILE: u64 = 1 << 30;

/// SHA-256 → SHA-512, both lower-case hex.
pub struct Sha512Cache {
    path: PathBuf,
    map: BTreeMap<String, String>,
    dirty: bool,
}

impl Sha512Cache {
    /// Loads the cache of the repository at `root`; a missing or unreadable
    /// one is empty (it is only a cache), malformed entries are dropped.
    pub fn load(root: &Path) -> Sha512Cache {
        let path = root.join(META_DIR).join(CACHE_FILE);
        let map: BTreeMap<String, String> = vmrepo_repo::catalog::read_capped(&path, MAX_CACHE_FILE)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let map = map
            .into_iter()
            .filter(|(k, v)| parse_hex::<32>(k).is_some() && parse_hex::<64>(v).is_some())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
            .collect();
        Sha512Cache { path, map, dirty: false }
    }

    /// The SHA-512 of the image at `file`, whose recorded SHA-256 is
    /// `sha256`: from the cache, or read (and the SHA-256 proved) now.
    ///
    /// # Errors
    /// The file cannot be read, or its SHA-256 is not the recorded one.
    pub fn get(&mut self, file: &Path, sha256: &str, cancel: &AtomicBool) -> Result<String> {
        let sha256 = sha256.to_ascii_lowercase();
        if let Some(v) = self.map.get(&sha256) {
            return Ok(v.clone());
        }
        let mut f = fsutil::open_regular(file, false)?;
        let (mut a, mut b) = (Sha256::new(), Sha512::new());
        let mut buf = vmrepo_format::IoBuf::zeroed(1 << 20);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            let n = f.read(&mut buf).map_err(|e| Error::io("read", file, e))?;
            if n == 0 {
                break;
            }
            a.update(&buf[..n]);
            b.update(&buf[..n]);
        }
        if hex(&a.finalize()) != sha256 {
            return Err(Error::new(
                ErrorKind::BadImage,
                format!("{}: its SHA-256 is not the recorded one: run vmrepo verify", file.display()),
            ));
        }
        let v = hex(&b.finalize());
        self.map.insert(sha256, v.clone());
        self.dirty = true;
        Ok(v)
    }

    /// Writes the cache back if it grew (temporary file, fsync, rename); a
    /// failure is only a warning, the cache being only a cache.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        match serde_json::to_vec(&self.map) {
            Ok(bytes) => match fsutil::write_atomic(&self.path, &bytes, 0o644) {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!("cannot keep the SHA-512 cache: {e}"),
            },
            Err(e) => tracing::warn!("cannot encode the SHA-512 cache: {e}"),
        }
    }
}
