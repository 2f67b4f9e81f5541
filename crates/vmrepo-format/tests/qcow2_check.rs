//! `vmrepo check` of qcow2 against `qemu-img check` (issue 7, item 11): valid
//! images made by qemu-img, their metadata broken one way each (L1 and L2
//! entries, refcount table and blocks, header fields, truncation). Where
//! qemu-img reports corruption or cannot check the image, vmrepo must not say
//! it is clean; where qemu-img finds nothing wrong, neither may vmrepo, with one
//! exception: a table that lies past the end of the file (a file cut short
//! where a table begins), which qemu-img reads as zeros when less than a
//! cluster is missing, and vmrepo reports. Leaked clusters are counted as
//! qemu-img counts them.
//!
//! The structures are found here from the header's fields at their offsets
//! in QEMU's docs/interop/qcow2.txt, not through vmrepo.

use std::path::Path;
use std::process::Command;

use vmrepo_format::{OpenOptions, check, open};
use vmrepo_testkit::{Rng, have};

/// Broken images per base image (`VMREPO_CHECK_CASES` for a longer run).
const CASES_PER_IMAGE: usize = 60;

const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Where a qcow2 image keeps its metadata, from its header.
struct Layout {
    cs: u64,
    l1_off: u64,
    l1_size: u64,
    rt_off: u64,
    rt_clusters: u64,
    refcount_bits: u64,
    extended_l2: bool,
    /// Offsets of the L1 entries that point to an L2 table.
    l1_used: Vec<u64>,
    /// Offsets of the L2 entries that point to a cluster.
    l2_used: Vec<u64>,
    /// Offsets of every L2 entry.
    l2_all: Vec<u64>,
    /// Offsets of the refcount table entries in use.
    rt_used: Vec<u64>,
    /// Offsets of the refcount blocks.
    blocks: Vec<u64>,
}

fn layout(d: &[u8]) -> Layout {
    let cs = 1u64 << be32(d, 20);
    let version = be32(d, 4);
    let refcount_order = if version >= 3 { be32(d, 96) } else { 4 };
    let extended_l2 = version >= 3 && be64(d, 72) & (1 << 4) != 0;
    let mut l = Layout {
        cs,
        l1_off: be64(d, 40),
        l1_size: u64::from(be32(d, 36)),
        rt_off: be64(d, 48),
        rt_clusters: u64::from(be32(d, 56)),
        refcount_bits: 1 << refcount_order,
        extended_l2,
        l1_used: vec![],
        l2_used: vec![],
        l2_all: vec![],
        rt_used: vec![],
        blocks: vec![],
    };
    let entry = if extended_l2 { 16 } else { 8 };
    for i in 0..l.l1_size {
        let at = l.l1_off + i * 8;
        let l2 = be64(d, at as usize) & OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        l.l1_used.push(at);
        for j in 0..cs / entry {
            let e = l2 + j * entry;
            l.l2_all.push(e);
            if be64(d, e as usize) & OFFSET_MASK != 0 {
                l.l2_used.push(e);
            }
        }
    }
    for i in 0..l.rt_clusters * cs / 8 {
        let at = l.rt_off + i * 8;
        let b = be64(d, at as usize) & OFFSET_MASK;
        if b != 0 {
            l.rt_used.push(at);
            l.blocks.push(b);
        }
    }
    l
}

fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize])
}

/// Breaks one piece of metadata and says how.
fn mutate(d: &mut Vec<u8>, l: &Layout, rng: &mut Rng) -> String {
    let len = d.len() as u64;
    let past_end = (len.div_ceil(l.cs) + 1 + rng.below(8)) * l.cs;
    let some_l2 = |rng: &mut Rng, d: &[u8]| pick(rng, &l.l1_used).map(|a| be64(d, a as usize) & OFFSET_MASK);
    let some_data =
        |rng: &mut Rng, d: &[u8]| pick(rng, &l.l2_used).map(|a| be64(d, a as usize) & OFFSET_MASK);
    match rng.below(6) {
        0 => {
            let Some(at) = pick(rng, &l.l1_used) else { return "nothing".into() };
            let old = be64(d, at as usize);
            let off = old & OFFSET_MASK;
            let (v, how) = match rng.below(9) {
                0 => (0, "emptied"),
                1 => (some_l2(rng, d).unwrap_or(off) | OFLAG_COPIED, "another L2 table"),
                2 => ((off + 512) | OFLAG_COPIED, "unaligned"),
                3 => (past_end | OFLAG_COPIED, "past the end"),
                4 => (off, "without COPIED"),
                5 => (old | 1 << 60, "a reserved bit"),
                6 => (OFLAG_COPIED, "the header"),
                7 => (l.rt_off | OFLAG_COPIED, "the refcount table"),
                _ => (some_data(rng, d).unwrap_or(off) | OFLAG_COPIED, "a data cluster"),
            };
            put64(d, at as usize, v);
            format!("L1 entry at {at:#x}: {how}")
        }
        1 => {
            let used = rng.below(4) != 0;
            let Some(at) = pick(rng, if used { &l.l2_used } else { &l.l2_all }) else {
                return "nothing".into();
            };
            let old = be64(d, at as usize);
            let off = old & OFFSET_MASK;
            let (v, how) = match rng.below(11) {
                0 => (0, "emptied"),
                1 => (some_data(rng, d).unwrap_or(l.cs) | OFLAG_COPIED, "another data cluster"),
                2 => ((off.max(l.cs) + 512) | OFLAG_COPIED, "unaligned"),
                3 => (past_end | OFLAG_COPIED, "past the end"),
                4 => (off, "without COPIED"),
                5 => (old | 1 << 57, "a reserved bit"),
                6 => (OFLAG_COMPRESSED | OFLAG_COPIED | off, "compressed and COPIED"),
                7 => (old | 1, "the zero flag"),
                8 => (some_l2(rng, d).unwrap_or(l.cs) | OFLAG_COPIED, "an L2 table"),
                9 => (pick(rng, &l.blocks).unwrap_or(l.cs) | OFLAG_COPIED, "a refcount block"),
                _ => (OFLAG_COPIED, "the header"),
            };
            put64(d, at as usize, v);
            format!("L2 entry at {at:#x} ({}): {how}", if used { "in use" } else { "any" })
        }
        2 => {
            let Some(at) = pick(rng, &l.rt_used) else { return "nothing".into() };
            let old = be64(d, at as usize);
            let (v, how) = match rng.below(5) {
                0 => (0, "emptied"),
                1 => (old + 512, "unaligned"),
                2 => (past_end, "past the end"),
                3 => (l.l1_off, "the L1 table"),
                _ => (some_l2(rng, d).unwrap_or(old), "an L2 table"),
            };
            put64(d, at as usize, v);
            format!("refcount table entry at {at:#x}: {how}")
        }
        3 => {
            let Some(block) = pick(rng, &l.blocks) else { return "nothing".into() };
            let per_block = l.cs * 8 / l.refcount_bits;
            let index = rng.below(per_block.min(len.div_ceil(l.cs) + 2));
            let v = [0u64, 1, 2, 3][rng.below(4) as usize];
            let bit = index * l.refcount_bits;
            let at = (block + bit / 8) as usize;
            match l.refcount_bits {
                64 => put64(d, at, v),
                32 => d[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes()),
                16 => d[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes()),
                8 => d[at] = v as u8,
                bits => {
                    let shift = bit % 8;
                    let mask = ((1u16 << bits) - 1) as u8;
                    d[at] = d[at] & !(mask << shift) | ((v as u8 & mask) << shift);
                }
            }
            format!("refcount of cluster {index} in the block at {block:#x}: {v}")
        }
        4 => {
            let (at, v, how) = match rng.below(7) {
                0 => (40, past_end, "L1 table past the end"),
                1 => (40, l.l1_off + 8, "L1 table unaligned"),
                2 => (48, past_end, "refcount table past the end"),
                3 => (48, l.rt_off + 512, "refcount table unaligned"),
                4 => (48, l.l1_off, "refcount table on the L1 table"),
                5 => (40, l.rt_off, "L1 table on the refcount table"),
                _ => (40, l.cs, "L1 table on cluster 1"),
            };
            put64(d, at, v);
            format!("header: {how}")
        }
        _ => {
            let n = rng.below(len / l.cs) * l.cs;
            d.truncate(n as usize);
            format!("truncated to {n:#x}")
        }
    }
}

/// What qemu-img check says: its exit code (0 clean, 1 not checked, 2
/// corruption, 3 leaks only) and the leaks it counted.
fn qemu_check(path: &Path) -> (i32, u64) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", "--output=json", path.to_str().unwrap()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v["leaks"].as_u64().unwrap_or(0))
}

/// What vmrepo says: `Err(why)` when it cannot check, else (problems, leaks).
fn ours(path: &Path) -> Result<(Vec<String>, u64), String> {
    let opts = OpenOptions { follow: false, format: Some(vmrepo_format::Format::Qcow2) };
    let image = open(path, &opts).map_err(|e| e.to_string())?;
    let r = check::check(&image).map_err(|e| e.to_string())?;
    Ok((r.problems, r.leaked_clusters))
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(path).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn qcow2_check_agrees_with_qemu_img_check() {
    if !have("qemu-img", "qemu-utils") || !have("qemu-io", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let writes = ["write -P 0x11 0 300k", "write -P 0x22 2M 64k", "write -P 0x33 5M 8k", "write -z 6M 64k"];
    let bases: &[(&str, &str, &[&str])] = &[
        ("4k clusters", "cluster_size=4096", &[]),
        ("v2", "compat=0.10,cluster_size=4096", &[]),
        ("refcount_bits=1", "cluster_size=4096,refcount_bits=1", &[]),
        ("refcount_bits=64", "cluster_size=4096,refcount_bits=64", &[]),
        ("extended L2", "extended_l2=on,cluster_size=16k", &[]),
        ("a snapshot", "cluster_size=4096", &["snap"]),
        ("compressed clusters", "cluster_size=4096", &["compress"]),
        ("a dirty bitmap", "cluster_size=4096", &["bitmap"]),
    ];
    let (mut rng, seed) = Rng::from_env();
    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::new();
    for (name, opts, extra) in bases {
        let base = tmp.path().join("base.qcow2");
        let _ = std::fs::remove_file(&base);
        let b = base.to_str().unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, b, "8M"]);
        qemu_io(&base, &writes);
        if extra.contains(&"compress") {
            qemu_io(&base, &["write -c -P 0x66 1M 64k", "write -c -P 0x77 4M 4k"]);
        }
        if extra.contains(&"bitmap") {
            qemu_img(&["bitmap", "--add", b, "backup-sl08e"]);
            qemu_io(&base, &["write -P 0x88 3M 256k"]);
        }
        if extra.contains(&"snap") {
            qemu_img(&["snapshot", "-c", "sl08e", b]);
            qemu_io(&base, &["write -P 0x44 0 8k", "write -P 0x55 7M 4k"]);
        }
        // The base is clean to both.
        assert_eq!(qemu_check(&base).0, 0, "{name}: qemu-img check of the base");
        assert_eq!(ours(&base).map(|r| r.0), Ok(vec![]), "{name}: vmrepo check of the base");
        let data = std::fs::read(&base).unwrap();
        let l = layout(&data);
        let case = tmp.path().join("case.qcow2");
        let cases = std::env::var("VMREPO_CHECK_CASES").ok().and_then(|n| n.parse().ok());
        for _ in 0..cases.unwrap_or(CASES_PER_IMAGE) {
            let mut d = data.clone();
            let how = format!("{name}: {}", mutate(&mut d, &l, &mut rng));
            std::fs::write(&case, &d).unwrap();
            let (q, q_leaks) = qemu_check(&case);
            let v = ours(&case);
            let clean = matches!(&v, Ok((p, _)) if p.is_empty());
            let cut_short = match &v {
                Err(e) => e.contains("past the end of the file"),
                Ok((p, _)) => p.iter().all(|p| p.contains("lies past the end of the file")),
            };
            let verdict = match (q, clean) {
                (1 | 2, true) => "MISSED",
                (1 | 2, false) => "both",
                (0 | 3, true) => "clean",
                (0 | 3, false) if cut_short => "stricter",
                (0 | 3, false) => "FALSE",
                _ => "qemu-odd",
            };
            *tally.entry(verdict).or_insert(0) += 1;
            if std::env::var_os("VMREPO_CHECK_VERBOSE").is_some() {
                eprintln!("{verdict}\t{q}\t{how}\t{:?}", v.as_ref().map(|r| r.0.first()));
            }
            match verdict {
                "MISSED" => failures.push(format!("qemu-img check exits {q}, vmrepo finds nothing: {how}")),
                "FALSE" => failures.push(format!("qemu-img check exits {q}, vmrepo says {v:?}: {how}")),
                "clean" if l.extended_l2 || extra.contains(&"snap") => {}
                "clean" => {
                    let ours_leaks = v.map(|r| r.1).unwrap_or(0);
                    if ours_leaks != q_leaks {
                        failures.push(format!("leaks: qemu-img {q_leaks}, vmrepo {ours_leaks}: {how}"));
                    }
                }
                _ => {}
            }
        }
    }
    eprintln!("{tally:?}");
    assert!(failures.is_empty(), "seed {seed}: {} failures:\n{}", failures.len(), failures.join("\n"));
}
