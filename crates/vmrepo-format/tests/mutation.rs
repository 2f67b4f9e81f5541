//! Hostile input: valid images of every format, made by qemu-img, with bytes
//! and fields of their headers and tables broken in thousands of ways. Each
//! case must end in an answer or a clear error: never a panic, never a hang
//! (a watchdog aborts), never more than 64 MiB of memory (a counting
//! allocator measures every case).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmrepo_format::{Format, MemSource, NoResolver, OpenOptions, open_source};
use vmrepo_testkit::{Counting, Rng, Watchdog, have};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The memory a case may use beyond what was live before it.
const MEMORY_BOUND: usize = 64 << 20;
/// A case taking longer than this is a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Cases per base image.
const CASES_PER_IMAGE: usize = 1000;

fn qemu(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 4 MiB guest disk: random data, text, zeros.
fn guest(path: &Path) {
    let mut d = vec![0u8; 4 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in d[..(512 << 10)].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for (i, b) in d[(1 << 20)..(2 << 20)].iter_mut().enumerate() {
        *b = b"STAR sl08e physics "[i % 19];
    }
    d[(3 << 20)..(3 << 20) + 4096].fill(0xa5);
    std::fs::write(path, d).unwrap();
}

/// Breaks `data` in one way and says how.
fn mutate(data: &mut Vec<u8>, rng: &mut Rng) -> String {
    let len = data.len() as u64;
    // Where: mostly the headers and tables near the start, sometimes the footer, anywhere.
    let pos = match rng.below(10) {
        0..=3 => rng.below(1024.min(len)),
        4..=5 => rng.below((64 << 10).min(len)),
        6..=7 => rng.below((1 << 20).min(len)),
        8 => len.saturating_sub(1 + rng.below(512.min(len))),
        _ => rng.below(len),
    } as usize;
    let values32: [u32; 8] =
        [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, len as u32, (len as u32).wrapping_add(1), 512];
    let values64: [u64; 7] = [0, 1, u64::MAX, 1 << 62, (1 << 63) | 0x200, len, len << 9];
    match rng.below(9) {
        0 => {
            let bit = rng.below(8);
            data[pos] ^= 1 << bit;
            format!("flip bit {bit} at {pos}")
        }
        1 => {
            let v = [0x00u8, 0xff, 0x7f, 0x80, 0x01][rng.below(5) as usize];
            data[pos] = v;
            format!("byte {v:#x} at {pos}")
        }
        2 | 3 => {
            let p = pos & !3;
            let v = values32[rng.below(8) as usize];
            let b = if rng.below(2) == 0 { v.to_le_bytes() } else { v.to_be_bytes() };
            let end = (p + 4).min(data.len());
            data[p..end].copy_from_slice(&b[..end - p]);
            format!("u32 {v:#x} at {p}")
        }
        4 | 5 => {
            let p = pos & !7;
            let v = values64[rng.below(7) as usize];
            let b = if rng.below(2) == 0 { v.to_le_bytes() } else { v.to_be_bytes() };
            let end = (p + 8).min(data.len());
            data[p..end].copy_from_slice(&b[..end - p]);
            format!("u64 {v:#x} at {p}")
        }
        6 => {
            let p = pos & !511;
            let end = (p + 512).min(data.len());
            data[p..end].fill(0);
            format!("zero the sector at {p}")
        }
        7 => {
            let n = rng.below(len);
            data.truncate(n as usize);
            format!("truncate to {n}")
        }
        _ => {
            let p = pos;
            let n = (1 + rng.below(64)) as usize;
            for i in 0..n.min(data.len() - p) {
                data[p + i] = rng.next_u64() as u8;
            }
            format!("{n} random bytes at {p}")
        }
    }
}

/// Everything vmrepo does with an image, bounded: info, reads at the start,
/// the end and at random, the whole map, the check.
/// Returns how far it got: 0 refused, 1 described, 2 read.
fn exercise(data: Vec<u8>, format: Option<Format>, rng_seed: u64) -> usize {
    let src = Arc::new(MemSource::new(data, "mutant"));
    let Ok(img) = open_source(src, &NoResolver, &OpenOptions { follow: false, format }) else { return 0 };
    let _ = serde_json::to_string(&img.info).unwrap();
    let Ok(disk) = img.disk() else { return 1 };
    let size = disk.size();
    let mut buf = vec![0u8; 256 << 10];
    let mut rng = Rng::new(rng_seed);
    let mut windows = vec![0u64, size.saturating_sub(buf.len() as u64)];
    for _ in 0..4 {
        windows.push(rng.below(size));
    }
    for w in windows {
        let n = usize::try_from((size - w.min(size)).min(buf.len() as u64)).unwrap();
        let _ = disk.read_at(&mut buf[..n], w.min(size));
    }
    let mut extents = 0u64;
    let _ = vmrepo_format::map_each(disk, 0, size, &mut |_| {
        extents += 1;
        if extents > 200_000 {
            return Err(vmrepo_format::Error::from_io("enough", std::io::Error::other("stop")));
        }
        Ok(())
    });
    let _ = disk.check();
    2
}

#[test]
fn mutated_images_never_panic_hang_or_balloon() {
    if !Counting::alone_in_a_child(module_path!(), "mutated_images_never_panic_hang_or_balloon") {
        return;
    }
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("guest.raw");
    guest(&raw);
    let r = raw.to_str().unwrap();
    let bases: Vec<(&str, Vec<&str>, Option<Format>)> = vec![
        ("qcow2", vec!["-O", "qcow2", "-o", "cluster_size=4096"], Some(Format::Qcow2)),
        ("qcow2 v2", vec!["-O", "qcow2", "-o", "compat=0.10,cluster_size=4096"], Some(Format::Qcow2)),
        ("qcow2 zlib", vec!["-c", "-O", "qcow2", "-o", "cluster_size=4096"], Some(Format::Qcow2)),
        ("qcow2 zstd", vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"], Some(Format::Qcow2)),
        ("qcow2 extl2", vec!["-O", "qcow2", "-o", "extended_l2=on,cluster_size=16k"], Some(Format::Qcow2)),
        ("vmdk sparse", vec!["-O", "vmdk"], Some(Format::Vmdk)),
        ("vmdk stream", vec!["-O", "vmdk", "-o", "subformat=streamOptimized"], Some(Format::Vmdk)),
        ("vdi", vec!["-O", "vdi"], Some(Format::Vdi)),
        ("vdi static", vec!["-O", "vdi", "-o", "static=on"], Some(Format::Vdi)),
        ("vpc", vec!["-O", "vpc"], Some(Format::Vhd)),
        ("vpc fixed", vec!["-O", "vpc", "-o", "subformat=fixed"], Some(Format::Vhd)),
        ("vhdx", vec!["-O", "vhdx", "-o", "block_size=1M"], Some(Format::Vhdx)),
        ("vhdx fixed", vec!["-O", "vhdx", "-o", "subformat=fixed,block_size=1M"], Some(Format::Vhdx)),
    ];
    let (mut rng, seed) = Rng::from_env();
    let watchdog = Watchdog::start(CASE_TIMEOUT);
    Counting::limit_from_env();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut reached = [0usize; 3];
    let start = Instant::now();
    for (name, args, format) in &bases {
        let img = tmp.path().join("base.img");
        let _ = std::fs::remove_file(&img);
        let mut a = vec!["convert", "-q", "-f", "raw"];
        a.extend(args.iter());
        a.extend([r, img.to_str().unwrap()]);
        qemu(&a);
        let base = std::fs::read(&img).unwrap();
        // The unmutated image reads back as the guest wrote it.
        assert_eq!(exercise(base.clone(), *format, 1), 2, "{name}: the unmutated image must read");
        for _ in 0..CASES_PER_IMAGE {
            let mut data = base.clone();
            let how = mutate(&mut data, &mut rng);
            let how = if rng.below(4) == 0 { format!("{how}; {}", mutate(&mut data, &mut rng)) } else { how };
            let what = format!("{name}: {how}");
            watchdog.case(&what);
            // Detection decides the format half of the time, as for a file of unknown origin.
            let fmt = if rng.below(2) == 0 { *format } else { None };
            let before = Counting::reset_peak();
            let case_seed = rng.next_u64();
            let result = std::panic::catch_unwind(|| exercise(data, fmt, case_seed));
            let used = Counting::peak_since(before);
            match result {
                Err(_) => failures.push(format!("PANIC {what}")),
                Ok(r) => reached[r] += 1,
            }
            if used > MEMORY_BOUND {
                failures.push(format!("MEMORY {what}: {} MiB", used >> 20));
            }
            cases += 1;
        }
    }
    eprintln!(
        "{cases} mutated images in {:.1} s: {} refused with an error, {} described but not readable, {} read, mapped and checked",
        start.elapsed().as_secs_f64(),
        reached[0],
        reached[1],
        reached[2]
    );
    assert!(failures.is_empty(), "seed {seed}: {} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A refcount table of a million entries, every one naming the same 2 MiB
/// refcount block: `check` reads the block once, not a million times.
#[test]
fn a_refcount_table_naming_one_block_a_million_times_stays_small() {
    if !Counting::alone_in_a_child(
        module_path!(),
        "a_refcount_table_naming_one_block_a_million_times_stays_small",
    ) {
        return;
    }
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let mut data = converted_guest(&["-O", "qcow2", "-o", "cluster_size=2M"]);
    let be64 = |d: &[u8], at: usize| u64::from_be_bytes(d[at..at + 8].try_into().unwrap());
    let cluster = 2u64 << 20;
    let block = be64(&data, be64(&data, 48) as usize);
    // The table goes at the end of the file: 4 clusters, 1 Mi entries.
    let table = data.len().next_multiple_of(cluster as usize);
    data.resize(table + 4 * cluster as usize, 0);
    for e in data[table..].chunks_exact_mut(8) {
        e.copy_from_slice(&block.to_be_bytes());
    }
    data[48..56].copy_from_slice(&(table as u64).to_be_bytes());
    data[56..60].copy_from_slice(&4u32.to_be_bytes());
    let (report, used) = check_counted(data, Format::Qcow2);
    assert!(!report.problems.is_empty(), "a block counted a million times is corruption");
    assert!(used < MEMORY_BOUND, "check used {} MiB", used >> 20);
}

/// A fixed VDI whose block map was made a million entries longer, every one
/// naming stored block 0 (found by the mutation run above, seed
/// 1796231036692751933: a bit flipped in the block count): `check` reports
/// the shared block without keeping a stretch per entry.
#[test]
fn a_vdi_map_naming_one_block_a_million_times_stays_small() {
    if !Counting::alone_in_a_child(module_path!(), "a_vdi_map_naming_one_block_a_million_times_stays_small") {
        return;
    }
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let mut data = converted_guest(&["-O", "vdi", "-o", "static=on"]);
    let le32 = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let map = le32(&data, 0x154) as usize;
    let blocks = le32(&data, 0x180) + (1 << 20);
    data[0x180..0x184].copy_from_slice(&blocks.to_le_bytes());
    let end = map + blocks as usize * 4;
    if data.len() < end {
        data.resize(end, 0);
    }
    data[map..end].fill(0);
    let (report, used) = check_counted(data, Format::Vdi);
    assert!(report.problems.iter().any(|p| p.contains("shares stored block 0")), "{:?}", report.problems);
    assert!(used < MEMORY_BOUND, "check used {} MiB", used >> 20);
}

/// The test guest converted by `qemu-img convert -f raw ARGS`, as bytes.
fn converted_guest(args: &[&str]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("guest.raw");
    guest(&raw);
    let img = tmp.path().join("guest.img");
    let mut a = vec!["convert", "-q", "-f", "raw"];
    a.extend_from_slice(args);
    a.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
    qemu(&a);
    std::fs::read(&img).unwrap()
}

/// `check` of a hostile image held in memory, and the peak memory it took.
fn check_counted(data: Vec<u8>, format: Format) -> (vmrepo_format::check::CheckReport, usize) {
    let before = Counting::reset_peak();
    let src = Arc::new(MemSource::new(data, "hostile"));
    let image = open_source(src, &NoResolver, &OpenOptions { follow: false, format: Some(format) }).unwrap();
    let report = vmrepo_format::check::check(&image).unwrap();
    (report, Counting::peak_since(before))
}
