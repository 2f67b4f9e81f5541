//! Putting files into a published folder: an image hard-linked when the
//! folder is on the repository's filesystem, else copied and checked against
//! its recorded SHA-256; never sent again when the same bytes are already
//! there. Every file appears under its name by a rename, complete and fsynced.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use vmrepo_repo::checksum::hex;
use vmrepo_repo::fsutil;
use vmrepo_repo::hashing::{self, Endpoint, Want};
use vmrepo_repo::{Error, ErrorKind, Result};

/// What became of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Hard-linked to the repository's file.
    Linked,
    /// Copied (the folder is on another filesystem).
    Copied,
    /// The same bytes were already there.
    Skipped,
}

/// Puts the image `src` (of `size` bytes and SHA-256 `sha256`, lower-case
/// hex, as recorded) at `dest`. The folder `dest` lies in must exist.
///
/// # Errors
/// [`ErrorKind::BadImage`] when the repository's file no longer has its
/// recorded SHA-256 (nothing is published for it); I/O errors, a full disk
/// ([`ErrorKind::NoSpace`]); an interruption.
pub fn place_image(src: &Path, dest: &Path, size: u64, sha256: &str, cancel: &AtomicBool) -> Result<Placed> {
    let src_md = fs::metadata(src).map_err(|e| Error::io("read", src, e))?;
    if already_there(&src_md, dest, size, sha256, cancel)? {
        return Ok(Placed::Skipped);
    }
    let tmp = fsutil::temp_sibling(dest);
    let result = link_or_copy(src, &tmp, sha256, cancel).and_then(|placed| {
        fs::rename(&tmp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
        Ok(placed)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether `dest` already holds the image: the repository's own file (a
/// hard link made before), or a file of the same size and SHA-256.
fn already_there(
    src_md: &fs::Metadata,
    dest: &Path,
    size: u64,
    sha256: &str,
    cancel: &AtomicBool,
) -> Result<bool> {
    let md = match fs::symlink_metadata(dest) {
        Ok(md) => md,
        Err(e) if fsutil::is_not_found(&e) => return Ok(false),
        Err(e) => return Err(Error::io("read", dest, e)),
    };
    if !md.is_file() || md.len() != size {
        return Ok(false);
    }
    if md.dev() == src_md.dev() && md.ino() == src_md.ino() {
        return Ok(true);
    }
    let d = hashing::hash_path(dest, Want { md5: false, sha256: true }, &|_| {}, cancel)?;
    Ok(d.sha256.is_some_and(|h| hex(&h) == sha256))
}

/// Makes `tmp` the image: a hard link, or where the filesystems differ a
/// copy whose SHA-256, computed while copying, must be the recorded one.
fn link_or_copy(src: &Path, tmp: &Path, sha256: &str, cancel: &AtomicBool) -> Result<Placed> {
    match fs::hard_link(src, tmp) {
        Ok(()) => return Ok(Placed::Linked),
        // Another filesystem, or one without hard links: copy.
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM | libc::EMLINK | libc::ENOTSUP)) => {
        }
        Err(e) => return Err(Error::io("link", tmp, e)),
    }
    let from = hashing::open_nofollow(src)?;
    let to = new_file(tmp, 0o644)?;
    let d = hashing::hash_file(
        Endpoint { file: &from, path: src },
        Some(Endpoint { file: &to, path: tmp }),
        Want { md5: false, sha256: true },
        &|_| {},
        cancel,
    )?;
    match d.sha256.map(|h| hex(&h)) {
        Some(h) if h == sha256 => Ok(Placed::Copied),
        Some(h) => Err(Error::new(
            ErrorKind::BadImage,
            format!(
                "{}: its SHA-256 is {h}, not the recorded {sha256}: the image changed; run vmrepo verify",
                src.display()
            ),
        )),
        None => Err(Error::new(ErrorKind::Io, format!("{}: no SHA-256 was computed", src.display()))),
    }
}

/// Writes a small file (a sidecar) at `dest` unless it already has these
/// bytes: a temporary file, fsync, rename. Returns whether it was written.
///
/// # Errors
/// An I/O error naming the file.
pub fn place_small(dest: &Path, bytes: &[u8]) -> Result<bool> {
    let same_len = fs::symlink_metadata(dest).is_ok_and(|md| md.is_file() && md.len() == bytes.len() as u64);
    if same_len && fs::read(dest).map_err(|e| Error::io("read", dest, e))? == bytes {
        return Ok(false);
    }
    fsutil::write_atomic(dest, bytes, 0o644)?;
    Ok(true)
}

fn new_file(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_placed_once_and_replaced_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        fs::write(&src, b"hello\n").unwrap();
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let stop = AtomicBool::new(false);
        let dest = dir.path().join("b.img");
        assert_eq!(place_image(&src, &dest, 6, sha, &stop).unwrap(), Placed::Linked);
        assert_eq!(place_image(&src, &dest, 6, sha, &stop).unwrap(), Placed::Skipped);
        // A different file of the same size is replaced.
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, b"HELLO\n").unwrap();
        assert_eq!(place_image(&src, &dest, 6, sha, &stop).unwrap(), Placed::Linked);
        assert_eq!(fs::read(&dest).unwrap(), b"hello\n");
        // The same bytes in another file are not placed again.
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, b"hello\n").unwrap();
        assert_eq!(place_image(&src, &dest, 6, sha, &stop).unwrap(), Placed::Skipped);
        assert!(place_small(&dir.path().join("s"), b"x").unwrap());
        assert!(!place_small(&dir.path().join("s"), b"x").unwrap());
        assert!(place_small(&dir.path().join("s"), b"y").unwrap());
    }
}
