//! `vmrepo add`: names, sidecars checked by md5sum and sha256sum, refusals.

use std::os::unix::fs::MetadataExt;

use crate::util::{Repo, have, pattern_file, sh, sha256sum, tree};

const NAME: &str = "sl5.3_x86_64_sl08e_8GB_ec2";

#[test]
fn sidecars_pass_md5sum_and_sha256sum() {
    if !have("md5sum", "coreutils") || !have("sha256sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    let src = r.scratch().join("disk.img");
    pattern_file(&src, 3 * 1024 * 1024 + 17, 7);
    let out =
        r.add(&src, "KVM", &["--max-size", "8GB", "--detail", "ec2", "--notes", "Built for the EC2 tests."]);
    assert_eq!(out["image"]["path"], format!("vm/kvm/{NAME}.img"));
    let kvm = r.vm_dir("kvm");
    // The specification's recipe, as an administrator runs it.
    let check = sh(&kvm, &format!("md5sum -c {NAME}.checksum"));
    assert_eq!(check.trim(), format!("{NAME}.img: OK"));
    assert_eq!(
        std::fs::read_to_string(kvm.join(format!("{NAME}.checksum"))).unwrap(),
        sh(&kvm, &format!("md5sum {NAME}.img")),
        "the .checksum is exactly what md5sum prints"
    );
    let sha = sha256sum(&kvm.join(format!("{NAME}.img")));
    let txt = std::fs::read_to_string(kvm.join(format!("{NAME}.txt"))).unwrap();
    for expect in [
        format!("SHA-256: {sha}\n"),
        "VM: kvm\n".into(),
        "Operating system: sl5.3\n".into(),
        "Osinfo short-id: scientificlinux5.3\n".into(),
        "Instruction set: x86\n".into(),
        "Word size: 64\n".into(),
        "STAR library: sl08e\n".into(),
        "Maximum size: 8GB (8589934592 bytes)\n".into(),
        format!("Bytes on disk: {} bytes", 3 * 1024 * 1024 + 17),
        "Kernel version: unknown\n".into(),
        "Added by: ".into(),
        "Notes:\nBuilt for the EC2 tests.\n".into(),
    ] {
        assert!(txt.contains(&expect), "missing {expect:?} in\n{txt}");
    }
    // Same bytes as the source; stored read-only; the source is untouched.
    assert_eq!(std::fs::read(kvm.join(format!("{NAME}.img"))).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(std::fs::metadata(kvm.join(format!("{NAME}.img"))).unwrap().mode() & 0o222, 0);
    assert!(src.exists());
}

#[test]
fn never_over_an_existing_image_unless_replace() {
    let r = Repo::new();
    let a = r.scratch().join("a.qcow2");
    let b = r.scratch().join("b.img");
    pattern_file(&a, 50_000, 1);
    pattern_file(&b, 60_000, 2);
    r.add(&a, "xen", &["--max-size", "2GB"]);
    let stem = "sl5.3_x86_64_sl08e_2GB";
    // Same name, even with another extension: refused, exit 5, nothing changed.
    let before = std::fs::read(r.vm_dir("xen").join(format!("{stem}.qcow2"))).unwrap();
    let err = r.fails(
        5,
        &[
            "add",
            b.to_str().unwrap(),
            "--vm",
            "xen",
            "--os",
            "sl5.3",
            "--arch",
            "x86",
            "--bits",
            "64",
            "--lib",
            "sl08e",
            "--max-size",
            "2GB",
        ],
    );
    assert!(err.contains("already holds") && err.contains("--replace"), "{err}");
    assert_eq!(std::fs::read(r.vm_dir("xen").join(format!("{stem}.qcow2"))).unwrap(), before);

    // A person edits the description: an unknown line and notes.
    let txt = r.vm_dir("xen").join(format!("{stem}.txt"));
    let edited = std::fs::read_to_string(&txt)
        .unwrap()
        .replace("Notes:\n", "Contact: star-vm@example.org\nNotes:\nKeep this note.\n");
    std::fs::write(&txt, edited).unwrap();

    let out = r.add(&b, "xen", &["--max-size", "2GB", "--replace"]);
    assert_eq!(out["replaced"], true);
    let names: Vec<String> = tree(&r.vm_dir("xen"));
    assert_eq!(
        names,
        [format!("{stem}.checksum"), format!("{stem}.img"), format!("{stem}.txt")],
        "old .qcow2 gone"
    );
    let txt = std::fs::read_to_string(&txt).unwrap();
    assert!(txt.contains("Contact: star-vm@example.org\n"), "{txt}");
    assert!(txt.ends_with("Notes:\nKeep this note.\n"), "{txt}");
    assert!(txt.contains(&format!("Image: {stem}.img\n")), "{txt}");
}

#[test]
fn move_renames_on_the_same_filesystem() {
    let r = Repo::new();
    let src = r.tmp.path().join("big.img");
    pattern_file(&src, 200_000, 3);
    let ino = std::fs::metadata(&src).unwrap().ino();
    let out = r.add(&src, "vmware", &["--move", "--max-size", "1GB"]);
    assert_eq!(out["moved"], true);
    assert!(!src.exists());
    let stored = r.vm_dir("vmware").join("sl5.3_x86_64_sl08e_1GB.img");
    assert_eq!(std::fs::metadata(&stored).unwrap().ino(), ino, "renamed, not copied");
    r.ok(&["verify", "--md5"]);
}

#[test]
fn an_image_of_several_files_is_a_folder() {
    if !have("md5sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    let src = r.scratch().join("parts");
    std::fs::create_dir(&src).unwrap();
    pattern_file(&src.join("disk.vmdk"), 1000, 1);
    pattern_file(&src.join("disk-f001.vmdk"), 300_000, 2);
    pattern_file(&src.join("disk-f002.vmdk"), 200_000, 3);
    let out = r.add(&src, "vmware", &["--max-size", "4GB", "--detail", "split"]);
    let stem = "sl5.3_x86_64_sl08e_4GB_split";
    assert_eq!(out["image"]["kind"], "folder");
    assert_eq!(out["image"]["parts"], 3);
    let dir = r.vm_dir("vmware");
    let check = sh(&dir, &format!("md5sum -c {stem}.checksum"));
    assert_eq!(check.lines().count(), 3);
    assert!(check.lines().all(|l| l.ends_with(": OK")), "{check}");
    r.ok(&["verify", "--md5", stem]);
    // A part changed behind vmrepo's back is caught.
    let part = dir.join(stem).join("disk-f002.vmdk");
    std::fs::set_permissions(&part, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    pattern_file(&part, 200_000, 4);
    let out = r.run(&["--json", "verify", stem]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["problems"][0]["code"], "sha256-mismatch");
}

#[test]
fn bad_input_is_one_clear_line_and_a_documented_code() {
    let r = Repo::new();
    let src = r.scratch().join("x.img");
    pattern_file(&src, 1000, 1);
    let s = src.to_str().unwrap();
    let base = ["--vm", "kvm", "--os", "sl5.3", "--arch", "x86", "--bits", "64", "--lib", "sl08e"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["add", s];
        a.extend_from_slice(&base);
        a.extend_from_slice(extra);
        a
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (with(&["--detail", "a/b"]), 6, "detail \"a/b\": contains a path separator"),
        (with(&["--detail", "a..b"]), 6, "contains '..'"),
        (with(&["--detail", "a_b"]), 6, "'_' separates the fields"),
        (with(&["--max-size", "lots"]), 6, "maximum size"),
        (with(&["--ext", "txt"]), 6, "sidecar"),
        (
            vec![
                "add",
                "/nonexistent/disk.img",
                "--vm",
                "kvm",
                "--os",
                "sl5.3",
                "--arch",
                "x86",
                "--bits",
                "64",
                "--lib",
                "sl08e",
            ],
            4,
            "/nonexistent/disk.img",
        ),
        (
            vec![
                "add", s, "--vm", "hyperv", "--os", "sl5.3", "--arch", "x86", "--bits", "64", "--lib",
                "sl08e",
            ],
            6,
            "VM software",
        ),
        (
            vec!["add", s, "--vm", "kvm", "--arch", "x86", "--bits", "64", "--lib", "sl08e"],
            6,
            "--os is required",
        ),
    ];
    for (args, code, expect) in cases {
        let err = r.fails(code, &args);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("vmrepo: error: "), "{err}");
    }
    assert!(r.listed().is_empty());
    assert_eq!(tree(&r.vm_dir("kvm")), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn sparse_sources_stay_sparse_and_hash_like_md5sum() {
    if !have("md5sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    let src = r.scratch().join("sparse.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(256 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"boot", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 100 << 20).unwrap();
    drop(f);
    let out = r.add(&src, "kvm", &[]);
    assert_eq!(out["image"]["maxsize"], "256MB", "a raw image's maximum size is its length");
    let dir = r.vm_dir("kvm");
    sh(&dir, "md5sum -c sl5.3_x86_64_sl08e_256MB.checksum");
    let stored = std::fs::metadata(dir.join("sl5.3_x86_64_sl08e_256MB.img")).unwrap();
    assert!(stored.blocks() * 512 < 16 << 20, "copy allocated {} bytes", stored.blocks() * 512);
}
