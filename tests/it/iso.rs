//! The ISO 9660 writer (`vmrepo_site::iso`) read back by real tools:
//! xorriso (Rock Ridge, and Joliet alone), isoinfo (genisoimage's reader:
//! the volume, Rock Ridge, Joliet, the level 1 tree), bsdtar (libarchive),
//! `file`, and pycdlib (a strict Python reader, in a virtualenv under
//! target/). Names, sizes and bytes (sha256sum of what the tools extract)
//! must be those written: 0, 1, 3 files, empty files, 2048 and 2049 bytes,
//! 5 MiB, long and non-ASCII names, names that collide in ISO 9660's level
//! 1, a root folder spanning several sectors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use vmrepo_site::iso::File;

use crate::util::have;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?} failed: {}", said(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic bytes that are not all alike.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The image of `files` in a new temporary folder.
fn image(volume: &str, files: &[(String, Vec<u8>)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("seed.iso");
    let list: Vec<File> = files.iter().map(|(n, d)| File { name: n, data: d }).collect();
    let mut out = std::fs::File::create(&iso).unwrap();
    vmrepo_site::iso::write(&mut out, volume, &list).unwrap();
    let len = std::fs::metadata(&iso).unwrap().len();
    assert_eq!(len % 2048, 0, "an image is whole sectors");
    assert_eq!(len, vmrepo_site::iso::image_len(volume, &list).unwrap());
    (tmp, iso)
}

/// `sha256sum` of every file in `dir` (recursively not needed: a flat root),
/// by name.
fn sums(dir: &Path) -> BTreeMap<String, String> {
    let names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    let mut out = BTreeMap::new();
    if names.is_empty() {
        return out;
    }
    let text = run(Command::new("sha256sum").arg("--").args(&names).current_dir(dir));
    for line in text.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        out.insert(name.to_string(), sum.to_string());
    }
    out
}

fn expected(files: &[(String, Vec<u8>)]) -> BTreeMap<String, String> {
    files.iter().map(|(n, d)| (n.clone(), hex(&Sha256::digest(d)))).collect()
}

/// Every check the installed tools can make of `iso` holding `files`.
fn check(volume: &str, files: &[(String, Vec<u8>)], iso: &Path) {
    let want = expected(files);
    let tmp = tempfile::tempdir().unwrap();

    // xorriso: the Rock Ridge tree, listed and extracted.
    let listing = run(Command::new("xorriso").arg("-indev").arg(iso).args(["-find", "/", "-exec", "lsdl"]));
    for (name, data) in files {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("'/{}'", name.replace('\'', "'\"'\"'"))))
            .unwrap_or_else(|| panic!("xorriso does not list {name:?}:\n{listing}"));
        assert!(line.starts_with("-r--------"), "{line}");
        assert!(line.contains(&format!(" {} ", data.len())), "{line}");
    }
    assert_eq!(listing.lines().filter(|l| l.starts_with('-')).count(), files.len(), "{listing}");
    let rr = tmp.path().join("rr");
    run(Command::new("xorriso").args(["-osirrox", "on", "-indev"]).arg(iso).args(["-extract", "/"]).arg(&rr));
    assert_eq!(sums(&rr), want, "xorriso's extraction of the Rock Ridge tree");
    let report = run(Command::new("xorriso").arg("-indev").arg(iso).arg("-pvd_info"));
    assert!(report.contains(&format!("Volume Id    : {volume}")), "{report}");

    // xorriso again, from the Joliet tree alone (no Rock Ridge mode then).
    let listing = run(Command::new("xorriso")
        .args(["-read_fs", "norock", "-indev"])
        .arg(iso)
        .args(["-find", "/", "-exec", "lsdl"]));
    let plain = listing.lines().filter(|l| l.starts_with('-'));
    assert!(plain.clone().all(|l| l.starts_with("-r-xr-xr-x")), "not the Joliet tree:\n{listing}");
    assert_eq!(plain.count(), files.len(), "{listing}");
    let joliet = tmp.path().join("joliet");
    run(Command::new("xorriso")
        .args(["-read_fs", "norock", "-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/"])
        .arg(&joliet));
    assert_eq!(sums(&joliet), want, "xorriso's extraction of the Joliet tree");

    if have("isoinfo", "genisoimage") {
        let d = run(Command::new("isoinfo").arg("-d").arg("-i").arg(iso));
        assert!(d.contains(&format!("Volume id: {volume}\n")), "{d}");
        assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
        assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");
        let r = run(Command::new("isoinfo").args(["-R", "-l", "-i"]).arg(iso));
        for (name, data) in files {
            let line = r
                .lines()
                .find(|l| l.ends_with(&format!("]  {name} ")))
                .unwrap_or_else(|| panic!("isoinfo -R: {name:?}:\n{r}"));
            assert!(line.contains(&format!(" {} ", data.len())), "{line}");
        }
        // isoinfo prints Joliet names through a single-byte charset: the ASCII ones.
        let j = run(Command::new("isoinfo").args(["-J", "-l", "-i"]).arg(iso));
        for (name, _) in files.iter().filter(|(n, _)| n.is_ascii()) {
            assert!(j.lines().any(|l| l.ends_with(&format!("]  {name} "))), "isoinfo -J: {name:?}:\n{j}");
        }
        // The level 1 tree: 8.3 upper-case names, unique, one per file.
        let l = run(Command::new("isoinfo").args(["-l", "-i"]).arg(iso));
        let ids: Vec<&str> = l
            .lines()
            .filter(|x| x.starts_with('-'))
            .filter_map(|x| x.rsplit("]  ").next())
            .map(str::trim_end)
            .collect();
        assert_eq!(ids.len(), files.len(), "{l}");
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "level 1 names collide:\n{l}");
        for id in ids {
            let (stem, rest) = id.split_once('.').unwrap_or_else(|| panic!("{id}"));
            let ext = rest.strip_suffix(";1").unwrap_or_else(|| panic!("{id}"));
            assert!((1..=8).contains(&stem.len()) && ext.len() <= 3, "{id}");
            let d_chars =
                |s: &str| s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            assert!(d_chars(stem) && d_chars(ext), "{id}");
        }
    }
    if have("bsdtar", "libarchive-tools") {
        let out = tmp.path().join("bsdtar");
        std::fs::create_dir(&out).unwrap();
        run(Command::new("bsdtar").arg("-xf").arg(iso).arg("-C").arg(&out));
        assert_eq!(sums(&out), want, "bsdtar's extraction");
    }
    if have("file", "file") {
        let f = run(Command::new("file").arg("-s").arg(iso));
        assert!(f.contains(&format!("ISO 9660 CD-ROM filesystem data '{volume}'")), "{f}");
    }
    if let Some(py) = pycdlib() {
        let script = r#"
import hashlib, io, sys, pycdlib
iso = pycdlib.PyCdlib()
iso.open(sys.argv[1])
print("rock", iso.has_rock_ridge(), iso.rock_ridge)
print("joliet", iso.has_joliet())
for rec in iso.list_children(rr_path="/"):
    if rec.is_dot() or rec.is_dotdot():
        continue
    name = rec.rock_ridge.name().decode("utf-8")
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path="/" + name)
    print("rr", hashlib.sha256(out.getvalue()).hexdigest(), name)
for rec in iso.list_children(joliet_path="/"):
    if rec.is_dot() or rec.is_dotdot():
        continue
    name = rec.file_identifier().decode("utf-16-be")
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, joliet_path="/" + name)
    print("joliet", hashlib.sha256(out.getvalue()).hexdigest(), name)
iso.close()
"#;
        let text = run(Command::new(py).arg("-c").arg(script).arg(iso));
        assert!(text.contains("rock True 1.09\n"), "{text}");
        assert!(text.contains("joliet True\n"), "{text}");
        for tree in ["rr", "joliet"] {
            let got: BTreeMap<String, String> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{tree} ")))
                .filter_map(|l| l.split_once(' '))
                .map(|(s, n)| (n.to_string(), s.to_string()))
                .collect();
            assert_eq!(got, want, "pycdlib's {tree} tree:\n{text}");
        }
    }
    // The Joliet tree's extraction is read-only: let the temporary folder go.
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(tmp.path()).output();
}

/// python3 of a virtualenv under target/ with pycdlib from PyPI (made once,
/// in place; a marker says it is complete).
fn pycdlib() -> Option<PathBuf> {
    // Tests run at once in threads: one makes the virtualenv while the others wait,
    // instead of removing and making it under each other.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-pycdlib");
    let ready = venv.join("vmrepo-ready");
    let python = venv.join("bin/python3");
    if ready.is_file() {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made =
        Command::new("python3").args(["-m", "venv"]).arg(&venv).output().is_ok_and(|o| o.status.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "pycdlib"])
                .output()
                .is_ok_and(|o| o.status.success());
    if !made {
        let _ = std::fs::remove_dir_all(&venv);
        assert!(!ci(), "this test needs pycdlib from PyPI in a virtualenv (python3-venv, network)");
        eprintln!("SKIPPED: cannot make a virtualenv with pycdlib");
        return None;
    }
    std::fs::write(&ready, "").unwrap();
    Some(python)
}

fn named(list: &[(&str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    list.iter().map(|(n, d)| (n.to_string(), d.clone())).collect()
}

#[test]
fn a_seed_of_three_files_reads_back_in_every_tool() {
    if !have("xorriso", "xorriso") || !have("sha256sum", "coreutils") {
        return;
    }
    let files = named(&[
        ("meta-data", b"instance-id: rcas7-test\nlocal-hostname: rcas7\n".to_vec()),
        ("user-data", b"#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA test\n".to_vec()),
        ("network-config", b"version: 2\n".to_vec()),
    ]);
    let (_tmp, iso) = image("cidata", &files);
    check("cidata", &files, &iso);
}

#[test]
fn no_file_and_one_file() {
    if !have("xorriso", "xorriso") || !have("sha256sum", "coreutils") {
        return;
    }
    let (_t, iso) = image("cidata", &[]);
    check("cidata", &[], &iso);
    let one = named(&[("meta-data", b"instance-id: x\n".to_vec())]);
    let (_t, iso) = image("CIDATA", &one);
    check("CIDATA", &one, &iso);
}

#[test]
fn sector_boundaries_empty_files_and_five_mebibytes() {
    if !have("xorriso", "xorriso") || !have("sha256sum", "coreutils") {
        return;
    }
    let files = named(&[
        ("empty-first", vec![]),
        ("one", bytes(1, 1)),
        ("exactly-2048", bytes(2048, 2)),
        ("empty-middle", vec![]),
        ("just-over-2049", bytes(2049, 3)),
        ("one-short-4095", bytes(4095, 4)),
        ("five-mib", bytes(5 << 20, 5)),
        ("empty-last", vec![]),
    ]);
    let (_tmp, iso) = image("cidata", &files);
    check("cidata", &files, &iso);
}

#[test]
fn long_non_ascii_and_colliding_names() {
    if !have("xorriso", "xorriso") || !have("sha256sum", "coreutils") {
        return;
    }
    let files = named(&[
        (&"n".repeat(64), bytes(10, 1)),
        ("données de l'utilisateur", bytes(20, 2)),
        ("κόμβος-節点-узел", bytes(30, 3)),
        ("a-b", bytes(40, 4)),
        ("a_b", bytes(50, 5)),
        ("A-B", bytes(60, 6)),
        ("with space.tar.gz", bytes(70, 7)),
        (".hidden", bytes(80, 8)),
        ("UPPER.TXT", bytes(90, 9)),
        ("upper.txt", bytes(100, 10)),
    ]);
    let (_tmp, iso) = image("cidata", &files);
    check("cidata", &files, &iso);
}

#[test]
fn a_root_folder_of_many_sectors() {
    if !have("xorriso", "xorriso") || !have("sha256sum", "coreutils") {
        return;
    }
    // Records of varying lengths, so that some would cross a sector boundary.
    let files: Vec<(String, Vec<u8>)> =
        (0..300).map(|i| (format!("node-{i}-{}", "x".repeat(i % 50)), bytes(i % 7, i as u8))).collect();
    let (_tmp, iso) = image("cidata", &files);
    check("cidata", &files, &iso);
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let files = named(&[("meta-data", b"a\n".to_vec()), ("user-data", bytes(3000, 1))]);
    let (_t1, a) = image("cidata", &files);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_t2, b) = image("cidata", &files);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}
