//! Raw images, and the raw stretches inside other formats (VMDK flat extents,
//! fixed VHD, VDI and VHDX data): the guest's bytes are the file's bytes.

use std::sync::Arc;

use crate::check::CheckReport;
use crate::disk::{Disk, MapExtent, check_range};
use crate::error::{Error, Result};
use crate::info::{Info, Storage};
use crate::source::Source;
use crate::{Format, Opened};

/// Guest bytes `[0, size)` stored at `base..` in a source. Bytes past the end
/// of the source (a truncated file) read as zeros.
pub(crate) struct RawDisk {
    src: Arc<dyn Source>,
    base: u64,
    size: u64,
    /// Where the file's data stops (a VHD footer follows it).
    data_end: u64,
    /// Whether this is the data of a container (a fixed VHD, a flat VMDK
    /// extent) rather than a raw image. Holes of the host file are reported as
    /// a container's own allocated space that happens to be a hole (zero data),
    /// as qemu-img does, where a raw image passes them through as unallocated
    /// (`data: false`); and a container declares its size, which the file
    /// must hold.
    holes_are_data: bool,
}

impl RawDisk {
    pub(crate) fn new(src: Arc<dyn Source>, base: u64, size: u64, holes_are_data: bool) -> RawDisk {
        let data_end = src.len();
        RawDisk { src, base, size, data_end, holes_are_data }
    }

    /// Bytes of the file at and past `data_end` read as zeros.
    pub(crate) fn with_data_end(mut self, data_end: u64) -> RawDisk {
        self.data_end = data_end.min(self.src.len());
        self
    }
}

impl Disk for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(self.size, offset, buf.len())?;
        let host = self.base.checked_add(offset).ok_or_else(|| Error::malformed("offset overflows"))?;
        // Read what the file holds; what lies past its end reads as zeros.
        let in_file = self.data_end.saturating_sub(host).min(buf.len() as u64);
        let n = usize::try_from(in_file).unwrap_or(buf.len());
        let (head, tail) = buf.split_at_mut(n);
        if !head.is_empty() {
            self.src
                .read_exact_at(head, host)
                .map_err(|e| Error::io(format!("cannot read {} at offset {host}", self.src.name()), e))?;
        }
        tail.fill(0);
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let host = self.base.saturating_add(offset);
        let end = offset.saturating_add(max_len).min(self.size);
        let host_end = self.base.saturating_add(end);
        let hole = |start: u64, stop: u64| {
            let len = stop.saturating_sub(start).max(1);
            let mut e = MapExtent::zeroed(start, len);
            e.data = self.holes_are_data;
            e.offset = Some(self.base.saturating_add(start));
            e
        };
        if host >= self.data_end {
            return Ok(hole(offset, end));
        }
        match self.src.next_data(host) {
            None => Ok(hole(offset, end)),
            Some(d) if d > host => Ok(hole(offset, d.min(host_end).saturating_sub(self.base))),
            Some(_) => {
                let data_end = self.src.next_hole(host).min(host_end);
                let len = data_end.saturating_sub(host).max(1);
                Ok(MapExtent::data(offset, len, Some(host)))
            }
        }
    }

    /// A container's data must all be in the file: a file shorter than the
    /// size its container declares was cut short, or names the wrong file
    /// (the bytes past its end read as zeros, as QEMU reads them).
    fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport { allocated: self.size, checked: "nothing", ..Default::default() };
        if self.holes_are_data {
            r.checked = "size";
            let held = self.data_end.saturating_sub(self.base).min(self.size);
            if held < self.size {
                r.problem(format!(
                    "{} holds {held} of the {} bytes declared from offset {}: it is {} bytes short",
                    self.src.name(),
                    self.size,
                    self.base,
                    self.size - held
                ));
            }
        }
        Ok(r)
    }
}

/// Opens a raw image: the whole file is the disk.
pub(crate) fn open(src: Arc<dyn Source>, format: Format) -> Result<Opened> {
    let len = src.len();
    let mut info = Info::new(src.name(), format, len, len, src.allocated());
    info.storage = Storage::Fixed;
    info.allocated_size = Some(len);
    Ok(Opened { info, disk: Ok(Box::new(RawDisk::new(src, 0, len, false))) })
}
