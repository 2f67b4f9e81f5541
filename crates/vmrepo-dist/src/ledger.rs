//! What publish wrote under `DEST/vm/`, kept in `DEST/.vmrepo-publish.json`
//! (the ledger): for each file, the SHA-256 it was proved to have and the
//! identity of the inode that had it then (device, inode, size,
//! modification and change times).
//!
//! It serves two purposes:
//!
//! * **Cheap proof.** A file whose inode still has the identity recorded
//!   when its bytes were proved still has those bytes: every write to a file
//!   changes its change time (`ctime`), which no user can set back. So
//!   publishing again with nothing changed costs a `stat` per file, not a
//!   read ([`crate::place`]).
//! * **Removing old images.** Only paths in the ledger (files publish placed
//!   for a catalog it wrote) are ever removed, once no live catalog names
//!   them ([`removable`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

/// The ledger's file name in DEST.
pub const LEDGER_FILE: &str = ".vmrepo-publish.json";
/// The largest ledger read (about 200 bytes per file).
const MAX_LEDGER_FILE: u64 = 1 << 30;
/// The ledger's format version.
const LEDGER_VERSION: u32 = 1;

/// The identity of a file when its SHA-256 was proved, and that SHA-256;
/// serialized as an array to keep the ledger small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry(
    /// SHA-256 (lower-case hex) of the file's bytes; empty when unknown.
    pub String,
    /// Device.
    pub u64,
    /// Inode.
    pub u64,
    /// Size.
    pub u64,
    /// Modification time, ns.
    pub i64,
    /// Change time, ns.
    pub i64,
    /// For a Metalink file, the `<published>` time it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub Option<String>,
);

impl Entry {
    /// The entry of a file of SHA-256 `sha256` with metadata `md`.
    pub fn of(sha256: &str, md: &fs::Metadata) -> Entry {
        Entry(
            sha256.to_string(),
            md.dev(),
            md.ino(),
            md.len(),
            fsutil::mtime_ns(md),
            fsutil::ctime_ns(md),
            None,
        )
    }

    /// Whether `md` is still the inode this entry proved to hold `sha256`.
    pub fn proves(&self, sha256: &str, md: &fs::Metadata) -> bool {
        !self.0.is_empty()
            && self.0 == sha256
            && md.is_file()
            && (self.1, self.2, self.3, self.4, self.5)
                == (md.dev(), md.ino(), md.len(), fsutil::mtime_ns(md), fsutil::ctime_ns(md))
    }
}

/// Every file publish placed under `DEST/vm/`, by its path relative to DEST.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    version: u32,
    pub files: BTreeMap<String, Entry>,
}

impl Ledger {
    /// The ledger in `dest`; an empty one when there is none, or one this
    /// version cannot read (with a warning: files are then proved by reading
    /// them, and files only it named are left in place).
    pub fn load(dest: &Path) -> Ledger {
        let path = dest.join(LEDGER_FILE);
        let bytes = match vmrepo_repo::catalog::read_capped(&path, MAX_LEDGER_FILE) {
            Ok(b) => b,
            Err(_) if fs::symlink_metadata(&path).is_err() => return Ledger::default(),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; starting a new one", path.display());
                return Ledger::default();
            }
        };
        match serde_json::from_slice::<Ledger>(&bytes) {
            Ok(l) if l.version == LEDGER_VERSION => l,
            Ok(l) => {
                tracing::warn!(
                    "{}: version {} is not {LEDGER_VERSION}; starting a new one",
                    path.display(),
                    l.version
                );
                Ledger::default()
            }
            Err(e) => {
                tracing::warn!("{}: {e}; starting a new one", path.display());
                Ledger::default()
            }
        }
    }

    /// Writes it to `dest` whole (temporary file, fsync, rename).
    ///
    /// # Errors
    /// An I/O error naming the file.
    pub fn save(&mut self, dest: &Path) -> Result<()> {
        self.version = LEDGER_VERSION;
        let mut json = serde_json::to_vec(self)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the publish ledger: {e}")))?;
        json.push(b'\n');
        let path = dest.join(LEDGER_FILE);
        // Its temporary file's name is no name a user knows.
        fsutil::write_atomic(&path, &json, 0o644).map_err(|e| {
            let message = e.to_string();
            let message = match message.find(".tmp-") {
                Some(_) => {
                    format!("cannot write {}: {}", path.display(), message.rsplit(": ").next().unwrap_or(""))
                }
                None => message,
            };
            Error::new(e.kind(), message)
        })
    }
}

/// Whether `rel` is a path publish places: `vm/<VM>/<file>`, each part a
/// plain, visible name.
pub fn is_placed_path(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    matches!(parts.as_slice(), ["vm", vm, file] if plain(vm) && plain(file))
}

fn plain(part: &str) -> bool {
    !part.is_empty() && !part.starts_with('.') && !part.contains(['\\', '\0'])
}

/// The paths of the ledger that no live catalog names (`live`), that may be
/// removed: each of publish's shape ([`is_placed_path`]).
pub fn removable<'a>(ledger: &'a Ledger, live: &BTreeSet<String>) -> Vec<&'a str> {
    ledger.files.keys().filter(|p| !live.contains(*p) && is_placed_path(p)).map(String::as_str).collect()
}

/// Removes `rel` from `dest` if it is a regular file in a real folder (no
/// link followed, nothing else removed). Returns whether it was removed.
///
/// # Errors
/// An I/O error other than its absence.
pub fn remove_placed(dest: &Path, rel: &str) -> Result<bool> {
    let path = dest.join(rel);
    let dir = fsutil::parent(&path);
    if fsutil::real_folder(dest, dir).is_err() {
        return Ok(false);
    }
    match fs::symlink_metadata(&path) {
        Ok(md) if md.is_file() => {}
        Ok(_) => return Ok(false),
        Err(e) if fsutil::is_not_found(&e) => return Ok(false),
        Err(e) => return Err(Error::io("read", &path, e)),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if fsutil::is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_publish_shape_are_removable() {
        for ok in ["vm/kvm/a.img", "vm/xen/sl5_x.txt"] {
            assert!(is_placed_path(ok), "{ok}");
        }
        for bad in [
            "catalog.json",
            "vm/a",
            "vm/kvm/../x",
            "vm/../etc/passwd",
            "vm/kvm/.hidden",
            "vm//x",
            "x/kvm/a",
            "vm/kvm/a/b",
            "/vm/kvm/a",
        ] {
            assert!(!is_placed_path(bad), "{bad}");
        }
        let _ = fs::metadata(".");
    }

    #[test]
    fn an_entry_proves_only_the_same_inode_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"x").unwrap();
        let e = Entry::of("ab", &fs::metadata(&f).unwrap());
        assert!(e.proves("ab", &fs::metadata(&f).unwrap()));
        assert!(!e.proves("cd", &fs::metadata(&f).unwrap()));
        // Any write changes the change time (and here the size).
        fs::write(&f, b"xy").unwrap();
        assert!(!e.proves("ab", &fs::metadata(&f).unwrap()));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.starts_with("[\"ab\","), "{json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e);
    }
}
