//! STAR software: the library versions installed (folders named like SL08e
//! under STAR's install roots), their sizes, the `star` account and its
//! start-up scripts.

use serde::Serialize;
use vmrepo_name::StarLib;

use crate::accounts::Passwd;
use crate::guest::{ExtFs, Kind};

/// Where STAR installs its libraries.
pub const ROOTS: [&str; 8] = [
    "/usr/local/star/packages",
    "/opt/star/packages",
    "/star/packages",
    "/afs/rhic.bnl.gov/star/packages",
    "/usr/star/packages",
    "/home/star/packages",
    "/opt/star",
    "/usr/local/star",
];
/// Files visited at most when sizing one library.
const MAX_WALK: usize = 200_000;
/// Folder depth followed when sizing.
const MAX_DEPTH: usize = 32;

/// One library version installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Library {
    /// As names write it (`sl08e`).
    pub name: String,
    /// The folder.
    pub path: String,
    /// Bytes of its files.
    pub size: u64,
    pub files: u64,
    /// The walk stopped early (more files than vmrepo counts).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// STAR as installed in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Star {
    pub libraries: Vec<Library>,
    /// `pro`, `new`, `dev` links and where they point.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub symbolic: Vec<(String, String)>,
    /// The `star` account exists.
    pub account: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Start-up files of the star account, or system ones, that set STAR up.
    pub startup_scripts: Vec<String>,
}

/// What makes a start-up file a STAR one.
const STAR_MARKERS: [&str; 4] = ["group_env", "STAR_LEVEL", "star_login", "STAR/"];

pub fn detect(root: &ExtFs, passwd: &Passwd) -> Star {
    let mut s = Star::default();
    for r in ROOTS {
        // A root that is missing or not a folder lists nothing.
        for (name, kind) in root.list(r) {
            let path = format!("{r}/{name}");
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "pro" | "new" | "dev") {
                if let Some(t) = root.link_target(&path) {
                    s.symbolic.push((lower.clone(), t));
                }
                continue;
            }
            if kind != Kind::Dir {
                continue;
            }
            let Ok(lib) = StarLib::parse(&lower) else { continue };
            if lib.is_symbolic() || s.libraries.iter().any(|l| l.name == lib.as_str()) {
                continue;
            }
            let (size, files, partial) = root.du(&path, MAX_WALK, MAX_DEPTH);
            s.libraries.push(Library { name: lib.as_str().into(), path, size, files, partial });
        }
    }
    s.libraries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(star) = passwd.users.iter().find(|u| u.name == "star") {
        s.account = true;
        s.home = Some(star.home.clone());
        for f in [".cshrc", ".login", ".tcshrc", ".bashrc", ".bash_profile", ".profile"] {
            let p = format!("{}/{f}", star.home.trim_end_matches('/'));
            if let Some(t) = root.read_text(&p)
                && STAR_MARKERS.iter().any(|m| t.contains(m))
            {
                s.startup_scripts.push(p);
            }
        }
    }
    for (name, kind) in root.list("/etc/profile.d") {
        if kind == Kind::File && name.to_ascii_lowercase().contains("star") {
            s.startup_scripts.push(format!("/etc/profile.d/{name}"));
        }
    }
    s
}

impl Star {
    /// Bytes of every library.
    pub fn size(&self) -> u64 {
        self.libraries.iter().map(|l| l.size).fold(0, u64::saturating_add)
    }
}
