//! Regression tests of issue 7: defects found by using vmrepo as a hostile
//! user and as a site administrator would. One test (or more) per item,
//! named after it; each failed before its fix.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Repo, bin, have, pattern_file, sh, sha256sum, tree};

const STEM: &str = "sl5.3_x86_64_sl08e_8GB_t";

fn add_args(src: &str) -> Vec<&str> {
    vec![
        "add",
        src,
        "--force",
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
        "--max-size",
        "8GB",
        "--detail",
        "t",
    ]
}

/// Adds a 1 MiB pattern file as `kvm/STEM.img`; returns its SHA-256.
fn stored(r: &Repo, seed: u64) -> String {
    let src = r.scratch().join(format!("seed{seed}.img"));
    pattern_file(&src, 1 << 20, seed);
    r.ok(&add_args(src.to_str().unwrap()));
    sha256sum(&src)
}

fn image(r: &Repo) -> std::path::PathBuf {
    r.vm_dir("kvm").join(format!("{STEM}.img"))
}

/// The repository holds exactly the image, whole, verified by md5sum.
fn intact(r: &Repo, sha: &str) {
    assert_eq!(sha256sum(&image(r)), sha);
    if have("md5sum", "coreutils") {
        sh(&r.vm_dir("kvm"), &format!("md5sum -c {STEM}.checksum"));
    }
    r.ok(&["verify", "--md5"]);
    let left: Vec<String> = tree(&r.vm_dir("kvm")).into_iter().filter(|f| f.starts_with('.')).collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(tree(&r.root.join(".vmrepo/journal")), Vec::<String>::new());
}

#[test]
fn item01_adding_an_image_onto_itself_is_refused() {
    let r = Repo::new();
    let sha = stored(&r, 1);
    let img = image(&r);
    for extra in [&["--replace", "--move"][..], &["--replace"], &["--move"], &[]] {
        let mut args = add_args(img.to_str().unwrap());
        args.extend_from_slice(extra);
        let err = r.fails(6, &args);
        assert!(err.contains("inside the repository") || err.contains("is the image stored as"), "{err}");
        // Nothing was touched, and no command warns about recovery afterwards.
        let out = r.run(&["list"]);
        assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
        intact(&r, &sha);
    }
    assert_eq!(r.listed(), [format!("kvm/{STEM}.img")]);
}

#[test]
fn item02_move_of_a_bare_relative_file() {
    let r = Repo::new();
    let dir = r.scratch();
    pattern_file(&dir.join("mv1.img"), 1 << 20, 2);
    let sha = sha256sum(&dir.join("mv1.img"));
    let mut args = add_args("mv1.img");
    args.push("--move");
    let out = r.command(&args).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("mv1.img").exists(), "the source was moved");
    intact(&r, &sha);
    assert_eq!(
        tree(&r.vm_dir("kvm")),
        [format!("{STEM}.checksum"), format!("{STEM}.img"), format!("{STEM}.txt")]
    );

    // A move that is refused at the last moment (the name is taken) leaves
    // the source as it was, mode included.
    pattern_file(&dir.join("mv2.img"), 1 << 20, 3);
    let before = std::fs::metadata(dir.join("mv2.img")).unwrap().permissions().mode();
    let mut args = add_args("mv2.img");
    args.push("--move");
    let out = r.command(&args).current_dir(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(dir.join("mv2.img")).unwrap().permissions().mode(), before);
    intact(&r, &sha);
}

#[test]
fn item03_killed_while_cleaning_up_is_finished_silently() {
    let r = Repo::new();
    stored(&r, 4);
    let src = r.scratch().join("new.img");
    pattern_file(&src, 1 << 20, 5);
    let sha = sha256sum(&src);
    let mut args = add_args(src.to_str().unwrap());
    args.push("--replace");
    // The staging folder (with the replaced image) is gone, the journal not yet.
    let out = r.command(&args).env("VMREPO_TEST_CRASH_AT", "after-staging-removed").output().unwrap();
    assert!(!out.status.success());
    assert!(
        r.root.join(".vmrepo/journal").read_dir().unwrap().next().is_some(),
        "the test hook did not fire"
    );
    for _ in 0..2 {
        let out = r.run(&["list"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    intact(&r, &sha);
}

#[test]
fn item04_recovery_on_a_copy_touches_only_the_copy() {
    let r = Repo::new();
    let src = r.scratch().join("new.img");
    pattern_file(&src, 1 << 20, 6);
    let sha = sha256sum(&src);
    // Leave an import whose journal says commit, as a host that died would.
    let out = r
        .command(&add_args(src.to_str().unwrap()))
        .env("VMREPO_TEST_CRASH_AT", "after-journal")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let copy = r.tmp.path().join("copy");
    sh(r.tmp.path(), &format!("cp -a '{}' '{}'", r.root.display(), copy.display()));
    let original_before = tree(&r.root);
    let out = Command::new(bin()).arg("--repo").arg(&copy).args(["--json", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The copy finished its own import ...
    assert_eq!(sha256sum(&copy.join(format!("vm/kvm/{STEM}.img"))), sha);
    assert_eq!(tree(&copy.join(".vmrepo/journal")), Vec::<String>::new());
    // ... and the original is exactly as it was, until a command runs there.
    assert_eq!(tree(&r.root), original_before);
    assert!(!image(&r).exists());
    r.ok(&["list"]);
    intact(&r, &sha);
}

#[test]
fn item05_an_index_path_holding_anything_else_is_refused_and_untouched() {
    let r = Repo::new();
    stored(&r, 7);
    let scratch = r.scratch();
    let text = scratch.join("passwd");
    std::fs::write(&text, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let fifo = scratch.join("fifo");
    sh(&scratch, "mkfifo fifo");
    let other = scratch.join("other.sqlite");
    if have("python3", "python3") {
        sh(
            &scratch,
            "python3 -c \"import sqlite3; c=sqlite3.connect('other.sqlite'); c.execute('create table t(x)'); c.commit()\"",
        );
    }
    for p in [&text, &fifo, &other, &std::path::PathBuf::from("/dev/null")] {
        if !p.exists() {
            continue;
        }
        let before = std::fs::symlink_metadata(p).unwrap();
        let bytes = if before.is_file() { std::fs::read(p).unwrap() } else { Vec::new() };
        for how in ["flag", "env"] {
            let mut cmd = r.command(&["list"]);
            if how == "flag" {
                cmd.arg("--index").arg(p);
            } else {
                cmd.env("VMREPO_INDEX", p);
            }
            let out = cmd.output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(10),
                "{} ({how}): {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("not a vmrepo index"), "{err}");
            let after = std::fs::symlink_metadata(p).unwrap();
            assert_eq!(
                (after.ino(), after.file_type()),
                (before.ino(), before.file_type()),
                "{}",
                p.display()
            );
            if after.is_file() {
                assert_eq!(std::fs::read(p).unwrap(), bytes, "{} was changed", p.display());
            }
        }
    }
    // An index file vmrepo made elsewhere is fine.
    let mine = scratch.join("mine.sqlite");
    r.ok(&["--index", mine.to_str().unwrap(), "list"]);
    assert_eq!(r.run(&["--index", mine.to_str().unwrap(), "list"]).status.code(), Some(0));
}

#[test]
fn item06_cat_never_writes_over_its_input_or_into_the_repository() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let r = Repo::new();
    let dir = r.scratch();
    crate::util::run_in(&dir, "qemu-img", &["create", "-q", "-f", "qcow2", "d.qcow2", "4M"]);
    crate::util::run_in(&dir, "qemu-io", &["-c", "write -P 0x5a 0 1M", "d.qcow2"]);
    let input = dir.join("d.qcow2");
    let sha = sha256sum(&input);
    let cat = |args: &[&str]| {
        r.command(&[&["cat", "d.qcow2"][..], args].concat()).current_dir(&dir).output().unwrap()
    };
    // Itself, by name, through a symbolic link and through a hard link.
    std::os::unix::fs::symlink("d.qcow2", dir.join("link")).unwrap();
    std::fs::hard_link(&input, dir.join("hard")).unwrap();
    for out in ["d.qcow2", "link", "hard", "./d.qcow2"] {
        let o = cat(&["-o", out, "--force"]);
        assert_eq!(o.status.code(), Some(6), "{out}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(sha256sum(&input), sha, "{out}: the input was changed");
    }
    // An existing file needs --force; a symbolic link is replaced, not followed.
    std::fs::write(dir.join("keep"), "precious").unwrap();
    std::os::unix::fs::symlink("keep", dir.join("to-keep")).unwrap();
    for out in ["keep", "to-keep"] {
        let o = cat(&["-o", out]);
        assert_eq!(o.status.code(), Some(5), "{out}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = cat(&["-o", "to-keep", "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(dir.join("to-keep")).unwrap().file_type().is_symlink());
    crate::util::run_in(&dir, "qemu-img", &["convert", "-O", "raw", "d.qcow2", "ref.raw"]);
    assert!(crate::util::same_bytes(&dir.join("to-keep"), &dir.join("ref.raw")));
    // Never into a repository's images, nor over a stored image.
    let sha_stored = stored(&r, 8);
    let o = cat(&["-o", image(&r).to_str().unwrap(), "--force"]);
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cat(&["-o", r.vm_dir("kvm").join("new.raw").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    intact(&r, &sha_stored);
    let o = r.run(&["cat", &format!("kvm/{STEM}"), "-o", image(&r).to_str().unwrap(), "--force"]);
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    intact(&r, &sha_stored);
    // A failure leaves no file: writes fail past a file size limit, as on a full disk.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f 100; exec '{}' cat d.qcow2 -o cut.raw", bin()))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(8), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("cut.raw").exists(), "a failed cat left its output");
    let leftovers: Vec<String> = tree(&dir).into_iter().filter(|f| f.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Holds the repository lock (flock from util-linux) until killed.
fn hold_lock(r: &Repo) -> std::process::Child {
    let child = Command::new("flock").arg(r.root.join(".vmrepo/lock")).args(["sleep", "60"]).spawn().unwrap();
    // flock has taken the lock once a non-blocking attempt fails.
    let start = Instant::now();
    while Command::new("flock")
        .args(["-n"])
        .arg(r.root.join(".vmrepo/lock"))
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "flock did not take the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn item10_a_signal_stops_the_wait_for_the_lock() {
    if !have("flock", "util-linux") {
        return;
    }
    let r = Repo::new();
    let sha = stored(&r, 9);
    let src = r.scratch().join("new.img");
    pattern_file(&src, 1 << 20, 10);
    let mut holder = hold_lock(&r);
    for sig in ["-TERM", "-INT"] {
        for args in [vec!["rm".to_string(), format!("kvm/{STEM}")], {
            let mut a: Vec<String> = add_args(src.to_str().unwrap()).iter().map(|s| s.to_string()).collect();
            a.push("--replace".into());
            a
        }] {
            let mut child = r
                .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .env("VMREPO_LOCK_WAIT", "100")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(400));
            let sent = Instant::now();
            Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
            let status = child.wait().unwrap();
            assert!(sent.elapsed() < Duration::from_secs(5), "{sig} {args:?}: waited {:?}", sent.elapsed());
            assert_eq!(status.code(), Some(130), "{sig} {args:?}");
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
    intact(&r, &sha);
    assert!(src.exists());
}

#[test]
fn item20_lock_wait_must_be_a_number() {
    let r = Repo::new();
    stored(&r, 11);
    let out = r.command(&["rm", &format!("kvm/{STEM}")]).env("VMREPO_LOCK_WAIT", "banana").output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VMREPO_LOCK_WAIT"));
    assert!(image(&r).exists());
}

#[test]
fn item21_quick_verify_sees_a_rewrite_whose_mtime_was_put_back() {
    let r = Repo::new();
    stored(&r, 12);
    r.ok(&["verify"]);
    let kvm = r.vm_dir("kvm");
    // Change one byte in place and put the modification time back, as
    // `touch -r` or a careful tool would.
    sh(
        &kvm,
        &format!(
            "cp -p {STEM}.img ref && chmod u+w {STEM}.img && printf 'X' | dd of={STEM}.img bs=1 seek=100 conv=notrunc status=none && touch -r ref {STEM}.img && rm ref"
        ),
    );
    let out = r.run(&["--json", "verify", "--quick"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 1, "{v}");
}

#[test]
fn item21_a_replaced_image_never_disappears() {
    let r = Repo::new();
    stored(&r, 13);
    let img = image(&r);
    let src = r.scratch().join("new.img");
    pattern_file(&src, 4 << 20, 14);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let missing = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let (stop, missing, img) = (stop.clone(), missing.clone(), img.clone());
        let txt = img.with_extension("txt");
        let sum = img.with_extension("checksum");
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in [&img, &txt, &sum] {
                    if std::fs::symlink_metadata(p).is_err() {
                        missing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        })
    };
    for _ in 0..5 {
        let mut args = add_args(src.to_str().unwrap());
        args.push("--replace");
        r.ok(&args);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        missing.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a reader found no image under the name"
    );
    intact(&r, &sha256sum(&src));
}

#[test]
fn item07_nothing_is_written_or_deleted_through_a_linked_folder() {
    let r = Repo::new();
    let src = r.scratch().join("a.img");
    pattern_file(&src, 1 << 20, 15);
    // vm/kvm is a link to a folder elsewhere.
    let elsewhere = r.scratch().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir(r.vm_dir("kvm")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, r.vm_dir("kvm")).unwrap();
    let err = r.fails(6, &add_args(src.to_str().unwrap()));
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(tree(&elsewhere), Vec::<String>::new(), "written through the link");
    let out = r.run(&["--json", "lint"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "vm/kvm" && f["code"] == "symlinked-folder" && f["severity"] == "error"),
        "{v}"
    );

    // vm/ itself is a link: the images behind it are neither listed nor removed.
    let r = Repo::new();
    let sha = stored(&r, 16);
    let real = r.root.join("vm-real");
    std::fs::rename(r.root.join("vm"), &real).unwrap();
    std::os::unix::fs::symlink("vm-real", r.root.join("vm")).unwrap();
    assert_eq!(r.listed(), Vec::<String>::new());
    r.fails(4, &["rm", &format!("kvm/{STEM}")]);
    let err = r.fails(6, &add_args(src.to_str().unwrap()));
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(sha256sum(&real.join(format!("kvm/{STEM}.img"))), sha);
    assert_eq!(tree(&real.join("kvm")).len(), 3, "{:?}", tree(&real.join("kvm")));
    let v = serde_json::from_slice::<serde_json::Value>(&r.run(&["--json", "lint"]).stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|f| f["path"] == "vm" && f["code"] == "symlinked-folder"),
        "{v}"
    );
}

#[test]
fn item08_reading_commands_work_on_a_full_disk_and_keep_the_history() {
    if !have("bash", "bash") || !crate::util::can_mount_tmpfs() {
        return;
    }
    let r = Repo::new();
    let mnt = r.tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let src = r.scratch().join("a.img");
    pattern_file(&src, 1 << 20, 17);
    let b = bin();
    let add = add_args(src.to_str().unwrap()).iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let add3 = add.replace("'--detail' 't'", "'--detail' 't3'");
    // In a private mount namespace: a 16 MiB filesystem, an image and its
    // verification, a second image's files copied in by hand (so that the
    // next command must write to the index), then the disk filled up.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=16m tmpfs '{m}' || exit 99
V='{b}'; R='{m}/repo'
"$V" init "$R" >/dev/null && "$V" --repo "$R" {add} >/dev/null && "$V" --repo "$R" verify >/dev/null || exit 98
cd "$R/vm/kvm" && cp {stem}.img x.tmp && mv x.tmp {stem}_2.img && cp {stem}.txt {stem}_2.txt && md5sum {stem}_2.img > {stem}_2.checksum
sed -i 's/^Image: .*/Image: {stem}_2.img/' {stem}_2.txt
cd /
dd if=/dev/zero of='{m}/fill' bs=64k 2>/dev/null; dd if=/dev/zero of='{m}/fill2' bs=512 2>/dev/null
for c in list "find os=sl5.3" "show kvm/{stem}" verify; do "$V" --repo "$R" --json $c > '{m}/../out' 2>'{m}/../err'; echo "$c=$?"; done
"$V" --repo "$R" --json show kvm/{stem} 2>/dev/null | grep -c '"verified_at": "2'
"$V" --repo "$R" {add3} >/dev/null 2>&1; echo "add=$?"
"$V" --repo "$R" reindex >/dev/null 2>&1; echo "reindex=$?"
rm '{m}/fill' '{m}/fill2'
"$V" --repo "$R" --json show kvm/{stem} 2>/dev/null | grep -c '"verified_at": "2'
"$V" --repo "$R" --json list | grep -c '"file"'
"#,
        m = mnt.display(),
        stem = format!("{STEM}"),
    );
    let out = Command::new("unshare").args(["-m", "bash", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "list=0",
            "find os=sl5.3=0",
            &format!("show kvm/{STEM}=0"),
            "verify=0",
            "1",
            "add=8",
            "reindex=8",
            "1",
            "2"
        ],
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn item19_adopted_trees_keep_their_layouts() {
    if !have("qemu-img", "qemu-utils") || !have("md5sum", "coreutils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("APP");
    let vmware = root.join("vm/vmware");
    std::fs::create_dir_all(&vmware).unwrap();
    // A split VMDK in a folder named by the convention, its .checksum made
    // inside the folder (md5sum run there), its .txt beside it.
    let stem = "sl5.3_x86_64_sl08e_4GB_split";
    let inner = vmware.join(stem);
    std::fs::create_dir(&inner).unwrap();
    crate::util::run_in(
        &inner,
        "qemu-img",
        &["create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "disk.vmdk", "4G"],
    );
    sh(&inner, &format!("md5sum * > {stem}.checksum"));
    std::fs::write(
        vmware.join(format!("{stem}.txt")),
        "Image: sl5.3_x86_64_sl08e_4GB_split\nNotes:\nfrom the old tree\n",
    )
    .unwrap();
    // A folder named like a file (x.vmdk/), its sidecars beside it named by the stem.
    let stem2 = "sl5.3_x86_64_sl08e_4GB_ext";
    let folder2 = vmware.join(format!("{stem2}.vmdk"));
    std::fs::create_dir(&folder2).unwrap();
    crate::util::run_in(
        &folder2,
        "qemu-img",
        &["create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "disk.vmdk", "4G"],
    );
    sh(&vmware, &format!("md5sum {stem2}.vmdk/* > {stem2}.checksum"));
    std::fs::write(vmware.join(format!("{stem2}.txt")), format!("Image: {stem2}.vmdk\n")).unwrap();

    let (code, _, err) = crate::util::vmrepo(&["init", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let run = |args: &[&str]| Command::new(bin()).arg("--repo").arg(&root).args(args).output().unwrap();
    let out = run(&["--json", "lint"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["code"].as_str().unwrap().to_string()))
        .collect();
    for bad in ["missing-checksum", "missing-description", "missing-image", "checksum-other-file", "bad-name"]
    {
        assert!(!codes.iter().any(|(_, c)| c == bad), "{bad}: {codes:?}");
    }
    let out = run(&["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = v.as_array().unwrap().iter().map(|i| i["file"].as_str().unwrap()).collect();
    assert_eq!(files, [format!("{stem2}.vmdk").as_str(), stem], "{v}");
    for i in v.as_array().unwrap() {
        assert_eq!(i["checksum"], "ok", "{i}");
        assert_eq!(i["kind"], "folder", "{i}");
    }
    let out = run(&["verify", "--md5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Tampering with a part is still caught through the inner .checksum.
    sh(
        &inner,
        "chmod u+w disk-s001.vmdk && printf 'X' | dd of=disk-s001.vmdk bs=1 seek=600000 conv=notrunc status=none",
    );
    let out = run(&["--json", "verify", "--md5"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn item19_mv_renames_with_sidecars_and_keeps_the_administrators_lines() {
    let r = Repo::new();
    let sha = stored(&r, 18);
    let kvm = r.vm_dir("kvm");
    let txt = kvm.join(format!("{STEM}.txt"));
    let mut text = std::fs::read_to_string(&txt).unwrap();
    let admin = "Root password: date '+%y%m SEED=someLongString' | md5sum | base64 | sed 's|\\(...........\\).*|\\1|'";
    text = text.replacen("Storage:", &format!("{admin}\nContact: jlauret\nStorage:"), 1);
    std::fs::write(&txt, &text).unwrap();
    const NEW: &str = "sl5.3_x86_64_sl08e_8GB_ec2";
    let out = r.json(&["mv", &format!("kvm/{STEM}"), NEW, "--force"]);
    assert_eq!(out["image"]["path"], format!("vm/kvm/{NEW}.img"), "{out}");
    assert_eq!(tree(&kvm), [format!("{NEW}.checksum"), format!("{NEW}.img"), format!("{NEW}.txt")]);
    if have("md5sum", "coreutils") {
        sh(&kvm, &format!("md5sum -c {NEW}.checksum"));
    }
    assert_eq!(sha256sum(&kvm.join(format!("{NEW}.img"))), sha);
    let new_text = std::fs::read_to_string(kvm.join(format!("{NEW}.txt"))).unwrap();
    assert!(new_text.contains(&format!("{admin}\nContact: jlauret\n")), "{new_text}");
    assert!(new_text.contains(&format!("Image: {NEW}.img\n")), "{new_text}");
    assert!(!new_text.contains(STEM), "{new_text}");
    r.ok(&["verify", "--md5"]);
    // To another VM folder.
    let out = r.json(&["mv", NEW, &format!("xen/{NEW}"), "--force"]);
    assert_eq!(out["image"]["path"], format!("vm/xen/{NEW}.img"));
    assert_eq!(tree(&kvm), Vec::<String>::new());
    assert!(
        std::fs::read_to_string(r.vm_dir("xen").join(format!("{NEW}.txt"))).unwrap().contains("VM: xen\n")
    );
    // Refusals: a taken name, the same name, no such image, a bad name.
    stored(&r, 19);
    r.fails(5, &["mv", &format!("kvm/{STEM}"), &format!("xen/{NEW}"), "--force"]);
    r.fails(6, &["mv", &format!("kvm/{STEM}"), STEM, "--force"]);
    r.fails(4, &["mv", "kvm/nothing_x86_64_sl08e_8GB", NEW]);
    r.fails(6, &["mv", &format!("kvm/{STEM}"), "sl5.3_x86_33_sl08e_8GB"]);
    // The name must agree with the content unless forced (1 MiB is not 8GB).
    r.fails(11, &["mv", &format!("kvm/{STEM}"), "sl5.3_x86_64_sl08e_8GB_other"]);
    r.ok(&["verify", "--md5"]);
}

#[test]
fn item20_errors_say_the_true_cause() {
    let r = Repo::new();
    stored(&r, 20);
    // A path outside the repository is not a VM name.
    let err = r.fails(4, &["show", "/etc/passwd"]);
    assert!(err.contains("not inside the repository"), "{err}");
    // An image whose file is gone: shown, and exit 4.
    std::fs::remove_file(image(&r)).unwrap();
    let out = r.run(&["show", &format!("kvm/{STEM}")]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(STEM));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    // An empty file is not "between 1 byte and 8EB".
    let empty = r.scratch().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let out = r.run(&add_args(empty.to_str().unwrap()));
    assert_eq!(out.status.code(), Some(11), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --ext is echoed as typed.
    let src = r.scratch().join("x.img");
    pattern_file(&src, 4096, 1);
    let mut args = add_args(src.to_str().unwrap());
    args.extend(["--ext", "../img"]);
    let err = r.fails(6, &args);
    assert!(err.contains("\"../img\""), "{err}");
    // Dates that do not exist.
    for q in ["added>=2026-13-45", "added=2026-02-30", "verified<2026-11-26T25:00"] {
        let err = r.fails(6, &["find", q]);
        assert!(err.contains("takes a date"), "{q}: {err}");
    }
}

/// Runs vmrepo as the unprivileged user `nobody` (setpriv, util-linux).
fn as_nobody(args: &[&str], home: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .output()
        .unwrap()
}

#[test]
fn item20_permission_denied_is_not_missing() {
    if !have("setpriv", "util-linux") || !vmrepo_testkit::root("a test runs vmrepo as nobody") {
        return;
    }
    let r = Repo::new();
    stored(&r, 21);
    // Let nobody reach the repository, but not read the image, nor write .vmrepo.
    sh(r.tmp.path(), "chmod 755 . repo");
    std::fs::set_permissions(image(&r), std::fs::Permissions::from_mode(0o400)).unwrap();
    let repo = r.root.to_str().unwrap();
    // No writable home and a read-only .vmrepo: the index is kept in memory.
    let out = as_nobody(&["--repo", repo, "--json", "list"], "/nonexistent");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let out = as_nobody(&["--repo", repo, "--json", "verify"], "/nonexistent");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["results"][0]["problems"].to_string();
    assert!(problems.contains("ermission denied"), "{problems}");
    assert!(!problems.contains("vanished") && !problems.contains("missing"), "{problems}");
    // A repository nobody may not enter is not "not a repository".
    sh(r.tmp.path(), "chmod 700 repo");
    let out = as_nobody(&["--repo", repo, "list"], "/nonexistent");
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission denied"));
}

#[test]
fn item13_the_vm_folder_and_the_format_agree() {
    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let r = Repo::new();
    let dir = r.scratch();
    crate::util::run_in(&dir, "qemu-img", &["create", "-q", "-f", "qcow2", "d.qcow2", "8G"]);
    crate::util::run_in(&dir, "qemu-img", &["create", "-q", "-f", "vmdk", "d.vmdk", "8G"]);
    let add = |file: &str, vm: &str, force: bool| {
        let p = dir.join(file);
        let detail = format!("{}{}", file.replace('.', ""), if force { "f" } else { "" });
        let mut a = vec![
            "add",
            p.to_str().unwrap(),
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
            "--detail",
            &detail,
        ];
        if force {
            a.push("--force");
        }
        r.run(&a)
    };
    for (file, vm) in [("d.qcow2", "vmware"), ("d.vmdk", "xen"), ("d.qcow2", "virtualBox")] {
        let out = add(file, vm, false);
        assert_eq!(out.status.code(), Some(11), "{file} in {vm}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not run"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (file, vm) in
        [("d.qcow2", "kvm"), ("d.vmdk", "vmware"), ("d.vmdk", "virtualBox"), ("d.qcow2", "openstack")]
    {
        let out = add(file, vm, false);
        assert!(out.status.success(), "{file} in {vm}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Forced in, then reported.
    assert!(add("d.qcow2", "vmware", true).status.success());
    let v: serde_json::Value = serde_json::from_slice(&r.run(&["--json", "lint"]).stdout).unwrap();
    let found: Vec<&serde_json::Value> =
        v.as_array().unwrap().iter().filter(|f| f["code"] == "vm-format-mismatch").collect();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["path"], "vm/vmware/sl5.3_x86_64_sl08e_8GB_dqcow2f.qcow2");
    assert_eq!(found[0]["severity"], "error");
}

#[test]
fn item04_a_journal_naming_paths_outside_the_repository_is_set_aside() {
    let r = Repo::new();
    let sha = stored(&r, 22);
    let outside = r.scratch().join("precious");
    std::fs::write(&outside, "keep me").unwrap();
    let journal = r.root.join(".vmrepo/journal");
    std::fs::create_dir_all(&journal).unwrap();
    let hostile = [
        serde_json::json!({"version": 2, "phase": "commit", "staging": "vm/kvm/.vmrepo-staging.a",
            "steps": [{"kind": "rename", "from": "vm/kvm/../../../scratch/precious", "to": format!("vm/kvm/{STEM}.img"), "ino": 1}]}),
        serde_json::json!({"version": 1, "phase": "commit", "staging": format!("{}/vm/kvm/.vmrepo-staging.b", r.root.display()),
            "steps": [{"from": outside, "to": format!("{}/vm/kvm/{STEM}.img", r.root.display())}], "done": 0}),
        serde_json::json!({"version": 2, "phase": "prepare", "staging": "/etc"}),
    ];
    for (id, j) in ["a", "b", "c"].iter().zip(&hostile) {
        std::fs::write(journal.join(format!("{id}.json")), serde_json::to_vec(j).unwrap()).unwrap();
        std::fs::write(journal.join(format!("{id}.lock")), b"").unwrap();
    }
    let out = r.run(&["list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
    assert!(std::path::Path::new("/etc/passwd").exists());
    intact(&r, &sha);
    let v: serde_json::Value = serde_json::from_slice(&r.run(&["--json", "lint"]).stdout).unwrap();
    let q = v.as_array().unwrap().iter().filter(|f| f["code"] == "quarantined-journal").count();
    assert_eq!(q, 3, "{v}");
}

#[test]
fn item11_add_refuses_what_vmrepo_itself_cannot_read() {
    if !have("qemu-img", "qemu-utils") || !have("qemu-io", "qemu-utils") {
        return;
    }
    let r = Repo::new();
    let dir = r.scratch();
    // A qcow2 whose L1 table lies past the end of the file.
    crate::util::run_in(&dir, "qemu-img", &["create", "-q", "-f", "qcow2", "l1.qcow2", "64M"]);
    crate::util::run_in(&dir, "qemu-io", &["-c", "write -P 1 0 1M", "l1.qcow2"]);
    sh(
        &dir,
        "printf '\\000\\000\\000\\000\\020\\000\\000\\000' | dd of=l1.qcow2 bs=1 seek=40 conv=notrunc status=none",
    );
    // VMDKs whose only extent is outside their folder, or a device.
    for (name, extent) in
        [("abs.vmdk", "/etc/passwd"), ("rel.vmdk", "../../etc/passwd"), ("dev.vmdk", "/dev/zero")]
    {
        std::fs::write(
            dir.join(name),
            format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 97656250 FLAT \"{extent}\" 0\n\nddb.virtualHWVersion = \"4\"\n"),
        )
        .unwrap();
    }
    let fields = ["--os", "sl5.3", "--arch", "x86", "--bits", "64", "--lib", "sl08e"];
    for (file, vm) in
        [("l1.qcow2", "kvm"), ("abs.vmdk", "vmware"), ("rel.vmdk", "vmware"), ("dev.vmdk", "vmware")]
    {
        let p = dir.join(file);
        let mut args = vec!["add", p.to_str().unwrap(), "--vm", vm];
        args.extend(fields);
        let err = r.fails(11, &args);
        assert!(err.contains("--force"), "{file}: {err}");
        // vmrepo's own reading agrees: check finds the problem.
        let out = r.run(&["check", p.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "{file}");
    }
    assert_eq!(r.listed(), Vec::<String>::new());
    // Forced in, lint reports it; and no size is a fraction of a unit.
    let p = dir.join("abs.vmdk");
    let mut args = vec!["--json", "add", p.to_str().unwrap(), "--vm", "vmware", "--force"];
    args.extend(fields);
    let out = r.json(&args[1..]);
    let maxsize = out["image"]["maxsize"].as_str().unwrap();
    assert_eq!(maxsize, "50GB", "97656250 sectors are 50 * 10^9 bytes");
    let v: serde_json::Value = serde_json::from_slice(&r.run(&["--json", "lint"]).stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|f| f["code"] == "check-failed" || f["code"] == "unreadable-disk"),
        "{v}"
    );
}

#[test]
fn item09_a_fifo_as_notes_is_refused_without_waiting() {
    let r = Repo::new();
    let dir = r.scratch();
    sh(&dir, "mkfifo notes");
    let src = dir.join("a.img");
    pattern_file(&src, 4096, 23);
    let notes = dir.join("notes");
    let mut args = add_args(src.to_str().unwrap());
    args.extend(["--notes-file", notes.to_str().unwrap()]);
    let mut child = r.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("vmrepo waits on a FIFO given as --notes-file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(6));
    assert_eq!(r.listed(), Vec::<String>::new());
}

#[test]
fn item16_replace_keeps_the_administrators_lines() {
    let r = Repo::new();
    stored(&r, 24);
    let txt = r.vm_dir("kvm").join(format!("{STEM}.txt"));
    let admin = "Root password: date '+%y%m SEED=...' | md5sum | base64 | sed 's|\\(...........\\).*|\\1|'";
    let text = std::fs::read_to_string(&txt).unwrap();
    let text = text.replacen("Storage:", &format!("{admin}\nContact: STAR computing\nStorage:"), 1);
    std::fs::write(&txt, &text).unwrap();
    let before: Vec<String> = text.lines().map(str::to_string).collect();
    let at = before.iter().position(|l| l == admin).unwrap();
    let src = r.scratch().join("new.img");
    pattern_file(&src, 1 << 20, 25);
    let mut args = add_args(src.to_str().unwrap());
    args.push("--replace");
    r.ok(&args);
    let after = std::fs::read_to_string(&txt).unwrap();
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.get(at).copied(), Some(admin), "{after}");
    assert_eq!(lines.get(at + 1).copied(), Some("Contact: STAR computing"), "{after}");
    assert!(!after.contains("Root password: set"), "{after}");
}

#[test]
fn item17_sizes_on_disk_are_allocated_blocks() {
    let r = Repo::new();
    let src = r.scratch().join("sparse.img");
    // A 10 GiB disk holding 1.5 MiB of data.
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(10 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![7u8; 3 << 19], 1 << 30).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let out = r.json(&[
        "add",
        src.to_str().unwrap(),
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
    ]);
    let path = r.root.join(out["image"]["path"].as_str().unwrap());
    // The oracle: stat's count of 512-byte blocks.
    let blocks: u64 = sh(&r.root, &format!("stat -c %b '{}'", path.display())).trim().parse().unwrap();
    let txt = std::fs::read_to_string(path.with_extension("txt")).unwrap();
    assert!(txt.contains(&format!("File size: {} bytes", 10u64 << 30)), "{txt}");
    assert!(txt.contains(&format!("Bytes on disk: {} bytes", blocks * 512)), "{txt}");
    assert!(blocks * 512 < 4 << 20, "the copy is sparse: {blocks} blocks");
    let inv = r.json(&["inventory"]);
    assert_eq!(inv["total"]["bytes"], 10u64 << 30, "{inv}");
    assert_eq!(inv["total"]["disk_usage"], blocks * 512, "{inv}");
    let text = r.ok(&["inventory"]);
    assert!(text.contains("10 GiB in files") && text.contains("on disk"), "{text}");
}

#[test]
fn item23_add_does_not_spin() {
    if !have("strace", "strace") {
        return;
    }
    let r = Repo::new();
    let src = r.scratch().join("a.img");
    pattern_file(&src, 64 << 20, 26);
    let summary = r.tmp.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(bin())
        .arg("--repo")
        .arg(&r.root)
        .args(add_args(src.to_str().unwrap()))
        .env_remove("VMREPO_REPO")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&summary).unwrap();
    // strace -c: "% time seconds usecs/call calls errors syscall".
    let calls = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(3).and_then(|c| c.parse().ok())
            })
            .unwrap_or(0)
    };
    assert!(calls("sched_yield") < 10, "threads spin waiting for each other:\n{text}");
}

#[test]
fn item26_the_build_names_no_target() {
    // The binary is where people and scripts expect it: target/<profile>/vmrepo.
    let bin = std::path::Path::new(bin());
    let profile_dir = bin.parent().unwrap();
    assert_eq!(profile_dir.parent().unwrap().file_name().unwrap(), "target", "{}", bin.display());
    // And nothing in the build configuration names a target.
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for cfg in [".cargo/config.toml", ".cargo/config"] {
        if let Ok(text) = std::fs::read_to_string(top.join(cfg)) {
            assert!(
                !text.lines().any(|l| l.trim_start().starts_with("target")),
                "{cfg} names a build target"
            );
            assert!(!text.contains("unknown-linux"), "{cfg} names a target triple");
        }
    }
}
