//! key generate and publish: the catalog verified by the real `minisign`, the
//! published images by `sha256sum` and `md5sum -c`, the catalog by a JSON
//! Schema validator (Python's jsonschema).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Repo, have, pattern_file, sh, sha256sum};

/// Three images: two for kvm, one for xen.
pub(crate) fn populate(r: &Repo) {
    for (i, (vm, extra)) in
        [("kvm", ["--max-size", "8GB"]), ("kvm", ["--max-size", "2GB"]), ("xen", ["--max-size", "4GB"])]
            .iter()
            .enumerate()
    {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, 70_000 + 1000 * i, i as u64);
        r.add(&f, vm, extra);
    }
}

/// `key generate` into a folder outside the repository: (secret, public).
pub(crate) fn keygen(r: &Repo) -> (PathBuf, PathBuf) {
    let dir = r.tmp.path().join("keys");
    let out = r.ok(&["key", "generate", "-o", dir.to_str().unwrap(), "--name", "site"]);
    let public = dir.join("site.pub");
    // It prints the public key's path, then the key line that is in that file.
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(public.to_str().unwrap()));
    let line = lines.next().unwrap();
    assert!(std::fs::read_to_string(&public).unwrap().lines().nth(1) == Some(line), "{out}");
    (dir.join("site.key"), public)
}

pub(crate) fn publish(r: &Repo, dest: &Path, key: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap()];
    a.extend_from_slice(extra);
    r.json(&a)
}

pub(crate) fn catalog(dest: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap()
}

/// Whether the real minisign accepts `dir/catalog.json` with its `.minisig`; its output.
pub(crate) fn minisign_verifies(dir: &Path, public: &Path) -> (bool, String) {
    let out = Command::new("minisign")
        .args(["-V", "-p", public.to_str().unwrap(), "-m", "catalog.json"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn minisign_verifies_the_catalog_and_the_images_match_it() {
    if !have("minisign", "minisign") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    let out = publish(&r, &dest, &key, &["--base-url", "https://vm.example.org/star/", "--expires", "2w"]);
    assert_eq!(out["serial"], 1);
    assert_eq!(out["images"], 3);
    assert_eq!(out["linked"].as_u64().unwrap() + out["copied"].as_u64().unwrap(), 3);
    assert_eq!(out["skipped"], 0);

    let (ok, said) = minisign_verifies(&dest, &public);
    assert!(ok, "{said}");
    assert!(said.contains("serial:1"), "the trusted comment names the serial: {said}");

    let c = catalog(&dest);
    assert_eq!(c["format"], "vmrepo-catalog");
    assert_eq!(c["version"], 1);
    assert_eq!(c["base_url"], "https://vm.example.org/star");
    let generated = c["generated"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let expires = c["expires"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(expires.duration_since(generated), jiff::SignedDuration::from_hours(14 * 24));
    let images = c["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for i in images {
        let path = dest.join(i["path"].as_str().unwrap());
        assert_eq!(sha256sum(&path), i["sha256"].as_str().unwrap(), "{}", path.display());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), i["size"].as_u64().unwrap());
        assert_eq!(i["description"]["image"], i["file"], "the description's facts are there");
        assert_eq!(i["lib"], "sl08e");
    }
    for vm in ["kvm", "xen"] {
        let said = sh(&dest.join("vm").join(vm), "md5sum -c *.checksum");
        assert_eq!(said.matches(": OK").count(), if vm == "kvm" { 2 } else { 1 }, "{said}");
        assert!(sh(&dest.join("vm").join(vm), "ls *.txt").lines().count() >= 1);
    }

    // A tampered copy is refused: one byte of the catalog, or a signature
    // from another key.
    let tampered = r.tmp.path().join("tampered");
    std::fs::create_dir(&tampered).unwrap();
    std::fs::copy(dest.join("catalog.json.minisig"), tampered.join("catalog.json.minisig")).unwrap();
    let text = std::fs::read_to_string(dest.join("catalog.json")).unwrap();
    let first = images[0]["sha256"].as_str().unwrap();
    let other = format!("{}{}", if first.starts_with('0') { "1" } else { "0" }, &first[1..]);
    std::fs::write(tampered.join("catalog.json"), text.replacen(first, &other, 1)).unwrap();
    let (ok, said) = minisign_verifies(&tampered, &public);
    assert!(!ok, "a tampered catalog verified: {said}");
    std::fs::write(tampered.join("catalog.json"), &text).unwrap();
    assert!(minisign_verifies(&tampered, &public).0, "the untouched copy verifies");
    let stranger = r.tmp.path().join("stranger");
    r.ok(&["key", "generate", "-o", stranger.to_str().unwrap()]);
    let (ok, said) = minisign_verifies(&tampered, &stranger.join("vmrepo.pub"));
    assert!(!ok, "another key's public key verified it: {said}");

    check_against_schema(&dest.join("catalog.json"));
}

/// Validates with Python's jsonschema (Draft 2020-12, formats checked).
pub(crate) fn check_against_schema(catalog: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/catalog.schema.json");
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(s)\n\
        jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker()).validate(json.load(open(sys.argv[2])))\n";
    let python = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p).args(["-c", "import jsonschema"]).output().is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "this test needs python3-jsonschema");
        eprintln!("SKIPPED: the schema check (apt-get install python3-jsonschema)");
        return;
    };
    let out = Command::new(python)
        .args(["-c", script, schema.to_str().unwrap(), catalog.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "catalog.json breaks its schema: {}", String::from_utf8_lossy(&out.stderr));
    // And the validator does reject: a catalog without its serial.
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(catalog).unwrap()).unwrap();
    c.as_object_mut().unwrap().remove("serial");
    let broken = catalog.with_file_name("broken.json");
    std::fs::write(&broken, c.to_string()).unwrap();
    let out = Command::new(python)
        .args(["-c", script, schema.to_str().unwrap(), broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the schema took a catalog without a serial");
}

#[test]
fn publishing_again_sends_nothing_and_the_serial_grows() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    let first = publish(&r, &dest, &key, &[]);
    let again = publish(&r, &dest, &key, &[]);
    assert_eq!(again["serial"], first["serial"].as_u64().unwrap() + 1);
    assert_eq!(
        (again["copied"].as_u64(), again["linked"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(0), Some(3))
    );
    assert_eq!(catalog(&dest)["serial"], again["serial"]);

    // A catalog put there by an earlier run with a higher serial: the next goes on from it, never back.
    let mut c = catalog(&dest);
    c["serial"] = 41.into();
    std::fs::write(dest.join("catalog.json"), c.to_string()).unwrap();
    assert_eq!(publish(&r, &dest, &key, &[])["serial"], 42);
    // One that cannot be read is not guessed past: nothing is written.
    std::fs::write(dest.join("catalog.json"), b"{\"format\": \"vmrepo-catalog\", \"ser").unwrap();
    let err = r.fails(6, &["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(err.contains("catalog.json") && err.contains("serial"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(dest.join("catalog.json")).unwrap(), b"{\"format\": \"vmrepo-catalog\", \"ser");

    // On another filesystem the images are copied, then not again.
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("SKIPPED: copying to another filesystem (no /dev/shm)");
        return;
    };
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(other.path()).unwrap().dev() == std::fs::metadata(&r.root).unwrap().dev() {
        eprintln!("SKIPPED: copying to another filesystem (/dev/shm is on the repository's)");
        return;
    }
    let dest = other.path().join("pub");
    let first = publish(&r, &dest, &key, &[]);
    assert_eq!((first["copied"].as_u64(), first["linked"].as_u64()), (Some(3), Some(0)));
    for i in catalog(&dest)["images"].as_array().unwrap() {
        assert_eq!(sha256sum(&dest.join(i["path"].as_str().unwrap())), i["sha256"].as_str().unwrap());
    }
    let again = publish(&r, &dest, &key, &[]);
    assert_eq!(
        (again["copied"].as_u64(), again["skipped"].as_u64(), again["serial"].as_u64()),
        (Some(0), Some(3), Some(2))
    );

    // An image changed in the repository behind its record is not published:
    // exit 11, the catalog already there kept, nothing at the image's name.
    let c = catalog(&dest);
    let victim = c["images"][0].clone();
    let src = r.root.join(victim["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&src, &bytes).unwrap();
    let fresh = other.path().join("fresh");
    let err = r.fails(11, &["publish", fresh.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(err.contains(victim["file"].as_str().unwrap()) && err.contains("run vmrepo verify"), "{err}");
    assert!(!fresh.join("catalog.json").exists());
    let leftovers = sh(&fresh, "find . -type f ! -name .vmrepo-publish.lock | wc -l");
    assert_eq!(leftovers.trim(), "0", "{}", sh(&fresh, "find . -type f"));
    // Where the good copy is already published, it stays, and the catalog still names its bytes.
    let again = publish(&r, &dest, &key, &[]);
    assert_eq!((again["skipped"].as_u64(), again["serial"].as_u64()), (Some(3), Some(3)));
    let published = dest.join(victim["path"].as_str().unwrap());
    assert_eq!(sha256sum(&published), victim["sha256"].as_str().unwrap());
    assert_eq!(catalog(&dest)["images"][0]["sha256"], victim["sha256"]);
}

#[test]
fn the_secret_key_is_private_and_kept_out_of_the_repository() {
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let mode = sh(key.parent().unwrap(), "stat -c %a site.key");
    assert_eq!(mode.trim(), "600");
    let secret = std::fs::read(&key).unwrap();
    let err =
        r.fails(5, &["key", "generate", "-o", key.parent().unwrap().to_str().unwrap(), "--name", "site"]);
    assert!(err.contains("site.key: already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), secret, "the existing key is untouched");
    assert!(public.exists());

    for inside in [r.root.clone(), r.root.join("vm/kvm"), r.root.join("keys/new")] {
        let err = r.fails(6, &["key", "generate", "-o", inside.to_str().unwrap()]);
        assert!(err.contains("inside the repository"), "{err}");
        assert!(!inside.join("vmrepo.key").exists());
    }
    let err = r.fails(6, &["publish", r.root.join("www").to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(err.contains("inside the repository"), "{err}");
    assert!(!r.root.join("www").exists());
    // A file that is not a secret key is named.
    let err =
        r.fails(6, &["publish", r.tmp.path().join("x").to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert!(err.contains("site.pub"), "{err}");
}

#[test]
fn find_expressions_select_what_is_published() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    let out = publish(&r, &dest, &key, &["vm=xen"]);
    assert_eq!(out["images"], 1);
    let c = catalog(&dest);
    let vms: Vec<&str> = c["images"].as_array().unwrap().iter().map(|i| i["vm"].as_str().unwrap()).collect();
    assert_eq!(vms, ["xen"]);
    assert!(!dest.join("vm/kvm").exists());
    assert_eq!(publish(&r, &dest, &key, &["maxsize>=4GB"])["images"], 2);
    r.fails(6, &["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap(), "colour=blue"]);
}

/// A publish killed between writing a temporary file and renaming it leaves
/// that file behind; the next publish, holding DEST's lock, removes it (a web
/// server would serve it), and keeps a link that merely looks like one.
#[test]
fn the_next_publish_removes_what_a_killed_one_left() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let dest = r.tmp.path().join("www");
    std::fs::create_dir(&dest).unwrap();
    publish(&r, &dest, &key, &[]);
    let left = [
        dest.join(".catalog.json.tmp-dead-1-2-0"),
        dest.join(".catalog.json.minisig.tmp-dead-1-2-1"),
        dest.join("vm/kvm/.x.img.tmp-dead-1-2-2"),
    ];
    for f in &left {
        std::fs::write(f, b"half").unwrap();
    }
    let outside = r.tmp.path().join("outside");
    std::fs::write(&outside, b"keep").unwrap();
    let link = dest.join(".link.tmp-dead");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    publish(&r, &dest, &key, &[]);
    for f in &left {
        assert!(!f.exists(), "{} was left", f.display());
    }
    assert!(std::fs::symlink_metadata(&link).is_ok(), "a link is not vmrepo's temporary file");
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
}
