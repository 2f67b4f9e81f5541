//! The test harness: a temporary repository and a way to run vmrepo in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmrepo")
}

/// Whether an external tool the test needs is installed. Under CI (`CI=true`)
/// a missing tool fails the test with the package to install; elsewhere the
/// test is skipped with a notice.
pub fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs {tool}: apt-get install {package} (.ci/run installs it)");
        }
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {package})");
    }
    found
}

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

    /// Adds `file` as an sl5.3 x86 64-bit sl08e image with extra flags.
    pub fn add(&self, file: &Path, vm: &str, extra: &[&str]) -> serde_json::Value {
        let mut a = vec![
            "add",
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
