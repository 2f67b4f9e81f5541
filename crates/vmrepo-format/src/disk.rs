//! The guest's view of an image: a read-only virtual disk, and its allocation map.

use serde::Serialize;

use crate::error::Result;

/// The allocation status of a stretch of the virtual disk, with the fields of
/// `qemu-img map --output=json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MapExtent {
    /// Guest offset.
    pub start: u64,
    pub length: u64,
    /// Allocated in this image (not left to a backing file).
    pub present: bool,
    /// Reads as zeros.
    pub zero: bool,
    /// Stored as data in the image.
    pub data: bool,
    /// Stored compressed.
    pub compressed: bool,
    /// Where the data starts in the file holding it, for uncompressed data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl MapExtent {
    /// Unallocated in this image: reads as zeros (no backing file is read).
    pub(crate) fn unallocated(start: u64, length: u64, present: bool) -> MapExtent {
        MapExtent { start, length, present, zero: true, data: false, compressed: false, offset: None }
    }

    /// Allocated data at `offset` in the holding file.
    pub(crate) fn data(start: u64, length: u64, offset: Option<u64>) -> MapExtent {
        MapExtent { start, length, present: true, zero: false, data: true, compressed: false, offset }
    }

    /// Allocated, and reads as zeros (a zero cluster, a hole in a flat file).
    pub(crate) fn zeroed(start: u64, length: u64) -> MapExtent {
        MapExtent { start, length, present: true, zero: true, data: false, compressed: false, offset: None }
    }

    /// The end of the extent.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.length)
    }

    /// Whether `next` continues this extent with the same attributes (and, for
    /// data, the next bytes of the same file), as qemu-img map merges them.
    pub fn joins(&self, next: &MapExtent) -> bool {
        self.end() == next.start
            && self.present == next.present
            && self.zero == next.zero
            && self.data == next.data
            && self.compressed == next.compressed
            && match (self.offset, next.offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a.checked_add(self.length) == Some(b),
                _ => false,
            }
    }
}

/// Allocated data at `host` in `src`, as qemu-img map reports it: where the
/// host file has a hole, the data reads as zeros (`zero: true`), and the
/// extent ends where the file switches between data and hole.
pub(crate) fn data_extent(src: &dyn crate::Source, start: u64, len: u64, host: u64) -> MapExtent {
    let host_end = host.saturating_add(len);
    match src.next_data(host) {
        Some(d) if d == host => {
            let end = src.next_hole(host).clamp(host.saturating_add(1), host_end);
            MapExtent::data(start, end - host, Some(host))
        }
        other => {
            let end = other.unwrap_or(host_end).clamp(host.saturating_add(1), host_end);
            MapExtent { zero: true, ..MapExtent::data(start, end - host, Some(host)) }
        }
    }
}

/// A read-only virtual disk: the guest's bytes.
pub trait Disk: Send + Sync {
    /// The virtual size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the guest's bytes from `offset`: zeros where nothing is
    /// allocated. The range must lie within [`Disk::size`].
    ///
    /// # Errors
    /// The range is outside the disk, a table points outside the file, a
    /// compressed cluster does not decompress, or the file cannot be read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The allocation status at `offset`: one extent starting there, of at
    /// most `max_len` bytes (and at least one byte).
    ///
    /// # Errors
    /// As [`Disk::read_at`].
    fn status(&self, offset: u64, max_len: u64) -> Result<MapExtent>;

    /// Checks the structure the format defines (see [`crate::check`]).
    ///
    /// # Errors
    /// The file cannot be read.
    fn check(&self) -> Result<crate::check::CheckReport> {
        Ok(crate::check::CheckReport { allocated: self.size(), checked: "nothing", ..Default::default() })
    }
}

/// Checks that `[offset, offset + len)` is inside a disk of `size` bytes.
pub(crate) fn check_range(size: u64, offset: u64, len: usize) -> Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(e) if e <= size => Ok(()),
        _ => Err(crate::error::Error::malformed(format!(
            "read of {len} bytes at guest offset {offset} is past the end of the disk ({size} bytes)"
        ))),
    }
}

/// The whole allocation map of a disk, merged as qemu-img map merges it.
///
/// # Errors
/// As [`Disk::status`].
pub fn map(disk: &dyn Disk) -> Result<Vec<MapExtent>> {
    map_range(disk, 0, disk.size())
}

/// The allocation map of `[start, start + len)`, collected.
///
/// # Errors
/// As [`Disk::status`].
pub fn map_range(disk: &dyn Disk, start: u64, len: u64) -> Result<Vec<MapExtent>> {
    let mut out = Vec::new();
    map_each(disk, start, len, &mut |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with each merged extent of `[start, start + len)` in order, so
/// that a map of millions of extents is printed without being held in memory.
///
/// # Errors
/// As [`Disk::status`], or what `f` returns.
pub fn map_each(
    disk: &dyn Disk,
    start: u64,
    len: u64,
    f: &mut dyn FnMut(MapExtent) -> Result<()>,
) -> Result<()> {
    let end = start.saturating_add(len).min(disk.size());
    let mut pending: Option<MapExtent> = None;
    let mut pos = start;
    while pos < end {
        let mut e = disk.status(pos, end - pos)?;
        // A status past the request or of no length would loop or overrun: clamp.
        e.start = pos;
        e.length = e.length.clamp(1, end - pos);
        pos = e.end();
        match pending.as_mut() {
            Some(last) if last.joins(&e) => last.length += e.length,
            _ => {
                if let Some(done) = pending.replace(e) {
                    f(done)?;
                }
            }
        }
    }
    if let Some(done) = pending {
        f(done)?;
    }
    Ok(())
}
