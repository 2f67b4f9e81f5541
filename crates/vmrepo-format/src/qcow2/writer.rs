//! The qcow2 writer: version 3, streamed, appended in one pass.
//!
//! The file grows only at its end, in this order: cluster 0 is kept for the
//! header (written last); then, in guest order, the data clusters as
//! [`for_each_nonzero`] hands them out, each L2 table once the guest has
//! passed the range it maps, and each refcount block once the host clusters
//! it counts are all allocated; at the end the L1 table, the last refcount
//! blocks and the refcount table. In memory there are one L2 table, one
//! refcount block (the window of the host clusters being allocated), the L1
//! table (8 bytes per L2 range, at most [`MAX_L1_BYTES`]) and the refcount
//! table (8 bytes per refcount block, a quarter of the L1 table's size for a
//! file of the guest's size).
//!
//! Compressed clusters are packed back to back, across host cluster
//! boundaries; every compressed cluster touching a host cluster counts once
//! in its refcount, as `qemu-img check` counts them. A cluster that does not
//! compress to less than a cluster is stored as it is, aligned, as QEMU does.
//! Metadata clusters (L2 tables, refcount blocks) are aligned to the next
//! cluster, leaving the rest of a partly filled one unused, as QEMU does.

use std::collections::VecDeque;
use std::fs::File;

use super::header::{
    INCOMPAT_COMPRESSION, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS,
};
use crate::disk::Disk;
use crate::error::{Error, Result, ensure};
use crate::write::{Compression, WriteCtx, for_each_nonzero, parallel_ordered, write_at};

/// "QFI\xfb".
const QCOW_MAGIC: u32 = 0x5146_49fb;
const VERSION: u32 = 3;
/// 16-bit refcounts, QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
/// The version 3 header with the compression type byte and its padding, as
/// QEMU writes it since 5.1; the end-of-extensions marker follows (zeros).
const HEADER_LENGTH: u32 = 112;
/// `compression_type` values (header byte 104).
const COMPRESSION_TYPE_ZLIB: u8 = 0;
const COMPRESSION_TYPE_ZSTD: u8 = 1;
/// L1 and standard L2 entries: the cluster's refcount is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entries: a compressed cluster descriptor.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bytes of an L1, L2 or refcount table entry.
const TABLE_ENTRY: u64 = 8;
/// A refcount entry (refcount order 4): 2 bytes.
const REFCOUNT_ENTRY: u64 = 2;
/// Compressed sizes are counted in 512-byte sectors.
const SECTOR: u64 = 512;
/// The write buffer is written out once it holds this much.
const FLUSH_AT: usize = 4 << 20;
/// Padding this long is left as a hole rather than written as zeros.
const HOLE_AT: u64 = 64 << 10;
/// Guest bytes handed to a compression thread at a time (or one cluster).
const BATCH_BYTES: usize = 1 << 20;
/// Raw DEFLATE with a 4 KiB window: QEMU inflates with `windowBits = -12`,
/// so a larger window would not read back.
const ZLIB_WINDOW_BITS: u8 = 12;
/// DEFLATE level 2: zlib-rs's fast strategy with dynamic Huffman codes,
/// several times faster than QEMU's level 6 (`Z_DEFAULT_COMPRESSION`) for
/// a few percent more output, as a conversion at ≤ 0.6 × qemu-img's time
/// needs. Level 1 (zlib-rs's "quick", static codes) is faster still but
/// its output was 29 % larger than QEMU's on a disk of system files.
const ZLIB_LEVEL: u32 = 2;
/// zstd level 1: faster than QEMU's default level 3, and its output on disk
/// images only slightly larger.
const ZSTD_LEVEL: i32 = 1;

/// The output's geometry, checked once.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    cluster_bits: u32,
    cluster_size: u64,
    /// The virtual size written: the disk's size rounded up to 512 bytes.
    size: u64,
    l1_size: u64,
}

impl Geometry {
    /// QEMU's block layer counts disks in 512-byte sectors: `qemu-img
    /// convert` of a 1000-byte raw file writes a qcow2 of 1024 bytes, and a
    /// header size of 1000 would read back as 512. The size is rounded up
    /// the same way.
    fn new(disk_size: u64, cluster_size: u32) -> Result<Geometry> {
        let cluster_bits = cluster_size.trailing_zeros();
        if !cluster_size.is_power_of_two() || !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::unsupported(format!(
                "qcow2 cluster size {cluster_size}: a power of two from 512 bytes to 2 MiB"
            )));
        }
        let cluster_size = u64::from(cluster_size);
        let size = disk_size.checked_next_multiple_of(SECTOR).filter(|s| *s <= MAX_VIRTUAL_SIZE).ok_or_else(
            || Error::too_large(format!("a disk of {disk_size} bytes, more than qcow2 allows")),
        )?;
        let coverage = cluster_size * (cluster_size / TABLE_ENTRY);
        let l1_size = size.div_ceil(coverage);
        if l1_size * TABLE_ENTRY > MAX_L1_BYTES {
            return Err(Error::too_large(format!(
                "a disk of {size} bytes needs an L1 table of {l1_size} entries with {cluster_size}-byte \
                 clusters, more than QEMU's {}: choose larger clusters",
                MAX_L1_BYTES / TABLE_ENTRY
            )));
        }
        Ok(Geometry { cluster_bits, cluster_size, size, l1_size })
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size / TABLE_ENTRY
    }

    /// Guest bytes one L2 table maps.
    fn l2_coverage(&self) -> u64 {
        self.cluster_size * self.l2_entries()
    }

    /// Host clusters one refcount block counts.
    fn refblock_entries(&self) -> u64 {
        self.cluster_size / REFCOUNT_ENTRY
    }

    /// Bit position of the sector count in a compressed cluster descriptor
    /// (the spec's `x = 62 - (cluster_bits - 8)`); the host offset is below.
    fn csize_shift(&self) -> u32 {
        70 - self.cluster_bits
    }

    /// The L2 entry of a compressed cluster of `len` bytes at `offset`:
    /// the offset and the number of 512-byte sectors after the first that
    /// the data touches.
    fn compressed_entry(&self, offset: u64, len: u64) -> Result<u64> {
        let x = self.csize_shift();
        ensure!(offset < 1u64 << x, "host offset {offset} is past what a compressed cluster can address");
        ensure!(len > 0 && len < self.cluster_size, "a compressed cluster of {len} bytes");
        let additional = (offset + len - 1) / SECTOR - offset / SECTOR;
        Ok(OFLAG_COMPRESSED | additional << x | offset)
    }
}

/// Writes `disk` as qcow2 v3 with clusters of `cluster_size` bytes, every data
/// cluster compressed with `compression` if given. Returns the guest bytes written.
///
/// # Errors
/// A cluster size qcow2 does not allow, a disk too large for the format or
/// for an L1 table of QEMU's largest size, reading the source or writing
/// `out` fails, or the write is cancelled.
pub(crate) fn write(
    disk: &dyn Disk,
    cluster_size: u32,
    compression: Option<Compression>,
    out: &File,
    ctx: &WriteCtx<'_>,
) -> Result<u64> {
    let geo = Geometry::new(disk.size(), cluster_size)?;
    let grain = usize::try_from(geo.cluster_size).map_err(|_| Error::unsupported("cluster size"))?;
    let mut host = Host::new(out, geo);
    let mut tables = Tables::new(geo);
    let handed = match compression {
        None => for_each_nonzero(disk, grain, ctx, &mut |guest, data| {
            tables.put(&mut host, guest, Stored::Raw(data))
        })?,
        Some(c) => write_compressed(disk, &geo, c, ctx, &mut host, &mut tables)?,
    };
    ctx.check_cancel()?;
    tables.flush_l2(&mut host)?;
    let l1_offset = tables.write_l1(&mut host)?;
    host.drain_refblocks()?;
    let (rt_offset, rt_clusters) = host.finish()?;
    let header = header_bytes(&geo, compression, l1_offset, rt_offset, rt_clusters);
    write_at(out, &header, 0)?;
    Ok(handed)
}

/// The header and the end-of-extensions marker after it.
fn header_bytes(
    geo: &Geometry,
    compression: Option<Compression>,
    l1_offset: u64,
    rt_offset: u64,
    rt_clusters: u32,
) -> [u8; HEADER_LENGTH as usize + 8] {
    let mut h = [0u8; HEADER_LENGTH as usize + 8];
    let zstd = compression == Some(Compression::Zstd);
    h[0..4].copy_from_slice(&QCOW_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&VERSION.to_be_bytes());
    // 8..20: no backing file.
    h[20..24].copy_from_slice(&geo.cluster_bits.to_be_bytes());
    h[24..32].copy_from_slice(&geo.size.to_be_bytes());
    // 32..36: crypt_method 0. The L1 size is at most MAX_L1_BYTES / 8.
    h[36..40].copy_from_slice(&u32::try_from(geo.l1_size).unwrap_or(u32::MAX).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&rt_offset.to_be_bytes());
    h[56..60].copy_from_slice(&rt_clusters.to_be_bytes());
    // 60..72: no snapshots.
    let incompatible = if zstd { INCOMPAT_COMPRESSION } else { 0 };
    h[72..80].copy_from_slice(&incompatible.to_be_bytes());
    // 80..96: no compatible (lazy refcounts) nor autoclear features.
    h[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    h[104] = if zstd { COMPRESSION_TYPE_ZSTD } else { COMPRESSION_TYPE_ZLIB };
    h
}

/// A data cluster as stored.
enum Stored<'a> {
    /// As it is, in a cluster of its own.
    Raw(&'a [u8]),
    /// Compressed, packed after the previous compressed data.
    Compressed(&'a [u8]),
}

/// The L1 table and the L2 table being filled.
struct Tables {
    geo: Geometry,
    /// L1 entries up to the last L2 table written (zeros after).
    l1: Vec<u64>,
    l2_index: u64,
    l2: Vec<u64>,
    l2_used: bool,
}

impl Tables {
    fn new(geo: Geometry) -> Tables {
        let n = usize::try_from(geo.l2_entries()).unwrap_or(0);
        Tables { geo, l1: Vec::new(), l2_index: 0, l2: vec![0; n], l2_used: false }
    }

    /// Stores the cluster at guest offset `guest` and maps it.
    fn put(&mut self, host: &mut Host<'_>, guest: u64, data: Stored<'_>) -> Result<()> {
        let index = guest / self.geo.l2_coverage();
        ensure!(index < self.geo.l1_size, "guest offset {guest} is past the disk's end");
        if index != self.l2_index {
            self.flush_l2(host)?;
            self.l2_index = index;
        }
        let entry = match data {
            Stored::Raw(d) => host.append_cluster(d)? | OFLAG_COPIED,
            Stored::Compressed(d) => {
                let offset = host.append_compressed(d)?;
                self.geo.compressed_entry(offset, d.len() as u64)?
            }
        };
        host.drain_refblocks()?;
        let slot = usize::try_from(guest / self.geo.cluster_size % self.geo.l2_entries()).unwrap_or(0);
        self.l2[slot] = entry;
        self.l2_used = true;
        Ok(())
    }

    /// Writes the L2 table being filled, if it maps anything.
    fn flush_l2(&mut self, host: &mut Host<'_>) -> Result<()> {
        if !self.l2_used {
            return Ok(());
        }
        let bytes: Vec<u8> = self.l2.iter().flat_map(|e| e.to_be_bytes()).collect();
        let offset = host.append_cluster(&bytes)?;
        host.drain_refblocks()?;
        let index = usize::try_from(self.l2_index).map_err(|_| Error::too_large("L1 index"))?;
        if self.l1.len() <= index {
            self.l1.resize(index + 1, 0);
        }
        self.l1[index] = offset | OFLAG_COPIED;
        self.l2.fill(0);
        self.l2_used = false;
        Ok(())
    }

    /// Appends the L1 table (contiguous); returns its offset, 0 if empty.
    fn write_l1(&mut self, host: &mut Host<'_>) -> Result<u64> {
        if self.geo.l1_size == 0 {
            return Ok(0);
        }
        let per_cluster = usize::try_from(self.geo.l2_entries()).map_err(|_| Error::too_large("L1"))?;
        let clusters = (self.geo.l1_size * TABLE_ENTRY).div_ceil(self.geo.cluster_size);
        let mut first = None;
        let mut bytes = Vec::with_capacity(per_cluster * 8);
        for i in 0..usize::try_from(clusters).map_err(|_| Error::too_large("L1"))? {
            bytes.clear();
            let from = (i * per_cluster).min(self.l1.len());
            let to = ((i + 1) * per_cluster).min(self.l1.len());
            bytes.extend(self.l1[from..to].iter().flat_map(|e| e.to_be_bytes()));
            let offset = host.append_cluster(&bytes)?;
            first.get_or_insert(offset);
        }
        Ok(first.unwrap_or(0))
    }
}

/// The output file, grown at its end through a write buffer, with the
/// refcounts of its clusters.
struct Host<'a> {
    out: &'a File,
    geo: Geometry,
    buf: crate::IoBuf,
    buf_start: u64,
    refs: Refcounts,
}

impl<'a> Host<'a> {
    /// A file whose cluster 0 is kept for the header.
    fn new(out: &'a File, geo: Geometry) -> Host<'a> {
        let mut refs = Refcounts::new(geo.refblock_entries());
        // Cluster 0 is the first counted: the window is block 0, empty.
        let _ = refs.add(0);
        Host {
            out,
            geo,
            buf: crate::IoBuf::with_capacity(FLUSH_AT + 2 * geo.cluster_size as usize),
            buf_start: geo.cluster_size,
            refs,
        }
    }

    fn end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Writes out the buffer, leaving its [`HOLE_AT`]-aligned stretches of
    /// zeros as holes: the unused part of a large cluster (a 2 MiB cluster
    /// holding a 4 KiB file, a mostly empty table) takes no room, as when
    /// QEMU writes it. The file's length is set by [`Host::finish`].
    fn flush(&mut self) -> Result<()> {
        let hole = HOLE_AT as usize;
        let mut pos = 0;
        let mut run_start = None;
        while pos < self.buf.len() {
            // To the next HOLE_AT boundary of the file.
            let next = (self.buf_start + pos as u64 + 1).next_multiple_of(HOLE_AT);
            let end = (pos + (next - self.buf_start - pos as u64) as usize).min(self.buf.len());
            let piece = &self.buf[pos..end];
            if piece.len() == hole && crate::cat::is_zero(piece) {
                if let Some(from) = run_start.take() {
                    write_at(self.out, &self.buf[from..pos], self.buf_start + from as u64)?;
                }
            } else {
                run_start.get_or_insert(pos);
            }
            pos = end;
        }
        if let Some(from) = run_start {
            write_at(self.out, &self.buf[from..], self.buf_start + from as u64)?;
        }
        self.buf_start = self.end();
        self.buf.clear();
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_AT { self.flush() } else { Ok(()) }
    }

    /// Pads the file to the next cluster boundary. The padding lies in a
    /// cluster that compressed data already counts; a long one is left as a
    /// hole.
    fn align(&mut self) -> Result<()> {
        let pad = self.end().next_multiple_of(self.geo.cluster_size) - self.end();
        if pad >= HOLE_AT {
            self.flush()?;
            self.buf_start += pad;
        } else {
            self.buf.resize(self.buf.len() + pad as usize, 0);
        }
        Ok(())
    }

    /// Appends one cluster (`data` zero-padded to a cluster), aligned.
    fn append_cluster(&mut self, data: &[u8]) -> Result<u64> {
        self.align()?;
        let offset = self.end();
        let cs = self.geo.cluster_size as usize;
        self.buf.extend_from_slice(&data[..data.len().min(cs)]);
        self.buf.resize(self.buf.len() + cs - data.len().min(cs), 0);
        self.refs.add(offset / self.geo.cluster_size)?;
        self.maybe_flush()?;
        Ok(offset)
    }

    /// Appends compressed data right after the previous, unless the host
    /// cluster it would start in is already counted as often as a 16-bit
    /// refcount allows.
    fn append_compressed(&mut self, data: &[u8]) -> Result<u64> {
        let cs = self.geo.cluster_size;
        if !self.end().is_multiple_of(cs) && self.refs.get(self.end() / cs) == u16::MAX {
            self.align()?;
        }
        let offset = self.end();
        self.buf.extend_from_slice(data);
        let last = (offset + data.len() as u64 - 1) / cs;
        for c in offset / cs..=last {
            self.refs.add(c)?;
        }
        self.maybe_flush()?;
        Ok(offset)
    }

    /// Writes the refcount blocks that are complete: every cluster they
    /// count has been allocated (clusters are allocated in order).
    fn drain_refblocks(&mut self) -> Result<()> {
        while let Some((index, block)) = self.refs.pending.pop_front() {
            ensure!(self.refs.table.len() as u64 == index, "refcount block {index} out of order");
            let offset = self.append_cluster(&refblock_bytes(&block))?;
            self.refs.table.push(offset);
        }
        Ok(())
    }

    /// Appends the last refcount blocks and the refcount table, enough of
    /// both to count every cluster including themselves, and writes out the
    /// buffer. Returns the table's offset and length in clusters.
    fn finish(&mut self) -> Result<(u64, u32)> {
        self.align()?;
        let cs = self.geo.cluster_size;
        let per_block = self.geo.refblock_entries();
        let window = self.refs.window_index;
        ensure!(
            self.refs.pending.is_empty() && self.refs.table.len() as u64 == window,
            "refcount blocks before the last are not all written"
        );
        let used = self.end() / cs;
        // Blocks from the window on, and table clusters, until they count themselves.
        let (mut blocks, mut table_clusters) = (0u64, 0u64);
        loop {
            let total = used + (blocks - window.min(blocks)) + table_clusters;
            let need_blocks = total.div_ceil(per_block);
            let need_table = (need_blocks * TABLE_ENTRY).div_ceil(cs);
            if need_blocks == blocks && need_table == table_clusters {
                break;
            }
            (blocks, table_clusters) = (need_blocks.max(window + 1), need_table);
        }
        let new_blocks = blocks - window;
        let tail_end = used + new_blocks + table_clusters;
        for b in window..blocks {
            let mut block = if b == window {
                std::mem::take(&mut self.refs.window)
            } else {
                vec![0u16; per_block as usize]
            };
            for c in used.max(b * per_block)..tail_end.min((b + 1) * per_block) {
                block[(c - b * per_block) as usize] = 1;
            }
            let offset = self.end();
            self.buf.extend_from_slice(&refblock_bytes(&block));
            self.refs.table.push(offset);
            self.maybe_flush()?;
        }
        let rt_offset = self.end();
        let rt_bytes = table_clusters * cs;
        let table = std::mem::take(&mut self.refs.table);
        for chunk in table.chunks(FLUSH_AT / 8) {
            self.buf.extend(chunk.iter().flat_map(|e| e.to_be_bytes()));
            self.maybe_flush()?;
        }
        self.buf.resize((rt_offset + rt_bytes - self.buf_start) as usize, 0);
        ensure!(self.end() == tail_end * cs, "the refcount table does not end where it was counted to");
        self.flush()?;
        self.out.set_len(self.end()).map_err(|e| Error::io("cannot set the output's length", e))?;
        let rt_clusters =
            u32::try_from(table_clusters).map_err(|_| Error::too_large("the refcount table is too large"))?;
        Ok((rt_offset, rt_clusters))
    }
}

fn refblock_bytes(block: &[u16]) -> Vec<u8> {
    block.iter().flat_map(|r| r.to_be_bytes()).collect()
}

/// The refcounts: one block in memory (the window), the blocks complete
/// but not yet written, and the offsets of those written (the refcount
/// table).
struct Refcounts {
    per_block: u64,
    window_index: u64,
    window: Vec<u16>,
    pending: VecDeque<(u64, Vec<u16>)>,
    table: Vec<u64>,
}

impl Refcounts {
    fn new(per_block: u64) -> Refcounts {
        Refcounts {
            per_block,
            window_index: 0,
            window: vec![0; per_block as usize],
            pending: VecDeque::new(),
            table: Vec::new(),
        }
    }

    /// Counts one more reference to host cluster `cluster`, which is never
    /// below the window (clusters are allocated in increasing order).
    fn add(&mut self, cluster: u64) -> Result<()> {
        ensure!(
            cluster >= self.window_index * self.per_block,
            "host cluster {cluster} counted after its block"
        );
        while cluster >= (self.window_index + 1) * self.per_block {
            let done = std::mem::replace(&mut self.window, vec![0; self.per_block as usize]);
            self.pending.push_back((self.window_index, done));
            self.window_index += 1;
        }
        let slot = &mut self.window[(cluster - self.window_index * self.per_block) as usize];
        *slot = slot.checked_add(1).ok_or_else(|| Error::too_large("a 16-bit refcount overflows"))?;
        Ok(())
    }

    /// The refcount of a cluster in the window (0 past it).
    fn get(&self, cluster: u64) -> u16 {
        cluster
            .checked_sub(self.window_index * self.per_block)
            .and_then(|i| self.window.get(usize::try_from(i).ok()?))
            .copied()
            .unwrap_or(0)
    }
}

/// Consecutive nonzero clusters for one compression thread.
struct Batch {
    guests: Vec<u64>,
    data: Vec<u8>,
}

/// A compressed batch: per cluster, its compressed span in `packed`, or
/// `None` to store it as it is.
struct Packed {
    batch: Batch,
    packed: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

/// Reads, compresses on `ctx.threads` threads and stores in guest order.
fn write_compressed(
    disk: &dyn Disk,
    geo: &Geometry,
    compression: Compression,
    ctx: &WriteCtx<'_>,
    host: &mut Host<'_>,
    tables: &mut Tables,
) -> Result<u64> {
    let cs = geo.cluster_size as usize;
    let per_batch = (BATCH_BYTES / cs).max(1);
    let mut handed = 0;
    parallel_ordered(
        ctx.threads,
        &|batch: Batch| compress_batch(batch, cs, compression),
        &mut |push| {
            let mut batch = Batch { guests: Vec::new(), data: Vec::new() };
            handed = for_each_nonzero(disk, cs, ctx, &mut |guest, data| {
                batch.guests.push(guest);
                batch.data.extend_from_slice(data);
                if batch.guests.len() >= per_batch {
                    push(std::mem::replace(&mut batch, Batch { guests: Vec::new(), data: Vec::new() }))?;
                }
                Ok(())
            })?;
            if batch.guests.is_empty() { Ok(()) } else { push(batch) }
        },
        &mut |p: Packed| {
            for (i, (guest, span)) in p.batch.guests.iter().zip(&p.spans).enumerate() {
                let stored = match *span {
                    Some((from, len)) => Stored::Compressed(&p.packed[from..from + len]),
                    None => Stored::Raw(&p.batch.data[i * cs..(i + 1) * cs]),
                };
                tables.put(host, *guest, stored)?;
            }
            Ok(())
        },
    )?;
    Ok(handed)
}

/// Compresses each cluster of `batch` into at most `cluster_size - 1`
/// bytes, or leaves it to be stored as it is (QEMU's rule).
fn compress_batch(batch: Batch, cs: usize, compression: Compression) -> Result<Packed> {
    let mut packed = Vec::with_capacity(batch.data.len() / 2);
    let mut spans = Vec::with_capacity(batch.guests.len());
    let mut scratch: Vec<u8> = Vec::with_capacity(cs - 1);
    match compression {
        Compression::Zlib => {
            let level = flate2::Compression::new(ZLIB_LEVEL);
            for cluster in batch.data.chunks(cs) {
                // A new compressor for each cluster: flate2's reset on zlib-rs
                // forgets the 4 KiB window (and then overruns its buffers).
                let mut z = flate2::Compress::new_with_window_bits(level, false, ZLIB_WINDOW_BITS);
                scratch.clear();
                let done = matches!(
                    z.compress_vec(cluster, &mut scratch, flate2::FlushCompress::Finish),
                    Ok(flate2::Status::StreamEnd)
                );
                spans.push(keep(done, &scratch, cs, &mut packed));
            }
        }
        Compression::Zstd => {
            let mut z = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| Error::io("cannot start a zstd compressor", e))?;
            for cluster in batch.data.chunks(cs) {
                scratch.clear();
                let done = z.compress_to_buffer(cluster, &mut scratch).is_ok();
                spans.push(keep(done, &scratch, cs, &mut packed));
            }
        }
    }
    Ok(Packed { batch, packed, spans })
}

/// Keeps compressed output shorter than a cluster in `packed`.
fn keep(done: bool, out: &[u8], cs: usize, packed: &mut Vec<u8>) -> Option<(usize, usize)> {
    if !done || out.is_empty() || out.len() >= cs {
        return None;
    }
    let from = packed.len();
    packed.extend_from_slice(out);
    Some((from, out.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{be32, be64};

    #[test]
    fn geometry_rounds_to_sectors_and_caps_the_l1_table() {
        let g = Geometry::new(1000, 65536).unwrap();
        assert_eq!((g.size, g.l1_size, g.cluster_bits), (1024, 1, 16));
        assert_eq!(Geometry::new(0, 65536).unwrap().l1_size, 0);
        // 512-byte clusters: an L2 table maps 32 KiB, the L1 cap 4 Mi entries = 128 GiB.
        assert!(Geometry::new(128 << 30, 512).is_ok());
        let e = Geometry::new((128 << 30) + 512, 512).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::TooLarge, "{e}");
        assert_eq!(Geometry::new(u64::MAX, 65536).unwrap_err().kind(), crate::ErrorKind::TooLarge);
        assert_eq!(Geometry::new(1 << 20, 1000).unwrap_err().kind(), crate::ErrorKind::Unsupported);
        assert_eq!(Geometry::new(1 << 20, 4 << 20).unwrap_err().kind(), crate::ErrorKind::Unsupported);
    }

    #[test]
    fn compressed_descriptor_as_the_spec_says() {
        let g = Geometry::new(1 << 30, 65536).unwrap();
        // x = 62 - (16 - 8) = 54; 100 bytes at 0x10_0000 + 500 touch 2 sectors: 1 more.
        let e = g.compressed_entry(0x10_0000 + 500, 100).unwrap();
        assert_eq!(e >> 62, 1);
        assert_eq!(e & ((1 << 54) - 1), 0x10_0000 + 500);
        assert_eq!((e >> 54) & 0xff, 1);
        assert_eq!((g.compressed_entry(0x10_0000, 512).unwrap() >> 54) & 0xff, 0);
        assert!(g.compressed_entry(0, 65536).is_err());
    }

    #[test]
    fn header_fields_at_the_spec_offsets() {
        let g = Geometry::new(5 << 30, 65536).unwrap();
        let h = header_bytes(&g, Some(Compression::Zstd), 0x30000, 0x40000, 2);
        assert_eq!(&h[0..4], b"QFI\xfb");
        assert_eq!(be32(&h, 4), 3);
        assert_eq!(be32(&h, 20), 16);
        assert_eq!(be64(&h, 24), 5 << 30);
        assert_eq!(be32(&h, 36), 10);
        assert_eq!(be64(&h, 40), 0x30000);
        assert_eq!(be64(&h, 48), 0x40000);
        assert_eq!(be32(&h, 56), 2);
        assert_eq!(be64(&h, 72), INCOMPAT_COMPRESSION);
        assert_eq!(be32(&h, 96), 4);
        assert_eq!(be32(&h, 100), 112);
        assert_eq!(h[104], 1);
        assert_eq!(&h[112..120], &[0; 8], "end of extensions");
        let h = header_bytes(&g, Some(Compression::Zlib), 0x30000, 0x40000, 2);
        assert_eq!((be64(&h, 72), h[104]), (0, 0));
    }

    #[test]
    fn refcounts_hand_out_complete_blocks_in_order() {
        let mut r = Refcounts::new(256);
        for c in 0..300 {
            r.add(c).unwrap();
        }
        r.add(299).unwrap();
        assert_eq!(r.pending.len(), 1);
        assert_eq!(r.pending[0].0, 0);
        assert!(r.pending[0].1.iter().all(|&n| n == 1));
        assert_eq!((r.get(299), r.get(298), r.get(400)), (2, 1, 0));
        assert!(r.add(10).is_err(), "a cluster below the window");
    }

    /// What QEMU inflates with `windowBits = -12` reads back: compressible,
    /// incompressible and mixed clusters in one batch.
    #[test]
    fn deflate_reads_back_with_a_4_kib_window() {
        let cs = 65536;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut data: Vec<u8> = (0..3 * cs)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i < cs { (i / 300) as u8 } else { x as u8 }
            })
            .collect();
        data[2 * cs..2 * cs + 30000].fill(7);
        let batch = Batch { guests: vec![0, 65536, 131072], data: data.clone() };
        for compression in [Compression::Zlib, Compression::Zstd] {
            let p =
                compress_batch(Batch { guests: batch.guests.clone(), data: data.clone() }, cs, compression)
                    .unwrap();
            assert!(p.spans[0].is_some(), "a pattern compresses");
            assert!(p.spans[1].is_none(), "noise is stored as it is");
            let (from, len) = p.spans[2].unwrap();
            let back = match compression {
                Compression::Zlib => {
                    let mut d = flate2::Decompress::new_with_window_bits(false, 12);
                    let mut out = Vec::with_capacity(cs);
                    d.decompress_vec(&p.packed[from..from + len], &mut out, flate2::FlushDecompress::Finish)
                        .unwrap();
                    out
                }
                Compression::Zstd => crate::compress::zstd_exact(&p.packed[from..from + len], cs).unwrap(),
            };
            assert_eq!(back, data[2 * cs..]);
        }
    }
}
