//! Where a command may write a file the user names (`cat -o OUT`): never
//! over what it reads, never into a repository's images, never over an
//! existing file or disk without `--force` (a character device or a FIFO,
//! such as `/dev/null`, is written as it is), and never a half-written file
//! under the name: a new file is written under a temporary name beside it and
//! renamed into place once complete.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use vmrepo_repo::{Error, ErrorKind, fsutil, layout};

/// Where the output goes.
pub enum Target {
    /// An existing character device or FIFO, or a block device named with
    /// `--force`: written in order.
    Device(File),
    /// A file written under a temporary name, renamed into place by
    /// [`TempOut::persist`].
    New(TempOut),
}

/// A file being written under a temporary name; removed if dropped before
/// [`TempOut::persist`].
pub struct TempOut {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    done: bool,
}

impl TempOut {
    /// A new temporary file beside `dest` (`.NAME.tmp-ID`), after removing
    /// those a killed run of the same name left.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn beside(dest: PathBuf) -> Result<TempOut> {
        let dir = fsutil::parent(&dest).to_path_buf();
        if let Some(name) = dest.file_name() {
            remove_stale_temporaries(&dir, &name.to_string_lossy());
        }
        let tmp = fsutil::temp_sibling(&dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        Ok(TempOut { tmp, dest, file, done: false })
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the complete file its name. It is not synced to the disk:
    /// the output is the user's copy outside any repository, written like
    /// `qemu-img convert` and `cp` write theirs (syncing 1 GiB doubles the
    /// time of a `cat`); `sync` makes it durable.
    ///
    /// # Errors
    /// The rename fails (the temporary file is then removed).
    pub fn persist(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("rename into place", &self.dest, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn refuse(kind: ErrorKind, msg: String) -> anyhow::Error {
    Error::new(kind, msg).into()
}

impl Target {
    /// Decides how to write `out`, refusing what must not be written.
    ///
    /// # Errors
    /// `out` is one of `inputs` (also through a link), lies in a repository's
    /// `vm/` or `.vmrepo/` ([`ErrorKind::InvalidInput`]), is an existing file
    /// or block device and `force` is not given ([`ErrorKind::AlreadyExists`]),
    /// is a folder, or its folder does not exist.
    pub fn choose(out: &Path, force: bool, inputs: &[PathBuf]) -> Result<Target> {
        let name = out.file_name().ok_or_else(|| {
            refuse(ErrorKind::InvalidInput, format!("{}: not a file name to write to", out.display()))
        })?;
        let dir = fsutil::parent(out);
        let dir = dir.canonicalize().map_err(|e| Error::io("find the folder of", out, e))?;
        let dest = dir.join(name);
        if let Some(root) = layout::repository_containing(&dir)
            && (dest.starts_with(root.join(layout::VM_DIR)) || dest.starts_with(root.join(layout::META_DIR)))
        {
            return Err(refuse(
                ErrorKind::InvalidInput,
                format!(
                    "{} is inside the repository {}: vmrepo never writes there but through add",
                    out.display(),
                    root.display()
                ),
            ));
        }
        // The same file under another name or through a link is still the input.
        if let Ok(md) = fs::metadata(&dest) {
            for input in inputs {
                if let Ok(imd) = fs::metadata(input)
                    && imd.dev() == md.dev()
                    && imd.ino() == md.ino()
                {
                    return Err(refuse(
                        ErrorKind::InvalidInput,
                        format!(
                            "{} is {}, which is being read: choose another output",
                            out.display(),
                            input.display()
                        ),
                    ));
                }
            }
        }
        match fs::symlink_metadata(&dest) {
            Ok(lmd) if lmd.is_dir() => {
                return Err(refuse(ErrorKind::InvalidInput, format!("{} is a folder", out.display())));
            }
            Ok(_) => {
                let ft = fs::metadata(&dest).map(|m| m.file_type()).ok();
                // A character device or a FIFO (/dev/null, a pipe) stores
                // nothing that could be lost; a disk or a file needs --force.
                if ft.is_some_and(|t| t.is_char_device() || t.is_fifo())
                    || force && ft.is_some_and(|t| t.is_block_device())
                {
                    return Ok(Target::Device(open_device(&dest)?));
                }
                if !force {
                    return Err(refuse(
                        ErrorKind::AlreadyExists,
                        format!("{} exists: pass --force to overwrite it", out.display()),
                    ));
                }
            }
            Err(_) => {}
        }
        Ok(Target::New(TempOut::beside(dest)?))
    }
}

/// Removes the temporary files an earlier `cat -o` or `convert -o` of the
/// same name left when it was killed (`.NAME.tmp-ID` of a process gone from
/// this host); a command still at work keeps its own.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix)
            && fsutil::is_stale_temp_sibling(&n)
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Opens a device or FIFO for writing without waiting for a reader.
fn open_device(path: &Path) -> Result<File> {
    let f = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) {
            Error::new(ErrorKind::Io, format!("{} is a FIFO that nothing reads", path.display()))
        } else {
            Error::io("open", path, e)
        }
    })?;
    // Writes then wait for the device or reader as usual.
    rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())
        .map_err(|e| Error::io("open", path, e.into()))?;
    Ok(f)
}
