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
        format!("File size: {} bytes", 3 * 1024 * 1024 + 17),
        format!(
            "Bytes on disk: {} bytes",
            std::fs::metadata(kvm.join(format!("{NAME}.img"))).unwrap().blocks() * 512
        ),
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
    let a = r.scratch().join("a.raw");
    let b = r.scratch().join("b.img");
    pattern_file(&a, 50_000, 1);
    pattern_file(&b, 60_000, 2);
    r.add(&a, "xen", &["--max-size", "2GB", "--ext", "raw"]);
    let stem = "sl5.3_x86_64_sl08e_2GB";
    // Same name, even with another extension: refused, exit 5, nothing changed.
    let before = std::fs::read(r.vm_dir("xen").join(format!("{stem}.raw"))).unwrap();
    let err = r.fails(
        5,
        &[
            "add",
            "--force",
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
    assert_eq!(std::fs::read(r.vm_dir("xen").join(format!("{stem}.raw"))).unwrap(), before);

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
        "old .raw gone"
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
                "add", s, "--vm", "hyper v", "--os", "sl5.3", "--arch", "x86", "--bits", "64", "--lib",
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

/// The flags every content test passes: the fields the content cannot give.
const FIELDS: [&str; 10] =
    ["--vm", "kvm", "--os", "sl5.3", "--arch", "x86", "--bits", "64", "--lib", "sl08e"];

#[test]
fn the_content_decides_format_extension_and_maximum_size() {
    if !have("qemu-img", "qemu-utils") || !have("md5sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    let raw = r.scratch().join("guest.raw");
    crate::util::guest_disk(&raw, 40 << 20);
    // A qcow2 file called .img: content, not name, decides.
    let img = r.scratch().join("disk.img");
    crate::util::run("qemu-img", &["convert", "-O", "qcow2", raw.to_str().unwrap(), img.to_str().unwrap()]);
    let mut args = vec!["--json", "add", img.to_str().unwrap()];
    args.extend(FIELDS);
    let out: serde_json::Value = serde_json::from_str(&r.ok(&args)).unwrap();
    assert_eq!(out["image"]["file"], "sl5.3_x86_64_sl08e_40MB.qcow2");
    assert_eq!(out["image"]["format"], "qcow2");
    assert_eq!(out["image"]["virtual_size"], 40u64 << 20);
    assert_eq!(out["image"]["storage"], "dynamic");
    let txt = std::fs::read_to_string(r.vm_dir("kvm").join("sl5.3_x86_64_sl08e_40MB.txt")).unwrap();
    for line in [
        "Format: qcow2\n",
        "Subformat: v3\n",
        "Storage: dynamically expanding\n",
        "Virtual size: 41943040 bytes (40 MiB)\n",
        "Allocated: ",
    ] {
        assert!(txt.contains(line), "{line:?} not in\n{txt}");
    }
    sh(&r.vm_dir("kvm"), "md5sum -c sl5.3_x86_64_sl08e_40MB.checksum");
    assert_eq!(r.run(&["lint"]).status.code(), Some(0), "a stored image agrees with its name");

    // A name that disagrees with the content is refused, exit 11, unless forced.
    let cases: [(&[&str], &str); 3] = [
        (&["--ext", "vmdk", "--detail", "w"], "the file is qcow2 (v3) (.qcow2)"),
        (&["--max-size", "8GB", "--detail", "x"], "the name says 8GB but the virtual size is 40 MiB"),
        (&["--max-size", "20MB", "--detail", "y"], "the name says 20MB but the virtual size is 40 MiB"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["add", img.to_str().unwrap()];
        args.extend(FIELDS);
        args.extend_from_slice(extra);
        let err = r.fails(11, &args);
        assert!(err.contains(expect) && err.contains("--force"), "{extra:?}: {err}");
        args.push("--force");
        r.ok(&args);
    }

    // An image that reads through a backing file is not stored alone unless forced.
    let top = r.scratch().join("top.qcow2");
    crate::util::run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", "disk.img", "-F", "qcow2", top.to_str().unwrap()],
    );
    let mut args = vec!["add", top.to_str().unwrap(), "--detail", "overlay"];
    args.extend(FIELDS);
    let err = r.fails(11, &args);
    assert!(err.contains("backing file \"disk.img\""), "{err}");

    // A broken image is refused as it is.
    let broken = r.scratch().join("broken.qcow2");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[20..24].copy_from_slice(&40u32.to_be_bytes()); // cluster_bits 40
    std::fs::write(&broken, bytes).unwrap();
    let mut args = vec!["add", broken.to_str().unwrap(), "--max-size", "40MB", "--detail", "broken"];
    args.extend(FIELDS);
    let err = r.fails(11, &args);
    assert!(err.contains("cluster_bits 40"), "{err}");
}

#[test]
fn a_multi_file_vmdk_is_a_folder_read_through_its_descriptor() {
    if !have("qemu-img", "qemu-utils") || !have("md5sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    let raw = r.scratch().join("guest.raw");
    crate::util::guest_disk(&raw, 40 << 20);
    let dir = r.scratch().join("split");
    std::fs::create_dir(&dir).unwrap();
    crate::util::run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            raw.to_str().unwrap(),
            dir.join("disk.vmdk").to_str().unwrap(),
        ],
    );
    let mut args = vec!["--json", "add", dir.to_str().unwrap(), "--detail", "split"];
    // A VMDK goes to VMware (KVM does not run it as it is stored).
    args.extend(FIELDS.iter().map(|f| if *f == "kvm" { "vmware" } else { f }));
    let out: serde_json::Value = serde_json::from_str(&r.ok(&args)).unwrap();
    let stem = "sl5.3_x86_64_sl08e_40MB_split";
    assert_eq!(out["image"]["kind"], "folder");
    assert_eq!(out["image"]["format"], "vmdk");
    assert_eq!(out["image"]["virtual_size"], 40u64 << 20);
    sh(&r.vm_dir("vmware"), &format!("md5sum -c {stem}.checksum"));
    // info, cat and lint read it through its descriptor, inside its folder.
    let ours = r.scratch().join("ours.raw");
    r.ok(&["cat", &format!("vmware/{stem}"), "-o", ours.to_str().unwrap()]);
    assert!(crate::util::same_bytes(&ours, &raw));
    assert_eq!(r.run(&["lint"]).status.code(), Some(0));
}
