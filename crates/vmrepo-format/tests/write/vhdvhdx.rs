//! The VHD (dynamic and fixed) and VHDX writers, with qemu-img as the oracle,
//! and their layout read back at the offsets of the specifications.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vmrepo_format::write::{Output, write};
use vmrepo_format::{ErrorKind, OpenOptions, open};
use vmrepo_testkit::Counting;

use crate::common;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const OUTPUTS: [Output; 3] = [Output::Vhd { fixed: false }, Output::Vhd { fixed: true }, Output::Vhdx];

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A sparse raw file of `size` bytes with `data` written at the offsets given.
fn raw_source(dir: &Path, name: &str, size: u64, data: &[(u64, &[u8])]) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    for (off, bytes) in data {
        f.write_all_at(bytes, *off).unwrap();
    }
    path
}

/// Writes the image at `src` as `output` into `dir/name`.
fn convert(src: &Path, output: &Output, dir: &Path, name: &str) -> vmrepo_format::Result<PathBuf> {
    let image = open(src, &OpenOptions::default())?;
    let dst = dir.join(name);
    let out = File::options().read(true).write(true).create_new(true).open(&dst).unwrap();
    write(image.disk()?, output, &out, &|_| {}, &AtomicBool::new(false))?;
    Ok(dst)
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    let o = Command::new("qemu-img").args(args).output().expect("qemu-img runs");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

/// `qemu-img info`'s virtual size of `path` read as `format`.
fn qemu_virtual_size(path: &Path, format: &str) -> u64 {
    let (ok, text) = qemu_img(&["info", "--output=json", "-f", format, path.to_str().unwrap()]);
    assert!(ok, "qemu-img info: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// `qemu-img compare` of a raw source with the output (the output's extra
/// tail must read as zeros).
fn assert_identical(src: &Path, src_format: &str, dst: &Path, format: &str) {
    let (ok, text) =
        qemu_img(&["compare", "-f", src_format, "-F", format, src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert!(ok && text.contains("Images are identical"), "{}: {text}", dst.display());
}

#[test]
fn every_source_to_vhd_dynamic_vhd_fixed_and_vhdx() {
    if !common::need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in common::sources(dir.path()) {
        for output in &OUTPUTS {
            common::convert_checked(&src, output, dir.path());
        }
    }
}

#[test]
fn fixed_vhd_footer_at_the_spec_offsets_with_a_size_rounded_to_a_mib() {
    if !common::need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // An odd size, data in the first and the last sector.
    let size = 5 * MIB + 1234;
    let src = raw_source(dir.path(), "odd.raw", size, &[(0, &[0xab; 512]), (size - 7, &[0xcd; 7])]);
    let dst = convert(&src, &Output::Vhd { fixed: true }, dir.path(), "odd.vhd").unwrap();
    let rounded = 6 * MIB;
    let len = std::fs::metadata(&dst).unwrap().len();
    assert_eq!(len, rounded + 512, "the data region is the size rounded to a MiB, then the footer");
    let mut f = [0u8; 512];
    File::open(&dst).unwrap().read_exact_at(&mut f, len - 512).unwrap();
    assert_eq!(&f[0..8], b"conectix", "cookie");
    assert_eq!(be32(&f, 8), 2, "features");
    assert_eq!(be32(&f, 12), 0x0001_0000, "file format version");
    assert_eq!(be64(&f, 16), u64::MAX, "data offset of a fixed disk");
    assert_eq!(&f[28..32], b"vmrp", "creator application");
    assert_eq!(&f[36..40], b"Wi2k", "creator host OS");
    assert_eq!(be64(&f, 40), rounded, "original size");
    assert_eq!(be64(&f, 48), rounded, "current size");
    assert_eq!((u32::from(u16::from_be_bytes([f[56], f[57]])), f[58], f[59]), (65535, 16, 255), "geometry");
    assert_eq!(be32(&f, 60), 2, "disk type fixed");
    let sum =
        !f.iter().enumerate().filter(|(i, _)| !(64..68).contains(i)).map(|(_, &b)| u32::from(b)).sum::<u32>();
    assert_eq!(be32(&f, 64), sum, "checksum");
    assert_ne!(&f[68..84], &[0u8; 16], "unique id");
    assert_eq!(f[84], 0, "saved state");
    assert_eq!(rounded % MIB, 0);
    // QEMU reads the footer's size (the largest geometry), to the byte.
    assert_eq!(qemu_virtual_size(&dst, "vpc"), rounded);
    assert_identical(&src, "raw", &dst, "vpc");
    // The dynamic form: the footer copy at 0, the dynamic disk header at 512.
    let dyn_dst = convert(&src, &Output::Vhd { fixed: false }, dir.path(), "odd-dyn.vhd").unwrap();
    let mut head = [0u8; 1536];
    File::open(&dyn_dst).unwrap().read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head[0..8], b"conectix");
    assert_eq!(be64(&head, 16), 512, "data offset");
    assert_eq!(be32(&head, 60), 3, "disk type dynamic");
    assert_eq!(&head[512..520], b"cxsparse");
    assert_eq!(be64(&head, 512 + 16), 1536, "table offset");
    assert_eq!(be32(&head, 512 + 24), 0x0001_0000, "header version");
    assert_eq!(be32(&head, 512 + 28), 3, "max table entries: 6 MiB in 2 MiB blocks");
    assert_eq!(be32(&head, 512 + 32), 2 << 20, "block size");
    // The BAT: block 0 and block 2 stored, block 1 not; each bitmap all ones.
    let mut bat = [0u8; 12];
    let file = File::open(&dyn_dst).unwrap();
    file.read_exact_at(&mut bat, 1536).unwrap();
    assert_eq!(be32(&bat, 4), u32::MAX);
    for e in [be32(&bat, 0), be32(&bat, 8)] {
        assert_ne!(e, u32::MAX);
        let mut bitmap = [0u8; 512];
        file.read_exact_at(&mut bitmap, u64::from(e) * 512).unwrap();
        assert_eq!(bitmap, [0xff; 512]);
        assert_eq!((u64::from(e) * 512 + 512) % 4096, 0, "block data on a host page");
    }
    let dyn_len = std::fs::metadata(&dyn_dst).unwrap().len();
    let mut tail = [0u8; 512];
    file.read_exact_at(&mut tail, dyn_len - 512).unwrap();
    assert_eq!(tail, head[..512], "the footer at the end is the copy at 0");
    assert_eq!(qemu_virtual_size(&dyn_dst, "vpc"), rounded);
    assert_identical(&src, "raw", &dyn_dst, "vpc");
}

#[test]
fn vhdx_layout_at_the_spec_offsets() {
    if !common::need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Data in block 0 and block 130 (past the first chunk of 128 blocks,
    // so its BAT entry follows a sector bitmap entry).
    let size = 5 * GIB + 1000;
    let src = raw_source(dir.path(), "v.raw", size, &[(4096, &[1; 4096]), (130 * 32 * MIB + 5, &[2; 9])]);
    let dst = convert(&src, &Output::Vhdx, dir.path(), "v.vhdx").unwrap();
    let file = File::open(&dst).unwrap();
    let mut head = vec![0u8; 1 << 20];
    file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head[..8], b"vhdxfile");
    for (at, seq) in [(64 << 10, 1), (128 << 10, 2)] {
        assert_eq!(&head[at..at + 4], b"head");
        assert_eq!(le64(&head, at + 8), seq, "sequence number");
        assert_eq!(&head[at + 48..at + 64], &[0; 16], "log GUID");
    }
    assert_eq!(head[192 << 10..(192 << 10) + (64 << 10)], head[256 << 10..(256 << 10) + (64 << 10)]);
    assert_eq!(&head[192 << 10..(192 << 10) + 4], b"regi");
    // The BAT at 3 MiB: entry 0 and entry 130 + 130 / 128 = 131.
    let mut bat = vec![0u8; 133 * 8];
    file.read_exact_at(&mut bat, 3 * MIB).unwrap();
    for (i, e) in bat.chunks_exact(8).enumerate() {
        let e = u64::from_le_bytes(e.try_into().unwrap());
        if i == 0 || i == 131 {
            assert_eq!(e & 7, 6, "entry {i}: PAYLOAD_BLOCK_FULLY_PRESENT");
            assert_eq!(e >> 20 << 20, e & !0xfffff);
            assert!(e >> 20 >= 4, "entry {i}: a block past the BAT");
        } else {
            assert_eq!(e, 0, "entry {i}: NOT_PRESENT");
        }
    }
    let (ok, text) = qemu_img(&["check", "-f", "vhdx", dst.to_str().unwrap()]);
    assert!(ok && text.contains("No errors"), "{text}");
    assert_eq!(qemu_virtual_size(&dst, "vhdx"), size.next_multiple_of(512));
    assert_identical(&src, "raw", &dst, "vhdx");
}

#[test]
fn fixed_vhd_keeps_zero_stretches_as_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = raw_source(dir.path(), "h.raw", 256 * MIB, &[(0, &[1; 65536]), (200 * MIB, &[2; 65536])]);
    for (output, name) in [
        (Output::Vhd { fixed: true }, "h.vhd"),
        (Output::Vhd { fixed: false }, "hd.vhd"),
        (Output::Vhdx, "h.vhdx"),
    ] {
        let dst = convert(&src, &output, dir.path(), name).unwrap();
        let m = std::fs::metadata(&dst).unwrap();
        assert!(m.blocks() * 512 < 2 * MIB, "{name}: {} bytes allocated of {}", m.blocks() * 512, m.len());
    }
}

#[test]
fn a_disk_too_large_for_vhd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 2040 GiB: QEMU refuses a VHD of that size or more; one MiB less is written.
    let src = raw_source(dir.path(), "big.raw", 2040 * GIB, &[]);
    for fixed in [false, true] {
        let e = convert(&src, &Output::Vhd { fixed }, dir.path(), &format!("big-{fixed}.vhd")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
        assert!(e.to_string().contains("2040 GiB"), "{e}");
    }
    let src = raw_source(dir.path(), "max.raw", 2040 * GIB - MIB, &[(7 * GIB, b"data")]);
    let dst = convert(&src, &Output::Vhd { fixed: false }, dir.path(), "max.vhd").unwrap();
    if common::need_qemu_img() {
        assert_eq!(qemu_virtual_size(&dst, "vpc"), 2040 * GIB - MIB);
    }
}

#[test]
fn a_disk_too_large_for_vhdx_is_refused() {
    if !common::need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A file system may not hold a 64 TiB sparse file: a qcow2 says the size.
    let src = dir.path().join("huge.qcow2");
    let (ok, text) =
        qemu_img(&["create", "-f", "qcow2", src.to_str().unwrap(), &format!("{}", (64u64 << 40) + 512)]);
    assert!(ok, "{text}");
    let e = convert(&src, &Output::Vhdx, dir.path(), "huge.vhdx").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert!(e.to_string().contains("64 TiB"), "{e}");
}

#[test]
fn a_1_tib_disk_with_little_data_in_bounded_memory_and_time() {
    if !Counting::alone_in_a_child(module_path!(), "a_1_tib_disk_with_little_data_in_bounded_memory_and_time")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<(u64, &[u8])> = (0..16).map(|i| (i * 61 * GIB + 4096 * i, &b"some data"[..])).collect();
    let src = raw_source(dir.path(), "tib.raw", 1 << 40, &data);
    for (output, name, format) in
        [(Output::Vhdx, "tib.vhdx", "vhdx"), (Output::Vhd { fixed: false }, "tib.vhd", "vpc")]
    {
        let before = Counting::reset_peak();
        let started = Instant::now();
        let dst = convert(&src, &output, dir.path(), name).unwrap();
        let took = started.elapsed();
        let peak = Counting::peak_since(before);
        // VHD's BAT for 1 TiB is 2 MiB; VHDX's is never held.
        assert!(peak < 16 << 20, "{name}: {} MiB at the peak", peak >> 20);
        assert!(took < Duration::from_secs(60), "{name}: {took:?}");
        if common::need_qemu_img() {
            if format == "vhdx" {
                let (ok, text) = qemu_img(&["check", "-f", "vhdx", dst.to_str().unwrap()]);
                assert!(ok && text.contains("No errors"), "{text}");
            }
            assert_eq!(qemu_virtual_size(&dst, format), 1 << 40);
            // QEMU maps a VHD's blocks but reads a VHDX's whole 1 TiB to
            // compare it: qemu-io reads the data back instead.
            if format == "vpc" {
                assert_identical(&src, "raw", &dst, format);
            }
            for (off, bytes) in &data {
                let cmd = format!("read -P 0x{:02x} {off} 1", bytes[0]);
                let o = Command::new("qemu-io")
                    .args(["-r", "-f", format, "-c", &cmd, dst.to_str().unwrap()])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&o.stdout);
                assert!(o.status.success() && !text.contains("fail"), "{name} at {off}: {text}");
            }
        }
    }
}
