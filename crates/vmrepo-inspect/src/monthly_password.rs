//! Whether the guest sets root's password for the month at each boot, as
//! the specification asks (`date '+%y%m SEED=...' | md5sum | base64 | sed
//! ... | passwd --stdin root` in rc.local), or with `vmrepo password
//! boot-script`'s script (its marker line `# vmrepo password boot-script
//! scheme=...`), and where: rc.local, systemd units, cron. The seed is
//! never reported: only the scheme, the file and the line.

use serde::Serialize;

use crate::accounts::Accounts;
use crate::guest::{ExtFs, Kind};

/// Files read at most (boot files and the scripts they run).
const MAX_FILES: usize = 256;
/// Bytes of one file read at most (a larger one is not looked at).
const MAX_FILE: u64 = 256 << 10;
/// Scripts a boot file runs that are looked into, per boot file.
const MAX_RUN_PER_FILE: usize = 16;
/// The marker line of vmrepo's boot script.
const MARKER: &str = "# vmrepo password boot-script scheme=";

/// The scheme a set-up computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// The specification's `date '+%y%m SEED=...' | md5sum | base64` pipeline.
    Spec,
    /// vmrepo's HMAC-SHA-256 script.
    Hmac,
    /// The month's date piped into `chpasswd`/`passwd`, some other way.
    Unknown,
}

/// One place that sets root's password from the month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setup {
    pub scheme: Scheme,
    /// The file that runs at boot (or from cron).
    pub file: String,
    /// The script it runs that computes the password, when it is another file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The line (from 1) of the file that computes it (of `script` when given).
    pub line: usize,
}

/// What the guest does with root's password at boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MonthlyPassword {
    /// Where root's password is set from the month; empty: nowhere.
    pub setups: Vec<Setup>,
    /// Root has a password in /etc/shadow and nothing sets it each month.
    pub root_password_static: bool,
    /// Files looked into.
    pub files_read: usize,
    /// Some files were not looked into (more than the caps).
    pub truncated: bool,
}

/// The scheme of a text, and the line (from 1) that shows it. `cron`: `%`
/// is special in a crontab and written `\%`.
fn classify(text: &str, cron: bool) -> Option<(Scheme, usize)> {
    let mut fallback = None;
    for (i, raw) in text.lines().enumerate() {
        let line = if cron { raw.replace("\\%", "%") } else { raw.to_string() };
        let t = line.trim();
        if let Some(rest) = t.strip_prefix(MARKER) {
            let scheme = match rest.split_whitespace().next() {
                Some("spec") => Scheme::Spec,
                Some("hmac") => Scheme::Hmac,
                _ => Scheme::Unknown,
            };
            return Some((scheme, i + 1));
        }
        if t.starts_with('#') {
            continue;
        }
        let month = t.contains("%y%m") || t.contains("%Y%m") || (t.contains("%y") && t.contains("%m"));
        let sets = t.contains("chpasswd") || t.contains("passwd");
        if month && t.contains("date") && t.contains("md5sum") && t.contains("base64") && sets {
            return Some((Scheme::Spec, i + 1));
        }
        if month && t.contains("date") && sets && fallback.is_none() {
            fallback = Some((Scheme::Unknown, i + 1));
        }
    }
    fallback
}

/// The absolute paths a boot file names (the scripts it may run), in order.
fn named_paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let t = t.split_once('=').filter(|(k, _)| k.starts_with("Exec")).map_or(t, |(_, v)| v);
        for w in t
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`' | '"' | '\''))
        {
            let w = w.trim_start_matches(['-', '@', '+', '!']);
            if w.starts_with('/') && w.len() > 1 && !out.iter().any(|o| o == w) {
                out.push(w.to_string());
            }
        }
    }
    out
}

/// The files run at boot or by cron: rc.local, systemd units, crontabs.
fn boot_files(root: &ExtFs) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for p in ["/etc/rc.local", "/etc/rc.d/rc.local"] {
        out.push((p.to_string(), false));
    }
    for dir in ["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"] {
        let mut units: Vec<String> = Vec::new();
        for (name, k) in root.list(dir) {
            if name.ends_with(".service") && matches!(k, Kind::File | Kind::Link) {
                units.push(format!("{dir}/{name}"));
            } else if name.ends_with(".wants") && k == Kind::Dir && dir == "/etc/systemd/system" {
                for (n, _) in root.list(&format!("{dir}/{name}")) {
                    if n.ends_with(".service") {
                        units.push(format!("{dir}/{name}/{n}"));
                    }
                }
            }
        }
        // The packaged units are many: only those not a distribution's own are of interest.
        if dir != "/etc/systemd/system" {
            units.retain(|u| u.contains("password") || u.contains("vmrepo") || u.contains("rc-local"));
        }
        out.extend(units.into_iter().map(|u| (u, false)));
    }
    out.push(("/etc/crontab".to_string(), true));
    for dir in ["/etc/cron.d", "/var/spool/cron", "/var/spool/cron/crontabs"] {
        for (name, k) in root.list(dir) {
            if k == Kind::File {
                out.push((format!("{dir}/{name}"), true));
            }
        }
    }
    for dir in ["/etc/cron.daily", "/etc/cron.hourly", "/etc/cron.monthly", "/etc/init.d", "/etc/rc.d/init.d"]
    {
        for (name, k) in root.list(dir) {
            if k == Kind::File && (name.contains("password") || name.contains("vmrepo")) {
                out.push((format!("{dir}/{name}"), false));
            }
        }
    }
    out
}

/// Looks for the set-up; `accounts` says whether root has a password.
pub fn detect(root: &ExtFs, accounts: Option<&Accounts>) -> MonthlyPassword {
    let mut m = MonthlyPassword::default();
    let read = |path: &str, m: &mut MonthlyPassword| -> Option<String> {
        if m.files_read >= MAX_FILES {
            m.truncated = true;
            return None;
        }
        let (len, k) = root.stat(path)?;
        if k != Kind::File {
            return None;
        }
        if len > MAX_FILE {
            m.truncated = true;
            return None;
        }
        m.files_read += 1;
        root.read(path, MAX_FILE).map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    // A file reached under two names (`/etc/rc.local` a link to
    // `/etc/rc.d/rc.local`, a unit and its link in a `.wants` folder) is read,
    // and reported, once, under its real name: the file to edit.
    let mut seen = std::collections::HashSet::new();
    for (file, cron) in boot_files(root) {
        let Some(file) = root.real_path(&file) else { continue };
        if !seen.insert(file.clone()) {
            continue;
        }
        let Some(text) = read(&file, &mut m) else { continue };
        if let Some((scheme, line)) = classify(&text, cron) {
            m.setups.push(Setup { scheme, file: file.clone(), script: None, line });
            continue;
        }
        let named = named_paths(&text);
        if named.len() > MAX_RUN_PER_FILE {
            m.truncated = true;
        }
        for script in named.into_iter().take(MAX_RUN_PER_FILE) {
            if script == file {
                continue;
            }
            let Some(t) = read(&script, &mut m) else { continue };
            if let Some((scheme, line)) = classify(&t, false) {
                m.setups.push(Setup { scheme, file: file.clone(), script: Some(script), line });
                break;
            }
        }
    }
    m.root_password_static =
        m.setups.is_empty() && accounts.is_some_and(|a| a.root_password == crate::accounts::Password::Set);
    m
}

impl MonthlyPassword {
    /// For people: `spec, from /etc/rc.d/rc.local:12`, or `none`.
    pub fn summary(&self) -> String {
        if self.setups.is_empty() {
            return if self.root_password_static { "none: root's password is static" } else { "none" }
                .to_string();
        }
        self.setups
            .iter()
            .map(|s| {
                let scheme = match s.scheme {
                    Scheme::Spec => "spec",
                    Scheme::Hmac => "hmac",
                    Scheme::Unknown => "unknown scheme",
                };
                match &s.script {
                    Some(script) => format!("{scheme}, {} runs {script} (line {})", s.file, s.line),
                    None => format!("{scheme}, {}:{}", s.file, s.line),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The scheme to give `vmrepo password --scheme`, when one set-up says it.
    pub fn scheme(&self) -> Option<Scheme> {
        self.setups.iter().map(|s| s.scheme).find(|s| *s != Scheme::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised() {
        let rc = "#!/bin/sh\n# date '+%y%m SEED=old' | md5sum | base64 | passwd --stdin root\ntouch /var/lock/subsys/local\n\
                  date '+%y%m SEED=someLongString' | md5sum | base64 | sed 's|\\(...........\\).*|\\1|' | passwd --stdin root\n";
        assert_eq!(classify(rc, false), Some((Scheme::Spec, 4)));
        let cron = "@reboot root date '+\\%y\\%m SEED=x' | md5sum | base64 | head -c 11 | chpasswd\n";
        assert_eq!(classify(cron, true), Some((Scheme::Spec, 1)));
        assert_eq!(
            classify("#!/bin/sh\n# vmrepo password boot-script scheme=hmac\nset -eu\n", false),
            Some((Scheme::Hmac, 2))
        );
        assert_eq!(classify("echo root:$(date +%y%m)x | chpasswd\n", false), Some((Scheme::Unknown, 1)));
        assert_eq!(classify("touch /var/lock/subsys/local\n", false), None);
        assert_eq!(
            named_paths("[Service]\nExecStart=-/usr/local/sbin/x --y\n# /no\n/a/b || :\n"),
            ["/usr/local/sbin/x", "/a/b"]
        );
    }
}
