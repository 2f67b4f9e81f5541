//! Files and links of a guest filesystem made by mke2fs -d from a folder the
//! test writes: links resolve inside the guest, loops and enormous files end
//! in a bounded answer, and the whole inspection of such a guest stays small.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use vmrepo_format::{OpenOptions, open};
use vmrepo_inspect::guest::{ExtFs, Kind, MAX_SMALL_FILE};
use vmrepo_inspect::view::{Dev, DiskDev};

fn write(root: &Path, path: &str, data: &[u8]) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// A sparse file of `len` bytes with a marker at its start.
fn sparse(root: &Path, path: &str, len: u64) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"ENORMOUS").unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
}

/// A hostile guest tree, made into an ext4 filesystem image of 64 MiB.
fn hostile_guest(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    write(
        &root,
        "/etc/passwd",
        b"root:x:0:0:guest root:/root:/bin/bash\nstar:x:500:500::/home/star:/bin/tcsh\n",
    );
    write(&root, "/etc/shadow", b"root:$6$salt$hash:15000:0:99999:7:::\n");
    write(
        &root,
        "/usr/lib/os-release",
        b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    );
    link(&root, "/etc/os-release", "../usr/lib/os-release");
    // Out of the guest, by relative and by absolute links: both stay inside.
    link(&root, "/etc/escape", "../../../../../../etc/passwd");
    link(&root, "/etc/absolute", "/etc/passwd");
    link(&root, "/var/lib/deep/up", "../../../../../../../../../../../../etc/passwd");
    // Loops, and a chain longer than links are followed.
    link(&root, "/loop-a", "loop-b");
    link(&root, "/loop-b", "loop-a");
    link(&root, "/self", "self");
    for i in 0..60 {
        link(&root, &format!("/chain/{i}"), &(i + 1).to_string());
    }
    write(&root, "/chain/60", b"end of the chain\n");
    // A folder whose link points back at its parent, under STAR's install root.
    write(&root, "/usr/local/star/packages/SL08e/.sl53_gcc432/lib/libStEvent.so", &[7u8; 5000]);
    link(&root, "/usr/local/star/packages/SL08e/back", "..");
    link(&root, "/usr/local/star/packages/SL08e/root", "/");
    // Enormous sparse files where small ones are expected.
    sparse(&root, "/etc/redhat-release", 64 << 30);
    sparse(&root, "/etc/hostname", 8 << 30);
    sparse(&root, "/boot/vmlinuz-2.6.18-128.el5", 32 << 30);
    let img = dir.join("guest.img");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "hostile", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "mke2fs: {}", String::from_utf8_lossy(&out.stderr));
    img
}

fn dev(img: &Path, counter: &Arc<AtomicU64>) -> Arc<dyn Dev> {
    let disk = open(img, &OpenOptions::default()).unwrap().into_disk().unwrap();
    Arc::new(DiskDev::new(disk, Arc::clone(counter)))
}

#[test]
fn links_resolve_inside_the_guest_and_loops_end() {
    if !vmrepo_testkit::have("mke2fs", "e2fsprogs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = hostile_guest(tmp.path());
    let counter = Arc::new(AtomicU64::new(0));
    let fs = ExtFs::open(dev(&img, &counter)).unwrap();
    let guest_passwd = fs.read("/etc/passwd", MAX_SMALL_FILE).unwrap();
    assert!(guest_passwd.starts_with(b"root:x:0:0:guest root:"));
    // Every way out lands on the guest's own /etc/passwd, never the host's.
    for escape in ["/etc/escape", "/etc/absolute", "/var/lib/deep/up", "/../../etc/passwd"] {
        assert_eq!(fs.read(escape, MAX_SMALL_FILE).as_deref(), Some(&guest_passwd[..]), "{escape}");
    }
    assert_eq!(fs.read_text("/etc/os-release").unwrap().lines().next(), Some("ID=debian"));
    for looping in ["/loop-a", "/loop-b", "/self", "/chain/0", "/loop-a/x"] {
        assert_eq!(fs.stat(looping), None, "{looping}");
        assert_eq!(fs.read(looping, MAX_SMALL_FILE), None, "{looping}");
    }
    assert_eq!(fs.lstat("/loop-a").map(|(_, k)| k), Some(Kind::Link));
    // Within the limit of links followed, a chain resolves.
    assert_eq!(fs.read_text("/chain/30").as_deref(), Some("end of the chain\n"));
    // An enormous file is not read whole; its head is.
    assert_eq!(fs.stat("/etc/redhat-release"), Some((64 << 30, Kind::File)));
    assert_eq!(fs.read("/etc/redhat-release", MAX_SMALL_FILE), None);
    assert_eq!(fs.read_head("/etc/redhat-release", 8).as_deref(), Some(&b"ENORMOUS"[..]));
    // The walk of a folder that links back to its parent counts its files once.
    let (bytes, files, partial) = fs.du("/usr/local/star/packages/SL08e", 100_000, 32);
    assert_eq!((bytes, files, partial), (5000, 1, false));
}

#[test]
fn inspecting_a_hostile_guest_is_bounded() {
    if !vmrepo_testkit::have("mke2fs", "e2fsprogs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = hostile_guest(tmp.path());
    let disk = open(&img, &OpenOptions::default()).unwrap().into_disk().unwrap();
    let r = vmrepo_inspect::inspect(disk, &vmrepo_inspect::Options::default());
    assert_eq!(r.root().map(|v| v.device.as_str()), Some("disk"));
    // The huge redhat-release is passed over for os-release (through its link).
    let os = r.os.as_ref().expect("the OS from /etc/os-release");
    assert_eq!((os.distro.as_str(), os.version.as_str()), ("debian", "12"));
    assert_eq!(r.hostname, None, "an 8 GiB /etc/hostname is no hostname");
    let libs: Vec<(&str, u64)> = r.star.libraries.iter().map(|l| (l.name.as_str(), l.size)).collect();
    assert_eq!(libs, [("sl08e", 5000)]);
    // A few MiB at most were read from a filesystem claiming 104 GiB of files.
    assert!(r.bytes_read < 4 << 20, "read {} bytes", r.bytes_read);
}

fn debugfs(img: &Path, request: &str) {
    let out = Command::new("debugfs").args(["-w", "-R", request]).arg(img).output().unwrap();
    assert!(out.status.success(), "debugfs {request}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Inodes and superblocks changed by debugfs to claim what the device cannot
/// hold: a link of 2 GiB, a filesystem of 2^44 blocks. Each is refused
/// before anything is sized from it.
#[test]
fn fields_claiming_gigabytes_are_refused_before_any_buffer() {
    if !vmrepo_testkit::have("mke2fs", "e2fsprogs") || !vmrepo_testkit::have("debugfs", "e2fsprogs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = hostile_guest(tmp.path());
    // A link target too long to be kept in the inode (a "slow" link), then said to be 2 GiB long.
    let long = format!("/usr/lib/{}", "x".repeat(100));
    debugfs(&img, &format!("symlink /etc/long {long}"));
    debugfs(&img, "sif /etc/long size 0x7fffffff");
    let counter = Arc::new(AtomicU64::new(0));
    let fs = ExtFs::open(dev(&img, &counter)).unwrap();
    assert_eq!(fs.lstat("/etc/long"), Some((0x7fff_ffff, Kind::Link)));
    assert_eq!(fs.link_target("/etc/long"), None);
    assert_eq!(fs.stat("/etc/long"), None);
    assert_eq!(fs.read("/etc/long", MAX_SMALL_FILE), None);
    // The rest of the filesystem still reads.
    assert!(fs.read("/etc/passwd", MAX_SMALL_FILE).is_some());

    // 2^44 blocks: 2^29 block groups on a 64 MiB device.
    debugfs(&img, "ssv blocks_count 0x100000000000");
    let e = ExtFs::open(dev(&img, &counter)).err().expect("refused");
    assert!(e.to_string().contains("block groups"), "{e}");
    let disk = open(&img, &OpenOptions::default()).unwrap().into_disk().unwrap();
    let r = vmrepo_inspect::inspect(disk, &vmrepo_inspect::Options::default());
    assert!(r.warnings.iter().any(|w| w.contains("block groups")), "{:?}", r.warnings);
}
