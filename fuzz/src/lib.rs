//! What every fuzz target does with its input: open it as an image (of the
//! given format, or detected), describe it, read from it, map it and check it,
//! all bounded.

use std::sync::Arc;

use vmrepo_format::{Format, MemSource, NoResolver, OpenOptions};

/// Runs the format layer over `data`. Errors are fine; panics, hangs and
/// runaway memory are what the fuzzer looks for.
pub fn exercise(data: &[u8], format: Option<Format>) {
    let src = Arc::new(MemSource::new(data.to_vec(), "fuzz"));
    let Ok(img) = vmrepo_format::open_source(src, &NoResolver, &OpenOptions { follow: false, format }) else {
        return;
    };
    let _ = serde_json_size(&img.info);
    let Ok(disk) = img.disk() else { return };
    let size = disk.size();
    let mut buf = vec![0u8; 64 * 1024];
    for at in [0, size / 2, size.saturating_sub(buf.len() as u64)] {
        let n = usize::try_from((size - at.min(size)).min(buf.len() as u64)).unwrap_or(0);
        let _ = disk.read_at(&mut buf[..n], at.min(size));
    }
    let mut extents = 0u32;
    let _ = vmrepo_format::map_each(disk, 0, size, &mut |_| {
        extents += 1;
        if extents > 10_000 {
            return Err(vmrepo_format::Error::from_io("enough", std::io::Error::other("stop")));
        }
        Ok(())
    });
    let _ = disk.check();
}

fn serde_json_size(info: &vmrepo_format::Info) -> usize {
    format!("{info:?}").len()
}
