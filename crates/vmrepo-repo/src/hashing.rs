//! One pass over an image's bytes: read once; copy, MD5 and SHA-256 as it goes.
//!
//! MD5 is the slowest step (about 650 MB/s on one core, see `hashing/md5.rs`) and
//! cannot be split across cores, so the pass is built around it. When MD5 is
//! wanted with anything else (SHA-256 or a copy), it gets a thread of its
//! own, and the calling thread does all the rest: it reads each chunk into a
//! pooled buffer, feeds it to SHA-256, writes it to the copy, and hands the
//! buffer to the MD5 thread, which gives it back once hashed. Two busy
//! threads and no more: on a two-core machine any other busy thread takes its
//! time from MD5 (issue 7, item 23: four threads, spinning in `sched_yield`
//! while they waited for each other, made an import twice as slow as
//! `md5sum`). Neither thread spins: each sleeps on a condition variable and
//! is woken only when it waits, the reader only once half the pool is free
//! again, so that it reads several chunks per wake-up while the MD5 thread
//! always has work queued.
//!
//! Otherwise (SHA-256 alone, or MD5 alone without a copy) one thread reads
//! and hashes each chunk while it is in the cache.
//!
//! The copy starts the destination's write-back as it goes, from a third
//! thread that mostly sleeps in the disk's queue, so that the disk writes
//! while the hashing goes on and the final fsync has little left to do. Holes in the source (SEEK_HOLE) are
//! hashed as zeros and stay holes in the copy. Memory is bounded by
//! [`POOL_BUFFERS`] x [`CHUNK`] whatever the image's size.

mod hasher;
mod md5;
mod sha256;

pub use self::hasher::{Hasher, LANES};

/// MD5 over bytes that arrive a piece at a time (an upload), with this
/// crate's fast implementation (see `hashing/md5.rs`).
#[derive(Clone)]
pub struct StreamMd5(Md5);

impl StreamMd5 {
    pub fn new() -> StreamMd5 {
        StreamMd5(Md5::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finalize(self) -> [u8; 16] {
        self.0.finalize()
    }
}

impl Default for StreamMd5 {
    fn default() -> StreamMd5 {
        StreamMd5::new()
    }
}

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};
use vmrepo_format::IoBuf;

use self::md5::Md5;
use crate::error::{Error, ErrorKind, Result};

/// Bytes read at a time.
pub const CHUNK: usize = 1 << 20;
/// Buffers in flight: the pipeline never holds more than this many chunks.
pub const POOL_BUFFERS: usize = 8;
/// Pieces queued for the MD5 thread at most (holes need no buffer, so the
/// pool alone does not bound them).
const QUEUE_MAX: usize = 2 * POOL_BUFFERS;
/// The copy starts write-back every this many bytes.
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
    let digests = if want.md5 && (want.sha256 || dst.is_some()) {
        with_md5_thread(src, dst, len, want.sha256, progress, cancel)?
    } else {
        in_one_thread(src, dst, len, want, progress, cancel)?
    };
    check_unchanged(src, len)?;
    Ok(digests)
}

/// Hashes (and copies) in the calling thread alone.
fn in_one_thread(
    src: Endpoint<'_>,
    dst: Option<Endpoint<'_>>,
    len: u64,
    want: Want,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Digests> {
    let mut md5 = want.md5.then(Md5::new);
    let mut sha = want.sha256.then(Sha256::new);
    let mut copy = dst.map(Copy::new);
    let mut feed = |bytes: &[u8]| {
        if let Some(h) = md5.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = sha.as_mut() {
            h.update(bytes);
        }
    };
    let mut buf = IoBuf::zeroed(CHUNK);
    walk(src, len, cancel, |region| {
        match region {
            Region::Hole(n) => {
                for_zeros(n, &mut feed);
                progress(n);
            }
            Region::Data(offset, n) => {
                read_exact_at(src, &mut buf[..n], offset)?;
                feed(&buf[..n]);
                if let Some(c) = copy.as_mut() {
                    c.write(&buf[..n], offset)?;
                }
                progress(n as u64);
            }
        }
        Ok(())
    })?;
    if let Some(c) = copy {
        c.finish(len)?;
    }
    Ok(Digests { md5: md5.map(Md5::finalize), sha256: sha.map(|h| h.finalize().into()), bytes: len })
}

/// Hashes MD5 in a thread of its own while the calling thread reads, feeds
/// SHA-256 (if `sha256`) and copies (with `dst`).
fn with_md5_thread(
    src: Endpoint<'_>,
    dst: Option<Endpoint<'_>>,
    len: u64,
    sha256: bool,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Digests> {
    let handoff = Handoff::new();
    std::thread::scope(|s| {
        let md5_thread = s.spawn(|| md5_pieces(&handoff));
        let fed = feed_pieces(src, dst, len, sha256, &handoff, progress, cancel);
        handoff.close(fed.is_err());
        let md5 = md5_thread.join();
        let sha256 = fed?;
        match md5 {
            Ok(Some(md5)) => Ok(Digests { md5: Some(md5), sha256, bytes: len }),
            _ => Err(Error::new(ErrorKind::Io, "the MD5 thread failed")),
        }
    })
}

/// The reading side of [`with_md5_thread`]: returns the SHA-256 if wanted.
fn feed_pieces(
    src: Endpoint<'_>,
    dst: Option<Endpoint<'_>>,
    len: u64,
    sha256: bool,
    handoff: &Handoff,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Option<[u8; 32]>> {
    let mut sha = sha256.then(Sha256::new);
    let mut copy = dst.map(Copy::new);
    walk(src, len, cancel, |region| {
        match region {
            Region::Hole(n) => {
                if let Some(h) = sha.as_mut() {
                    for_zeros(n, &mut |z| h.update(z));
                }
                handoff.send(Piece::Zeros(n));
                progress(n);
            }
            Region::Data(offset, n) => {
                let Some(mut buf) = handoff.free_buffer() else {
                    return Err(Error::new(ErrorKind::Io, "the MD5 thread stopped"));
                };
                read_exact_at(src, &mut buf[..n], offset)?;
                if let Some(h) = sha.as_mut() {
                    h.update(&buf[..n]);
                }
                if let Some(c) = copy.as_mut() {
                    c.write(&buf[..n], offset)?;
                }
                handoff.send(Piece::Data(buf, n));
                progress(n as u64);
            }
        }
        Ok(())
    })?;
    if let Some(c) = copy {
        // While the MD5 thread finishes the chunks still queued.
        c.finish(len)?;
    }
    Ok(sha.map(|h| h.finalize().into()))
}

/// The MD5 thread: hashes the pieces in order; `None` if the pass was abandoned.
fn md5_pieces(handoff: &Handoff) -> Option<[u8; 16]> {
    // However this thread ends, even by a panic, the reader stops waiting for it.
    let _ends = Abandon(handoff);
    let mut md5 = Md5::new();
    let mut done = None;
    loop {
        match handoff.next(done.take())? {
            Next::Piece(Piece::Data(buf, n)) => {
                md5.update(&buf[..n]);
                done = Some(buf);
            }
            Next::Piece(Piece::Zeros(n)) => for_zeros(n, &mut |z| md5.update(z)),
            Next::End => return Some(md5.finalize()),
        }
    }
}

/// Marks the handoff abandoned when dropped, waking a waiting reader.
struct Abandon<'a>(&'a Handoff);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.abandoned = true;
        if st.reader_waits != ReaderWaits::No {
            self.0.freed.notify_one();
        }
    }
}

/// A stretch handed to the MD5 thread.
enum Piece {
    /// The first `usize` bytes of a pooled buffer.
    Data(IoBuf, usize),
    /// A hole of this many bytes.
    Zeros(u64),
}

/// What the MD5 thread gets next.
enum Next {
    Piece(Piece),
    /// Every piece has been handed over.
    End,
}

/// What the reading thread waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReaderWaits {
    No,
    /// Half the pool free again.
    Buffers,
    /// The queue half empty.
    Room,
}

/// Chunks on their way from the reading thread to the MD5 thread, and their
/// buffers on the way back.
struct Handoff {
    state: Mutex<HandoffState>,
    /// Where the MD5 thread waits for a piece.
    queued: Condvar,
    /// Where the reading thread waits for buffers or room in the queue.
    freed: Condvar,
}

struct HandoffState {
    queue: VecDeque<Piece>,
    free: Vec<IoBuf>,
    /// Buffers allocated so far: as needed, up to [`POOL_BUFFERS`].
    allocated: usize,
    /// No more pieces will come.
    closed: bool,
    /// The pass failed: the MD5 thread stops without finishing the queue.
    abandoned: bool,
    md5_waits: bool,
    reader_waits: ReaderWaits,
}

impl Handoff {
    fn new() -> Handoff {
        Handoff {
            state: Mutex::new(HandoffState {
                queue: VecDeque::with_capacity(QUEUE_MAX),
                free: Vec::with_capacity(POOL_BUFFERS),
                allocated: 0,
                closed: false,
                abandoned: false,
                md5_waits: false,
                reader_waits: ReaderWaits::No,
            }),
            queued: Condvar::new(),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HandoffState> {
        // Neither thread panics while holding the lock; if one did, the state
        // is still consistent (each change is one push or pop).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer for the next chunk, waiting until half the pool is free
    /// when it is all in use; `None` if the MD5 thread is gone.
    fn free_buffer(&self) -> Option<IoBuf> {
        let mut st = self.lock();
        loop {
            if st.abandoned {
                return None;
            }
            if let Some(buf) = st.free.pop() {
                return Some(buf);
            }
            if st.allocated < POOL_BUFFERS {
                st.allocated += 1;
                return Some(IoBuf::zeroed(CHUNK));
            }
            st.reader_waits = ReaderWaits::Buffers;
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.reader_waits = ReaderWaits::No;
        }
    }

    /// Queues a piece for the MD5 thread (dropped if the thread is gone: the
    /// next [`Handoff::free_buffer`] says so).
    fn send(&self, piece: Piece) {
        let mut st = self.lock();
        while st.queue.len() >= QUEUE_MAX && !st.abandoned {
            st.reader_waits = ReaderWaits::Room;
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.reader_waits = ReaderWaits::No;
        }
        if st.abandoned {
            return;
        }
        st.queue.push_back(piece);
        if st.md5_waits {
            self.queued.notify_one();
        }
    }

    /// Ends the pass: the MD5 thread finishes the queue, or with `abandon`
    /// stops at once.
    fn close(&self, abandon: bool) {
        let mut st = self.lock();
        st.closed = true;
        st.abandoned |= abandon;
        if st.md5_waits {
            self.queued.notify_one();
        }
    }

    /// For the MD5 thread: gives back the buffer of the piece it hashed, and
    /// takes the next piece, waiting for one; `None` when abandoned.
    fn next(&self, done: Option<IoBuf>) -> Option<Next> {
        let mut st = self.lock();
        if let Some(buf) = done {
            st.free.push(buf);
        }
        let wake = match st.reader_waits {
            ReaderWaits::No => false,
            ReaderWaits::Buffers => st.free.len() >= POOL_BUFFERS / 2,
            ReaderWaits::Room => st.queue.len() <= QUEUE_MAX / 2,
        };
        if wake {
            self.freed.notify_one();
        }
        loop {
            if st.abandoned {
                return None;
            }
            if let Some(piece) = st.queue.pop_front() {
                return Some(Next::Piece(piece));
            }
            if st.closed {
                return Some(Next::End);
            }
            // The queue is empty: the reader, if it waits, waits for nothing held here.
            if st.reader_waits != ReaderWaits::No {
                self.freed.notify_one();
            }
            st.md5_waits = true;
            st = self.queued.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.md5_waits = false;
        }
    }
}

/// The destination of a copy, with its write-back started as it goes.
struct Copy<'a> {
    dst: Endpoint<'a>,
    /// Where the range not yet handed to write-back starts.
    writeback_from: u64,
    /// The thread that starts write-back: on a busy disk `sync_file_range`
    /// blocks for seconds, which must not stop the hashing (it mostly
    /// sleeps, so it takes no time from MD5). `None` if it could not be
    /// started: then the copy starts write-back itself.
    writeback: Option<Writeback>,
}

/// The write-back thread of a [`Copy`].
struct Writeback {
    /// Ranges (offset, length) to start writing back.
    ranges: mpsc::Sender<(u64, u64)>,
    thread: std::thread::JoinHandle<()>,
}

impl<'a> Copy<'a> {
    fn new(dst: Endpoint<'a>) -> Copy<'a> {
        let writeback = dst.file.try_clone().ok().and_then(|file| {
            let (ranges, to_start) = mpsc::channel::<(u64, u64)>();
            let thread = std::thread::Builder::new().name("vmrepo-writeback".into()).spawn(move || {
                while let Ok((mut offset, mut len)) = to_start.recv() {
                    // Ranges that queued while the last call blocked go in one call.
                    while let Ok((o, l)) = to_start.try_recv() {
                        if o == offset + len {
                            len += l;
                        } else {
                            start_writeback(&file, offset, len);
                            (offset, len) = (o, l);
                        }
                    }
                    start_writeback(&file, offset, len);
                }
            });
            thread.ok().map(|thread| Writeback { ranges, thread })
        });
        Copy { dst, writeback_from: 0, writeback }
    }

    fn write(&mut self, bytes: &[u8], offset: u64) -> Result<()> {
        self.dst.file.write_all_at(bytes, offset).map_err(|e| Error::io("write", self.dst.path, e))?;
        let written_to = offset + bytes.len() as u64;
        if written_to.saturating_sub(self.writeback_from) >= WRITEBACK_STEP {
            let range = (self.writeback_from, written_to - self.writeback_from);
            // A failed send means the thread is gone: start write-back here.
            if self.writeback.as_ref().is_none_or(|w| w.ranges.send(range).is_err()) {
                start_writeback(self.dst.file, range.0, range.1);
            }
            self.writeback_from = written_to;
        }
        Ok(())
    }

    /// Gives the copy the source's length (a final hole) and makes it durable.
    fn finish(self, len: u64) -> Result<()> {
        self.dst.file.set_len(len).map_err(|e| Error::io("set the length of", self.dst.path, e))?;
        let synced = self.dst.file.sync_all().map_err(|e| Error::io("sync", self.dst.path, e));
        if let Some(w) = self.writeback {
            // Write-back is advisory: the thread's end changes nothing but its exit.
            drop(w.ranges);
            let _ = w.thread.join();
        }
        synced
    }
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

/// Opens a file for reading, refusing a symbolic link in the last component
/// and anything but a regular file (a FIFO is refused, never waited on).
///
/// # Errors
/// As [`crate::fsutil::open_regular`].
pub fn open_nofollow(path: &Path) -> Result<File> {
    crate::fsutil::open_regular(path, false)
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
    let mut walker = Walker::new(len, CHUNK);
    while let Some(region) = walker.next(src.file, cancel)? {
        visit(region)?;
    }
    Ok(())
}

/// Where a walk from start to end of a file is.
struct Walker {
    pos: u64,
    len: u64,
    /// The longest data region handed out.
    chunk: usize,
    /// The end of the region `pos` is in (`pos` itself when not yet looked up).
    end: u64,
    /// Whether that region is data (else a hole).
    data: bool,
}

impl Walker {
    fn new(len: u64, chunk: usize) -> Walker {
        Walker { pos: 0, len, chunk, end: 0, data: false }
    }

    /// The next region, `None` at the end.
    fn next(&mut self, file: &File, cancel: &AtomicBool) -> Result<Option<Region>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        // Hashing a large hole takes time too: check for a stop at every piece.
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::interrupted());
        }
        if self.pos >= self.end {
            let data_start = next_data(file, self.pos, self.len);
            self.data = data_start <= self.pos;
            self.end = if self.data { next_hole(file, self.pos, self.len) } else { data_start };
        }
        // end > pos here: next_data and next_hole only return positions past it.
        let left = self.end - self.pos;
        let region = if self.data {
            // The chunk fits in u64, and the minimum in usize.
            Region::Data(self.pos, usize::try_from(left.min(self.chunk as u64)).unwrap_or(self.chunk))
        } else {
            Region::Hole(left.min(HOLE_STEP))
        };
        self.pos += match region {
            Region::Data(_, n) => n as u64,
            Region::Hole(n) => n,
        };
        Ok(Some(region))
    }
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

/// Calls `f` on slices of zeros adding up to `n` bytes (a hole's content).
fn for_zeros(mut n: u64, f: &mut dyn FnMut(&[u8])) {
    while n > 0 {
        let step = n.min(ZEROS.len() as u64);
        // step <= ZEROS.len(), a usize.
        f(&ZEROS[..usize::try_from(step).unwrap_or(ZEROS.len())]);
        n -= step;
    }
}

/// Asks the kernel to start writing a range back now rather than at the final
/// fsync, so that disk writes overlap hashing. Advisory: failures are ignored.
#[cfg(target_os = "linux")]
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor
    // is valid for the duration of the call because `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicU64;

    /// The first field of `tool FILE` (md5sum, sha256sum): the oracle.
    fn tool_digest(tool: &str, path: &Path) -> String {
        let out = std::process::Command::new(tool).arg(path).output().unwrap();
        assert!(out.status.success(), "{tool} failed");
        String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn have_tools() -> bool {
        vmrepo_testkit::have("md5sum", "coreutils") && vmrepo_testkit::have("sha256sum", "coreutils")
    }

    /// A source of `len` bytes: the pattern of `seed` where `data(offset)` says, holes elsewhere.
    fn source(path: &Path, len: u64, data: impl Fn(u64) -> bool, seed: u64) {
        let f = File::create(path).unwrap();
        f.set_len(len).unwrap();
        let mut x = seed | 1;
        let mut chunk = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len() as u64) as usize;
            if data(at) {
                for b in chunk[..n].iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                f.write_all_at(&chunk[..n], at).unwrap();
            }
            at += n as u64;
        }
    }

    fn copy(src_path: &Path, dst_path: &Path, want: Want, cancel: &AtomicBool) -> Result<Digests> {
        let src = File::open(src_path).unwrap();
        let dst = File::create(dst_path).unwrap();
        hash_file(
            Endpoint { file: &src, path: src_path },
            Some(Endpoint { file: &dst, path: dst_path }),
            want,
            &|_| {},
            cancel,
        )
    }

    /// Every way through the pass (MD5 in its own thread or not, with and
    /// without a copy) against md5sum and sha256sum, on a file longer than
    /// the pool holds, whose last chunk is short.
    #[test]
    fn every_path_agrees_with_md5sum_and_sha256sum() {
        if !have_tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let len = (3 * POOL_BUFFERS * CHUNK + 12_345) as u64;
        source(&src_path, len, |_| true, 7);
        let (md5, sha) = (tool_digest("md5sum", &src_path), tool_digest("sha256sum", &src_path));
        for (md5_wanted, sha_wanted) in [(true, true), (true, false), (false, true)] {
            let want = Want { md5: md5_wanted, sha256: sha_wanted };
            let seen = AtomicU64::new(0);
            let d = hash_path(
                &src_path,
                want,
                &|n| {
                    seen.fetch_add(n, Ordering::Relaxed);
                },
                &AtomicBool::new(false),
            )
            .unwrap();
            assert_eq!(d.md5.map(|d| hex(&d)), md5_wanted.then(|| md5.clone()), "{want:?}");
            assert_eq!(d.sha256.map(|d| hex(&d)), sha_wanted.then(|| sha.clone()), "{want:?}");
            assert_eq!((d.bytes, seen.load(Ordering::Relaxed)), (len, len));
            let dst_path = dir.path().join("dst");
            let _ = std::fs::remove_file(&dst_path);
            let d = copy(&src_path, &dst_path, want, &AtomicBool::new(false)).unwrap();
            assert_eq!(d.md5.map(|d| hex(&d)), md5_wanted.then(|| md5.clone()), "copy, {want:?}");
            assert_eq!(d.sha256.map(|d| hex(&d)), sha_wanted.then(|| sha.clone()), "copy, {want:?}");
            assert_eq!(tool_digest("sha256sum", &dst_path), sha, "the copy's bytes, {want:?}");
        }
    }

    /// Holes hash as zeros and stay holes in the copy.
    #[test]
    fn holes_hash_as_zeros_and_stay_holes() {
        if !have_tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("sparse");
        // 200 MiB: data in the first and the 100th MiB, and the last 3 bytes.
        let len = 200u64 << 20;
        source(&src_path, len, |at| at == 0 || at == 100 << 20, 3);
        File::options().write(true).open(&src_path).unwrap().write_all_at(b"end", len - 3).unwrap();
        let dst_path = dir.path().join("copy");
        let d =
            copy(&src_path, &dst_path, Want { md5: true, sha256: true }, &AtomicBool::new(false)).unwrap();
        assert_eq!(hex(&d.md5.unwrap()), tool_digest("md5sum", &src_path));
        assert_eq!(hex(&d.sha256.unwrap()), tool_digest("sha256sum", &src_path));
        assert_eq!(tool_digest("md5sum", &dst_path), tool_digest("md5sum", &src_path));
        let md = std::fs::metadata(&dst_path).unwrap();
        assert_eq!(md.len(), len);
        assert!(md.blocks() * 512 < 8 << 20, "copy is not sparse: {} blocks", md.blocks());
    }

    /// Many small pieces, more than the queue holds, data and holes mixed:
    /// the two threads wait for each other in every way and the MD5 comes
    /// out in order.
    #[test]
    fn handoff_keeps_order_through_every_wait() {
        if !vmrepo_testkit::have("md5sum", "coreutils") {
            return;
        }
        let mut expected = Vec::new();
        let handoff = Handoff::new();
        let md5 = std::thread::scope(|s| {
            let t = s.spawn(|| md5_pieces(&handoff));
            for i in 0..2000u32 {
                if i % 3 == 0 {
                    let mut buf = handoff.free_buffer().unwrap();
                    let n = 1 + (i as usize * 7919) % 300;
                    for (j, b) in buf[..n].iter_mut().enumerate() {
                        *b = (i as usize + j) as u8;
                    }
                    expected.extend_from_slice(&buf[..n]);
                    handoff.send(Piece::Data(buf, n));
                } else {
                    let n = u64::from(i % 5);
                    expected.resize(expected.len() + n as usize, 0);
                    handoff.send(Piece::Zeros(n));
                }
            }
            handoff.close(false);
            t.join().unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("expected");
        std::fs::write(&p, &expected).unwrap();
        assert_eq!(hex(&md5.unwrap()), tool_digest("md5sum", &p));
    }

    #[test]
    fn cancel_stops_with_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 4 * CHUNK]).unwrap();
        for want in [Want { md5: true, sha256: false }, Want { md5: true, sha256: true }] {
            let err = hash_path(&p, want, &|_| {}, &AtomicBool::new(true)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Interrupted);
        }
        // Stopped half-way through a copy, with the MD5 thread busy.
        let big = dir.path().join("big");
        source(&big, (4 * POOL_BUFFERS * CHUNK) as u64, |_| true, 5);
        let cancel = AtomicBool::new(false);
        let src = File::open(&big).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::create(&dst_path).unwrap();
        let read = AtomicU64::new(0);
        let err = hash_file(
            Endpoint { file: &src, path: &big },
            Some(Endpoint { file: &dst, path: &dst_path }),
            Want { md5: true, sha256: true },
            &|n| {
                if read.fetch_add(n, Ordering::Relaxed) >= (2 * POOL_BUFFERS * CHUNK) as u64 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
        assert!(read.load(Ordering::Relaxed) < (4 * POOL_BUFFERS * CHUNK) as u64);
    }

    /// Files of every shape hashed by a [`Hasher`] from more threads than it
    /// has lanes, so that its threads group them in every way (data and holes side
    /// by side, one file ending before the other, a file that cannot be
    /// opened), against md5sum and sha256sum.
    #[test]
    fn hasher_groups_agree_with_md5sum_and_sha256sum() {
        if !have_tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, (len, sparse)) in
            [(0u64, false), (1, false), (4097, false), (5 << 20, false), (9 << 20, true), (3 << 20, false)]
                .into_iter()
                .cycle()
                .take(12)
                .enumerate()
        {
            let p = dir.path().join(format!("f{i}"));
            let len = len + i as u64 * 1000;
            source(&p, len, |at| !sparse || at % (3 << 20) == 0, i as u64 + 1);
            files.push(p);
        }
        std::os::unix::fs::symlink(&files[3], dir.path().join("link")).unwrap();
        let seen = AtomicU64::new(0);
        let progress = |n: u64| {
            seen.fetch_add(n, Ordering::Relaxed);
        };
        let cancel = AtomicBool::new(false);
        let results: Vec<(PathBuf, Want, Result<Digests>)> = Hasher::scope(2, &progress, &cancel, |hasher| {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let out = Mutex::new(Vec::new());
            let mut jobs: Vec<(PathBuf, Want)> = files
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), Want { md5: i % 4 == 1, sha256: i % 4 != 3 || i == 3 }))
                .collect();
            jobs.push((dir.path().join("link"), Want { md5: false, sha256: true }));
            jobs.push((dir.path().join("missing"), Want { md5: false, sha256: true }));
            std::thread::scope(|s| {
                for _ in 0..2 * LANES + 1 {
                    s.spawn(|| {
                        while let Some((p, want)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let r = hasher.hash_path(p, *want);
                            out.lock().unwrap().push((p.clone(), *want, r));
                        }
                    });
                }
            });
            out.into_inner().unwrap()
        });
        assert_eq!(results.len(), files.len() + 2);
        let mut total = 0;
        for (p, want, r) in results {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            match name.as_str() {
                "link" => assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput),
                "missing" => assert!(r.unwrap_err().to_string().contains("missing")),
                _ => {
                    let d = r.unwrap();
                    total += d.bytes;
                    assert_eq!(d.bytes, std::fs::metadata(&p).unwrap().len());
                    assert_eq!(d.md5.map(|d| hex(&d)), want.md5.then(|| tool_digest("md5sum", &p)), "{name}");
                    assert_eq!(
                        d.sha256.map(|d| hex(&d)),
                        want.sha256.then(|| tool_digest("sha256sum", &p)),
                        "{name}"
                    );
                }
            }
        }
        assert_eq!(seen.load(Ordering::Relaxed), total);
    }

    #[test]
    fn hasher_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        source(&p, (4 * CHUNK) as u64, |_| true, 1);
        let cancel = AtomicBool::new(true);
        let err = Hasher::scope(2, &|_| {}, &cancel, |h| h.hash_path(&p, Want { md5: false, sha256: true }))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Interrupted);
    }

    /// A copy that cannot be written fails with the write's error, and the
    /// MD5 thread does not keep the pass waiting.
    #[test]
    fn a_failed_write_ends_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        source(&src_path, (2 * POOL_BUFFERS * CHUNK) as u64, |_| true, 9);
        let dst_path = dir.path().join("dst");
        std::fs::write(&dst_path, b"").unwrap();
        let src = File::open(&src_path).unwrap();
        // Opened for reading only: every write fails (EBADF).
        let dst = File::open(&dst_path).unwrap();
        let err = hash_file(
            Endpoint { file: &src, path: &src_path },
            Some(Endpoint { file: &dst, path: &dst_path }),
            Want { md5: true, sha256: true },
            &|_| {},
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("dst"), "{err}");
    }
}
