//! `vmrepo verify`: hash images again and compare with what was recorded.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;

use crate::catalog::Identity;
use crate::catalog::{Catalog, ImageRecord, read_capped};
use crate::checksum::{self, MAX_CHECKSUM_FILE, hex};
use crate::description::{Description, MAX_DESCRIPTION_FILE};
use crate::error::{ErrorKind, Result};
use crate::fsutil::{ctime_ns, mtime_ns};
use crate::hashing::{self, Want};
use crate::layout::{self, ImageKind};
use crate::progress::Progress;

/// What to verify and how.
pub struct VerifyOptions<'a> {
    /// Images to verify (as `vmrepo show` takes them); empty for all.
    pub names: Vec<String>,
    /// Skip images whose size, modification and change times and inode are
    /// those of their last good verification.
    pub quick: bool,
    /// Also check the MD5 of the `.checksum`.
    pub md5: bool,
    /// Threads hashing, each several images at once.
    pub jobs: usize,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

/// One problem found.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Stable code: missing-image, missing-part, unrecorded-part, missing-checksum,
    /// missing-description, checksum-format, checksum-other-file,
    /// description-unreadable, description-field, no-recorded-digest,
    /// sha256-mismatch, md5-mismatch, unreadable.
    pub code: &'static str,
    pub message: String,
}

/// The outcome for one image.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyResult {
    pub vm: String,
    pub name: String,
    pub path: String,
    /// `ok`, `unchanged` (skipped by --quick) or `failed`.
    pub status: &'static str,
    /// Bytes hashed.
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

/// `vmrepo verify`'s report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub images: u64,
    pub ok: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub bytes: u64,
    pub results: Vec<VerifyResult>,
}

/// Verifies images; the report lists every problem. Interruption stops it
/// with [`ErrorKind::Interrupted`].
///
/// # Errors
/// A name that matches no image, an index failure, or an interruption.
pub fn verify(catalog: &Catalog, opts: &VerifyOptions<'_>) -> Result<VerifyReport> {
    let records: Vec<ImageRecord> = if opts.names.is_empty() {
        catalog.all()?
    } else {
        opts.names.iter().map(|n| catalog.resolve(n)).collect::<Result<_>>()?
    };
    let vm_root = catalog.repo().vm_root();
    let total: u64 =
        records.iter().filter(|r| !(opts.quick && unchanged(r, &vm_root))).filter_map(|r| r.size).sum();
    opts.progress.start(total, "verify");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Verified>>> = Mutex::new(vec![None; records.len()]);
    let jobs = opts.jobs.clamp(1, 64).min(records.len().max(1));
    let advance = |n: u64| opts.progress.advance(n);
    // Each hashing thread takes several images at once (hashing::Hasher):
    // as many more threads ask as each hashes at once.
    hashing::Hasher::scope(jobs, &advance, opts.cancel, |hasher| {
        std::thread::scope(|s| {
            for _ in 0..(hashing::LANES * jobs).min(records.len()) {
                s.spawn(|| {
                    loop {
                        if opts.cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(rec) = records.get(i) else { break };
                        let r = verify_one(&vm_root, rec, opts, hasher);
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                    }
                });
            }
        });
    });
    opts.progress.finish();
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(crate::error::Error::interrupted());
    }
    let results = results.into_inner().unwrap_or_default();
    let at = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut report = VerifyReport::default();
    for (rec, r) in records.iter().zip(results) {
        let Some((result, stat)) = r else { continue };
        if result.status != "unchanged" {
            catalog.set_verified(rec.id, result.status == "ok", stat, &at)?;
        }
        report.images += 1;
        report.bytes += result.bytes;
        match result.status {
            "ok" => report.ok += 1,
            "unchanged" => report.unchanged += 1,
            _ => report.failed += 1,
        }
        report.results.push(result);
    }
    Ok(report)
}

/// One image's result and the identity of the bytes hashed.
type Verified = (VerifyResult, Option<Identity>);

/// Whether nothing is at `path` (and not merely unreadable: a permission
/// problem is not a missing file).
fn is_absent(path: &Path) -> bool {
    fs::symlink_metadata(path).is_err_and(|e| crate::fsutil::is_not_found(&e))
}

/// The identity of an image's bytes for `--quick`. For a folder: the sum of
/// the parts' sizes, the newest of their times (and of the folder's, which
/// changes when a part is added, removed or renamed), and the folder's inode.
fn identity(path: &Path, kind: ImageKind) -> Option<Identity> {
    let md = fs::symlink_metadata(path).ok()?;
    match kind {
        ImageKind::File => {
            Some(Identity { size: md.len(), mtime_ns: mtime_ns(&md), ino: md.ino(), ctime_ns: ctime_ns(&md) })
        }
        ImageKind::Folder => {
            let (parts, _) = layout::folder_parts(path).ok()?;
            let size = parts.iter().map(|(_, m)| m.len()).fold(0u64, u64::saturating_add);
            let newest = parts.iter().map(|(_, m)| mtime_ns(m)).max().unwrap_or(mtime_ns(&md));
            let changed = parts.iter().map(|(_, m)| ctime_ns(m)).chain([ctime_ns(&md)]).max().unwrap_or(0);
            Some(Identity { size, mtime_ns: newest, ino: md.ino(), ctime_ns: changed })
        }
        ImageKind::Missing => None,
    }
}

fn unchanged(rec: &ImageRecord, vm_root: &Path) -> bool {
    rec.verified_ok == Some(true)
        && rec.verified_stat.is_some()
        && identity(&vm_root.join(&rec.folder).join(&rec.file), rec.image_kind()) == rec.verified_stat
}

fn verify_one(
    vm_root: &Path,
    rec: &ImageRecord,
    opts: &VerifyOptions<'_>,
    hasher: &hashing::Hasher<'_>,
) -> Verified {
    let dir = vm_root.join(&rec.folder);
    let mut problems = Vec::new();
    let mut problem = |code: &'static str, message: String| problems.push(Problem { code, message });
    let image_path = dir.join(&rec.file);
    let kind = rec.image_kind();
    let rel = |p: &str| format!("{}/{}/{p}", layout::VM_DIR, rec.folder);
    let mut bytes = 0;
    let mut status = "ok";

    // Sidecars, read fresh, wherever the tree keeps them.
    let sidecars = layout::Sidecars::of(&dir, &rec.file, &rec.name, kind);
    let shown = |p: &Path| {
        p.strip_prefix(vm_root)
            .map_or_else(|_| p.display().to_string(), |r| format!("{}/{}", layout::VM_DIR, r.display()))
    };
    let txt = shown(&sidecars.description);
    let sum = shown(&sidecars.checksum);
    let mut expected_sha: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    match read_capped(&sidecars.description, MAX_DESCRIPTION_FILE) {
        Err(_) if is_absent(&sidecars.description) => {
            problem("missing-description", format!("{txt} is missing"));
        }
        Err(e) => problem("description-unreadable", format!("{txt}: {e}")),
        Ok(b) => match Description::parse(&b) {
            Err(e) => problem("description-unreadable", format!("{txt}: {e}")),
            Ok(d) => {
                let (facts, field_problems) = d.facts();
                for p in field_problems {
                    problem("description-field", format!("{txt} line {}: {}: {}", p.line, p.key, p.problem));
                }
                for digest in facts.sha256 {
                    let key = digest.part.unwrap_or_else(|| rec.file.clone());
                    expected_sha.insert(key, digest.sha256);
                }
            }
        },
    }
    let mut expected_md5: BTreeMap<String, [u8; 16]> = BTreeMap::new();
    match read_capped(&sidecars.checksum, MAX_CHECKSUM_FILE) {
        Err(_) if is_absent(&sidecars.checksum) => problem("missing-checksum", format!("{sum} is missing")),
        Err(e) => problem("checksum-format", format!("{sum}: {e}")),
        Ok(b) => match std::str::from_utf8(&b)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(|t| checksum::parse(t).map_err(|e| e.to_string()))
        {
            Err(e) => problem("checksum-format", format!("{sum}: not in md5sum's format: {e}")),
            Ok(lines) => {
                for l in lines {
                    expected_md5.insert(sidecars.part_key(&rec.file, &l.path), l.md5);
                }
            }
        },
    }

    // The files to hash: (path, name as recorded).
    let files: Vec<(PathBuf, String)> = match kind {
        ImageKind::Missing => {
            problem("missing-image", format!("{} is missing; only its sidecars remain", rel(&rec.file)));
            Vec::new()
        }
        ImageKind::File => match fs::symlink_metadata(&image_path) {
            Ok(_) => vec![(image_path.clone(), rec.file.clone())],
            Err(e) if crate::fsutil::is_not_found(&e) => {
                problem("missing-image", format!("{} has vanished", rel(&rec.file)));
                Vec::new()
            }
            Err(e) => {
                problem("unreadable", format!("{}: {e}", rel(&rec.file)));
                Vec::new()
            }
        },
        ImageKind::Folder => match layout::folder_parts(&image_path) {
            Err(e) => {
                problem("missing-image", format!("{}: {e}", rel(&rec.file)));
                Vec::new()
            }
            Ok((parts, _)) => {
                parts.into_iter().map(|(n, _)| (image_path.join(&n), format!("{}/{n}", rec.file))).collect()
            }
        },
    };
    if kind == ImageKind::Folder {
        for recorded in expected_sha.keys().chain(expected_md5.keys()) {
            if !files.iter().any(|(_, n)| n == recorded) {
                problem("missing-part", format!("{} is recorded but missing", rel(recorded)));
            }
        }
        for (_, n) in &files {
            if !expected_sha.contains_key(n) && !expected_md5.contains_key(n) {
                problem("unrecorded-part", format!("{} is not in the sidecars", rel(n)));
            }
        }
    } else if kind == ImageKind::File && !expected_md5.is_empty() && !expected_md5.contains_key(&rec.file) {
        problem("checksum-other-file", format!("{sum} does not name {}", rec.file));
    }

    let stat = identity(&image_path, kind);
    let sidecars_ok = problems.is_empty();
    let mut problem = |code: &'static str, message: String| problems.push(Problem { code, message });
    if opts.quick
        && rec.verified_ok == Some(true)
        && rec.verified_stat.is_some()
        && stat == rec.verified_stat
        && sidecars_ok
    {
        status = "unchanged";
    } else if !files.is_empty() {
        for (path, name) in &files {
            if opts.cancel.load(Ordering::Relaxed) {
                break;
            }
            let sha = expected_sha.get(name);
            let md5 = expected_md5.get(name);
            let want = Want { sha256: sha.is_some(), md5: md5.is_some() && (opts.md5 || sha.is_none()) };
            if !want.sha256 && !want.md5 {
                problem(
                    "no-recorded-digest",
                    format!("{}: no SHA-256 in the .txt nor MD5 in the .checksum", rel(name)),
                );
                continue;
            }
            match hasher.hash_path(path, want) {
                Ok(d) => {
                    bytes += d.bytes;
                    if let (Some(expected), Some(actual)) = (sha, d.sha256)
                        && *expected != actual
                    {
                        problem(
                            "sha256-mismatch",
                            format!(
                                "{}: SHA-256 is {} but {} records {}",
                                rel(name),
                                hex(&actual),
                                txt,
                                hex(expected)
                            ),
                        );
                    }
                    if let (Some(expected), Some(actual)) = (md5, d.md5)
                        && *expected != actual
                    {
                        problem(
                            "md5-mismatch",
                            format!(
                                "{}: MD5 is {} but {} records {}",
                                rel(name),
                                hex(&actual),
                                sum,
                                hex(expected)
                            ),
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => break,
                Err(e) => problem("unreadable", e.to_string()),
            }
        }
    }
    if !problems.is_empty() {
        status = "failed";
    }
    (
        VerifyResult {
            vm: rec.vm.clone(),
            name: rec.name.clone(),
            path: rec.path.clone(),
            status,
            bytes,
            problems,
        },
        stat,
    )
}
