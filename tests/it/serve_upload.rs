//! `vmrepo serve` on a real socket: `curl -T` uploads with a token, a wrong
//! digest refused leaving nothing, a right one seen by `vmrepo list`, and an
//! upload cut by SIGTERM rolled back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::serve::Server;
use crate::util::{Repo, have};

const NAME: &str = "sl5.3_x86_64_sl08e_8MB_demo.img";

/// The server, killed when the test ends however it ends.
fn serve(repo: &Repo) -> Server {
    Server::start(repo, &[])
}

/// An 8 MiB raw disk with an MBR and a Linux partition (as `vmrepo demo` makes).
fn disk(path: &Path) {
    let mut d = vec![0u8; 8 << 20];
    let e = &mut d[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&((8u32 << 20) / 512 - 2048).to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xAA;
    d[2048 * 512..2048 * 512 + 13].copy_from_slice(b"serve upload\n");
    std::fs::write(path, d).unwrap();
}

/// `curl -T file url` with the token and extra arguments: the HTTP status.
fn curl(file: &Path, url: &str, token: &str, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Files under vm/ and .vmrepo/uploads/.
fn files(repo: &Repo) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo.root.join("vm"), repo.root.join(".vmrepo/uploads")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(&repo.root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn curl_uploads_with_a_token() {
    if !have("curl", "curl") {
        return;
    }
    let repo = Repo::new();
    let token = repo.ok(&["token", "add", "ci", "--vm", "kvm"]).trim().to_string();
    assert!(token.starts_with("vmrepo_"), "{token}");
    let listed = repo.ok(&["token", "list"]);
    assert!(listed.contains("ci") && !listed.contains(&token), "{listed}");
    let file = repo.scratch().join("disk.img");
    disk(&file);
    let server = serve(&repo);
    let url = format!("{}/vm/kvm/{NAME}", server.url);

    let wrong = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";
    assert_eq!(curl(&file, &url, &token, &["-H", &format!("Repr-Digest: {wrong}")]), 400);
    assert_eq!(files(&repo), Vec::<String>::new(), "a refused upload left files");
    assert!(repo.listed().is_empty());
    assert_eq!(curl(&file, &url, "vmrepo_wrong", &[]), 401);

    let sha = crate::util::sha256sum(&file);
    let digest: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).unwrap()).collect();
    let right = format!("Repr-Digest: sha-256=:{}:", base64(&digest));
    assert_eq!(curl(&file, &url, &token, &["-H", &right]), 201);
    assert_eq!(repo.listed(), [format!("kvm/{NAME}")]);
    assert_eq!(crate::util::sha256sum(&repo.vm_dir("kvm").join(NAME)), sha);
    // md5sum -c agrees with the .checksum written from the digest taken on arrival.
    crate::util::run_in(
        &repo.vm_dir("kvm"),
        "md5sum",
        &["-c", "--quiet", "sl5.3_x86_64_sl08e_8MB_demo.checksum"],
    );
    let audit = std::fs::read_to_string(repo.root.join(".vmrepo/audit.log")).unwrap();
    assert!(audit.contains("\"token\":\"ci\"") && !audit.contains(&token[7..]), "{audit}");
}

#[test]
fn sigterm_rolls_back_an_upload_in_progress() {
    if !have("curl", "curl") {
        return;
    }
    let repo = Repo::new();
    let token = repo.ok(&["token", "add", "ci"]).trim().to_string();
    let file = repo.scratch().join("disk.img");
    disk(&file);
    let mut server = serve(&repo);
    let url = format!("{}/vm/kvm/{NAME}", server.url);
    // 8 MiB at 1 MiB/s: under way for seconds.
    let mut upload = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--limit-rate", "1M", "-T"])
        .arg(&file)
        .args(["-H", &format!("Authorization: Bearer {token}"), &url])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !files(&repo).iter().any(|f| f.ends_with(".part")) {
        assert!(start.elapsed() < Duration::from_secs(10), "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::util::run("kill", &["-TERM", &server.child.id().to_string()]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let _ = upload.kill();
    let _ = upload.wait();
    assert_eq!(files(&repo), Vec::<String>::new(), "the upload was not rolled back");
    assert!(repo.listed().is_empty());
}

#[test]
fn token_commands() {
    let repo = Repo::new();
    let made =
        repo.json(&["token", "add", "builder", "--vm", "kvm", "--vm", "xen", "--expires", "2999-06-30"]);
    let token = made["token"].as_str().unwrap();
    assert!(token.starts_with("vmrepo_") && token.len() == 7 + 43, "{token}");
    assert_eq!(made["vms"], serde_json::json!(["kvm", "xen"]));
    assert_eq!(made["expires"], "2999-07-01T00:00:00Z");
    // Only the hash is kept, readable by its owner only.
    let path = repo.root.join(".vmrepo/tokens.json");
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(!kept.contains(&token[7..]), "the token itself is stored");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    repo.fails(5, &["token", "add", "builder"]);
    repo.fails(6, &["token", "add", "a/b"]);
    repo.fails(6, &["token", "add", "late", "--expires", "2001-01-01"]);
    repo.fails(6, &["token", "add", "odd", "--expires", "soon"]);
    repo.fails(6, &["token", "add", "vm", "--vm", "no/such"]);
    repo.ok(&["token", "revoke", "builder"]);
    repo.fails(4, &["token", "revoke", "builder"]);
    repo.fails(4, &["token", "revoke", "nobody"]);
    let listed = repo.json(&["token", "list"]);
    assert_eq!(listed[0]["name"], "builder");
    assert_eq!(listed[0]["state"], "revoked");
    assert!(listed[0].get("sha256").is_none(), "{listed}");
    // A revoked name may be given again.
    repo.ok(&["token", "add", "builder"]);
    assert_eq!(repo.json(&["token", "list"])[0]["state"], "active");
}
