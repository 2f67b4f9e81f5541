//! `vmrepo publish DEST`: the selected images with their sidecars under
//! `DEST/vm/<VM>/`, with `--base-url` a Metalink file beside each
//! ([`crate::metalink`]), then `catalog.json` and its signature.
//!
//! The order keeps readers consistent (docs/distribution.md): every image
//! is complete and fsynced under its name before a catalog naming it
//! exists; then each image's Metalink file (temporary file, fsync,
//! rename); then the new signature and the new catalog are written to
//! temporary files and fsynced, and renamed: the signature first, the
//! catalog last, so that whoever sees the new catalog finds its signature
//! already there. Images no catalog names any more are left in place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::{SignedDuration, Timestamp, Unit};
use serde::Serialize;
use vmrepo_repo::checksum::{self, ChecksumLine, parse_hex};
use vmrepo_repo::layout::{ImageKind, Sidecars};
use vmrepo_repo::{Catalog, Error, ErrorKind, ImageRecord, Query, Result, fsutil};

use crate::digests::Sha512Cache;
use crate::export::{self, OutFile, Signers, Stage};
use crate::key;
use crate::metalink::{self, Metalink};
use crate::place::{self, Placed};
use crate::schema::{self, CATALOG_FILE, CatalogDoc, CatalogImage};

/// The lock file in DEST that keeps two publishes from choosing the same serial.
const LOCK_FILE: &str = ".vmrepo-publish.lock";
/// The largest previous catalog read (for its serial).
const MAX_CATALOG_FILE: u64 = 1 << 30;

/// What to publish, where, signed by what.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    pub dest: PathBuf,
    pub query: Query,
    pub base_url: Option<String>,
    /// More base URLs the same tree is served from, listed after `base_url`
    /// in each Metalink file (in this order of priority); only with `base_url`.
    pub mirrors: Vec<String>,
    /// How long the catalog is to be trusted.
    pub expires: SignedDuration,
    /// The minisign secret key.
    pub key: PathBuf,
    /// Its password, if it is encrypted (it unlocks the OpenPGP key too).
    pub key_password: Option<String>,
    /// The OpenPGP secret key that signs the simplestreams and virt-builder
    /// files (`key generate --openpgp`); without it they are written unsigned.
    pub openpgp_key: Option<PathBuf>,
}

/// What a publish did.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    pub dest: PathBuf,
    pub serial: u64,
    /// Images the catalog names.
    pub images: usize,
    pub copied: usize,
    pub linked: usize,
    /// Already there with the same size and SHA-256.
    pub skipped: usize,
    /// Metalink files written (new or changed; those unchanged are left alone).
    pub metalinks: usize,
    /// Selected images that cannot be published, with the reason.
    pub left_out: Vec<LeftOut>,
    /// Exports not written, and why.
    pub exports_skipped: Vec<export::Skipped>,
    pub generated: String,
    pub expires: String,
}

/// A selected image that was not published.
#[derive(Clone, Debug, Serialize)]
pub struct LeftOut {
    pub path: String,
    pub reason: &'static str,
}

/// Publishes the images `opts.query` selects to the folder `opts.dest`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a destination inside a repository, a
/// bad base URL or an unusable key; [`ErrorKind::Locked`] while another
/// publish writes to the same folder; [`ErrorKind::BadSidecar`] when the
/// catalog already there cannot be read for its serial; the errors of
/// placing an image; an interruption.
pub fn publish(catalog: &Catalog, opts: &PublishOptions, cancel: &AtomicBool) -> Result<PublishReport> {
    let (sk, pk) = key::load_secret_key(&opts.key, opts.key_password.clone())?;
    let openpgp = opts
        .openpgp_key
        .as_deref()
        .map(|p| crate::openpgp::load_secret_key(p, opts.key_password.clone()))
        .transpose()?;
    let base_url = opts.base_url.as_deref().map(check_base_url).transpose()?;
    let mut base_urls: Vec<String> = base_url.iter().cloned().collect();
    for m in &opts.mirrors {
        if base_url.is_none() {
            return Err(Error::new(ErrorKind::InvalidInput, "--mirror needs --base-url (the first URL)"));
        }
        base_urls.push(check_url("--mirror", m)?);
    }
    let dest = prepare_dest(&opts.dest)?;
    let _lock = lock_dest(&dest)?;
    remove_dead_temps(&dest);
    let serial = next_serial_at(&dest)?;
    let generated = Timestamp::now().round(Unit::Second).map_err(time_error)?;
    let expires = generated.checked_add(opts.expires).map_err(time_error)?;

    let mut report = PublishReport {
        dest: dest.clone(),
        serial,
        images: 0,
        copied: 0,
        linked: 0,
        skipped: 0,
        metalinks: 0,
        left_out: Vec::new(),
        exports_skipped: Vec::new(),
        generated: generated.to_string(),
        expires: expires.to_string(),
    };
    let mut images = Vec::new();
    for rec in catalog.find(&opts.query)? {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let Some((sha256, md5)) = publishable(&rec, &mut report) else { continue };
        let (placed, image) = publish_one(catalog, &dest, rec, sha256, md5, cancel)?;
        match placed {
            Placed::Linked => report.linked += 1,
            Placed::Copied => report.copied += 1,
            Placed::Skipped => report.skipped += 1,
        }
        images.push(image);
    }
    report.images = images.len();
    // Every image is in place: now the Metalink files that point at them.
    if !base_urls.is_empty() {
        for image in &mut images {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            let relative = format!("{}.{}", image.path, metalink::EXTENSION);
            let m = Metalink {
                file: &image.file,
                path: &image.path,
                size: image.size,
                sha256: &image.sha256,
                base_urls: &base_urls,
            };
            if m.write(&dest.join(&relative), &report.generated)? {
                report.metalinks += 1;
            }
            image.metalink = Some(relative);
        }
    }
    let doc = CatalogDoc {
        format: schema::FORMAT.into(),
        version: schema::VERSION,
        serial,
        generated: report.generated.clone(),
        expires: report.expires.clone(),
        base_url,
        images,
    };
    let signers = Signers { minisign_secret: sk, minisign_public: pk, openpgp };
    let mut sha512 = BTreeMap::new();
    if export::wants_sha512(&signers) {
        let mut cache = Sha512Cache::load(catalog.repo().root());
        for image in &doc.images {
            // `path` is vm/<VM>/<file>, made above from the record.
            let file = catalog.repo().root().join(&image.path);
            let got = cache.get(&file, &image.sha256, cancel);
            cache.save();
            sha512.insert(image.sha256.clone(), got?);
        }
    }
    let ctx = export::Context {
        doc: &doc,
        base_urls: &base_urls,
        generated,
        expires,
        sha512: &sha512,
        signers: &signers,
    };
    let files = export::render_all(&ctx, &mut report.exports_skipped)?;
    write_exports(&dest, &files)?;
    Ok(report)
}

/// `30d`, `12h`, `2w`: how long a catalog is trusted (an hour to ten years).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the value.
pub fn parse_expires(value: &str) -> Result<SignedDuration> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--expires {value:?}: a number of hours, days or weeks is expected (12h, 30d, 2w), up to 10 years"
            ),
        )
    };
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = (value.get(..split).ok_or_else(bad)?, value.get(split..).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let hours = match unit {
        "h" => Some(n),
        "d" => n.checked_mul(24),
        "w" => n.checked_mul(24 * 7),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(1..=24 * 3653).contains(&hours) {
        return Err(bad());
    }
    Ok(SignedDuration::from_hours(hours))
}

/// The recorded digests of an image that can be published, or `None` (and
/// why, in the report) for one that cannot: a folder image, an image whose
/// file is missing, or one without a recorded SHA-256 and MD5.
fn publishable(rec: &ImageRecord, report: &mut PublishReport) -> Option<(String, String)> {
    let reason = match (rec.image_kind(), &rec.sha256, &rec.md5, rec.size) {
        (ImageKind::File, Some(s), Some(m), Some(_))
            if parse_hex::<32>(s).is_some() && parse_hex::<16>(m).is_some() =>
        {
            return Some((s.to_ascii_lowercase(), m.to_ascii_lowercase()));
        }
        (ImageKind::Folder, ..) => "an image folder (several files): not published yet",
        (ImageKind::Missing, ..) => "the image file is missing",
        _ => "no well-formed recorded SHA-256 and MD5: run vmrepo verify",
    };
    report.left_out.push(LeftOut { path: rec.path.clone(), reason });
    None
}

/// Places one image and its sidecars, and makes its catalog entry.
fn publish_one(
    catalog: &Catalog,
    dest: &Path,
    rec: ImageRecord,
    sha256: String,
    md5: String,
    cancel: &AtomicBool,
) -> Result<(Placed, CatalogImage)> {
    for part in [&rec.folder, &rec.file] {
        if part.is_empty() || part.contains('/') || part == "." || part == ".." {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: not a name vmrepo publishes", rec.path),
            ));
        }
    }
    let src_dir = catalog.repo().vm_root().join(&rec.folder);
    let dest_dir = dest.join("vm").join(&rec.folder);
    fs::create_dir_all(&dest_dir).map_err(|e| Error::io("create the folder", &dest_dir, e))?;
    fsutil::real_folder(dest, &dest_dir)?;
    let size = rec.size.unwrap_or(0);
    let placed =
        place::place_image(&src_dir.join(&rec.file), &dest_dir.join(&rec.file), size, &sha256, cancel)
            .map_err(|e| e.context(format!("publish {}", rec.path)))?;
    let sidecars = Sidecars::of(&src_dir, &rec.file, &rec.name, ImageKind::File);
    // The .checksum is written anew from the record, as md5sum -c reads it.
    let md5_bytes = parse_hex::<16>(&md5).ok_or_else(|| {
        Error::new(ErrorKind::BadSidecar, format!("{}: a malformed recorded MD5", rec.path))
    })?;
    let checksum = checksum::format(&[ChecksumLine { md5: md5_bytes, path: rec.file.clone() }]);
    place::place_small(&dest_dir.join(format!("{}.checksum", rec.name)), checksum.as_bytes())?;
    if let Ok(txt) = vmrepo_repo::catalog::read_capped(
        &sidecars.description,
        vmrepo_repo::description::MAX_DESCRIPTION_FILE,
    ) {
        place::place_small(&dest_dir.join(format!("{}.txt", rec.name)), &txt)?;
    }
    let shown = vmrepo_repo::show::of_record(catalog, rec);
    let description = serde_json::to_value(&shown.description)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the description: {e}")))?;
    let r = shown.image;
    let image = CatalogImage {
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
    };
    Ok((placed, image))
}

/// Creates DEST if needed, refusing one inside a repository.
fn prepare_dest(dest: &Path) -> Result<PathBuf> {
    if let Some(root) = key::inside_repository(dest) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: inside the repository {}: publish to a folder of its own",
                dest.display(),
                root.display()
            ),
        ));
    }
    fs::create_dir_all(dest).map_err(|e| Error::io("create the folder", dest, e))?;
    let md = fs::metadata(dest).map_err(|e| Error::io("read", dest, e))?;
    if !md.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{}: not a folder", dest.display())));
    }
    Ok(dest.to_path_buf())
}

/// Holds DEST's publish lock until dropped.
fn lock_dest(dest: &Path) -> Result<File> {
    let path = dest.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        Error::new(ErrorKind::Locked, format!("{}: another vmrepo publish is writing there", dest.display()))
    })?;
    Ok(f)
}

/// Removes the temporary files a publish killed in the middle left in DEST
/// and its `vm/<VM>/` folders: under DEST's lock no other publish writes
/// there, so every such file is dead, and a web server would serve it.
/// Links are neither followed nor removed; what cannot be removed is left
/// with a warning.
fn remove_dead_temps(dest: &Path) {
    // DEST, the exports' folders (simplestreams' streams/v1) and vm/<VM>/.
    let mut folders = vec![dest.to_path_buf(), dest.join("streams/v1")];
    if let Ok(vms) = fs::read_dir(dest.join(vmrepo_repo::layout::VM_DIR)) {
        folders.extend(vms.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
    }
    for folder in folders {
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_file())
                && fsutil::is_temp_sibling(&name.to_string_lossy())
                && let Err(err) = fs::remove_file(e.path())
            {
                tracing::warn!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

/// One more than the serial of the catalog already in DEST, or 1.
fn next_serial_at(dest: &Path) -> Result<u64> {
    let path = dest.join(CATALOG_FILE);
    let previous = match fs::symlink_metadata(&path) {
        Err(e) if fsutil::is_not_found(&e) => None,
        _ => {
            let bytes = vmrepo_repo::catalog::read_capped(&path, MAX_CATALOG_FILE).map_err(|e| {
                Error::new(ErrorKind::BadSidecar, format!("cannot read {}: {e}", path.display()))
            })?;
            let serial = schema::previous_serial(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::BadSidecar,
                    format!(
                        "{}: {e}; its serial cannot be known, so no new catalog is written",
                        path.display()
                    ),
                )
            })?;
            Some(serial)
        }
    };
    schema::next_serial(previous).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, format!("{}: the serial cannot grow any more", path.display()))
    })
}

/// Writes the exports' files: those of each stage complete and fsynced
/// under temporary names first, then renamed in their order, the folders
/// fsynced, before the next stage starts. A file that already has its
/// bytes is left alone (its modification time too, for web caches).
fn write_exports(dest: &Path, files: &[OutFile]) -> Result<()> {
    for stage in [Stage::Signed, Stage::Index] {
        let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = (|| {
            for f in files.iter().filter(|f| f.stage == stage) {
                let path = dest_path(dest, &f.path)?;
                let same_len = fs::symlink_metadata(&path)
                    .is_ok_and(|md| md.is_file() && md.len() == f.bytes.len() as u64);
                if same_len && fs::read(&path).is_ok_and(|b| b == f.bytes) {
                    continue;
                }
                let parent = fsutil::parent(&path);
                fs::create_dir_all(parent).map_err(|e| Error::io("create the folder", parent, e))?;
                fsutil::real_folder(dest, parent)?;
                let tmp = fsutil::temp_sibling(&path);
                pending.push((tmp.clone(), path));
                fsutil::write_new(&tmp, &f.bytes, 0o644)?;
            }
            let mut dirs = std::collections::BTreeSet::new();
            for (tmp, path) in &pending {
                fs::rename(tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
                dirs.insert(fsutil::parent(path).to_path_buf());
            }
            for d in dirs {
                fsutil::fsync_dir(&d)?;
            }
            Ok(())
        })();
        if result.is_err() {
            for (tmp, _) in &pending {
                let _ = fs::remove_file(tmp);
            }
            return result;
        }
    }
    Ok(())
}

/// DEST joined with an export's relative path, which must be made of plain
/// names (no `..`, no absolute path, no empty part).
fn dest_path(dest: &Path, rel: &str) -> Result<PathBuf> {
    let ok = !rel.is_empty() && rel.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !ok {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{rel:?}: not a path an export writes")));
    }
    Ok(dest.join(rel))
}

/// A base URL: `http://` or `https://`, printable ASCII without spaces;
/// kept without its trailing `/`.
fn check_base_url(url: &str) -> Result<String> {
    check_url("--base-url", url)
}

/// A base URL given with `flag`: as [`check_base_url`].
fn check_url(flag: &str, url: &str) -> Result<String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > "https://".len()
        && url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{flag} {url:?}: an http:// or https:// URL without spaces is expected"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn time_error(e: jiff::Error) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("cannot compute the catalog's times: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_hours_days_or_weeks() {
        assert_eq!(parse_expires("30d").unwrap(), SignedDuration::from_hours(720));
        assert_eq!(parse_expires("12h").unwrap(), SignedDuration::from_hours(12));
        assert_eq!(parse_expires("2w").unwrap(), SignedDuration::from_hours(336));
        for bad in ["", "d", "0d", "-1d", "30", "30x", "1e3d", "99999999999999999w", "4000w", "30é"] {
            assert_eq!(parse_expires(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn base_urls_are_http() {
        assert_eq!(check_base_url("https://vm.example.org/star/").unwrap(), "https://vm.example.org/star");
        for bad in ["ftp://x", "https://", "https://a b", "vm.example.org", "https://a\nb"] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}
