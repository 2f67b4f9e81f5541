//! The format layer against qemu-img: every format and subformat, made by
//! `qemu-img convert` from a raw disk the test wrote, must give qemu-img's
//! format and virtual size, its allocation map where qemu's map is
//! meaningful, and byte-identical guest data.

use std::path::{Path, PathBuf};

use crate::util::{guest_disk, have, map_rows, qemu_info, run, same_bytes, vmrepo};

/// (qemu format, -o options, compress, vmrepo needs --follow, compare maps)
const CASES: &[(&str, &str, bool, bool, bool)] = &[
    ("raw", "", false, false, true),
    ("qcow2", "", false, false, true),
    ("qcow2", "compat=0.10", false, false, true),
    ("qcow2", "cluster_size=4096", false, false, true),
    ("qcow2", "cluster_size=2M", false, false, true),
    ("qcow2", "", true, false, true),
    ("qcow2", "compression_type=zstd", true, false, true),
    ("qcow2", "extended_l2=on", false, false, true),
    ("qcow2", "extended_l2=on,cluster_size=128k", true, false, true),
    ("qcow2", "lazy_refcounts=on,refcount_bits=1", false, false, true),
    ("qcow2", "refcount_bits=64", false, false, true),
    ("vmdk", "subformat=monolithicSparse", false, false, true),
    ("vmdk", "subformat=streamOptimized", true, false, true),
    ("vmdk", "subformat=monolithicFlat", false, true, true),
    ("vmdk", "subformat=twoGbMaxExtentSparse", false, true, true),
    ("vmdk", "subformat=twoGbMaxExtentFlat", false, true, true),
    ("vdi", "", false, false, true),
    ("vdi", "static=on", false, false, true),
    ("vpc", "", false, false, true),
    ("vpc", "subformat=fixed", false, false, true),
    ("vpc", "force_size=on", false, false, true),
    ("vhdx", "", false, false, false),
    ("vhdx", "subformat=fixed", false, false, false),
    ("vhdx", "block_size=1M", false, false, false),
];

const SIZE: u64 = 40 << 20;

fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("guest.raw");
    guest_disk(&raw, SIZE);
    raw
}

/// Converts `raw` with qemu-img; the image is named `.img` whatever it holds,
/// so that only its content can tell vmrepo its format.
fn make(dir: &Path, raw: &Path, i: usize, format: &str, opts: &str, compress: bool) -> PathBuf {
    let out = dir.join(format!("case{i}.img"));
    let mut args = vec!["convert", "-f", "raw", "-O", format];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    if compress {
        args.push("-c");
    }
    args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    run("qemu-img", &args);
    out
}

#[test]
fn every_format_agrees_with_qemu_img() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = source(tmp.path());
    for (i, &(format, opts, compress, follow, compare_map)) in CASES.iter().enumerate() {
        let what = format!("{format} -o '{opts}'{}", if compress { " -c" } else { "" });
        let img = make(tmp.path(), &raw, i, format, opts, compress);
        let p = img.to_str().unwrap();
        let flags: &[&str] = if follow { &["--follow"] } else { &[] };

        // info: format and virtual size as qemu-img says (told the format, as
        // qemu-img's own probe does not recognise a fixed VHD).
        let q = qemu_info(&img, format);
        let (code, out, err) = vmrepo(&[&["--json", "info", p], flags].concat());
        assert_eq!(code, 0, "{what}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["format"], q["format"], "{what}: format");
        assert_eq!(v["virtual-size"], q["virtual-size"], "{what}: virtual size");
        assert_eq!(v["cluster-size"], q["cluster-size"], "{what}: cluster size");
        assert_eq!(v["actual-size"], q["actual-size"], "{what}: actual size");
        assert_eq!(v["dirty-flag"], q["dirty-flag"], "{what}: dirty flag");
        if let Some(fs) = q.get("format-specific").filter(|_| format == "qcow2") {
            assert_eq!(v["format-specific"], *fs, "{what}: format-specific");
        }

        // map: the same allocated ranges.
        if compare_map {
            let qm: serde_json::Value =
                serde_json::from_str(&run("qemu-img", &["map", "--output=json", "-f", format, p])).unwrap();
            let (code, out, err) = vmrepo(&[&["--json", "map", p], flags].concat());
            assert_eq!(code, 0, "{what}: {err}");
            let vm: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(map_rows(&vm), map_rows(&qm), "{what}: map");
        }

        // cat: byte for byte what qemu-img convert -O raw gives.
        let ours = tmp.path().join("ours.raw");
        let theirs = tmp.path().join("theirs.raw");
        let (code, _, err) = vmrepo(&[&["cat", p, "--force", "-o", ours.to_str().unwrap()], flags].concat());
        assert_eq!(code, 0, "{what}: {err}");
        run("qemu-img", &["convert", "-f", format, "-O", "raw", p, theirs.to_str().unwrap()]);
        assert!(same_bytes(&ours, &theirs), "{what}: guest bytes differ from qemu-img convert");
        if format != "vpc" {
            // qemu-img's VHD sizes are rounded to the CHS geometry.
            assert!(same_bytes(&ours, &raw), "{what}: guest bytes differ from what the test wrote");
        }

        // check: qemu-img made it, so it is consistent.
        let (code, out, err) = vmrepo(&[&["check", p], flags].concat());
        assert_eq!(code, 0, "{what}: check: {out}{err}");
        for f in std::fs::read_dir(tmp.path()).unwrap() {
            let f = f.unwrap().path();
            if f.file_name().unwrap().to_str().unwrap().starts_with(&format!("case{i}")) {
                std::fs::remove_file(f).unwrap();
            }
        }
    }
}

#[test]
fn cat_to_a_pipe_gives_the_same_bytes() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = source(tmp.path());
    let img = make(tmp.path(), &raw, 0, "qcow2", "", true);
    let out =
        std::process::Command::new(crate::util::bin()).args(["cat", img.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == std::fs::read(&raw).unwrap(), "cat to stdout differs");
}

#[test]
fn a_backing_chain_is_read_only_when_asked() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = source(tmp.path());
    let base = make(tmp.path(), &raw, 0, "qcow2", "", false);
    let top = tmp.path().join("top.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", "case0.img", "-F", "qcow2", top.to_str().unwrap()],
    );
    run("qemu-io", &["-c", "write -P 0x5a 1M 64k", top.to_str().unwrap()]);
    let t = top.to_str().unwrap();
    let (_, out, _) = vmrepo(&["--json", "info", t]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backing-filename"], "case0.img");
    assert_eq!(v["backing-filename-format"], "qcow2");
    // Without --follow the backing file is not opened, and reading says why.
    let (code, _, err) = vmrepo(&["cat", t, "-o", "/dev/null"]);
    assert_eq!(code, 12, "{err}");
    assert!(err.contains("--follow") && err.contains("case0.img"), "{err}");
    let ours = tmp.path().join("ours.raw");
    let theirs = tmp.path().join("theirs.raw");
    let (code, _, err) = vmrepo(&["cat", "--follow", t, "-o", ours.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    run("qemu-img", &["convert", "-O", "raw", t, theirs.to_str().unwrap()]);
    assert!(same_bytes(&ours, &theirs));
    let _ = base;
}

#[test]
fn referenced_files_outside_the_folder_are_refused() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let raw = source(tmp.path());
    make(tmp.path(), &raw, 0, "qcow2", "", false);
    let top = sub.join("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "../case0.img",
            "-F",
            "qcow2",
            "-u",
            top.to_str().unwrap(),
            "40M",
        ],
    );
    let (code, _, err) = vmrepo(&["cat", "--follow", top.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("not a file in the image's own folder"), "{err}");
    // A VMDK descriptor naming /etc/passwd as its extent.
    let d = sub.join("evil.vmdk");
    std::fs::write(&d, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n").unwrap();
    let (code, _, err) = vmrepo(&["cat", "--follow", d.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(code, 11, "{err}");
    let (code, out, _) = vmrepo(&["--json", "info", d.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("/etc/passwd"), "the descriptor is still reported: {out}");
}

#[test]
fn iso_and_isohybrid() {
    if !have("xorriso", "xorriso") || !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("content");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("README"), "STAR software\n").unwrap();
    for (name, extra) in [("plain.iso", vec![]), ("hybrid.iso", vec!["--protective-msdos-label"])] {
        let iso = tmp.path().join(name);
        let mut args = vec!["-as", "mkisofs", "-quiet", "-V", "STAR_SL08E"];
        args.extend(extra.iter());
        args.extend(["-o", iso.to_str().unwrap(), dir.to_str().unwrap()]);
        run("xorriso", &args);
        let (code, out, err) = vmrepo(&["--json", "info", iso.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let q = qemu_info(&iso, "");
        assert_eq!(v["format"], q["format"], "qemu-img reads an ISO as raw");
        assert_eq!(v["virtual-size"], q["virtual-size"]);
        assert_eq!(v["extension"], "iso");
        assert_eq!(v["format-specific"]["data"]["volume-id"], "STAR_SL08E");
        let hybrid = name == "hybrid.iso";
        assert_eq!(v["subformat"], if hybrid { "isohybrid" } else { "iso9660" });
        assert_eq!(v["format-specific"]["data"]["isohybrid"], hybrid);
    }
}

/// Writes `bytes` at `offset` of a file.
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

fn info_json(path: &Path) -> (i32, serde_json::Value, String) {
    let (code, out, err) = vmrepo(&["--json", "info", path.to_str().unwrap()]);
    (code, serde_json::from_str(&out).unwrap_or(serde_json::Value::Null), err)
}

#[test]
fn qcow2_snapshots_flags_features_and_data_files() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = source(tmp.path());
    let img = make(tmp.path(), &raw, 0, "qcow2", "", false);
    let p = img.to_str().unwrap();
    // Snapshots, as qemu-img lists them.
    run("qemu-img", &["snapshot", "-c", "before-sl08e", p]);
    run("qemu-img", &["snapshot", "-c", "after", p]);
    let q = qemu_info(&img, "qcow2");
    let (code, v, err) = info_json(&img);
    assert_eq!(code, 0, "{err}");
    // Every field qemu-img reports, with its value (vmrepo adds disk-size).
    let (ours, theirs) = (v["snapshots"].as_array().unwrap(), q["snapshots"].as_array().unwrap());
    assert_eq!(ours.len(), 2);
    for (o, t) in ours.iter().zip(theirs) {
        for (k, val) in t.as_object().unwrap() {
            assert_eq!(&o[k], val, "snapshot field {k}");
        }
    }
    assert_eq!(ours[0]["name"], "before-sl08e");
    // The dirty bit (incompatible feature bit 0), as qemu-img reports it.
    poke(&img, 79, &[1]);
    let (_, v, _) = info_json(&img);
    assert_eq!(v["dirty-flag"], true);
    assert_eq!(v["dirty-flag"], qemu_info(&img, "qcow2")["dirty-flag"]);
    // The corrupt bit: still described and readable.
    poke(&img, 79, &[2]);
    let (_, v, _) = info_json(&img);
    assert_eq!(v["format-specific"]["data"]["corrupt"], true);
    assert_eq!(v["corrupt"], true);
    let (code, _, _) = vmrepo(&["cat", p, "-o", "/dev/null"]);
    assert_eq!(code, 0);
    // An incompatible feature vmrepo does not know is refused.
    poke(&img, 72, &[0, 0, 0, 0, 0, 0, 0x04, 0]);
    let (code, _, err) = info_json(&img);
    assert_eq!(code, 11, "{err}");
    assert!(
        err.contains("unknown incompatible feature bits 0x400") || err.contains("incompatible feature"),
        "{err}"
    );

    // An external data file: reported; read only when following.
    let df = tmp.path().join("withdata.qcow2");
    crate::util::run_in(
        tmp.path(),
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", "data_file=data.raw,data_file_raw=on", "withdata.qcow2", "8M"],
    );
    crate::util::run_in(tmp.path(), "qemu-io", &["-c", "write -P 0x42 0 1M", "withdata.qcow2"]);
    let (code, v, err) = info_json(&df);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["data-file"], "data.raw");
    assert_eq!(v["format-specific"], qemu_info(&df, "qcow2")["format-specific"]);
    let (code, _, err) = vmrepo(&["cat", df.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(code, 12, "{err}");
    let ours = tmp.path().join("ours.raw");
    let theirs = tmp.path().join("theirs.raw");
    let (code, _, err) = vmrepo(&["cat", "--follow", df.to_str().unwrap(), "-o", ours.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // qemu-img opens a data file relative to where it runs; vmrepo, in the image's folder.
    crate::util::run_in(tmp.path(), "qemu-img", &["convert", "-O", "raw", "withdata.qcow2", "theirs.raw"]);
    assert!(same_bytes(&ours, &theirs));
}

/// The one's complement byte sum of a VHD footer, without its checksum field.
fn vhd_checksum(footer: &[u8]) -> u32 {
    !footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)))
}

#[test]
fn differencing_images_are_reported_not_read() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw = source(tmp.path());
    // A VHD turned differencing: disk type 4 in both footer copies.
    let vhd = make(tmp.path(), &raw, 0, "vpc", "", false);
    let len = std::fs::metadata(&vhd).unwrap().len();
    for at in [0, len - 512] {
        let mut footer = vec![0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&vhd).unwrap(), &mut footer, at)
            .unwrap();
        footer[60..64].copy_from_slice(&4u32.to_be_bytes());
        let sum = vhd_checksum(&footer);
        footer[64..68].copy_from_slice(&sum.to_be_bytes());
        poke(&vhd, at, &footer);
    }
    let (code, v, err) = info_json(&vhd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["subformat"], "differencing");
    assert!(v["parent"].is_object(), "{v}");
    assert!(v["warnings"].is_null(), "the checksums were fixed: {v}");
    let (code, _, err) = vmrepo(&["cat", vhd.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(code, 11);
    assert!(err.contains("differencing"), "{err}");
    // A VDI of type 4 (differencing) with a parent UUID.
    let vdi = make(tmp.path(), &raw, 1, "vdi", "", false);
    poke(&vdi, 0x4c, &4u32.to_le_bytes());
    poke(&vdi, 0x1a8, &[0x11; 16]);
    let (code, v, err) = info_json(&vdi);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["subformat"], "differencing");
    assert_eq!(v["parent"]["uuid"], "11111111-1111-1111-1111-111111111111");
    let (code, _, _) = vmrepo(&["cat", vdi.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(code, 11);
}

/// Runs vmrepo, killing it if it has not ended after far longer than any of
/// these commands takes: a command that waits forever fails the test instead
/// of hanging it. Returns (exit code, stderr).
fn vmrepo_unless_blocked(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(crate::util::bin())
        .args(args)
        .env_remove("VMREPO_REPO")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmrepo {args:?} blocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

fn mkfifo(path: &Path) {
    run("mkfifo", &[path.to_str().unwrap()]);
}

/// Issue 7, item 9: a FIFO given to a command blocked it forever in `open`.
#[test]
fn a_fifo_or_a_character_device_is_refused_before_any_read() {
    let r = crate::util::Repo::new();
    let fifo = r.scratch().join("sl5.3_x86_64_sl08e_8GB.img");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    for cmd in [&["info", f][..], &["map", f], &["check", f], &["cat", f, "-o", "/dev/null"], &["inspect", f]]
    {
        let (code, err) = vmrepo_unless_blocked(cmd);
        assert_eq!(code, 6, "{cmd:?}: {err}");
        assert!(err.contains("is a FIFO, not a disk image file"), "{cmd:?}: {err}");
    }
    for dev in ["/dev/zero", "/dev/null"] {
        let (code, err) = vmrepo_unless_blocked(&["info", dev]);
        assert_eq!(code, 6, "{dev}: {err}");
        assert!(err.contains("character device"), "{dev}: {err}");
    }
    let repo = r.root.to_str().unwrap();
    for src in [f, "/dev/zero"] {
        let args = ["--repo", repo, "add", src, "--vm", "kvm", "--os", "sl5.3", "--arch", "x86"];
        let (code, err) = vmrepo_unless_blocked(&[&args[..], &["--bits", "64", "--lib", "sl08e"]].concat());
        assert_eq!(code, 6, "add {src}: {err}");
        assert!(err.contains("not a disk image file"), "add {src}: {err}");
    }
    assert!(r.listed().is_empty(), "nothing was added");
}

/// Issue 7, item 9: an extent that is a FIFO in the image's own folder is
/// refused as one, with --follow, without waiting.
#[test]
fn a_referenced_fifo_is_refused_without_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("disk.vmdk");
    std::fs::write(&d, "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"disk-flat.vmdk\" 0\n").unwrap();
    mkfifo(&tmp.path().join("disk-flat.vmdk"));
    let p = d.to_str().unwrap();
    for cmd in [&["check", "--follow", p][..], &["cat", "--follow", p, "-o", "/dev/null"]] {
        let (code, err) = vmrepo_unless_blocked(cmd);
        assert_eq!(code, 11, "{cmd:?}: {err}");
        assert!(err.contains("\"disk-flat.vmdk\" is a FIFO, not a regular file"), "{cmd:?}: {err}");
    }
}

/// `qemu-img check`'s exit code (0 clean, 2 corrupt, 3 leaks only) and its
/// count of leaked clusters.
fn qemu_check(path: &Path) -> (i32, u64) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2", "--output=json", path.to_str().unwrap()])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v["leaks"].as_u64().unwrap_or(0))
}

fn read_be64(path: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path).unwrap(), &mut b, at).unwrap();
    u64::from_be_bytes(b)
}

/// A qcow2 of 64 KiB clusters holding 1 MiB of data from 0 and 64 KiB at 40
/// MiB, made by qemu-img; with the offsets of its first L2 entry, of the
/// refcount block entry of the first data cluster, and the data cluster's offset.
fn small_qcow2(dir: &Path, name: &str) -> (PathBuf, u64, u64, u64) {
    let img = dir.join(name);
    let p = img.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", p, "64M"]);
    run("qemu-io", &["-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 40M 64k", p]);
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    let l2 = read_be64(&img, read_be64(&img, 40)) & OFFSET;
    let data = read_be64(&img, l2) & OFFSET;
    let block = read_be64(&img, read_be64(&img, 48)) & OFFSET;
    // 16-bit refcounts: two bytes per cluster.
    (img, l2, block + 2 * (data >> 16), data)
}

/// Issue 7, item 11: a qcow2 whose L1 table lies past the end of the file is
/// described by `info` with a warning, and `check` cannot pass it.
#[test]
fn a_qcow2_whose_l1_table_lies_past_the_end_fails_check() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (img, ..) = small_qcow2(tmp.path(), "l1.qcow2");
    poke(&img, 40, &(1u64 << 30).to_be_bytes());
    assert_eq!(qemu_check(&img).0, 2, "qemu-img check calls it corrupt");
    let p = img.to_str().unwrap();
    let (code, _, err) = vmrepo(&["check", p]);
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("the L1 table at offset 1073741824") && err.contains("past the end"), "{err}");
    let (code, v, err) = info_json(&img);
    assert_eq!(code, 0, "{err}");
    assert!(v["warnings"].to_string().contains("the L1 table"), "{v}");
}

/// Issue 7, item 11: what `qemu-img check` calls corrupt, `vmrepo check`
/// does not pass (exit 1, or 11 when it cannot even read the tables); leaks
/// alone are no error to either, and are counted alike.
#[test]
fn check_fails_what_qemu_img_check_calls_corrupt() {
    if !have("qemu-img", "qemu-utils") || !have("qemu-io", "qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, l2, refcount, data) = small_qcow2(tmp.path(), "base.qcow2");
    let cases: &[(&str, u64, Vec<u8>, i32)] = &[
        // The data cluster in use with a refcount of 0.
        ("refcount 0", refcount, vec![0, 0], 2),
        // Its COPIED flag cleared while its refcount is 1.
        ("COPIED clear", l2, data.to_be_bytes().to_vec(), 2),
        // Two guest clusters sharing one host cluster of refcount 1.
        ("shared cluster", l2 + 8, ((1u64 << 63) | data).to_be_bytes().to_vec(), 2),
        // A refcount of 2 where one reference is all (and COPIED still set).
        ("refcount 2", refcount, vec![0, 2], 2),
    ];
    for (what, at, bytes, want) in cases {
        let img = tmp.path().join("case.qcow2");
        std::fs::copy(&base, &img).unwrap();
        poke(&img, *at, bytes);
        let (q, _) = qemu_check(&img);
        assert_eq!(q, *want, "{what}: qemu-img check");
        let (code, out, err) = vmrepo(&["check", img.to_str().unwrap()]);
        assert!(code == 1 || code == 11, "{what}: vmrepo check exits {code}: {out}{err}");
        assert!(out.contains("PROBLEMS FOUND") || code == 11, "{what}: {out}{err}");
    }
    // Leaks only: a cluster past the data with a refcount nothing accounts for.
    let img = tmp.path().join("leak.qcow2");
    std::fs::copy(&base, &img).unwrap();
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(len + (1 << 16)).unwrap();
    let last = refcount - 2 * (data >> 16) + 2 * (len >> 16);
    poke(&img, last, &[0, 1]);
    let (q, leaks) = qemu_check(&img);
    assert_eq!((q, leaks), (3, 1), "qemu-img check: one leak");
    let (code, out, err) = vmrepo(&["--json", "check", img.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["leaked_clusters"], leaks, "{v}");
}

/// Issue 7, item 11: a VMDK descriptor whose extent is a file outside its
/// folder, a device or a link, or a file shorter than the descriptor says,
/// never passes `check`, with or without --follow; `info` still describes it.
#[test]
fn a_vmdk_whose_extent_is_not_its_own_file_fails_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sl5.3_x86_64_sl08e_8GB");
    std::fs::create_dir(&dir).unwrap();
    let desc = |extent: &str| {
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 97656249999999 FLAT \"{extent}\" 0\n"
        )
    };
    let d = dir.join("disk.vmdk");
    let p = d.to_str().unwrap();
    for extent in ["/etc/passwd", "../../etc/passwd", "/dev/zero"] {
        std::fs::write(&d, desc(extent)).unwrap();
        for follow in [&[][..], &["--follow"]] {
            let (code, _, err) = vmrepo(&[&["check", p][..], follow].concat());
            assert_eq!(code, 11, "{extent} {follow:?}: {err}");
            assert!(err.contains("not a file in the image's own folder"), "{extent} {follow:?}: {err}");
        }
        let (code, v, err) = info_json(&d);
        assert_eq!(code, 0, "{extent}: {err}");
        assert_eq!(v["virtual-size"], 97656249999999u64 * 512);
    }
    // A link in the folder to a file outside it.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::fs::write(&d, desc("passwd")).unwrap();
    let (code, _, err) = vmrepo(&["check", "--follow", p]);
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    // A file of the folder, far shorter than the descriptor says.
    std::fs::write(dir.join("disk-flat.vmdk"), vec![0x5a; 4096]).unwrap();
    std::fs::write(&d, desc("disk-flat.vmdk")).unwrap();
    let (code, out, err) = vmrepo(&["check", "--follow", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("holds 4096 of the 49999999999999488 bytes declared"), "{out}");
    // Without --follow the extent is not read, and the check says so.
    let (code, _, err) = vmrepo(&["check", p]);
    assert_eq!(code, 12, "{err}");
}
