//! `AddRequest::prehashed`: digests taken while a file was written are used
//! only for that very file linked in place, and a copy must agree with them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use sha2::{Digest, Sha256};
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::hashing::StreamMd5;
use vmrepo_repo::{AddRequest, Catalog, Facts, NoProgress, Prehashed, Repository};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn setup() -> (tempfile::TempDir, Catalog, std::path::PathBuf, Prehashed) {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = Repository::init(&dir.path().join("repo")).unwrap();
    let stop = AtomicBool::new(false);
    let catalog = Catalog::open(repo.clone(), &stop).unwrap();
    // In the metadata folder: the same filesystem as vm/, as an upload's file.
    let src = repo.meta_dir().join("incoming.img");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let md = std::fs::metadata(&src).unwrap();
    let mut md5 = StreamMd5::new();
    md5.update(&bytes);
    let pre = Prehashed {
        md5: md5.finalize(),
        sha256: Sha256::digest(&bytes).into(),
        ino: md.ino(),
        len: md.len(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    };
    (dir, catalog, src, pre)
}

fn request<'a>(src: &'a Path, pre: Prehashed, move_source: bool, cancel: &'a AtomicBool) -> AddRequest<'a> {
    AddRequest {
        source: src,
        vm: Vm::Kvm,
        name: ImageName::parse("sl5.3_x86_64_sl08e_8MB_test.img").unwrap(),
        facts: Facts::default(),
        notes: None,
        replace: false,
        move_source,
        content: None,
        force: false,
        prehashed: Some(pre),
        progress: &NoProgress,
        cancel,
    }
}

#[test]
fn a_linked_file_that_matches_is_not_read_again() {
    let (_d, mut catalog, src, mut pre) = setup();
    // Digests no reading of the file would give: recorded as given, which
    // shows that the file was not hashed again.
    pre.md5 = [7; 16];
    let cancel = AtomicBool::new(false);
    let out = vmrepo_repo::add(&mut catalog, request(&src, pre, true, &cancel)).unwrap();
    assert_eq!(out.md5, vec![hex(&[7; 16])]);
    assert!(!src.exists(), "the moved source is gone");
}

#[test]
fn stale_digests_make_the_file_hashed_again() {
    let (_d, mut catalog, src, mut pre) = setup();
    let truth = pre;
    pre.mtime_ns += 1;
    let cancel = AtomicBool::new(false);
    let out = vmrepo_repo::add(&mut catalog, request(&src, pre, true, &cancel)).unwrap();
    assert_eq!(out.md5, vec![hex(&truth.md5)]);
    assert_eq!(out.image.sha256.as_deref(), Some(hex(&truth.sha256).as_str()));
}

#[test]
fn stale_wrong_digests_are_found_out_by_hashing_again() {
    let (_d, mut catalog, src, mut pre) = setup();
    pre.md5 = [7; 16];
    pre.mtime_ns += 1;
    let cancel = AtomicBool::new(false);
    let e = vmrepo_repo::add(&mut catalog, request(&src, pre, true, &cancel)).unwrap_err();
    assert!(e.to_string().contains("changed after it was hashed"), "{e}");
    assert!(src.exists(), "an import undone leaves its source");
    assert!(catalog.resolve("kvm/sl5.3_x86_64_sl08e_8MB_test.img").is_err());
}

#[test]
fn a_copy_that_disagrees_with_the_digests_imports_nothing() {
    let (_d, mut catalog, src, mut pre) = setup();
    pre.sha256 = [9; 32];
    let cancel = AtomicBool::new(false);
    let e = vmrepo_repo::add(&mut catalog, request(&src, pre, false, &cancel)).unwrap_err();
    assert!(e.to_string().contains("changed after it was hashed"), "{e}");
    let kvm = catalog.repo().vm_root().join("kvm");
    let left: Vec<_> =
        std::fs::read_dir(&kvm).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(src.exists(), "a copy leaves its source");
}
