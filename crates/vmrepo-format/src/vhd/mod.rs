//! VHD (qemu-img's `vpc`): fixed (a footer after the data) and dynamic (a
//! block allocation table); differencing images are reported, not read.

pub(crate) mod writer;

use std::sync::Arc;

use serde_json::json;

use crate::bytes::{be16, be32, be64, uuid_be};
use crate::check::{CheckReport, Used};
use crate::detect::VHD_COOKIE;
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, Result, ensure};
use crate::info::{Info, Parent, Storage};
use crate::raw::RawDisk;
use crate::source::{Source, read_into, read_vec};
use crate::{Format, Opened};

const SECTOR: u64 = 512;
/// The dynamic disk header's cookie.
const DYN_COOKIE: [u8; 8] = *b"cxsparse";
/// Disk types.
const TYPE_FIXED: u32 = 2;
const TYPE_DYNAMIC: u32 = 3;
const TYPE_DIFFERENCING: u32 = 4;
/// A BAT entry for a block not stored.
const BAT_UNUSED: u32 = 0xffff_ffff;
/// The largest CHS geometry: an image whose geometry is this large uses the
/// footer's size whoever made it (QEMU's VHD_MAX_GEOMETRY).
const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// The largest VHD QEMU opens: 2040 GiB.
const MAX_SECTORS: u64 = 0xff00_0000;
/// The most BAT entries read (QEMU: 2040 GiB in 2 MiB blocks is 1 M entries).
pub const MAX_BAT_ENTRIES: u32 = 4 << 20;
/// The largest block accepted.
const MAX_BLOCK: u32 = 256 << 20;
/// Creators whose VHDs take their size from the footer rather than from the
/// CHS geometry (QEMU's table: Hyper-V, QEMU's "qem2", disk2vhd, XenConverter, XenServer).
const SIZE_FROM_FOOTER: [&[u8]; 5] = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];

/// The footer's checksum: the one's complement of the byte sum, without the checksum field.
fn checksum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

struct DynamicDisk {
    src: Arc<dyn Source>,
    size: u64,
    block: u64,
    bitmap_size: u64,
    bat: Vec<u32>,
    data_end: u64,
}

impl DynamicDisk {
    fn block_host(&self, pos: u64) -> Option<u64> {
        let e = *self.bat.get(usize::try_from(pos / self.block).ok()?)?;
        (e != BAT_UNUSED).then(|| u64::from(e) * SECTOR)
    }
}

impl Disk for DynamicDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let mut done = 0usize;
        let mut bitmap_cache: Option<(u64, Vec<u8>)> = None;
        while done < buf.len() {
            let pos = offset + done as u64;
            // Sector by sector within a block, as the sector bitmap says.
            let n = usize::try_from((SECTOR - pos % SECTOR).min((buf.len() - done) as u64)).unwrap_or(1);
            let out = &mut buf[done..done + n];
            match self.block_host(pos) {
                None => out.fill(0),
                Some(block_off) => {
                    if bitmap_cache.as_ref().is_none_or(|(o, _)| *o != block_off) {
                        let bm = read_vec(self.src.as_ref(), block_off, self.bitmap_size, "a sector bitmap")
                            .unwrap_or_default();
                        bitmap_cache = Some((block_off, bm));
                    }
                    let sector_in_block = usize::try_from((pos % self.block) / SECTOR).unwrap_or(0);
                    let present = bitmap_cache
                        .as_ref()
                        .and_then(|(_, bm)| bm.get(sector_in_block / 8))
                        .is_some_and(|b| b & (0x80 >> (sector_in_block % 8)) != 0);
                    let host = block_off + self.bitmap_size + pos % self.block;
                    if present {
                        let k =
                            usize::try_from(self.data_end.saturating_sub(host).min(n as u64)).unwrap_or(0);
                        if k > 0 {
                            read_into(self.src.as_ref(), &mut out[..k], host, "a VHD block")?;
                        }
                        out[k..].fill(0);
                    } else {
                        out.fill(0);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let limit = offset.saturating_add(max_len).min(self.size);
        let block_end = (offset - offset % self.block + self.block).min(limit);
        match self.block_host(offset) {
            Some(b) => Ok(MapExtent::data(
                offset,
                block_end - offset,
                Some(b + self.bitmap_size + offset % self.block),
            )),
            None => {
                let mut end = block_end;
                while end < limit && self.block_host(end).is_none() {
                    end = (end + self.block).min(limit);
                }
                // VHD has no backing file in QEMU: unstored blocks read as zeros, "present".
                Ok(MapExtent::unallocated(offset, end - offset, true))
            }
        }
    }

    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { checked: "tables", ..Default::default() };
        let mut used = Vec::new();
        for (i, &e) in self.bat.iter().enumerate() {
            if e == BAT_UNUSED {
                continue;
            }
            r.allocated += self.block;
            let start = u64::from(e) * SECTOR;
            let end = start + self.bitmap_size + self.block;
            if end > self.data_end {
                r.problem(format!(
                    "block {i} at offset {start:#x} runs past the data area (ends at {:#x})",
                    self.data_end
                ));
            }
            used.push(Used::new(start, end, "block", i as u64));
        }
        crate::check::overlaps(used, &mut r);
        r.allocated = r.allocated.min(self.size);
        Ok(r)
    }
}

pub(crate) fn open(src: Arc<dyn Source>) -> Result<Opened> {
    let len = src.len();
    ensure!(len >= SECTOR, "the file is shorter than a VHD footer");
    // The footer is at the end; dynamic disks keep a copy at the start, which
    // QEMU reads first.
    let mut footer = [0u8; 512];
    read_into(src.as_ref(), &mut footer, 0, "the VHD footer copy")?;
    let mut footer_at = 0;
    if footer[..8] != VHD_COOKIE {
        read_into(src.as_ref(), &mut footer, len - SECTOR, "the VHD footer")?;
        footer_at = len - SECTOR;
        ensure!(footer[..8] == VHD_COOKIE, "no VHD footer");
    }
    let mut warnings = Vec::new();
    if checksum(&footer, 64) != be32(&footer, 64) {
        warnings.push("the footer's checksum does not match".to_string());
    }
    let data_offset = be64(&footer, 16);
    let creator_app: [u8; 4] = [footer[28], footer[29], footer[30], footer[31]];
    let current_size = be64(&footer, 48);
    let cyls = u64::from(be16(&footer, 56));
    let heads = u64::from(footer[58]);
    let spt = u64::from(footer[59]);
    let disk_type = be32(&footer, 60);
    // QEMU's rule: the CHS geometry gives the size, except for the creators
    // that write the footer's size, and for the largest geometry.
    let chs_sectors = cyls * heads * spt;
    let use_chs = !SIZE_FROM_FOOTER.iter().any(|c| creator_app.starts_with(c));
    let sectors =
        if !use_chs || chs_sectors == MAX_GEOMETRY_SECTORS { current_size / SECTOR } else { chs_sectors };
    ensure!(sectors < MAX_SECTORS, "a disk of {sectors} sectors is larger than the 2040 GiB a VHD may hold");
    let size = sectors * SECTOR;

    let mut info = Info::new(src.name(), Format::Vhd, size, len, src.allocated());
    info.warnings = warnings;
    let creator = String::from_utf8_lossy(&creator_app).trim_end_matches(['\0', ' ']).to_string();
    let mut data = serde_json::Map::new();
    data.insert("disk-type".into(), json!(disk_type));
    data.insert("creator-app".into(), json!(creator));
    data.insert(
        "creator-os".into(),
        json!(String::from_utf8_lossy(&footer[36..40]).trim_end_matches(['\0', ' ']).to_string()),
    );
    data.insert("current-size".into(), json!(current_size));
    data.insert("geometry".into(), json!({ "cylinders": cyls, "heads": heads, "sectors": spt }));
    data.insert("uuid".into(), json!(uuid_be(&footer, 68)));
    data.insert("size-from".into(), json!(if sectors == chs_sectors && use_chs { "chs" } else { "footer" }));

    let opened = match disk_type {
        TYPE_FIXED => {
            info.subformat = Some("fixed".into());
            info.storage = Storage::Fixed;
            info.allocated_size = Some(size);
            let data_end = if footer_at == 0 { len - SECTOR } else { footer_at };
            // QEMU reports the holes of a fixed VHD's file as allocated zeros.
            let disk: Box<dyn Disk> =
                Box::new(RawDisk::new(Arc::clone(&src), 0, size, true).with_data_end(data_end));
            Ok(disk)
        }
        TYPE_DYNAMIC | TYPE_DIFFERENCING => {
            let differencing = disk_type == TYPE_DIFFERENCING;
            info.subformat = Some(if differencing { "differencing" } else { "dynamic" }.into());
            info.storage = Storage::Dynamic;
            let mut dh = [0u8; 1024];
            read_into(src.as_ref(), &mut dh, data_offset, "the dynamic disk header")?;
            ensure!(dh[..8] == DYN_COOKIE, "no dynamic disk header at offset {data_offset:#x}");
            if checksum(&dh, 36) != be32(&dh, 36) {
                info.warnings.push("the dynamic disk header's checksum does not match".into());
            }
            let table_offset = be64(&dh, 16);
            let entries = be32(&dh, 28);
            let block = be32(&dh, 32);
            ensure!(block >= 512 && block.is_power_of_two() && block <= MAX_BLOCK, "block size {block}");
            if entries > MAX_BAT_ENTRIES {
                return Err(Error::too_large(format!(
                    "the block allocation table has {entries} entries, more than the {MAX_BAT_ENTRIES} vmrepo reads"
                )));
            }
            ensure!(
                u64::from(entries) * u64::from(block) >= size,
                "the block allocation table ({entries} blocks of {block} bytes) is too small for {size} bytes"
            );
            info.cluster_size = Some(u64::from(block));
            let bat_bytes =
                read_vec(src.as_ref(), table_offset, u64::from(entries) * 4, "the block allocation table")?;
            let bat: Vec<u32> = bat_bytes.chunks_exact(4).map(|c| be32(c, 0)).collect();
            let stored = bat.iter().filter(|&&e| e != BAT_UNUSED).count() as u64;
            info.allocated_size = Some((stored * u64::from(block)).min(size));
            let sectors_per_block = u64::from(block) / SECTOR;
            let bitmap_size = sectors_per_block.div_ceil(8).div_ceil(SECTOR) * SECTOR;
            data.insert("block-size".into(), json!(block));
            if differencing {
                let parent_name = utf16be(&dh[64..576]);
                let mut locators = Vec::new();
                if !parent_name.is_empty() {
                    locators.push(parent_name);
                }
                locators.extend(parent_locators(src.as_ref(), &dh));
                info.parent = Some(Parent { uuid: Some(uuid_be(&dh, 40)), locators });
                Err(Error::unsupported(
                    "a differencing VHD reads through its parent, which vmrepo does not open",
                ))
            } else {
                let disk: Box<dyn Disk> = Box::new(DynamicDisk {
                    src: Arc::clone(&src),
                    size,
                    block: u64::from(block),
                    bitmap_size,
                    bat,
                    data_end: len.saturating_sub(SECTOR),
                });
                Ok(disk)
            }
        }
        t => return Err(Error::unsupported(format!("VHD disk type {t}"))),
    };
    info.format_specific = Some(json!({ "type": "vpc", "data": data }));
    Ok(Opened { info, disk: opened })
}

fn utf16be(b: &[u8]) -> String {
    let units: Vec<u16> =
        b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> =
        b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// The parent locators' paths (W2ru, W2ku: UTF-16LE; Mac: UTF-8).
fn parent_locators(src: &dyn Source, dh: &[u8]) -> Vec<String> {
    /// A locator's data is a path: a few hundred bytes at most.
    const MAX_LOCATOR: u32 = 4096;
    let mut out = Vec::new();
    for i in 0..8 {
        let e = 576 + i * 24;
        let code = &dh[e..e + 4];
        let length = be32(dh, e + 8);
        let offset = be64(dh, e + 16);
        if code == [0; 4] || length == 0 || length > MAX_LOCATOR {
            continue;
        }
        if let Ok(b) = read_vec(src, offset, u64::from(length), "a parent locator") {
            let s = match code {
                b"W2ru" | b"W2ku" => utf16le(&b),
                _ => String::from_utf8_lossy(&b).trim_end_matches('\0').to_string(),
            };
            if !s.is_empty() {
                out.push(s);
            }
        }
    }
    out
}
