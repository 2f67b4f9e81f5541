//! `vmrepo context`: every generated user-data passes cloud-init's own
//! schema check (cloud-init from Debian, unpacked under target/ with its
//! Python dependencies in a virtualenv), every file reads back with PyYAML's
//! `safe_load` (what cloud-init uses) as the values put in, hostile ones
//! included, network-config is read by cloud-init's own network_state,
//! and the EC2 template is rendered by cloud-init's jinja handler.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::util::{Repo, have, pattern_file};

/// The cloud-init release of Debian 12 the tests check against.
const CLOUD_INIT: &str = "cloud-init";
const PY_DEPS: [&str; 7] =
    ["jsonschema", "pyyaml", "jinja2", "configobj", "requests", "jsonpatch", "netifaces"];

struct CloudInit {
    python: PathBuf,
    pythonpath: PathBuf,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(why: &str) -> Option<CloudInit> {
    if ci() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// cloud-init unpacked from Debian's package (`apt-get download` + `dpkg -x`,
/// never installed) with a virtualenv for its dependencies, both under
/// target/ and made once (marked complete only when everything worked).
fn cloud_init() -> Option<CloudInit> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = Path::new(crate::util::bin()).parent().unwrap().parent().unwrap().to_path_buf();
    let dir = target.join("cloud-init");
    let python = dir.join("venv/bin/python");
    let pythonpath = dir.join("root/usr/lib/python3/dist-packages");
    let marker = dir.join(".vmrepo-complete");
    if marker.exists() && python.exists() {
        return Some(CloudInit { python, pythonpath });
    }
    if !have("apt-get", "apt") || !have("dpkg", "dpkg") {
        return None;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    let download = || ok(Command::new("apt-get").args(["download", CLOUD_INIT]).current_dir(&dir));
    // A fresh machine may have no package lists yet: fetched once, then again.
    if !download() && (!ok(Command::new("apt-get").args(["update", "-qq"])) || !download()) {
        return skip("cannot apt-get download cloud-init (Debian's package lists reachable?)");
    }
    let deb = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap();
    assert!(ok(Command::new("dpkg").arg("-x").arg(&deb).arg(dir.join("root"))), "dpkg -x {}", deb.display());
    if !ok(Command::new("python3").args(["-m", "venv"]).arg(dir.join("venv"))) {
        return skip("cannot make a virtualenv (python3-venv)");
    }
    if !ok(Command::new(dir.join("venv/bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PY_DEPS))
    {
        return skip("cannot pip install cloud-init's dependencies (PyPI reachable?)");
    }
    std::fs::write(&marker, deb.file_name().unwrap().to_string_lossy().as_bytes()).unwrap();
    Some(CloudInit { python, pythonpath })
}

impl CloudInit {
    fn python(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.python).env("PYTHONPATH", &self.pythonpath).args(args).output().unwrap()
    }

    /// `cloud-init schema --config-file F`: valid, with nothing to say.
    fn schema_ok(&self, f: &Path) {
        let out = self.python(&["-m", "cloudinit.cmd.main", "schema", "--config-file", f.to_str().unwrap()]);
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cloud-init schema {}:\n{said}\n{}", f.display(), read(f));
        assert_eq!(said.trim(), format!("Valid cloud-config: {}", f.display()), "{}", read(f));
    }

    /// What PyYAML's safe_load (cloud-init's reader) reads, as JSON.
    fn load(&self, f: &Path) -> Value {
        let out = self.python(&[
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))",
            f.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "safe_load {}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// cloud-init's network_state of a network-config: each interface's
    /// name and subnets, and the name servers.
    fn network_state(&self, f: &Path) -> Value {
        let script = r#"
import json, sys, yaml
from cloudinit.net import network_state
ns = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])), skip_broken=False)
print(json.dumps({
    "interfaces": [{"name": i["name"], "subnets": i.get("subnets", [])} for i in ns.iter_interfaces()],
    "dns": list(ns.dns_nameservers),
}, default=str))
"#;
        let out = self.python(&["-c", script, f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "network_state {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A repository with one image (sl08e) and two SSH keys whose comments are hostile.
fn repo_with_keys() -> (Repo, String, Vec<String>) {
    let r = Repo::new();
    let src = r.scratch().join("img.raw");
    pattern_file(&src, 1 << 16, 1);
    let added = r.add(&src, "kvm", &["--max-size", "2GB"]);
    let name = added["image"]["name"].as_str().unwrap().to_string();
    let keys = r.root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut lines = Vec::new();
    if have("ssh-keygen", "openssh-client") {
        for (n, comment) in
            [("alice", "alice \"the admin\": #1 {x}"), ("bob", "!!python/object:os.system 'rm'")]
        {
            let k = r.scratch().join(n);
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(&k)
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::copy(k.with_extension("pub"), keys.join(format!("{n}.pub"))).unwrap();
            lines.push(read(&k.with_extension("pub")).trim_end().to_string());
        }
    }
    (r, name, lines)
}

/// Admin values that would break careless YAML, each in its own key.
const HOSTILE: [&str; 9] = [
    "a \"quoted\" value",
    "key: value # not a comment",
    "!!python/object/apply:os.system ['id']",
    "line one\nline two\n",
    "- not a list",
    "{not: a map}",
    "tab\there, null \u{0} byte? no: bell \u{7}",
    "yes",
    "\u{e9}t\u{e9} \u{1f600} \u{2028} \u{feff}",
];

fn admin_file(dir: &Path) -> PathBuf {
    let mut t = String::from(
        "#cloud-config\n# the admin's own\npackages: [tcsh]\nruncmd:\n  - echo admin\nssh_pwauth: yes\nwrite_files:\n  - path: /etc/motd\n    content: |\n      Welcome: STAR\n",
    );
    t.push_str("vmrepo_test:\n");
    for (i, h) in HOSTILE.iter().enumerate() {
        t.push_str(&format!(
            "  k{i}: {}\n",
            serde_json::to_string(h)
                .unwrap()
                .replace("\\u0000", "\\0")
                .replace('\u{2028}', "\\L")
                .replace('\u{feff}', "\\ufeff")
        ));
    }
    let p = dir.join("admin.yaml");
    std::fs::write(&p, t).unwrap();
    p
}

#[test]
fn plain_seeds_pass_cloud_init_and_read_back() {
    let Some(ci) = cloud_init() else { return };
    let (r, image, keys) = repo_with_keys();
    let dir = r.scratch();
    let csv = dir.join("net.csv");
    std::fs::write(
        &csv,
        "node,address,gateway,dns\n# rcas03 is dual stack\nrcas01,10.0.0.11/24,10.0.0.1,10.0.0.2;10.0.0.3\nrcas02,10.0.0.12/24,10.0.0.1,\nrcas03,10.0.0.13/24,10.0.0.1,10.0.0.2\nrcas03,2001:db8::13/64,2001:db8::1,2001:db8::53\n",
    )
    .unwrap();
    let admin = admin_file(&dir);
    let out = dir.join("seeds");
    let mut args = vec![
        "context",
        &image,
        "--nodes",
        "rcas{01..03}",
        "--domain",
        "star.example.org",
        "--network",
        csv.to_str().unwrap(),
        "--user-data",
        admin.to_str().unwrap(),
        "--star-sudo",
        "--format",
        "plain",
        "-o",
        out.to_str().unwrap(),
    ];
    if !keys.is_empty() {
        args.push("--keys");
    }
    let listed = r.json(&args);
    let admin_values = ci.load(&admin);
    let mut ids = std::collections::HashSet::new();
    for (i, node) in ["rcas01", "rcas02", "rcas03"].iter().enumerate() {
        let d = out.join(node);
        let ud = d.join("user-data");
        assert!(read(&ud).starts_with("#cloud-config\n"));
        ci.schema_ok(&ud);
        let u = ci.load(&ud);
        assert_eq!(u["hostname"], *node);
        assert_eq!(u["fqdn"], format!("{node}.star.example.org"));
        assert_eq!(u["preserve_hostname"], false);
        let users = u["users"].as_array().unwrap();
        assert_eq!(users[0]["name"], "root");
        assert_eq!(users[1]["name"], "star");
        assert_eq!(users[1]["shell"], "/bin/bash");
        assert_eq!(users[1]["homedir"], "/home/star");
        assert_eq!(users[1]["sudo"], "ALL=(ALL) NOPASSWD:ALL");
        for user in &users[..2] {
            let got: Vec<&str> = user["ssh_authorized_keys"]
                .as_array()
                .map_or(vec![], |a| a.iter().map(|k| k.as_str().unwrap()).collect());
            assert_eq!(
                got,
                keys.iter().map(String::as_str).collect::<Vec<_>>(),
                "the keys as ssh-keygen wrote them"
            );
        }
        // The STAR environment of the image's library, as a shell reads it.
        let files = u["write_files"].as_array().unwrap();
        let sh = files.iter().find(|f| f["path"] == "/etc/profile.d/star.sh").unwrap();
        let script = dir.join("star.sh");
        std::fs::write(&script, sh["content"].as_str().unwrap()).unwrap();
        let level = crate::util::run("sh", &["-c", &format!(". {} && echo $STAR_LEVEL", script.display())]);
        assert_eq!(level.trim(), "SL08e");
        // The admin's file merged: lists appended, their scalars win, hostile values intact.
        assert!(files.iter().any(|f| f["path"] == "/etc/motd" && f["content"] == "Welcome: STAR\n"));
        assert_eq!(u["runcmd"].as_array().unwrap().last().unwrap(), "echo admin");
        assert_eq!(u["ssh_pwauth"], true, "the admin's yes, read by PyYAML as YAML 1.1's true");
        assert_eq!(u["packages"], json!(["tcsh"]));
        assert_eq!(u["vmrepo_test"], admin_values["vmrepo_test"]);
        for (k, h) in HOSTILE.iter().enumerate() {
            assert_eq!(u["vmrepo_test"][format!("k{k}")], *h);
        }
        let m = ci.load(&d.join("meta-data"));
        assert_eq!(m["local-hostname"], *node);
        assert!(ids.insert(m["instance-id"].as_str().unwrap().to_string()), "instance-ids are unique");
        // network-config, as cloud-init's own parser reads it.
        let n = ci.load(&d.join("network-config"));
        assert_eq!(n["version"], 2);
        let ns = ci.network_state(&d.join("network-config"));
        let subnets = ns["interfaces"][0]["subnets"].to_string();
        assert!(subnets.contains(&format!("10.0.0.1{}", i + 1)), "{ns}");
        assert!(subnets.contains("10.0.0.1"), "{ns}");
        if i == 2 {
            assert!(subnets.contains("2001:db8::13"), "{ns}");
        }
        // The JSON lists each file with its size and SHA-256.
        let entry = listed["nodes"].as_array().unwrap().iter().find(|e| e["node"] == *node).unwrap();
        for f in entry["files"].as_array().unwrap() {
            let p = Path::new(f["path"].as_str().unwrap());
            assert_eq!(f["size"], std::fs::metadata(p).unwrap().len());
            assert_eq!(f["sha256"], crate::util::sha256sum(p));
        }
    }
}

#[test]
fn dhcp_by_default_and_a_named_interface() {
    let Some(ci) = cloud_init() else { return };
    let (r, image, _) = repo_with_keys();
    let out = r.scratch().join("seeds");
    let o = out.to_str().unwrap();
    r.ok(&["context", &image, "--nodes", "web1", "--format", "plain", "-o", o]);
    ci.schema_ok(&out.join("web1/user-data"));
    let n = ci.load(&out.join("web1/network-config"));
    assert_eq!(n, json!({"version": 2, "ethernets": {"id0": {"match": {"name": "e*"}, "dhcp4": true}}}));
    r.ok(&[
        "context",
        &image,
        "--nodes",
        "web1",
        "--format",
        "plain",
        "-o",
        o,
        "--interface",
        "eth0",
        "--force",
    ]);
    let ns = ci.network_state(&out.join("web1/network-config"));
    assert_eq!(ns["interfaces"][0]["name"], "eth0");
    assert!(ns["interfaces"][0]["subnets"].to_string().contains("dhcp"), "{ns}");
}

#[test]
fn ec2_names_each_copy_from_its_launch_index() {
    let Some(ci) = cloud_init() else { return };
    let (r, image, _) = repo_with_keys();
    let dir = r.scratch();
    let out = dir.join("ec2");
    let admin = admin_file(&dir);
    r.ok(&[
        "context",
        &image,
        "--nodes",
        "rcas{01..64}",
        "--domain",
        "star.example.org",
        "--user-data",
        admin.to_str().unwrap(),
        "--format",
        "ec2",
        "-o",
        out.to_str().unwrap(),
    ]);
    let ud = out.join("user-data");
    assert!(read(&ud).starts_with("## template: jinja\n#cloud-config\n"));
    // cloud-init's own jinja handler, with EC2's hyphenated metadata key.
    let script = r#"
import json, sys
from cloudinit.handlers.jinja_template import render_jinja_payload
data = {"ds": {"meta_data": {"ami-launch-index": int(sys.argv[2])}}, "v1": {}}
out = render_jinja_payload(open(sys.argv[1]).read(), "user-data", data)
open(sys.argv[3], "w").write(out)
"#;
    for (index, name) in [(0, "rcas01"), (4, "rcas05"), (63, "rcas64")] {
        let rendered = dir.join(format!("rendered-{index}"));
        let o =
            ci.python(&["-c", script, ud.to_str().unwrap(), &index.to_string(), rendered.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ci.schema_ok(&rendered);
        let u = ci.load(&rendered);
        assert_eq!(u["hostname"], name);
        assert_eq!(u["fqdn"], format!("{name}.star.example.org"));
        for (k, h) in HOSTILE.iter().enumerate() {
            assert_eq!(u["vmrepo_test"][format!("k{k}")], *h, "kept from jinja");
        }
    }
    // An admin's host name replaces ours, and is kept from jinja like the rest.
    let adm = dir.join("adm");
    std::fs::write(&adm, "#cloud-config\nhostname: \"{{ 7*7 }}\"\n").unwrap();
    let a = ["context", &image, "--nodes", "r{1..2}", "--format", "ec2", "--force", "--user-data"];
    r.ok(&[&a[..], &[adm.to_str().unwrap(), "-o", out.to_str().unwrap()]].concat());
    let rendered = dir.join("rendered-admin");
    let o = ci.python(&["-c", script, ud.to_str().unwrap(), "1", rendered.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ci.schema_ok(&rendered);
    assert_eq!(ci.load(&rendered)["hostname"], "{{ 7*7 }}");
    // Not one range: no launch index can name them.
    let e = r.fails(
        6,
        &["context", &image, "--nodes", "rcas1,rcas3", "--format", "ec2", "-o", out.to_str().unwrap()],
    );
    assert!(e.contains("one range"), "{e}");
}

#[test]
fn bad_input_is_refused_with_its_place() {
    let (r, image, _) = repo_with_keys();
    let dir = r.scratch();
    let o = dir.join("out");
    let o = o.to_str().unwrap();
    let e = r.fails(6, &["context", &image, "--nodes", "rcas5..rcas1", "-o", o]);
    assert!(e.contains("rcas5..rcas1") && e.contains("reversed"), "{e}");
    let f = dir.join("ud");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    let e = r.fails(6, &["context", &image, "--nodes", "a1", "--user-data", f.to_str().unwrap(), "-o", o]);
    assert!(e.contains("line 1") && e.contains("#cloud-config"), "{e}");
    std::fs::write(&f, "#cloud-config\nruncmd:\n  - !!python/object/apply:os.system [id]\n").unwrap();
    let e = r.fails(6, &["context", &image, "--nodes", "a1", "--user-data", f.to_str().unwrap(), "-o", o]);
    assert!(e.contains("line 3") && e.contains("tag"), "{e}");
    std::fs::write(&f, "#cloud-config\na: [1\n").unwrap();
    let e = r.fails(6, &["context", &image, "--nodes", "a1", "--user-data", f.to_str().unwrap(), "-o", o]);
    assert!(e.contains(&f.display().to_string()), "{e}");
    let csv = dir.join("net.csv");
    std::fs::write(&csv, "node,address,gateway,dns\na1,10.0.0.1/24,,\nzz9,10.0.0.2/24,,\n").unwrap();
    let e =
        r.fails(6, &["context", &image, "--nodes", "a1..a3", "--network", csv.to_str().unwrap(), "-o", o]);
    assert!(e.contains("a2, a3"), "{e}");
    let e = r.fails(6, &["context", &image, "--nodes", "a1", "--network", csv.to_str().unwrap(), "-o", o]);
    assert!(e.contains("zz9"), "{e}");
    let e = r.fails(6, &["context", &image, "--nodes", "a1", "--domain", "bad_domain", "-o", o]);
    assert!(e.contains("--domain"), "{e}");
    assert!(!Path::new(o).join("a1").exists(), "nothing written by refused runs");
    // Seeds already there are kept unless --force.
    r.ok(&["context", &image, "--nodes", "a1", "--format", "plain", "-o", o]);
    let before = read(&Path::new(o).join("a1/user-data"));
    let e =
        r.fails(5, &["context", &image, "--nodes", "a1", "--format", "plain", "-o", o, "--domain", "x.org"]);
    assert!(e.contains("--force"), "{e}");
    assert_eq!(read(&Path::new(o).join("a1/user-data")), before);
    r.ok(&["context", &image, "--nodes", "a1", "--format", "plain", "-o", o, "--domain", "x.org", "--force"]);
    assert!(read(&Path::new(o).join("a1/user-data")).contains("a1.x.org"));
    let names: Vec<String> = std::fs::read_dir(Path::new(o).join("a1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
}

#[test]
fn nocloud_iso_holds_the_plain_files() {
    if !have("xorriso", "xorriso") || !have("isoinfo", "genisoimage") {
        return;
    }
    let (r, image, _) = repo_with_keys();
    let dir = r.scratch();
    let (iso, plain) = (dir.join("iso"), dir.join("plain"));
    let common = ["--nodes", "rcas1..rcas2,web7", "--domain", "star.example.org", "--keys"];
    let mut a = vec!["context", image.as_str()];
    a.extend(common);
    r.ok(&[&a[..], &["-o", iso.to_str().unwrap()]].concat());
    r.ok(&[&a[..], &["--format", "plain", "-o", plain.to_str().unwrap()]].concat());
    for node in ["rcas1", "rcas2", "web7"] {
        let f = iso.join(format!("{node}.iso"));
        let vol = crate::util::run("isoinfo", &["-d", "-i", f.to_str().unwrap()]);
        assert!(vol.contains("Volume id: cidata"), "{vol}");
        for name in ["meta-data", "user-data", "network-config"] {
            let want = std::fs::read(plain.join(node).join(name)).unwrap();
            let out = dir.join(format!("x-{node}-{name}"));
            let x = Command::new("xorriso")
                .args(["-indev", f.to_str().unwrap(), "-osirrox", "on", "-extract", &format!("/{name}")])
                .arg(&out)
                .output()
                .unwrap();
            assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
            assert_eq!(std::fs::read(&out).unwrap(), want, "xorriso, Rock Ridge: {node}/{name}");
            for (how, path) in [("-R", format!("/{name}")), ("-J", format!("/{name}"))] {
                let o = Command::new("isoinfo")
                    .args(["-i", f.to_str().unwrap(), how, "-x", &path])
                    .output()
                    .unwrap();
                assert_eq!(o.stdout, want, "isoinfo {how}: {node}/{name}");
            }
        }
    }
}

#[test]
fn the_password_seed_only_when_asked_and_root_only() {
    let Some(ci) = cloud_init() else { return };
    let (r, image, _) = repo_with_keys();
    let dir = r.scratch();
    let out = dir.join("seeds");
    let o = out.to_str().unwrap();
    r.ok(&["context", &image, "--nodes", "n1", "--format", "plain", "-o", o, "--password-scheme", "hmac"]);
    let ud = out.join("n1/user-data");
    ci.schema_ok(&ud);
    let u = ci.load(&ud);
    let files = u["write_files"].as_array().unwrap();
    assert!(!files.iter().any(|f| f["path"] == "/etc/vmrepo/password-seed"), "no seed unless asked");
    let script = files.iter().find(|f| f["path"] == "/usr/local/sbin/vmrepo-password-boot").unwrap();
    assert_eq!(script["permissions"], "0700");
    // Read back by cloud-init's YAML reader, the script is byte for byte the
    // one tests/it/site.rs runs with dash, bash and the real chpasswd.
    let boot = r.ok(&["password", "boot-script", "--style", "sh", "--scheme", "hmac"]);
    assert_eq!(script["content"].as_str().unwrap(), boot);
    // Set at the first boot (runcmd), at every later one (bootcmd), and on a
    // running node when the month turns (cron).
    assert_eq!(u["runcmd"], json!([["/usr/local/sbin/vmrepo-password-boot"]]));
    assert_eq!(
        u["bootcmd"],
        json!([
            "if [ -x /usr/local/sbin/vmrepo-password-boot ]; then /usr/local/sbin/vmrepo-password-boot || :; fi"
        ])
    );
    let cron = files.iter().find(|f| f["path"] == "/etc/cron.d/vmrepo-password").unwrap();
    assert!(
        cron["content"]
            .as_str()
            .unwrap()
            .ends_with("\n5 * 1 * * root /usr/local/sbin/vmrepo-password-boot\n")
    );
    assert_eq!(u["ssh_pwauth"], true);
    let seed = dir.join("seed");
    std::fs::write(&seed, "a seed: with \"quotes\" # and more\n").unwrap();
    std::fs::set_permissions(&seed, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = r.run(&[
        "context",
        &image,
        "--nodes",
        "n1",
        "--format",
        "plain",
        "-o",
        o,
        "--force",
        "--password-scheme",
        "spec",
        "--password-seed-file",
        seed.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("warning") && err.contains("metadata service"), "{err}");
    assert!(!err.contains("a seed"), "the seed is never printed");
    ci.schema_ok(&ud);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&ud).unwrap().permissions().mode() & 0o777, 0o600);
    let u = ci.load(&ud);
    let f = u["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/vmrepo/password-seed")
        .unwrap()
        .clone();
    assert_eq!(f["permissions"], "0600");
    assert_eq!(f["encoding"], "b64");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut decoded = decoded;
    decoded.stdin.take().unwrap().write_all(f["content"].as_str().unwrap().as_bytes()).unwrap();
    let got = decoded.wait_with_output().unwrap();
    assert_eq!(got.stdout, b"a seed: with \"quotes\" # and more");
    // A seed the boot script would refuse at the node's first boot is refused now.
    for bad in ["100% sure\n", "\n"] {
        std::fs::write(&seed, bad).unwrap();
        let args = ["context", &image, "--nodes", "n1", "-o", o, "--force", "--password-scheme", "spec"];
        let err = r.fails(6, &[&args[..], &["--password-seed-file", seed.to_str().unwrap()]].concat());
        assert!(err.contains("the password seed cannot be used") && !err.contains("sure"), "{err}");
    }
}

/// A run killed (SIGKILL, by strace) between its renames leaves seeds of the
/// old run or the new, never a torn file; the next run removes the hidden
/// temporary files the killed one left, and leaves other files alone.
#[test]
fn a_killed_run_leaves_whole_seeds_and_the_next_removes_its_temporary_files() {
    if !have("strace", "strace") {
        return;
    }
    let (r, image, _) = repo_with_keys();
    let out = r.scratch().join("seeds");
    let o = out.to_str().unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".keep.tmp-not-ours"), b"x").unwrap();
    let st = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "inject=rename:signal=SIGKILL:when=3", crate::util::bin()])
        .args(["--repo", r.root.to_str().unwrap(), "context", &image, "--nodes", "rcas1..rcas5", "-o", o])
        .status()
        .unwrap();
    assert!(!st.success(), "the kill did not happen");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let left = names(&out);
    assert!(left.iter().any(|n| n.starts_with(".rcas") && n.contains(".tmp-")), "{left:?}");
    for n in left.iter().filter(|n| n.ends_with(".iso")) {
        assert_eq!(std::fs::metadata(out.join(n)).unwrap().len(), 128 * 1024, "{n} is torn");
    }
    r.ok(&["context", &image, "--nodes", "rcas1..rcas5", "-o", o, "--force"]);
    let after = names(&out);
    assert_eq!(
        after,
        [".keep.tmp-not-ours", "rcas1.iso", "rcas2.iso", "rcas3.iso", "rcas4.iso", "rcas5.iso"],
        "{after:?}"
    );
}
