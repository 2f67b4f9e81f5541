//! `vmrepo publish DEST`: the selected images with their sidecars under
//! `DEST/vm/<VM>/`, with `--base-url` a Metalink file beside each
//! ([`crate::metalink`]), then `catalog.json` and its signature. DEST is a
//! folder or `s3://bucket/prefix` ([`crate::store`]).
//!
//! The order keeps readers consistent (docs/distribution.md): every image
//! is complete and fsynced under its name before a catalog naming it
//! exists; then each image's Metalink file (temporary file, fsync,
//! rename); then the new signature and the new catalog are written to
//! temporary files and fsynced, and renamed: the signature first, the
//! catalog last, so that whoever sees the new catalog finds its signature
//! already there (in a bucket: one PUT each, in the same order). In a
//! folder or a bucket, what neither the new catalog nor the previous one
//! names is then removed (`remove_old`), and the ledger of what publish
//! placed written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use jiff::{SignedDuration, Timestamp, Unit};
use serde::Serialize;
use vmrepo_repo::checksum::{self, ChecksumLine, parse_hex};
use vmrepo_repo::layout::{ImageKind, Sidecars};
use vmrepo_repo::{Catalog, Error, ErrorKind, ImageRecord, Query, Result};

use crate::digests::Sha512Cache;
use crate::entries;
use crate::export::{self, OutFile, Signers, Stage};
use crate::key;
use crate::ledger::{self, Entry, Ledger};
use crate::metalink::{self, Metalink};
use crate::place::{self, Placed};
use crate::schema::{self, CATALOG_FILE, CatalogDoc, CatalogFolder, CatalogImage, FolderFile};
use crate::store::Store;

/// The largest previous catalog read (for its serial).
const MAX_CATALOG_FILE: u64 = 1 << 30;

/// The largest previous `keys/authorized_keys` read (to know it is there).
const MAX_KEYS_LIST: u64 = 64 << 20;

/// What to publish, where, signed by what.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// A folder, or `s3://bucket[/prefix]`.
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
    /// The X.509 certificate (PEM) and its key that sign the HEPiX image list; both or neither.
    pub smime: Option<(PathBuf, PathBuf)>,
    /// The passphrase of an encrypted S/MIME key.
    pub smime_password: Option<String>,
    /// The OpenPGP secret key that signs the simplestreams and virt-builder
    /// files (`key generate --openpgp`); without it they are written unsigned.
    pub openpgp_key: Option<PathBuf>,
    /// The RSA key (PEM) that signs `keys/authorized_keys` besides minisign
    /// ([`crate::export::keys`]); without it the list is signed with minisign only.
    pub keys_rsa_key: Option<PathBuf>,
}

/// What a publish did.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    pub dest: PathBuf,
    pub serial: u64,
    /// Images the catalog names (image folders included).
    pub images: usize,
    /// Of those, image folders (images of several files).
    pub folders: usize,
    pub copied: usize,
    pub linked: usize,
    /// Already there with the same size and SHA-256.
    pub skipped: usize,
    /// Metalink files written (new or changed; those unchanged are left alone).
    pub metalinks: usize,
    /// Files (objects in a bucket) removed from DEST (images, sidecars,
    /// Metalink files) that neither this catalog nor the previous one names.
    pub removed: usize,
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

/// Publishes the images `opts.query` selects to the folder or bucket `opts.dest`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a destination inside a repository, a
/// bad base URL or bucket URL, or an unusable key; [`ErrorKind::Locked`]
/// while another publish writes to the same destination; [`ErrorKind::BadSidecar`] when the
/// catalog already there cannot be read for its serial; the errors of
/// placing an image; an interruption.
pub fn publish(catalog: &Catalog, opts: &PublishOptions, cancel: &AtomicBool) -> Result<PublishReport> {
    let (sk, pk) = key::load_secret_key(&opts.key, opts.key_password.clone())?;
    let smime = match &opts.smime {
        Some((cert, key)) => Some(crate::smime::SmimeSigner::load_with_password(
            cert,
            key,
            opts.smime_password.as_deref(),
            Timestamp::now(),
        )?),
        None => None,
    };
    let openpgp = opts
        .openpgp_key
        .as_deref()
        .map(|p| crate::openpgp::load_secret_key(p, opts.key_password.clone()))
        .transpose()?;
    let keys_rsa = opts.keys_rsa_key.as_deref().map(crate::rsasig::RsaSigner::load).transpose()?;
    let ssh_keys = vmrepo_site::keys::list(catalog.repo().root())?;
    let base_url = opts.base_url.as_deref().map(check_base_url).transpose()?;
    let mut base_urls: Vec<String> = base_url.iter().cloned().collect();
    for m in &opts.mirrors {
        if base_url.is_none() {
            return Err(Error::new(ErrorKind::InvalidInput, "--mirror needs --base-url (the first URL)"));
        }
        base_urls.push(check_url("--mirror", m)?);
    }
    let store = Store::open(&opts.dest, &catalog.repo().meta_dir())?;
    let _lock = store.lock()?;
    store.remove_dead_temps();
    let (serial, previous) = read_previous(&store)?;
    // What earlier publishes placed (in a folder, each file's proof by a stat).
    let known = store.load_ledger()?;
    let mut ledger = Ledger::default();
    let mut made = BTreeSet::new();
    // Small files written (new or changed).
    let mut sidecars = 0usize;
    let generated = Timestamp::now().round(Unit::Second).map_err(time_error)?;
    let expires = generated.checked_add(opts.expires).map_err(time_error)?;

    let mut report = PublishReport {
        dest: opts.dest.clone(),
        serial,
        images: 0,
        folders: 0,
        copied: 0,
        linked: 0,
        skipped: 0,
        metalinks: 0,
        removed: 0,
        left_out: Vec::new(),
        exports_skipped: Vec::new(),
        generated: generated.to_string(),
        expires: expires.to_string(),
    };
    let mut images = Vec::new();
    let mut folders = Vec::new();
    for rec in catalog.find(&opts.query)? {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let mut to = Placing {
            store: &store,
            known: &known,
            ledger: &mut ledger,
            made: &mut made,
            written: &mut sidecars,
        };
        if rec.image_kind() == ImageKind::Folder {
            // An image of several files: each file placed as an image is.
            let files = match entries::folder_files(catalog, &rec) {
                Ok(files) => files,
                Err(reason) => {
                    report.left_out.push(LeftOut { path: rec.path.clone(), reason });
                    continue;
                }
            };
            let (placed, folder) = publish_folder(catalog, &mut to, rec, files, cancel)?;
            match placed {
                Placed::Linked => report.linked += 1,
                Placed::Copied => report.copied += 1,
                Placed::Skipped => report.skipped += 1,
            }
            folders.push(folder);
            continue;
        }
        let Some((sha256, md5)) = publishable(&rec, &mut report) else { continue };
        let (placed, image) = publish_one(catalog, &mut to, rec, sha256, md5, cancel)?;
        match placed {
            Placed::Linked => report.linked += 1,
            Placed::Copied => report.copied += 1,
            Placed::Skipped => report.skipped += 1,
        }
        images.push(image);
    }
    report.images = images.len() + folders.len();
    report.folders = folders.len();
    // Uploads a killed publish left for images not published now.
    let mut uploads: Vec<String> = images.iter().map(|i| i.path.clone()).collect();
    uploads.extend(folders.iter().flat_map(CatalogFolder::file_paths));
    store.forget_uploads_but(&uploads);
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
            let (written, entry) =
                m.write_to(&store, &relative, &report.generated, known.files.get(&relative))?;
            if written {
                report.metalinks += 1;
            }
            // In a bucket only listed (for the page): the ledger is not kept there.
            ledger.files.insert(relative.clone(), entry.unwrap_or_default());
            image.metalink = Some(relative);
        }
    }
    if !base_urls.is_empty() && !folders.is_empty() {
        // A Metalink file here describes one file: an image folder has none.
        let paths: Vec<&str> = folders.iter().map(|f| f.path.as_str()).collect();
        report.exports_skipped.push(export::Skipped {
            export: "metalink",
            reason: format!("image folders (several files) have no Metalink file: {}", paths.join(", ")),
        });
    }
    let doc = CatalogDoc {
        format: schema::FORMAT.into(),
        version: schema::VERSION,
        serial,
        generated: report.generated.clone(),
        expires: report.expires.clone(),
        base_url,
        images,
        folders,
    };
    let signers = Signers { minisign_secret: sk, minisign_public: pk, smime, openpgp };
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
    // What this publish placed (relative to DEST): what a page may link to.
    let placed: BTreeSet<String> = ledger.files.keys().cloned().collect();
    let ctx = export::Context {
        doc: &doc,
        base_urls: &base_urls,
        generated,
        expires,
        sha512: &sha512,
        signers: &signers,
        files: &placed,
    };
    let mut files = export::render_all(&ctx, &mut report.exports_skipped)?;
    // The SSH key list: when there are keys, or a list published before
    // (the last key removed is published as an empty list).
    if !ssh_keys.is_empty() || store.read_small(export::keys::FILE, MAX_KEYS_LIST)?.is_some() {
        let keys = export::keys::render(
            &ssh_keys,
            (&signers.minisign_secret, &signers.minisign_public),
            keys_rsa.as_ref(),
            &report.generated,
            &mut report.exports_skipped,
        )?;
        files.extend(keys);
        files.sort_by_key(|f| f.stage);
    }
    if let Store::Folder(dest) = &store {
        // Every image, sidecar and Metalink file durable before a catalog
        // names them; when none was written, there is nothing to sync
        // (syncfs also waits for whatever else was written to that filesystem).
        if report.linked + report.copied + report.metalinks + sidecars > 0 {
            place::sync_filesystem(dest)?;
        }
    }
    write_exports(&store, &files)?;
    report.removed = remove_old(&store, &doc, previous, known, &mut ledger)?;
    store.save_ledger(&mut ledger)?;
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
    entries::digests(rec)
        .map_err(|reason| report.left_out.push(LeftOut { path: rec.path.clone(), reason }))
        .ok()
}

/// Where images are placed, and what is recorded of them (the ledger: kept
/// in a folder only; for a bucket it only lists what was placed).
struct Placing<'a> {
    store: &'a Store,
    /// What the previous publishes recorded ([`Ledger`]).
    known: &'a Ledger,
    /// What this one records.
    ledger: &'a mut Ledger,
    /// The `vm/<VM>` folders already made and checked by this publish.
    made: &'a mut BTreeSet<String>,
    /// Small files written so far (new or changed).
    written: &'a mut usize,
}

impl Placing<'_> {
    /// Places the image `src` at `rel`: in a folder proved by the ledger
    /// when it can be, and recorded; in a bucket as [`Store::put_image`].
    fn image(
        &mut self,
        src: &Path,
        rel: &str,
        size: u64,
        sha256: &str,
        cancel: &AtomicBool,
    ) -> Result<Placed> {
        let Store::Folder(dest) = self.store else {
            // In a bucket only listed (for the page): the ledger is not kept there.
            self.ledger.files.insert(rel.to_string(), Entry::default());
            return self.store.put_image(src, rel, size, sha256, cancel);
        };
        let path = self.folder_for(dest, rel)?;
        let (placed, entry) =
            place::place_image(src, &path, size, sha256, self.known.files.get(rel), cancel)?;
        self.ledger.files.insert(rel.to_string(), entry);
        Ok(placed)
    }

    /// Places a small file at `rel`, and in a folder records it.
    fn small(&mut self, rel: String, bytes: &[u8]) -> Result<()> {
        let written = match self.store {
            Store::Folder(dest) => {
                let path = self.folder_for(dest, &rel)?;
                let (written, entry) = place::place_small(&path, bytes, self.known.files.get(&rel))?;
                self.ledger.files.insert(rel, entry);
                written
            }
            Store::S3 { .. } => {
                let written = self.store.put_small(&rel, bytes)?;
                self.ledger.files.insert(rel, Entry::default());
                written
            }
        };
        if written {
            *self.written += 1;
        }
        Ok(())
    }

    /// `dest/rel`, its folder made and checked once per publish.
    fn folder_for(&mut self, dest: &Path, rel: &str) -> Result<PathBuf> {
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        if self.made.contains(dir) {
            return crate::store::dest_path(dest, rel);
        }
        let path = self.store.folder_for(dest, rel)?;
        self.made.insert(dir.to_string());
        Ok(path)
    }
}

/// Places one image and its sidecars, and makes its catalog entry.
fn publish_one(
    catalog: &Catalog,
    to: &mut Placing<'_>,
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
    let dest_dir = format!("{}/{}", vmrepo_repo::layout::VM_DIR, rec.folder);
    let size = rec.size.unwrap_or(0);
    let placed = to
        .image(&src_dir.join(&rec.file), &format!("{dest_dir}/{}", rec.file), size, &sha256, cancel)
        .map_err(|e| e.context(format!("publish {}", rec.path)))?;
    let sidecars = Sidecars::of(&src_dir, &rec.file, &rec.name, ImageKind::File);
    // The .checksum is written anew from the record, as md5sum -c reads it.
    let md5_bytes = parse_hex::<16>(&md5).ok_or_else(|| {
        Error::new(ErrorKind::BadSidecar, format!("{}: a malformed recorded MD5", rec.path))
    })?;
    let checksum = checksum::format(&[ChecksumLine { md5: md5_bytes, path: rec.file.clone() }]);
    to.small(format!("{dest_dir}/{}.checksum", rec.name), checksum.as_bytes())?;
    // Read once: copied, and parsed for the catalog's facts.
    let txt = vmrepo_repo::catalog::read_capped(
        &sidecars.description,
        vmrepo_repo::description::MAX_DESCRIPTION_FILE,
    )
    .ok();
    if let Some(txt) = &txt {
        to.small(format!("{dest_dir}/{}.txt", rec.name), txt)?;
    }
    let image = entries::entry_described(rec, txt.as_deref(), sha256, md5)?;
    Ok((placed, image))
}

/// Places the files of an image folder (each as an image is placed, under
/// `vm/<VM>/<name>/`) and its sidecars beside it, and makes its catalog
/// entry. What became of it: copied when a file was copied, else linked
/// when one was linked, else already there.
fn publish_folder(
    catalog: &Catalog,
    to: &mut Placing<'_>,
    rec: ImageRecord,
    files: Vec<FolderFile>,
    cancel: &AtomicBool,
) -> Result<(Placed, CatalogFolder)> {
    entries::check_names(&rec)?;
    let src_dir = catalog.repo().vm_root().join(&rec.folder);
    let dest_dir = format!("{}/{}", vmrepo_repo::layout::VM_DIR, rec.folder);
    let mut how = Placed::Skipped;
    for f in &files {
        let placed = to
            .image(
                &src_dir.join(&rec.file).join(&f.path),
                &format!("{dest_dir}/{}/{}", rec.file, f.path),
                f.size,
                &f.sha256,
                cancel,
            )
            .map_err(|e| e.context(format!("publish {}/{}", rec.path, f.path)))?;
        how = match (how, placed) {
            (Placed::Copied, _) | (_, Placed::Copied) => Placed::Copied,
            (Placed::Linked, _) | (_, Placed::Linked) => Placed::Linked,
            _ => Placed::Skipped,
        };
    }
    // The .checksum anew from the record (md5sum -c reads it in vm/<VM>/),
    // when every file has a recorded MD5.
    let lines: Option<Vec<ChecksumLine>> = files
        .iter()
        .map(|f| {
            let md5 = parse_hex::<16>(f.md5.as_deref()?)?;
            Some(ChecksumLine { md5, path: format!("{}/{}", rec.file, f.path) })
        })
        .collect();
    if let Some(lines) = lines {
        to.small(format!("{dest_dir}/{}.checksum", rec.name), checksum::format(&lines).as_bytes())?;
    }
    let sidecars = Sidecars::of(&src_dir, &rec.file, &rec.name, ImageKind::Folder);
    if let Ok(txt) = vmrepo_repo::catalog::read_capped(
        &sidecars.description,
        vmrepo_repo::description::MAX_DESCRIPTION_FILE,
    ) {
        to.small(format!("{dest_dir}/{}.txt", rec.name), &txt)?;
    }
    let folder = entries::folder_entry(catalog, rec, files)?;
    Ok((how, folder))
}

/// What the catalog already in DEST says: the next serial (one more than
/// its own, or 1), and the paths it names (`None` when there is none, or
/// its images cannot be read: then nothing is removed).
pub(crate) fn read_previous(store: &Store) -> Result<(u64, Option<BTreeSet<String>>)> {
    let at = store.location(CATALOG_FILE);
    let mut named = None;
    let previous = match store.read_small(CATALOG_FILE, MAX_CATALOG_FILE)? {
        None => None,
        Some(bytes) => {
            // One parse for the serial and the paths (a catalog of 20,000
            // images is 28 MB); the serial alone when the images cannot be read.
            let serial = match serde_json::from_slice::<Named>(&bytes) {
                Ok(n) => {
                    named = Some(n.paths());
                    schema::head_serial(&n.head())
                }
                Err(e) => {
                    let serial = schema::previous_serial(&bytes);
                    if serial.is_ok() {
                        tracing::warn!(
                            "{at}: its images cannot be read ({e}): no old image is removed this time"
                        );
                    }
                    serial
                }
            };
            let serial = serial.map_err(|e| {
                Error::new(
                    ErrorKind::BadSidecar,
                    format!("{at}: {e}; its serial cannot be known, so no new catalog is written"),
                )
            })?;
            Some(serial)
        }
    };
    let next = schema::next_serial(previous).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, format!("{at}: the serial cannot grow any more"))
    })?;
    Ok((next, named))
}

/// What a catalog names: its images, their sidecars and Metalink files.
#[derive(serde::Deserialize)]
struct Named {
    format: String,
    version: u32,
    serial: u64,
    images: Vec<NamedImage>,
    #[serde(default)]
    folders: Vec<NamedFolder>,
}

#[derive(serde::Deserialize)]
struct NamedFolder {
    name: String,
    path: String,
    files: Vec<NamedFile>,
}

#[derive(serde::Deserialize)]
struct NamedFile {
    path: String,
}

#[derive(serde::Deserialize)]
struct NamedImage {
    name: String,
    path: String,
    #[serde(default)]
    metalink: Option<String>,
}

impl Named {
    fn head(&self) -> schema::Head {
        schema::Head { format: self.format.clone(), version: self.version, serial: self.serial }
    }

    fn paths(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for i in &self.images {
            names_of(&i.path, &i.name, i.metalink.as_deref(), &mut out);
        }
        for f in &self.folders {
            folder_names_of(&f.path, &f.name, f.files.iter().map(|x| x.path.as_str()), &mut out);
        }
        out
    }
}

/// The paths an image folder's catalog entry names: each of its files
/// (`<path>/<file>`), its `.checksum` and `.txt` beside the folder.
pub(crate) fn folder_names_of<'a>(
    path: &str,
    name: &str,
    files: impl Iterator<Item = &'a str>,
    out: &mut BTreeSet<String>,
) {
    for f in files {
        out.insert(format!("{path}/{f}"));
    }
    if let Some((dir, _)) = path.rsplit_once('/') {
        out.insert(format!("{dir}/{name}.checksum"));
        out.insert(format!("{dir}/{name}.txt"));
    }
}

/// The paths an image's catalog entry names: the image, its `.checksum`
/// and `.txt` (beside it, by its name) and its Metalink file.
pub(crate) fn names_of(path: &str, name: &str, metalink: Option<&str>, out: &mut BTreeSet<String>) {
    out.insert(path.to_string());
    if let Some((dir, _)) = path.rsplit_once('/') {
        out.insert(format!("{dir}/{name}.checksum"));
        out.insert(format!("{dir}/{name}.txt"));
    }
    if let Some(m) = metalink {
        out.insert(m.to_string());
    }
}

/// Removes from DEST (a folder or a bucket), once the new catalog and every index are in place,
/// what publish placed there that no live catalog names (the new one, and
/// the previous one that a reader may have fetched a moment ago); makes the
/// new ledger. Returns how many files were removed.
///
/// Only paths of the previous ledger are removed: files publish placed for
/// a catalog it wrote, of the shape `vm/<VM>/<file>`: in a folder regular
/// files in real folders (a link is neither followed nor removed), in a
/// bucket objects listed under `vm/` ([`Store::remove_placed`]). When the previous
/// catalog cannot be read for its images, nothing is removed.
pub(crate) fn remove_old(
    store: &Store,
    doc: &CatalogDoc,
    previous: Option<BTreeSet<String>>,
    known: Ledger,
    ledger: &mut Ledger,
) -> Result<usize> {
    let mut live = BTreeSet::new();
    for i in &doc.images {
        names_of(&i.path, &i.name, i.metalink.as_deref(), &mut live);
    }
    for f in &doc.folders {
        folder_names_of(&f.path, &f.name, f.files.iter().map(|x| x.path.as_str()), &mut live);
    }
    let Some(previous) = previous else {
        // Nothing is known to be dead: keep recording all of it.
        for (p, e) in known.files {
            ledger.files.entry(p).or_insert(e);
        }
        return Ok(0);
    };
    live.extend(previous.iter().cloned());
    let removed = store.remove_placed(&ledger::removable(&known, &live))?;
    // Still recorded: what a live catalog names that this publish did not
    // place (removed by a later one once no live catalog names it): as the
    // ledger had it, or, for a path only the previous catalog names, as
    // unknown (a catalog named it, so publish placed it).
    let mut known = known.files;
    for p in live {
        if ledger::is_placed_path(&p) && !ledger.files.contains_key(&p) {
            match known.remove(&p) {
                Some(e) => {
                    ledger.files.insert(p, e);
                }
                None if previous.contains(&p) => {
                    ledger.files.insert(p, Entry::default());
                }
                None => {}
            }
        }
    }
    Ok(removed)
}

/// Writes the exports' files, stage after stage: those of a stage in their
/// order ([`Store::write_stage`]: in a folder complete and fsynced under
/// temporary names first, then renamed), before the next stage starts.
pub(crate) fn write_exports(store: &Store, files: &[OutFile]) -> Result<()> {
    for stage in [Stage::Signed, Stage::Index] {
        let of_stage: Vec<&OutFile> = files.iter().filter(|f| f.stage == stage).collect();
        store.write_stage(&of_stage)?;
    }
    Ok(())
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
