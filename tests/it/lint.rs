//! `vmrepo lint`.

use crate::util::{Repo, pattern_file};

#[test]
fn reports_what_breaks_the_convention() {
    let r = Repo::new();
    let f = r.scratch().join("a.img");
    pattern_file(&f, 1 << 20, 1);
    let g = r.scratch().join("b.img");
    pattern_file(&g, 2 << 20, 2);
    r.add(&f, "kvm", &[]);
    r.add(&g, "xen", &[]);
    let out = r.run(&["lint"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // A name that claims 8GB for a 1 MiB raw disk.
    r.add(&f, "kvm", &["--max-size", "8GB", "--detail", "big"]);
    let kvm = r.vm_dir("kvm");
    let xen = r.vm_dir("xen");
    std::fs::write(kvm.join("my image.img"), b"x").unwrap();
    std::fs::write(kvm.join("sl4_x86_32_sl08e_8GB.txt"), b"orphan\n").unwrap();
    std::fs::write(kvm.join("sl5.3_x86_64_sl08e_1MB.checksum"), b"not md5sum output\n").unwrap();
    let txt = xen.join("sl5.3_x86_64_sl08e_2MB.txt");
    let t = std::fs::read_to_string(&txt)
        .unwrap()
        .replace("Word size: 64", "Word size: 32")
        .replace("Operating system: sl5.3", "Operating system: ubuntu9.10");
    std::fs::write(&txt, t).unwrap();
    std::fs::create_dir(r.root.join("vm/hyper v")).unwrap();
    let out = r.run(&["--json", "lint"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["code"].as_str().unwrap().to_string()))
        .collect();
    for expected in [
        ("vm/hyper v", "not-a-vm-folder"),
        ("vm/kvm/my image.img", "bad-name"),
        ("vm/kvm/sl4_x86_32_sl08e_8GB", "missing-image"),
        ("vm/kvm/sl5.3_x86_64_sl08e_1MB.checksum", "checksum-format"),
        ("vm/kvm/sl5.3_x86_64_sl08e_8GB_big.img", "maxsize-mismatch"),
        ("vm/xen/sl5.3_x86_64_sl08e_2MB.txt", "description-disagrees"),
    ] {
        assert!(
            got.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {got:?}"
        );
    }
    let text = String::from_utf8(r.run(&["lint"]).stdout).unwrap();
    assert!(text.contains("word size: the description says 32, the name says 64"), "{text}");
    assert!(text.contains("the name says 8GB but the virtual size is 1 MiB (1048576 bytes)"), "{text}");
    assert!(
        text.contains("operating system: the description says ubuntu9.10, the name says sl5.3"),
        "{text}"
    );
}

#[test]
fn unreadable_descriptions_and_links_are_reported_not_followed() {
    let r = Repo::new();
    let f = r.scratch().join("a.img");
    pattern_file(&f, 1000, 1);
    r.add(&f, "kvm", &["--max-size", "8GB"]);
    let txt = r.vm_dir("kvm").join("sl5.3_x86_64_sl08e_8GB.txt");
    std::fs::set_permissions(&txt, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&txt, b"Image: x\0\xff\xfe binary").unwrap();
    // A VM folder that is a link to somewhere else, and an image that is a link.
    let elsewhere = r.scratch().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir(r.vm_dir("xen")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, r.vm_dir("xen")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", r.vm_dir("vmware").join("sl4_x86_32_sl08e_8GB.img")).unwrap();

    let out = r.run(&["--json", "lint"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    assert!(codes.contains(&("vm/kvm/sl5.3_x86_64_sl08e_8GB.txt", "description-unreadable")), "{codes:?}");
    assert!(codes.contains(&("vm/xen", "symlinked-folder")), "{codes:?}");
    assert!(codes.contains(&("vm/vmware/sl4_x86_32_sl08e_8GB.img", "symlink")), "{codes:?}");
    // Links are not cataloged; the unreadable description is a verify problem too.
    assert_eq!(r.listed(), ["kvm/sl5.3_x86_64_sl08e_8GB.img"]);
    let out = r.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["results"][0]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["code"] == "description-unreadable"), "{v}");
    assert!(problems.iter().any(|p| p["message"].as_str().unwrap().contains("not UTF-8")), "{v}");
}

/// `root-password-static`: root has a password that nothing sets for the
/// month; not said of the guests that set it at boot (nor their seeds said).
#[test]
fn a_static_root_password_is_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let Some(guests) = crate::site::monthly_guests(t.path()) else { return };
    let r = Repo::new();
    let mut paths = Vec::new();
    for (what, img) in &guests {
        let out = r.add(img, "kvm", &["--max-size", "8GB", "--detail", what]);
        paths.push((*what, out["image"]["path"].as_str().unwrap().to_string()));
    }
    let out = r.run(&["--json", "lint"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("seedOf"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (what, path) in paths {
        let codes: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["path"] == path.as_str())
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes.contains(&"root-password-static"), what == "static", "{what}: {codes:?}");
        assert!(!codes.contains(&"root-password-empty"), "{what}: {codes:?}");
    }
}
