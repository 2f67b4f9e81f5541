//! publish --smime-cert --smime-key: the HEPiX image list `image.list`,
//! signed with a certificate of a CA made here by `openssl`, verified by
//! `openssl smime -verify`, and read by the real atrope (PyPI, in a
//! virtualenv under target/): verified and trusted, its images downloaded
//! by `atrope cache-sync` and checked against their SHA-512; a
//! tampered list is refused by both, a tampered image by atrope.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::util::{Repo, have, pattern_file, sh, sha256sum};

/// The atrope release the test runs.
const ATROPE: &str = "atrope==2.0.0";

use crate::util::{free_port, http_server as serve};

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A CA and two endorsers it signed, made by `openssl` in `dir`.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    /// RSA: (certificate, key)
    rsa: (PathBuf, PathBuf),
    /// EC P-256, in SEC1 form
    ec: (PathBuf, PathBuf),
    /// RSA, for TLS servers only (extended key usage serverAuth)
    server_only: (PathBuf, PathBuf),
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    sh(
        dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
         -subj '/DC=org/DC=example/CN=STAR Test CA' \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
    );
    std::fs::write(
        dir.join("smime.ext"),
        "keyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=emailProtection\n\
         subjectAltName=email:vm-admin@example.org\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server.ext"),
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let issue = |name: &str, newkey: &str, subject: &str, ext: &str| {
        sh(
            dir,
            &format!(
                "openssl req -new {newkey} -nodes -keyout {name}.key -out {name}.csr -subj '{subject}' 2>/dev/null && \
                 openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 20 \
                 -extfile {ext} -out {name}.pem 2>/dev/null"
            ),
        );
        (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))
    };
    let rsa =
        issue("endorser", "-newkey rsa:2048", "/DC=org/DC=example/O=STAR/CN=vm.example.org", "smime.ext");
    let ec = issue(
        "ec",
        "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
        "/C=US/O=BNL/OU=STAR/CN=STAR VM Endorser/emailAddress=star@example.org",
        "smime.ext",
    );
    // The EC key in its SEC1 form ("EC PRIVATE KEY"), as `openssl ecparam -genkey` writes it.
    sh(dir, "openssl ec -in ec.key -out ec-sec1.key 2>/dev/null");
    let server_only =
        issue("server", "-newkey rsa:2048", "/DC=org/DC=example/CN=www.example.org", "server.ext");
    Pki {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.pem"),
        rsa,
        ec: (ec.0, dir.join("ec-sec1.key")),
        server_only,
    }
}

/// The subject or issuer as OpenSSL's one-line (compat) form prints it.
fn dn(cert: &Path, which: &str) -> String {
    let out = sh(
        cert.parent().unwrap(),
        &format!("openssl x509 -noout -{which} -nameopt compat -in '{}'", cert.display()),
    );
    out.trim().strip_prefix(&format!("{which}=")).unwrap().to_string()
}

/// `openssl smime -verify -CAfile ca.pem -in LIST`: the signed content, or the error.
fn openssl_verify(list: &Path, ca: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new("openssl")
        .args(["smime", "-verify", "-CAfile"])
        .arg(ca)
        .arg("-in")
        .arg(list)
        .output()
        .unwrap();
    if o.status.success() { Ok(o.stdout) } else { Err(said(&o)) }
}

/// Three images, two for kvm and one for xen.
fn populate(r: &Repo) {
    for (i, (vm, size)) in [("kvm", "8GB"), ("kvm", "2GB"), ("xen", "4GB")].iter().enumerate() {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 90_000 + 1000 * i, 40 + i as u64);
        r.add(&f, vm, &["--max-size", size]);
    }
}

fn minisign_key(r: &Repo) -> PathBuf {
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap()]);
    keys.join("vmrepo.key")
}

fn publish(r: &Repo, dest: &Path, key: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap()];
    a.extend_from_slice(extra);
    r.json(&a)
}

#[test]
fn openssl_verifies_the_image_list_and_its_fields_are_the_images() {
    if !have("openssl", "openssl") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let key = minisign_key(&r);
    let pki = make_pki(&r.tmp.path().join("pki"));
    let dest = r.tmp.path().join("pub");
    let base = "https://vm.example.org/star";
    let (cert, skey) = (pki.rsa.0.to_str().unwrap(), pki.rsa.1.to_str().unwrap());
    let out = publish(&r, &dest, &key, &["--base-url", base, "--smime-cert", cert, "--smime-key", skey]);
    assert!(!out["exports_skipped"].as_array().unwrap().iter().any(|s| s["export"] == "hepix"), "{out}");
    let list = dest.join("image.list");
    let content = openssl_verify(&list, &pki.ca).unwrap_or_else(|e| panic!("openssl refused the list: {e}"));
    let doc: serde_json::Value = serde_json::from_slice(&content).unwrap();
    let l = &doc["hv:imagelist"];
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(l["dc:date:expires"], catalog["expires"]);
    assert_eq!(l["dc:date:created"], catalog["generated"]);
    assert_eq!(l["hv:uri"], format!("{base}/image.list"));
    let x509 = &l["hv:endorser"]["hv:x509"];
    assert_eq!(x509["hv:dn"], dn(&pki.rsa.0, "subject"));
    assert_eq!(x509["hv:ca"], dn(&pki.rsa.0, "issuer"));
    assert_eq!(x509["hv:ca"], dn(&pki.ca, "subject"));
    assert_eq!(x509["hv:email"], "vm-admin@example.org");
    assert_eq!(x509["dc:creator"], "vm.example.org");
    let images = l["hv:images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    let mut ids = Vec::new();
    for (img, entry) in images.iter().zip(catalog["images"].as_array().unwrap()) {
        let i = &img["hv:image"];
        let path = dest.join(entry["path"].as_str().unwrap());
        let sha512 = sh(&dest, &format!("sha512sum '{}'", path.display()));
        assert_eq!(i["sl:checksum:sha512"], sha512.split_whitespace().next().unwrap(), "{}", path.display());
        assert_eq!(i["hv:size"], std::fs::metadata(&path).unwrap().len());
        assert_eq!(i["hv:uri"], format!("{base}/{}", entry["path"].as_str().unwrap()));
        assert_eq!(i["dc:title"], entry["name"]);
        assert_eq!(
            (i["sl:osname"].as_str(), i["sl:osversion"].as_str()),
            (Some("Scientific Linux"), Some("5.3"))
        );
        assert_eq!(i["sl:arch"], "x86_64");
        ids.push(i["dc:identifier"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every image has its own identifier");

    // The same images keep their identifiers, and the list its own, from one publish to the next.
    let again = publish(&r, &dest, &key, &["--base-url", base, "--smime-cert", cert, "--smime-key", skey]);
    assert_eq!(again["serial"], 2);
    let second: serde_json::Value = serde_json::from_slice(&openssl_verify(&list, &pki.ca).unwrap()).unwrap();
    let ids_of = |d: &serde_json::Value| {
        let mut v: Vec<String> = d["hv:imagelist"]["hv:images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["hv:image"]["dc:identifier"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids_of(&second), ids);
    assert_eq!(second["hv:imagelist"]["dc:identifier"], l["dc:identifier"]);
    assert_eq!(second["hv:imagelist"]["hv:version"], "2");

    // One byte of the signed text changed: openssl refuses it.
    let text = std::fs::read(&list).unwrap();
    let at = text.windows(8).position(|w| w == b"\"dc:titl").unwrap() + 20;
    let mut tampered = text.clone();
    tampered[at] ^= 0x01;
    let bad = r.tmp.path().join("tampered.list");
    std::fs::write(&bad, &tampered).unwrap();
    let e = openssl_verify(&bad, &pki.ca).expect_err("a tampered list verified");
    assert!(e.contains("digest failure") || e.contains("failure"), "{e}");
    // A CA it does not come from: refused too.
    let other = make_pki(&r.tmp.path().join("other-pki"));
    assert!(openssl_verify(&list, &other.ca).is_err(), "verified against another CA");

    // An EC P-256 key (SEC1 PEM) signs too.
    let ec_dest = r.tmp.path().join("pub-ec");
    let (ec_cert, ec_key) = (pki.ec.0.to_str().unwrap(), pki.ec.1.to_str().unwrap());
    publish(&r, &ec_dest, &key, &["--base-url", base, "--smime-cert", ec_cert, "--smime-key", ec_key]);
    let ec_doc: serde_json::Value =
        serde_json::from_slice(&openssl_verify(&ec_dest.join("image.list"), &pki.ca).unwrap()).unwrap();
    let x509 = &ec_doc["hv:imagelist"]["hv:endorser"]["hv:x509"];
    assert_eq!(x509["hv:dn"], dn(&pki.ec.0, "subject"));
    assert_eq!(x509["hv:dn"], "/C=US/O=BNL/OU=STAR/CN=STAR VM Endorser/emailAddress=star@example.org");
    assert_eq!(x509["hv:email"], "vm-admin@example.org", "the subject alternative name comes first");
}

#[test]
fn without_a_usable_certificate_there_is_no_image_list() {
    if !have("openssl", "openssl") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let key = minisign_key(&r);
    let pki = make_pki(&r.tmp.path().join("pki"));
    let dest = r.tmp.path().join("pub");
    let base = "https://vm.example.org/star";
    let skipped = |out: &serde_json::Value| {
        out["exports_skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["export"] == "hepix")
            .map(|s| s["reason"].as_str().unwrap().to_string())
    };
    let out = publish(&r, &dest, &key, &["--base-url", base]);
    assert!(skipped(&out).unwrap().contains("--smime-cert"), "{out}");
    assert!(!dest.join("image.list").exists());
    let (cert, skey) = (pki.rsa.0.to_str().unwrap(), pki.rsa.1.to_str().unwrap());
    let out = publish(&r, &dest, &key, &["--smime-cert", cert, "--smime-key", skey]);
    assert!(skipped(&out).unwrap().contains("--base-url"), "{out}");
    assert!(!dest.join("image.list").exists());
    // The certificate and its key come through the environment too.
    let o = r
        .command(&[
            "--json",
            "publish",
            dest.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--base-url",
            base,
        ])
        .env("VMREPO_SMIME_CERT", cert)
        .env("VMREPO_SMIME_KEY", skey)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", said(&o));
    assert!(openssl_verify(&dest.join("image.list"), &pki.ca).is_ok());

    let dk = dest.to_str().unwrap();
    let k = key.to_str().unwrap();
    // One without the other is a usage error.
    let o = r.run(&["publish", dk, "--key", k, "--base-url", base, "--smime-cert", cert]);
    assert!(!o.status.success(), "{}", said(&o));
    // A key that is not the certificate's, a certificate not for S/MIME, files that are not PEM.
    let ec_key = pki.ec.1.to_str().unwrap();
    let e = r.fails(
        6,
        &["publish", dk, "--key", k, "--base-url", base, "--smime-cert", cert, "--smime-key", ec_key],
    );
    assert!(e.contains("is not the key of the certificate"), "{e}");
    let (sc, sk) = (pki.server_only.0.to_str().unwrap(), pki.server_only.1.to_str().unwrap());
    let e =
        r.fails(6, &["publish", dk, "--key", k, "--base-url", base, "--smime-cert", sc, "--smime-key", sk]);
    assert!(e.contains("emailProtection"), "{e}");
    let e = r.fails(
        6,
        &["publish", dk, "--key", k, "--base-url", base, "--smime-cert", skey, "--smime-key", skey],
    );
    assert!(e.contains("certificate"), "{e}");
    let e = r.fails(
        6,
        &["publish", dk, "--key", k, "--base-url", base, "--smime-cert", cert, "--smime-key", cert],
    );
    assert!(e.contains("no PEM private key"), "{e}");
    // An encrypted key is named as such.
    sh(&pki.dir, "openssl pkey -in endorser.key -aes256 -passout pass:secret -out encrypted.key 2>/dev/null");
    let enc = pki.dir.join("encrypted.key");
    let e = r.fails(
        6,
        &[
            "publish",
            dk,
            "--key",
            k,
            "--base-url",
            base,
            "--smime-cert",
            cert,
            "--smime-key",
            enc.to_str().unwrap(),
        ],
    );
    assert!(e.contains("encrypted"), "{e}");
    // A certificate no longer valid (openssl -days 0: it expires as it is made).
    sh(
        &pki.dir,
        "openssl x509 -req -in endorser.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 0 \
         -extfile smime.ext -out expired.pem 2>/dev/null",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let expired = pki.dir.join("expired.pem");
    let e = r.fails(
        6,
        &[
            "publish",
            dk,
            "--key",
            k,
            "--base-url",
            base,
            "--smime-cert",
            expired.to_str().unwrap(),
            "--smime-key",
            skey,
        ],
    );
    assert!(e.contains("not now"), "{e}");
    // Nothing was published by the refused runs: the list is still the one that verifies.
    assert!(openssl_verify(&dest.join("image.list"), &pki.ca).is_ok());
}

/// The atrope command of a virtualenv under target/, made once with pip
/// and kept (marked complete only once pip succeeded); `None` (a skip)
/// when it cannot be made outside CI.
fn atrope() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // target/<profile>/vmrepo: the virtualenv goes beside the profile folders.
    let target = Path::new(crate::util::bin()).parent().unwrap().parent().unwrap().to_path_buf();
    let venv = target.join("atrope-venv");
    let bin = venv.join("bin/atrope");
    let marker = venv.join(".vmrepo-complete");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == ATROPE) && bin.exists() {
        return Some(bin);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().unwrap();
    let installed = made.status.success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", ATROPE])
            .output()
            .is_ok_and(|o| {
                if !o.status.success() {
                    eprintln!("pip install {ATROPE}: {}", said(&o));
                }
                o.status.success()
            });
    if !installed {
        let _ = std::fs::remove_dir_all(&venv);
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cannot install {ATROPE} with pip in a virtualenv (python3-venv, and PyPI reachable)");
        }
        eprintln!("SKIPPED: cannot install {ATROPE} with pip in a virtualenv");
        return None;
    }
    std::fs::write(&marker, ATROPE).unwrap();
    Some(bin)
}

/// An atrope setup: its configuration, the sources file and the CA folder.
struct AtropeSite {
    dir: PathBuf,
    conf: PathBuf,
}

impl AtropeSite {
    fn new(dir: &Path, ca: &Path, url: &str, dn: &str, ca_dn: &str) -> AtropeSite {
        let cadir = dir.join("certificates");
        std::fs::create_dir_all(&cadir).unwrap();
        std::fs::copy(ca, cadir.join("star-test-ca.pem")).unwrap();
        sh(&cadir, "openssl rehash . 2>/dev/null || c_rehash . >/dev/null");
        let sources = dir.join("hepix.yaml");
        // YAML reads JSON.
        let yaml = serde_json::json!({
            "star": { "url": url, "enabled": true, "endorser": { "dn": dn, "ca": ca_dn }, "images": [] }
        });
        std::fs::write(&sources, yaml.to_string()).unwrap();
        let conf = dir.join("atrope.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nca_path = {}\nstate_path = {}\n\n[sources]\nhepix_sources = {}\n\n\
                 [cache]\npath = {}\n\n[dispatchers]\ndispatcher = noop\n",
                cadir.display(),
                dir.display(),
                sources.display(),
                dir.join("cache").display()
            ),
        )
        .unwrap();
        AtropeSite { dir: dir.to_path_buf(), conf }
    }

    fn run(&self, atrope: &Path, args: &[&str]) -> Output {
        Command::new(atrope).arg("--config-file").arg(&self.conf).args(args).output().unwrap()
    }

    /// `atrope imagelist-fetch`: whether it succeeded, its table's rows
    /// as (property, value), all it said.
    fn verify(&self, atrope: &Path) -> (bool, Vec<(String, String)>, String) {
        let o = self.run(atrope, &["imagelist-fetch"]);
        let rows = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() == 4).then(|| (cells[1].to_string(), cells[2].to_string()))
            })
            .collect();
        (o.status.success(), rows, said(&o))
    }

    /// Whether atrope refused the list: it failed (atrope 2.0.0 stops with
    /// a traceback on a signature openssl refuses, and on an endorser it
    /// does not trust), or says it is not verified or not trusted.
    fn refuses(&self, atrope: &Path) -> (bool, String) {
        let (ok, rows, all) = self.verify(atrope);
        (!ok || row(&rows, "verified") != Some("True") || row(&rows, "trusted") != Some("True"), all)
    }

    /// Whether the cache holds no image.
    fn cached_nothing(&self) -> bool {
        std::fs::read_dir(self.images()).map_or(true, |d| d.count() == 0)
    }

    fn images(&self) -> PathBuf {
        self.dir.join("cache/star/images")
    }
}

fn row<'a>(rows: &'a [(String, String)], key: &str) -> Option<&'a str> {
    rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn atrope_verifies_trusts_and_caches_the_image_list() {
    if !have("openssl", "openssl") || !have("python3", "python3") {
        return;
    }
    let Some(atrope) = atrope() else { return };
    let r = Repo::new();
    populate(&r);
    let key = minisign_key(&r);
    let pki = make_pki(&r.tmp.path().join("pki"));
    let dest = r.tmp.path().join("pub");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/star");
    let (cert, skey) = (pki.rsa.0.to_str().unwrap(), pki.rsa.1.to_str().unwrap());
    publish(&r, &dest.join("star"), &key, &["--base-url", &base, "--smime-cert", cert, "--smime-key", skey]);
    // The tampered copy: one byte of the signed text changed, served beside the true list.
    let text = std::fs::read(dest.join("star/image.list")).unwrap();
    let at = text.windows(8).position(|w| w == b"\"dc:titl").unwrap() + 20;
    let mut tampered = text.clone();
    tampered[at] ^= 0x01;
    std::fs::write(dest.join("star/tampered.list"), &tampered).unwrap();
    let _server = serve(&dest, port);

    let (dn_s, ca_s) = (dn(&pki.rsa.0, "subject"), dn(&pki.ca, "subject"));
    let site =
        AtropeSite::new(&r.tmp.path().join("site"), &pki.ca, &format!("{base}/image.list"), &dn_s, &ca_s);
    let (ok, rows, all) = site.verify(&atrope);
    assert!(ok, "{all}");
    assert_eq!(row(&rows, "verified"), Some("True"), "{all}");
    assert_eq!(row(&rows, "trusted"), Some("True"), "{all}");
    assert_eq!(row(&rows, "expired"), Some("False"), "{all}");
    assert_eq!(row(&rows, "error"), None, "{all}");

    // cache: every image downloaded, and kept only because its SHA-512 is the list's.
    let o = site.run(&atrope, &["cache-sync"]);
    assert!(o.status.success(), "{}", said(&o));
    let list: serde_json::Value =
        serde_json::from_slice(&openssl_verify(&dest.join("star/image.list"), &pki.ca).unwrap()).unwrap();
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("star/catalog.json")).unwrap()).unwrap();
    let images = list["hv:imagelist"]["hv:images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for (img, entry) in images.iter().zip(catalog["images"].as_array().unwrap()) {
        let cached = site.images().join(img["hv:image"]["dc:identifier"].as_str().unwrap());
        assert!(cached.exists(), "{} was not cached: {}", cached.display(), all);
        assert_eq!(sha256sum(&cached), entry["sha256"].as_str().unwrap());
    }

    // An endorser the site does not trust: refused, nothing cached.
    let stranger = AtropeSite::new(
        &r.tmp.path().join("stranger"),
        &pki.ca,
        &format!("{base}/image.list"),
        "/DC=org/DC=example/O=STAR/CN=someone.else",
        &ca_s,
    );
    let (refused, all) = stranger.refuses(&atrope);
    assert!(refused, "atrope trusted an endorser it was not given: {all}");
    assert!(all.contains("DN mismatch"), "{all}");
    stranger.run(&atrope, &["cache-sync"]);
    assert!(stranger.cached_nothing());

    // The tampered list: not verified, nothing cached.
    let bad =
        AtropeSite::new(&r.tmp.path().join("bad"), &pki.ca, &format!("{base}/tampered.list"), &dn_s, &ca_s);
    let (refused, all) = bad.refuses(&atrope);
    assert!(refused, "atrope accepted a tampered list: {all}");
    // atrope 2.0.0 runs openssl smime -verify, whose exit status 4 is a verification failure.
    assert!(all.contains("exit status 4"), "{all}");
    bad.run(&atrope, &["cache-sync"]);
    assert!(bad.cached_nothing());

    // A tampered image (one byte, same size): atrope's SHA-512 check refuses it.
    let first = catalog["images"][0]["path"].as_str().unwrap();
    let published = dest.join("star").join(first);
    let mut bytes = std::fs::read(&published).unwrap();
    bytes[1000] ^= 0x5a;
    std::fs::remove_file(&published).unwrap(); // a hard link to the repository's file
    std::fs::write(&published, &bytes).unwrap();
    let fresh =
        AtropeSite::new(&r.tmp.path().join("fresh"), &pki.ca, &format!("{base}/image.list"), &dn_s, &ca_s);
    let o = fresh.run(&atrope, &["cache-sync"]);
    assert!(o.status.success(), "{}", said(&o));
    let id = images[0]["hv:image"]["dc:identifier"].as_str().unwrap();
    assert!(!fresh.images().join(id).exists(), "a tampered image was kept");
    for img in &images[1..] {
        assert!(fresh.images().join(img["hv:image"]["dc:identifier"].as_str().unwrap()).exists());
    }
}
