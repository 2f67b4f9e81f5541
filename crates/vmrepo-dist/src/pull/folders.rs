//! Image folders in `pull`: the catalog's `folders` entries checked as
//! hostile input, selected, each file downloaded as an image is (in the
//! same pool, resumable, from the source or a mirror, proved by its size
//! and SHA-256), and, once every download of the pull is proved, each folder
//! imported whole through `vmrepo add --move` of a folder: its files linked
//! from the partial files into `.vmrepo/pull/<name>.folder/`, then staged
//! and committed by the repository's transaction, so that nothing of it is
//! visible before all of it is.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::{Catalog, Error, ErrorKind, Facts, NoProgress, Result};

use super::{MAX_IMAGE_SIZE, PullOptions, PullReport, PulledImage, check_digests, vm_of_path};
use crate::download::{self, Fetched};
use crate::entries;
use crate::fetch::Remote;
use crate::schema::{self, CatalogDoc, CatalogFolder, CatalogImage};

/// One image folder entry, as hostile input: `vm/<VM>/<name>` with a
/// convention name without extension, 1 to [`schema::MAX_FOLDER_FILES`]
/// files each with a plain name inside the folder, listed once, with
/// well-formed digests, and sizes that add up to the folder's.
pub(super) fn check(f: &CatalogFolder) -> std::result::Result<(), String> {
    let parts: Vec<&str> = f.path.split('/').collect();
    let [top, vm_folder, file] = parts.as_slice() else {
        return Err("a path vm/<VM>/<name> is expected".into());
    };
    if *top != "vm" || *file != f.file || f.file != f.name {
        return Err(format!("a path vm/<VM>/{} (the image's name) is expected", f.name));
    }
    let vm = Vm::from_user(vm_folder).map_err(|e| e.to_string())?;
    if vm.as_str() != *vm_folder && !vm_folder.eq_ignore_ascii_case(vm.as_str()) {
        return Err(format!("{vm_folder:?} is not a VM folder"));
    }
    let name = ImageName::parse(&f.file).map_err(|e| e.to_string())?;
    if name.ext().is_some() || name.to_string() != f.file || name.stem() != f.name {
        return Err(format!("{:?} is not a convention name without extension", f.file));
    }
    if f.files.is_empty() || f.files.len() > schema::MAX_FOLDER_FILES {
        return Err(format!("{} files: 1 to {} are expected", f.files.len(), schema::MAX_FOLDER_FILES));
    }
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for file in &f.files {
        schema::check_folder_file_name(&f.name, &file.path)?;
        if !seen.insert(file.path.as_str()) {
            return Err(format!("the file {:?} is listed twice", file.path));
        }
        check_digests(&file.sha256, file.md5.as_deref(), file.size)
            .map_err(|why| format!("file {:?}: {why}", file.path))?;
        total = total
            .checked_add(file.size)
            .filter(|t| *t <= MAX_IMAGE_SIZE)
            .ok_or_else(|| format!("its files add up to more than {MAX_IMAGE_SIZE} bytes"))?;
    }
    if total != f.size {
        return Err(format!("its files add up to {total} bytes, not its size {}", f.size));
    }
    Ok(())
}

/// The selected image folders, each with a line in the report: those
/// stored here with the same files are `present`; one stored under its
/// name with other files is refused (pull never replaces). Returns those
/// to fetch, with their slot in the report.
///
/// # Errors
/// [`ErrorKind::AlreadyExists`] for a name stored with other bytes; the
/// index cannot be read.
pub(super) fn select(
    catalog: &Catalog,
    doc: &CatalogDoc,
    opts: &PullOptions,
    source: &Remote,
    report: &mut PullReport,
) -> Result<Vec<(usize, CatalogFolder)>> {
    let mut todo = Vec::new();
    for folder in doc.folders.iter().filter(|f| opts.select.matches_folder(f)) {
        let (_, vm_folder) = vm_of_path(&folder.path)?;
        let stored = match catalog.resolve(&format!("{vm_folder}/{}", folder.file)) {
            Ok(r) => Some(entries::folder_files(catalog, &r).ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let want: BTreeMap<&str, &str> =
            folder.files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())).collect();
        let action = match stored {
            Some(Some(files))
                if files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())).collect::<BTreeMap<_, _>>()
                    == want =>
            {
                "present"
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{}: stored here with other files than {} has: not replaced, nothing imported",
                        folder.path,
                        source.location(&folder.path)
                    ),
                ));
            }
            None if opts.dry_run => "would-pull",
            None => {
                todo.push((report.images.len(), folder.clone()));
                "pulled"
            }
        };
        report.images.push(PulledImage {
            path: folder.path.clone(),
            size: folder.size,
            sha256: None,
            files: Some(folder.files.len()),
            action,
            transferred: 0,
            mirror: None,
            resumed_from: 0,
            attempts: 0,
        });
    }
    Ok(todo)
}

/// A download for each file of the folders `todo`: an entry as an image's
/// (its path `vm/<VM>/<name>/<file>`, its size and digests), numbered from
/// `first` on, in order.
pub(super) fn downloads(todo: &[(usize, CatalogFolder)], first: usize) -> Vec<(usize, CatalogImage)> {
    let mut out = Vec::new();
    for (_, folder) in todo {
        for file in &folder.files {
            let slot = first + out.len();
            out.push((slot, folder.file_as_image(file)));
        }
    }
    out
}

/// Imports each folder of `todo`, its files proved (`fetched` holds the
/// downloads of [`downloads`] that were made; a file whose bytes another
/// download of this pull fetched is linked from that one's partial file),
/// and fills in the report's line of each.
///
/// # Errors
/// A partial file that is not there, or the import's errors, naming the folder.
pub(super) fn import_all(
    catalog: &mut Catalog,
    todo: &[(usize, CatalogFolder)],
    fetched: &[(usize, CatalogImage, Fetched)],
    dir: &Path,
    (source, serial, signed_by): (&str, u64, &str),
    report: &mut PullReport,
    cancel: &AtomicBool,
) -> Result<()> {
    let by_path: BTreeMap<&str, &Fetched> = fetched.iter().map(|(_, i, f)| (i.path.as_str(), f)).collect();
    for (slot, folder) in todo {
        let (vm, _) = vm_of_path(&folder.path)?;
        let mut mirrors = Vec::new();
        let entry = &mut report.images[*slot];
        for path in folder.file_paths() {
            if let Some(f) = by_path.get(path.as_str()) {
                entry.transferred = entry.transferred.saturating_add(f.transferred);
                entry.resumed_from = entry.resumed_from.saturating_add(f.resumed_from);
                entry.attempts = entry.attempts.saturating_add(f.attempts);
                if let Some(m) = &f.mirror
                    && !mirrors.contains(m)
                {
                    mirrors.push(m.clone());
                }
            }
        }
        entry.mirror = mirrors.first().cloned();
        report.transferred = report.transferred.saturating_add(entry.transferred);
        let through: Vec<&String> = mirrors.iter().filter(|m| m.as_str() != source).collect();
        let from = if through.is_empty() {
            format!("{source}/{}", folder.path)
        } else {
            let names: Vec<&str> = through.iter().map(|m| m.as_str()).collect();
            format!("{source}/{} (through {})", folder.path, names.join(", "))
        };
        let notes = format!("Pulled from {from} (catalog serial {serial}, signed by {signed_by}).");
        import_one(catalog, folder, vm, dir, &notes, cancel)
            .map_err(|e| e.context(format!("pull {}", folder.path)))?;
    }
    Ok(())
}

/// Links the proved files of `folder` into `dir/<name>.folder/` and imports
/// that folder as `vmrepo add --move` does (each file linked into the
/// staging folder, hashed, committed with the sidecars by the journal).
fn import_one(
    catalog: &mut Catalog,
    folder: &CatalogFolder,
    vm: Vm,
    dir: &Path,
    notes: &str,
    cancel: &AtomicBool,
) -> Result<()> {
    let name =
        ImageName::parse(&folder.file).map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    let links = dir.join(format!("{}.folder", folder.name));
    // Left by a pull killed while importing: links only.
    if fs::symlink_metadata(&links).is_ok() {
        fs::remove_dir_all(&links).map_err(|e| Error::io("remove", &links, e))?;
    }
    fs::create_dir(&links).map_err(|e| Error::io("create the folder", &links, e))?;
    let result = (|| {
        for file in &folder.files {
            let partial = dir.join(format!("{}.part", file.sha256));
            let to = links.join(&file.path);
            fs::hard_link(&partial, &to).map_err(|e| Error::io("link", &to, e))?;
        }
        // The publisher's name and bytes (every file's SHA-256 is the signed
        // one): stored as they are there, read or not.
        let content = vmrepo_repo::content::read(&links).ok();
        vmrepo_repo::add(
            catalog,
            vmrepo_repo::AddRequest {
                source: &links,
                vm,
                name,
                facts: Facts::default(),
                notes: Some(notes.to_string()),
                replace: false,
                move_source: true,
                content,
                force: true,
                prehashed: None,
                progress: &NoProgress,
                cancel,
            },
        )
    })();
    let _ = fs::remove_dir_all(&links);
    result.map(|_| ())
}

/// Removes the partial files of the folders' downloads.
pub(super) fn discard(fetched: &[(usize, CatalogImage, Fetched)]) {
    for (_, _, f) in fetched {
        download::discard(&f.partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FolderFile;

    fn folder() -> CatalogFolder {
        let v = serde_json::json!({
            "vm": "vmware", "name": "sl5.3_x86_64_sl08e_8GB_split", "file": "sl5.3_x86_64_sl08e_8GB_split",
            "path": "vm/vmware/sl5.3_x86_64_sl08e_8GB_split", "size": 30,
            "files": [
                {"path": "a.vmdk", "size": 10, "sha256": "ab".repeat(32), "md5": "cd".repeat(16)},
                {"path": "a-f001.vmdk", "size": 20, "sha256": "ef".repeat(32)}
            ],
            "format": "vmdk", "virtual_size": 10, "storage": null,
            "os": "sl5.3", "osinfo": null, "arch": "x86", "bits": 64, "lib": "sl08e",
            "maxsize": "8GB", "maxsize_bytes": 8_000_000_000u64, "detail": "split", "kernel": null,
            "added": null, "description": {}
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_good_folder_passes_and_each_hostile_one_is_refused() {
        assert_eq!(check(&folder()), Ok(()));
        type Break = (&'static str, fn(&mut CatalogFolder));
        let file = |path: &str| FolderFile { path: path.into(), size: 0, sha256: "00".repeat(32), md5: None };
        let breaks: Vec<Break> = vec![
            ("dotdot file", |f| f.files[1].path = "..".into()),
            ("escaping file", |f| f.files[1].path = "../../../etc/cron.d/x".into()),
            ("absolute file", |f| f.files[1].path = "/etc/passwd".into()),
            ("deeper file", |f| f.files[1].path = "x/a.vmdk".into()),
            ("empty file name", |f| f.files[1].path = String::new()),
            ("hidden file", |f| f.files[1].path = ".a.vmdk".into()),
            ("sidecar name", |f| f.files[1].path = "sl5.3_x86_64_sl08e_8GB_split.txt".into()),
            ("duplicate file", |f| f.files[1].path = "a.vmdk".into()),
            ("no file", |f| {
                f.files.clear();
                f.size = 0;
            }),
            ("sizes disagree", |f| f.size = 31),
            ("huge file", |f| f.files[1].size = u64::MAX),
            ("upper-case sha256", |f| f.files[0].sha256 = "AB".repeat(32)),
            ("bad md5", |f| f.files[0].md5 = Some("zz".repeat(16))),
            ("path with dotdot", |f| f.path = "vm/../sl5.3_x86_64_sl08e_8GB_split".into()),
            ("deeper path", |f| f.path = "vm/vmware/x/sl5.3_x86_64_sl08e_8GB_split".into()),
            ("name with extension", |f| {
                f.file = "sl5.3_x86_64_sl08e_8GB_split.vmdk".into();
                f.path = "vm/vmware/sl5.3_x86_64_sl08e_8GB_split.vmdk".into();
            }),
            ("name and file disagree", |f| f.name = "sl5.3_x86_64_sl08e_4GB_split".into()),
            ("not a VM folder", |f| f.path = "vm/hyper v/sl5.3_x86_64_sl08e_8GB_split".into()),
        ];
        for (what, b) in breaks {
            let mut f = folder();
            b(&mut f);
            assert!(check(&f).is_err(), "{what} passed");
        }
        let mut many = folder();
        many.files = (0..=schema::MAX_FOLDER_FILES).map(|i| file(&format!("f{i}"))).collect();
        many.size = 0;
        assert!(check(&many).unwrap_err().contains("files"), "more than the cap");
    }
}
