//! The web page, through the router without a socket: the catalog lists and
//! filters the images, an image's page shows its digests from the catalog,
//! text from the files is escaped, and what does not exist is 404.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vmrepo_name::{ImageName, Vm};
use vmrepo_repo::{AddRequest, Catalog, Facts, ImageRecord, NoProgress, Repository};
use vmrepo_serve::{AppState, Limits, app};

/// A small raw disk: an MBR with one Linux partition (as `vmrepo demo` makes).
fn small_disk(path: &Path, seed: u8) {
    use std::os::unix::fs::FileExt;
    const SIZE: u64 = 8 << 20;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(SIZE).unwrap();
    let mut mbr = [0u8; 512];
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&(u32::try_from(SIZE / 512).unwrap() - 2048).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0).unwrap();
    f.write_all_at(&[seed; 4096], 2048 * 512).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    state: Arc<AppState>,
    images: Vec<ImageRecord>,
}

/// A repository of three images: two sl5.3, one sl6.4 whose notes are hostile.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = Repository::init(&tmp.path().join("repo")).unwrap();
    let stop = AtomicBool::new(false);
    let mut catalog = Catalog::open(repo.clone(), &stop).unwrap();
    let mut images = Vec::new();
    for (i, (vm, name, notes)) in [
        (Vm::Kvm, "sl5.3_x86_64_sl08e_8MB_alpha.img", "plain notes"),
        (Vm::Xen, "sl5.3_x86_32_sl08e_8MB_beta.img", "more notes"),
        (Vm::Kvm, "sl6.4_x86_64_sl11d_8MB_gamma.img", "<script>alert('notes')</script> & <b>bold</b>"),
    ]
    .into_iter()
    .enumerate()
    {
        let src = tmp.path().join(format!("disk{i}.img"));
        small_disk(&src, u8::try_from(i).unwrap() + 1);
        let out = vmrepo_repo::add(
            &mut catalog,
            AddRequest {
                source: &src,
                vm,
                name: ImageName::parse(name).unwrap(),
                facts: Facts::default(),
                notes: Some(notes.into()),
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
        images.push(out.image);
    }
    let state = Arc::new(AppState::new(repo, true, Limits::default()));
    Fixture { _tmp: tmp, state, images }
}

async fn get(state: &Arc<AppState>, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let req = Request::get(uri).header(header::HOST, "vm.example.org:8080").body(Body::empty()).unwrap();
    let r = app(state.clone()).oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// Whether `text` is in `html` with its `<` and `>` escaped (by name or by number).
fn escaped(html: &str, text: &str) -> bool {
    html.contains(&text.replace('<', "&lt;").replace('>', "&gt;"))
        || html.contains(&text.replace('<', "&#60;").replace('>', "&#62;"))
}

/// The names of the images the table shows, in order.
fn rows(html: &str) -> Vec<String> {
    html.split("<tr data-text=")
        .skip(1)
        .map(|row| {
            let a = row.split("<a href=\"/images/").nth(1).unwrap();
            let text = a.split('>').nth(1).unwrap();
            text.split('<').next().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn the_catalog_lists_every_image_with_the_inventory() {
    let f = fixture();
    let (status, headers, html) = get(&f.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(
        rows(&html),
        ["sl5.3_x86_64_sl08e_8MB_alpha", "sl6.4_x86_64_sl11d_8MB_gamma", "sl5.3_x86_32_sl08e_8MB_beta"]
    );
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("3 images,"), "{html}");
    for key in
        ["By VM", "By operating system", "By STAR library", "href=\"/?os=sl6.4\"", "href=\"/?lib=sl11d\""]
    {
        assert!(html.contains(key), "{key}");
    }
    // Every control of the form has its label.
    for id in ["f-q", "f-vm", "f-os", "f-lib", "f-maxsize", "f-format", "f-state"] {
        assert!(html.contains(&format!("<label for=\"{id}\">")), "{id}");
    }
}

#[tokio::test]
async fn the_catalog_filters_by_field_and_by_free_text_and_sorts() {
    let f = fixture();
    let (_, _, html) = get(&f.state, "/?os=sl5.3").await;
    assert_eq!(rows(&html), ["sl5.3_x86_64_sl08e_8MB_alpha", "sl5.3_x86_32_sl08e_8MB_beta"]);
    assert!(html.contains("<option value=\"sl5.3\" selected>"));
    let (_, _, html) = get(&f.state, "/?os=SL6.4&vm=kvm").await;
    assert_eq!(rows(&html), ["sl6.4_x86_64_sl11d_8MB_gamma"]);
    // Free text looks in every field: the library, the word size, the VM.
    let (_, _, html) = get(&f.state, "/?q=sl11d").await;
    assert_eq!(rows(&html), ["sl6.4_x86_64_sl11d_8MB_gamma"]);
    let (_, _, html) = get(&f.state, "/?q=32bit+xen").await;
    assert_eq!(rows(&html), ["sl5.3_x86_32_sl08e_8MB_beta"]);
    // Expressions of vmrepo find.
    let (_, _, html) = get(&f.state, "/?q=bits%3D32").await;
    assert_eq!(rows(&html), ["sl5.3_x86_32_sl08e_8MB_beta"]);
    let (status, _, html) = get(&f.state, "/?q=maxsize%3Enot-a-size").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("class=\"error\""));
    // Sorting: by name descending.
    let (_, _, html) = get(&f.state, "/?sort=name&order=desc").await;
    assert_eq!(
        rows(&html),
        ["sl5.3_x86_32_sl08e_8MB_beta", "sl6.4_x86_64_sl11d_8MB_gamma", "sl5.3_x86_64_sl08e_8MB_alpha"]
    );
    assert!(html.contains("aria-sort=\"descending\""));
    let (_, _, html) = get(&f.state, "/?sort=os").await;
    assert_eq!(rows(&html)[2], "sl6.4_x86_64_sl11d_8MB_gamma");
    let (_, _, html) = get(&f.state, "/?os=sl7").await;
    assert!(rows(&html).is_empty());
    assert!(html.contains("No image matches."));
}

#[tokio::test]
async fn an_image_page_shows_the_digests_and_commands_of_the_catalog() {
    let f = fixture();
    let rec = &f.images[0];
    let sha = rec.sha256.clone().unwrap();
    let md5 = rec.md5.clone().unwrap();
    let (status, _, html) = get(&f.state, "/images/kvm/sl5.3_x86_64_sl08e_8MB_alpha").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("<code id=\"sha256\">{sha}</code>")));
    assert!(html.contains(&format!("<code id=\"md5\">{md5}</code>")));
    assert!(html.contains("href=\"/vm/kvm/sl5.3_x86_64_sl08e_8MB_alpha.img\""));
    assert!(html.contains("href=\"/vm/kvm/sl5.3_x86_64_sl08e_8MB_alpha.checksum\""));
    assert!(html.contains("href=\"/vm/kvm/sl5.3_x86_64_sl08e_8MB_alpha.txt\""));
    assert!(html.contains("curl -C - -O http://vm.example.org:8080/vm/kvm/sl5.3_x86_64_sl08e_8MB_alpha.img"));
    assert!(html.contains("md5sum -c sl5.3_x86_64_sl08e_8MB_alpha.checksum"));
    // pull reads a published, signed catalog, which serve does not offer: no command that would fail.
    assert!(!html.contains("vmrepo pull"));
    // The quotes of the shell are HTML-escaped, as every text is.
    assert!(html.contains(&format!("echo &#39;{sha}  sl5.3_x86_64_sl08e_8MB_alpha.img&#39; | sha256sum -c")));
    // The inspection: the partition table of the small disk, and the budget.
    assert!(html.contains("<caption>Partitions</caption>"), "{html}");
    assert!(html.contains("0x83") || html.contains("83"), "{html}");
    // The links of the page answer.
    let (status, _, _) = get(&f.state, "/vm/kvm/sl5.3_x86_64_sl08e_8MB_alpha.checksum").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn text_from_the_files_and_the_request_is_escaped() {
    let f = fixture();
    let (status, _, html) = get(&f.state, "/images/kvm/sl6.4_x86_64_sl11d_8MB_gamma").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<b>bold"));
    assert!(escaped(&html, "<script>alert("), "{html}");
    let (_, _, html) = get(&f.state, "/?q=%3Cscript%3Ex%3C/script%3E%22%27").await;
    assert!(!html.contains("<script>x"));
    assert!(escaped(&html, "<script>x"));
    // A Host that is not a plain host name is never put in a command.
    let req = Request::get("/images/kvm/sl6.4_x86_64_sl11d_8MB_gamma")
        .header(header::HOST, "evil.example\"><script>")
        .body(Body::empty())
        .unwrap();
    let r = app(f.state.clone()).oneshot(req).await.unwrap();
    let html = String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(!html.contains("evil.example"));
    assert!(html.contains("http://SERVER/vm/kvm/"));
}

#[tokio::test]
async fn what_does_not_exist_is_404_as_a_page() {
    let f = fixture();
    for uri in ["/images/kvm/nothing_here", "/images/kvm/..", "/images/no%20vm/x", "/static/none.css"] {
        let (status, headers, html) = get(&f.state, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8", "{uri}");
        assert!(html.contains("<h1>404 Not Found</h1>"), "{uri}: {html}");
    }
}

#[tokio::test]
async fn static_files_are_cached_and_validated() {
    let f = fixture();
    let (_, _, html) = get(&f.state, "/").await;
    let css =
        html.split("<link rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let (status, headers, body) = get(&f.state, &css).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(":root"));
    assert!(headers[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    let req = Request::get(&css).header(header::IF_NONE_MATCH, &etag).body(Body::empty()).unwrap();
    let r = app(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn a_configured_public_url_is_what_the_commands_name() {
    let f = fixture();
    let mut state = AppState::new(f.state.repo.clone(), true, Limits::default());
    state.public_url = Some("https://vm.example.org/star".into());
    let state = Arc::new(state);
    let (_, _, html) = get(&state, "/images/xen/sl5.3_x86_32_sl08e_8MB_beta").await;
    assert!(
        html.contains("curl -C - -O https://vm.example.org/star/vm/xen/sl5.3_x86_32_sl08e_8MB_beta.img"),
        "{html}"
    );
    assert!(!html.contains("vm.example.org:8080"));
}
