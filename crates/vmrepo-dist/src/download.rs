//! One image's transfer for `pull`: from the source, then each mirror in
//! order, for a few rounds with a back-off between them, into
//! `.vmrepo/pull/<sha256>.part`, hashed as the bytes arrive and proved by
//! the catalog's size and SHA-256.
//!
//! A transfer that breaks off (a connection error, a stall, a body that ends
//! early, a 5xx) keeps its bytes, and the next server continues from them:
//! the SHA-256 of the whole file proves the splice at the end. A server that
//! served bytes the catalog does not state (a wrong SHA-256, a wrong length)
//! is not trusted again for that image: its partial file is removed and it
//! is not asked again in the later rounds, nor is one that does not have the
//! image.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vmrepo_repo::checksum::hex;
use vmrepo_repo::hashing::{StreamMd5 as Md5, start_writeback};
use vmrepo_repo::{Error, ErrorKind, Prehashed, Result, fsutil};

use crate::fetch::{self, Remote};
use crate::schema::CatalogImage;

/// The read and write unit while downloading.
const CHUNK: usize = 256 << 10;
/// Buffers in flight between a download and its MD5 thread.
const POOL: usize = 16;
/// Write-back is started every this many bytes, so that the final fsync has
/// little left to do.
const WRITEBACK: u64 = 16 << 20;
/// The longest wait between two rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(16);
/// How often a wait looks at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What the downloads of one pull share.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The source first, then the mirrors.
    pub remotes: Vec<Remote>,
    /// Rounds over `remotes` (at least 1).
    pub tries: u32,
    /// The wait before the second round, doubled for each later one.
    pub backoff: Duration,
    /// `.vmrepo/pull/`.
    pub dir: PathBuf,
}

/// Told how each download goes (progress bars); called from the download threads.
pub trait PullProgress: Send + Sync {
    /// The downloads start: `images` of `bytes` in all.
    fn begin(&self, _images: usize, _bytes: u64) {}
    /// Download `slot` starts: `path`, of `size` bytes.
    fn start(&self, _slot: usize, _path: &str, _size: u64) {}
    /// Download `slot` holds `bytes` of its image (it may go back to 0).
    fn position(&self, _slot: usize, _bytes: u64) {}
    /// Download `slot` is over, whichever way.
    fn done(&self, _slot: usize) {}
    /// Something worth a line on standard error (a fail-over).
    fn note(&self, _message: &str) {}
}

/// Progress told to nobody.
pub struct NoPullProgress;
impl PullProgress for NoPullProgress {}

/// A proved download.
#[derive(Debug)]
pub struct Fetched {
    pub partial: PathBuf,
    pub prehashed: Prehashed,
    /// The server whose answer completed it (`None`: the partial file an
    /// earlier pull left was whole already).
    pub mirror: Option<String>,
    /// Bytes read from the network for it, over all attempts.
    pub transferred: u64,
    /// Where this pull started: the bytes an earlier one left and the first
    /// server continued from.
    pub resumed_from: u64,
    /// Requests made for it.
    pub attempts: u32,
}

/// Downloads `image` as `plan` says, until `stop`.
///
/// # Errors
/// The last error of each server, in one line naming the image: of kind
/// [`ErrorKind::BadImage`] when a server served other bytes than the
/// catalog's, [`ErrorKind::NotFound`] when none has it, else
/// [`ErrorKind::Io`]; an interruption.
pub fn fetch(
    plan: &Plan,
    image: &CatalogImage,
    slot: usize,
    progress: &dyn PullProgress,
    stop: &AtomicBool,
) -> Result<Fetched> {
    progress.start(slot, &image.path, image.size);
    let result = fetch_from_any(plan, image, slot, progress, stop);
    progress.done(slot);
    result
}

fn fetch_from_any(
    plan: &Plan,
    image: &CatalogImage,
    slot: usize,
    progress: &dyn PullProgress,
    stop: &AtomicBool,
) -> Result<Fetched> {
    let partial = plan.dir.join(format!("{}.part", image.sha256));
    if let Some(prehashed) = kept_whole(&partial, image, stop)? {
        progress.position(slot, image.size);
        return Ok(Fetched {
            partial,
            prehashed,
            mirror: None,
            transferred: 0,
            resumed_from: image.size,
            attempts: 0,
        });
    }
    let mut transferred = 0u64;
    let mut attempts = 0u32;
    let mut resumed_from = None;
    // The last error of each server; `None` while it may be asked again.
    let mut failed: Vec<Option<Error>> = plan.remotes.iter().map(|_| None).collect();
    let mut given_up = vec![false; plan.remotes.len()];
    // A folder on this machine answers the same way each time.
    let rounds =
        if plan.remotes.iter().all(|r| matches!(r, Remote::Folder(_))) { 1 } else { plan.tries.max(1) };
    for round in 0..rounds {
        if given_up.iter().all(|g| *g) {
            break;
        }
        if round > 0 {
            let exp = round.saturating_sub(1).min(16);
            wait(plan.backoff.saturating_mul(1u32 << exp).min(MAX_BACKOFF), stop)?;
        }
        for (i, remote) in plan.remotes.iter().enumerate() {
            if given_up[i] {
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            attempts = attempts.saturating_add(1);
            let mut tally = Tally::default();
            let result = attempt(remote, image, &plan.dir, slot, progress, stop, &mut tally);
            transferred = transferred.saturating_add(tally.transferred);
            resumed_from.get_or_insert(tally.start);
            match result {
                Ok(prehashed) => {
                    return Ok(Fetched {
                        partial,
                        prehashed,
                        mirror: Some(remote.key()),
                        transferred,
                        resumed_from: resumed_from.unwrap_or(0),
                        attempts,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    progress.note(&format!("{e}; trying the next server"));
                    given_up[i] = matches!(e.kind(), ErrorKind::BadImage | ErrorKind::NotFound);
                    failed[i] = Some(e);
                }
            }
        }
    }
    let errors: Vec<Error> = failed.into_iter().flatten().collect();
    let kind = if errors.iter().any(|e| e.kind() == ErrorKind::BadImage) {
        ErrorKind::BadImage
    } else if errors.iter().all(|e| e.kind() == ErrorKind::NotFound) {
        ErrorKind::NotFound
    } else {
        ErrorKind::Io
    };
    let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(Error::new(
        kind,
        format!(
            "{}: not fetched after {attempts} attempts, refused, nothing imported: {}",
            image.path,
            said.join("; ")
        ),
    ))
}

/// Sleeps `d`, or less when `stop` is set.
fn wait(d: Duration, stop: &AtomicBool) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(TICK.min(end - now));
    }
}

/// The digests of a partial file an earlier pull left whole, if they are the
/// catalog's; a whole one with other bytes is removed.
fn kept_whole(partial: &Path, image: &CatalogImage, stop: &AtomicBool) -> Result<Option<Prehashed>> {
    match fs::symlink_metadata(partial) {
        Ok(md) if md.is_file() && md.len() == image.size => {}
        _ => return Ok(None),
    }
    let mut file = File::open(partial).map_err(|e| Error::io("open", partial, e))?;
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    hash_prefix(&mut file, image.size, &mut sha, &mut md5, partial, stop)?;
    let sha256: [u8; 32] = sha.finalize().into();
    if hex(&sha256) != image.sha256 {
        discard(partial);
        return Ok(None);
    }
    Ok(Some(prehashed(&file, partial, sha256, md5)?))
}

fn prehashed(file: &File, path: &Path, sha256: [u8; 32], md5: Md5) -> Result<Prehashed> {
    let md = file.metadata().map_err(|e| Error::io("read", path, e))?;
    Ok(Prehashed {
        md5: md5.finalize(),
        sha256,
        ino: md.ino(),
        len: md.len(),
        mtime_ns: fsutil::mtime_ns(&md),
    })
}

/// What one attempt did, even when it failed.
#[derive(Default)]
struct Tally {
    /// Where the server's bytes started.
    start: u64,
    transferred: u64,
}

/// One request to one server, continuing the partial file where it can.
fn attempt(
    remote: &Remote,
    image: &CatalogImage,
    dir: &Path,
    slot: usize,
    progress: &dyn PullProgress,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<Prehashed> {
    let partial = dir.join(format!("{}.part", image.sha256));
    let etag_path = etag_path(&partial);
    let at = remote.location(&image.path);
    let have = match fs::symlink_metadata(&partial) {
        Ok(md) if md.is_file() && md.len() <= image.size => md.len(),
        Ok(_) => {
            discard(&partial);
            0
        }
        Err(_) => 0,
    };
    // `<server>\n<ETag>`: an ETag is only asked of the server that gave it.
    let etag = fs::read_to_string(&etag_path)
        .ok()
        .filter(|t| t.len() < 1024)
        .and_then(|t| t.split_once('\n').map(|(k, v)| (k.to_string(), v.trim_end().to_string())))
        .filter(|(k, v)| *k == remote.key() && v.starts_with('"'))
        .map(|(_, v)| v);
    let opened = remote.open_from(&image.path, image.size, have, etag.as_deref())?;
    tally.start = opened.start;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(|e| Error::io("open", &partial, e))?;
    file.set_len(opened.start).map_err(|e| Error::io("truncate", &partial, e))?;
    progress.position(slot, opened.start);
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    // What is kept is hashed again: the digests cover the whole file.
    hash_prefix(&mut file, opened.start, &mut sha, &mut md5, &partial, stop)?;
    if opened.start == 0 {
        match &opened.etag {
            Some(t) => {
                fsutil::write_atomic(&etag_path, format!("{}\n{t}\n", remote.key()).as_bytes(), 0o644)?
            }
            None => {
                let _ = fs::remove_file(&etag_path);
            }
        }
    }
    let mut body = opened.body;
    let (total, md5) = receive(
        &mut *body,
        (&file, &partial),
        &at,
        (opened.start, image.size),
        &mut sha,
        md5,
        slot,
        progress,
        stop,
        tally,
    )?;
    if total < image.size {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{at}: the transfer ended after {total} of {} bytes", image.size),
        ));
    }
    file.sync_all().map_err(|e| Error::io("sync", &partial, e))?;
    let sha256: [u8; 32] = sha.finalize().into();
    if hex(&sha256) != image.sha256 {
        discard(&partial);
        return Err(Error::new(
            ErrorKind::BadImage,
            format!("{at}: its SHA-256 is {}, the catalog states {}", hex(&sha256), image.sha256),
        ));
    }
    prehashed(&file, &partial, sha256, md5)
}

/// Reads `body` into `file` from byte `total` up to `size` (never more: what
/// a server sends beyond the catalog's size is not looked at), SHA-256 in
/// this thread, MD5 in a thread of its own: MD5 is the slowest step (see
/// `vmrepo_repo::hashing`), so it gets a core while this thread reads,
/// writes and hashes SHA-256 (with the CPU's SHA extensions, several times
/// faster). A third thread, mostly asleep, starts the write-back as the file
/// grows. Returns the bytes the file holds and the MD5 state.
#[allow(clippy::too_many_arguments)]
fn receive(
    body: &mut dyn Read,
    (file, path): (&File, &Path),
    at: &str,
    (mut total, size): (u64, u64),
    sha: &mut Sha256,
    md5: Md5,
    slot: usize,
    progress: &dyn PullProgress,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<(u64, Md5)> {
    std::thread::scope(|s| {
        let (to_md5, chunks) = mpsc::sync_channel::<Vec<u8>>(POOL);
        let (back, pool) = mpsc::channel::<Vec<u8>>();
        for _ in 0..POOL {
            // The receiver is alive: it is `pool`, held here.
            let _ = back.send(Vec::with_capacity(CHUNK));
        }
        let md5_thread = s.spawn(move || {
            let mut md5 = md5;
            while let Ok(buf) = chunks.recv() {
                md5.update(&buf);
                if back.send(buf).is_err() {
                    break;
                }
            }
            md5
        });
        let (to_writeback, ranges) = mpsc::channel::<(u64, u64)>();
        s.spawn(move || {
            while let Ok((offset, len)) = ranges.recv() {
                start_writeback(file, offset, len);
            }
        });
        let mut written_back = total;
        let result = (|| {
            let mut out = file;
            while total < size {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::interrupted());
                }
                let Ok(mut buf) = pool.recv() else {
                    return Err(Error::new(ErrorKind::Io, format!("{at}: the MD5 thread stopped")));
                };
                let want = usize::try_from(size.saturating_sub(total)).unwrap_or(CHUNK).min(CHUNK);
                buf.resize(want, 0);
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!(
                                "{at}: the transfer broke after {total} of {size} bytes ({})",
                                fetch::body_error(&e)
                            ),
                        ));
                    }
                };
                buf.truncate(n);
                sha.update(&buf);
                out.write_all(&buf).map_err(|e| Error::io("write", path, e))?;
                if to_md5.send(buf).is_err() {
                    return Err(Error::new(ErrorKind::Io, format!("{at}: the MD5 thread stopped")));
                }
                total = total.saturating_add(n as u64);
                tally.transferred = tally.transferred.saturating_add(n as u64);
                progress.position(slot, total);
                if total.saturating_sub(written_back) >= WRITEBACK {
                    let _ = to_writeback.send((written_back, total.saturating_sub(written_back)));
                    written_back = total;
                }
            }
            Ok(total)
        })();
        drop(to_md5);
        drop(to_writeback);
        let md5 = md5_thread
            .join()
            .map_err(|_| Error::new(ErrorKind::Io, format!("{at}: the MD5 thread failed")))?;
        result.map(|total| (total, md5))
    })
}

/// Hashes the first `len` bytes of `file` (what an earlier attempt kept),
/// leaving the file positioned at `len`.
fn hash_prefix(
    file: &mut File,
    len: u64,
    sha: &mut Sha256,
    md5: &mut Md5,
    path: &Path,
    stop: &AtomicBool,
) -> Result<()> {
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("read", path, e))?;
    let mut left = len;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let chunk = &mut buf[..want];
        file.read_exact(chunk).map_err(|e| Error::io("read", path, e))?;
        sha.update(&*chunk);
        md5.update(&*chunk);
        left = left.saturating_sub(want as u64);
    }
    file.seek(SeekFrom::Start(len)).map_err(|e| Error::io("read", path, e))?;
    Ok(())
}

/// `<sha256>.etag` beside `<sha256>.part`.
pub fn etag_path(partial: &Path) -> PathBuf {
    partial.with_extension("etag")
}

/// Removes a partial file and its ETag.
pub fn discard(partial: &Path) {
    let _ = fs::remove_file(partial);
    let _ = fs::remove_file(etag_path(partial));
}
