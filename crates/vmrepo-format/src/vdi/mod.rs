//! VDI (VirtualBox): fixed and dynamic images; differencing and undo images
//! are reported, not read.

pub(crate) mod writer;

use std::sync::Arc;

use serde_json::json;

use crate::bytes::{guid_le, le32, le64};
use crate::check::{CheckReport, Used};
use crate::detect::VDI_SIGNATURE;
use crate::disk::{Disk, MapExtent, check_range, data_extent};
use crate::error::{Error, Result, ensure};
use crate::info::{Info, Parent, Storage};
use crate::source::{Source, read_into, read_vec};
use crate::{Format, Opened};

/// The only version read: 1.1.
const VERSION_1_1: u32 = 0x0001_0001;
/// Image types.
const TYPE_DYNAMIC: u32 = 1;
const TYPE_FIXED: u32 = 2;
const TYPE_UNDO: u32 = 3;
const TYPE_DIFF: u32 = 4;
/// Block map entries for blocks not stored.
const BLOCK_FREE: u32 = 0xffff_ffff;
const BLOCK_ZERO: u32 = 0xffff_fffe;
/// The block map read at most (8 M blocks of 1 MiB: 8 TiB).
pub const MAX_BLOCKS: u32 = 8 << 20;
/// The largest block accepted (VirtualBox uses 1 MiB).
const MAX_BLOCK_SIZE: u32 = 64 << 20;
const HEADER_END: usize = 0x1d8;

struct VdiDisk {
    src: Arc<dyn Source>,
    size: u64,
    block: u64,
    offset_data: u64,
    extra: u64,
    map: Vec<u32>,
    allocated_blocks: u32,
    fixed: bool,
}

impl VdiDisk {
    /// The host offset of guest byte `pos`, or `None` when its block is not stored.
    fn host(&self, pos: u64) -> Option<(u64, u32)> {
        let idx = usize::try_from(pos / self.block).ok()?;
        let entry = *self.map.get(idx)?;
        if entry == BLOCK_FREE || entry == BLOCK_ZERO {
            return Some((u64::MAX, entry));
        }
        let base = self.offset_data + u64::from(entry) * (self.block + self.extra) + self.extra;
        Some((base + pos % self.block, entry))
    }
}

impl Disk for VdiDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let n =
                usize::try_from((self.block - pos % self.block).min((buf.len() - done) as u64)).unwrap_or(1);
            let out = &mut buf[done..done + n];
            match self.host(pos) {
                Some((host, entry)) if entry != BLOCK_FREE && entry != BLOCK_ZERO => {
                    let k = usize::try_from(self.src.len().saturating_sub(host).min(n as u64)).unwrap_or(0);
                    if k > 0 {
                        read_into(self.src.as_ref(), &mut out[..k], host, "a VDI block")?;
                    }
                    out[k..].fill(0);
                }
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let limit = offset.saturating_add(max_len).min(self.size);
        let unstored = |e: u32| e == BLOCK_FREE || e == BLOCK_ZERO;
        let first = self.host(offset);
        let mut end = (offset - offset % self.block + self.block).min(limit);
        // Extend over following blocks of the same kind (contiguous when stored).
        while end < limit {
            match (first, self.host(end)) {
                (Some((_, a)), Some((_, b))) if unstored(a) && unstored(b) => {}
                (Some((h, a)), Some((h2, b))) if !unstored(a) && !unstored(b) && h2 == h + (end - offset) => {
                }
                _ => break,
            }
            end = (end + self.block).min(limit);
        }
        Ok(match first {
            // A fixed image asks the file whether its data is a hole, as QEMU does.
            Some((host, e)) if !unstored(e) && self.fixed => {
                data_extent(self.src.as_ref(), offset, end - offset, host)
            }
            Some((host, e)) if !unstored(e) => MapExtent::data(offset, end - offset, Some(host)),
            // VDI has no backing file: what is not stored reads as zeros, "present" as qemu-img says.
            _ => MapExtent::unallocated(offset, end - offset, true),
        })
    }

    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { checked: "tables", ..Default::default() };
        let mut seen = vec![false; usize::try_from(self.allocated_blocks).unwrap_or(0)];
        let mut used = Vec::new();
        for (i, &e) in self.map.iter().enumerate() {
            if e == BLOCK_FREE || e == BLOCK_ZERO {
                continue;
            }
            r.allocated += self.block;
            if e >= self.allocated_blocks {
                r.problem(format!(
                    "block {i} points to stored block {e}, but only {} are stored",
                    self.allocated_blocks
                ));
                continue;
            }
            let slot = usize::try_from(e).unwrap_or(0);
            // A shared or out-of-file block is a problem already; its stretch
            // is not kept for the overlap check, so that a hostile map of
            // millions of blocks all naming block 0 costs no more memory
            // than the file's real blocks.
            if seen[slot] {
                r.problem(format!("block {i} shares stored block {e} with another block"));
                continue;
            }
            seen[slot] = true;
            let start = self.offset_data + u64::from(e) * (self.block + self.extra);
            let end = start + self.block + self.extra;
            if end > self.src.len() {
                r.problem(format!("block {i} at offset {start:#x} lies past the end of the file"));
                continue;
            }
            used.push(Used::new(start, end, "block", i as u64));
        }
        crate::check::overlaps(used, &mut r);
        r.allocated = r.allocated.min(self.size);
        Ok(r)
    }
}

pub(crate) fn open(src: Arc<dyn Source>) -> Result<Opened> {
    let mut h = [0u8; HEADER_END];
    read_into(src.as_ref(), &mut h, 0, "the VDI header")?;
    ensure!(le32(&h, 0x40) == VDI_SIGNATURE, "no VDI signature");
    let version = le32(&h, 0x44);
    if version != VERSION_1_1 {
        return Err(Error::unsupported(format!("VDI version {}.{}", version >> 16, version & 0xffff)));
    }
    let kind = le32(&h, 0x4c);
    let offset_bmap = u64::from(le32(&h, 0x154));
    let offset_data = u64::from(le32(&h, 0x158));
    let sector = le32(&h, 0x168);
    let size = le64(&h, 0x170);
    let block = le32(&h, 0x178);
    let extra = le32(&h, 0x17c);
    let blocks = le32(&h, 0x180);
    let allocated_blocks = le32(&h, 0x184);
    let parent_uuid = guid_le(&h, 0x1a8);
    ensure!(sector == 512, "sector size {sector} (VDI uses 512)");
    ensure!(block >= 512 && block.is_power_of_two() && block <= MAX_BLOCK_SIZE, "block size {block}");
    ensure!(extra <= block, "{extra} extra bytes per block");
    ensure!(
        offset_bmap % 512 == 0 && offset_data % 512 == 0,
        "the block map or data offset is not sector-aligned"
    );
    if blocks > MAX_BLOCKS {
        return Err(Error::too_large(format!("{blocks} blocks, more than the {MAX_BLOCKS} vmrepo reads")));
    }
    ensure!(
        u64::from(blocks) * u64::from(block) >= size,
        "the block map ({blocks} blocks of {block} bytes) is too small for the disk size {size}"
    );
    ensure!(allocated_blocks <= blocks, "{allocated_blocks} blocks stored of {blocks}");
    let map_bytes = read_vec(src.as_ref(), offset_bmap, u64::from(blocks) * 4, "the VDI block map")?;
    let map: Vec<u32> = map_bytes.chunks_exact(4).map(|c| le32(c, 0)).collect();

    let mut info = Info::new(src.name(), Format::Vdi, size, src.len(), src.allocated());
    info.cluster_size = Some(u64::from(block));
    let (subformat, storage) = match kind {
        TYPE_FIXED => ("fixed", Storage::Fixed),
        TYPE_DYNAMIC => ("dynamic", Storage::Dynamic),
        TYPE_DIFF => ("differencing", Storage::Dynamic),
        TYPE_UNDO => ("undo", Storage::Dynamic),
        t => return Err(Error::unsupported(format!("VDI image type {t}"))),
    };
    info.subformat = Some(subformat.into());
    info.storage = storage;
    let zero_uuid = "00000000-0000-0000-0000-000000000000";
    if parent_uuid != zero_uuid {
        info.parent = Some(Parent { uuid: Some(parent_uuid.clone()), locators: Vec::new() });
    }
    let stored = map.iter().filter(|&&e| e != BLOCK_FREE && e != BLOCK_ZERO).count() as u64;
    info.allocated_size = Some((stored * u64::from(block)).min(size));
    info.format_specific = Some(json!({ "type": "vdi", "data": {
        "image-type": subformat,
        "uuid": guid_le(&h, 0x188),
        "parent-uuid": (parent_uuid != zero_uuid).then_some(parent_uuid.clone()),
        "blocks": blocks,
        "blocks-allocated": allocated_blocks,
        "comment": String::from_utf8_lossy(&h[0x54..0x154]).trim_end_matches('\0').to_string(),
    }}));
    let disk: Result<Box<dyn Disk>> = if parent_uuid != zero_uuid || kind == TYPE_DIFF || kind == TYPE_UNDO {
        Err(Error::unsupported(format!(
            "a {subformat} VDI image reads through its parent, which vmrepo does not open"
        )))
    } else {
        Ok(Box::new(VdiDisk {
            src,
            size,
            block: u64::from(block),
            offset_data,
            extra: u64::from(extra),
            map,
            allocated_blocks,
            fixed: kind == TYPE_FIXED,
        }))
    };
    Ok(Opened { info, disk })
}
