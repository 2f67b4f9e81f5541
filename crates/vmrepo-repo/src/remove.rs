//! `vmrepo rm`: remove an image and its sidecars, all or nothing.

use std::fs;
use std::sync::atomic::AtomicBool;

use crate::catalog::Catalog;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::RepoLock;
use crate::progress::Progress;
use crate::txn::{self, Step, Txn};

/// What `rm` removed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RemoveOutcome {
    pub vm: String,
    pub name: String,
    /// Paths removed, relative to the root.
    pub removed: Vec<String>,
}

/// Removes the image named `spec` with its `.checksum` and `.txt`. The
/// entries are renamed into a staging folder under a journal, then deleted:
/// a crash leaves the image either whole or gone.
///
/// # Errors
/// No such image, an ambiguous name, the lock, or an I/O failure.
pub fn remove(
    catalog: &mut Catalog,
    spec: &str,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RemoveOutcome> {
    let rec = catalog.resolve(spec)?;
    let repo = catalog.repo().clone();
    let dir = repo.vm_root().join(&rec.folder);
    let mut names = Vec::new();
    if rec.image_kind() != crate::layout::ImageKind::Missing {
        names.push(rec.file.clone());
    }
    names.push(format!("{}.checksum", rec.name));
    names.push(format!("{}.txt", rec.name));
    let lock = RepoLock::acquire(
        &repo.meta_dir(),
        &|| progress.note("waiting for another vmrepo command to finish"),
        cancel,
    )?;
    let _ = txn::recover(&repo, &lock)?;
    let present: Vec<String> =
        names.into_iter().filter(|n| fs::symlink_metadata(dir.join(n)).is_ok()).collect();
    if present.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, format!("{} is already gone", rec.path)));
    }
    crate::fsutil::real_folder(repo.root(), &dir)?;
    let folder_rel = format!("{}/{}", crate::layout::VM_DIR, rec.folder);
    let txn = Txn::begin(&repo, &folder_rel)?;
    let steps = present
        .iter()
        .map(|n| Step::rename(format!("{folder_rel}/{n}"), format!("{}/{n}", txn.staging_rel())))
        .collect();
    txn.commit(steps, &lock)?;
    let vm = vmrepo_name::Vm::from_user(&rec.vm)?;
    catalog.reload(vm, &rec.folder)?;
    Ok(RemoveOutcome {
        vm: rec.vm,
        name: rec.name,
        removed: present.iter().map(|n| format!("{}/{}/{n}", crate::layout::VM_DIR, rec.folder)).collect(),
    })
}
