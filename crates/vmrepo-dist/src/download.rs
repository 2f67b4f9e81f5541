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
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
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

/// The largest read while downloading (a web server's body gives at most
/// what ureq's buffer holds, 128 KiB, per read).
const CHUNK: usize = 256 << 10;
/// Buffers in flight between a download's threads (16 MiB).
const POOL: usize = 64;
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
    let file = File::open(partial).map_err(|e| Error::io("open", partial, e))?;
    let Hashes { sha, md5 } = hash_prefix(&file, image.size, Hashes::new(), partial, stop)?;
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
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(|e| Error::io("open", &partial, e))?;
    file.set_len(opened.start).map_err(|e| Error::io("truncate", &partial, e))?;
    progress.position(slot, opened.start);
    // What is kept is hashed again: the digests cover the whole file.
    let hashes = hash_prefix(&file, opened.start, Hashes::new(), &partial, stop)?;
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
    let (total, Hashes { sha, md5 }) = receive(
        &mut *body,
        (&file, &partial),
        &at,
        (opened.start, image.size),
        hashes,
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

/// The digests of a file as its bytes go by.
struct Hashes {
    sha: Sha256,
    md5: Md5,
}

impl Hashes {
    fn new() -> Hashes {
        Hashes { sha: Sha256::new(), md5: Md5::new() }
    }
}

/// Reads `body` into `file` from byte `start` up to `size` (never more: what
/// a server sends beyond the catalog's size is not looked at), hashing as
/// the bytes go by ([`pump`]). Returns the bytes the file holds and the
/// digests' states.
#[allow(clippy::too_many_arguments)]
fn receive(
    body: &mut dyn Read,
    (file, path): (&File, &Path),
    at: &str,
    (start, size): (u64, u64),
    hashes: Hashes,
    slot: usize,
    progress: &dyn PullProgress,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<(u64, Hashes)> {
    let mut total = start;
    let mut read = |buf: &mut [u8]| loop {
        match body.read(buf) {
            Ok(n) => {
                total = total.saturating_add(n as u64);
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{at}: the transfer broke after {total} of {size} bytes ({})",
                        fetch::body_error(&e)
                    ),
                ));
            }
        }
    };
    let mut advanced = |n: u64, held: u64| {
        tally.transferred = tally.transferred.saturating_add(n);
        progress.position(slot, held);
    };
    let (held, hashes) = pump(
        &mut read,
        Some((file, path)),
        (start, size.saturating_sub(start)),
        hashes,
        &mut advanced,
        stop,
    )?;
    Ok((held, hashes))
}

/// One buffer on its way through [`pump`]'s threads: the bytes, how many
/// of them are used, and where they go in the file.
struct Piece {
    buf: vmrepo_format::IoBuf,
    len: usize,
    offset: u64,
}

/// Reads at most `len` bytes with `read` (until it returns 0), writes them
/// to `sink` from byte `offset` and feeds them to SHA-256 and MD5, each of
/// the four on a thread of its own: this thread reads (the network or a
/// file), one writes, one hashes SHA-256 and one MD5, passing each buffer
/// read along in that order and back to this thread through a bounded
/// pool. So a read never waits for the disk or a digest, nor a digest for
/// the other: on two cores MD5, the slowest step (see
/// `vmrepo_repo::hashing`), has one to itself while SHA-256 (with the CPU's
/// SHA extensions, several times faster), the copies and the system calls
/// share the other. A fifth thread, mostly asleep, starts the write-back as
/// the file grows, so that the final fsync has little left. `advanced` is
/// told of each buffer read: its bytes and where the file now ends.
///
/// Returns where the bytes end (`offset` plus those read) and the digests'
/// states, which cover exactly the bytes written.
fn pump(
    read: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
    sink: Option<(&File, &Path)>,
    (offset, len): (u64, u64),
    hashes: Hashes,
    advanced: &mut dyn FnMut(u64, u64),
    stop: &AtomicBool,
) -> Result<(u64, Hashes)> {
    let Hashes { sha, md5 } = hashes;
    let stopped = || Error::new(ErrorKind::Io, "a hashing or writing thread stopped");
    std::thread::scope(|s| {
        let (back, pool) = mpsc::channel::<vmrepo_format::IoBuf>();
        for _ in 0..POOL {
            // The receiver is alive: it is `pool`, held here.
            let _ = back.send(vmrepo_format::IoBuf::zeroed(CHUNK));
        }
        let (to_md5, for_md5) = mpsc::channel::<Piece>();
        let md5_thread = s.spawn(move || {
            let mut md5 = md5;
            while let Ok(p) = for_md5.recv() {
                md5.update(p.buf.get(..p.len).unwrap_or_default());
                if back.send(p.buf).is_err() {
                    break;
                }
            }
            md5
        });
        let (to_sha, for_sha) = mpsc::channel::<Piece>();
        let sha_thread = s.spawn(move || {
            let mut sha = sha;
            while let Ok(p) = for_sha.recv() {
                sha.update(p.buf.get(..p.len).unwrap_or_default());
                if to_md5.send(p).is_err() {
                    break;
                }
            }
            sha
        });
        // The first stage: the writer when there is a file, else SHA-256.
        let (first, writer) = match sink {
            None => (to_sha, None),
            Some((file, path)) => {
                let (to_writer, for_writer) = mpsc::channel::<Piece>();
                let (to_writeback, ranges) = mpsc::channel::<(u64, u64)>();
                s.spawn(move || {
                    while let Ok((offset, len)) = ranges.recv() {
                        start_writeback(file, offset, len);
                    }
                });
                let writer = s.spawn(move || -> Result<()> {
                    let mut written_back = offset;
                    while let Ok(p) = for_writer.recv() {
                        let bytes = p.buf.get(..p.len).unwrap_or_default();
                        file.write_all_at(bytes, p.offset).map_err(|e| Error::io("write", path, e))?;
                        let end = p.offset.saturating_add(p.len as u64);
                        if end.saturating_sub(written_back) >= WRITEBACK {
                            let _ = to_writeback.send((written_back, end.saturating_sub(written_back)));
                            written_back = end;
                        }
                        if to_sha.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(())
                });
                (to_writer, Some(writer))
            }
        };
        let result = (|| {
            let mut at = offset;
            let end = offset.saturating_add(len);
            while at < end {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::interrupted());
                }
                let mut buf = pool.recv().map_err(|_| stopped())?;
                let want = usize::try_from(end.saturating_sub(at)).unwrap_or(CHUNK).min(CHUNK);
                // One read per buffer: what arrived is written at once, so
                // that a transfer that breaks or stalls keeps every byte it gave.
                let n = read(buf.get_mut(..want).unwrap_or_default())?;
                if n == 0 {
                    break;
                }
                first.send(Piece { buf, len: n, offset: at }).map_err(|_| stopped())?;
                at = at.saturating_add(n as u64);
                advanced(n as u64, at);
            }
            Ok(at)
        })();
        drop(first);
        // A write error says more than the reader's "a thread stopped".
        if let Some(w) = writer {
            w.join().map_err(|_| stopped())??;
        }
        let sha = sha_thread.join().map_err(|_| stopped())?;
        let md5 = md5_thread.join().map_err(|_| stopped())?;
        result.map(|at| (at, Hashes { sha, md5 }))
    })
}

/// Hashes the first `len` bytes of `file` (what an earlier attempt kept).
fn hash_prefix(file: &File, len: u64, hashes: Hashes, path: &Path, stop: &AtomicBool) -> Result<Hashes> {
    if len == 0 {
        return Ok(hashes);
    }
    let mut reader = file;
    reader.seek(SeekFrom::Start(0)).map_err(|e| Error::io("read", path, e))?;
    let mut read = |buf: &mut [u8]| loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    };
    let (got, hashes) = pump(&mut read, None, (0, len), hashes, &mut |_, _| {}, stop)?;
    if got != len {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{}: {got} bytes where {len} were kept", path.display()),
        ));
    }
    Ok(hashes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T>(r: Result<T>) -> Error {
        match r {
            Err(e) => e,
            Ok(_) => panic!("no error"),
        }
    }

    /// The first field of `tool FILE` (sha256sum, md5sum): the oracle.
    fn tool_digest(tool: &str, path: &Path) -> String {
        let out = std::process::Command::new(tool).arg(path).output().unwrap();
        assert!(out.status.success(), "{tool} failed");
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = vmrepo_testkit::Rng::new(seed);
        (0..len).map(|_| rng.next_u64().to_le_bytes()[0]).collect()
    }

    /// A source that gives `data` in reads of uneven sizes, some of them
    /// interrupted, as a network does.
    fn uneven(data: &[u8]) -> impl FnMut(&mut [u8]) -> Result<usize> + '_ {
        let (mut at, mut i) = (0usize, 0usize);
        move |buf: &mut [u8]| {
            i += 1;
            let n = [1, 4096, 7, CHUNK + 3, 65_536, 100_003][i % 6].min(buf.len()).min(data.len() - at);
            buf[..n].copy_from_slice(&data[at..at + n]);
            at += n;
            Ok(n)
        }
    }

    /// More bytes than the pool holds, read unevenly into a file that
    /// already holds a prefix, only up to the length asked: the file holds
    /// the prefix and those bytes, and the digests (the prefix hashed first,
    /// as a resumed download does) are sha256sum's and md5sum's of it.
    #[test]
    fn the_pump_writes_and_hashes_what_it_reads() {
        if !(vmrepo_testkit::have("sha256sum", "coreutils") && vmrepo_testkit::have("md5sum", "coreutils")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let prefix = bytes(CHUNK / 2 + 5, 3);
        let data = bytes(2 * POOL * CHUNK + 12_345, 7);
        fs::write(&path, &prefix).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let stop = AtomicBool::new(false);
        let hashes = hash_prefix(&file, prefix.len() as u64, Hashes::new(), &path, &stop).unwrap();
        let want = (data.len() - 1000) as u64;
        let mut seen = 0u64;
        let (end, Hashes { sha, md5 }) = pump(
            &mut uneven(&data),
            Some((&file, &path)),
            (prefix.len() as u64, want),
            hashes,
            &mut |n, held| {
                seen += n;
                assert_eq!(held, prefix.len() as u64 + seen);
            },
            &stop,
        )
        .unwrap();
        assert_eq!((end, seen), (prefix.len() as u64 + want, want));
        let mut expected = prefix.clone();
        expected.extend_from_slice(&data[..want as usize]);
        assert!(fs::read(&path).unwrap() == expected, "the file holds other bytes");
        assert_eq!(hex(&sha.finalize()), tool_digest("sha256sum", &path));
        assert_eq!(hex(&md5.finalize()), tool_digest("md5sum", &path));
        // A source that ends early: the bytes it gave, no more.
        let short = bytes(3 * CHUNK + 1, 9);
        let (end, _) =
            pump(&mut uneven(&short), None, (0, 10 * CHUNK as u64), Hashes::new(), &mut |_, _| {}, &stop)
                .unwrap();
        assert_eq!(end, short.len() as u64);
    }

    /// A file that cannot be written ends the pump with the write's error,
    /// naming the file; a stop ends it as an interruption; a read error is
    /// the reader's.
    #[test]
    fn the_pump_stops_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.part");
        fs::write(&path, b"").unwrap();
        // Opened for reading only: every write fails (EBADF).
        let file = File::open(&path).unwrap();
        let data = bytes(4 * POOL * CHUNK, 1);
        let stop = AtomicBool::new(false);
        let err = err_of(pump(
            &mut uneven(&data),
            Some((&file, &path)),
            (0, data.len() as u64),
            Hashes::new(),
            &mut |_, _| {},
            &stop,
        ));
        assert!(err.to_string().contains("ro.part"), "{err}");
        let stop = AtomicBool::new(false);
        let mut reads = 0;
        let mut stopping = |buf: &mut [u8]| {
            reads += 1;
            if reads == 5 {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(buf.len())
        };
        let err = err_of(pump(&mut stopping, None, (0, 1 << 40), Hashes::new(), &mut |_, _| {}, &stop));
        assert_eq!(err.kind(), ErrorKind::Interrupted);
        let mut failing = |_: &mut [u8]| Err(Error::new(ErrorKind::Io, "the server went away"));
        let err = err_of(pump(
            &mut failing,
            None,
            (0, 100),
            Hashes::new(),
            &mut |_, _| {},
            &AtomicBool::new(false),
        ));
        assert!(err.to_string().contains("went away"), "{err}");
    }
}
