//! The catalog's entries made from the repository's records: which images
//! can be listed, and each one's [`CatalogImage`]. `vmrepo publish` and
//! `vmrepo serve --sign-key` both list images through here, so that the
//! catalog a folder holds and the one a server answers say the same things.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use vmrepo_repo::checksum::{self, hex, parse_hex};
use vmrepo_repo::description::MAX_DESCRIPTION_FILE;
use vmrepo_repo::layout::{self, ImageKind, Sidecars};
use vmrepo_repo::{Catalog, Description, Error, ErrorKind, ImageRecord, Query, Result};

use crate::schema::{self, CatalogFolder, CatalogImage, FolderFile};

/// The recorded SHA-256 and MD5 (lower-case hex) of an image that can be
/// listed, or why it cannot: a folder image, a missing file, or digests
/// not recorded (or malformed).
///
/// # Errors
/// The reason, for the report of what was left out.
pub fn digests(rec: &ImageRecord) -> std::result::Result<(String, String), &'static str> {
    match (rec.image_kind(), &rec.sha256, &rec.md5, rec.size) {
        (ImageKind::File, Some(s), Some(m), Some(_))
            if parse_hex::<32>(s).is_some() && parse_hex::<16>(m).is_some() =>
        {
            Ok((s.to_ascii_lowercase(), m.to_ascii_lowercase()))
        }
        (ImageKind::Folder, ..) => {
            Err("an image folder (several files): vmrepo publish lists it, not this catalog")
        }
        (ImageKind::Missing, ..) => Err("the image file is missing"),
        _ => Err("no well-formed recorded SHA-256 and MD5: run vmrepo verify"),
    }
}

/// Refuses a record whose folder or file is not a plain name (its `path`
/// would leave `vm/<VM>/`).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the record.
pub fn check_names(rec: &ImageRecord) -> Result<()> {
    for part in [&rec.folder, &rec.file] {
        if part.is_empty() || part.contains('/') || part == "." || part == ".." {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: not a name vmrepo publishes", rec.path),
            ));
        }
    }
    Ok(())
}

/// The catalog entry of a listable image whose digests [`digests`] gave:
/// the record, its description's facts (as `vmrepo show --json`), and its
/// `path`, `vm/<VM folder>/<file>`. No Metalink file is named.
///
/// # Errors
/// A record with a name that is not plain, or a description that cannot be encoded.
pub fn entry(catalog: &Catalog, rec: ImageRecord, sha256: String, md5: String) -> Result<CatalogImage> {
    check_names(&rec)?;
    entry_of(vmrepo_repo::show::of_record(catalog, rec), sha256, md5)
}

/// [`entry`] with the description's bytes already read (`None`: it cannot be read).
///
/// # Errors
/// As [`entry`].
pub fn entry_described(
    rec: ImageRecord,
    description: Option<&[u8]>,
    sha256: String,
    md5: String,
) -> Result<CatalogImage> {
    check_names(&rec)?;
    entry_of(vmrepo_repo::show::of_record_described(rec, description), sha256, md5)
}

fn entry_of(shown: vmrepo_repo::show::Shown, sha256: String, md5: String) -> Result<CatalogImage> {
    let size = shown.image.size.unwrap_or(0);
    let description = serde_json::to_value(&shown.description)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the description: {e}")))?;
    let r = shown.image;
    Ok(CatalogImage {
        path: format!("vm/{}/{}", r.folder, r.file),
        vm: r.vm,
        name: r.name,
        file: r.file,
        size,
        sha256,
        md5,
        format: r.format,
        virtual_size: r.virtual_size,
        storage: r.storage,
        os: r.os,
        osinfo: r.osinfo,
        arch: r.arch,
        bits: r.bits,
        lib: r.lib,
        maxsize: r.maxsize,
        maxsize_bytes: r.maxsize_bytes,
        detail: r.detail,
        kernel: r.kernel,
        added: r.added,
        description,
        metalink: None,
    })
}

/// The files of an image folder that can be listed, with the SHA-256 its
/// `.txt` records for each (and the MD5 its `.checksum` records, when it
/// does) and its size on disk, sorted by name; or why it cannot: a folder
/// named with an extension, a file of the folder without a recorded
/// SHA-256 or a recorded file missing, a name that is not plain.
///
/// # Errors
/// The reason, for the report of what was left out.
pub fn folder_files(
    catalog: &Catalog,
    rec: &ImageRecord,
) -> std::result::Result<Vec<FolderFile>, &'static str> {
    const NOT_AS_RECORDED: &str =
        "an image folder whose files are not those its .txt records SHA-256s of: run vmrepo verify";
    if rec.image_kind() != ImageKind::Folder {
        return Err("not an image folder");
    }
    if rec.file != rec.name || check_names(rec).is_err() {
        return Err(
            "an image folder named with an extension (vmrepo add names folders without one): rename it",
        );
    }
    let dir = catalog.repo().vm_root().join(&rec.folder);
    let folder = dir.join(&rec.file);
    let sidecars = Sidecars::of(&dir, &rec.file, &rec.name, ImageKind::Folder);
    let facts = vmrepo_repo::catalog::read_capped(&sidecars.description, MAX_DESCRIPTION_FILE)
        .ok()
        .and_then(|b| Description::parse(&b).ok())
        .map(|d| d.facts().0)
        .ok_or("an image folder without a readable .txt (its files' SHA-256s): run vmrepo verify")?;
    let prefix = format!("{}/", rec.file);
    let mut sha: BTreeMap<String, String> = BTreeMap::new();
    for d in facts.sha256 {
        let part = d.part.as_deref().and_then(|p| p.strip_prefix(&prefix)).ok_or(NOT_AS_RECORDED)?;
        sha.insert(part.to_string(), hex(&d.sha256));
    }
    let mut md5: BTreeMap<String, String> = BTreeMap::new();
    if let Some(lines) = vmrepo_repo::catalog::read_capped(&sidecars.checksum, checksum::MAX_CHECKSUM_FILE)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| checksum::parse(&t).ok())
    {
        for l in lines {
            if let Some(part) = sidecars.part_key(&rec.file, &l.path).strip_prefix(&prefix) {
                md5.insert(part.to_string(), hex(&l.md5));
            }
        }
    }
    let (parts, others) = layout::folder_parts(&folder).map_err(|_| "the image folder cannot be listed")?;
    if !others.is_empty() || parts.len() != sha.len() || parts.len() > schema::MAX_FOLDER_FILES {
        return Err(NOT_AS_RECORDED);
    }
    let mut files = Vec::with_capacity(parts.len());
    for (name, md) in parts {
        schema::check_folder_file_name(&rec.name, &name)
            .map_err(|_| "an image folder with a file whose name vmrepo does not publish")?;
        let sha256 = sha.get(&name).ok_or(NOT_AS_RECORDED)?.clone();
        files.push(FolderFile { size: md.len(), sha256, md5: md5.get(&name).cloned(), path: name });
    }
    if files.is_empty() {
        return Err("an empty image folder");
    }
    Ok(files)
}

/// The catalog entry of an image folder whose files [`folder_files`] gave:
/// as [`entry`], its `path` the folder's, `vm/<VM folder>/<name>`.
///
/// # Errors
/// A record with a name that is not plain, sizes that overflow, or a
/// description that cannot be encoded.
pub fn folder_entry(catalog: &Catalog, rec: ImageRecord, files: Vec<FolderFile>) -> Result<CatalogFolder> {
    check_names(&rec)?;
    let size = files.iter().try_fold(0u64, |t, f| t.checked_add(f.size)).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, format!("{}: its files' sizes overflow", rec.path))
    })?;
    let shown = vmrepo_repo::show::of_record(catalog, rec);
    let description = serde_json::to_value(&shown.description)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the description: {e}")))?;
    let r = shown.image;
    Ok(CatalogFolder {
        path: format!("vm/{}/{}", r.folder, r.file),
        vm: r.vm,
        name: r.name,
        file: r.file,
        size,
        files,
        format: r.format,
        virtual_size: r.virtual_size,
        storage: r.storage,
        os: r.os,
        osinfo: r.osinfo,
        arch: r.arch,
        bits: r.bits,
        lib: r.lib,
        maxsize: r.maxsize,
        maxsize_bytes: r.maxsize_bytes,
        detail: r.detail,
        kernel: r.kernel,
        added: r.added,
        description,
    })
}

/// What [`entries`] found.
#[derive(Clone, Debug, Default)]
pub struct Listed {
    /// The entries, in the order of `vmrepo find`.
    pub images: Vec<CatalogImage>,
    /// The images that cannot be listed: their paths and [`digests`]'s reasons.
    pub left_out: Vec<(String, &'static str)>,
}

/// Every image `query` selects that can be listed, as catalog entries, and
/// those left out.
///
/// # Errors
/// The index cannot be read, an entry cannot be made, or `cancel` was set.
pub fn entries(catalog: &Catalog, query: &Query, cancel: &AtomicBool) -> Result<Listed> {
    let mut listed = Listed::default();
    for rec in catalog.find(query)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        match digests(&rec) {
            Ok((sha256, md5)) => listed.images.push(entry(catalog, rec, sha256, md5)?),
            Err(why) => listed.left_out.push((rec.path.clone(), why)),
        }
    }
    Ok(listed)
}
