//! Native readers and writers for the disk image formats a STAR image may come in: raw,
//! ISO 9660, qcow2, VMDK, VDI, VHD and VHDX, with `qemu-img` as the reference.
//!
//! [`open`] detects the format from the content (never from the name),
//! reads what the image says of itself into an [`Info`] (with the field names
//! of `qemu-img info --output=json` where they mean the same), and gives a
//! read-only [`Disk`]: the guest's bytes at any offset, zeros where nothing is
//! allocated, and the allocation [`map`].
//!
//! ```no_run
//! use vmrepo_format::{open, OpenOptions};
//!
//! let image = open("sl5.3_x86_64_sl08e_8GB.qcow2".as_ref(), &OpenOptions::default())?;
//! println!("{} {} bytes", image.info.format, image.info.virtual_size);
//! let mut mbr = [0u8; 512];
//! image.disk()?.read_at(&mut mbr, 0)?;
//! # Ok::<(), vmrepo_format::Error>(())
//! ```
//!
//! # Hostile input
//! Every header field and table entry is untrusted. Offsets and sizes are
//! checked against the file before use, arithmetic is checked, every table is
//! capped (the `MAX_*` constants of each format) before memory is sized from
//! it, chains are bounded, and compressed data is inflated into buffers of the
//! size the format allows. A file an image references (backing file, extent,
//! data file, parent) is only opened with [`OpenOptions::follow`], and only
//! in the image's own folder.
//!
//! # Errors
//! Every function returns an [`Error`] whose [`ErrorKind`] tells an
//! unsupported format or feature from a malformed file, a table past the caps,
//! a referenced file that is needed, and I/O.
//!
//! Formats live in one folder each (`qcow2/`, `vmdk/` ...), split into the
//! on-disk structures, the reader and the writer; [`mod@write`] writes a disk in
//! any format but ISO, streamed, holes kept.
#![forbid(unsafe_code)]

pub mod cat;
pub mod check;
pub mod detect;
pub mod disk;
mod error;
pub mod info;
pub mod iobuf;
pub mod source;
pub mod write;

mod compress;
mod iso;
mod qcow2;
mod raw;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use detect::{Detected, detect};
pub use disk::{Disk, MapExtent, map, map_each};
pub use error::{Error, ErrorKind, Result};
pub use info::{ExtentInfo, Info, Parent, Snapshot, Storage};
pub use iobuf::IoBuf;
pub use source::{FileSource, FolderResolver, MemSource, NoResolver, Resolver, Source};

/// A format vmrepo reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    /// ISO 9660 (qemu-img calls it raw).
    Iso,
    Qcow2,
    Vmdk,
    Vdi,
    /// VHD (qemu-img's `vpc`).
    Vhd,
    Vhdx,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 7] =
        [Format::Raw, Format::Iso, Format::Qcow2, Format::Vmdk, Format::Vdi, Format::Vhd, Format::Vhdx];

    /// The name qemu-img uses (`vpc` for VHD, `raw` for an ISO).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw | Format::Iso => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
        }
    }

    /// vmrepo's own name: raw, iso, qcow2, vmdk, vdi, vhd, vhdx.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Iso => "iso",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
        }
    }

    /// The extension an image name takes (`img` for raw, as in the specification).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "img",
            Format::Iso => "iso",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
        }
    }

    /// The format qemu-img calls `name` (`vpc` is VHD).
    pub fn from_qemu_name(name: &str) -> Option<Format> {
        match name {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vmdk" => Some(Format::Vmdk),
            "vdi" => Some(Format::Vdi),
            "vpc" => Some(Format::Vhd),
            "vhdx" => Some(Format::Vhdx),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

impl serde::Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.qemu_name())
    }
}

/// How to open an image.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Open the files the image references (VMDK extents, a qcow2 data file),
    /// in the image's own folder only. Off by default: `info` works without
    /// them; reading the guest's bytes may need them.
    pub follow: bool,
    /// Insist on this format instead of detecting one.
    pub format: Option<Format>,
}

/// An opened image: what it says of itself, and the way to its guest bytes.
pub struct Image {
    pub info: Info,
    disk: std::result::Result<Box<dyn Disk>, Error>,
}

impl Image {
    /// The guest's bytes.
    ///
    /// # Errors
    /// Why the image can be described but not read: a referenced file that was
    /// not opened, a log that needs replaying, a differencing image without
    /// its parent, or an encrypted image.
    pub fn disk(&self) -> Result<&dyn Disk> {
        match &self.disk {
            Ok(d) => Ok(d.as_ref()),
            Err(e) => Err(Error::new(e.kind(), e.to_string())),
        }
    }

    /// The guest's bytes, owned (to hand to readers that keep them).
    ///
    /// # Errors
    /// As [`Image::disk`].
    pub fn into_disk(self) -> Result<Arc<dyn Disk>> {
        self.disk.map(Arc::from)
    }
}

/// What a format's reader returns: the info and the disk (or why not).
pub(crate) struct Opened {
    pub info: Info,
    pub disk: std::result::Result<Box<dyn Disk>, Error>,
}

/// Opens the image at `path`.
///
/// # Errors
/// The file cannot be read, its format is one vmrepo does not read, or its
/// structures are malformed or larger than the caps.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Image> {
    let src: Arc<dyn Source> = Arc::new(FileSource::open(path)?);
    let resolver = FolderResolver::new(path, opts.follow);
    open_source(src, &resolver, opts)
}

/// Opens an image from any [`Source`], with `resolver` for referenced files.
///
/// # Errors
/// As [`open`].
pub fn open_source(src: Arc<dyn Source>, resolver: &dyn Resolver, opts: &OpenOptions) -> Result<Image> {
    let name = src.name().to_string();
    let format = match opts.format {
        Some(f) => f,
        None => match detect(src.as_ref()).map_err(|e| e.context(&name))? {
            Detected::Known(f) => f,
            Detected::Unsupported(n) => return Err(detect::unsupported(n).context(&name)),
        },
    };
    let opened = match format {
        Format::Raw => raw::open(src, Format::Raw),
        Format::Iso => iso::open(src),
        Format::Qcow2 => qcow2::open(src, resolver),
        Format::Vmdk => vmdk::open(src, resolver),
        Format::Vdi => vdi::open(src),
        Format::Vhd => vhd::open(src),
        Format::Vhdx => vhdx::open(src),
    }
    .map_err(|e| e.context(format!("{name}: {}", format.name())))?;
    Ok(Image { info: opened.info, disk: opened.disk })
}

/// Big-endian and little-endian integers at fixed offsets of a buffer read
/// from a header. The offsets are the format's own constants and the buffer
/// is read at the header's full size, so an out-of-range offset is a bug in
/// vmrepo, not something a file can cause; reads return 0 rather than panic.
/// The guest inspector reads its partition tables and superblocks with them too.
pub mod bytes {
    fn get<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = off.checked_add(N).and_then(|end| b.get(off..end)) {
            out.copy_from_slice(s);
        }
        out
    }
    pub fn be16(b: &[u8], off: usize) -> u16 {
        u16::from_be_bytes(get(b, off))
    }
    pub fn be32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(get(b, off))
    }
    pub fn be64(b: &[u8], off: usize) -> u64 {
        u64::from_be_bytes(get(b, off))
    }
    pub fn le16(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(get(b, off))
    }
    pub fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(get(b, off))
    }
    pub fn le64(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(get(b, off))
    }
    /// A GUID/UUID in the mixed-endian form Microsoft and VirtualBox store.
    pub fn guid_le(b: &[u8], off: usize) -> String {
        let g: [u8; 16] = get(b, off);
        format!(
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
    /// A UUID stored in network byte order (VHD).
    pub fn uuid_be(b: &[u8], off: usize) -> String {
        let g: [u8; 16] = get(b, off);
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            g[0],
            g[1],
            g[2],
            g[3],
            g[4],
            g[5],
            g[6],
            g[7],
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}
