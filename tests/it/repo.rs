//! Making, adopting and finding a repository.

use std::process::Command;

use crate::util::{Repo, bin, have, pattern_file, sh, tree};

#[test]
fn init_makes_the_spec_layout() {
    let r = Repo::new();
    for vm in ["xen", "kvm", "virtualBox", "vmware"] {
        assert!(r.vm_dir(vm).is_dir(), "vm/{vm} missing");
    }
    assert!(r.root.join(".vmrepo/repository").is_file());
    // Idempotent.
    let out = r.ok(&["init", r.root.to_str().unwrap()]);
    assert!(out.contains("Already"), "{out}");
}

#[test]
fn init_adopts_an_existing_tree_without_changing_it() {
    if !have("md5sum", "coreutils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("OSG/APP");
    let xen = app.join("vm/xen");
    std::fs::create_dir_all(&xen).unwrap();
    // A tree as people made it by hand, following the specification's recipe.
    pattern_file(&xen.join("sl4_x86_32_sl08e_8GB_ec2.img"), 100_000, 1);
    sh(&xen, "md5sum sl4_x86_32_sl08e_8GB_ec2.img > sl4_x86_32_sl08e_8GB_ec2.checksum");
    std::fs::write(xen.join("sl4_x86_32_sl08e_8GB_ec2.txt"), "SL4 for EC2, by hand.\n").unwrap();
    pattern_file(&xen.join("old image.img"), 1000, 2);
    let before: Vec<(String, String)> = tree(&app)
        .into_iter()
        .filter(|p| app.join(p).is_file())
        .map(|p| {
            let sum = sh(&app, &format!("md5sum '{p}'"));
            (p, sum)
        })
        .collect();
    let dirs_before: Vec<String> = tree(&app).into_iter().filter(|p| app.join(p).is_dir()).collect();

    let out = Command::new(bin()).args(["--json", "init"]).arg(&app).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["adopted"], true);
    assert_eq!(v["images"], 1);
    assert_eq!(v["created"].as_array().unwrap().len(), 0, "no VM folder is added to an adopted tree");

    for (p, sum) in &before {
        assert_eq!(&sh(&app, &format!("md5sum '{p}'")), sum, "{p} changed");
    }
    let dirs_after: Vec<String> =
        tree(&app).into_iter().filter(|p| app.join(p).is_dir() && !p.starts_with(".vmrepo")).collect();
    assert_eq!(dirs_after, dirs_before);
    // The hand-made image is cataloged, with its MD5 from the .checksum.
    let r = Repo { tmp, root: app };
    let list = r.json(&["list"]);
    assert_eq!(list[0]["file"], "sl4_x86_32_sl08e_8GB_ec2.img");
    assert_eq!(list[0]["vm"], "xen");
    assert_eq!(list[0]["checksum"], "ok");
}

#[test]
fn the_repository_is_found_from_a_subfolder_like_git() {
    let r = Repo::new();
    let sub = r.vm_dir("kvm");
    let out = Command::new(bin())
        .args(["--json", "list"])
        .current_dir(&sub)
        .env_remove("VMREPO_REPO")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Outside any repository: exit 3, and the message says what to do.
    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("list")
        .current_dir(outside.path())
        .env_remove("VMREPO_REPO")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in a vmrepo repository") && err.contains("--repo"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn repo_flag_before_or_after_the_command_and_from_the_environment() {
    let r = Repo::new();
    let root = r.root.to_str().unwrap();
    let outside = tempfile::tempdir().unwrap();
    for args in [vec!["--repo", root, "list"], vec!["list", "--repo", root]] {
        let out = Command::new(bin())
            .args(&args)
            .current_dir(outside.path())
            .env_remove("VMREPO_REPO")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(bin())
        .arg("list")
        .current_dir(outside.path())
        .env("VMREPO_REPO", root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_folder_that_is_not_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).arg("--repo").arg(tmp.path()).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a vmrepo repository"));
}

#[test]
fn json_errors_on_stdout_with_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).arg("--repo").arg(tmp.path()).args(["--json", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not-a-repository");
    assert_eq!(v["error"]["exit_code"], 3);
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let r = Repo::new();
    let scratch = r.scratch();
    for i in 0..3 {
        let f = scratch.join(format!("{i}.img"));
        pattern_file(&f, 1000, i);
        r.add(&f, "kvm", &["--detail", &format!("n{i}")]);
    }
    let cmd = format!(
        "'{}' --repo '{}' list | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        bin(),
        r.root.display()
    );
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{}", String::from_utf8_lossy(&out.stderr));
}
