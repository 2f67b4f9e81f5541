//! Crash safety: imports killed at random points, at every step of the
//! publication, interrupted, concurrent, and on a full disk. After each, the
//! repository shows no partial image and verifies clean.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Repo, bin, have, pattern_file, sh, tree};

const STEM: &str = "sl5.3_x86_64_sl08e_8GB_crash";

fn add_args(src: &std::path::Path) -> Vec<String> {
    [
        "add",
        "--force",
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
        "--max-size",
        "8GB",
        "--detail",
        "crash",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// After a crash: the next command leaves either nothing under the name or a
/// complete image that verifies; no staging folder or journal remains.
/// Returns whether the image is there.
fn assert_whole_or_absent(r: &Repo) -> bool {
    let listed = r.listed();
    let kvm = r.vm_dir("kvm");
    let present = listed.contains(&format!("kvm/{STEM}.img"));
    let files: Vec<String> =
        tree(&kvm).into_iter().filter(|f| f.starts_with(STEM) || f.starts_with('.')).collect();
    if present {
        assert_eq!(files, [format!("{STEM}.checksum"), format!("{STEM}.img"), format!("{STEM}.txt")]);
        r.ok(&["verify", "--md5"]);
        if have("md5sum", "coreutils") {
            sh(&kvm, &format!("md5sum -c {STEM}.checksum"));
        }
    } else {
        assert_eq!(files, Vec::<String>::new(), "partial import left behind");
    }
    let journal = r.root.join(".vmrepo/journal");
    let left: Vec<String> = if journal.exists() { tree(&journal) } else { Vec::new() };
    assert!(left.is_empty(), "journal not cleaned: {left:?}");
    // The test's images are small raw files named for an 8 GB disk: apart
    // from that, nothing may be wrong (lint exits 1 on that finding).
    let out = r.run(&["--json", "lint"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wrong: Vec<&serde_json::Value> =
        v.as_array().unwrap().iter().filter(|f| f["code"] != "maxsize-mismatch").collect();
    assert!(wrong.is_empty(), "lint after recovery: {wrong:?}");
    present
}

#[test]
fn killed_at_each_step_of_the_publication() {
    for (point, expect_present) in [
        ("after-stage", false),
        ("after-journal", true),
        ("after-first-rename", true),
        ("before-cleanup", true),
    ] {
        let r = Repo::new();
        let src = r.scratch().join("disk.img");
        pattern_file(&src, 2 << 20, 5);
        let out = r
            .command(&add_args(&src).iter().map(String::as_str).collect::<Vec<_>>())
            .env("VMREPO_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the test hook did not fire");
        // Before any other command runs, no image file is visible under its name
        // unless the publication had reached it.
        let image_visible = r.vm_dir("kvm").join(format!("{STEM}.img")).exists();
        assert!(point == "before-cleanup" || !image_visible, "{point}: image visible before recovery");
        assert_eq!(assert_whole_or_absent(&r), expect_present, "{point}");
    }
}

#[test]
fn killed_at_random_points() {
    let r = Repo::new();
    let src = r.scratch().join("disk.img");
    pattern_file(&src, 48 << 20, 11);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("random kill seed {seed}");
    // Time a full import first, to spread the kills over its whole length.
    let start = Instant::now();
    r.ok(&add_args(&src).iter().map(String::as_str).collect::<Vec<_>>());
    let full = start.elapsed().as_millis().max(20) as u64;
    r.ok(&["rm", &format!("kvm/{STEM}")]);
    let mut x = seed | 1;
    let mut present = 0;
    for round in 0..16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = x % (full + full / 4);
        let args = add_args(&src);
        let mut cmd = r.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if present > 0 {
            cmd.arg("--replace");
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        if assert_whole_or_absent(&r) {
            present += 1;
        }
        eprintln!("round {round}: killed after {delay} ms of ~{full} ms; image present: {}", present > 0);
    }
}

#[test]
fn ctrl_c_undoes_the_import() {
    let r = Repo::new();
    let src = r.scratch().join("disk.img");
    pattern_file(&src, 256 << 20, 3);
    let args = add_args(&src);
    let child = r
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        eprintln!("the import finished before the signal; nothing to check");
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    // Undone at once, not only by the next command.
    assert_eq!(tree(&r.vm_dir("kvm")), Vec::<String>::new());
    assert!(!assert_whole_or_absent(&r));
}

#[test]
fn concurrent_imports() {
    let r = Repo::new();
    let mut children = Vec::new();
    for i in 0..4u64 {
        let src = r.scratch().join(format!("{i}.img"));
        pattern_file(&src, 8 << 20, i);
        let detail = format!("n{i}");
        let mut args = add_args(&src);
        let last = args.len() - 1;
        args[last] = detail;
        children.push(
            r.command(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(r.listed().len(), 4);
    r.ok(&["verify", "--md5"]);
    // Two imports under one name: one wins, the other is refused with exit 5.
    let a = r.scratch().join("a.img");
    let b = r.scratch().join("b.img");
    pattern_file(&a, 8 << 20, 100);
    pattern_file(&b, 8 << 20, 200);
    let ca = r
        .command(&add_args(&a).iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cb = r
        .command(&add_args(&b).iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut codes =
        vec![ca.wait_with_output().unwrap().status.code(), cb.wait_with_output().unwrap().status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(5)]);
    assert!(assert_whole_or_absent(&r));
}

#[test]
fn a_full_disk_fails_cleanly() {
    if !have("bash", "bash") {
        return;
    }
    let r = Repo::new();
    let src = r.scratch().join("disk.img");
    pattern_file(&src, 16 << 20, 9);
    // A file size limit makes writes fail mid-copy, as a full disk does.
    let cmd = format!(
        "ulimit -f 4096; exec '{}' --repo '{}' {}",
        bin(),
        r.root.display(),
        add_args(&src).iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
    );
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".vmrepo-staging.") || err.contains("space"), "{err}");
    assert_eq!(tree(&r.vm_dir("kvm")), Vec::<String>::new());
    assert!(!assert_whole_or_absent(&r));

    // A real full filesystem (a small tmpfs in a private mount namespace), where
    // vmrepo refuses before copying.
    let probe = Command::new("unshare").args(["-rm", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: unshare -rm is not permitted here; the tmpfs part of this test did not run");
        return;
    }
    let mnt = r.tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs '{m}' && '{b}' init '{m}/repo' >/dev/null && '{b}' --repo '{m}/repo' {args}; echo \"exit=$?\"; ls -A '{m}/repo/vm/kvm'",
        m = mnt.display(),
        b = bin(),
        args = add_args(&src).iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
    );
    let out = Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit=8"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough space"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim_end().lines().count(), 1, "files left in vm/kvm: {text}");
}

/// The file operations a change is made of, each a class of system calls
/// that strace can make fatal at its N-th call.
const FATAL_CALLS: [&str; 6] = [
    "rename,renameat,renameat2",
    "link,linkat",
    "unlink,unlinkat",
    "rmdir",
    "fsync,fdatasync",
    "chmod,fchmod,fchmodat",
];

/// What a scenario left, read with real tools after the next command recovered.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Nothing under the name.
    Absent,
    /// The image under the name has these bytes (sha256sum).
    Present(String),
}

/// Runs `args` with the `n`-th call of `calls` killing the process (SIGKILL,
/// injected by strace); returns whether it was killed.
fn killed_at(r: &Repo, args: &[String], calls: &str, n: usize) -> bool {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={calls}:signal=SIGKILL:when={n}"))
        .arg(bin())
        .arg("--repo")
        .arg(&r.root)
        .args(args)
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = cmd.status().unwrap();
    use std::os::unix::process::ExitStatusExt;
    // strace exits with the tracee's signal, re-raised, or 128 + signal.
    status.signal() == Some(9) || status.code() == Some(137)
}

/// After the next command: the name holds a whole image that verifies
/// (md5sum -c, sha256sum) or nothing; no staging folder, journal or
/// quarantine is left.
fn state_after(r: &Repo) -> After {
    let listed = r.listed();
    let kvm = r.vm_dir("kvm");
    let files: Vec<String> =
        tree(&kvm).into_iter().filter(|f| f.starts_with(STEM) || f.starts_with('.')).collect();
    let journal = r.root.join(".vmrepo/journal");
    let left: Vec<String> = if journal.exists() { tree(&journal) } else { Vec::new() };
    assert!(left.is_empty(), "journal not cleaned: {left:?}");
    assert!(!r.root.join(".vmrepo/quarantine").exists(), "a journal was quarantined");
    if listed.contains(&format!("kvm/{STEM}.img")) {
        assert_eq!(files, [format!("{STEM}.checksum"), format!("{STEM}.img"), format!("{STEM}.txt")]);
        sh(&kvm, &format!("md5sum -c {STEM}.checksum"));
        r.ok(&["verify", "--md5"]);
        After::Present(crate::util::sha256sum(&kvm.join(format!("{STEM}.img"))))
    } else {
        assert_eq!(files, Vec::<String>::new(), "partial change left behind");
        After::Absent
    }
}

/// Kills each scenario at every rename, link, unlink, rmdir, fsync and
/// chmod it makes, one at a time; after each, the next command leaves the
/// old state or the new one, never a mix, and never loses the source of a
/// move.
#[test]
fn killed_at_every_file_operation() {
    if !have("strace", "strace") || !have("md5sum", "coreutils") || !have("sha256sum", "coreutils") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    struct Scenario {
        name: &'static str,
        /// An image under the name before the command.
        before: bool,
        args: &'static [&'static str],
        /// The command moves its source.
        moves: bool,
        /// The command removes the image.
        removes: bool,
    }
    let scenarios = [
        Scenario { name: "add", before: false, args: &[], moves: false, removes: false },
        Scenario { name: "add --replace", before: true, args: &["--replace"], moves: false, removes: false },
        Scenario { name: "add --move", before: false, args: &["--move"], moves: true, removes: false },
        Scenario {
            name: "add --move --replace",
            before: true,
            args: &["--move", "--replace"],
            moves: true,
            removes: false,
        },
        Scenario { name: "rm", before: true, args: &[], moves: false, removes: true },
    ];
    let mut runs = 0;
    for sc in &scenarios {
        for calls in FATAL_CALLS {
            for n in 1.. {
                let r = Repo::new();
                let old = r.scratch().join("old.img");
                pattern_file(&old, 1 << 20, 1);
                let old_sha = crate::util::sha256sum(&old);
                if sc.before {
                    r.ok(&add_args(&old).iter().map(String::as_str).collect::<Vec<_>>());
                }
                let src = r.scratch().join("new.img");
                pattern_file(&src, 2 << 20, 2);
                let new_sha = crate::util::sha256sum(&src);
                let args: Vec<String> = if sc.removes {
                    vec!["rm".into(), format!("kvm/{STEM}")]
                } else {
                    let mut a = add_args(&src);
                    a.extend(sc.args.iter().map(|s| s.to_string()));
                    a
                };
                let killed = killed_at(&r, &args, calls, n);
                runs += 1;
                let what = format!("{} killed at call {n} of {calls}", sc.name);
                eprintln!("{what}: killed {killed}");
                let after = state_after(&r);
                let source_there = src.exists();
                if sc.removes {
                    assert!(
                        after == After::Absent || after == After::Present(old_sha.clone()),
                        "{what}: {after:?}"
                    );
                } else {
                    let allowed_before =
                        if sc.before { After::Present(old_sha.clone()) } else { After::Absent };
                    assert!(
                        after == allowed_before || after == After::Present(new_sha.clone()),
                        "{what}: {after:?}"
                    );
                    if sc.moves {
                        // The source's bytes are somewhere: stored, or still the source.
                        assert!(
                            source_there || after == After::Present(new_sha.clone()),
                            "{what}: source lost"
                        );
                        if after != After::Present(new_sha.clone()) {
                            let mode = std::fs::metadata(&src).unwrap().permissions().mode() & 0o777;
                            assert_eq!(mode, 0o644, "{what}: the source's mode was not given back");
                            assert_eq!(crate::util::sha256sum(&src), new_sha, "{what}");
                        }
                    } else {
                        assert!(source_there, "{what}: a copied source was removed");
                    }
                }
                if !killed {
                    // The command ran to its end: it did what it was asked.
                    if sc.removes {
                        assert_eq!(after, After::Absent, "{what}");
                    } else {
                        assert_eq!(after, After::Present(new_sha.clone()), "{what}");
                        assert_eq!(source_there, !sc.moves, "{what}");
                    }
                    break;
                }
                assert!(n < 200, "{what}: never ran to its end");
            }
        }
    }
    eprintln!("{runs} runs");
}

/// `mv` killed at every rename, link, unlink and fsync: afterwards exactly
/// one of the two names holds the whole image, whose sidecars md5sum checks.
#[test]
fn mv_killed_at_every_file_operation() {
    if !have("strace", "strace") || !have("md5sum", "coreutils") {
        return;
    }
    const NEW: &str = "sl5.3_x86_64_sl08e_8GB_renamed";
    for calls in FATAL_CALLS {
        for n in 1.. {
            let r = Repo::new();
            let src = r.scratch().join("a.img");
            pattern_file(&src, 1 << 20, 3);
            let sha = crate::util::sha256sum(&src);
            r.ok(&add_args(&src).iter().map(String::as_str).collect::<Vec<_>>());
            let args: Vec<String> = ["mv", &format!("kvm/{STEM}"), &format!("xen/{NEW}"), "--force"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let killed = killed_at(&r, &args, calls, n);
            let what = format!("mv killed at call {n} of {calls}");
            let listed = r.listed();
            let journal = r.root.join(".vmrepo/journal");
            assert_eq!(tree(&journal), Vec::<String>::new(), "{what}");
            let old_there = listed.contains(&format!("kvm/{STEM}.img"));
            let new_there = listed.contains(&format!("xen/{NEW}.img"));
            assert!(old_there != new_there, "{what}: {listed:?}");
            let (dir, stem) = if new_there { (r.vm_dir("xen"), NEW) } else { (r.vm_dir("kvm"), STEM) };
            let files: Vec<String> =
                tree(&r.vm_dir("kvm")).into_iter().chain(tree(&r.vm_dir("xen"))).collect();
            assert_eq!(
                files,
                [format!("{stem}.checksum"), format!("{stem}.img"), format!("{stem}.txt")],
                "{what}"
            );
            sh(&dir, &format!("md5sum -c {stem}.checksum"));
            assert_eq!(crate::util::sha256sum(&dir.join(format!("{stem}.img"))), sha, "{what}");
            r.ok(&["verify", "--md5"]);
            if !killed {
                assert!(new_there, "{what}");
                break;
            }
            assert!(n < 200, "{what}: never ran to its end");
        }
    }
}
