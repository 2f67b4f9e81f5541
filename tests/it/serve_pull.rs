//! `vmrepo pull http://127.0.0.1:PORT/` from a running `vmrepo serve
//! --sign-key`: the catalog verified by the real `minisign` and validated
//! against its JSON Schema (Python's jsonschema), the pulled images checked
//! by `sha256sum` against the source's, the bytes on the wire counted by a
//! proxy between pull and serve (not by vmrepo): a second pull moves only
//! the new image, a pull killed in the middle resumes with a range, a
//! restarted server keeps its serial, and a server signing with another key
//! is refused.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::publish::check_against_schema;
use crate::pull::kill_pull_at;
use crate::serve::Server;
use crate::util::{Repo, have, pattern_file, sha256sum};

/// A TCP proxy on 127.0.0.1 that counts the bytes the server sends and
/// can slow them down; its upstream can be changed (a restarted server),
/// so that the URL pull knows stays the same. Stopped when dropped.
struct Proxy {
    url: String,
    upstream: Arc<Mutex<String>>,
    /// Bytes from the server to the client.
    sent: Arc<AtomicU64>,
    /// Bytes a second towards the client; 0: as fast as it goes.
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accepter: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = Arc::new(Mutex::new(upstream.to_string()));
        let (sent, rate, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let accepter = {
            let (upstream, sent, rate, stop) = (upstream.clone(), sent.clone(), rate.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    client.set_nonblocking(false).unwrap();
                    let addr = upstream.lock().unwrap().clone();
                    let Ok(server) = TcpStream::connect(&addr) else { continue };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || pipe(client, server, None, None));
                    let (sent, rate) = (sent.clone(), rate.clone());
                    std::thread::spawn(move || pipe(s2, c2, Some(sent), Some(rate)));
                }
            })
        };
        Proxy { url, upstream, sent, rate, stop, accepter: Some(accepter) }
    }

    fn point_to(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_string();
    }

    /// Bytes sent by the server since the last call.
    fn take_sent(&self) -> u64 {
        self.sent.swap(0, Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>, rate: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        if let Some(r) = rate.as_ref().map(|r| r.load(Ordering::SeqCst)).filter(|r| *r > 0) {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `curl -sSf URL -o FILE`.
fn curl(url: &str, out: &Path) {
    let st = Command::new("curl").args(["-sSf", url, "-o"]).arg(out).status().unwrap();
    assert!(st.success(), "curl {url}: {st}");
}

/// The served catalog and its signature fetched with curl into `dir`,
/// verified by minisign with `public`; its JSON, and what minisign said.
fn fetch_verified(url: &str, dir: &Path, public: &Path) -> (serde_json::Value, String) {
    std::fs::create_dir_all(dir).unwrap();
    curl(&format!("{url}/catalog.json"), &dir.join("catalog.json"));
    curl(&format!("{url}/catalog.json.minisig"), &dir.join("catalog.json.minisig"));
    let out = Command::new("minisign")
        .args(["-V", "-p", public.to_str().unwrap(), "-m", "catalog.json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "minisign refused the served catalog: {said}");
    (serde_json::from_slice(&std::fs::read(dir.join("catalog.json")).unwrap()).unwrap(), said)
}

/// Adds an image of `size` bytes to `r` (the pattern of `seed`), maximum size `max`.
fn add(r: &Repo, size: usize, seed: u64, vm: &str, max: &str) -> PathBuf {
    let f = r.scratch().join(format!("{seed}.img"));
    pattern_file(&f, size, seed);
    r.add(&f, vm, &["--max-size", max]);
    f
}

/// Every image of `catalog` is in `site` with the source's bytes (sha256sum on both sides).
fn has_all(site: &Repo, src: &Repo, catalog: &serde_json::Value) {
    let mut want = Vec::new();
    for i in catalog["images"].as_array().unwrap() {
        let path = i["path"].as_str().unwrap();
        assert_eq!(sha256sum(&site.root.join(path)), sha256sum(&src.root.join(path)), "{path}");
        want.push(format!("{}/{}", i["vm"].as_str().unwrap(), i["file"].as_str().unwrap()));
    }
    let mut listed = site.listed();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn pull_reads_a_signed_serve_grows_with_it_resumes_and_refuses_another_key() {
    if !have("curl", "curl") || !have("minisign", "minisign") {
        return;
    }
    let src = Repo::new();
    add(&src, 70_000, 1, "kvm", "2GB");
    add(&src, 80_000, 2, "xen", "3GB");
    let keys = src.tmp.path().join("keys");
    src.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    let (key, public) = (keys.join("star.key"), keys.join("star.pub"));
    let server = Server::start(&src, &["--sign-key", key.to_str().unwrap()]);
    let proxy = Proxy::start(&server.addr);
    let look = src.tmp.path().join("look");

    // The catalog as any site fetches it: minisign verifies it, the schema holds.
    let (c1, said) = fetch_verified(&server.url, &look.join("1"), &public);
    assert!(said.contains("serial:1 "), "{said}");
    assert_eq!(c1["serial"], 1);
    assert_eq!(c1["images"].as_array().unwrap().len(), 2);
    check_against_schema(&look.join("1/catalog.json"));
    // The entries are those vmrepo publish writes for the same repository.
    let dest = src.tmp.path().join("pub");
    src.ok(&["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(published["images"], c1["images"]);

    // pull through the proxy: both images, the source's bytes.
    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    proxy.take_sent();
    let out = site.json(&["pull", &format!("{}/", proxy.url)]);
    assert_eq!(out["serial"], 1);
    has_all(&site, &src, &c1);
    let first = proxy.take_sent();
    assert!(first >= 150_000, "{first} bytes on the wire");

    // A new image at the source: the serial grows, and only it is sent.
    add(&src, 300_000, 3, "kvm", "4GB");
    let out = site.json(&["pull", &proxy.url]);
    let (c2, _) = fetch_verified(&server.url, &look.join("2"), &public);
    assert_eq!((out["serial"].clone(), c2["serial"].clone()), (2.into(), 2.into()));
    has_all(&site, &src, &c2);
    let catalog_len = std::fs::metadata(look.join("2/catalog.json")).unwrap().len();
    let second = proxy.take_sent();
    assert!(
        (300_000..300_000 + catalog_len + 16_384).contains(&second),
        "{second} bytes on the wire for one 300000-byte image and a {catalog_len}-byte catalog"
    );

    // Restarted: the serial does not go back (nor grow: nothing changed),
    // and pull, which remembers serial 2 from this URL, takes it.
    drop(server);
    let server = Server::start(&src, &["--read-only", "--sign-key", key.to_str().unwrap()]);
    proxy.point_to(&server.addr);
    let (c3, _) = fetch_verified(&server.url, &look.join("3"), &public);
    assert_eq!(c3["serial"], 2);
    let out = site.json(&["pull", &proxy.url]);
    assert_eq!(out["serial"], 2);
    assert!(proxy.take_sent() < catalog_len + 16_384, "images sent again");

    // A pull killed in the middle resumes: the second pull is sent the rest only.
    const BIG: u64 = 4 << 20;
    add(&src, BIG as usize, 4, "xen", "8GB");
    let (c4, _) = fetch_verified(&server.url, &look.join("4"), &public);
    assert_eq!(c4["serial"], 3);
    let big = c4["images"].as_array().unwrap().iter().find(|i| i["size"] == BIG).unwrap();
    let partial = site.root.join(format!(".vmrepo/pull/{}.part", big["sha256"].as_str().unwrap()));
    proxy.rate.store(1 << 20, Ordering::SeqCst);
    let kept = kill_pull_at(&site, &proxy.url, &partial, BIG / 4);
    assert!(kept < BIG, "the whole image arrived before the kill");
    assert!(!site.listed().iter().any(|l| l.ends_with("8GB.img")), "nothing half-fetched is visible");
    proxy.rate.store(0, Ordering::SeqCst);
    // What the killed pull was still sent is not counted against the resume.
    std::thread::sleep(Duration::from_millis(200));
    proxy.take_sent();
    let out = site.json(&["pull", &proxy.url]);
    assert_eq!(out["serial"], 3);
    has_all(&site, &src, &c4);
    let resumed = proxy.take_sent();
    let c4_len = std::fs::metadata(look.join("4/catalog.json")).unwrap().len();
    assert!(
        resumed >= BIG - kept && resumed < BIG - kept + c4_len + 16_384,
        "{resumed} bytes sent to finish an image of {BIG} of which {kept} were kept"
    );
    assert!(!partial.exists());

    // A server signing with another key: refused, nothing imported.
    drop(server);
    let other = src.tmp.path().join("other");
    src.ok(&["key", "generate", "-o", other.to_str().unwrap(), "--name", "intruder"]);
    let rogue = Server::start(&src, &["--sign-key", other.join("intruder.key").to_str().unwrap()]);
    proxy.point_to(&rogue.addr);
    let before = site.listed();
    let err = site.fails(6, &["pull", &proxy.url]);
    assert!(err.contains("not trusted"), "{err}");
    assert_eq!(site.listed(), before);
    // And minisign agrees: the trusted key does not verify it.
    let dir = look.join("rogue");
    std::fs::create_dir_all(&dir).unwrap();
    curl(&format!("{}/catalog.json", rogue.url), &dir.join("catalog.json"));
    curl(&format!("{}/catalog.json.minisig", rogue.url), &dir.join("catalog.json.minisig"));
    let st = Command::new("minisign")
        .args(["-V", "-p", public.to_str().unwrap(), "-m", "catalog.json"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success(), "minisign took a catalog signed by another key");
}

#[test]
fn serve_without_a_key_says_how_to_sign_and_refuses_a_bad_key_before_listening() {
    let r = Repo::new();
    let s = Server::start(&r, &[]);
    let (status, _, body) = s.get("/catalog.json");
    assert_eq!(status, 404);
    let msg = String::from_utf8_lossy(&body);
    assert!(msg.contains("--sign-key"), "{msg}");
    drop(s);
    // Not a key, a key inside the repository, a bad duration: refused at start (exit 6).
    let junk = r.scratch().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    let err = r.fails(6, &["serve", "--listen", "127.0.0.1:0", "--sign-key", junk.to_str().unwrap()]);
    assert!(err.contains("junk.key"), "{err}");
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap()]);
    let inside = r.root.join("vmrepo.key");
    std::fs::copy(keys.join("vmrepo.key"), &inside).unwrap();
    let err = r.fails(6, &["serve", "--listen", "127.0.0.1:0", "--sign-key", inside.to_str().unwrap()]);
    assert!(err.contains("inside the repository"), "{err}");
    let key = keys.join("vmrepo.key");
    let err = r.fails(
        6,
        &["serve", "--listen", "127.0.0.1:0", "--sign-key", key.to_str().unwrap(), "--catalog-expires", "0d"],
    );
    assert!(err.contains("--catalog-expires"), "{err}");
}
