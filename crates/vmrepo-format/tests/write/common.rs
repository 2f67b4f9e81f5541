//! What every writer's test shares: the sources, and the oracle.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use vmrepo_format::write::{Output, Written, write};
use vmrepo_format::{Format, OpenOptions, open};

/// Whether qemu-img is here (under CI its absence fails the test).
pub fn need_qemu_img() -> bool {
    vmrepo_testkit::have("qemu-img", "qemu-utils") && vmrepo_testkit::have("qemu-io", "qemu-utils")
}

/// A source image, and the name qemu-img gives its format.
#[derive(Clone, Debug)]
pub struct Src {
    pub path: PathBuf,
    /// qemu-img's name of the format (`vpc` for VHD).
    pub format: String,
    pub what: String,
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_io(path: &Path, format: &str, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", format]);
    for x in cmds {
        c.args(["-c", x]);
    }
    c.arg(path);
    run(&mut c);
}

/// The size of the base image: 64 MiB and three sectors, so that the last
/// stretch fills neither a cluster nor a block of any format.
pub const BASE_SIZE: u64 = (64 << 20) + 3 * 512;

/// A raw image of [`BASE_SIZE`] written by qemu-io: a pattern at the start,
/// 1 MiB of pseudo-random (incompressible) data, a stretch across the 2 MiB
/// and 32 MiB boundaries, a single byte in a sector of its own, and the last
/// sector.
pub fn base_raw(dir: &Path) -> PathBuf {
    let path = dir.join("base.raw");
    File::create(&path).unwrap().set_len(BASE_SIZE).unwrap();
    let noise = dir.join("noise");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&noise, bytes).unwrap();
    qemu_io(
        &path,
        "raw",
        &[
            "write -P 0xab 0 4k".into(),
            format!("write -s {} 5M 1M", noise.display()),
            "write -P 0x5a 2044k 8k".into(),
            "write -P 0x33 32764k 12k".into(),
            "write -P 0x01 40000k 512".into(),
            format!("write -P 0xee {} 512", BASE_SIZE - 512),
        ],
    );
    path
}

/// Every source: the base image as qemu-img writes it in every format it
/// writes, and the shared samples that both qemu-img and vmrepo read.
pub fn sources(dir: &Path) -> Vec<Src> {
    let raw = base_raw(dir);
    let mut out = vec![Src { path: raw.clone(), format: "raw".into(), what: "raw".into() }];
    let made: [(&str, &str, &[&str]); 8] = [
        ("qcow2", "qcow2", &[]),
        ("qcow2-c", "qcow2", &["-c"]),
        ("vmdk", "vmdk", &[]),
        ("vmdk-stream", "vmdk", &["-o", "subformat=streamOptimized"]),
        ("vdi", "vdi", &[]),
        ("vdi-static", "vdi", &["-o", "static=on"]),
        ("vpc", "vpc", &["-o", "force_size=on"]),
        ("vhdx", "vhdx", &[]),
    ];
    for (name, fmt, opts) in made {
        let p = dir.join(format!("src-{name}.{fmt}"));
        run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", fmt]).args(opts).arg(&raw).arg(&p));
        out.push(Src { path: p, format: fmt.into(), what: format!("qemu-img {name}") });
    }
    out.extend(samples(dir));
    out
}

/// The shared samples that qemu-img describes and vmrepo reads, decompressed.
pub fn samples(dir: &Path) -> Vec<Src> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/qemu-iotests-samples");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&shared) else {
        eprintln!("NOTICE: {} is missing: the samples are not converted", shared.display());
        return out;
    };
    let mut names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in names.iter().filter(|n| n.ends_with(".bz2")) {
        let plain = dir.join(n.trim_end_matches(".bz2"));
        let o = Command::new("bzip2").arg("-dc").arg(shared.join(n)).output().expect("bzip2 runs");
        assert!(o.status.success(), "bzip2 -dc {n}");
        std::fs::write(&plain, o.stdout).unwrap();
        // Only what both read: qemu-img names a format, and vmrepo reads the guest's bytes.
        let Some(fmt) = qemu_info(&plain, None).and_then(|v| v["format"].as_str().map(str::to_string)) else {
            continue;
        };
        let readable = open(&plain, &OpenOptions::default()).is_ok_and(|i| i.disk().is_ok());
        if readable {
            out.push(Src { path: plain, format: fmt, what: format!("sample {n}") });
        }
    }
    out
}

/// `qemu-img info --output=json`, or `None` if qemu-img refuses the file.
pub fn qemu_info(path: &Path, format: Option<&str>) -> Option<serde_json::Value> {
    let mut c = Command::new("qemu-img");
    c.args(["info", "--output=json"]);
    if let Some(f) = format {
        c.args(["-f", f]);
    }
    let o = c.arg(path).output().ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// The virtual size qemu-img should report of `output` written from a disk
/// of `size` bytes.
pub fn expected_size(output: &Output, size: u64) -> u64 {
    match output {
        Output::Vhd { .. } => size.div_ceil(1 << 20) << 20,
        Output::Raw => size,
        _ => size.div_ceil(512) * 512,
    }
}

/// Writes `src` as `output` into `dir` with vmrepo's writer.
pub fn convert(src: &Src, output: &Output, dir: &Path) -> (PathBuf, Written) {
    let image = open(&src.path, &OpenOptions { follow: true, ..Default::default() })
        .unwrap_or_else(|e| panic!("{}: {e}", src.what));
    let disk = image.disk().unwrap_or_else(|e| panic!("{}: {e}", src.what));
    let stem = src.path.file_name().unwrap().to_string_lossy().replace('.', "_");
    let sub = output.subformat().replace([' ', ',', '(', ')'], "");
    let dest = dir.join(format!("{stem}-{sub}.{}", output.format().extension()));
    let _ = std::fs::remove_file(&dest);
    let f = File::options().read(true).write(true).create_new(true).open(&dest).unwrap();
    let written = write(disk, output, &f, &|_| {}, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{} as {output}: {e}", src.what));
    (dest, written)
}

/// Writes `src` as `output` and holds the result to qemu-img: `check` finds
/// nothing wrong (where qemu-img checks the format), `compare` says the guest
/// bytes are identical, `info` gives the format, the subformat and the
/// virtual size; and vmrepo's own reader reads back the source's bytes.
pub fn convert_checked(src: &Src, output: &Output, dir: &Path) -> PathBuf {
    let (dest, _) = convert(src, output, dir);
    let fmt = output.format().qemu_name();
    let what = format!("{} as {output} ({})", src.what, dest.display());
    // check: exit 0, or 63 for a format qemu-img does not check (vpc, raw).
    let o = Command::new("qemu-img").args(["check", "--output=json", "-f", fmt]).arg(&dest).output().unwrap();
    let code = o.status.code();
    if code != Some(63) {
        assert_eq!(
            code,
            Some(0),
            "{what}: qemu-img check: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for k in ["corruptions", "leaks", "check-errors", "corruptions-fixed", "leaks-fixed"] {
            assert!(v[k].as_u64().unwrap_or(0) == 0, "{what}: qemu-img check: {v}");
        }
    }
    // info: the format, the subformat, the size.
    let info = qemu_info(&dest, Some(fmt)).unwrap_or_else(|| panic!("{what}: qemu-img info refuses it"));
    assert_eq!(info["format"], fmt, "{what}: {info}");
    let src_size =
        open(&src.path, &OpenOptions { follow: true, ..Default::default() }).unwrap().info.virtual_size;
    assert_eq!(info["virtual-size"].as_u64(), Some(expected_size(output, src_size)), "{what}: {info}");
    let specific = &info["format-specific"]["data"];
    match output {
        Output::Vmdk(sub) => {
            let want = serde_json::to_value(sub).unwrap();
            assert_eq!(specific["create-type"], want, "{what}: {info}");
        }
        Output::Qcow2 { compression, .. } => {
            assert_eq!(specific["compat"], "1.1", "{what}: {info}");
            if let Some(c) = compression {
                assert_eq!(specific["compression-type"], serde_json::to_value(c).unwrap(), "{what}: {info}");
            }
        }
        _ => {}
    }
    // compare: identical guest bytes (a larger output's tail must be zeros).
    let o = Command::new("qemu-img")
        .args(["compare", "-f", &src.format, "-F", fmt])
        .arg(&src.path)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what}: qemu-img compare: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // vmrepo reads back the same bytes.
    read_back_same(src, &dest, &what);
    dest
}

/// vmrepo's reader gives `dest` the format written and the source's bytes,
/// with zeros past the source's end.
pub fn read_back_same(src: &Src, dest: &Path, what: &str) {
    let a = open(&src.path, &OpenOptions { follow: true, ..Default::default() }).unwrap();
    let b =
        open(dest, &OpenOptions::default()).unwrap_or_else(|e| panic!("{what}: vmrepo cannot open it: {e}"));
    let (da, db) = (a.disk().unwrap(), b.disk().unwrap_or_else(|e| panic!("{what}: {e}")));
    assert!(db.size() >= da.size(), "{what}: {} < {}", db.size(), da.size());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < db.size() {
        let n = (db.size() - pos).min(1 << 20) as usize;
        db.read_at(&mut bb[..n], pos).unwrap_or_else(|e| panic!("{what}: read at {pos}: {e}"));
        let m = da.size().saturating_sub(pos).min(n as u64) as usize;
        ba[..n].fill(0);
        if m > 0 {
            da.read_at(&mut ba[..m], pos).unwrap();
        }
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y).unwrap_or(0);
            panic!("{what}: vmrepo reads a different byte at {}", pos + i as u64);
        }
        pos += n as u64;
    }
}

/// Bytes the file takes on the host.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The format vmrepo detects in `path`.
pub fn detected(path: &Path) -> Format {
    open(path, &OpenOptions::default()).unwrap().info.format
}

#[test]
fn raw_of_every_source_is_what_qemu_img_reads() {
    if !need_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in sources(dir.path()) {
        let dest = convert_checked(&src, &Output::Raw, dir.path());
        std::fs::remove_file(dest).unwrap();
    }
}
