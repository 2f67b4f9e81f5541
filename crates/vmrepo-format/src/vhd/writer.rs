//! The VHD writer: dynamic and fixed.

use std::fs::File;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::write::WriteCtx;

/// Writes `disk` as a VHD image, fixed or dynamic. Returns the guest bytes written.
pub(crate) fn write(disk: &dyn Disk, fixed: bool, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let _ = (disk, fixed, out, ctx);
    Err(Error::unsupported("writing VHD"))
}
