//! kill -9 at every file operation of `publish`, `mirror`, `key generate`
//! and `trust add` (strace's syscall fault injection: `inject=CALL:signal=SIGKILL:when=N`).
//!
//! After each kill a reader of DEST sees the previous publish or the new
//! one, whole: `catalog.json` verifies with the real `minisign -V`, every
//! image it names is there with its SHA-256 (`sha256sum`), and no temporary
//! file is under a name a client reads; the next publish (or mirror)
//! completes and is just as correct, and leaves no temporary file. A killed
//! `key generate` leaves no half key and never a secret readable by others;
//! a killed `trust add` leaves the trusted keys readable.
//!
//! Every N of each class of calls is tried when the command makes at most
//! [`ALL_UP_TO`] of them; above that, the first and last few and a sample
//! drawn with a fixed seed (the same N on every run), to keep the run short.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::publish::{keygen, minisign_verifies};
use crate::util::{Repo, bin, have, pattern_file, sh, sha256sum, tree};

/// The classes of calls a kill is injected at.
const CALLS: [&str; 7] = [
    "openat",
    "write",
    "fsync,fdatasync,syncfs",
    "rename,renameat,renameat2",
    "link,linkat",
    "unlink,unlinkat",
    "mkdir,mkdirat",
];

/// Every N is tried for a class the command calls at most this many times.
const ALL_UP_TO: usize = 24;

fn tools() -> bool {
    have("strace", "strace") && have("minisign", "minisign") && have("sha256sum", "coreutils")
}

/// How many calls of `calls` `cmd` makes when not killed (`strace -c`).
fn count_calls(cmd: &[String], calls: &str) -> usize {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-c", "-U", "calls", "-e"])
        .arg(format!("trace={calls}"))
        .args(cmd)
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    // "calls" rows, then a dashed line and the total.
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [n, name] if name != "total" => n.parse::<usize>().ok(),
            _ => None,
        })
        .sum()
}

/// The N values tried for a command that makes `count` calls of a class:
/// all of them, or the first 8, the last 8 and 8 drawn with a fixed seed.
fn sample(count: usize, seed: u64) -> Vec<usize> {
    if count <= ALL_UP_TO {
        return (1..=count).collect();
    }
    let mut n: Vec<usize> = (1..=8).chain(count - 7..=count).collect();
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for _ in 0..8 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        n.push(9 + usize::try_from(x >> 33).unwrap() % (count - 16));
    }
    n.sort_unstable();
    n.dedup();
    n
}

/// Runs `cmd` with the `n`-th call of `calls` killing it; whether it was killed.
fn killed_at(cmd: &[String], calls: &str, n: usize) -> bool {
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={calls}:signal=SIGKILL:when={n}"))
        .args(cmd)
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9) || status.code() == Some(137)
}

/// What a reader finds in DEST: the catalog's serial and image paths, after
/// checking it as a client would (minisign, sha256sum of every image, each
/// Metalink file named is there and names the image's SHA-256).
///
/// `None` for the one state two files cannot avoid: killed between the
/// renames of the new `catalog.json.minisig` and the new `catalog.json`
/// (docs/distribution.md); asserted exactly: the complete new catalog is in
/// its hidden temporary file and verifies with the signature in place.
fn reader_sees(dest: &Path, public: &Path, what: &str) -> Option<(u64, Vec<String>)> {
    let (ok, said) = minisign_verifies(dest, public);
    if !ok {
        let pending: Vec<String> =
            tree(dest).into_iter().filter(|f| f.starts_with(".catalog.json.tmp-")).collect();
        assert_eq!(pending.len(), 1, "{what}: minisign -V refuses the catalog: {said}");
        sh(dest, &format!("minisign -Vq -p {} -m {} -x catalog.json.minisig", public.display(), pending[0]));
        return None;
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    let mut paths = Vec::new();
    for i in doc["images"].as_array().unwrap() {
        let path = i["path"].as_str().unwrap();
        let file = dest.join(path);
        assert!(file.is_file(), "{what}: {path} named by the catalog is missing");
        assert_eq!(sha256sum(&file), i["sha256"].as_str().unwrap(), "{what}: {path}");
        if let Some(m) = i["metalink"].as_str() {
            let text = std::fs::read_to_string(dest.join(m)).unwrap_or_default();
            assert!(text.contains(i["sha256"].as_str().unwrap()), "{what}: {m} is missing or not whole");
        }
        paths.push(path.to_string());
    }
    paths.sort();
    Some((doc["serial"].as_u64().unwrap(), paths))
}

/// [`reader_sees`] where the state must be whole (after a command that completed).
fn whole(dest: &Path, public: &Path, what: &str) -> (u64, Vec<String>) {
    reader_sees(dest, public, what).unwrap_or_else(|| panic!("{what}: the signature is not the catalog's"))
}

/// No temporary file is left anywhere in DEST.
fn no_temp(dest: &Path, what: &str) {
    let left: Vec<String> = tree(dest).into_iter().filter(|p| p.contains(".tmp-")).collect();
    assert!(left.is_empty(), "{what}: temporary files left: {left:?}");
}

/// Two images, A (kvm, 1GB) and B (kvm, 2GB); returns their find expressions.
fn two_images(r: &Repo) -> [&'static str; 2] {
    for (i, size) in [(0u64, "1GB"), (1, "2GB")] {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 90_000 + 1000 * i as usize, 40 + i);
        r.add(&f, "kvm", &["--max-size", size]);
    }
    ["maxsize<1.5GB", "maxsize>1.5GB"]
}

fn vmrepo_cmd(r: &Repo, args: &[&str]) -> Vec<String> {
    let mut v = vec![bin().to_string(), "--repo".into(), r.root.to_str().unwrap().into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// One killed command over every class and sampled N: `prepare` makes the
/// state before it (and returns what a reader must then see), `check` is
/// called after the kill and after the next, unkilled, command.
fn each_kill(cmd: &[String], prepare: &dyn Fn(), check: &dyn Fn(&str, bool)) -> usize {
    let mut kills = 0;
    for (c, calls) in CALLS.iter().enumerate() {
        prepare();
        let count = count_calls(cmd, calls);
        for n in sample(count + 1, c as u64) {
            prepare();
            let what = format!("killed at {calls} #{n}");
            if !killed_at(cmd, calls, n) {
                check(&format!("{what} (ran to its end)"), true);
                continue;
            }
            kills += 1;
            check(&what, false);
        }
    }
    kills
}

#[test]
fn publish_killed_at_every_file_operation_leaves_the_old_catalog_or_the_new() {
    if !tools() {
        return;
    }
    let r = Repo::new();
    let [a, _] = two_images(&r);
    let (key, public) = keygen(&r);
    let dest = r.tmp.path().join("www");
    let key = key.to_str().unwrap().to_string();
    let d = dest.to_str().unwrap().to_string();
    let publish = |extra: &[&str]| {
        r.ok(&[&["publish", &d, "--key", &key, "--base-url", "https://x.example/v"], extra].concat())
    };
    // The previous publish: A only, serial 1.
    let prepare = || {
        let _ = std::fs::remove_dir_all(&dest);
        publish(&[a]);
    };
    prepare();
    let (_, only_a) = whole(&dest, &public, "A");
    let cmd = vmrepo_cmd(&r, &["publish", &d, "--key", &key, "--base-url", "https://x.example/v"]);
    let check = |what: &str, completed: bool| {
        let serial = match reader_sees(&dest, &public, what) {
            Some((1, paths)) => {
                assert!(!completed && paths == only_a, "{what}: serial 1 with {paths:?}");
                1
            }
            Some((2, paths)) => {
                assert_eq!(paths.len(), 2, "{what}: {paths:?}");
                2
            }
            Some((s, _)) => panic!("{what}: serial {s}"),
            None => 1,
        };
        // The next publish completes and is correct.
        publish(&[]);
        let (serial2, paths2) = whole(&dest, &public, &format!("{what}, then published again"));
        assert_eq!((serial2, paths2.len()), (serial + 1, 2), "{what}");
        no_temp(&dest, what);
    };
    let kills = each_kill(&cmd, &prepare, &check);
    assert!(kills > 20, "only {kills} kills");
    eprintln!("publish: killed {kills} times");
}

#[test]
fn publish_killed_while_removing_old_images_leaves_a_whole_catalog() {
    if !tools() {
        return;
    }
    let r = Repo::new();
    let [a, b] = two_images(&r);
    let (key, public) = keygen(&r);
    let dest = r.tmp.path().join("www");
    let key = key.to_str().unwrap().to_string();
    let d = dest.to_str().unwrap().to_string();
    let publish = |expr: &str| r.ok(&["publish", &d, "--key", &key, expr]);
    // Serial 1 names A, serial 2 names B (A kept: the previous catalog names it);
    // the killed publish (serial 3, B) removes A.
    let prepare = || {
        let _ = std::fs::remove_dir_all(&dest);
        publish(a);
        publish(b);
    };
    prepare();
    let (_, only_b) = whole(&dest, &public, "B");
    let cmd = vmrepo_cmd(&r, &["publish", &d, "--key", &key, b]);
    let check = |what: &str, _completed: bool| {
        let serial = match reader_sees(&dest, &public, what) {
            Some((serial, paths)) => {
                assert!(matches!(serial, 2 | 3) && paths == only_b, "{what}: serial {serial} {paths:?}");
                serial
            }
            None => 2,
        };
        publish(b);
        let (serial2, paths2) = whole(&dest, &public, what);
        assert_eq!((serial2, &paths2), (serial + 1, &only_b), "{what}");
        // Two publishes of B only after the one of A: A is gone.
        let kvm: Vec<String> =
            tree(&dest.join("vm/kvm")).into_iter().filter(|f| f.ends_with(".img")).collect();
        assert_eq!(kvm.len(), 1, "{what}: {kvm:?}");
        no_temp(&dest, what);
    };
    let kills = each_kill(&cmd, &prepare, &check);
    assert!(kills > 10, "only {kills} kills");
}

#[test]
fn mirror_killed_at_every_file_operation_leaves_the_old_mirror_or_the_new() {
    if !tools() {
        return;
    }
    let r = Repo::new();
    let [a, _] = two_images(&r);
    let (key, public) = keygen(&r);
    let key = key.to_str().unwrap();
    let src_a = r.tmp.path().join("src-a");
    let src_ab = r.tmp.path().join("src-ab");
    r.ok(&["publish", src_a.to_str().unwrap(), "--key", key, a]);
    // Serial 2 with both images.
    r.ok(&["publish", src_ab.to_str().unwrap(), "--key", key, a]);
    r.ok(&["publish", src_ab.to_str().unwrap(), "--key", key]);
    let dest = r.tmp.path().join("mirror");
    let d = dest.to_str().unwrap().to_string();
    let p = public.to_str().unwrap().to_string();
    let mirror = |src: &Path| {
        r.ok(&["mirror", &format!("file://{}", src.display()), &d, "--key", &p]);
    };
    let prepare = || {
        let _ = std::fs::remove_dir_all(&dest);
        mirror(&src_a);
    };
    let cmd = vmrepo_cmd(&r, &["mirror", &format!("file://{}", src_ab.display()), &d, "--key", &p]);
    let check = |what: &str, _completed: bool| {
        if let Some((serial, paths)) = reader_sees(&dest, &public, what) {
            assert!(matches!((serial, paths.len()), (1, 1) | (2, 2)), "{what}: serial {serial} {paths:?}");
        }
        mirror(&src_ab);
        let (serial2, paths2) = whole(&dest, &public, what);
        assert_eq!((serial2, paths2.len()), (2, 2), "{what}");
        no_temp(&dest, what);
    };
    let kills = each_kill(&cmd, &prepare, &check);
    assert!(kills > 10, "only {kills} kills");
}

#[test]
fn key_generate_and_trust_add_killed_leave_no_half_key() {
    if !tools() {
        return;
    }
    let r = Repo::new();
    let dir = r.tmp.path().join("keys");
    let d = dir.to_str().unwrap().to_string();
    let prepare = || {
        let _ = std::fs::remove_dir_all(&dir);
    };
    let cmd = vmrepo_cmd(&r, &["key", "generate", "--openpgp", "-o", &d, "--name", "k"]);
    let msg = r.tmp.path().join("msg");
    std::fs::write(&msg, b"signed\n").unwrap();
    let check = |what: &str, completed: bool| {
        let files = if dir.exists() { tree(&dir) } else { Vec::new() };
        for f in &files {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            if f.contains(".key") {
                assert_eq!(mode & 0o077, 0, "{what}: {f} is readable by others ({mode:o})");
            }
        }
        let visible: Vec<&String> = files.iter().filter(|f| !f.starts_with('.')).collect();
        assert!(!completed || visible.len() == 5, "{what}: {files:?}");
        // Whatever is there under its name is whole, and a new try makes the rest or says why not.
        if dir.join("k.key").exists() && dir.join("k.pub").exists() {
            sh(
                &dir,
                &format!(
                    "minisign -S -s k.key -m {m} -x sig && minisign -V -p k.pub -m {m} -x sig && rm sig",
                    m = msg.display()
                ),
            );
        }
        let out = r.run(&["key", "generate", "--openpgp", "-o", &d, "--name", "k"]);
        let code = out.status.code();
        assert!(
            code == Some(0) || (code == Some(5) && !visible.is_empty()),
            "{what}: key generate again: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code != Some(0) {
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                said.trim_end().lines().count() == 1 && said.contains("already exists"),
                "{what}: {said}"
            );
        }
    };
    let kills = each_kill(&cmd, &prepare, &check);
    assert!(kills > 5, "only {kills} kills");

    // trust add: the trusted keys stay readable, and the key is trusted once added again.
    let (_, public) = keygen(&r);
    let p = public.to_str().unwrap().to_string();
    let trusted = r.root.join(".vmrepo/trusted");
    let prepare = || {
        let _ = std::fs::remove_dir_all(&trusted);
    };
    let cmd = vmrepo_cmd(&r, &["trust", "add", &p]);
    let check = |what: &str, _completed: bool| {
        r.ok(&["trust", "list"]);
        let out = r.run(&["trust", "add", &p]);
        assert!(matches!(out.status.code(), Some(0 | 5)), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(r.ok(&["trust", "list"]).contains("site"), "{what}");
    };
    each_kill(&cmd, &prepare, &check);
}
