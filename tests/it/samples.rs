//! Images made by other hypervisors' own tools (Hyper-V, Virtual PC,
//! disk2vhd, VMware) and two crafted by fuzzers, from QEMU's test suite
//! (see ../shared/testdata/qemu-iotests-samples/PROVENANCE.md): vmrepo must
//! give qemu-img's answers, and a clear error for the crafted ones.

use std::path::{Path, PathBuf};

use crate::util::{have, map_rows, qemu_info, run, same_bytes, vmrepo};

/// Where the samples are: `VMREPO_SAMPLES`, else `../shared/testdata/` beside
/// the checkout, else the workplace's shared folder.
fn samples_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("VMREPO_SAMPLES") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/qemu-iotests-samples"),
            PathBuf::from("/work/shared/testdata/qemu-iotests-samples"),
        ],
    };
    let found = candidates.iter().find(|d| d.join("PROVENANCE.md").is_file()).cloned();
    if found.is_none() {
        eprintln!("SKIPPED: the sample images are not in {candidates:?} (set VMREPO_SAMPLES)");
    }
    found
}

/// Decompresses a sample into `into`.
fn sample(dir: &Path, name: &str, into: &Path) -> PathBuf {
    let out = into.join(name);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("bzip2 -dc '{}' > '{}'", dir.join(format!("{name}.bz2")).display(), out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn other_hypervisors_images_read_as_qemu_img_reads_them() {
    let Some(dir) = samples_dir() else { return };
    if !have("qemu-img", "qemu-utils") || !have("bzip2", "bzip2") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, format, compare_map) in [
        ("d2v-zerofilled.vhd", "vpc", true),
        ("hyperv2012r2-dynamic.vhd", "vpc", true),
        ("virtualpc-dynamic.vhd", "vpc", true),
        ("iotest-dynamic-1G.vhdx", "vhdx", false),
        ("test-disk2vhd.vhdx", "vhdx", false),
        ("iotest-version3.vmdk", "vmdk", true),
        ("grub_mbr.raw", "raw", true),
    ] {
        let img = sample(&dir, name, tmp.path());
        let p = img.to_str().unwrap();
        let q = qemu_info(&img, format);
        let (code, out, err) = vmrepo(&["--json", "info", p]);
        assert_eq!(code, 0, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["format"], q["format"], "{name}");
        assert_eq!(v["virtual-size"], q["virtual-size"], "{name}");
        assert_eq!(v["cluster-size"], q["cluster-size"], "{name}");
        if compare_map {
            let qm: serde_json::Value =
                serde_json::from_str(&run("qemu-img", &["map", "--output=json", "-f", format, p])).unwrap();
            let (_, out, _) = vmrepo(&["--json", "map", p]);
            assert_eq!(map_rows(&serde_json::from_str(&out).unwrap()), map_rows(&qm), "{name}: map");
        }
        let ours = tmp.path().join("ours.raw");
        let theirs = tmp.path().join("theirs.raw");
        let (code, _, err) = vmrepo(&["cat", p, "--force", "-o", ours.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        run("qemu-img", &["convert", "-f", format, "-O", "raw", p, theirs.to_str().unwrap()]);
        assert!(same_bytes(&ours, &theirs), "{name}: guest bytes differ from qemu-img convert");
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn crafted_and_unsupported_images_are_clear_errors() {
    let Some(dir) = samples_dir() else { return };
    if !have("bzip2", "bzip2") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, code, expect) in [
        ("afl5.img", 11, "afl5.img: vhd:"),
        ("afl9.vmdk", 11, "afl9.vmdk: vmdk:"),
        ("empty.bochs", 11, "unsupported format: bochs"),
        ("parallels-v1", 11, "unsupported format: parallels"),
        ("parallels-v2", 11, "unsupported format: parallels"),
        ("parallels-with-bitmap", 11, "unsupported format: parallels"),
        ("simple-dmg.dmg", 11, "unsupported format: dmg"),
        ("simple-pattern.cloop", 11, "unsupported format: cloop"),
    ] {
        let img = sample(&dir, name, tmp.path());
        for cmd in ["info", "map", "check"] {
            let (c, _, err) = vmrepo(&[cmd, img.to_str().unwrap()]);
            assert_eq!(c, code, "{cmd} {name}: {err}");
            assert!(err.contains(expect), "{cmd} {name}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
    }
    // A log that needs replaying: described, not read.
    let img = sample(&dir, "iotest-dirtylog-10G-4M.vhdx", tmp.path());
    let p = img.to_str().unwrap();
    let (code, out, _) = vmrepo(&["--json", "info", p]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format-specific"]["data"]["log-needs-replay"], true);
    assert_eq!(v["virtual-size"], 10u64 << 30);
    let (code, _, err) = vmrepo(&["cat", p, "-o", "/dev/null"]);
    assert_eq!(code, 11);
    assert!(err.contains("log needs replaying"), "{err}");
}
