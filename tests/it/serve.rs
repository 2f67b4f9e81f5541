//! `vmrepo serve` as a process: the URL it prints, answers that are the CLI's
//! own `--json` documents, images added by the CLI seen without a restart,
//! SIGTERM, and refusals at start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::util::{Repo, pattern_file};

/// A running `vmrepo serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without the final slash.
    pub url: String,
    pub addr: String,
}

impl Server {
    /// Starts `vmrepo serve --listen 127.0.0.1:0 --json` (and `extra`) on the repository.
    pub fn start(r: &Repo, extra: &[&str]) -> Server {
        let mut args = vec!["--json", "serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let child = r.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        // Held by the guard from here on: a failure below still kills it.
        let mut server = Server { child, url: String::new(), addr: String::new() };
        // The first JSON document on stdout (on one line or several), printed
        // once the server listens; end of file if it exits instead.
        let stdout = server.child.stdout.take().unwrap();
        let v: serde_json::Value = serde_json::Deserializer::from_reader(stdout)
            .into_iter()
            .next()
            .expect("vmrepo serve printed nothing: it did not start")
            .unwrap_or_else(|e| panic!("vmrepo serve printed something that is not JSON: {e}"));
        server.url = v["url"].as_str().unwrap().trim_end_matches('/').to_string();
        server.addr = server.url.trim_start_matches("http://").to_string();
        server
    }

    /// A plain HTTP/1.1 GET: (status, headers in lower case, body).
    pub fn get(&self, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[end + 4..].to_vec();
        if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
            body = dechunk(&body);
        }
        (status, headers, body)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

#[test]
fn serve_answers_what_the_cli_prints_and_sees_cli_adds_at_once() {
    let r = Repo::new();
    let src = r.scratch().join("a.img");
    pattern_file(&src, 1 << 20, 5);
    r.add(&src, "kvm", &["--max-size", "1GB", "--detail", "one"]);
    let s = Server::start(&r, &[]);
    assert!(s.url.starts_with("http://127.0.0.1:"), "{}", s.url);
    assert_eq!(s.json("/api/v1/images"), r.json(&["find"]));
    assert_eq!(s.json("/api/v1/inventory"), r.json(&["inventory"]));
    assert_eq!(
        s.json("/api/v1/images/kvm/sl5.3_x86_64_sl08e_1GB_one"),
        r.json(&["show", "kvm/sl5.3_x86_64_sl08e_1GB_one"])
    );
    // Added by the CLI while the server runs: listed by the next request.
    let b = r.scratch().join("b.img");
    pattern_file(&b, 1 << 20, 6);
    r.add(&b, "xen", &["--max-size", "2GB", "--detail", "two"]);
    let listed = s.json("/api/v1/images");
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed, r.json(&["find"]));
    let (status, _, body) = s.get("/vm/xen/sl5.3_x86_64_sl08e_2GB_two.img");
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(&b).unwrap());
    // Removed by the CLI: gone from the server.
    r.ok(&["rm", "xen/sl5.3_x86_64_sl08e_2GB_two"]);
    assert_eq!(s.get("/vm/xen/sl5.3_x86_64_sl08e_2GB_two.img").0, 404);
    assert_eq!(s.json("/api/v1/images").as_array().unwrap().len(), 1);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let r = Repo::new();
    let mut s = Server::start(&r, &[]);
    assert_eq!(s.get("/healthz").0, 200);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(s.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(TcpStream::connect(&s.addr).is_err(), "still listening");
}

#[test]
fn bad_settings_are_refused_before_listening() {
    let r = Repo::new();
    for (args, code) in [
        (vec!["serve", "--listen", "localhost"], 6),
        (vec!["serve", "--listen", "127.0.0.1:99999"], 6),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                "/nonexistent",
                "--tls-key",
                "/nonexistent",
            ],
            6,
        ),
        (vec!["serve", "--listen", "127.0.0.1:0", "--tls-cert", "/etc/hostname"], 2),
    ] {
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("vmrepo"), "{args:?}");
    }
    // Not a repository: exit 3 before listening.
    let t = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::util::bin())
        .args(["--repo", t.path().to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
