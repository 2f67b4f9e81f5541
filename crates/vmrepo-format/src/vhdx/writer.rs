//! The VHDX writer: dynamic, after MS-VHDX and what QEMU's `block/vhdx.c`
//! reads.
//!
//! # The layout
//! | offset | what |
//! |---|---|
//! | 0 | the file type identifier, "vhdxfile" and the creator |
//! | 64 KiB, 128 KiB | the two headers (sequence numbers 1 and 2, no log to replay) |
//! | 192 KiB, 256 KiB | the two region tables (BAT and metadata) |
//! | 1 MiB | the log (1 MiB, empty: a hole) |
//! | 2 MiB | the metadata region: the table and its five items |
//! | 3 MiB | the BAT, rounded up to a MiB |
//! | after | the payload blocks in guest order, 1 MiB-aligned |
//!
//! Blocks are 32 MiB, Hyper-V's own default (QEMU picks 8 to 64 MiB by the
//! disk's size): few BAT entries, and the zeros inside an allocated block
//! cost nothing because they are holes in the file. A block with data is
//! `PAYLOAD_BLOCK_FULLY_PRESENT`; every other entry, sector bitmap entries
//! included (there is no parent), stays `NOT_PRESENT`: zero, a hole in the
//! BAT region. So the BAT is never held in memory: an entry is written when
//! its block is allocated.
//!
//! # The size
//! The virtual size is the guest's rounded up to the logical sector (512
//! bytes); the tail added reads as zeros. `qemu-img convert -O vhdx` does the
//! same (QEMU rounds a VHDX's size up to the sector too).

use std::fs::File;

use super::{
    BAT_GUID, FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, MAX_SIZE, METADATA_GUID, PAYLOAD_FULLY_PRESENT,
    PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE, crc32c,
};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::vhd::writer::{image_id, write_placed};
use crate::write::{WriteCtx, write_at};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The payload block: 32 MiB, as Hyper-V makes them.
const BLOCK: u64 = 32 * MIB;
/// The logical sector, which the virtual size is a multiple of.
const LOGICAL_SECTOR: u32 = 512;
/// The physical sector reported to the guest: 4 KiB, as Hyper-V does.
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector bitmap block: 2^23 sectors per bitmap block.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR as u64 / BLOCK;
const FILE_IDENTIFIER: [u8; 8] = *b"vhdxfile";
const HEADER_SIGNATURE: [u8; 4] = *b"head";
const REGION_SIGNATURE: [u8; 4] = *b"regi";
const METADATA_SIGNATURE: [u8; 8] = *b"metadata";
const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
const REGION_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
const HEADER_SIZE: usize = 4096;
const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The file format version in the header.
const VERSION: u16 = 1;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u32 = 1 << 20;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u32 = 1 << 20;
/// The metadata table takes the region's first 64 KiB; items follow.
const METADATA_TABLE_SIZE: usize = 64 * 1024;
const BAT_OFFSET: u64 = 3 * MIB;
/// The largest BAT written (64 TiB in 32 MiB blocks needs 16.1 MiB).
const MAX_BAT_BYTES: u64 = 64 * MIB;
/// Region table entry flag: the region is required.
const REGION_REQUIRED: u32 = 1;
/// Metadata entry flags: IsVirtualDisk and IsRequired.
const META_VIRTUAL_DISK: u32 = 2;
const META_REQUIRED: u32 = 4;

/// Writes `disk` as a dynamic VHDX. Returns the guest bytes written.
///
/// # Errors
/// The disk is larger than the 64 TiB VHDX allows, reading the source or
/// writing `out` fails, or the write is cancelled.
pub(crate) fn write(disk: &dyn Disk, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let guest = disk.size();
    let size =
        guest.checked_next_multiple_of(u64::from(LOGICAL_SECTOR)).filter(|&s| s <= MAX_SIZE).ok_or_else(
            || Error::too_large(format!("a disk of {guest} bytes is larger than the 64 TiB a VHDX holds")),
        )?;
    let data_blocks = size.div_ceil(BLOCK);
    let bat_entries = data_blocks + data_blocks.saturating_sub(1) / CHUNK_RATIO;
    let bat_length = (bat_entries * 8).next_multiple_of(MIB).max(MIB);
    if bat_length > MAX_BAT_BYTES {
        return Err(Error::too_large(format!("a VHDX BAT of {bat_length} bytes")));
    }
    let mut next = BAT_OFFSET + bat_length;
    let data = write_placed(disk, BLOCK, out, ctx, &mut |block| {
        let host = next;
        let entry = host | PAYLOAD_FULLY_PRESENT;
        write_at(out, &entry.to_le_bytes(), BAT_OFFSET + 8 * (block + block / CHUNK_RATIO))?;
        next += BLOCK;
        Ok(host)
    })?;
    out.set_len(next).map_err(|e| Error::io("cannot set the output's length", e))?;
    write_at(out, &file_identifier(), 0)?;
    let file_write = image_id(disk, 1)?;
    let data_write = image_id(disk, 2)?;
    for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
        write_at(out, &header(i as u64 + 1, &file_write, &data_write), at)?;
    }
    let regions = region_table(u32::try_from(bat_length).unwrap_or(u32::MAX));
    for &at in &REGION_OFFSETS {
        write_at(out, &regions, at)?;
    }
    write_at(out, &metadata(size, &image_id(disk, 3)?), METADATA_OFFSET)?;
    Ok(data)
}

/// The 16 bytes of a GUID written as text, in the mixed-endian order VHDX
/// stores (the first three groups little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| u8::try_from(char::from(c).to_digit(16).unwrap_or(0)).unwrap_or(0))
        .collect();
    let mut b = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).take(16).enumerate() {
        b[i] = pair[0] << 4 | pair[1];
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// The file type identifier: the signature and the creator, in UTF-16LE.
fn file_identifier() -> Vec<u8> {
    let mut b = vec![0u8; 8 + 512];
    b[..8].copy_from_slice(&FILE_IDENTIFIER);
    let creator = concat!("vmrepo ", env!("CARGO_PKG_VERSION"));
    for (i, u) in creator.encode_utf16().take(255).enumerate() {
        b[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    b
}

/// A header: no log to replay (log GUID zero), the log at 1 MiB.
fn header(sequence: u64, file_write: &[u8; 16], data_write: &[u8; 16]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(&HEADER_SIGNATURE);
    h[8..16].copy_from_slice(&sequence.to_le_bytes()); // SequenceNumber
    h[16..32].copy_from_slice(file_write); // FileWriteGuid
    h[32..48].copy_from_slice(data_write); // DataWriteGuid; LogGuid (48) stays zero, LogVersion (64) 0
    h[66..68].copy_from_slice(&VERSION.to_le_bytes()); // Version
    h[68..72].copy_from_slice(&LOG_LENGTH.to_le_bytes()); // LogLength
    h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes()); // LogOffset
    let sum = crc32c(&h);
    h[4..8].copy_from_slice(&sum.to_le_bytes());
    h
}

/// The region table: the BAT and the metadata region, both required.
fn region_table(bat_length: u32) -> Vec<u8> {
    let mut t = vec![0u8; REGION_TABLE_SIZE];
    t[0..4].copy_from_slice(&REGION_SIGNATURE);
    t[8..12].copy_from_slice(&2u32.to_le_bytes()); // EntryCount
    let entries = [(BAT_GUID, BAT_OFFSET, bat_length), (METADATA_GUID, METADATA_OFFSET, METADATA_LENGTH)];
    for (i, (id, offset, length)) in entries.into_iter().enumerate() {
        let e = 16 + 32 * i;
        t[e..e + 16].copy_from_slice(&guid_bytes(id));
        t[e + 16..e + 24].copy_from_slice(&offset.to_le_bytes());
        t[e + 24..e + 28].copy_from_slice(&length.to_le_bytes());
        t[e + 28..e + 32].copy_from_slice(&REGION_REQUIRED.to_le_bytes());
    }
    let sum = crc32c(&t);
    t[4..8].copy_from_slice(&sum.to_le_bytes());
    t
}

/// The metadata region's table and items (the region's first 68 KiB; the
/// rest of its MiB stays a hole).
fn metadata(size: u64, disk_id: &[u8; 16]) -> Vec<u8> {
    let file_parameters = {
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&u32::try_from(BLOCK).unwrap_or(u32::MAX).to_le_bytes());
        // Flags (4..8): LeaveBlocksAllocated 0, HasParent 0.
        p.to_vec()
    };
    let items: [(&str, Vec<u8>, u32); 5] = [
        (FILE_PARAMETERS, file_parameters, META_REQUIRED),
        (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec(), META_VIRTUAL_DISK | META_REQUIRED),
        (VIRTUAL_DISK_ID, disk_id.to_vec(), META_VIRTUAL_DISK | META_REQUIRED),
        (LOGICAL_SECTOR_SIZE, LOGICAL_SECTOR.to_le_bytes().to_vec(), META_VIRTUAL_DISK | META_REQUIRED),
        (PHYSICAL_SECTOR_SIZE, PHYSICAL_SECTOR.to_le_bytes().to_vec(), META_VIRTUAL_DISK | META_REQUIRED),
    ];
    let mut m = vec![0u8; METADATA_TABLE_SIZE];
    m[0..8].copy_from_slice(&METADATA_SIGNATURE);
    m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes()); // EntryCount
    for (i, (id, data, flags)) in items.into_iter().enumerate() {
        let e = 32 + 32 * i;
        let offset = u32::try_from(m.len()).unwrap_or(u32::MAX);
        m[e..e + 16].copy_from_slice(&guid_bytes(id));
        m[e + 16..e + 20].copy_from_slice(&offset.to_le_bytes());
        m[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        m[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&data);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{le16, le32, le64};

    #[test]
    fn guids_are_stored_mixed_endian() {
        let b = guid_bytes(BAT_GUID);
        assert_eq!(b[..4], [0x66, 0x77, 0xc2, 0x2d]);
        assert_eq!(crate::bytes::guid_le(&b, 0).to_ascii_uppercase(), BAT_GUID);
        assert_eq!(crate::bytes::guid_le(&guid_bytes(METADATA_GUID), 0).to_ascii_uppercase(), METADATA_GUID);
    }

    #[test]
    fn structures_have_their_signatures_and_checksums() {
        let h = header(2, &[1; 16], &[2; 16]);
        assert_eq!(&h[..4], b"head");
        assert_eq!(le64(&h, 8), 2);
        assert_eq!(h[48..64], [0; 16]);
        assert_eq!(le16(&h, 66), 1);
        assert_eq!(le32(&h, 68), 1 << 20);
        assert_eq!(le64(&h, 72), 1 << 20);
        assert!(super::super::checksum_ok(&h));
        let t = region_table(1 << 20);
        assert_eq!(&t[..4], b"regi");
        assert_eq!(le32(&t, 8), 2);
        assert_eq!(le64(&t, 16 + 16), BAT_OFFSET);
        assert!(super::super::checksum_ok(&t));
        let m = metadata(5 << 30, &[3; 16]);
        assert_eq!(&m[..8], b"metadata");
        assert_eq!(le16(&m, 10), 5);
        // The second item is the virtual size, at its offset.
        let off = le32(&m, 32 + 32 + 16) as usize;
        assert_eq!(le64(&m, off), 5 << 30);
        assert_eq!(CHUNK_RATIO, 128);
    }
}
