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
