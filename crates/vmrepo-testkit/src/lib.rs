//! What vmrepo's hostile-input tests share, and nothing else uses.
//!
//! * [`Counting`]: a global allocator that counts live heap bytes and their
//!   peak, so a test can bound the memory one case takes;
//! * [`Watchdog`]: aborts the process when a case makes no progress for too
//!   long (a hang is a failure, not a stuck CI job);
//! * [`Rng`]: a small seeded generator, so a failing run can be repeated;
//! * [`have`]: whether a tool a test needs is installed (a clear failure under
//!   CI, a skip with a notice elsewhere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts live heap bytes and the peak since the last [`Counting::reset_peak`].
///
/// A test binary installs it with
/// `#[global_allocator] static GLOBAL: vmrepo_testkit::Counting = vmrepo_testkit::Counting;`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// A single allocation larger than this fails (the process aborts where it
/// was asked for, for a debugger's backtrace); `usize::MAX` unless
/// `VMREPO_ALLOC_LIMIT` sets it through [`Counting::limit_from_env`].
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

impl Counting {
    /// Makes single allocations above `VMREPO_ALLOC_LIMIT` bytes fail, to
    /// find under a debugger where a case asks for too much.
    pub fn limit_from_env() {
        if let Some(l) = std::env::var("VMREPO_ALLOC_LIMIT").ok().and_then(|l| l.parse().ok()) {
            LIMIT.store(l, Ordering::Relaxed);
        }
    }

    /// Starts a measurement: the peak is set to what is live now, which is
    /// returned.
    pub fn reset_peak() -> usize {
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        live
    }

    /// Runs the calling test again, alone, in a child process of this test
    /// binary, so that what the tests running beside it allocate is not
    /// counted in its heap peak (the counters are the whole process's). A test
    /// that measures the peak starts with
    /// `if !Counting::alone_in_a_child(module_path!(), "its_name") { return; }`. Returns `true` in
    /// the child, which goes on to measure, and `false` in the parent once the
    /// child has passed. `module` is `module_path!()` and `test` the test's name.
    pub fn alone_in_a_child(module: &str, test: &str) -> bool {
        const CHILD: &str = "VMREPO_TEST_ALONE";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        // The harness names a test by its path without the crate.
        let name = match module.split_once("::") {
            Some((_, path)) => format!("{path}::{test}"),
            None => test.to_string(),
        };
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = Command::new(exe)
            .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap_or_else(|e| panic!("running {name} in a child process: {e}"));
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprint!("{stderr}");
        assert!(out.status.success(), "{name} failed in its own process ({}):\n{stdout}{stderr}", out.status);
        // A name that matches nothing would pass with no test run.
        assert!(stdout.contains("1 passed"), "{name} did not run in its own process:\n{stdout}");
        false
    }

    /// The most heap bytes live at once since [`Counting::reset_peak`]
    /// returned `before`, beyond `before`.
    pub fn peak_since(before: usize) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(before)
    }
}

/// Aborts the process, naming the case, when no progress is reported for
/// `timeout`.
pub struct Watchdog {
    progress: Arc<AtomicU64>,
    current: Arc<Mutex<String>>,
}

impl Watchdog {
    /// Starts the watching thread.
    pub fn start(timeout: Duration) -> Self {
        let progress = Arc::new(AtomicU64::new(0));
        let current = Arc::new(Mutex::new(String::new()));
        let (p, c) = (Arc::clone(&progress), Arc::clone(&current));
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let now = p.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > timeout {
                    eprintln!(
                        "HANG (no progress for {timeout:?}): {}",
                        c.lock().map(|c| c.clone()).unwrap_or_default()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { progress, current }
    }

    /// Names the case now running, and counts it as progress.
    pub fn case(&self, what: &str) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push_str(what);
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// xorshift64: small, fast and repeatable from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is mapped to one).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The seed from `VMREPO_MUTATION_SEED`, or the clock; printed so that a
    /// failing run can be repeated.
    pub fn from_env() -> (Self, u64) {
        let seed =
            std::env::var("VMREPO_MUTATION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("mutation seed {seed} (VMREPO_MUTATION_SEED={seed} repeats this run)");
        (Rng::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Whether `tool` is on the PATH. Under CI (`CI=true`) a missing tool is a
/// failure naming the Debian package; elsewhere a notice, and the test skips.
///
/// # Panics
/// Under CI when the tool is missing.
pub fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs {tool}: apt-get install {package} (.ci/run installs it)");
        }
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {package})");
    }
    found
}

/// Whether the test runs as root. Under CI a failure naming `why`; elsewhere
/// a notice, and the test skips.
///
/// # Panics
/// Under CI when not root.
pub fn root(why: &str) -> bool {
    let ok =
        Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs root: {why}");
        }
        eprintln!("SKIPPED: this test needs root: {why}");
    }
    ok
}

/// The tools `scripts/build-test-guests.py --synthetic-only` needs, with
/// their Debian packages.
pub const GUEST_TOOLS: [(&str, &str); 8] = [
    ("python3", "python3"),
    ("mke2fs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("mkswap", "util-linux"),
    ("sfdisk", "fdisk"),
    ("losetup", "mount"),
    ("lvm", "lvm2"),
    ("qemu-img", "qemu-utils"),
];

/// Whether the synthetic test guests can be built here: every tool of
/// [`GUEST_TOOLS`], and root (LVM is made on a loop device).
///
/// # Panics
/// Under CI when something is missing.
pub fn can_build_guests() -> bool {
    GUEST_TOOLS.iter().all(|(tool, package)| have(tool, package))
        && root("the test guests' LVM volumes are made on a loop device")
}

/// Builds (or finds cached) the test guests in `dir` with
/// `scripts/build-test-guests.py`, and returns its manifest.
///
/// # Panics
/// The script fails, or its manifest cannot be read.
pub fn build_guests(dir: &Path, synthetic_only: bool) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-guests.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(dir);
    if synthetic_only {
        cmd.arg("--synthetic-only");
    }
    let out = cmd.output().expect("python3 runs");
    assert!(out.status.success(), "build-test-guests: {}", String::from_utf8_lossy(&out.stderr));
    // The manifest's path is the last line; debootstrap talks before it.
    let manifest = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{manifest}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{manifest}: {e}"))
}
