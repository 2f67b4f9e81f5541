//! ISO 9660 images (qemu-img reads them as raw): the primary volume
//! descriptor, El Torito, and the partition table of an isohybrid image.

use std::sync::Arc;

use serde_json::json;

use crate::bytes::{le16, le32};
use crate::detect::{ISO_ID, ISO_VD_OFFSET};
use crate::error::Result;
use crate::info::{Info, Storage};
use crate::raw::RawDisk;
use crate::source::{Source, read_into};
use crate::{Format, Opened};

/// Size of a volume descriptor.
const VD_SIZE: usize = 2048;
/// Volume descriptors read before giving up on a terminator.
const MAX_DESCRIPTORS: u64 = 64;
/// Descriptor types.
const VD_BOOT_RECORD: u8 = 0;
const VD_PRIMARY: u8 = 1;
const VD_TERMINATOR: u8 = 255;
/// The boot system identifier of an El Torito boot record.
const EL_TORITO: &[u8] = b"EL TORITO SPECIFICATION";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string()
}

pub(crate) fn open(src: Arc<dyn Source>) -> Result<Opened> {
    let len = src.len();
    let mut info = Info::new(src.name(), Format::Iso, len, len, src.allocated());
    info.storage = Storage::Fixed;
    info.allocated_size = Some(len);
    let mut primary = None;
    let mut bootable = false;
    let mut vd = [0u8; VD_SIZE];
    for i in 0..MAX_DESCRIPTORS {
        let off = ISO_VD_OFFSET + i * VD_SIZE as u64;
        if off + VD_SIZE as u64 > len {
            info.warnings.push("the volume descriptors run past the end of the file".into());
            break;
        }
        read_into(src.as_ref(), &mut vd, off, "an ISO 9660 volume descriptor")?;
        if vd[1..6] != ISO_ID {
            info.warnings.push(format!("volume descriptor {i} lacks the CD001 identifier"));
            break;
        }
        match vd[0] {
            VD_PRIMARY if primary.is_none() => primary = Some(vd),
            VD_BOOT_RECORD if vd[7..].starts_with(EL_TORITO) => bootable = true,
            VD_TERMINATOR => break,
            _ => {}
        }
    }
    let mut mbr = [0u8; 1024];
    let n = usize::try_from(len.min(1024)).unwrap_or(0);
    read_into(src.as_ref(), &mut mbr[..n], 0, "the first sectors")?;
    let gpt = &mbr[512..520] == b"EFI PART";
    let mbr_sig = mbr[510] == 0x55 && mbr[511] == 0xaa;
    let hybrid = gpt || mbr_sig;
    info.subformat = Some(if hybrid { "isohybrid" } else { "iso9660" }.into());
    let mut data = serde_json::Map::new();
    if let Some(p) = primary {
        let block = u64::from(le16(&p, 128));
        let blocks = u64::from(le32(&p, 80));
        let volume = blocks.saturating_mul(block);
        if volume > len {
            info.warnings
                .push(format!("the volume claims {volume} bytes but the file holds {len}: truncated"));
        }
        data.insert("system-id".into(), json!(text(&p[8..40])));
        data.insert("volume-id".into(), json!(text(&p[40..72])));
        data.insert("volume-size".into(), json!(volume));
        data.insert("block-size".into(), json!(block));
        data.insert("publisher".into(), json!(text(&p[318..446])));
        data.insert("application".into(), json!(text(&p[574..702])));
        data.insert("created".into(), json!(text(&p[813..829])));
    } else {
        info.warnings.push("no primary volume descriptor".into());
    }
    data.insert("bootable".into(), json!(bootable));
    data.insert("isohybrid".into(), json!(hybrid));
    if hybrid {
        data.insert("partition-table".into(), json!(if gpt { "gpt" } else { "mbr" }));
    }
    info.format_specific = Some(json!({ "type": "iso9660", "data": data }));
    let disk = RawDisk::new(src, 0, len, false);
    Ok(Opened { info, disk: Ok(Box::new(disk)) })
}
