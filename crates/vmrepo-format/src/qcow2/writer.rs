//! The qcow2 writer: version 3, streamed, appended in one pass.

use std::fs::File;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::write::{Compression, WriteCtx};

/// Writes `disk` as qcow2 v3 with clusters of `cluster_size` bytes, every data
/// cluster compressed with `compression` if given. Returns the guest bytes written.
pub(crate) fn write(
    disk: &dyn Disk,
    cluster_size: u32,
    compression: Option<Compression>,
    out: &File,
    ctx: &WriteCtx<'_>,
) -> Result<u64> {
    let _ = (disk, cluster_size, compression, out, ctx);
    Err(Error::unsupported("writing qcow2"))
}
