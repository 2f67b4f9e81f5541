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
    for_each_data(disk, cancel, |pos, bytes| {
        // All-zero data is left as a hole too, as qemu-img convert does.
        let mut at = 0;
        for piece in bytes.chunks(64 * 1024) {
            if !is_zero(piece) {
                out.write_all_at(piece, pos + at as u64)
                    .map_err(|e| Error::io("cannot write the output", e))?;
            }
            at += piece.len();
        }
        progress(pos + bytes.len() as u64);
        Ok(())
    })?;
    out.set_len(disk.size()).map_err(|e| Error::io("cannot set the output's length", e))
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
