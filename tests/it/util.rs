//! The test harness: a temporary repository and a way to run vmrepo in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmrepo")
}

pub use vmrepo_testkit::have;

/// A temporary repository.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Repo {
    /// `vmrepo init` in a new temporary folder.
    pub fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let r = Repo { tmp, root };
        r.ok(&["init", r.root.to_str().unwrap()]);
        r
    }

    /// A scratch folder outside the repository.
    pub fn scratch(&self) -> PathBuf {
        let p = self.tmp.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn vm_dir(&self, vm: &str) -> PathBuf {
        self.root.join("vm").join(vm)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--repo").arg(&self.root).args(args);
        c.env_remove("VMREPO_REPO").env_remove("VMREPO_INDEX").env("VMREPO_LOCK_WAIT", "60");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vmrepo {args:?} failed ({:?}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts the exit code; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "vmrepo {args:?}: expected exit {code}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Adds `file` as an sl5.3 x86 64-bit sl08e image with extra flags. The
    /// test files are small raw files named for larger disks, so `--force`
    /// lets the name disagree with the content (the tests of that check do
    /// not use this helper).
    pub fn add(&self, file: &Path, vm: &str, extra: &[&str]) -> serde_json::Value {
        let mut a = vec![
            "add",
            "--force",
            file.to_str().unwrap(),
            "--vm",
            vm,
            "--os",
            "sl5.3",
            "--arch",
            "x86",
            "--bits",
            "64",
            "--lib",
            "sl08e",
        ];
        a.extend_from_slice(extra);
        self.json(&a)
    }

    /// The image files of the catalog (`list --json`), as `vm/file`.
    pub fn listed(&self) -> Vec<String> {
        let v = self.json(&["list"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}/{}", i["vm"].as_str().unwrap(), i["file"].as_str().unwrap()))
            .collect()
    }
}

/// Writes `len` bytes of a deterministic pattern that differs by `seed`.
pub fn pattern_file(path: &Path, len: usize, seed: u64) {
    let mut data = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    while data.len() < len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
}

/// Runs a shell command in `dir` and returns its stdout; panics on failure.
pub fn sh(dir: &Path, cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The first field of `sha256sum FILE`.
pub fn sha256sum(path: &Path) -> String {
    sh(path.parent().unwrap(), &format!("sha256sum '{}'", path.file_name().unwrap().to_str().unwrap()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every entry under `dir` (relative paths), recursively, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Runs vmrepo outside any repository; returns (exit code, stdout, stderr).
pub fn vmrepo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).env_remove("VMREPO_REPO").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a program and returns its stdout; panics with its stderr on failure.
pub fn run(prog: &str, args: &[&str]) -> String {
    run_in(Path::new("."), prog, args)
}

/// Runs a program in `dir` (qemu-img names data files relative to where it runs).
pub fn run_in(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw disk whose content the test chooses: random data, a hole, text that
/// compresses well, scattered small writes, and random data at the very end.
pub fn guest_disk(path: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    f.write_all_at(&rnd(1 << 20), 0).unwrap();
    let words: [&[u8]; 6] =
        [b"STAR ", b"physics ", b"sl08e ", b"gold-gold ", b"rcas6016 ", b"\0\0\0\0\0\0\0\0"];
    let mut text = Vec::new();
    let mut i = 0usize;
    while text.len() < 2 << 20 {
        text.extend_from_slice(words[(i * 7 + i / 3) % words.len()]);
        i += 1;
    }
    f.write_all_at(&text, 3 << 20).unwrap();
    for k in 0..16u64 {
        let at = (6 << 20) + k * ((size - (7 << 20)) / 16);
        f.write_all_at(&rnd(4096), at - at % 512).unwrap();
    }
    f.write_all_at(&rnd(65536), size - 65536).unwrap();
}

/// `qemu-img info --output=json` as JSON.
pub fn qemu_info(path: &Path, format: &str) -> serde_json::Value {
    let mut args = vec!["info", "--output=json"];
    if !format.is_empty() {
        args.extend(["-f", format]);
    }
    let p = path.to_str().unwrap();
    args.push(p);
    serde_json::from_str(&run("qemu-img", &args)).unwrap()
}

/// The fields of a map both sides report, as (start, length, present, zero, data, compressed).
pub fn map_rows(v: &serde_json::Value) -> Vec<(u64, u64, bool, bool, bool, bool)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["present"].as_bool().unwrap(),
                e["zero"].as_bool().unwrap(),
                e["data"].as_bool().unwrap(),
                e["compressed"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Whether two files have the same bytes. Sparse files are compared where
/// either holds data (SEEK_DATA), so that two 127 GB mostly empty disks are
/// compared in a moment; where neither holds data, both read as zeros.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    if len != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (start, end) in data_regions(&fa, len).into_iter().chain(data_regions(&fb, len)) {
        let mut pos = start;
        while pos < end {
            let n = usize::try_from((end - pos).min(1 << 20)).unwrap();
            fa.read_exact_at(&mut ba[..n], pos).unwrap();
            fb.read_exact_at(&mut bb[..n], pos).unwrap();
            if ba[..n] != bb[..n] {
                return false;
            }
            pos += n as u64;
        }
    }
    true
}

/// The data regions of a file, as `(start, end)`.
fn data_regions(f: &std::fs::File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Ok(start) = seek(f, SeekFrom::Data(pos)) else { break };
        let end = seek(f, SeekFrom::Hole(start)).unwrap_or(len).min(len);
        out.push((start, end));
        pos = end.max(start + 1);
    }
    out
}

/// Whether a tmpfs can be mounted in a private mount namespace (`unshare
/// -m`, as root): the full-disk tests use one. Under CI a failure, elsewhere
/// a notice and a skip.
pub fn can_mount_tmpfs() -> bool {
    let ok = have("unshare", "util-linux")
        && Command::new("unshare")
            .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test mounts a small tmpfs in a private mount namespace: it needs root (unshare -m)");
        }
        eprintln!("SKIPPED: cannot mount a tmpfs here (unshare -m needs root)");
    }
    ok
}

/// A free TCP port on 127.0.0.1.
///
/// Chosen below the kernel's ephemeral range (32768 and up on Linux), where
/// the outgoing connections of the tests running beside this one take their
/// local ports: a port the kernel hands out for `bind(0)` can be taken by a
/// client's `connect` before the server that was meant to have it starts,
/// and a server such as SeaweedFS that dies when one of its eight ports is
/// taken made CI fail that way. Each call returns a port not returned
/// before in this process, free when checked.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // 20000..32000, starting at a place that differs between processes.
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + n.wrapping_mul(7)) % SPAN;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1")
}

/// A web server killed when dropped.
pub struct WebServer(std::process::Child);

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1, once it listens.
pub fn http_server(dir: &Path, port: u16) -> WebServer {
    let g = WebServer(
        std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    g
}
