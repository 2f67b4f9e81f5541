//! Reading files of an ext2/3/4 filesystem through ext4-view: paths and
//! symbolic links resolve inside the filesystem only (an absolute link or
//! `..` at the root stays at the root), links loop at most 40 times, and
//! every read is capped.

use std::sync::Arc;

use ext4_view::{Ext4, FileType};
use vmrepo_format::bytes::{le16, le32};

use crate::error::{Error, Result};
use crate::view::{Dev, Ext4Source};

/// The largest configuration file read whole (os-release, passwd, grub.cfg ...).
pub const MAX_SMALL_FILE: u64 = 1 << 20;
/// Entries listed from one directory at most.
pub const MAX_DIR_ENTRIES: usize = 10_000;
/// Symbolic links followed in resolving one path at most (Linux's limit).
pub const MAX_LINKS: usize = 40;
/// The longest link target read (PATH_MAX): a link inode claiming more is
/// refused before ext4-view sizes a buffer from it.
pub const MAX_LINK_LEN: u64 = 4096;
/// Block groups of a filesystem opened at most: ext4-view holds every group
/// descriptor in memory (2^20 groups are 128 TiB of 4 KiB blocks).
pub const MAX_BLOCK_GROUPS: u64 = 1 << 20;

/// An ext2/3/4 filesystem opened for reading.
pub struct ExtFs {
    fs: Ext4,
}

/// What kind of thing a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

fn kind(t: FileType) -> Kind {
    match t {
        FileType::Regular => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Link,
        _ => Kind::Other,
    }
}

/// Refuses a superblock whose block groups could not all be on the device,
/// or are more than [`MAX_BLOCK_GROUPS`], before ext4-view sizes its
/// descriptor table from them.
fn check_groups(dev: &dyn Dev) -> Result<()> {
    let Some(sb) = crate::view::read_vec(dev, 1024, 1024)? else {
        return Err(Error::new("ext filesystem: the device is shorter than a superblock"));
    };
    let is64 = le32(&sb, 0x60) & 0x80 != 0;
    // ext4-view takes the high half whatever the 64bit flag says: so does this check.
    let blocks = u64::from(le32(&sb, 0x04)) | u64::from(le32(&sb, 0x150)) << 32;
    let first = u64::from(le32(&sb, 0x14));
    let per_group = u64::from(le32(&sb, 0x20));
    let desc_size = if is64 { u64::from(le16(&sb, 0xfe)).max(32) } else { 32 };
    if per_group == 0 {
        return Err(Error::new("ext filesystem: the superblock gives no blocks per group"));
    }
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    if groups > MAX_BLOCK_GROUPS || groups.saturating_mul(desc_size) > dev.len() {
        return Err(Error::new(format!(
            "ext filesystem: the superblock's {blocks} blocks make {groups} block groups, more than \
             the device ({} bytes) can describe or {MAX_BLOCK_GROUPS} at most",
            dev.len()
        )));
    }
    Ok(())
}

impl ExtFs {
    /// Opens the filesystem on `dev`.
    ///
    /// # Errors
    /// ext4-view refuses it (corrupt, or a feature it does not read).
    pub fn open(dev: Arc<dyn Dev>) -> Result<ExtFs> {
        check_groups(dev.as_ref())?;
        let fs =
            Ext4::load(Box::new(Ext4Source(dev))).map_err(|e| Error::new(format!("ext filesystem: {e}")))?;
        Ok(ExtFs { fs })
    }

    /// `path` with every symbolic link resolved by this code, inside the
    /// filesystem (an absolute target or `..` at the root stays at the
    /// root), at most [`MAX_LINKS`] links and [`MAX_LINK_LEN`] bytes each;
    /// the last component's link followed when `follow_last`. ext4-view is
    /// then only ever given paths without links in them. `None`: a component
    /// is missing, not a directory, or a link is too long or loops.
    fn resolve(&self, path: &str, follow_last: bool) -> Option<String> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let candidate =
                format!("/{}", done.iter().chain(std::iter::once(&c)).cloned().collect::<Vec<_>>().join("/"));
            let last = todo.iter().all(|t| t.is_empty() || t == ".");
            let m = self.fs.symlink_metadata(candidate.as_str()).ok()?;
            match m.file_type() {
                FileType::Symlink if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS || m.len() > MAX_LINK_LEN {
                        return None;
                    }
                    let target = self.fs.read_link(candidate.as_str()).ok()?;
                    let target = target.to_str().ok()?;
                    if target.starts_with('/') {
                        done.clear();
                    }
                    todo.extend(target.split('/').rev().map(str::to_string));
                }
                FileType::Directory => done.push(c),
                _ if last => done.push(c),
                _ => return None,
            }
        }
        Some(format!("/{}", done.join("/")))
    }

    /// The path `path` names once every link in it is followed, if it exists.
    pub fn real_path(&self, path: &str) -> Option<String> {
        self.resolve(path, true)
    }

    /// The length and kind of what `path` names (links followed), if it exists.
    pub fn stat(&self, path: &str) -> Option<(u64, Kind)> {
        self.lstat_resolved(&self.resolve(path, true)?)
    }

    fn lstat_resolved(&self, resolved: &str) -> Option<(u64, Kind)> {
        let m = self.fs.symlink_metadata(resolved).ok()?;
        Some((m.len(), kind(m.file_type())))
    }

    /// The kind of `path` itself (a link is not followed).
    pub fn lstat(&self, path: &str) -> Option<(u64, Kind)> {
        self.lstat_resolved(&self.resolve(path, false)?)
    }

    /// Whether `path` is a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        self.stat(path).is_some_and(|(_, k)| k == Kind::Dir)
    }

    /// The whole content of a regular file of at most `cap` bytes.
    pub fn read(&self, path: &str, cap: u64) -> Option<Vec<u8>> {
        let path = self.resolve(path, true)?;
        let (len, k) = self.lstat_resolved(&path)?;
        if k != Kind::File || len > cap {
            return None;
        }
        self.fs.read(path.as_str()).ok()
    }

    /// A small text file (lossy UTF-8).
    pub fn read_text(&self, path: &str) -> Option<String> {
        self.read(path, MAX_SMALL_FILE).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The first `n` bytes of a regular file (fewer if it is shorter).
    pub fn read_head(&self, path: &str, n: usize) -> Option<Vec<u8>> {
        self.read_range(path, 0, n)
    }

    /// Reads `n` bytes at `offset` of a regular file (fewer at its end).
    pub fn read_range(&self, path: &str, offset: u64, n: usize) -> Option<Vec<u8>> {
        let mut f = self.fs.open(self.resolve(path, true)?.as_str()).ok()?;
        f.seek_to(offset).ok()?;
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            match f.read_bytes(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(_) => return None,
            }
        }
        buf.truncate(filled);
        Some(buf)
    }

    /// Where a symbolic link points.
    pub fn link_target(&self, path: &str) -> Option<String> {
        let path = self.resolve(path, false)?;
        let (len, k) = self.lstat_resolved(&path)?;
        if k != Kind::Link || len > MAX_LINK_LEN {
            return None;
        }
        let t = self.fs.read_link(path.as_str()).ok()?;
        t.to_str().ok().map(str::to_string)
    }

    /// A directory's entries (not `.` and `..`), sorted, at most [`MAX_DIR_ENTRIES`].
    pub fn list(&self, path: &str) -> Vec<(String, Kind)> {
        let Some(path) = self.resolve(path, true) else { return Vec::new() };
        let Ok(rd) = self.fs.read_dir(path.as_str()) else { return Vec::new() };
        let mut out = Vec::new();
        for e in rd.take(MAX_DIR_ENTRIES + 2) {
            let Ok(e) = e else { continue };
            let name = e.file_name();
            let Ok(name) = name.as_str() else { continue };
            if name == "." || name == ".." {
                continue;
            }
            let k = e.file_type().map(kind).unwrap_or(Kind::Other);
            out.push((name.to_string(), k));
        }
        out.truncate(MAX_DIR_ENTRIES);
        out.sort();
        out
    }

    /// Bytes of the regular files under `dir` (not following links), with
    /// at most `max_entries` entries visited and `max_depth` levels; the
    /// flag says whether the walk was cut short.
    pub fn du(&self, dir: &str, max_entries: usize, max_depth: usize) -> (u64, u64, bool) {
        let mut bytes = 0u64;
        let mut files = 0u64;
        let mut visited = 0usize;
        let Some(dir) = self.resolve(dir, true) else { return (0, 0, false) };
        let mut stack = vec![(dir.trim_end_matches('/').to_string(), 0usize)];
        let mut cut = false;
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = self.fs.read_dir(d.as_str()) else { continue };
            for e in rd {
                visited += 1;
                if visited > max_entries {
                    return (bytes, files, true);
                }
                let Ok(e) = e else { continue };
                let name = e.file_name();
                let Ok(name) = name.as_str() else { continue };
                if name == "." || name == ".." {
                    continue;
                }
                match e.file_type() {
                    Ok(FileType::Directory) => {
                        if depth + 1 < max_depth {
                            stack.push((format!("{d}/{name}"), depth + 1));
                        } else {
                            cut = true;
                        }
                    }
                    Ok(FileType::Regular) => {
                        if let Ok(m) = e.metadata() {
                            bytes = bytes.saturating_add(m.len());
                            files += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        (bytes, files, cut)
    }
}
