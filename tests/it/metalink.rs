//! publish --base-url --mirror: each image's Metalink 4 file read by the real
//! `aria2c -M` from plain web servers (Python's http.server), the download
//! checked by `sha256sum`; a corrupted image refused by aria2c's own check.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{Repo, have, pattern_file, sha256sum};

use crate::util::{free_port, http_server as serve};

/// `aria2c -M meta4 -d out`, without any user configuration.
fn aria2c(meta4: &Path, out: &Path) -> Output {
    Command::new("aria2c")
        .args(["--no-conf", "--max-tries=2", "--retry-wait=1", "--connect-timeout=5", "--timeout=20"])
        .args(["--summary-interval=0", "--console-log-level=warn", "--allow-overwrite=true"])
        .arg("-M")
        .arg(meta4)
        .arg("-d")
        .arg(out)
        .output()
        .unwrap()
}

fn said(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn aria2c_downloads_from_the_metalink_and_refuses_a_corrupted_image() {
    if !have("aria2c", "aria2") || !have("python3", "python3") {
        return;
    }
    let r = Repo::new();
    let f = r.scratch().join("a.img");
    pattern_file(&f, 300_000, 7);
    r.add(&f, "kvm", &["--max-size", "8GB"]);
    let keys = r.tmp.path().join("keys");
    r.ok(&["key", "generate", "-o", keys.to_str().unwrap()]);
    let key = keys.join("vmrepo.key");
    let dest = r.tmp.path().join("pub");
    let (port, mirror_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}/");
    let mirror = format!("http://127.0.0.1:{mirror_port}");
    let publish = |extra: &[&str]| {
        let mut a =
            vec!["publish", dest.to_str().unwrap(), "--key", key.to_str().unwrap(), "--base-url", &base];
        a.extend_from_slice(extra);
        r.json(&a)
    };
    let out = publish(&["--mirror", &mirror]);
    assert_eq!((out["images"].as_u64(), out["metalinks"].as_u64()), (Some(1), Some(1)), "{out}");

    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("catalog.json")).unwrap()).unwrap();
    let image = &catalog["images"][0];
    let path = image["path"].as_str().unwrap();
    let relative = image["metalink"].as_str().unwrap();
    assert_eq!(relative, format!("{path}.meta4"));
    let meta4 = dest.join(relative);
    let text = std::fs::read_to_string(&meta4).unwrap();
    for part in [
        "xmlns=\"urn:ietf:params:xml:ns:metalink\"".to_string(),
        format!("<file name=\"{}\">", image["file"].as_str().unwrap()),
        "<size>300000</size>".to_string(),
        format!("<hash type=\"sha-256\">{}</hash>", sha256sum(&dest.join(path))),
        format!("<url priority=\"1\">{base}{path}</url>"),
        format!("<url priority=\"2\">{mirror}/{path}</url>"),
        format!("<published>{}</published>", catalog["generated"].as_str().unwrap()),
    ] {
        assert!(text.contains(&part), "{part} not in {text}");
    }

    // Publishing again with nothing changed leaves the file as it was.
    let before = std::fs::metadata(&meta4).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let again = publish(&["--mirror", &mirror]);
    assert_eq!(again["metalinks"], 0, "{again}");
    let after = std::fs::metadata(&meta4).unwrap();
    assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()));
    assert_eq!(std::fs::read_to_string(&meta4).unwrap(), text);

    // Both servers serve DEST; with the first down, aria2c takes the mirror.
    let server = serve(&dest, port);
    let mirror_server = serve(&dest, mirror_port);
    let got = r.tmp.path().join("got");
    let o = aria2c(&meta4, &got);
    assert!(o.status.success(), "{}", said(&o));
    let file = image["file"].as_str().unwrap();
    assert_eq!(sha256sum(&got.join(file)), image["sha256"].as_str().unwrap());
    drop(server);
    let got_mirror = r.tmp.path().join("got-mirror");
    let o = aria2c(&meta4, &got_mirror);
    assert!(o.status.success(), "from the mirror: {}", said(&o));
    assert_eq!(sha256sum(&got_mirror.join(file)), image["sha256"].as_str().unwrap());

    // One byte of the published image changed (same size): aria2c's check fails.
    let published = dest.join(path);
    let mut bytes = std::fs::read(&published).unwrap();
    bytes[150_000] ^= 0x5a;
    std::fs::remove_file(&published).unwrap(); // a hard link to the repository's file
    std::fs::write(&published, &bytes).unwrap();
    let bad = r.tmp.path().join("bad");
    let o = aria2c(&meta4, &bad);
    assert!(!o.status.success(), "a corrupted image was accepted: {}", said(&o));
    assert_eq!(o.status.code(), Some(32), "checksum validation failed: {}", said(&o));
    drop(mirror_server);

    // Without --base-url there is no Metalink file; --mirror alone is refused.
    let plain = r.tmp.path().join("plain");
    r.json(&["publish", plain.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(!plain.join(relative).exists());
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(plain.join("catalog.json")).unwrap()).unwrap();
    assert!(c["images"][0].get("metalink").is_none(), "{c}");
    let o = r.run(&["publish", plain.to_str().unwrap(), "--key", key.to_str().unwrap(), "--mirror", &mirror]);
    assert!(!o.status.success());
}
