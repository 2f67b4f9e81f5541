//! The operating system: distribution, version, product name, libosinfo
//! short-id and the name's token, from the release files; the hostname; the
//! package format.

use serde::Serialize;
use vmrepo_name::Os;

use crate::guest::ExtFs;

/// What the release files say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OsInfo {
    /// The distribution's id: scientificlinux, centos, fedora, ubuntu, debian, rhel ...
    pub distro: String,
    /// Its version as the release file gives it (`5.3`, `9.10`, `12`).
    pub version: String,
    /// The product name as written (`Scientific Linux SL release 5.3 (Boron)`).
    pub product_name: String,
    /// The libosinfo short-id, where libosinfo has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub osinfo: Option<String>,
    /// The token an image name writes for it (`sl5.3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The file the answer came from.
    pub source: String,
}

/// The parts of an os-release or lsb-release file.
fn key_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// The name token's family for a distribution id (os-release's ID).
fn family(distro: &str) -> Option<&'static str> {
    Some(match distro {
        "scientific" | "scientificlinux" | "sl" => "sl",
        "centos" => "centOS",
        "rhel" | "redhat" => "rhel",
        "fedora" => "fedora",
        "ubuntu" => "ubuntu",
        "debian" => "debian",
        "opensuse" | "opensuse-leap" => "opensuse",
        "sles" => "sles",
        "rocky" => "rocky",
        "almalinux" => "alma",
        "ol" => "ol",
        _ => return None,
    })
}

/// The first number of a version, and the first two (`7.9.2009` gives `7` and `7.9`).
fn version_forms(v: &str) -> Vec<String> {
    let nums: Vec<&str> =
        v.split('.').take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).collect();
    let mut out = Vec::new();
    if nums.len() >= 2 {
        out.push(format!("{}.{}", nums[0], nums[1]));
    }
    if let Some(first) = nums.first() {
        out.push((*first).to_string());
    }
    out
}

fn finish(distro: &str, version: &str, product: String, source: &str) -> OsInfo {
    let mut info = OsInfo {
        distro: distro.to_string(),
        version: version.to_string(),
        product_name: product,
        source: source.to_string(),
        ..OsInfo::default()
    };
    if let Some(fam) = family(distro) {
        let forms = version_forms(version);
        // The token keeps the version as precise as the release file gives it
        // (up to two numbers), but Debian names its releases by their major
        // number from 7 on (a point release is not another system); the
        // libosinfo id is the most precise one libosinfo has.
        let debian_major =
            fam == "debian" && forms.last().and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 7);
        let token_version = if debian_major { forms.last() } else { forms.first() };
        if let Some(v) = token_version {
            info.token = Os::from_parts(fam, v).ok().map(|o| o.to_string());
        }
        for v in &forms {
            if let Some(id) = Os::from_parts(fam, v).ok().and_then(|o| o.osinfo_id()) {
                info.osinfo = Some(id);
                break;
            }
        }
    }
    if info.distro == "sl" || info.distro == "scientific" {
        info.distro = "scientificlinux".into();
    }
    info
}

/// Parses a Red Hat style release line: "Scientific Linux SL release 5.3 (Boron)".
fn redhat_release(line: &str) -> Option<(&'static str, String)> {
    let l = line.to_ascii_lowercase();
    let distro = if l.starts_with("scientific linux") {
        "scientific"
    } else if l.starts_with("centos") {
        "centos"
    } else if l.starts_with("fedora") {
        "fedora"
    } else if l.starts_with("red hat enterprise linux") {
        "rhel"
    } else if l.starts_with("rocky") {
        "rocky"
    } else if l.starts_with("almalinux") {
        "almalinux"
    } else {
        return None;
    };
    let after = line.split_once(" release ").map(|(_, r)| r)?;
    let version: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    (!version.is_empty()).then_some((distro, version.trim_end_matches('.').to_string()))
}

/// Reads the release files of a root filesystem.
pub fn detect(root: &ExtFs) -> Option<OsInfo> {
    // Red Hat family first: older releases have no os-release, and theirs is the exact version.
    for f in ["/etc/sl-release", "/etc/centos-release", "/etc/fedora-release", "/etc/redhat-release"] {
        if let Some(text) = root.read_text(f) {
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if let Some((distro, version)) = redhat_release(&line) {
                return Some(finish(distro, &version, line, f));
            }
        }
    }
    if let Some(text) = root.read_text("/etc/lsb-release") {
        let kv = key_values(&text);
        if let (Some(id), Some(rel)) = (get(&kv, "DISTRIB_ID"), get(&kv, "DISTRIB_RELEASE")) {
            let product = get(&kv, "DISTRIB_DESCRIPTION").unwrap_or(id).to_string();
            return Some(finish(&id.to_ascii_lowercase(), rel, product, "/etc/lsb-release"));
        }
    }
    for f in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = root.read_text(f) {
            let kv = key_values(&text);
            if let Some(id) = get(&kv, "ID") {
                let mut version = get(&kv, "VERSION_ID").unwrap_or("").to_string();
                // Debian's point release is in /etc/debian_version.
                if id == "debian"
                    && let Some(dv) = root.read_text("/etc/debian_version")
                {
                    let dv = dv.trim();
                    if dv.starts_with(|c: char| c.is_ascii_digit()) && dv.starts_with(&version) {
                        version = dv.to_string();
                    }
                }
                let product = get(&kv, "PRETTY_NAME").or(get(&kv, "NAME")).unwrap_or(id).to_string();
                return Some(finish(id, &version, product, f));
            }
        }
    }
    if let Some(text) = root.read_text("/etc/debian_version") {
        let v = text.trim().to_string();
        return Some(finish("debian", &v, format!("Debian GNU/Linux {v}"), "/etc/debian_version"));
    }
    if let Some(text) = root.read_text("/etc/SuSE-release") {
        let line = text.lines().next().unwrap_or("").trim().to_string();
        let kv = key_values(&text.replace(" = ", "="));
        let version = get(&kv, "VERSION").unwrap_or("").to_string();
        let distro = if line.to_ascii_lowercase().contains("opensuse") { "opensuse" } else { "sles" };
        return Some(finish(distro, &version, line, "/etc/SuSE-release"));
    }
    None
}

/// The hostname the guest gives itself.
pub fn hostname(root: &ExtFs) -> Option<String> {
    if let Some(h) = root.read_text("/etc/hostname")
        && let Some(l) = h.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))
    {
        return Some(l.to_string());
    }
    if let Some(n) = root.read_text("/etc/sysconfig/network")
        && let Some(h) = get(&key_values(&n), "HOSTNAME")
    {
        return Some(h.to_string());
    }
    root.read_text("/etc/HOSTNAME")
        .and_then(|h| h.lines().next().map(|l| l.trim().to_string()))
        .filter(|h| !h.is_empty())
}

/// `rpm` or `deb`, from the package databases present.
pub fn package_format(root: &ExtFs) -> Option<String> {
    if root.is_dir("/var/lib/rpm") {
        Some("rpm".into())
    } else if root.stat("/var/lib/dpkg/status").is_some() {
        Some("deb".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_lines() {
        assert_eq!(
            redhat_release("Scientific Linux SL release 5.3 (Boron)"),
            Some(("scientific", "5.3".into()))
        );
        assert_eq!(
            redhat_release("Scientific Linux release 6.1 (Carbon)"),
            Some(("scientific", "6.1".into()))
        );
        assert_eq!(redhat_release("CentOS release 5.5 (Final)"), Some(("centos", "5.5".into())));
        assert_eq!(
            redhat_release("CentOS Linux release 7.9.2009 (Core)"),
            Some(("centos", "7.9.2009".into()))
        );
        assert_eq!(redhat_release("Fedora release 12 (Constantine)"), Some(("fedora", "12".into())));
        assert_eq!(
            redhat_release("Red Hat Enterprise Linux AS release 4 (Nahant Update 7)"),
            Some(("rhel", "4".into()))
        );
        assert_eq!(redhat_release("Debian"), None);
    }

    #[test]
    fn tokens_and_osinfo_ids() {
        let i = finish("scientific", "5.3", String::new(), "");
        assert_eq!(
            (i.token.as_deref(), i.osinfo.as_deref(), i.distro.as_str()),
            (Some("sl5.3"), Some("scientificlinux5.3"), "scientificlinux")
        );
        let i = finish("scientific", "4.7", String::new(), "");
        assert_eq!((i.token.as_deref(), i.osinfo), (Some("sl4.7"), None));
        let i = finish("centos", "7.9.2009", String::new(), "");
        assert_eq!((i.token.as_deref(), i.osinfo.as_deref()), (Some("centOS7.9"), Some("centos7")));
        let i = finish("centos", "5.5", String::new(), "");
        assert_eq!(i.osinfo.as_deref(), Some("centos5.5"));
        let i = finish("debian", "12.5", String::new(), "");
        assert_eq!((i.token.as_deref(), i.osinfo.as_deref()), (Some("debian12"), Some("debian12")));
        let i = finish("ubuntu", "9.10", String::new(), "");
        assert_eq!((i.token.as_deref(), i.osinfo.as_deref()), (Some("ubuntu9.10"), Some("ubuntu9.10")));
    }
}
