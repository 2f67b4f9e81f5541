//! `vmrepo add`: import an image under its convention name, crash-safely.
//!
//! The steps, each a function below: examine the source (`Source`), check
//! the name against the content, find the target folder and what occupies
//! the name there, stage the image (a copy, or for `--move` on the same
//! filesystem a second hard link to the source's own file) and its sidecars
//! while hashing, then under the repository lock plan the renames and commit
//! them through the journal ([`crate::txn`]), and last remove a moved source.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use vmrepo_name::{ImageName, Vm};

use crate::catalog::{Catalog, ImageRecord};
use crate::checksum::{self, ChecksumLine, hex};
use crate::description::{Description, Facts, MAX_DESCRIPTION_FILE, PartDigest};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, fsync_dir};
use crate::hashing::{self, Endpoint, Want};
use crate::layout::{self, Occupant, Repository, occupants};
use crate::lock::RepoLock;
use crate::progress::Progress;
use crate::txn::{self, Step, Txn};

/// The name of the folder inside the staging folder that receives the files
/// of a replaced image.
const REPLACED_DIR: &str = "replaced";
/// The mode of a stored image: nobody writes to it in place.
const IMAGE_MODE: u32 = 0o444;
/// The mode of a sidecar: people edit the description.
const SIDECAR_MODE: u32 = 0o644;

/// An import.
pub struct AddRequest<'a> {
    /// The image file, or a folder holding the files of one image.
    pub source: &'a Path,
    pub vm: Vm,
    /// The name it is stored under (no extension for a folder).
    pub name: ImageName,
    /// What other layers found (format, virtual size, storage, kernel ...);
    /// the fields the name and the import determine are filled in here.
    pub facts: Facts,
    /// Free-form notes for the description (kept from the old one on replace if `None`).
    pub notes: Option<String>,
    /// Replace an image already stored under the name.
    pub replace: bool,
    /// Move the source into the repository instead of copying it: on the
    /// same filesystem its file becomes the stored one, elsewhere it is copied
    /// and removed once stored.
    pub move_source: bool,
    /// What the format layer found (see [`crate::content::read`]); `None` when
    /// the caller forces the import of a file it cannot read.
    pub content: Option<crate::content::Content>,
    /// Store the image even where its name disagrees with its content.
    pub force: bool,
    /// Digests of a file source the caller computed while it wrote the file
    /// (an upload hashed as it arrived). Used only where they cannot be
    /// stale: for `move_source` on the same filesystem, when the linked file
    /// is still the inode, length and modification time they were taken of;
    /// a copy hashes its bytes as it goes anyway and must find the same
    /// digests, or nothing is imported.
    pub prehashed: Option<Prehashed>,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

/// Digests of a file source and the state of the file they describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prehashed {
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    /// The file's inode, length and modification time (ns) once written and fsynced.
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i64,
}

impl Prehashed {
    /// Whether `md` is the file these digests were taken of, unchanged.
    fn describes(&self, md: &fs::Metadata) -> bool {
        md.ino() == self.ino && md.len() == self.len && fsutil::mtime_ns(md) == self.mtime_ns
    }
}

/// What `add` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AddOutcome {
    pub image: ImageRecord,
    /// An image was there before and was replaced.
    pub replaced: bool,
    /// The source was moved (its file linked into place, or copied and removed).
    pub moved: bool,
    /// MD5 of each file, as in the .checksum.
    pub md5: Vec<String>,
}

/// One file of the source.
struct Part {
    /// Path of the source file (absolute).
    src: PathBuf,
    /// Its name in the staging folder: the image's file name, or
    /// `stem/part` for a folder.
    rel: String,
    md: fs::Metadata,
}

/// What is being imported.
struct Source {
    /// The path given, made absolute.
    path: PathBuf,
    is_folder: bool,
    parts: Vec<Part>,
    dev: u64,
}

/// How a part reached the staging folder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Staged {
    Copied,
    /// A second name of the source's file: nothing was copied.
    Linked,
}

/// The result of staging the image.
struct StagedImage {
    md5_lines: Vec<ChecksumLine>,
    sha_parts: Vec<PartDigest>,
    /// Per part: how it was staged, its inode, and (size, mtime) after hashing.
    how: Vec<(Staged, u64, (u64, i64))>,
    total: u64,
    /// What the staged files take on the disk (allocated blocks).
    disk_usage: u64,
}

/// Imports an image. See the crate documentation for the guarantees.
///
/// # Errors
/// The source is missing, unreadable, not a regular file or folder, or is
/// the stored image itself; the name is taken (without `replace`); the
/// disk is full; the lock cannot be taken; or the user interrupted. In every
/// case the repository is left as it was, and so is the source.
pub fn add(catalog: &mut Catalog, req: AddRequest<'_>) -> Result<AddOutcome> {
    let repo = catalog.repo().clone();
    let file_name = req.name.to_string();
    let stem = req.name.stem();
    let source = Source::examine(&repo, req.source, req.move_source, &file_name)?;
    check_shape(&source, &req.name)?;
    check_content(&req)?;

    let folder = catalog.folder_of(req.vm)?.unwrap_or_else(|| req.vm.as_str().to_string());
    let folder_rel = format!("{}/{folder}", layout::VM_DIR);
    let target_dir = repo.vm_folder_for_write(&folder)?;
    let taken = occupants(&target_dir, &stem)?;
    refuse_self(&source, &target_dir, &taken, &repo)?;
    if !taken.is_empty() && !req.replace {
        return Err(already(&folder, &taken));
    }
    let target_dev = fs::metadata(&target_dir).map_err(|e| Error::io("read", &target_dir, e))?.dev();
    let link = req.move_source && source.dev == target_dev;
    if !link {
        check_space(&source, &target_dir)?;
    }

    let mut txn = Txn::begin(&repo, &folder_rel)?;
    let staged = stage_image(&mut txn, &req, &source, &file_name, link)?;
    let facts = facts_for(&req, &file_name, &staged);
    let description = describe(&req, &target_dir, &facts);
    let txt_name = req.name.description_file_name();
    let sum_name = req.name.checksum_file_name();
    txn::stage_file(&txn, &txt_name, description.render().as_bytes(), SIDECAR_MODE)?;
    txn::stage_file(&txn, &sum_name, checksum::format(&staged.md5_lines).as_bytes(), SIDECAR_MODE)?;

    let lock = RepoLock::acquire(
        &repo.meta_dir(),
        &|| req.progress.note("waiting for another vmrepo command to finish"),
        req.cancel,
    )?;
    if req.cancel.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }
    let _ = txn::recover(&repo, &lock)?;
    fsutil::real_folder(repo.root(), &target_dir)?;
    let taken = occupants(&target_dir, &stem)?;
    if !taken.is_empty() && !req.replace {
        return Err(already(&folder, &taken));
    }
    check_unchanged(&txn, &source, &staged)?;
    let new = [(txt_name, false), (sum_name, false), (file_name.clone(), source.is_folder)];
    let steps = plan(&txn, &folder_rel, &target_dir, &taken, &new)?;
    txn.commit(steps, &lock)?;
    catalog.reload(req.vm, &folder)?;
    drop(lock);
    if req.move_source {
        remove_source(&source, &staged);
    }
    let image = catalog.resolve(&format!("{}/{file_name}", req.vm.as_str()))?;
    Ok(AddOutcome {
        image,
        replaced: !taken.is_empty(),
        moved: req.move_source,
        md5: staged.md5_lines.iter().map(|l| hex(&l.md5)).collect(),
    })
}

impl Source {
    /// Looks at the source before anything is done: a regular file or a
    /// folder of regular files, not empty, and for `--move` not a symbolic
    /// link (a link cannot be moved for its target) nor an image of the
    /// repository (`vmrepo mv` renames those).
    fn examine(repo: &Repository, given: &Path, move_source: bool, file_name: &str) -> Result<Source> {
        let path = std::path::absolute(given).map_err(|e| Error::io("resolve", given, e))?;
        let lmd = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        if move_source && lmd.file_type().is_symlink() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link: --move moves a file, not a link; give the file it points to, or copy",
                    path.display()
                ),
            ));
        }
        let md = fs::metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        if move_source
            && let Ok(canonical) = path.canonicalize()
            && canonical.starts_with(repo.vm_root())
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is inside the repository: --move would take it from its place (use vmrepo mv to rename an image)",
                    path.display()
                ),
            ));
        }
        let is_folder = md.is_dir();
        if !is_folder && !md.is_file() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is {}: an image is a regular file or a folder of them",
                    path.display(),
                    fsutil::describe_type(md.file_type())
                ),
            ));
        }
        let parts = if is_folder {
            folder_parts(&path, file_name)?
        } else {
            if md.len() == 0 {
                return Err(Error::new(
                    ErrorKind::BadImage,
                    format!("{} is empty (0 bytes): there is no disk image in it", path.display()),
                ));
            }
            vec![Part { src: path.clone(), rel: file_name.to_string(), md: md.clone() }]
        };
        Ok(Source { path, is_folder, parts, dev: md.dev() })
    }

    fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.md.len()).fold(0, u64::saturating_add)
    }
}

/// A file image has an extension, a folder image none.
fn check_shape(source: &Source, name: &ImageName) -> Result<()> {
    match (source.is_folder, name.ext()) {
        (true, Some(_)) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a folder: an image of several files has a name without extension",
                source.path.display()
            ),
        )),
        (false, None) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{}: an image file needs an extension", source.path.display()),
        )),
        _ => Ok(()),
    }
}

/// The name (and the VM folder) must agree with what the file is, unless forced.
fn check_content(req: &AddRequest<'_>) -> Result<()> {
    let Some(c) = &req.content else { return Ok(()) };
    let mut d = c.disagreements(&req.name);
    d.extend(c.vm_disagreements(req.vm));
    if d.is_empty() || req.force {
        return Ok(());
    }
    let all: Vec<&str> = d.iter().map(|x| x.message.as_str()).collect();
    Err(Error::new(
        ErrorKind::BadImage,
        format!("{}: {}; pass --force to store it anyway", req.source.display(), all.join("; ")),
    ))
}

/// Refuses to import an image onto itself: a source that is the file (or
/// folder) already stored under the name.
fn refuse_self(source: &Source, dir: &Path, taken: &[Occupant], repo: &Repository) -> Result<()> {
    let src_md = fs::metadata(&source.path).map_err(|e| Error::io("read", &source.path, e))?;
    for o in taken {
        let p = dir.join(&o.name);
        let Ok(md) = fs::symlink_metadata(&p) else { continue };
        let same_part =
            source.parts.iter().any(|part| part.md.dev() == md.dev() && part.md.ino() == md.ino());
        let same_folder = src_md.dev() == md.dev() && src_md.ino() == md.ino();
        if same_part || same_folder {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is the image stored as {}: there is nothing to import",
                    source.path.display(),
                    repo.relative(&p)
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses before copying when the free space is known to be short.
fn check_space(source: &Source, target_dir: &Path) -> Result<()> {
    let need = source.parts.iter().map(|p| p.md.blocks().saturating_mul(512)).fold(0, u64::saturating_add);
    let free = fsutil::free_space(target_dir)?;
    if need > free {
        return Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "not enough space in {} for {}: {} needed, {} free",
                target_dir.display(),
                source.path.display(),
                crate::description::human_bytes(need),
                crate::description::human_bytes(free)
            ),
        ));
    }
    Ok(())
}

/// Puts the image's files into the staging folder and hashes them: each part
/// linked (a move on the same filesystem) or copied, and read once.
fn stage_image(
    txn: &mut Txn,
    req: &AddRequest<'_>,
    source: &Source,
    file_name: &str,
    link: bool,
) -> Result<StagedImage> {
    let total = source.total();
    req.progress.start(total, file_name);
    if source.is_folder {
        let d = txn.staging().join(file_name);
        fs::DirBuilder::new().mode(0o755).create(&d).map_err(|e| Error::io("create", &d, e))?;
    }
    let want = Want { md5: true, sha256: true };
    let advance = |n: u64| req.progress.advance(n);
    let mut out =
        StagedImage { md5_lines: Vec::new(), sha_parts: Vec::new(), how: Vec::new(), total, disk_usage: 0 };
    for part in &source.parts {
        let dst_path = txn.staging().join(&part.rel);
        let linked = link && stage_link(txn, part, &dst_path)?;
        // A prehashed file source linked in place: its digests are those of
        // these very bytes, so it is not read again.
        let known = match (&req.prehashed, source.is_folder) {
            (Some(p), false) if linked => {
                let md = fs::symlink_metadata(&dst_path).map_err(|e| Error::io("read", &dst_path, e))?;
                p.describes(&md).then_some(*p)
            }
            _ => None,
        };
        let digests = if let Some(p) = known {
            advance(p.len);
            hashing::Digests { md5: Some(p.md5), sha256: Some(p.sha256), bytes: p.len }
        } else if linked {
            let f = fsutil::open_regular(&dst_path, false)?;
            hashing::hash_file(Endpoint { file: &f, path: &dst_path }, None, want, &advance, req.cancel)?
        } else {
            let src = fsutil::open_regular(&part.src, true)?;
            let dst = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(IMAGE_MODE)
                .open(&dst_path)
                .map_err(|e| Error::io("create", &dst_path, e))?;
            hashing::hash_file(
                Endpoint { file: &src, path: &part.src },
                Some(Endpoint { file: &dst, path: &dst_path }),
                want,
                &advance,
                req.cancel,
            )?
        };
        let (Some(md5), Some(sha256)) = (digests.md5, digests.sha256) else {
            return Err(Error::new(ErrorKind::Io, "hashing returned no digest"));
        };
        if let Some(p) = &req.prehashed
            && (p.md5 != md5 || p.sha256 != sha256)
        {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} changed after it was hashed; nothing was imported", part.src.display()),
            ));
        }
        let after = fs::symlink_metadata(&dst_path).map_err(|e| Error::io("read", &dst_path, e))?;
        let how = if linked { Staged::Linked } else { Staged::Copied };
        out.how.push((how, after.ino(), (after.len(), fsutil::mtime_ns(&after))));
        out.disk_usage = out.disk_usage.saturating_add(after.blocks().saturating_mul(512));
        out.md5_lines.push(ChecksumLine { md5, path: part.rel.clone() });
        out.sha_parts.push(PartDigest { sha256, part: source.is_folder.then(|| part.rel.clone()) });
    }
    if source.is_folder {
        fsync_dir(&txn.staging().join(file_name))?;
    }
    req.progress.finish();
    if req.cancel.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }
    Ok(out)
}

/// Links the source file into the staging folder and makes it read-only,
/// recording its mode first so that an undone import gives it back. Returns
/// false when the filesystem will not link it (the part is copied instead).
fn stage_link(txn: &mut Txn, part: &Part, dst: &Path) -> Result<bool> {
    if let Err(e) = fs::hard_link(&part.src, dst) {
        tracing::debug!("{}: cannot link ({e}); copying instead", part.src.display());
        return Ok(false);
    }
    let md = fs::symlink_metadata(dst).map_err(|e| Error::io("read", dst, e))?;
    if md.ino() != part.md.ino() {
        // The source was replaced since it was examined: start over with a copy.
        let _ = fs::remove_file(dst);
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} changed while it was imported; nothing was imported", part.src.display()),
        ));
    }
    txn.record_mode(&part.rel, md.ino(), md.mode() & 0o7777)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(IMAGE_MODE))
        .map_err(|e| Error::io("make read-only", dst, e))?;
    Ok(true)
}

/// A linked part is the source's own file: it must not have changed since
/// it was hashed.
fn check_unchanged(txn: &Txn, source: &Source, staged: &StagedImage) -> Result<()> {
    for (part, (how, ino, (len, mtime))) in source.parts.iter().zip(&staged.how) {
        let p = txn.staging().join(&part.rel);
        let md = fs::symlink_metadata(&p).map_err(|e| Error::io("read", &p, e))?;
        if md.ino() != *ino || md.len() != *len || fsutil::mtime_ns(&md) != *mtime {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} changed while it was {}; nothing was imported",
                    part.src.display(),
                    if *how == Staged::Linked { "hashed" } else { "copied" }
                ),
            ));
        }
    }
    Ok(())
}

/// Every fact for the description: the caller's, the content's, the name's
/// and the import's.
fn facts_for(req: &AddRequest<'_>, file_name: &str, staged: &StagedImage) -> Facts {
    let mut facts = req.facts.clone();
    if let Some(c) = &req.content {
        let f = c.facts_for(&req.name);
        facts.kernel = f.kernel.or(facts.kernel);
        facts.guest = f.guest;
        facts.format = f.format;
        facts.subformat = f.subformat;
        facts.virtual_size = f.virtual_size;
        facts.allocated = f.allocated;
        facts.storage = f.storage;
    }
    facts.image = Some(file_name.to_string());
    facts.vm = Some(req.vm);
    facts.os = Some(req.name.os().clone());
    facts.osinfo = req.name.os().osinfo_id();
    facts.isa = Some(req.name.isa());
    facts.word_size = Some(req.name.word_size());
    facts.lib = Some(req.name.lib().clone());
    facts.max_size = Some(req.name.max_size().clone());
    facts.bytes = Some(staged.total);
    facts.disk_usage = Some(staged.disk_usage);
    facts.sha256 = staged.sha_parts.clone();
    facts.added = Some(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    facts.added_by = Some(fsutil::user_at_host());
    facts
}

/// The new description: the replaced image's, rewritten (its lines that
/// vmrepo does not own kept in place), or a new one.
fn describe(req: &AddRequest<'_>, target_dir: &Path, facts: &Facts) -> Description {
    let old = if req.replace {
        crate::catalog::read_capped(&target_dir.join(req.name.description_file_name()), MAX_DESCRIPTION_FILE)
            .ok()
            .and_then(|b| Description::parse(&b).ok())
    } else {
        None
    };
    match old {
        Some(mut d) => {
            d.apply(facts);
            if let Some(n) = &req.notes {
                d.set_notes(n);
            }
            d
        }
        None => Description::new(facts, req.notes.as_deref()),
    }
}

fn already(folder: &str, taken: &[Occupant]) -> Error {
    let names: Vec<&str> = taken.iter().map(|o| o.name.as_str()).collect();
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{}/{folder} already holds {}: choose another name (--detail) or pass --replace",
            layout::VM_DIR,
            names.join(", ")
        ),
    )
}

/// The steps that publish the staged entries `new` (in order: the image
/// last) over what occupies the name. A file that a new one of the same name
/// replaces is first linked into the staging folder, then the new file is
/// renamed over it: readers see the old image or the new one, never none,
/// and the change can be undone. Other old entries (another extension, a
/// folder) go into the staging folder once the new ones are in place; only
/// a folder replaced by one of the same name leaves a moment without it.
fn plan(
    txn: &Txn,
    folder_rel: &str,
    target_dir: &Path,
    taken: &[Occupant],
    new: &[(String, bool)],
) -> Result<Vec<Step>> {
    let staging = txn.staging_rel();
    let replaced = format!("{staging}/{REPLACED_DIR}");
    if !taken.is_empty() {
        let d = txn.staging().join(REPLACED_DIR);
        fs::create_dir(&d).map_err(|e| Error::io("create", &d, e))?;
    }
    let in_folder = |n: &str| format!("{folder_rel}/{n}");
    let mut steps = Vec::new();
    let mut later = Vec::new();
    for o in taken {
        let same = new.iter().find(|(n, _)| *n == o.name);
        let target = target_dir.join(&o.name);
        match same {
            Some((_, new_is_dir)) if !o.is_dir && !new_is_dir && !is_dir_nofollow(&target) => {
                steps.push(txn::keep_aside(txn, in_folder(&o.name), format!("{replaced}/{}", o.name)));
            }
            Some(_) => steps.push(Step::rename(in_folder(&o.name), format!("{replaced}/{}", o.name))),
            None => later.push(Step::rename(in_folder(&o.name), format!("{replaced}/{}", o.name))),
        }
    }
    for (n, _) in new {
        steps.push(Step::rename(format!("{staging}/{n}"), in_folder(n)));
    }
    steps.extend(later);
    Ok(steps)
}

fn is_dir_nofollow(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// After a move: the source's files go, each only if it is still the file
/// that was imported; then its folder, if empty. Failures are only told: the
/// image is stored, and what remains is the user's.
fn remove_source(source: &Source, staged: &StagedImage) {
    for (part, (how, ino, (len, mtime))) in source.parts.iter().zip(&staged.how) {
        let Ok(md) = fs::symlink_metadata(&part.src) else { continue };
        let same = match how {
            Staged::Linked => md.ino() == *ino,
            Staged::Copied => {
                let _ = (len, mtime);
                md.ino() == part.md.ino()
                    && md.len() == part.md.len()
                    && fsutil::mtime_ns(&md) == fsutil::mtime_ns(&part.md)
            }
        };
        if !same {
            tracing::warn!("{} changed after it was imported: left in place", part.src.display());
            continue;
        }
        if let Err(e) = fs::remove_file(&part.src) {
            tracing::warn!("the image is stored, but {} could not be removed: {e}", part.src.display());
        }
    }
    if source.is_folder {
        let _ = fs::remove_dir(&source.path);
    }
    if let Some(p) = source.path.parent() {
        let _ = fsync_dir(p);
    }
}

/// The files of an image folder, named `stem/part` in the staging folder.
fn folder_parts(dir: &Path, file_name: &str) -> Result<Vec<Part>> {
    let (parts, others) = layout::folder_parts(dir)?;
    if let Some(o) = others.first() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}/{o} is not a regular file: an image folder holds only the image's files",
                dir.display()
            ),
        ));
    }
    if parts.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{} is an empty folder", dir.display())));
    }
    for (name, _) in &parts {
        if name.starts_with('.') || name.contains(['/', '\0']) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}/{name}: hidden or unsafe file name", dir.display()),
            ));
        }
    }
    Ok(parts
        .into_iter()
        .map(|(name, md)| Part { src: dir.join(&name), rel: format!("{file_name}/{name}"), md })
        .collect())
}
