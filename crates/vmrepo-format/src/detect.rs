//! Telling formats apart by their content, never by their name.

use crate::Format;
use crate::error::{Error, Result};
use crate::source::{Source, read_into};

/// What a file's content says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A format vmrepo reads.
    Known(Format),
    /// A format vmrepo recognises but does not read.
    Unsupported(&'static str),
}

/// qcow2's magic, "QFI\xfb".
pub(crate) const QCOW_MAGIC: [u8; 4] = *b"QFI\xfb";
/// The magic of a VMDK sparse extent, "KDMV".
pub(crate) const VMDK4_MAGIC: [u8; 4] = *b"KDMV";
/// The magic of a VMware ESX sparse extent (VMDK version 3).
const VMDK3_MAGIC: [u8; 4] = *b"COWD";
/// VDI's signature (little-endian at offset 0x40).
pub(crate) const VDI_SIGNATURE: u32 = 0xbeda_107f;
/// VHDX's file type identifier.
pub(crate) const VHDX_FILE_ID: [u8; 8] = *b"vhdxfile";
/// The cookie of a VHD footer.
pub(crate) const VHD_COOKIE: [u8; 8] = *b"conectix";
/// ISO 9660's standard identifier, in every volume descriptor.
pub(crate) const ISO_ID: [u8; 5] = *b"CD001";
/// Where the first ISO 9660 volume descriptor starts (sector 16 of 2048 bytes).
pub(crate) const ISO_VD_OFFSET: u64 = 16 * 2048;

/// Detects the format of `src` from its first and last bytes.
///
/// # Errors
/// The file cannot be read.
pub fn detect(src: &dyn Source) -> Result<Detected> {
    let len = src.len();
    let mut head = [0u8; 1024];
    let n = usize::try_from(len.min(head.len() as u64)).unwrap_or(head.len());
    read_into(src, &mut head[..n], 0, "the header")?;
    let head = &head[..n];
    let starts = |m: &[u8]| head.starts_with(m);

    if starts(&QCOW_MAGIC) {
        let version = head.get(4..8).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        return Ok(match version {
            Some(2 | 3) => Detected::Known(Format::Qcow2),
            Some(1) => Detected::Unsupported("qcow (version 1)"),
            _ => Detected::Known(Format::Qcow2), // the reader names the bad version
        });
    }
    if starts(&VMDK4_MAGIC) {
        return Ok(Detected::Known(Format::Vmdk));
    }
    if starts(&VMDK3_MAGIC) {
        return Ok(Detected::Unsupported("vmdk (COWD, ESX sparse version 3)"));
    }
    if starts(&VHDX_FILE_ID) {
        return Ok(Detected::Known(Format::Vhdx));
    }
    if starts(&VHD_COOKIE) {
        return Ok(Detected::Known(Format::Vhd));
    }
    if head.get(0x40..0x44) == Some(&VDI_SIGNATURE.to_le_bytes()) {
        return Ok(Detected::Known(Format::Vdi));
    }
    if is_vmdk_descriptor(head) {
        return Ok(Detected::Known(Format::Vmdk));
    }
    for (magic, name) in [
        (&b"QED\0"[..], "qed"),
        (&b"WithoutFreeSpace"[..], "parallels"),
        (&b"WithouFreSpacExt"[..], "parallels"),
        (&b"Bochs Virtual HD Image"[..], "bochs"),
        (&b"LUKS\xba\xbe"[..], "luks"),
        (&b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop"[..], "cloop"),
    ] {
        if starts(magic) {
            return Ok(Detected::Unsupported(name));
        }
    }
    if len >= 512 {
        let mut tail = [0u8; 512];
        read_into(src, &mut tail, len - 512, "the last sector")?;
        if tail.starts_with(&VHD_COOKIE) {
            return Ok(Detected::Known(Format::Vhd));
        }
        if tail.starts_with(b"koly") {
            return Ok(Detected::Unsupported("dmg"));
        }
    }
    if len >= ISO_VD_OFFSET + 6 {
        let mut id = [0u8; 6];
        read_into(src, &mut id, ISO_VD_OFFSET, "the first ISO 9660 volume descriptor")?;
        if id[1..6] == ISO_ID {
            return Ok(Detected::Known(Format::Iso));
        }
    }
    Ok(Detected::Known(Format::Raw))
}

/// A VMDK text descriptor begins with "# Disk DescriptorFile" (after blank
/// lines), as VMware and qemu write it.
fn is_vmdk_descriptor(head: &[u8]) -> bool {
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    text[start..].starts_with(b"# Disk DescriptorFile")
}

/// The error for a format vmrepo recognises and does not read.
pub(crate) fn unsupported(name: &str) -> Error {
    Error::unsupported(format!("unsupported format: {name}"))
}
