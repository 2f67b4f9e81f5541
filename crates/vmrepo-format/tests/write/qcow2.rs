//! The qcow2 writer: every source in every cluster size and compression,
//! the header's fields at the spec's offsets, holes, a 1 TiB disk in little
//! memory, and the disks too large for the format.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vmrepo_format::write::{Compression, Output, write};
use vmrepo_format::{ErrorKind, OpenOptions, open};
use vmrepo_testkit::Counting;

use crate::common::{self, Src, allocated, convert, convert_checked, need_qemu_img, qemu_info};

const CLUSTER_SIZES: [u32; 3] = [64 << 10, 512, 2 << 20];

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}
fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

/// Every source in every cluster size with `compression`, held to
/// qemu-img; `info` agrees on the cluster size and the compression type.
fn every_source(compression: Option<Compression>) {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in common::sources(dir.path()) {
        let size =
            open(&src.path, &OpenOptions { follow: true, ..Default::default() }).unwrap().info.virtual_size;
        for cluster_size in CLUSTER_SIZES {
            // 512-byte clusters map 32 KiB per L2 table: qemu-img compare
            // of a 127 GiB sample takes minutes, so only small disks.
            if cluster_size == 512 && size > 1 << 30 {
                continue;
            }
            let output = Output::Qcow2 { cluster_size, compression };
            let dest = convert_checked(&src, &output, dir.path());
            let info = qemu_info(&dest, Some("qcow2")).unwrap();
            let what = format!("{} as {output}", src.what);
            assert_eq!(info["cluster-size"].as_u64(), Some(u64::from(cluster_size)), "{what}: {info}");
            let want = if compression == Some(Compression::Zstd) { "zstd" } else { "zlib" };
            assert_eq!(info["format-specific"]["data"]["compression-type"], want, "{what}: {info}");
            assert_eq!(info["dirty-flag"], false, "{what}: {info}");
            std::fs::remove_file(dest).unwrap();
        }
    }
}

#[test]
fn qcow2_of_every_source_uncompressed() {
    every_source(None);
}

#[test]
fn qcow2_of_every_source_zlib() {
    every_source(Some(Compression::Zlib));
}

#[test]
fn qcow2_of_every_source_zstd() {
    every_source(Some(Compression::Zstd));
}

fn raw_src(path: &Path) -> Src {
    Src { path: path.to_path_buf(), format: "raw".into(), what: path.display().to_string() }
}

/// The header read at the spec's offsets, and the first L2 entries: a
/// cluster stored as it is has the COPIED flag, a compressed one the
/// compressed flag and its sector count.
#[test]
fn qcow2_header_and_entries_at_the_spec_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("two.raw");
    let f = File::create(&raw).unwrap();
    f.set_len((3 << 20) + 1000).unwrap();
    f.write_all_at(&[0x5au8; 65536], 0).unwrap();
    f.write_all_at(&[0x77u8; 100], 3 << 20).unwrap();
    drop(f);
    for compression in [None, Some(Compression::Zlib), Some(Compression::Zstd)] {
        let output = Output::Qcow2 { cluster_size: 65536, compression };
        let (dest, written) = convert(&raw_src(&raw), &output, dir.path());
        assert_eq!(written.data_bytes, 2 * 65536, "two nonzero clusters");
        let file = std::fs::read(&dest).unwrap();
        let h = &file[..120];
        assert_eq!(&h[0..4], b"QFI\xfb");
        assert_eq!(be32(h, 4), 3, "version");
        assert_eq!(be64(h, 8), 0, "no backing file");
        assert_eq!(be32(h, 20), 16, "cluster_bits");
        assert_eq!(be64(h, 24), (3 << 20) + 1024, "size: rounded up to a sector, as qemu-img does");
        assert_eq!(be32(h, 32), 0, "no encryption");
        assert_eq!(be32(h, 36), 1, "l1_size");
        assert_eq!(be32(h, 60), 0, "no snapshots");
        let zstd = compression == Some(Compression::Zstd);
        assert_eq!(
            be64(h, 72),
            if zstd { 1 << 3 } else { 0 },
            "incompatible features: only compression type"
        );
        assert_eq!(be64(h, 80), 0, "compatible features");
        assert_eq!(be64(h, 88), 0, "autoclear features");
        assert_eq!(be32(h, 96), 4, "refcount_order");
        assert_eq!(be32(h, 100), 112, "header_length");
        assert_eq!(h[104], u8::from(zstd), "compression_type");
        assert_eq!(&h[112..120], &[0; 8], "end of the header extensions");
        let l1 = be64(h, 40) as usize;
        assert_eq!(l1 % 65536, 0);
        assert_eq!(file.len() % 65536, 0, "the file ends on a cluster boundary");
        let l2 = (be64(&file, l1) & ((1 << 56) - 512)) as usize;
        assert_eq!(be64(&file, l1) >> 63, 1, "L1 entry: COPIED");
        let (e0, e48) = (be64(&file, l2), be64(&file, l2 + 48 * 8));
        assert_eq!(be64(&file, l2 + 8), 0, "a hole stays unallocated");
        for e in [e0, e48] {
            if compression.is_none() {
                assert_eq!(e >> 62, 0b10, "COPIED, not compressed: {e:#x}");
                let off = (e & ((1 << 56) - 512)) as usize;
                assert_eq!(off % 65536, 0);
                assert!(file[off..off + 100].iter().all(|&b| b == 0x5a || b == 0x77));
            } else {
                assert_eq!(e >> 62, 0b01, "compressed, not COPIED: {e:#x}");
                // x = 62 - (16 - 8) = 54: the offset below, the extra sectors above.
                let off = e & ((1 << 54) - 1);
                let extra = (e >> 54) & 0xff;
                assert!(extra < 2, "a cluster of one byte value takes a sector or two: {extra}");
                assert!(off >= 65536 && off < file.len() as u64);
            }
        }
        if compression.is_some() {
            // Packed back to back: the second starts where the first ends.
            assert!(e48 & ((1 << 54) - 1) < (e0 & ((1 << 54) - 1)) + 1024);
        }
        std::fs::remove_file(dest).unwrap();
    }
}

/// A 64 MiB disk with a few MiB of data takes a few MiB: holes stay holes,
/// and the padding of a 2 MiB cluster after compressed data is a hole too.
#[test]
fn qcow2_keeps_holes() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_src(&common::base_raw(dir.path()));
    let data = allocated(&raw.path);
    for (cluster_size, compression, room) in [
        (65536, None, 1 << 20),
        (65536, Some(Compression::Zstd), 1 << 20),
        (2 << 20, None, 1 << 20),
        (2 << 20, Some(Compression::Zlib), 1 << 20),
    ] {
        let output = Output::Qcow2 { cluster_size, compression };
        let dest = convert_checked(&raw, &output, dir.path());
        let len = std::fs::metadata(&dest).unwrap().len();
        assert_eq!(len % u64::from(cluster_size), 0, "{output}: the file ends on a cluster boundary");
        let used = allocated(&dest);
        assert!(used <= data + room, "{output}: {used} bytes allocated for {data} of data");
        std::fs::remove_file(dest).unwrap();
    }
}

/// 1 TiB of virtual size with a few MiB of data, at the start, in the
/// middle, across an L2 range and in the last sector: written in seconds and
/// little memory (the L1 table is 16 KiB, one L2 table and one refcount
/// block are in memory), and qemu-img finds it clean and identical.
#[test]
fn qcow2_of_a_1_tib_disk_in_bounded_memory() {
    if !need_qemu_img() {
        return;
    }
    if !Counting::alone_in_a_child(module_path!(), "qcow2_of_a_1_tib_disk_in_bounded_memory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("huge.raw");
    let f = File::create(&raw).unwrap();
    let size = 1u64 << 40;
    f.set_len(size).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for off in [0, 1 << 39, (512 << 20) - (512 << 10), (700 << 30) + 12345] {
        f.write_all_at(&chunk, off).unwrap();
    }
    f.write_all_at(&[0xee; 512], size - 512).unwrap();
    drop(f);
    for compression in [None, Some(Compression::Zstd), Some(Compression::Zlib)] {
        let output = Output::Qcow2 { cluster_size: 65536, compression };
        let before = Counting::reset_peak();
        let start = Instant::now();
        let (dest, _) = convert(&raw_src(&raw), &output, dir.path());
        let (took, peak) = (start.elapsed(), Counting::peak_since(before));
        assert!(took < Duration::from_secs(60), "{output}: {took:?}");
        assert!(peak < 64 << 20, "{output}: {peak} bytes of heap at the peak");
        eprintln!("1 TiB as {output}: {took:?}, heap peak {} KiB", peak >> 10);
        std::fs::remove_file(dest).unwrap();
    }
    // qemu-img reads the holes from the map; vmrepo's read-back of 1 TiB
    // would read every zero, so only qemu-img is asked here.
    let output = Output::Qcow2 { cluster_size: 65536, compression: Some(Compression::Zstd) };
    let (dest, _) = convert(&raw_src(&raw), &output, dir.path());
    let check = Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(&dest).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let cmp =
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(&raw).arg(&dest).output();
    let cmp = cmp.unwrap();
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));
    assert_eq!(qemu_info(&dest, Some("qcow2")).unwrap()["virtual-size"].as_u64(), Some(size));
}

/// A disk too large for qcow2, or for QEMU's largest L1 table at the
/// cluster size asked for, is refused in one line; nothing panics.
#[test]
fn qcow2_refuses_a_disk_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("huge.raw");
    // 1 TiB with 512-byte clusters: 2^40 / 32 KiB = 32 Mi L1 entries, QEMU's cap is 4 Mi.
    File::create(&raw).unwrap().set_len(1 << 40).unwrap();
    let image = open(&raw, &OpenOptions::default()).unwrap();
    let out =
        File::options().read(true).write(true).create_new(true).open(dir.path().join("o.qcow2")).unwrap();
    let output = Output::Qcow2 { cluster_size: 512, compression: None };
    let e = write(image.disk().unwrap(), &output, &out, &|_| {}, &AtomicBool::new(false)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("L1") && !msg.contains('\n'), "{msg}");
    // The same disk with 64 KiB clusters is fine (2048 L1 entries).
    let output = Output::Qcow2 { cluster_size: 65536, compression: None };
    write(image.disk().unwrap(), &output, &out, &|_| {}, &AtomicBool::new(false)).unwrap();
    if need_qemu_img() {
        let o =
            Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(dir.path().join("o.qcow2")).output();
        assert!(o.unwrap().status.success());
    }
}
