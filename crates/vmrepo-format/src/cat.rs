//! Writing the guest's bytes out as a raw disk, as `qemu-img convert -O raw` does.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use crate::disk::Disk;
use crate::error::{Error, ErrorKind, Result};

/// Bytes read from the disk and written at a time: a buffer this size stays in
/// a core's cache between the read that fills it and the write that empties
/// it (with 4 MiB the copies took half again as long).
const CHUNK: usize = 1 << 20;
/// Pieces queued for the workers of [`to_file`].
const QUEUED: usize = 4;

fn interrupted() -> Error {
    Error::new(ErrorKind::Io, "interrupted")
}

/// Whether a buffer is all zeros, a word at a time.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(16);
    chunks.by_ref().all(|c| c == [0u8; 16]) && chunks.remainder().iter().all(|&b| b == 0)
}

/// Walks the disk in pieces of stored guest data: `f(offset, length)` for
/// every piece of at most [`CHUNK`] bytes, skipping what the map says reads as
/// zeros.
fn for_each_piece(
    disk: &dyn Disk,
    cancel: &AtomicBool,
    mut f: impl FnMut(u64, usize) -> Result<()>,
) -> Result<()> {
    let size = disk.size();
    let mut pos = 0u64;
    while pos < size {
        if cancel.load(Ordering::Relaxed) {
            return Err(interrupted());
        }
        let e = disk.status(pos, size - pos)?;
        let end = pos.saturating_add(e.length.max(1)).min(size);
        if e.zero {
            pos = end;
            continue;
        }
        while pos < end {
            if cancel.load(Ordering::Relaxed) {
                return Err(interrupted());
            }
            let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            f(pos, n)?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// Writes the guest's bytes to `out`, leaving holes where the guest reads
/// zeros; `out` should be empty. `progress` receives guest offsets as they are
/// handed to the workers.
///
/// # Errors
/// Reading the image or writing `out` fails, or `cancel` is set.
pub fn to_file(disk: &dyn Disk, out: &File, progress: &dyn Fn(u64), cancel: &AtomicBool) -> Result<()> {
    // The whole length first, as qemu-img does: the writes then land inside
    // the file instead of growing it one by one.
    out.set_len(disk.size()).map_err(|e| Error::io("cannot set the output's length", e))?;
    // Reading and writing each cost a copy through the kernel. Two workers
    // each read a piece into a buffer of their own and write it, so that one
    // worker's read overlaps the other's write (writes to one file take turns
    // anyway) while each buffer stays in its core's cache; a buffer handed
    // from a reading thread to a writing one crosses cores, and cost more.
    // This thread walks the map and hands out the pieces.
    let (to_workers, pieces) = mpsc::sync_channel::<(u64, usize)>(QUEUED);
    // Dropped when both workers are gone, so that handing out fails then.
    let pieces = Arc::new(Mutex::new(pieces));
    let failed = AtomicBool::new(false);
    let stopped = || Error::new(ErrorKind::Io, "the output writer stopped");
    std::thread::scope(|s| {
        let worker = |pieces: Arc<Mutex<mpsc::Receiver<(u64, usize)>>>| {
            let failed = &failed;
            move || -> Result<()> {
                let mut buf = crate::IoBuf::zeroed(CHUNK);
                loop {
                    let next = pieces.lock().map_err(|_| stopped())?.recv();
                    let Ok((pos, n)) = next else { return Ok(()) };
                    let done =
                        disk.read_at(&mut buf[..n], pos).and_then(|()| write_sparse(out, pos, &buf[..n]));
                    if done.is_err() {
                        failed.store(true, Ordering::Relaxed);
                        return done;
                    }
                }
            }
        };
        let workers = [s.spawn(worker(Arc::clone(&pieces))), s.spawn(worker(pieces))];
        let handed = for_each_piece(disk, cancel, |pos, n| {
            if failed.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            to_workers.send((pos, n)).map_err(|_| stopped())?;
            progress(pos + n as u64);
            Ok(())
        });
        drop(to_workers);
        let mut worked = Ok(());
        for w in workers {
            let r = w.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the output writer failed")));
            worked = worked.and(r);
        }
        // A read or write error explains why handing out stopped.
        worked.and(handed)
    })
}

/// Zero-detection granularity: all-zero stretches this large stay holes.
const SPARSE: usize = 64 * 1024;

/// Writes `bytes` at `pos`, leaving all-zero stretches as holes (as qemu-img
/// convert does) and writing the stretches between with one call each.
fn write_sparse(out: &File, pos: u64, bytes: &[u8]) -> Result<()> {
    let flush = |from: usize, to: usize| {
        out.write_all_at(&bytes[from..to], pos + from as u64)
            .map_err(|e| Error::io("cannot write the output", e))
    };
    let mut run: Option<usize> = None;
    for (i, piece) in bytes.chunks(SPARSE).enumerate() {
        let at = i * SPARSE;
        match (is_zero(piece), run) {
            (false, None) => run = Some(at),
            (true, Some(from)) => {
                flush(from, at)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(from) = run {
        flush(from, bytes.len())?;
    }
    Ok(())
}

/// Writes the guest's bytes to a stream (a pipe), zeros included.
///
/// # Errors
/// As [`to_file`].
pub fn to_stream(disk: &dyn Disk, out: &mut dyn Write, cancel: &AtomicBool) -> Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut written = 0u64;
    let zeros_to = |out: &mut dyn Write, to: u64, written: &mut u64| -> Result<()> {
        while *written < to {
            let n = usize::try_from((to - *written).min(ZEROS.len() as u64)).unwrap_or(ZEROS.len());
            out.write_all(&ZEROS[..n]).map_err(|e| Error::io("cannot write the output", e))?;
            *written += n as u64;
        }
        Ok(())
    };
    let mut buf = crate::IoBuf::zeroed(CHUNK);
    for_each_piece(disk, cancel, |pos, n| {
        disk.read_at(&mut buf[..n], pos)?;
        zeros_to(out, pos, &mut written)?;
        out.write_all(&buf[..n]).map_err(|e| Error::io("cannot write the output", e))?;
        written += n as u64;
        Ok(())
    })?;
    zeros_to(out, disk.size(), &mut written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn to_file_copies_every_byte_and_keeps_zeros_as_holes() {
        // 40 chunks of 1 MiB: more than the pipeline holds, so buffers go round.
        let mut data = vec![0u8; 40 << 20];
        for (i, b) in data.iter_mut().enumerate() {
            if (i >> 20) % 3 != 1 {
                *b = (i % 251) as u8;
            }
        }
        let src = Arc::new(crate::MemSource::new(data.clone(), "mem"));
        let disk = crate::raw::RawDisk::new(src, 0, data.len() as u64, false);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let f = File::create(&path).unwrap();
        to_file(&disk, &f, &|_| {}, &AtomicBool::new(false)).unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < (28 << 20) + (1 << 20), "zero stretches were written: {allocated}");
        // Cancelled: an error, not a hang.
        let f = File::create(dir.path().join("out2")).unwrap();
        assert!(to_file(&disk, &f, &|_| {}, &AtomicBool::new(true)).is_err());
    }

    /// Data everywhere, readable below `fails_from` only.
    struct Failing {
        size: u64,
        fails_from: u64,
    }

    impl Disk for Failing {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            if offset + buf.len() as u64 > self.fails_from {
                return Err(Error::new(ErrorKind::Io, format!("cannot read at {offset}")));
            }
            buf.fill(0x5a);
            Ok(())
        }
        fn status(&self, offset: u64, max_len: u64) -> Result<crate::MapExtent> {
            Ok(crate::MapExtent::data(offset, max_len, Some(offset)))
        }
    }

    /// Runs `to_file` on another thread, so that a worker or a hand-out that
    /// waits forever fails the test instead of hanging it.
    fn to_file_bounded(disk: Failing) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let f = File::create(dir.path().join("out")).unwrap();
            let _ = tx.send(to_file(&disk, &f, &|_| {}, &AtomicBool::new(false)));
        });
        rx.recv_timeout(std::time::Duration::from_secs(60)).expect("to_file hung")
    }

    #[test]
    fn a_read_error_ends_the_copy_with_that_error() {
        // Every read fails: both workers stop, and handing out pieces ends.
        let e = to_file_bounded(Failing { size: 64 << 20, fails_from: 0 }).unwrap_err();
        assert!(e.to_string().contains("cannot read at"), "{e}");
        // A read fails half-way: the same, with more pieces queued than workers.
        let e = to_file_bounded(Failing { size: 64 << 20, fails_from: 20 << 20 }).unwrap_err();
        assert!(e.to_string().contains("cannot read at"), "{e}");
        to_file_bounded(Failing { size: 8 << 20, fails_from: u64::MAX }).unwrap();
    }
}
