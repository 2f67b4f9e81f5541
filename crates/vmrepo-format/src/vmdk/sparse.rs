//! The hosted sparse extent (magic "KDMV"): header, grain directory, grain
//! tables, and grains, plain or deflate-compressed (streamOptimized).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::bytes::{le16, le32, le64};
use crate::check::{CheckReport, Used};
use crate::compress::inflate_exact;
use crate::detect::VMDK4_MAGIC;
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, Result, ensure};
use crate::source::{Source, read_into, read_vec};

const SECTOR: u64 = 512;
/// The most grain table entries per table (QEMU refuses more).
pub const MAX_GTES_PER_GT: u32 = 512;
/// The largest grain read, in sectors (16 MiB; VMware uses 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 32768;
/// The most grain directory entries read (32 MiB of directory).
pub const MAX_GD_ENTRIES: u64 = 8 << 20;
/// The largest capacity, in sectors (2^61 bytes).
const MAX_CAPACITY: u64 = 1 << 52;
/// gdOffset of a streamOptimized image whose directory follows the grains.
const GD_AT_END: u64 = u64::MAX;
/// Header flags.
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// A grain table entry for a grain that reads as zeros.
const GTE_ZEROED: u32 = 1;
/// Grain tables kept in memory.
const GT_CACHE: usize = 256;

/// The sparse extent header.
#[derive(Clone, Debug)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub num_gtes: u32,
    pub gd_offset: u64,
    pub unclean: bool,
    pub compress_algorithm: u16,
    /// The directory was found through the footer.
    pub footer: bool,
}

impl SparseHeader {
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
    pub fn grain_bytes(&self) -> u64 {
        self.grain * SECTOR
    }
    pub fn gd_entries(&self) -> u64 {
        self.capacity.div_ceil(self.grain * u64::from(self.num_gtes))
    }
}

fn parse(h: &[u8]) -> SparseHeader {
    SparseHeader {
        version: le32(h, 4),
        flags: le32(h, 8),
        capacity: le64(h, 12),
        grain: le64(h, 20),
        desc_offset: le64(h, 28),
        desc_size: le64(h, 36),
        num_gtes: le32(h, 44),
        gd_offset: le64(h, 56),
        unclean: h[72] != 0,
        compress_algorithm: le16(h, 77),
        footer: false,
    }
}

/// Reads and checks the header (the footer's copy when the directory is at the end).
pub fn read_header(src: &dyn Source) -> Result<SparseHeader> {
    let mut h = [0u8; 512];
    read_into(src, &mut h, 0, "the VMDK sparse header")?;
    ensure!(h[..4] == VMDK4_MAGIC, "no KDMV magic");
    let mut hdr = parse(&h);
    if hdr.gd_offset == GD_AT_END {
        ensure!(src.len() >= 3 * SECTOR, "a streamOptimized file too short for its footer");
        let mut f = [0u8; 512];
        read_into(src, &mut f, src.len() - 2 * SECTOR, "the VMDK footer")?;
        ensure!(f[..4] == VMDK4_MAGIC, "the grain directory is at the end but there is no footer");
        hdr = SparseHeader { footer: true, ..parse(&f) };
        ensure!(hdr.gd_offset != GD_AT_END, "the footer does not say where the grain directory is");
    }
    if !(1..=3).contains(&hdr.version) {
        return Err(Error::unsupported(format!("VMDK sparse extent version {}", hdr.version)));
    }
    ensure!(
        hdr.grain >= 1 && hdr.grain.is_power_of_two() && hdr.grain <= MAX_GRAIN_SECTORS,
        "grain size of {} sectors (a power of two up to {MAX_GRAIN_SECTORS})",
        hdr.grain
    );
    ensure!(
        (1..=MAX_GTES_PER_GT).contains(&hdr.num_gtes),
        "{} entries per grain table (1 to {MAX_GTES_PER_GT})",
        hdr.num_gtes
    );
    ensure!(hdr.capacity <= MAX_CAPACITY, "capacity of {} sectors is too large", hdr.capacity);
    if hdr.compressed() && hdr.compress_algorithm != 1 {
        return Err(Error::unsupported(format!("VMDK compression algorithm {}", hdr.compress_algorithm)));
    }
    let entries = hdr.gd_entries();
    if entries > MAX_GD_ENTRIES {
        return Err(Error::too_large(format!(
            "the grain directory has {entries} entries, more than the {MAX_GD_ENTRIES} vmrepo reads (L1 size too big)"
        )));
    }
    Ok(hdr)
}

/// The embedded descriptor's text, if the header points to one.
pub fn embedded_descriptor(src: &dyn Source, hdr: &SparseHeader) -> Result<Option<Vec<u8>>> {
    if hdr.desc_offset == 0 || hdr.desc_size == 0 {
        return Ok(None);
    }
    let len = hdr.desc_size.checked_mul(SECTOR).filter(|l| *l <= super::descriptor::MAX_DESCRIPTOR);
    let off = hdr.desc_offset.checked_mul(SECTOR);
    match (off, len) {
        (Some(o), Some(l)) => read_vec(src, o, l, "the embedded descriptor").map(Some),
        _ => Err(Error::too_large(format!("an embedded descriptor of {} sectors", hdr.desc_size))),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grain {
    Unallocated,
    Zeroed,
    /// Uncompressed data at this byte offset.
    Data(u64),
    /// A compressed grain (its marker or data) at this byte offset.
    Compressed(u64),
}

struct GtCache {
    tables: HashMap<u32, Arc<Vec<u32>>>,
    order: VecDeque<u32>,
}

/// A sparse extent as a disk of `size` bytes.
pub struct SparseExtent {
    src: Arc<dyn Source>,
    hdr: SparseHeader,
    gd: Vec<u32>,
    size: u64,
    cache: Mutex<GtCache>,
    last: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    /// Where unallocated grains are read from (a parent disk).
    parent: Option<Arc<dyn Disk>>,
}

impl SparseExtent {
    pub fn new(
        src: Arc<dyn Source>,
        hdr: SparseHeader,
        size: u64,
        parent: Option<Arc<dyn Disk>>,
    ) -> Result<SparseExtent> {
        let gd_bytes = read_vec(
            src.as_ref(),
            hdr.gd_offset.saturating_mul(SECTOR),
            hdr.gd_entries() * 4,
            "the grain directory",
        )?;
        let gd = gd_bytes.chunks_exact(4).map(|c| le32(c, 0)).collect();
        Ok(SparseExtent {
            src,
            hdr,
            gd,
            size,
            cache: Mutex::new(GtCache { tables: HashMap::new(), order: VecDeque::new() }),
            last: Mutex::new(None),
            parent,
        })
    }

    fn grain_table(&self, sector: u32) -> Result<Arc<Vec<u32>>> {
        if let Ok(c) = self.cache.lock()
            && let Some(t) = c.tables.get(&sector)
        {
            return Ok(Arc::clone(t));
        }
        let len = u64::from(self.hdr.num_gtes) * 4;
        let off = u64::from(sector) * SECTOR;
        // A table past the end of the file reads as zeros, as QEMU reads it.
        let mut raw = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let avail = usize::try_from(self.src.len().saturating_sub(off).min(len)).unwrap_or(0);
        if avail > 0 {
            read_into(self.src.as_ref(), &mut raw[..avail], off, "a grain table")?;
        }
        let t = Arc::new(raw.chunks_exact(4).map(|c| le32(c, 0)).collect::<Vec<u32>>());
        if let Ok(mut c) = self.cache.lock() {
            if c.tables.len() >= GT_CACHE
                && let Some(old) = c.order.pop_front()
            {
                c.tables.remove(&old);
            }
            c.tables.insert(sector, Arc::clone(&t));
            c.order.push_back(sector);
        }
        Ok(t)
    }

    fn classify(&self, gte: u32) -> Grain {
        match gte {
            0 => Grain::Unallocated,
            GTE_ZEROED if self.hdr.flags & FLAG_ZERO_GRAIN != 0 => Grain::Zeroed,
            g if self.hdr.compressed() => Grain::Compressed(u64::from(g) * SECTOR),
            g => Grain::Data(u64::from(g) * SECTOR),
        }
    }

    /// The grain at byte `pos` and how far the same kind runs (at most `max`,
    /// within one grain table; one grain when compressed).
    fn lookup(&self, pos: u64, max: u64) -> Result<(Grain, u64)> {
        let gb = self.hdr.grain_bytes();
        let per_gt = gb * u64::from(self.hdr.num_gtes);
        let limit = pos.saturating_add(max).min(self.size);
        let gd_index = usize::try_from(pos / per_gt).unwrap_or(usize::MAX);
        let Some(&gt_sector) = self.gd.get(gd_index) else {
            return Ok((Grain::Unallocated, limit - pos));
        };
        if gt_sector == 0 {
            let mut next = gd_index + 1;
            while next < self.gd.len() && self.gd[next] == 0 && (next as u64) * per_gt < limit {
                next += 1;
            }
            return Ok((Grain::Unallocated, ((next as u64) * per_gt).min(limit) - pos));
        }
        let gt = self.grain_table(gt_sector)?;
        let table_end = ((gd_index as u64 + 1) * per_gt).min(limit);
        let idx = |p: u64| usize::try_from((p % per_gt) / gb).unwrap_or(0);
        let first = self.classify(gt.get(idx(pos)).copied().unwrap_or(0));
        let grain_start = pos - pos % gb;
        if let Grain::Compressed(_) = first {
            return Ok((first, (grain_start + gb).min(limit) - pos));
        }
        let mut end = grain_start + gb;
        while end < table_end {
            let next = self.classify(gt.get(idx(end)).copied().unwrap_or(0));
            let same = match (first, next) {
                (Grain::Data(a), Grain::Data(b)) => b == a + (end - grain_start),
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            end += gb;
        }
        let len = end.min(limit) - pos;
        Ok(match first {
            Grain::Data(host) => (Grain::Data(host + (pos - grain_start)), len),
            g => (g, len),
        })
    }

    fn inflate(&self, off: u64) -> Result<Arc<Vec<u8>>> {
        if let Ok(last) = self.last.lock()
            && let Some((o, g)) = last.as_ref()
            && *o == off
        {
            return Ok(Arc::clone(g));
        }
        let gb = self.hdr.grain_bytes();
        let (data_off, data_len) = if self.hdr.flags & FLAG_MARKERS != 0 {
            let mut m = [0u8; 12];
            read_into(self.src.as_ref(), &mut m, off, "a grain marker")?;
            let size = u64::from(le32(&m, 8));
            ensure!(size > 0 && size <= 2 * gb, "a compressed grain of {size} bytes at offset {off:#x}");
            (off + 12, size)
        } else {
            (off, (2 * gb).min(self.src.len().saturating_sub(off)))
        };
        let avail = self.src.len().saturating_sub(data_off).min(data_len);
        let input = read_vec(self.src.as_ref(), data_off, avail, "a compressed grain")?;
        let out = inflate_exact(&input, usize::try_from(gb).unwrap_or(0), true)
            .or_else(|_| crate::compress::inflate_prefix(&input, usize::try_from(gb).unwrap_or(0), true))
            .map_err(|e| {
                Error::malformed(format!("the compressed grain at offset {off:#x} does not decompress: {e}"))
            })?;
        let out = Arc::new(out);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((off, Arc::clone(&out)));
        }
        Ok(out)
    }

    /// Guest bytes stored in the extent (zeroed grains not counted). Reads
    /// each grain table once, into one buffer, without caching it.
    pub fn allocated_bytes(&self) -> Result<u64> {
        let mut seen: HashMap<u32, u64> = HashMap::new();
        let len = u64::from(self.hdr.num_gtes) * 4;
        let mut raw = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let mut total = 0u64;
        for &gt in &self.gd {
            if gt == 0 {
                continue;
            }
            let n = match seen.get(&gt) {
                Some(n) => *n,
                None => {
                    let off = u64::from(gt) * SECTOR;
                    let avail = usize::try_from(self.src.len().saturating_sub(off).min(len)).unwrap_or(0);
                    raw.fill(0);
                    if avail > 0 {
                        read_into(self.src.as_ref(), &mut raw[..avail], off, "a grain table")?;
                    }
                    let stored = raw
                        .chunks_exact(4)
                        .filter(|c| !matches!(self.classify(le32(c, 0)), Grain::Unallocated | Grain::Zeroed))
                        .count() as u64;
                    let n = stored * self.hdr.grain_bytes();
                    seen.insert(gt, n);
                    n
                }
            };
            total = total.saturating_add(n);
        }
        Ok(total.min(self.size))
    }
}

impl Disk for SparseExtent {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let gb = self.hdr.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (g, len) = self.lookup(pos, (buf.len() - done) as u64)?;
            let n = usize::try_from(len).unwrap_or(0).clamp(1, buf.len() - done);
            let out = &mut buf[done..done + n];
            match g {
                Grain::Zeroed => out.fill(0),
                Grain::Unallocated => match &self.parent {
                    Some(p) => {
                        let k = usize::try_from(p.size().saturating_sub(pos).min(n as u64)).unwrap_or(0);
                        if k > 0 {
                            p.read_at(&mut out[..k], pos)?;
                        }
                        out[k..].fill(0);
                    }
                    None => out.fill(0),
                },
                Grain::Data(host) => {
                    let k = usize::try_from(self.src.len().saturating_sub(host).min(n as u64)).unwrap_or(0);
                    if k > 0 {
                        read_into(self.src.as_ref(), &mut out[..k], host, "a grain")?;
                    }
                    out[k..].fill(0);
                }
                Grain::Compressed(off) => {
                    let grain = self.inflate(off)?;
                    let within = usize::try_from(pos % gb).unwrap_or(0);
                    out.copy_from_slice(&grain[within..within + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let (g, len) = self.lookup(offset, max_len)?;
        Ok(match g {
            Grain::Unallocated if self.parent.is_some() => MapExtent {
                start: offset,
                length: len,
                present: false,
                zero: false,
                data: false,
                compressed: false,
                offset: None,
            },
            Grain::Unallocated => MapExtent::unallocated(offset, len, false),
            Grain::Zeroed => MapExtent::zeroed(offset, len),
            Grain::Data(host) => MapExtent::data(offset, len, Some(host)),
            Grain::Compressed(_) => MapExtent { compressed: true, ..MapExtent::data(offset, len, None) },
        })
    }

    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { checked: "tables", ..Default::default() };
        let file_len = self.src.len();
        let gb = self.hdr.grain_bytes();
        let mut used = vec![Used::new(0, SECTOR, "header", 0)];
        let gd_start = self.hdr.gd_offset * SECTOR;
        used.push(Used::new(gd_start, gd_start + self.gd.len() as u64 * 4, "grain directory", 0));
        let gt_len = u64::from(self.hdr.num_gtes) * 4;
        let mut seen_gt = std::collections::HashSet::new();
        for (i, &gt) in self.gd.iter().enumerate() {
            if gt == 0 {
                continue;
            }
            let off = u64::from(gt) * SECTOR;
            if off + gt_len > file_len {
                r.problem(format!("grain table {i} at offset {off:#x} lies past the end of the file"));
                continue;
            }
            if !seen_gt.insert(gt) {
                r.problem(format!(
                    "grain table {i} at offset {off:#x} is shared with another directory entry"
                ));
                continue;
            }
            used.push(Used::new(off, off + gt_len, "grain table", i as u64));
            let table = self.grain_table(gt)?;
            for (j, &gte) in table.iter().enumerate() {
                let grain_no = i as u64 * u64::from(self.hdr.num_gtes) + j as u64;
                if grain_no * gb >= self.size {
                    if gte != 0 {
                        r.problem(format!("grain {grain_no} lies past the end of the disk but is allocated"));
                    }
                    continue;
                }
                match self.classify(gte) {
                    Grain::Unallocated | Grain::Zeroed => {}
                    Grain::Data(host) => {
                        r.allocated += gb;
                        if host + gb > file_len {
                            r.problem(format!(
                                "grain {grain_no} at offset {host:#x} lies past the end of the file"
                            ));
                        }
                        used.push(Used::new(host, host + gb, "grain", grain_no));
                    }
                    Grain::Compressed(off) => {
                        r.allocated += gb;
                        let mut m = [0u8; 12];
                        if off + 12 > file_len
                            || read_into(self.src.as_ref(), &mut m, off, "a grain marker").is_err()
                        {
                            r.problem(format!(
                                "compressed grain {grain_no} at offset {off:#x} lies past the end of the file"
                            ));
                            continue;
                        }
                        let size =
                            if self.hdr.flags & FLAG_MARKERS != 0 { u64::from(le32(&m, 8)) + 12 } else { 1 };
                        if off + size > file_len {
                            r.problem(format!(
                                "compressed grain {grain_no} at offset {off:#x} runs past the end of the file"
                            ));
                        }
                        if self.hdr.flags & FLAG_MARKERS != 0 && le64(&m, 0) != grain_no * self.hdr.grain {
                            r.problem(format!("the marker of grain {grain_no} names sector {}", le64(&m, 0)));
                        }
                        used.push(Used::new(off, off + size, "compressed grain", grain_no));
                    }
                }
            }
        }
        crate::check::overlaps(used, &mut r);
        Ok(r)
    }
}
