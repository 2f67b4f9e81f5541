//! The catalog: an SQLite index of the images, derived from the files.
//!
//! The files are the truth; the index is a cache that any command can rebuild.
//! Each command first brings it up to date cheaply: it stats `vm/` and each
//! `vm/<VM>/` folder and compares their modification times with the ones
//! recorded at the last scan. Only a folder that changed is listed again, and
//! in it only entries whose inode number changed (a new, renamed, or
//! atomically rewritten file) are read again. A folder whose time is within
//! [`RACY_WINDOW_NS`] of the scan is not trusted (coarse timestamps, NFS) and
//! is listed again by the next command.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use vmrepo_name::{ImageName, Vm};

use crate::checksum::{self, hex};
use crate::description::{Description, Facts};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::mtime_ns;
use crate::layout::{self, FoundImage, ImageKind, Repository, STAGING_PREFIX};
use crate::lock::RepoLock;
use crate::query::Query;
use crate::txn;

/// A folder modified this recently (in ns) is listed again by the next command.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Every column of a record, in [`ImageRecord::from_row`] order.
pub(crate) const RECORD_COLUMNS: &str = "id, vm, folder, file, stem, kind, os, osinfo, arch, bits, lib, maxsize, \
    maxsize_bytes, detail, ext, size, disk_usage, mtime_ns, ino, parts, checksum_state, md5, description_state, \
    sha256, format, virtual_size, storage, kernel, added, added_by, verified_at, verified_ok, verified_size, \
    verified_mtime_ns, verified_ino, verified_ctime_ns";

/// One image as the catalog knows it. The `--json` output of `list`, `find`
/// and `show` is this record; docs/json.md documents each field.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageRecord {
    #[serde(skip)]
    pub id: i64,
    pub vm: String,
    /// The folder under `vm/` as on disk (the VM's spelling unless the tree says otherwise).
    #[serde(skip)]
    pub folder: String,
    /// The name without extension: the image's identity and its sidecars' name.
    pub name: String,
    /// The file or folder name.
    pub file: String,
    /// The path relative to the repository root.
    pub path: String,
    /// `file`, `folder` or `missing` (only sidecars are there).
    pub kind: String,
    pub os: String,
    pub osinfo: Option<String>,
    pub arch: String,
    pub bits: u16,
    pub lib: String,
    pub maxsize: String,
    pub maxsize_bytes: u64,
    pub detail: Option<String>,
    pub ext: Option<String>,
    /// Length in bytes (sum of the parts for a folder).
    pub size: Option<u64>,
    /// Bytes allocated on the host filesystem.
    pub disk_usage: Option<u64>,
    /// Number of files (1 for a file image).
    pub parts: Option<u64>,
    pub format: Option<String>,
    pub virtual_size: Option<u64>,
    pub storage: Option<String>,
    pub kernel: Option<String>,
    /// Recorded SHA-256 (single-file images).
    pub sha256: Option<String>,
    /// Recorded MD5 from the .checksum (single-file images).
    pub md5: Option<String>,
    /// State of the .checksum: ok, missing, malformed, other-file, unreadable.
    pub checksum: String,
    /// State of the .txt: ok, missing, unreadable, problems.
    pub description: String,
    pub added: Option<String>,
    pub added_by: Option<String>,
    pub verified_at: Option<String>,
    pub verified_ok: Option<bool>,
    #[serde(skip)]
    pub mtime_ns: Option<i64>,
    #[serde(skip)]
    pub ino: Option<u64>,
    #[serde(skip)]
    pub(crate) verified_stat: Option<Identity>,
}

/// What tells that an image's bytes are those last verified: its size,
/// modification and change times, and inode. The change time catches a
/// rewrite whose modification time was put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub ctime_ns: i64,
}

impl ImageRecord {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
        let mut rec = ImageRecord::default();
        rec.fill(row)?;
        Ok(rec)
    }

    /// Reads a row of [`RECORD_COLUMNS`] into this record, reusing the
    /// buffers of its strings: [`Catalog::find_each`] fills one record for
    /// every match, with no allocation once the first row is read.
    fn fill(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let u = |i: usize| -> rusqlite::Result<Option<u64>> {
            Ok(row.get::<_, Option<i64>>(i)?.and_then(|v| u64::try_from(v).ok()))
        };
        self.id = row.get(0)?;
        set_text(&mut self.vm, row, 1)?;
        set_text(&mut self.folder, row, 2)?;
        set_text(&mut self.file, row, 3)?;
        self.path.clear();
        for part in [layout::VM_DIR, "/", &self.folder, "/", &self.file] {
            self.path.push_str(part);
        }
        set_text(&mut self.name, row, 4)?;
        set_text(&mut self.kind, row, 5)?;
        set_text(&mut self.os, row, 6)?;
        set_opt_text(&mut self.osinfo, row, 7)?;
        set_text(&mut self.arch, row, 8)?;
        self.bits = row.get(9)?;
        set_text(&mut self.lib, row, 10)?;
        set_text(&mut self.maxsize, row, 11)?;
        self.maxsize_bytes = u(12)?.unwrap_or(0);
        set_opt_text(&mut self.detail, row, 13)?;
        set_opt_text(&mut self.ext, row, 14)?;
        self.size = u(15)?;
        self.disk_usage = u(16)?;
        self.mtime_ns = row.get(17)?;
        self.ino = u(18)?;
        self.parts = u(19)?;
        set_text(&mut self.checksum, row, 20)?;
        set_opt_text(&mut self.md5, row, 21)?;
        set_text(&mut self.description, row, 22)?;
        set_opt_text(&mut self.sha256, row, 23)?;
        set_opt_text(&mut self.format, row, 24)?;
        self.virtual_size = u(25)?;
        set_opt_text(&mut self.storage, row, 26)?;
        set_opt_text(&mut self.kernel, row, 27)?;
        set_opt_text(&mut self.added, row, 28)?;
        set_opt_text(&mut self.added_by, row, 29)?;
        set_opt_text(&mut self.verified_at, row, 30)?;
        self.verified_ok = row.get(31)?;
        self.verified_stat =
            match (u(32)?, row.get::<_, Option<i64>>(33)?, u(34)?, row.get::<_, Option<i64>>(35)?) {
                (Some(size), Some(mtime_ns), Some(ino), Some(ctime_ns)) => {
                    Some(Identity { size, mtime_ns, ino, ctime_ns })
                }
                _ => None,
            };
        Ok(())
    }

    /// The image's kind.
    pub fn image_kind(&self) -> ImageKind {
        ImageKind::parse(&self.kind).unwrap_or(ImageKind::Missing)
    }

    /// The image's name, parsed.
    pub fn image_name(&self) -> Option<ImageName> {
        match self.image_kind() {
            ImageKind::File => ImageName::parse_file(&self.file).ok(),
            ImageKind::Folder => ImageName::parse(&self.file).ok(),
            ImageKind::Missing => ImageName::parse_stem(&self.file).ok(),
        }
    }
}

/// Copies text column `i` into `dst`, keeping `dst`'s buffer.
fn set_text(dst: &mut String, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
    let text = row.get_ref(i)?.as_str().map_err(|e| column_error(row, i, e))?;
    dst.clear();
    dst.push_str(text);
    Ok(())
}

/// Copies text or NULL column `i` into `dst`, keeping `dst`'s buffer.
fn set_opt_text(dst: &mut Option<String>, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
    match row.get_ref(i)?.as_str_or_null().map_err(|e| column_error(row, i, e))? {
        None => *dst = None,
        Some(text) => match dst {
            Some(d) => {
                d.clear();
                d.push_str(text);
            }
            None => *dst = Some(text.to_owned()),
        },
    }
    Ok(())
}

/// The error [`rusqlite::Row::get`] gives for a value of the wrong type.
#[cold]
fn column_error(row: &rusqlite::Row<'_>, i: usize, e: rusqlite::types::FromSqlError) -> rusqlite::Error {
    let found = row.get_ref(i).map_or(rusqlite::types::Type::Null, |v| v.data_type());
    match e {
        rusqlite::types::FromSqlError::InvalidType => {
            let name = row.as_ref().column_name(i).unwrap_or("?").to_owned();
            rusqlite::Error::InvalidColumnType(i, name, found)
        }
        e => rusqlite::Error::FromSqlConversionFailure(i, found, Box::new(e)),
    }
}

/// Totals of a group of images.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// The group's value (VM, OS or library); empty for the grand total.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    pub images: u64,
    /// Bytes of the image files (their lengths).
    pub bytes: u64,
    /// What they take on the disk (allocated blocks: less for sparse files).
    pub disk_usage: u64,
    /// Sum of the maximum sizes.
    pub max_bytes: u64,
}

/// `vmrepo inventory`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inventory {
    pub total: Totals,
    /// Images whose file is missing (sidecars only); not in the totals.
    pub missing: u64,
    pub by_vm: Vec<Totals>,
    pub by_os: Vec<Totals>,
    pub by_lib: Vec<Totals>,
}

/// What a refresh or rebuild found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanStats {
    /// Folders listed.
    pub folders_scanned: u64,
    /// Images (re)read from disk.
    pub images_read: u64,
    /// Images removed from the index.
    pub images_dropped: u64,
}

/// The catalog of an opened repository.
pub struct Catalog {
    repo: Repository,
    conn: Connection,
    /// Why the index is a copy in memory, if it is (see [`crate::index`]).
    in_memory: Option<Error>,
}

impl Catalog {
    /// Opens (creating if needed) the index, finishes or undoes what crashed
    /// commands left, and brings the index up to date with the files. When
    /// the index cannot be written (a full disk, a read-only place), the
    /// catalog works on a copy in memory: see [`Catalog::in_memory`].
    /// `cancel` stops a wait for the repository lock.
    ///
    /// # Errors
    /// The index path holds something vmrepo did not make, the tree cannot
    /// be listed, or the user interrupted.
    pub fn open(repo: Repository, cancel: &AtomicBool) -> Result<Catalog> {
        let opened = crate::index::open(repo.index_path(), repo.index_chosen())?;
        let mut cat = Catalog { repo, conn: opened.conn, in_memory: opened.in_memory };
        cat.recover_crashed(cancel)?;
        match cat.refresh() {
            Err(e) if cat.in_memory.is_none() && e.index_unwritable() => {
                cat.switch_to_memory(e)?;
                cat.refresh()?;
            }
            r => {
                r?;
            }
        }
        Ok(cat)
    }

    /// Why the index is only a copy in memory for this command (its file
    /// cannot be written), or `None` when changes to it are kept.
    pub fn in_memory(&self) -> Option<String> {
        self.in_memory.as_ref().map(ToString::to_string)
    }

    /// Fails, for a command whose purpose is to change the index, when the
    /// index is only a copy in memory: with the reason (a full disk is
    /// [`ErrorKind::NoSpace`]).
    ///
    /// # Errors
    /// As said.
    pub fn require_written(&self) -> Result<()> {
        match &self.in_memory {
            None => Ok(()),
            Some(e) => Err(Error::new(e.kind(), e.to_string())),
        }
    }

    /// Goes on with a copy of the index in memory after a write failed.
    fn switch_to_memory(&mut self, why: Error) -> Result<()> {
        let mem = crate::index::copy_to_memory(&self.conn)?;
        let why = crate::index::full_disk_or(self.repo.index_path(), why);
        tracing::warn!("{why}: working from a copy in memory; verification results are not recorded");
        self.conn = mem;
        self.in_memory = Some(why);
        Ok(())
    }

    /// The repository.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Finishes or undoes imports of processes that died, if any journal waits.
    fn recover_crashed(&mut self, cancel: &AtomicBool) -> Result<()> {
        if !txn::pending(&self.repo) {
            return Ok(());
        }
        // Journals of live processes are skipped, so this never waits long
        // unless another command is publishing; a read-only tree has none.
        let lock = match RepoLock::acquire(&self.repo.meta_dir(), &|| {}, cancel) {
            Ok(l) => l,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Locked | ErrorKind::Interrupted | ErrorKind::InvalidInput
                ) =>
            {
                return Err(e);
            }
            Err(_) => return Ok(()),
        };
        let r = txn::recover(&self.repo, &lock)?;
        for id in &r.rolled_back {
            tracing::info!("undid an interrupted import ({id})");
        }
        for id in &r.rolled_forward {
            tracing::info!("finished an interrupted import ({id})");
        }
        for j in &r.quarantined {
            tracing::warn!("a journal was set aside, unused: {j} (see vmrepo lint)");
        }
        if !r.is_empty() {
            // Renames and removals changed folders: list them again.
            self.conn
                .execute("UPDATE folders SET mtime_ns = NULL", [])
                .map_err(|e| Error::index("mark folders", e))?;
        }
        Ok(())
    }

    /// Brings the index up to date: see the module documentation.
    ///
    /// # Errors
    /// The tree cannot be listed or the index written.
    pub fn refresh(&mut self) -> Result<ScanStats> {
        self.scan(false)
    }

    /// Rebuilds the index from the files, reading every image's sidecars again.
    ///
    /// # Errors
    /// As [`Catalog::refresh`].
    pub fn rebuild(&mut self) -> Result<ScanStats> {
        self.conn
            .execute_batch(
                "DELETE FROM images; DELETE FROM folders; DELETE FROM meta WHERE key = 'vm_mtime_ns';",
            )
            .map_err(|e| Error::index("clear", e))?;
        self.scan(true)
    }

    fn scan(&mut self, force: bool) -> Result<ScanStats> {
        let mut stats = ScanStats::default();
        let now = now_ns();
        let vm_root = self.repo.vm_root();
        let root_md = fs::symlink_metadata(&vm_root).ok();
        let root_mtime = root_md.as_ref().map(mtime_ns);
        let stored_root: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'vm_mtime_ns'", [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| Error::index("read", e))?
            .and_then(|s| s.parse().ok());
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Error::index("start a transaction", e))?;
        if force || root_mtime.is_none() || root_mtime != stored_root {
            let (folders, _) = layout::vm_folders(&vm_root)?;
            let names: Vec<String> = folders.iter().map(|(vm, _)| vm.as_str().to_string()).collect();
            let known: Vec<(String, String)> = {
                let mut st =
                    tx.prepare("SELECT vm, folder FROM folders").map_err(|e| Error::index("read", e))?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(|e| Error::index("read", e))?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(|e| Error::index("read", e))?
            };
            for (vm, folder) in &known {
                let current = folders.iter().find(|(v, _)| v.as_str() == vm);
                if current.is_none_or(|(_, f)| f != folder) {
                    let n = tx
                        .execute("DELETE FROM images WHERE vm = ?1", [vm])
                        .map_err(|e| Error::index("drop", e))?;
                    stats.images_dropped += n as u64;
                    tx.execute("DELETE FROM folders WHERE vm = ?1", [vm])
                        .map_err(|e| Error::index("drop", e))?;
                }
            }
            for (vm, folder) in &folders {
                tx.execute(
                    "INSERT INTO folders (vm, folder, mtime_ns) VALUES (?1, ?2, NULL) ON CONFLICT (vm) DO NOTHING",
                    params![vm.as_str(), folder],
                )
                .map_err(|e| Error::index("record folder", e))?;
            }
            let _ = names;
            let value = match root_mtime {
                Some(m) if m < now - RACY_WINDOW_NS => m.to_string(),
                _ => String::new(),
            };
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('vm_mtime_ns', ?1)", [value])
                .map_err(|e| Error::index("record", e))?;
        }
        let folders: Vec<(String, String, Option<i64>)> = {
            let mut st = tx
                .prepare("SELECT vm, folder, mtime_ns FROM folders")
                .map_err(|e| Error::index("read", e))?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| Error::index("read", e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| Error::index("read", e))?
        };
        for (vm, folder, stored) in folders {
            let dir = vm_root.join(&folder);
            let Ok(md) = fs::symlink_metadata(&dir) else { continue };
            let m = mtime_ns(&md);
            if !force && stored == Some(m) {
                continue;
            }
            let Ok(vm_parsed) = Vm::from_user(&vm) else { continue };
            stats.folders_scanned += 1;
            let s = rescan_folder(&tx, &self.repo, vm_parsed, &folder, &dir, force)?;
            stats.images_read += s.images_read;
            stats.images_dropped += s.images_dropped;
            let value = (m < now - RACY_WINDOW_NS).then_some(m);
            tx.execute("UPDATE folders SET mtime_ns = ?1 WHERE vm = ?2", params![value, vm])
                .map_err(|e| Error::index("record folder", e))?;
        }
        tx.commit().map_err(|e| Error::index("commit", e))?;
        Ok(stats)
    }

    /// Images matching a query, sorted by VM and name.
    ///
    /// # Errors
    /// An index failure.
    pub fn find(&self, q: &Query) -> Result<Vec<ImageRecord>> {
        let mut found = Vec::new();
        self.find_each(q, |rec| {
            found.push(rec.clone());
            Ok::<(), Error>(())
        })?;
        Ok(found)
    }

    /// Calls `visit` on each image matching a query, sorted by VM and name,
    /// and returns how many there were. One record is filled again for each
    /// match: a query with thousands of hits neither holds them all in memory
    /// nor allocates for each (`find` prints as it goes). An error from
    /// `visit` stops the walk and is returned as it is.
    ///
    /// # Errors
    /// An index failure, or `visit`'s error.
    pub fn find_each<E: From<Error>>(
        &self,
        q: &Query,
        mut visit: impl FnMut(&ImageRecord) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let (clause, values) = q.to_sql();
        // The field indexes end in (vm, stem, file), so that for the common
        // queries rows come out of the index already in this order.
        let sql = format!("SELECT {RECORD_COLUMNS} FROM images WHERE {clause} ORDER BY vm, stem, file");
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| Error::index("query", e))?;
        let mut rows =
            st.query(rusqlite::params_from_iter(values.iter())).map_err(|e| Error::index("query", e))?;
        let mut rec = ImageRecord::default();
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(|e| Error::index("query", e))? {
            rec.fill(row).map_err(|e| Error::index("query", e))?;
            visit(&rec)?;
            n += 1;
        }
        Ok(n)
    }

    /// Calls `visit` on the images matching a query from the `offset`-th, at
    /// most `limit` of them, sorted as [`Catalog::find_each`]; returns how
    /// many match in all. Only the page's records are read: the total is
    /// counted by the index.
    ///
    /// # Errors
    /// An index failure, or `visit`'s error.
    pub fn find_page<E: From<Error>>(
        &self,
        q: &Query,
        offset: u64,
        limit: u64,
        mut visit: impl FnMut(&ImageRecord) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let (clause, values) = q.to_sql();
        let count_sql = format!("SELECT COUNT(*) FROM images WHERE {clause}");
        let total: i64 = self
            .conn
            .prepare_cached(&count_sql)
            .and_then(|mut st| st.query_row(rusqlite::params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(|e| Error::index("count", e))?;
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM images WHERE {clause} ORDER BY vm, stem, file LIMIT {} OFFSET {}",
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(offset).unwrap_or(i64::MAX)
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| Error::index("query", e))?;
        let mut rows =
            st.query(rusqlite::params_from_iter(values.iter())).map_err(|e| Error::index("query", e))?;
        let mut rec = ImageRecord::default();
        while let Some(row) = rows.next().map_err(|e| Error::index("query", e))? {
            rec.fill(row).map_err(|e| Error::index("query", e))?;
            visit(&rec)?;
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// A number that changes whenever another connection commits a change
    /// to the index (SQLite's `PRAGMA data_version`): the same value twice on
    /// this catalog means nobody else changed the index in between.
    ///
    /// # Errors
    /// An index failure.
    pub fn data_version(&self) -> Result<i64> {
        self.conn.pragma_query_value(None, "data_version", |r| r.get(0)).map_err(|e| Error::index("read", e))
    }

    /// Every image, including those whose file is missing.
    ///
    /// # Errors
    /// An index failure.
    pub fn all(&self) -> Result<Vec<ImageRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM images ORDER BY vm, stem, file");
        let mut st = self.conn.prepare(&sql).map_err(|e| Error::index("query", e))?;
        let rows = st.query_map([], ImageRecord::from_row).map_err(|e| Error::index("query", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| Error::index("query", e))
    }

    /// Finds one image by what a person would type: its name (`sl4_..._ec2`),
    /// its file name (`sl4_..._ec2.img`), either prefixed by the VM
    /// (`xen/sl4_...`, `vm/xen/sl4_...`), or a path to it.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], or [`ErrorKind::Ambiguous`] when the name is
    /// in several VM folders.
    pub fn resolve(&self, spec: &str) -> Result<ImageRecord> {
        let matches = self.resolve_all(spec)?;
        match matches.len() {
            0 => Err(Error::new(
                ErrorKind::NotFound,
                format!("no image named {spec:?} in {} (try vmrepo find)", self.repo.root().display()),
            )),
            1 => Ok(matches.into_iter().next().expect("one element")),
            _ => Err(Error::new(
                ErrorKind::Ambiguous,
                format!(
                    "{spec:?} names several images: {}; prefix the VM (xen/NAME)",
                    matches.iter().map(|r| r.path.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn resolve_all(&self, spec: &str) -> Result<Vec<ImageRecord>> {
        let mut s = spec.trim_end_matches('/').to_string();
        let p = Path::new(spec);
        // A path (absolute, or relative and there) names an image by where
        // it is, which must be inside this repository.
        if p.is_absolute() || p.components().count() > 1 && p.symlink_metadata().is_ok() {
            let abs = match (p.canonicalize(), p.parent().map(Path::canonicalize), p.file_name()) {
                (Ok(a), _, _) => a,
                (Err(_), Some(Ok(parent)), Some(name)) => parent.join(name),
                _ => p.to_path_buf(),
            };
            match abs.strip_prefix(self.repo.root()) {
                Ok(rel) => s = rel.to_string_lossy().into_owned(),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{spec} is not inside the repository {}", self.repo.root().display()),
                    ));
                }
            }
        }
        let s = s.strip_prefix("vm/").unwrap_or(&s);
        let (vm, name) = match s.split_once('/') {
            Some((folder, name)) => (Some(Vm::from_user(folder).map_err(Error::from)?), name),
            None => (None, s),
        };
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM images WHERE (stem = ?1 OR file = ?1) AND (?2 IS NULL OR vm = ?2) ORDER BY vm, file"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| Error::index("query", e))?;
        let rows = st
            .query_map(params![name, vm.as_ref().map(Vm::as_str)], ImageRecord::from_row)
            .map_err(|e| Error::index("query", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| Error::index("query", e))
    }

    /// Totals, grouped by VM, OS and library.
    ///
    /// # Errors
    /// An index failure.
    pub fn inventory(&self) -> Result<Inventory> {
        let group = |col: &str| -> Result<Vec<Totals>> {
            let sql = if col.is_empty() {
                "SELECT '', count(*), coalesce(sum(size), 0), coalesce(sum(maxsize_bytes), 0), coalesce(sum(disk_usage), 0) FROM images WHERE kind != 'missing'".to_string()
            } else {
                format!(
                    "SELECT {col}, count(*), coalesce(sum(size), 0), coalesce(sum(maxsize_bytes), 0), coalesce(sum(disk_usage), 0) FROM images WHERE kind != 'missing' GROUP BY {col} ORDER BY {col}"
                )
            };
            let mut st = self.conn.prepare(&sql).map_err(|e| Error::index("query", e))?;
            let rows = st
                .query_map([], |r| {
                    Ok(Totals {
                        key: r.get(0)?,
                        images: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        bytes: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        max_bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        disk_usage: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    })
                })
                .map_err(|e| Error::index("query", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| Error::index("query", e))
        };
        let missing: i64 = self
            .conn
            .query_row("SELECT count(*) FROM images WHERE kind = 'missing'", [], |r| r.get(0))
            .map_err(|e| Error::index("query", e))?;
        Ok(Inventory {
            total: group("")?.into_iter().next().unwrap_or_default(),
            missing: u64::try_from(missing).unwrap_or(0),
            by_vm: group("vm")?,
            by_os: group("os")?,
            by_lib: group("lib")?,
        })
    }

    /// The folder under `vm/` that holds a VM's images, if there is one.
    ///
    /// # Errors
    /// An index failure.
    pub fn folder_of(&self, vm: Vm) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT folder FROM folders WHERE vm = ?1", [vm.as_str()], |r| r.get(0))
            .optional()
            .map_err(|e| Error::index("read", e))
    }

    /// Reads one image from disk into the index now, and marks its folder to be
    /// listed again by the next command (it just changed).
    pub(crate) fn reload(&mut self, vm: Vm, folder: &str) -> Result<()> {
        let dir = self.repo.vm_root().join(folder);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Error::index("start a transaction", e))?;
        tx.execute(
            "INSERT INTO folders (vm, folder, mtime_ns) VALUES (?1, ?2, NULL) ON CONFLICT (vm) DO UPDATE SET mtime_ns = NULL",
            params![vm.as_str(), folder],
        )
        .map_err(|e| Error::index("record folder", e))?;
        rescan_folder(&tx, &self.repo, vm, folder, &dir, false)?;
        tx.commit().map_err(|e| Error::index("commit", e))
    }

    /// Records the result of a verification, with the file's identity then.
    pub(crate) fn set_verified(&self, id: i64, ok: bool, stat: Option<Identity>, at: &str) -> Result<()> {
        let (s, m, i, c) = match stat {
            Some(x) => {
                (i64::try_from(x.size).ok(), Some(x.mtime_ns), i64::try_from(x.ino).ok(), Some(x.ctime_ns))
            }
            None => (None, None, None, None),
        };
        self.conn
            .execute(
                "UPDATE images SET verified_at = ?1, verified_ok = ?2, verified_size = ?3, verified_mtime_ns = ?4,
                    verified_ino = ?5, verified_ctime_ns = ?6 WHERE id = ?7",
                params![at, ok, s, m, i, c, id],
            )
            .map_err(|e| Error::index("record verification", e))?;
        Ok(())
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Known {
    id: i64,
    ino: Option<i64>,
    checksum_ino: Option<i64>,
    description_ino: Option<i64>,
    kind: String,
}

fn rescan_folder(
    tx: &rusqlite::Transaction<'_>,
    repo: &Repository,
    vm: Vm,
    folder: &str,
    dir: &Path,
    force: bool,
) -> Result<ScanStats> {
    let mut stats = ScanStats::default();
    let scan = layout::scan_folder(dir)?;
    let journal_dir = repo.meta_dir().join(txn::JOURNAL_DIR);
    let quarantine = repo.meta_dir().join(txn::QUARANTINE_DIR);
    for staging in &scan.staging {
        // A staging folder whose journal lock is gone belongs to no one;
        // one whose journal was set aside may hold a replaced image, and
        // stays for a person to look at (vmrepo lint reports it).
        let id = &staging[STAGING_PREFIX.len()..];
        if !journal_dir.join(format!("{id}.lock")).exists()
            && !journal_dir.join(format!("{id}.json")).exists()
            && !quarantine.join(format!("{id}.json")).exists()
        {
            let _ = crate::fsutil::remove_any(&dir.join(staging));
        }
    }
    let mut known: std::collections::HashMap<String, Known> = std::collections::HashMap::new();
    {
        let mut st = tx
            .prepare_cached(
                "SELECT id, file, ino, checksum_ino, description_ino, kind FROM images WHERE vm = ?1",
            )
            .map_err(|e| Error::index("read", e))?;
        let rows = st
            .query_map([vm.as_str()], |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    Known {
                        id: r.get(0)?,
                        ino: r.get(2)?,
                        checksum_ino: r.get(3)?,
                        description_ino: r.get(4)?,
                        kind: r.get(5)?,
                    },
                ))
            })
            .map_err(|e| Error::index("read", e))?;
        for row in rows {
            let (file, k) = row.map_err(|e| Error::index("read", e))?;
            known.insert(file, k);
        }
    }
    let as_i64 = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    for img in &scan.images {
        let unchanged = known.remove(&img.file).filter(|k| {
            !force
                && k.kind == img.kind.as_str()
                && k.ino == as_i64(Some(img.ino)).filter(|_| img.kind != ImageKind::Missing).or(k.ino)
                && k.checksum_ino == as_i64(img.checksum_ino)
                && k.description_ino == as_i64(img.description_ino)
        });
        if unchanged.is_some() {
            continue;
        }
        let rec = read_from_disk(dir, img);
        upsert(tx, vm, folder, img, &rec)?;
        stats.images_read += 1;
    }
    for (_, k) in known {
        tx.execute("DELETE FROM images WHERE id = ?1", [k.id]).map_err(|e| Error::index("drop", e))?;
        stats.images_dropped += 1;
    }
    Ok(stats)
}

/// What the files say about one image.
pub(crate) struct DiskState {
    pub size: Option<u64>,
    pub disk_usage: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub ino: Option<u64>,
    pub parts: Option<u64>,
    pub checksum_state: String,
    pub md5: Option<String>,
    pub description_state: String,
    pub facts: Facts,
}

/// Reads a sidecar no larger than `cap` bytes, not following a symbolic link
/// and never waiting on a FIFO.
///
/// # Errors
/// The file cannot be opened, is not a regular file, or is larger than `cap`.
pub fn read_capped(path: &Path, cap: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let f = crate::fsutil::open_regular(path, false).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > cap {
        return Err(format!("larger than {cap} bytes"));
    }
    Ok(buf)
}

pub(crate) fn read_from_disk(dir: &Path, img: &FoundImage) -> DiskState {
    let path = dir.join(&img.file);
    let (size, disk_usage, mtime, ino, parts) = match img.kind {
        ImageKind::File => match fs::symlink_metadata(&path) {
            Ok(md) => (
                Some(md.len()),
                Some(md.blocks().saturating_mul(512)),
                Some(mtime_ns(&md)),
                Some(md.ino()),
                Some(1),
            ),
            Err(_) => (None, None, None, None, None),
        },
        ImageKind::Folder => match (fs::symlink_metadata(&path), layout::folder_parts(&path)) {
            (Ok(md), Ok((parts, _))) => {
                let size = parts.iter().map(|(_, m)| m.len()).fold(0u64, u64::saturating_add);
                let du =
                    parts.iter().map(|(_, m)| m.blocks().saturating_mul(512)).fold(0u64, u64::saturating_add);
                let newest = parts.iter().map(|(_, m)| mtime_ns(m)).max().unwrap_or(mtime_ns(&md));
                (Some(size), Some(du), Some(newest), Some(md.ino()), Some(parts.len() as u64))
            }
            _ => (None, None, None, None, None),
        },
        ImageKind::Missing => (None, None, None, None, None),
    };
    let stem = img.name.stem();
    let sidecars = layout::Sidecars::of(dir, &img.file, &stem, img.kind);
    let (checksum_state, md5) = match img.checksum_ino {
        None => ("missing".to_string(), None),
        Some(_) => match read_capped(&sidecars.checksum, checksum::MAX_CHECKSUM_FILE) {
            Err(_) => ("unreadable".to_string(), None),
            Ok(bytes) => match std::str::from_utf8(&bytes).ok().map(checksum::parse) {
                Some(Ok(lines)) => match img.kind {
                    ImageKind::Folder => {
                        let prefix = format!("{}/", img.file);
                        if lines.iter().all(|l| sidecars.part_key(&img.file, &l.path).starts_with(&prefix)) {
                            ("ok".to_string(), None)
                        } else {
                            ("other-file".to_string(), None)
                        }
                    }
                    _ => match lines.iter().find(|l| l.path == img.file) {
                        Some(l) if lines.len() == 1 => ("ok".to_string(), Some(hex(&l.md5))),
                        _ if img.kind == ImageKind::Missing => {
                            ("ok".to_string(), lines.first().map(|l| hex(&l.md5)))
                        }
                        _ => ("other-file".to_string(), None),
                    },
                },
                _ => ("malformed".to_string(), None),
            },
        },
    };
    let (description_state, facts) = match img.description_ino {
        None => ("missing".to_string(), Facts::default()),
        Some(_) => match read_capped(&sidecars.description, crate::description::MAX_DESCRIPTION_FILE) {
            Err(_) => ("unreadable".to_string(), Facts::default()),
            Ok(bytes) => match Description::parse(&bytes) {
                Err(_) => ("unreadable".to_string(), Facts::default()),
                Ok(d) => {
                    let (facts, problems) = d.facts();
                    (if problems.is_empty() { "ok" } else { "problems" }.to_string(), facts)
                }
            },
        },
    };
    DiskState {
        size,
        disk_usage,
        mtime_ns: mtime,
        ino: ino.or(Some(img.ino)).filter(|_| img.kind != ImageKind::Missing),
        parts,
        checksum_state,
        md5,
        description_state,
        facts,
    }
}

fn upsert(
    tx: &rusqlite::Transaction<'_>,
    vm: Vm,
    folder: &str,
    img: &FoundImage,
    d: &DiskState,
) -> Result<()> {
    let n = &img.name;
    let i = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
    let sha256 = match (img.kind, d.facts.sha256.as_slice()) {
        (ImageKind::Folder, _) => None,
        (_, [one]) if one.part.is_none() => Some(hex(&one.sha256)),
        _ => None,
    };
    tx.execute(
        "INSERT INTO images (vm, folder, file, stem, kind, os, osinfo, arch, bits, lib, maxsize, maxsize_bytes, detail, ext,
            size, disk_usage, mtime_ns, ino, parts, checksum_ino, checksum_state, md5, description_ino, description_state,
            sha256, format, virtual_size, storage, kernel, added, added_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23,
            ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)
         ON CONFLICT (vm, file) DO UPDATE SET folder = excluded.folder, stem = excluded.stem, kind = excluded.kind,
            os = excluded.os, osinfo = excluded.osinfo, arch = excluded.arch, bits = excluded.bits, lib = excluded.lib,
            maxsize = excluded.maxsize, maxsize_bytes = excluded.maxsize_bytes, detail = excluded.detail, ext = excluded.ext,
            size = excluded.size, disk_usage = excluded.disk_usage, mtime_ns = excluded.mtime_ns, ino = excluded.ino,
            parts = excluded.parts, checksum_ino = excluded.checksum_ino, checksum_state = excluded.checksum_state,
            md5 = excluded.md5, description_ino = excluded.description_ino, description_state = excluded.description_state,
            sha256 = excluded.sha256, format = excluded.format, virtual_size = excluded.virtual_size,
            storage = excluded.storage, kernel = excluded.kernel, added = excluded.added, added_by = excluded.added_by",
        params![
            vm.as_str(),
            folder,
            img.file,
            n.stem(),
            img.kind.as_str(),
            n.os().to_string(),
            n.os().osinfo_id(),
            n.isa().as_str(),
            n.word_size().bits(),
            n.lib().as_str(),
            n.max_size().as_str(),
            i(Some(n.max_size().bytes())),
            n.detail().map(|d| d.as_str().to_string()),
            n.ext().map(|e| e.as_str().to_string()),
            i(d.size),
            i(d.disk_usage),
            d.mtime_ns,
            i(d.ino),
            i(d.parts),
            i(img.checksum_ino),
            d.checksum_state,
            d.md5,
            i(img.description_ino),
            d.description_state,
            sha256,
            d.facts.format,
            i(d.facts.virtual_size),
            d.facts.storage.map(|s| s.as_str()),
            d.facts.kernel,
            d.facts.added,
            d.facts.added_by,
        ],
    )
    .map_err(|e| Error::index("record image", e))?;
    Ok(())
}
