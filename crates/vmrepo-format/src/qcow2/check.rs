//! `vmrepo check` of a qcow2 image, counted as `qemu-img check` counts: every
//! host cluster the image references (the header, the L1 and L2 tables, data
//! and compressed clusters, the snapshot table and each snapshot's tables,
//! the refcount table and blocks, the bitmaps) is counted, and the count is
//! compared with the cluster's refcount. A cluster referenced more often than
//! its refcount says is corruption; a refcount that nothing accounts for is a
//! leak, wasted space and not an error (qemu-img check exits 3 for leaks
//! alone). The active tables' `COPIED` flags must say whether a refcount is 1.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use crate::bytes::be64;
use crate::check::CheckReport;
use crate::error::Result;

use super::header::MAX_L1_BYTES;
use super::reader::{
    L1E_OFFSET_MASK, L1E_RESERVED, L2E_OFFSET_MASK, L2E_RESERVED, OFLAG_COMPRESSED, OFLAG_COPIED, Qcow2Disk,
    read_into_padded,
};
use super::snapshot;

/// The largest refcount table read (QEMU's QCOW_MAX_REFTABLE_SIZE).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host clusters counted in one pass, one byte each: a file of more clusters
/// is counted in several passes over its tables.
const COUNT_WINDOW: u64 = 64 << 20;
/// L1 entries read from all snapshots' tables together (64 MiB of tables).
const MAX_SNAPSHOT_L1_ENTRIES: u64 = 8 << 20;
/// The largest bitmap directory read.
const MAX_BITMAP_DIRECTORY: u64 = 1 << 20;
/// The largest bitmap table read (each bitmap has one).
const MAX_BITMAP_TABLE_BYTES: u64 = 8 << 20;
/// Memory the refcount blocks looked up may hold.
const REFBLOCK_CACHE_BYTES: u64 = 16 << 20;
/// Reserved bits of a refcount table entry (0..=8).
const REFT_RESERVED: u64 = 0x1ff;
/// Bits 9..=55 of a bitmap table entry: the data cluster's offset.
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Size of the fixed part of a bitmap directory entry.
const BITMAP_ENTRY_HEADER: u64 = 24;

/// One L2 table and how often the L1 tables reference it.
#[derive(Clone, Copy)]
struct L2Use {
    /// References from the active L1 table and the snapshots' tables.
    weight: u64,
    /// The first L1 index that references it, to number guest clusters.
    l1_index: u64,
}

/// What a pass over the tables counts: references to host clusters in `window`.
struct Counter {
    window: Range<u64>,
    counts: Vec<u8>,
    file_len: u64,
    cluster_size: u64,
}

impl Counter {
    /// Counts `weight` references to the table `[offset, offset + size)`. QEMU
    /// writes its tables whole, so a table not wholly inside the file means the
    /// file was cut short (qemu-img check reads the missing part as zeros and
    /// says nothing when less than a cluster is missing; vmrepo reports it).
    fn table(&mut self, offset: u64, size: u64, weight: u64, what: &dyn Fn() -> String, r: &mut Report) {
        if offset.saturating_add(size) > self.file_len {
            r.problem(|| {
                format!(
                    "{} at {offset:#x} ({size} bytes) lies past the end of the file ({} bytes)",
                    what(),
                    self.file_len
                )
            });
        }
        self.count(offset, size, weight, false, what, r);
    }

    /// Counts `weight` references to the data `[offset, offset + size)`. The
    /// last cluster of a file may be partial (QEMU writes only the subclusters
    /// and compressed sectors it uses), but data that ends a cluster or more
    /// past the end of the file is corruption, and is counted nowhere.
    fn data(&mut self, offset: u64, size: u64, weight: u64, what: &dyn Fn() -> String, r: &mut Report) {
        self.count(offset, size, weight, true, what, r);
    }

    fn count(
        &mut self,
        offset: u64,
        size: u64,
        weight: u64,
        report: bool,
        what: &dyn Fn() -> String,
        r: &mut Report,
    ) {
        if size == 0 {
            return;
        }
        let end = offset.saturating_add(size);
        if end >= self.file_len.saturating_add(self.cluster_size) {
            if report {
                r.problem(|| {
                    format!(
                        "{} at {offset:#x} ({size} bytes) runs a cluster or more past the end of the file ({} bytes)",
                        what(),
                        self.file_len
                    )
                });
            }
            return;
        }
        let first = (offset / self.cluster_size).max(self.window.start);
        let last = ((end - 1) / self.cluster_size).min(self.window.end.saturating_sub(1));
        let add = u8::try_from(weight).unwrap_or(u8::MAX);
        for c in first..=last {
            if let Some(n) = usize::try_from(c - self.window.start).ok().and_then(|i| self.counts.get_mut(i))
            {
                *n = n.saturating_add(add);
            }
        }
    }
}

/// The report, with problems listed only on the first pass (later passes see
/// the same tables).
struct Report {
    inner: CheckReport,
    first_pass: bool,
}

impl Report {
    fn problem(&mut self, p: impl FnOnce() -> String) {
        if self.first_pass {
            self.inner.problem(p());
        }
    }
}

/// The refcounts the image records, looked up through its refcount table.
struct Refcounts<'a> {
    d: &'a Qcow2Disk,
    table: Vec<u64>,
    bits: u64,
    per_block: u64,
    cache: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Refcounts<'_> {
    /// The refcount of host cluster `c`; `None` when its refcount block
    /// cannot be found (its table entry is reported by the walk).
    fn get(&mut self, c: u64) -> Option<u64> {
        let cs = self.d.cluster_size();
        let Some(&entry) = usize::try_from(c / self.per_block).ok().and_then(|i| self.table.get(i)) else {
            return Some(0);
        };
        let off = entry & !REFT_RESERVED;
        if off == 0 {
            return Some(0);
        }
        if !off.is_multiple_of(cs) {
            return None;
        }
        let block = match self.cache.get(&off) {
            Some(b) => Arc::clone(b),
            None => {
                // A block past the end of the file reads as zeros, as QEMU reads it.
                let mut b = vec![0u8; usize::try_from(cs).ok()?];
                read_into_padded(self.d.src.as_ref(), &mut b, off, "a refcount block").ok()?;
                let b = Arc::new(b);
                if self.cache.len() >= self.capacity
                    && let Some(old) = self.order.pop_front()
                {
                    self.cache.remove(&old);
                }
                self.cache.insert(off, Arc::clone(&b));
                self.order.push_back(off);
                b
            }
        };
        let bit = (c % self.per_block) * self.bits;
        let byte = usize::try_from(bit / 8).ok()?;
        let field = |n: usize| block.get(byte..byte + n);
        Some(match self.bits {
            64 => be64(field(8)?, 0),
            32 => u64::from(u32::from_be_bytes(field(4)?.try_into().ok()?)),
            16 => u64::from(u16::from_be_bytes(field(2)?.try_into().ok()?)),
            8 => u64::from(*block.get(byte)?),
            // Narrower refcounts are packed from the least significant bit, as QEMU packs them.
            bits => u64::from(*block.get(byte)? >> (bit % 8)) & ((1 << bits) - 1),
        })
    }
}

/// Checks a qcow2 image: see the module's documentation.
///
/// # Errors
/// A table cannot be read from the file.
pub(super) fn check(d: &Qcow2Disk) -> Result<CheckReport> {
    let cs = d.cluster_size();
    let mut r = Report {
        inner: CheckReport {
            checked: "tables",
            allocated: d.allocated_bytes().unwrap_or(0),
            ..Default::default()
        },
        first_pass: true,
    };
    let rt_bytes = u64::from(d.hdr.refcount_table_clusters).saturating_mul(cs);
    if rt_bytes > MAX_REFTABLE_BYTES {
        r.problem(|| {
            format!("the refcount table is {rt_bytes} bytes, more than the {MAX_REFTABLE_BYTES} vmrepo reads")
        });
        return Ok(r.inner);
    }
    let mut table = vec![0u8; usize::try_from(rt_bytes).unwrap_or(0)];
    read_into_padded(d.src.as_ref(), &mut table, d.hdr.refcount_table_offset, "the refcount table")?;
    let bits = 1u64 << d.hdr.refcount_order;
    let mut refcounts = Refcounts {
        d,
        table: table.chunks_exact(8).map(|e| be64(e, 0)).collect(),
        bits,
        per_block: cs * 8 / bits,
        cache: HashMap::new(),
        order: VecDeque::new(),
        capacity: usize::try_from((REFBLOCK_CACHE_BYTES / cs).max(4)).unwrap_or(4),
    };
    let (l2_uses, mut leaks_known) = l2_tables(d, &mut r)?;
    let file_len = d.src.len();
    // One more cluster than the file holds: a table may end inside it.
    let clusters = file_len.div_ceil(cs).saturating_add(1);
    let mut start = 0;
    while start < clusters {
        let end = start.saturating_add(COUNT_WINDOW).min(clusters);
        let len = usize::try_from(end - start).unwrap_or(0);
        let mut counter = Counter { window: start..end, counts: vec![0; len], file_len, cluster_size: cs };
        leaks_known &= count_references(d, &l2_uses, &refcounts.table, &mut counter, &mut r)?;
        compare(&counter, &mut refcounts, &mut r);
        r.first_pass = false;
        start = end;
    }
    r.first_pass = true;
    if !leaks_known {
        r.inner.leaked_clusters = 0;
    }
    check_copied_flags(d, &mut refcounts, &mut r)?;
    Ok(r.inner)
}

/// Every L2 table the active L1 table and the snapshots' L1 tables reference,
/// with how often. Also whether every snapshot could be counted (for leaks).
fn l2_tables(d: &Qcow2Disk, r: &mut Report) -> Result<(HashMap<u64, L2Use>, bool)> {
    let mut uses: HashMap<u64, L2Use> = HashMap::new();
    let mut note = |l1: &[u64], weight: u64, r: &mut Report, what: &dyn Fn() -> String| {
        for (i, &e) in l1.iter().enumerate() {
            let off = e & L1E_OFFSET_MASK;
            if e == 0 {
                continue;
            }
            if off == 0 {
                // QEMU reads it as no table, and its check as a table at offset 0.
                r.problem(|| format!("{} entry {i} ({e:#x}) has flags but no L2 table offset", what()));
                continue;
            }
            if e & L1E_RESERVED != 0 {
                r.problem(|| format!("{} entry {i} has reserved bits set ({e:#x})", what()));
            }
            if !off.is_multiple_of(d.cluster_size()) {
                r.problem(|| {
                    format!("{} entry {i}: the L2 table offset {off:#x} is not cluster-aligned", what())
                });
                continue;
            }
            let u = uses.entry(off).or_insert(L2Use { weight: 0, l1_index: i as u64 });
            u.weight = u.weight.saturating_add(weight);
        }
    };
    note(&d.l1, 1, r, &|| "L1".to_string());
    let mut complete = true;
    let (snapshots, _) = snapshot::read_entries(d.src.as_ref(), &d.hdr)?;
    // Snapshots sharing one L1 table (a hostile image) read it once.
    let mut tables: HashMap<(u64, u32), (u64, usize)> = HashMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        tables.entry((s.l1_table_offset, s.l1_size)).or_insert((0, i)).0 += 1;
    }
    let mut tables: Vec<_> = tables.into_iter().collect();
    tables.sort_by_key(|(_, (_, i))| *i);
    let mut entries_read = 0u64;
    for ((offset, size), (weight, i)) in tables {
        let bytes = u64::from(size) * 8;
        if bytes > MAX_L1_BYTES {
            r.problem(|| format!("snapshot {i}: its L1 table of {size} entries is larger than QEMU allows"));
            complete = false;
            continue;
        }
        if !offset.is_multiple_of(d.cluster_size()) {
            r.problem(|| format!("snapshot {i}: its L1 table offset {offset:#x} is not cluster-aligned"));
            complete = false;
            continue;
        }
        entries_read = entries_read.saturating_add(u64::from(size));
        if entries_read > MAX_SNAPSHOT_L1_ENTRIES {
            r.problem(|| {
                format!(
                    "the snapshots' L1 tables hold more than {MAX_SNAPSHOT_L1_ENTRIES} entries; the rest are not checked"
                )
            });
            complete = false;
            break;
        }
        let mut b = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
        read_into_padded(d.src.as_ref(), &mut b, offset, "a snapshot's L1 table")?;
        let l1: Vec<u64> = b.chunks_exact(8).map(|e| be64(e, 0)).collect();
        note(&l1, weight, r, &|| format!("snapshot {i}: L1"));
    }
    Ok((uses, complete))
}

/// Counts every reference to the clusters of `c.window`. Returns whether
/// everything was counted (the bitmaps may be too large to read).
fn count_references(
    d: &Qcow2Disk,
    l2_uses: &HashMap<u64, L2Use>,
    reftable: &[u64],
    c: &mut Counter,
    r: &mut Report,
) -> Result<bool> {
    let cs = d.cluster_size();
    c.data(0, cs, 1, &|| "the header".into(), r);
    c.table(d.hdr.l1_table_offset, u64::from(d.hdr.l1_size) * 8, 1, &|| "the L1 table".into(), r);
    let (snapshots, snapshot_bytes) = snapshot::read_entries(d.src.as_ref(), &d.hdr)?;
    for (i, s) in snapshots.iter().enumerate() {
        c.table(s.l1_table_offset, u64::from(s.l1_size) * 8, 1, &|| format!("snapshot {i}'s L1 table"), r);
    }
    c.table(d.hdr.snapshots_offset, snapshot_bytes, 1, &|| "the snapshot table".into(), r);
    c.table(d.hdr.refcount_table_offset, reftable.len() as u64 * 8, 1, &|| "the refcount table".into(), r);
    let mut offsets: Vec<&u64> = l2_uses.keys().collect();
    offsets.sort();
    let mut table = vec![0u8; usize::try_from(cs).unwrap_or(0)];
    for &off in offsets {
        let Some(u) = l2_uses.get(&off) else { continue };
        c.table(off, cs, u.weight, &|| format!("the L2 table of L1 entry {}", u.l1_index), r);
        read_into_padded(d.src.as_ref(), &mut table, off, "an L2 table")?;
        count_l2(d, &table, *u, c, r);
    }
    let complete = count_bitmaps(d, c, r)?;
    let file_clusters = d.src.len().div_ceil(cs);
    for (i, &e) in reftable.iter().enumerate() {
        let off = e & !REFT_RESERVED;
        if e & REFT_RESERVED != 0 {
            r.problem(|| format!("refcount table entry {i} has reserved bits set ({e:#x})"));
        } else if !off.is_multiple_of(cs) {
            r.problem(|| format!("refcount block {i} at {off:#x} is not cluster-aligned"));
        } else if off / cs >= file_clusters {
            r.problem(|| format!("refcount block {i} at {off:#x} lies past the end of the file"));
        } else if off != 0 {
            c.table(off, cs, 1, &|| format!("refcount block {i}"), r);
        }
    }
    Ok(complete)
}

/// Counts the clusters one L2 table references, `u.weight` times each.
fn count_l2(d: &Qcow2Disk, table: &[u8], u: L2Use, c: &mut Counter, r: &mut Report) {
    let cs = d.cluster_size();
    for (j, e) in table.chunks_exact(usize::try_from(d.entry_size()).unwrap_or(8)).enumerate() {
        let entry = be64(e, 0);
        let bitmap = if d.extended_l2 { be64(e, 8) } else { 0 };
        if entry == 0 && bitmap == 0 {
            continue;
        }
        let guest = u.l1_index.saturating_mul(d.l2_entries()).saturating_add(j as u64);
        if entry & OFLAG_COMPRESSED != 0 {
            if entry & OFLAG_COPIED != 0 {
                r.problem(|| format!("compressed cluster {guest}: the COPIED flag is set"));
            }
            if d.external_data {
                r.problem(|| format!("compressed cluster {guest} in an image with an external data file"));
                continue;
            }
            if bitmap != 0 {
                r.problem(|| format!("compressed cluster {guest} has a subcluster bitmap ({bitmap:#x})"));
                continue;
            }
            let (host, size) = d.compressed_extent(entry & !OFLAG_COPIED);
            c.data(host, size, u.weight, &|| format!("compressed cluster {guest}"), r);
            continue;
        }
        if entry & L2E_RESERVED != 0 {
            r.problem(|| format!("the L2 entry of cluster {guest} has reserved bits set ({entry:#x})"));
        }
        let host = entry & L2E_OFFSET_MASK;
        let in_data_file_at_0 = host == 0 && d.external_data && entry & OFLAG_COPIED != 0;
        if d.extended_l2 {
            let alloc = bitmap & 0xffff_ffff;
            if alloc & (bitmap >> 32) != 0 {
                r.problem(|| {
                    format!("cluster {guest} has subclusters both allocated and zero ({bitmap:#x})")
                });
            }
            if alloc != 0 && host == 0 && !in_data_file_at_0 {
                r.problem(|| format!("cluster {guest} has allocated subclusters but no offset"));
            }
        }
        if host == 0 {
            continue;
        }
        if !host.is_multiple_of(cs) {
            r.problem(|| format!("cluster {guest}: offset {host:#x} is not cluster-aligned"));
        }
        if d.external_data {
            // No refcounts for the data file's clusters; only where they are.
            if host >= d.data.len() {
                r.problem(|| format!("cluster {guest} at {host:#x} lies past the end of the data file"));
            }
            continue;
        }
        c.data(host, cs, u.weight, &|| format!("data cluster {guest}"), r);
    }
}

/// Counts the bitmap directory, each bitmap's table and the clusters it
/// references. Returns false when they are larger than vmrepo reads.
fn count_bitmaps(d: &Qcow2Disk, c: &mut Counter, r: &mut Report) -> Result<bool> {
    let Some(dir) = d.hdr.bitmaps else { return Ok(true) };
    if dir.size > MAX_BITMAP_DIRECTORY {
        return Ok(false);
    }
    c.table(dir.offset, dir.size, 1, &|| "the bitmap directory".into(), r);
    let mut b = vec![0u8; usize::try_from(dir.size).unwrap_or(0)];
    read_into_padded(d.src.as_ref(), &mut b, dir.offset, "the bitmap directory")?;
    let mut at = 0usize;
    for i in 0..dir.nb_bitmaps {
        let Some(e) = at.checked_add(BITMAP_ENTRY_HEADER as usize).and_then(|end| b.get(at..end)) else {
            r.problem(|| format!("bitmap {i} lies past the end of the bitmap directory"));
            return Ok(false);
        };
        let table_offset = be64(e, 0);
        let table_entries = u64::from(crate::bytes::be32(e, 8));
        let name_size = usize::from(crate::bytes::be16(e, 18));
        let extra = usize::try_from(crate::bytes::be32(e, 20)).unwrap_or(usize::MAX);
        let entry_len = (BITMAP_ENTRY_HEADER as usize).saturating_add(extra).saturating_add(name_size);
        at = at.saturating_add(entry_len.div_ceil(8).saturating_mul(8));
        let bytes = table_entries * 8;
        if bytes > MAX_BITMAP_TABLE_BYTES {
            return Ok(false);
        }
        c.table(table_offset, bytes, 1, &|| format!("bitmap {i}'s table"), r);
        let mut t = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
        read_into_padded(d.src.as_ref(), &mut t, table_offset, "a bitmap table")?;
        for (k, e) in t.chunks_exact(8).enumerate() {
            let off = be64(e, 0) & BME_OFFSET_MASK;
            if off != 0 {
                c.data(off, d.cluster_size(), 1, &|| format!("cluster {k} of bitmap {i}"), r);
            }
        }
    }
    Ok(true)
}

/// Compares the references counted in the window with the refcounts: fewer
/// refcounts than references is corruption, more is a leak.
fn compare(c: &Counter, refcounts: &mut Refcounts<'_>, r: &mut Report) {
    let file_clusters = c.file_len.div_ceil(c.cluster_size);
    for (i, &refs) in c.counts.iter().enumerate() {
        let cluster = c.window.start + i as u64;
        // Past the end of the file only what is referenced counts (as QEMU).
        if cluster >= file_clusters && refs == 0 {
            continue;
        }
        let Some(refcount) = refcounts.get(cluster) else { continue };
        let refs = u64::from(refs);
        if refcount < refs {
            // Listed on every pass: each pass compares other clusters.
            r.inner.problem(format!(
                "host cluster {cluster} (offset {:#x}) is referenced {refs} time(s) but its refcount is {refcount}",
                cluster * c.cluster_size
            ));
        } else if refcount > refs && refs < u64::from(u8::MAX) {
            r.inner.leaked_clusters += 1;
        }
    }
}

/// The active tables' COPIED flags: set exactly where the refcount is 1.
fn check_copied_flags(d: &Qcow2Disk, refcounts: &mut Refcounts<'_>, r: &mut Report) -> Result<()> {
    let cs = d.cluster_size();
    let mut table = vec![0u8; usize::try_from(cs).unwrap_or(0)];
    for (i, &l1e) in d.l1.iter().enumerate() {
        let l2 = l1e & L1E_OFFSET_MASK;
        if l2 == 0 || !l2.is_multiple_of(cs) {
            continue;
        }
        if let Some(rc) = refcounts.get(l2 / cs)
            && (rc == 1) != (l1e & OFLAG_COPIED != 0)
        {
            r.problem(|| {
                format!("L1 entry {i}: the COPIED flag disagrees with the L2 table's refcount {rc}")
            });
        }
        read_into_padded(d.src.as_ref(), &mut table, l2, "an L2 table")?;
        for (j, e) in table.chunks_exact(usize::try_from(d.entry_size()).unwrap_or(8)).enumerate() {
            let entry = be64(e, 0);
            let host = entry & L2E_OFFSET_MASK;
            if entry & OFLAG_COMPRESSED != 0 || host == 0 {
                continue;
            }
            let rc = if d.external_data { Some(1) } else { refcounts.get(host / cs) };
            if let Some(rc) = rc
                && (rc == 1) != (entry & OFLAG_COPIED != 0)
            {
                let guest = (i as u64).saturating_mul(d.l2_entries()).saturating_add(j as u64);
                r.problem(|| {
                    format!("cluster {guest}: the COPIED flag disagrees with the refcount {rc} of {host:#x}")
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::check::CheckReport;
    use crate::error::{ErrorKind, Result};
    use crate::{Format, MemSource, NoResolver, OpenOptions, open_source};

    /// Clusters of 1 KiB: 0 header, 1 L1 table, 2 refcount table, 3
    /// refcount block, 4 L2 table, 5 and 6 data (guest clusters 0 and 1).
    const CS: usize = 1024;
    const COPIED: u64 = 1 << 63;

    /// One way to break the image.
    type Break = Box<dyn Fn(&mut Vec<u8>)>;

    /// The offset of cluster `n`.
    fn at(n: u64) -> u64 {
        n * CS as u64
    }

    fn put(d: &mut [u8], at: usize, v: u64) {
        d[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// A valid qcow2 version 3 image, built field by field from QEMU's
    /// docs/interop/qcow2.txt.
    fn image() -> Vec<u8> {
        let mut d = vec![0u8; 7 * CS];
        d[..4].copy_from_slice(b"QFI\xfb");
        d[4..8].copy_from_slice(&3u32.to_be_bytes());
        d[20..24].copy_from_slice(&10u32.to_be_bytes()); // cluster_bits
        put(&mut d, 24, at(128)); // size: one L2 table's worth
        d[36..40].copy_from_slice(&1u32.to_be_bytes()); // l1_size
        put(&mut d, 40, CS as u64); // l1_table_offset
        put(&mut d, 48, at(2)); // refcount_table_offset
        d[56..60].copy_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
        d[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16 bits
        d[100..104].copy_from_slice(&104u32.to_be_bytes()); // header_length
        put(&mut d, CS, at(4) | COPIED);
        put(&mut d, 2 * CS, at(3));
        for c in 0..7 {
            d[3 * CS + 2 * c + 1] = 1;
        }
        put(&mut d, 4 * CS, at(5) | COPIED);
        put(&mut d, 4 * CS + 8, at(6) | COPIED);
        d[5 * CS..].fill(0x5a);
        d
    }

    fn check(d: Vec<u8>) -> Result<CheckReport> {
        let src = Arc::new(MemSource::new(d, "test.qcow2"));
        let img = open_source(src, &NoResolver, &OpenOptions { follow: false, format: Some(Format::Qcow2) })?;
        crate::check::check(&img)
    }

    #[test]
    fn the_valid_image_is_clean() {
        let r = check(image()).unwrap();
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!((r.leaked_clusters, r.allocated, r.checked), (0, at(2), "tables"));
    }

    #[test]
    fn each_broken_field_is_a_problem() {
        let l2 = 4 * CS;
        let cases: Vec<(&str, Break)> = vec![
            ("but its refcount is 0", Box::new(|d| d[3 * CS + 11] = 0)),
            (
                "host cluster 1 (offset 0x400) is referenced 2",
                Box::new(move |d| put(d, l2 + 8, CS as u64 | COPIED)),
            ),
            ("cluster 0: the COPIED flag disagrees", Box::new(move |d| put(d, l2, at(5)))),
            ("L1 entry 0: the COPIED flag disagrees", Box::new(|d| put(d, CS, at(4)))),
            ("runs a cluster or more past the end", Box::new(move |d| put(d, l2, at(16) | COPIED))),
            ("offset 0x1600 is not cluster-aligned", Box::new(move |d| put(d, l2, 0x1600 | COPIED))),
            ("has reserved bits set", Box::new(move |d| put(d, l2, at(5) | COPIED | (1 << 57)))),
            ("has reserved bits set", Box::new(|d| put(d, CS, at(4) | COPIED | (1 << 60)))),
            ("the L2 table offset 0x1200 is not cluster-aligned", Box::new(|d| put(d, CS, 0x1200 | COPIED))),
            ("refcount table entry 0 has reserved bits", Box::new(|d| put(d, 2 * CS, at(3) | 8))),
            ("refcount block 0 at 0x19000 lies past the end", Box::new(|d| put(d, 2 * CS, at(100)))),
            ("lies past the end of the file", Box::new(|d| d.truncate(4 * CS + 256))),
            ("the COPIED flag is set", Box::new(move |d| put(d, l2, (1 << 62) | COPIED | at(5)))),
            ("has flags but no L2 table offset", Box::new(|d| put(d, CS, COPIED))),
        ];
        for (want, breaks) in cases {
            let mut d = image();
            breaks(&mut d);
            let r = check(d).unwrap();
            assert!(r.problems.iter().any(|p| p.contains(want)), "want {want:?}, got {:?}", r.problems);
        }
    }

    #[test]
    fn a_leak_is_counted_not_a_problem() {
        // A refcount of 2 for a data cluster used once (its COPIED flag clear,
        // as a refcount other than 1 needs), and a cluster with a refcount that
        // nothing uses: two leaks, as qemu-img check counts them.
        let mut d = image();
        d[3 * CS + 13] = 2;
        put(&mut d, 4 * CS + 8, at(6));
        d.extend_from_slice(&[0u8; CS]);
        d[3 * CS + 15] = 1;
        let r = check(d).unwrap();
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!(r.leaked_clusters, 2);
    }

    #[test]
    fn an_l1_table_past_the_end_of_the_file_cannot_be_checked() {
        let mut d = image();
        put(&mut d, 40, 1 << 30);
        let e = check(d).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Malformed);
        assert!(e.to_string().contains("the L1 table at offset 1073741824"), "{e}");
    }
}
