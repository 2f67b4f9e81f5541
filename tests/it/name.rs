//! `vmrepo name`.

use std::path::Path;

use crate::util::{Repo, have, pattern_file, qemu_info, run_in};

#[test]
fn check_says_which_field_and_what_was_expected() {
    let r = Repo::new();
    assert!(r.ok(&["name", "check", "sl4_x86_32_sl08e_8GB_ec2.img"]).contains("ok"));
    let cases = [
        ("sl4_x86_33_sl08e_8GB.img", "word size \"33\": expected one of 8, 16, 32, 64, 128, 512"),
        ("sl4_x86_32_SL08e_8GB.img", "names use lower case: sl08e"),
        ("centos5_x86_32_sl08e_8GB.img", "centOS5"),
        ("sl4_x86_32_sl08e_8G.img", "8GB"),
        ("sl4_x86_32_sl08e.img", "expected <OS>_<ISA>_<word size>_<STAR lib>_<max size>[_<detail>].<ext>"),
        ("../sl4_x86_32_sl08e_8GB.img", "path separator"),
        ("sl4_x86_32_sl08e_8GB_a\u{1}b.img", "control character"),
    ];
    for (name, expect) in cases {
        let out = r.run(&["name", "check", name]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expect), "{name}: {text}");
    }
}

#[test]
fn check_json_lists_every_bad_field() {
    let r = Repo::new();
    let out =
        r.run(&["--json", "name", "check", "sl4_x87_33_sl08e_8GB.img", "sl5.3_x86_64_sl08e_1536GB.qcow2"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields: Vec<&str> =
        v[0]["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["arch", "bits"]);
    assert_eq!(v[1]["valid"], true);
    assert_eq!(v[1]["fields"]["maxsize_bytes"], 3u64 << 39);
    assert_eq!(v[1]["fields"]["osinfo"], "scientificlinux5.3");
}

#[test]
fn format_prints_the_name_in_the_convention_spelling() {
    let r = Repo::new();
    let out = r.ok(&[
        "name",
        "format",
        "--os",
        "SL5.3",
        "--arch",
        "amd64",
        "--lib",
        "SL08e",
        "--max-size",
        "8G",
        "--detail",
        "ec2",
        "--ext",
        "QCOW2",
    ]);
    assert_eq!(out.trim(), "sl5.3_x86_64_sl08e_8GB_ec2.qcow2");
    let out = r.ok(&[
        "name",
        "format",
        "--os",
        "centos5",
        "--arch",
        "x86",
        "--bits",
        "32",
        "--lib",
        "sl09A",
        "--max-size",
        "1536MiB",
        "--folder",
    ]);
    assert_eq!(out.trim(), "centOS5_x86_32_sl09a_1536MB");
    let err = r.fails(
        6,
        &[
            "name",
            "format",
            "--os",
            "sl5.3",
            "--arch",
            "i686",
            "--bits",
            "64",
            "--lib",
            "sl08e",
            "--max-size",
            "8GB",
        ],
    );
    assert!(err.contains("contradicts"), "{err}");
    let err = r.fails(
        6,
        &[
            "name",
            "format",
            "--os",
            "windows7",
            "--arch",
            "x86",
            "--bits",
            "64",
            "--lib",
            "sl08e",
            "--max-size",
            "8GB",
        ],
    );
    assert!(err.contains("unknown operating system"), "{err}");
}

/// `add FILE --vm VM` as an sl5.3 x86 64-bit sl08e image, without --force:
/// the name must agree with the content.
fn add_args<'a>(file: &'a Path, vm: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "add",
        file.to_str().unwrap(),
        "--vm",
        vm,
        "--os",
        "sl5.3",
        "--arch",
        "x86",
        "--bits",
        "64",
        "--lib",
        "sl08e",
    ];
    a.extend_from_slice(extra);
    a
}

/// Issue 7, item 15: a 10,000,000,000-byte disk is 10GB (the decimal
/// reading), named so without --max-size and accepted with --max-size 10GB.
#[test]
fn a_decimal_size_is_named_in_its_unit() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let r = Repo::new();
    let s = r.scratch();
    run_in(&s, "qemu-img", &["create", "-q", "-f", "qcow2", "x.qcow2", "10000000000"]);
    let img = s.join("x.qcow2");
    assert_eq!(qemu_info(&img, "qcow2")["virtual-size"], 10_000_000_000u64);
    let v: serde_json::Value =
        serde_json::from_str(&r.ok(&[&["--json"][..], &add_args(&img, "kvm", &[])].concat())).unwrap();
    assert_eq!(v["image"]["path"], "vm/kvm/sl5.3_x86_64_sl08e_10GB.qcow2");
    let v: serde_json::Value = serde_json::from_str(&r.ok(
        &[&["--json"][..], &add_args(&img, "kvm", &["--max-size", "10GB", "--detail", "asked"])].concat(),
    ))
    .unwrap();
    assert_eq!(v["image"]["path"], "vm/kvm/sl5.3_x86_64_sl08e_10GB_asked.qcow2");
    // The description gives the bytes of the reading the disk is in.
    let txt = std::fs::read_to_string(r.vm_dir("kvm").join("sl5.3_x86_64_sl08e_10GB.txt")).unwrap();
    assert!(txt.contains("Maximum size: 10GB (10000000000 bytes)\n"), "{txt}");
    // A binary 10GB is the other reading of the same name; a byte more is neither.
    run_in(&s, "qemu-img", &["create", "-q", "-f", "qcow2", "g.qcow2", "10G"]);
    r.ok(&add_args(&s.join("g.qcow2"), "kvm", &["--max-size", "10GB", "--detail", "gib"]));
    run_in(&s, "qemu-img", &["create", "-q", "-f", "qcow2", "odd.qcow2", "10000000512"]);
    let err = r.fails(11, &add_args(&s.join("odd.qcow2"), "kvm", &["--max-size", "10GB"]));
    assert!(err.contains("the name says 10GB but the virtual size is"), "{err}");
    // The catalog compares the binary reading: maxsize=10GB finds both.
    let v = r.json(&["find", "maxsize=10GB"]);
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    let v = r.json(&["find", "virtual_size=10000000000"]);
    assert_eq!(v.as_array().unwrap().len(), 2, "a plain number is bytes, exactly: {v}");
    assert_eq!(r.run(&["lint"]).status.code(), Some(0));
}

/// Issue 7, items 11 and 15: names take whole numbers; 1.5T from a person is 1536GB.
#[test]
fn a_maximum_size_is_a_whole_number_of_its_unit() {
    let r = Repo::new();
    let out = r.run(&["name", "check", "sl5.3_x86_64_sl08e_1.5TB.qcow2", "sl5.3_x86_64_sl08e_0.5GB.qcow2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a whole number of its unit: 1536GB"), "{text}");
    assert!(text.contains("a whole number of its unit: 512MB"), "{text}");
    let out = r.ok(&[
        "name",
        "format",
        "--os",
        "sl5.3",
        "--arch",
        "x86",
        "--bits",
        "64",
        "--lib",
        "sl08e",
        "--max-size",
        "1.5T",
    ]);
    assert_eq!(out.trim(), "sl5.3_x86_64_sl08e_1536GB.img");
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let s = r.scratch();
    run_in(&s, "qemu-img", &["create", "-q", "-f", "qcow2", "big.qcow2", "1536G"]);
    let v: serde_json::Value = serde_json::from_str(
        &r.ok(&[&["--json"][..], &add_args(&s.join("big.qcow2"), "kvm", &["--max-size", "1.5T"])].concat()),
    )
    .unwrap();
    assert_eq!(v["image"]["path"], "vm/kvm/sl5.3_x86_64_sl08e_1536GB.qcow2");
    // An image already named with a fraction is not cataloged, and lint says why.
    let kvm = r.vm_dir("kvm");
    std::fs::rename(kvm.join("sl5.3_x86_64_sl08e_1536GB.qcow2"), kvm.join("sl5.3_x86_64_sl08e_1.5TB.qcow2"))
        .unwrap();
    let out = r.run(&["lint"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vm/kvm/sl5.3_x86_64_sl08e_1.5TB.qcow2: error:"), "{text}");
    assert!(text.contains("1536GB"), "{text}");
}

/// `qemu-img create -f vpc` rounds a size up to a CHS geometry: the image is
/// named by the size asked for, and that name is accepted; a size that no
/// rounding explains is not.
#[test]
fn a_vhd_from_qemu_img_is_named_by_the_size_asked_for() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let r = Repo::new();
    let s = r.scratch();
    for (i, (asked, name)) in [
        ("10G", "10GB"),
        ("10000000000", "10GB"),
        ("500M", "500MB"),
        ("127G", "127GB"),
        ("200G", "200GB"),
        ("1000000000000", "1TB"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = format!("v{i}.vhd");
        run_in(&s, "qemu-img", &["create", "-q", "-f", "vpc", &file, asked]);
        let made = qemu_info(&s.join(&file), "vpc")["virtual-size"].as_u64().unwrap();
        let detail = format!("v{i}");
        let v: serde_json::Value = serde_json::from_str(
            &r.ok(&[&["--json"][..], &add_args(&s.join(&file), "xen", &["--detail", &detail])].concat()),
        )
        .unwrap();
        assert_eq!(
            v["image"]["path"],
            format!("vm/xen/sl5.3_x86_64_sl08e_{name}_{detail}.vhd"),
            "asked {asked}, made {made}"
        );
        r.ok(&add_args(&s.join(&file), "xen", &["--max-size", asked, "--detail", &format!("{detail}m")]));
    }
    // Exactly the size asked for, as Hyper-V makes it, is a name too.
    run_in(&s, "qemu-img", &["create", "-q", "-f", "vpc", "-o", "force_size=on", "exact.vhd", "10G"]);
    assert_eq!(qemu_info(&s.join("exact.vhd"), "vpc")["virtual-size"], 10u64 << 30);
    r.ok(&add_args(&s.join("exact.vhd"), "xen", &["--max-size", "10GB", "--detail", "exact"]));
    // A MiB short of 10 GiB is not 10GB, whatever the geometry.
    run_in(&s, "qemu-img", &["create", "-q", "-f", "vpc", "-o", "force_size=on", "short.vhd", "10239M"]);
    let err = r.fails(11, &add_args(&s.join("short.vhd"), "xen", &["--max-size", "10GB"]));
    assert!(err.contains("maximum size") || err.contains("the name says 10GB"), "{err}");
    assert_eq!(r.run(&["lint"]).status.code(), Some(0));
}

/// Issue 7, item 20: an empty file is said to be empty.
#[test]
fn an_empty_image_is_said_to_be_empty() {
    let r = Repo::new();
    let f = r.scratch().join("empty.img");
    std::fs::write(&f, b"").unwrap();
    let err = r.fails(11, &add_args(&f, "kvm", &[]));
    assert!(err.contains("the image is empty"), "{err}");
    assert!(!err.contains("between 1 byte"), "{err}");
}

/// Issue 7, item 14: any VM name of the convention's characters.
#[test]
fn other_vm_software_is_a_folder_of_its_own() {
    let r = Repo::new();
    // init makes the four folders the specification names, and only those.
    let mut made: Vec<String> = std::fs::read_dir(r.root.join("vm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    made.sort();
    assert_eq!(made, ["kvm", "virtualBox", "vmware", "xen"]);
    let f = r.scratch().join("a.img");
    pattern_file(&f, 1 << 20, 1);
    let v: serde_json::Value =
        serde_json::from_str(&r.ok(&[&["--json"][..], &add_args(&f, "EC2", &[])].concat())).unwrap();
    assert_eq!(v["image"]["path"], "vm/ec2/sl5.3_x86_64_sl08e_1MB.img");
    r.ok(&add_args(&f, "openstack", &[]));
    // An image laid out by hand in vm/gce/ is cataloged.
    let gce = r.root.join("vm/gce");
    std::fs::create_dir(&gce).unwrap();
    std::fs::copy(&f, gce.join("sl5.3_x86_64_sl08e_1MB.img")).unwrap();
    crate::util::sh(&gce, "md5sum sl5.3_x86_64_sl08e_1MB.img > sl5.3_x86_64_sl08e_1MB.checksum");
    std::fs::write(gce.join("sl5.3_x86_64_sl08e_1MB.txt"), "Image: sl5.3_x86_64_sl08e_1MB.img\n").unwrap();
    let mut listed = r.listed();
    listed.sort();
    assert_eq!(
        listed,
        [
            "ec2/sl5.3_x86_64_sl08e_1MB.img",
            "gce/sl5.3_x86_64_sl08e_1MB.img",
            "openstack/sl5.3_x86_64_sl08e_1MB.img"
        ]
    );
    assert_eq!(r.json(&["find", "vm=EC2"]).as_array().unwrap().len(), 1);
    r.ok(&["show", "ec2/sl5.3_x86_64_sl08e_1MB.img"]);
    // vm/EC2/ is another spelling of ec2, as vm/KVM/ is of kvm; a folder
    // whose name is not a VM name stays a stray.
    std::fs::create_dir(r.root.join("vm/EC2")).unwrap();
    std::fs::create_dir(r.root.join("vm/my images")).unwrap();
    std::fs::create_dir(r.root.join("vm").join("x".repeat(33))).unwrap();
    let out = r.run(&["--json", "lint"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["code"].as_str().unwrap().to_string()))
        .collect();
    for expected in [
        ("vm/EC2".to_string(), "duplicate-vm-folder"),
        ("vm/my images".to_string(), "not-a-vm-folder"),
        (format!("vm/{}", "x".repeat(33)), "not-a-vm-folder"),
    ] {
        assert!(got.contains(&(expected.0.clone(), expected.1.to_string())), "{expected:?} not in {got:?}");
    }
    assert!(!got.iter().any(|(p, _)| p.starts_with("vm/ec2") || p.starts_with("vm/gce")), "{got:?}");
    assert_eq!(r.listed().len(), 3);
    // Still refused: what is not a VM name.
    let err = r.fails(6, &add_args(&f, "my vms", &[]));
    assert!(err.contains("VM software \"my vms\""), "{err}");
}

/// Issue 7, item 15: pro, new and dev are links to a version, not versions.
#[test]
fn a_star_link_is_refused_with_the_version_to_name() {
    let r = Repo::new();
    let f = r.scratch().join("a.img");
    pattern_file(&f, 1 << 20, 1);
    for link in ["pro", "NEW", "dev"] {
        let mut a = add_args(&f, "kvm", &[]);
        let at = a.iter().position(|x| *x == "sl08e").unwrap();
        a[at] = link;
        let err = r.fails(6, &a);
        assert!(
            err.contains("is a link to a STAR library, not a version: name the version it points to"),
            "{err}"
        );
    }
    let out = r.run(&["name", "check", "sl5.3_x86_64_pro_8GB.img"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("name the version it points to"));
    // In a guest whose pro links to SL08e (as scripts/build-test-guests.py
    // makes sl5.3's), the error names it.
    let Some(g) = crate::inspect::guests() else { return };
    let guest = g["guests"].as_array().unwrap().iter().find(|x| x["name"] == "sl5.3").unwrap();
    let raw = guest["images"]["raw"].as_str().unwrap();
    let err = r.fails(6, &["add", raw, "--vm", "kvm", "--lib", "pro"]);
    assert!(err.contains("in this image pro points to SL08e: --lib SL08e"), "{err}");
}

/// Issue 7, item 15: `name check` and `lint` read `sl53` alike, through the
/// same parser: Scientific Linux has no release 53; sl5.3 is meant.
#[test]
fn check_and_lint_agree_on_sl53() {
    let r = Repo::new();
    let out = r.run(&["name", "check", "sl53_x86_64_sl08e_1MB.img"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Scientific Linux has no release 53: write sl5.3"), "{text}");
    let kvm = r.vm_dir("kvm");
    pattern_file(&kvm.join("sl53_x86_64_sl08e_1MB.img"), 1 << 20, 1);
    let out = r.run(&["lint"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vm/kvm/sl53_x86_64_sl08e_1MB.img: error: operating system \"sl53\": Scientific Linux has no release 53: write sl5.3"),
        "{text}"
    );
    // And a person typing it is told the same.
    let f = r.scratch().join("a.img");
    pattern_file(&f, 1 << 20, 1);
    let mut a = add_args(&f, "kvm", &[]);
    a[5] = "sl53";
    let err = r.fails(6, &a);
    assert!(err.contains("write sl5.3"), "{err}");
}
