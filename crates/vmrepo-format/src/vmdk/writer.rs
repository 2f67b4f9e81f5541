//! The VMDK writer: monolithicSparse and streamOptimized.

use std::fs::File;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::write::{VmdkSubformat, WriteCtx};

/// Writes `disk` as a VMDK of `sub`. Returns the guest bytes written.
pub(crate) fn write(disk: &dyn Disk, sub: VmdkSubformat, out: &File, ctx: &WriteCtx<'_>) -> Result<u64> {
    let _ = (disk, sub, out, ctx);
    Err(Error::unsupported("writing VMDK"))
}
