//! Writes through the router, without a socket: tokens, uploads, deletions,
//! the audit log, and that every refused or broken upload leaves nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use vmrepo_name::Vm;
use vmrepo_repo::Repository;
use vmrepo_serve::{AppState, Limits, auth};

const NAME: &str = "sl5.3_x86_64_sl08e_8MB_demo.img";
const SIZE: usize = 8 << 20;

/// A small raw disk: an MBR with one Linux partition, a line of text, zeros
/// (as `vmrepo demo` makes); `seed` changes the text.
fn disk(seed: u8) -> Vec<u8> {
    let mut d = vec![0u8; SIZE];
    let sectors = (SIZE / 512) as u32;
    let e = &mut d[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&(sectors - 2048).to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xAA;
    let text = format!("vmrepo upload test disk {seed}\n");
    d[2048 * 512..2048 * 512 + text.len()].copy_from_slice(text.as_bytes());
    d
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repository,
    state: Arc<AppState>,
    /// A token for every VM folder.
    token: String,
    /// What `tree` held before any request.
    baseline: Vec<String>,
}

fn fixture_with(read_only: bool, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = Repository::init(&dir.path().join("repo")).unwrap();
    let cancel = AtomicBool::new(false);
    let (_, token) = auth::add_token(&repo, "tester", &[], None, &cancel).unwrap();
    let state = Arc::new(AppState::new(repo.clone(), read_only, limits));
    let baseline = tree(&repo);
    Fixture { _dir: dir, repo, state, token, baseline }
}

fn fixture() -> Fixture {
    fixture_with(false, Limits::default())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    fn error_kind(&self) -> String {
        self.json()["error"]["kind"].as_str().unwrap_or_default().to_string()
    }
}

async fn send(state: &Arc<AppState>, req: Request<Body>) -> Answer {
    let r = vmrepo_serve::app(state.clone()).oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body }
}

fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Body,
    extra: &[(&str, String)],
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in extra {
        b = b.header(*k, v);
    }
    b.body(body).unwrap()
}

fn put(uri: &str, token: Option<&str>, bytes: &[u8], extra: &[(&str, String)]) -> Request<Body> {
    let mut extra = extra.to_vec();
    extra.push(("content-length", bytes.len().to_string()));
    request(Method::PUT, uri, token, Body::from(bytes.to_vec()), &extra)
}

fn uri() -> String {
    format!("/vm/kvm/{NAME}")
}

/// Every file and folder under `vm/`, `.vmrepo/uploads/` and
/// `.vmrepo/journal/`: what an upload may leave behind.
fn tree(repo: &Repository) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    let root: PathBuf = repo.root().to_path_buf();
    for d in [repo.vm_root(), repo.meta_dir().join("uploads"), repo.meta_dir().join("journal")] {
        walk(&root, &d, &mut out);
    }
    out.sort();
    out
}

fn audit_lines(repo: &Repository) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo.meta_dir().join("audit.log")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn sha_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn upload_then_read_back_then_delete() {
    let f = fixture();
    let image = disk(1);
    let r = send(
        &f.state,
        put(&uri(), Some(&f.token), &image, &[("repr-digest", format!("sha-256=:{}:", sha_b64(&image)))]),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let doc = r.json();
    assert_eq!(doc["image"]["path"], format!("vm/kvm/{NAME}"));
    assert_eq!(doc["image"]["sha256"], format!("{:x}", Sha256::digest(&image)));
    assert_eq!(doc["moved"], true);
    assert_eq!(r.headers[header::LOCATION], format!("/vm/kvm/{NAME}").as_str());

    // Visible to the read API, and the bytes served are the bytes sent.
    let list = send(&f.state, request(Method::GET, "/api/v1/images", None, Body::empty(), &[])).await;
    assert_eq!(list.status, StatusCode::OK);
    let files: Vec<String> =
        list.json().as_array().unwrap().iter().map(|r| r["file"].as_str().unwrap().to_string()).collect();
    assert_eq!(files, [NAME]);
    let got = send(&f.state, request(Method::GET, &uri(), None, Body::empty(), &[])).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body[..] == image[..], "the bytes served differ from the bytes uploaded");
    // The .checksum says the MD5 computed on arrival, which is the bytes' MD5.
    let sum =
        std::fs::read_to_string(f.repo.vm_root().join("kvm/sl5.3_x86_64_sl08e_8MB_demo.checksum")).unwrap();
    let mut md5 = vmrepo_repo::hashing::StreamMd5::new();
    md5.update(&image);
    let md5: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sum, format!("{md5}  {NAME}\n"));
    // No upload file is left.
    assert!(std::fs::read_dir(f.repo.meta_dir().join("uploads")).unwrap().next().is_none());

    let del = send(&f.state, request(Method::DELETE, &uri(), Some(&f.token), Body::empty(), &[])).await;
    assert_eq!(del.status, StatusCode::OK, "{:?}", del.body);
    assert_eq!(del.json()["removed"].as_array().unwrap().len(), 3);
    assert!(!f.repo.vm_root().join("kvm").join(NAME).exists());
    let gone = send(&f.state, request(Method::GET, &uri(), None, Body::empty(), &[])).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // One line per write, with the token's name and never the token.
    let lines = audit_lines(&f.repo);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["action"], "put");
    assert_eq!(lines[0]["token"], "tester");
    assert_eq!(lines[0]["status"], 201);
    assert_eq!(lines[0]["sha256"], format!("{:x}", Sha256::digest(&image)));
    assert_eq!(lines[1]["action"], "delete");
    assert_eq!(lines[1]["status"], 200);
    let raw = std::fs::read_to_string(f.repo.meta_dir().join("audit.log")).unwrap();
    let secret = f.token.strip_prefix(auth::TOKEN_PREFIX).unwrap();
    assert!(!raw.contains(secret), "the token is in the audit log");
}

#[tokio::test]
async fn token_cases() {
    let f = fixture();
    let cancel = AtomicBool::new(false);
    let (_, kvm_only) = auth::add_token(&f.repo, "kvm-only", &[Vm::Kvm], None, &cancel).unwrap();
    let (_, revoked) = auth::add_token(&f.repo, "old", &[], None, &cancel).unwrap();
    auth::revoke_token(&f.repo, "old", &cancel).unwrap();
    let (_, expired) =
        auth::add_token(&f.repo, "brief", &[], Some(auth::parse_expiry("2999-01-01").unwrap()), &cancel)
            .unwrap();
    // Put its expiry in the past, as time would.
    let path = auth::tokens_path(&f.repo);
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for t in doc["tokens"].as_array_mut().unwrap() {
        if t["name"] == "brief" {
            t["expires"] = "2001-01-01T00:00:00Z".into();
        }
    }
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let image = disk(2);
    let vmware = format!("/vm/vmware/{NAME}");
    let cases: [(&str, Option<&str>, &str, StatusCode, &str); 7] = [
        ("no token", None, &uri(), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "unknown token",
            Some("vmrepo_notatokenofthisserver"),
            &uri(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        ("malformed token", Some("a\"b"), &uri(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("revoked", Some(&revoked), &uri(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("expired", Some(&expired), &uri(), StatusCode::UNAUTHORIZED, "unauthorized"),
        ("other VM", Some(&kvm_only), &vmware, StatusCode::FORBIDDEN, "forbidden"),
        (
            "not a convention name",
            Some(&f.token),
            "/vm/kvm/disk.img",
            StatusCode::BAD_REQUEST,
            "invalid-input",
        ),
    ];
    for (what, token, target, status, kind) in cases {
        let r = send(&f.state, put(target, token, &image, &[])).await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert_eq!(r.error_kind(), kind, "{what}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer realm=\"vmrepo\"", "{what}");
        }
        assert_eq!(tree(&f.repo), f.baseline, "{what}: something was left");
    }
    let deleted = send(&f.state, request(Method::DELETE, &uri(), None, Body::empty(), &[])).await;
    assert_eq!(deleted.status, StatusCode::UNAUTHORIZED);
    // The scoped token writes where it may.
    let r = send(&f.state, put(&uri(), Some(&kvm_only), &image, &[])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // A token revoked while the server runs is refused at once.
    auth::revoke_token(&f.repo, "kvm-only", &cancel).unwrap();
    let r = send(&f.state, request(Method::DELETE, &uri(), Some(&kvm_only), Body::empty(), &[])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("revoked"));

    let raw = std::fs::read_to_string(f.repo.meta_dir().join("audit.log")).unwrap();
    for t in [&kvm_only, &revoked, &expired, &f.token] {
        assert!(!raw.contains(t.strip_prefix(auth::TOKEN_PREFIX).unwrap()), "a token is in the audit log");
    }
    // Lines for the refusals that presented a token, with the name when known.
    let lines = audit_lines(&f.repo);
    assert!(lines.iter().any(|l| l["token"] == "old" && l["status"] == 401), "{lines:?}");
    assert!(lines.iter().any(|l| l["token"] == "kvm-only" && l["status"] == 403), "{lines:?}");
}

#[tokio::test]
async fn read_only_refuses_every_write() {
    let f = fixture_with(true, Limits::default());
    let image = disk(3);
    let r = send(&f.state, put(&uri(), Some(&f.token), &image, &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_kind(), "forbidden");
    let r = send(&f.state, request(Method::DELETE, &uri(), Some(&f.token), Body::empty(), &[])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &f.state,
        request(Method::POST, "/api/v1/images?vm=kvm", Some(&f.token), Body::from(image.clone()), &[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing() {
    let f = fixture();
    let image = disk(4);
    let wrong = sha_b64(b"something else");
    for (h, v) in [
        ("repr-digest", format!("sha-256=:{wrong}:")),
        ("content-digest", format!("sha-256=:{wrong}:")),
        ("content-md5", base64::engine::general_purpose::STANDARD.encode([0u8; 16])),
    ] {
        let r = send(&f.state, put(&uri(), Some(&f.token), &image, &[(h, v)])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{h}: {:?}", r.body);
        assert_eq!(tree(&f.repo), f.baseline, "{h}");
    }
    // The audit line says what arrived, though it was refused.
    let lines = audit_lines(&f.repo);
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| l["status"] == 400 && l["sha256"] == format!("{:x}", Sha256::digest(&image)))
    );
    // The right digests are accepted.
    let mut md5 = vmrepo_repo::hashing::StreamMd5::new();
    md5.update(&image);
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    let r = send(
        &f.state,
        put(
            &uri(),
            Some(&f.token),
            &image,
            &[("repr-digest", format!("sha-256=:{}:", sha_b64(&image))), ("content-md5", md5)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn too_large_and_no_space() {
    let f = fixture_with(false, Limits { max_upload: 1 << 20, ..Limits::default() });
    let image = disk(5);
    let r = send(&f.state, put(&uri(), Some(&f.token), &image, &[])).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length, refused once the limit is passed.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        image.chunks(64 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = send(&f.state, request(Method::PUT, &uri(), Some(&f.token), body, &[])).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.body);
    assert_eq!(tree(&f.repo), f.baseline);

    // More than any disk here holds: refused before a byte is read.
    let f = fixture_with(false, Limits { max_upload: u64::MAX, ..Limits::default() });
    let req = request(
        Method::PUT,
        &uri(),
        Some(&f.token),
        Body::empty(),
        &[("content-length", (1u64 << 62).to_string())],
    );
    let r = send(&f.state, req).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{:?}", r.body);
    assert_eq!(r.error_kind(), "no-space");
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn a_body_that_fails_midway_leaves_nothing() {
    let f = fixture();
    let image = disk(6);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::copy_from_slice(&image[..3 << 20])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the client went away")),
    ];
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = send(&f.state, request(Method::PUT, &uri(), Some(&f.token), body, &[])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("ended early"));
    assert_eq!(tree(&f.repo), f.baseline);
    // A body shorter than its Content-Length.
    let req = request(
        Method::PUT,
        &uri(),
        Some(&f.token),
        Body::from(image[..1000].to_vec()),
        &[("content-length", image.len().to_string())],
    );
    let r = send(&f.state, req).await;
    assert!(r.status.is_client_error(), "{:?}", r.body);
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn a_silent_body_times_out_and_shutdown_rolls_back() {
    let f = fixture_with(false, Limits { body_timeout: Duration::from_millis(200), ..Limits::default() });
    let image = disk(7);
    let first: Result<Bytes, std::io::Error> = Ok(Bytes::copy_from_slice(&image[..1 << 20]));
    let stalled = futures_util::StreamExt::chain(
        futures_util::stream::iter(vec![first]),
        futures_util::stream::pending(),
    );
    let r =
        send(&f.state, request(Method::PUT, &uri(), Some(&f.token), Body::from_stream(stalled), &[])).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{:?}", r.body);
    assert_eq!(tree(&f.repo), f.baseline);

    let f = fixture();
    let first: Result<Bytes, std::io::Error> = Ok(Bytes::copy_from_slice(&image[..1 << 20]));
    let stalled = futures_util::StreamExt::chain(
        futures_util::stream::iter(vec![first]),
        futures_util::stream::pending(),
    );
    let state = f.state.clone();
    let token = f.token.clone();
    let upload = tokio::spawn(async move {
        send(&state, request(Method::PUT, &uri(), Some(&token), Body::from_stream(stalled), &[])).await
    });
    // Wait until the upload is being received, then stop.
    for _ in 0..200 {
        if f.state.metrics.uploads_in_flight.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.state.begin_stop();
    let r = tokio::time::timeout(Duration::from_secs(10), upload).await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn uploads_beyond_the_limit_are_told_to_wait() {
    let f = fixture_with(false, Limits { max_uploads: 1, ..Limits::default() });
    let _busy = f.state.upload_slots.clone().try_acquire_owned().unwrap();
    let r = send(&f.state, put(&uri(), Some(&f.token), &disk(8), &[])).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn replace_only_when_asked() {
    let f = fixture();
    let (one, two) = (disk(9), disk(10));
    assert_eq!(send(&f.state, put(&uri(), Some(&f.token), &one, &[])).await.status, StatusCode::CREATED);
    let r = send(&f.state, put(&uri(), Some(&f.token), &two, &[])).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = send(&f.state, put(&uri(), Some(&f.token), &two, &[("if-match", "\"0000\"".into())])).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{:?}", r.body);
    let old_sha = format!("\"{:x}\"", Sha256::digest(&one));
    let r = send(&f.state, put(&uri(), Some(&f.token), &two, &[("if-match", old_sha)])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.json()["replaced"], true);
    let r = send(&f.state, put(&format!("{}?replace=1", uri()), Some(&f.token), &one, &[])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let stored = std::fs::read(f.repo.vm_root().join("kvm").join(NAME)).unwrap();
    assert!(stored == one);
}

#[tokio::test]
async fn post_names_the_image_from_fields_and_content() {
    let f = fixture();
    let image = disk(11);
    let q = "/api/v1/images?vm=kvm&os=sl5.3&arch=x86&bits=64&lib=sl08e&detail=posted";
    let r = send(&f.state, request(Method::POST, q, Some(&f.token), Body::from(image.clone()), &[])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // The maximum size and the extension come from the content.
    assert_eq!(r.json()["image"]["file"], "sl5.3_x86_64_sl08e_8MB_posted.img");
    let r = send(
        &f.state,
        request(Method::POST, "/api/v1/images?vm=kvm", Some(&f.token), Body::from(image.clone()), &[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let del = send(
        &f.state,
        request(
            Method::DELETE,
            "/api/v1/images/kvm/sl5.3_x86_64_sl08e_8MB_posted",
            Some(&f.token),
            Body::empty(),
            &[],
        ),
    )
    .await;
    assert_eq!(del.status, StatusCode::OK, "{:?}", del.body);
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn content_that_disagrees_with_the_name_is_refused() {
    let f = fixture();
    // 8 MiB of disk under a 16MB name.
    let r =
        send(&f.state, put("/vm/kvm/sl5.3_x86_64_sl08e_16MB_demo.img", Some(&f.token), &disk(12), &[])).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(!msg.contains("/.vmrepo/"), "an internal path is told: {msg}");
    assert_eq!(tree(&f.repo), f.baseline);
}

#[tokio::test]
async fn a_trickling_body_is_cut_off() {
    let f = fixture_with(
        false,
        Limits { body_timeout: Duration::from_millis(300), min_rate: 1 << 20, ..Limits::default() },
    );
    // A byte every 20 ms: never idle for the time-out, far below the rate.
    let trickle = futures_util::stream::unfold(0u32, |i| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        (i < 1000).then(|| (Ok::<Bytes, std::io::Error>(Bytes::from_static(b"x")), i + 1))
    });
    let r =
        send(&f.state, request(Method::PUT, &uri(), Some(&f.token), Body::from_stream(trickle), &[])).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{:?}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("bytes a second"));
    assert_eq!(tree(&f.repo), f.baseline);
}
