//! The SQLite file behind the catalog: which files vmrepo may open, rebuild
//! or never touch, its schema and migrations, and what happens when it
//! cannot be written.
//!
//! * **Only a file vmrepo made is ever rebuilt.** Every index carries the
//!   SQLite application id [`APPLICATION_ID`] in its header (indexes of the
//!   first schema, made before the id existed, are known by their `meta`
//!   table). A path the user chose (`--index`, `VMREPO_INDEX`) holding
//!   anything else (a text file, another program's database, a FIFO,
//!   `/dev/null`) is refused with an error and left as it is. A file of
//!   vmrepo's that is corrupt, or of an older schema, is rebuilt from the
//!   files: it is only a cache; so is a regular file at vmrepo's own places
//!   (`.vmrepo/index.sqlite`, the cache folder), which are vmrepo's alone.
//! * **A failed write never discards a valid index.** When the index cannot
//!   be written (a full disk, a read-only folder or home, no permission),
//!   the command works on a copy in memory, brought up to date from the
//!   files like any other: reading commands answer as usual, and what they
//!   would have recorded (verification results) is lost with a warning.

use std::fs;
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::error::{Error, ErrorKind, Result};

/// The SQLite application id of a vmrepo index: "vmrp".
pub const APPLICATION_ID: i32 = 0x766d_7270;
/// The index schema written; older ones are migrated or rebuilt.
pub(crate) const SCHEMA_VERSION: &str = "3";
/// SQLite's header: the first 16 bytes of every database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Where the application id lives in the header (big-endian).
const APPLICATION_ID_OFFSET: usize = 68;
/// The header's length.
const HEADER_LEN: usize = 100;
/// Free bytes under which a failed write to the index is taken for a full
/// disk: less than a few SQLite pages and its shared-memory block.
const NEARLY_FULL: u64 = 256 * 1024;
/// How long a command waits for another one's write to the index.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    vm TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    mtime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    vm TEXT NOT NULL,
    folder TEXT NOT NULL,
    file TEXT NOT NULL,
    stem TEXT NOT NULL,
    kind TEXT NOT NULL,
    os TEXT NOT NULL,
    osinfo TEXT,
    arch TEXT NOT NULL,
    bits INTEGER NOT NULL,
    lib TEXT NOT NULL,
    maxsize TEXT NOT NULL,
    maxsize_bytes INTEGER NOT NULL,
    detail TEXT,
    ext TEXT,
    size INTEGER,
    disk_usage INTEGER,
    mtime_ns INTEGER,
    ino INTEGER,
    parts INTEGER,
    checksum_ino INTEGER,
    checksum_state TEXT NOT NULL,
    md5 TEXT,
    description_ino INTEGER,
    description_state TEXT NOT NULL,
    sha256 TEXT,
    format TEXT,
    virtual_size INTEGER,
    storage TEXT,
    kernel TEXT,
    added TEXT,
    added_by TEXT,
    verified_at TEXT,
    verified_ok INTEGER,
    verified_size INTEGER,
    verified_mtime_ns INTEGER,
    verified_ino INTEGER,
    verified_ctime_ns INTEGER,
    UNIQUE (vm, file)
);
CREATE INDEX IF NOT EXISTS images_order ON images (vm, stem, file);
CREATE INDEX IF NOT EXISTS images_os ON images (os, vm, stem, file);
CREATE INDEX IF NOT EXISTS images_osinfo ON images (osinfo, vm, stem, file);
CREATE INDEX IF NOT EXISTS images_lib ON images (lib, vm, stem, file);
CREATE INDEX IF NOT EXISTS images_arch ON images (arch, bits, vm, stem, file);
CREATE INDEX IF NOT EXISTS images_stem ON images (stem);
CREATE INDEX IF NOT EXISTS images_maxsize ON images (maxsize_bytes);
CREATE INDEX IF NOT EXISTS images_added ON images (added);
";

/// Migrations from older schemas that keep the rows (and so the
/// verification history): (from, SQL).
/// Schema 3 came with names the first vmrepo did not accept (any VM folder,
/// two readings of a size) or that it accepted and no longer does: every
/// folder is listed again by the next scan (images whose files did not
/// change keep their rows and history; rows whose names no longer parse go).
const MIGRATIONS: &[(&str, &str)] = &[(
    "2",
    "ALTER TABLE images ADD COLUMN verified_ctime_ns INTEGER;
     UPDATE folders SET mtime_ns = NULL;
     DELETE FROM meta WHERE key = 'vm_mtime_ns';",
)];

/// What is at the index's path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing, or an empty file: a new index.
    Nothing,
    /// An index vmrepo made.
    Ours,
    /// vmrepo's, but too damaged to tell (a header that is not SQLite's
    /// after a crash cannot happen with SQLite; this is a file cut short).
    Unreadable(String),
}

/// Decides whether the file at `path` may be used as an index, reading only
/// its header. At a place vmrepo chose (`chosen` false), a regular file that
/// is not an index is vmrepo's own damaged one, to rebuild.
fn examine(path: &Path, chosen: bool) -> Result<Found> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Index,
            format!(
                "{} {why}: it is not a vmrepo index, and vmrepo does not touch it (choose another --index or VMREPO_INDEX)",
                path.display()
            ),
        )
    };
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(e) if crate::fsutil::is_not_found(&e) => return Ok(Found::Nothing),
        Err(e) => return Err(Error::io("inspect the index", path, e)),
    };
    if !md.is_file() {
        return Err(refuse(format!("is {}", crate::fsutil::describe_type(md.file_type()))));
    }
    if md.len() == 0 {
        return Ok(Found::Nothing);
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    crate::fsutil::open_regular(path, true)?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|e| Error::io("read the index", path, e))?;
    if !header.starts_with(SQLITE_MAGIC) {
        if !chosen {
            return Ok(Found::Unreadable("not an SQLite database".into()));
        }
        return Err(refuse("is not an SQLite database".into()));
    }
    if header.len() < HEADER_LEN {
        return Ok(Found::Unreadable("its header is cut short".into()));
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&header[APPLICATION_ID_OFFSET..APPLICATION_ID_OFFSET + 4]);
    match i32::from_be_bytes(id) {
        APPLICATION_ID => Ok(Found::Ours),
        // The first schema had no id: its own `meta` table tells.
        0 if made_by_first_vmrepo(path) => Ok(Found::Ours),
        _ if !chosen => Ok(Found::Unreadable("a database of another program, at vmrepo's own place".into())),
        0 => Err(refuse("is an SQLite database that vmrepo did not make".into())),
        other => Err(refuse(format!("is another program's SQLite database (application id {other:#x})"))),
    }
}

/// Whether a database without an application id is an index of the first
/// schema (a `meta` table with a `schema` row), opened read-only.
fn made_by_first_vmrepo(path: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get::<_, String>(0))
        .optional()
        .ok()
        .flatten()
        .is_some()
}

/// An opened index, and why it is in memory if it is.
pub(crate) struct Opened {
    pub conn: Connection,
    /// Why the index is a copy in memory (its file cannot be written).
    pub in_memory: Option<Error>,
}

/// Opens the index at `path`, creating it if needed; `chosen` says the user
/// named the path (see [`examine`]). See the module documentation for what
/// is refused and what falls back to memory.
///
/// # Errors
/// The path holds something vmrepo did not make ([`ErrorKind::Index`]), or
/// even a copy in memory cannot be made.
pub(crate) fn open(path: &Path, chosen: bool) -> Result<Opened> {
    let found = examine(path, chosen)?;
    if let Found::Unreadable(why) = &found {
        tracing::warn!("index {} unusable ({why}); rebuilding it", path.display());
        remove_index_files(path);
    }
    match open_on_disk(path) {
        Ok(conn) => Ok(Opened { conn, in_memory: None }),
        Err(e) if is_corrupt(&e) => {
            // vmrepo's own file (checked above): a cache, rebuilt from the files.
            tracing::warn!("index {} is damaged ({e}); rebuilding it", path.display());
            remove_index_files(path);
            match open_on_disk(path) {
                Ok(conn) => Ok(Opened { conn, in_memory: None }),
                Err(e) => in_memory(path, e),
            }
        }
        Err(e) => in_memory(path, e),
    }
}

/// Whether an SQLite error says the file is damaged rather than unwritable.
fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase))
}

/// Whether an SQLite error means the index cannot be written here (rather
/// than a fault in vmrepo or the data): a full disk, a read-only place, no
/// permission, an I/O error.
pub(crate) fn is_unwritable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DiskFull)
            | Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::CannotOpen)
            | Some(ErrorCode::SystemIoFailure)
            | Some(ErrorCode::PermissionDenied)
            | Some(ErrorCode::DatabaseBusy)
            | Some(ErrorCode::DatabaseLocked)
    )
}

fn remove_index_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(std::path::PathBuf::from(p));
    }
}

fn open_on_disk(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create {}: {e}", dir.display())),
            )
        })?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The index can always be rebuilt from the files: trade durability for speed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Read pages through a memory map rather than copying them in: a query
    // touching thousands of rows is several times faster.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    ensure_schema(&conn)?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`]: nothing when it is, a migration
/// that keeps the rows from a known older one, else a new empty schema.
pub(crate) fn ensure_schema(conn: &Connection) -> rusqlite::Result<()> {
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
        .optional()
        .unwrap_or(None);
    let id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if version.as_deref() == Some(SCHEMA_VERSION) && id == APPLICATION_ID {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    match MIGRATIONS.iter().find(|(from, _)| version.as_deref() == Some(*from)) {
        Some((_, sql)) => {
            tx.execute_batch(sql)?;
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", [SCHEMA_VERSION])?;
        }
        None if version.as_deref() == Some(SCHEMA_VERSION) => {}
        None => {
            tx.execute_batch(
                "DROP TABLE IF EXISTS images; DROP TABLE IF EXISTS folders; DROP TABLE IF EXISTS meta;",
            )?;
            tx.execute_batch(SCHEMA)?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])?;
        }
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()
}

/// A copy of the index in memory, for a command whose index file cannot be
/// written: the file's rows where it can be read (so that the verification
/// history shows), else an empty index; either way brought up to date from
/// the files by the caller.
fn in_memory(path: &Path, cause: rusqlite::Error) -> Result<Opened> {
    let mut mem = Connection::open_in_memory().map_err(|e| Error::index("open an index in memory", e))?;
    if path.exists() && copy_from(path, &mut mem).is_err() {
        // Unreadable too: start from an empty index, filled from the files.
        mem = Connection::open_in_memory().map_err(|e| Error::index("open an index in memory", e))?;
    }
    ensure_schema(&mem).map_err(|e| Error::index("open an index in memory", e))?;
    let why = full_disk_or(path, Error::index(&format!("write {}", path.display()), cause));
    tracing::warn!("{why}: working from a copy in memory; verification results are not recorded");
    Ok(Opened { conn: mem, in_memory: Some(why) })
}

/// Copies the index file into `mem`, reading it without writing anything
/// (`immutable`: no lock, no journal files created).
fn copy_from(path: &Path, mem: &mut Connection) -> rusqlite::Result<()> {
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let src =
        Connection::open_with_flags(uri, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?;
    let backup = rusqlite::backup::Backup::new(&src, mem)?;
    backup.run_to_completion(1024, std::time::Duration::ZERO, None)
}

/// A path as the path part of an SQLite URI: `?`, `#` and `%` escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'?' | b'#' | b'%' => out.push_str(&format!("%{b:02X}")),
            _ if b.is_ascii_graphic() || *b == b' ' => out.push(char::from(*b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Why the index at `path` cannot be written: `err`, or a full disk when the
/// filesystem holding it has next to no room left (SQLite reports a full disk
/// met while sizing its shared-memory file as an I/O error).
pub(crate) fn full_disk_or(path: &Path, err: Error) -> Error {
    if err.kind() != ErrorKind::NoSpace
        && crate::fsutil::free_space(crate::fsutil::parent(path)).is_ok_and(|f| f < NEARLY_FULL)
    {
        return Error::new(ErrorKind::NoSpace, format!("{err} (the disk is full)"));
    }
    err
}

/// A copy in memory of an open index, when a write to it has just failed
/// (the disk filled up during the command).
///
/// # Errors
/// The copy cannot be made.
pub(crate) fn copy_to_memory(conn: &Connection) -> Result<Connection> {
    let mut mem = Connection::open_in_memory().map_err(|e| Error::index("open an index in memory", e))?;
    {
        let backup =
            rusqlite::backup::Backup::new(conn, &mut mem).map_err(|e| Error::index("copy the index", e))?;
        backup
            .run_to_completion(1024, std::time::Duration::ZERO, None)
            .map_err(|e| Error::index("copy the index", e))?;
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        fs::write(&text, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for p in [&text, &other, &std::path::PathBuf::from("/dev/null")] {
            let before = fs::read(p).unwrap_or_default();
            let err = open(p, true).err().unwrap_or_else(|| panic!("{} accepted", p.display()));
            assert_eq!(err.kind(), ErrorKind::Index, "{err}");
            assert!(err.to_string().contains("not a vmrepo index"), "{err}");
            assert_eq!(fs::read(p).unwrap_or_default(), before);
        }
    }

    #[test]
    fn vmrepo_indexes_open_and_carry_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.sqlite");
        drop(open(&p, true).unwrap());
        assert_eq!(examine(&p, true).unwrap(), Found::Ours);
        let header = fs::read(&p).unwrap();
        assert_eq!(&header[68..72], &APPLICATION_ID.to_be_bytes());
        // An empty file is a new index.
        let empty = dir.path().join("empty.sqlite");
        fs::write(&empty, b"").unwrap();
        assert!(open(&empty, true).unwrap().in_memory.is_none());
        // At vmrepo's own place, a damaged file is rebuilt.
        let damaged = dir.path().join("damaged.sqlite");
        fs::write(&damaged, b"this is not a database").unwrap();
        assert!(open(&damaged, true).is_err());
        assert!(open(&damaged, false).unwrap().in_memory.is_none());
    }

    #[test]
    fn a_first_schema_index_is_migrated_not_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.sqlite");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(&SCHEMA.replace("    verified_ctime_ns INTEGER,\n", "")).unwrap();
            c.execute("INSERT INTO meta (key, value) VALUES ('schema', '2')", []).unwrap();
            c.execute(
                "INSERT INTO images (vm, folder, file, stem, kind, os, arch, bits, lib, maxsize, maxsize_bytes,
                    checksum_state, description_state, verified_at)
                 VALUES ('kvm', 'kvm', 'a.img', 'a', 'file', 'sl5.3', 'x86', 64, 'sl08e', '8GB', 1, 'ok', 'ok', 'then')",
                [],
            )
            .unwrap();
        }
        let o = open(&p, true).unwrap();
        let at: String = o.conn.query_row("SELECT verified_at FROM images", [], |r| r.get(0)).unwrap();
        assert_eq!(at, "then");
    }
}
