//! Writing the guest's bytes out as a raw disk, as `qemu-img convert -O raw` does.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::disk::Disk;
use crate::error::{Error, ErrorKind, Result};

/// Bytes read from the disk at a time.
const CHUNK: usize = 4 << 20;

fn interrupted() -> Error {
    Error::new(ErrorKind::Io, "interrupted")
}

/// Whether a buffer is all zeros, a word at a time.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(16);
    chunks.by_ref().all(|c| c == [0u8; 16]) && chunks.remainder().iter().all(|&b| b == 0)
}

/// Walks the disk in pieces of guest data: `f(offset, bytes)` for every piece
/// that is stored, skipping what the map says reads as zeros.
fn for_each_data(
    disk: &dyn Disk,
    cancel: &AtomicBool,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let size = disk.size();
    let mut buf = vec![0u8; CHUNK];
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
            disk.read_at(&mut buf[..n], pos)?;
            f(pos, &buf[..n])?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// Writes the guest's bytes to `out`, leaving holes where the guest reads
/// zeros; `out` should be empty. `progress` receives guest offsets as they are done.
///
/// # Errors
/// Reading the image or writing `out` fails, or `cancel` is set.
pub fn to_file(disk: &dyn Disk, out: &File, progress: &dyn Fn(u64), cancel: &AtomicBool) -> Result<()> {
    // Reading and writing each cost a copy through the kernel: a writer
    // thread does the writes while this one reads, as qemu-img's I/O threads do.
    let (to_writer, from_reader) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(IN_FLIGHT);
    let (to_reader, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<()> {
            for (pos, bytes) in from_reader {
                write_sparse(out, pos, &bytes)?;
                // Back to the reader for reuse; when it has enough (or is gone), dropped.
                let _ = to_reader.try_send(bytes);
            }
            Ok(())
        });
        let read = for_each_data(disk, cancel, |pos, bytes| {
            let mut buf = spare.try_recv().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(bytes);
            to_writer.send((pos, buf)).map_err(|_| Error::new(ErrorKind::Io, "the output writer stopped"))?;
            progress(pos + bytes.len() as u64);
            Ok(())
        });
        drop(to_writer);
        let written =
            writer.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the output writer failed")));
        // A write error explains a reader that stopped.
        written.and(read)
    })?;
    out.set_len(disk.size()).map_err(|e| Error::io("cannot set the output's length", e))
}

/// Chunks queued between the reader and the writer.
const IN_FLIGHT: usize = 4;
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
    for_each_data(disk, cancel, |pos, bytes| {
        zeros_to(out, pos, &mut written)?;
        out.write_all(bytes).map_err(|e| Error::io("cannot write the output", e))?;
        written += bytes.len() as u64;
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
}
