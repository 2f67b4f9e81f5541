//! The API and downloads in process, without a socket: every endpoint,
//! status and header of docs/serve.md's read side, each traversal form.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use md5::Md5;
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::{AddRequest, Catalog, Facts, NoProgress, Query, Repository};
use vmrepo_serve::{AppState, Limits};

const IMAGE: &str = "sl5.3_x86_64_sl08e_8MB_demo.img";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: Arc<AppState>,
}

/// A tiny disk: an MBR with one Linux partition and a pattern, so that
/// ranges see different bytes at every offset.
fn disk(path: &Path, size: usize, seed: u8) {
    let mut b: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    b[446..462].fill(0);
    b[446 + 4] = 0x83;
    b[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    b[446 + 12..446 + 16].copy_from_slice(&((size / 512) as u32 - 2048).to_le_bytes());
    b[510] = 0x55;
    b[511] = 0xAA;
    std::fs::write(path, b).unwrap();
}

fn add(catalog: &mut Catalog, src: &Path, vm: Vm, name: &str, replace: bool) {
    let stop = AtomicBool::new(false);
    vmrepo_repo::add(
        catalog,
        AddRequest {
            source: src,
            vm,
            name: ImageName::parse(name).unwrap(),
            facts: Facts::default(),
            notes: Some("notes <b>here</b>".into()),
            replace,
            move_source: false,
            content: vmrepo_repo::content::read(src).ok(),
            force: true,
            progress: &NoProgress,
            cancel: &stop,
            prehashed: None,
        },
    )
    .unwrap();
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let (repo, _) = Repository::init(&root).unwrap();
    let stop = AtomicBool::new(false);
    let mut catalog = Catalog::open(repo.clone(), &stop).unwrap();
    let src = dir.path().join("src.img");
    disk(&src, 2 << 20, 1);
    add(&mut catalog, &src, Vm::Kvm, IMAGE, false);
    disk(&src, 1 << 20, 2);
    add(&mut catalog, &src, Vm::Xen, "sl4_x86_32_sl07c_1MB_ec2.img", false);
    // A folder image of two parts.
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    std::fs::write(parts.join("a.vmdk"), vec![7u8; 1000]).unwrap();
    std::fs::write(parts.join("b.vmdk"), vec![9u8; 700]).unwrap();
    add(&mut catalog, &parts, Vm::Vmware, "sl5.3_x86_64_sl08e_4GB_split", false);
    let state = Arc::new(AppState::new(repo, false, Limits::default()));
    Fixture { _dir: dir, root, state }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn ask(f: &Fixture, req: Request<Body>) -> Answer {
    let resp = vmrepo_serve::app(f.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

async fn get(f: &Fixture, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    ask(f, b.body(Body::empty()).unwrap()).await
}

fn stored(f: &Fixture, rel: &str) -> Vec<u8> {
    std::fs::read(f.root.join(rel)).unwrap()
}

fn catalog_json(f: &Fixture, exprs: &[&str]) -> serde_json::Value {
    let stop = AtomicBool::new(false);
    let c = Catalog::open(f.state.repo.clone(), &stop).unwrap();
    serde_json::to_value(c.find(&Query::parse(exprs).unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn images_answers_find_with_the_cli_documents_and_pages() {
    let f = fixture();
    let all = get(&f, "/api/v1/images", &[]).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json(), catalog_json(&f, &[]));
    assert_eq!(all.json().as_array().unwrap().len(), 3);
    assert_eq!(all.header("x-total-count"), Some("3"));
    assert!(all.header("link").is_none());

    let q = get(&f, "/api/v1/images?q=os%3Dsl5.3%20maxsize%3E%3D3GB", &[]).await;
    assert_eq!(q.json(), catalog_json(&f, &["os=sl5.3", "maxsize>=3GB"]));
    assert_eq!(q.json().as_array().unwrap().len(), 1);
    // One parameter per field, and an operator carried by the key.
    let p = get(&f, "/api/v1/images?os=sl5.3&maxsize%3E=3GB", &[]).await;
    assert_eq!(p.json(), q.json());

    let page = get(&f, "/api/v1/images?limit=2", &[]).await;
    assert_eq!(page.json().as_array().unwrap().len(), 2);
    assert_eq!(page.header("x-total-count"), Some("3"));
    let next = page.header("link").unwrap();
    assert!(next.contains("offset=2") && next.ends_with("rel=\"next\""), "{next}");
    let rest = get(&f, "/api/v1/images?limit=2&offset=2", &[]).await;
    assert_eq!(rest.json().as_array().unwrap()[0], all.json()[2]);

    let etag = all.header("etag").unwrap().to_string();
    let again = get(&f, "/api/v1/images", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let other = get(&f, "/api/v1/images?os=sl4", &[("if-none-match", &etag)]).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_queries_are_the_cli_errors_with_400() {
    let f = fixture();
    for uri in [
        "/api/v1/images?q=colour%3Dred",
        "/api/v1/images?limit=0",
        "/api/v1/images?limit=x",
        "/api/v1/images?limit=100000",
    ] {
        let a = get(&f, uri, &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        let e = &a.json()["error"];
        assert_eq!(e["kind"], "invalid-input", "{uri}");
        assert_eq!(e["exit_code"], 6, "{uri}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let long = format!("/api/v1/images?q={}", "a".repeat(5000));
    assert_eq!(get(&f, &long, &[]).await.status, StatusCode::URI_TOO_LONG);
}

#[tokio::test]
async fn show_inventory_and_lint() {
    let f = fixture();
    let s = get(&f, "/api/v1/images/kvm/sl5.3_x86_64_sl08e_8MB_demo", &[]).await;
    assert_eq!(s.status, StatusCode::OK);
    let v = s.json();
    assert_eq!(v["image"]["file"], IMAGE);
    let sha = hex(&Sha256::digest(stored(&f, &format!("vm/kvm/{IMAGE}"))));
    assert_eq!(v["image"]["sha256"], sha);
    assert_eq!(v["description"]["sha256"][0]["sha256"], sha);
    assert_eq!(v["notes"].as_str().map(str::trim_end), Some("notes <b>here</b>"));
    let missing = get(&f, "/api/v1/images/kvm/nothing_here", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["exit_code"], 4);
    assert_eq!(get(&f, "/api/v1/images/notavm!/x", &[]).await.status, StatusCode::BAD_REQUEST);

    // An image whose file is gone: 404, the record all the same (show exits 4).
    std::fs::remove_file(f.root.join("vm/xen/sl4_x86_32_sl07c_1MB_ec2.img")).unwrap();
    let gone = get(&f, "/api/v1/images/xen/sl4_x86_32_sl07c_1MB_ec2", &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["image"]["kind"], "missing");

    let inv = get(&f, "/api/v1/inventory", &[]).await.json();
    assert_eq!(inv["total"]["images"], 2);
    assert_eq!(inv["missing"], 1);
    let lint = get(&f, "/api/v1/lint", &[]).await;
    assert_eq!(lint.status, StatusCode::OK);
    assert!(
        lint.json().as_array().unwrap().iter().any(|x| x["code"] == "missing-image"),
        "{:?}",
        lint.json()
    );
    assert_eq!(get(&f, "/healthz", &[]).await.status, StatusCode::OK);
    let m = String::from_utf8(get(&f, "/metrics", &[]).await.body).unwrap();
    assert!(m.contains("vmrepo_http_responses_total{class=\"2xx\"}"), "{m}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn downloads_whole_ranged_conditional() {
    let f = fixture();
    let url = format!("/vm/kvm/{IMAGE}");
    let bytes = stored(&f, &format!("vm/kvm/{IMAGE}"));
    let whole = get(&f, &url, &[]).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, bytes);
    let sha = Sha256::digest(&bytes);
    let md5 = Md5::digest(&bytes);
    assert_eq!(whole.header("etag").unwrap(), format!("\"{}\"", hex(&sha)));
    assert_eq!(whole.header("repr-digest").unwrap(), format!("sha-256=:{}:, md5=:{}:", b64(&sha), b64(&md5)));
    assert_eq!(whole.header("content-md5").unwrap(), b64(&md5));
    assert!(whole.header("digest").is_none(), "RFC 3230's Digest only when asked");
    let asked =
        get(&f, &url, &[("want-digest", "SHA-512;q=1, SHA-256;q=1, SHA;q=0.1"), ("range", "bytes=5-9")])
            .await;
    assert_eq!(asked.header("digest").unwrap(), format!("SHA-256={}", b64(&sha)));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-disposition").unwrap(), format!("attachment; filename=\"{IMAGE}\""));
    let etag = whole.header("etag").unwrap().to_string();
    let lm = whole.header("last-modified").unwrap().to_string();

    let head = ask(&f, Request::head(&url).body(Body::empty()).unwrap()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length").unwrap(), bytes.len().to_string());

    let part = get(&f, &url, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, &bytes[1000..2000]);
    assert_eq!(part.header("content-range").unwrap(), format!("bytes 1000-1999/{}", bytes.len()));
    assert!(part.header("content-md5").is_none(), "the MD5 of the whole is not the part's");
    let tail = get(&f, &url, &[("range", "bytes=-10")]).await;
    assert_eq!(tail.body, &bytes[bytes.len() - 10..]);
    let open = get(&f, &url, &[("range", &format!("bytes={}-", bytes.len() - 5))]).await;
    assert_eq!(open.body, &bytes[bytes.len() - 5..]);
    let past = get(&f, &url, &[("range", &format!("bytes={}-", bytes.len()))]).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range").unwrap(), format!("bytes */{}", bytes.len()));

    // If-Range: the range applies only to the version named.
    let same = get(&f, &url, &[("range", "bytes=10-19"), ("if-range", &etag)]).await;
    assert_eq!(same.status, StatusCode::PARTIAL_CONTENT);
    // A date is no strong validator (a replace within the same second keeps
    // it): the whole file, never a range of what may be another version.
    let by_date = get(&f, &url, &[("range", "bytes=10-19"), ("if-range", &lm)]).await;
    assert_eq!(by_date.status, StatusCode::OK);
    assert_eq!(by_date.body, bytes);
    let stale = get(&f, &url, &[("range", "bytes=10-19"), ("if-range", "\"0000\"")]).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, bytes);

    assert_eq!(get(&f, &url, &[("if-none-match", &etag)]).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(get(&f, &url, &[("if-modified-since", &lm)]).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(get(&f, &url, &[("if-none-match", "\"x\"")]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_replaced_image_is_never_spliced() {
    let f = fixture();
    let url = format!("/vm/kvm/{IMAGE}");
    let old = get(&f, &url, &[]).await;
    let etag = old.header("etag").unwrap().to_string();
    let stop = AtomicBool::new(false);
    let mut catalog = Catalog::open(f.state.repo.clone(), &stop).unwrap();
    let src = f.root.parent().unwrap().join("new.img");
    disk(&src, 2 << 20, 77);
    add(&mut catalog, &src, Vm::Kvm, IMAGE, true);
    let new_bytes = std::fs::read(&src).unwrap();
    assert_ne!(old.body, new_bytes);
    // A client resuming at byte 1 MiB of the old version gets the whole new one.
    let resumed = get(&f, &url, &[("range", "bytes=1048576-"), ("if-range", &etag)]).await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_eq!(resumed.body, new_bytes);
    assert_ne!(resumed.header("etag").unwrap(), etag);
    // The new ETag is the new SHA-256, seen without a restart.
    assert_eq!(resumed.header("etag").unwrap(), format!("\"{}\"", hex(&Sha256::digest(&new_bytes))));
}

#[tokio::test]
async fn sidecars_parts_and_the_folder_as_tar() {
    let f = fixture();
    let ck = get(&f, "/vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.checksum", &[]).await;
    assert_eq!(ck.status, StatusCode::OK);
    assert_eq!(ck.body, stored(&f, "vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.checksum"));
    assert!(ck.header("content-type").unwrap().starts_with("text/plain"));
    let txt = get(&f, "/vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.txt", &[]).await;
    assert_eq!(txt.body, stored(&f, "vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.txt"));

    let folder = "sl5.3_x86_64_sl08e_4GB_split";
    let a = get(&f, &format!("/vm/vmware/{folder}/b.vmdk"), &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, vec![9u8; 700]);
    let whole = get(&f, &format!("/vm/vmware/{folder}"), &[]).await;
    assert_eq!(whole.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&whole.body).contains(".tar"));
    let tar = get(&f, &format!("/vm/vmware/{folder}.tar"), &[]).await;
    assert_eq!(tar.status, StatusCode::OK);
    assert_eq!(tar.header("content-length").unwrap(), tar.body.len().to_string());
    // Read back by tar itself when it is here.
    if std::process::Command::new("tar").arg("--version").output().is_ok() {
        let out = f.root.parent().unwrap().join("untar");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("x.tar"), &tar.body).unwrap();
        let st = std::process::Command::new("tar").args(["-xf", "x.tar"]).current_dir(&out).status().unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(out.join(folder).join("a.vmdk")).unwrap(), vec![7u8; 1000]);
        assert_eq!(
            std::fs::read(out.join(format!("{folder}.checksum"))).unwrap(),
            stored(&f, &format!("vm/vmware/{folder}.checksum"))
        );
        if std::process::Command::new("md5sum").arg("--version").output().is_ok() {
            let c = std::process::Command::new("md5sum")
                .args(["-c", &format!("{folder}.checksum")])
                .current_dir(&out)
                .output()
                .unwrap();
            assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
        }
    }
}

#[tokio::test]
async fn nothing_outside_the_images_is_ever_served() {
    let f = fixture();
    let secret = b"root:x:0:0:secret-marker\n";
    let outside = f.root.parent().unwrap().join("secret");
    std::fs::write(&outside, secret).unwrap();
    symlink(&outside, f.root.join("vm/kvm/sl5.3_x86_64_sl08e_8MB_link.img")).unwrap();
    // A stray file in the VM folder that is no image of the catalog.
    std::fs::write(f.root.join("vm/kvm/notes.bak"), secret).unwrap();
    // A symlinked VM folder.
    let other = f.root.parent().unwrap().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("sl5.3_x86_64_sl08e_8MB_x.img"), secret).unwrap();
    symlink(&other, f.root.join("vm/virtualbox")).unwrap();
    for uri in [
        "/vm/kvm/../../secret",
        "/vm/kvm/%2e%2e/%2e%2e/secret",
        "/vm/kvm/%2E%2E%2F%2E%2E%2Fsecret",
        "/vm/kvm/..%2f..%2fsecret",
        "/vm/kvm/sl5.3_x86_64_sl08e_8MB_link.img",
        "/vm/kvm/notes.bak",
        "/vm/kvm/.vmrepo",
        "/vm/%2e%2e/.vmrepo/index.sqlite",
        "/vm/kvm/%00",
        "/vm/kvm/a%00.img",
        "/vm/virtualbox/sl5.3_x86_64_sl08e_8MB_x.img",
        "/vm/kvm/sl5.3_x86_64_sl08e_8MB_demo.img/..",
        "/.vmrepo/index.sqlite",
        "/vm/",
        "/vm/kvm",
        "/vm/kvm/a/b/c/d",
    ] {
        let a = get(&f, uri, &[]).await;
        assert!(
            a.status == StatusCode::BAD_REQUEST || a.status == StatusCode::NOT_FOUND,
            "{uri}: {}",
            a.status
        );
        assert!(!a.body.windows(13).any(|w| w == b"secret-marker"), "{uri} served the secret");
    }
    let long = format!("/vm/kvm/{}.img", "a".repeat(300));
    assert!(get(&f, &long, &[]).await.status.is_client_error());
}

/// Sets the modification time of `vm/` and its folders an hour back, as a
/// tree untouched for a while is.
fn age_tree(f: &Fixture) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let vm = f.root.join("vm");
    let mut dirs = vec![vm.clone()];
    dirs.extend(std::fs::read_dir(&vm).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()));
    for d in dirs {
        std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
    }
}

fn reused(f: &Fixture) -> u64 {
    f.state.metrics.answers_reused.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn kept_answers_are_given_again_only_while_nothing_changed() {
    let f = fixture();
    // A tree changed within the last seconds is not trusted: nothing kept.
    get(&f, "/api/v1/images", &[]).await;
    get(&f, "/api/v1/images", &[]).await;
    assert_eq!(reused(&f), 0);

    age_tree(&f);
    let first = get(&f, "/api/v1/images?os=sl5.3", &[]).await;
    let again = get(&f, "/api/v1/images?os=sl5.3", &[]).await;
    assert_eq!(reused(&f), 1);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("x-total-count"), first.header("x-total-count"));
    assert!(first.json().as_array().unwrap().iter().all(|r| r["verified_at"].is_null()));

    // A change to the index alone (verify records its results): answered anew.
    let stop = AtomicBool::new(false);
    let catalog = Catalog::open(f.state.repo.clone(), &stop).unwrap();
    let opts = vmrepo_repo::VerifyOptions {
        names: Vec::new(),
        quick: false,
        md5: false,
        jobs: 1,
        progress: &NoProgress,
        cancel: &stop,
    };
    vmrepo_repo::verify(&catalog, &opts).unwrap();
    let verified = get(&f, "/api/v1/images?os=sl5.3", &[]).await;
    assert_eq!(reused(&f), 1);
    assert!(
        verified.json().as_array().unwrap().iter().all(|r| r["verified_ok"] == true),
        "{}",
        verified.json()
    );
    assert_eq!(verified.json(), catalog_json(&f, &["os=sl5.3"]));

    // A file dropped into the tree by hand (the index knows nothing): the
    // folder's time changed, so the answer is computed again.
    age_tree(&f);
    get(&f, "/api/v1/inventory", &[]).await;
    get(&f, "/api/v1/inventory", &[]).await;
    assert_eq!(reused(&f), 2);
    let vm = f.root.join("vm/kvm");
    std::fs::copy(vm.join(IMAGE), vm.join("sl5.3_x86_64_sl08e_8MB_copy.img")).unwrap();
    std::fs::copy(vm.join("sl5.3_x86_64_sl08e_8MB_demo.txt"), vm.join("sl5.3_x86_64_sl08e_8MB_copy.txt"))
        .unwrap();
    let inv = get(&f, "/api/v1/inventory", &[]).await.json();
    assert_eq!(reused(&f), 2);
    assert_eq!(inv["total"]["images"], 4, "{inv}");
}
