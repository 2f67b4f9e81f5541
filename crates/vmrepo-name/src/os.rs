use std::fmt;

use crate::osinfo_ids::OSINFO_IDS;
use crate::{Field, NameError, check_safe};

/// An operating system family the naming convention knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OsFamily {
    /// The token as names write it (`sl`, `centOS`).
    pub token: &'static str,
    /// The distribution's own name (`Scientific Linux`).
    pub display: &'static str,
    /// The libosinfo short-id prefix, where libosinfo knows the family.
    pub osinfo_prefix: Option<&'static str>,
}

/// The families, with the specification's spellings first (sl, ubuntu, fedora, centOS).
static FAMILIES: &[OsFamily] = &[
    OsFamily { token: "sl", display: "Scientific Linux", osinfo_prefix: Some("scientificlinux") },
    OsFamily { token: "slc", display: "Scientific Linux CERN", osinfo_prefix: None },
    OsFamily { token: "ubuntu", display: "Ubuntu", osinfo_prefix: Some("ubuntu") },
    OsFamily { token: "fedora", display: "Fedora", osinfo_prefix: Some("fedora") },
    OsFamily { token: "centOS", display: "CentOS", osinfo_prefix: Some("centos") },
    OsFamily { token: "rhel", display: "Red Hat Enterprise Linux", osinfo_prefix: Some("rhel") },
    OsFamily { token: "debian", display: "Debian", osinfo_prefix: Some("debian") },
    OsFamily { token: "opensuse", display: "openSUSE", osinfo_prefix: Some("opensuse") },
    OsFamily { token: "sles", display: "SUSE Linux Enterprise Server", osinfo_prefix: Some("sles") },
    OsFamily { token: "rocky", display: "Rocky Linux", osinfo_prefix: Some("rocky") },
    OsFamily { token: "alma", display: "AlmaLinux", osinfo_prefix: Some("almalinux") },
    OsFamily { token: "ol", display: "Oracle Linux", osinfo_prefix: Some("ol") },
];

/// The longest version a name may carry (`10.04.4` is 7).
const MAX_VERSION_LEN: usize = 16;

impl OsFamily {
    /// Every family, in the order `vmrepo name` lists them.
    pub fn all() -> &'static [OsFamily] {
        FAMILIES
    }

    fn known_tokens() -> String {
        FAMILIES.iter().map(|f| f.token).collect::<Vec<_>>().join(", ")
    }
}

/// An operating system and its version, as a name writes it: `sl5.3`, `ubuntu9.10`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Os {
    family: &'static OsFamily,
    version: String,
}

impl Os {
    /// Parses the field of a name: the family in the convention's spelling
    /// followed by a version of dot-separated numbers.
    ///
    /// # Errors
    /// An unknown family, a family in another spelling (`centos5` for
    /// `centOS5`), or a missing or malformed version.
    pub fn parse(s: &str) -> Result<Os, NameError> {
        Self::parse_with(s, false)
    }

    /// Parses what a person typed: the family in any case (`CentOS5`, `SL5.3`).
    ///
    /// # Errors
    /// As [`Os::parse`], without the spelling rule.
    pub fn from_user(s: &str) -> Result<Os, NameError> {
        Self::parse_with(s, true)
    }

    /// Builds an Os from a family token (any case) and a version.
    ///
    /// # Errors
    /// As [`Os::from_user`].
    pub fn from_parts(family: &str, version: &str) -> Result<Os, NameError> {
        Self::from_user(&format!("{family}{version}"))
    }

    fn parse_with(s: &str, any_case: bool) -> Result<Os, NameError> {
        check_safe(Field::Os, s)?;
        let split = s.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (fam, version) = s.split_at(split);
        if fam.is_empty() {
            return Err(NameError::new(
                Field::Os,
                s,
                format!(
                    "expected a family name then a version, like sl5.3 (families: {})",
                    OsFamily::known_tokens()
                ),
            ));
        }
        let family = match FAMILIES.iter().find(|f| f.token == fam) {
            Some(f) => f,
            None => match FAMILIES.iter().find(|f| f.token.eq_ignore_ascii_case(fam)) {
                Some(f) if any_case => f,
                Some(f) => {
                    return Err(NameError::new(
                        Field::Os,
                        s,
                        format!("the family is written {:?}: {}{}", f.token, f.token, version),
                    ));
                }
                None => {
                    return Err(NameError::new(
                        Field::Os,
                        s,
                        format!("unknown operating system {fam:?} (known: {})", OsFamily::known_tokens()),
                    ));
                }
            },
        };
        check_version(s, version)?;
        if let Some(dotted) = dotted_release(family, version) {
            return Err(NameError::new(
                Field::Os,
                s,
                format!(
                    "{} has no release {version}: write {}{dotted} (the version with its dot)",
                    family.display, family.token
                ),
            ));
        }
        Ok(Os { family, version: version.to_string() })
    }

    /// The family (`sl`).
    pub fn family(&self) -> &'static OsFamily {
        self.family
    }

    /// The version as written (`5.3`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The libosinfo short-id (`scientificlinux5.3`) where libosinfo has one
    /// for exactly this version; `sl4` and `centOS5` have none.
    pub fn osinfo_id(&self) -> Option<String> {
        let id = format!("{}{}", self.family.osinfo_prefix?, self.version);
        OSINFO_IDS.binary_search(&id.as_str()).ok().map(|_| id)
    }

    /// The token a name would carry for a libosinfo short-id
    /// (`scientificlinux5.3` gives `sl5.3`), if the family is known.
    pub fn from_osinfo_id(id: &str) -> Option<Os> {
        // Longest prefix first: "scientificlinux" must not be read as "s...".
        let mut families: Vec<&'static OsFamily> =
            FAMILIES.iter().filter(|f| f.osinfo_prefix.is_some()).collect();
        families.sort_by_key(|f| std::cmp::Reverse(f.osinfo_prefix.map_or(0, str::len)));
        for family in families {
            let prefix = family.osinfo_prefix?;
            if let Some(version) = id.strip_prefix(prefix)
                && check_version(id, version).is_ok()
            {
                return Some(Os { family, version: version.to_string() });
            }
        }
        None
    }
}

/// The release a version written without its dot stands for: `53` of
/// Scientific Linux is 5.3, as STAR writes it in its build folders
/// (`.sl53_gcc432`). Only when libosinfo knows the dotted release and not the
/// version as written, so that `fedora12` and `debian12` stay themselves.
fn dotted_release(family: &OsFamily, version: &str) -> Option<String> {
    let prefix = family.osinfo_prefix?;
    let known = |v: &str| OSINFO_IDS.binary_search(&format!("{prefix}{v}").as_str()).is_ok();
    if version.len() < 2 || !version.bytes().all(|b| b.is_ascii_digit()) || known(version) {
        return None;
    }
    (1..version.len()).map(|i| format!("{}.{}", &version[..i], &version[i..])).find(|v| known(v))
}

fn check_version(whole: &str, version: &str) -> Result<(), NameError> {
    let bad = |why: &str| {
        Err(NameError::new(
            Field::Os,
            whole,
            format!(
                "{why}: expected a version of dot-separated numbers after the family, like sl5.3 or ubuntu9.10"
            ),
        ))
    };
    if version.is_empty() {
        return bad("no version");
    }
    if version.len() > MAX_VERSION_LEN {
        return bad("version too long");
    }
    for part in version.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return bad("malformed version");
        }
    }
    Ok(())
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.family.token, self.version)
    }
}

impl serde::Serialize for Os {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_tokens_parse_and_round_trip() {
        for t in ["sl4", "sl5.3", "ubuntu9.10", "fedora12", "centOS5", "slc5", "debian12"] {
            assert_eq!(Os::parse(t).unwrap().to_string(), t);
        }
    }

    #[test]
    fn osinfo_ids_where_libosinfo_has_them() {
        assert_eq!(Os::parse("sl5.3").unwrap().osinfo_id().as_deref(), Some("scientificlinux5.3"));
        assert_eq!(Os::parse("ubuntu9.10").unwrap().osinfo_id().as_deref(), Some("ubuntu9.10"));
        assert_eq!(Os::parse("fedora12").unwrap().osinfo_id().as_deref(), Some("fedora12"));
        assert_eq!(Os::parse("centOS5.5").unwrap().osinfo_id().as_deref(), Some("centos5.5"));
        assert_eq!(Os::parse("debian12").unwrap().osinfo_id().as_deref(), Some("debian12"));
        assert_eq!(Os::parse("sl4").unwrap().osinfo_id(), None);
        assert_eq!(Os::parse("centOS5").unwrap().osinfo_id(), None);
        assert_eq!(Os::parse("slc5").unwrap().osinfo_id(), None);
    }

    #[test]
    fn osinfo_id_back_to_token() {
        assert_eq!(Os::from_osinfo_id("scientificlinux5.3").unwrap().to_string(), "sl5.3");
        assert_eq!(Os::from_osinfo_id("centos5.5").unwrap().to_string(), "centOS5.5");
        assert_eq!(Os::from_osinfo_id("almalinux9").unwrap().to_string(), "alma9");
        assert!(Os::from_osinfo_id("win10").is_none());
    }

    #[test]
    fn strict_spelling_in_names_lenient_from_people() {
        let e = Os::parse("centos5").unwrap_err();
        assert!(e.problem().contains("centOS5"), "{e}");
        assert_eq!(Os::from_user("CentOS5").unwrap().to_string(), "centOS5");
        assert_eq!(Os::from_user("SL5.3").unwrap().to_string(), "sl5.3");
    }

    #[test]
    fn a_version_without_its_dot_is_refused_with_the_dotted_one() {
        for (t, hint) in [
            ("sl53", "write sl5.3"),
            ("sl61", "write sl6.1"),
            ("centOS55", "write centOS5.5"),
            ("ubuntu910", "write ubuntu9.10"),
            ("ubuntu2004", "write ubuntu20.04"),
        ] {
            for e in [Os::parse(t).unwrap_err(), Os::from_user(t).unwrap_err()] {
                assert!(e.problem().contains(hint), "{t}: {e}");
            }
        }
        assert!(Os::parse("sl53").unwrap_err().problem().starts_with("Scientific Linux has no release 53"));
        // Releases libosinfo knows as written, and families or versions it
        // does not know, are left alone.
        for t in ["fedora12", "debian12", "debian10", "centOS5", "sl4", "sl7", "slc53", "fedora44", "rocky10"]
        {
            assert!(Os::parse(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn malformed() {
        for t in ["", "sl", "5.3", "sl5.", "sl.5", "sl5..3", "sl5a", "windows7", "sl5/3", "sl5\n"] {
            assert!(Os::parse(t).is_err(), "{t:?} accepted");
        }
    }
}
