//! The VMDK writer: monolithicSparse and streamOptimized, both one hosted
//! sparse extent (VMware's "Virtual Disk Format 1.1") with its descriptor
//! embedded at sector 1, 64 KiB grains and 512 entries per grain table, as
//! `qemu-img create -f vmdk` makes them.
//!
//! - **monolithicSparse**: the redundant grain directory and its tables, then
//!   the primary directory and its tables, preallocated right after the
//!   descriptor; grains appended after them in guest order. One grain table is
//!   held at a time and written to both copies once the walk has passed its
//!   32 MiB of guest; tables that stay empty are holes.
//! - **streamOptimized**: every grain deflated (on all cores) behind a grain
//!   marker, padded to a sector; each grain table that has entries follows the
//!   grains it maps (behind its marker, as VMware's stream writer places them,
//!   so one table is held at a time), then the directory, the footer (the
//!   header again, with the directory's real offset) and the end-of-stream
//!   marker. The header at sector 0 says the directory is at the end.
//!
//! The capacity is a whole number of sectors: a disk whose size is not a
//! multiple of 512 bytes is rounded up, as qemu-img does (`vmdk_co_create_opts`
//! rounds the size up to `BDRV_SECTOR_SIZE`); the tail reads as zeros.

use std::cell::RefCell;
use std::fs::File;
use std::hash::Hasher;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::write::{VmdkSubformat, WriteCtx, for_each_nonzero, parallel_ordered, write_at};

const SECTOR: u64 = 512;
/// Grain size: 128 sectors (64 KiB), VMware's and qemu-img's.
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Entries per grain table (512: one table maps 32 MiB).
const GTES: u64 = 512;
const GT_BYTES: usize = 2048;
const GT_SECTORS: u64 = 4;
const GT_COVER: u64 = GRAIN * GTES;
/// The embedded descriptor: at sector 1, 20 sectors long (qemu-img's).
const DESC_OFFSET: u64 = 1;
const DESC_SECTORS: u64 = 20;
/// Header flags: valid newline test, redundant grain table, compressed
/// grains, markers.
const FLAG_NL_DETECT: u32 = 1;
const FLAG_RGD: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// gdOffset of a stream whose directory is found through the footer.
const GD_AT_END: u64 = u64::MAX;
/// Metadata marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// The largest capacity written: 2 TiB. A hosted sparse extent names its
/// grains and tables by 32-bit sector numbers, so a larger one could not
/// address its own data (qemu-img and VMware split such disks into several
/// extents, or use flat ones).
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 32;
/// The IDE limit of the BIOS geometry's cylinders: VMware writes 16383 for
/// any larger IDE disk (qemu-img does not cap it).
const MAX_IDE_CYLINDERS: u64 = 16383;
/// Bytes gathered before one pwrite: consecutive grains go out together.
const WRITE_BATCH: usize = 8 << 20;
/// A piece this large is written as it comes, not copied into a batch.
const DIRECT_WRITE: usize = 1 << 20;
/// The deflate level of streamOptimized grains: 1, the fastest. qemu-img
/// deflates at zlib's default (6), single-threaded; level 1 (zlib-rs's quick
/// strategy) runs several times faster for output typically 5 to 15% larger,
/// which is what keeps a conversion on two cores well under 0.6 × qemu-img's
/// time, and every VMDK reader inflates any level alike.
const DEFLATE_LEVEL: u32 = 1;

/// Writes `disk` as a VMDK of `sub`. Returns the guest bytes written.
///
/// # Errors
/// The disk is larger than 2 TiB, reading it or writing `out` fails, or the
/// write is cancelled.
pub(crate) fn write(disk: &dyn Disk, sub: VmdkSubformat, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let capacity = disk.size().div_ceil(SECTOR);
    if capacity > MAX_CAPACITY_SECTORS {
        return Err(Error::too_large(format!(
            "a disk of {} bytes: a VMDK sparse extent holds at most 2 TiB",
            disk.size()
        )));
    }
    let name = match ctx.name {
        Some(n) if !n.is_empty() && !n.contains(['"', '\n', '\r', '\0', '/']) => n.to_string(),
        _ => extent_name(out),
    };
    match sub {
        VmdkSubformat::MonolithicSparse => write_sparse(disk, capacity, &name, out, ctx),
        VmdkSubformat::StreamOptimized => write_stream(disk, capacity, &name, out, ctx),
    }
}

/// The layout of the grain directory for `capacity` sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tables {
    /// Grain tables (one per 32 MiB of guest) and directory entries.
    gt_count: u64,
    /// Sectors of the directory.
    gd_sectors: u64,
}

impl Tables {
    fn new(capacity: u64) -> Tables {
        let gt_count = capacity.div_ceil(GRAIN_SECTORS).div_ceil(GTES);
        Tables { gt_count, gd_sectors: (gt_count * 4).div_ceil(SECTOR) }
    }
}

/// The header fields that differ between the two flavours.
#[derive(Clone, Copy, Debug)]
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    rgd_offset: u64,
    gd_offset: u64,
    overhead: u64,
}

impl Header {
    /// The 512-byte sparse extent header (magic "KDMV").
    fn sector(&self) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[..4].copy_from_slice(b"KDMV");
        put32(&mut h, 4, self.version);
        put32(&mut h, 8, self.flags);
        put64(&mut h, 12, self.capacity);
        put64(&mut h, 20, GRAIN_SECTORS);
        put64(&mut h, 28, DESC_OFFSET);
        put64(&mut h, 36, DESC_SECTORS);
        put32(&mut h, 44, GTES as u32);
        put64(&mut h, 48, self.rgd_offset);
        put64(&mut h, 56, self.gd_offset);
        put64(&mut h, 64, self.overhead);
        // 72: clean shutdown; 73: the newline test bytes "\n \r\n".
        h[73..77].copy_from_slice(&[0x0a, 0x20, 0x0d, 0x0a]);
        if self.flags & FLAG_COMPRESSED != 0 {
            // compressAlgorithm 1: deflate.
            h[77..79].copy_from_slice(&1u16.to_le_bytes());
        }
        h
    }
}

/// The embedded descriptor, padded to its 20 sectors.
///
/// `ddb.adapterType` is `ide`: VirtualBox and VMware Workstation then attach
/// the disk to an IDE controller, which every guest boots from, old ones with
/// no SCSI driver included; `lsilogic` (heads 255) is the other common choice,
/// for guests known to carry its driver. The geometry is the BIOS one of an
/// IDE disk: 16 heads, 63 sectors, cylinders capped at 16383 as VMware does.
fn descriptor(cid: u32, create_type: &str, capacity: u64, extent: &str) -> Vec<u8> {
    let cylinders = (capacity / (16 * 63)).min(MAX_IDE_CYLINDERS);
    let text = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n\
         # Extent description\nRW {capacity} SPARSE \"{extent}\"\n\n\
         # The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    );
    let mut d = text.into_bytes();
    d.resize((DESC_SECTORS * SECTOR) as usize, 0);
    d
}

/// The extent's file name for the descriptor: the output's own name (the
/// name it is renamed to when it is a `.NAME.tmp-ID` temporary sibling).
/// QEMU ignores it in a monolithic file; VMware looks the extent up by it.
fn extent_name(out: &File) -> String {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", out.as_raw_fd())).ok();
    let base = link.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let name = match base {
        Some(b) => match b.strip_prefix('.').and_then(|s| s.rsplit_once(".tmp-")) {
            Some((real, _)) => real.to_string(),
            None => b,
        },
        None => String::new(),
    };
    if name.is_empty() || name.contains(['"', '\n', '\r', '\0']) { "disk.vmdk".into() } else { name }
}

/// A CID that changes with the data: FNV-1a over each grain's offset and
/// first bytes. Never `ffffffff`, which means "no parent".
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn grain(&mut self, off: u64, g: &[u8]) {
        self.write(&off.to_le_bytes());
        self.write(&g[..g.len().min(64)]);
    }
    fn cid(&self) -> u32 {
        let c = (self.0 ^ (self.0 >> 32)) as u32;
        if c == u32::MAX { 0xfffe_fffe } else { c }
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Writes going to consecutive offsets gathered into large pwrites.
pub(crate) struct Batch<'a> {
    out: &'a File,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(out: &'a File) -> Batch<'a> {
        Batch { out, start: 0, buf: Vec::new() }
    }

    /// Queues `data` for `offset`; writes what is queued first unless
    /// `offset` follows it.
    pub(crate) fn put(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.buf.is_empty()
            && (self.start + self.buf.len() as u64 != offset || self.buf.len() + data.len() > WRITE_BATCH)
        {
            self.flush()?;
        }
        if self.buf.is_empty() {
            if data.len() >= DIRECT_WRITE {
                // Large enough for one write of its own: no copy.
                return write_at(self.out, data, offset);
            }
            self.start = offset;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            write_at(self.out, &self.buf, self.start)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The grain table being filled, for the 32 MiB of guest at `index`.
struct OpenTable {
    index: u64,
    entries: Vec<u8>,
    used: bool,
}

impl OpenTable {
    fn new() -> OpenTable {
        OpenTable { index: 0, entries: vec![0u8; GT_BYTES], used: false }
    }
    fn set(&mut self, guest: u64, sector: u64) -> Result<()> {
        let s = u32::try_from(sector)
            .map_err(|_| Error::too_large("the VMDK grows past 2 TiB, beyond its 32-bit sector numbers"))?;
        let i = usize::try_from((guest % GT_COVER) / GRAIN).unwrap_or(0) * 4;
        put32(&mut self.entries, i, s);
        self.used = true;
        Ok(())
    }
    fn reset(&mut self, index: u64) {
        self.index = index;
        self.entries.fill(0);
        self.used = false;
    }
}

/// monolithicSparse: header, descriptor, redundant GD + GTs, GD + GTs, grains.
fn write_sparse(disk: &dyn Disk, capacity: u64, name: &str, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let t = Tables::new(capacity);
    let rgd_offset = DESC_OFFSET + DESC_SECTORS;
    let rgt_start = rgd_offset + t.gd_sectors;
    let gd_offset = rgt_start + t.gt_count * GT_SECTORS;
    let gt_start = gd_offset + t.gd_sectors;
    let overhead = (gt_start + t.gt_count * GT_SECTORS).next_multiple_of(GRAIN_SECTORS);
    let header =
        Header { version: 1, flags: FLAG_NL_DETECT | FLAG_RGD, capacity, rgd_offset, gd_offset, overhead };

    let mut gt = OpenTable::new();
    let write_gt = |gt: &OpenTable| -> Result<()> {
        if gt.used {
            write_at(out, &gt.entries, (rgt_start + gt.index * GT_SECTORS) * SECTOR)?;
            write_at(out, &gt.entries, (gt_start + gt.index * GT_SECTORS) * SECTOR)?;
        }
        Ok(())
    };
    let mut batch = Batch::new(out);
    let mut next = overhead;
    let mut fnv = Fnv::new();
    let data = for_each_nonzero(disk, GRAIN as usize, ctx, &mut |off, g| {
        fnv.grain(off, g);
        let index = off / GT_COVER;
        if index != gt.index {
            write_gt(&gt)?;
            gt.reset(index);
        }
        gt.set(off, next)?;
        batch.put(next * SECTOR, g)?;
        next += GRAIN_SECTORS;
        Ok(())
    })?;
    batch.flush()?;
    write_gt(&gt)?;

    // The directories: every table preallocated, so they are known whole.
    let dir = |first: u64| -> Result<Vec<u8>> {
        let mut d = vec![0u8; usize::try_from(t.gd_sectors * SECTOR).unwrap_or(0)];
        for i in 0..t.gt_count {
            let s = u32::try_from(first + i * GT_SECTORS)
                .map_err(|_| Error::too_large("the VMDK grain tables lie past 2 TiB"))?;
            put32(&mut d, usize::try_from(i * 4).unwrap_or(0), s);
        }
        Ok(d)
    };
    write_at(out, &dir(rgt_start)?, rgd_offset * SECTOR)?;
    write_at(out, &dir(gt_start)?, gd_offset * SECTOR)?;
    write_at(out, &descriptor(fnv.cid(), "monolithicSparse", capacity, name), DESC_OFFSET * SECTOR)?;
    write_at(out, &header.sector(), 0)?;
    // qemu-img refuses a file shorter than the header's overhead.
    let end = next * SECTOR;
    out.set_len(end).map_err(|e| Error::io("cannot set the length of the VMDK", e))?;
    Ok(data)
}

thread_local! {
    /// Each compression thread's deflate state, reset for every grain.
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// A grain marker (sector number, compressed length) and the grain's zlib
/// stream, padded to a whole sector.
fn compressed_grain(guest: u64, grain: &[u8]) -> Result<Vec<u8>> {
    let mut rec = Vec::with_capacity(12 + grain.len() + grain.len() / 8 + 1024);
    rec.extend_from_slice(&(guest / SECTOR).to_le_bytes());
    rec.extend_from_slice(&[0u8; 4]);
    DEFLATE.with(|cell| -> Result<()> {
        let mut slot = cell.borrow_mut();
        let z = slot.get_or_insert_with(|| Compress::new(Compression::new(DEFLATE_LEVEL), true));
        z.reset();
        loop {
            let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
            let input = grain.get(consumed..).unwrap_or(&[]);
            let status = z
                .compress_vec(input, &mut rec, FlushCompress::Finish)
                .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("deflate failed: {e}")))?;
            if status == Status::StreamEnd {
                return Ok(());
            }
            rec.reserve(64 << 10);
        }
    })?;
    let size = u32::try_from(rec.len() - 12).unwrap_or(u32::MAX);
    put32(&mut rec, 8, size);
    rec.resize(rec.len().next_multiple_of(SECTOR as usize), 0);
    Ok(rec)
}

/// A metadata marker: `sectors` of metadata of `kind` follow it.
fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    put64(&mut m, 0, sectors);
    put32(&mut m, 12, kind);
    m
}

/// streamOptimized: header (directory at the end), descriptor, then from
/// sector 128 the grains with their tables, the directory, footer, end marker.
fn write_stream(disk: &dyn Disk, capacity: u64, name: &str, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let t = Tables::new(capacity);
    let overhead = GRAIN_SECTORS;
    let header = Header {
        version: 3,
        flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        overhead,
    };
    let mut gd = vec![0u8; usize::try_from(t.gd_sectors * SECTOR).unwrap_or(0)];
    let mut gt = OpenTable::new();
    let mut batch = Batch::new(out);
    let mut pos = overhead * SECTOR;
    let mut fnv = Fnv::new();
    let mut data = 0u64;

    // Appends the table being filled (its marker, then the table) if it has entries.
    let flush_gt = |gt: &OpenTable, gd: &mut [u8], batch: &mut Batch<'_>, pos: &mut u64| -> Result<()> {
        if !gt.used {
            return Ok(());
        }
        batch.put(*pos, &marker(GT_SECTORS, MARKER_GT))?;
        let at = *pos / SECTOR + 1;
        let s = u32::try_from(at).map_err(|_| Error::too_large("the VMDK grows past 2 TiB"))?;
        put32(gd, usize::try_from(gt.index * 4).unwrap_or(0), s);
        batch.put(*pos + SECTOR, &gt.entries)?;
        *pos += SECTOR + GT_SECTORS * SECTOR;
        Ok(())
    };

    parallel_ordered(
        ctx.threads,
        &|(off, g): (u64, Vec<u8>)| Ok((off, compressed_grain(off, &g)?)),
        &mut |push| {
            data = for_each_nonzero(disk, GRAIN as usize, ctx, &mut |off, g| {
                fnv.grain(off, g);
                push((off, g.to_vec()))
            })?;
            Ok(())
        },
        &mut |(off, rec): (u64, Vec<u8>)| {
            let index = off / GT_COVER;
            if index != gt.index {
                flush_gt(&gt, &mut gd, &mut batch, &mut pos)?;
                gt.reset(index);
            }
            gt.set(off, pos / SECTOR)?;
            batch.put(pos, &rec)?;
            pos += rec.len() as u64;
            Ok(())
        },
    )?;
    flush_gt(&gt, &mut gd, &mut batch, &mut pos)?;

    let gd_offset = pos / SECTOR + 1;
    batch.put(pos, &marker(t.gd_sectors, MARKER_GD))?;
    batch.put(pos + SECTOR, &gd)?;
    pos += SECTOR + gd.len() as u64;
    let footer = Header { gd_offset, ..header };
    batch.put(pos, &marker(1, MARKER_FOOTER))?;
    batch.put(pos + SECTOR, &footer.sector())?;
    batch.put(pos + 2 * SECTOR, &marker(0, MARKER_EOS))?;
    batch.flush()?;
    write_at(out, &descriptor(fnv.cid(), "streamOptimized", capacity, name), DESC_OFFSET * SECTOR)?;
    write_at(out, &header.sector(), 0)?;
    Ok(data)
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{le16, le32, le64};

    #[test]
    fn header_fields_at_the_spec_offsets() {
        let h = Header {
            version: 1,
            flags: FLAG_NL_DETECT | FLAG_RGD,
            capacity: 2048,
            rgd_offset: 21,
            gd_offset: 30,
            overhead: 128,
        }
        .sector();
        assert_eq!(&h[..4], b"KDMV");
        assert_eq!(le32(&h, 4), 1);
        assert_eq!(le32(&h, 8), 3);
        assert_eq!(le64(&h, 12), 2048);
        assert_eq!(le64(&h, 20), 128);
        assert_eq!((le64(&h, 28), le64(&h, 36)), (1, 20));
        assert_eq!(le32(&h, 44), 512);
        assert_eq!((le64(&h, 48), le64(&h, 56), le64(&h, 64)), (21, 30, 128));
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(le16(&h, 77), 0);
    }

    #[test]
    fn tables_for_odd_and_large_capacities() {
        assert_eq!(Tables::new(1), Tables { gt_count: 1, gd_sectors: 1 });
        // 32 MiB + one sector: two tables.
        assert_eq!(Tables::new(65537).gt_count, 2);
        // 2 TiB: 65536 tables, a 512-sector directory.
        assert_eq!(Tables::new(MAX_CAPACITY_SECTORS), Tables { gt_count: 65536, gd_sectors: 512 });
    }

    #[test]
    fn descriptor_is_twenty_sectors_with_a_capped_ide_geometry() {
        let d = descriptor(0x1234, "streamOptimized", 8 << 30, "a.vmdk");
        assert_eq!(d.len(), 20 * 512);
        let text = String::from_utf8_lossy(&d);
        assert!(text.contains("CID=00001234\n"));
        assert!(text.contains("createType=\"streamOptimized\""));
        assert!(text.contains("RW 8589934592 SPARSE \"a.vmdk\""));
        assert!(text.contains("ddb.geometry.cylinders = \"16383\""));
        assert!(text.contains("ddb.adapterType = \"ide\""));
        let parsed = crate::vmdk::descriptor::parse(&d).unwrap();
        assert_eq!(parsed.extents.len(), 1);
        assert_eq!(parsed.cid, Some(0x1234));
    }

    #[test]
    fn a_compressed_grain_inflates_back_behind_its_marker() {
        let mut g = vec![0u8; GRAIN as usize];
        g[100] = 7;
        g[GRAIN as usize - 1] = 9;
        let rec = compressed_grain(3 * GRAIN, &g).unwrap();
        assert_eq!(rec.len() % 512, 0);
        assert_eq!(le64(&rec, 0), 3 * GRAIN_SECTORS);
        let size = le32(&rec, 8) as usize;
        let back = crate::compress::inflate_exact(&rec[12..12 + size], g.len(), true).unwrap();
        assert_eq!(back, g);
    }
}
