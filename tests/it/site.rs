//! `vmrepo password`: the month's root password, against the specification's
//! own shell pipeline (GNU date, md5sum, base64, sed) run for many months
//! and seeds, spaces and non-ASCII included; the seed never printed.

use std::process::Command;

use crate::util::{bin, have};

/// What the specification's command prints for `day` (YYYY-MM-DD) and `seed`.
fn pipeline(day: &str, seed: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            r#"date -d "$DAY" "+%y%m SEED=$SEED" | md5sum | base64 | sed 's|\(...........\).*|\1|'"#,
        ])
        .env("DAY", day)
        .env("SEED", seed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

/// The specification's second form: 11 hex digits, then base64.
fn pipeline2(day: &str, seed: &str) -> String {
    let script = r#"date -d "$DAY" "+%y%m SEED=$SEED" | md5sum | sed 's|\(...........\).*|\1|' | base64 | sed 's|\(...........\).*|\1|'"#;
    let out = Command::new("sh").args(["-c", script]).env("DAY", day).env("SEED", seed).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

fn vmrepo_password(month: &str, seed: &str, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["password", "--month", month])
        .args(extra)
        .env("VMREPO_PASSWORD_SEED", seed)
        .output()
        .unwrap()
}

#[test]
fn the_password_is_the_specifications_pipeline_for_every_month_and_seed() {
    if !have("date", "coreutils") || !have("md5sum", "coreutils") || !have("base64", "coreutils") {
        return;
    }
    let seeds = [
        "someLongString",
        "a",
        "with spaces  and\ttabs",
        "non-ASCII: Brookhaven – RHIC ☢ ünïcödé",
        "quotes ' \" and $dollars `ticks` \\ backslash",
        &"x".repeat(1000),
    ];
    let mut checked = 0;
    for (i, seed) in seeds.iter().enumerate() {
        for year in [2008, 2009, 2026, 2031] {
            for month in 1..=12 {
                if (month + i) % 3 != 0 && year != 2026 {
                    continue; // a sample of the other years, every month of this one
                }
                let day = format!("{year}-{month:02}-15");
                let yymm = format!("{:02}{month:02}", year % 100);
                let want = pipeline(&day, seed);
                assert_eq!(want.len(), 11);
                assert_eq!(want, pipeline2(&day, seed), "the specification's two forms differ for {day}");
                let out = vmrepo_password(&yymm, seed, &[]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), want, "{yymm} seed #{i}");
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "{checked}");
}

#[test]
fn a_seed_file_json_the_hmac_scheme_and_refusals() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("seed");
    std::fs::write(&file, "someLongString\nsecond line ignored\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(bin())
        .args(["--json", "password", "--month", "2612", "--seed-file", file.to_str().unwrap()])
        .env_remove("VMREPO_PASSWORD_SEED")
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["month"], "2612");
    assert_eq!(v["scheme"], "spec");
    if have("md5sum", "coreutils") {
        assert_eq!(v["password"], pipeline("2026-12-01", "someLongString"));
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("someLongString"), "the seed was printed");
    // Readable by others: used, with a warning that does not name the seed.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin())
        .args(["password", "--month", "2612", "--seed-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("chmod 600") && !err.contains("someLongString"), "{err}");
    // HMAC: 20 characters of [A-Za-z0-9], another each month.
    let h = |m: &str| {
        let o = vmrepo_password(m, "someLongString", &["--scheme", "hmac"]);
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim_end().to_string()
    };
    let (a, b) = (h("2612"), h("2701"));
    assert!(a.len() == 20 && a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
    assert_ne!(a, b);
    // Refused, exit 6, one line, the seed never in it: a bad month, a seed
    // with '%' (date would read it), an empty seed, a FIFO as the seed file.
    for (month, seed) in [("2613", "ok"), ("26", "ok"), ("2612", "50%secret"), ("2612", "")] {
        let o = vmrepo_password(month, seed, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(6), "{month} {seed:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
    let o = Command::new(bin()).args(["password"]).env_remove("VMREPO_PASSWORD_SEED").output().unwrap();
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("VMREPO_PASSWORD_SEED"));
    if have("mkfifo", "coreutils") {
        let fifo = t.path().join("fifo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let o = Command::new("timeout")
            .args(["-s", "KILL", "30", bin(), "password", "--seed-file", fifo.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A sandbox to run `vmrepo password boot-script`'s script in: `chpasswd`,
/// `date` (a fixed day) and `logger` are stubs on PATH, the seed file is
/// owned by root (`unshare -r` maps the test's user to root when it is not).
struct BootBox {
    dir: tempfile::TempDir,
    as_root: Vec<&'static str>,
}

impl BootBox {
    fn new() -> Option<BootBox> {
        for (tool, pkg) in
            [("dash", "dash"), ("bash", "bash"), ("md5sum", "coreutils"), ("base64", "coreutils")]
                .into_iter()
                .chain([
                    ("od", "coreutils"),
                    ("awk", "mawk"),
                    ("sha256sum", "coreutils"),
                    ("openssl", "openssl"),
                ])
        {
            if !have(tool, pkg) {
                return None;
            }
        }
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_root = if root {
            Vec::new()
        } else if Command::new("unshare").args(["-r", "true"]).status().is_ok_and(|s| s.success()) {
            vec!["unshare", "-r"]
        } else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the boot script's test needs root or a working `unshare -r`");
            }
            eprintln!("SKIPPED: neither root nor `unshare -r`: the seed file cannot be owned by root");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let date = Command::new("sh").args(["-c", "command -v date"]).output().unwrap();
        let date = String::from_utf8(date.stdout).unwrap().trim().to_string();
        for (name, body) in [
            ("chpasswd", "#!/bin/sh\nexec cat > \"$BOOT_OUT\"\n".to_string()),
            ("date", format!("#!/bin/sh\nexec {date} -d \"$BOOT_DAY\" \"$@\"\n")),
            ("logger", "#!/bin/sh\necho \"logger $*\" >> \"$BOOT_LOG\"\n".to_string()),
        ] {
            std::fs::write(bin.join(name), body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Some(BootBox { dir, as_root })
    }

    fn seed_path(&self) -> std::path::PathBuf {
        self.dir.path().join("etc seed")
    }

    fn script(&self, scheme: &str) -> std::path::PathBuf {
        let out = Command::new(bin())
            .args(["password", "boot-script", "--style", "sh", "--scheme", scheme, "--seed-path"])
            .arg(self.seed_path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p = self.dir.path().join(format!("boot-{scheme}.sh"));
        std::fs::write(&p, &out.stdout).unwrap();
        p
    }

    /// Runs `script` with `shell` on `day`: its exit status, what chpasswd
    /// read (None when it was not run), and what it said (stderr and syslog).
    fn run(&self, shell: &str, script: &std::path::Path, day: &str) -> (bool, Option<String>, String) {
        let out_file = self.dir.path().join("chpasswd.in");
        let log = self.dir.path().join("log");
        let _ = std::fs::remove_file(&out_file);
        let _ = std::fs::remove_file(&log);
        let path = format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap());
        let mut argv: Vec<String> = self.as_root.iter().map(|s| s.to_string()).collect();
        argv.push(shell.into());
        argv.push(script.display().to_string());
        let o = Command::new(&argv[0])
            .args(&argv[1..])
            .env("PATH", path)
            .env("BOOT_OUT", &out_file)
            .env("BOOT_LOG", &log)
            .env("BOOT_DAY", day)
            .output()
            .unwrap();
        let said = format!(
            "{}{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (o.status.success(), std::fs::read_to_string(&out_file).ok(), said)
    }

    fn write_seed(&self, content: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.seed_path();
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// HMAC-SHA-256(seed, YYMM || counter) by openssl, mapped to 20 characters
/// as docs/site.md says (bytes below 248, modulo 62 into A-Za-z0-9).
fn openssl_hmac_password(seed: &str, yymm: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let hexkey: String = seed.bytes().map(|b| format!("{b:02x}")).collect();
    let mut pw = String::new();
    let mut counter = 0u8;
    while pw.len() < 20 {
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt", &format!("hexkey:{hexkey}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut msg = yymm.as_bytes().to_vec();
        msg.push(counter);
        child.stdin.take().unwrap().write_all(&msg).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.split_whitespace().last().unwrap().to_string();
        assert_eq!(hex.len(), 64, "{text}");
        for i in (0..64).step_by(2) {
            let b = u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            if b < 248 && pw.len() < 20 {
                pw.push(char::from(alphabet[usize::from(b % 62)]));
            }
        }
        counter += 1;
    }
    pw
}

#[test]
fn the_boot_script_sets_the_months_password_as_vmrepo_and_the_specification_compute_it() {
    let Some(bx) = BootBox::new() else { return };
    let seeds = [
        "someLongString",
        "with spaces  and\ttabs",
        "non-ASCII: Brookhaven – RHIC ☢ ünïcödé",
        "quotes ' \" and $dollars `ticks` \\ backslash",
        &"x".repeat(65), // longer than SHA-256's block: the HMAC key is hashed
        &"y".repeat(1000),
    ];
    let (spec, hmac) = (bx.script("spec"), bx.script("hmac"));
    let mut checked = 0;
    for (i, seed) in seeds.iter().enumerate() {
        for (j, day) in ["2009-01-31", "2026-12-02", "2027-02-28", "2031-10-01"].iter().enumerate() {
            let yymm = format!("{}{}", &day[2..4], &day[5..7]);
            // The file as an administrator writes it: a line break, or CRLF, or none.
            let content = match (i + j) % 3 {
                0 => format!("{seed}\n"),
                1 => format!("{seed}\r\nsecond line\n"),
                _ => seed.to_string(),
            };
            bx.write_seed(content.as_bytes(), 0o600);
            for (scheme, script) in [("spec", &spec), ("hmac", &hmac)] {
                let want =
                    String::from_utf8(vmrepo_password(&yymm, seed, &["--scheme", scheme]).stdout).unwrap();
                let want = want.trim_end();
                let oracle =
                    if scheme == "spec" { pipeline(day, seed) } else { openssl_hmac_password(seed, &yymm) };
                assert_eq!(want, oracle, "{scheme} {yymm} seed #{i}");
                for shell in ["dash", "bash"] {
                    let (ok, got, said) = bx.run(shell, script, day);
                    assert!(ok, "{scheme} {shell} {yymm} seed #{i}: {said}");
                    assert_eq!(
                        got.as_deref(),
                        Some(format!("root:{want}\n").as_str()),
                        "{scheme} {shell} {day} #{i}"
                    );
                    assert!(!said.contains(seed) && !said.contains(want), "{said}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, seeds.len() * 4 * 2 * 2);
}

#[test]
fn the_boot_script_refuses_a_seed_others_can_read_and_leaves_the_password() {
    let Some(bx) = BootBox::new() else { return };
    let script = bx.script("hmac");
    let secret = "topSecretSeed";
    // Each refusal: the script fails, chpasswd is not run, the seed not said.
    let refused = |why: &str| {
        for shell in ["dash", "bash"] {
            let (ok, got, said) = bx.run(shell, &script, "2026-12-02");
            assert!(!ok && got.is_none(), "{why} ({shell}): {said}");
            assert!(said.contains("left as it is") && !said.contains(secret), "{why}: {said}");
            assert!(said.contains("logger -t vmrepo-password"), "{why}: not logged: {said}");
        }
    };
    for mode in [0o644, 0o640, 0o604, 0o660, 0o700] {
        bx.write_seed(format!("{secret}\n").as_bytes(), mode);
        refused(&format!("mode {mode:o}"));
    }
    for bad in [&b""[..], b"\n", b"50%topSecretSeed\n", b"topSecret\0Seed\n", b"topSecret\rSeed\n"] {
        bx.write_seed(bad, 0o600);
        refused(&format!("{bad:?}"));
    }
    // A link to a good seed file, a folder, no file.
    bx.write_seed(format!("{secret}\n").as_bytes(), 0o600);
    let real = bx.dir.path().join("real");
    std::fs::rename(bx.seed_path(), &real).unwrap();
    std::os::unix::fs::symlink(&real, bx.seed_path()).unwrap();
    refused("a symbolic link");
    std::fs::remove_file(bx.seed_path()).unwrap();
    refused("no seed file");
    std::fs::create_dir(bx.seed_path()).unwrap();
    refused("a folder");
    std::fs::remove_dir(bx.seed_path()).unwrap();
    // Not owned by root (when the test can give it to someone else).
    if bx.as_root.is_empty() {
        bx.write_seed(format!("{secret}\n").as_bytes(), 0o600);
        let st = Command::new("chown").args(["65534"]).arg(bx.seed_path()).status().unwrap();
        assert!(st.success());
        refused("owned by nobody");
    }
    // And the good file is taken.
    bx.write_seed(format!("{secret}\n").as_bytes(), 0o400);
    let (ok, got, said) = bx.run("dash", &script, "2026-12-02");
    assert!(ok && got.is_some(), "{said}");
}

#[test]
fn boot_script_styles_json_and_the_systemd_unit() {
    // The password command keeps its own options; they do not mix with the subcommand.
    let o = Command::new(bin()).args(["password", "--month", "2612", "boot-script"]).output().unwrap();
    assert!(!o.status.success());
    let o = Command::new(bin())
        .args(["password", "boot-script", "--seed-path", "relative/seed"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", String::from_utf8_lossy(&o.stderr));
    // rc.local: the script and the line to append.
    let o = Command::new(bin()).args(["password", "boot-script", "--style", "rc-local"]).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains(
        "==> /etc/rc.d/rc.local (mode 0755, append) <==\n/usr/local/sbin/vmrepo-password-boot || :"
    ));
    assert!(text.contains("# vmrepo password boot-script scheme=spec\n"));
    // systemd, as JSON: each file's path, mode and content.
    let o = Command::new(bin())
        .args(["--json", "password", "boot-script", "--scheme", "hmac", "--seed-path", "/etc/s"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scheme"], "hmac");
    assert_eq!(v["style"], "systemd");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files[0]["path"], "/usr/local/sbin/vmrepo-password-boot");
    assert_eq!(files[0]["mode"], "0755");
    let script = files[0]["content"].as_str().unwrap();
    assert!(script.starts_with("#!/bin/sh\n# vmrepo password boot-script scheme=hmac\n"));
    assert!(script.contains("seed_file='/etc/s'\n"));
    assert_eq!(files[1]["path"], "/etc/systemd/system/vmrepo-password.service");
    let unit = files[1]["content"].as_str().unwrap();
    if have("sh", "dash") {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("boot.sh");
        std::fs::write(&s, script).unwrap();
        for shell in ["sh", "bash"] {
            let o = Command::new(shell).arg("-n").arg(&s).output().unwrap();
            assert!(o.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    if !have("systemd-analyze", "systemd") {
        return;
    }
    // systemd-analyze verify checks that ExecStart is executable: the
    // unit as printed, with the script's path moved into a folder of the test's.
    let t = tempfile::tempdir().unwrap();
    let s = t.path().join("vmrepo-password-boot");
    std::fs::write(&s, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    let u = t.path().join("vmrepo-password.service");
    std::fs::write(&u, unit.replace("/usr/local/sbin/vmrepo-password-boot", s.to_str().unwrap())).unwrap();
    assert!(unit.contains("Type=oneshot") && unit.contains("After=local-fs.target"));
    let o = Command::new("systemd-analyze").arg("verify").arg(&u).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}

/// A small ext4 guest (the whole disk, no partition) made by `mke2fs -d`
/// from a folder holding /etc/passwd, /etc/shadow (root has a password) and
/// `files` (path, content, mode); `links` are (path, target) symbolic links.
pub fn monthly_guest(
    dir: &std::path::Path,
    name: &str,
    files: &[(&str, &str, u32)],
    links: &[(&str, &str)],
) -> Option<std::path::PathBuf> {
    if !have("mke2fs", "e2fsprogs") {
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let tree = dir.join(format!("{name}.d"));
    let base: [(&str, &str, u32); 3] = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nstar:x:1000:1000::/home/star:/bin/bash\n", 0o644),
        ("etc/shadow", "root:$6$salt$hashhashhash:19000:0:99999:7:::\nstar:!!:19000::::::\n", 0o600),
        ("etc/redhat-release", "Scientific Linux SL release 5.3 (Boron)\n", 0o644),
    ];
    for (path, content, mode) in base.iter().chain(files.iter()) {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (path, target) in links {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    let img = dir.join(format!("{name}.img"));
    let o = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("8M")
        .output()
        .unwrap();
    assert!(o.status.success(), "mke2fs: {}", String::from_utf8_lossy(&o.stderr));
    Some(img)
}

/// The four guests: the specification's rc.local, vmrepo's systemd unit and
/// script, a cron entry, and none. Each seed is a string no output may hold.
pub fn monthly_guests(dir: &std::path::Path) -> Option<Vec<(&'static str, std::path::PathBuf)>> {
    let unit =
        Command::new(bin()).args(["--json", "password", "boot-script", "--scheme", "hmac"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&unit.stdout).unwrap();
    let script = v["files"][0]["content"].as_str().unwrap().to_string();
    let unit = v["files"][1]["content"].as_str().unwrap().to_string();
    let rc = "#!/bin/sh\ntouch /var/lock/subsys/local\n\
              date '+%y%m SEED=seedOfTheRcLocal' | md5sum | base64 | sed 's|\\(...........\\).*|\\1|' | passwd --stdin root\n";
    let cron = "SHELL=/bin/sh\n@reboot root date '+\\%y\\%m SEED=seedOfTheCron' | md5sum | base64 | head -c 11 | sed 's/^/root:/' | chpasswd\n";
    Some(vec![
        (
            "spec-rc-local",
            monthly_guest(
                dir,
                "rc",
                &[("etc/rc.d/rc.local", rc, 0o755)],
                &[("etc/rc.local", "rc.d/rc.local")],
            )?,
        ),
        (
            "hmac-systemd",
            monthly_guest(
                dir,
                "unit",
                &[
                    ("etc/systemd/system/vmrepo-password.service", &unit, 0o644),
                    ("usr/local/sbin/vmrepo-password-boot", &script, 0o755),
                    ("etc/vmrepo/password-seed", "seedOfTheUnit\n", 0o600),
                ],
                &[(
                    "etc/systemd/system/multi-user.target.wants/vmrepo-password.service",
                    "/etc/systemd/system/vmrepo-password.service",
                )],
            )?,
        ),
        ("spec-cron", monthly_guest(dir, "cron", &[("etc/cron.d/rootpw", cron, 0o644)], &[])?),
        (
            "static",
            monthly_guest(
                dir,
                "static",
                &[("etc/rc.d/rc.local", "#!/bin/sh\ntouch /var/lock/subsys/local\n", 0o755)],
                &[],
            )?,
        ),
    ])
}

const GUEST_SEEDS: [&str; 3] = ["seedOfTheRcLocal", "seedOfTheUnit", "seedOfTheCron"];

#[test]
fn inspect_and_add_recognise_the_monthly_password_and_never_say_the_seed() {
    let t = tempfile::tempdir().unwrap();
    let Some(guests) = monthly_guests(t.path()) else { return };
    let r = crate::util::Repo::new();
    for (what, img) in &guests {
        let img = img.to_str().unwrap();
        let o = Command::new(bin()).args(["--json", "inspect", img]).output().unwrap();
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let m = &v["monthly_password"];
        let setups = m["setups"].as_array().unwrap();
        match *what {
            "spec-rc-local" => {
                // /etc/rc.local, a link to rc.d/rc.local: one file, reported once, by its real name.
                assert_eq!(setups.len(), 1, "{m}");
                assert_eq!(setups[0]["scheme"], "spec", "{m}");
                assert_eq!(setups[0]["line"], 3, "{m}");
                assert_eq!(setups[0]["file"], "/etc/rc.d/rc.local", "{m}");
            }
            "hmac-systemd" => {
                // The unit and its link in multi-user.target.wants: reported once.
                assert_eq!(setups.len(), 1, "{m}");
                for s in setups {
                    assert_eq!(s["scheme"], "hmac", "{m}");
                    assert_eq!(s["script"], "/usr/local/sbin/vmrepo-password-boot", "{m}");
                    assert!(s["file"].as_str().unwrap().ends_with("vmrepo-password.service"), "{m}");
                }
            }
            "spec-cron" => {
                assert_eq!(setups.len(), 1, "{m}");
                assert_eq!(setups[0]["scheme"], "spec");
                assert_eq!(setups[0]["file"], "/etc/cron.d/rootpw");
            }
            _ => assert!(setups.is_empty(), "{m}"),
        }
        assert_eq!(m["root_password_static"], *what == "static", "{what}: {m}");
        let human = Command::new(bin()).args(["inspect", img]).output().unwrap();
        let human = String::from_utf8_lossy(&human.stdout).to_string();
        let line = human.lines().find(|l| l.starts_with("monthly password")).unwrap_or_default().to_string();
        assert!(
            line.contains(if *what == "static" { "static" } else { what.split('-').next().unwrap() }),
            "{human}"
        );
        // add writes the command into the description, never the seed.
        let out = r.add(std::path::Path::new(img), "kvm", &["--max-size", "8GB", "--detail", what]);
        let path = r.root.join(out["image"]["path"].as_str().unwrap());
        let txt = std::fs::read_to_string(path.with_extension("txt")).unwrap();
        let want = match *what {
            "hmac-systemd" => Some(
                "Root password command: vmrepo password --scheme hmac --month YYMM --seed-file <your seed file>",
            ),
            "static" => None,
            _ => Some(
                "Root password command: vmrepo password --scheme spec --month YYMM --seed-file <your seed file>",
            ),
        };
        match want {
            Some(w) => assert!(txt.lines().any(|l| l == w), "{what}: {txt}"),
            None => assert!(!txt.contains("Root password command"), "{txt}"),
        }
        for seed in GUEST_SEEDS {
            for (name, out) in [
                ("inspect --json", &String::from_utf8_lossy(&o.stdout).to_string()),
                ("inspect", &human),
                (".txt", &txt),
            ] {
                assert!(
                    !out.contains(seed) && !out.contains("SEED="),
                    "{what}: {name} says the seed:\n{out}"
                );
            }
        }
    }
}

/// The boot script with the real `chpasswd` (PAM, the host's hashing) on a
/// copy of /etc bind-mounted in a mount namespace of its own: the hash it
/// writes for root is checked with the C library's crypt(3) (through perl)
/// against the password `vmrepo password` and the specification's pipeline
/// give. Needs root (to mount and to be chpasswd's root).
#[test]
fn the_boot_script_sets_roots_password_with_the_real_chpasswd() {
    if !vmrepo_testkit::root("the real chpasswd on a copy of /etc mounted in a namespace")
        || !have("chpasswd", "passwd")
        || !have("unshare", "util-linux")
        || !have("perl", "perl-base")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let st = Command::new("cp").arg("-a").arg("/etc").arg(&etc).status().unwrap();
    assert!(st.success(), "cp -a /etc");
    let seed_file = dir.path().join("seed");
    let seed = "some Long String – ünïcödé";
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    std::fs::set_permissions(&seed_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let host_shadow = std::fs::read("/etc/shadow").unwrap();
    for scheme in ["spec", "hmac"] {
        let out = Command::new(bin())
            .args(["password", "boot-script", "--style", "sh", "--scheme", scheme, "--seed-path"])
            .arg(&seed_file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let script = dir.path().join(format!("boot-{scheme}.sh"));
        std::fs::write(&script, &out.stdout).unwrap();
        let run = Command::new("unshare")
            .args(["-m", "sh", "-c", r#"mount --bind "$1" /etc && exec sh "$2""#, "sh"])
            .arg(&etc)
            .arg(&script)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{scheme}: {said}");
        assert!(!said.contains(seed), "{said}");
        // The month the script saw: this one (UTC), or the next if it turned meanwhile.
        let want: Vec<String> = ["now", "now + 1 minute"]
            .iter()
            .map(|when| {
                let day = String::from_utf8(
                    Command::new("date").args(["-u", "-d", when, "+%F"]).output().unwrap().stdout,
                )
                .unwrap();
                let day = day.trim();
                let yymm = format!("{}{}", &day[2..4], &day[5..7]);
                let pw =
                    String::from_utf8(vmrepo_password(&yymm, seed, &["--scheme", scheme]).stdout).unwrap();
                let pw = pw.trim_end().to_string();
                if scheme == "spec" {
                    assert_eq!(pw, pipeline(day, seed), "{day}");
                }
                pw
            })
            .collect();
        let shadow = std::fs::read_to_string(etc.join("shadow")).unwrap();
        let hash = shadow.lines().find_map(|l| l.strip_prefix("root:")).unwrap().split(':').next().unwrap();
        let crypt_ok = |pw: &str| {
            Command::new("perl")
                .args(["-e", "exit(crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 0 : 1)", pw, hash])
                .status()
                .unwrap()
                .success()
        };
        assert!(hash.starts_with('$'), "{scheme}: chpasswd wrote no hash: {hash}");
        assert!(want.iter().any(|pw| crypt_ok(pw)), "{scheme}: root's hash is not of the month's password");
        assert!(!crypt_ok("not the password"), "crypt accepts anything");
    }
    assert_eq!(std::fs::read("/etc/shadow").unwrap(), host_shadow, "the host's /etc/shadow changed");
}
