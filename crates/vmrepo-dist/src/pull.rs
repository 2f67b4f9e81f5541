//! `vmrepo pull SOURCE [FIND...]`: the images of a published catalog,
//! fetched, proved and imported.
//!
//! In order: the catalog and its signature are fetched (each with a cap),
//! the signature checked against the trusted keys ([`crate::trust`]), the
//! catalog refused when it has expired or its serial is below the newest
//! seen from that source; every entry is checked as hostile input before any
//! is used. The selected images not already present are downloaded into
//! `.vmrepo/pull/<sha256>.part` (hashed as they arrive, resumable), each
//! checked for its size and SHA-256; only when all are proved are they
//! imported, each through [`vmrepo_repo::add()`] (a hard link, not a copy).
//! The source's serial is written last, and only after a pull that succeeded.
//! Image folders (the catalog's `folders`) are checked, fetched file by
//! file in the same pool and imported whole: see `pull/folders.rs`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::checksum::parse_hex;
use vmrepo_repo::{Catalog, Error, ErrorKind, Facts, NoProgress, Prehashed, Result, fsutil};

use crate::download::{self, Fetched, Plan, PullProgress};
use crate::fetch::Remote;
use crate::schema::{self, CATALOG_FILE, CatalogDoc, CatalogFolder, CatalogImage, SIGNATURE_FILE};
use crate::trust::{self, TrustedKey};

mod folders;

/// The largest catalog fetched.
pub const MAX_CATALOG: u64 = 64 << 20;
/// The largest signature fetched: minisign's is about 300 bytes.
pub const MAX_SIGNATURE: u64 = 16 << 10;
/// The largest image size a catalog may state (1 PiB).
pub const MAX_IMAGE_SIZE: u64 = 1 << 50;
/// The folder under `.vmrepo/` for downloads under way.
pub const PULL_DIR: &str = "pull";
/// The file under `.vmrepo/` with the newest serial seen per source.
pub const SOURCES_FILE: &str = "sources.json";
/// The most downloads at once.
pub const MAX_JOBS: usize = 16;
/// The most rounds over the source and its mirrors.
pub const MAX_TRIES: u32 = 10;
/// The most mirrors.
pub const MAX_MIRRORS: usize = 32;
/// How long an interrupted pull waits for its downloads to stop before it
/// leaves them (a download stalled in a read notices only at its time-out;
/// the process exits, its partial file stays for the next pull).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    pub source: String,
    /// More base URLs serving the same tree, tried in order after the source.
    pub mirrors: Vec<String>,
    pub select: Select,
    /// Say what would be fetched, fetch no image and record nothing.
    pub dry_run: bool,
    /// Accept a catalog without a signature from a trusted key.
    pub insecure: bool,
    /// Downloads at once (1 to [`MAX_JOBS`]).
    pub jobs: usize,
    /// Rounds over the source and the mirrors (1 to [`MAX_TRIES`]).
    pub tries: u32,
    /// The wait before the second round, doubled for each later one.
    pub backoff: Duration,
    /// A server silent this long has stalled: the next one is asked.
    pub stall: Duration,
}

impl PullOptions {
    /// Everything from `source`, with the defaults.
    pub fn new(source: &str) -> PullOptions {
        PullOptions {
            source: source.to_string(),
            mirrors: Vec::new(),
            select: Select::default(),
            dry_run: false,
            insecure: false,
            jobs: 4,
            tries: 3,
            backoff: Duration::from_secs(1),
            stall: crate::fetch::STALL_TIMEOUT,
        }
    }
}

/// What a pull did.
#[derive(Clone, Debug, Serialize)]
pub struct PullReport {
    pub source: String,
    /// Where the catalog that was accepted came from (the source or a mirror).
    pub catalog_from: String,
    pub serial: u64,
    pub expires: String,
    /// The trusted key that signed the catalog (`None` with `--insecure`).
    pub signer: Option<String>,
    pub images: Vec<PulledImage>,
    /// Bytes read from the network for images.
    pub transferred: u64,
}

/// One selected image.
#[derive(Clone, Debug, Serialize)]
pub struct PulledImage {
    pub path: String,
    pub size: u64,
    /// Absent for an image folder, whose files each have theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For an image folder: how many files it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    /// `pulled`, `present` (the same SHA-256 is stored) or `would-pull` (`--dry-run`).
    pub action: &'static str,
    /// Bytes read from the network for it, over all attempts (less than its
    /// size when resumed).
    pub transferred: u64,
    /// The server whose answer completed it (`None`: not fetched, or whole
    /// already from an earlier pull).
    pub mirror: Option<String>,
    /// The bytes an earlier pull had left, that this one continued from.
    pub resumed_from: u64,
    /// Requests made for it.
    pub attempts: u32,
}

/// The newest serial seen per source (`.vmrepo/sources.json`).
#[derive(Default, Serialize, Deserialize)]
struct Sources {
    sources: BTreeMap<String, SourceState>,
}

#[derive(Serialize, Deserialize)]
struct SourceState {
    serial: u64,
    signer: Option<String>,
    pulled: String,
}

/// Pulls from `opts.source` (and its mirrors) into the repository of
/// `catalog`, telling `progress` how the downloads go.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a bad source, an unsigned or untrusted,
/// expired, rolled-back or malformed catalog; [`ErrorKind::BadImage`] for an
/// image whose bytes are not those the catalog states (nothing is imported);
/// [`ErrorKind::AlreadyExists`] for an image stored with other bytes under
/// the same name; [`ErrorKind::Locked`] while another pull runs; network,
/// I/O and import errors; an interruption. Images are imported only when
/// all selected ones were fetched and proved.
pub fn pull(
    catalog: &mut Catalog,
    opts: &PullOptions,
    cancel: &AtomicBool,
    progress: Arc<dyn PullProgress>,
) -> Result<PullReport> {
    let repo = catalog.repo().clone();
    if opts.mirrors.len() > MAX_MIRRORS {
        return Err(Error::new(ErrorKind::InvalidInput, format!("pull: at most {MAX_MIRRORS} mirrors")));
    }
    let remotes = std::iter::once(&opts.source)
        .chain(&opts.mirrors)
        .map(|s| Remote::parse_with(s, opts.stall))
        .collect::<Result<Vec<Remote>>>()?;
    let source = remotes[0].key();
    let trusted = trust::list(&repo)?;
    let sources_path = repo.meta_dir().join(SOURCES_FILE);
    let mut sources = read_sources(&sources_path)?;
    let seen = sources.sources.get(&source).map(|s| s.serial);
    let (from, doc, signer) = first_good_catalog(&remotes, &trusted, opts.insecure, seen, &*progress)?;
    let mut report = PullReport {
        source: source.clone(),
        catalog_from: from,
        serial: doc.serial,
        expires: doc.expires.clone(),
        signer: signer.as_ref().map(|k| k.name.clone()),
        images: Vec::new(),
        transferred: 0,
    };
    let selected: Vec<&CatalogImage> = doc.images.iter().filter(|i| opts.select.matches(i)).collect();
    let pull_dir = repo.meta_dir().join(PULL_DIR);
    fs::create_dir_all(&pull_dir).map_err(|e| Error::io("create the folder", &pull_dir, e))?;
    let _lock = lock(&pull_dir)?;

    let mut todo = Vec::new();
    for image in selected {
        let (_, folder) = vm_of(image)?;
        let present = match catalog.resolve(&format!("{folder}/{}", image.file)) {
            Ok(r) => r.sha256.map(|s| s.to_ascii_lowercase()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let action = match present {
            Some(s) if s == image.sha256 => "present",
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{}: stored here with other bytes than {} has: not replaced, nothing imported",
                        image.path,
                        remotes[0].location(&image.path)
                    ),
                ));
            }
            None if opts.dry_run => "would-pull",
            None => {
                todo.push((report.images.len(), image.clone()));
                "pulled"
            }
        };
        report.images.push(PulledImage {
            path: image.path.clone(),
            size: image.size,
            sha256: Some(image.sha256.clone()),
            files: None,
            action,
            transferred: 0,
            mirror: None,
            resumed_from: 0,
            attempts: 0,
        });
    }
    let folders_todo = folders::select(catalog, &doc, opts, &remotes[0], &mut report)?;
    let plan = Plan { remotes, tries: opts.tries.clamp(1, MAX_TRIES), backoff: opts.backoff, dir: pull_dir };
    // The same bytes under two names are fetched once (into one partial
    // file, which two downloads must not share) and imported under each.
    let mut owner: HashMap<String, usize> = HashMap::new();
    let (mut unique, copies): (Vec<_>, Vec<_>) = todo
        .into_iter()
        .partition(|(slot, image)| *owner.entry(image.sha256.clone()).or_insert(*slot) == *slot);
    // Each file of an image folder is a download of its own, in the same
    // pool (slots after the report's), its bytes shared by SHA-256 too.
    let folder_files = folders::downloads(&folders_todo, report.images.len());
    for (slot, item) in &folder_files {
        if *owner.entry(item.sha256.clone()).or_insert(*slot) == *slot {
            unique.push((*slot, item.clone()));
        }
    }
    let fetched = download_all(&plan, unique, opts.jobs, cancel, progress)?;
    let signed_by =
        signer.as_ref().map_or("nobody (--insecure)".to_string(), |k| format!("{} ({})", k.name, k.key_id));
    // Folders first: their files are linked from the partial files, which
    // the import of a single image with the same bytes then moves.
    let (fetched, of_folders): (Vec<_>, Vec<_>) =
        fetched.into_iter().partition(|(slot, _, _)| *slot < report.images.len());
    let imported = folders::import_all(
        catalog,
        &folders_todo,
        &of_folders,
        &plan.dir,
        (&source, doc.serial, &signed_by),
        &mut report,
        cancel,
    );
    // Kept when an import failed: the next pull has them at hand.
    imported?;
    folders::discard(&of_folders);
    let by_sha: HashMap<&str, &Fetched> = fetched.iter().map(|(_, i, f)| (i.sha256.as_str(), f)).collect();
    // The copies first: each is a hard link to the partial file, which the
    // import of its owner then moves.
    for (slot, image) in &copies {
        let Some(f) = by_sha.get(image.sha256.as_str()) else { continue };
        let link = plan.dir.join(format!("{}.{slot}.part", image.sha256));
        let _ = fs::remove_file(&link);
        fs::hard_link(&f.partial, &link).map_err(|e| Error::io("link", &link, e))?;
        let (vm, _) = vm_of(image)?;
        let from = format!("{source}/{}", image.path);
        let done = import(catalog, image, vm, &link, f.prehashed, &from, doc.serial, &signed_by, cancel);
        download::discard(&link);
        done?;
    }
    for (slot, image, f) in &fetched {
        let entry = &mut report.images[*slot];
        entry.transferred = f.transferred;
        entry.mirror = f.mirror.clone();
        entry.resumed_from = f.resumed_from;
        entry.attempts = f.attempts;
        report.transferred = report.transferred.saturating_add(f.transferred);
        let (vm, _) = vm_of(image)?;
        let from = match &f.mirror {
            Some(m) if *m != source => format!("{source}/{} (through {m})", image.path),
            _ => format!("{source}/{}", image.path),
        };
        import(catalog, image, vm, &f.partial, f.prehashed, &from, doc.serial, &signed_by, cancel)?;
    }
    if !opts.dry_run {
        sources.sources.insert(
            source,
            SourceState {
                serial: doc.serial,
                signer: signer.map(|k| k.key_id),
                pulled: Timestamp::now().to_string(),
            },
        );
        write_sources(&sources_path, &sources)?;
    }
    Ok(report)
}

/// The first catalog, from the source then each mirror in order, that is
/// signed by a trusted key (unless `insecure`), unexpired, well-formed and
/// not older than serial `seen`: (where it came from, it, its signer).
///
/// # Errors
/// The source's reason when none is good (the others' are noted).
fn first_good_catalog(
    remotes: &[Remote],
    trusted: &[TrustedKey],
    insecure: bool,
    seen: Option<u64>,
    progress: &dyn PullProgress,
) -> Result<(String, CatalogDoc, Option<TrustedKey>)> {
    let mut first = None;
    for remote in remotes {
        match catalog_from(remote, trusted, insecure, seen) {
            Ok((doc, signer)) => return Ok((remote.key(), doc, signer)),
            Err(e) => {
                if remotes.len() > 1 {
                    progress.note(&e.to_string());
                }
                first.get_or_insert(e);
            }
        }
    }
    // `remotes` holds the source at least.
    Err(first.unwrap_or_else(|| Error::new(ErrorKind::InvalidInput, "pull: no source")))
}

fn catalog_from(
    remote: &Remote,
    trusted: &[TrustedKey],
    insecure: bool,
    seen: Option<u64>,
) -> Result<(CatalogDoc, Option<TrustedKey>)> {
    let bytes = remote.fetch_small(CATALOG_FILE, MAX_CATALOG)?.ok_or_else(|| {
        Error::new(ErrorKind::NotFound, format!("{}: no catalog there", remote.location(CATALOG_FILE)))
    })?;
    let signature = remote.fetch_small(SIGNATURE_FILE, MAX_SIGNATURE)?;
    let signer = check_signature(remote, &bytes, signature.as_deref(), trusted, insecure)?;
    let doc = check_catalog(remote, &bytes, Timestamp::now())?;
    if let Some(seen) = seen
        && doc.serial < seen
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: serial {} is older than serial {seen} already pulled from this source: refused (a rollback)",
                remote.location(CATALOG_FILE),
                doc.serial,
            ),
        ));
    }
    Ok((doc, signer))
}

/// Downloads `todo` (report slot, image) on up to `jobs` threads; every
/// download goes on when another fails, so that the next pull has less to
/// fetch. Returns the proved ones in slot order.
///
/// # Errors
/// The first failure (the others are noted); an interruption, after which
/// the downloads still under way stop (within [`STOP_GRACE`], or are left to
/// the process's exit) and leave their partial files for the next pull.
fn download_all(
    plan: &Plan,
    todo: Vec<(usize, CatalogImage)>,
    jobs: usize,
    cancel: &AtomicBool,
    progress: Arc<dyn PullProgress>,
) -> Result<Vec<(usize, CatalogImage, Fetched)>> {
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    progress.begin(todo.len(), todo.iter().map(|(_, i)| i.size).fold(0u64, u64::saturating_add));
    let threads = jobs.clamp(1, MAX_JOBS).min(todo.len());
    let queue = Arc::new(Mutex::new(todo.into_iter().collect::<VecDeque<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan.clone());
    let (tx, rx) = mpsc::channel();
    for _ in 0..threads {
        let (queue, stop, plan, progress, tx) =
            (Arc::clone(&queue), Arc::clone(&stop), Arc::clone(&plan), Arc::clone(&progress), tx.clone());
        std::thread::spawn(move || {
            loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                let Some((slot, image)) = next else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = download::fetch(&plan, &image, slot, &*progress, &stop);
                if tx.send((slot, image, result)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut done = Vec::new();
    let mut failure: Option<Error> = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            let end = Instant::now() + STOP_GRACE;
            while Instant::now() < end {
                if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(Duration::from_millis(50)) {
                    break;
                }
            }
            return Err(Error::interrupted());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((slot, image, Ok(f))) => done.push((slot, image, f)),
            Ok((_, _, Err(e))) => match &failure {
                None => failure = Some(e),
                Some(_) => progress.note(&e.to_string()),
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::interrupted());
    }
    if let Some(e) = failure {
        return Err(e);
    }
    done.sort_by_key(|(slot, _, _)| *slot);
    Ok(done)
}

/// The trusted key whose signature `bytes` carries; `None` with `insecure`
/// when there is no good one.
pub(crate) fn check_signature(
    remote: &Remote,
    bytes: &[u8],
    signature: Option<&[u8]>,
    trusted: &[TrustedKey],
    insecure: bool,
) -> Result<Option<TrustedKey>> {
    let at = remote.location(SIGNATURE_FILE);
    let refused = |why: String| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{at}: {why}: the catalog is refused (--insecure accepts it)"),
        )
    };
    let verdict = match signature {
        None => Err("no signature".to_string()),
        Some(sig) => match std::str::from_utf8(sig)
            .ok()
            .and_then(|t| minisign::SignatureBox::from_string(t).ok())
        {
            None => Err("not a minisign signature".to_string()),
            Some(sig_box) => match trusted.iter().find(|k| k.key.keynum() == sig_box.keynum()) {
                None if trusted.is_empty() => Err("no key is trusted here (vmrepo trust add KEYFILE)".into()),
                None => Err("signed by a key that is not trusted here".into()),
                Some(k) => {
                    match minisign::verify(&k.key, &sig_box, std::io::Cursor::new(bytes), true, false, false)
                    {
                        Ok(()) => Ok(k.clone()),
                        Err(_) => Err(format!(
                            "the signature by {:?} does not match the catalog (tampered)",
                            k.name
                        )),
                    }
                }
            },
        },
    };
    match verdict {
        Ok(k) => Ok(Some(k)),
        Err(_) if insecure => Ok(None),
        Err(why) => Err(refused(why)),
    }
}

/// The catalog, read and checked: its format, times, and every entry.
pub(crate) fn check_catalog(remote: &Remote, bytes: &[u8], now: Timestamp) -> Result<CatalogDoc> {
    let at = remote.location(CATALOG_FILE);
    let bad = |why: String| Error::new(ErrorKind::InvalidInput, format!("{at}: {why}"));
    schema::previous_serial(bytes).map_err(&bad)?;
    let doc: CatalogDoc =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a vmrepo catalog: {e}")))?;
    let expires: Timestamp =
        doc.expires.parse().map_err(|_| bad(format!("expires {:?}: not a time", doc.expires)))?;
    if expires <= now {
        return Err(bad(format!("expired at {expires}: refused (the publisher signs a new one)")));
    }
    let mut paths = HashSet::new();
    for image in &doc.images {
        check_image(image).map_err(|why| bad(format!("image {:?}: {why}", image.path)))?;
        if !paths.insert(image.path.as_str()) {
            return Err(bad(format!("image {:?} is listed twice", image.path)));
        }
    }
    for folder in &doc.folders {
        folders::check(folder).map_err(|why| bad(format!("image folder {:?}: {why}", folder.path)))?;
        if !paths.insert(folder.path.as_str()) {
            return Err(bad(format!("image {:?} is listed twice", folder.path)));
        }
    }
    Ok(doc)
}

/// One entry, as hostile input: `vm/<VM>/<file>` with a convention name,
/// well-formed sizes and digests.
fn check_image(i: &CatalogImage) -> std::result::Result<(), String> {
    let parts: Vec<&str> = i.path.split('/').collect();
    let [top, folder, file] = parts.as_slice() else {
        return Err("a path vm/<VM>/<file> is expected".into());
    };
    if *top != "vm" || *file != i.file {
        return Err(format!("a path vm/<VM>/{} is expected", i.file));
    }
    let vm = Vm::from_user(folder).map_err(|e| e.to_string())?;
    if vm.as_str() != *folder && !folder.eq_ignore_ascii_case(vm.as_str()) {
        return Err(format!("{folder:?} is not a VM folder"));
    }
    let name = ImageName::parse_file(&i.file).map_err(|e| e.to_string())?;
    if name.to_string() != i.file || name.stem() != i.name {
        return Err(format!("{:?} is not a convention name with the stem {:?}", i.file, i.name));
    }
    check_digests(&i.sha256, Some(&i.md5), i.size)
}

/// The VM and the folder name of a checked entry.
fn vm_of(i: &CatalogImage) -> Result<(Vm, String)> {
    vm_of_path(&i.path)
}

/// The VM and the VM folder's name of a checked `vm/<VM>/...` path.
fn vm_of_path(path: &str) -> Result<(Vm, String)> {
    let folder = path.split('/').nth(1).unwrap_or_default();
    let vm = Vm::from_user(folder).map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    Ok((vm, folder.to_string()))
}

/// Whether the SHA-256 and size a catalog states of a file are well-formed
/// (lower-case hex, at most [`MAX_IMAGE_SIZE`]).
fn check_digests(sha256: &str, md5: Option<&str>, size: u64) -> std::result::Result<(), String> {
    if parse_hex::<32>(sha256).is_none() || sha256.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("sha256 is not 64 lower-case hex digits".into());
    }
    if let Some(md5) = md5
        && (parse_hex::<16>(md5).is_none() || md5.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err("md5 is not 32 lower-case hex digits".into());
    }
    if size > MAX_IMAGE_SIZE {
        return Err(format!("size {size} is above {MAX_IMAGE_SIZE}"));
    }
    Ok(())
}

/// `vmrepo add --move` of a proved download, named as the catalog says.
#[allow(clippy::too_many_arguments)]
fn import(
    catalog: &mut Catalog,
    image: &CatalogImage,
    vm: Vm,
    partial: &Path,
    prehashed: Prehashed,
    from: &str,
    serial: u64,
    signed_by: &str,
    cancel: &AtomicBool,
) -> Result<()> {
    let name =
        ImageName::parse_file(&image.file).map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    let content =
        vmrepo_repo::content::read(partial).map_err(|e| e.context(format!("pull {}", image.path)))?;
    let notes = format!("Pulled from {from} (catalog serial {serial}, signed by {signed_by}).");
    vmrepo_repo::add(
        catalog,
        vmrepo_repo::AddRequest {
            source: partial,
            vm,
            name,
            facts: Facts::default(),
            notes: Some(notes),
            replace: false,
            move_source: true,
            content: Some(content),
            // The name is the publisher's, and so are the bytes (its SHA-256
            // is the signed one): the copy here is stored as it is there, even
            // where the publisher stored it with --force.
            force: true,
            prehashed: Some(prehashed),
            progress: &NoProgress,
            cancel,
        },
    )
    .map_err(|e| e.context(format!("pull {}", image.path)))?;
    download::discard(partial);
    Ok(())
}

fn read_sources(path: &Path) -> Result<Sources> {
    match fs::symlink_metadata(path) {
        Err(e) if fsutil::is_not_found(&e) => Ok(Sources::default()),
        _ => {
            let bytes = vmrepo_repo::catalog::read_capped(path, MAX_CATALOG).map_err(|e| {
                Error::new(ErrorKind::BadSidecar, format!("cannot read {}: {e}", path.display()))
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(ErrorKind::BadSidecar, format!("{}: {e}", path.display())))
        }
    }
}

fn write_sources(path: &Path, sources: &Sources) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(sources)
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode the sources: {e}")))?;
    json.push(b'\n');
    fsutil::write_atomic(path, &json, 0o644)
}

/// Forgets the newest serial of every source whose last catalog the key
/// `key_id` signed, so that its next catalog, signed by another key, is
/// accepted from any serial: what `trust rm` does, since a leaked key can
/// have signed a catalog with a serial so high that every honest one after
/// it would be refused. Runs under the pull lock (not while a pull runs).
/// Returns the sources forgotten and their serials.
///
/// # Errors
/// [`ErrorKind::Locked`] while a pull runs; I/O errors; a malformed
/// `.vmrepo/sources.json`.
pub(crate) fn forget_signer(repo: &vmrepo_repo::Repository, key_id: &str) -> Result<Vec<(String, u64)>> {
    let pull_dir = repo.meta_dir().join(PULL_DIR);
    fs::create_dir_all(&pull_dir).map_err(|e| Error::io("create the folder", &pull_dir, e))?;
    let _lock = lock(&pull_dir)?;
    let path = repo.meta_dir().join(SOURCES_FILE);
    let mut sources = read_sources(&path)?;
    let mut forgotten = Vec::new();
    sources.sources.retain(|source, state| {
        let signed = state.signer.as_deref() == Some(key_id);
        if signed {
            forgotten.push((source.clone(), state.serial));
        }
        !signed
    });
    if !forgotten.is_empty() {
        write_sources(&path, &sources)?;
    }
    Ok(forgotten)
}

/// Holds the pull folder's lock until dropped: two pulls never write the same partial file.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| Error::new(ErrorKind::Locked, "another vmrepo pull is running in this repository"))?;
    Ok(f)
}

/// A selection of catalog entries: `FIELD=VALUE`, `FIELD!=VALUE`,
/// `FIELD~GLOB`, `FIELD!~GLOB` on the catalog's fields, or a word the name
/// contains; all must hold. Comparisons ignore case, as `vmrepo find`'s do.
#[derive(Clone, Debug, Default)]
pub struct Select {
    clauses: Vec<Clause>,
}

#[derive(Clone, Debug)]
struct Clause {
    field: Option<&'static str>,
    op: &'static str,
    value: String,
}

/// The catalog fields a selection can name.
pub const SELECT_FIELDS: [&str; 11] =
    ["vm", "name", "file", "os", "arch", "bits", "lib", "maxsize", "format", "detail", "sha256"];

impl Select {
    /// Parses expressions.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the expression.
    pub fn parse<S: AsRef<str>>(exprs: &[S]) -> Result<Select> {
        let mut clauses = Vec::new();
        for e in exprs {
            let e = e.as_ref();
            let bad = |why: String| Error::new(ErrorKind::InvalidInput, format!("pull {e:?}: {why}"));
            let end = e.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(e.len());
            let rest = &e[end..];
            let Some(op) = ["!=", "!~", "=", "~"].into_iter().find(|op| rest.starts_with(op)) else {
                if e.is_empty() || e.contains(['=', '~', '<', '>']) {
                    return Err(bad("FIELD=VALUE, FIELD~GLOB or a word of the name is expected".into()));
                }
                clauses.push(Clause { field: None, op: "~", value: format!("*{}*", e.to_ascii_lowercase()) });
                continue;
            };
            let Some(field) = SELECT_FIELDS.iter().copied().find(|f| *f == &e[..end]) else {
                return Err(bad(format!(
                    "unknown field {:?} (fields: {})",
                    &e[..end],
                    SELECT_FIELDS.join(", ")
                )));
            };
            clauses.push(Clause { field: Some(field), op, value: rest[op.len()..].to_ascii_lowercase() });
        }
        Ok(Select { clauses })
    }

    /// Whether the image folder `f` is selected: as an image is, its
    /// `sha256` matching when one of its files' does (and `!=`, `!~` when
    /// none does).
    pub fn matches_folder(&self, f: &CatalogFolder) -> bool {
        self.clauses.iter().all(|c| {
            let have: Vec<String> = match c.field {
                None | Some("name") => vec![f.name.clone()],
                Some("vm") => vec![f.vm.clone()],
                Some("file") => vec![f.file.clone()],
                Some("os") => vec![f.os.clone()],
                Some("arch") => vec![f.arch.clone()],
                Some("bits") => vec![f.bits.to_string()],
                Some("lib") => vec![f.lib.clone()],
                Some("maxsize") => vec![f.maxsize.clone()],
                Some("format") => vec![f.format.clone().unwrap_or_default()],
                Some("detail") => vec![f.detail.clone().unwrap_or_default()],
                Some(_) => f.files.iter().map(|x| x.sha256.clone()).collect(),
            };
            let hit = |h: &String| {
                let h = h.to_ascii_lowercase();
                match c.op {
                    "=" | "!=" => h == c.value,
                    _ => glob(c.value.as_bytes(), h.as_bytes()),
                }
            };
            match c.op {
                "=" | "~" => have.iter().any(hit),
                _ => !have.iter().any(hit),
            }
        })
    }

    /// Whether `i` is selected.
    pub fn matches(&self, i: &CatalogImage) -> bool {
        self.clauses.iter().all(|c| {
            let have = match c.field {
                None | Some("name") => i.name.clone(),
                Some("vm") => i.vm.clone(),
                Some("file") => i.file.clone(),
                Some("os") => i.os.clone(),
                Some("arch") => i.arch.clone(),
                Some("bits") => i.bits.to_string(),
                Some("lib") => i.lib.clone(),
                Some("maxsize") => i.maxsize.clone(),
                Some("format") => i.format.clone().unwrap_or_default(),
                Some("detail") => i.detail.clone().unwrap_or_default(),
                Some(_) => i.sha256.clone(),
            }
            .to_ascii_lowercase();
            match c.op {
                "=" => have == c.value,
                "!=" => have != c.value,
                "~" => glob(c.value.as_bytes(), have.as_bytes()),
                _ => !glob(c.value.as_bytes(), have.as_bytes()),
            }
        })
    }
}

/// `*` any run, `?` one byte, else the byte itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                back = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match back {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    back = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> CatalogImage {
        let mut doc: serde_json::Value = serde_json::json!({
            "vm": "kvm", "name": "sl5.3_x86_64_sl08e_8GB", "file": "sl5.3_x86_64_sl08e_8GB.img",
            "path": "vm/kvm/sl5.3_x86_64_sl08e_8GB.img", "size": 10, "sha256": "ab".repeat(32),
            "md5": "cd".repeat(16), "format": "raw", "virtual_size": 10, "storage": null,
            "os": "sl5.3", "osinfo": null, "arch": "x86", "bits": 64, "lib": "sl08e",
            "maxsize": "8GB", "maxsize_bytes": 8_000_000_000u64, "detail": null, "kernel": null,
            "added": null, "description": {}
        });
        serde_json::from_value(doc.take()).unwrap()
    }

    #[test]
    fn a_good_entry_passes_and_each_broken_field_is_refused() {
        assert_eq!(check_image(&image()), Ok(()));
        type Break = (&'static str, fn(&mut CatalogImage));
        let breaks: [Break; 12] = [
            ("dotdot", |i| i.path = "vm/../sl5.3_x86_64_sl08e_8GB.img".into()),
            ("absolute", |i| i.path = "/vm/kvm/sl5.3_x86_64_sl08e_8GB.img".into()),
            ("deeper", |i| i.path = "vm/kvm/x/sl5.3_x86_64_sl08e_8GB.img".into()),
            ("other top", |i| i.path = "etc/kvm/sl5.3_x86_64_sl08e_8GB.img".into()),
            ("other file", |i| i.path = "vm/kvm/sl5.3_x86_64_sl08e_4GB.img".into()),
            ("hidden folder", |i| i.path = "vm/.kvm/sl5.3_x86_64_sl08e_8GB.img".into()),
            ("not a convention name", |i| {
                i.file = "passwd".into();
                i.path = "vm/kvm/passwd".into();
            }),
            ("name and file disagree", |i| i.name = "sl5.3_x86_64_sl08e_4GB".into()),
            ("short sha256", |i| i.sha256.truncate(63)),
            ("upper-case sha256", |i| i.sha256 = i.sha256.to_ascii_uppercase()),
            ("md5 not hex", |i| i.md5 = "zz".repeat(16)),
            ("huge", |i| i.size = u64::MAX),
        ];
        for (what, f) in breaks {
            let mut i = image();
            f(&mut i);
            assert!(check_image(&i).is_err(), "{what} passed");
        }
    }

    #[test]
    fn an_expired_catalog_is_refused() {
        let remote = Remote::parse("file:///srv").unwrap();
        let doc = |expires: &str| {
            serde_json::to_vec(&serde_json::json!({
                "format": "vmrepo-catalog", "version": 1, "serial": 3,
                "generated": "2026-01-01T00:00:00Z", "expires": expires, "images": [image(), image()]
            }))
            .unwrap()
        };
        let now: Timestamp = "2026-01-10T00:00:00Z".parse().unwrap();
        let err = check_catalog(&remote, &doc("2026-01-09T00:00:00Z"), now).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let err = check_catalog(&remote, &doc("soon"), now).unwrap_err();
        assert!(err.to_string().contains("not a time"), "{err}");
        // The same path twice is refused too.
        let err = check_catalog(&remote, &doc("2026-02-01T00:00:00Z"), now).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn selections_match_fields_and_words() {
        let i = image();
        let sel = |e: &[&str]| Select::parse(e).unwrap().matches(&i);
        assert!(sel(&[]));
        assert!(sel(&["vm=KVM", "bits=64", "os~sl5*"]));
        assert!(sel(&["sl08e"]));
        assert!(!sel(&["vm=xen"]));
        assert!(sel(&["vm!=xen", "maxsize!~*4GB"]));
        assert!(!sel(&["os~sl6*"]));
        assert!(Select::parse(&["colour=red"]).is_err());
        assert!(Select::parse(&["size>3"]).is_err());
        assert!(glob(b"a*b?d", b"axxbcd") && !glob(b"a*b?d", b"axxbd") && glob(b"**", b""));
    }
}
