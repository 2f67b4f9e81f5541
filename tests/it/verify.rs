//! `vmrepo verify`.

use std::os::unix::fs::{FileExt, PermissionsExt};

use crate::util::{Repo, pattern_file};

fn three_images(r: &Repo) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..3u64 {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 500_000 + i as usize, i);
        let out = r.add(&f, "kvm", &["--detail", &format!("n{i}")]);
        names.push(out["image"]["name"].as_str().unwrap().to_string());
    }
    names
}

fn verify_json(r: &Repo, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--json", "verify"];
    a.extend_from_slice(args);
    let out = r.run(&a);
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

fn problem_codes(v: &serde_json::Value) -> Vec<String> {
    let mut codes: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["problems"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap().to_string())
        })
        .collect();
    codes.sort();
    codes
}

fn corrupt(path: &std::path::Path, at: u64) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

#[test]
fn clean_repository_verifies() {
    let r = Repo::new();
    three_images(&r);
    let (code, v) = verify_json(&r, &["--md5"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], 3);
    assert_eq!(v["failed"], 0);
}

#[test]
fn every_problem_is_reported_and_the_exit_code_is_1() {
    let r = Repo::new();
    let names = three_images(&r);
    let kvm = r.vm_dir("kvm");
    // One flipped bit in image 0; image 1's .checksum removed; image 2's file deleted.
    corrupt(&kvm.join(format!("{}.img", names[0])), 123_456);
    std::fs::remove_file(kvm.join(format!("{}.checksum", names[1]))).unwrap();
    std::fs::remove_file(kvm.join(format!("{}.img", names[2]))).unwrap();
    let (code, v) = verify_json(&r, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(problem_codes(&v), ["missing-checksum", "missing-image", "sha256-mismatch"]);
    let text = r.run(&["verify"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains(&format!("vm/kvm/{}.img: SHA-256 is ", names[0])), "{out}");
}

#[test]
fn md5_flag_checks_the_checksum_file() {
    let r = Repo::new();
    let names = three_images(&r);
    let sum = r.vm_dir("kvm").join(format!("{}.checksum", names[1]));
    let text = std::fs::read_to_string(&sum).unwrap();
    let flipped = match text.strip_prefix('0') {
        Some(rest) => format!("1{rest}"),
        None => format!("0{}", &text[1..]),
    };
    std::fs::write(&sum, flipped).unwrap();
    let (code, _) = verify_json(&r, &[]);
    assert_eq!(code, 0, "SHA-256 alone does not read the .checksum");
    let (code, v) = verify_json(&r, &["--md5"]);
    assert_eq!(code, 1);
    assert_eq!(problem_codes(&v), ["md5-mismatch"]);
}

#[test]
fn a_malformed_checksum_is_reported() {
    let r = Repo::new();
    let names = three_images(&r);
    std::fs::write(r.vm_dir("kvm").join(format!("{}.checksum", names[0])), "MD5 (x) = 123\n").unwrap();
    let (code, v) = verify_json(&r, &["--md5", &names[0]]);
    assert_eq!(code, 1);
    assert_eq!(problem_codes(&v), ["checksum-format"]);
}

#[test]
fn quick_skips_only_unchanged_images() {
    let r = Repo::new();
    let names = three_images(&r);
    r.ok(&["verify"]);
    let (code, v) = verify_json(&r, &["--quick"]);
    assert_eq!(code, 0);
    assert_eq!(v["unchanged"], 3);
    assert_eq!(v["bytes"], 0);
    // Rewriting an image (same size) changes its mtime: --quick hashes it and catches it.
    corrupt(&r.vm_dir("kvm").join(format!("{}.img", names[2])), 10);
    let (code, v) = verify_json(&r, &["--quick"]);
    assert_eq!(code, 1);
    assert_eq!(v["unchanged"], 2);
    assert_eq!(problem_codes(&v), ["sha256-mismatch"]);
}

#[test]
fn unknown_name_is_exit_4() {
    let r = Repo::new();
    three_images(&r);
    let err = r.fails(4, &["verify", "sl4_x86_32_sl08e_8GB_nothere"]);
    assert!(err.contains("no image named"), "{err}");
}
