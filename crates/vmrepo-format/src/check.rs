//! `vmrepo check`: the structural consistency of an image, where its format
//! defines one: tables inside the file, entries aligned, no cluster used
//! twice or overlapping the metadata; for qcow2, every cluster's references
//! counted against its refcount as `qemu-img check` counts them; for a fixed
//! container (a flat VMDK extent, a fixed VHD), a file that holds every byte
//! the image declares.

use serde::Serialize;

use crate::Image;
use crate::error::Result;

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Every inconsistency, one line each.
    pub problems: Vec<String>,
    /// Guest bytes the tables allocate.
    pub allocated: u64,
    /// Host clusters with a refcount that nothing accounts for (qcow2 leaks,
    /// counted as qemu-img check counts them): wasted space, not an error.
    pub leaked_clusters: u64,
    /// What was checked: `tables`, `size` (a fixed container's file holds its
    /// declared size) or `nothing` (raw images have no structure).
    pub checked: &'static str,
}

/// The largest number of problems listed; the count goes on past it.
pub const MAX_LISTED: usize = 1000;

impl CheckReport {
    pub(crate) fn problem(&mut self, p: impl Into<String>) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p.into());
        }
    }
}

/// A stretch of the host file in use, for overlap detection: `what` and its
/// number name it in messages ("grain 12"), without a string per stretch.
#[derive(Clone, Debug)]
pub(crate) struct Used {
    pub start: u64,
    pub end: u64,
    pub what: &'static str,
    pub index: u64,
}

impl Used {
    pub(crate) fn new(start: u64, end: u64, what: &'static str, index: u64) -> Used {
        Used { start, end, what, index }
    }
}

/// Reports every pair of overlapping stretches (each overlap once).
pub(crate) fn overlaps(mut used: Vec<Used>, report: &mut CheckReport) {
    used.sort_by_key(|u| (u.start, u.end));
    let mut reach: Option<(u64, usize)> = None;
    for i in 0..used.len() {
        if let Some((end, j)) = reach
            && used[i].start < end
        {
            let (a, b) = (&used[i], &used[j]);
            report.problem(format!(
                "{} {} [{:#x}, {:#x}) overlaps {} {} [{:#x}, {:#x})",
                a.what, a.index, a.start, a.end, b.what, b.index, b.start, b.end
            ));
        }
        if reach.is_none_or(|(end, _)| used[i].end > end) {
            reach = Some((used[i].end, i));
        }
    }
}

/// Checks an image's structure. An image passes only with `Ok` and no
/// problems: a caller that admits images (`add`) refuses both an error and a
/// problem.
///
/// # Errors
/// Whenever the image's disk cannot be opened ([`Image::disk`] is `Err`, with
/// its kind): [`ErrorKind::Malformed`] for a table the disk cannot be read
/// without (a qcow2 L1 table past the end of the file), [`ErrorKind::Refused`]
/// for a referenced file outside the image's folder, a link, or not a regular
/// file (a VMDK extent `/etc/passwd`, `../x` or `/dev/zero`, with or without
/// following), [`ErrorKind::NeedsReferenced`] for a referenced file that was
/// not opened ([`crate::OpenOptions::follow`] off), [`ErrorKind::Unsupported`]
/// for an encrypted or differencing image; and [`ErrorKind::Io`] when a table
/// cannot be read.
///
/// [`ErrorKind::Malformed`]: crate::ErrorKind::Malformed
/// [`ErrorKind::Refused`]: crate::ErrorKind::Refused
/// [`ErrorKind::NeedsReferenced`]: crate::ErrorKind::NeedsReferenced
/// [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
/// [`ErrorKind::Io`]: crate::ErrorKind::Io
pub fn check(image: &Image) -> Result<CheckReport> {
    image.disk()?.check()
}
