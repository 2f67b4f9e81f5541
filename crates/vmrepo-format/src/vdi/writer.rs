//! The VDI writer: dynamic and fixed, VDI 1.1 as VirtualBox creates it.
//!
//! Layout (VirtualBox's `vdiInitHeader`): the pre-header text and signature,
//! the 0x190-byte 1.1 header, the block map at 1 MiB, the data at the next
//! MiB boundary after the map; 1 MiB blocks, no extra bytes per block.
//!
//! - **dynamic** (type 1): a block is stored when one of its bytes is not
//!   zero, in guest order as the walk reaches it; the map is written last,
//!   `0xFFFFFFFF` for the blocks not stored.
//! - **fixed** (type 2): block *n* at data + *n* MiB for every block, the
//!   file's length set to hold them all.
//!
//! Either way the data goes through `vhd::writer::write_placed`: two
//! workers reading and writing 1 MiB at a time, zero 4 KiB grains inside a
//! stored block left as holes (they read as zeros).
//!
//! The disk size is rounded up to a whole sector, as qemu-img does
//! (`vdi_co_create_opts` rounds to `BDRV_SECTOR_SIZE`, and QEMU rounds an odd
//! size up when it opens one that `VBoxManage convertfromraw` made); the
//! last block is padded with zeros.

use std::fs::File;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::vhd::writer::{image_id, write_placed};
use crate::write::{WriteCtx, write_at};

/// "<<< Oracle VM VirtualBox Disk Image >>>\n", in a 64-byte field.
const PRE_HEADER_TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
const SIGNATURE: u32 = 0xbeda_107f;
const VERSION_1_1: u32 = 0x0001_0001;
/// `sizeof(VDIHEADER1PLUS)`, counted from offset 0x48.
const HEADER_SIZE: u32 = 0x190;
const HEADER_END: usize = 0x48 + HEADER_SIZE as usize;
const TYPE_DYNAMIC: u32 = 1;
const TYPE_FIXED: u32 = 2;
const SECTOR: u64 = 512;
/// Block size: 1 MiB, VirtualBox's and qemu-img's.
const BLOCK: u64 = 1 << 20;
/// VirtualBox aligns the block map and the data to 1 MiB (`VDI_DATA_ALIGN`).
const ALIGN: u64 = 1 << 20;
const BLOCK_FREE: u32 = 0xffff_ffff;
/// The most blocks written: the 8 Mi that vmrepo's reader takes (an 8 TiB
/// disk, a 32 MiB block map held in memory).
pub const MAX_BLOCKS: u64 = super::MAX_BLOCKS as u64;

/// Where things are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    size: u64,
    blocks: u64,
    map_offset: u64,
    data_offset: u64,
}

impl Layout {
    fn new(disk_size: u64) -> Result<Layout> {
        let size = disk_size
            .checked_next_multiple_of(SECTOR)
            .ok_or_else(|| Error::too_large(format!("a disk of {disk_size} bytes")))?;
        let blocks = size.div_ceil(BLOCK);
        if blocks > MAX_BLOCKS {
            return Err(Error::too_large(format!(
                "a disk of {size} bytes: vmrepo writes VDI images of at most {} TiB ({MAX_BLOCKS} blocks of 1 MiB)",
                (MAX_BLOCKS * BLOCK) >> 40
            )));
        }
        let map_offset = ALIGN;
        let data_offset = (map_offset + blocks * 4).next_multiple_of(ALIGN);
        Ok(Layout { size, blocks, map_offset, data_offset })
    }
}

/// Writes `disk` as a VDI image, fixed or dynamic. Returns the guest bytes written.
///
/// # Errors
/// The disk is larger than [`MAX_BLOCKS`] blocks, reading it or writing
/// `out` fails, or the write is cancelled.
pub(crate) fn write(disk: &dyn Disk, fixed: bool, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let l = Layout::new(disk.size())?;
    let mut map: Vec<u32> = if fixed {
        (0..l.blocks as u32).collect()
    } else {
        vec![BLOCK_FREE; usize::try_from(l.blocks).unwrap_or(0)]
    };
    let mut stored = 0u32;
    // Two workers read and write the guest's data straight into the blocks,
    // as for VHD and VHDX; a block is given its slot (dynamic: the next one,
    // in guest order) when its first data arrives.
    let data = write_placed(disk, BLOCK, out, ctx, &mut |index| {
        let slot = if fixed {
            index
        } else {
            let e = usize::try_from(index)
                .ok()
                .and_then(|i| map.get_mut(i))
                .ok_or_else(|| Error::malformed("a block past the end of the disk"))?;
            if *e == BLOCK_FREE {
                *e = stored;
                stored += 1;
            }
            u64::from(*e)
        };
        Ok(l.data_offset + slot * BLOCK)
    })?;
    let allocated = if fixed { l.blocks as u32 } else { stored };
    let mut map_bytes = Vec::with_capacity(map.len() * 4);
    for e in &map {
        map_bytes.extend_from_slice(&e.to_le_bytes());
    }
    drop(map);
    write_at(out, &map_bytes, l.map_offset)?;
    let ids = [mixed_endian(image_id(disk, 1)?), mixed_endian(image_id(disk, 2)?)];
    write_at(out, &header(&l, fixed, allocated, ids), 0)?;
    let end = l.data_offset + u64::from(allocated) * BLOCK;
    out.set_len(end).map_err(|e| Error::io("cannot set the length of the VDI", e))?;
    Ok(data)
}

/// A UUID in VirtualBox's mixed-endian byte order: its first three fields
/// (4, 2 and 2 bytes) little-endian. Random (`image_id`): two conversions of
/// one image must not share a UUID, or VirtualBox refuses to register the
/// second.
fn mixed_endian(mut id: [u8; 16]) -> [u8; 16] {
    id[0..4].reverse();
    id[4..6].reverse();
    id[6..8].reverse();
    id
}

/// The pre-header and the 1.1 header, as VirtualBox's `vdiInitHeader` fills
/// it: no flags, an empty comment, the legacy (physical) geometry of an IDE
/// disk, 16 heads and 63 sectors with cylinders capped at 16383, as
/// `VBoxManage createmedium` passes it; the logical geometry left 0 ("not
/// calculated", the BIOS picks it at the first boot), both with 512-byte
/// sectors; create and modify UUIDs random, linkage and parent zero.
fn header(l: &Layout, fixed: bool, allocated: u32, ids: [[u8; 16]; 2]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_END.next_multiple_of(SECTOR as usize)];
    h[..PRE_HEADER_TEXT.len()].copy_from_slice(PRE_HEADER_TEXT);
    let mut put = |off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0x40, SIGNATURE);
    put(0x44, VERSION_1_1);
    put(0x48, HEADER_SIZE);
    put(0x4c, if fixed { TYPE_FIXED } else { TYPE_DYNAMIC });
    put(0x50, 0);
    // 0x54: the comment, 256 bytes.
    put(0x154, l.map_offset as u32);
    put(0x158, l.data_offset as u32);
    let cylinders = (l.size / SECTOR / (16 * 63)).min(16383) as u32;
    put(0x15c, cylinders);
    put(0x160, 16);
    put(0x164, 63);
    put(0x168, SECTOR as u32);
    put(0x178, BLOCK as u32);
    put(0x17c, 0);
    put(0x180, l.blocks as u32);
    put(0x184, allocated);
    // LCHS geometry at 0x1c8: cylinders, heads, sectors 0, sector size 512.
    put(0x1d4, SECTOR as u32);
    h[0x170..0x178].copy_from_slice(&l.size.to_le_bytes());
    h[0x188..0x198].copy_from_slice(&ids[0]);
    h[0x198..0x1a8].copy_from_slice(&ids[1]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{le32, le64};

    #[test]
    fn layout_is_aligned_to_a_mib_and_capped() {
        let l = Layout::new(1000).unwrap();
        assert_eq!((l.size, l.blocks, l.map_offset, l.data_offset), (1024, 1, 1 << 20, 2 << 20));
        // 1 TiB: a 4 MiB map from 1 MiB, data at 5 MiB.
        let l = Layout::new(1 << 40).unwrap();
        assert_eq!((l.blocks, l.data_offset), (1 << 20, 5 << 20));
        assert!(Layout::new(MAX_BLOCKS * BLOCK).is_ok());
        let e = Layout::new(MAX_BLOCKS * BLOCK + 1).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::TooLarge);
        assert!(Layout::new(u64::MAX).is_err());
    }

    #[test]
    fn header_fields_at_virtualbox_offsets() {
        let l = Layout::new(3 << 20).unwrap();
        // Version 4 UUIDs in RFC 4122 order: the version in byte 6.
        let (mut c, mut m) = ([0x11u8; 16], [0x22u8; 16]);
        c[6] = 0x4a;
        m[6] = 0x4b;
        let h = header(&l, true, 3, [mixed_endian(c), mixed_endian(m)]);
        assert!(h.starts_with(b"<<< Oracle VM VirtualBox Disk Image >>>\n"));
        assert_eq!(le32(&h, 0x40), SIGNATURE);
        assert_eq!(le32(&h, 0x44), 0x0001_0001);
        assert_eq!(le32(&h, 0x48), 0x190);
        assert_eq!(le32(&h, 0x4c), 2);
        assert_eq!((le32(&h, 0x154), le32(&h, 0x158)), (1 << 20, 2 << 20));
        assert_eq!((le32(&h, 0x160), le32(&h, 0x164), le32(&h, 0x168)), (16, 63, 512));
        assert_eq!(le64(&h, 0x170), 3 << 20);
        assert_eq!((le32(&h, 0x178), le32(&h, 0x180), le32(&h, 0x184)), (1 << 20, 3, 3));
        assert_eq!(h[0x18f] >> 4, 4);
        assert_ne!(h[0x188..0x198], h[0x198..0x1a8]);
        assert!(h[0x1a8..0x1c8].iter().all(|&b| b == 0), "linkage and parent UUIDs are zero");
        assert_eq!(le32(&h, 0x1d4), 512);
    }
}
