//! The VMDK (monolithicSparse, streamOptimized) and VDI (dynamic, fixed)
//! writers against qemu-img, and their layouts read back at the offsets of
//! VMware's "Virtual Disk Format 1.1" and VirtualBox's VDI 1.1 header.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vmrepo_format::write::{Output, VmdkSubformat, write};
use vmrepo_format::{ErrorKind, OpenOptions, open};
use vmrepo_testkit::Counting;

use crate::common::{self, BASE_SIZE, Src, allocated, convert, convert_checked, need_qemu_img, run};

const SPARSE: Output = Output::Vmdk(VmdkSubformat::MonolithicSparse);
const STREAM: Output = Output::Vmdk(VmdkSubformat::StreamOptimized);
const DYNAMIC: Output = Output::Vdi { fixed: false };
const FIXED: Output = Output::Vdi { fixed: true };
const MIB: u64 = 1 << 20;
/// The largest source converted to every format and compared byte for byte.
const MAX_COMPARED: u64 = 4 << 30;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn read(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    File::open(path).unwrap().read_exact_at(&mut b, off).unwrap();
    b
}
fn raw_src(dir: &Path) -> Src {
    Src { path: common::base_raw(dir), format: "raw".into(), what: "raw".into() }
}

#[test]
fn every_source_as_vmdk_and_vdi_is_what_qemu_img_reads() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in common::sources(dir.path()) {
        // qemu-img compare and the read-back walk every byte of the virtual
        // size: the 127 GiB and 10 GiB samples would take most of an hour
        // (large disks are `a_1_tib_disk_...` below).
        let size = open(&src.path, &OpenOptions::default()).unwrap().info.virtual_size;
        if size > MAX_COMPARED {
            eprintln!("NOTICE: {} ({size} bytes) is not compared in every format", src.what);
            continue;
        }
        for out in [SPARSE, STREAM, DYNAMIC, FIXED] {
            let dest = convert_checked(&src, &out, dir.path());
            std::fs::remove_file(dest).unwrap();
        }
    }
}

#[test]
fn monolithic_sparse_layout_at_the_spec_offsets() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = convert_checked(&raw_src(dir.path()), &SPARSE, dir.path());
    let h = read(&dest, 0, 512);
    assert_eq!(&h[..4], b"KDMV");
    assert_eq!(le32(&h, 4), 1, "version");
    assert_eq!(le32(&h, 8), 0x3, "flags: newline test + redundant grain table");
    assert_eq!(le64(&h, 12), BASE_SIZE / 512, "capacity in sectors");
    assert_eq!((le64(&h, 20), le64(&h, 28), le64(&h, 36), le32(&h, 44)), (128, 1, 20, 512));
    assert_eq!(&h[73..77], b"\n \r\n");
    // 65 MiB: three grain tables, a one-sector directory.
    let (rgd, gd, overhead) = (le64(&h, 48), le64(&h, 56), le64(&h, 64));
    assert_eq!(rgd, 21);
    assert_eq!(gd, 21 + 1 + 3 * 4);
    assert_eq!(overhead, (gd + 1 + 3 * 4).next_multiple_of(128));
    let desc = String::from_utf8(read(&dest, 512, 20 * 512)).unwrap();
    assert!(desc.contains("createType=\"monolithicSparse\""), "{desc}");
    assert!(desc.contains(&format!(
        "RW {} SPARSE \"{}\"",
        BASE_SIZE / 512,
        dest.file_name().unwrap().display()
    )));
    assert!(desc.contains("ddb.adapterType = \"ide\""), "{desc}");
    // Both directories name their own tables, which agree; the first grain
    // (guest 0) is the first after the overhead.
    for (dir_at, first_gt) in [(rgd, rgd + 1), (gd, gd + 1)] {
        let d = read(&dest, dir_at * 512, 12);
        assert_eq!([le32(&d, 0), le32(&d, 4), le32(&d, 8)], [0, 4, 8].map(|k| (first_gt + k) as u32));
    }
    let (gt_a, gt_b) = (read(&dest, (rgd + 1) * 512, 2048), read(&dest, (gd + 1) * 512, 2048));
    assert_eq!(gt_a, gt_b, "the redundant table is a copy");
    assert_eq!(u64::from(le32(&gt_a, 0)), overhead);
    // Guest grain 1 (64 KiB..128 KiB) holds zeros: not allocated.
    assert_eq!(le32(&gt_a, 4), 0);
}

#[test]
fn stream_optimized_layout_footer_and_markers() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = raw_src(dir.path());
    let dest = convert_checked(&src, &STREAM, dir.path());
    let h = read(&dest, 0, 512);
    assert_eq!(le32(&h, 4), 3, "version");
    assert_eq!(le32(&h, 8), 0x3_0001, "flags: newline test, compressed grains, markers");
    assert_eq!(le64(&h, 56), u64::MAX, "gdOffset: GD_AT_END");
    assert_eq!(u16::from_le_bytes([h[77], h[78]]), 1, "compressAlgorithm: deflate");
    let desc = String::from_utf8(read(&dest, 512, 20 * 512)).unwrap();
    assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
    let len = std::fs::metadata(&dest).unwrap().len();
    assert_eq!(len % 512, 0);
    let tail = read(&dest, len - 1536, 1536);
    // Footer marker (1 sector, type 3), footer (the header with the real gdOffset), end-of-stream.
    assert_eq!((le64(&tail, 0), le32(&tail, 8), le32(&tail, 12)), (1, 0, 3));
    let footer = &tail[512..1024];
    assert_eq!(&footer[..4], b"KDMV");
    assert_eq!(footer[..56], h[..56]);
    let gd = le64(footer, 56);
    assert!(gd > 128 && gd * 512 < len - 1536, "gdOffset {gd}");
    assert_eq!(&tail[1024..1040], &[0u8; 16], "end-of-stream marker");
    // The directory's marker (1 sector of directory for 65 MiB, type 2).
    let m = read(&dest, (gd - 1) * 512, 16);
    assert_eq!((le64(&m, 0), le32(&m, 8), le32(&m, 12)), (1, 0, 2));
    let d = read(&dest, gd * 512, 12);
    let gt0 = u64::from(le32(&d, 0));
    let m = read(&dest, (gt0 - 1) * 512, 16);
    assert_eq!((le64(&m, 0), le32(&m, 8), le32(&m, 12)), (4, 0, 1), "a grain table marker");
    // The first grain: its marker at sector 128 names guest sector 0.
    let gt = read(&dest, gt0 * 512, 2048);
    assert_eq!(le32(&gt, 0), 128);
    let g = read(&dest, 128 * 512, 12);
    assert_eq!(le64(&g, 0), 0);
    assert!(le32(&g, 8) > 0 && le32(&g, 8) < 64 << 10);
    // qemu-img inflates it back to the source's bytes.
    let back = dir.path().join("back.raw");
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&dest).arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&src.path).unwrap(),
        "qemu-img convert -O raw differs"
    );
}

#[test]
fn vdi_layout_block_map_and_holes() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = raw_src(dir.path());
    let blocks = BASE_SIZE.div_ceil(MIB);
    // The base's data lies in blocks 0, 1-2, 5, 31-32, 39 and the last (64).
    let with_data = [0u64, 1, 2, 5, 31, 32, 39, 64];
    for fixed in [false, true] {
        let dest = convert_checked(&src, &Output::Vdi { fixed }, dir.path());
        let h = read(&dest, 0, 0x200);
        assert!(h.starts_with(b"<<< Oracle VM VirtualBox Disk Image >>>\n"));
        assert_eq!((le32(&h, 0x40), le32(&h, 0x44), le32(&h, 0x48)), (0xbeda_107f, 0x0001_0001, 0x190));
        assert_eq!(le32(&h, 0x4c), if fixed { 2 } else { 1 });
        let (map_at, data_at) = (u64::from(le32(&h, 0x154)), u64::from(le32(&h, 0x158)));
        assert_eq!((map_at, data_at), (MIB, 2 * MIB), "both aligned to 1 MiB");
        assert_eq!(le32(&h, 0x168), 512);
        assert_eq!(le64(&h, 0x170), BASE_SIZE);
        assert_eq!((le32(&h, 0x178), u64::from(le32(&h, 0x180))), (1 << 20, blocks));
        assert!(h[0x1a8..0x1c8].iter().all(|&b| b == 0), "no link, no parent");
        let map = read(&dest, map_at, blocks as usize * 4);
        let entries: Vec<u32> = (0..blocks as usize).map(|i| le32(&map, i * 4)).collect();
        let len = std::fs::metadata(&dest).unwrap().len();
        if fixed {
            assert_eq!(u64::from(le32(&h, 0x184)), blocks);
            assert!(entries.iter().enumerate().all(|(i, &e)| e as usize == i));
            assert_eq!(len, data_at + blocks * MIB);
            // Holes kept: little more than the data (2 MiB of it) and the header.
            let host = allocated(&dest);
            assert!(host < 6 * MIB, "a fixed VDI of {len} bytes takes {host} on the host");
        } else {
            assert_eq!(u64::from(le32(&h, 0x184)), with_data.len() as u64);
            for (i, &e) in entries.iter().enumerate() {
                let want = with_data.iter().position(|&b| b == i as u64).map_or(u32::MAX, |k| k as u32);
                assert_eq!(e, want, "block map entry {i}");
            }
            assert_eq!(len, data_at + with_data.len() as u64 * MIB);
        }
    }
}

/// A sparse raw file of `size` bytes with a few sectors of data.
fn sparse_raw(dir: &Path, size: u64) -> Src {
    let path = dir.join(format!("sparse-{size}.raw"));
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    for off in [0, size / 2 + 12345 * 512, size - 512] {
        f.write_all_at(&[0xa5; 512], off).unwrap();
    }
    Src { path, format: "raw".into(), what: format!("sparse raw of {size} bytes") }
}

#[test]
fn a_1_tib_disk_with_little_data_in_bounded_time_and_memory() {
    if !need_qemu_img() {
        return;
    }
    if !Counting::alone_in_a_child(module_path!(), "a_1_tib_disk_with_little_data_in_bounded_time_and_memory")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = sparse_raw(dir.path(), 1 << 40);
    for out in [SPARSE, STREAM, DYNAMIC] {
        let before = Counting::reset_peak();
        let t = Instant::now();
        let (dest, written) = convert(&src, &out, dir.path());
        let (took, peak) = (t.elapsed(), Counting::peak_since(before));
        eprintln!("1 TiB as {out}: {took:?}, peak {} KiB, file {} bytes", peak >> 10, written.file_size);
        assert!(peak < 24 << 20, "{out}: {peak} bytes of heap at the peak");
        assert!(took < Duration::from_secs(60), "{out}: {took:?}");
        assert_eq!(
            written.data_bytes,
            3 * if out == DYNAMIC { 4096 } else { 64 << 10 },
            "{out}: 64 KiB grains for VMDK, 4 KiB for VDI (zeros inside a VDI block stay holes)"
        );
        // Mostly holes on the host: the empty grain tables are not written.
        assert!(allocated(&dest) < 16 * MIB, "{out}: {} bytes on the host", allocated(&dest));
        let info = common::qemu_info(&dest, Some(out.format().qemu_name())).unwrap();
        assert_eq!(info["virtual-size"].as_u64(), Some(1 << 40), "{info}");
        // The last sector's data comes back through qemu-img.
        let o = run(Command::new("qemu-io")
            .args(["-r", "-f", out.format().qemu_name(), "-c"])
            .arg(format!("read -P 0xa5 {} 512", (1u64 << 40) - 512))
            .arg(&dest));
        assert!(!o.contains("Pattern verification failed"), "{out}: {o}");
        std::fs::remove_file(dest).unwrap();
    }
}

#[test]
fn disks_too_large_for_the_format_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // VDI: 8 Mi blocks of 1 MiB; VMDK sparse extents: 2 TiB.
    for (size, out) in [
        ((8u64 << 40) + 512, DYNAMIC),
        ((8u64 << 40) + 512, FIXED),
        ((2u64 << 40) + 512, SPARSE),
        ((2u64 << 40) + 512, STREAM),
    ] {
        let path = dir.path().join("big.raw");
        File::create(&path).unwrap().set_len(size).unwrap();
        let image = open(&path, &OpenOptions::default()).unwrap();
        let dest = dir.path().join("out");
        let f = File::options().read(true).write(true).create(true).truncate(true).open(&dest).unwrap();
        let e = write(image.disk().unwrap(), &out, &f, &|_| {}, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge, "{out}: {e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), 0, "{out}: nothing written before refusing");
    }
    // The largest VDI taken: 8 TiB exactly, written as a sparse file.
    let path = dir.path().join("edge.raw");
    File::create(&path).unwrap().set_len(8 << 40).unwrap();
    let image = open(&path, &OpenOptions::default()).unwrap();
    let dest = dir.path().join("edge.vdi");
    let f = File::options().read(true).write(true).create_new(true).open(&dest).unwrap();
    let w = write(image.disk().unwrap(), &DYNAMIC, &f, &|_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(w.data_bytes, 0);
    assert_eq!(open(&dest, &OpenOptions::default()).unwrap().info.virtual_size, 8 << 40);
}

/// Times vmrepo against `qemu-img convert` on the image named by
/// `VMREPO_BENCH_SRC` (e.g. a qcow2 of a 4 GiB ext4 filled from /usr/lib).
#[test]
#[ignore = "a benchmark: VMREPO_BENCH_SRC=image cargo test -- --ignored bench"]
fn bench_against_qemu_img() {
    let Ok(src) = std::env::var("VMREPO_BENCH_SRC") else { return };
    let src = Path::new(&src);
    let dir = tempfile::tempdir_in(src.parent().unwrap()).unwrap();
    for (out, opts) in [
        (STREAM, &["-O", "vmdk", "-o", "subformat=streamOptimized"][..]),
        (DYNAMIC, &["-O", "vdi"][..]),
        (FIXED, &["-O", "vdi", "-o", "static=on"][..]),
        (SPARSE, &["-O", "vmdk"][..]),
    ] {
        let q = dir.path().join("q.out");
        run(&mut Command::new("sync"));
        let (t, c) = (Instant::now(), cpu());
        run(Command::new("qemu-img").arg("convert").args(opts).arg(src).arg(&q));
        let (tq, cq) = (t.elapsed(), cpu().1 - c.1);
        let image = open(src, &OpenOptions::default()).unwrap();
        let dest = dir.path().join("v.out");
        let f = File::options().read(true).write(true).create_new(true).open(&dest).unwrap();
        run(&mut Command::new("sync"));
        let (t, c) = (Instant::now(), cpu());
        write(image.disk().unwrap(), &out, &f, &|_| {}, &AtomicBool::new(false)).unwrap();
        let (tv, cv) = (t.elapsed(), cpu().0 - c.0);
        let (sq, sv) = (std::fs::metadata(&q).unwrap().len(), std::fs::metadata(&dest).unwrap().len());
        eprintln!(
            "BENCH {out}: qemu-img {tq:.2?} ({cq:.2}s CPU, {sq} bytes), vmrepo {tv:.2?} ({cv:.2}s CPU, {sv} bytes): {:.2}x",
            tv.as_secs_f64() / tq.as_secs_f64()
        );
        std::fs::remove_file(q).unwrap();
        std::fs::remove_file(dest).unwrap();
    }
}

/// CPU seconds (user + system) of this process and of its waited-for
/// children, from /proc/self/stat.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    // Fields 14-17 (utime stime cutime cstime) are 11-14 after the name and state.
    ((f[11] + f[12]) / 100.0, (f[13] + f[14]) / 100.0)
}
