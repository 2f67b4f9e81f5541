//! Devices inside the virtual disk: a partition, a logical volume, the whole
//! disk. Every read goes through a shared counter, so that an inspection can
//! say how many bytes it read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vmrepo_format::Disk;

use crate::error::{Error, Result};

/// Random-access bytes of a device of known length.
pub trait Dev: Send + Sync {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; the range must lie within the device.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
}

/// The whole virtual disk, counting the bytes read.
pub struct DiskDev {
    disk: Arc<dyn Disk>,
    counter: Arc<AtomicU64>,
}

impl DiskDev {
    pub fn new(disk: Arc<dyn Disk>, counter: Arc<AtomicU64>) -> DiskDev {
        DiskDev { disk, counter }
    }
}

impl Dev for DiskDev {
    fn len(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.disk.read_at(buf, offset).map_err(Error::from)
    }
}

/// `[start, start + len)` of another device (a partition). A window that
/// claims more than its device holds is cut at the device's end.
pub struct Window {
    inner: Arc<dyn Dev>,
    start: u64,
    len: u64,
}

impl Window {
    pub fn new(inner: Arc<dyn Dev>, start: u64, len: u64) -> Window {
        let len = len.min(inner.len().saturating_sub(start));
        Window { inner, start, len }
    }
}

impl Dev for Window {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(Error::bounds(offset, buf.len(), self.len));
        }
        self.inner.read_at(buf, self.start + offset)
    }
}

/// Reads `len` bytes at `offset`, or `None` past the end of the device.
pub fn read_vec(dev: &dyn Dev, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    if offset.checked_add(len as u64).is_none_or(|e| e > dev.len()) {
        return Ok(None);
    }
    let mut b = vec![0u8; len];
    dev.read_at(&mut b, offset)?;
    Ok(Some(b))
}

/// A device as ext4-view wants it.
pub struct Ext4Source(pub Arc<dyn Dev>);

impl ext4_view::Ext4Read for Ext4Source {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_at(dst, start_byte).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }
}
