//! find, list, show, inventory, rm, reindex, and noticing changes made behind vmrepo's back.

use crate::util::{Repo, have, pattern_file, sh};

fn populate(r: &Repo) {
    let specs: [(&str, &[&str]); 5] = [
        ("kvm", &["--os", "sl5.3", "--lib", "sl08e", "--max-size", "8GB", "--detail", "ec2"]),
        ("kvm", &["--os", "sl5.3", "--lib", "sl10k", "--max-size", "2GB"]),
        ("xen", &["--os", "sl5.3", "--lib", "sl08e", "--max-size", "8GB", "--detail", "pv"]),
        ("virtualbox", &["--os", "ubuntu9.10", "--lib", "sl11d", "--max-size", "1.5TB"]),
        ("vmware", &["--os", "fedora12", "--lib", "sl08e", "--max-size", "500MB", "--arch", "i686"]),
    ];
    for (i, (vm, flags)) in specs.iter().enumerate() {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 10_000 * (i + 1), i as u64);
        let mut args = vec!["add", "--force", f.to_str().unwrap(), "--vm", vm];
        if !flags.contains(&"--arch") {
            args.extend(["--arch", "x86", "--bits", "64"]);
        }
        args.extend_from_slice(flags);
        r.ok(&args);
    }
}

fn found(r: &Repo, exprs: &[&str]) -> Vec<String> {
    let mut a = vec!["find"];
    a.extend_from_slice(exprs);
    let v = r.json(&a);
    v.as_array().unwrap().iter().map(|i| i["file"].as_str().unwrap().to_string()).collect()
}

#[test]
fn find_by_any_field() {
    let r = Repo::new();
    populate(&r);
    assert_eq!(found(&r, &["os=sl5.3"]).len(), 3);
    assert_eq!(found(&r, &["os=SL5.3", "vm=KVM"]).len(), 2);
    assert_eq!(
        found(&r, &["lib=SL08e", "maxsize>=4GB"]),
        ["sl5.3_x86_64_sl08e_8GB_ec2.img", "sl5.3_x86_64_sl08e_8GB_pv.img"]
    );
    // 1.5TB typed by a person is named 1536GB; a query reads it the same way.
    assert_eq!(found(&r, &["maxsize=1.5TB"]), ["ubuntu9.10_x86_64_sl11d_1536GB.img"]);
    assert_eq!(found(&r, &["bits=32"]), ["fedora12_x86_32_sl08e_500MB.img"]);
    assert_eq!(found(&r, &["name~*EC2*"]), ["sl5.3_x86_64_sl08e_8GB_ec2.img"]);
    assert_eq!(found(&r, &["ec2"]), ["sl5.3_x86_64_sl08e_8GB_ec2.img"]);
    assert_eq!(found(&r, &["size<25000"]).len(), 2);
    assert_eq!(found(&r, &["osinfo=ubuntu9.10"]).len(), 1);
    let today = sh(&r.root, "date -u +%Y-%m-%d");
    assert_eq!(found(&r, &[&format!("added={}", today.trim())]).len(), 5);
    assert_eq!(found(&r, &["added<2000-01-01"]).len(), 0);
    assert_eq!(found(&r, &["os!=sl5.3"]).len(), 2);
    let err = r.fails(6, &["find", "colour=blue"]);
    assert!(err.contains("unknown field \"colour\""), "{err}");
}

#[test]
fn list_json_fields_are_stable() {
    let r = Repo::new();
    populate(&r);
    let v = r.json(&["list"]);
    let first = &v[0];
    for key in [
        "vm",
        "name",
        "file",
        "path",
        "kind",
        "os",
        "osinfo",
        "arch",
        "bits",
        "lib",
        "maxsize",
        "maxsize_bytes",
        "detail",
        "ext",
        "size",
        "disk_usage",
        "parts",
        "format",
        "virtual_size",
        "storage",
        "kernel",
        "sha256",
        "md5",
        "checksum",
        "description",
        "added",
        "added_by",
        "verified_at",
        "verified_ok",
    ] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }
    assert_eq!(v.as_array().unwrap().len(), 5);
}

#[test]
fn show_and_inventory() {
    let r = Repo::new();
    populate(&r);
    let out = r.ok(&["show", "xen/sl5.3_x86_64_sl08e_8GB_pv"]);
    assert!(out.contains("vm/xen/sl5.3_x86_64_sl08e_8GB_pv.img"), "{out}");
    assert!(out.contains("scientificlinux5.3"), "{out}");
    let v = r.json(&["show", "sl5.3_x86_64_sl08e_8GB_pv.img"]);
    assert_eq!(v["image"]["vm"], "xen");
    assert_eq!(v["description"]["word_size"], 64);
    let inv = r.json(&["inventory"]);
    assert_eq!(inv["total"]["images"], 5);
    assert_eq!(inv["total"]["bytes"], 150_000);
    let max: u64 = (8u64 << 30) * 2 + (2 << 30) + (3 << 39) + (500 << 20);
    assert_eq!(inv["total"]["max_bytes"], max);
    let by_os: Vec<(String, u64)> = inv["by_os"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_string(), g["images"].as_u64().unwrap()))
        .collect();
    assert_eq!(by_os, [("fedora12".into(), 1), ("sl5.3".into(), 3), ("ubuntu9.10".into(), 1)]);
    // The same name in two VM folders needs the VM.
    let r2 = Repo::new();
    let f = r2.scratch().join("a.img");
    pattern_file(&f, 100, 1);
    r2.add(&f, "kvm", &["--max-size", "1GB"]);
    r2.add(&f, "xen", &["--max-size", "1GB"]);
    let err = r2.fails(6, &["show", "sl5.3_x86_64_sl08e_1GB"]);
    assert!(err.contains("vm/kvm/") && err.contains("vm/xen/"), "{err}");
}

#[test]
fn changes_behind_its_back_are_noticed_without_reindex() {
    if !have("md5sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    assert_eq!(r.listed().len(), 5);
    // Another host copies an image in by hand, with the spec's recipe.
    let kvm = r.vm_dir("kvm");
    pattern_file(&kvm.join("sl4_x86_32_sl08e_8GB_ec2.img"), 1234, 9);
    sh(&kvm, "md5sum sl4_x86_32_sl08e_8GB_ec2.img > sl4_x86_32_sl08e_8GB_ec2.checksum");
    assert!(r.listed().contains(&"kvm/sl4_x86_32_sl08e_8GB_ec2.img".to_string()));
    // Renamed and removed by hand.
    std::fs::rename(kvm.join("sl4_x86_32_sl08e_8GB_ec2.img"), kvm.join("sl4_x86_32_sl08e_8GB_v2.img"))
        .unwrap();
    std::fs::remove_file(r.vm_dir("xen").join("sl5.3_x86_64_sl08e_8GB_pv.img")).unwrap();
    let listed = r.listed();
    assert!(listed.contains(&"kvm/sl4_x86_32_sl08e_8GB_v2.img".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|l| l.contains("8GB_ec2.img") && l.starts_with("kvm/sl4")), "{listed:?}");
    assert!(!listed.contains(&"xen/sl5.3_x86_64_sl08e_8GB_pv.img".to_string()), "{listed:?}");
    // The renamed image lost its sidecars (they kept the old name): lint says so.
    let out = r.run(&["lint"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing-checksum") && text.contains("missing-image"), "{text}");
}

#[test]
fn rm_and_reindex() {
    let r = Repo::new();
    populate(&r);
    let out = r.json(&["rm", "kvm/sl5.3_x86_64_sl10k_2GB"]);
    assert_eq!(out["removed"].as_array().unwrap().len(), 3);
    assert!(!r.vm_dir("kvm").join("sl5.3_x86_64_sl10k_2GB.txt").exists());
    assert_eq!(r.listed().len(), 4);
    r.fails(4, &["rm", "kvm/sl5.3_x86_64_sl10k_2GB"]);
    // The index is a cache: delete it and rebuild, the catalog is the same.
    let before = r.listed();
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(r.root.join(".vmrepo").join(f));
    }
    r.ok(&["reindex"]);
    assert_eq!(r.listed(), before);
    // A damaged index is rebuilt rather than trusted.
    std::fs::write(r.root.join(".vmrepo/index.sqlite"), b"this is not a database").unwrap();
    let _ = std::fs::remove_file(r.root.join(".vmrepo/index.sqlite-wal"));
    assert_eq!(r.listed(), before);
}
