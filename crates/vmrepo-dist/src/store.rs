//! Where publish writes: a folder (a web server's root) or an S3 bucket
//! (`s3://bucket/prefix`, [`crate::s3`]), behind one interface: take the
//! destination's lock, read a small file back (the previous catalog, for its
//! serial), place an image, write a small file, and write the exports of a
//! stage in order.
//!
//! In a folder every file appears under its name by a rename, complete and
//! fsynced ([`crate::place`]). In a bucket an image is a multipart upload
//! completed only once its SHA-256 is proved, and every small file one PUT:
//! S3 has no rename, but makes an object visible whole or not at all, which
//! is what readers need. The order of a stage's files is kept in both.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

use crate::export::OutFile;
use crate::key;
use crate::ledger::{self, LEDGER_FILE, Ledger, MAX_LEDGER_FILE};
use crate::place::{self, Placed};
use crate::s3::{self, Bucket};

/// The lock file (or object) that keeps two publishes from choosing the same serial.
pub const LOCK_FILE: &str = ".vmrepo-publish.lock";
/// The folder under the repository's `.vmrepo/` with the multipart uploads under way.
pub const UPLOADS_DIR: &str = "publish-s3";
/// The most objects listed under a bucket's `vm/` (four per image: the
/// image, its `.checksum`, `.txt` and Metalink file).
const MAX_LISTED: usize = 4_000_000;

/// A publish destination.
pub enum Store {
    /// A folder on this machine.
    Folder(PathBuf),
    /// A bucket and prefix; `uploads` is where multipart uploads under way are recorded.
    S3 { bucket: Bucket, uploads: PathBuf },
}

/// The destination's lock, held until dropped.
pub enum Lock<'a> {
    Folder(#[allow(dead_code)] File),
    S3 { bucket: &'a Bucket, token: Vec<u8> },
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if let Lock::S3 { bucket, token } = self {
            // Only our own lock is removed (not one taken over meanwhile).
            if bucket.get_small(LOCK_FILE, 4096).ok().flatten().as_deref() == Some(token.as_slice())
                && let Err(e) = bucket.delete(LOCK_FILE)
            {
                tracing::warn!("{e}");
            }
        }
    }
}

impl Store {
    /// The destination `dest`: `s3://bucket[/prefix]`, or a folder (made if
    /// needed, never inside a repository). `meta_dir` is the publishing
    /// repository's `.vmrepo/`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a folder inside a repository, a path
    /// that is not a folder, a bad bucket URL; I/O errors.
    pub fn open(dest: &Path, meta_dir: &Path) -> Result<Store> {
        if let Some(url) = dest.to_str().filter(|d| d.starts_with(s3::SCHEME)) {
            return Ok(Store::S3 { bucket: Bucket::open(url)?, uploads: meta_dir.join(UPLOADS_DIR) });
        }
        Store::folder(dest)
    }

    /// The folder `dest` (made if needed, never inside a repository), never a bucket.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a folder inside a repository or a
    /// path that is not a folder; I/O errors.
    pub fn folder(dest: &Path) -> Result<Store> {
        if let Some(root) = key::inside_repository(dest) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: inside the repository {}: publish to a folder of its own",
                    dest.display(),
                    root.display()
                ),
            ));
        }
        // Something that is there and no folder (a FIFO, a file) is named as such, not "File exists".
        if let Ok(md) = fs::metadata(dest)
            && !md.is_dir()
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: {}, not a folder", dest.display(), fsutil::describe_type(md.file_type())),
            ));
        }
        fs::create_dir_all(dest).map_err(|e| Error::io("create the folder", dest, e))?;
        let md = fs::metadata(dest).map_err(|e| Error::io("read", dest, e))?;
        if !md.is_dir() {
            return Err(Error::new(ErrorKind::InvalidInput, format!("{}: not a folder", dest.display())));
        }
        Ok(Store::Folder(dest.to_path_buf()))
    }

    /// The destination as the user names it.
    pub fn display(&self) -> String {
        match self {
            Store::Folder(p) => p.display().to_string(),
            Store::S3 { bucket, .. } => bucket.url(),
        }
    }

    /// Where `rel` is, for messages.
    pub fn location(&self, rel: &str) -> String {
        match self {
            Store::Folder(p) => p.join(rel).display().to_string(),
            Store::S3 { bucket, .. } => bucket.location(rel),
        }
    }

    /// Takes the destination's lock: in a folder an exclusive `flock`; in a
    /// bucket an object created only if absent (`If-None-Match: *`) naming
    /// this host and process, removed when dropped. A lock object left by a
    /// publish of this host whose process is gone is taken over.
    ///
    /// # Errors
    /// [`ErrorKind::Locked`] while another publish holds it.
    pub fn lock(&self) -> Result<Lock<'_>> {
        match self {
            Store::Folder(dest) => {
                let path = dest.join(LOCK_FILE);
                // Neither through a link (out of DEST) nor blocking on a FIFO.
                let f = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path)
                    .map_err(|e| {
                        if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) {
                            not_regular(&path)
                        } else {
                            Error::io("open", &path, e)
                        }
                    })?;
                if !f.metadata().is_ok_and(|md| md.is_file()) {
                    return Err(not_regular(&path));
                }
                rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
                    |_| {
                        Error::new(
                            ErrorKind::Locked,
                            format!("{}: another vmrepo publish is writing there", dest.display()),
                        )
                    },
                )?;
                Ok(Lock::Folder(f))
            }
            Store::S3 { bucket, .. } => lock_bucket(bucket),
        }
    }

    /// Removes what a publish killed in the middle left: in a folder its
    /// temporary files (a web server would serve them). In a bucket a killed
    /// upload is invisible and is resumed: see [`Store::forget_uploads_but`].
    pub fn remove_dead_temps(&self) {
        if let Store::Folder(dest) = self {
            remove_dead_temps(dest);
        }
    }

    /// Aborts the multipart uploads a killed publish to this bucket left for
    /// objects other than `keep` (relative paths). Nothing for a folder.
    pub fn forget_uploads_but(&self, keep: &[String]) {
        if let Store::S3 { bucket, uploads } = self {
            bucket.abort_stale(uploads, keep);
        }
    }

    /// The whole of `rel`, at most `cap` bytes; `None` when absent.
    ///
    /// # Errors
    /// One line naming the file: it cannot be read, or it is larger than `cap`.
    pub fn read_small(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        match self {
            Store::Folder(dest) => {
                let path = dest_path(dest, rel)?;
                match fs::symlink_metadata(&path) {
                    Err(e) if fsutil::is_not_found(&e) => Ok(None),
                    _ => vmrepo_repo::catalog::read_capped(&path, cap).map(Some).map_err(|e| {
                        Error::new(ErrorKind::BadSidecar, format!("cannot read {}: {e}", path.display()))
                    }),
                }
            }
            Store::S3 { bucket, .. } => bucket.get_small(rel, cap),
        }
    }

    /// Puts the image `src` (`size` bytes, SHA-256 `sha256` as recorded) at
    /// `rel`, unless the same bytes are there.
    ///
    /// # Errors
    /// [`ErrorKind::BadImage`] when `src` no longer has its recorded SHA-256;
    /// I/O and network errors; an interruption.
    pub fn put_image(
        &self,
        src: &Path,
        rel: &str,
        size: u64,
        sha256: &str,
        cancel: &AtomicBool,
    ) -> Result<Placed> {
        match self {
            Store::Folder(dest) => {
                let path = self.folder_for(dest, rel)?;
                place::place_image(src, &path, size, sha256, None, cancel).map(|(placed, _)| placed)
            }
            Store::S3 { bucket, uploads } => bucket.upload(src, rel, size, sha256, uploads, cancel),
        }
    }

    /// Writes a small file (a sidecar, a Metalink file) at `rel`, whole,
    /// unless it already has these bytes. Returns whether it was written.
    ///
    /// # Errors
    /// I/O and network errors naming the file.
    pub fn put_small(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        match self {
            Store::Folder(dest) => {
                place::place_small(&self.folder_for(dest, rel)?, bytes, None).map(|(written, _)| written)
            }
            Store::S3 { bucket, .. } => bucket.put_small(rel, bytes),
        }
    }

    /// Writes the files of one stage, in their order. In a folder all are
    /// written complete and fsynced under temporary names first, then
    /// renamed in order and the folders fsynced; in a bucket each is one PUT,
    /// in order. A file that already has its bytes is left alone (its
    /// modification time too, for web caches).
    ///
    /// # Errors
    /// I/O and network errors naming the file; nothing of the stage is
    /// renamed into a folder then.
    pub fn write_stage(&self, files: &[&OutFile]) -> Result<()> {
        match self {
            Store::Folder(dest) => write_stage_folder(dest, files),
            Store::S3 { bucket, .. } => {
                for f in files {
                    dest_path(Path::new(""), &f.path)?;
                    bucket.put_small(&f.path, &f.bytes)?;
                }
                Ok(())
            }
        }
    }

    /// What earlier publishes placed here ([`Ledger`]): in a folder
    /// `DEST/.vmrepo-publish.json`, in a bucket the object of that name under
    /// the prefix. An empty one when there is none (or, in a folder, one
    /// that cannot be read, with a warning).
    ///
    /// # Errors
    /// In a bucket, a network or permission error naming the object (the
    /// publish stops rather than forget what it placed).
    pub fn load_ledger(&self) -> Result<Ledger> {
        match self {
            Store::Folder(dest) => Ok(Ledger::load(dest)),
            Store::S3 { bucket, .. } => Ok(match bucket.get_small(LEDGER_FILE, MAX_LEDGER_FILE)? {
                Some(bytes) => Ledger::parse(&bytes, &bucket.location(LEDGER_FILE)),
                None => Ledger::default(),
            }),
        }
    }

    /// Writes the ledger whole: in a folder by a rename, in a bucket by one PUT.
    ///
    /// # Errors
    /// I/O and network errors naming it.
    pub fn save_ledger(&self, ledger: &mut Ledger) -> Result<()> {
        match self {
            Store::Folder(dest) => ledger.save(dest),
            Store::S3 { bucket, .. } => bucket.put_small(LEDGER_FILE, &ledger.to_bytes()?).map(|_| ()),
        }
    }

    /// Removes the files `rels` (paths of publish's shape, `vm/<VM>/<file>`,
    /// that the ledger names and no live catalog does). In a folder only
    /// regular files in real folders ([`ledger::remove_placed`]), then their
    /// folders are fsynced; in a bucket only objects a listing of `vm/`
    /// shows. Returns how many were removed.
    ///
    /// # Errors
    /// I/O and network errors naming the file.
    pub fn remove_placed(&self, rels: &[&str]) -> Result<usize> {
        let rels: Vec<&str> = rels.iter().copied().filter(|r| ledger::is_placed_path(r)).collect();
        if rels.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        match self {
            Store::Folder(dest) => {
                let mut dirs = BTreeSet::new();
                for rel in rels {
                    if ledger::remove_placed(dest, rel)? {
                        removed += 1;
                        dirs.insert(fsutil::parent(&dest.join(rel)).to_path_buf());
                    }
                }
                // An image folder emptied of its files goes too (only when
                // empty: a file a person put there keeps it).
                let vm_dir = dest.join(vmrepo_repo::layout::VM_DIR);
                let emptied: Vec<PathBuf> = dirs
                    .iter()
                    .filter(|d| d.parent().and_then(Path::parent) == Some(vm_dir.as_path()))
                    .cloned()
                    .collect();
                for d in emptied {
                    if fsutil::real_folder(dest, &d).is_ok() && fs::remove_dir(&d).is_ok() {
                        dirs.remove(&d);
                        dirs.insert(fsutil::parent(&d).to_path_buf());
                    }
                }
                for d in dirs {
                    fsutil::fsync_dir(&d)?;
                }
            }
            Store::S3 { bucket, .. } => {
                let there = bucket.list(vmrepo_repo::layout::VM_DIR, MAX_LISTED)?;
                let gone: Vec<&str> = rels.into_iter().filter(|r| there.contains(*r)).collect();
                bucket.delete_all(&gone)?;
                removed = gone.len();
            }
        }
        Ok(removed)
    }

    /// `dest/rel` in a folder made if needed, and a real folder (no link) under `dest`.
    pub(crate) fn folder_for(&self, dest: &Path, rel: &str) -> Result<PathBuf> {
        let path = dest_path(dest, rel)?;
        make_real_folder(dest, fsutil::parent(&path))?;
        Ok(path)
    }
}

/// The lock object in a bucket: created only if absent.
fn lock_bucket(bucket: &Bucket) -> Result<Lock<'_>> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let pid = std::process::id();
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let token = format!("vmrepo publish lock\nhost: {host}\npid: {pid}\nsince: {now}\n").into_bytes();
    for _ in 0..2 {
        if bucket.create(LOCK_FILE, &token)? {
            return Ok(Lock::S3 { bucket, token });
        }
        let held = bucket.get_small(LOCK_FILE, 4096).ok().flatten().unwrap_or_default();
        let held = String::from_utf8_lossy(&held).into_owned();
        let field = |name: &str| {
            held.lines().find_map(|l| l.strip_prefix(name).map(str::trim)).unwrap_or("?").to_string()
        };
        let (their_host, their_pid) = (field("host:"), field("pid:"));
        // A lock of this host whose process is gone: a killed publish's.
        let dead = !host.is_empty()
            && their_host == host
            && their_pid.parse::<u32>().is_ok_and(|p| p != pid && !Path::new(&format!("/proc/{p}")).exists());
        if !dead {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{}: another vmrepo publish is writing there (host {their_host}, pid {their_pid}, since {}); \
                     if none is, delete that object",
                    bucket.location(LOCK_FILE),
                    field("since:")
                ),
            ));
        }
        tracing::warn!(
            "{}: taking over the lock of a publish that ended (pid {their_pid})",
            bucket.location(LOCK_FILE)
        );
        bucket.delete(LOCK_FILE)?;
    }
    Err(Error::new(
        ErrorKind::Locked,
        format!("{}: another vmrepo publish took the lock", bucket.location(LOCK_FILE)),
    ))
}

/// Removes the temporary files a publish killed in the middle left in DEST
/// and its `vm/<VM>/` folders: under DEST's lock no other publish writes
/// there, so every such file is dead, and a web server would serve it.
/// Links are neither followed nor removed; what cannot be removed is left
/// with a warning.
fn remove_dead_temps(dest: &Path) {
    // DEST, the exports' folders (simplestreams' streams/v1) and vm/<VM>/.
    let mut folders = vec![dest.to_path_buf(), dest.join("streams/v1")];
    let vm = dest.join(vmrepo_repo::layout::VM_DIR);
    if fsutil::real_folder(dest, &vm).is_ok()
        && let Ok(vms) = fs::read_dir(&vm)
    {
        folders.extend(vms.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
    }
    // And the image folders in them (vm/<VM>/<name>/), links not followed.
    let image_folders: Vec<PathBuf> = folders
        .iter()
        .skip(2)
        .filter_map(|vm| fs::read_dir(vm).ok())
        .flat_map(|d| d.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()))
        .collect();
    folders.extend(image_folders);
    for folder in folders {
        // Nothing is removed through a link (out of DEST).
        if fsutil::real_folder(dest, &folder).is_err() {
            continue;
        }
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_file())
                && fsutil::is_temp_sibling(&name.to_string_lossy())
                && let Err(err) = fs::remove_file(e.path())
            {
                tracing::warn!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

/// A stage's files into a folder: all complete and fsynced under temporary
/// names, then renamed in their order, then the folders fsynced.
fn write_stage_folder(dest: &Path, files: &[&OutFile]) -> Result<()> {
    let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| {
        for f in files {
            let path = dest_path(dest, &f.path)?;
            let same_len =
                fs::symlink_metadata(&path).is_ok_and(|md| md.is_file() && md.len() == f.bytes.len() as u64);
            if same_len && fs::read(&path).is_ok_and(|b| b == f.bytes) {
                continue;
            }
            make_real_folder(dest, fsutil::parent(&path))?;
            let tmp = fsutil::temp_sibling(&path);
            pending.push((tmp.clone(), path.clone()));
            fsutil::write_new(&tmp, &f.bytes, 0o644).map_err(|e| place::named_final(e, &tmp, &path))?;
        }
        let mut dirs = BTreeSet::new();
        for (tmp, path) in &pending {
            fs::rename(tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
            dirs.insert(fsutil::parent(path).to_path_buf());
        }
        for d in dirs {
            fsutil::fsync_dir(&d)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &pending {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// Makes `dir` (under `root`, which exists) one folder at a time, each
/// checked before the next is made in it: a link on the way is refused
/// before anything is made through it (`create_dir_all` would follow it out
/// of DEST).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the link or the entry that is not a
/// folder; I/O errors (a full disk: [`ErrorKind::NoSpace`]).
pub(crate) fn make_real_folder(root: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        Error::new(ErrorKind::InvalidInput, format!("{} is outside {}", dir.display(), root.display()))
    })?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create the folder", &at, e)),
        }
        // What is there now (made here or before) must be a real folder.
        fsutil::real_folder(fsutil::parent(&at), &at)?;
    }
    Ok(())
}

fn not_regular(path: &Path) -> Error {
    let what =
        fs::symlink_metadata(path).map_or("not a regular file", |md| fsutil::describe_type(md.file_type()));
    Error::new(ErrorKind::InvalidInput, format!("{}: {what}, not a regular file", path.display()))
}

/// DEST joined with a relative path, which must be made of plain names (no
/// `..`, no absolute path, no empty part).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the path.
pub fn dest_path(dest: &Path, rel: &str) -> Result<PathBuf> {
    let ok = !rel.is_empty() && rel.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !ok {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{rel:?}: not a path an export writes")));
    }
    Ok(dest.join(rel))
}
