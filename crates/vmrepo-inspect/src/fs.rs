//! Telling what a device holds from its superblock: ext2/3/4, xfs, btrfs,
//! vfat, ISO 9660, swap, an LVM2 physical volume. Sizes come from the
//! superblocks; ext2/3/4 are also read fully through ext4-view (see `guest`).

use serde::Serialize;

use vmrepo_format::bytes::{be32, be64, le16, le32, le64, uuid_be};

use crate::error::Result;
use crate::view::{Dev, read_vec};

/// What a device holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    /// ext2, ext3, ext4, xfs, btrfs, vfat, iso9660.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Bytes the filesystem spans.
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free: Option<u64>,
}

/// A swap area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Swap {
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// The result of probing a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Fs(Filesystem),
    Swap(Swap),
    LvmPv,
    Unknown,
}

fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn uuid(b: &[u8]) -> Option<String> {
    (!b.iter().all(|&c| c == 0)).then(|| uuid_be(b, 0))
}

/// Probes a device.
///
/// # Errors
/// Reading the device fails.
pub fn probe(dev: &dyn Dev) -> Result<Probe> {
    if crate::lvm::read_label(dev)?.is_some() {
        return Ok(Probe::LvmPv);
    }
    if let Some(p) = ext(dev)? {
        return Ok(p);
    }
    if let Some(p) = xfs(dev)? {
        return Ok(p);
    }
    if let Some(p) = btrfs(dev)? {
        return Ok(p);
    }
    if let Some(p) = iso(dev)? {
        return Ok(p);
    }
    if let Some(p) = swap(dev)? {
        return Ok(p);
    }
    if let Some(p) = fat(dev)? {
        return Ok(p);
    }
    Ok(Probe::Unknown)
}

/// ext2/3/4: the superblock at 1024. ext3 is ext2 with a journal; ext4 has extents or 64-bit block numbers.
fn ext(dev: &dyn Dev) -> Result<Option<Probe>> {
    let Some(sb) = read_vec(dev, 1024, 1024)? else { return Ok(None) };
    if le16(&sb, 0x38) != 0xef53 {
        return Ok(None);
    }
    let log = le32(&sb, 0x18);
    if log > 6 {
        return Ok(None);
    }
    let block = 1024u64 << log;
    let incompat = le32(&sb, 0x60);
    let is64 = incompat & 0x80 != 0;
    let hi = |o: usize| if is64 { u64::from(le32(&sb, o)) << 32 } else { 0 };
    let blocks = u64::from(le32(&sb, 0x04)) | hi(0x150);
    let free = u64::from(le32(&sb, 0x0c)) | hi(0x158);
    let compat = le32(&sb, 0x5c);
    let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    let size = blocks.saturating_mul(block);
    let free = free.min(blocks).saturating_mul(block);
    Ok(Some(Probe::Fs(Filesystem {
        kind: kind.into(),
        label: text(&sb[0x78..0x88]),
        uuid: uuid(&sb[0x68..0x78]),
        size,
        used: Some(size - free),
        free: Some(free),
    })))
}

/// XFS: the superblock at 0, big-endian.
fn xfs(dev: &dyn Dev) -> Result<Option<Probe>> {
    let Some(sb) = read_vec(dev, 0, 512)? else { return Ok(None) };
    if &sb[..4] != b"XFSB" {
        return Ok(None);
    }
    let block = u64::from(be32(&sb, 4));
    let dblocks = be64(&sb, 8);
    let fdblocks = be64(&sb, 0x90);
    // The log, inside the data section, is counted as used, as df counts it.
    let size = dblocks.saturating_mul(block);
    let free = fdblocks.min(dblocks).saturating_mul(block);
    Ok(Some(Probe::Fs(Filesystem {
        kind: "xfs".into(),
        label: text(&sb[0x6c..0x78]),
        uuid: uuid(&sb[0x20..0x30]),
        size,
        used: Some(size - free),
        free: Some(free),
    })))
}

/// btrfs: the superblock at 64 KiB.
fn btrfs(dev: &dyn Dev) -> Result<Option<Probe>> {
    let Some(sb) = read_vec(dev, 0x10000, 4096)? else { return Ok(None) };
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return Ok(None);
    }
    let total = le64(&sb, 0x70);
    let used = le64(&sb, 0x78).min(total);
    Ok(Some(Probe::Fs(Filesystem {
        kind: "btrfs".into(),
        label: text(&sb[0x12b..0x12b + 256]),
        uuid: uuid(&sb[0x20..0x30]),
        size: total,
        used: Some(used),
        free: Some(total - used),
    })))
}

/// ISO 9660: the primary volume descriptor at 32 KiB.
fn iso(dev: &dyn Dev) -> Result<Option<Probe>> {
    let Some(vd) = read_vec(dev, 32768, 2048)? else { return Ok(None) };
    if vd[0] != 1 || &vd[1..6] != b"CD001" {
        return Ok(None);
    }
    let size = u64::from(le32(&vd, 80)) * u64::from(le16(&vd, 128));
    Ok(Some(Probe::Fs(Filesystem {
        kind: "iso9660".into(),
        label: text(&vd[40..72]),
        uuid: None,
        size,
        used: Some(size),
        free: Some(0),
    })))
}

/// Linux swap: "SWAPSPACE2" at the end of the first page (4 KiB, or 8, 16, 64 KiB pages).
fn swap(dev: &dyn Dev) -> Result<Option<Probe>> {
    for page in [4096u64, 8192, 16384, 65536] {
        let Some(sig) = read_vec(dev, page - 10, 10)? else { return Ok(None) };
        if sig != b"SWAPSPACE2" && sig != b"SWAP-SPACE" {
            continue;
        }
        let Some(h) = read_vec(dev, 1024, 1024)? else { return Ok(None) };
        let last_page = u64::from(le32(&h, 4));
        let size = last_page.saturating_add(1).saturating_mul(page).min(dev.len());
        return Ok(Some(Probe::Swap(Swap { size, label: text(&h[28..44]), uuid: uuid(&h[12..28]) })));
    }
    Ok(None)
}

/// FAT12/16/32: a boot sector with a BIOS parameter block.
fn fat(dev: &dyn Dev) -> Result<Option<Probe>> {
    let Some(bs) = read_vec(dev, 0, 512)? else { return Ok(None) };
    if bs[510] != 0x55 || bs[511] != 0xaa || !matches!(bs[0], 0xeb | 0xe9) {
        return Ok(None);
    }
    let bps = u64::from(le16(&bs, 11));
    let spc = u64::from(bs[13]);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || !spc.is_power_of_two() {
        return Ok(None);
    }
    let fat32 = le16(&bs, 22) == 0;
    let (label_at, type_at) = if fat32 { (71, 82) } else { (43, 54) };
    if !bs[type_at..type_at + 8].starts_with(b"FAT") {
        return Ok(None);
    }
    let sectors = if le16(&bs, 19) != 0 { u64::from(le16(&bs, 19)) } else { u64::from(le32(&bs, 32)) };
    let size = sectors.saturating_mul(bps);
    let mut fs = Filesystem {
        kind: "vfat".into(),
        label: text(&bs[label_at..label_at + 11]).filter(|l| l != "NO NAME"),
        uuid: Some(format!("{:04X}-{:04X}", le16(&bs, label_at - 4 + 2), le16(&bs, label_at - 4))),
        size,
        used: None,
        free: None,
    };
    if fat32 {
        // FSInfo keeps a count of free clusters (0xffffffff: unknown).
        let fsinfo = u64::from(le16(&bs, 48));
        if let Some(fi) = read_vec(dev, fsinfo * bps, 512)? {
            let free = le32(&fi, 488);
            if &fi[..4] == b"RRaA" && free != u32::MAX {
                let free = (u64::from(free) * spc * bps).min(size);
                fs.free = Some(free);
                fs.used = Some(size - free);
            }
        }
    }
    Ok(Some(Probe::Fs(fs)))
}
