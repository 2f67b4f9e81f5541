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
