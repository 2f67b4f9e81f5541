//! pull on a real network's bad days: a small HTTP server of the test's own
//! (std's TcpListener, a thread per connection) that misbehaves on purpose
//! in one way each (wrong Content-Length, a body cut short, a 200 to a Range
//! request, a wrong Content-Range, a stall, an endless body, corrupted bytes,
//! 503s, a redirect to another host); each is refused naming the image and
//! the server, or handled, and a good mirror after it completes the pull,
//! checked by sha256sum. Also: downloads in parallel, SIGTERM in the middle,
//! and SIGKILL at random moments against nginx with the bytes counted by
//! nginx's own log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pull::{Guard, Published, free_port, has_all_of, published, site, wait_for};
use crate::util::{Repo, have, sha256sum};

/// How a server misbehaves for the images (`/vm/...`); the catalog and its
/// signature are always served as they are.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// Ranges with a strong ETag, as a good server does.
    Honest,
    /// A Content-Length 1000 bytes larger than the file, then the file.
    LongLength,
    /// A Content-Length 1000 bytes smaller, and that many bytes.
    ShortLength,
    /// Honest headers, half of the body, then the connection closed.
    Truncate,
    /// The whole file with 200, whatever Range asks.
    IgnoreRange,
    /// To a Range request, a 206 of the whole file.
    WrongRange,
    /// Honest headers, half of the body, then silence.
    Stall,
    /// No Content-Length, the file, then bytes without end.
    Endless,
    /// Honest headers and as many bytes, some of them wrong.
    Corrupt,
    /// 503 to every image request.
    Unavailable,
    /// 503 to the first image request, then honest.
    FailFirst,
    /// A redirect to the same path at `localhost:PORT`.
    Redirect(u16),
}

/// One answer: the path, the Range asked (its first byte), the status, the body bytes sent.
#[derive(Clone, Debug)]
struct Served {
    path: String,
    range: Option<u64>,
    status: u16,
    sent: u64,
}

struct Hostile {
    port: u16,
    log: Arc<Mutex<Vec<Served>>>,
    /// The most image requests in flight at once.
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn images_served(&self) -> Vec<Served> {
        self.log.lock().unwrap().iter().filter(|s| s.path.starts_with("/vm/")).cloned().collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves `root` on a free port of 127.0.0.1, the images `way`, each image
/// request's body at about `rate` bytes a second (0: at once).
fn hostile(root: &Path, way: Way, rate: u64) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = Hostile { port, log: Arc::default(), peak: Arc::default(), stop: Arc::default() };
    let (root, log, peak, stop) = (root.to_path_buf(), h.log.clone(), h.peak.clone(), h.stop.clone());
    let active = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(AtomicBool::new(true));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let (root, log, peak, stop, active, first) =
                (root.clone(), log.clone(), peak.clone(), stop.clone(), active.clone(), first.clone());
            std::thread::spawn(move || {
                let _ = answer(conn, &root, way, rate, &log, &peak, &active, &first, &stop);
            });
        }
    });
    h
}

#[allow(clippy::too_many_arguments)]
fn answer(
    conn: TcpStream,
    root: &Path,
    way: Way,
    rate: u64,
    log: &Mutex<Vec<Served>>,
    peak: &AtomicUsize,
    active: &AtomicUsize,
    first: &AtomicBool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or(("", ""));
        if name.eq_ignore_ascii_case("range") {
            range = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|v| v.strip_suffix('-'))
                .and_then(|v| v.parse().ok());
        }
    }
    let data = std::fs::read(root.join(path.trim_start_matches('/'))).ok();
    let mut out = conn;
    let image = path.starts_with("/vm/");
    let way = if image { way } else { Way::Honest };
    let way = match way {
        Way::FailFirst if first.swap(false, Ordering::SeqCst) => Way::Unavailable,
        Way::FailFirst => Way::Honest,
        w => w,
    };
    let Some(mut data) = data else {
        write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let len = data.len() as u64;
    let counted = usize::from(image);
    let now = active.fetch_add(counted, Ordering::SeqCst) + counted;
    peak.fetch_max(now, Ordering::SeqCst);
    let (status, head, body_from, body_to): (u16, String, u64, u64) = match way {
        Way::Honest | Way::Truncate | Way::Stall | Way::Corrupt => {
            if way == Way::Corrupt {
                for b in data.iter_mut().step_by(4099) {
                    *b ^= 0x5a;
                }
            }
            let tag = if way == Way::Corrupt { "\"bad\"" } else { "\"v1\"" };
            let cut = |to: u64| {
                if matches!(way, Way::Truncate | Way::Stall) {
                    range.unwrap_or(0) + (to - range.unwrap_or(0)) / 2
                } else {
                    to
                }
            };
            match range {
                Some(r) if r < len => (
                    206,
                    format!(
                        "Content-Range: bytes {r}-{}/{len}\r\nContent-Length: {}\r\nETag: {tag}\r\n",
                        len - 1,
                        len - r
                    ),
                    r,
                    cut(len),
                ),
                _ => (200, format!("Content-Length: {len}\r\nETag: {tag}\r\n"), 0, cut(len)),
            }
        }
        Way::LongLength => (200, format!("Content-Length: {}\r\n", len + 1000), 0, len),
        Way::ShortLength => (200, format!("Content-Length: {}\r\n", len - 1000), 0, len - 1000),
        Way::IgnoreRange => (200, format!("Content-Length: {len}\r\nETag: \"v1\"\r\n"), 0, len),
        Way::WrongRange => match range {
            Some(_) => (
                206,
                format!("Content-Range: bytes 0-{}/{len}\r\nContent-Length: {len}\r\n", len - 1),
                0,
                len,
            ),
            None => (200, format!("Content-Length: {len}\r\n"), 0, len),
        },
        Way::Endless => (200, String::new(), 0, len),
        Way::Unavailable | Way::FailFirst => (503, "Content-Length: 0\r\n".into(), 0, 0),
        Way::Redirect(to) => {
            (302, format!("Location: http://localhost:{to}{path}\r\nContent-Length: 0\r\n"), 0, 0)
        }
    };
    // Logged as asked, the bytes sent filled in at the end (a stall has no end).
    let entry = {
        let mut log = log.lock().unwrap();
        log.push(Served { path, range, status, sent: 0 });
        log.len() - 1
    };
    write!(out, "HTTP/1.1 {status} X\r\n{head}Connection: close\r\n\r\n")?;
    let mut sent = 0u64;
    let result = (|| {
        // The wait before each chunk, so that the request counts as over as
        // soon as its last byte is written.
        for chunk in data[body_from as usize..body_to as usize].chunks(16 << 10) {
            if rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64));
            }
            out.write_all(chunk)?;
            sent += chunk.len() as u64;
        }
        match way {
            Way::Stall => {
                out.flush()?;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Way::Endless => loop {
                out.write_all(&[0x55; 16 << 10])?;
                sent += 16 << 10;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            },
            _ => {}
        }
        std::io::Result::Ok(())
    })();
    active.fetch_sub(counted, Ordering::SeqCst);
    log.lock().unwrap()[entry].sent = sent;
    result
}

/// The catalog's images: (path, size, sha256).
fn images_of(p: &Published) -> Vec<(String, u64, String)> {
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dest.join("catalog.json")).unwrap()).unwrap();
    c["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().into(),
                i["size"].as_u64().unwrap(),
                i["sha256"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn partial(r: &Repo, sha: &str) -> PathBuf {
    r.root.join(format!(".vmrepo/pull/{sha}.part"))
}

const SIZE: usize = 300_000;

#[test]
fn each_hostile_server_alone_is_refused_naming_the_image_and_the_server() {
    let p = published(&[SIZE]);
    let (path, size, sha) = images_of(&p).remove(0);
    let file = path.rsplit('/').next().unwrap().to_string();
    let cases = [
        (Way::LongLength, 11, "states a length of 301000 bytes where 300000 are due", false),
        (Way::ShortLength, 11, "states a length of 299000 bytes", false),
        (Way::Truncate, 7, "of 300000 bytes", true),
        (Way::Stall, 7, "stalled", true),
        (Way::Corrupt, 11, "its SHA-256 is", false),
        (Way::Unavailable, 7, "answered 503", false),
    ];
    for (way, code, why, kept) in cases {
        let server = hostile(&p.dest, way, 0);
        let r = site(&p.public);
        let err = r.fails(code, &["pull", &server.url(), "--tries", "1", "--stall-timeout", "1"]);
        assert!(err.contains(why), "{way:?}: expected {why:?}: {err}");
        assert!(err.contains(&file) && err.contains(&format!("{}/{path}", server.url())), "{way:?}: {err}");
        assert!(r.listed().is_empty(), "{way:?}: something was imported");
        assert!(!r.root.join(".vmrepo/sources.json").exists());
        // A cut transfer is kept to be continued; bytes refused are not.
        let held = std::fs::metadata(partial(&r, &sha)).map(|m| m.len()).ok();
        match kept {
            true => assert!(held.is_some_and(|n| n > 0 && n < size), "{way:?}: {held:?}"),
            false => assert!(held.unwrap_or(0) == 0, "{way:?}: {held:?}"),
        }
        assert_eq!(server.images_served().len(), 1, "{way:?}: --tries 1 asks once");
    }
}

#[test]
fn a_bad_source_fails_over_to_a_good_mirror() {
    let p = published(&[SIZE]);
    let (path, size, sha) = images_of(&p).remove(0);
    for way in [Way::LongLength, Way::ShortLength, Way::Truncate, Way::Stall, Way::Corrupt, Way::Unavailable]
    {
        let bad = hostile(&p.dest, way, 0);
        let good = hostile(&p.dest, Way::Honest, 0);
        let r = site(&p.public);
        let out = r.json(&["pull", &bad.url(), "--mirror", &good.url(), "--stall-timeout", "1"]);
        let i = &out["images"][0];
        assert_eq!(i["mirror"], good.url(), "{way:?}: {out}");
        assert_eq!(i["attempts"], 2, "{way:?}: {out}");
        assert_eq!(sha256sum(&r.root.join(&path)), sha256sum(&p.dest.join(&path)), "{way:?}");
        has_all_of(&r, &p);
        let asked = good.images_served();
        assert_eq!(asked.len(), 1, "{way:?}: {asked:?}");
        match way {
            // Cut short: the mirror is asked for the rest only.
            Way::Truncate | Way::Stall => {
                let from = asked[0].range.expect("a Range request");
                assert_eq!(from, size / 2, "{way:?}");
                assert_eq!(asked[0].sent, size - from);
                assert_eq!(i["transferred"], size, "{way:?}: {out}");
            }
            // Bad bytes are not continued: the mirror sends the whole image.
            _ => assert_eq!((asked[0].range, asked[0].sent), (None, size), "{way:?}"),
        }
        assert!(!partial(&r, &sha).exists());
    }
}

#[test]
fn odd_but_harmless_answers_are_handled() {
    let p = published(&[SIZE]);
    let (path, size, sha) = images_of(&p).remove(0);
    // An endless body: only the catalog's size is read.
    let endless = hostile(&p.dest, Way::Endless, 0);
    let r = site(&p.public);
    let out = r.json(&["pull", &endless.url()]);
    assert_eq!(out["transferred"], size, "{out}");
    has_all_of(&r, &p);

    // A 200 to a Range request: the download starts again from 0.
    let cut = hostile(&p.dest, Way::Truncate, 0);
    let r = site(&p.public);
    r.fails(7, &["pull", &cut.url(), "--tries", "1"]);
    let kept = std::fs::metadata(partial(&r, &sha)).unwrap().len();
    assert_eq!(kept, size / 2);
    let whole = hostile(&p.dest, Way::IgnoreRange, 0);
    let out = r.json(&["pull", &whole.url()]);
    assert_eq!(whole.images_served()[0].range, Some(kept), "it asked for the rest");
    assert_eq!(out["transferred"], size, "{out}");
    assert_eq!(out["images"][0]["resumed_from"], 0, "{out}");
    has_all_of(&r, &p);

    // A 206 of another range than the one asked is refused.
    let r = site(&p.public);
    r.fails(7, &["pull", &cut.url(), "--tries", "1"]);
    let wrong = hostile(&p.dest, Way::WrongRange, 0);
    let err = r.fails(11, &["pull", &wrong.url(), "--tries", "1"]);
    assert!(err.contains("asked for bytes 150000-299999 of 300000") && err.contains(&wrong.url()), "{err}");
    assert!(r.listed().is_empty());
    // ... and a good server continues from what was kept before.
    let good = hostile(&p.dest, Way::Honest, 0);
    let out = r.json(&["pull", &good.url()]);
    assert_eq!(
        (out["images"][0]["resumed_from"].as_u64(), out["transferred"].as_u64()),
        (Some(kept), Some(size - kept))
    );
    has_all_of(&r, &p);

    // A redirect to another host (localhost is another name): followed, the
    // bytes proved by the catalog as from any server.
    let target = hostile(&p.dest, Way::Honest, 0);
    let hop = hostile(&p.dest, Way::Redirect(target.port), 0);
    let r = site(&p.public);
    let out = r.json(&["pull", &hop.url()]);
    assert_eq!(out["images"][0]["mirror"], hop.url());
    assert_eq!(hop.images_served()[0].status, 302);
    assert_eq!(target.images_served().len(), 1);
    assert_eq!(sha256sum(&r.root.join(&path)), sha256sum(&p.dest.join(&path)));

    // A server that fails once is asked again in the next round.
    let flaky = hostile(&p.dest, Way::FailFirst, 0);
    let r = site(&p.public);
    let out = r.json(&["pull", &flaky.url(), "--tries", "2"]);
    assert_eq!(out["images"][0]["attempts"], 2, "{out}");
    has_all_of(&r, &p);
}

#[test]
fn the_catalog_comes_from_a_mirror_when_the_source_is_down() {
    let p = published(&[SIZE, 2000]);
    let good = hostile(&p.dest, Way::Honest, 0);
    let down = format!("http://127.0.0.1:{}", free_port());
    let r = site(&p.public);
    let out = r.json(&["pull", &down, "--mirror", &good.url()]);
    assert_eq!(out["source"], down);
    assert_eq!(out["catalog_from"], good.url());
    has_all_of(&r, &p);
    // The serial is kept for the source, whichever server gave the catalog.
    let sources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.root.join(".vmrepo/sources.json")).unwrap()).unwrap();
    assert_eq!(sources["sources"][&down]["serial"], 1);
    let txt = crate::util::sh(&r.vm_dir("kvm"), "cat *.txt");
    assert!(txt.contains(&format!("(through {})", good.url())), "{txt}");
}

#[test]
fn images_are_fetched_in_parallel_and_a_term_leaves_them_to_resume() {
    let p = published(&[SIZE, SIZE + 1, SIZE + 2]);
    let total = (3 * SIZE + 3) as u64;
    // About a second per image.
    let slow = hostile(&p.dest, Way::Honest, SIZE as u64);
    let r = site(&p.public);
    let out = r.json(&["pull", &slow.url(), "--jobs", "3"]);
    assert_eq!(out["transferred"], total);
    assert!(slow.peak.load(Ordering::SeqCst) >= 2, "the downloads did not overlap");
    has_all_of(&r, &p);
    let one = hostile(&p.dest, Way::Honest, 4 * SIZE as u64);
    let r = site(&p.public);
    r.ok(&["pull", &one.url(), "--jobs", "1"]);
    assert_eq!(one.peak.load(Ordering::SeqCst), 1);

    // SIGTERM while three downloads are under way (and one server stalls):
    // the pull stops, exits 130, imports nothing, and keeps what it had.
    let stalls = hostile(&p.dest, Way::Stall, 4 * SIZE as u64);
    let r = site(&p.public);
    let mut child = Guard(
        r.command(&["pull", &stalls.url(), "--jobs", "3", "--stall-timeout", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let parts: Vec<PathBuf> = images_of(&p).iter().map(|(_, _, sha)| partial(&r, sha)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !parts.iter().all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() >= (SIZE / 2) as u64)) {
        assert!(Instant::now() < deadline, "the downloads did not all start");
        std::thread::sleep(Duration::from_millis(20));
    }
    term(&child.0);
    // Not a timing test: a hang would wait for the 600 s stall time-out.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the pull did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    assert!(r.listed().is_empty());
    let kept: u64 = parts.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(kept >= total / 2, "{kept}");
    let good = hostile(&p.dest, Way::Honest, 0);
    let out = r.json(&["pull", &good.url()]);
    assert_eq!(out["transferred"], total - kept, "{out}");
    has_all_of(&r, &p);
}

fn term(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// nginx, stopped by SIGTERM so that its master stops its worker too.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        term(&self.0);
        let _ = self.0.wait();
    }
}

/// nginx serving `root` on a free port at `rate` bytes a second per
/// connection, logging each request's status and body bytes to `log`.
fn nginx(dir: &Path, root: &Path, rate: &str) -> (Nginx, u16, PathBuf) {
    let port = free_port();
    let log = dir.join("access.log");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  log_format sent '$request_uri $status $body_bytes_sent';\n  access_log {log} sent;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; limit_rate {rate}; }}\n}}\n",
        d = dir.display(),
        log = log.display(),
        root = root.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let bin = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| Path::new(b).exists()).unwrap_or("nginx");
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Nginx(child);
    wait_for(port);
    (g, port, log)
}

#[test]
fn a_pull_killed_at_random_moments_completes_with_little_more_than_the_image() {
    if !have("nginx", "nginx") && !Path::new("/usr/sbin/nginx").exists() {
        return;
    }
    const BIG: u64 = 64 << 20;
    // Random bytes (no pattern a compressor or a sparse file would shortcut).
    let src = Repo::new();
    let f = src.scratch().join("big.img");
    let mut data = vec![0u8; BIG as usize];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut data).unwrap();
    std::fs::write(&f, &data).unwrap();
    drop(data);
    src.add(&f, "kvm", &["--max-size", "2GB"]);
    let keys = src.tmp.path().join("keys");
    src.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    let dest = src.tmp.path().join("pub");
    src.ok(&["publish", dest.to_str().unwrap(), "--key", keys.join("star.key").to_str().unwrap()]);
    // 16 MB/s: four seconds for the image, more than the runs killed
    // below take together (each continues the last), so the last run completes it.
    let (_nginx, port, log) = nginx(&src.tmp.path().join("nginx"), &dest, "16m");
    let url = format!("http://127.0.0.1:{port}");
    let r = site(&keys.join("star.pub"));
    // A seeded generator: the same moments on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    const KILLS: u64 = 6;
    for _ in 0..KILLS {
        let mut child =
            Guard(r.command(&["pull", &url]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        std::thread::sleep(Duration::from_millis(100 + next(400)));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
    let out = r.json(&["pull", &url]);
    assert_eq!(out["images"][0]["action"], "pulled", "{out}");
    assert!(out["images"][0]["resumed_from"].as_u64().unwrap() > 0, "the kills left nothing: {out}");
    let path = out["images"][0]["path"].as_str().unwrap();
    assert_eq!(sha256sum(&r.root.join(path)), sha256sum(&f));
    // What nginx sent for the image, over all runs: the image once, plus
    // per kill what was in flight (socket buffers, the read buffer).
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent: u64 = loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = said.lines().filter(|l| l.starts_with("/vm/")).collect();
        if lines.len() as u64 > KILLS || Instant::now() > deadline {
            break lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let bound = BIG + KILLS * (4 << 20);
    assert!(sent >= BIG && sent <= bound, "nginx sent {sent} bytes for an image of {BIG}, bound {bound}");
}

#[test]
fn progress_bars_are_drawn_on_a_terminal_only() {
    if !have("script", "bsdutils") {
        return;
    }
    let p = published(&[SIZE, SIZE + 1]);
    // Two seconds an image: time for several frames at 8 a second.
    let slow = hostile(&p.dest, Way::Honest, SIZE as u64 / 2);
    let bin = crate::util::bin();
    let on_tty = |r: &Repo, extra: &str| {
        let cmd = format!("{bin} --repo {} {extra} pull {}", r.root.display(), slow.url());
        let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // On a terminal: a bar per download and the total, with rates.
    let said = on_tty(&site(&p.public), "");
    assert!(said.contains("2 images") && said.contains("iB/s") && said.contains("=>"), "{said}");
    // Not with --json, nor with --quiet, nor when standard error is not a terminal.
    let said = on_tty(&site(&p.public), "--json");
    assert!(!said.contains("iB/s") && said.contains("\"catalog_from\""), "{said}");
    let said = on_tty(&site(&p.public), "--quiet");
    assert!(!said.contains("iB/s"), "{said}");
    let r = site(&p.public);
    let out = r.run(&["pull", &slow.url()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_same_bytes_under_two_names_are_fetched_once() {
    let p = published(&[SIZE]);
    // The same file again under another name.
    p.src.add(&p.src.scratch().join("0.img"), "kvm", &["--max-size", "9GB"]);
    p.src.ok(&["publish", p.dest.to_str().unwrap(), "--key", p.key.to_str().unwrap()]);
    let images = images_of(&p);
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].2, images[1].2, "one SHA-256");
    let server = hostile(&p.dest, Way::Honest, 0);
    let r = site(&p.public);
    let out = r.json(&["pull", &server.url(), "--jobs", "2"]);
    assert_eq!(out["transferred"], SIZE as u64, "{out}");
    assert_eq!(server.images_served().len(), 1);
    has_all_of(&r, &p);
    assert_eq!(crate::util::sh(&r.root.join(".vmrepo/pull"), "ls"), "");
}
