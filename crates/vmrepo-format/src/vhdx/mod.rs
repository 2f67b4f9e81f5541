//! VHDX: fixed and dynamic images; a parent (differencing) is reported, and a
//! log that needs replaying is reported, not replayed.

pub(crate) mod writer;

use std::sync::Arc;

use serde_json::json;

use crate::bytes::{guid_le, le16, le32, le64};
use crate::check::{CheckReport, Used};
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, Result, ensure};
use crate::info::{Info, Parent, Storage};
use crate::source::{Source, read_into, read_vec};
use crate::{Format, Opened};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// The two headers, and the two region tables.
const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
const REGION_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
const HEADER_SIZE: usize = 4096;
const REGION_TABLE_SIZE: usize = 64 * 1024;
const METADATA_TABLE_SIZE: u64 = 64 * KIB;
/// Region and metadata tables hold at most 2047 entries.
const MAX_TABLE_ENTRIES: u32 = 2047;
/// The most BAT entries read (32 MiB of table).
pub const MAX_BAT_ENTRIES: u64 = 4 << 20;
/// The largest virtual disk VHDX allows: 64 TiB.
const MAX_SIZE: u64 = 64 << 40;
/// The largest metadata item read.
const MAX_ITEM: u32 = 64 * 1024;
/// The largest log scanned for entries to replay.
const MAX_LOG: u64 = 64 * MIB;

const BAT_GUID: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_GUID: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const VIRTUAL_DISK_ID: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR_SIZE: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR_SIZE: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";
const PARENT_LOCATOR: &str = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C";

/// Payload block states.
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

fn crc32c(b: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CRC.checksum(b)
}

/// The CRC-32C of a structure with its checksum field (at 4) taken as zero.
fn checksum_ok(b: &[u8]) -> bool {
    let mut copy = b.to_vec();
    copy[4..8].fill(0);
    crc32c(&copy) == le32(b, 4)
}

fn guid(b: &[u8], off: usize) -> String {
    guid_le(b, off).to_ascii_uppercase()
}

struct VhdxDisk {
    src: Arc<dyn Source>,
    size: u64,
    block: u64,
    chunk_ratio: u64,
    bat: Vec<u64>,
}

impl VhdxDisk {
    fn entry(&self, block_index: u64) -> u64 {
        let idx = block_index + block_index / self.chunk_ratio;
        usize::try_from(idx).ok().and_then(|i| self.bat.get(i)).copied().unwrap_or(0)
    }
}

impl Disk for VhdxDisk {
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
            let e = self.entry(pos / self.block);
            match e & 7 {
                PAYLOAD_FULLY_PRESENT => {
                    let host = (e >> 20) * MIB + pos % self.block;
                    let k = usize::try_from(self.src.len().saturating_sub(host).min(n as u64)).unwrap_or(0);
                    if k > 0 {
                        read_into(self.src.as_ref(), &mut out[..k], host, "a VHDX block")?;
                    }
                    out[k..].fill(0);
                }
                PAYLOAD_PARTIALLY_PRESENT => {
                    return Err(Error::unsupported(
                        "a partially present block reads through the parent, which vmrepo does not open",
                    ));
                }
                _ => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let limit = offset.saturating_add(max_len).min(self.size);
        let first = self.entry(offset / self.block);
        let present = first & 7 == PAYLOAD_FULLY_PRESENT;
        let host = |e: u64, p: u64| (e >> 20) * MIB + p % self.block;
        let mut end = (offset - offset % self.block + self.block).min(limit);
        while end < limit {
            let e = self.entry(end / self.block);
            let same = if present {
                e & 7 == PAYLOAD_FULLY_PRESENT && host(e, end) == host(first, offset) + (end - offset)
            } else {
                e & 7 != PAYLOAD_FULLY_PRESENT
            };
            if !same {
                break;
            }
            end = (end + self.block).min(limit);
        }
        Ok(if present {
            MapExtent::data(offset, end - offset, Some(host(first, offset)))
        } else {
            MapExtent::unallocated(offset, end - offset, true)
        })
    }

    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { checked: "tables", ..Default::default() };
        let mut used = vec![Used::new(0, MIB, "headers and region tables", 0)];
        let blocks = self.size.div_ceil(self.block);
        for b in 0..blocks {
            let e = self.entry(b);
            if e & 7 != PAYLOAD_FULLY_PRESENT {
                continue;
            }
            r.allocated += self.block;
            let start = (e >> 20) * MIB;
            if start < MIB {
                r.problem(format!("block {b} points into the headers (offset {start:#x})"));
            }
            if start + self.block > self.src.len() {
                r.problem(format!("block {b} at offset {start:#x} lies past the end of the file"));
            }
            used.push(Used::new(start, start + self.block, "block", b));
        }
        crate::check::overlaps(used, &mut r);
        r.allocated = r.allocated.min(self.size);
        Ok(r)
    }
}

struct Region {
    offset: u64,
    length: u64,
}

pub(crate) fn open(src: Arc<dyn Source>) -> Result<Opened> {
    let mut warnings = Vec::new();
    // The current header: the valid one with the higher sequence number.
    let mut best: Option<(u64, Vec<u8>)> = None;
    for (i, &off) in HEADER_OFFSETS.iter().enumerate() {
        let mut h = vec![0u8; HEADER_SIZE];
        if read_into(src.as_ref(), &mut h, off, "a VHDX header").is_err() {
            warnings.push(format!("header {} cannot be read", i + 1));
            continue;
        }
        if &h[..4] != b"head" || !checksum_ok(&h) {
            warnings.push(format!("header {} is not valid (signature or CRC-32C)", i + 1));
            continue;
        }
        let seq = le64(&h, 8);
        if best.as_ref().is_none_or(|(s, _)| seq > *s) {
            best = Some((seq, h));
        }
    }
    let (_, header) = best.ok_or_else(|| Error::malformed("neither VHDX header is valid"))?;
    let version = le16(&header, 66);
    if version != 1 {
        return Err(Error::unsupported(format!("VHDX version {version}")));
    }
    let log_guid = guid(&header, 48);
    let log_length = u64::from(le32(&header, 68));
    let log_offset = le64(&header, 72);

    let mut regions = None;
    for (i, &off) in REGION_OFFSETS.iter().enumerate() {
        let mut t = vec![0u8; REGION_TABLE_SIZE];
        read_into(src.as_ref(), &mut t, off, "a VHDX region table")?;
        if &t[..4] != b"regi" || !checksum_ok(&t) {
            warnings.push(format!("region table {} is not valid (signature or CRC-32C)", i + 1));
            continue;
        }
        regions = Some(t);
        break;
    }
    let t = regions.ok_or_else(|| Error::malformed("neither VHDX region table is valid"))?;
    let count = le32(&t, 8);
    ensure!(count <= MAX_TABLE_ENTRIES, "{count} region table entries (at most {MAX_TABLE_ENTRIES})");
    let (mut bat, mut meta) = (None, None);
    for i in 0..usize::try_from(count).unwrap_or(0) {
        let e = 16 + i * 32;
        let id = guid(&t, e);
        let r = Region { offset: le64(&t, e + 16), length: u64::from(le32(&t, e + 24)) };
        let required = le32(&t, e + 28) & 1 != 0;
        ensure!(
            r.offset.is_multiple_of(MIB) && r.offset >= MIB,
            "region {id} at offset {:#x} is not 1 MiB-aligned past the headers",
            r.offset
        );
        match id.as_str() {
            BAT_GUID => bat = Some(r),
            METADATA_GUID => meta = Some(r),
            _ if required => return Err(Error::unsupported(format!("required region {id}"))),
            _ => {}
        }
    }
    let bat_region = bat.ok_or_else(|| Error::malformed("no BAT region"))?;
    let meta_region = meta.ok_or_else(|| Error::malformed("no metadata region"))?;

    // Metadata.
    let mt = read_vec(
        src.as_ref(),
        meta_region.offset,
        METADATA_TABLE_SIZE.min(meta_region.length.max(METADATA_TABLE_SIZE)),
        "the metadata table",
    )?;
    ensure!(&mt[..8] == b"metadata", "no metadata table signature");
    let entries = u32::from(le16(&mt, 10));
    ensure!(entries <= MAX_TABLE_ENTRIES, "{entries} metadata entries (at most {MAX_TABLE_ENTRIES})");
    let item = |want: &str| -> Result<Option<Vec<u8>>> {
        for i in 0..usize::try_from(entries).unwrap_or(0) {
            let e = 32 + i * 32;
            if guid(&mt, e) == want {
                let off = u64::from(le32(&mt, e + 16));
                let len = le32(&mt, e + 20);
                ensure!(len <= MAX_ITEM, "metadata item {want} of {len} bytes");
                ensure!(off >= METADATA_TABLE_SIZE || len == 0, "metadata item {want} overlaps the table");
                return read_vec(src.as_ref(), meta_region.offset + off, u64::from(len), "a metadata item")
                    .map(Some);
            }
        }
        Ok(None)
    };
    for i in 0..usize::try_from(entries).unwrap_or(0) {
        let e = 32 + i * 32;
        let id = guid(&mt, e);
        let required = le32(&mt, e + 24) & 4 != 0;
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            VIRTUAL_DISK_ID,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ];
        if required && !known.contains(&id.as_str()) {
            return Err(Error::unsupported(format!("required metadata item {id}")));
        }
    }
    let fp = item(FILE_PARAMETERS)?.ok_or_else(|| Error::malformed("no file parameters"))?;
    ensure!(fp.len() >= 8, "file parameters too short");
    let block = u64::from(le32(&fp, 0));
    let fp_flags = le32(&fp, 4);
    let leave_allocated = fp_flags & 1 != 0;
    let has_parent = fp_flags & 2 != 0;
    ensure!((MIB..=256 * MIB).contains(&block) && block.is_power_of_two(), "block size {block}");
    let size_item = item(VIRTUAL_DISK_SIZE)?.ok_or_else(|| Error::malformed("no virtual disk size"))?;
    ensure!(size_item.len() >= 8, "virtual disk size too short");
    let size = le64(&size_item, 0);
    ensure!(size <= MAX_SIZE, "virtual size {size} is larger than 64 TiB");
    let lss = item(LOGICAL_SECTOR_SIZE)?.filter(|b| b.len() >= 4).map_or(512, |b| u64::from(le32(&b, 0)));
    ensure!(lss == 512 || lss == 4096, "logical sector size {lss}");
    let pss = item(PHYSICAL_SECTOR_SIZE)?.filter(|b| b.len() >= 4).map_or(4096, |b| u64::from(le32(&b, 0)));
    let disk_id = item(VIRTUAL_DISK_ID)?.filter(|b| b.len() >= 16).map(|b| guid_le(&b, 0));

    // The BAT.
    let chunk_ratio = ((1u64 << 23) * lss) / block;
    ensure!(chunk_ratio >= 1, "a chunk ratio of zero");
    let data_blocks = size.div_ceil(block);
    let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
    let bat_entries = if has_parent {
        bitmap_blocks * (chunk_ratio + 1)
    } else {
        data_blocks + data_blocks.saturating_sub(1) / chunk_ratio
    };
    if bat_entries > MAX_BAT_ENTRIES {
        return Err(Error::too_large(format!(
            "a BAT of {bat_entries} entries, more than the {MAX_BAT_ENTRIES} vmrepo reads"
        )));
    }
    ensure!(
        bat_entries * 8 <= bat_region.length,
        "the BAT region ({} bytes) is too small for {bat_entries} entries",
        bat_region.length
    );
    let bat_bytes = read_vec(src.as_ref(), bat_region.offset, bat_entries * 8, "the BAT")?;
    let bat: Vec<u64> = bat_bytes.chunks_exact(8).map(|c| le64(c, 0)).collect();

    let mut info = Info::new(src.name(), Format::Vhdx, size, src.len(), src.allocated());
    info.warnings = warnings;
    info.cluster_size = Some(block);
    let payload = |b: u64| {
        bat.get(usize::try_from(b + b / chunk_ratio).unwrap_or(usize::MAX)).copied().unwrap_or(0) & 7
    };
    let present = (0..data_blocks).filter(|&b| payload(b) == PAYLOAD_FULLY_PRESENT).count() as u64;
    info.allocated_size = Some((present * block).min(size));
    let fixed = !has_parent && (leave_allocated || present == data_blocks);
    info.storage = if fixed { Storage::Fixed } else { Storage::Dynamic };
    info.subformat = Some(
        if has_parent {
            "differencing"
        } else if fixed {
            "fixed"
        } else {
            "dynamic"
        }
        .into(),
    );
    let needs_replay = log_guid != "00000000-0000-0000-0000-000000000000"
        && log_has_entries(src.as_ref(), log_offset, log_length, &header);
    if needs_replay {
        info.dirty_flag = true;
        info.warnings.push("the log holds changes that need replaying; vmrepo does not replay them".into());
    }
    if has_parent {
        let mut p = Parent::default();
        if let Some(loc) = item(PARENT_LOCATOR)? {
            p = parent_locator(&loc);
        }
        info.parent = Some(p);
    }
    info.format_specific = Some(json!({ "type": "vhdx", "data": {
        "block-size": block,
        "logical-sector-size": lss,
        "physical-sector-size": pss,
        "leave-blocks-allocated": leave_allocated,
        "has-parent": has_parent,
        "log-needs-replay": needs_replay,
        "virtual-disk-id": disk_id,
    }}));
    let disk: Result<Box<dyn Disk>> = if needs_replay {
        Err(Error::unsupported(
            "the log needs replaying before the image can be read; vmrepo does not replay it (Hyper-V or qemu-img check -r all does)",
        ))
    } else if has_parent {
        Err(Error::unsupported("a differencing VHDX reads through its parent, which vmrepo does not open"))
    } else {
        Ok(Box::new(VhdxDisk { src, size, block, chunk_ratio, bat }))
    };
    Ok(Opened { info, disk })
}

/// Whether the log area holds an entry of this log (signature "loge" and the
/// header's log GUID), which would need replaying.
fn log_has_entries(src: &dyn Source, offset: u64, length: u64, header: &[u8]) -> bool {
    if length == 0 || length > MAX_LOG || !offset.is_multiple_of(MIB) {
        return false;
    }
    let log_guid = &header[48..64];
    let mut pos = 0;
    let mut e = [0u8; 64];
    while pos + 64 <= length {
        if read_into(src, &mut e, offset + pos, "the log").is_err() {
            return false;
        }
        if &e[..4] == b"loge" && &e[32..48] == log_guid {
            return true;
        }
        pos += 4096;
    }
    false
}

/// The parent locator's key-value pairs (UTF-16LE): the parent's paths.
fn parent_locator(b: &[u8]) -> Parent {
    let mut p = Parent::default();
    if b.len() < 20 {
        return p;
    }
    let count = usize::from(le16(b, 18));
    let text = |off: u32, len: u16| -> Option<String> {
        let s = usize::try_from(off).ok()?;
        let e = s.checked_add(usize::from(len))?;
        let units: Vec<u16> =
            b.get(s..e)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Some(String::from_utf16_lossy(&units))
    };
    for i in 0..count.min(64) {
        let e = 20 + i * 12;
        if e + 12 > b.len() {
            break;
        }
        let key = text(le32(b, e), le16(b, e + 8)).unwrap_or_default();
        let value = text(le32(b, e + 4), le16(b, e + 10)).unwrap_or_default();
        match key.as_str() {
            "parent_linkage" => p.uuid = Some(value.trim_matches(['{', '}']).to_ascii_lowercase()),
            "relative_path" | "absolute_win32_path" | "volume_path" => p.locators.push(value),
            _ => {}
        }
    }
    p
}
