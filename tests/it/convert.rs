//! `vmrepo convert` (issue 11): the guests of scripts/build-test-guests.py
//! converted for every VM software and held to qemu-img (check, compare,
//! info); every Xen paravirtual guest refused for every VM software that
//! needs a kernel of its own, and with --force converted and imported with
//! the warning in its description; and the format mutation corpus through
//! convert: no panic, no hang, and whatever is written passes qemu-img check.

use std::path::Path;
use std::process::Command;

use crate::inspect::guests;
use crate::util::{Repo, have, qemu_info, vmrepo};

const NON_XEN: [&str; 4] = ["kvm", "virtualBox", "vmware", "ec2"];

fn guest<'a>(g: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    g["guests"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()
}

/// `qemu-img check` finds nothing wrong (or does not check the format), and
/// `qemu-img compare` finds `out` identical to `src`.
fn qemu_img_agrees(src: &Path, src_fmt: &str, out: &Path, fmt: &str) {
    let o = Command::new("qemu-img").args(["check", "-f", fmt]).arg(out).output().unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 63)),
        "qemu-img check {}: {}{}",
        out.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("qemu-img")
        .args(["compare", "-f", src_fmt, "-F", fmt])
        .arg(src)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "qemu-img compare {}: {}", out.display(), String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_guest_converted_for_every_vm_software_is_what_qemu_img_reads() {
    let Some(g) = guests() else { return };
    let r = Repo::new();
    let src = guest(&g, "sl5.3");
    let raw = src["images"]["raw"].as_str().unwrap();
    // The VM software, the format qemu-img must see, and VMDK's create-type.
    let targets = [
        ("kvm", "qcow2", None),
        ("virtualBox", "vdi", None),
        ("vmware", "vmdk", Some("monolithicSparse")),
        ("ec2", "vmdk", Some("streamOptimized")),
        ("xen", "raw", None),
    ];
    for (vm, fmt, sub) in targets {
        let out = r.scratch().join(format!("out-{vm}"));
        let v = r.json(&["convert", raw, "--to", vm, "-o", out.to_str().unwrap()]);
        assert_eq!(v["vm"], vm, "{v}");
        assert!(matches!(v["verdict"]["boots"].as_str(), Some("yes" | "with_warnings")), "{vm}: {v}");
        assert!(v["verdict"]["refusal"].is_null(), "{vm}: {v}");
        let info = qemu_info(&out, fmt);
        assert_eq!(info["format"], fmt, "{vm}: {info}");
        assert_eq!(info["virtual-size"], src["virtual_sizes"]["raw"], "{vm}: {info}");
        if let Some(sub) = sub {
            assert_eq!(info["format-specific"]["data"]["create-type"], sub, "{vm}: {info}");
            // The descriptor names the file by the name it was renamed to.
            let head = std::fs::read(&out).unwrap();
            let text = String::from_utf8_lossy(&head[..head.len().min(64 << 10)]).into_owned();
            assert!(
                text.contains(&format!("\"out-{vm}\"")),
                "{vm}: the extent line names the temporary file"
            );
        }
        qemu_img_agrees(Path::new(raw), "raw", &out, fmt);
        // The source is not hashed for -o (only --add quotes its SHA-256).
        assert!(v["source_sha256"].is_null(), "{v}");
    }
    // -O and its options: VHD fixed (a MiB multiple, as Azure needs), qcow2 zstd.
    let out = r.scratch().join("fixed.vhd");
    r.ok(&["convert", raw, "--to", "ec2", "-O", "vhd", "--subformat", "fixed", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&out).unwrap().len() % (1 << 20), 512, "a MiB multiple and the footer");
    qemu_img_agrees(Path::new(raw), "raw", &out, "vpc");
    let out = r.scratch().join("z.qcow2");
    r.ok(&[
        "convert",
        raw,
        "--to",
        "kvm",
        "--compress",
        "zstd",
        "--cluster-size",
        "128k",
        "-o",
        out.to_str().unwrap(),
    ]);
    let info = qemu_info(&out, "qcow2");
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd", "{info}");
    assert_eq!(info["cluster-size"], 128 * 1024, "{info}");
    qemu_img_agrees(Path::new(raw), "raw", &out, "qcow2");
    // An existing output is kept without --force (exit 5), and bad options are exit 6.
    r.fails(5, &["convert", raw, "--to", "kvm", "-o", out.to_str().unwrap()]);
    r.fails(6, &["convert", raw, "--to", "kvm", "--subformat", "fixed", "-o", "x.qcow2"]);
    r.fails(6, &["convert", raw, "--to", "openstack", "-o", "x"]);
    r.fails(6, &["convert", raw, "--to", "kvm", "--cluster-size", "3k", "-o", "x"]);
    r.fails(2, &["convert", raw, "--to", "kvm"]);
    // Killed while it writes: the name is not taken, and the next run removes
    // the temporary file the killed one left.
    if have("strace", "strace") {
        let out = r.scratch().join("killed.vdi");
        let o = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "inject=pwrite64:signal=SIGKILL:when=2"])
            .arg(crate::util::bin())
            .args(["convert", raw, "--to", "virtualBox", "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert_ne!(o.status.code(), Some(0));
        assert!(!out.exists());
        let left = |dir: &Path| -> usize {
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".killed.vdi.tmp-"))
                .count()
        };
        assert_eq!(left(&r.scratch()), 1, "the killed run's temporary file");
        r.ok(&["convert", raw, "--to", "virtualBox", "-o", out.to_str().unwrap()]);
        assert_eq!(left(&r.scratch()), 0, "removed by the next run");
        qemu_img_agrees(Path::new(raw), "raw", &out, "vdi");
    }
}

#[test]
fn every_xen_paravirtual_guest_is_refused_for_every_vm_software_that_needs_a_kernel() {
    let Some(g) = guests() else { return };
    let r = Repo::new();
    let pv: Vec<&serde_json::Value> = g["guests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["expect"]["verdict"] == "xen_paravirtual")
        .collect();
    assert!(pv.len() >= 2, "the builder makes two Xen paravirtual guests");
    for guest in &pv {
        let name = guest["name"].as_str().unwrap();
        for (fmt, img) in guest["images"].as_object().unwrap() {
            let img = img.as_str().unwrap();
            for vm in NON_XEN {
                let out = r.scratch().join(format!("{name}-{fmt}-{vm}"));
                let err = r.fails(11, &["convert", img, "--to", vm, "-o", out.to_str().unwrap()]);
                assert!(err.contains("Xen paravirtual") && err.contains("no kernel of its own"), "{err}");
                assert!(err.contains("install a non-Xen kernel"), "{name} to {vm}: {err}");
                assert!(!out.exists(), "{name} to {vm}: nothing is written");
            }
        }
        // It boots on Xen.
        let out = r.scratch().join(format!("{name}-xen"));
        let raw = guest["images"]["raw"].as_str().unwrap();
        r.ok(&["convert", raw, "--to", "xen", "-o", out.to_str().unwrap()]);
        qemu_img_agrees(Path::new(raw), "raw", &out, "raw");
    }
    // The kernel it expects is named.
    let xenmod = guest(&g, "sl5-xenmod")["images"]["raw"].as_str().unwrap();
    let err = r.fails(11, &["convert", xenmod, "--to", "kvm", "-o", "never"]);
    assert!(err.contains("2.6.18-128.el5xen"), "{err}");
    // --force converts it, and --add keeps the warning in the description.
    let v = r.json(&["convert", xenmod, "--to", "kvm", "--force", "--add", "--detail", "fromxen"]);
    assert_eq!(v["verdict"]["boots"], "no", "{v}");
    assert_eq!(v["forced"], true, "{v}");
    let path = v["added"]["path"].as_str().unwrap();
    assert!(path.starts_with("vm/kvm/") && path.ends_with("_fromxen.qcow2"), "{path}");
    let stored = r.vm_dir("kvm").join(Path::new(path).file_name().unwrap());
    let txt = std::fs::read_to_string(stored.with_extension("txt")).unwrap();
    let sha = crate::util::sha256sum(Path::new(xenmod));
    assert_eq!(v["source_sha256"], sha, "{v}");
    assert!(txt.contains("Converted from ") && txt.contains(&format!("(SHA-256 {sha})")), "{txt}");
    assert!(
        txt.contains("WARNING: a Xen paravirtual guest") && txt.contains("Converted anyway (--force)"),
        "{txt}"
    );
    qemu_img_agrees(Path::new(xenmod), "raw", &stored, "qcow2");
    // The stored copy's .checksum is md5sum's.
    let sum = std::fs::read_to_string(stored.with_extension("checksum")).unwrap();
    let o = Command::new("md5sum").arg(&stored).output().unwrap();
    let md5 = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string();
    assert!(sum.contains(&md5), "{sum}");
    // No temporary file is left in the repository.
    let left: Vec<_> = std::fs::read_dir(r.root.join(".vmrepo"))
        .map(|d| {
            d.flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().contains("convert")).collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Flips bytes in the first 64 KiB of small images of every format and
/// converts each: vmrepo must end (no hang), never panic (exit 101) or die of
/// a signal, and what it writes qemu-img check accepts.
#[test]
fn the_format_mutation_corpus_through_convert() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::File::create(&base).unwrap().set_len(8 << 20).unwrap();
    crate::util::run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x11 6M 64k", base.to_str().unwrap()],
    );
    let (mut rng, _) = vmrepo_testkit::Rng::from_env();
    let cases: u64 = std::env::var("VMREPO_CONVERT_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12);
    for (fmt, opts) in
        [("qcow2", ""), ("vmdk", "subformat=streamOptimized"), ("vdi", ""), ("vpc", ""), ("vhdx", "")]
    {
        let src = dir.path().join(format!("src.{fmt}"));
        let mut a = vec!["convert", "-f", "raw", "-O", fmt];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        a.extend([base.to_str().unwrap(), src.to_str().unwrap()]);
        crate::util::run("qemu-img", &a);
        let good = std::fs::read(&src).unwrap();
        for case in 0..cases {
            let mut bytes = good.clone();
            let span = bytes.len().min(64 << 10) as u64;
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(span) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            let m = dir.path().join(format!("m-{fmt}-{case}"));
            std::fs::write(&m, &bytes).unwrap();
            let out = dir.path().join(format!("m-{fmt}-{case}.out.qcow2"));
            let o = Command::new("timeout")
                .args(["-s", "KILL", "120", crate::util::bin()])
                .args(["convert", "--force", "--to", "kvm", "-o"])
                .arg(&out)
                .arg(&m)
                .output()
                .unwrap();
            let code = o.status.code();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                code.is_some() && code != Some(101) && code != Some(137),
                "{fmt} case {case}: {code:?} {err}"
            );
            assert!(!err.contains("panicked"), "{fmt} case {case}: {err}");
            if code == Some(0) {
                let c = Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(&out).output().unwrap();
                assert!(
                    c.status.success(),
                    "{fmt} case {case}: qemu-img check: {}",
                    String::from_utf8_lossy(&c.stdout)
                );
            } else {
                assert!(!out.exists(), "{fmt} case {case}: a failed convert left {}", out.display());
                assert_eq!(err.trim().lines().count(), 1, "{fmt} case {case}: one line: {err}");
            }
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&m);
        }
    }
    let _ = vmrepo(&["--version"]);
}

/// A guest built with mke2fs -d whose kernel has only the IDE driver, and
/// whose fstab mounts a Xen device: each VM software's warnings name the bus
/// to choose and the device it gives.
#[test]
fn disk_bus_warnings_name_the_bus_to_choose() {
    if !have("mke2fs", "e2fsprogs") {
        return;
    }
    let r = Repo::new();
    let root = r.scratch().join("root");
    let v = "2.6.32-431.el6.x86_64";
    for (path, text) in [
        (format!("boot/vmlinuz-{v}"), "kernel"),
        (
            "boot/grub/grub.conf".to_string(),
            "title SL6\n root (hd0,0)\n kernel /vmlinuz-2.6.32-431.el6.x86_64\n",
        ),
        (format!("lib/modules/{v}/kernel/drivers/ata/ata_piix.ko"), "module"),
        (format!("lib/modules/{v}/modules.dep"), ""),
        ("etc/fstab".to_string(), "/dev/xvda1 / ext4 defaults 1 1\n"),
        ("etc/redhat-release".to_string(), "Scientific Linux release 6.5 (Carbon)\n"),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let img = r.scratch().join("ide-only.raw");
    crate::util::run(
        "mke2fs",
        &["-q", "-t", "ext4", "-d", root.to_str().unwrap(), img.to_str().unwrap(), "64M"],
    );
    let inspected = r.json(&["inspect", img.to_str().unwrap()]);
    assert_eq!(
        inspected["boot"]["disk_drivers"][0]["drivers"],
        serde_json::json!(["ata_piix"]),
        "{}",
        inspected["boot"]
    );
    let warnings = |vm: &str| -> String {
        let out = r.scratch().join(format!("o-{vm}"));
        let v = r.json(&["convert", img.to_str().unwrap(), "--to", vm, "-o", out.to_str().unwrap()]);
        assert_eq!(v["verdict"]["boots"], "with_warnings", "{vm}: {v}");
        v["verdict"]["warnings"].to_string()
    };
    let kvm = warnings("kvm");
    assert!(kvm.contains("no virtio_blk driver") && kvm.contains("attach the disk as IDE"), "{kvm}");
    assert!(kvm.contains("/dev/xvda1") && kvm.contains("/dev/vda"), "{kvm}");
    let vbox = warnings("virtualBox");
    assert!(vbox.contains("no ahci driver") && vbox.contains("IDE (PIIX4)"), "{vbox}");
    let ec2 = warnings("ec2");
    assert!(ec2.contains("no driver for any disk bus ec2 offers"), "{ec2}");
    // VMware's VMDK declares IDE: no bus warning, only the fstab's.
    let vmware = warnings("vmware");
    assert!(!vmware.contains("driver") && vmware.contains("/dev/sda"), "{vmware}");
}
