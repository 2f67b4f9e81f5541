//! Image folders (an image of several files, kept in a folder named as the
//! image) through publish, pull and mirror. Oracles: `minisign -V` for the
//! catalog, `sha256sum` of every published and pulled file against the
//! originals, `md5sum -c` of the `.checksum`s, Python's jsonschema for the
//! catalog; a tampered file, a missing file and a hostile catalog refused
//! with nothing visible; a pull killed with SIGKILL resumed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::publish::{catalog, check_against_schema, minisign_verifies};
use crate::pull::{free_port, kill_pull_at, site};
use crate::util::{Repo, have, http_server, pattern_file, sh, sha256sum};

/// The folder image's name, and its files with their sizes.
const STEM: &str = "sl5.3_x86_64_sl08e_4GB_split";
const FILES: [(&str, usize); 3] =
    [("disk.vmdk", 1000), ("disk-f001.vmdk", 300_000), ("disk-f002.vmdk", 200_000)];

/// A repository with a single image (kvm) and an image folder (vmware), its
/// key, and the originals of the folder's files (kept outside it).
struct Source {
    r: Repo,
    key: PathBuf,
    public: PathBuf,
    originals: PathBuf,
}

fn source(files: &[(&str, usize)]) -> Source {
    let r = Repo::new();
    let single = r.scratch().join("single.img");
    pattern_file(&single, 70_000, 7);
    r.add(&single, "kvm", &["--max-size", "8GB"]);
    let parts = r.scratch().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let originals = r.tmp.path().join("originals");
    std::fs::create_dir(&originals).unwrap();
    for (i, (name, size)) in files.iter().enumerate() {
        pattern_file(&parts.join(name), *size, 100 + i as u64);
        std::fs::copy(parts.join(name), originals.join(name)).unwrap();
    }
    let out = r.add(&parts, "vmware", &["--max-size", "4GB", "--detail", "split"]);
    assert_eq!(out["image"]["kind"], "folder");
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    Source { key: keys.join("star.key"), public: keys.join("star.pub"), originals, r }
}

fn publish(s: &Source, dest: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["publish", dest.to_str().unwrap(), "--key", s.key.to_str().unwrap()];
    a.extend_from_slice(extra);
    s.r.json(&a)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// The folder under `vm/vmware/` of `root` holds exactly the originals, by `sha256sum`.
fn holds_the_originals(root: &Path, s: &Source, files: &[(&str, usize)]) {
    let dir = root.join("vm/vmware").join(STEM);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut want: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "{}", dir.display());
    for (name, _) in files {
        assert_eq!(sha256sum(&dir.join(name)), sha256sum(&s.originals.join(name)), "{name}");
    }
    let said = sh(&root.join("vm/vmware"), &format!("md5sum -c {STEM}.checksum"));
    assert_eq!(said.matches(": OK").count(), files.len(), "{said}");
}

fn tools() -> bool {
    have("minisign", "minisign") && have("sha256sum", "coreutils") && have("md5sum", "coreutils")
}

#[test]
fn a_folder_image_is_published_signed_and_byte_for_byte() {
    if !tools() {
        return;
    }
    let s = source(&FILES);
    let dest = s.r.tmp.path().join("pub");
    let out = publish(&s, &dest, &["--base-url", "https://vm.example.org/star"]);
    assert_eq!((out["images"].as_u64(), out["folders"].as_u64()), (Some(2), Some(1)), "{out}");
    assert_eq!(out["left_out"], serde_json::json!([]), "{out}");
    let skipped: Vec<&str> =
        out["exports_skipped"].as_array().unwrap().iter().map(|e| e["export"].as_str().unwrap()).collect();
    for e in ["metalink", "virt-builder index entries", "simplestreams entries"] {
        assert!(skipped.contains(&e), "{e} not in {skipped:?}");
    }
    let (ok, said) = minisign_verifies(&dest, &s.public);
    assert!(ok, "{said}");

    let c = catalog(&dest);
    assert_eq!(c["images"].as_array().unwrap().len(), 1, "the single image alone in images: {c}");
    let f = &c["folders"][0];
    assert_eq!(f["path"], format!("vm/vmware/{STEM}"));
    assert_eq!((f["name"].as_str(), f["file"].as_str()), (Some(STEM), Some(STEM)));
    assert_eq!(f["size"], FILES.iter().map(|(_, n)| *n as u64).sum::<u64>());
    let files = f["files"].as_array().unwrap();
    assert_eq!(files.len(), FILES.len());
    for file in files {
        let name = file["path"].as_str().unwrap();
        let published = dest.join(f["path"].as_str().unwrap()).join(name);
        let original = s.originals.join(name);
        assert_eq!(sha256sum(&published), sha256sum(&original), "{name}");
        assert_eq!(file["sha256"].as_str().unwrap(), sha256sum(&original), "{name}");
        assert_eq!(file["size"], std::fs::metadata(&original).unwrap().len());
        assert_eq!(file["md5"].as_str().unwrap().len(), 32);
    }
    holds_the_originals(&dest, &s, &FILES);
    assert!(dest.join(format!("vm/vmware/{STEM}.txt")).is_file());
    check_against_schema(&dest.join("catalog.json"));
    schema_refuses_a_file_outside_the_folder(&dest.join("catalog.json"));
    // Only the single image is in the exports of one file per image.
    let index = std::fs::read_to_string(dest.join("index")).unwrap();
    assert!(!index.contains(STEM), "{index}");

    // Again: nothing is sent.
    let again = publish(&s, &dest, &[]);
    assert_eq!(
        (again["skipped"].as_u64(), again["copied"].as_u64(), again["linked"].as_u64()),
        (Some(2), Some(0), Some(0))
    );

    // Deselected, it stays through one publish (the previous catalog is
    // live), then goes: its files, its sidecars, and its folder, but for a
    // file a person put there, which keeps the folder.
    let folder = dest.join(format!("vm/vmware/{STEM}"));
    std::fs::write(folder.join("README"), b"a person's file").unwrap();
    publish(&s, &dest, &["vm=kvm"]);
    assert!(folder.join(FILES[1].0).is_file(), "removed while a live catalog names it");
    let out = publish(&s, &dest, &["vm=kvm"]);
    assert_eq!(out["removed"], FILES.len() as u64 + 2, "{out}");
    assert_eq!(crate::util::tree(&folder), ["README"]);
    assert!(!dest.join(format!("vm/vmware/{STEM}.checksum")).exists());
    std::fs::remove_file(folder.join("README")).unwrap();
    // Published again, then deselected twice: the emptied folder goes too.
    publish(&s, &dest, &[]);
    holds_the_originals(&dest, &s, &FILES);
    publish(&s, &dest, &["vm=kvm"]);
    publish(&s, &dest, &["vm=kvm"]);
    assert!(!folder.exists(), "{:?}", crate::util::tree(&dest.join("vm")));

    // A file in the repository's folder that its .txt does not record: the
    // folder is left out, and said why.
    std::fs::write(s.r.vm_dir("vmware").join(STEM).join("extra.vmdk"), b"not recorded").unwrap();
    let out = publish(&s, &dest, &[]);
    assert_eq!(out["left_out"][0]["path"], format!("vm/vmware/{STEM}"), "{out}");
    assert!(out["left_out"][0]["reason"].as_str().unwrap().contains("vmrepo verify"), "{out}");
    assert!(catalog(&dest).get("folders").is_none());
}

#[test]
fn a_folder_image_is_pulled_from_a_folder_and_from_a_web_server() {
    if !tools() || !have("python3", "python3") {
        return;
    }
    let s = source(&FILES);
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &[]);
    let total: u64 = FILES.iter().map(|(_, n)| *n as u64).sum();

    let r = site(&s.public);
    let dry = r.json(&["pull", &url(&dest), "--dry-run", "vm=vmware"]);
    assert_eq!(dry["images"][0]["action"], "would-pull");
    assert!(r.listed().is_empty());
    let out = r.json(&["pull", &url(&dest)]);
    let entry = out["images"].as_array().unwrap().iter().find(|i| i["files"] == 3).unwrap().clone();
    assert_eq!((entry["action"].as_str(), entry["size"].as_u64()), (Some("pulled"), Some(total)), "{out}");
    assert_eq!(out["transferred"], total + 70_000);
    holds_the_originals(&r.root, &s, &FILES);
    let txt = std::fs::read_to_string(r.vm_dir("vmware").join(format!("{STEM}.txt"))).unwrap();
    assert!(txt.contains("catalog serial 1") && txt.contains("signed by star"), "{txt}");
    assert!(txt.contains(&url(&dest)), "the source is named: {txt}");
    assert_eq!(sh(&r.root.join(".vmrepo/pull"), "ls -A | grep -v '^.lock$' || true"), "");
    let mut listed = r.listed();
    listed.sort();
    assert_eq!(listed, ["kvm/sl5.3_x86_64_sl08e_8GB.img".to_string(), format!("vmware/{STEM}")]);
    // Again: present, nothing fetched.
    let again = r.json(&["pull", &url(&dest)]);
    assert_eq!(again["transferred"], 0);
    assert!(again["images"].as_array().unwrap().iter().all(|i| i["action"] == "present"), "{again}");

    // Stored here under its name with other files: refused, not replaced.
    let other = site(&s.public);
    let mine = other.scratch().join("mine");
    std::fs::create_dir(&mine).unwrap();
    pattern_file(&mine.join("disk.vmdk"), 1000, 1);
    other.add(&mine, "vmware", &["--max-size", "4GB", "--detail", "split"]);
    let err = other.fails(5, &["pull", &url(&dest)]);
    assert!(err.contains(&format!("vm/vmware/{STEM}")) && err.contains("other files"), "{err}");
    assert_eq!(
        sha256sum(&other.vm_dir("vmware").join(STEM).join("disk.vmdk")),
        sha256sum(&mine.join("disk.vmdk"))
    );

    // From python's http.server.
    let port = free_port();
    let _server = http_server(&dest, port);
    let w = site(&s.public);
    let out = w.json(&["pull", &format!("http://127.0.0.1:{port}"), "vm=vmware", "--jobs", "3"]);
    assert_eq!(out["transferred"], total, "{out}");
    holds_the_originals(&w.root, &s, &FILES);
    assert_eq!(w.listed(), [format!("vmware/{STEM}")]);
}

/// Pulling `from` fails with `code`, saying each of `says`, and nothing of
/// the folder is visible.
fn refused(r: &Repo, from: &str, code: i32, says: &[&str]) {
    let err = r.fails(code, &["pull", from]);
    for s in says {
        assert!(err.contains(s), "expected {s:?}: {err}");
    }
    assert!(r.listed().is_empty(), "something was imported: {err}");
    assert!(!r.vm_dir("vmware").join(STEM).exists(), "{err}");
    assert!(!r.root.join(".vmrepo/sources.json").exists(), "{err}");
}

#[test]
fn a_tampered_or_missing_file_and_a_hostile_catalog_are_refused() {
    if !have("sha256sum", "coreutils") {
        return;
    }
    let s = source(&FILES);
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &[]);
    let r = site(&s.public);
    let folder = dest.join(format!("vm/vmware/{STEM}"));

    // A file replaced by other bytes of its size (a new file: the published
    // one is a link to the repository's).
    let victim = folder.join(FILES[2].0);
    std::fs::remove_file(&victim).unwrap();
    pattern_file(&victim, FILES[2].1, 999);
    // The server (here a folder) is named with the file.
    let at = victim.display().to_string();
    refused(&r, &url(&dest), 11, &[&format!("vm/vmware/{STEM}/{}", FILES[2].0), &at, "SHA-256"]);
    // Missing: no server has it.
    std::fs::remove_file(&victim).unwrap();
    refused(&r, &url(&dest), 4, &[&format!("vm/vmware/{STEM}/{}", FILES[2].0), &at]);
    std::fs::copy(s.originals.join(FILES[2].0), &victim).unwrap();

    // Signed catalogs whose folder lists a file outside it, absolute, or twice.
    let text = std::fs::read_to_string(dest.join("catalog.json")).unwrap();
    let (sk, pk) = vmrepo_dist::key::load_secret_key(&s.key, None).unwrap();
    for (what, path, why) in [
        ("dotdot", "../../../../etc/cron.d/x", "a path"),
        ("dotdot alone", "..", "hidden"),
        ("absolute", "/etc/passwd", "a path"),
        ("duplicate", FILES[0].0, "listed twice"),
        ("sidecar", &format!("{STEM}.txt") as &str, "sidecars"),
    ] {
        let hostile = s.r.tmp.path().join(format!("hostile-{}", what.replace(' ', "-")));
        std::fs::create_dir(&hostile).unwrap();
        std::os::unix::fs::symlink(dest.join("vm"), hostile.join("vm")).unwrap();
        let mut c: serde_json::Value = serde_json::from_str(&text).unwrap();
        c["folders"][0]["files"][1]["path"] = path.into();
        let bytes = serde_json::to_vec_pretty(&c).unwrap();
        let sig = vmrepo_dist::key::sign(&sk, &pk, &bytes, "hostile on purpose").unwrap();
        std::fs::write(hostile.join("catalog.json"), &bytes).unwrap();
        std::fs::write(hostile.join("catalog.json.minisig"), sig).unwrap();
        refused(&r, &url(&hostile), 6, &[&format!("vm/vmware/{STEM}"), why, "catalog.json"]);
        assert!(!Path::new("/etc/cron.d/x").exists());
    }
    // The untouched tree is still pulled whole.
    r.ok(&["pull", &url(&dest)]);
    holds_the_originals(&r.root, &s, &FILES);
}

#[test]
fn a_pull_of_a_folder_killed_with_sigkill_completes_the_next_time() {
    if !have("python3", "python3") || !have("sha256sum", "coreutils") || !have("md5sum", "coreutils") {
        return;
    }
    let files = [("disk.vmdk", 2000), ("disk-f001.vmdk", 3 << 20), ("disk-f002.vmdk", 1 << 20)];
    let s = source(&files);
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &["vm=vmware"]);
    let big = sha256sum(&s.originals.join(files[1].0));
    let log = s.r.tmp.path().join("server.log");
    let (_server, ranged) = crate::pull::ranged_server(&dest, &log);
    let r = site(&s.public);
    let partial = r.root.join(format!(".vmrepo/pull/{big}.part"));
    let kept = kill_pull_at(&r, &ranged, &partial, 1 << 20);
    assert!(kept < 3 << 20, "the whole file arrived before the kill");
    assert!(r.listed().is_empty(), "nothing half-fetched is visible");
    assert!(!r.vm_dir("vmware").join(STEM).exists());
    let out = r.json(&["pull", &ranged]);
    let total: u64 = files.iter().map(|(_, n)| *n as u64).sum();
    let transferred = out["transferred"].as_u64().unwrap();
    assert!(transferred <= total - kept, "{transferred} transferred, {kept} were kept: {out}");
    holds_the_originals(&r.root, &s, &files);
    assert!(!partial.exists());
}

#[test]
fn a_mirror_republishes_a_folder_image_unchanged() {
    if !tools() {
        return;
    }
    let s = source(&FILES);
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &[]);
    let m = s.r.tmp.path().join("mirror");
    let out = s.r.json(&["mirror", &url(&dest), m.to_str().unwrap(), "--key", s.public.to_str().unwrap()]);
    assert_eq!(out["images"], 2, "{out}");
    assert_eq!(
        std::fs::read(m.join("catalog.json")).unwrap(),
        std::fs::read(dest.join("catalog.json")).unwrap()
    );
    let (ok, said) = minisign_verifies(&m, &s.public);
    assert!(ok, "{said}");
    holds_the_originals(&m, &s, &FILES);
    // Again: nothing fetched.
    let again = s.r.json(&["mirror", &url(&dest), m.to_str().unwrap(), "--key", s.public.to_str().unwrap()]);
    assert_eq!(again["fetched"], 0, "{again}");
    // A site pulls from the mirror as from the source.
    let r = site(&s.public);
    r.ok(&["pull", &url(&m)]);
    holds_the_originals(&r.root, &s, &FILES);
}

#[test]
fn files_with_the_same_bytes_are_fetched_once_and_each_imported() {
    if !have("sha256sum", "coreutils") || !have("md5sum", "coreutils") {
        return;
    }
    // Two files of the folder with the same bytes, and a single image with them too.
    let r = Repo::new();
    let parts = r.scratch().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let originals = r.tmp.path().join("originals");
    std::fs::create_dir(&originals).unwrap();
    let files = [("a.vmdk", 50_000), ("b.vmdk", 50_000), ("c.vmdk", 1000)];
    for (i, (name, size)) in files.iter().enumerate() {
        pattern_file(&parts.join(name), *size, if i < 2 { 5 } else { 6 });
        std::fs::copy(parts.join(name), originals.join(name)).unwrap();
    }
    let single = r.scratch().join("single.img");
    pattern_file(&single, 50_000, 5);
    r.add(&single, "kvm", &["--max-size", "8GB"]);
    r.add(&parts, "vmware", &["--max-size", "4GB", "--detail", "split"]);
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    let s = Source { key: keys.join("star.key"), public: keys.join("star.pub"), originals, r };
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &[]);
    let site = site(&s.public);
    let out = site.json(&["pull", &url(&dest)]);
    assert_eq!(out["transferred"], 50_000 + 1000, "the same bytes are fetched once: {out}");
    holds_the_originals(&site.root, &s, &files);
    assert_eq!(
        sha256sum(&site.vm_dir("kvm").join("sl5.3_x86_64_sl08e_8GB.img")),
        sha256sum(&s.originals.join("a.vmdk"))
    );
    assert_eq!(sh(&site.root.join(".vmrepo/pull"), "ls"), "");
}

/// The JSON Schema refuses a folder's file named `..`, absolute, or with a
/// `/` (Python's jsonschema; skipped without it, as check_against_schema is).
fn schema_refuses_a_file_outside_the_folder(catalog: &Path) {
    let ok =
        Command::new("python3").args(["-c", "import jsonschema"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "this test needs python3-jsonschema");
        eprintln!("SKIPPED: the schema check (apt-get install python3-jsonschema)");
        return;
    }
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/catalog.schema.json");
    let script = "import json,sys,jsonschema\n\
        v=jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))\n\
        c=json.load(open(sys.argv[2]))\n\
        assert not list(v.iter_errors(c)), 'the published catalog breaks the schema'\n\
        for bad in ['..', '/etc/passwd', '../x', 'a/b', '.hidden', '']: c['folders'][0]['files'][0]['path'] = bad; assert list(v.iter_errors(c)), 'the schema took %r' % bad\n";
    let out = Command::new("python3")
        .args(["-c", script, schema.to_str().unwrap(), catalog.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A pull that dies while it imports a folder (the repository's crash
/// points: staged but not committed, then half committed): the folder is
/// never half visible, and the next pull (or recovery) completes it.
#[test]
fn a_pull_that_dies_while_importing_a_folder_leaves_it_whole_or_absent() {
    if !have("sha256sum", "coreutils") || !have("md5sum", "coreutils") {
        return;
    }
    let s = source(&FILES);
    let dest = s.r.tmp.path().join("pub");
    publish(&s, &dest, &["vm=vmware"]);
    for at in ["after-stage", "after-first-rename"] {
        let r = site(&s.public);
        let out = r.command(&["pull", &url(&dest)]).env("VMREPO_TEST_CRASH_AT", at).output().unwrap();
        assert!(!out.status.success(), "{at}: the pull did not die");
        // Whole or absent: never a folder without all its files.
        let folder = r.vm_dir("vmware").join(STEM);
        if folder.exists() {
            holds_the_originals(&r.root, &s, &FILES);
        }
        r.ok(&["pull", &url(&dest)]);
        holds_the_originals(&r.root, &s, &FILES);
        assert_eq!(r.listed(), [format!("vmware/{STEM}")], "{at}");
        r.ok(&["verify", "--md5"]);
    }
}
