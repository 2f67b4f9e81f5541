//! Putting files into a published folder: an image hard-linked when the
//! folder is on the repository's filesystem, else copied and checked against
//! its recorded SHA-256; never sent again when the same bytes are already
//! there. Every file appears under its name by a rename, complete and fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use sha2::{Digest, Sha256};
use vmrepo_repo::checksum::hex;
use vmrepo_repo::fsutil;
use vmrepo_repo::hashing::{self, Endpoint, Want};
use vmrepo_repo::{Error, ErrorKind, Result};

use crate::ledger::Entry;

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
/// hex, as recorded) at `dest`, and returns what the ledger is to record
/// for it. `known` is what a previous publish recorded for `dest`. The
/// folder `dest` lies in must exist.
///
/// An image is already there, and left alone, when `dest` is the inode
/// `known` proved to hold `sha256` and unchanged since ([`Entry::proves`]),
/// or the repository's own file (a hard link), or a file of the same size
/// whose bytes hash to `sha256` (read whole: the only case that reads).
/// A new image is neither fsynced nor its folder: publish syncs DEST's
/// filesystem once before any catalog names it.
///
/// # Errors
/// [`ErrorKind::BadImage`] when the repository's file no longer has its
/// recorded SHA-256 (nothing is published for it); I/O errors, a full disk
/// ([`ErrorKind::NoSpace`]); an interruption.
pub fn place_image(
    src: &Path,
    dest: &Path,
    size: u64,
    sha256: &str,
    known: Option<&Entry>,
    cancel: &AtomicBool,
) -> Result<(Placed, Entry)> {
    if let Some(md) = already_there(src, dest, size, sha256, known, cancel)? {
        return Ok((Placed::Skipped, Entry::of(sha256, &md)));
    }
    let tmp = fsutil::temp_sibling(dest);
    let result = link_or_copy(src, &tmp, sha256, cancel).and_then(|placed| {
        fs::rename(&tmp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
        Ok(placed)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let placed = result.map_err(|e| named_final(e, &tmp, dest))?;
    let md = fs::symlink_metadata(dest).map_err(|e| Error::io("read", dest, e))?;
    Ok((placed, Entry::of(sha256, &md)))
}

/// The metadata of `dest` when it already holds the image: see [`place_image`].
fn already_there(
    src: &Path,
    dest: &Path,
    size: u64,
    sha256: &str,
    known: Option<&Entry>,
    cancel: &AtomicBool,
) -> Result<Option<fs::Metadata>> {
    let md = match fs::symlink_metadata(dest) {
        Ok(md) => md,
        Err(e) if fsutil::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::io("read", dest, e)),
    };
    if !md.is_file() || md.len() != size {
        return Ok(None);
    }
    if known.is_some_and(|k| k.proves(sha256, &md)) {
        return Ok(Some(md));
    }
    let src_md = fs::metadata(src).map_err(|e| Error::io("read", src, e))?;
    if md.dev() == src_md.dev() && md.ino() == src_md.ino() {
        return Ok(Some(md));
    }
    let d = hashing::hash_path(dest, Want { md5: false, sha256: true }, &|_| {}, cancel)?;
    Ok(d.sha256.is_some_and(|h| hex(&h) == sha256).then_some(md))
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
/// bytes: a temporary file, renamed (not fsynced: publish syncs DEST's
/// filesystem once before any catalog names it). Returns whether it was
/// written, and what the ledger is to record for it. `known` is what a
/// previous publish recorded: when `dest` is still that inode unchanged,
/// with these bytes' SHA-256, it is not even read.
///
/// # Errors
/// An I/O error naming the file.
pub fn place_small(dest: &Path, bytes: &[u8], known: Option<&Entry>) -> Result<(bool, Entry)> {
    if let Some(entry) = unchanged(dest, bytes, known)? {
        return Ok((false, entry));
    }
    let sha256 = hex(&Sha256::digest(bytes));
    let tmp = fsutil::temp_sibling(dest);
    let result = (|| {
        let mut f = new_file(&tmp, 0o644)?;
        f.write_all(bytes).map_err(|e| Error::io("write", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, dest).map_err(|e| Error::io("rename into place", dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| named_final(e, &tmp, dest))?;
    let md = fs::symlink_metadata(dest).map_err(|e| Error::io("read", dest, e))?;
    Ok((true, Entry::of(&sha256, &md)))
}

/// The ledger's entry for `dest` when it already holds exactly `bytes`
/// (proved by `known` without reading it, else by reading it).
///
/// # Errors
/// An I/O error reading it.
pub fn unchanged(dest: &Path, bytes: &[u8], known: Option<&Entry>) -> Result<Option<Entry>> {
    let Some(md) =
        fs::symlink_metadata(dest).ok().filter(|md| md.is_file() && md.len() == bytes.len() as u64)
    else {
        return Ok(None);
    };
    let sha256 = hex(&Sha256::digest(bytes));
    if known.is_some_and(|k| k.proves(&sha256, &md))
        || fs::read(dest).map_err(|e| Error::io("read", dest, e))? == bytes
    {
        return Ok(Some(Entry::of(&sha256, &md)));
    }
    Ok(None)
}

/// Makes everything written in `dest`'s filesystem durable (file data and
/// folder entries): one `syncfs` instead of an fsync per file and folder.
///
/// # Errors
/// An I/O error naming the folder.
pub fn sync_filesystem(dest: &Path) -> Result<()> {
    let f = File::open(dest).map_err(|e| Error::io("open folder", dest, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("sync the filesystem of", dest, e.into()))
}

/// `e`, about the temporary file `tmp`, told of the file it was to become
/// (`path`): the name a user knows ("cannot write DEST/catalog.json: No
/// space left on device"), the kind kept.
pub(crate) fn named_final(e: Error, tmp: &Path, path: &Path) -> Error {
    let message = e.to_string().replace(&tmp.display().to_string(), &path.display().to_string());
    Error::new(e.kind(), message)
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
        let place = |known: Option<&Entry>| place_image(&src, &dest, 6, sha, known, &stop).unwrap();
        let (placed, entry) = place(None);
        assert_eq!(placed, Placed::Linked);
        assert_eq!(place(None).0, Placed::Skipped);
        assert_eq!(place(Some(&entry)).0, Placed::Skipped);
        // A different file of the same size is replaced.
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, b"HELLO\n").unwrap();
        assert_eq!(place(Some(&entry)).0, Placed::Linked, "the entry names another inode");
        assert_eq!(fs::read(&dest).unwrap(), b"hello\n");
        // The same bytes in another file are not placed again.
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, b"hello\n").unwrap();
        assert_eq!(place(None).0, Placed::Skipped);
        let s = dir.path().join("s");
        let (written, e) = place_small(&s, b"x", None).unwrap();
        assert!(written);
        assert!(!place_small(&s, b"x", None).unwrap().0);
        assert!(!place_small(&s, b"x", Some(&e)).unwrap().0);
        assert!(place_small(&s, b"y", Some(&e)).unwrap().0);
    }
}
