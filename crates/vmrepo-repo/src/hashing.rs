//! One pass over an image's bytes: read once, then copy, MD5 and SHA-256 in
//! parallel threads.
//!
//! MD5 is the slowest step (one core, about 550 MB/s), so the pipeline is built
//! around it: a reader fills pooled buffers and hands each to every consumer
//! (the MD5 thread, the SHA-256 thread, the writer); the writer starts the
//! destination's write-back as it goes, so the final fsync has little left to
//! do. Holes in the source (SEEK_HOLE) are hashed as zeros and stay holes in
//! the copy. Memory is bounded by [`POOL_BUFFERS`] x [`CHUNK`] whatever the
//! image's size.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};

/// Bytes read at a time.
pub const CHUNK: usize = 1 << 20;
/// Buffers in flight: the pipeline never holds more than this many chunks.
pub const POOL_BUFFERS: usize = 8;
/// The writer starts write-back every this many bytes.
const WRITEBACK_STEP: u64 = 8 << 20;
/// A hole is handed on in pieces of at most this many bytes.
const HOLE_STEP: u64 = 64 << 20;
/// Zeros fed to the hashers for a hole.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Which digests to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub md5: bool,
    pub sha256: bool,
}

/// The digests of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub md5: Option<[u8; 16]>,
    pub sha256: Option<[u8; 32]>,
    /// Bytes hashed: the file's length.
    pub bytes: u64,
}

/// A file being read or written, with its path for error messages.
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    pub file: &'a File,
    pub path: &'a Path,
}

/// A buffer from the pool; it goes back to the pool when the last consumer drops it.
struct Pooled {
    data: Vec<u8>,
    len: usize,
    offset: u64,
    pool: Sender<Vec<u8>>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The pool outlives every buffer; a failed send only means the pipeline is over.
        let _ = self.pool.send(std::mem::take(&mut self.data));
    }
}

enum Piece {
    Data(Arc<Pooled>),
    Zeros(u64),
}

impl Clone for Piece {
    fn clone(&self) -> Piece {
        match self {
            Piece::Data(b) => Piece::Data(Arc::clone(b)),
            Piece::Zeros(n) => Piece::Zeros(*n),
        }
    }
}

/// Reads `src` once, computing the wanted digests and, with `dst`, copying it
/// (holes stay holes; the copy is fsynced before this returns). `progress`
/// receives byte counts as they are read; `cancel` stops the pass with
/// [`ErrorKind::Interrupted`].
///
/// # Errors
/// An I/O error on either file (a full disk is [`ErrorKind::NoSpace`]), a
/// source that changes size while it is read, or an interruption.
pub fn hash_file(
    src: Endpoint<'_>,
    dst: Option<Endpoint<'_>>,
    want: Want,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Digests> {
    let md = src.file.metadata().map_err(|e| Error::io("read the size of", src.path, e))?;
    let len = md.len();
    let _ = rustix::fs::fadvise(src.file.as_fd(), 0, None, rustix::fs::Advice::Sequential);
    if dst.is_none() && !(want.md5 && want.sha256) {
        // One digest and no copy: hashing each chunk right after reading it,
        // while it is in the cache, beats handing it to another thread.
        return hash_inline(src, len, want, progress, cancel);
    }

    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(POOL_BUFFERS);
    for _ in 0..POOL_BUFFERS {
        // The channel has room for exactly POOL_BUFFERS buffers.
        let _ = pool_tx.send(vec![0u8; CHUNK]);
    }
    let mut consumers: Vec<Sender<Piece>> = Vec::new();
    let failed = AtomicBool::new(false);

    std::thread::scope(|s| {
        let md5_thread = want.md5.then(|| {
            let (tx, rx) = bounded::<Piece>(POOL_BUFFERS);
            consumers.push(tx);
            s.spawn(move || digest_pieces::<Md5>(&rx))
        });
        let sha_thread = want.sha256.then(|| {
            let (tx, rx) = bounded::<Piece>(POOL_BUFFERS);
            consumers.push(tx);
            s.spawn(move || digest_pieces::<Sha256>(&rx))
        });
        let failed_ref = &failed;
        let writer_thread = dst.map(|d| {
            let (tx, rx) = bounded::<Piece>(POOL_BUFFERS);
            consumers.push(tx);
            s.spawn(move || {
                let r = write_pieces(d, &rx, len);
                if r.is_err() {
                    failed_ref.store(true, Ordering::Relaxed);
                }
                r
            })
        });

        let read_result = read_pieces(src, len, &consumers, &pool_rx, &pool_tx, progress, cancel, &failed);
        // Closing the channels ends the consumers.
        consumers.clear();
        let md5 = md5_thread.map(|t| t.join().map(|d| <[u8; 16]>::try_from(d.as_slice()).ok()));
        let sha = sha_thread.map(|t| t.join().map(|d| <[u8; 32]>::try_from(d.as_slice()).ok()));
        let write = writer_thread.map(|t| t.join());

        // The writer's own error (a full disk) explains a reader that stopped.
        if let Some(w) = write {
            match w {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::new(ErrorKind::Io, "the copy thread failed")),
            }
        }
        read_result?;
        let after = src.file.metadata().map_err(|e| Error::io("read the size of", src.path, e))?;
        if after.len() != len {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} changed size while it was read ({len} then {} bytes)",
                    src.path.display(),
                    after.len()
                ),
            ));
        }
        Ok(Digests { md5: joined(md5)?, sha256: joined(sha)?, bytes: len })
    })
}

fn hash_inline(
    src: Endpoint<'_>,
    len: u64,
    want: Want,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Digests> {
    let mut md5 = want.md5.then(Md5::new);
    let mut sha = want.sha256.then(Sha256::new);
    let mut feed = |bytes: &[u8]| {
        if let Some(h) = md5.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = sha.as_mut() {
            h.update(bytes);
        }
    };
    let mut buf = vec![0u8; CHUNK];
    walk(src, len, cancel, |region| {
        match region {
            Region::Hole(n) => {
                for_zeros(n, &mut feed);
                progress(n);
            }
            Region::Data(offset, n) => {
                read_exact_at(src, &mut buf[..n], offset)?;
                feed(&buf[..n]);
                progress(n as u64);
            }
        }
        Ok(())
    })?;
    check_unchanged(src, len)?;
    Ok(Digests {
        md5: md5.map(|h| h.finalize().into()),
        sha256: sha.map(|h| h.finalize().into()),
        bytes: len,
    })
}

/// Fills `buf` from `offset`; a file that ends early changed while it was read.
fn read_exact_at(src: Endpoint<'_>, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} became shorter while it was read (at byte {})",
                        src.path.display(),
                        offset + filled as u64
                    ),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", src.path, e)),
        }
    }
    Ok(())
}

/// Fails if the file's length is no longer `len`.
fn check_unchanged(src: Endpoint<'_>, len: u64) -> Result<()> {
    let after = src.file.metadata().map_err(|e| Error::io("read the size of", src.path, e))?;
    if after.len() != len {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} changed size while it was read ({len} then {} bytes)",
                src.path.display(),
                after.len()
            ),
        ));
    }
    Ok(())
}

/// Hashes a file by path: opens it read-only without following a final
/// symbolic link.
pub fn hash_path(
    path: &Path,
    want: Want,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Digests> {
    let file = open_nofollow(path)?;
    hash_file(Endpoint { file: &file, path }, None, want, progress, cancel)
}

/// Opens a file for reading, refusing a symbolic link in the last component.
pub fn open_nofollow(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} is a symbolic link, not followed", path.display()),
            )
        } else {
            Error::io("open", path, e)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn read_pieces(
    src: Endpoint<'_>,
    len: u64,
    consumers: &[Sender<Piece>],
    pool_rx: &Receiver<Vec<u8>>,
    pool_tx: &Sender<Vec<u8>>,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
    failed: &AtomicBool,
) -> Result<()> {
    let send = |piece: Piece| -> Result<()> {
        for c in consumers {
            c.send(piece.clone()).map_err(|_| Error::new(ErrorKind::Io, "the pipeline stopped"))?;
        }
        Ok(())
    };
    walk(src, len, cancel, |region| match region {
        Region::Hole(n) => {
            send(Piece::Zeros(n))?;
            progress(n);
            Ok(())
        }
        Region::Data(offset, n) => {
            if failed.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Io, "the copy failed"));
            }
            let mut buf = pool_rx.recv().map_err(|_| Error::new(ErrorKind::Io, "buffer pool closed"))?;
            read_exact_at(src, &mut buf[..n], offset)?;
            send(Piece::Data(Arc::new(Pooled { data: buf, len: n, offset, pool: pool_tx.clone() })))?;
            progress(n as u64);
            Ok(())
        }
    })
}

/// A stretch of a file met by [`walk`].
enum Region {
    /// A hole of this many bytes (reads as zeros).
    Hole(u64),
    /// Data at this offset, of at most [`CHUNK`] bytes.
    Data(u64, usize),
}

/// Walks `src` from start to end in [`Region`]s, stopping with
/// [`ErrorKind::Interrupted`] when `cancel` is set.
fn walk(
    src: Endpoint<'_>,
    len: u64,
    cancel: &AtomicBool,
    mut visit: impl FnMut(Region) -> Result<()>,
) -> Result<()> {
    let mut pos = 0u64;
    while pos < len {
        let data_start = next_data(src.file, pos, len);
        while pos < data_start {
            // Hashing a large hole takes time too: check for a stop in steps.
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            let n = (data_start - pos).min(HOLE_STEP);
            visit(Region::Hole(n))?;
            pos += n;
        }
        if pos >= len {
            break;
        }
        let data_end = next_hole(src.file, pos, len);
        while pos < data_end {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::interrupted());
            }
            // data_end - pos is positive here and CHUNK fits in u64.
            let n = usize::try_from((data_end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            visit(Region::Data(pos, n))?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// The start of the next data region at or after `pos`; `len` when only a hole
/// remains. Filesystems without SEEK_DATA report everything as data.
fn next_data(file: &File, pos: u64, len: u64) -> u64 {
    match rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Data(pos)) {
        Ok(p) => p.min(len),
        Err(rustix::io::Errno::NXIO) => len,
        Err(_) => pos,
    }
}

/// The end of the data region that starts at `pos`.
fn next_hole(file: &File, pos: u64, len: u64) -> u64 {
    match rustix::fs::seek(file.as_fd(), rustix::fs::SeekFrom::Hole(pos)) {
        Ok(p) if p > pos => p.min(len),
        _ => len,
    }
}

/// A hasher thread's digest: `None` if not wanted, an error if the thread died.
fn joined<T>(r: Option<std::thread::Result<Option<T>>>) -> Result<Option<T>> {
    match r {
        None => Ok(None),
        Some(Ok(Some(d))) => Ok(Some(d)),
        Some(_) => Err(Error::new(ErrorKind::Io, "a hashing thread failed")),
    }
}

/// Calls `f` on slices of zeros adding up to `n` bytes (a hole's content).
fn for_zeros(mut n: u64, f: &mut dyn FnMut(&[u8])) {
    while n > 0 {
        let step = n.min(ZEROS.len() as u64);
        // step <= ZEROS.len(), a usize.
        f(&ZEROS[..usize::try_from(step).unwrap_or(ZEROS.len())]);
        n -= step;
    }
}

fn digest_pieces<D: Digest>(rx: &Receiver<Piece>) -> Vec<u8> {
    let mut h = D::new();
    for piece in rx {
        match piece {
            Piece::Data(b) => h.update(&b.data[..b.len]),
            Piece::Zeros(n) => for_zeros(n, &mut |z| h.update(z)),
        }
    }
    h.finalize().to_vec()
}

fn write_pieces(dst: Endpoint<'_>, rx: &Receiver<Piece>, len: u64) -> Result<()> {
    let mut pending_from = 0u64;
    let mut written_to = 0u64;
    for piece in rx {
        let Piece::Data(b) = piece else { continue };
        dst.file.write_all_at(&b.data[..b.len], b.offset).map_err(|e| Error::io("write", dst.path, e))?;
        written_to = b.offset + b.len as u64;
        if written_to - pending_from >= WRITEBACK_STEP {
            start_writeback(dst.file, pending_from, written_to - pending_from);
            pending_from = written_to;
        }
    }
    let _ = written_to;
    dst.file.set_len(len).map_err(|e| Error::io("set the length of", dst.path, e))?;
    dst.file.sync_all().map_err(|e| Error::io("sync", dst.path, e))
}

/// Asks the kernel to start writing a range back now rather than at the final
/// fsync, so that disk writes overlap hashing. Advisory: failures are ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor
    // is valid for the duration of the call because `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digests_of(bytes: &[u8]) -> ([u8; 16], [u8; 32]) {
        (Md5::digest(bytes).into(), Sha256::digest(bytes).into())
    }

    #[test]
    fn copy_and_hash_match_one_shot_digests() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let mut data = Vec::new();
        for i in 0..(3 * CHUNK + 12345) {
            data.push((i * 7 % 251) as u8);
        }
        std::fs::File::create(&src_path).unwrap().write_all(&data).unwrap();
        let dst_path = dir.path().join("dst");
        let src = File::open(&src_path).unwrap();
        let dst = File::create(&dst_path).unwrap();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let d = hash_file(
            Endpoint { file: &src, path: &src_path },
            Some(Endpoint { file: &dst, path: &dst_path }),
            Want { md5: true, sha256: true },
            &|n| {
                seen.fetch_add(n, Ordering::Relaxed);
            },
            &AtomicBool::new(false),
        )
        .unwrap();
        let (md5, sha) = digests_of(&data);
        assert_eq!(d.md5, Some(md5));
        assert_eq!(d.sha256, Some(sha));
        assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(std::fs::read(&dst_path).unwrap(), data);
    }

    #[test]
    fn holes_hash_as_zeros_and_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("sparse");
        let f = File::create(&src_path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        drop(f);
        let data = std::fs::read(&src_path).unwrap();
        let dst_path = dir.path().join("copy");
        let src = File::open(&src_path).unwrap();
        let dst = File::create(&dst_path).unwrap();
        let d = hash_file(
            Endpoint { file: &src, path: &src_path },
            Some(Endpoint { file: &dst, path: &dst_path }),
            Want { md5: true, sha256: true },
            &|_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!((d.md5.unwrap(), d.sha256.unwrap()), digests_of(&data));
        assert_eq!(std::fs::read(&dst_path).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst_path).unwrap().blocks();
        assert!(blocks * 512 < 8 << 20, "copy is not sparse: {blocks} blocks");
    }

    #[test]
    fn cancel_stops_with_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 4 * CHUNK]).unwrap();
        let err =
            hash_path(&p, Want { md5: true, sha256: false }, &|_| {}, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
    }
}
