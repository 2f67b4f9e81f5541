//! Small filesystem helpers: durable writes, directory sync, free space,
//! telling a network filesystem from a local one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open folder", dir, e))?;
    f.sync_all().map_err(|e| Error::io("sync folder", dir, e))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the
/// new one: a temporary file beside it, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent(path);
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("create", path, e))?;
        // Errors name the file the user knows, not its temporary name.
        f.write_all(bytes).map_err(|e| Error::io("write", path, e))?;
        f.sync_all().map_err(|e| Error::io("sync", path, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a new file that must not exist yet, durably (fsync of file and folder).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes).map_err(|e| Error::io("write", path, e))?;
    f.sync_all().map_err(|e| Error::io("sync", path, e))
}

/// A hidden name beside `path` for a temporary file, unique to this process and moment.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent(path).join(format!(".{name}.tmp-{}", unique_id()))
}

/// Whether a file name is one [`temp_sibling`] makes (`.NAME.tmp-ID`).
pub fn is_temp_sibling(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// A short identifier unique across processes and hosts sharing a tree:
/// host, process, time and a counter.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos:x}-{}", host_id(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// FNV-1a of the host name: keeps ids short and stable per host.
fn host_id() -> String {
    let host = rustix::system::uname();
    let mut h: u32 = 0x811c_9dc5;
    for &b in host.nodename().to_bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// Whether a [`temp_sibling`] name was made on this host by a process that
/// no longer runs (killed before it renamed or removed its file), so that
/// removing it takes nothing from a command still at work.
pub fn is_stale_temp_sibling(name: &str) -> bool {
    if !is_temp_sibling(name) {
        return false;
    }
    let Some((_, id)) = name.rsplit_once(".tmp-") else { return false };
    let mut parts = id.split('-');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    if host != host_id() {
        return false;
    }
    let Some(pid) = pid.parse::<i32>().ok().and_then(rustix::process::Pid::from_raw) else { return false };
    pid.as_raw_nonzero().get() != i32::try_from(std::process::id()).unwrap_or(0)
        && rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Bytes available to this user on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(|e| Error::io("query free space of", path, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Filesystem magic numbers (statfs f_type) of network and cluster filesystems,
/// where SQLite's locking is unreliable (see docs/design.md, "The index").
const NETWORK_FS_MAGIC: &[(u64, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x5346_414F, "afs"),
    (0x7375_7245, "coda"),
    (0x00C3_6400, "ceph"),
    (0x4750_4653, "gpfs"),
    (0x0BD0_0BD0, "lustre"),
    (0x0102_1997, "9p"),
    (0x6573_5546, "fuse"),
    (0x564C, "ncp"),
];

/// The name of the network filesystem holding `path`, or `None` if it is local.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    // f_type's width differs between platforms; widen without losing bits.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let magic = u64::try_from(st.f_type as i64).unwrap_or(0);
    NETWORK_FS_MAGIC.iter().find(|(m, _)| *m == magic).map(|(_, name)| *name)
}

/// Modification time of a metadata record in nanoseconds since the epoch.
pub fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000).saturating_add(md.mtime_nsec())
}

/// Change time (of the inode: contents, mode, links) in nanoseconds since the epoch.
pub fn ctime_ns(md: &fs::Metadata) -> i64 {
    md.ctime().saturating_mul(1_000_000_000).saturating_add(md.ctime_nsec())
}

/// Whether an I/O error is "the thing is not there".
pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Removes a file or a whole folder, not following symbolic links; absent is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The user and host recorded as "Added by": `$USER@host` (the uid when no name is known).
pub fn user_at_host() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic()))
        .or_else(user_name_of_uid)
        .unwrap_or_else(|| format!("uid{}", rustix::process::getuid().as_raw()));
    let uts = rustix::system::uname();
    let host = uts.nodename().to_string_lossy().into_owned();
    format!("{user}@{host}")
}

/// The account name of this process's uid, from /etc/passwd.
fn user_name_of_uid() -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let uid_field = f.nth(1)?;
        (uid_field == uid).then(|| name.to_string())
    })
}

/// What a file type is, in words, for messages ("a FIFO").
pub fn describe_type(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Opens a regular file for reading. A FIFO or device is refused without
/// blocking (opened with `O_NONBLOCK`, then checked), and a symbolic link in
/// the last component is refused unless `follow`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a link not followed or anything but a
/// regular file; an I/O error otherwise (a missing file is
/// [`ErrorKind::NotFound`]).
pub fn open_regular(path: &Path, follow: bool) -> Result<File> {
    let mut flags = libc::O_NONBLOCK;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let f = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) && !follow {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} is a symbolic link, not followed", path.display()),
            )
        } else {
            Error::io("open", path, e)
        }
    })?;
    let md = f.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is {}, not a regular file", path.display(), describe_type(md.file_type())),
        ));
    }
    // A regular file ignores O_NONBLOCK; clear it all the same so that reads
    // behave as documented everywhere.
    let _ = rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty());
    Ok(f)
}

/// Checks that `dir` is a real folder: it exists, and neither it nor any
/// folder between `root` and it is a symbolic link. `dir` must lie under `root`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the link or the entry that is not a
/// folder; an I/O error when a component cannot be inspected.
pub fn real_folder(root: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        Error::new(ErrorKind::InvalidInput, format!("{} is outside {}", dir.display(), root.display()))
    })?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        let md = fs::symlink_metadata(&at).map_err(|e| Error::io("inspect", &at, e))?;
        if md.file_type().is_symlink() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link: vmrepo does not write or delete through links in the tree",
                    at.display()
                ),
            ));
        }
        if !md.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is {}, not a folder", at.display(), describe_type(md.file_type())),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_file_is_stale_only_when_its_process_is_gone_on_this_host() {
        let mine = temp_sibling(Path::new("/x/seed.iso"));
        let mine = mine.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_temp_sibling(&mine) && !is_stale_temp_sibling(&mine), "{mine}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let dead = mine.replacen(&format!("-{}-", std::process::id()), &format!("-{gone}-"), 1);
        assert!(is_stale_temp_sibling(&dead), "{dead}");
        let elsewhere = format!(
            ".seed.iso.tmp-{}",
            dead.rsplit_once(".tmp-").unwrap().1.replacen(&host_id(), "00000000", 1)
        );
        assert!(!is_stale_temp_sibling(&elsewhere), "{elsewhere}");
        for odd in
            [".seed.iso.tmp-", ".seed.iso.tmp-zz", ".seed.iso.tmp-x-y", "seed.iso", ".a.tmp-ffffffff-0-1-2"]
        {
            assert!(!is_stale_temp_sibling(odd), "{odd}");
        }
    }
}
