use std::fmt;

use crate::{Field, NameError, check_safe};

/// A STAR library version: a release like `sl08e` (STAR writes `SL08e`; names
/// use lower case).
///
/// STAR's `pro`, `new` and `dev` are not versions but links to one (the
/// production, the next and the development release): they change what they
/// point to, so a name that said `pro` would stop saying what the image
/// holds. They are refused, with the advice to name the version they point to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StarLib(String);

/// STAR's symbolic library names: the production, the next and the development version.
const SYMBOLIC: [&str; 3] = ["pro", "new", "dev"];

const EXPECTED: &str = "expected a STAR library like sl08e (sl, two digits, one letter)";

impl StarLib {
    /// Parses the field of a name: lower case only.
    ///
    /// # Errors
    /// Anything not of the form `slNNx`, `SL08e` written in STAR's own case,
    /// or one of the links `pro`, `new`, `dev`.
    pub fn parse(s: &str) -> Result<StarLib, NameError> {
        check_safe(Field::Lib, s)?;
        if is_release(s) {
            return Ok(StarLib(s.to_string()));
        }
        let lower = s.to_ascii_lowercase();
        if StarLib::is_link_name(&lower) {
            return Err(link_error(s, &lower));
        }
        if is_release(&lower) {
            return Err(NameError::new(Field::Lib, s, format!("names use lower case: {lower}")));
        }
        Err(NameError::new(Field::Lib, s, EXPECTED))
    }

    /// Parses what a person typed, in any case (`SL08e`, `sl08E`).
    ///
    /// # Errors
    /// As [`StarLib::parse`], without the case rule.
    pub fn from_user(s: &str) -> Result<StarLib, NameError> {
        check_safe(Field::Lib, s)?;
        let lower = s.to_ascii_lowercase();
        if StarLib::is_link_name(&lower) {
            return Err(link_error(s, &lower));
        }
        StarLib::parse(&lower).map_err(|_| NameError::new(Field::Lib, s, EXPECTED))
    }

    /// Whether `s` is, in any case, one of STAR's links `pro`, `new`, `dev`
    /// rather than a release: what a guest's library folder lists beside the
    /// releases.
    pub fn is_link_name(s: &str) -> bool {
        SYMBOLIC.iter().any(|l| l.eq_ignore_ascii_case(s))
    }

    /// The version as names write it (`sl08e`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version as STAR writes it (`SL08e`).
    pub fn star_spelling(&self) -> String {
        match self.0.strip_prefix("sl") {
            Some(rest) => format!("SL{rest}"),
            None => self.0.clone(),
        }
    }

    /// Whether this is one of the links `pro`, `new`, `dev` rather than a
    /// release. Never, since names refuse them; kept for the code that lists
    /// a guest's libraries and skips the links (see [`StarLib::is_link_name`]).
    pub fn is_symbolic(&self) -> bool {
        StarLib::is_link_name(&self.0)
    }
}

fn link_error(s: &str, lower: &str) -> NameError {
    NameError::new(
        Field::Lib,
        s,
        format!(
            "{lower} is a link to a STAR library, not a version: name the version it points to (like sl08e)"
        ),
    )
}

fn is_release(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b.starts_with(b"sl")
        && b[2].is_ascii_digit()
        && b[3].is_ascii_digit()
        && b[4].is_ascii_lowercase()
}

impl fmt::Display for StarLib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for StarLib {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        for t in ["sl08e", "sl05a", "sl10k", "sl23d"] {
            assert_eq!(StarLib::parse(t).unwrap().as_str(), t);
            assert!(!StarLib::parse(t).unwrap().is_symbolic());
        }
        assert_eq!(StarLib::parse("sl08e").unwrap().star_spelling(), "SL08e");
        assert!(StarLib::parse("SL08e").unwrap_err().problem().contains("sl08e"));
        assert_eq!(StarLib::from_user("SL08e").unwrap().as_str(), "sl08e");
        for t in ["sl8e", "sl08", "sl08ee", "sl0xe", "prod", "", "sl08E", "sl53"] {
            assert!(StarLib::parse(t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn links_are_not_versions() {
        for t in ["pro", "new", "dev", "PRO", "Dev"] {
            for e in [StarLib::parse(t).unwrap_err(), StarLib::from_user(t).unwrap_err()] {
                assert_eq!(e.field(), Field::Lib);
                assert!(e.problem().contains("name the version it points to"), "{t}: {e}");
            }
            assert!(StarLib::is_link_name(t));
        }
        assert!(StarLib::from_user("pro").unwrap_err().problem().starts_with("pro is a link"));
        assert!(!StarLib::is_link_name("sl08e"));
        assert!(!StarLib::is_link_name("prod"));
    }
}
