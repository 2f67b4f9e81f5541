//! `--sign-key` in process, without a socket: `/catalog.json` and its
//! signature (verified with the minisign crate), each entry's `path`
//! downloaded from this server, `ETag`/`304`, the catalog built once per
//! change and not per request, the serial kept across restarts and shared
//! by two servers on one repository, and the web page's pull commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use vmrepo_dist::export::Signers;
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::{AddRequest, Catalog, Facts, NoProgress, Repository};
use vmrepo_serve::signed::Signing;
use vmrepo_serve::{AppState, Limits};

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
    key: PathBuf,
    public: minisign::PublicKey,
}

fn add(repo: &Repository, dir: &Path, vm: Vm, name: &str, seed: u8) {
    let src = dir.join(format!("src-{seed}"));
    if name.ends_with(".img") {
        let b: Vec<u8> = (0..70_000u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        std::fs::write(&src, b).unwrap();
    } else {
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.vmdk"), vec![seed; 1000]).unwrap();
    }
    let stop = AtomicBool::new(false);
    let mut catalog = Catalog::open(repo.clone(), &stop).unwrap();
    vmrepo_repo::add(
        &mut catalog,
        AddRequest {
            source: &src,
            vm,
            name: ImageName::parse(name).unwrap(),
            facts: Facts::default(),
            notes: None,
            replace: false,
            move_source: false,
            content: vmrepo_repo::content::read(&src).ok(),
            force: true,
            progress: &NoProgress,
            cancel: &stop,
            prehashed: None,
        },
    )
    .unwrap();
    settle(repo);
}

/// Sets the folders' times an hour back: a tree changed within the last
/// two seconds is not trusted as a witness (the catalog's racy window), and
/// these tests must not wait for it.
fn settle(repo: &Repository) {
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let vm = repo.vm_root();
    let mut dirs = vec![vm.clone()];
    dirs.extend(std::fs::read_dir(&vm).unwrap().map(|e| e.unwrap().path()));
    for d in dirs {
        std::fs::File::open(&d).unwrap().set_modified(hour_ago).unwrap();
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = Repository::init(&dir.path().join("repo")).unwrap();
    add(&repo, dir.path(), Vm::Kvm, "sl5.3_x86_64_sl08e_8MB_demo.img", 1);
    add(&repo, dir.path(), Vm::Xen, "sl4_x86_32_sl07c_1MB_ec2.img", 2);
    // A folder image: not listed (as publish).
    add(&repo, dir.path(), Vm::Vmware, "sl5.3_x86_64_sl08e_4GB_split", 3);
    let k = vmrepo_dist::key::generate_key(&dir.path().join("keys"), "star", None).unwrap();
    let public = minisign::PublicKey::from_file(&k.public).unwrap();
    Fixture { repo, key: k.secret, public, dir }
}

fn server(f: &Fixture, read_only: bool, signing: bool) -> Arc<AppState> {
    let mut state = AppState::new(f.repo.clone(), read_only, Limits::default());
    if signing {
        let (minisign_secret, minisign_public) = vmrepo_dist::key::load_secret_key(&f.key, None).unwrap();
        let week = jiff::SignedDuration::from_hours(24 * 7);
        state.signing = Some(Signing::new(Signers::minisign(minisign_secret, minisign_public), week, None));
    }
    Arc::new(state)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn ask(state: &Arc<AppState>, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::builder().method(method).uri(uri).header("host", "vm.example.org:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = vmrepo_serve::app(state.clone()).oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

/// The catalog and its signature, the signature verified with the fixture's public key.
async fn signed_catalog(f: &Fixture, state: &Arc<AppState>) -> serde_json::Value {
    let c = ask(state, "GET", "/catalog.json", &[]).await;
    assert_eq!(c.status, StatusCode::OK, "{}", String::from_utf8_lossy(&c.body));
    let s = ask(state, "GET", "/catalog.json.minisig", &[]).await;
    assert_eq!(s.status, StatusCode::OK);
    let sig = minisign::SignatureBox::from_string(std::str::from_utf8(&s.body).unwrap()).unwrap();
    minisign::verify(&f.public, &sig, std::io::Cursor::new(&c.body), true, false, false)
        .expect("the signature matches the catalog");
    serde_json::from_slice(&c.body).unwrap()
}

fn signed_count(state: &AppState) -> u64 {
    state.metrics.catalogs_signed.load(Ordering::Relaxed)
}

#[tokio::test]
async fn the_catalog_is_signed_lists_what_is_served_and_is_not_rebuilt_per_request() {
    let f = fixture();
    let state = server(&f, false, true);
    let doc = signed_catalog(&f, &state).await;
    assert_eq!(doc["format"], "vmrepo-catalog");
    assert_eq!(doc["serial"], 1);
    let images = doc["images"].as_array().unwrap();
    let mut paths: Vec<&str> = images.iter().map(|i| i["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.img", "vm/xen/sl4_x86_32_sl07c_1MB_ec2.img"]);
    // Each path is where this server sends those very bytes.
    for i in images {
        let got = ask(&state, "GET", &format!("/{}", i["path"].as_str().unwrap()), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(format!("{:x}", Sha256::digest(&got.body)), i["sha256"].as_str().unwrap());
        assert_eq!(got.body.len() as u64, i["size"].as_u64().unwrap());
    }
    // Headers, 304, HEAD.
    let c = ask(&state, "GET", "/catalog.json", &[]).await;
    assert_eq!(c.header("content-type"), "application/json");
    assert_eq!(c.header("cache-control"), "no-cache");
    let etag = c.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let again = ask(&state, "GET", "/catalog.json", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let head = ask(&state, "HEAD", "/catalog.json", &[]).await;
    assert_eq!((head.status, head.body.len(), head.header("etag")), (StatusCode::OK, 0, etag.as_str()));
    // Built once: the requests above and a hundred more did not sign again.
    let built = signed_count(&state);
    for _ in 0..100 {
        ask(&state, "GET", "/catalog.json", &[]).await;
    }
    assert_eq!(signed_count(&state), built, "the catalog was built again with nothing changed");
    assert!(built <= 2, "built {built} times");

    // An image added (by another process, say): the next catalog lists it, with the next serial.
    add(&f.repo, f.dir.path(), Vm::Kvm, "sl6.4_x86_64_sl13b_2GB_new.img", 4);
    let doc = signed_catalog(&f, &state).await;
    assert_eq!(doc["serial"], 2);
    assert_eq!(doc["images"].as_array().unwrap().len(), 3);
    let c2 = ask(&state, "GET", "/catalog.json", &[("if-none-match", &etag)]).await;
    assert_eq!(c2.status, StatusCode::OK, "the old ETag no longer matches");
    let built = signed_count(&state);
    for _ in 0..20 {
        ask(&state, "GET", "/catalog.json.minisig", &[]).await;
    }
    assert_eq!(signed_count(&state), built);

    // A restart: the serial does not go back, nor grow with nothing changed.
    let restarted = server(&f, true, true);
    assert_eq!(signed_catalog(&f, &restarted).await["serial"], 2);
    // Two servers on one repository: a change seen by one is not signed twice with two serials.
    add(&f.repo, f.dir.path(), Vm::Xen, "sl6.4_x86_64_sl13b_4GB_more.img", 5);
    let a = signed_catalog(&f, &state).await;
    let b = signed_catalog(&f, &restarted).await;
    assert_eq!((a["serial"].clone(), b["serial"].clone()), (3.into(), 3.into()));
    assert_eq!(a, b);
    // The state is where docs/serve.md says.
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.repo.meta_dir().join("serve-catalog.json")).unwrap())
            .unwrap();
    assert_eq!(kept["serial"], 3);
}

#[tokio::test]
async fn without_a_key_there_is_no_catalog_and_a_broken_serial_is_not_guessed() {
    let f = fixture();
    let plain = server(&f, false, false);
    for path in ["/catalog.json", "/catalog.json.minisig"] {
        let a = ask(&plain, "GET", path, &[]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let msg = String::from_utf8_lossy(&a.body);
        assert!(msg.contains("--sign-key") && !msg.contains('\n'), "{msg}");
    }
    let page = String::from_utf8(ask(&plain, "GET", "/", &[]).await.body).unwrap();
    assert!(!page.contains("vmrepo pull"), "no pull command without a signed catalog");

    // A state file that cannot be read: no catalog (rather than serial 1 again), said in one line.
    std::fs::write(f.repo.meta_dir().join("serve-catalog.json"), b"{ not json").unwrap();
    let state = server(&f, true, true);
    let a = ask(&state, "GET", "/catalog.json", &[]).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    let msg = String::from_utf8_lossy(&a.body);
    assert!(msg.contains("serve-catalog.json") && msg.contains("serial"), "{msg}");
}

#[tokio::test]
async fn the_web_page_shows_the_pull_commands_with_the_key_id() {
    let f = fixture();
    let state = server(&f, true, true);
    let id = state.signing.as_ref().unwrap().key_id.clone();
    assert_eq!(id, vmrepo_dist::key::key_id(&f.public));
    let index = String::from_utf8(ask(&state, "GET", "/", &[]).await.body).unwrap();
    assert!(index.contains("vmrepo pull http://vm.example.org:8080/"), "{index}");
    assert!(index.contains("vmrepo trust add KEYFILE.pub") && index.contains(&id));
    let page =
        String::from_utf8(ask(&state, "GET", "/images/kvm/sl5.3_x86_64_sl08e_8MB_demo", &[]).await.body)
            .unwrap();
    assert!(
        page.contains("vmrepo pull http://vm.example.org:8080/ vm=kvm name=sl5.3_x86_64_sl08e_8MB_demo"),
        "{page}"
    );
    assert!(page.contains(&id));
    // The folder image is not in the signed catalog: no pull command for it.
    let folder =
        String::from_utf8(ask(&state, "GET", "/images/vmware/sl5.3_x86_64_sl08e_4GB_split", &[]).await.body)
            .unwrap();
    assert!(folder.contains("sl5.3_x86_64_sl08e_4GB_split") && !folder.contains("vmrepo pull"), "{folder}");
}
