//! The VHD writer: dynamic and fixed, after Microsoft's Virtual Hard Disk
//! Image Format Specification (the footer, the dynamic disk header, the
//! block allocation table) and what QEMU's `block/vpc.c` reads.
//!
//! # The size
//! The virtual size is rounded up to a MiB, for both forms: Azure takes only
//! a fixed VHD whose size is a multiple of 1 MiB, and the rounding costs a
//! dynamic disk nothing. The tail added reads as zeros. `qemu-img convert -O
//! vpc` rounds differently: up to the next size its CHS geometry can say,
//! unless `-o force_size=on` (then it keeps the size and writes the creator
//! "qem2" so that QEMU reads the footer's size).
//!
//! # The geometry
//! QEMU takes a VHD's size from the CHS geometry, not from the footer's
//! current size, unless the creator is one of the tools it knows (our reader's
//! `SIZE_FROM_FOOTER`) or the geometry is the largest (65535 × 16 × 255).
//! The geometry is computed with the specification's algorithm; when
//! cylinders × heads × sectors × 512 is not exactly the size (nearly always
//! for a size rounded to a MiB), the largest geometry is written instead, so
//! that QEMU reads the footer's size, as VirtualBox and Hyper-V always do,
//! and every one of them sees the same, exact, size.
//!
//! # The layout
//! Fixed: the guest's bytes (the zero stretches left as holes, the length set
//! with `set_len`), then the footer. Dynamic: a copy of the footer at 0, the
//! dynamic disk header at 512, the BAT after it, then the blocks in guest
//! order, each a sector bitmap (all ones) and 2 MiB of data (its zero
//! stretches left as holes), then the footer. Each block's data starts on a
//! 4 KiB boundary of the file, so that a zero stretch of the guest is a hole
//! of the host's file system too.

use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BAT_UNUSED, DYN_COOKIE, MAX_GEOMETRY_SECTORS, MAX_SECTORS, TYPE_DYNAMIC, TYPE_FIXED, checksum};
use crate::detect::VHD_COOKIE;
use crate::disk::Disk;
use crate::error::{Error, ErrorKind, Result};
use crate::write::{WriteCtx, write_at};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
const FOOTER_SIZE: usize = 512;
const DYN_HEADER_SIZE: usize = 1024;
/// The footer's "features": bit 1 is reserved and must always be set.
const FEATURES: u32 = 2;
/// The file format version, 1.0, for the footer and the dynamic disk header.
const FORMAT_VERSION: u32 = 0x0001_0000;
/// The footer's data offset in a fixed disk: all ones (no dynamic header).
const DATA_OFFSET_NONE: u64 = u64::MAX;
/// The creator application: vmrepo's own, so that nobody takes our files
/// for another tool's (QEMU would then trust its rules for that tool).
const CREATOR_APP: [u8; 4] = *b"vmrp";
/// The creator version: 1.0 of this writer's layout.
const CREATOR_VERSION: u32 = 0x0001_0000;
/// The creator host OS. The specification defines only "Wi2k" (Windows) and
/// "Mac " (Macintosh), and nothing for other hosts; QEMU and VirtualBox
/// write "Wi2k" on every host, and so do we.
const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";
/// VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// The dynamic disk's block: 2 MiB, the size every VHD tool writes.
const BLOCK: u64 = 2 * MIB;
/// A 2 MiB block's sector bitmap: 4096 sectors, one bit each, 512 bytes.
const BITMAP_SIZE: u64 = 512;
/// The dynamic disk header's offset (right after the footer copy).
const DYN_HEADER_OFFSET: u64 = 512;
/// The BAT's offset (right after the dynamic disk header).
const BAT_OFFSET: u64 = DYN_HEADER_OFFSET + DYN_HEADER_SIZE as u64;
/// The largest size written, exclusive: QEMU refuses a VHD of 2040 GiB or more.
pub(crate) const MAX_SIZE: u64 = MAX_SECTORS * SECTOR;
/// The most BAT entries (held in memory: 4 bytes each, 4 MiB at most).
const MAX_BAT_ENTRIES: u64 = MAX_SIZE / BLOCK;
/// Block data starts on this boundary of the file (a host page).
const HOST_ALIGN: u64 = 4096;
/// The grain in which zeros are found and left as holes.
const GRAIN: usize = 4096;

/// Writes `disk` as a VHD image, fixed or dynamic. Returns the guest bytes written.
///
/// # Errors
/// The disk (rounded up to a MiB) is 2040 GiB or more, which no VHD reader
/// takes; reading the source or writing `out` fails; the write is cancelled.
pub(crate) fn write(disk: &dyn Disk, fixed: bool, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let size = vhd_size(disk.size())?;
    if fixed { write_fixed(disk, size, out, ctx) } else { write_dynamic(disk, size, out, ctx) }
}

/// The size written: `guest` rounded up to a MiB, refused from 2040 GiB.
fn vhd_size(guest: u64) -> Result<u64> {
    let size = guest.checked_next_multiple_of(MIB).filter(|&s| s < MAX_SIZE);
    size.ok_or_else(|| {
        Error::too_large(format!(
            "a disk of {guest} bytes does not fit in a VHD, which holds less than 2040 GiB (use VHDX)"
        ))
    })
}

fn write_fixed(disk: &dyn Disk, size: u64, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    // The data region is the guest's bytes as a raw disk is written: two
    // workers overlapping reads and writes, zero stretches left as holes.
    crate::cat::to_file(disk, out, ctx.progress, ctx.cancel)?;
    ctx.check_cancel()?;
    out.set_len(size + SECTOR).map_err(|e| Error::io("cannot set the output's length", e))?;
    let footer =
        Footer { size, disk_type: TYPE_FIXED, data_offset: DATA_OFFSET_NONE, uuid: image_id(disk, size)? };
    write_at(out, &footer.to_bytes(), size)?;
    // The guest bytes stored, as for a raw output: what the map says holds data.
    let mut data = 0u64;
    crate::disk::map_each(disk, 0, disk.size(), &mut |e| {
        if !e.zero {
            data = data.saturating_add(e.length);
        }
        Ok(())
    })?;
    Ok(data)
}

fn write_dynamic(disk: &dyn Disk, size: u64, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let entries = size.div_ceil(BLOCK);
    if entries > MAX_BAT_ENTRIES {
        return Err(Error::too_large(format!(
            "{entries} VHD blocks, more than the {MAX_BAT_ENTRIES} a VHD holds"
        )));
    }
    let entries_usize = usize::try_from(entries).map_err(|_| Error::too_large("the VHD's BAT"))?;
    let mut bat = vec![BAT_UNUSED; entries_usize];
    let bat_bytes = (entries * 4).next_multiple_of(SECTOR);
    let mut next = BAT_OFFSET + bat_bytes;
    let ones = [0xffu8; BITMAP_SIZE as usize];
    // A block: its bitmap, then its data on a host page boundary.
    let data = write_placed(disk, BLOCK, out, ctx, &mut |block| {
        let start = (next + BITMAP_SIZE).next_multiple_of(HOST_ALIGN);
        let bitmap_at = start - BITMAP_SIZE;
        let entry = usize::try_from(block).ok().and_then(|i| bat.get_mut(i));
        let sector = u32::try_from(bitmap_at / SECTOR).ok();
        let (Some(entry), Some(sector)) = (entry, sector) else {
            return Err(Error::too_large(format!("VHD block {block} at offset {bitmap_at}")));
        };
        *entry = sector;
        write_at(out, &ones, bitmap_at)?;
        next = start + BLOCK;
        Ok(start)
    })?;
    let bat_buf: Vec<u8> = bat.iter().flat_map(|e| e.to_be_bytes()).collect();
    write_at(out, &bat_buf, BAT_OFFSET)?;
    write_at(out, &dyn_header(u32::try_from(entries).unwrap_or(u32::MAX)), DYN_HEADER_OFFSET)?;
    let uuid = image_id(disk, size)?;
    let footer = Footer { size, disk_type: TYPE_DYNAMIC, data_offset: DYN_HEADER_OFFSET, uuid }.to_bytes();
    write_at(out, &footer, 0)?;
    write_at(out, &footer, next)?;
    Ok(data)
}

/// The dynamic disk header (1024 bytes): no parent, 2 MiB blocks, the BAT at [`BAT_OFFSET`].
fn dyn_header(max_table_entries: u32) -> [u8; DYN_HEADER_SIZE] {
    let mut h = [0u8; DYN_HEADER_SIZE];
    h[0..8].copy_from_slice(&DYN_COOKIE);
    h[8..16].copy_from_slice(&DATA_OFFSET_NONE.to_be_bytes()); // Data Offset: unused
    h[16..24].copy_from_slice(&BAT_OFFSET.to_be_bytes()); // Table Offset
    h[24..28].copy_from_slice(&FORMAT_VERSION.to_be_bytes()); // Header Version
    h[28..32].copy_from_slice(&max_table_entries.to_be_bytes()); // Max Table Entries
    h[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes()); // Block Size
    let sum = checksum(&h, 36);
    h[36..40].copy_from_slice(&sum.to_be_bytes());
    h
}

/// The hard disk footer's variable fields.
struct Footer {
    size: u64,
    disk_type: u32,
    data_offset: u64,
    uuid: [u8; 16],
}

impl Footer {
    fn to_bytes(&self) -> [u8; FOOTER_SIZE] {
        let mut f = [0u8; FOOTER_SIZE];
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let timestamp = u32::try_from(now.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX);
        let (cylinders, heads, sectors) = footer_geometry(self.size);
        f[0..8].copy_from_slice(&VHD_COOKIE); // Cookie
        f[8..12].copy_from_slice(&FEATURES.to_be_bytes()); // Features
        f[12..16].copy_from_slice(&FORMAT_VERSION.to_be_bytes()); // File Format Version
        f[16..24].copy_from_slice(&self.data_offset.to_be_bytes()); // Data Offset
        f[24..28].copy_from_slice(&timestamp.to_be_bytes()); // Time Stamp
        f[28..32].copy_from_slice(&CREATOR_APP); // Creator Application
        f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes()); // Creator Version
        f[36..40].copy_from_slice(&CREATOR_HOST_OS); // Creator Host OS
        f[40..48].copy_from_slice(&self.size.to_be_bytes()); // Original Size
        f[48..56].copy_from_slice(&self.size.to_be_bytes()); // Current Size
        f[56..58].copy_from_slice(&cylinders.to_be_bytes()); // Disk Geometry
        f[58] = heads;
        f[59] = sectors;
        f[60..64].copy_from_slice(&self.disk_type.to_be_bytes()); // Disk Type
        f[68..84].copy_from_slice(&self.uuid); // Unique Id; Saved State (84) stays 0
        let sum = checksum(&f, 64);
        f[64..68].copy_from_slice(&sum.to_be_bytes()); // Checksum
        f
    }
}

/// The CHS geometry the footer gets for `size` bytes: the specification's,
/// if it says exactly `size`, else the largest, which makes QEMU read the
/// footer's size (see the module's doc).
fn footer_geometry(size: u64) -> (u16, u8, u8) {
    let (c, h, s) = spec_geometry(size / SECTOR);
    if u64::from(c) * u64::from(h) * u64::from(s) * SECTOR == size { (c, h, s) } else { (65535, 16, 255) }
}

/// The specification's CHS algorithm (its appendix, "CHS Calculation").
fn spec_geometry(total: u64) -> (u16, u8, u8) {
    let total = total.min(MAX_GEOMETRY_SECTORS);
    let (spt, heads, cyl_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    let cylinders = cyl_times_heads / heads;
    // All three fit by construction (at most 65535, 16, 255).
    (
        u16::try_from(cylinders).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(16),
        u8::try_from(spt).unwrap_or(255),
    )
}

/// A random-ish version 4 UUID (RFC 4122 layout) for an image: the
/// process's random hash keys over the time, the process, `salt` and the
/// guest's first sector.
///
/// # Errors
/// Reading the guest's first sector fails.
pub(crate) fn image_id(disk: &dyn Disk, salt: u64) -> Result<[u8; 16]> {
    let mut first = [0u8; SECTOR as usize];
    let n = usize::try_from(disk.size().min(SECTOR)).unwrap_or(0);
    disk.read_at(&mut first[..n], 0)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let state = RandomState::new();
    let half = |i: u64| {
        let mut h = state.build_hasher();
        h.write_u64(i);
        h.write_u64(salt);
        h.write(&first);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&half(1).to_be_bytes());
    id[8..].copy_from_slice(&half(2).to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

/// Guest bytes each worker of [`write_placed`] reads at a time: 2 MiB, or
/// the block if it is smaller (VDI's 1 MiB), aligned, so that a piece never
/// straddles a block.
const PIECE: u64 = 2 * MIB;
/// Pieces queued for the workers.
const QUEUED: usize = 4;

/// The workers' turn to place blocks, in guest order.
struct Turn<'p> {
    /// The sequence number of the piece whose turn it is.
    next: u64,
    /// The last block placed and its host offset.
    placed: Option<(u64, u64)>,
    place: &'p mut (dyn FnMut(u64) -> Result<u64> + Send),
}

/// Writes the guest's data into blocks of `block` bytes (a multiple of
/// [`PIECE`], or a divisor of it of at least 1 MiB) that `place`
/// allocates: `place(index)` is called once for each block that holds a byte other than zero, in guest order, and
/// returns the host offset of the block's first byte. Zero stretches of 4
/// KiB inside a block are left as holes. Returns the guest bytes written.
///
/// Two workers each read a piece into a buffer of their own, find its zero
/// grains, then take their turn (in guest order) to have the piece's block
/// placed and write the stretches between the zeros straight from that
/// buffer, so that one worker's read overlaps the other's write while each
/// buffer stays in its core's cache (as `cat::to_file` does for raw).
///
/// # Errors
/// Reading the disk, `place` or writing `out` fails, or the write is cancelled.
pub(crate) fn write_placed(
    disk: &dyn Disk,
    block: u64,
    out: &File,
    ctx: &WriteCtx<'_>,
    place: &mut (dyn FnMut(u64) -> Result<u64> + Send),
) -> Result<u64> {
    let piece = match block {
        b if b != 0 && b.is_multiple_of(PIECE) => PIECE,
        b if b >= MIB && PIECE.is_multiple_of(b) => b,
        _ => return Err(Error::unsupported(format!("a block of {block} bytes"))),
    };
    let (to_workers, pieces) = mpsc::sync_channel::<(u64, u64, usize)>(QUEUED);
    // Dropped when both workers are gone, so that handing out fails then.
    let pieces = Arc::new(Mutex::new(pieces));
    let turn = Mutex::new(Turn { next: 0, placed: None, place });
    let turned = Condvar::new();
    let failed = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let stopped = || Error::new(ErrorKind::Io, "the output writer stopped");
    std::thread::scope(|s| {
        let worker = |pieces: Arc<Mutex<mpsc::Receiver<(u64, u64, usize)>>>| {
            let (turn, turned, failed, written) = (&turn, &turned, &failed, &written);
            move || -> Result<()> {
                let mut buf = crate::IoBuf::zeroed(piece as usize);
                let mut runs = Vec::new();
                loop {
                    let next = pieces.lock().map_err(|_| stopped())?.recv();
                    let Ok((seq, pos, n)) = next else { return Ok(()) };
                    let done = (|| {
                        disk.read_at(&mut buf[..n], pos)?;
                        nonzero_runs(&buf[..n], &mut runs);
                        let base = {
                            let mut t = turned
                                .wait_while(turn.lock().map_err(|_| stopped())?, |t| {
                                    t.next != seq && !failed.load(Ordering::Relaxed)
                                })
                                .map_err(|_| stopped())?;
                            if failed.load(Ordering::Relaxed) {
                                return Err(stopped());
                            }
                            let index = pos / block;
                            let base = match t.placed {
                                _ if runs.is_empty() => 0,
                                Some((b, host)) if b == index => host,
                                _ => {
                                    let host = (t.place)(index)?;
                                    t.placed = Some((index, host));
                                    host
                                }
                            };
                            t.next += 1;
                            base
                        };
                        turned.notify_all();
                        // Outside the turn: with the writes taking turns too
                        // (the waiting worker asleep instead of spinning on
                        // the file's lock in the kernel), a VDI took 1.42 s
                        // against 0.34 s (medians, docs/benchmarks.md).
                        for &(a, b) in &runs {
                            write_at(out, &buf[a..b], base + pos % block + a as u64)?;
                            written.fetch_add((b - a) as u64, Ordering::Relaxed);
                        }
                        Ok(())
                    })();
                    if done.is_err() {
                        failed.store(true, Ordering::Relaxed);
                        // Wake the other worker, waiting for a turn that will not come.
                        drop(turn.lock());
                        turned.notify_all();
                        return done;
                    }
                }
            }
        };
        let workers = [s.spawn(worker(Arc::clone(&pieces))), s.spawn(worker(pieces))];
        let handed = hand_out(disk, ctx, &failed, piece, &mut |seq, pos, n| {
            to_workers.send((seq, pos, n)).map_err(|_| stopped())
        });
        drop(to_workers);
        let mut worked = Ok(());
        for w in workers {
            let r = w.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the output writer failed")));
            worked = worked.and(r);
        }
        // A read or write error explains why handing out stopped.
        worked.and(handed)
    })?;
    Ok(written.into_inner())
}

/// Hands out, in guest order and numbered, the aligned pieces of `piece`
/// bytes of the disk that the map does not say read as zeros.
fn hand_out(
    disk: &dyn Disk,
    ctx: &WriteCtx<'_>,
    failed: &AtomicBool,
    piece: u64,
    send: &mut dyn FnMut(u64, u64, usize) -> Result<()>,
) -> Result<()> {
    let size = disk.size();
    let mut pos = 0u64;
    let mut seq = 0u64;
    while pos < size {
        ctx.check_cancel()?;
        if failed.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Io, "the output writer stopped"));
        }
        let e = disk.status(pos, size - pos)?;
        if e.zero {
            let zero_end = pos.saturating_add(e.length.max(1)).min(size);
            let skip_to = if zero_end == size { size } else { zero_end - zero_end % piece };
            if skip_to > pos {
                pos = skip_to;
                (ctx.progress)(pos);
                continue;
            }
        }
        let end = (pos - pos % piece).saturating_add(piece).min(size);
        let n = usize::try_from(end - pos).unwrap_or(0);
        send(seq, pos, n)?;
        seq += 1;
        pos = end;
        (ctx.progress)(pos);
    }
    Ok(())
}

/// The stretches of `buf` between its all-zero grains of [`GRAIN`] bytes
/// (the last grain may be short), as `(start, end)`.
fn nonzero_runs(buf: &[u8], runs: &mut Vec<(usize, usize)>) {
    runs.clear();
    let mut open: Option<usize> = None;
    for (i, g) in buf.chunks(GRAIN).enumerate() {
        let at = i * GRAIN;
        match (crate::cat::is_zero(g), open) {
            (false, None) => open = Some(at),
            (true, Some(from)) => {
                runs.push((from, at));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(from) = open {
        runs.push((from, buf.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{be16, be32, be64};

    #[test]
    fn geometry_follows_the_spec_and_falls_back_to_the_largest() {
        // 1 MiB: the spec says 30 × 4 × 17 = 2040 sectors, not 2048: the largest.
        assert_eq!(spec_geometry(2048), (30, 4, 17));
        assert_eq!(footer_geometry(MIB), (65535, 16, 255));
        // A size the spec's geometry says exactly keeps that geometry.
        let exact = 1024 * 16 * 63 * SECTOR;
        assert_eq!(footer_geometry(exact), (1024, 16, 63));
        // Past 127 GiB the geometry is capped.
        assert_eq!(spec_geometry(u64::MAX), (65535, 16, 255));
        assert_eq!(spec_geometry(65535 * 16 * 63), (16191, 16, 255));
    }

    #[test]
    fn footer_fields_at_the_spec_offsets() {
        let f = Footer { size: 3 * MIB, disk_type: TYPE_DYNAMIC, data_offset: 512, uuid: [7; 16] }.to_bytes();
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(be32(&f, 8), 2);
        assert_eq!(be32(&f, 12), 0x0001_0000);
        assert_eq!(be64(&f, 16), 512);
        assert_eq!(&f[28..32], b"vmrp");
        assert_eq!(&f[36..40], b"Wi2k");
        assert_eq!(be64(&f, 40), 3 * MIB);
        assert_eq!(be64(&f, 48), 3 * MIB);
        assert_eq!((be16(&f, 56), f[58], f[59]), (65535, 16, 255));
        assert_eq!(be32(&f, 60), 3);
        assert_eq!(be32(&f, 64), checksum(&f, 64));
        assert_eq!(f[84], 0);
        let h = dyn_header(2);
        assert_eq!(&h[0..8], b"cxsparse");
        assert_eq!(be64(&h, 16), BAT_OFFSET);
        assert_eq!(be32(&h, 28), 2);
        assert_eq!(be32(&h, 32), 2 << 20);
        assert_eq!(be32(&h, 36), checksum(&h, 36));
    }

    #[test]
    fn sizes_round_to_a_mib_and_stop_below_2040_gib() {
        assert_eq!(vhd_size(1).unwrap(), MIB);
        assert_eq!(vhd_size(MIB).unwrap(), MIB);
        assert_eq!(vhd_size(MAX_SIZE - MIB).unwrap(), MAX_SIZE - MIB);
        assert!(vhd_size(MAX_SIZE - MIB + 1).is_err());
        assert!(vhd_size(u64::MAX).is_err());
    }

    #[test]
    fn ids_are_version_4_and_differ() {
        let src = std::sync::Arc::new(crate::MemSource::new(vec![1u8; 100], "mem"));
        let disk = crate::raw::RawDisk::new(src, 0, 100, false);
        let (a, b) = (image_id(&disk, 1).unwrap(), image_id(&disk, 1).unwrap());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
    }

    #[test]
    fn runs_skip_zero_grains() {
        let mut buf = vec![0u8; 5 * GRAIN + 100];
        buf[10] = 1;
        buf[GRAIN + 1] = 1;
        buf[3 * GRAIN] = 1;
        buf[5 * GRAIN + 99] = 1;
        let mut runs = Vec::new();
        nonzero_runs(&buf, &mut runs);
        assert_eq!(runs, vec![(0, 2 * GRAIN), (3 * GRAIN, 4 * GRAIN), (5 * GRAIN, 5 * GRAIN + 100)]);
    }
}
