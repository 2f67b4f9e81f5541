//! `vmrepo mirror SOURCE DEST`: a published tree copied to a folder as it
//! is, so that sites verify the copy with the publisher's own signature.
//!
//! The source's catalog is fetched and checked as `pull` checks it (a
//! signature by a trusted key, not expired, every entry well-formed:
//! [`mod@crate::pull`]'s checks), and refused when DEST already holds a
//! catalog with a higher serial (a mirror never goes back). Then, in
//! publish's order and with its atomicity ([`mod@crate::publish`]): every image,
//! downloaded to a temporary name beside its place, its size and SHA-256
//! proved against the catalog, renamed; its sidecars and Metalink file;
//! one `syncfs`; the signature then the catalog, byte for byte; last the
//! index files (`index.html`, `style.css`). What neither the new catalog
//! nor the previous one names is removed, as publish removes it.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vmrepo_repo::checksum::hex;
use vmrepo_repo::{Error, ErrorKind, Result, fsutil};

use crate::export::{OutFile, Stage};
use crate::fetch::Remote;
use crate::ledger::{Entry, Ledger};
use crate::metalink;
use crate::place;
use crate::publish;
use crate::pull::{self, MAX_CATALOG, MAX_SIGNATURE};
use crate::schema::{CATALOG_FILE, CatalogImage, SIGNATURE_FILE};
use crate::store::Store;
use crate::trust::TrustedKey;

/// The largest sidecar, Metalink file or index file copied.
const MAX_SMALL_FILE: u64 = 64 << 20;
/// The read and write unit while downloading.
const CHUNK: usize = 1 << 20;
/// Files of the tree other than the catalog and the images' own, copied
/// when the source has them, each in the stage publish writes it in. An
/// export that adds files adds their names here.
/// (404: that export was not published; skipped.)
const TREE_FILES: &[(&str, Stage)] = &[
    // simplestreams' products file, unsigned and clearsigned
    // (export::simplestreams, `streams/v1/<CONTENT_ID>.json`).
    ("streams/v1/gov.bnl.star.vmrepo:images.json", Stage::Signed),
    ("streams/v1/gov.bnl.star.vmrepo:images.sjson", Stage::Signed),
    // The HEPiX image list (export::hepix).
    ("image.list", Stage::Signed),
    // simplestreams' index, virt-builder's index, the static page.
    ("streams/v1/index.json", Stage::Index),
    ("streams/v1/index.sjson", Stage::Index),
    ("index.asc", Stage::Index),
    ("index", Stage::Index),
    ("style.css", Stage::Index),
    ("index.html", Stage::Index),
];

/// What a mirror did.
#[derive(Clone, Debug, Serialize)]
pub struct MirrorReport {
    pub source: String,
    pub dest: PathBuf,
    pub serial: u64,
    pub expires: String,
    /// The trusted key that signed the catalog.
    pub signer: String,
    pub images: usize,
    /// Images downloaded (the others were already there, proved).
    pub fetched: usize,
    /// Bytes downloaded for images.
    pub transferred: u64,
    /// Files removed that no live catalog names.
    pub removed: usize,
}

/// Mirrors the published tree at `source` into the folder `dest`, trusting
/// the catalog only when one of `trusted` signed it.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a bad source, an unsigned, untrusted,
/// expired or malformed catalog, or one older than DEST's;
/// [`ErrorKind::BadImage`] for an image that is not what the catalog says
/// (nothing of it is kept, no catalog is written); [`ErrorKind::Locked`]
/// while a publish or another mirror writes to DEST; network and I/O errors;
/// an interruption.
pub fn mirror(
    source: &str,
    dest: &Path,
    trusted: &[TrustedKey],
    cancel: &AtomicBool,
) -> Result<MirrorReport> {
    let remote = Remote::parse(source)?;
    let bytes = remote.fetch_small(CATALOG_FILE, MAX_CATALOG)?.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, format!("{}: no catalog there", remote.location(CATALOG_FILE)))
    })?;
    let signature = remote.fetch_small(SIGNATURE_FILE, MAX_SIGNATURE)?;
    let signer = pull::check_signature(&remote, &bytes, signature.as_deref(), trusted, false)?
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no trusted signature"))?;
    // Checked above: a signature is there.
    let signature = signature.unwrap_or_default();
    let doc = pull::check_catalog(&remote, &bytes, Timestamp::now())?;
    for image in &doc.images {
        check_metalink(image).map_err(|why| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{}: image {:?}: {why}", remote.location(CATALOG_FILE), image.path),
            )
        })?;
    }

    let store = Store::folder(dest)?;
    let dest = dest.to_path_buf();
    let _lock = store.lock()?;
    store.remove_dead_temps();
    let (next, previous) = publish::read_previous(&store)?;
    // read_previous gives one more than DEST's serial, 1 when it has none.
    let here = next.saturating_sub(1);
    if doc.serial < here {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: serial {} is older than serial {here} already in {}: refused (a mirror never goes back)",
                remote.location(CATALOG_FILE),
                doc.serial,
                dest.display()
            ),
        ));
    }
    let known = Ledger::load(&dest);
    let mut ledger = Ledger::default();
    let mut report = MirrorReport {
        source: remote.key(),
        dest: dest.clone(),
        serial: doc.serial,
        expires: doc.expires.clone(),
        signer: signer.name.clone(),
        images: doc.images.len() + doc.folders.len(),
        fetched: 0,
        transferred: 0,
        removed: 0,
    };
    let mut made = BTreeSet::new();
    let mut wrote = false;
    for image in &doc.images {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let (dir, _) = image.path.rsplit_once('/').unwrap_or(("", ""));
        if made.insert(dir.to_string()) {
            let d = dest.join(dir);
            fs::create_dir_all(&d).map_err(|e| Error::io("create the folder", &d, e))?;
            fsutil::real_folder(&dest, &d)?;
        }
        let entry = mirror_image(&remote, &dest, image, known.files.get(&image.path), &mut report, cancel)?;
        ledger.files.insert(image.path.clone(), entry);
        let mut smalls = vec![format!("{dir}/{}.checksum", image.name), format!("{dir}/{}.txt", image.name)];
        smalls.extend(image.metalink.clone());
        for rel in smalls {
            if let Some(b) = remote.fetch_small(&rel, MAX_SMALL_FILE)? {
                let (w, e) = place::place_small(&dest.join(&rel), &b, known.files.get(&rel))?;
                wrote |= w;
                ledger.files.insert(rel, e);
            }
        }
    }
    // Image folders: each file as an image, then the sidecars beside the folder.
    for folder in &doc.folders {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let d = dest.join(&folder.path);
        fs::create_dir_all(&d).map_err(|e| Error::io("create the folder", &d, e))?;
        fsutil::real_folder(&dest, &d)?;
        for file in &folder.files {
            let item = folder.file_as_image(file);
            let entry = mirror_image(&remote, &dest, &item, known.files.get(&item.path), &mut report, cancel)
                .map_err(|e| e.context(format!("mirror {}", folder.path)))?;
            ledger.files.insert(item.path, entry);
        }
        let (dir, _) = folder.path.rsplit_once('/').unwrap_or(("", ""));
        for rel in [format!("{dir}/{}.checksum", folder.name), format!("{dir}/{}.txt", folder.name)] {
            if let Some(b) = remote.fetch_small(&rel, MAX_SMALL_FILE)? {
                let (w, e) = place::place_small(&dest.join(&rel), &b, known.files.get(&rel))?;
                wrote |= w;
                ledger.files.insert(rel, e);
            }
        }
    }
    // Every image and its files durable before the catalog names them.
    if wrote || report.fetched > 0 {
        place::sync_filesystem(&dest)?;
    }
    let mut files = vec![
        OutFile { path: SIGNATURE_FILE.into(), bytes: signature, stage: Stage::Signed },
        OutFile { path: CATALOG_FILE.into(), bytes, stage: Stage::Signed },
    ];
    for (rel, stage) in TREE_FILES {
        if let Some(b) = remote.fetch_small(rel, MAX_SMALL_FILE)? {
            files.push(OutFile { path: (*rel).into(), bytes: b, stage: *stage });
        }
    }
    publish::write_exports(&store, &files)?;
    report.removed = publish::remove_old(&store, &doc, previous, known, &mut ledger)?;
    ledger.save(&dest)?;
    Ok(report)
}

/// A Metalink path must be the image's own (`<path>.meta4`): the catalog
/// is read as hostile input, and that is the only file it may name.
fn check_metalink(image: &CatalogImage) -> std::result::Result<(), String> {
    match &image.metalink {
        Some(m) if *m != format!("{}.{}", image.path, metalink::EXTENSION) => {
            Err(format!("metalink {m:?} is not the image's path with .{}", metalink::EXTENSION))
        }
        _ => Ok(()),
    }
}

/// Puts one image at its path in `dest` unless it is already there, proved
/// (by the ledger, else by reading it): downloaded to a temporary name,
/// its size and SHA-256 checked against the catalog, renamed.
fn mirror_image(
    remote: &Remote,
    dest: &Path,
    image: &CatalogImage,
    known: Option<&Entry>,
    report: &mut MirrorReport,
    cancel: &AtomicBool,
) -> Result<Entry> {
    let path = dest.join(&image.path);
    if let Ok(md) = fs::symlink_metadata(&path)
        && md.is_file()
        && md.len() == image.size
    {
        if known.is_some_and(|k| k.proves(&image.sha256, &md)) {
            return Ok(Entry::of(&image.sha256, &md));
        }
        let d = vmrepo_repo::hashing::hash_path(
            &path,
            vmrepo_repo::hashing::Want { md5: false, sha256: true },
            &|_| {},
            cancel,
        )?;
        if d.sha256.is_some_and(|h| hex(&h) == image.sha256) {
            return Ok(Entry::of(&image.sha256, &md));
        }
    }
    let at = remote.location(&image.path);
    let tmp = fsutil::temp_sibling(&path);
    let result = (|| {
        let mut opened = remote.open_from(&image.path, image.size, 0, None)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let mut buf = vmrepo_format::IoBuf::zeroed(CHUNK);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            let n =
                opened.body.read(&mut buf).map_err(|e| Error::new(ErrorKind::Io, format!("{at}: {e}")))?;
            if n == 0 {
                break;
            }
            got = got.saturating_add(n as u64);
            if got > image.size {
                return Err(Error::new(
                    ErrorKind::BadImage,
                    format!("{at}: longer than the catalog's {} bytes: refused", image.size),
                ));
            }
            // n <= buf.len() by read's contract.
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            out.write_all(chunk).map_err(|e| Error::io("write", &tmp, e))?;
        }
        if got < image.size {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{at}: {got} bytes of the catalog's {}: the transfer was cut", image.size),
            ));
        }
        let sha = hex(&hasher.finalize());
        if sha != image.sha256 {
            return Err(Error::new(
                ErrorKind::BadImage,
                format!("{at}: its SHA-256 is {sha}, not the catalog's {}: refused", image.sha256),
            ));
        }
        drop(out);
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename into place", &path, e))?;
        Ok(got)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let got = result?;
    report.fetched += 1;
    report.transferred = report.transferred.saturating_add(got);
    let md = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
    Ok(Entry::of(&image.sha256, &md))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{hepix, html, simplestreams, virtbuilder};

    #[test]
    fn every_export_file_is_mirrored_in_its_stage() {
        let listed = |p: &str, stage: Stage| TREE_FILES.iter().any(|(q, s)| *q == p && *s == stage);
        let products = format!("streams/v1/{}", simplestreams::CONTENT_ID);
        assert!(listed(&format!("{products}.json"), Stage::Signed));
        assert!(listed(&format!("{products}.sjson"), Stage::Signed));
        assert!(listed(hepix::FILE, Stage::Signed));
        assert!(listed(simplestreams::INDEX, Stage::Index));
        assert!(listed("streams/v1/index.sjson", Stage::Index));
        assert!(listed(virtbuilder::SIGNED_INDEX, Stage::Index));
        assert!(listed(virtbuilder::INDEX, Stage::Index));
        assert!(listed(html::STYLE_FILE, Stage::Index) && listed(html::PAGE_FILE, Stage::Index));
    }
}
