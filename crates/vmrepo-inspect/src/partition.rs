//! Partition tables: MBR with its extended and logical partitions, and GPT.

use serde::Serialize;
use vmrepo_format::bytes::{guid_le, le32, le64};

use crate::error::Result;
use crate::view::{Dev, read_vec};

const SECTOR: u64 = 512;
/// MBR partition types that hold logical partitions.
const EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// The protective MBR entry of a GPT disk.
const GPT_PROTECTIVE: u8 = 0xee;
/// Logical partitions followed at most (and a loop in the chain stops there).
const MAX_LOGICAL: usize = 128;
/// GPT entries read at most, and the largest entry size accepted.
const MAX_GPT_ENTRIES: u32 = 1024;
const MAX_GPT_ENTRY_SIZE: u32 = 4096;

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1 to 4 for MBR primary partitions, 5 on for logical ones; the entry's
    /// position plus one for GPT.
    pub number: u32,
    /// Byte offset in the disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// What the table says it holds: "Linux", "Linux swap", "Linux LVM", "EFI System" ...
    pub kind: String,
    /// The type as the table writes it: `0x83`, or a GPT type GUID.
    pub type_id: String,
    /// MBR's boot flag.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bootable: bool,
    /// GPT's partition name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A disk's partitioning.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// `mbr`, `gpt`, or `none`.
    pub scheme: String,
    pub partitions: Vec<Partition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A GUID as stored by GPT (mixed-endian), in its usual upper-case text form.
pub fn guid(b: &[u8]) -> String {
    guid_le(b, 0).to_ascii_uppercase()
}

fn mbr_kind(t: u8) -> &'static str {
    match t {
        0x83 => "Linux",
        0x82 => "Linux swap",
        0x8e => "Linux LVM",
        0xfd => "Linux RAID",
        0x05 | 0x0f | 0x85 => "extended",
        0xef => "EFI System",
        0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e => "FAT",
        0x07 => "NTFS/exFAT",
        0xee => "GPT protective",
        _ => "other",
    }
}

fn gpt_kind(g: &str) -> &'static str {
    match g {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux /boot",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        _ => "other",
    }
}

/// Reads the partition table of a device, if it has one.
///
/// # Errors
/// Reading the device fails; a malformed table gives warnings, not an error.
pub fn read(dev: &dyn Dev) -> Result<Table> {
    let mut t = Table { scheme: "none".into(), ..Table::default() };
    let Some(mbr) = read_vec(dev, 0, 512)? else { return Ok(t) };
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return Ok(t);
    }
    let entries: Vec<(bool, u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = 446 + i * 16;
            (mbr[e] == 0x80, mbr[e + 4], u64::from(le32(&mbr, e + 8)), u64::from(le32(&mbr, e + 12)))
        })
        .collect();
    // A valid MBR's entries have boot flags of 0 or 0x80 (a FAT boot sector's do not).
    if (0..4).any(|i| !matches!(mbr[446 + i * 16], 0 | 0x80)) || entries.iter().all(|e| e.1 == 0) {
        return Ok(t);
    }
    if entries.iter().any(|e| e.1 == GPT_PROTECTIVE)
        && let Some(g) = read_gpt(dev, &mut t.warnings)?
    {
        t.scheme = "gpt".into();
        t.partitions = g;
        return Ok(t);
    }
    t.scheme = "mbr".into();
    let disk_len = dev.len();
    for (i, &(boot, ty, lba, sectors)) in entries.iter().enumerate() {
        if ty == 0 || sectors == 0 {
            continue;
        }
        let start = lba * SECTOR;
        let size = sectors * SECTOR;
        if start.saturating_add(size) > disk_len {
            t.warnings.push(format!("partition {} ends past the end of the disk", i + 1));
        }
        t.partitions.push(Partition {
            number: i as u32 + 1,
            start,
            size,
            kind: mbr_kind(ty).into(),
            type_id: format!("{ty:#04x}"),
            bootable: boot,
            name: None,
        });
        if EXTENDED.contains(&ty) {
            read_logical(dev, lba, &mut t)?;
        }
    }
    Ok(t)
}

/// Follows the chain of extended boot records from the extended partition at `ext_lba`.
fn read_logical(dev: &dyn Dev, ext_lba: u64, t: &mut Table) -> Result<()> {
    let mut next = 0u64;
    let mut seen = Vec::new();
    let mut number = 5;
    for _ in 0..MAX_LOGICAL {
        let ebr_lba = ext_lba + next;
        if seen.contains(&ebr_lba) {
            t.warnings.push("the chain of logical partitions loops".into());
            return Ok(());
        }
        seen.push(ebr_lba);
        let Some(ebr) = read_vec(dev, ebr_lba * SECTOR, 512)? else {
            t.warnings
                .push(format!("an extended boot record at sector {ebr_lba} lies past the end of the disk"));
            return Ok(());
        };
        if ebr[510] != 0x55 || ebr[511] != 0xaa {
            t.warnings.push(format!("the extended boot record at sector {ebr_lba} has no signature"));
            return Ok(());
        }
        let (ty, rel, sectors) =
            (ebr[446 + 4], u64::from(le32(&ebr, 446 + 8)), u64::from(le32(&ebr, 446 + 12)));
        if ty != 0 && sectors != 0 {
            let start = (ebr_lba + rel) * SECTOR;
            let size = sectors * SECTOR;
            if start.saturating_add(size) > dev.len() {
                t.warnings.push(format!("partition {number} ends past the end of the disk"));
            }
            t.partitions.push(Partition {
                number,
                start,
                size,
                kind: mbr_kind(ty).into(),
                type_id: format!("{ty:#04x}"),
                bootable: ebr[446] == 0x80,
                name: None,
            });
            number += 1;
        }
        let (next_ty, next_rel) = (ebr[462 + 4], u64::from(le32(&ebr, 462 + 8)));
        if next_ty == 0 || next_rel == 0 {
            return Ok(());
        }
        next = next_rel;
    }
    t.warnings.push(format!("more than {MAX_LOGICAL} logical partitions; the rest are not read"));
    Ok(())
}

fn read_gpt(dev: &dyn Dev, warnings: &mut Vec<String>) -> Result<Option<Vec<Partition>>> {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let last_lba = (dev.len() / SECTOR).saturating_sub(1);
    for (which, lba) in [("primary", 1), ("backup", last_lba)] {
        let Some(h) = read_vec(dev, lba * SECTOR, 512)? else { continue };
        if &h[..8] != b"EFI PART" {
            warnings.push(format!("no {which} GPT header"));
            continue;
        }
        let hsize = le32(&h, 12) as usize;
        if !(92..=512).contains(&hsize) {
            warnings.push(format!("the {which} GPT header claims {hsize} bytes"));
            continue;
        }
        let mut copy = h[..hsize].to_vec();
        copy[16..20].fill(0);
        if CRC.checksum(&copy) != le32(&h, 16) {
            warnings.push(format!("the {which} GPT header's CRC does not match"));
            continue;
        }
        let entries_lba = le64(&h, 72);
        let count = le32(&h, 80);
        let esize = le32(&h, 84);
        if count > MAX_GPT_ENTRIES || !(128..=MAX_GPT_ENTRY_SIZE).contains(&esize) || !esize.is_multiple_of(8)
        {
            warnings.push(format!("the {which} GPT header lists {count} entries of {esize} bytes"));
            continue;
        }
        let Some(table) = read_vec(dev, entries_lba.saturating_mul(SECTOR), (count * esize) as usize)? else {
            warnings.push(format!("the {which} GPT entries lie past the end of the disk"));
            continue;
        };
        if CRC.checksum(&table) != le32(&h, 88) {
            warnings.push(format!("the {which} GPT entries' CRC does not match"));
        }
        let mut parts = Vec::new();
        for (i, e) in table.chunks_exact(esize as usize).enumerate() {
            if e[..16].iter().all(|&b| b == 0) {
                continue;
            }
            let type_id = guid(&e[..16]);
            let (first, last) = (le64(e, 32), le64(e, 40));
            if last < first {
                warnings.push(format!("GPT partition {} ends before it starts", i + 1));
                continue;
            }
            let start = first.saturating_mul(SECTOR);
            let size = (last - first).saturating_add(1).saturating_mul(SECTOR);
            if start.saturating_add(size) > dev.len() {
                warnings.push(format!("GPT partition {} ends past the end of the disk", i + 1));
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let name = String::from_utf16_lossy(&units);
            parts.push(Partition {
                number: i as u32 + 1,
                start,
                size,
                kind: gpt_kind(&type_id).into(),
                type_id,
                bootable: false,
                name: (!name.is_empty()).then_some(name),
            });
        }
        return Ok(Some(parts));
    }
    Ok(None)
}
