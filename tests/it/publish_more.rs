//! publish, continued: old images removed once no live catalog names them,
//! the ledger's cheap proof, the static page, `vmrepo mirror`. Oracles:
//! the files in DEST (`find`, `sha256sum`), Python's html.parser, chromium,
//! `minisign -V`.

use std::path::Path;

use crate::publish::{catalog, keygen, populate, publish};
use crate::util::{Repo, sh, sha256sum};

/// Every file under `dir` (relative, sorted), as `find` lists them.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = sh(dir, "find . -type f -o -type l")
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn old_images_stay_until_no_live_catalog_names_them() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    let base = ["--base-url", "http://127.0.0.1:1/star"];
    publish(&r, &dest, &key, &base);
    let xen: Vec<String> = files(&dest).into_iter().filter(|f| f.starts_with("vm/xen/")).collect();
    // The xen image, its .checksum, .txt and .meta4.
    assert_eq!(xen.len(), 4, "{xen:?}");
    // What a person put in DEST is never publish's to remove.
    std::fs::write(dest.join("vm/xen/README"), b"mine\n").unwrap();
    std::fs::write(dest.join("notes.html"), b"mine\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dest.join("vm/xen/link")).unwrap();

    // Only kvm now: the previous catalog still names xen's, which stay for
    // whoever fetched it a moment ago.
    let second = publish(&r, &dest, &key, &[&base[..], &["vm=kvm"]].concat());
    assert_eq!(second["removed"], 0);
    assert!(catalog(&dest)["images"].as_array().unwrap().iter().all(|i| i["vm"] == "kvm"));
    for f in &xen {
        assert!(dest.join(f).is_file(), "{f} went while the previous catalog named it");
    }
    // Once neither live catalog names them, they go; nothing else does.
    let before = files(&dest);
    let third = publish(&r, &dest, &key, &[&base[..], &["vm=kvm"]].concat());
    assert_eq!(third["removed"], 4, "{third}");
    let after = files(&dest);
    let gone: Vec<&String> = before.iter().filter(|f| !after.contains(f)).collect();
    assert_eq!(gone, xen.iter().collect::<Vec<_>>());
    for mine in ["vm/xen/README", "notes.html", "vm/xen/link"] {
        assert!(std::fs::symlink_metadata(dest.join(mine)).is_ok(), "{mine} was removed");
    }
    // Every kvm image is still there with the catalog's SHA-256.
    for i in catalog(&dest)["images"].as_array().unwrap() {
        assert_eq!(sha256sum(&dest.join(i["path"].as_str().unwrap())), i["sha256"].as_str().unwrap());
    }
    // Published again, xen's image comes back (it is the repository's).
    let fourth = publish(&r, &dest, &key, &base);
    assert_eq!(fourth["images"], 3);
    assert!(files(&dest).iter().filter(|f| f.starts_with("vm/xen/")).count() >= 4);
}

#[test]
fn a_copy_changed_in_dest_is_found_and_copied_again() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
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
    assert_eq!(publish(&r, &dest, &key, &[])["copied"], 3);
    assert_eq!(publish(&r, &dest, &key, &[])["skipped"], 3);
    // One byte of a published copy changed in place, size and mtime kept:
    // the ledger's identity no longer proves it, so it is read, found wrong
    // and copied again.
    let c = catalog(&dest);
    let path = dest.join(c["images"][1]["path"].as_str().unwrap());
    let md = std::fs::metadata(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&bytes)
        })
        .unwrap();
    sh(
        dest.parent().unwrap(),
        &format!("touch -d @{}.{:09} {}", md.mtime(), md.mtime_nsec(), path.display()),
    );
    assert_eq!(std::fs::metadata(&path).unwrap().mtime_nsec(), md.mtime_nsec());
    let again = publish(&r, &dest, &key, &[]);
    assert_eq!((again["copied"].as_u64(), again["skipped"].as_u64()), (Some(1), Some(2)), "{again}");
    assert_eq!(sha256sum(&path), c["images"][1]["sha256"].as_str().unwrap());
}

/// Checks `page` with Python's html.parser: every non-void element closed
/// in order, no stray end tag, no script; prints each link (href, src).
const HTML_CHECK: &str = r#"
import html.parser, sys
VOID = {"meta", "link", "br", "input", "img", "hr", "source", "col", "area", "base", "wbr"}
class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.links, self.errors = [], [], []
    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.errors.append("a script")
        for k, v in attrs:
            if k in ("href", "src"):
                self.links.append(v)
        if tag not in VOID:
            self.stack.append(tag)
    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("</%s> closes %s at %s" % (tag, self.stack[-1:] , self.getpos()))
        else:
            self.stack.pop()
p = P()
p.feed(open(sys.argv[1], encoding="utf-8").read())
p.close()
if p.stack:
    p.errors.append("never closed: %s" % p.stack)
for e in p.errors:
    print("ERROR", e)
for l in p.links:
    print("LINK", l)
"#;

#[test]
fn the_static_page_is_valid_and_every_link_is_a_file_of_the_tree() {
    let r = Repo::new();
    populate(&r);
    let (key, _) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    publish(&r, &dest, &key, &["--base-url", "http://127.0.0.1:1/star"]);
    let out = std::process::Command::new("python3")
        .args(["-c", HTML_CHECK])
        .arg(dest.join("index.html"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(!said.contains("ERROR"), "{said}");
    let links: Vec<&str> = said.lines().filter_map(|l| l.strip_prefix("LINK ")).collect();
    let c = catalog(&dest);
    let images = c["images"].as_array().unwrap();
    // Each image: its file, .txt, .checksum and .meta4; and the catalog, its signature, the page, the style.
    assert!(links.len() >= 4 * images.len() + 4, "{links:?}");
    let page = std::fs::read_to_string(dest.join("index.html")).unwrap();
    for l in &links {
        if let Some(id) = l.strip_prefix('#') {
            assert!(page.contains(&format!("id=\"{id}\"")), "{l}: no such element");
            continue;
        }
        assert!(!l.contains("://") && !l.starts_with('/'), "{l}: not relative");
        // Convention names need no percent-decoding but for what encode_path escapes; none here.
        assert!(!l.contains('%'), "{l}");
        assert!(dest.join(l).is_file(), "{l}: no such file in DEST");
    }
    for i in images {
        for ext in ["", ".meta4"] {
            let p = format!("{}{ext}", i["path"].as_str().unwrap());
            assert!(links.contains(&p.as_str()), "{p} is not linked");
        }
    }
    for i in images {
        assert!(page.contains(i["sha256"].as_str().unwrap()));
    }
    // A real browser shows every image's name.
    if !crate::util::have("chromium", "chromium") {
        return;
    }
    let profile = r.tmp.path().join("chromium");
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", dest.join("index.html").display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && dom.contains("<table"), "{dom}{}", String::from_utf8_lossy(&out.stderr));
    for i in images {
        assert!(dom.contains(i["name"].as_str().unwrap()), "{} not in the DOM", i["name"]);
    }
}

#[test]
fn a_mirror_verifies_with_the_original_signature_and_is_pulled_from() {
    if !crate::util::have("minisign", "minisign") {
        return;
    }
    let r = Repo::new();
    populate(&r);
    let (key, public) = keygen(&r);
    let dest = r.tmp.path().join("pub");
    publish(&r, &dest, &key, &["--base-url", "http://127.0.0.1:1/star"]);
    let published = files(&dest);

    // From file://, with the key given; then from http:// with the keys a repository trusts.
    let m1 = r.tmp.path().join("mirror1");
    let src = format!("file://{}", dest.display());
    let out = r.json(&["mirror", &src, m1.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert_eq!((out["images"].as_u64(), out["fetched"].as_u64()), (Some(3), Some(3)), "{out}");
    let port = crate::util::free_port();
    let _server = crate::util::http_server(&dest, port);
    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    let m2 = r.tmp.path().join("mirror2");
    let out = site.json(&["mirror", &format!("http://127.0.0.1:{port}"), m2.to_str().unwrap()]);
    assert_eq!(out["fetched"], 3, "{out}");
    for m in [&m1, &m2] {
        // Every file of the published tree (but publish's own ledger and lock), byte for byte.
        let mirrored = files(m);
        for f in published.iter().filter(|f| !f.starts_with(".vmrepo-")) {
            assert!(mirrored.contains(f), "{f} is not in {}", m.display());
            assert_eq!(std::fs::read(dest.join(f)).unwrap(), std::fs::read(m.join(f)).unwrap(), "{f}");
        }
        let (ok, said) = crate::publish::minisign_verifies(m, &public);
        assert!(ok, "{said}");
        for i in catalog(m)["images"].as_array().unwrap() {
            assert_eq!(sha256sum(&m.join(i["path"].as_str().unwrap())), i["sha256"].as_str().unwrap());
        }
    }
    // Again: nothing fetched.
    let again = r.json(&["mirror", &src, m1.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert_eq!(again["fetched"], 0, "{again}");
    // A second repository pulls from the mirror.
    let m1_url = format!("file://{}", m1.display());
    let pulled = site.json(&["pull", &m1_url]);
    assert_eq!(pulled["images"].as_array().unwrap().len(), 3, "{pulled}");
    for i in catalog(&m1)["images"].as_array().unwrap() {
        assert_eq!(sha256sum(&site.root.join(i["path"].as_str().unwrap())), i["sha256"].as_str().unwrap());
    }

    // Refused: another key; a tampered image (nothing of it kept, no catalog written).
    let stranger = r.tmp.path().join("stranger");
    r.ok(&["key", "generate", "-o", stranger.to_str().unwrap()]);
    let m3 = r.tmp.path().join("mirror3");
    let err = r.fails(
        6,
        &["mirror", &src, m3.to_str().unwrap(), "--key", stranger.join("vmrepo.pub").to_str().unwrap()],
    );
    assert!(err.contains("not trusted"), "{err}");
    let victim = dest.join(catalog(&dest)["images"][0]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[7] ^= 1;
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &bytes).unwrap();
    let err = r.fails(11, &["mirror", &src, m3.to_str().unwrap(), "--key", public.to_str().unwrap()]);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(!m3.join("catalog.json").exists());
    let left = sh(&m3, "find . -type f ! -name .vmrepo-publish.lock | wc -l");
    assert_eq!(left.trim(), "0", "{}", sh(&m3, "find . -type f"));
}
