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
    /// The start-up files that set STAR up: the star account's own, then the
    /// system-wide ones (`/etc/csh.login`, `/etc/profile.d/*` ...).
    pub startup_scripts: Vec<String>,
}

/// What makes a start-up file a STAR one, in a line that is not a comment:
/// STAR's group files (`$GROUP_DIR/group_env.csh`, `star_login.csh`,
/// `star_cshrc.csh`), the variables they set, and `starver`, which picks a
/// library version (`starver SL08e`).
const STAR_MARKERS: [&str; 7] =
    ["group_env", "star_login", "star_cshrc", "starver", "GROUP_DIR", "STAR_LEVEL", "STAR/"];
/// The star account's own start-up files, as csh, tcsh, bash and sh read them.
const HOME_STARTUP: [&str; 6] = [".cshrc", ".login", ".tcshrc", ".bashrc", ".bash_profile", ".profile"];
/// The system-wide start-up files of csh and tcsh (`/etc/csh.*`), bash and sh;
/// `/etc/profile.d` is read besides.
const SYSTEM_STARTUP: [&str; 5] =
    ["/etc/csh.login", "/etc/csh.cshrc", "/etc/profile", "/etc/bashrc", "/etc/bash.bashrc"];
/// The folder of start-up snippets the system-wide files source.
const PROFILE_D: &str = "/etc/profile.d";
/// Files of `/etc/profile.d` read at most (each at most
/// [`crate::guest::MAX_SMALL_FILE`]).
const MAX_PROFILE_D: usize = 64;

/// Whether a start-up file sets STAR up: a marker outside its comments.
pub fn sets_up_star(text: &str) -> bool {
    crate::conf::lines(text).any(|l| STAR_MARKERS.iter().any(|m| l.contains(m)))
}

/// Finds the STAR libraries, the `star` account and the start-up files that
/// set STAR up (the account's own, then the system-wide ones).
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
    let mut candidates: Vec<String> = Vec::new();
    if let Some(star) = passwd.users.iter().find(|u| u.name == "star") {
        s.account = true;
        s.home = Some(star.home.clone());
        let home = star.home.trim_end_matches('/');
        candidates.extend(HOME_STARTUP.iter().map(|f| format!("{home}/{f}")));
    }
    candidates.extend(SYSTEM_STARTUP.iter().map(|f| f.to_string()));
    candidates.extend(
        root.list(PROFILE_D)
            .into_iter()
            .filter(|(_, kind)| matches!(kind, Kind::File | Kind::Link))
            .take(MAX_PROFILE_D)
            .map(|(name, _)| format!("{PROFILE_D}/{name}")),
    );
    for p in candidates {
        if root.read_text(&p).is_some_and(|t| sets_up_star(&t)) && !s.startup_scripts.contains(&p) {
            s.startup_scripts.push(p);
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

#[cfg(test)]
mod tests {
    use super::sets_up_star;

    #[test]
    fn star_start_up_in_every_form() {
        // The `.cshrc` of issue 7, item 18.
        assert!(sets_up_star("source $GROUP_DIR/star_cshrc.csh\nstarver SL08e\n"));
        assert!(sets_up_star("setenv GROUP_DIR /usr/local/star/group\nsource $GROUP_DIR/group_env.csh\n"));
        assert!(sets_up_star("source /afs/rhic.bnl.gov/rhstar/group/star_login.csh\n"));
        assert!(sets_up_star("export STAR_LEVEL=SL08e\n"));
        assert!(sets_up_star("starver SL10k # the library of the 2010 production\n"));
        // Comments and unrelated files are not a STAR set-up.
        assert!(!sets_up_star("# nothing STAR here\n"));
        assert!(!sets_up_star("# source $GROUP_DIR/star_cshrc.csh\n#starver SL08e\n"));
        assert!(!sets_up_star("alias ll 'ls -l'\nset prompt='%m:%~> '\n"));
    }
}
