//! key generate --openpgp and publish --openpgp-key: every clearsigned file
//! verified by the real `gpgv` (a line with trailing whitespace included),
//! the simplestreams tree read by python-simplestreams' `sstream-query` and
//! `sstream-mirror` (from PyPI, in a virtualenv under target/), virt-builder's
//! index listed by Debian's `virt-builder` (unpacked into target/ when it
//! cannot be installed beside qemu-utils) and checked by
//! `virt-index-validate`; a tampered file refused by each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{Repo, have, pattern_file, sha256sum};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Two raw images for kvm (one with a trailing-blank description line) and a qcow2 for xen.
fn populate(r: &Repo) {
    for (i, size) in ["8GB", "2GB"].iter().enumerate() {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 70_000 + 1000 * i, i as u64);
        r.add(&f, "kvm", &["--max-size", size]);
    }
    let q = r.scratch().join("x.qcow2");
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&q).arg("64M").output();
    if out.is_ok_and(|o| o.status.success()) {
        r.add(&q, "xen", &["--max-size", "4GB"]);
    }
}

struct Keys {
    minisign: PathBuf,
    secret: PathBuf,
    armored: PathBuf,
    keyring: PathBuf,
    fingerprint: String,
}

fn keygen(r: &Repo) -> Keys {
    let dir = r.tmp.path().join("keys");
    let out = r.ok(&["key", "generate", "--openpgp", "-o", dir.to_str().unwrap(), "--name", "site"]);
    // The minisign key's two lines, then the keyring and the fingerprint.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[2], dir.join("site.openpgp.gpg").to_str().unwrap());
    Keys {
        minisign: dir.join("site.key"),
        secret: dir.join("site.openpgp.key"),
        armored: dir.join("site.openpgp.asc"),
        keyring: dir.join("site.openpgp.gpg"),
        fingerprint: lines[3].to_string(),
    }
}

fn publish(r: &Repo, dest: &Path, k: &Keys) -> serde_json::Value {
    r.json(&[
        "publish",
        dest.to_str().unwrap(),
        "--key",
        k.minisign.to_str().unwrap(),
        "--openpgp-key",
        k.secret.to_str().unwrap(),
    ])
}

/// `gpgv --keyring K -` with the file on standard input (as python-simplestreams runs it).
fn gpgv(keyring: &Path, file: &Path) -> Output {
    Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg("-")
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap()
}

const SIGNED: [&str; 3] =
    ["index.asc", "streams/v1/index.sjson", "streams/v1/gov.bnl.star.vmrepo:images.sjson"];

#[test]
fn gpgv_verifies_every_clearsigned_file_and_refuses_a_tampered_one() {
    if !have("gpgv", "gpgv") || !have("gpg", "gpg") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let k = keygen(&r);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&k.secret).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(k.fingerprint.len(), 40);
    // gpg reads the files as what they claim to be: the fingerprint is the key's.
    let home = tempfile::tempdir().unwrap();
    let listed = Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(&k.armored)
        .output()
        .unwrap();
    assert!(said(&listed).contains(&format!("fpr:::::::::{}:", k.fingerprint)), "{}", said(&listed));
    let imported = Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args(["--batch", "--import"])
        .arg(&k.secret)
        .output()
        .unwrap();
    assert!(imported.status.success(), "gpg --import of the secret key: {}", said(&imported));
    // Never over existing files, never inside the repository.
    r.fails(
        5,
        &[
            "key",
            "generate",
            "--openpgp",
            "-o",
            k.secret.parent().unwrap().to_str().unwrap(),
            "--name",
            "site",
        ],
    );
    let inside = r.root.join("keys");
    r.fails(6, &["key", "generate", "--openpgp", "-o", inside.to_str().unwrap()]);
    assert!(!inside.exists());

    let dest = r.tmp.path().join("pub");
    let out = publish(&r, &dest, &k);
    // Nothing that the OpenPGP key signs is skipped (the HEPiX list, which
    // needs an X.509 certificate, is another matter).
    let skipped: Vec<&str> =
        out["exports_skipped"].as_array().unwrap().iter().filter_map(|e| e["export"].as_str()).collect();
    assert!(skipped.iter().all(|e| *e == "hepix"), "{out}");
    for f in SIGNED {
        let o = gpgv(&k.keyring, &dest.join(f));
        assert!(o.status.success(), "gpgv refused {f}: {}", said(&o));
        assert!(said(&o).contains("Good signature"), "{}", said(&o));
    }
    // A site mirror (`vmrepo mirror`) keeps the clearsigned files as they
    // are: gpgv verifies the mirror's copies with the publisher's keyring.
    let mirror = r.tmp.path().join("mirror");
    let public = k.minisign.with_extension("pub");
    r.ok(&[
        "mirror",
        &format!("file://{}", dest.display()),
        mirror.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    for f in SIGNED {
        assert_eq!(std::fs::read(mirror.join(f)).unwrap(), std::fs::read(dest.join(f)).unwrap(), "{f}");
        let o = gpgv(&k.keyring, &mirror.join(f));
        assert!(o.status.success() && said(&o).contains("Good signature"), "mirrored {f}: {}", said(&o));
    }
    // virt-builder's notes hold lines that end in a space (an empty line of
    // notes is one space): hashed without it, as gpgv does.
    let asc = std::fs::read_to_string(dest.join("index.asc")).unwrap();
    assert!(asc.lines().any(|l| l == " "), "no line with trailing whitespace to test:\n{asc}");

    // One changed byte is refused: a digit of an SHA-256 in the products,
    // a word of the notes in virt-builder's index.
    let products = dest.join(SIGNED[2]);
    let text = std::fs::read_to_string(&products).unwrap();
    let tampered = r.tmp.path().join("tampered.sjson");
    let sha = &text.split("\"sha256\": \"").nth(1).unwrap()[..64];
    let other = format!("{}{}", if sha.starts_with('0') { "1" } else { "0" }, &sha[1..]);
    std::fs::write(&tampered, text.replacen(sha, &other, 1)).unwrap();
    assert_ne!(std::fs::read(&tampered).unwrap(), text.as_bytes());
    assert_eq!(std::fs::metadata(&tampered).unwrap().len(), text.len() as u64, "one byte changed, not added");
    let o = gpgv(&k.keyring, &tampered);
    assert!(!o.status.success() && said(&o).contains("BAD signature"), "{}", said(&o));
    let tampered_index = r.tmp.path().join("tampered.asc");
    std::fs::write(&tampered_index, asc.replacen(" STAR library", " STAR librarY", 1)).unwrap();
    assert!(!gpgv(&k.keyring, &tampered_index).status.success());
    // Another key's keyring verifies nothing.
    let other = r.tmp.path().join("other");
    r.ok(&["key", "generate", "--openpgp", "-o", other.to_str().unwrap()]);
    assert!(!gpgv(&other.join("vmrepo.openpgp.gpg"), &dest.join("index.asc")).status.success());

    // Without an OpenPGP key: the unsigned forms only, and the report says so.
    let plain = r.tmp.path().join("plain");
    let out = r.json(&["publish", plain.to_str().unwrap(), "--key", k.minisign.to_str().unwrap()]);
    let skipped: Vec<&str> =
        out["exports_skipped"].as_array().unwrap().iter().map(|s| s["export"].as_str().unwrap()).collect();
    assert_eq!(skipped, ["simplestreams .sjson", "virt-builder index.asc", "hepix"], "{out}");
    for f in ["index", "streams/v1/index.json", "streams/v1/gov.bnl.star.vmrepo:images.json"] {
        assert!(plain.join(f).is_file(), "{f}");
    }
    for f in SIGNED {
        assert!(!plain.join(f).exists(), "{f}");
    }
}

#[test]
fn an_encrypted_openpgp_key_needs_its_password() {
    if !have("gpgv", "gpgv") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let dir = r.tmp.path().join("keys");
    let out = r
        .command(&["key", "generate", "--openpgp", "-o", dir.to_str().unwrap(), "--name", "locked"])
        .env("VMREPO_KEY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    assert!(std::fs::read_to_string(dir.join("locked.openpgp.key")).unwrap().contains("PRIVATE KEY BLOCK"));
    let dest = r.tmp.path().join("pub");
    let args = ["publish", dest.to_str().unwrap()];
    let o = r
        .command(&args)
        .env("VMREPO_KEY", dir.join("locked.key"))
        .env("VMREPO_OPENPGP_KEY", dir.join("locked.openpgp.key"))
        .env("VMREPO_KEY_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", said(&o));
    assert!(!dest.join("catalog.json").exists(), "nothing published with a wrong password");
    let o = r
        .command(&args)
        .env("VMREPO_KEY", dir.join("locked.key"))
        .env("VMREPO_OPENPGP_KEY", dir.join("locked.openpgp.key"))
        .env("VMREPO_KEY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    let v = gpgv(&dir.join("locked.openpgp.gpg"), &dest.join("streams/v1/index.sjson"));
    assert!(v.status.success(), "{}", said(&v));
    // A file that is no OpenPGP key is refused by name before anything is written.
    let junk = r.tmp.path().join("junk.openpgp.key");
    std::fs::write(
        &junk,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nAAAA\n-----END PGP PRIVATE KEY BLOCK-----\n",
    )
    .unwrap();
    let dest2 = r.tmp.path().join("pub2");
    let o = r
        .command(&["publish", dest2.to_str().unwrap(), "--openpgp-key", junk.to_str().unwrap()])
        .env("VMREPO_KEY", dir.join("locked.key"))
        .env("VMREPO_KEY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", said(&o));
    let err = said(&o);
    assert!(err.contains("junk.openpgp.key"), "{err}");
    assert!(!dest2.exists(), "nothing written with a bad OpenPGP key");
}

// ---------------------------------------------------------------------------
// simplestreams

/// `python3 -m http.server` serving `dir` on a free port of 127.0.0.1, once it listens.
fn serve(dir: &Path) -> (crate::util::WebServer, u16) {
    let port = crate::util::free_port();
    (crate::util::http_server(dir, port), port)
}

/// A virtualenv under target/ with python-simplestreams from PyPI, made
/// once (in place: a virtualenv's scripts name its path, so it cannot be
/// renamed; a marker file says it is complete).
fn simplestreams_venv() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-simplestreams");
    let ready = venv.join("vmrepo-ready");
    if ready.is_file() {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made =
        Command::new("python3").args(["-m", "venv"]).arg(&venv).output().is_ok_and(|o| o.status.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "python-simplestreams"])
                .output()
                .is_ok_and(|o| o.status.success());
    if !made {
        let _ = std::fs::remove_dir_all(&venv);
        assert!(
            !ci(),
            "this test needs python-simplestreams from PyPI in a virtualenv (python3-venv, network)"
        );
        eprintln!("SKIPPED: cannot make a virtualenv with python-simplestreams");
        return None;
    }
    std::fs::write(&ready, "").unwrap();
    Some(venv)
}

#[test]
fn sstream_query_and_mirror_read_the_signed_streams_and_refuse_a_tampered_one() {
    if !have("gpgv", "gpgv") || !have("python3", "python3") {
        return;
    }
    let Some(venv) = simplestreams_venv() else { return };
    let r = Repo::new();
    populate(&r);
    let k = keygen(&r);
    let dest = r.tmp.path().join("pub");
    publish(&r, &dest, &k);
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    let images = catalog["images"].as_array().unwrap();
    assert!(images.len() >= 2);
    let (_server, port) = serve(&dest);
    let url = format!("http://127.0.0.1:{port}/streams/v1/index.sjson");

    let query = |url: &str| {
        Command::new(venv.join("bin/sstream-query"))
            .arg("--keyring")
            .arg(&k.keyring)
            .args([
                "--output-format",
                "%(product_name)s %(version_name)s %(ftype)s %(sha256)s %(size)s %(path)s",
            ])
            .arg(url)
            .output()
            .unwrap()
    };
    let o = query(&url);
    assert!(o.status.success(), "sstream-query: {}", said(&o));
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(listed.lines().count(), images.len(), "{listed}");
    for i in images {
        let path = i["path"].as_str().unwrap();
        let line = listed
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not listed:\n{listed}"));
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            f[0],
            format!("gov.bnl.star.vmrepo:{}:{}", i["vm"].as_str().unwrap(), i["name"].as_str().unwrap())
        );
        assert_eq!(f[2], i["format"].as_str().unwrap());
        assert_eq!(f[3], sha256sum(&dest.join(path)), "{line}");
        assert_eq!(f[4], std::fs::metadata(dest.join(path)).unwrap().len().to_string());
    }
    // Over file:// too.
    let o = query(&format!("file://{}/streams/v1/index.sjson", dest.display()));
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout) == listed, "{}", said(&o));

    // sstream-mirror copies every image, checking each against the stream.
    let mirror = r.tmp.path().join("mirror");
    let o = Command::new(venv.join("bin/sstream-mirror"))
        .arg("--keyring")
        .arg(&k.keyring)
        .arg(&url)
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(o.status.success(), "sstream-mirror: {}", said(&o));
    for i in images {
        let path = i["path"].as_str().unwrap();
        assert_eq!(sha256sum(&mirror.join(path)), i["sha256"].as_str().unwrap(), "{path}");
    }
    assert!(mirror.join(SIGNED[2]).is_file());

    // A tampered stream: one digit of a product's sha256 in the signed products.
    let bad = r.tmp.path().join("bad");
    std::fs::create_dir_all(bad.join("streams/v1")).unwrap();
    std::os::unix::fs::symlink(dest.join("vm"), bad.join("vm")).unwrap();
    std::fs::copy(dest.join(SIGNED[1]), bad.join(SIGNED[1])).unwrap();
    let text = std::fs::read_to_string(dest.join(SIGNED[2])).unwrap();
    let sha = images[0]["sha256"].as_str().unwrap();
    let other = format!("{}{}", if sha.starts_with('0') { "1" } else { "0" }, &sha[1..]);
    std::fs::write(bad.join(SIGNED[2]), text.replacen(sha, &other, 1)).unwrap();
    let o = query(&format!("file://{}/streams/v1/index.sjson", bad.display()));
    assert!(!o.status.success(), "sstream-query took a tampered stream: {}", said(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&other), "{}", said(&o));
    // The untouched copy is read: the refusal is the signature's.
    std::fs::write(bad.join(SIGNED[2]), &text).unwrap();
    assert!(query(&format!("file://{}/streams/v1/index.sjson", bad.display())).status.success());
}

// ---------------------------------------------------------------------------
// virt-builder

/// Debian's guestfs-tools and the libraries it needs beyond this machine's,
/// unpacked under target/ (the package cannot be installed beside a newer
/// qemu-utils): (bin folder, library path). `virt-builder` from PATH if there.
fn virt_builder() -> Option<(PathBuf, String)> {
    if have_quiet("virt-builder") && have_quiet("virt-index-validate") {
        return Some((PathBuf::new(), String::new()));
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guestfs-tools");
    let lib = format!("{0}/usr/lib/x86_64-linux-gnu:{0}/lib/x86_64-linux-gnu", root.display());
    if root.join("usr/bin/virt-builder").is_file() {
        return Some((root.join("usr/bin"), lib));
    }
    let tmp = root.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("debs")).unwrap();
    let packages =
        ["guestfs-tools", "libguestfs0", "libvirt0", "libfuse2", "libnl-3-200", "libyajl2", "libssh-4"];
    let download =
        || Command::new("apt-get").arg("download").args(packages).current_dir(tmp.join("debs")).output();
    let mut ok = download().is_ok_and(|o| o.status.success());
    if !ok && Command::new("apt-get").args(["update", "-qq"]).output().is_ok_and(|o| o.status.success()) {
        ok = download().is_ok_and(|o| o.status.success());
    }
    if ok {
        for deb in std::fs::read_dir(tmp.join("debs")).unwrap().flatten() {
            ok &= Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&tmp)
                .output()
                .is_ok_and(|o| o.status.success());
        }
    }
    let runs = ok
        && Command::new(tmp.join("usr/bin/virt-builder"))
            .arg("--version")
            .env("LD_LIBRARY_PATH", lib.replace(root.to_str().unwrap(), tmp.to_str().unwrap()))
            .output()
            .is_ok_and(|o| o.status.success());
    if !runs {
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            !ci(),
            "this test needs virt-builder: apt-get download {} (+ dpkg-deb -x) failed",
            packages.join(" ")
        );
        eprintln!("SKIPPED: cannot unpack and run Debian's virt-builder");
        return None;
    }
    if std::fs::rename(&tmp, &root).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Some((root.join("usr/bin"), lib))
}

fn have_quiet(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn virt_builder_lists_the_signed_index_and_refuses_a_tampered_one() {
    if !have("gpg", "gpg") || !have("gpgv", "gpgv") {
        return;
    }
    let Some((bin, lib)) = virt_builder() else { return };
    let r = Repo::new();
    populate(&r);
    let k = keygen(&r);
    let dest = r.tmp.path().join("pub");
    publish(&r, &dest, &k);
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    let images = catalog["images"].as_array().unwrap();

    let home = r.tmp.path().join("vbhome");
    let tool = |name: &str| -> Command {
        let mut c =
            Command::new(if bin.as_os_str().is_empty() { PathBuf::from(name) } else { bin.join(name) });
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CONFIG_DIRS", home.join("no-system-config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("GNUPGHOME", home.join("gnupg"));
        if !lib.is_empty() {
            c.env("LD_LIBRARY_PATH", &lib);
        }
        c
    };
    std::fs::create_dir_all(home.join("gnupg")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home.join("gnupg"), std::fs::Permissions::from_mode(0o700)).unwrap();

    // libguestfs' own strict parser takes the unsigned index.
    let o = tool("virt-index-validate").arg(dest.join("index")).output().unwrap();
    assert!(o.status.success(), "virt-index-validate: {}", said(&o));

    // A site's repository file: the signed index and the armored public key.
    let repos = home.join("config/virt-builder/repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    let conf = |index: &Path| {
        std::fs::write(
            repos.join("star.conf"),
            format!("[star]\nuri=file://{}\ngpgkey=file://{}\n", index.display(), k.armored.display()),
        )
        .unwrap();
    };
    conf(&dest.join("index.asc"));
    let o = tool("virt-builder").args(["--list", "--list-format", "json", "--gpg", "gpg"]).output().unwrap();
    assert!(o.status.success(), "virt-builder --list: {}", said(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let templates = listed["templates"].as_array().unwrap();
    assert_eq!(templates.len(), images.len(), "{listed}");
    for i in images {
        let name = i["name"].as_str().unwrap();
        let t =
            templates.iter().find(|t| t["os-version"] == name).unwrap_or_else(|| panic!("{name}: {listed}"));
        assert_eq!(t["arch"], "x86_64");
        assert_eq!(t["compressed-size"].as_str().map(str::to_string), Some(i["size"].to_string()));
        assert_eq!(t["size"], i["virtual_size"]);
        assert_eq!(t["osinfo"], i["osinfo"]);
        let notes = t["notes"]["C"].as_str().unwrap();
        assert!(notes.contains("\n\n"), "an empty line of notes stays: {notes:?}");
    }
    // The SHA-512 virt-builder checks the download against is the image's.
    let index = std::fs::read_to_string(dest.join("index")).unwrap();
    for i in images {
        let out = Command::new("sha512sum").arg(dest.join(i["path"].as_str().unwrap())).output().unwrap();
        let sum = String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string();
        assert!(
            index.contains(&format!("file={}\nchecksum[sha512]={sum}\n", i["path"].as_str().unwrap())),
            "{index}"
        );
    }

    // --source with --fingerprint, the key imported in the user's keyring.
    let o = Command::new("gpg")
        .env("GNUPGHOME", home.join("gnupg"))
        .args(["--batch", "--import"])
        .arg(&k.armored)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    std::fs::remove_file(repos.join("star.conf")).unwrap();
    let source = format!("file://{}/index.asc", dest.display());
    let list_source = |source: &str, fp: &str| {
        tool("virt-builder")
            .args(["--list", "--gpg", "gpg", "--source", source, "--fingerprint", fp])
            .output()
            .unwrap()
    };
    let o = list_source(&source, &k.fingerprint);
    assert!(o.status.success(), "virt-builder --source --fingerprint: {}", said(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), images.len(), "{}", said(&o));
    let wrong = format!("{}{}", if k.fingerprint.starts_with('0') { "1" } else { "0" }, &k.fingerprint[1..]);
    assert!(!list_source(&source, &wrong).status.success(), "another fingerprint was accepted");

    // A tampered index: one digit of a size.
    let bad = r.tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let asc = std::fs::read_to_string(dest.join("index.asc")).unwrap();
    let size_line = asc.lines().find(|l| l.starts_with("compressed_size=")).unwrap();
    let changed =
        format!("{}{}", &size_line[..size_line.len() - 1], if size_line.ends_with('0') { "1" } else { "0" });
    std::fs::write(bad.join("index.asc"), asc.replacen(size_line, &changed, 1)).unwrap();
    let o = list_source(&format!("file://{}/index.asc", bad.display()), &k.fingerprint);
    assert!(!o.status.success(), "virt-builder took a tampered index: {}", said(&o));
    conf(&bad.join("index.asc"));
    let o = tool("virt-builder").args(["--list", "--gpg", "gpg"]).output().unwrap();
    assert!(!o.status.success(), "virt-builder took a tampered index from repos.d: {}", said(&o));
}
