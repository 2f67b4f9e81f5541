//! Hostile input inside the guest: the synthetic guests of
//! `scripts/build-test-guests.py` (MBR with logical partitions, GPT, LVM2,
//! ext3 and ext4, a bare filesystem), broken in thousands of ways in the very
//! bytes the inspector reads: partition tables, GPT headers (with their
//! checksums made right again, so the damage reaches the entries), LVM
//! labels and metadata text, superblocks, group descriptors, inodes,
//! directories, links and the guest's own files; and disks cut short.
//!
//! Each case must end in a report (partial, with warnings): never a panic,
//! never a hang (a watchdog aborts), never more than 64 MiB of memory (a
//! counting allocator measures every case). A mutation of bytes the
//! inspection never read must leave the report as it was.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmrepo_format::{Disk, MapExtent};
use vmrepo_inspect::{Options, inspect};
use vmrepo_testkit::{Counting, Rng, Watchdog, can_build_guests};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The memory a case may use beyond what was live before it.
const MEMORY_BOUND: usize = 64 << 20;
/// A case taking longer than this is a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Cases over all guests (`VMREPO_MUTATION_CASES` for a longer run).
const CASES: usize = 12_000;

/// A raw guest disk read from its file, with bytes replaced and its end
/// moved: the mutant, without copying the disk. Records what is read.
struct Mutant {
    file: Arc<File>,
    size: u64,
    patches: Vec<(u64, Vec<u8>)>,
    reads: Option<Mutex<Vec<(u64, u64)>>>,
}

impl Mutant {
    fn new(file: Arc<File>, size: u64) -> Self {
        Mutant { file, size, patches: Vec::new(), reads: None }
    }

    /// The bytes at `[offset, offset + len)` as the mutant holds them, cut
    /// at its end.
    fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let len = len.min(self.size.saturating_sub(offset) as usize);
        let mut b = vec![0u8; len];
        self.fill(&mut b, offset);
        b
    }

    fn fill(&self, buf: &mut [u8], offset: u64) {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        buf[done..].fill(0);
        let end = offset + buf.len() as u64;
        for (at, data) in &self.patches {
            let pend = at + data.len() as u64;
            if pend <= offset || *at >= end {
                continue;
            }
            let from = offset.max(*at);
            let to = end.min(pend);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
        }
    }

    fn patch(&mut self, at: u64, data: Vec<u8>) {
        self.patches.push((at, data));
    }
}

impl Disk for Mutant {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> vmrepo_format::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.size) {
            return Err(vmrepo_format::Error::from_io(
                "mutant",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the disk"),
            ));
        }
        if let Some(r) = &self.reads {
            r.lock().unwrap().push((offset, buf.len() as u64));
        }
        self.fill(buf, offset);
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> vmrepo_format::Result<MapExtent> {
        Ok(MapExtent {
            start: offset,
            length: max_len.min(self.size.saturating_sub(offset)).max(1),
            present: true,
            zero: false,
            data: true,
            compressed: false,
            offset: Some(offset),
        })
    }
}

/// A guest to break: its disk, the report of the unbroken disk, and the
/// byte ranges that report was read from.
struct Base {
    name: String,
    file: Arc<File>,
    size: u64,
    gpt: bool,
    report: String,
    reads: Vec<(u64, u64)>,
}

fn report_json(disk: Arc<dyn Disk>) -> String {
    let r = inspect(disk, &Options::default());
    serde_json::to_string(&r).unwrap()
}

fn base(name: &str, path: &Path) -> Base {
    let file = Arc::new(File::open(path).unwrap());
    let size = file.metadata().unwrap().len();
    let mut m = Mutant::new(Arc::clone(&file), size);
    m.reads = Some(Mutex::new(Vec::new()));
    let m = Arc::new(m);
    let report = report_json(Arc::clone(&m) as Arc<dyn Disk>);
    let reads = std::mem::take(&mut *m.reads.as_ref().unwrap().lock().unwrap());
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(v["os"].is_object(), "{name}: the unbroken guest must show its OS: {report}");
    let gpt = v["partitions"]["scheme"] == "gpt";
    Base { name: name.to_string(), file, size, gpt, report, reads }
}

/// Whether `[at, at + len)` meets a range the base inspection read.
fn was_read(reads: &[(u64, u64)], at: u64, len: u64) -> bool {
    reads.iter().any(|&(o, l)| at < o + l && o < at + len)
}

const VALUES32: [u32; 8] = [0, 1, 2, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0x0001_0000, 4096];
const VALUES64: [u64; 6] = [0, 1, u64::MAX, 1 << 62, 1 << 40, 0x8000_0000];
const NUMBERS: [&str; 7] =
    ["0", "1", "4294967296", "18446744073709551615", "99999999999999999999999", "-1", "x"];

/// Breaks the mutant once and says how. `pos` is where.
fn mutate(m: &mut Mutant, pos: u64, rng: &mut Rng) -> String {
    match rng.below(10) {
        0 | 1 => {
            let bit = rng.below(8);
            let b = m.bytes(pos, 1).first().copied().unwrap_or(0) ^ (1 << bit);
            m.patch(pos, vec![b]);
            format!("flip bit {bit} at {pos}")
        }
        2 => {
            let v = [0x00u8, 0xff, 0x7f, 0x80, 0x01, b'/', b'.'][rng.below(7) as usize];
            m.patch(pos, vec![v]);
            format!("byte {v:#x} at {pos}")
        }
        3 => {
            let p = pos & !1;
            let v = [0u16, 1, 0xffff, 0x8000, 4096][rng.below(5) as usize];
            m.patch(p, v.to_le_bytes().to_vec());
            format!("u16 {v:#x} at {p}")
        }
        4 | 5 => {
            let p = pos & !3;
            let v = VALUES32[rng.below(VALUES32.len() as u64) as usize];
            m.patch(p, v.to_le_bytes().to_vec());
            format!("u32 {v:#x} at {p}")
        }
        6 => {
            let p = pos & !7;
            let v = VALUES64[rng.below(VALUES64.len() as u64) as usize];
            m.patch(p, v.to_le_bytes().to_vec());
            format!("u64 {v:#x} at {p}")
        }
        7 => {
            let p = pos & !511;
            m.patch(p, vec![0; 512]);
            format!("zero the sector at {p}")
        }
        8 => {
            // A number in text (LVM metadata, /etc files) made huge, negative or not a number.
            let window = m.bytes(pos, 512);
            let Some(start) = window.iter().position(u8::is_ascii_digit) else {
                m.patch(pos, vec![b'9']);
                return format!("digit at {pos}");
            };
            let len = window[start..].iter().take_while(|b| b.is_ascii_digit()).count();
            let n = NUMBERS[rng.below(NUMBERS.len() as u64) as usize];
            // Replaced in place, the text after it moved along (and cut at 512 bytes).
            let mut text = window[..start].to_vec();
            text.extend_from_slice(n.as_bytes());
            text.extend_from_slice(&window[start + len..]);
            text.truncate(window.len());
            m.patch(pos, text);
            format!("number at {} replaced by {n}", pos + start as u64)
        }
        _ => {
            let n = 1 + rng.below(64) as usize;
            let bytes = (0..n).map(|_| rng.next_u64() as u8).collect();
            m.patch(pos, bytes);
            format!("{n} random bytes at {pos}")
        }
    }
}

/// Makes a damaged GPT's checksums right again, so that the damage to its
/// fields and entries is read rather than refused at the checksum.
fn fix_gpt(m: &mut Mutant) {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let h = m.bytes(512, 512);
    if h.len() < 92 || &h[..8] != b"EFI PART" {
        return;
    }
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
    let (count, esize) = (u64::from(le32(&h, 80)), u64::from(le32(&h, 84)));
    let mut fixed = h.clone();
    if let Some(bytes) = count.checked_mul(esize).filter(|&n| n <= 1 << 20)
        && let Some(at) = entries_lba.checked_mul(512).filter(|&a| a.saturating_add(bytes) <= m.size)
    {
        let table = m.bytes(at, bytes as usize);
        fixed[88..92].copy_from_slice(&CRC.checksum(&table).to_le_bytes());
    }
    let hsize = (le32(&fixed, 12) as usize).clamp(92, 512);
    fixed[16..20].fill(0);
    let crc = CRC.checksum(&fixed[..hsize]);
    fixed[16..20].copy_from_slice(&crc.to_le_bytes());
    m.patch(512, fixed);
}

#[test]
fn broken_guests_give_partial_reports_never_a_panic_hang_or_balloon() {
    if !can_build_guests() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-guests-synthetic");
    let manifest = vmrepo_testkit::build_guests(&dir, true);
    let bases: Vec<Base> = manifest["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| base(g["name"].as_str().unwrap(), Path::new(g["images"]["raw"].as_str().unwrap())))
        .collect();
    assert!(bases.len() >= 6, "the synthetic guests: {}", bases.len());

    let (mut rng, seed) = Rng::from_env();
    let watchdog = Watchdog::start(CASE_TIMEOUT);
    Counting::limit_from_env();
    let mut failures = Vec::new();
    let (mut with_os, mut with_warnings, mut unread_same, mut changed) = (0usize, 0usize, 0usize, 0usize);
    let cases = std::env::var("VMREPO_MUTATION_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    // Every case named before it runs, to find the one that kills the process.
    let trace = std::env::var_os("VMREPO_MUTATION_TRACE").is_some();
    // Only this case runs (the others are made, not run), to study one.
    let only: Option<usize> = std::env::var("VMREPO_MUTATION_CASE").ok().and_then(|c| c.parse().ok());
    let start = Instant::now();
    for case in 0..cases {
        let b = &bases[case % bases.len()];
        let mut m = Mutant::new(Arc::clone(&b.file), b.size);
        let mut how = Vec::new();
        let mut only_unread = true;
        let rounds = 1 + usize::from(rng.below(4) == 0) + usize::from(rng.below(8) == 0);
        for _ in 0..rounds {
            // Where: mostly in what the inspection reads, at the start of a
            // read (headers) or anywhere in it; sometimes the partition
            // tables' sectors, sometimes where nothing was read.
            let pos = match rng.below(20) {
                0..=7 => {
                    let (o, l) = b.reads[rng.below(b.reads.len() as u64) as usize];
                    o + rng.below(l.min(256))
                }
                8..=15 => {
                    let (o, l) = b.reads[rng.below(b.reads.len() as u64) as usize];
                    o + rng.below(l)
                }
                16..=17 => rng.below(34 * 512),
                _ => rng.below(b.size),
            };
            if rng.below(25) == 0 {
                let cut = rng.below(b.size);
                m.size = cut;
                only_unread = false;
                how.push(format!("disk cut to {cut} bytes"));
            } else {
                how.push(mutate(&mut m, pos, &mut rng));
            }
        }
        if b.gpt && rng.below(2) == 0 {
            fix_gpt(&mut m);
            how.push("GPT checksums made right".into());
        }
        only_unread &= m.patches.iter().all(|(at, d)| !was_read(&b.reads, *at, d.len() as u64));
        let what = format!("{}: {}", b.name, how.join("; "));
        watchdog.case(&what);
        if only.is_some_and(|n| n != case) {
            continue;
        }
        if trace {
            eprintln!("case {case}: {what}");
        }

        let before = Counting::reset_peak();
        let disk: Arc<dyn Disk> = Arc::new(m);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| report_json(disk)));
        let used = Counting::peak_since(before);
        match result {
            Err(_) => failures.push(format!("PANIC {what}")),
            Ok(json) => {
                if only_unread {
                    unread_same += 1;
                    if json != b.report {
                        failures.push(format!("CHANGED by bytes never read: {what}"));
                    }
                }
                changed += usize::from(json != b.report);
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                with_os += usize::from(v["os"].is_object());
                with_warnings += usize::from(v["warnings"].as_array().is_some_and(|w| !w.is_empty()));
            }
        }
        if used > MEMORY_BOUND {
            failures.push(format!("MEMORY {what}: {} MiB", used >> 20));
        }
    }
    eprintln!(
        "{cases} broken guests in {:.1} s: {changed} reports changed, {with_os} still showed their OS, \
         {with_warnings} gave warnings, {unread_same} broken only where nothing is read gave the unbroken report",
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "seed {seed}: {} failures:\n{}", failures.len(), failures.join("\n"));
}
