//! Writing a guest's bytes in another format: the writers that sit beside the
//! readers (`qcow2/writer.rs`, `vmdk/writer.rs` ...), and what they share.
//!
//! Every writer streams: it walks the source [`Disk`] once, in guest order,
//! through `for_each_nonzero`, which skips what the map says reads as zeros
//! and every grain that holds only zeros, so holes stay holes. Nothing is
//! staged in a temporary raw copy, and what a writer keeps in memory is
//! bounded by the output's tables (a few bytes per MiB of guest), never by
//! the data: the caller gives an empty file, and renames it into place when
//! [`fn@write`] returns. Compressed outputs compress on every core through
//! `parallel_ordered`, in order.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use vmrepo_format::write::{Output, VmdkSubformat, write};
//!
//! let image = vmrepo_format::open("in.qcow2".as_ref(), &Default::default())?;
//! let out = std::fs::File::options().read(true).write(true).create_new(true).open("out.vmdk")?;
//! write(image.disk()?, &Output::Vmdk(VmdkSubformat::StreamOptimized), &out, &|_| {}, &AtomicBool::new(false))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use serde::Serialize;

use crate::Format;
use crate::disk::Disk;
use crate::error::{Error, ErrorKind, Result};

/// Bytes read from the source at a time (or one grain, if larger).
const CHUNK: usize = 1 << 20;
/// The largest grain `for_each_nonzero` hands out.
pub const MAX_GRAIN: usize = 2 << 20;

/// A qcow2 compression algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// DEFLATE, which every qcow2 reader knows.
    Zlib,
    /// zstd (qcow2's compression type 1: QEMU 5.1 and later).
    Zstd,
}

/// A VMDK flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VmdkSubformat {
    /// One growable file with the descriptor embedded: VMware Workstation's
    /// own, and what VirtualBox runs.
    #[serde(rename = "monolithicSparse")]
    MonolithicSparse,
    /// Compressed grains with markers, written in one pass: what ESXi's OVF
    /// import and EC2's VM Import take.
    #[serde(rename = "streamOptimized")]
    StreamOptimized,
}

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Output {
    /// A raw disk, holes left as holes.
    Raw,
    /// qcow2 version 3.
    Qcow2 {
        /// A power of two from 512 bytes to 2 MiB (64 KiB by default).
        cluster_size: u32,
        /// Every data cluster compressed (on all cores).
        compression: Option<Compression>,
    },
    Vmdk(VmdkSubformat),
    Vdi {
        /// Every block allocated up front (`Fixed` in VirtualBox's words);
        /// the blocks that read as zeros are holes in the file.
        fixed: bool,
    },
    /// VHD (qemu-img's `vpc`).
    Vhd {
        /// The fixed form: the guest's bytes then a footer, the size rounded
        /// up to a MiB (as Azure requires); zeros are holes in the file.
        fixed: bool,
    },
    /// VHDX, dynamic.
    Vhdx,
}

impl Output {
    /// The default output of each format: qcow2 with 64 KiB clusters and no
    /// compression, VMDK monolithicSparse, VDI, VHD and VHDX dynamic.
    pub fn default_for(format: Format) -> Option<Output> {
        Some(match format {
            Format::Raw => Output::Raw,
            Format::Iso => return None,
            Format::Qcow2 => Output::Qcow2 { cluster_size: 64 * 1024, compression: None },
            Format::Vmdk => Output::Vmdk(VmdkSubformat::MonolithicSparse),
            Format::Vdi => Output::Vdi { fixed: false },
            Format::Vhd => Output::Vhd { fixed: false },
            Format::Vhdx => Output::Vhdx,
        })
    }

    /// The format written.
    pub fn format(&self) -> Format {
        match self {
            Output::Raw => Format::Raw,
            Output::Qcow2 { .. } => Format::Qcow2,
            Output::Vmdk(_) => Format::Vmdk,
            Output::Vdi { .. } => Format::Vdi,
            Output::Vhd { .. } => Format::Vhd,
            Output::Vhdx => Format::Vhdx,
        }
    }

    /// The flavour, in the words of the format's own tools: `monolithicSparse`,
    /// `streamOptimized`, `fixed`, `dynamic`, `compressed (zstd)`.
    pub fn subformat(&self) -> String {
        match self {
            Output::Raw => "sparse".into(),
            Output::Qcow2 { compression: None, .. } => "v3".into(),
            Output::Qcow2 { compression: Some(Compression::Zlib), .. } => "v3, compressed (zlib)".into(),
            Output::Qcow2 { compression: Some(Compression::Zstd), .. } => "v3, compressed (zstd)".into(),
            Output::Vmdk(VmdkSubformat::MonolithicSparse) => "monolithicSparse".into(),
            Output::Vmdk(VmdkSubformat::StreamOptimized) => "streamOptimized".into(),
            Output::Vdi { fixed: true } | Output::Vhd { fixed: true } => "fixed".into(),
            Output::Vdi { fixed: false } | Output::Vhd { fixed: false } | Output::Vhdx => "dynamic".into(),
        }
    }

    /// Whether the output is compressed (and so compresses on all cores).
    pub fn compressed(&self) -> bool {
        matches!(
            self,
            Output::Qcow2 { compression: Some(_), .. } | Output::Vmdk(VmdkSubformat::StreamOptimized)
        )
    }

    /// Checks the options: a qcow2 cluster size that is a power of two from
    /// 512 bytes to 2 MiB.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] naming the option.
    pub fn validate(&self) -> Result<()> {
        if let Output::Qcow2 { cluster_size, .. } = self
            && !(cluster_size.is_power_of_two() && (512..=2 << 20).contains(cluster_size))
        {
            return Err(Error::unsupported(format!(
                "qcow2 cluster size {cluster_size}: a power of two from 512 bytes to 2 MiB"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.format().name(), self.subformat())
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Written {
    /// Bytes of guest data written (grains that are not all zeros), before
    /// compression.
    pub data_bytes: u64,
    /// The output file's length.
    pub file_size: u64,
}

/// How a writer reports and stops.
pub struct WriteCtx<'a> {
    /// Called with the guest offset reached, in order.
    pub progress: &'a dyn Fn(u64),
    /// Set (by a signal handler) to stop: the writer returns an error.
    pub cancel: &'a AtomicBool,
    /// Compression threads: every core.
    pub threads: usize,
    /// The file name the output will have once renamed into place (a VMDK
    /// descriptor names its own file); `None`: the name it is written under.
    pub name: Option<&'a str>,
}

impl WriteCtx<'_> {
    /// An error if the write was cancelled.
    pub(crate) fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) { Err(interrupted()) } else { Ok(()) }
    }
}

pub(crate) fn interrupted() -> Error {
    Error::new(ErrorKind::Io, "interrupted")
}

/// Writes `disk` as `output` into `out`, an empty file open for reading and
/// writing. `progress` receives guest offsets as they are written.
///
/// # Errors
/// The options are invalid, the disk is too large for the format, reading
/// the source or writing `out` fails, or `cancel` is set. What is in `out`
/// then is incomplete: the caller removes it.
pub fn write(
    disk: &dyn Disk,
    output: &Output,
    out: &File,
    progress: &dyn Fn(u64),
    cancel: &AtomicBool,
) -> Result<Written> {
    write_named(disk, output, out, None, progress, cancel)
}

/// [`fn@write`], into a file that will be renamed to `name` (a VMDK names its
/// own file in its descriptor, where VMware looks for its data).
///
/// # Errors
/// As [`fn@write`].
pub fn write_named(
    disk: &dyn Disk,
    output: &Output,
    out: &File,
    name: Option<&str>,
    progress: &dyn Fn(u64),
    cancel: &AtomicBool,
) -> Result<Written> {
    output.validate()?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let ctx = WriteCtx { progress, cancel, threads, name };
    let data_bytes = match *output {
        Output::Raw => {
            let mut data = 0u64;
            crate::cat::to_file(disk, out, progress, cancel)?;
            crate::disk::map_each(disk, 0, disk.size(), &mut |e| {
                if !e.zero {
                    data = data.saturating_add(e.length);
                }
                Ok(())
            })?;
            data
        }
        Output::Qcow2 { cluster_size, compression } => {
            crate::qcow2::writer::write(disk, cluster_size, compression, out, &ctx)?
        }
        Output::Vmdk(sub) => crate::vmdk::writer::write(disk, sub, out, &ctx)?,
        Output::Vdi { fixed } => crate::vdi::writer::write(disk, fixed, out, &ctx)?,
        Output::Vhd { fixed } => crate::vhd::writer::write(disk, fixed, out, &ctx)?,
        Output::Vhdx => crate::vhdx::writer::write(disk, out, &ctx)?,
    };
    ctx.check_cancel()?;
    let file_size = out.metadata().map_err(|e| Error::io("cannot read the output's length", e))?.len();
    Ok(Written { data_bytes, file_size })
}

/// Writes all of `buf` at `offset` of the output.
pub(crate) fn write_at(out: &File, buf: &[u8], offset: u64) -> Result<()> {
    out.write_all_at(buf, offset)
        .map_err(|e| Error::io(format!("cannot write the output at offset {offset}"), e))
}

/// Calls `f(guest_offset, grain)` for every grain of `grain` bytes (a power
/// of two up to [`MAX_GRAIN`], aligned in the guest) that holds a byte other
/// than zero, in guest order. The last grain of a disk whose size is not a
/// multiple of `grain` is handed out whole, padded with zeros. What the map
/// says reads as zeros is not read. Returns the bytes of the grains handed out.
///
/// # Errors
/// Reading the disk fails, `f` fails, or the write is cancelled.
pub(crate) fn for_each_nonzero(
    disk: &dyn Disk,
    grain: usize,
    ctx: &WriteCtx<'_>,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    if !grain.is_power_of_two() || grain > MAX_GRAIN {
        return Err(Error::unsupported(format!("grain of {grain} bytes")));
    }
    let chunk = CHUNK.max(grain);
    let size = disk.size();
    let mut buf = crate::IoBuf::zeroed(chunk);
    let mut handed = 0u64;
    let mut pos = 0u64;
    while pos < size {
        ctx.check_cancel()?;
        let end = pos.saturating_add(chunk as u64).min(size);
        // Skip what the map says reads as zeros, a chunk at a time.
        let e = disk.status(pos, size - pos)?;
        if e.zero {
            let zero_end = pos.saturating_add(e.length.max(1)).min(size);
            let skip_to = zero_end - zero_end % chunk as u64;
            if skip_to > pos {
                pos = skip_to;
                (ctx.progress)(pos);
                continue;
            }
        }
        let n = usize::try_from(end - pos).unwrap_or(chunk);
        buf[n..].fill(0);
        disk.read_at(&mut buf[..n], pos)?;
        let used = n.div_ceil(grain) * grain;
        for (i, g) in buf[..used].chunks(grain).enumerate() {
            if !crate::cat::is_zero(g) {
                f(pos + (i * grain) as u64, g)?;
                handed = handed.saturating_add(grain as u64);
            }
        }
        pos = end;
        (ctx.progress)(pos);
    }
    Ok(handed)
}

/// What [`parallel_ordered`]'s producer calls with each item.
pub(crate) type Push<'a, T> = &'a mut dyn FnMut(T) -> Result<()>;

/// Runs `work` on `threads` threads over the items `produce` pushes, and
/// hands the results to `sink` in the order the items were pushed. At most
/// `2 × threads + 2` items are in flight, so memory stays bounded whatever
/// the number of items. The first error (from `produce`, `work` or `sink`)
/// stops everything and is returned.
///
/// # Errors
/// The first error of `produce`, `work` or `sink`.
pub(crate) fn parallel_ordered<T: Send, R: Send>(
    threads: usize,
    work: &(dyn Fn(T) -> Result<R> + Sync),
    produce: &mut dyn FnMut(Push<'_, T>) -> Result<()>,
    sink: &mut dyn FnMut(R) -> Result<()>,
) -> Result<()> {
    let threads = threads.clamp(1, 64);
    let limit = 2 * threads + 2;
    let (to_workers, jobs) = mpsc::channel::<(u64, T)>();
    let jobs = Mutex::new(jobs);
    let (to_main, results) = mpsc::channel::<(u64, Result<R>)>();
    let stopped = || Error::new(ErrorKind::Io, "a compression thread stopped");
    std::thread::scope(|s| {
        for _ in 0..threads {
            let to_main = to_main.clone();
            let jobs = &jobs;
            s.spawn(move || {
                loop {
                    let next = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, item)) = next else { return };
                    let r = work(item);
                    let failed = r.is_err();
                    if to_main.send((seq, r)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(to_main);
        let mut sent = 0u64;
        let mut next_out = 0u64;
        let mut pending: BTreeMap<u64, R> = BTreeMap::new();
        // Takes one result (waiting for it), and sinks what is now in order.
        let mut take_one = |pending: &mut BTreeMap<u64, R>, next_out: &mut u64| -> Result<()> {
            let (seq, r) = results.recv().map_err(|_| stopped())?;
            pending.insert(seq, r?);
            while let Some(r) = pending.remove(next_out) {
                sink(r)?;
                *next_out += 1;
            }
            Ok(())
        };
        let produced = produce(&mut |item| {
            while sent - next_out >= limit as u64 {
                take_one(&mut pending, &mut next_out)?;
            }
            to_workers.send((sent, item)).map_err(|_| stopped())?;
            sent += 1;
            Ok(())
        });
        let finished = produced.and_then(|()| {
            while next_out < sent {
                take_one(&mut pending, &mut next_out)?;
            }
            Ok(())
        });
        // Closing the queue ends the workers, whether or not all went well.
        drop(to_workers);
        finished
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx<'a>(cancel: &'a AtomicBool) -> WriteCtx<'a> {
        WriteCtx { progress: &|_| {}, cancel, threads: 2, name: None }
    }

    #[test]
    fn nonzero_grains_in_order_with_the_tail_padded() {
        // 3 MiB + 1000 bytes: data in grain 0, grain 40 (at 2.5 MiB) and the tail.
        let size = (3 << 20) + 1000;
        let mut data = vec![0u8; size];
        data[5] = 1;
        data[(40 << 16) + 7] = 2;
        data[size - 1] = 3;
        let src = Arc::new(crate::MemSource::new(data, "mem"));
        let disk = crate::raw::RawDisk::new(src, 0, size as u64, false);
        let cancel = AtomicBool::new(false);
        let mut seen = Vec::new();
        let n = for_each_nonzero(&disk, 64 << 10, &ctx(&cancel), &mut |off, g| {
            assert_eq!(g.len(), 64 << 10);
            seen.push((off, g.iter().map(|&b| u64::from(b)).sum::<u64>()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 1), (40 << 16, 2), (3 << 20, 3)]);
        assert_eq!(n, 3 * (64 << 10));
        cancel.store(true, Ordering::Relaxed);
        assert!(for_each_nonzero(&disk, 64 << 10, &ctx(&cancel), &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn parallel_results_come_back_in_order_and_errors_stop_it() {
        let mut out = Vec::new();
        parallel_ordered(
            3,
            &|i: u64| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_micros(1000 - i * 9));
                Ok(i * 2)
            },
            &mut |push| (0..100).try_for_each(&mut *push),
            &mut |r| {
                out.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        // A failing item: its error, not a hang.
        let e = parallel_ordered(
            2,
            &|i: u64| if i == 50 { Err(Error::malformed("item 50")) } else { Ok(i) },
            &mut |push| (0..10_000).try_for_each(&mut *push),
            &mut |_| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("item 50"), "{e}");
        // A failing sink: the same.
        let e = parallel_ordered(
            2,
            &|i: u64| Ok(i),
            &mut |push| (0..10_000).try_for_each(&mut *push),
            &mut |r| if r == 7 { Err(Error::malformed("sink 7")) } else { Ok(()) },
        )
        .unwrap_err();
        assert!(e.to_string().contains("sink 7"), "{e}");
    }
}
