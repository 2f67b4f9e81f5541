//! Crash-safe changes to the tree: staging, a journal, renames, recovery.
//!
//! An import builds the image and its sidecars in a staging folder inside the
//! target VM folder (same filesystem, so renames are atomic), named
//! `.vmrepo-staging.<id>`, which no listing counts. Its journal lives in
//! `.vmrepo/journal/<id>.json`, next to `<id>.lock`, which the importing
//! process holds locked (`flock`) for its whole life.
//!
//! Publishing writes the list of renames into the journal (phase `commit`,
//! fsynced), then performs them in order, the image last, recording in the
//! journal after each how many are done: a replacement renames the old files
//! away and the new ones in under the same names, so a rename's source can
//! exist again after a later one, and only the record says where to resume.
//! After a crash:
//! * a journal still in phase `prepare` is rolled back: the staging folder is
//!   deleted, and nothing was ever visible under a catalog name;
//! * a journal in phase `commit` is rolled forward: every rename whose source
//!   is still there is done, then the staging folder is deleted.
//!
//! Either way the tree ends as it was or as it should be. The next command of
//! any kind does this (see [`recover`]) for journals whose lock is free, that
//! is, whose process is gone.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, fsync_dir, remove_any};
use crate::layout::{self, Repository, STAGING_PREFIX};
use crate::lock::{RepoLock, try_lock};

/// The journal folder inside `.vmrepo`.
pub const JOURNAL_DIR: &str = "journal";

/// Environment variable naming a point at which the process aborts, for the
/// crash tests: `after-stage`, `after-journal`, `after-first-rename`,
/// `before-cleanup`.
pub const CRASH_ENV: &str = "VMREPO_TEST_CRASH_AT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Prepare,
    Commit,
}

/// One rename of a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    version: u32,
    phase: Phase,
    staging: PathBuf,
    steps: Vec<Step>,
    /// Steps completed (all before this index are done).
    #[serde(default)]
    done: usize,
    /// Removed after the renames (a moved source on another filesystem).
    #[serde(default)]
    remove_after: Vec<PathBuf>,
}

/// A change in progress. Dropped without [`Txn::commit`], it is undone.
pub struct Txn {
    id: String,
    journal_dir: PathBuf,
    _lock: File,
    staging: PathBuf,
    finished: bool,
}

/// Aborts the process at a named point when the crash tests ask for it.
pub(crate) fn crash_point(name: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

impl Txn {
    /// Starts a change whose results go into `target_dir`.
    ///
    /// # Errors
    /// The journal or staging folder cannot be created.
    pub fn begin(repo: &Repository, target_dir: &Path) -> Result<Txn> {
        let journal_dir = repo.meta_dir().join(JOURNAL_DIR);
        fs::create_dir_all(&journal_dir).map_err(|e| Error::io("create", &journal_dir, e))?;
        let id = fsutil::unique_id();
        // Lock under a temporary name, then rename: recovery only looks at
        // `<id>.lock`, which is therefore always locked while its process lives.
        let tmp = journal_dir.join(format!(".tmp-{id}"));
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        if !try_lock(&lock) {
            return Err(Error::new(ErrorKind::Io, format!("cannot lock {}", tmp.display())));
        }
        let lock_path = journal_dir.join(format!("{id}.lock"));
        fs::rename(&tmp, &lock_path).map_err(|e| Error::io("rename", &lock_path, e))?;
        let staging = target_dir.join(format!("{STAGING_PREFIX}{id}"));
        let txn = Txn { id, journal_dir, _lock: lock, staging, finished: false };
        txn.write_journal(&Journal {
            version: 1,
            phase: Phase::Prepare,
            staging: txn.staging.clone(),
            steps: Vec::new(),
            done: 0,
            remove_after: Vec::new(),
        })?;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&txn.staging)
            .map_err(|e| Error::io("create", &txn.staging, e))?;
        Ok(txn)
    }

    /// The staging folder: build the new files here.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    fn journal_path(&self) -> PathBuf {
        self.journal_dir.join(format!("{}.json", self.id))
    }

    fn write_journal(&self, j: &Journal) -> Result<()> {
        write_journal_to(&self.journal_path(), j)
    }

    /// Publishes: records `steps` in the journal, then renames in order and
    /// makes the result durable. The caller holds the repository lock, has
    /// fsynced every staged file, and checked that the targets are free.
    ///
    /// # Errors
    /// A rename fails; what was renamed stays, and the journal lets the next
    /// command finish the job.
    pub fn commit(mut self, steps: Vec<Step>, remove_after: Vec<PathBuf>, _lock: &RepoLock) -> Result<()> {
        crash_point("after-stage");
        fsync_dir(&self.staging)?;
        let mut journal = Journal {
            version: 1,
            phase: Phase::Commit,
            staging: self.staging.clone(),
            steps,
            done: 0,
            remove_after,
        };
        let path = self.journal_path();
        write_journal_to(&path, &journal)?;
        crash_point("after-journal");
        let result = apply_steps(&mut journal, &path);
        if result.is_ok() {
            crash_point("before-cleanup");
            remove_any(&self.staging).map_err(|e| Error::io("remove", &self.staging, e))?;
            if let Some(p) = self.staging.parent() {
                fsync_dir(p)?;
            }
            self.finish();
        } else {
            // Keep the journal: the next command rolls forward.
            self.finished = true;
        }
        result
    }

    fn finish(&mut self) {
        let _ = fs::remove_file(self.journal_path());
        let _ = fs::remove_file(self.journal_dir.join(format!("{}.lock", self.id)));
        let _ = fsync_dir(&self.journal_dir);
        self.finished = true;
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if !self.finished {
            let _ = remove_any(&self.staging);
            self.finish();
        }
    }
}

fn write_journal_to(path: &Path, j: &Journal) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(j).map_err(|e| Error::new(ErrorKind::Io, format!("journal: {e}")))?;
    fsutil::write_atomic(path, &bytes, 0o644)
}

/// Performs the steps not yet recorded as done, recording each, then makes
/// the folders durable and removes what is to be removed.
fn apply_steps(j: &mut Journal, journal_path: &Path) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for step in &j.steps {
        for p in [step.to.parent(), step.from.parent()].into_iter().flatten() {
            if !dirs.iter().any(|d| d == p) {
                dirs.push(p.to_path_buf());
            }
        }
    }
    while j.done < j.steps.len() {
        let step = &j.steps[j.done];
        match fs::symlink_metadata(&step.from) {
            Ok(_) => {
                fs::rename(&step.from, &step.to).map_err(|e| Error::io("rename into place", &step.to, e))?;
            }
            // Done before a crash that came before its record.
            Err(e) if fsutil::is_not_found(&e) && fs::symlink_metadata(&step.to).is_ok() => {}
            Err(e) => return Err(Error::io("find", &step.from, e)),
        }
        if j.done == 0 {
            crash_point("after-first-rename");
        }
        j.done += 1;
        if j.done < j.steps.len() {
            // The last step needs no record: the phase below covers it.
            for d in &dirs {
                fsync_dir(d)?;
            }
            write_journal_to(journal_path, j)?;
        }
    }
    for d in &dirs {
        fsync_dir(d)?;
    }
    for p in &j.remove_after {
        remove_any(p).map_err(|e| Error::io("remove", p, e))?;
    }
    Ok(())
}

/// What [`recover`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Recovery {
    /// Interrupted imports undone (staging folders removed).
    pub rolled_back: Vec<String>,
    /// Interrupted publications finished.
    pub rolled_forward: Vec<String>,
    /// Journals that could not be handled (left for `vmrepo lint`).
    pub failed: Vec<String>,
}

impl Recovery {
    /// Whether anything was found.
    pub fn is_empty(&self) -> bool {
        self.rolled_back.is_empty() && self.rolled_forward.is_empty() && self.failed.is_empty()
    }
}

/// Whether any journal of a finished (dead) process is waiting: one listing
/// of `.vmrepo/journal`, empty in the normal case.
pub fn pending(repo: &Repository) -> bool {
    let dir = repo.meta_dir().join(JOURNAL_DIR);
    match fs::read_dir(&dir) {
        Ok(mut d) => d.next().is_some(),
        Err(_) => false,
    }
}

/// Finishes or undoes the changes of processes that died, and removes
/// staging folders that no journal claims. Takes the repository lock.
///
/// # Errors
/// The lock cannot be taken; individual journals that fail are reported in
/// [`Recovery::failed`] instead.
pub fn recover(repo: &Repository, lock: &RepoLock) -> Result<Recovery> {
    let _ = lock;
    let mut out = Recovery::default();
    let dir = repo.meta_dir().join(JOURNAL_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(_) => return Ok(out),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(".tmp-") {
            // A lock file never renamed: its process died before creating anything.
            if let Ok(f) = File::open(&path)
                && try_lock(&f)
            {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if let Some(id) = name.strip_prefix('.').and_then(|n| n.split_once(".json.tmp-")).map(|(id, _)| id) {
            // A journal being rewritten when its process died.
            let owner = dir.join(format!("{id}.lock"));
            let dead = match File::open(&owner) {
                Ok(f) => try_lock(&f),
                Err(_) => true,
            };
            if dead {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".lock") else { continue };
        let Ok(f) = OpenOptions::new().write(true).open(&path) else { continue };
        if !try_lock(&f) {
            continue; // alive
        }
        let journal_path = dir.join(format!("{id}.json"));
        let mut journal: Option<Journal> =
            fs::read(&journal_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let result = match &mut journal {
            Some(j) if j.phase == Phase::Commit => apply_steps(j, &journal_path)
                .and_then(|()| remove_any(&j.staging).map_err(|e| Error::io("remove", &j.staging, e)))
                .map(|()| out.rolled_forward.push(id.to_string())),
            Some(j) => remove_any(&j.staging)
                .map_err(|e| Error::io("remove", &j.staging, e))
                .map(|()| out.rolled_back.push(id.to_string())),
            None => {
                // No readable journal: the process died before writing it, so
                // at most a staging folder named after the id exists.
                remove_staging_by_id(repo, id);
                out.rolled_back.push(id.to_string());
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                let _ = fs::remove_file(&journal_path);
                let _ = fs::remove_file(&path);
            }
            Err(e) => {
                tracing::warn!("recovery of {id}: {e}");
                out.failed.push(format!("{id}: {e}"));
            }
        }
    }
    let _ = fsync_dir(&dir);
    Ok(out)
}

fn remove_staging_by_id(repo: &Repository, id: &str) {
    if let Ok((folders, _)) = layout::vm_folders(&repo.vm_root()) {
        for (_, folder) in folders {
            let p = repo.vm_root().join(folder).join(format!("{STAGING_PREFIX}{id}"));
            let _ = remove_any(&p);
        }
    }
}

/// Writes a small file into the staging folder, durably.
pub fn stage_file(txn: &Txn, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf> {
    let p = txn.staging().join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&p)
        .map_err(|e| Error::io("create", &p, e))?;
    f.write_all(bytes).map_err(|e| Error::io("write", &p, e))?;
    f.sync_all().map_err(|e| Error::io("sync", &p, e))?;
    Ok(p)
}
