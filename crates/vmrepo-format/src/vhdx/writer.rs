//! The VHDX writer: dynamic.

use std::fs::File;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::write::WriteCtx;

/// Writes `disk` as a dynamic VHDX. Returns the guest bytes written.
pub(crate) fn write(disk: &dyn Disk, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let _ = (disk, out, ctx);
    Err(Error::unsupported("writing VHDX"))
}
