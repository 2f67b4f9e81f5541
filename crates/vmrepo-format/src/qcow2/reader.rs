//! Reading a qcow2 image's guest bytes through its L1 and L2 tables.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::bytes::be64;
use crate::check::CheckReport;
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, Result, ensure};
use crate::source::{Source, read_vec};

use super::header::{Compression, Header};

/// Bits 9..=55 of an L1 entry: the L2 table's offset.
pub(super) const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9..=55 of a standard L2 entry: the cluster's host offset.
pub(super) const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry flag: the cluster is compressed.
pub(super) const OFLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry flag (version 3, standard entries): the cluster reads as zeros.
pub(super) const OFLAG_ZERO: u64 = 1;
/// L2 entry flag: the cluster's refcount is one. With an external data file,
/// where offset 0 is a valid offset, it tells cluster 0 from "unallocated" (as QEMU does).
pub(super) const OFLAG_COPIED: u64 = 1 << 63;
/// Subclusters per cluster with extended L2 entries.
const SUBCLUSTERS: u64 = 32;
/// Compressed data is counted in sectors of this size.
const COMPRESSED_SECTOR: u64 = 512;
/// Reserved bits of an L1 entry (1..=8 and 56..=62).
pub(super) const L1E_RESERVED: u64 = 0x7f00_0000_0000_01fe;
/// Reserved bits of a standard uncompressed L2 entry (1..=8 and 56..=61).
pub(super) const L2E_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Memory the L2 table cache may hold.
const L2_CACHE_BYTES: u64 = 16 << 20;

/// What one guest stretch is, in this image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Not allocated here: the backing file's, or zeros. With extended L2
    /// entries, an unallocated subcluster of a cluster that has a host offset
    /// carries that offset (QEMU reports it, and so does not merge it with
    /// plainly unallocated space).
    Unallocated(Option<u64>),
    /// Reads as zeros (with the host offset of a preallocated zero cluster).
    Zero(Option<u64>),
    /// Stored at this offset of the data file.
    Data(u64),
    /// A compressed cluster at this offset, of at most this many bytes.
    Compressed(u64, u64),
}

struct L2Cache {
    tables: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
    capacity: usize,
}

/// A qcow2 image as a virtual disk.
pub(crate) struct Qcow2Disk {
    pub(super) src: Arc<dyn Source>,
    pub(super) data: Arc<dyn Source>,
    pub(super) size: u64,
    cluster_bits: u32,
    pub(super) extended_l2: bool,
    compression: Compression,
    pub(super) external_data: bool,
    pub(super) l1: Vec<u64>,
    cache: Mutex<L2Cache>,
    last_cluster: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    backing: Option<Box<dyn Disk>>,
    pub(super) hdr: Header,
}

impl Qcow2Disk {
    pub(crate) fn new(
        src: Arc<dyn Source>,
        data: Arc<dyn Source>,
        hdr: &Header,
        backing: Option<Box<dyn Disk>>,
    ) -> Result<Qcow2Disk> {
        let l1_bytes =
            read_vec(src.as_ref(), hdr.l1_table_offset, u64::from(hdr.l1_size) * 8, "the L1 table")?;
        let l1: Vec<u64> = l1_bytes.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let capacity = usize::try_from((L2_CACHE_BYTES >> hdr.cluster_bits).max(4)).unwrap_or(4);
        Ok(Qcow2Disk {
            external_data: !Arc::ptr_eq(&src, &data),
            src,
            data,
            size: hdr.size,
            cluster_bits: hdr.cluster_bits,
            extended_l2: hdr.extended_l2(),
            compression: hdr.compression,
            l1,
            cache: Mutex::new(L2Cache { tables: HashMap::new(), order: VecDeque::new(), capacity }),
            last_cluster: Mutex::new(None),
            backing,
            hdr: hdr.clone(),
        })
    }

    pub(super) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    pub(super) fn entry_size(&self) -> u64 {
        if self.extended_l2 { 16 } else { 8 }
    }
    pub(super) fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.entry_size()
    }
    fn l1_coverage(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }
    pub(super) fn subcluster_size(&self) -> u64 {
        if self.extended_l2 { self.cluster_size() / SUBCLUSTERS } else { self.cluster_size() }
    }

    /// The L2 table at `offset`, from the cache or the file. A table past the
    /// end of the file reads as zeros (unallocated), as QEMU reads it;
    /// `vmrepo check` reports it.
    fn l2_table(&self, offset: u64, l1_index: usize) -> Result<Arc<Vec<u8>>> {
        ensure!(
            offset.is_multiple_of(self.cluster_size()),
            "the L2 table offset {offset:#x} in L1 entry {l1_index} is not cluster-aligned"
        );
        if let Ok(cache) = self.cache.lock()
            && let Some(t) = cache.tables.get(&offset)
        {
            return Ok(Arc::clone(t));
        }
        let table = Arc::new(read_padded(self.src.as_ref(), offset, self.cluster_size(), "an L2 table")?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.tables.len() >= cache.capacity
                && let Some(old) = cache.order.pop_front()
            {
                cache.tables.remove(&old);
            }
            cache.tables.insert(offset, Arc::clone(&table));
            cache.order.push_back(offset);
        }
        Ok(table)
    }

    /// Where a compressed cluster's data lies, from its L2 entry: the host
    /// offset and the most bytes it may take (whole sectors from there).
    pub(super) fn compressed_extent(&self, entry: u64) -> (u64, u64) {
        let shift = 62 - (self.cluster_bits - 8);
        let mask = (1u64 << (self.cluster_bits - 8)) - 1;
        let host = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & mask) + 1;
        (host, (sectors * COMPRESSED_SECTOR).saturating_sub(host % COMPRESSED_SECTOR))
    }

    /// Classifies unit `index` (a cluster, or a subcluster with extended L2)
    /// of an L2 table.
    fn classify(&self, table: &[u8], cluster: u64, sub: u64) -> Result<Run> {
        let at = usize::try_from(cluster * self.entry_size())
            .map_err(|_| Error::malformed("L2 index overflows"))?;
        let entry = be64(table, at);
        if entry & OFLAG_COMPRESSED != 0 {
            ensure!(!self.external_data, "a compressed cluster in an image with an external data file");
            let (host, size) = self.compressed_extent(entry);
            return Ok(Run::Compressed(host, size));
        }
        let host = entry & L2E_OFFSET_MASK;
        let at_zero_in_data_file = host == 0 && self.external_data && entry & OFLAG_COPIED != 0;
        if self.extended_l2 {
            let bitmap = be64(table, at + 8);
            let alloc = bitmap >> sub & 1 != 0;
            let zero = bitmap >> (32 + sub) & 1 != 0;
            ensure!(!(alloc && zero), "subcluster {sub} of cluster {cluster} is both allocated and zero");
            let sub_host = (host != 0).then(|| host + sub * self.subcluster_size());
            if alloc {
                ensure!(
                    host != 0 || at_zero_in_data_file,
                    "subcluster {sub} is allocated in a cluster without an offset"
                );
                ensure!(
                    host.is_multiple_of(self.cluster_size()),
                    "cluster offset {host:#x} is not cluster-aligned"
                );
                return Ok(Run::Data(host + sub * self.subcluster_size()));
            }
            return Ok(if zero { Run::Zero(sub_host) } else { Run::Unallocated(sub_host) });
        }
        if entry & OFLAG_ZERO != 0 {
            return Ok(Run::Zero((host != 0).then_some(host)));
        }
        if host == 0 && !at_zero_in_data_file {
            return Ok(Run::Unallocated(None));
        }
        ensure!(host.is_multiple_of(self.cluster_size()), "cluster offset {host:#x} is not cluster-aligned");
        Ok(Run::Data(host))
    }

    /// What the guest stretch at `pos` is, and for how long (at most `max`,
    /// never past the end of one L2 table, one cluster for compressed data).
    fn lookup(&self, pos: u64, max: u64) -> Result<(Run, u64)> {
        let cov = self.l1_coverage();
        let l1_index = usize::try_from(pos / cov).map_err(|_| Error::malformed("L1 index overflows"))?;
        let limit = pos.saturating_add(max).min(self.size);
        let Some(&l1e) = self.l1.get(l1_index) else {
            return Ok((Run::Unallocated(None), limit - pos));
        };
        let l2_off = l1e & L1E_OFFSET_MASK;
        if l2_off == 0 {
            // Skip every following empty L1 entry in one go.
            let mut next = l1_index + 1;
            while next < self.l1.len() && self.l1[next] & L1E_OFFSET_MASK == 0 && (next as u64) * cov < limit
            {
                next += 1;
            }
            let end = (next as u64).saturating_mul(cov).min(limit);
            return Ok((Run::Unallocated(None), end - pos));
        }
        let table = self.l2_table(l2_off, l1_index)?;
        let unit = self.subcluster_size();
        let table_end = ((l1_index as u64) + 1).saturating_mul(cov).min(limit);
        let units_per_cluster = self.cluster_size() / unit;
        let unit_at = |p: u64| {
            let in_table = p % cov;
            (in_table / self.cluster_size(), (in_table % self.cluster_size()) / unit)
        };
        let (c, s) = unit_at(pos);
        let first = self.classify(&table, c, s)?;
        let unit_start = pos - pos % unit;
        if let Run::Compressed(..) = first {
            let cluster_end = (pos - pos % self.cluster_size()) + self.cluster_size();
            return Ok((first, cluster_end.min(limit) - pos));
        }
        // Extend over following units of the same kind (contiguous for data).
        let mut end = unit_start + unit;
        while end < table_end {
            let (c, s) = unit_at(end);
            let next = self.classify(&table, c, s)?;
            let step = end - unit_start;
            let same = match (first, next) {
                (Run::Data(a), Run::Data(b)) => b == a + step,
                (Run::Zero(Some(a)), Run::Zero(Some(b)))
                | (Run::Unallocated(Some(a)), Run::Unallocated(Some(b))) => b == a + step,
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            end += unit;
            let _ = units_per_cluster;
        }
        let len = end.min(limit) - pos;
        let within = pos - unit_start;
        Ok(match first {
            Run::Data(host) => (Run::Data(host + within), len),
            Run::Zero(Some(host)) => (Run::Zero(Some(host + within)), len),
            Run::Unallocated(Some(host)) => (Run::Unallocated(Some(host + within)), len),
            other => (other, len),
        })
    }

    fn decompress(&self, host: u64, size: u64) -> Result<Arc<Vec<u8>>> {
        if let Ok(last) = self.last_cluster.lock()
            && let Some((h, data)) = last.as_ref()
            && *h == host
        {
            return Ok(Arc::clone(data));
        }
        let input = read_padded(self.src.as_ref(), host, size, "a compressed cluster")?;
        let cs = usize::try_from(self.cluster_size()).map_err(|_| Error::malformed("cluster size"))?;
        let out = match self.compression {
            Compression::Zlib => crate::compress::inflate_exact(&input, cs, false),
            Compression::Zstd => crate::compress::zstd_exact(&input, cs),
        }
        .map_err(|e| {
            Error::malformed(format!("the compressed cluster at offset {host:#x} does not decompress: {e}"))
        })?;
        let out = Arc::new(out);
        if let Ok(mut last) = self.last_cluster.lock() {
            *last = Some((host, Arc::clone(&out)));
        }
        Ok(out)
    }

    /// Bytes a table of standard L2 entries allocates (a constant-size loop:
    /// it runs over every entry of every table).
    fn count_standard(&self, table: &[u8]) -> u64 {
        let data_file = self.hdr.has_data_file();
        let allocated = |e: &[u8]| -> u64 {
            let entry = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let stored = entry & L2E_OFFSET_MASK != 0 || data_file && entry & OFLAG_COPIED != 0;
            u64::from(entry & OFLAG_COMPRESSED != 0 || entry & OFLAG_ZERO == 0 && stored)
        };
        let mut clusters = 0u64;
        // Eight entries at a time; an empty stretch (most of a sparse image's
        // tables) is skipped with one comparison.
        for group in table.chunks_exact(64) {
            if group == [0u8; 64] {
                continue;
            }
            clusters += group.chunks_exact(8).map(allocated).sum::<u64>();
        }
        clusters * self.cluster_size()
    }

    /// Bytes a table of extended L2 entries allocates.
    fn count_extended(&self, table: &[u8]) -> u64 {
        let mut n = 0u64;
        for e in table.chunks_exact(16) {
            let entry = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            if entry & OFLAG_COMPRESSED != 0 {
                n += self.cluster_size();
            } else {
                let bitmap = u64::from_be_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
                n += u64::from((bitmap & 0xffff_ffff).count_ones()) * self.subcluster_size();
            }
        }
        n
    }

    /// Guest bytes allocated in this image according to its tables: data and
    /// compressed clusters (allocated subclusters with extended L2 entries).
    pub(crate) fn allocated_bytes(&self) -> Result<u64> {
        let mut per_table: HashMap<u64, u64> = HashMap::new();
        let mut total = 0u64;
        // One buffer for every table: each is read once and not cached.
        let mut table = vec![0u8; usize::try_from(self.cluster_size()).unwrap_or(0)];
        for (i, &l1e) in self.l1.iter().enumerate() {
            let off = l1e & L1E_OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if let Some(n) = per_table.get(&off) {
                total = total.saturating_add(*n);
                continue;
            }
            ensure!(
                off.is_multiple_of(self.cluster_size()),
                "the L2 table offset {off:#x} in L1 entry {i} is not cluster-aligned"
            );
            read_into_padded(self.src.as_ref(), &mut table, off, "an L2 table")?;
            let n = if self.extended_l2 { self.count_extended(&table) } else { self.count_standard(&table) };
            per_table.insert(off, n);
            total = total.saturating_add(n);
        }
        Ok(total.min(self.size))
    }
}

/// Reads `len` bytes at `offset`; what lies past the end of the file reads as
/// zeros (QEMU reads it so too). `len` is at most twice a cluster.
fn read_padded(src: &dyn Source, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(|_| Error::too_large(format!("{what}: {len} bytes")))?;
    let mut buf = vec![0u8; n];
    read_into_padded(src, &mut buf, offset, what)?;
    Ok(buf)
}

/// Fills `out` from `offset`, zeros past the end of the file.
pub(super) fn read_into_padded(src: &dyn Source, out: &mut [u8], offset: u64, what: &str) -> Result<()> {
    let avail = src.len().saturating_sub(offset).min(out.len() as u64);
    let m = usize::try_from(avail).unwrap_or(0);
    let (head, tail) = out.split_at_mut(m);
    if !head.is_empty() {
        src.read_exact_at(head, offset)
            .map_err(|e| Error::io(format!("cannot read {what} at offset {offset}"), e))?;
    }
    tail.fill(0);
    Ok(())
}

impl Disk for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let (run, len) = self.lookup(pos, want)?;
            let n = usize::try_from(len.min(want)).unwrap_or(0).max(1);
            let out = &mut buf[done..done + n];
            match run {
                Run::Zero(_) => out.fill(0),
                Run::Unallocated(_) => match &self.backing {
                    Some(b) => {
                        // The backing file may be smaller than this image.
                        let avail = b.size().saturating_sub(pos).min(n as u64);
                        let k = usize::try_from(avail).unwrap_or(0);
                        if k > 0 {
                            b.read_at(&mut out[..k], pos)?;
                        }
                        out[k..].fill(0);
                    }
                    None => out.fill(0),
                },
                Run::Data(host) => read_into_padded(self.data.as_ref(), out, host, "a data cluster")?,
                Run::Compressed(host, size) => {
                    let cluster = self.decompress(host, size)?;
                    let within = usize::try_from(pos % self.cluster_size()).unwrap_or(0);
                    out.copy_from_slice(&cluster[within..within + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let (run, len) = self.lookup(offset, max_len)?;
        Ok(match run {
            Run::Unallocated(host) if self.backing.is_some() => MapExtent {
                start: offset,
                length: len,
                present: false,
                zero: false,
                data: false,
                compressed: false,
                offset: host,
            },
            Run::Unallocated(host) => {
                MapExtent { offset: host, ..MapExtent::unallocated(offset, len, false) }
            }
            Run::Zero(host) => MapExtent { offset: host, ..MapExtent::zeroed(offset, len) },
            Run::Data(host) => MapExtent::data(offset, len, Some(host)),
            Run::Compressed(..) => MapExtent { compressed: true, ..MapExtent::data(offset, len, None) },
        })
    }

    fn check(&self) -> Result<CheckReport> {
        super::check::check(self)
    }
}
