//! The catalog's entries made from the repository's records: which images
//! can be listed, and each one's [`CatalogImage`]. `vmrepo publish` and
//! `vmrepo serve --sign-key` both list images through here, so that the
//! catalog a folder holds and the one a server answers say the same things.

use std::sync::atomic::{AtomicBool, Ordering};

use vmrepo_repo::checksum::parse_hex;
use vmrepo_repo::layout::ImageKind;
use vmrepo_repo::{Catalog, Error, ErrorKind, ImageRecord, Query, Result};

use crate::schema::CatalogImage;

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
        (ImageKind::Folder, ..) => Err("an image folder (several files): not published yet"),
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
