//! `vmrepo serve` over real sockets, with real clients from Debian: curl,
//! wget and aria2c resume downloads they were killed in the middle of (also
//! across a restart of the server, and never splicing two versions of a
//! replaced image), traversal attempts get 400 or 404 and not a byte of the
//! other file, HTTP/2 in clear and over TLS (ALPN), slow clients are dropped
//! after the header time-out, SIGTERM lets a download finish, and wrk's 256
//! connections get no error while the server stays under 64 MiB.
//!
//! Every process a test starts is held by a [`Proc`] guard that kills it,
//! and every wait has a deadline: a test fails, it never hangs. Servers
//! listen on 127.0.0.1 only, on a port the kernel picks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Repo, have, pattern_file, sha256sum};

const MIB: usize = 1 << 20;

/// The size of the image the resume tests download: large enough that a
/// client held to [`RATE`] is still far from the end when it is killed.
const BIG: usize = 64 * MIB;

/// The rate the interrupted clients are held to, in bytes per second.
const RATE: usize = 4 * MIB;

/// How much must have arrived before a client is killed.
const PART: u64 = 4 << 20;

/// The longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A process killed (SIGKILL) and reaped when dropped.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let what = format!("{cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        Proc { child, what }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`KILL`, `TERM`) through kill(1).
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -s {sig} {}", self.what);
    }

    /// The exit status, waiting at most `limit`; panics past it.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < limit, "{} still runs after {limit:?}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL) and waits for it.
    fn kill(&mut self) {
        self.signal("KILL");
        self.wait(DEADLINE);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `vmrepo serve` on 127.0.0.1.
struct Server {
    proc: Proc,
    /// Kept open: the server's stdout is a pipe it may still write to.
    _stdout: BufReader<ChildStdout>,
    url: String,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts `vmrepo --json serve --listen 127.0.0.1:PORT EXTRA...` (port 0:
    /// the kernel picks) and reads the URL it prints first.
    fn start(r: &Repo, port: u16, extra: &[&str]) -> Server {
        Server::spawn(r, port, extra, false)
    }

    /// Like [`Server::start`], with the access log in [`Server::log`].
    fn start_logged(r: &Repo, port: u16, extra: &[&str]) -> Server {
        Server::spawn(r, port, extra, true)
    }

    fn spawn(r: &Repo, port: u16, extra: &[&str], access_log: bool) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["--json", "serve", "--listen", &listen];
        args.extend_from_slice(extra);
        let log = r.tmp.path().join(format!("serve-{}.log", std::process::id() ^ rand_u32()));
        let mut cmd = r.command(&args);
        if access_log {
            cmd.env("VMREPO_LOG", "vmrepo_serve=info");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap());
        let mut proc = Proc::spawn(&mut cmd);
        let mut stdout = BufReader::new(proc.child.stdout.take().unwrap());
        let mut first = String::new();
        // The server prints its URL (a JSON document over several lines)
        // once it listens, or exits with an error: either ends these reads.
        let v: serde_json::Value = loop {
            let n = stdout.read_line(&mut first).unwrap();
            assert!(n > 0, "vmrepo serve did not start: {first}{}", std::fs::read_to_string(&log).unwrap());
            if let Ok(v) = serde_json::from_str(&first) {
                break v;
            }
        };
        let url = v["url"].as_str().unwrap().trim_end_matches('/').to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Server { proc, _stdout: stdout, url, port, log }
    }

    /// A counter or gauge from `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let (status, body) = http_get(self.port, "/metrics");
        assert_eq!(status, 200);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Waits until no download is being sent (a killed client's connection
    /// has been noticed and closed).
    fn wait_idle(&self) {
        let start = Instant::now();
        while self.metric("vmrepo_downloads_in_flight") != 0 {
            assert!(start.elapsed() < DEADLINE, "downloads still in flight after {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The peak resident memory of the server (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        kib * 1024
    }
}

/// A few bits that differ between calls in one process (file names).
fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).wrapping_mul(2_654_435_761)
}

/// A bare HTTP/1.0 GET over a socket: (status, body). Deadlines on every read.
fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, all[end + 4..].to_vec())
}

/// The tools of a test, each checked with [`have`] (a skip outside CI).
fn tools(list: &[(&str, &str)]) -> bool {
    list.iter().all(|(t, p)| have(t, p))
}

/// A repository holding one pattern image of `len` bytes (seed `seed`) in
/// vm/kvm; returns the repository, the image's file name and its path.
fn repo_with_image(len: usize, seed: u64) -> (Repo, String, PathBuf) {
    let r = Repo::new();
    let src = r.scratch().join("image.img");
    pattern_file(&src, len, seed);
    let out = r.add(&src, "kvm", &["--max-size", "8GB"]);
    let file = out["image"]["file"].as_str().unwrap().to_string();
    let stored = r.vm_dir("kvm").join(&file);
    assert!(stored.is_file(), "{out}");
    (r, file, stored)
}

/// Runs a program to its end within [`DEADLINE`]; returns its exit status
/// and what it wrote on stdout and stderr.
fn run_client(cmd: &mut Command) -> (ExitStatus, String, String) {
    let out_path =
        std::env::temp_dir().join(format!("vmrepo-it-client-{}-{}", std::process::id(), rand_u32()));
    let err_path = out_path.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut p = Proc::spawn(cmd);
    let status = p.wait(DEADLINE);
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (status, out, err)
}

/// Starts a client in the background (its output thrown away).
fn start_client(cmd: &mut Command) -> Proc {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    Proc::spawn(cmd)
}

/// Waits until `path` holds at least `at_least` bytes.
fn wait_for_bytes(path: &Path, at_least: u64, client: &mut Proc) {
    let start = Instant::now();
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len >= at_least {
            return;
        }
        if let Ok(Some(s)) = client.child.try_wait() {
            panic!("{} ended ({s}) with only {len} bytes", client.what);
        }
        assert!(start.elapsed() < DEADLINE, "{}: {len} bytes after {DEADLINE:?}", client.what);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn len_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The three resuming clients: the command that starts a download held to
/// [`RATE`], and the one that resumes it, both writing `out`.
#[derive(Clone, Copy, Debug)]
enum Client {
    Curl,
    Wget,
    Aria2,
}

impl Client {
    fn have(self) -> bool {
        match self {
            Client::Curl => have("curl", "curl"),
            Client::Wget => have("wget", "wget"),
            Client::Aria2 => have("aria2c", "aria2"),
        }
    }

    fn command(self, url: &str, out: &Path, limited: bool) -> Command {
        let rate = RATE.to_string();
        let mut c;
        match self {
            Client::Curl => {
                c = Command::new("curl");
                c.args(["-sS", "--fail", "-C", "-", "-o"]).arg(out).arg(url);
                if limited {
                    c.args(["--limit-rate", &rate]);
                }
            }
            Client::Wget => {
                c = Command::new("wget");
                c.args(["-q", "-c", "--tries=1", "-O"]).arg(out).arg(url);
                if limited {
                    c.arg(format!("--limit-rate={rate}"));
                }
            }
            Client::Aria2 => {
                c = Command::new("aria2c");
                // One connection, no preallocation (the file's length is what
                // has arrived), no renaming of an existing file.
                // Its control file, which says what has arrived, saved every
                // second: a client killed outright resumes from the last save
                // (with the default 60 s, from the start).
                c.args(["-q", "-c", "-x1", "-s1", "--file-allocation=none", "--auto-file-renaming=false"])
                    .arg("--auto-save-interval=1")
                    .arg("--allow-overwrite=false")
                    .arg("--max-tries=1")
                    .arg("-d")
                    .arg(out.parent().unwrap())
                    .arg("-o")
                    .arg(out.file_name().unwrap())
                    .arg(url);
                if limited {
                    c.arg(format!("--max-download-limit={rate}"));
                }
            }
        }
        c
    }
}

/// Starts `client` held to [`RATE`], kills it (SIGKILL) once [`PART`]
/// bytes arrived, resumes it, and checks the whole file against the stored
/// image with sha256sum and that the resume did not fetch it all again.
fn resume_after_kill(client: Client) {
    if !client.have() || !have("sha256sum", "coreutils") {
        return;
    }
    let (r, file, stored) = repo_with_image(BIG, 81);
    let server = Server::start_logged(&r, 0, &[]);
    let url = format!("{}/vm/kvm/{file}", server.url);
    let out = r.scratch().join(format!("{client:?}.out"));
    let mut first = start_client(&mut client.command(&url, &out, true));
    wait_for_bytes(&out, PART, &mut first);
    if let Client::Aria2 = client {
        // Past a save of its control file.
        std::thread::sleep(Duration::from_millis(1500));
    }
    first.kill();
    let had = len_of(&out);
    assert!(had < BIG as u64, "{client:?} finished before it was killed");
    server.wait_idle();
    let before = std::fs::read_to_string(&server.log).unwrap().len();
    let (status, _, err) = run_client(&mut client.command(&url, &out, false));
    assert!(status.success(), "{client:?} resuming: {status}: {err}");
    assert_eq!(sha256sum(&out), sha256sum(&stored), "{client:?}: the resumed file differs from the image");
    // The access log says the rest came as a range (aria2c first asks for
    // the whole and drops that answer once it has seen its head).
    let log = std::fs::read_to_string(&server.log).unwrap();
    let ranged: Vec<u64> = log[before..]
        .lines()
        .filter(|l| l.contains("status=206"))
        .filter_map(|l| {
            l.split("length=").nth(1)?.trim_start_matches('"').split(['"', ' ']).next()?.parse().ok()
        })
        .collect();
    assert!(
        ranged.iter().any(|&n| n + PART / 2 <= BIG as u64),
        "{client:?} did not resume with a range after having {had} bytes:\n{}",
        &log[before..]
    );
}

#[test]
fn curl_resumes_a_killed_download() {
    resume_after_kill(Client::Curl);
}

#[test]
fn wget_resumes_a_killed_download() {
    resume_after_kill(Client::Wget);
}

#[test]
fn aria2c_resumes_a_killed_download() {
    resume_after_kill(Client::Aria2);
}

/// The server is killed in the middle of a download and started again on
/// the same port; `curl -C -` then finishes the file.
#[test]
fn curl_resumes_across_a_restart_of_the_server() {
    if !tools(&[("curl", "curl"), ("sha256sum", "coreutils")]) {
        return;
    }
    let (r, file, stored) = repo_with_image(BIG, 82);
    let mut server = Server::start(&r, 0, &[]);
    let port = server.port;
    let url = format!("{}/vm/kvm/{file}", server.url);
    let out = r.scratch().join("restart.out");
    let mut first = start_client(&mut Client::Curl.command(&url, &out, true));
    wait_for_bytes(&out, PART, &mut first);
    server.proc.kill();
    // curl sees the connection end early and exits with an error.
    let status = first.wait(DEADLINE);
    assert!(!status.success(), "curl should fail when the server dies");
    let had = len_of(&out);
    assert!(had > 0 && had < BIG as u64);
    let server = Server::start(&r, port, &[]);
    assert_eq!(server.port, port);
    let (status, _, err) = run_client(&mut Client::Curl.command(&url, &out, false));
    assert!(status.success(), "curl resuming: {status}: {err}");
    assert_eq!(sha256sum(&out), sha256sum(&stored));
}

/// A download resumed after `vmrepo add --replace` put another image under
/// the same name: a client that sends `If-Range` with the ETag it had (as
/// browsers and download managers do) gets the whole new image, never the
/// rest of the new one after the start of the old one.
///
/// curl `-C -`, `wget -c` and `aria2c -c` send a bare `Range` with no
/// validator (checked by hand against a server that prints what it gets):
/// no server can tell their resume from a fresh ranged read, so they are
/// not the subject here; the `.checksum` sidecar and `Repr-Digest` are
/// what lets them check the result.
/// aria2c resumes with a bare `Range` (no `If-Range`), so across a
/// replacement of the same size it would join the old image's head to the
/// new one's tail; but it sends `Want-Digest`, and checks the whole file
/// against the `Digest` the server answers: the splice is reported as a
/// checksum error (exit 32), never kept as a finished download.
#[test]
fn aria2c_catches_a_splice_across_a_replace_by_the_digest() {
    if !tools(&[("aria2c", "aria2"), ("sha256sum", "coreutils")]) {
        return;
    }
    let (r, file, stored) = repo_with_image(BIG, 85);
    let server = Server::start(&r, 0, &[]);
    let url = format!("{}/vm/kvm/{file}", server.url);
    let out = r.scratch().join("aria2.out");
    let mut first = start_client(&mut Client::Aria2.command(&url, &out, true));
    wait_for_bytes(&out, PART, &mut first);
    // Past a save of its control file.
    std::thread::sleep(Duration::from_millis(1500));
    first.kill();
    let new = r.scratch().join("image.img");
    pattern_file(&new, BIG, 86);
    r.add(&new, "kvm", &["--max-size", "8GB", "--replace"]);
    let new_sha = sha256sum(&stored);
    let (status, _, err) = run_client(&mut Client::Aria2.command(&url, &out, false));
    let got = sha256sum(&out);
    assert!(
        !status.success() || got == new_sha,
        "aria2c reported success with a file that is not the image: {got} ({err})"
    );
    assert_eq!(status.code(), Some(32), "aria2c should report the checksum error: {err}");
}

#[test]
fn a_resume_across_a_replace_is_never_spliced() {
    if !tools(&[("curl", "curl"), ("sha256sum", "coreutils")]) {
        return;
    }
    let (r, file, stored) = repo_with_image(BIG, 83);
    let server = Server::start(&r, 0, &[]);
    let url = format!("{}/vm/kvm/{file}", server.url);
    let out = r.scratch().join("replace.out");
    let head = r.scratch().join("replace.head");
    let mut first = start_client(
        Command::new("curl")
            .args(["-sS", "--limit-rate", &RATE.to_string(), "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&out)
            .arg(&url),
    );
    wait_for_bytes(&out, PART, &mut first);
    first.kill();
    let had = len_of(&out);
    let headers = std::fs::read_to_string(&head).unwrap();
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .expect("an ETag")
        .trim()
        .to_string();

    // Same name, same size, other bytes: only the validator tells them apart.
    let new = r.scratch().join("image.img");
    pattern_file(&new, BIG, 84);
    r.add(&new, "kvm", &["--max-size", "8GB", "--replace"]);
    let new_sha = sha256sum(&stored);
    assert_ne!(new_sha, sha256sum(&out), "the test needs the stored image to have changed");

    // Resume as a careful client does: If-Range with the old ETag.
    let rest = r.scratch().join("replace.rest");
    let (status, code, err) = run_client(
        Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&rest)
            .args(["-w", "%{http_code}", "-H", &format!("If-Range: {etag}"), "-r", &format!("{had}-")])
            .arg(&url),
    );
    assert!(status.success(), "{err}");
    assert_eq!(code, "200", "a range across a replace must be answered with the whole new image");
    assert_eq!(sha256sum(&rest), new_sha, "the whole new image, not a part of it");

    // The same with the old Last-Modified date as the validator.
    let date = headers
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: ").or_else(|| l.strip_prefix("Last-Modified: ")))
        .unwrap()
        .trim()
        .to_string();
    let (_, code, _) = run_client(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-Range: {date}")])
            .args(["-r", &format!("{had}-")])
            .arg(&url),
    );
    // (The two images were written within the same second: same date.)
    assert_eq!(code, "200", "a date validator of the old image must not let the range apply");

    // And the new ETag does let a range apply.
    let (_, new_head, _) = run_client(Command::new("curl").args(["-sS", "-I"]).arg(&url));
    let new_etag = new_head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().trim().to_string();
    assert_ne!(new_etag, etag);
    let (_, code, _) = run_client(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-Range: {new_etag}")])
            .args(["-r", &format!("{had}-")])
            .arg(&url),
    );
    assert_eq!(code, "206");
}

/// Traversal over a real socket with `curl --path-as-is` (no clean-up of
/// `..` by the client): every attempt gets 400 or 404 and no byte of the
/// file it aims at.
#[test]
fn traversal_attempts_get_nothing() {
    if !tools(&[("curl", "curl")]) {
        return;
    }
    let (r, file, _) = repo_with_image(64 * 1024, 85);
    let kvm = r.vm_dir("kvm");
    // A link planted in vm/kvm, with a name the catalog would take for an image.
    let planted = file.replace("sl08e", "sl08f");
    std::os::unix::fs::symlink("/etc/passwd", kvm.join(&planted)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", kvm.join("passwd")).unwrap();
    // A VM folder that is a link to /etc, and one to the repository's own metadata.
    for (vm, to) in [("xen", Path::new("/etc").to_path_buf()), ("vmware", r.root.join(".vmrepo"))] {
        let folder = r.root.join("vm").join(vm);
        if folder.is_dir() {
            std::fs::remove_dir(&folder).unwrap();
        }
        std::os::unix::fs::symlink(to, folder).unwrap();
    }
    // A staging folder as an import leaves it while it runs.
    let staging = kvm.join(".vmrepo-staging.1234");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join(&file), b"STAGED-SECRET").unwrap();
    let server = Server::start(&r, 0, &[]);
    let index = std::fs::read_dir(r.root.join(".vmrepo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".sqlite") || n.ends_with(".db"))
        .unwrap_or_else(|| "index.sqlite".to_string());
    let long = "a".repeat(5000);
    let attempts = [
        "/vm/../../../../etc/passwd".to_string(),
        "/vm/kvm/../../../../etc/passwd".to_string(),
        "/vm/kvm/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/vm/kvm/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".to_string(),
        "/vm/kvm/..%2f..%2f..%2f..%2fetc%2fpasswd".to_string(),
        "/vm/kvm/%2fetc%2fpasswd".to_string(),
        "/vm/kvm/..%5c..%5cetc%5cpasswd".to_string(),
        format!("/vm/kvm/{file}%00.txt"),
        format!("/vm/kvm/%00{file}"),
        "/vm/kvm/passwd".to_string(),
        format!("/vm/kvm/{planted}"),
        format!("/vm/kvm/{planted}.checksum"),
        "/vm/xen/passwd".to_string(),
        format!("/vm/vmware/{index}"),
        format!("/vm/kvm/../../.vmrepo/{index}"),
        format!("/vm/%2e%2e/.vmrepo/{index}"),
        format!("/vm/..%2f.vmrepo/{index}"),
        format!("/.vmrepo/{index}"),
        format!("/vm/kvm/.vmrepo-staging.1234/{file}"),
        format!("/vm/kvm/%2evmrepo-staging.1234/{file}"),
        format!("/vm/kvm/{long}"),
        format!("/vm/kvm/{file}/{long}"),
        format!("/vm/{long}/{file}"),
        "/vm/kvm/%ff%fe".to_string(),
        "//etc/passwd".to_string(),
        "/vm//etc/passwd".to_string(),
    ];
    let secrets: Vec<Vec<u8>> = vec![
        std::fs::read("/etc/passwd").unwrap(),
        std::fs::read(r.root.join(".vmrepo").join(&index)).unwrap_or_default(),
        b"STAGED-SECRET".to_vec(),
    ];
    let body = r.scratch().join("traversal.body");
    for path in &attempts {
        let _ = std::fs::remove_file(&body);
        let (status, code, err) = run_client(
            Command::new("curl")
                .args(["-sS", "--path-as-is", "-o"])
                .arg(&body)
                .args(["-w", "%{http_code}"])
                .arg(format!("{}{path}", server.url)),
        );
        let shown = &path[..path.len().min(80)];
        assert!(status.success(), "{shown}: {err}");
        // 414 (URI Too Long) for the paths longer than the server takes.
        assert!(code == "400" || code == "404" || (code == "414" && path.len() > 4096), "{shown}: {code}");
        let got = std::fs::read(&body).unwrap_or_default();
        for s in &secrets {
            let probe = &s[..s.len().min(16)];
            assert!(
                probe.is_empty() || !got.windows(probe.len()).any(|w| w == probe),
                "{shown}: the answer holds bytes of a file outside the catalog"
            );
        }
        assert!(!got.windows(15).any(|w| w == b"SQLite format 3"), "{shown}");
        assert!(!got.windows(5).any(|w| w == b"root:"), "{shown}");
    }
    // The image itself is still served, and the server is alive.
    let (status, body) = http_get(server.port, &format!("/vm/kvm/{file}"));
    assert_eq!((status, body.len()), (200, 64 * 1024));
}

/// HTTP/2 in clear with prior knowledge, and HTTPS with a certificate made
/// at test time: HTTP/2 by ALPN, and HTTP/1.1 when the client asks for it.
#[test]
fn http2_and_tls() {
    if !tools(&[("curl", "curl"), ("openssl", "openssl"), ("sha256sum", "coreutils")]) {
        return;
    }
    let (r, file, stored) = repo_with_image(3 * MIB + 17, 86);
    let want = sha256sum(&stored);
    let out = r.scratch().join("h2.out");
    {
        let server = Server::start(&r, 0, &[]);
        let (status, version, err) = run_client(
            Command::new("curl")
                .args(["-sS", "--fail", "--http2-prior-knowledge", "-o"])
                .arg(&out)
                .args(["-w", "%{http_version}"])
                .arg(format!("{}/vm/kvm/{file}", server.url)),
        );
        assert!(status.success(), "{err}");
        assert_eq!(version, "2");
        assert_eq!(sha256sum(&out), want);
        let (status, body, err) = run_client(
            Command::new("curl")
                .args(["-sS", "--fail", "--http2-prior-knowledge", "-r", "1000-1999"])
                .arg(format!("{}/vm/kvm/{file}", server.url))
                .args(["-o", "/dev/null", "-w", "%{http_code} %{size_download}"]),
        );
        assert!(status.success(), "{err}");
        assert_eq!(body, "206 1000");
        let (status, body, err) = run_client(
            Command::new("curl")
                .args(["-sS", "--fail", "--http2-prior-knowledge"])
                .arg(format!("{}/api/v1/images?q=lib=sl08e", server.url)),
        );
        assert!(status.success(), "{err}");
        assert!(body.contains(&file), "{body}");
    }

    let dir = r.scratch();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (status, _, err) = run_client(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    assert!(status.success(), "openssl: {err}");
    let server =
        Server::start(&r, 0, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let _ = std::fs::remove_file(&out);
        let (status, got, err) = run_client(
            Command::new("curl")
                .args(["-sS", "--fail", flag, "--cacert"])
                .arg(&cert)
                .arg("-o")
                .arg(&out)
                .args(["-w", "%{http_version}"])
                .arg(format!("{}/vm/kvm/{file}", server.url)),
        );
        assert!(status.success(), "{flag}: {err}");
        assert_eq!(got, version, "{flag}");
        assert_eq!(sha256sum(&out), want, "{flag}");
    }
    // A client that does not trust the certificate gets nothing.
    let (status, _, _) = run_client(
        Command::new("curl").args(["-sS", "-o", "/dev/null"]).arg(format!("{}/healthz", server.url)),
    );
    assert!(!status.success());
}

/// Whether the server closes the connection within `limit` (what it sends before is read and dropped).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or any answer is fine: what matters is that it ends.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
}

/// Slowloris: a client that sends its request head a byte at a time, slower
/// than the header time-out (1 s here, `--header-timeout`), is dropped
/// before it is done; so is one that connects and sends nothing, and one
/// that stops inside the HTTP/2 preface; meanwhile others are served.
#[test]
fn slow_clients_are_dropped() {
    let (r, _, _) = repo_with_image(4096, 87);
    let server = Server::start(&r, 0, &["--header-timeout", "1"]);

    // Byte by byte, 300 ms apart: the head would take about 18 s.
    let head = b"GET /api/v1/images?q=lib=sl08e HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut sent = 0;
    for b in head {
        if s.write_all(&[*b]).is_err() || closed_within(&mut s, Duration::from_millis(300)) {
            break;
        }
        sent += 1;
    }
    assert!(sent < head.len(), "a client sending its head byte by byte was not dropped");

    // Silent clients, dropped after the time-out (the margin is for a busy machine).
    let mut quiet = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(20)),
        "a client that sends nothing was not dropped"
    );
    // One that starts the HTTP/2 preface and stops.
    let mut h2 = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    assert!(
        closed_within(&mut h2, Duration::from_secs(20)),
        "a client stuck in the HTTP/2 preface was not dropped"
    );

    // The server still answers.
    let (status, _) = http_get(server.port, "/healthz");
    assert_eq!(status, 200);
}

/// SIGTERM while a download runs: no new connection is taken, the download
/// finishes whole (within the grace period) and the server exits 0.
#[test]
fn sigterm_lets_a_download_finish() {
    if !tools(&[("curl", "curl"), ("sha256sum", "coreutils")]) {
        return;
    }
    let (r, file, stored) = repo_with_image(12 * MIB, 88);
    let mut server = Server::start(&r, 0, &["--grace", "30"]);
    let out = r.scratch().join("grace.out");
    // About 3 s at this rate.
    let mut client = start_client(
        Command::new("curl")
            .args(["-sS", "--fail", "--limit-rate", &RATE.to_string(), "-o"])
            .arg(&out)
            .arg(format!("{}/vm/kvm/{file}", server.url)),
    );
    wait_for_bytes(&out, 1 << 20, &mut client);
    server.proc.signal("TERM");
    // Soon after, new connections are refused.
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "still accepting connections after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = client.wait(DEADLINE);
    assert!(status.success(), "the download was cut: {status}");
    assert_eq!(sha256sum(&out), sha256sum(&stored));
    let status = server.proc.wait(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", std::fs::read_to_string(&server.log).unwrap());
}

/// The figures of one wrk run that matter here.
#[derive(Debug)]
struct Wrk {
    requests: u64,
    socket_errors: Option<String>,
    non_2xx: Option<String>,
}

/// `wrk -t2 -c256 -d SECS URL`.
fn wrk(url: &str, secs: u32) -> Wrk {
    let (status, out, err) =
        run_client(Command::new("wrk").args(["-t2", "-c256", &format!("-d{secs}s")]).arg(url));
    assert!(status.success(), "wrk: {err}{out}");
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("wrk printed no count:\n{out}"));
    let find =
        |prefix: &str| out.lines().find(|l| l.trim().starts_with(prefix)).map(|l| l.trim().to_string());
    Wrk { requests, socket_errors: find("Socket errors:"), non_2xx: find("Non-2xx or 3xx responses:") }
}

/// 256 connections at once on a catalog query and on a small download,
/// while another client uploads images one after the other: no socket error
/// (connect, read, write or wrk's 2 s time-out), no answer other than 2xx,
/// every upload stored (`201`, then listed with the SHA-256 `sha256sum`
/// gives), and the server's peak resident memory under 64 MiB. Each run
/// lasts 10 s rather than 20 s to keep the suite's time down: the memory
/// peak and the errors show in the first seconds, when all 256 connections
/// arrive together.
#[test]
fn load_256_connections() {
    if !tools(&[("wrk", "wrk"), ("curl", "curl")]) {
        return;
    }
    let r = Repo::new();
    let scratch = r.scratch();
    let mut small = String::new();
    for (i, lib) in ["sl08e", "sl09a", "sl10b"].iter().enumerate() {
        let src = scratch.join(format!("{lib}.img"));
        pattern_file(&src, 256 * 1024, 90 + i as u64);
        let mut a =
            vec!["add", "--force", src.to_str().unwrap(), "--vm", "kvm", "--os", "sl5.3", "--arch", "x86"];
        a.extend(["--bits", "64", "--lib", lib, "--max-size", "8GB"]);
        let v = r.json(&a);
        small = v["image"]["file"].as_str().unwrap().to_string();
    }
    let token = r.ok(&["token", "add", "load"]).trim().to_string();
    let upload_src = scratch.join("upload.img");
    pattern_file(&upload_src, 4 << 20, 77);
    let upload_sha = sha256sum(&upload_src);
    let server = Server::start(&r, 0, &[]);
    let mut uploaded = Vec::new();
    for (round, path) in ["/api/v1/images?q=lib=sl08e", &format!("/vm/kvm/{small}")].into_iter().enumerate() {
        let url = format!("{}{path}", server.url);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let uploader = {
            let stop = stop.clone();
            let (base, token, src) = (server.url.clone(), token.clone(), upload_src.clone());
            std::thread::spawn(move || {
                let mut done = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let name = format!("sl5.3_x86_64_sl08e_4MB_up{round}x{n}.img");
                    let out = Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "-T"])
                        .arg(&src)
                        .args(["-H", &format!("Authorization: Bearer {token}")])
                        .arg(format!("{base}/vm/kvm/{name}"))
                        .output()
                        .unwrap();
                    done.push((name, String::from_utf8_lossy(&out.stdout).to_string()));
                }
                done
            })
        };
        let w = wrk(&url, 10);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let done = uploader.join().unwrap();
        assert!(w.socket_errors.is_none(), "{path}: {:?} ({} requests)", w.socket_errors, w.requests);
        assert!(w.non_2xx.is_none(), "{path}: {:?} ({} requests)", w.non_2xx, w.requests);
        assert!(w.requests > 256, "{path}: only {} requests", w.requests);
        assert!(!done.is_empty());
        for (name, code) in &done {
            assert_eq!(code, "201", "{path}: the upload of {name} under load");
        }
        let peak = server.peak_rss();
        eprintln!(
            "wrk -c256 -d10s {path}: {} requests, {} uploads, server peak resident {} KiB",
            w.requests,
            done.len(),
            peak >> 10
        );
        assert!(peak < 64 << 20, "{path}: the server's resident memory reached {} MiB", peak >> 20);
        uploaded.extend(done.into_iter().map(|(name, _)| name));
    }
    for name in &uploaded {
        assert_eq!(sha256sum(&r.vm_dir("kvm").join(name)), upload_sha, "{name}");
    }
    let listed = r.listed();
    assert!(uploaded.iter().all(|n| listed.contains(&format!("kvm/{n}"))), "{listed:?}");
}
