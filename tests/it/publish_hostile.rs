//! publish, mirror and trust given what a hostile or careless user gives
//! them: FIFOs, folders, /dev/zero and links as key files, links and FIFOs
//! in DEST where publish writes, a full disk. Each refusal is one line
//! naming the file, with the documented exit code, without hanging (every
//! command runs under `timeout -s KILL`, a guard, not a measure), and
//! nothing is written through a link out of DEST.

use std::os::unix::fs::symlink;
use std::process::Command;

use crate::publish::{keygen, minisign_verifies, populate};
use crate::util::{Repo, bin, have, sha256sum, tree};

/// `vmrepo --repo R ARGS` under `timeout -s KILL 120`: (exit code, stderr).
fn run(r: &Repo, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["-s", "KILL", "120", bin(), "--repo", r.root.to_str().unwrap()])
        .args(args)
        .env_remove("VMREPO_REPO")
        .env_remove("VMREPO_INDEX")
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, -1, "vmrepo {args:?} hung and was killed");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Fails with `code`, in one line naming `name`.
fn refused(r: &Repo, args: &[&str], code: i32, name: &str) -> String {
    let (got, said) = run(r, args);
    assert_eq!(got, code, "vmrepo {args:?}: {said}");
    assert_eq!(said.trim_end().lines().count(), 1, "vmrepo {args:?}: {said}");
    assert!(said.contains(name), "vmrepo {args:?} does not name {name}: {said}");
    said
}

#[test]
fn fifos_folders_devices_and_links_as_key_files() {
    if !have("mkfifo", "coreutils") || !have("timeout", "coreutils") || !have("openssl", "openssl") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let t = r.tmp.path();
    let fifo = t.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let folder = t.join("folder");
    std::fs::create_dir(&folder).unwrap();
    let cert = t.join("c.pem");
    let ckey = t.join("k.pem");
    crate::util::run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=vmrepo test",
            "-days",
            "30",
            "-keyout",
            ckey.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let dest = t.join("www");
    let d = dest.to_str().unwrap();
    let k = key.to_str().unwrap();
    let (c, ck) = (cert.to_str().unwrap(), ckey.to_str().unwrap());
    let source = format!("file://{d}");
    r.ok(&["publish", d, "--key", k]);
    for bad in [fifo.to_str().unwrap(), folder.to_str().unwrap(), "/dev/zero"] {
        refused(&r, &["publish", d, "--key", bad], 6, bad);
        refused(&r, &["publish", d, "--key", k, "--openpgp-key", bad], 6, bad);
        let url = "--base-url=https://x.example/";
        refused(&r, &["publish", d, "--key", k, url, "--smime-cert", bad, "--smime-key", ck], 6, bad);
        refused(&r, &["publish", d, "--key", k, url, "--smime-cert", c, "--smime-key", bad], 6, bad);
        refused(&r, &["mirror", &source, t.join("m").to_str().unwrap(), "--key", bad], 6, bad);
        refused(&r, &["trust", "add", bad, "--name", "x"], 6, bad);
    }
    refused(&r, &["publish", d, "--key", t.join("none").to_str().unwrap()], 4, "none");
    // A key reached through a link (a mounted secret) is read.
    let link = t.join("linked.key");
    symlink(&key, &link).unwrap();
    r.ok(&["publish", d, "--key", link.to_str().unwrap()]);
    assert!(minisign_verifies(&dest, &public).0);
}

#[test]
fn links_and_fifos_in_dest_are_refused_and_nothing_is_written_through_them() {
    if !have("mkfifo", "coreutils") || !have("timeout", "coreutils") || !have("minisign", "minisign") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let k = key.to_str().unwrap();
    let t = r.tmp.path();
    let outside = t.join("outside");
    let fresh = |name: &str| {
        let dest = t.join(name);
        std::fs::create_dir_all(&dest).unwrap();
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::create_dir(&outside).unwrap();
        dest
    };
    // A folder publish writes in is a link out of DEST.
    for (i, at) in ["vm", "vm/kvm", "streams", "streams/v1"].iter().enumerate() {
        let dest = fresh(&format!("d{i}"));
        let link = dest.join(at);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&outside, &link).unwrap();
        refused(&r, &["publish", dest.to_str().unwrap(), "--key", k], 6, link.to_str().unwrap());
        assert_eq!(tree(&outside), Vec::<String>::new(), "written through {at}");
    }
    // catalog.json, its signature or the lock file a link: refused, the target untouched.
    for (i, at) in ["catalog.json", ".vmrepo-publish.lock"].iter().enumerate() {
        let dest = fresh(&format!("f{i}"));
        let target = outside.join("target");
        symlink(&target, dest.join(at)).unwrap();
        refused(&r, &["publish", dest.to_str().unwrap(), "--key", k], 6, at);
        assert!(!target.exists(), "{at}: a file was made through the link");
        std::fs::write(&target, b"keep").unwrap();
        refused(&r, &["publish", dest.to_str().unwrap(), "--key", k], 6, at);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
    // A FIFO as catalog.json, the lock file or DEST itself: refused at once.
    for (i, at) in ["catalog.json", ".vmrepo-publish.lock"].iter().enumerate() {
        let dest = fresh(&format!("p{i}"));
        assert!(Command::new("mkfifo").arg(dest.join(at)).status().unwrap().success());
        refused(&r, &["publish", dest.to_str().unwrap(), "--key", k], 6, at);
    }
    let fifo = t.join("fifo-dest");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    refused(&r, &["publish", fifo.to_str().unwrap(), "--key", k], 6, "not a folder");
    // The ledger a FIFO, a link to /dev/zero or to a file outside: read as
    // no ledger (a warning), then replaced by a file, the outside one untouched.
    for (i, target) in ["fifo", "/dev/zero", "file"].iter().enumerate() {
        let dest = fresh(&format!("l{i}"));
        let ledger = dest.join(".vmrepo-publish.json");
        match *target {
            "fifo" => assert!(Command::new("mkfifo").arg(&ledger).status().unwrap().success()),
            "file" => {
                std::fs::write(outside.join("l"), b"keep").unwrap();
                symlink(outside.join("l"), &ledger).unwrap();
            }
            t => symlink(t, &ledger).unwrap(),
        }
        let (code, said) = run(&r, &["publish", dest.to_str().unwrap(), "--key", k]);
        assert_eq!(code, 0, "{said}");
        assert!(std::fs::symlink_metadata(&ledger).unwrap().is_file());
        assert!(minisign_verifies(&dest, &public).0);
        if *target == "file" {
            assert_eq!(std::fs::read(outside.join("l")).unwrap(), b"keep");
        }
    }
    // A killed publish's temporary files are not removed through a link.
    let dest = fresh("t");
    r.ok(&["publish", dest.to_str().unwrap(), "--key", k]);
    std::fs::remove_dir_all(dest.join("streams/v1")).unwrap();
    let other = outside.join(".index.json.tmp-dead-1-2-3");
    std::fs::write(&other, b"not ours").unwrap();
    symlink(&outside, dest.join("streams/v1")).unwrap();
    refused(&r, &["publish", dest.to_str().unwrap(), "--key", k], 6, "streams/v1");
    assert!(other.exists(), "removed through a link");
}

/// DEST on a small tmpfs (a private mount namespace) that fills up while
/// publishing: the error is one line naming the file and "No space left on
/// device" (exit 8), the previous publish still verifies (minisign,
/// sha256sum), no temporary file is left, and once there is room again the
/// next publish completes.
#[test]
fn a_full_disk_leaves_the_previous_publish_whole() {
    if !crate::util::can_mount_tmpfs() || !have("minisign", "minisign") || !have("sha256sum", "coreutils") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let mnt = r.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let dest = mnt.join("www");
    // Room for one image and the files around it, then 100 KiB: the next two do not fit.
    let script = format!(
        r#"set -u
V='{v}'; R='{r}'; K='{k}'; M='{m}'; D='{d}'
mount -t tmpfs -o size=400k tmpfs "$M" || exit 97
"$V" --repo "$R" publish "$D" --key "$K" --base-url https://x.example/v 'maxsize<3GB' >/dev/null || exit 98
cp -a "$D" '{copy}'
free=$(df --output=avail -k "$M" | tail -1)
dd if=/dev/zero of="$M/fill" bs=1k count=$((free - 100)) 2>/dev/null
"$V" --repo "$R" publish "$D" --key "$K" --base-url https://x.example/v 2>'{err}'; echo "full=$?"
cp -a "$D" '{after}'
find "$D" -name '*.tmp-*' | sed 's/^/temp: /'
dd if=/dev/zero of="$M/fill2" bs=1k 2>/dev/null
"$V" --repo "$R" publish "$D" --key "$K" --base-url https://x.example/v 'maxsize<3GB' 2>>'{err}'; echo "fuller=$?"
find "$D" -name '*.tmp-*' | sed 's/^/temp: /'
rm "$M/fill" "$M/fill2"
"$V" --repo "$R" publish "$D" --key "$K" --base-url https://x.example/v >/dev/null 2>>'{err}'; echo "room=$?"
cp -a "$D" '{last}'
"#,
        v = bin(),
        r = r.root.display(),
        k = key.display(),
        m = mnt.display(),
        d = dest.display(),
        copy = r.tmp.path().join("before").display(),
        after = r.tmp.path().join("after").display(),
        last = r.tmp.path().join("last").display(),
        err = r.tmp.path().join("err").display(),
    );
    let out = Command::new("unshare").args(["-m", "bash", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = std::fs::read_to_string(r.tmp.path().join("err")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(&"full=8") && lines.contains(&"fuller=8") && lines.contains(&"room=0"),
        "{text}{err}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("temp: "), "temporary files left: {text}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("No space left on device") && first.contains("www/"), "{err}");
    assert!(!first.contains(".tmp-"), "the error names a temporary file: {first}");
    for state in ["after", "last"] {
        let dir = r.tmp.path().join(state);
        assert!(minisign_verifies(&dir, &public).0, "{state}");
        let doc = crate::publish::catalog(&dir);
        for i in doc["images"].as_array().unwrap() {
            let f = dir.join(i["path"].as_str().unwrap());
            assert_eq!(sha256sum(&f), i["sha256"].as_str().unwrap(), "{state}: {}", f.display());
        }
    }
    // What a reader saw after the failure is the previous publish.
    assert_eq!(
        std::fs::read(r.tmp.path().join("after/catalog.json")).unwrap(),
        std::fs::read(r.tmp.path().join("before/catalog.json")).unwrap()
    );
    assert_eq!(crate::publish::catalog(&r.tmp.path().join("last"))["images"].as_array().unwrap().len(), 3);
}

/// An S/MIME key encrypted as `openssl pkcs8 -topk8 -v2 aes-256-cbc` makes
/// it: unlocked by --smime-key-pass-file or VMREPO_SMIME_KEY_PASSWORD, the
/// image list verified by `openssl smime -verify`; without a passphrase or
/// with a wrong one, one line naming the key (exit 6).
#[test]
fn an_encrypted_smime_key_with_its_passphrase_signs_the_image_list() {
    if !have("openssl", "openssl") || !have("mkfifo", "coreutils") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let t = r.tmp.path();
    std::fs::write(t.join("pass"), "correct horse\n").unwrap();
    std::fs::write(t.join("wrong"), "battery staple\n").unwrap();
    crate::util::sh(
        t,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout plain.pem -out cert.pem -subj '/CN=vmrepo test' \
         -days 30 2>/dev/null && \
         openssl pkcs8 -topk8 -v2 aes-256-cbc -in plain.pem -out enc.pem -passout file:pass",
    );
    assert!(
        std::fs::read_to_string(t.join("enc.pem")).unwrap().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY")
    );
    let dest = t.join("www");
    let d = dest.to_str().unwrap();
    let (cert, enc) = (t.join("cert.pem"), t.join("enc.pem"));
    let base = [
        "publish",
        d,
        "--key",
        key.to_str().unwrap(),
        "--base-url",
        "https://x.example/v",
        "--smime-cert",
        cert.to_str().unwrap(),
        "--smime-key",
        enc.to_str().unwrap(),
    ];
    fn join<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let said = refused(&r, &base, 6, "enc.pem");
    assert!(said.contains("encrypted") && said.contains("--smime-key-pass-file"), "{said}");
    let wrong = t.join("wrong");
    let said = refused(&r, &join(&base, &["--smime-key-pass-file", wrong.to_str().unwrap()]), 6, "enc.pem");
    assert!(said.contains("passphrase is wrong"), "{said}");
    let fifo = t.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    refused(&r, &join(&base, &["--smime-key-pass-file", fifo.to_str().unwrap()]), 6, "fifo");
    let verify = || {
        let o = Command::new("openssl")
            .args(["smime", "-verify", "-CAfile", cert.to_str().unwrap(), "-out", "/dev/null", "-in"])
            .arg(dest.join("image.list"))
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl smime -verify: {}", String::from_utf8_lossy(&o.stderr));
    };
    let pass = t.join("pass");
    r.ok(&join(&base, &["--smime-key-pass-file", pass.to_str().unwrap()]));
    verify();
    std::fs::remove_dir_all(&dest).unwrap();
    let out = r.command(&base).env("VMREPO_SMIME_KEY_PASSWORD", "correct horse").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    verify();
}

/// A published folder (`file://`) whose catalog or signature is a FIFO, a
/// link or /dev/zero: pull refuses it at once (exit 6, one line naming the
/// file), without opening it, and records nothing.
#[test]
fn pull_from_a_folder_refuses_a_catalog_that_is_no_regular_file() {
    if !have("mkfifo", "coreutils") || !have("timeout", "coreutils") {
        return;
    }
    let p = crate::pull::published(&[4000]);
    let site = crate::pull::site(&p.public);
    let catalog = p.dest.join("catalog.json");
    let real = p.src.tmp.path().join("real-catalog.json");
    std::fs::rename(&catalog, &real).unwrap();
    let url = format!("file://{}", p.dest.display());
    for (i, kind) in ["fifo", "link", "/dev/zero"].iter().enumerate() {
        let _ = std::fs::remove_file(&catalog);
        match *kind {
            "fifo" => assert!(Command::new("mkfifo").arg(&catalog).status().unwrap().success()),
            "link" => symlink(&real, &catalog).unwrap(),
            dev => symlink(dev, &catalog).unwrap(),
        }
        let said = refused(&site, &["pull", &url], 6, "catalog.json");
        assert!(said.contains("not a regular file"), "{i}: {said}");
    }
    std::fs::remove_file(&catalog).unwrap();
    std::fs::rename(&real, &catalog).unwrap();
    let sig = p.dest.join("catalog.json.minisig");
    std::fs::remove_file(&sig).unwrap();
    assert!(Command::new("mkfifo").arg(&sig).status().unwrap().success());
    refused(&site, &["pull", &url], 6, "catalog.json.minisig");
    assert!(site.listed().is_empty());
    assert!(!site.root.join(".vmrepo/sources.json").exists());
}
