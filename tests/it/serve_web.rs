//! The web page of `vmrepo serve` in a real browser: Debian's chromium,
//! headless, driven through chromedriver. The catalog is filtered by OS
//! through the form and checked against `vmrepo find --json`; an image's
//! page shows the digests the catalog records, which are those sha256sum
//! and md5sum compute. Everything listens on 127.0.0.1 only.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::util::{Repo, have, pattern_file, sh, sha256sum};

/// A child process ended when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port of 127.0.0.1, once it accepts connections.
fn chromedriver() -> (Killed, String) {
    let port = crate::util::free_port();
    let child = Command::new("chromedriver")
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Killed(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

async fn browser(driver: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1024",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a chromium session")
}

/// The image names the table shows, in order.
async fn rows(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for a in c.find_all(Locator::Css("#images tbody tr th a")).await.unwrap() {
        out.push(a.text().await.unwrap());
    }
    out
}

/// Waits until the page's URL contains `part`.
async fn wait_url(c: &Client, part: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if c.current_url().await.unwrap().as_str().contains(part) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn screenshot(name: &str, png: &[u8]) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_web_page_in_a_browser() {
    if !have("chromium", "chromium") || !have("chromedriver", "chromium-driver") {
        return;
    }
    let r = Repo::new();
    let scratch = r.scratch();
    for (i, (vm, os, lib, detail)) in [
        ("kvm", "sl5.3", "sl08e", "alpha"),
        ("xen", "sl6.4", "sl11d", "beta"),
        ("kvm", "sl6.4", "sl11d", "gamma"),
        ("xen", "sl5.3", "sl08e", "delta"),
    ]
    .into_iter()
    .enumerate()
    {
        let f = scratch.join(format!("{detail}.img"));
        pattern_file(&f, 1 << 20, u64::try_from(i).unwrap());
        r.json(&[
            "add",
            "--force",
            f.to_str().unwrap(),
            "--vm",
            vm,
            "--os",
            os,
            "--arch",
            "x86",
            "--bits",
            "64",
            "--lib",
            lib,
            "--detail",
            detail,
        ]);
    }
    let wanted = r.json(&["find", "os=sl6.4"]);
    let wanted: Vec<&serde_json::Value> = wanted.as_array().unwrap().iter().collect();
    assert_eq!(wanted.len(), 2);

    let server = crate::serve::Server::start(&r, &["--read-only"]);
    let url = server.url.clone();
    let (_driver, driver) = chromedriver();
    let profile = r.tmp.path().join("chromium-profile");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(180), async {
            let c = browser(&driver, &profile).await;
            c.goto(&format!("{url}/")).await.unwrap();
            let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
            assert_eq!(h1, "Catalog of images");
            assert_eq!(rows(&c).await.len(), 4);
            screenshot("serve_web_catalog.png", &c.screenshot().await.unwrap());

            // Filter by OS through the form, as a person would: choose, then Filter
            // (the page's script submits on the choice; without it, the button does).
            let select = c.find(Locator::Css("select[name=os]")).await.unwrap();
            select.select_by_value("sl6.4").await.unwrap();
            if !wait_url(&c, "os=sl6.4").await {
                c.find(Locator::Css("form.filters button[type=submit]"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
                assert!(wait_url(&c, "os=sl6.4").await, "the form did not filter");
            }
            let names: Vec<String> = wanted.iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
            assert_eq!(rows(&c).await, names);
            let selected = c.find(Locator::Css("select[name=os] option[selected]")).await.unwrap();
            assert_eq!(selected.attr("value").await.unwrap().as_deref(), Some("sl6.4"));

            // Open the first image's page: the digests are the catalog's, and the files'.
            let first = wanted[0];
            c.find(Locator::Css("#images tbody tr th a")).await.unwrap().click().await.unwrap();
            assert!(
                wait_url(
                    &c,
                    &format!("/images/{}/{}", first["vm"].as_str().unwrap(), first["name"].as_str().unwrap())
                )
                .await
            );
            let h1 = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
            assert_eq!(h1, first["name"].as_str().unwrap());
            let sha = c.find(Locator::Css("#sha256")).await.unwrap().text().await.unwrap();
            let md5 = c.find(Locator::Css("#md5")).await.unwrap().text().await.unwrap();
            assert_eq!(sha, first["sha256"].as_str().unwrap());
            assert_eq!(md5, first["md5"].as_str().unwrap());
            let file = r.root.join(first["path"].as_str().unwrap());
            assert_eq!(sha, sha256sum(&file));
            let md5sum = sh(
                file.parent().unwrap(),
                &format!("md5sum '{}'", file.file_name().unwrap().to_str().unwrap()),
            );
            assert_eq!(md5, md5sum.split_whitespace().next().unwrap());
            // The command to copy names this server.
            let cmd = c.find(Locator::Id("cmd-0")).await.unwrap().text().await.unwrap();
            assert_eq!(
                cmd,
                format!(
                    "curl -C - -O {url}/vm/{}/{}",
                    first["vm"].as_str().unwrap(),
                    first["file"].as_str().unwrap()
                )
            );
            screenshot("serve_web_image.png", &c.screenshot().await.unwrap());

            // The download link answers with the image.
            let href = c
                .find(Locator::Css("a.button[download]"))
                .await
                .unwrap()
                .attr("href")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                href,
                format!("/vm/{}/{}", first["vm"].as_str().unwrap(), first["file"].as_str().unwrap())
            );
            c.close().await.unwrap();
        })
        .await
        .expect("the browser test took more than 3 minutes");
    });
}
