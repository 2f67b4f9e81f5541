//! Where things are in a repository, and what a VM folder holds.
//!
//! ```text
//! ROOT/
//!   .vmrepo/            repository marker, lock, import journals, and (on a
//!                       local filesystem) the SQLite index
//!   vm/<VM>/            one folder per VM software: xen, kvm, virtualBox, vmware, ec2 ...
//!     <name>.<ext>      an image file
//!     <name>/           an image of several files: a folder holding its parts
//!     <name>.checksum   md5sum's output for the image
//!     <name>.txt        the image's description
//! ```

use std::fs;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use vmrepo_name::{ImageName, Vm};

use crate::error::{Error, ErrorKind, Result};

/// The repository's own folder.
pub const META_DIR: &str = ".vmrepo";
/// The marker file inside [`META_DIR`] that makes a folder a repository.
pub const MARKER_FILE: &str = "repository";
/// The folder of VM folders.
pub const VM_DIR: &str = "vm";
/// Prefix of an import's staging folder inside a VM folder.
pub const STAGING_PREFIX: &str = ".vmrepo-staging.";
/// The marker's content; the number is the layout version.
pub const MARKER_TEXT: &str = "vmrepo repository\nlayout: 1\n";
/// The largest marker file read.
const MAX_MARKER: u64 = 4096;
/// Environment variable naming the repository.
pub const REPO_ENV: &str = "VMREPO_REPO";
/// Environment variable naming the index file.
pub const INDEX_ENV: &str = "VMREPO_INDEX";

/// What `init` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InitOutcome {
    /// The repository's root.
    pub root: PathBuf,
    /// `vm/` was already there with content: the tree was adopted as it is.
    pub adopted: bool,
    /// The folder already was a repository.
    pub existed: bool,
    /// VM folders created.
    pub created_folders: Vec<String>,
}

/// An opened repository: its files. The catalog ([`crate::Catalog`]) is opened from it.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
    index_path: PathBuf,
    /// The index path was chosen by the user (`--index`, `VMREPO_INDEX`):
    /// what is there is only used if vmrepo made it. At vmrepo's own places a
    /// damaged file is rebuilt.
    index_chosen: bool,
    network_fs: Option<&'static str>,
}

impl Repository {
    /// Makes `dir` a repository, creating it if needed. A tree that already
    /// holds `vm/` is adopted as it is: no image and no sidecar is touched,
    /// and no VM folder is added to it.
    ///
    /// # Errors
    /// The folder cannot be created or written.
    pub fn init(dir: &Path) -> Result<(Repository, InitOutcome)> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let root = dir.canonicalize().map_err(|e| Error::io("resolve", dir, e))?;
        let meta = root.join(META_DIR);
        let marker = meta.join(MARKER_FILE);
        let existed = marker.exists();
        let vm_root = root.join(VM_DIR);
        let adopted = !existed && fs::read_dir(&vm_root).map(|mut d| d.next().is_some()).unwrap_or(false);
        fs::create_dir_all(&meta).map_err(|e| Error::io("create", &meta, e))?;
        if !existed {
            crate::fsutil::write_atomic(&marker, MARKER_TEXT.as_bytes(), 0o644)?;
        }
        let mut created_folders = Vec::new();
        if !adopted && !existed {
            fs::create_dir_all(&vm_root).map_err(|e| Error::io("create", &vm_root, e))?;
            for vm in Vm::ALL {
                let p = vm_root.join(vm.as_str());
                if !p.exists() {
                    fs::create_dir(&p).map_err(|e| Error::io("create", &p, e))?;
                    created_folders.push(format!("{VM_DIR}/{}", vm.as_str()));
                }
            }
            crate::fsutil::fsync_dir(&vm_root)?;
        }
        crate::fsutil::fsync_dir(&root)?;
        let repo = Repository::open(&root)?;
        Ok((repo, InitOutcome { root, adopted, existed, created_folders }))
    }

    /// Opens the repository whose root is `root`.
    ///
    /// # Errors
    /// [`ErrorKind::NotARepository`] if `root` holds no `.vmrepo/repository`.
    pub fn open(root: &Path) -> Result<Repository> {
        let root = root.canonicalize().map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Error::io("open the repository", root, e);
            }
            Error::new(
                ErrorKind::NotARepository,
                format!("{} is not a vmrepo repository ({e})", root.display()),
            )
        })?;
        let marker = root.join(META_DIR).join(MARKER_FILE);
        match crate::catalog::read_capped(&marker, MAX_MARKER) {
            Ok(text) if text.starts_with(b"vmrepo repository") => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::NotARepository,
                    format!("{} is not a vmrepo marker file", marker.display()),
                ));
            }
            Err(why) => match fs::symlink_metadata(&marker) {
                // Not allowed to look: say so, not "not a repository".
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Error::io("open the repository", &root, e));
                }
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!("cannot read {}: {why}", marker.display()),
                    ));
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::NotARepository,
                        format!(
                            "{} is not a vmrepo repository (no {META_DIR}/{MARKER_FILE}; run vmrepo init)",
                            root.display()
                        ),
                    ));
                }
            },
        }
        let network_fs = crate::fsutil::network_fs(&root);
        let (index_path, index_chosen) = match std::env::var_os(INDEX_ENV).filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => (default_index_path(&root, network_fs), false),
        };
        Ok(Repository { root, index_path, index_chosen, network_fs })
    }

    /// Finds the repository containing `start`, looking in `start` and then in
    /// each parent folder, as git does.
    ///
    /// # Errors
    /// [`ErrorKind::NotARepository`] when no folder up to `/` is one.
    pub fn discover(start: &Path) -> Result<Repository> {
        let start = start.canonicalize().map_err(|e| Error::io("resolve", start, e))?;
        let mut dir: &Path = &start;
        loop {
            match fs::symlink_metadata(dir.join(META_DIR).join(MARKER_FILE)) {
                Ok(md) if md.is_file() => return Repository::open(dir),
                // A folder that cannot be looked into may be the repository.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Error::io("look for a repository in", dir, e));
                }
                _ => {}
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => {
                    return Err(Error::new(
                        ErrorKind::NotARepository,
                        format!(
                            "not in a vmrepo repository ({} or any parent folder); use --repo DIR, set {REPO_ENV}, or run vmrepo init",
                            start.display()
                        ),
                    ));
                }
            }
        }
    }

    /// Uses `path` for the SQLite index instead of the default place.
    #[must_use]
    pub fn with_index_path(mut self, path: PathBuf) -> Repository {
        self.index_path = path;
        self.index_chosen = true;
        self
    }

    /// Whether the index path was chosen by the user rather than by vmrepo.
    pub fn index_chosen(&self) -> bool {
        self.index_chosen
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/vm`.
    pub fn vm_root(&self) -> PathBuf {
        self.root.join(VM_DIR)
    }

    /// `ROOT/.vmrepo`.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    /// Where the SQLite index lives.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// The network filesystem the repository is on, if it is on one.
    pub fn network_fs(&self) -> Option<&'static str> {
        self.network_fs
    }

    /// The VM folder `vm/<folder>`, made if it is not there, checked to be a
    /// real folder: neither it nor `vm/` may be a symbolic link, since what
    /// is written there would land in another tree that the catalog does not
    /// list.
    ///
    /// # Errors
    /// A link or a non-folder in the way ([`ErrorKind::InvalidInput`]), or
    /// the folder cannot be made.
    pub fn vm_folder_for_write(&self, folder: &str) -> Result<PathBuf> {
        let vm_root = self.vm_root();
        let dir = vm_root.join(folder);
        if fs::symlink_metadata(&vm_root).is_err() {
            fs::create_dir(&vm_root)
                .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                .map_err(|e| Error::io("create", &vm_root, e))?;
            crate::fsutil::fsync_dir(&self.root)?;
        }
        crate::fsutil::real_folder(&self.root, &vm_root)?;
        if fs::symlink_metadata(&dir).is_err() {
            fs::create_dir(&dir)
                .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                .map_err(|e| Error::io("create", &dir, e))?;
            crate::fsutil::fsync_dir(&vm_root)?;
        }
        crate::fsutil::real_folder(&self.root, &dir)?;
        Ok(dir)
    }

    /// A path relative to the root, for messages and `--json`.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().into_owned()
    }
}

/// The root of the repository that `path` (an existing folder, or a path in
/// one) lies in, found as [`Repository::discover`] does but without failing:
/// used to keep writes that are not vmrepo's out of a repository.
pub fn repository_containing(path: &Path) -> Option<PathBuf> {
    let start = path.canonicalize().ok()?;
    start.ancestors().find(|d| d.join(META_DIR).join(MARKER_FILE).is_file()).map(Path::to_path_buf)
}

/// The index lives beside the images when the tree is on a local filesystem,
/// and in the user's cache folder when it is on a network filesystem, where
/// SQLite's file locking cannot be trusted.
fn default_index_path(root: &Path, network_fs: Option<&str>) -> PathBuf {
    let meta = root.join(META_DIR);
    let writable = rustix::fs::access(&meta, rustix::fs::Access::WRITE_OK).is_ok();
    if network_fs.is_none() && writable {
        return meta.join("index.sqlite");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("vmrepo-{}", rustix::process::getuid().as_raw()))
        });
    use sha2::Digest;
    let key = crate::checksum::hex(&sha2::Sha256::digest(root.as_os_str().as_encoded_bytes())[..8]);
    cache.join("vmrepo").join(format!("index-{key}.sqlite"))
}

/// What kind of thing an image is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// One file.
    File,
    /// A folder of parts.
    Folder,
    /// Only its sidecars are there.
    Missing,
}

impl ImageKind {
    /// The word stored in the index and shown in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::File => "file",
            ImageKind::Folder => "folder",
            ImageKind::Missing => "missing",
        }
    }

    /// The inverse of [`ImageKind::as_str`].
    pub fn parse(s: &str) -> Option<ImageKind> {
        match s {
            "file" => Some(ImageKind::File),
            "folder" => Some(ImageKind::Folder),
            "missing" => Some(ImageKind::Missing),
            _ => None,
        }
    }
}

/// An image found in a VM folder, with its sidecars' inode numbers (from the
/// directory listing, without a stat).
#[derive(Clone, Debug)]
pub struct FoundImage {
    /// The file or folder name (for a missing image, the stem).
    pub file: String,
    pub name: ImageName,
    pub kind: ImageKind,
    pub ino: u64,
    pub checksum_ino: Option<u64>,
    pub description_ino: Option<u64>,
}

/// An entry of a VM folder that is not part of a cataloged image.
#[derive(Clone, Debug)]
pub struct Stray {
    pub file: String,
    pub problem: String,
    pub code: &'static str,
}

/// The content of one VM folder.
#[derive(Clone, Debug, Default)]
pub struct FolderScan {
    /// Images and images whose file is missing (sidecars only).
    pub images: Vec<FoundImage>,
    /// Entries that break the convention.
    pub strays: Vec<Stray>,
    /// Staging folders of imports (`.vmrepo-staging.<id>`).
    pub staging: Vec<String>,
}

/// A VM folder: the VM, and the folder's name as on disk.
pub type VmFolder = (Vm, String);

/// A file of an image folder: its name and metadata.
pub type PartFile = (String, fs::Metadata);

/// The VM folders under `vm/`: (VM, folder name as on disk), sorted, with the
/// entries that are not VM folders as strays.
pub fn vm_folders(vm_root: &Path) -> Result<(Vec<VmFolder>, Vec<Stray>)> {
    let mut found = Vec::new();
    let mut strays = Vec::new();
    // A linked vm/ is another tree: nothing in it is cataloged (lint says why).
    if fs::symlink_metadata(vm_root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok((found, strays));
    }
    let entries = match fs::read_dir(vm_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((found, strays)),
        Err(e) => return Err(Error::io("list", vm_root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", vm_root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| Error::io("inspect", &entry.path(), e))?;
        match Vm::from_user(&name) {
            Ok(vm) if ft.is_dir() => found.push((vm, name)),
            Ok(_) if ft.is_symlink() => strays.push(Stray {
                file: name,
                problem: "is a symbolic link to a folder elsewhere: vmrepo neither catalogs, writes nor deletes through it; make it a real folder".into(),
                code: "symlinked-folder",
            }),
            Ok(_) => strays.push(Stray {
                file: name,
                problem: "is not a folder: vm/ holds one folder per VM software".into(),
                code: "not-a-vm-folder",
            }),
            Err(e) => strays.push(Stray {
                file: name,
                problem: format!("is not a VM folder: {}", e.problem()),
                code: "not-a-vm-folder",
            }),
        }
    }
    // The spec's spelling first, so that it wins over another spelling of the same VM.
    found.sort_by(|a, b| (a.0, a.1 != a.0.as_str(), &a.1).cmp(&(b.0, b.1 != b.0.as_str(), &b.1)));
    let mut seen = Vec::new();
    let mut unique = Vec::new();
    for (vm, folder) in found {
        if seen.contains(&vm) {
            strays.push(Stray {
                file: folder,
                problem: format!("another spelling of vm/{}, which is the one cataloged", vm.as_str()),
                code: "duplicate-vm-folder",
            });
        } else {
            seen.push(vm);
            unique.push((vm, folder));
        }
    }
    Ok((unique, strays))
}

/// Lists a VM folder and groups its entries into images and their sidecars.
pub fn scan_folder(dir: &Path) -> Result<FolderScan> {
    let mut scan = FolderScan::default();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    // stem -> (checksum ino, description ino)
    let mut sidecars: std::collections::BTreeMap<String, (Option<u64>, Option<u64>)> = Default::default();
    let mut images: Vec<FoundImage> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            scan.strays.push(Stray {
                file: entry.file_name().to_string_lossy().into_owned(),
                problem: "is not a valid UTF-8 name".into(),
                code: "bad-name",
            });
            continue;
        };
        if let Some(rest) = name.strip_prefix(STAGING_PREFIX) {
            if !rest.is_empty() {
                scan.staging.push(name);
            }
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let ino = entry.ino();
        let ft = entry.file_type().map_err(|e| Error::io("inspect", &entry.path(), e))?;
        if ft.is_symlink() {
            let to_folder = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            scan.strays.push(if to_folder {
                Stray {
                    file: name,
                    problem: "is a symbolic link to a folder elsewhere: vmrepo neither catalogs, writes nor deletes through it".into(),
                    code: "symlinked-folder",
                }
            } else {
                Stray {
                    file: name,
                    problem: "is a symbolic link; vmrepo does not follow links in the tree".into(),
                    code: "symlink",
                }
            });
            continue;
        }
        if ft.is_file() {
            if let Some(stem) = name.strip_suffix(".checksum") {
                sidecars.entry(stem.to_string()).or_default().0 = Some(ino);
                continue;
            }
            if let Some(stem) = name.strip_suffix(".txt") {
                sidecars.entry(stem.to_string()).or_default().1 = Some(ino);
                continue;
            }
            match ImageName::parse_file(&name) {
                Ok(n) => images.push(FoundImage {
                    file: name,
                    name: n,
                    kind: ImageKind::File,
                    ino,
                    checksum_ino: None,
                    description_ino: None,
                }),
                Err(e) => scan.strays.push(Stray { file: name, problem: e.to_string(), code: "bad-name" }),
            }
        } else if ft.is_dir() {
            // A folder named like a file (`x.vmdk/`), as some trees keep a
            // split VMDK, is that image: its sidecars are `x.checksum`, `x.txt`.
            match ImageName::parse(&name) {
                Ok(n) => images.push(FoundImage {
                    file: name,
                    name: n,
                    kind: ImageKind::Folder,
                    ino,
                    checksum_ino: None,
                    description_ino: None,
                }),
                Err(e) => scan.strays.push(Stray { file: name, problem: e.to_string(), code: "bad-name" }),
            }
        } else {
            scan.strays.push(Stray {
                file: name,
                problem: "is not a regular file or folder".into(),
                code: "not-a-file",
            });
        }
    }
    images.sort_by(|a, b| a.file.cmp(&b.file));
    let mut claimed = std::collections::BTreeSet::new();
    for img in &mut images {
        let stem = img.name.stem();
        if let Some(&(c, d)) = sidecars.get(&stem) {
            img.checksum_ino = c;
            img.description_ino = d;
        }
        if img.kind == ImageKind::Folder {
            // Sidecars made inside the folder, as found in adopted trees.
            let inner = |suffix: &str| {
                fs::symlink_metadata(dir.join(&img.file).join(format!("{stem}{suffix}")))
                    .ok()
                    .filter(fs::Metadata::is_file)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            };
            img.checksum_ino = img.checksum_ino.or_else(|| inner(".checksum"));
            img.description_ino = img.description_ino.or_else(|| inner(".txt"));
        }
        if !claimed.insert(stem.clone()) {
            scan.strays.push(Stray {
                file: img.file.clone(),
                problem: format!("shares the name {stem} (and so its .checksum and .txt) with another image"),
                code: "shared-stem",
            });
        }
    }
    for (stem, (c, d)) in sidecars {
        if claimed.contains(&stem) {
            continue;
        }
        match ImageName::parse_stem(&stem) {
            Ok(name) => images.push(FoundImage {
                file: stem,
                name,
                kind: ImageKind::Missing,
                ino: 0,
                checksum_ino: c,
                description_ino: d,
            }),
            Err(e) => {
                for (suffix, present) in [(".checksum", c.is_some()), (".txt", d.is_some())] {
                    if present {
                        scan.strays.push(Stray {
                            file: format!("{stem}{suffix}"),
                            problem: e.to_string(),
                            code: "bad-name",
                        });
                    }
                }
            }
        }
    }
    images.sort_by(|a, b| a.file.cmp(&b.file));
    scan.images = images;
    Ok(scan)
}

/// An entry of a VM folder that belongs to an image's name: an image file
/// with any extension, an image folder, and the two sidecars.
#[derive(Clone, Debug)]
pub struct Occupant {
    pub name: String,
    pub is_dir: bool,
}

/// The entries of the VM folder `dir` that belong to the name `stem`, sorted.
///
/// # Errors
/// The folder cannot be listed.
pub fn occupants(dir: &Path, stem: &str) -> Result<Vec<Occupant>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(stem) else { continue };
        let ours = rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|ext| !ext.is_empty() && !ext.contains('.'));
        if ours {
            let is_dir = entry.file_type().map_err(|e| Error::io("inspect", &entry.path(), e))?.is_dir();
            out.push(Occupant { name: name.to_string(), is_dir });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where an image's sidecars are: beside it, as the convention keeps them,
/// or, in a tree adopted as it was found, inside an image folder (made by
/// `md5sum * > x.checksum` run in the folder, so its lines name the parts
/// without the folder).
#[derive(Clone, Debug)]
pub struct Sidecars {
    pub checksum: PathBuf,
    /// The `.checksum` is inside the folder: its lines name bare parts.
    pub checksum_inside: bool,
    pub description: PathBuf,
}

impl Sidecars {
    /// The sidecars of the image `file` (named `stem`, of `kind`) in the VM
    /// folder `dir`: beside it when there, else inside an image folder when
    /// there, else where they should be.
    pub fn of(dir: &Path, file: &str, stem: &str, kind: ImageKind) -> Sidecars {
        let place = |suffix: &str| {
            let beside = dir.join(format!("{stem}{suffix}"));
            let inside = dir.join(file).join(format!("{stem}{suffix}"));
            if kind == ImageKind::Folder
                && fs::symlink_metadata(&beside).is_err()
                && fs::symlink_metadata(&inside).is_ok_and(|m| m.is_file())
            {
                (inside, true)
            } else {
                (beside, false)
            }
        };
        let (checksum, checksum_inside) = place(".checksum");
        let (description, _) = place(".txt");
        Sidecars { checksum, checksum_inside, description }
    }

    /// The name a `.checksum` line gives a part, as a path from the VM folder
    /// (`x/part.vmdk`), whichever layout it was written in.
    pub fn part_key(&self, file: &str, line_path: &str) -> String {
        if self.checksum_inside { format!("{file}/{line_path}") } else { line_path.to_string() }
    }
}

/// The parts of an image folder: its regular files, sorted, but for the
/// sidecars kept inside it (named like the folder). Sub-folders and links
/// are reported, not followed.
pub fn folder_parts(dir: &Path) -> Result<(Vec<PartFile>, Vec<String>)> {
    /// A folder image holds a handful of extents; refuse to list absurd counts.
    const MAX_PARTS: usize = 4096;
    let folder = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = ImageName::parse(&folder).map(|n| n.stem()).unwrap_or(folder);
    let sidecar_names = [format!("{stem}.checksum"), format!("{stem}.txt")];
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if sidecar_names.contains(&name) {
            continue;
        }
        let md = entry.metadata().map_err(|e| Error::io("inspect", &entry.path(), e))?;
        if md.is_file() && !name.contains(['\n', '\\']) {
            parts.push((name, md));
            if parts.len() > MAX_PARTS {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} holds more than {MAX_PARTS} files", dir.display()),
                ));
            }
        } else {
            problems.push(name);
        }
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((parts, problems))
}
