//! Crash-safe changes to the tree: staging, a journal, renames, recovery.
//!
//! A change (an import, a removal, a rename) builds its new files in a
//! staging folder inside the target VM folder (same filesystem, so renames
//! are atomic), named `.vmrepo-staging.<id>`, which no listing counts. Its
//! journal is `.vmrepo/journal/<id>.json`, next to `<id>.lock`, which the
//! process holds locked (`flock`) for its whole life: a journal whose lock
//! can be taken belongs to a process that is gone.
//!
//! The journal says where the change stands, in paths **relative to the
//! repository root** (`vm/kvm/.vmrepo-staging.<id>/x.img`), so that it means
//! the same on every host that mounts the tree and on a copy of the tree, and
//! recovery never touches anything outside the repository it runs in:
//! * phase `prepare`: the staging folder is being filled; nothing is visible.
//! * phase `commit`: the list of steps, each a `rename` or a `link` of one
//!   entry, with the inode number of the entry it moves. A step is done when
//!   its destination holds that inode: so the state of every step is read
//!   from the tree itself, and doing a step twice, or undoing it twice, is
//!   impossible.
//!
//! The invariants recovery keeps, for any state a journal can describe:
//! * a `prepare` journal is rolled back: modes recorded in it are restored
//!   (a moved source shares its inode with the staged image) and the staging
//!   folder is deleted;
//! * a `commit` journal is rolled forward, step by step; if a step can be
//!   neither found done nor done (its entry is in neither place), the steps
//!   are undone in reverse order instead, and the tree is as it was before;
//! * phase `done` is written once every step is done and durable; cleaning
//!   up (staging folder, then journal, then lock file) comes after it, and
//!   repeating it is harmless, so a process killed while cleaning up leaves
//!   work the next command finishes silently (and never mistakes the old
//!   files it was deleting for a step to undo);
//! * every path is checked before use: relative, under `vm/<folder>/`, no
//!   `..`, and no symbolic link on the way; a journal that breaks this (or
//!   cannot be read) is moved to `.vmrepo/quarantine/` and reported by
//!   `vmrepo lint`, never acted upon.
//!
//! A replacement never leaves a moment without an image under the name:
//! the old file is first hard-linked into the staging folder, then the new
//! one is renamed over it (see [`Step::link`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, fsync_dir, remove_any};
use crate::layout::{Repository, STAGING_PREFIX, VM_DIR};
use crate::lock::{RepoLock, try_lock};

/// The journal folder inside `.vmrepo`.
pub const JOURNAL_DIR: &str = "journal";
/// Where journals that cannot be used safely are set aside, inside `.vmrepo`.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The journal format written.
const JOURNAL_VERSION: u32 = 2;
/// The largest journal read: a few hundred steps at most.
const MAX_JOURNAL: u64 = 1 << 20;

/// Environment variable naming a point at which the process aborts, for the
/// crash tests: `after-stage`, `after-journal`, `after-first-rename`,
/// `before-cleanup`, `after-staging-removed`.
pub const CRASH_ENV: &str = "VMREPO_TEST_CRASH_AT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Prepare,
    Commit,
    /// Every step is done and durable: only cleaning up remains.
    Done,
}

/// What a step does to its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Moves the entry (replacing a file of the same name at the destination).
    Rename,
    /// Gives a file a second name, keeping the first.
    Link,
}

/// One step of a commit, between two paths relative to the repository root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    pub from: String,
    pub to: String,
    /// The inode number of the entry at `from` when the step was recorded.
    #[serde(default)]
    pub ino: u64,
}

impl Step {
    /// Moves `from` to `to` (paths relative to the root).
    pub fn rename(from: impl Into<String>, to: impl Into<String>) -> Step {
        Step { kind: StepKind::Rename, from: from.into(), to: to.into(), ino: 0 }
    }

    /// Links the file `from` as `to` too: keeps a file that a later step
    /// renames another over, so that the change can be undone.
    pub fn link(from: impl Into<String>, to: impl Into<String>) -> Step {
        Step { kind: StepKind::Link, from: from.into(), to: to.into(), ino: 0 }
    }
}

/// A mode to give back to a staged file on rollback: a moved source is
/// hard-linked into the staging folder and made read-only there, which is
/// the user's file too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ModeRestore {
    path: String,
    ino: u64,
    mode: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    version: u32,
    phase: Phase,
    staging: String,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    modes: Vec<ModeRestore>,
}

/// A change in progress. Dropped without [`Txn::commit`], it is undone.
pub struct Txn {
    id: String,
    root: PathBuf,
    journal_dir: PathBuf,
    _lock: File,
    staging_rel: String,
    staging: PathBuf,
    modes: Vec<ModeRestore>,
    finished: bool,
}

/// Aborts the process at a named point when the crash tests ask for it.
pub(crate) fn crash_point(name: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Checks a journal path and makes it absolute: relative, of plain
/// components, under `vm/<folder>/`, and with no symbolic link among the
/// folders on the way (the last component may be anything: it is what a
/// step moves).
fn resolve(root: &Path, rel: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::new(ErrorKind::InvalidInput, format!("journal path {rel:?}: {why}"));
    let p = Path::new(rel);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            _ => return Err(bad("not a plain relative path")),
        }
    }
    if parts.len() < 3 || parts[0] != VM_DIR {
        return Err(bad("not inside a VM folder"));
    }
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(bad(&format!("{} is a symbolic link", dir.display())));
            }
            Ok(md) if !md.is_dir() => return Err(bad(&format!("{} is not a folder", dir.display()))),
            _ => {}
        }
    }
    Ok(root.join(p))
}

/// The inode number of what `path` names (not following a link), if anything.
fn ino_of(path: &Path) -> Result<Option<u64>> {
    match fs::symlink_metadata(path) {
        Ok(md) => Ok(Some(md.ino())),
        Err(e) if fsutil::is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

impl Txn {
    /// Starts a change whose results go into `target_dir`, a folder of the
    /// repository given relative to its root (`vm/kvm`).
    ///
    /// # Errors
    /// The folder is not a real folder of the repository, or the journal or
    /// staging folder cannot be created.
    pub fn begin(repo: &Repository, target_dir: &str) -> Result<Txn> {
        let root = repo.root().to_path_buf();
        let journal_dir = repo.meta_dir().join(JOURNAL_DIR);
        fs::create_dir_all(&journal_dir).map_err(|e| Error::io("create", &journal_dir, e))?;
        let id = fsutil::unique_id();
        let staging_rel = format!("{target_dir}/{STAGING_PREFIX}{id}");
        let staging = resolve(&root, &staging_rel)?;
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
            let _ = fs::remove_file(&tmp);
            return Err(Error::new(ErrorKind::Io, format!("cannot lock {}", tmp.display())));
        }
        let lock_path = journal_dir.join(format!("{id}.lock"));
        if let Err(e) = fs::rename(&tmp, &lock_path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename", &lock_path, e));
        }
        let txn = Txn {
            id,
            root,
            journal_dir,
            _lock: lock,
            staging_rel,
            staging,
            modes: Vec::new(),
            finished: false,
        };
        txn.write_journal(Phase::Prepare, &[])?;
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

    /// The staging folder, relative to the root, for the steps.
    pub fn staging_rel(&self) -> &str {
        &self.staging_rel
    }

    /// Records that the staged file `name` (relative to the staging folder)
    /// is another name of a file outside the repository, whose mode was
    /// `mode`: if the change is undone, the mode is given back before the
    /// staging folder goes.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn record_mode(&mut self, name: &str, ino: u64, mode: u32) -> Result<()> {
        self.modes.push(ModeRestore { path: format!("{}/{name}", self.staging_rel), ino, mode });
        self.write_journal(Phase::Prepare, &[])
    }

    fn journal_path(&self) -> PathBuf {
        self.journal_dir.join(format!("{}.json", self.id))
    }

    fn write_journal(&self, phase: Phase, steps: &[Step]) -> Result<()> {
        let j = Journal {
            version: JOURNAL_VERSION,
            phase,
            staging: self.staging_rel.clone(),
            steps: steps.to_vec(),
            modes: self.modes.clone(),
        };
        write_journal_to(&self.journal_path(), &j)
    }

    /// Publishes: records `steps` (paths relative to the root) in the
    /// journal, performs them in order and makes the result durable. The
    /// caller holds the repository lock, has fsynced every staged file, and
    /// checked that the targets are as expected. If a step fails, the steps
    /// done are undone at once and the error returned; if even that fails,
    /// the journal stays for the next command to finish the job.
    ///
    /// # Errors
    /// A step's entry is missing, or a rename or link fails.
    pub fn commit(mut self, mut steps: Vec<Step>, _lock: &RepoLock) -> Result<()> {
        crash_point("after-stage");
        fsync_dir(&self.staging)?;
        for step in &mut steps {
            let from = resolve(&self.root, &step.from)?;
            resolve(&self.root, &step.to)?;
            step.ino = ino_of(&from)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{} has vanished", from.display())))?;
        }
        self.write_journal(Phase::Commit, &steps)?;
        crash_point("after-journal");
        match roll_forward(&self.root, &steps) {
            Ok(Forward::Done) => {}
            Ok(Forward::Lost(why)) => {
                return self.abandon(&steps, Error::new(ErrorKind::NotFound, why));
            }
            Err(e) => return self.abandon(&steps, e),
        }
        // Cleaning up removes what the steps' records point at (the old
        // files linked into the staging folder): say first that there is
        // nothing left to decide.
        self.write_journal(Phase::Done, &steps)?;
        crash_point("before-cleanup");
        finish(&self.root, &self.staging_rel, &self.journal_dir, &self.id)?;
        self.finished = true;
        Ok(())
    }

    /// After a failed step: undoes what was done and cleans up, then
    /// returns `err`; if the undoing fails, leaves the journal to the next
    /// command and says so.
    fn abandon(mut self, steps: &[Step], err: Error) -> Result<()> {
        self.finished = true;
        match roll_back(&self.root, steps, &self.modes)
            .and_then(|()| finish(&self.root, &self.staging_rel, &self.journal_dir, &self.id))
        {
            Ok(()) => Err(err),
            Err(undo) => {
                tracing::warn!("could not undo the change ({undo}); the next vmrepo command will");
                Err(err)
            }
        }
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if !self.finished {
            let _ = restore_modes(&self.root, &self.modes);
            let _ = finish(&self.root, &self.staging_rel, &self.journal_dir, &self.id);
        }
    }
}

/// Removes the staging folder, then the journal, then the lock file. Every
/// part may already be gone.
fn finish(root: &Path, staging_rel: &str, journal_dir: &Path, id: &str) -> Result<()> {
    let staging = resolve(root, staging_rel)?;
    remove_any(&staging).map_err(|e| Error::io("remove", &staging, e))?;
    crash_point("after-staging-removed");
    if let Some(p) = staging.parent()
        && p.exists()
    {
        fsync_dir(p)?;
    }
    let journal = journal_dir.join(format!("{id}.json"));
    fs::remove_file(&journal).or_else(ignore_missing).map_err(|e| Error::io("remove", &journal, e))?;
    let lock = journal_dir.join(format!("{id}.lock"));
    fs::remove_file(&lock).or_else(ignore_missing).map_err(|e| Error::io("remove", &lock, e))?;
    fsync_dir(journal_dir)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if fsutil::is_not_found(&e) { Ok(()) } else { Err(e) }
}

fn write_journal_to(path: &Path, j: &Journal) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(j).map_err(|e| Error::new(ErrorKind::Io, format!("journal: {e}")))?;
    fsutil::write_atomic(path, &bytes, 0o644)
}

/// How a roll forward ended.
enum Forward {
    Done,
    /// A step's entry is in neither place: the change must be undone.
    Lost(String),
}

/// Where a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Its entry is at the destination.
    Done,
    /// Its entry is at the source, ready to go.
    Ready,
    /// Its entry is in neither place.
    Lost,
}

/// Reads where a step stands from the tree: by the entry's inode where it is
/// found in either place, else by names alone (a tree copied since the
/// journal was written has other inodes, and its steps are told apart by
/// what exists: a link is done once its new name exists, a rename once its
/// source is gone).
fn state(root: &Path, step: &Step) -> Result<(State, PathBuf, PathBuf)> {
    let from = resolve(root, &step.from)?;
    let to = resolve(root, &step.to)?;
    let (f, t) = (ino_of(&from)?, ino_of(&to)?);
    let st = if t == Some(step.ino) {
        State::Done
    } else if f == Some(step.ino) {
        State::Ready
    } else {
        match (step.kind, f.is_some(), t.is_some()) {
            (StepKind::Rename, true, _) => State::Ready,
            (StepKind::Link, _, true) | (StepKind::Rename, false, true) => State::Done,
            (StepKind::Link, true, false) => State::Ready,
            (_, false, false) => State::Lost,
        }
    };
    Ok((st, from, to))
}

/// Does every step not yet done, in order, then makes the folders durable.
fn roll_forward(root: &Path, steps: &[Step]) -> Result<Forward> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let (st, from, to) = state(root, step)?;
        for d in [from.parent(), to.parent()].into_iter().flatten() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
        match st {
            State::Done => continue,
            State::Lost => {
                return Ok(Forward::Lost(format!(
                    "{} is neither at {} nor at {}",
                    step.from,
                    from.display(),
                    to.display()
                )));
            }
            State::Ready => {}
        }
        match step.kind {
            StepKind::Rename => {
                fs::rename(&from, &to).map_err(|e| Error::io("rename into place", &to, e))?;
            }
            StepKind::Link => {
                fs::hard_link(&from, &to).map_err(|e| Error::io("link", &to, e))?;
            }
        }
        if i == 0 {
            crash_point("after-first-rename");
        }
    }
    for d in &dirs {
        if d.exists() {
            fsync_dir(d)?;
        }
    }
    Ok(Forward::Done)
}

/// Undoes every step that was done, last first, and gives back the modes
/// recorded: the tree is as it was before the change.
fn roll_back(root: &Path, steps: &[Step], modes: &[ModeRestore]) -> Result<()> {
    for step in steps.iter().rev() {
        let (st, from, to) = state(root, step)?;
        if st != State::Done {
            continue;
        }
        let from_taken = ino_of(&from)?.is_some();
        match step.kind {
            StepKind::Rename if from_taken => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot undo: {} is taken by another file", from.display()),
                ));
            }
            StepKind::Rename => {
                fs::rename(&to, &from).map_err(|e| Error::io("rename back", &from, e))?;
            }
            // The original name was overwritten by a later step, undone by
            // now: the link is the old file, put back under its name.
            StepKind::Link if !from_taken => {
                fs::rename(&to, &from).map_err(|e| Error::io("rename back", &from, e))?;
            }
            StepKind::Link => {}
        }
    }
    restore_modes(root, modes)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for step in steps {
        for rel in [&step.from, &step.to] {
            if let Some(d) = resolve(root, rel)?.parent()
                && !dirs.iter().any(|x| x == d)
            {
                dirs.push(d.to_path_buf());
            }
        }
    }
    for d in &dirs {
        if d.exists() {
            fsync_dir(d)?;
        }
    }
    Ok(())
}

fn restore_modes(root: &Path, modes: &[ModeRestore]) -> Result<()> {
    for m in modes {
        let p = resolve(root, &m.path)?;
        if ino_of(&p)? == Some(m.ino) {
            fs::set_permissions(&p, fs::Permissions::from_mode(m.mode))
                .map_err(|e| Error::io("restore the mode of", &p, e))?;
        }
    }
    Ok(())
}

/// What [`recover`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Recovery {
    /// Interrupted changes undone.
    pub rolled_back: Vec<String>,
    /// Interrupted publications finished.
    pub rolled_forward: Vec<String>,
    /// Journals that could not be handled now (left for the next command).
    pub failed: Vec<String>,
    /// Journals that cannot be used safely, set aside in `.vmrepo/quarantine/`.
    pub quarantined: Vec<String>,
}

impl Recovery {
    /// Whether anything was found.
    pub fn is_empty(&self) -> bool {
        self.rolled_back.is_empty()
            && self.rolled_forward.is_empty()
            && self.failed.is_empty()
            && self.quarantined.is_empty()
    }
}

/// Whether any journal is there (of a live or a dead process): one listing
/// of `.vmrepo/journal`, empty in the normal case.
pub fn pending(repo: &Repository) -> bool {
    let dir = repo.meta_dir().join(JOURNAL_DIR);
    match fs::read_dir(&dir) {
        Ok(mut d) => d.next().is_some(),
        Err(_) => false,
    }
}

/// Finishes or undoes the changes of processes that died. The caller holds
/// the repository lock.
///
/// # Errors
/// The journal folder cannot be listed; journals that fail are reported in
/// [`Recovery::failed`] or [`Recovery::quarantined`] instead.
pub fn recover(repo: &Repository, lock: &RepoLock) -> Result<Recovery> {
    let _ = lock;
    let mut out = Recovery::default();
    let dir = repo.meta_dir().join(JOURNAL_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if fsutil::is_not_found(&e) => return Ok(out),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
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
            if lock_is_free(&dir.join(format!("{id}.lock"))) {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".lock") else {
            if let Some(id) = name.strip_suffix(".json")
                && !dir.join(format!("{id}.lock")).exists()
            {
                // A journal whose lock file is gone: its process finished
                // cleaning up but for this, or it is not ours.
                recover_one(repo, &dir, id, &mut out);
            }
            continue;
        };
        if !lock_is_free(&path) {
            continue; // alive
        }
        recover_one(repo, &dir, id, &mut out);
    }
    let _ = fsync_dir(&dir);
    Ok(out)
}

fn lock_is_free(path: &Path) -> bool {
    match OpenOptions::new().write(true).open(path) {
        // The lock is released when `f` is dropped.
        Ok(f) => try_lock(&f),
        Err(e) => fsutil::is_not_found(&e),
    }
}

/// Finishes or undoes one dead change.
fn recover_one(repo: &Repository, dir: &Path, id: &str, out: &mut Recovery) {
    let root = repo.root();
    let journal_path = dir.join(format!("{id}.json"));
    let journal = match crate::catalog::read_capped(&journal_path, MAX_JOURNAL) {
        Ok(bytes) => Some(parse_journal(&bytes, root, id)),
        Err(_) if !journal_path.exists() => None,
        Err(e) => Some(Err(e)),
    };
    let result = match journal {
        // The process died before writing its journal: nothing else exists.
        None => finish_without_staging(dir, id),
        Some(Err(why)) => {
            quarantine(repo, dir, id, &why);
            out.quarantined.push(format!("{id}: {why}"));
            return;
        }
        Some(Ok(j)) => match j.phase {
            Phase::Prepare => roll_back(root, &[], &j.modes)
                .and_then(|()| finish(root, &j.staging, dir, id))
                .map(|()| out.rolled_back.push(id.to_string())),
            Phase::Done => {
                finish(root, &j.staging, dir, id).map(|()| out.rolled_forward.push(id.to_string()))
            }
            Phase::Commit => match roll_forward(root, &j.steps) {
                Ok(Forward::Done) => {
                    finish(root, &j.staging, dir, id).map(|()| out.rolled_forward.push(id.to_string()))
                }
                Ok(Forward::Lost(why)) => {
                    tracing::info!("recovery of {id}: {why}; undoing the change");
                    roll_back(root, &j.steps, &j.modes)
                        .and_then(|()| finish(root, &j.staging, dir, id))
                        .map(|()| out.rolled_back.push(id.to_string()))
                }
                Err(e) => Err(e),
            },
        },
    };
    if let Err(e) = result {
        if e.kind() == ErrorKind::InvalidInput {
            quarantine(repo, dir, id, &e.to_string());
            out.quarantined.push(format!("{id}: {e}"));
        } else {
            tracing::warn!("recovery of {id}: {e}");
            out.failed.push(format!("{id}: {e}"));
        }
    }
}

fn finish_without_staging(dir: &Path, id: &str) -> Result<()> {
    for name in [format!("{id}.json"), format!("{id}.lock")] {
        let p = dir.join(name);
        fs::remove_file(&p).or_else(ignore_missing).map_err(|e| Error::io("remove", &p, e))?;
    }
    Ok(())
}

/// Reads a journal and checks that it describes a change of this
/// repository: its staging folder is `vm/<folder>/.vmrepo-staging.<id>`,
/// and every path resolves inside `vm/`.
fn parse_journal(bytes: &[u8], root: &Path, id: &str) -> std::result::Result<Journal, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("unreadable: {e}"))?;
    let mut j: Journal = match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(2) => serde_json::from_value(value).map_err(|e| format!("unreadable: {e}"))?,
        Some(1) => from_version_1(value, id)?,
        v => return Err(format!("journal version {v:?} is not one this vmrepo reads")),
    };
    let staging_name = format!("{STAGING_PREFIX}{id}");
    let parts: Vec<&str> = j.staging.split('/').collect();
    if parts.len() != 3 || parts[0] != VM_DIR || parts[2] != staging_name {
        return Err(format!("staging folder {:?} is not vm/<folder>/{staging_name}", j.staging));
    }
    for rel in std::iter::once(&j.staging)
        .chain(j.steps.iter().flat_map(|s| [&s.from, &s.to]))
        .chain(j.modes.iter().map(|m| &m.path))
    {
        resolve(root, rel).map_err(|e| e.to_string())?;
    }
    for m in &j.modes {
        if !m.path.starts_with(&format!("{}/", j.staging)) {
            return Err(format!("{} is outside the staging folder", m.path));
        }
    }
    if j.version == 1 {
        // The first format did not record inodes: take the entry's where it is now.
        for s in &mut j.steps {
            let at = |rel: &str| resolve(root, rel).ok().and_then(|p| ino_of(&p).ok().flatten());
            s.ino = at(&s.from).or_else(|| at(&s.to)).unwrap_or(0);
        }
    }
    Ok(j)
}

/// A journal of the first format, which recorded absolute paths and, for a
/// moved source, a path outside the repository. Its paths are taken relative
/// to the root it was written under (what precedes `vm/<folder>/<staging>`),
/// so that it applies to this tree wherever it is mounted; a step outside the
/// tree cannot be replayed safely and makes the journal unusable.
fn from_version_1(value: serde_json::Value, id: &str) -> std::result::Result<Journal, String> {
    #[derive(Deserialize)]
    struct V1Step {
        from: PathBuf,
        to: PathBuf,
    }
    #[derive(Deserialize)]
    struct V1 {
        phase: Phase,
        staging: PathBuf,
        #[serde(default)]
        steps: Vec<V1Step>,
        #[serde(default)]
        done: usize,
    }
    let v1: V1 = serde_json::from_value(value).map_err(|e| format!("unreadable: {e}"))?;
    let staging = v1.staging.to_string_lossy().into_owned();
    let suffix = format!("/{STAGING_PREFIX}{id}");
    let old_root = staging
        .strip_suffix(&suffix)
        .and_then(|vm_folder| vm_folder.rsplit_once('/'))
        .and_then(|(vm, _)| vm.strip_suffix(&format!("/{VM_DIR}")))
        .ok_or_else(|| format!("staging folder {staging:?} is not <root>/vm/<folder>{suffix}"))?
        .to_string();
    let rel = |p: &Path| -> std::result::Result<String, String> {
        p.strip_prefix(&old_root)
            .map(|r| r.to_string_lossy().into_owned())
            .map_err(|_| format!("{} is outside the repository the journal was written in", p.display()))
    };
    let mut steps = Vec::new();
    for (i, s) in v1.steps.iter().enumerate() {
        // The first format counted the steps done; the rest are replayed
        // with the inode of whatever is at their source now.
        if i < v1.done {
            continue;
        }
        steps.push(Step::rename(rel(&s.from)?, rel(&s.to)?));
    }
    Ok(Journal { version: 1, phase: v1.phase, staging: rel(&v1.staging)?, steps, modes: Vec::new() })
}

/// Sets an unusable journal aside, with its lock file, for `vmrepo lint` to
/// report; nothing it names is touched.
fn quarantine(repo: &Repository, dir: &Path, id: &str, why: &str) {
    tracing::warn!("journal {id} cannot be used ({why}); set aside in .vmrepo/{QUARANTINE_DIR}/");
    let q = repo.meta_dir().join(QUARANTINE_DIR);
    if fs::create_dir_all(&q).is_err() {
        return;
    }
    for name in [format!("{id}.json"), format!("{id}.lock")] {
        let _ = fs::rename(dir.join(&name), q.join(&name));
    }
    let _ = fs::write(q.join(format!("{id}.why")), format!("{why}\n"));
}

/// The step that keeps the file at `from` (a path relative to the root) as
/// `to` in the staging folder, so that a later step may rename a new file
/// over `from` and the change can still be undone: a hard link, made now
/// (harmless: only the staging folder gains a name), or, on a filesystem
/// without hard links, a rename done by the commit (readers then see no file
/// at `from` until the next step).
pub fn keep_aside(txn: &Txn, from: String, to: String) -> Step {
    let (Ok(f), Ok(t)) = (resolve(&txn.root, &from), resolve(&txn.root, &to)) else {
        return Step::rename(from, to);
    };
    match fs::hard_link(&f, &t) {
        Ok(()) => Step::link(from, to),
        Err(e) => {
            tracing::debug!("{}: no hard link ({e}); renamed aside instead", f.display());
            Step::rename(from, to)
        }
    }
}

/// Writes a small file into the staging folder, durably.
///
/// # Errors
/// The file cannot be created, written or synced.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_paths_stay_inside_vm() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("vm/kvm")).unwrap();
        assert!(resolve(root, "vm/kvm/x.img").is_ok());
        for bad in ["/etc/passwd", "vm/../etc/passwd", "vm/kvm/../../x", "etc/x", "vm/x", "./vm/kvm/x", ""] {
            assert!(resolve(root, bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/tmp", root.join("vm/elsewhere")).unwrap();
        assert!(resolve(root, "vm/elsewhere/x.img").is_err());
    }

    #[test]
    fn a_first_format_journal_is_rebased() {
        let id = "abc";
        let v = serde_json::json!({
            "version": 1, "phase": "commit", "done": 1,
            "staging": "/old/place/vm/kvm/.vmrepo-staging.abc",
            "steps": [
                {"from": "/old/place/vm/kvm/a.img", "to": "/old/place/vm/kvm/.vmrepo-staging.abc/replaced/a.img"},
                {"from": "/old/place/vm/kvm/.vmrepo-staging.abc/a.img", "to": "/old/place/vm/kvm/a.img"}
            ]
        });
        let j = from_version_1(v, id).unwrap();
        assert_eq!(j.staging, "vm/kvm/.vmrepo-staging.abc");
        assert_eq!(j.steps, [Step::rename("vm/kvm/.vmrepo-staging.abc/a.img", "vm/kvm/a.img")]);
        let outside = serde_json::json!({
            "version": 1, "phase": "commit",
            "staging": "/old/place/vm/kvm/.vmrepo-staging.abc",
            "steps": [{"from": "/home/me/a.img", "to": "/old/place/vm/kvm/a.img"}]
        });
        assert!(from_version_1(outside, id).is_err());
    }
}
