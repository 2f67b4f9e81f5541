//! Where image bytes come from: a file, or memory (tests and fuzzing), and how
//! files an image references are opened.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// Random-access bytes. Reads past the end fail.
pub trait Source: Send + Sync {
    /// Length in bytes.
    fn len(&self) -> u64;

    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// The range is not inside the source, or the read fails.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Bytes allocated on the host (`st_blocks * 512` for a file).
    fn allocated(&self) -> u64 {
        self.len()
    }

    /// The start of the next data region at or after `offset` (SEEK_DATA), or
    /// `None` if only a hole remains. Sources without holes report data everywhere.
    fn next_data(&self, offset: u64) -> Option<u64> {
        (offset < self.len()).then_some(offset)
    }

    /// The end of the data region containing `offset` (SEEK_HOLE).
    fn next_hole(&self, _offset: u64) -> u64 {
        self.len()
    }

    /// A name for messages.
    fn name(&self) -> &str;
}

/// Reads `len` bytes at `offset`, checking the range against the source first
/// so that a hostile length never sizes an allocation past the file.
pub(crate) fn read_vec(src: &dyn Source, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| Error::malformed(format!("{what}: offset {offset} + length {len} overflows")))?;
    if end > src.len() {
        return Err(Error::malformed(format!(
            "{what} at offset {offset} ({len} bytes) runs past the end of the file ({} bytes)",
            src.len()
        )));
    }
    let n = usize::try_from(len).map_err(|_| Error::too_large(format!("{what}: {len} bytes")))?;
    let mut buf = vec![0u8; n];
    src.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(format!("cannot read {what} at offset {offset}"), e))?;
    Ok(buf)
}

/// Reads into `buf` at `offset`, with a message naming `what`.
pub(crate) fn read_into(src: &dyn Source, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    let end = offset.saturating_add(buf.len() as u64);
    if end > src.len() {
        return Err(Error::malformed(format!(
            "{what} at offset {offset} ({} bytes) runs past the end of the file ({} bytes)",
            buf.len(),
            src.len()
        )));
    }
    src.read_exact_at(buf, offset).map_err(|e| Error::io(format!("cannot read {what} at offset {offset}"), e))
}

/// A file opened read-only.
pub struct FileSource {
    file: File,
    len: u64,
    allocated: u64,
    /// A regular file (not a block device): only these are opened as files an
    /// image references.
    regular: bool,
    name: String,
}

/// What a file is when it is not one vmrepo opens as an image, for messages;
/// `None` for a regular file or a block device.
fn not_an_image_file(ft: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() || ft.is_block_device() {
        None
    } else if ft.is_dir() {
        Some("a folder")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("neither a regular file nor a block device")
    }
}

fn symlink_refused(path: &Path) -> Error {
    Error::new(ErrorKind::Refused, format!("{} is a symbolic link, not followed", path.display()))
}

/// Opens `path` read-only if it is a regular file or a block device, without
/// following a symbolic link in its last component, and without ever waiting:
/// a FIFO, a socket, a character device or a folder is refused before any read.
/// The file returned is in blocking mode.
///
/// # Errors
/// [`ErrorKind::NotAFile`] for a FIFO, socket, character device or folder,
/// [`ErrorKind::Refused`] for a symbolic link, [`ErrorKind::Io`] when the file
/// cannot be opened.
pub fn open_file(path: &Path) -> Result<File> {
    open_checked(path, &|what| {
        Error::new(
            ErrorKind::NotAFile,
            format!(
                "{} is {what}, not a disk image file (vmrepo reads regular files and block devices)",
                path.display()
            ),
        )
    })
}

/// [`open_file`], with `refuse(what the file is)` as the error for a file of
/// the wrong type.
fn open_checked(path: &Path, refuse: &dyn Fn(&str) -> Error) -> Result<File> {
    let cannot = |what: &str, e: io::Error| Error::io(format!("cannot {what} {}", path.display()), e);
    // Looked at before it is opened: opening a FIFO waits for a writer, and
    // opening a device can act (a tape rewinds, a watchdog arms).
    let md = std::fs::symlink_metadata(path).map_err(|e| cannot("open", e))?;
    if md.file_type().is_symlink() {
        return Err(symlink_refused(path));
    }
    if let Some(what) = not_an_image_file(md.file_type()) {
        return Err(refuse(what));
    }
    // Something else may have been put at the path since: O_NONBLOCK makes
    // opening a FIFO return at once, O_NOCTTY keeps a terminal from becoming
    // ours, and the type is checked again on what was opened.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) { symlink_refused(path) } else { cannot("open", e) }
        })?;
    let md = file.metadata().map_err(|e| cannot("read", e))?;
    if let Some(what) = not_an_image_file(md.file_type()) {
        return Err(refuse(what));
    }
    // Reads from a busy block device wait rather than fail with EAGAIN.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| cannot("read the flags of", e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags.difference(rustix::fs::OFlags::NONBLOCK))
        .map_err(|e| cannot("set the flags of", e.into()))?;
    Ok(file)
}

impl FileSource {
    /// Opens `path` read-only (see [`open_file`]): a regular file or a block device.
    ///
    /// # Errors
    /// As [`open_file`], or the size of a block device cannot be read.
    pub fn open(path: &Path) -> Result<FileSource> {
        FileSource::from_file(open_file(path)?, path)
    }

    fn from_file(file: File, path: &Path) -> Result<FileSource> {
        let md = file.metadata().map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        let len = if md.is_file() {
            md.len()
        } else {
            // A block device: its size is where seeking to the end lands.
            rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::End(0))
                .map_err(|e| Error::io(format!("cannot size {}", path.display()), e.into()))?
        };
        Ok(FileSource {
            file,
            len,
            allocated: md.blocks().saturating_mul(512),
            regular: md.is_file(),
            name: path.display().to_string(),
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn allocated(&self) -> u64 {
        self.allocated
    }

    fn next_data(&self, offset: u64) -> Option<u64> {
        if offset >= self.len {
            return None;
        }
        match rustix::fs::seek(self.file.as_fd(), rustix::fs::SeekFrom::Data(offset)) {
            Ok(p) if p < self.len => Some(p),
            Ok(_) | Err(rustix::io::Errno::NXIO) => None,
            Err(_) => Some(offset),
        }
    }

    fn next_hole(&self, offset: u64) -> u64 {
        match rustix::fs::seek(self.file.as_fd(), rustix::fs::SeekFrom::Hole(offset)) {
            Ok(p) if p > offset => p.min(self.len),
            _ => self.len,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Bytes in memory, for tests and fuzzing.
pub struct MemSource {
    data: Vec<u8>,
    name: String,
}

impl MemSource {
    /// Wraps `data`.
    pub fn new(data: Vec<u8>, name: &str) -> MemSource {
        MemSource { data, name: name.to_string() }
    }
}

impl Source for MemSource {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.data.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Opens the files an image references (VMDK extents, a qcow2 data file or
/// backing file), or refuses to.
pub trait Resolver: Send + Sync {
    /// Opens the file `name` as the image's text writes it.
    ///
    /// # Errors
    /// [`ErrorKind::NeedsReferenced`] when following is off,
    /// [`ErrorKind::Refused`] for a name outside the image's folder.
    fn open(&self, name: &str, role: &str) -> Result<Arc<dyn Source>>;

    /// The size of the referenced file if it can be known without opening it
    /// for reading (for `info`), or `None`.
    fn allocated(&self, name: &str) -> Option<u64>;

    /// The resolver for the references of the referenced file `name` (a
    /// backing file's own backing file): one level deeper in the chain.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`] past [`MAX_CHAIN_DEPTH`], [`ErrorKind::Malformed`]
    /// for a loop, as [`Resolver::open`] otherwise.
    fn descend(&self, name: &str) -> Result<Box<dyn Resolver>>;
}

/// How many referenced files deep a chain (backing file of a backing file ...) is followed.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Refuses every referenced file (fuzzing, in-memory images).
pub struct NoResolver;

impl Resolver for NoResolver {
    fn open(&self, name: &str, role: &str) -> Result<Arc<dyn Source>> {
        Err(Error::new(ErrorKind::NeedsReferenced, format!("the {role} {name:?} is not opened here")))
    }

    fn allocated(&self, _name: &str) -> Option<u64> {
        None
    }

    fn descend(&self, name: &str) -> Result<Box<dyn Resolver>> {
        Err(Error::new(ErrorKind::NeedsReferenced, format!("the backing file {name:?} is not opened here")))
    }
}

/// Opens referenced files in the image's own folder only, and only when
/// `follow` is on; never through a symbolic link, never with a path.
pub struct FolderResolver {
    dir: PathBuf,
    follow: bool,
    /// The files opened down the chain so far, to stop loops.
    chain: Vec<String>,
}

impl FolderResolver {
    /// For an image at `image_path`.
    pub fn new(image_path: &Path, follow: bool) -> FolderResolver {
        let dir = match image_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let top = image_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        FolderResolver { dir, follow, chain: vec![top] }
    }

    fn path(&self, name: &str, role: &str) -> Result<PathBuf> {
        // Only a bare file name: no folder part, no '..', nothing absolute.
        let bare = !name.is_empty() && !name.contains(['/', '\\', '\0']) && name != "." && name != "..";
        if !bare {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the {role} {name:?} is not a file in the image's own folder; vmrepo does not open it"
                ),
            ));
        }
        Ok(self.dir.join(name))
    }
}

impl Resolver for FolderResolver {
    fn open(&self, name: &str, role: &str) -> Result<Arc<dyn Source>> {
        let path = self.path(name, role)?;
        if !self.follow {
            return Err(Error::new(
                ErrorKind::NeedsReferenced,
                format!(
                    "reading needs the {role} {name:?}; pass --follow to open files the image references"
                ),
            ));
        }
        // A referenced file is data of the image: a regular file, never a
        // device or a FIFO put in the image's folder.
        let refuse = |what: &str| {
            Error::new(
                ErrorKind::Refused,
                format!("the {role} {name:?} is {what}, not a regular file; vmrepo does not open it"),
            )
        };
        let src = FileSource::from_file(open_checked(&path, &refuse)?, &path)?;
        if !src.regular {
            return Err(refuse("a block device"));
        }
        Ok(Arc::new(src))
    }

    fn allocated(&self, name: &str) -> Option<u64> {
        let path = self.path(name, "file").ok()?;
        let md = std::fs::symlink_metadata(path).ok()?;
        md.is_file().then(|| md.blocks().saturating_mul(512))
    }

    fn descend(&self, name: &str) -> Result<Box<dyn Resolver>> {
        if self.chain.len() > MAX_CHAIN_DEPTH {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("backing files more than {MAX_CHAIN_DEPTH} deep"),
            ));
        }
        if self.chain.iter().any(|n| n == name) {
            return Err(Error::malformed(format!("the backing chain loops back to {name:?}")));
        }
        let mut chain = self.chain.clone();
        chain.push(name.to_string());
        Ok(Box::new(FolderResolver { dir: self.dir.clone(), follow: self.follow, chain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// How long an open may take before the test calls it blocked: far more
    /// than any open of a local file takes, so that only a hang fails.
    const BLOCKED: Duration = Duration::from_secs(30);

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    }

    /// Opens `path` on another thread, so that an open that waits fails the
    /// test instead of hanging it.
    fn open_bounded(path: &Path) -> Result<FileSource> {
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(FileSource::open(&p));
        });
        rx.recv_timeout(BLOCKED).unwrap_or_else(|_| panic!("opening {} blocked", path.display()))
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sl5.3_x86_64_sl08e_8GB.qcow2");
        mkfifo(&fifo);
        let e = open_bounded(&fifo).err().expect("a FIFO is not an image file");
        assert_eq!(e.kind(), ErrorKind::NotAFile, "{e}");
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        // With a writer holding it open, opening would not wait: still refused.
        let _writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert_eq!(open_bounded(&fifo).err().map(|e| e.kind()), Some(ErrorKind::NotAFile));
    }

    #[test]
    fn only_regular_files_and_block_devices_are_opened() {
        for dev in ["/dev/zero", "/dev/null"] {
            let e = open_bounded(Path::new(dev)).err().expect("a character device is not an image file");
            assert_eq!(e.kind(), ErrorKind::NotAFile, "{dev}: {e}");
            assert!(e.to_string().contains("character device"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open_bounded(dir.path()).err().map(|e| e.kind()), Some(ErrorKind::NotAFile));
        let file = dir.path().join("disk.img");
        std::fs::write(&file, [7u8; 4096]).unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(open_bounded(&link).err().map(|e| e.kind()), Some(ErrorKind::Refused));
        let src = open_bounded(&file).unwrap();
        assert_eq!(src.len(), 4096);
        // Opened without waiting, then put back in blocking mode for reading.
        let flags = rustix::fs::fcntl_getfl(&src.file).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK), "{flags:?}");
        let mut b = [0u8; 8];
        src.read_exact_at(&mut b, 100).unwrap();
        assert_eq!(b, [7u8; 8]);
    }

    #[test]
    fn a_referenced_file_must_be_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.vmdk");
        mkfifo(&dir.path().join("disk-flat.vmdk"));
        let resolver = FolderResolver::new(&image, true);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(resolver.open("disk-flat.vmdk", "extent").map(|_| ()));
        });
        let e = rx.recv_timeout(BLOCKED).expect("opening the extent blocked").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
        assert!(e.to_string().contains("\"disk-flat.vmdk\" is a FIFO, not a regular file"), "{e}");
    }
}
