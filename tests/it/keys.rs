//! `vmrepo keys`: SSH public keys made by the real `ssh-keygen` kept or
//! refused, listed with the fingerprints `ssh-keygen -lf` prints; the list
//! published and served signed, checked by `openssl dgst -sha256 -verify`
//! and `minisign -V`; the boot script run by `sh` against a web server,
//! installing a good list and keeping the old one otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::publish::keygen;
use crate::serve::Server;
use crate::util::{Repo, free_port, have, http_server};

/// `ssh-keygen -t TYPE [-b BITS]` into `dir/NAME` (no passphrase, comment
/// `NAME@test`): the public key's path, or `None` when this ssh-keygen no
/// longer makes that type.
fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> Option<PathBuf> {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", &format!("{name}@test"), "-f"])
        .arg(&key)
        .args(args)
        .output()
        .unwrap();
    out.status.success().then(|| dir.join(format!("{name}.pub")))
}

/// `ssh-keygen -lf FILE`: (bits, fingerprint, type).
fn keygen_lf(file: &Path) -> (u32, String, String) {
    let out = Command::new("ssh-keygen").arg("-lf").arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let kind = words.last().unwrap().trim_matches(['(', ')']).to_string();
    (words[0].parse().unwrap(), words[1].to_string(), kind)
}

fn tools(list: &[(&str, &str)]) -> bool {
    list.iter().all(|(t, p)| have(t, p))
}

fn add(r: &Repo, file: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["keys", "add", file.to_str().unwrap()];
    a.extend_from_slice(extra);
    // A FIFO must not make it wait: `timeout` ends a hang as a failure.
    let mut c = Command::new("timeout");
    c.arg("20").arg(crate::util::bin()).arg("--repo").arg(&r.root).args(&a);
    c.env("VMREPO_LOCK_WAIT", "60").output().unwrap()
}

fn fails_with(r: &Repo, file: &Path, code: i32, says: &str) -> String {
    let out = add(r, file, &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{}: {err}", file.display());
    assert!(err.contains(says), "{}: {err:?} does not say {says:?}", file.display());
    err
}

#[test]
fn keys_are_checked_with_ssh_keygens_keys_and_listed_as_it_prints_them() {
    if !tools(&[("ssh-keygen", "openssh-client"), ("timeout", "coreutils")]) {
        return;
    }
    let r = Repo::new();
    let d = r.scratch();
    let good: Vec<PathBuf> = [
        ("rsa3072", &["-t", "rsa", "-b", "3072"][..]),
        ("ed", &["-t", "ed25519"]),
        ("ec256", &["-t", "ecdsa", "-b", "256"]),
        ("ec521", &["-t", "ecdsa", "-b", "521"]),
    ]
    .iter()
    .map(|(n, a)| ssh_keygen(&d, n, a).expect("ssh-keygen makes rsa, ed25519 and ecdsa keys"))
    .collect();
    for k in &good {
        let v: serde_json::Value = serde_json::from_slice(&add(&r, k, &["--json"]).stdout)
            .unwrap_or_else(|e| panic!("{}: {e}", k.display()));
        let (bits, fp, kind) = keygen_lf(k);
        assert_eq!(
            (v["bits"].as_u64().unwrap() as u32, v["fingerprint"].as_str().unwrap()),
            (bits, fp.as_str())
        );
        assert_eq!(v["type"], kind);
        // Named by its comment.
        let stem = k.file_stem().unwrap().to_str().unwrap();
        assert_eq!(v["name"], format!("{stem}@test"));
    }
    // Refused: too short an RSA key, DSA (if ssh-keygen still makes it),
    // two keys in one file, garbage, a FIFO, a private key.
    let rsa1024 =
        ssh_keygen(&d, "rsa1024", &["-t", "rsa", "-b", "1024"]).expect("ssh-keygen makes 1024-bit RSA");
    fails_with(&r, &rsa1024, 6, "1024 bits: at least 2048");
    match ssh_keygen(&d, "dsa", &["-t", "dsa"]) {
        Some(dsa) => {
            fails_with(&r, &dsa, 6, "DSA");
        }
        None => eprintln!(
            "NOTICE: this ssh-keygen no longer makes DSA keys: that refusal is tested by the unit tests"
        ),
    }
    let two = d.join("two.pub");
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&good[1]).unwrap(),
        std::fs::read_to_string(&rsa1024).unwrap()
    );
    std::fs::write(&two, text).unwrap();
    fails_with(&r, &two, 6, "line 2: a second key");
    let junk = d.join("junk.pub");
    std::fs::write(&junk, "ssh-ed25519 not-base64!! x\n").unwrap();
    fails_with(&r, &junk, 6, "junk.pub: line 1: not an OpenSSH public key");
    std::fs::write(&junk, [0xffu8, 0, 1, 2]).unwrap();
    fails_with(&r, &junk, 6, "not text");
    let fifo = d.join("fifo.pub");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    fails_with(&r, &fifo, 6, "not a regular file");
    let private = std::fs::read_to_string(d.join("ed")).unwrap();
    let err = fails_with(&r, &d.join("ed"), 6, "private key");
    let secret_line = private.lines().nth(1).unwrap();
    assert!(!err.contains(&secret_line[..20]), "the private key was echoed: {err}");
    // The same key again, under another name: refused, naming the first.
    let err = String::from_utf8_lossy(&add(&r, &good[1], &["--name", "again"]).stderr).to_string();
    assert!(err.contains("already kept, as \"ed@test\""), "{err}");
    assert_eq!(add(&r, &good[1], &["--name", "again"]).status.code(), Some(5));
    // Standard input, named.
    let mut c = r.command(&["keys", "add", "-", "--name", "from-stdin"]);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let key = ssh_keygen(&d, "stdin", &["-t", "ed25519"]).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &std::fs::read(&key).unwrap()).unwrap();
    assert!(child.wait().unwrap().success());
    // list: each key's fingerprint as ssh-keygen -lf prints it for the kept file.
    let listed = r.json(&["keys", "list"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ec256@test", "ec521@test", "ed@test", "from-stdin", "rsa3072@test"]);
    for k in listed.as_array().unwrap() {
        let kept = r.root.join("keys").join(format!("{}.pub", k["name"].as_str().unwrap()));
        let (bits, fp, kind) = keygen_lf(&kept);
        assert_eq!(k["fingerprint"], fp);
        assert_eq!(k["bits"], bits);
        assert_eq!(k["type"], kind);
    }
    let text = r.ok(&["keys", "list"]);
    assert!(text.contains(&keygen_lf(&good[0]).1), "{text}");
    r.ok(&["keys", "rm", "from-stdin"]);
    r.fails(4, &["keys", "rm", "from-stdin"]);
    r.fails(6, &["keys", "rm", "../etc/passwd"]);
    assert_eq!(r.json(&["keys", "list"]).as_array().unwrap().len(), 4);
}

/// `openssl dgst -sha256 -verify PUB -signature SIG FILE` succeeds.
fn openssl_verifies(public_pem: &Path, sig: &Path, file: &Path) -> bool {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_pem)
        .arg("-signature")
        .arg(sig)
        .arg(file)
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "Verified OK"
}

fn minisign_verifies(public: &Path, file: &Path) -> bool {
    Command::new("minisign")
        .args(["-V", "-q", "-p"])
        .arg(public)
        .arg("-m")
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

/// A repository with two keys and the site's keys (minisign and RSA):
/// (repository, minisign secret, minisign public, RSA secret, RSA public, the expected list).
fn site() -> (Repo, PathBuf, PathBuf, PathBuf, PathBuf, String) {
    let r = Repo::new();
    let d = r.scratch();
    let (secret, public) = keygen(&r);
    let keydir = r.tmp.path().join("rsakeys");
    let v = r.json(&["key", "generate", "-o", keydir.to_str().unwrap(), "--name", "site", "--rsa"]);
    let rsa = PathBuf::from(v["rsa"]["secret"].as_str().unwrap());
    let rsa_pub = PathBuf::from(v["rsa"]["public"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&rsa).unwrap().permissions().mode() & 0o777, 0o600);
    let mut expected = String::new();
    for (n, a) in [("alice", &["-t", "ed25519"][..]), ("bob", &["-t", "rsa", "-b", "2048"])] {
        let k = ssh_keygen(&d, n, a).unwrap();
        r.ok(&["keys", "add", k.to_str().unwrap()]);
        expected.push_str(&std::fs::read_to_string(&k).unwrap());
    }
    (r, secret, public, rsa, rsa_pub, expected)
}

#[test]
fn publish_signs_the_list_for_openssl_and_minisign() {
    if !tools(&[("ssh-keygen", "openssh-client"), ("openssl", "openssl"), ("minisign", "minisign")]) {
        return;
    }
    let (r, secret, public, rsa, rsa_pub, expected) = site();
    let dest = r.tmp.path().join("pub");
    crate::publish::publish(&r, &dest, &secret, &["--keys-rsa-key", rsa.to_str().unwrap()]);
    let list = dest.join("keys/authorized_keys");
    assert_eq!(std::fs::read_to_string(&list).unwrap(), expected);
    let sig = dest.join("keys/authorized_keys.sig");
    let published_pub = dest.join("keys/authorized_keys.pub.pem");
    assert!(openssl_verifies(&rsa_pub, &sig, &list), "openssl verifies with the site's public key");
    assert!(openssl_verifies(&published_pub, &sig, &list), "and with the published one");
    assert_eq!(std::fs::read(&published_pub).unwrap(), std::fs::read(&rsa_pub).unwrap());
    assert!(minisign_verifies(&public, &list));
    // A changed byte fails both.
    let bad = r.tmp.path().join("tampered");
    std::fs::write(&bad, expected.replacen("ssh-ed25519", "ssh-ed25519 ", 1)).unwrap();
    assert!(!openssl_verifies(&rsa_pub, &sig, &bad));
    std::fs::copy(dest.join("keys/authorized_keys.minisig"), r.tmp.path().join("tampered.minisig")).unwrap();
    assert!(!minisign_verifies(&public, &bad));
    // Without the RSA key: minisign only, said in the report.
    let dest2 = r.tmp.path().join("pub2");
    let v = crate::publish::publish(&r, &dest2, &secret, &[]);
    let skipped = v["exports_skipped"].to_string();
    assert!(skipped.contains("ssh keys rsa signature"), "{skipped}");
    assert!(!dest2.join("keys/authorized_keys.sig").exists());
    assert!(minisign_verifies(&public, &dest2.join("keys/authorized_keys")));
    // The last key removed: an empty list, still signed, replaces the old one.
    r.ok(&["keys", "rm", "alice@test"]);
    r.ok(&["keys", "rm", "bob@test"]);
    crate::publish::publish(&r, &dest, &secret, &["--keys-rsa-key", rsa.to_str().unwrap()]);
    assert_eq!(std::fs::read(&list).unwrap(), b"");
    assert!(openssl_verifies(&rsa_pub, &sig, &list));
    // A repository that never had keys publishes none.
    let r2 = Repo::new();
    let dest3 = r2.tmp.path().join("pub");
    crate::publish::publish(&r2, &dest3, &secret, &[]);
    assert!(!dest3.join("keys").exists());
}

fn curl(url: &str, out: &Path) -> u16 {
    let o =
        Command::new("curl").args(["-s", "-o"]).arg(out).args(["-w", "%{http_code}", url]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).parse().unwrap_or(0)
}

#[test]
fn serve_answers_the_signed_list() {
    if !tools(&[
        ("ssh-keygen", "openssh-client"),
        ("openssl", "openssl"),
        ("minisign", "minisign"),
        ("curl", "curl"),
    ]) {
        return;
    }
    let (r, secret, public, rsa, rsa_pub, expected) = site();
    let d = r.tmp.path().join("got");
    std::fs::create_dir_all(&d).unwrap();
    {
        // Without an RSA key: the list and its minisign signature, no .sig;
        // without any key, nothing.
        let s = Server::start(&r, &["--sign-key", secret.to_str().unwrap()]);
        assert_eq!(curl(&format!("{}/keys/authorized_keys.minisig", s.url), &d.join("m")), 200);
        assert_eq!(curl(&format!("{}/keys/authorized_keys.sig", s.url), &d.join("m")), 404);
        let s = Server::start(&r, &[]);
        assert_eq!(curl(&format!("{}/keys/authorized_keys", s.url), &d.join("m")), 404);
    }
    {
        let s = Server::start(
            &r,
            &["--sign-key", secret.to_str().unwrap(), "--keys-rsa-key", rsa.to_str().unwrap()],
        );
        for f in
            ["authorized_keys", "authorized_keys.sig", "authorized_keys.minisig", "authorized_keys.pub.pem"]
        {
            assert_eq!(curl(&format!("{}/keys/{f}", s.url), &d.join(f)), 200, "{f}");
        }
        let list = d.join("authorized_keys");
        assert_eq!(std::fs::read_to_string(&list).unwrap(), expected);
        assert!(openssl_verifies(&rsa_pub, &d.join("authorized_keys.sig"), &list));
        assert!(openssl_verifies(&d.join("authorized_keys.pub.pem"), &d.join("authorized_keys.sig"), &list));
        assert!(minisign_verifies(&public, &list));
        // A key removed is gone from the next answer, signed again.
        r.ok(&["keys", "rm", "bob@test"]);
        assert_eq!(curl(&format!("{}/keys/authorized_keys", s.url), &list), 200);
        assert_eq!(curl(&format!("{}/keys/authorized_keys.sig", s.url), &d.join("authorized_keys.sig")), 200);
        assert_eq!(
            std::fs::read_to_string(&list).unwrap(),
            expected.lines().next().unwrap().to_string() + "\n"
        );
        assert!(openssl_verifies(&rsa_pub, &d.join("authorized_keys.sig"), &list));
        r.ok(&["keys", "rm", "alice@test"]);
        assert_eq!(curl(&format!("{}/keys/authorized_keys", s.url), &list), 404);
    }
}

#[test]
fn the_boot_script_installs_a_good_list_and_keeps_the_old_one_otherwise() {
    if !tools(&[
        ("ssh-keygen", "openssh-client"),
        ("openssl", "openssl"),
        ("minisign", "minisign"),
        ("curl", "curl"),
        ("python3", "python3"),
    ]) {
        return;
    }
    let (r, secret, _public, rsa, rsa_pub, expected) = site();
    let dest = r.tmp.path().join("pub");
    crate::publish::publish(&r, &dest, &secret, &["--keys-rsa-key", rsa.to_str().unwrap()]);
    let port = free_port();
    let web = http_server(&dest, port);
    let homes = r.tmp.path().join("homes");
    let url = format!("http://127.0.0.1:{port}/keys/authorized_keys");
    let script = r.ok(&[
        "keys",
        "boot-script",
        "--url",
        &url,
        "--pubkey",
        rsa_pub.to_str().unwrap(),
        "--test-home-root",
        homes.to_str().unwrap(),
    ]);
    assert!(script.starts_with("#!/bin/sh\n# vmrepo keys boot-script\n"));
    let script_file = r.tmp.path().join("keys.sh");
    std::fs::write(&script_file, &script).unwrap();
    let old = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFnCx4zmxxfj5Jz757+bi0dCaMtAygSJRF0KYHdpwc7K old@list\n";
    for u in ["root", "star"] {
        std::fs::create_dir_all(homes.join(u).join(".ssh")).unwrap();
        std::fs::write(homes.join(u).join(".ssh/authorized_keys"), old).unwrap();
    }
    let run = || {
        let o = Command::new("sh").arg(&script_file).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let installed = |u: &str| std::fs::read_to_string(homes.join(u).join(".ssh/authorized_keys")).unwrap();
    let list = dest.join("keys/authorized_keys");
    let sig = dest.join("keys/authorized_keys.sig");
    // A tampered list: refused, the old list kept.
    std::fs::write(&list, format!("{expected}ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFnCx4zmxxfj5Jz757+bi0dCaMtAygSJRF0KYHdpwc7K evil\n")).unwrap();
    let (ok, said) = run();
    assert!(!ok && said.contains("does not verify"), "{said}");
    assert_eq!(installed("root"), old);
    // A bad signature.
    std::fs::write(&list, &expected).unwrap();
    let good_sig = std::fs::read(&sig).unwrap();
    let mut bad_sig = good_sig.clone();
    bad_sig[10] ^= 1;
    std::fs::write(&sig, &bad_sig).unwrap();
    let (ok, said) = run();
    assert!(!ok && said.contains("does not verify"), "{said}");
    // A list that is too big (a hostile server).
    std::fs::write(&list, "ssh-ed25519 AAAA\n".repeat(70_000)).unwrap();
    let (ok, said) = run();
    assert!(!ok && (said.contains("larger than") || said.contains("cannot download")), "{said}");
    std::fs::write(&list, &expected).unwrap();
    std::fs::write(&sig, &good_sig).unwrap();
    assert_eq!(installed("star"), old);
    // The good list: installed for both, mode 600, no temporary file left.
    let (ok, said) = run();
    assert!(ok, "{said}");
    for u in ["root", "star"] {
        assert_eq!(installed(u), expected);
        let md = std::fs::metadata(homes.join(u).join(".ssh/authorized_keys")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(homes.join(u).join(".ssh")).unwrap().count(), 1);
    }
    // The server down: the list installed stays, and the script says why.
    drop(web);
    let (ok, said) = run();
    assert!(!ok && said.contains("cannot download"), "{said}");
    assert_eq!(installed("root"), expected);
    // A link as .ssh is not written through.
    let star_ssh = homes.join("star/.ssh");
    std::fs::rename(&star_ssh, homes.join("star/real")).unwrap();
    std::os::unix::fs::symlink(homes.join("root/.ssh"), &star_ssh).unwrap();
    let web = http_server(&dest, port);
    let (ok, said) = run();
    assert!(!ok && said.contains("star: no home folder, or a link"), "{said}");
    drop(web);
}
