//! `vmrepo add`: import an image under its convention name, crash-safely.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use vmrepo_name::{ImageName, Vm};

use crate::catalog::{Catalog, ImageRecord};
use crate::checksum::{self, ChecksumLine, hex};
use crate::description::{Description, Facts, MAX_DESCRIPTION_FILE, PartDigest};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, fsync_dir};
use crate::hashing::{self, Endpoint, Want};
use crate::layout;
use crate::lock::RepoLock;
use crate::progress::Progress;
use crate::txn::{self, Step, Txn};

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
    /// Rename the source into the repository instead of copying it (copy and
    /// remove it when it is on another filesystem).
    pub move_source: bool,
    /// What the format layer found (see [`crate::content::read`]); `None` when
    /// the caller forces the import of a file it cannot read.
    pub content: Option<crate::content::Content>,
    /// Store the image even where its name disagrees with its content.
    pub force: bool,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

/// What `add` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AddOutcome {
    pub image: ImageRecord,
    /// An image was there before and was replaced.
    pub replaced: bool,
    /// The source was renamed (or copied and removed) rather than copied.
    pub moved: bool,
    /// MD5 of each file, as in the .checksum.
    pub md5: Vec<String>,
}

struct Part {
    /// Path of the source file.
    src: PathBuf,
    /// Name inside the image (the file name, or `stem/part` for a folder).
    rel: String,
    size: u64,
}

/// Imports an image. See the crate documentation for the guarantees.
///
/// # Errors
/// The source is missing or unreadable, the name is taken (without
/// `replace`), the disk is full, the lock cannot be taken, or the user
/// interrupted; in every case the repository is left as it was.
pub fn add(catalog: &mut Catalog, req: AddRequest<'_>) -> Result<AddOutcome> {
    let repo = catalog.repo().clone();
    let src_md = fs::metadata(req.source).map_err(|e| Error::io("read", req.source, e))?;
    let is_folder = src_md.is_dir();
    if !is_folder && !src_md.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a regular file or a folder", req.source.display()),
        ));
    }
    match (is_folder, req.name.ext()) {
        (true, Some(_)) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a folder: an image of several files has a name without extension",
                    req.source.display()
                ),
            ));
        }
        (false, None) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: an image file needs an extension", req.source.display()),
            ));
        }
        _ => {}
    }
    let file_name = req.name.to_string();
    let stem = req.name.stem();
    if let Some(c) = &req.content {
        let d = c.disagreements(&req.name);
        if !d.is_empty() && !req.force {
            let all: Vec<&str> = d.iter().map(|x| x.message.as_str()).collect();
            return Err(Error::new(
                ErrorKind::BadImage,
                format!("{}: {}; pass --force to store it anyway", req.source.display(), all.join("; ")),
            ));
        }
    }

    let parts = source_parts(req.source, is_folder, &file_name)?;
    let total: u64 = parts.iter().map(|p| p.size).fold(0, u64::saturating_add);

    let folder = catalog.folder_of(req.vm)?.unwrap_or_else(|| req.vm.as_str().to_string());
    let vm_root = repo.vm_root();
    let target_dir = vm_root.join(&folder);
    if !target_dir.is_dir() {
        fs::create_dir_all(&target_dir).map_err(|e| Error::io("create", &target_dir, e))?;
        fsync_dir(&vm_root)?;
    }
    let taken = occupants(&target_dir, &stem)?;
    if !taken.is_empty() && !req.replace {
        return Err(already(&folder, &taken));
    }
    let target_md = fs::metadata(&target_dir).map_err(|e| Error::io("read", &target_dir, e))?;
    let same_fs = src_md.dev() == target_md.dev();
    let in_place = req.move_source && same_fs;
    if !in_place {
        let need: u64 = allocated(&parts);
        let free = fsutil::free_space(&target_dir)?;
        if need > free {
            return Err(Error::new(
                ErrorKind::NoSpace,
                format!(
                    "not enough space in {} for {}: {} needed, {} free",
                    target_dir.display(),
                    req.source.display(),
                    crate::description::human_bytes(need),
                    crate::description::human_bytes(free)
                ),
            ));
        }
    }

    let txn = Txn::begin(&repo, &target_dir)?;
    req.progress.start(total, &file_name);
    let staged_image = txn.staging().join(&file_name);
    if is_folder && !in_place {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&staged_image)
            .map_err(|e| Error::io("create", &staged_image, e))?;
    }
    let mut md5_lines = Vec::new();
    let mut sha_parts = Vec::new();
    let want = Want { md5: true, sha256: true };
    let advance = |n: u64| req.progress.advance(n);
    let mut identity = Vec::new();
    for part in &parts {
        let src = hashing::open_nofollow(&part.src).or_else(|_| {
            // The user named the source; a link there is theirs to follow.
            fs::File::open(&part.src).map_err(|e| Error::io("open", &part.src, e))
        })?;
        let src_end = Endpoint { file: &src, path: &part.src };
        let digests = if in_place {
            let before = src.metadata().map_err(|e| Error::io("read", &part.src, e))?;
            let d = hashing::hash_file(src_end, None, want, &advance, req.cancel)?;
            identity.push((part.src.clone(), before.ino(), before.len(), fsutil::mtime_ns(&before)));
            d
        } else {
            let dst_path = if is_folder {
                staged_image.join(part.rel.rsplit('/').next().unwrap_or(&part.rel))
            } else {
                staged_image.clone()
            };
            let dst = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&dst_path)
                .map_err(|e| Error::io("create", &dst_path, e))?;
            hashing::hash_file(
                src_end,
                Some(Endpoint { file: &dst, path: &dst_path }),
                want,
                &advance,
                req.cancel,
            )?
        };
        let (Some(md5), Some(sha256)) = (digests.md5, digests.sha256) else {
            return Err(Error::new(ErrorKind::Io, "hashing returned no digest"));
        };
        md5_lines.push(ChecksumLine { md5, path: part.rel.clone() });
        sha_parts.push(PartDigest { sha256, part: is_folder.then(|| part.rel.clone()) });
    }
    if is_folder && !in_place {
        fsync_dir(&staged_image)?;
    }
    req.progress.finish();
    if req.cancel.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }

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
    facts.image = Some(file_name.clone());
    facts.vm = Some(req.vm);
    facts.os = Some(req.name.os().clone());
    facts.osinfo = req.name.os().osinfo_id();
    facts.isa = Some(req.name.isa());
    facts.word_size = Some(req.name.word_size());
    facts.lib = Some(req.name.lib().clone());
    facts.max_size = Some(req.name.max_size().clone());
    facts.bytes = Some(total);
    facts.sha256 = sha_parts;
    facts.added = Some(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    facts.added_by = Some(fsutil::user_at_host());

    let old_description = if req.replace {
        crate::catalog::read_capped(&target_dir.join(req.name.description_file_name()), MAX_DESCRIPTION_FILE)
            .ok()
            .and_then(|b| Description::parse(&b).ok())
    } else {
        None
    };
    let description = match old_description {
        Some(mut d) => {
            d.apply(&facts);
            if let Some(n) = &req.notes {
                d.set_notes(n);
            }
            d
        }
        None => Description::new(&facts, req.notes.as_deref()),
    };
    let txt_name = req.name.description_file_name();
    let sum_name = req.name.checksum_file_name();
    txn::stage_file(&txn, &txt_name, description.render().as_bytes(), 0o644)?;
    txn::stage_file(&txn, &sum_name, checksum::format(&md5_lines).as_bytes(), 0o644)?;

    let lock = RepoLock::acquire(&repo.meta_dir(), &|| {
        req.progress.note("waiting for another vmrepo command to finish")
    })?;
    if req.cancel.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }
    let _ = txn::recover(&repo, &lock)?;
    let taken = occupants(&target_dir, &stem)?;
    if !taken.is_empty() && !req.replace {
        return Err(already(&folder, &taken));
    }
    for (path, ino, len, mtime) in &identity {
        let now = fs::metadata(path).map_err(|e| Error::io("read", path, e))?;
        if now.ino() != *ino || now.len() != *len || fsutil::mtime_ns(&now) != *mtime {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} changed while it was hashed; nothing was imported", path.display()),
            ));
        }
    }
    let mut steps = Vec::new();
    if !taken.is_empty() {
        let old = txn.staging().join("replaced");
        fs::create_dir(&old).map_err(|e| Error::io("create", &old, e))?;
        for name in &taken {
            steps.push(Step { from: target_dir.join(name), to: old.join(name) });
        }
    }
    steps.push(Step { from: txn.staging().join(&txt_name), to: target_dir.join(&txt_name) });
    steps.push(Step { from: txn.staging().join(&sum_name), to: target_dir.join(&sum_name) });
    let image_from = if in_place { req.source.to_path_buf() } else { staged_image };
    steps.push(Step { from: image_from, to: target_dir.join(&file_name) });
    let remove_after = if req.move_source && !same_fs { vec![req.source.to_path_buf()] } else { Vec::new() };
    if in_place {
        make_read_only(&parts);
    }
    txn.commit(steps, remove_after, &lock)?;
    catalog.reload(req.vm, &folder)?;
    drop(lock);
    let image = catalog.resolve(&format!("{}/{file_name}", req.vm.as_str()))?;
    Ok(AddOutcome {
        image,
        replaced: !taken.is_empty(),
        moved: req.move_source,
        md5: md5_lines.iter().map(|l| hex(&l.md5)).collect(),
    })
}

fn already(folder: &str, taken: &[String]) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} already holds {}: choose another name (--detail) or pass --replace",
            format_args!("{}/{folder}", layout::VM_DIR),
            taken.join(", ")
        ),
    )
}

/// The entries of `dir` that belong to the name `stem`: an image file with
/// any extension, an image folder, and the two sidecars.
fn occupants(dir: &Path, stem: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(stem) else { continue };
        let ours = rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|ext| !ext.is_empty() && !ext.contains('.'));
        if ours {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

fn source_parts(source: &Path, is_folder: bool, file_name: &str) -> Result<Vec<Part>> {
    if !is_folder {
        let md = fs::metadata(source).map_err(|e| Error::io("read", source, e))?;
        return Ok(vec![Part { src: source.to_path_buf(), rel: file_name.to_string(), size: md.len() }]);
    }
    let (parts, others) = layout::folder_parts(source)?;
    if let Some(o) = others.first() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}/{o} is not a regular file: an image folder holds only the image's files",
                source.display()
            ),
        ));
    }
    if parts.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{} is an empty folder", source.display())));
    }
    for (name, _) in &parts {
        if name.starts_with('.')
            || vmrepo_name::ImageName::parse_file(name).is_err() && name.contains(['/', '\0'])
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}/{name}: hidden or unsafe file name", source.display()),
            ));
        }
    }
    Ok(parts
        .into_iter()
        .map(|(name, md)| Part {
            src: source.join(&name),
            rel: format!("{file_name}/{name}"),
            size: md.len(),
        })
        .collect())
}

fn allocated(parts: &[Part]) -> u64 {
    parts
        .iter()
        .map(|p| fs::metadata(&p.src).map(|m| m.blocks().saturating_mul(512)).unwrap_or(p.size))
        .fold(0, u64::saturating_add)
}

/// Stored images are read-only; a moved source gets the same treatment.
fn make_read_only(parts: &[Part]) {
    use std::os::unix::fs::PermissionsExt;
    for p in parts {
        let _ = fs::set_permissions(&p.src, fs::Permissions::from_mode(0o444));
    }
}
