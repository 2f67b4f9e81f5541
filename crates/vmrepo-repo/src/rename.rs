//! `vmrepo mv`: give an image another name (or move it to another VM
//! folder), crash-safely, with its sidecars: the `.checksum` is rewritten
//! for the new name (the digests are the same bytes'), and the `.txt` keeps
//! every line an administrator wrote, with the name's fields updated.

use std::fs;
use std::sync::atomic::AtomicBool;

use vmrepo_name::{ImageName, Vm};

use crate::catalog::{Catalog, ImageRecord, read_capped};
use crate::checksum::{self, ChecksumLine, MAX_CHECKSUM_FILE};
use crate::description::{Description, MAX_DESCRIPTION_FILE, keys};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{self, ImageKind, Sidecars, VM_DIR};
use crate::lock::RepoLock;
use crate::progress::Progress;
use crate::txn::{self, Step, Txn};

/// The folder in the staging folder that receives the old sidecars.
const OLD_DIR: &str = "old";

/// A rename.
pub struct RenameRequest<'a> {
    /// The image, as `vmrepo show` takes it.
    pub from: &'a str,
    /// The new name (`NAME`, `NAME.ext` or `VM/NAME`); a file image keeps its
    /// extension when none is given.
    pub to: &'a str,
    /// Rename even where the new name disagrees with the content.
    pub force: bool,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

/// What `mv` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RenameOutcome {
    /// The old path, relative to the root.
    pub from: String,
    /// The image under its new name.
    pub image: ImageRecord,
}

/// Renames an image with its sidecars.
///
/// # Errors
/// No such image or only its sidecars ([`ErrorKind::NotFound`]); a new name
/// that is malformed, the same, or of another shape than the image
/// ([`ErrorKind::InvalidInput`]); the new name is taken
/// ([`ErrorKind::AlreadyExists`]); it disagrees with the content
/// ([`ErrorKind::BadImage`], unless forced); the lock, or an I/O failure.
pub fn rename(catalog: &mut Catalog, req: RenameRequest<'_>) -> Result<RenameOutcome> {
    let rec = catalog.resolve(req.from)?;
    let repo = catalog.repo().clone();
    let kind = rec.image_kind();
    if kind == ImageKind::Missing {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{} is missing (only its sidecars remain): there is nothing to rename", rec.path),
        ));
    }
    let old_vm = Vm::from_user(&rec.vm)?;
    let old_name = rec
        .image_name()
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("{}: not a convention name", rec.path)))?;
    let (vm, new_name) = new_name_of(req.to, old_vm, &old_name, kind)?;
    if vm == old_vm && new_name == old_name {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{} already has that name", rec.path)));
    }
    let old_dir = repo.vm_root().join(&rec.folder);
    if !req.force {
        let content = crate::content::read(&old_dir.join(&rec.file))?;
        let mut d = content.disagreements(&new_name);
        d.extend(content.vm_disagreements(vm));
        if !d.is_empty() {
            let all: Vec<&str> = d.iter().map(|x| x.message.as_str()).collect();
            return Err(Error::new(
                ErrorKind::BadImage,
                format!("{}: {}; pass --force to rename it anyway", new_name, all.join("; ")),
            ));
        }
    }
    let folder = catalog.folder_of(vm)?.unwrap_or_else(|| vm.as_str().to_string());
    let new_dir = repo.vm_folder_for_write(&folder)?;
    fs::symlink_metadata(&old_dir).map_err(|e| Error::io("read", &old_dir, e))?;
    crate::fsutil::real_folder(repo.root(), &old_dir)?;

    let old_rel = format!("{VM_DIR}/{}", rec.folder);
    let new_rel = format!("{VM_DIR}/{folder}");
    let txn = Txn::begin(&repo, &new_rel)?;
    let sidecars = Sidecars::of(&old_dir, &rec.file, &rec.name, kind);
    let new_file = new_name.to_string();
    stage_sidecars(&txn, &rec, &sidecars, &new_name, vm)?;

    let lock = RepoLock::acquire(
        &repo.meta_dir(),
        &|| req.progress.note("waiting for another vmrepo command to finish"),
        req.cancel,
    )?;
    let _ = txn::recover(&repo, &lock)?;
    crate::fsutil::real_folder(repo.root(), &old_dir)?;
    crate::fsutil::real_folder(repo.root(), &new_dir)?;
    let new_stem = new_name.stem();
    let same_stem = new_rel == old_rel && new_stem == rec.name;
    let taken: Vec<String> = layout::occupants(&new_dir, &new_stem)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| !(same_stem && (n == &rec.file || is_sidecar_of(n, &rec.name))))
        .collect();
    if !taken.is_empty() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{new_rel} already holds {}: choose another name", taken.join(", ")),
        ));
    }
    let steps = plan(&txn, &old_rel, &new_rel, &rec, &sidecars, &new_file, same_stem);
    txn.commit(steps, &lock)?;
    catalog.reload(old_vm, &rec.folder)?;
    catalog.reload(vm, &folder)?;
    drop(lock);
    let image = catalog.resolve(&format!("{}/{new_file}", vm.as_str()))?;
    Ok(RenameOutcome { from: rec.path, image })
}

/// The VM and name `to` asks for: `VM/` is optional, and a file image keeps
/// its extension when `to` has none.
fn new_name_of(to: &str, old_vm: Vm, old: &ImageName, kind: ImageKind) -> Result<(Vm, ImageName)> {
    let to = to.strip_prefix("vm/").unwrap_or(to);
    let (vm, name) = match to.split_once('/') {
        Some((v, n)) => (Vm::from_user(v)?, n),
        None => (old_vm, to),
    };
    let parsed = ImageName::parse(name).or_else(|_| ImageName::parse_stem(name))?;
    let name = match (kind, parsed.ext(), old.ext()) {
        (ImageKind::File, None, Some(ext)) => parsed.with_ext(Some(ext.clone()))?,
        (ImageKind::Folder, Some(_), _) if old.ext().is_none() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{name}: an image of several files is a folder named without extension"),
            ));
        }
        (ImageKind::Folder, None, Some(ext)) => parsed.with_ext(Some(ext.clone()))?,
        _ => parsed,
    };
    Ok((vm, name))
}

fn is_sidecar_of(entry: &str, stem: &str) -> bool {
    entry == format!("{stem}.checksum") || entry == format!("{stem}.txt")
}

/// Writes the new `.txt` and `.checksum` into the staging folder.
fn stage_sidecars(txn: &Txn, rec: &ImageRecord, sidecars: &Sidecars, new: &ImageName, vm: Vm) -> Result<()> {
    let new_file = new.to_string();
    if let Ok(bytes) = read_capped(&sidecars.checksum, MAX_CHECKSUM_FILE) {
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::new(ErrorKind::BadSidecar, format!("{}: not text", sidecars.checksum.display()))
        })?;
        let lines = checksum::parse(text).map_err(|e| {
            Error::new(ErrorKind::BadSidecar, format!("{}: {e}", sidecars.checksum.display()))
        })?;
        let renamed: Vec<ChecksumLine> = lines
            .into_iter()
            .map(|l| {
                let key = sidecars.part_key(&rec.file, &l.path);
                let path = match key.strip_prefix(&format!("{}/", rec.file)) {
                    Some(part) => format!("{new_file}/{part}"),
                    None if key == rec.file => new_file.clone(),
                    None => key,
                };
                ChecksumLine { md5: l.md5, path }
            })
            .collect();
        txn::stage_file(txn, &new.checksum_file_name(), checksum::format(&renamed).as_bytes(), 0o644)?;
    }
    if let Ok(bytes) = read_capped(&sidecars.description, MAX_DESCRIPTION_FILE) {
        let mut d = Description::parse(&bytes).map_err(|e| {
            Error::new(ErrorKind::BadSidecar, format!("{}: {e}", sidecars.description.display()))
        })?;
        // Only what the name says changes; every other line stays as written.
        d.retitle(&rec.file, &new_file);
        d.set(keys::IMAGE, &new_file);
        d.set(keys::VM, vm.as_str());
        d.set(keys::OS, &new.os().to_string());
        match new.os().osinfo_id() {
            Some(id) => d.set(keys::OSINFO, &id),
            None => d.set_all(keys::OSINFO, &[]),
        }
        d.set(keys::ISA, new.isa().as_str());
        d.set(keys::WORD_SIZE, &new.word_size().to_string());
        d.set(keys::LIB, new.lib().as_str());
        d.set(keys::MAX_SIZE, &format!("{} ({} bytes)", new.max_size(), new.max_size().bytes()));
        let parts: Vec<String> = d
            .facts()
            .0
            .sha256
            .iter()
            .map(|p| match &p.part {
                Some(part) => {
                    let part = part
                        .strip_prefix(&format!("{}/", rec.file))
                        .map_or_else(|| part.clone(), |rest| format!("{new_file}/{rest}"));
                    format!("{}  {part}", checksum::hex(&p.sha256))
                }
                None => checksum::hex(&p.sha256),
            })
            .collect();
        if !parts.is_empty() {
            d.set_all(keys::SHA256, &parts);
        }
        txn::stage_file(txn, &new.description_file_name(), d.render().as_bytes(), 0o644)?;
    }
    fs::create_dir(txn.staging().join(OLD_DIR)).map_err(|e| Error::io("create", txn.staging(), e))?;
    Ok(())
}

/// The steps: the new sidecars in, the image renamed last of the new name's
/// entries, then the old sidecars out (into the staging folder). A sidecar
/// whose name does not change (only the extension does) is linked aside and
/// the new one renamed over it, as `add --replace` does.
fn plan(
    txn: &Txn,
    old_rel: &str,
    new_rel: &str,
    rec: &ImageRecord,
    sidecars: &Sidecars,
    new_file: &str,
    same_stem: bool,
) -> Vec<Step> {
    let staging = txn.staging_rel();
    let new_stem = ImageName::parse(new_file).map(|n| n.stem()).unwrap_or_else(|_| new_file.to_string());
    let mut steps = Vec::new();
    let mut later = Vec::new();
    for (old_path, inside, suffix) in
        [(&sidecars.description, false, ".txt"), (&sidecars.checksum, sidecars.checksum_inside, ".checksum")]
    {
        let staged = txn.staging().join(format!("{new_stem}{suffix}"));
        let old_exists = fs::symlink_metadata(old_path).is_ok();
        let old_name = format!("{}{suffix}", rec.name);
        let inside = inside || old_path.parent().is_some_and(|p| p.ends_with(&rec.file));
        let aside = format!("{staging}/{OLD_DIR}/{old_name}");
        if old_exists {
            if inside {
                // Inside the image folder: it moves with the folder, then out.
                later.push(Step::rename(format!("{new_rel}/{new_file}/{old_name}"), aside));
            } else if same_stem {
                steps.push(txn::keep_aside(txn, format!("{old_rel}/{old_name}"), aside));
            } else {
                later.push(Step::rename(format!("{old_rel}/{old_name}"), aside));
            }
        }
        if staged.exists() {
            steps.push(Step::rename(
                format!("{staging}/{new_stem}{suffix}"),
                format!("{new_rel}/{new_stem}{suffix}"),
            ));
        }
    }
    steps.push(Step::rename(format!("{old_rel}/{}", rec.file), format!("{new_rel}/{new_file}")));
    steps.extend(later);
    steps
}
