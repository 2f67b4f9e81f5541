//! trust and pull: a published repository pulled into another from
//! `file://` and from a plain web server (Python's http.server); the pulled
//! images checked by `sha256sum` and `md5sum -c`; an untrusted key, a
//! tampered or expired catalog, a rollback and a changed image refused with
//! nothing imported; a killed pull resumed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Repo, have, pattern_file, sh, sha256sum};

/// A publishing repository with three images, its key, and DEST published.
pub(crate) struct Published {
    pub src: Repo,
    pub key: PathBuf,
    pub public: PathBuf,
    pub dest: PathBuf,
}

pub(crate) fn published(sizes: &[usize]) -> Published {
    let src = Repo::new();
    for (i, size) in sizes.iter().enumerate() {
        let f = src.scratch().join(format!("{i}.img"));
        pattern_file(&f, *size, i as u64);
        let max = format!("{}GB", i + 2);
        src.add(&f, if i == 2 { "xen" } else { "kvm" }, &["--max-size", &max]);
    }
    let keys = src.tmp.path().join("keys");
    src.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    let dest = src.tmp.path().join("pub");
    let key = keys.join("star.key");
    src.ok(&["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    Published { src, key, public: keys.join("star.pub"), dest }
}

/// A second repository that trusts `public`.
pub(crate) fn site(public: &Path) -> Repo {
    let r = Repo::new();
    r.ok(&["trust", "add", public.to_str().unwrap()]);
    r
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Every published image is in `r`, byte for byte, and `md5sum -c` accepts its `.checksum`s.
pub(crate) fn has_all_of(r: &Repo, p: &Published) {
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dest.join("catalog.json")).unwrap()).unwrap();
    let mut want: Vec<String> = Vec::new();
    for i in catalog["images"].as_array().unwrap() {
        let path = i["path"].as_str().unwrap();
        assert_eq!(sha256sum(&r.root.join(path)), sha256sum(&p.dest.join(path)), "{path}");
        want.push(format!("{}/{}", i["vm"].as_str().unwrap(), i["file"].as_str().unwrap()));
    }
    let mut listed = r.listed();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    let mut vms: Vec<&str> =
        catalog["images"].as_array().unwrap().iter().map(|i| i["vm"].as_str().unwrap()).collect();
    vms.dedup();
    for vm in vms {
        let said = sh(&r.vm_dir(vm), "md5sum -c *.checksum");
        assert!(!said.is_empty() && !said.contains("FAILED"), "{said}");
    }
}

pub(crate) use crate::util::free_port;

/// A child process killed when dropped.
pub(crate) struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port`.
pub(crate) fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn trusted_keys_are_kept_listed_and_removed() {
    let p = published(&[1000]);
    let r = Repo::new();
    let added = r.json(&["trust", "add", p.public.to_str().unwrap(), "--name", "bnl"]);
    assert_eq!(added["name"], "bnl");
    let id = added["key_id"].as_str().unwrap().to_string();
    let err = r.fails(5, &["trust", "add", p.public.to_str().unwrap()]);
    assert!(err.contains("already trusted") && err.contains("bnl"), "{err}");
    // A secret key is no public key.
    r.fails(6, &["trust", "add", p.key.to_str().unwrap()]);
    let listed = r.json(&["trust", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["key_id"], id.as_str());
    // Kept in minisign's format: the file minisign itself reads.
    let kept = std::fs::read_to_string(r.root.join(".vmrepo/trusted/bnl.pub")).unwrap();
    assert_eq!(kept.lines().nth(1), std::fs::read_to_string(&p.public).unwrap().lines().nth(1));
    r.ok(&["trust", "rm", "bnl"]);
    r.fails(4, &["trust", "rm", "bnl"]);
    assert_eq!(r.json(&["trust", "list"]), serde_json::json!([]));
}

/// A key that leaked may have signed a catalog with a serial so high that
/// every honest catalog after it is a "rollback": `trust rm` of that key
/// forgets the serials it signed, and the publisher's catalog signed by
/// the new key is then accepted.
#[test]
fn removing_a_leaked_key_forgets_the_serials_it_signed() {
    let old = published(&[3000]);
    let dest = old.dest.to_str().unwrap().to_string();
    let old_key = old.key.to_str().unwrap();
    // The leaked key signs serial 3.
    old.src.ok(&["publish", &dest, "--key", old_key]);
    old.src.ok(&["publish", &dest, "--key", old_key]);
    let r = site(&old.public);
    assert_eq!(r.json(&["pull", &url(&old.dest)])["serial"], 3);
    // The publisher starts again with a new key, in a new folder (serial 1),
    // served at the same URL.
    let keys = old.src.tmp.path().join("newkeys");
    old.src.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star2"]);
    let fresh = old.src.tmp.path().join("fresh");
    old.src.ok(&["publish", fresh.to_str().unwrap(), "--key", keys.join("star2.key").to_str().unwrap()]);
    std::fs::rename(&old.dest, old.src.tmp.path().join("leaked")).unwrap();
    std::fs::rename(&fresh, &old.dest).unwrap();
    if have("minisign", "minisign") {
        // The catalog at the URL is the new key's, serial 1.
        let said =
            sh(&old.dest, &format!("minisign -V -m catalog.json -p {}", keys.join("star2.pub").display()));
        assert!(said.contains("serial:1 "), "{said}");
    }
    r.ok(&["trust", "add", keys.join("star2.pub").to_str().unwrap()]);
    let err = r.fails(6, &["pull", &url(&old.dest)]);
    assert!(err.contains("serial"), "{err}");
    let removed = r.json(&["trust", "rm", "star"]);
    assert_eq!(removed["name"], "star");
    assert_eq!(removed["forgotten_sources"], serde_json::json!([{ "source": url(&old.dest), "serial": 3 }]));
    let out = r.json(&["pull", &url(&old.dest)]);
    assert_eq!((out["serial"].as_u64(), out["signer"].as_str()), (Some(1), Some("star2")));
    // From now on the new key's serial is the mark: nothing else was forgotten.
    assert_eq!(r.json(&["trust", "rm", "star2"])["forgotten_sources"][0]["serial"], 1);
}

#[test]
fn a_folder_is_pulled_once_and_the_images_are_the_published_ones() {
    let p = published(&[70_000, 71_000, 72_000]);
    let r = site(&p.public);
    let dry = r.json(&["pull", &url(&p.dest), "--dry-run"]);
    assert_eq!(dry["images"].as_array().unwrap().len(), 3);
    assert!(r.listed().is_empty(), "a dry run imports nothing");
    assert!(!r.root.join(".vmrepo/sources.json").exists(), "a dry run records nothing");

    let out = r.json(&["pull", &url(&p.dest)]);
    assert_eq!(out["serial"], 1);
    assert_eq!(out["signer"], "star");
    assert_eq!(out["transferred"], 70_000 + 71_000 + 72_000);
    has_all_of(&r, &p);
    let txt = sh(&r.vm_dir("kvm"), "cat *.txt");
    assert!(txt.contains("catalog serial 1") && txt.contains("signed by star"), "{txt}");
    // Nothing is left behind in the download folder.
    assert_eq!(sh(&r.root.join(".vmrepo/pull"), "ls"), "");

    // Again: everything is present, nothing is fetched.
    let again = r.json(&["pull", &url(&p.dest)]);
    assert_eq!(again["transferred"], 0);
    assert!(again["images"].as_array().unwrap().iter().all(|i| i["action"] == "present"));

    // FIND selects.
    let one = site(&p.public);
    let out = one.json(&["pull", &url(&p.dest), "vm=xen"]);
    assert_eq!(out["images"].as_array().unwrap().len(), 1);
    assert_eq!(one.listed(), ["xen/sl5.3_x86_64_sl08e_4GB.img"]);
}

#[test]
fn a_plain_web_server_is_pulled_from() {
    if !have("python3", "python3") {
        return;
    }
    let p = published(&[70_000, 300_000, 5_000]);
    let port = free_port();
    let _server = Guard(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(&p.dest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port);
    let r = site(&p.public);
    let out = r.json(&["pull", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(out["transferred"], 70_000 + 300_000 + 5_000);
    has_all_of(&r, &p);
    let sources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.root.join(".vmrepo/sources.json")).unwrap()).unwrap();
    assert_eq!(sources["sources"][format!("http://127.0.0.1:{port}")]["serial"], 1);
}

/// Pulling `from` into a repository trusting `p`'s key fails with `code`,
/// saying `why`, and imports nothing.
fn refused(r: &Repo, from: &Path, code: i32, why: &str) {
    let err = r.fails(code, &["pull", &url(from)]);
    assert!(err.contains(why), "expected {why:?}: {err}");
    assert!(r.listed().is_empty(), "something was imported: {err}");
}

/// A copy of the published catalog and signature in a new folder, with the
/// images' folder shared (a symbolic link).
fn copy_of(p: &Published, name: &str) -> PathBuf {
    let dir = p.src.tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for f in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(p.dest.join(f), dir.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(p.dest.join("vm"), dir.join("vm")).unwrap();
    dir
}

#[test]
fn untrusted_tampered_and_expired_catalogs_are_refused() {
    let p = published(&[70_000, 1000]);
    // No key trusted, then another key trusted.
    let r = Repo::new();
    refused(&r, &p.dest, 6, "no key is trusted");
    let other = r.tmp.path().join("other");
    r.ok(&["key", "generate", "-o", other.to_str().unwrap()]);
    r.ok(&["trust", "add", other.join("vmrepo.pub").to_str().unwrap()]);
    refused(&r, &p.dest, 6, "not trusted");

    let r = site(&p.public);
    // A digest changed in the catalog.
    let tampered = copy_of(&p, "tampered");
    let text = std::fs::read_to_string(tampered.join("catalog.json")).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = c["images"][0]["sha256"].as_str().unwrap();
    let other = format!("{}{}", if first.starts_with('0') { "1" } else { "0" }, &first[1..]);
    std::fs::write(tampered.join("catalog.json"), text.replacen(first, &other, 1)).unwrap();
    refused(&r, &tampered, 6, "does not match the catalog");
    // No signature at all: refused, unless --insecure (whose images are still checked).
    std::fs::remove_file(tampered.join("catalog.json.minisig")).unwrap();
    refused(&r, &tampered, 6, "no signature");
    let err = r.fails(11, &["pull", &url(&tampered), "--insecure"]);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(r.listed().is_empty());

    // Signed by the trusted key, but expired.
    let expired = copy_of(&p, "expired");
    let mut c: serde_json::Value = serde_json::from_str(&text).unwrap();
    c["expires"] = "2020-01-01T00:00:00Z".into();
    let bytes = serde_json::to_vec_pretty(&c).unwrap();
    let (sk, pk) = vmrepo_dist::key::load_secret_key(&p.key, None).unwrap();
    let sig = vmrepo_dist::key::sign(&sk, &pk, &bytes, "expired on purpose").unwrap();
    std::fs::write(expired.join("catalog.json"), &bytes).unwrap();
    std::fs::write(expired.join("catalog.json.minisig"), sig).unwrap();
    refused(&r, &expired, 6, "expired");

    // A signed catalog whose entry leaves vm/ is refused whole.
    let hostile = copy_of(&p, "hostile");
    let mut c: serde_json::Value = serde_json::from_str(&text).unwrap();
    c["images"][1]["path"] = "vm/../../etc/passwd".into();
    let bytes = serde_json::to_vec_pretty(&c).unwrap();
    let sig = vmrepo_dist::key::sign(&sk, &pk, &bytes, "hostile on purpose").unwrap();
    std::fs::write(hostile.join("catalog.json"), &bytes).unwrap();
    std::fs::write(hostile.join("catalog.json.minisig"), sig).unwrap();
    refused(&r, &hostile, 6, "vm/<VM>/");
    assert!(!r.root.join(".vmrepo/sources.json").exists(), "a refused pull records no serial");
}

#[test]
fn an_older_serial_from_the_same_source_is_refused() {
    let p = published(&[70_000]);
    let old = p.src.tmp.path().join("serial1");
    std::fs::create_dir(&old).unwrap();
    for f in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(p.dest.join(f), old.join(f)).unwrap();
    }
    p.src.ok(&["publish", p.dest.to_str().unwrap(), "--key", p.key.to_str().unwrap()]);
    let r = site(&p.public);
    assert_eq!(r.json(&["pull", &url(&p.dest), "--dry-run"])["serial"], 2);
    // A dry run records no serial: the older one is still accepted here.
    let fresh = site(&p.public);
    // Serial 2 pulled; then the source serves serial 1 again (a rollback).
    fresh.json(&["pull", &url(&p.dest)]);
    let listed = fresh.listed();
    for f in ["catalog.json", "catalog.json.minisig"] {
        std::fs::copy(old.join(f), p.dest.join(f)).unwrap();
    }
    let err = fresh.fails(6, &["pull", &url(&p.dest)]);
    assert!(err.contains("serial 1 is older than serial 2"), "{err}");
    assert_eq!(fresh.listed(), listed);
    // Elsewhere the source's serial 1 was never seen, and is pulled.
    assert_eq!(r.json(&["pull", &url(&p.dest)])["serial"], 1);
}

#[test]
fn an_image_changed_after_publishing_is_refused() {
    let p = published(&[70_000, 71_000]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dest.join("catalog.json")).unwrap()).unwrap();
    // The second image replaced by other bytes of the same size (a new file:
    // the published one is a hard link to the repository's).
    let path = p.dest.join(c["images"][1]["path"].as_str().unwrap());
    std::fs::remove_file(&path).unwrap();
    pattern_file(&path, 71_000, 99);
    let r = site(&p.public);
    let err = r.fails(11, &["pull", &url(&p.dest)]);
    assert!(err.contains("SHA-256") && err.contains(c["images"][1]["file"].as_str().unwrap()), "{err}");
    assert!(r.listed().is_empty(), "the good image is not imported alone either");
    // A shorter one is refused too, and nothing half-fetched is visible.
    std::fs::remove_file(&path).unwrap();
    pattern_file(&path, 70_000, 1);
    let err = r.fails(7, &["pull", &url(&p.dest)]);
    assert!(err.contains("ended after 70000 of 71000"), "{err}");
    assert!(r.listed().is_empty());
    assert!(!r.root.join(".vmrepo/sources.json").exists());
}

/// A web server that serves `Range: bytes=N-` under `If-Range` with a
/// strong ETag, as slowly as asked, and logs each answer's status and the
/// bytes it sent.
const RANGED_SERVER: &str = r#"
import http.server, os, sys, time
root, port, rate, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        path = os.path.join(root, self.path.lstrip('/'))
        if not os.path.isfile(path):
            self.send_error(404); return
        st = os.stat(path)
        etag = '"%x-%x"' % (st.st_mtime_ns, st.st_size)
        start, rng, ifr = 0, self.headers.get('Range'), self.headers.get('If-Range')
        if rng and rng.startswith('bytes=') and rng.endswith('-') and ifr == etag:
            start = int(rng[6:-1])
        self.send_response(206 if start else 200)
        self.send_header('ETag', etag)
        self.send_header('Content-Length', str(st.st_size - start))
        if start:
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, st.st_size - 1, st.st_size))
        self.end_headers()
        sent = 0
        try:
            with open(path, 'rb') as f:
                f.seek(start)
                while True:
                    b = f.read(16384)
                    if not b: break
                    self.wfile.write(b); self.wfile.flush(); sent += len(b)
                    if self.path.startswith('/vm/'): time.sleep(len(b) / rate)
        finally:
            with open(log, 'a') as l: l.write('%s %d %d\n' % (self.path, 206 if start else 200, sent))
http.server.ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

/// Starts `vmrepo pull URL` in `r` and kills it (SIGKILL) once the partial
/// file holds at least `at` bytes; returns its length then.
pub(crate) fn kill_pull_at(r: &Repo, url: &str, partial: &Path, at: u64) -> u64 {
    let mut child =
        Guard(r.command(&["pull", url]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(partial).map_or(0, |m| m.len()) < at {
        assert!(Instant::now() < deadline, "the pull did not get {at} bytes in time");
        assert!(child.0.try_wait().unwrap().is_none(), "the pull ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    std::fs::metadata(partial).unwrap().len()
}

/// [`RANGED_SERVER`] serving `dir` at 1 MiB/s on a free port, logging to
/// `log`, once it listens: (its guard, its URL).
pub(crate) fn ranged_server(dir: &Path, log: &Path) -> (Guard, String) {
    let script = log.with_file_name("ranged.py");
    std::fs::write(&script, RANGED_SERVER).unwrap();
    let port = free_port();
    let server = Guard(
        Command::new("python3")
            .arg(&script)
            .arg(dir)
            .args([port.to_string(), (1u32 << 20).to_string()])
            .arg(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port);
    (server, format!("http://127.0.0.1:{port}"))
}

#[test]
fn a_killed_pull_resumes_where_it_stopped() {
    if !have("python3", "python3") {
        return;
    }
    const SIZE: usize = 3 << 20;
    let p = published(&[SIZE]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dest.join("catalog.json")).unwrap()).unwrap();
    let sha = c["images"][0]["sha256"].as_str().unwrap();
    let log = p.src.tmp.path().join("server.log");
    let (_server, ranged) = ranged_server(&p.dest, &log);

    // Killed after a third: the second pull asks for the rest only.
    let r = site(&p.public);
    let partial = r.root.join(format!(".vmrepo/pull/{sha}.part"));
    let kept = kill_pull_at(&r, &ranged, &partial, (SIZE / 3) as u64);
    assert!(kept < SIZE as u64, "the whole image arrived before the kill");
    assert!(r.listed().is_empty(), "nothing half-fetched is visible");
    let out = r.json(&["pull", &ranged]);
    assert_eq!(out["transferred"], SIZE as u64 - kept, "{out}");
    // The server logs an answer once it is sent, which may be just after the client has it all.
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let said = std::fs::read_to_string(&log).unwrap();
        if said.lines().filter(|l| l.starts_with("/vm/")).count() == 2 || Instant::now() > deadline {
            break said;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let last = said.lines().rfind(|l| l.starts_with("/vm/")).unwrap();
    assert!(last.ends_with(&format!(" 206 {}", SIZE as u64 - kept)), "{said}");
    has_all_of(&r, &p);
    assert!(!partial.exists());

    // A server that does not do ranges (http.server) answers 200: the
    // download starts again from zero, and the image is still whole.
    let r = site(&p.public);
    let partial = r.root.join(format!(".vmrepo/pull/{sha}.part"));
    kill_pull_at(&r, &ranged, &partial, (SIZE / 3) as u64);
    let plain = free_port();
    let _plain = Guard(
        Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &plain.to_string(), "--directory"])
            .arg(&p.dest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(plain);
    let out = r.json(&["pull", &format!("http://127.0.0.1:{plain}")]);
    assert_eq!(out["transferred"], SIZE as u64, "{out}");
    has_all_of(&r, &p);
}
